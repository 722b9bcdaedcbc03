"""Resume checks: which inputs shape a run, their recorded content, the settings fingerprint.

Part of the app layer. A rerun keeps a run's outputs only when the whole set is present and
consistent, its sidecar records the same settings fingerprint, and the inputs have the content
recorded in the sidecar (``InputFiles``: size and modification time first, SHA-256 when they
differ); the status table then keeps the run's original outcome.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from pathlib import Path
from typing import Any

from bidsapp import __version__
from bidsapp.app.atlases import AtlasTarget
from bidsapp.app.config import DEFAULT_CONNECTIVITY, RunConfig, fingerprint
from bidsapp.app.run_inputs import RunInputs
from bidsapp.app.status import RunStatus
from bidsapp.dataset.jsonio import json_value

logger = logging.getLogger(__name__)


def source_uri(path: Path, bids_dir: Path) -> str:
    """BIDS URI of an input in the fMRIPrep dataset (a ``file:`` URI when outside it)."""
    from bidsapp.dataset.naming import bids_uri

    try:
        return bids_uri(path, root=bids_dir, dataset="preprocessed")
    except ValueError:  # outside the dataset (e.g. a symlink target elsewhere)
        return path.resolve().as_uri()


#: Sidecar key recording the inputs' identity and content (see :func:`input_records`).
INPUT_FILES_KEY = "InputFiles"


_HASH_CHUNK = 1 << 20


_RACY_NS = 2_000_000_000


def _sha256_file(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes, read in 1 MiB chunks (constant memory)."""
    sha = hashlib.sha256()
    with open(path, "rb") as fobj:
        while chunk := fobj.read(_HASH_CHUNK):
            sha.update(chunk)
    return "sha256:" + sha.hexdigest()


def input_files(inputs: RunInputs) -> dict[str, Path | None]:
    """Every input file whose content shapes a run's numbers, by role.

    Parameters
    ----------
    inputs : RunInputs
        The prepared run.

    Returns
    -------
    dict
        ``bold`` (the image read: preprocessed or ICA-AROMA BOLD), ``mask``, ``confounds``
        (TSV), ``confounds_json`` (its sibling JSON: CompCor metadata), ``sidecar`` (the
        BOLD's JSON sidecar: repetition time; its sibling ``.json`` when the query found
        none, which may not exist); None for a role the run has no file for. The
        atlas image and look-up table are covered by the atlas digest, a preset file by its
        content in :func:`run_fingerprint`.
    """
    confounds = inputs.run.confounds
    sidecar = inputs.run.sidecar
    if sidecar is None:  # the query found none: the sibling, should one appear later
        bold = inputs.run.preproc_bold
        sidecar = bold.with_name(re.sub(r"\.nii(\.gz)?$", ".json", bold.name))
    return {
        "bold": inputs.bold,
        "mask": inputs.mask,
        "confounds": confounds,
        "confounds_json": None if confounds is None else confounds.with_suffix(".json"),
        "sidecar": sidecar,
    }


class FileHashes:
    """Content hashes (``sha256:<hex>``) of files, each computed at most once.

    SHA-256 is used because it was the fastest of hashlib's strong hashes measured on this
    kind of machine (about 1.2 GB/s with SHA extensions; BLAKE2b about 1.0 GB/s).
    """

    def __init__(self) -> None:
        self._cache: dict[Path, str] = {}

    def __call__(self, path: Path) -> str:
        """Return the hash of ``path``, reading it only the first time."""
        if path not in self._cache:
            self._cache[path] = _sha256_file(path)
        return self._cache[path]


def input_records(
    inputs: RunInputs, bids_dir: Path, hashes: FileHashes | None = None
) -> dict[str, dict[str, Any] | None]:
    """Record the identity and content of a run's inputs (written into its sidecar).

    Parameters
    ----------
    inputs : RunInputs
        The prepared run.
    bids_dir : Path
        The fMRIPrep dataset (the records name files by BIDS URI).
    hashes : FileHashes, optional
        A cache shared with :func:`inputs_unchanged`.

    Returns
    -------
    dict
        Role (see :func:`input_files`) -> ``{"URI", "Size", "MTimeNs", "SHA256",
        "HashedAtNs"}``,
        ``{"URI", "Missing": true}`` for a file that does not exist (a confounds JSON that
        appears later changes the run), or None for a role without a file.
    """
    hashes = hashes or FileHashes()
    records: dict[str, dict[str, Any] | None] = {}
    for role, path in input_files(inputs).items():
        if path is None:
            records[role] = None
            continue
        uri = source_uri(path, bids_dir)
        try:
            info = path.stat()
        except FileNotFoundError:
            records[role] = {"URI": uri, "Missing": True}
            continue
        records[role] = {
            "URI": uri,
            "Size": info.st_size,
            "MTimeNs": info.st_mtime_ns,
            "SHA256": hashes(path),
            "HashedAtNs": time.time_ns(),
        }
    return records


def inputs_unchanged(
    recorded: Any, inputs: RunInputs, bids_dir: Path, hashes: FileHashes | None = None
) -> bool:
    """Tell whether a run's inputs are those recorded in its sidecar.

    A file whose size and modification time (ns) equal the record counts as unchanged
    without being read (unless it had been modified less than 2 s before it was hashed);
    otherwise its content is hashed and compared, so ``touch`` costs one hash but never a
    recomputation, and an edit that keeps the size (a rewritten ``.nii``, a changed digit in
    the confounds) is caught.

    Parameters
    ----------
    recorded : object
        The sidecar's :data:`INPUT_FILES_KEY` value (anything else means "changed").
    inputs : RunInputs
        The prepared run.
    bids_dir : Path
        The fMRIPrep dataset.
    hashes : FileHashes, optional
        A cache shared with :func:`input_records`.

    Returns
    -------
    bool
        True when every input has the recorded URI and content.
    """
    hashes = hashes or FileHashes()
    current = input_files(inputs)
    if not isinstance(recorded, dict) or set(recorded) != set(current):
        return False
    for role, path in current.items():
        record = recorded[role]
        if path is None or record is None:
            if not (path is None and record is None):
                return False
            continue
        if not isinstance(record, dict) or record.get("URI") != source_uri(path, bids_dir):
            return False
        try:
            info = path.stat()
        except FileNotFoundError:
            if record.get("Missing") is not True:
                return False
            continue
        if record.get("Missing") or record.get("Size") != info.st_size:
            return False
        # Like git's "racy" rule: a file modified within _RACY_NS before it was hashed may
        # be rewritten again within the file system's timestamp granularity, so its stat
        # key alone is not trusted.
        settled = (record.get("HashedAtNs") or 0) - info.st_mtime_ns > _RACY_NS
        if record.get("MTimeNs") == info.st_mtime_ns and settled:
            continue
        try:
            if hashes(path) != record.get("SHA256"):
                return False
        except OSError:
            return False
    return True


def run_fingerprint(inputs: RunInputs, target: AtlasTarget, config: RunConfig) -> str:
    """Fingerprint of the settings that change a run's outputs for one atlas.

    The inputs enter by name here; their content is checked by :func:`inputs_unchanged`
    against the sidecar's :data:`INPUT_FILES_KEY`.

    Parameters
    ----------
    inputs : RunInputs
        The prepared run.
    target : AtlasTarget
        The atlas.
    config : RunConfig
        The invocation's settings.

    Returns
    -------
    str
        16 hexadecimal characters, recorded as ``ParametersFingerprint`` in the sidecar.
    """
    from bidsapp import confounds as conf

    denoise = json_value(config.denoise)
    if config.denoise.is_preset_file:
        try:
            denoise["preset"] = conf.load_preset(config.denoise.name)
        except conf.ConfoundsError:
            denoise["preset"] = None
    settings = {
        "inputs": [
            None if p is None else source_uri(p, config.bids_dir)
            for p in input_files(inputs).values()
        ],
        "t_r": inputs.t_r,
        "atlas": [target.atlas.label, target.atlas.space, target.digest],
        "denoise": denoise,
        "extraction": config.extraction,
        "version": __version__,
    }
    measures, fisher = config.run_measures, config.fisher_z
    if measures != DEFAULT_CONNECTIVITY or fisher:
        # Only when not the default: sets written before the option existed stay current.
        settings["connectivity"] = {"measures": list(measures), "fisher_z": fisher}
    return fingerprint(settings)


def resumed_status(inputs: RunInputs, target: AtlasTarget, paths: Any, sidecar: dict) -> RunStatus:
    """Status of a run found complete: its original outcome, rebuilt from its sidecar."""
    warnings = [str(w) for w in sidecar.get("Warnings") or []]
    return RunStatus(
        inputs.name,
        inputs.entities,
        target.atlas.label,
        "ok",
        "; ".join(warnings),
        volumes_total=sidecar.get("NumberOfVolumes"),
        volumes_kept=len(sidecar.get("RetainedVolumes") or []),
        mean_fd=sidecar.get("MeanFramewiseDisplacement"),
        regions_below_coverage=len(sidecar.get("RegionsBelowCoverage") or []),
        outputs=[str(p) for p in paths.all() if p.is_file()],
        warnings=warnings,
        resumed=True,
    )


def current_sidecar(
    paths: Any, fp: str, inputs: RunInputs, config: RunConfig, hashes
) -> dict | None:
    """Return the sidecar of a complete, current set of outputs, else None (recompute)."""
    from bidsapp.dataset import jsonio, run_outputs

    if config.overwrite or not run_outputs.outputs_complete(paths, {"ParametersFingerprint": fp}):
        return None
    sidecar = jsonio.read_sidecar(paths.timeseries_json) or {}
    if not inputs_unchanged(sidecar.get(INPUT_FILES_KEY), inputs, config.bids_dir, hashes):
        logger.info("%s: an input changed since %s was written", inputs.name, paths.timeseries)
        return None
    return sidecar
