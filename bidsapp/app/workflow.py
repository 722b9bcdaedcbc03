"""run(config): query -> atlas -> extract (joblib) -> write -> summary.

Each run is an independent job: one that fails (or is excluded) is reported with a one-line
reason, the files an earlier invocation wrote for it are removed, and the others still
finish. Outputs of a run are written atomically, timeseries TSV last. A rerun keeps a run's
outputs (resume) only when the whole set is present and consistent, its sidecar records the
same settings fingerprint, and the inputs have the content recorded in the sidecar
(``InputFiles``: size and modification time first, SHA-256 when they differ); the status
table then keeps the run's original outcome. Every output name of the invocation is
computed before anything is written, and two jobs that would write one file both fail.
Each subject is written under an exclusive lock. After the last run of a subject, its
status table and HTML report are written.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import re
import shutil
import stat as stat_module
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bidsapp import __version__
from bidsapp.app.config import RunConfig, fingerprint, to_jsonable
from bidsapp.app.extract import RunExtraction, RunInputs, one_line
from bidsapp.dataset.atlas import Atlas
from bidsapp.errors import BidsappError

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_RUN_FAILED = 1


class UsageProblem(BidsappError, ValueError):
    """The invocation cannot run at all (exit code 2): bad directories, unusable options."""


@dataclass
class RunStatus:
    """Outcome of one run for one atlas (a row of the subject's status table).

    Attributes
    ----------
    name : str
        Run name, e.g. ``sub-01_task-rest_run-1``.
    entities : dict
        Entities of the outputs (pybids long names, ``space`` included).
    atlas : str
        Atlas label.
    status : str
        ``ok``, ``failed`` or ``excluded`` (left out on purpose, e.g. ``--min-time``). A run
        found complete by a rerun keeps its original ``ok`` (see ``resumed``).
    reason : str
        One-line reason of a failure or exclusion, or the run's warnings.
    volumes_total, volumes_kept : int or None
        Volumes in the series and kept after censoring.
    mean_fd : float or None
        Mean framewise displacement (mm).
    regions_below_coverage : int or None
        Regions written as n/a.
    seconds : float
        Wall time of the extraction.
    outputs : list of str
        Files written (or found, when skipped).
    warnings : list of str
        Problems that did not stop the run.
    resumed : bool
        The outputs were found complete with the same parameters and inputs, and were kept;
        the other fields come from the run's sidecar (its original outcome).
    """

    name: str
    entities: dict[str, str]
    atlas: str
    status: str
    reason: str = ""
    volumes_total: int | None = None
    volumes_kept: int | None = None
    mean_fd: float | None = None
    regions_below_coverage: int | None = None
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    resumed: bool = False

    @property
    def subject(self) -> str:
        """Subject label without ``sub-``."""
        return self.entities["subject"]

    def as_row(self, denoise_label: str, stat: str) -> dict[str, Any]:
        """Return this status as a flat dict for the status table (``write_subject_status``).

        Parameters
        ----------
        denoise_label : str
            ``desc-`` label of the denoising setting.
        stat : str
            Extraction statistic.

        Returns
        -------
        dict
            Entities, ``atlas``, ``denoise``, ``stat``, ``status``, ``reason`` and counts.
        """
        row: dict[str, Any] = dict(self.entities)
        row.update(
            atlas=self.atlas,
            denoise=denoise_label,
            stat=stat,
            status=self.status,
            reason=self.reason,
            volumes_total=self.volumes_total,
            volumes_kept=self.volumes_kept,
            mean_fd=self.mean_fd,
            regions_below_coverage=self.regions_below_coverage,
            outputs=list(self.outputs),
        )
        return row


@dataclass(frozen=True)
class AtlasTarget:
    """An atlas resolved for one space and voxel size, with its copy in the outputs.

    Attributes
    ----------
    atlas : Atlas
        The atlas.
    node_files : tuple of str
        BIDS URIs (``bids:atlases:...``) of the copied image and look-up table.
    digest : str
        Hash of the image and look-up table contents (part of the resume fingerprint).
    """

    atlas: Atlas
    node_files: tuple[str, ...]
    digest: str


# ------------------------------------------------------------------ checks


def check_directories(config: RunConfig) -> None:
    """Refuse directories that cannot work (exit code 2).

    Parameters
    ----------
    config : RunConfig
        The invocation's settings.

    Raises
    ------
    UsageProblem
        If BIDS_DIR is not a dataset directory or OUTPUT_DIR is BIDS_DIR.
    """
    bids_dir = config.bids_dir.resolve()
    output_dir = config.output_dir.resolve()
    if not bids_dir.is_dir():
        raise UsageProblem(f"BIDS_DIR {config.bids_dir} is not a directory")
    if not (bids_dir / "dataset_description.json").is_file():
        raise UsageProblem(
            f"BIDS_DIR {config.bids_dir} has no dataset_description.json; expected an fMRIPrep "
            "derivatives dataset"
        )
    if output_dir == bids_dir:
        raise UsageProblem(
            f"OUTPUT_DIR {config.output_dir} is BIDS_DIR: outputs would mix with the inputs; "
            "choose another OUTPUT_DIR"
        )
    if bids_dir in output_dir.parents:
        logger.warning("OUTPUT_DIR %s is inside BIDS_DIR %s", output_dir, bids_dir)


def check_options(config: RunConfig) -> None:
    """Check the options that need the disk: preset file, filters, local atlases, LUT.

    A local atlas must declare its template space (a ``space-`` entity in its name, or
    ``--atlas-space``), and not a subject-specific one such as ``T1w``; see
    :func:`bidsapp.dataset.atlas.local_atlas_space`. Whether it matches each run's space is checked
    per run (ICA-AROMA runs are in ``MNI152NLin6Asym`` whatever ``--space`` says).

    Parameters
    ----------
    config : RunConfig
        The invocation's settings.

    Raises
    ------
    UsageProblem
        With a message naming the option and the file.
    """
    from bidsapp import confounds as conf
    from bidsapp.dataset.atlas import local_atlas_space
    from bidsapp.dataset.atlas_spec import AtlasError, parse_atlas_spec
    from bidsapp.dataset.filters import load_bids_filters
    from bidsapp.dataset.input_files import QueryError

    if config.denoise.is_preset_file:
        try:
            conf.load_preset(config.denoise.name)
        except conf.ConfoundsError as err:
            raise UsageProblem(f"--denoise-strategy: {one_line(err)}") from err
    try:
        load_bids_filters(config.bids_filters)
    except QueryError as err:
        raise UsageProblem(f"--bids-filter-file: {one_line(err)}") from err
    local = []
    for spec in config.atlases:
        try:
            parsed = parse_atlas_spec(spec)
        except AtlasError as err:
            raise UsageProblem(f"--atlas: {one_line(err)}") from err
        if parsed.path is not None:
            if not parsed.path.is_file():
                raise UsageProblem(f"--atlas {spec}: no such file")
            try:
                local_atlas_space(parsed.path, config.atlas_space)
            except AtlasError as err:
                raise UsageProblem(f"--atlas: {one_line(err)}") from err
            local.append(parsed.path)
    if config.atlas_space is not None and not local:
        raise UsageProblem(
            "--atlas-space applies to local atlases (--atlas path/to/*_dseg.nii.gz); "
            "TemplateFlow atlases are taken in the space of each run"
        )
    if config.atlas_lut is not None:
        if not local:
            raise UsageProblem(
                "--atlas-lut applies to a local atlas (--atlas path/to/*_dseg.nii.gz); "
                "TemplateFlow atlases bring their own look-up table"
            )
        if not config.atlas_lut.is_file():
            raise UsageProblem(f"--atlas-lut {config.atlas_lut}: no such file")


# ------------------------------------------------------------------ atlases


def _atlas_labels(config: RunConfig) -> list[str]:
    """Labels of the requested atlases as written before they are resolved."""
    from bidsapp.dataset.atlas_spec import atlas_label, parse_atlas_spec

    labels = []
    for spec in config.atlases:
        parsed = parse_atlas_spec(spec)
        labels.append(atlas_label(parsed.name, parsed.desc))
    return labels


def _check_atlas_labels(config: RunConfig) -> None:
    """Refuse two ``--atlas`` values that would write one ``atlas-`` label (exit code 2)."""
    seen: dict[str, str] = {}
    for spec, label in zip(config.atlases, _atlas_labels(config), strict=True):
        if label in seen and seen[label] != spec:
            raise UsageProblem(
                f"--atlas {seen[label]} and --atlas {spec} both write atlas-{label} outputs; "
                "bidsapp does not pick one: rename one of the files"
            )
        seen[label] = spec


def _grid_key(inputs: RunInputs) -> tuple:
    return (inputs.space, tuple(round(z, 3) for z in inputs.voxel_size_mm))


def _digest(atlas: Atlas) -> str:
    sha = hashlib.sha256(Path(atlas.dseg).read_bytes())
    sha.update(atlas.lut[["index", "name"]].to_csv(sep="\t", index=False).encode())
    return sha.hexdigest()[:16]


def _atlas_reason(spec: str, space: str, err: Exception) -> str:
    """One-line reason for the runs an atlas error stops (the full message is printed)."""
    first = one_line(str(err).split(". ")[0].split(":\n")[0]) or type(err).__name__
    return f"atlas {spec} is unusable in space {space} (see 'atlas error' above): {first}"


def resolve_atlases(
    jobs: Sequence[RunInputs], config: RunConfig
) -> tuple[dict[tuple, list[AtlasTarget]], dict[tuple, list[tuple[str, str]]]]:
    """Resolve and copy every atlas once per (space, voxel size) among the jobs.

    Parameters
    ----------
    jobs : sequence of RunInputs
        Prepared runs.
    config : RunConfig
        The invocation's settings.

    Returns
    -------
    targets : dict
        Grid key -> atlases ready for extraction.
    failures : dict
        Grid key -> ``(atlas label, one-line reason)`` of atlases that cannot be used; the
        full message is printed once.
    """
    from bidsapp.dataset import atlas_copy
    from bidsapp.dataset.atlas import get_atlas
    from bidsapp.dataset.atlas_spec import AtlasError, parse_atlas_spec

    labels = _atlas_labels(config)
    targets: dict[tuple, list[AtlasTarget]] = {}
    failures: dict[tuple, list[tuple[str, str]]] = {}
    for job in jobs:
        key = _grid_key(job)
        if key in targets:
            continue
        targets[key], failures[key] = [], []
        for spec, label in zip(config.atlases, labels, strict=True):
            local = parse_atlas_spec(spec).path is not None
            try:
                atlas = get_atlas(
                    spec,
                    space=job.space,
                    voxel_size_mm=job.voxel_size_mm,
                    lut_path=config.atlas_lut if local else None,
                    atlas_space=config.atlas_space if local else None,
                )
                copied = atlas_copy.copy_atlas(config.output_dir, atlas, overwrite=config.overwrite)
            except (AtlasError, OSError, ValueError) as err:
                print(f"bidsapp: atlas error: {err}", file=sys.stderr, flush=True)
                failures[key].append((label, _atlas_reason(spec, job.space, err)))
                continue
            targets[key].append(AtlasTarget(atlas, tuple(copied.node_files), _digest(atlas)))
    return targets, failures


# ------------------------------------------------------------------ one run


def _source_uri(path: Path, bids_dir: Path) -> str:
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
        uri = _source_uri(path, bids_dir)
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
        if not isinstance(record, dict) or record.get("URI") != _source_uri(path, bids_dir):
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

    denoise = to_jsonable(config.denoise)
    if config.denoise.is_preset_file:
        try:
            denoise["preset"] = conf.load_preset(config.denoise.name)
        except conf.ConfoundsError:
            denoise["preset"] = None
    return fingerprint(
        {
            "inputs": [
                None if p is None else _source_uri(p, config.bids_dir)
                for p in input_files(inputs).values()
            ],
            "t_r": inputs.t_r,
            "atlas": [target.atlas.label, target.atlas.space, target.digest],
            "denoise": denoise,
            "extraction": config.extraction,
            "version": __version__,
        }
    )


def _json_safe(value: Any) -> Any:
    """Replace infinite thresholds (censoring disabled) by None for strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def build_sidecar(
    extraction: RunExtraction,
    result: Any,
    target: AtlasTarget,
    config: RunConfig,
    parameters_fingerprint: str,
) -> dict[str, Any]:
    """Return the timeseries sidecar of one run and atlas.

    Parameters
    ----------
    extraction : RunExtraction
        The run's extraction.
    result : AtlasTimeseries
        The atlas's timeseries and coverage.
    target : AtlasTarget
        The atlas and its copy in the outputs.
    config : RunConfig
        The invocation's settings.
    parameters_fingerprint : str
        From :func:`run_fingerprint`.

    Returns
    -------
    dict
        JSON-compatible metadata: sampling frequency (Hz), sources (BIDS URIs), atlas,
        extraction and denoising parameters, confound columns, kept and censored volumes,
        mean framewise displacement (mm), software and fingerprint.
    """
    inputs = extraction.inputs
    atlas = target.atlas
    sources = [_source_uri(inputs.bold, config.bids_dir)]
    sources += [_source_uri(p, config.bids_dir) for p in (inputs.mask, inputs.run.confounds) if p]
    sources += list(target.node_files)
    denoise = to_jsonable(config.denoise)
    denoise["parameters"] = _json_safe(to_jsonable(extraction.preset))
    return {
        "SamplingFrequency": 1.0 / inputs.t_r,
        "RepetitionTime": inputs.t_r,
        "Sources": sources,
        "Atlas": {
            "Name": atlas.name,
            "Description": atlas.desc,
            "Label": atlas.label,
            "Space": atlas.space,
            "Source": atlas.source,
            "Resolution": atlas.resolution,
            "Image": target.node_files[0] if target.node_files else None,
            "LookUpTable": target.node_files[1] if len(target.node_files) > 1 else None,
            "NumberOfRegions": int(result.timeseries.shape[1]),
        },
        "Extraction": to_jsonable(config.extraction),
        "Denoising": denoise,
        "ConfoundColumns": extraction.confound_columns,
        "NumberOfVolumes": inputs.n_volumes,
        "RetainedVolumes": extraction.retained,
        "CensoredVolumes": extraction.censored,
        "NonFiniteVolumes": extraction.non_finite_volumes,
        "MeanFramewiseDisplacement": extraction.mean_fd,
        "RegionsBelowCoverage": result.below_coverage,
        "Warnings": extraction.warnings,
        "SoftwareName": "bidsapp",
        "SoftwareVersion": __version__,
        "ParametersFingerprint": parameters_fingerprint,
    }


def _relmat(timeseries: pd.DataFrame) -> pd.DataFrame:
    """Pearson correlation between regions; n/a for regions without data.

    Computed with one BLAS thread, so that the bytes written do not depend on how many
    threads the process has (joblib workers get fewer than the main process): a rerun or
    ``--n-jobs`` never changes a file that resume compares by hash.
    """
    from bidsapp.maskers.pipeline import one_blas_thread

    values = timeseries.to_numpy(dtype=float)
    valid = np.isfinite(values).all(axis=0)
    valid[valid] = np.std(values[:, valid], axis=0) > 0
    corr = np.full((values.shape[1], values.shape[1]), np.nan)
    if valid.any():
        with one_blas_thread():
            corr[np.ix_(valid, valid)] = np.corrcoef(values[:, valid], rowvar=False)
    return pd.DataFrame(corr, index=timeseries.columns, columns=timeseries.columns)


def _resumed(inputs: RunInputs, target: AtlasTarget, paths: Any, sidecar: dict) -> RunStatus:
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


def _complete(paths: Any, fp: str, inputs: RunInputs, config: RunConfig, hashes) -> dict | None:
    """Return the sidecar of a complete, current set of outputs, else None (recompute)."""
    from bidsapp.dataset import jsonio, run_outputs

    if config.overwrite or not run_outputs.outputs_complete(paths, {"ParametersFingerprint": fp}):
        return None
    sidecar = jsonio.read_sidecar(paths.timeseries_json) or {}
    if not inputs_unchanged(sidecar.get(INPUT_FILES_KEY), inputs, config.bids_dir, hashes):
        logger.info("%s: an input changed since %s was written", inputs.name, paths.timeseries)
        return None
    return sidecar


def remove_stopped_outputs(status: RunStatus, paths: Any) -> None:
    """Remove the old outputs of a run that failed or was excluded; never raises.

    Old files that cannot be removed (a folder in a file's place, a read-only folder) would
    look current beside a ``failed`` or ``excluded`` row, so the run becomes ``failed`` and
    its one-line reason names them; the other runs go on.

    Parameters
    ----------
    status : RunStatus
        The stopped run's status, updated in place when a removal fails.
    paths : RunOutputPaths or None
        The run's output set; None when it cannot be named (nothing to remove).
    """
    from bidsapp.dataset import run_outputs

    if paths is None:
        return
    problem = run_outputs.remove_run_outputs(paths).problem()
    if problem:
        first = status.reason if status.status == "failed" else f"{status.status}: {status.reason}"
        status.status, status.reason = "failed", one_line(f"{first}; {problem}")


def process_run(
    inputs: RunInputs, targets: Sequence[AtlasTarget], config: RunConfig
) -> list[RunStatus]:
    """Extract and write one run's outputs for every atlas; never raises.

    A set of outputs is kept (resume) only when it is complete and consistent
    (:func:`bidsapp.dataset.run_outputs.outputs_complete`), was made with the same settings
    (:func:`run_fingerprint`) and from inputs with the same content
    (:func:`inputs_unchanged`). When the run fails or is excluded, the files of its sets
    left by an earlier invocation are removed, so they never look current.

    Parameters
    ----------
    inputs : RunInputs
        The prepared run.
    targets : sequence of AtlasTarget
        Atlases resolved for the run's space and voxel size.
    config : RunConfig
        The invocation's settings.

    Returns
    -------
    list of RunStatus
        One status per atlas: ``ok`` (``resumed`` when complete outputs were kept),
        ``failed`` with a one-line reason, or ``excluded`` with the reason.
    """
    from bidsapp.app.extract import ExtractionError, RunExcluded, extract_run
    from bidsapp.dataset import fileio, naming, run_outputs

    stat = config.extraction.strategy
    desc = config.denoise.label
    hashes = FileHashes()
    todo: list[tuple[AtlasTarget, Any, str]] = []
    statuses: list[RunStatus] = []
    for target in targets:
        paths = run_outputs.output_paths(
            config.output_dir, inputs.entities, target.atlas.label, stat, desc
        )
        try:  # a planted link among the folders: refuse before reading or removing anything
            fileio.ensure_directory(config.output_dir, paths.directory)
        except OSError as err:
            reason = f"cannot write {paths.timeseries.name}: {one_line(err)}"
            statuses.append(
                RunStatus(inputs.name, inputs.entities, target.atlas.label, "failed", reason)
            )
            continue
        fp = run_fingerprint(inputs, target, config)
        sidecar = _complete(paths, fp, inputs, config, hashes)
        if sidecar is not None:
            statuses.append(_resumed(inputs, target, paths, sidecar))
        else:
            todo.append((target, paths, fp))
    if not todo:
        return statuses

    def stopped(target: AtlasTarget, paths: Any, reason: str, status="failed") -> RunStatus:
        stop = RunStatus(inputs.name, inputs.entities, target.atlas.label, status, reason)
        remove_stopped_outputs(stop, paths)
        return stop

    try:
        # Hash the inputs before reading them: what is recorded is never newer than what
        # was used (an edit during extraction makes the next run recompute).
        records = input_records(inputs, config.bids_dir, hashes)
        extraction = extract_run(
            inputs, [t.atlas for t, _, _ in todo], config.denoise, config.extraction
        )
    except RunExcluded as err:
        return statuses + [stopped(t, p, one_line(err), "excluded") for t, p, _ in todo]
    except ExtractionError as err:
        return statuses + [stopped(t, p, one_line(err)) for t, p, _ in todo]
    except Exception as err:  # one broken run must never stop the others
        logger.debug("unexpected failure in %s", inputs.name, exc_info=True)
        reason = f"{inputs.bold}: {type(err).__name__}: {one_line(err)}"
        return statuses + [stopped(t, p, reason) for t, p, _ in todo]

    for (target, paths, fp), result in zip(todo, extraction.per_atlas, strict=True):
        relmat_sidecar = run_outputs.relmat_metadata(list(target.node_files))
        relmat_sidecar["Sources"] = [
            naming.bids_uri(paths.timeseries, root=config.output_dir, dataset="")
        ]
        sidecar = build_sidecar(extraction, result, target, config, fp)
        sidecar[INPUT_FILES_KEY] = records
        try:
            written = run_outputs.write_run_outputs(
                paths,
                timeseries=result.timeseries,
                timeseries_sidecar=sidecar,
                coverage=result.coverage,
                relmat=_relmat(result.timeseries),
                relmat_sidecar=relmat_sidecar,
            )
        except Exception as err:  # disk full, permissions: this run only
            logger.debug("writing %s failed", paths.timeseries, exc_info=True)
            reason = f"cannot write {paths.timeseries.name}: {one_line(err)}"
            if isinstance(err, OSError) and err.filename and err.strerror:
                # Name the file that failed (the set is written file by file).
                reason = f"cannot write {Path(err.filename).name}: {one_line(err.strerror)}"
            statuses.append(stopped(target, paths, reason))
            continue
        statuses.append(
            RunStatus(
                inputs.name,
                inputs.entities,
                target.atlas.label,
                "ok",
                "; ".join(extraction.warnings),
                volumes_total=inputs.n_volumes,
                volumes_kept=len(extraction.retained),
                mean_fd=extraction.mean_fd,
                regions_below_coverage=len(result.below_coverage),
                seconds=extraction.seconds,
                outputs=[str(p) for p in written],
                warnings=list(extraction.warnings),
            )
        )
    return statuses


# ------------------------------------------------------------------ scheduling


def _process_job(job: tuple[RunInputs, list[AtlasTarget]], config: RunConfig) -> list[RunStatus]:
    """Process one ``(inputs, targets)`` job (module level, so that it pickles)."""
    inputs, targets = job
    return process_run(inputs, targets, config)


def _worker_died(
    job: tuple[RunInputs, list[AtlasTarget]], reason: str, config: RunConfig
) -> list[RunStatus]:
    """Statuses of a job whose worker process died: ``failed``, naming the BOLD.

    The process may have died mid-write, so the run's sets are removed like those of any
    stopped run, with the temporary files it left (its pid is dead, so only its files go).
    """
    from bidsapp.dataset import fileio

    inputs, targets = job
    statuses = []
    for target in targets:
        status = RunStatus(
            inputs.name, inputs.entities, target.atlas.label, "failed", f"{inputs.bold}: {reason}"
        )
        paths = _set_paths(config, inputs.entities, target.atlas.label)
        if paths is not None:
            fileio.remove_stale_temp_files(paths.directory)
        remove_stopped_outputs(status, paths)
        statuses.append(status)
    return statuses


def _parallel_results(
    jobs: Sequence[tuple[RunInputs, list[AtlasTarget]]], config: RunConfig
) -> Iterator[list[RunStatus]]:
    """Run the jobs, yielding each one's statuses as it finishes."""
    from functools import partial

    from bidsapp.app.parallel import run_jobs

    yield from run_jobs(
        partial(_process_job, config=config),
        jobs,
        n_jobs=config.n_jobs,
        dask_scheduler=config.dask_scheduler,
        temp_folder=None if config.work_dir is None else str(config.work_dir / "joblib"),
        on_worker_death=partial(_worker_died, config=config),
    )


def _print_memory_bound(jobs: Sequence[tuple[RunInputs, list[AtlasTarget]]], config) -> None:
    """Print what ``--n-jobs`` parallel jobs need in memory (the largest job's bound)."""
    import nibabel as nib

    from bidsapp.app.parallel import memory_message
    from bidsapp.engine import memory_bound

    bound = 0
    for inputs, targets in jobs:
        img = nib.load(str(inputs.bold))
        n_regions = max((len(t.atlas.lut) for t in targets), default=0)
        bound = max(
            bound,
            memory_bound(
                img.shape,
                img.get_data_dtype(),
                n_atlases=len(targets),
                n_regions=n_regions,
                smoothing=config.extraction.smoothing_fwhm is not None,
            ),
        )
    n_jobs = 1 if config.dask_scheduler is not None else config.n_jobs
    print(memory_message(n_jobs, bound) + (" (per Dask worker)" if config.dask_scheduler else ""))


def _print_progress(status: RunStatus) -> None:
    name = f"{status.name} [{status.atlas}]"
    if status.status == "failed":
        print(f"FAILED  {name}: {status.reason}", flush=True)
    elif status.status == "excluded":
        print(f"EXCLUDED {name}: {status.reason}", flush=True)
    elif status.resumed or status.status == "skipped":
        print(f"skipped {name}: already done", flush=True)
    else:
        print(
            f"ok      {name}: {status.volumes_kept}/{status.volumes_total} volumes kept, "
            f"{status.seconds:.1f} s",
            flush=True,
        )
        for warning in status.warnings:
            print(f"        warning: {warning}", flush=True)


def _write_report(config: RunConfig, subject: str) -> bool:
    """Write a subject's HTML report; a failure is a printed warning, never fatal.

    Returns whether the report was written.
    """
    try:
        from bidsapp.report.participant import write_participant_report
    except ImportError as err:
        print(f"warning: no participant report for sub-{subject}: {err}", flush=True)
        return False
    try:
        path = write_participant_report(config.output_dir, subject, config.bids_dir)
    except Exception as err:  # a report must never fail the runs
        logger.debug("report of sub-%s failed", subject, exc_info=True)
        print(
            f"warning: participant report for sub-{subject} not written: "
            f"{type(err).__name__}: {one_line(err)}",
            flush=True,
        )
        return False
    logger.info("wrote %s", path)
    return True


def _remove_stale_report(report: Path) -> None:
    """Remove a report that describes earlier results (a folder in its place is left)."""
    try:
        if not stat_module.S_ISDIR(os.lstat(report).st_mode):
            os.unlink(report)
            print(f"removed {report.name}: it described earlier results", flush=True)
    except FileNotFoundError:
        pass
    except OSError as err:
        print(f"warning: {report} describes earlier results: {one_line(err)}", flush=True)


def _finish_subject(config: RunConfig, subject: str, statuses: Sequence[RunStatus]) -> bool:
    """Record a subject's run statuses, then write its report (under the subject's lock).

    Returns False when the status table could not be written: the group level would then
    not know these outcomes, so the invocation must not end with 0.
    """
    from bidsapp.dataset import status_tables

    rows = [s.as_row(config.denoise.label, config.extraction.strategy) for s in statuses]
    recorded = True
    try:
        status_tables.write_subject_status(config.output_dir, subject, rows)
    except (OSError, ValueError) as err:
        print(f"FAILED  sub-{subject}: status table not written: {one_line(err)}", flush=True)
        recorded = False
    report = config.output_dir / f"sub-{subject}.html"
    changed = any(not s.resumed for s in statuses)
    written = False
    if config.reports and (changed or not report.is_file()):
        written = _write_report(config, subject)
    if changed and not written:
        # --no-reports, or the report failed: the old one would show other numbers.
        _remove_stale_report(report)
    return recorded


def _summarise(statuses: Sequence[RunStatus], seconds: float) -> int:
    failed = [s for s in statuses if s.status == "failed"]
    excluded = [s for s in statuses if s.status == "excluded"]
    ok = sum(s.status == "ok" and not s.resumed for s in statuses)
    resumed = sum(s.resumed for s in statuses)
    print(
        f"done in {seconds:.1f} s: {ok} written, {resumed} already done, {len(failed)} failed, "
        f"{len(excluded)} excluded",
        flush=True,
    )
    for title, group in (("failed", failed), ("excluded", excluded)):
        if group:
            print(f"{title} runs ({len(group)}):")
            for status in group:
                print(f"  {status.name} [{status.atlas}]: {status.reason}")
    return EXIT_RUN_FAILED if failed or excluded else EXIT_OK


def plan_outputs(
    jobs: Sequence[tuple[RunInputs, list[AtlasTarget]]], config: RunConfig
) -> tuple[list[tuple[RunInputs, list[AtlasTarget]]], list[tuple[RunStatus, Any]]]:
    """Name every output of every job before anything is written; refuse shared names.

    Two jobs (two inputs, or two atlases of one label) that would write one file all fail,
    with a message naming every input involved: bidsapp never picks one silently.

    Parameters
    ----------
    jobs : sequence
        ``(inputs, atlas targets)`` pairs.
    config : RunConfig
        The invocation's settings.

    Returns
    -------
    jobs : list
        The jobs left, each with the atlases whose outputs no other job claims.
    stopped : list
        ``(failed RunStatus, RunOutputPaths or None)`` for each refused run and atlas; the
        paths name the contested set (whose old files must not look current).
    """
    from bidsapp.dataset import run_outputs

    stat, desc = config.extraction.strategy, config.denoise.label
    planned: dict[tuple[int, int], Any] = {}
    claims: dict[Path, list[tuple[int, int]]] = {}
    stopped: list[tuple[RunStatus, Any]] = []
    for j, (inputs, targets) in enumerate(jobs):
        for t, target in enumerate(targets):
            try:
                paths = run_outputs.output_paths(
                    config.output_dir, inputs.entities, target.atlas.label, stat, desc
                )
            except ValueError as err:
                reason = f"{inputs.bold}: its outputs cannot be named: {one_line(err)}"
                status = RunStatus(inputs.name, inputs.entities, target.atlas.label, "failed")
                status.reason = reason
                stopped.append((status, None))
                continue
            planned[(j, t)] = paths
            for path in paths.all():
                claims.setdefault(path, []).append((j, t))

    def identity(owner: tuple[int, int]) -> tuple:
        inputs, targets = jobs[owner[0]]
        atlas = targets[owner[1]].atlas
        return (tuple(input_files(inputs).values()), str(atlas.dseg), targets[owner[1]].digest)

    contested: dict[tuple[int, int], Path] = {}
    duplicates: set[tuple[int, int]] = set()
    for path, owners in claims.items():
        if len(owners) < 2:
            continue
        if len({identity(o) for o in owners}) == 1:
            # The same files read with the same atlas (e.g. one ICA-AROMA image found
            # through two resolutions of the preprocessed BOLD): one job, not a choice.
            duplicates.update(owners[1:])
            continue
        for owner in owners:
            contested.setdefault(owner, path)
    duplicates -= set(contested)

    def who(owner: tuple[int, int]) -> str:
        inputs, targets = jobs[owner[0]]
        return f"{inputs.bold} with atlas {targets[owner[1]].atlas.dseg}"

    for owner, path in sorted(contested.items()):
        inputs, targets = jobs[owner[0]]
        involved = "; ".join(who(o) for o in claims[path])
        reason = (
            f"{path.name} would be written by {len(claims[path])} inputs ({involved}); "
            "bidsapp does not pick one: select one with --bids-filter-file or rename an atlas"
        )
        status = RunStatus(inputs.name, inputs.entities, targets[owner[1]].atlas.label, "failed")
        status.reason = reason
        stopped.append((status, planned[owner]))
    kept = []
    for j, (inputs, targets) in enumerate(jobs):
        left = [
            t
            for i, t in enumerate(targets)
            if (j, i) in planned and (j, i) not in contested and (j, i) not in duplicates
        ]
        if left:
            kept.append((inputs, left))
    return kept, stopped


def _set_paths(config: RunConfig, entities: dict[str, str], label: str) -> Any:
    """Output paths of one run and atlas label, or None when they cannot be named."""
    from bidsapp.dataset import run_outputs

    try:
        return run_outputs.output_paths(
            config.output_dir, entities, label, config.extraction.strategy, config.denoise.label
        )
    except ValueError:
        return None


def _clean_leftovers(config: RunConfig) -> None:
    """Remove temporary files of dead writers outside the subjects' folders."""
    from bidsapp.dataset import dataset_description, fileio

    fileio.remove_stale_temp_files(config.output_dir)
    fileio.remove_stale_temp_files(config.output_dir / "logs")
    fileio.remove_stale_temp_files(
        config.output_dir / dataset_description.ATLAS_DATASET, recursive=True
    )


def _open_subject(config: RunConfig, subject: str, stale: Sequence[tuple[RunStatus, Any]]) -> None:
    """With the subject's lock held: remove its leftovers and the sets that must not stay.

    Every writer of ``sub-<s>/`` holds this lock, so any temporary file there is a leftover
    of a killed run. A stopped run whose old set cannot be removed becomes ``failed``.
    """
    from bidsapp.dataset import fileio

    folder = config.output_dir / f"sub-{subject}"
    if not folder.is_symlink():
        fileio.remove_stale_temp_files(folder, recursive=True, any_writer=True)
    for status, paths in stale:
        before = status.status, status.reason
        remove_stopped_outputs(status, paths)
        if (status.status, status.reason) != before:
            _print_progress(status)


# ------------------------------------------------------------------ levels


def run_participant(config: RunConfig) -> int:
    """Run the participant level.

    Before writing, every job's output names are computed (:func:`plan_outputs`). Then one
    exclusive lock per subject is taken (in sorted order, see
    :class:`bidsapp.dataset.locking.SubjectLock`) and held while that subject's outputs, status
    table and report are checked and written, so concurrent invocations on one subject
    take turns. Leftover temporary files of killed runs are removed.

    Parameters
    ----------
    config : RunConfig
        The invocation's settings.

    Returns
    -------
    int
        0 when every run succeeded or was already complete; 1 when a run failed or was
        excluded, a subject's status table could not be written, or no run matched the
        selection.

    Raises
    ------
    UsageProblem
        When the directories or options make the invocation impossible.
    """
    from bidsapp.app.extract import ExtractionError, RunExcluded, prepare_run
    from bidsapp.dataset import dataset_description, fileio, locking
    from bidsapp.dataset.input_files import QueryError
    from bidsapp.dataset.query import NoRunsFoundError, find_runs

    check_directories(config)
    check_options(config)
    _check_atlas_labels(config)
    started = time.perf_counter()
    database_dir = config.work_dir / "pybids_db" if config.work_dir else None
    try:
        runs = find_runs(
            config.bids_dir,
            space=config.space,
            participant_labels=config.participant_labels,
            session_labels=config.session_labels,
            tasks=config.tasks,
            bids_filters=config.bids_filters,
            database_dir=database_dir,
        )
    except NoRunsFoundError as err:
        print(f"bidsapp: nothing to do: {err}", file=sys.stderr, flush=True)
        return EXIT_RUN_FAILED
    except QueryError as err:
        raise UsageProblem(one_line(err)) from err

    try:
        config.output_dir.mkdir(parents=True, exist_ok=True)
        fileio.ensure_directory(config.output_dir, "logs")
        dataset_description.write_dataset_description(
            config.output_dir,
            version=__version__,
            source_dir=config.bids_dir,
            container=os.environ.get("BIDSAPP_CONTAINER") or None,
        )
        dataset_description.write_bidsignore(config.output_dir)
        _clean_leftovers(config)
    except OSError as err:
        raise UsageProblem(f"cannot write into OUTPUT_DIR {config.output_dir}: {err}") from err
    print(
        f"bidsapp {__version__}: {len(runs)} run(s), {len(config.atlases)} atlas(es), "
        f"denoising {config.denoise.label}, stat {config.extraction.strategy}",
        flush=True,
    )
    statuses: list[RunStatus] = []
    # subject -> (status, set) of stopped runs whose sets go once the subject's lock is held
    stale: dict[str, list[tuple[RunStatus, Any]]] = {}

    def stop(status: RunStatus, paths: Any) -> None:
        statuses.append(status)
        stale.setdefault(status.subject, []).append((status, paths))

    prepared: list[RunInputs] = []
    labels = _atlas_labels(config)
    for run in runs:
        try:
            prepared.append(prepare_run(run, config.denoise))
        except ExtractionError as err:
            kind = "excluded" if isinstance(err, RunExcluded) else "failed"
            for label in labels:
                status = RunStatus(run.name, dict(run.entities), label, kind, one_line(err))
                stop(status, _set_paths(config, dict(run.entities), label))
    targets, failures = resolve_atlases(prepared, config)

    jobs = []
    for inputs in prepared:
        key = _grid_key(inputs)
        for label, reason in failures[key]:
            status = RunStatus(inputs.name, inputs.entities, label, "failed", reason)
            stop(status, _set_paths(config, inputs.entities, label))
        if targets[key]:
            jobs.append((inputs, list(targets[key])))
    jobs, refused = plan_outputs(jobs, config)
    for status, paths in refused:
        stop(status, paths)
    for status in statuses:
        _print_progress(status)

    remaining: dict[str, int] = {}
    for inputs, _ in jobs:
        subject = inputs.entities["subject"]
        remaining[subject] = remaining.get(subject, 0) + 1
    by_subject: dict[str, list[RunStatus]] = {}
    for status in statuses:
        by_subject.setdefault(status.subject, []).append(status)
    with contextlib.ExitStack() as stack:
        locks = {}
        for subject in sorted(set(by_subject) | set(remaining)):
            try:
                locks[subject] = stack.enter_context(
                    locking.SubjectLock(config.output_dir, subject)
                )
            except OSError as err:
                raise UsageProblem(f"cannot lock sub-{subject}: {one_line(err)}") from err
            _open_subject(config, subject, stale.get(subject, []))
        unrecorded: list[str] = []  # subjects whose status table could not be written
        for subject in sorted(set(by_subject) - set(remaining)):
            if not _finish_subject(config, subject, by_subject[subject]):
                unrecorded.append(subject)
            locks[subject].release()
        _print_memory_bound(jobs, config)
        for batch in _parallel_results(jobs, config):
            for status in batch:
                _print_progress(status)
            statuses.extend(batch)
            if not batch:
                continue
            subject = batch[0].subject
            by_subject.setdefault(subject, []).extend(batch)
            remaining[subject] -= 1
            if remaining[subject] == 0:
                if not _finish_subject(config, subject, by_subject[subject]):
                    unrecorded.append(subject)
                locks[subject].release()
    code = _summarise(statuses, time.perf_counter() - started)
    if unrecorded:
        print(f"status not recorded for: {', '.join(f'sub-{s}' for s in unrecorded)}")
        return EXIT_RUN_FAILED
    return code


def _matplotlib_dir(config: RunConfig) -> None:
    """Give matplotlib (reports) a writable cache in --work-dir or a temporary directory.

    Nothing happens when ``MPLCONFIGDIR`` is set or reports are off. Without --work-dir
    and without any writable temporary directory, reports fail with a warning.
    """
    if not config.reports or os.environ.get("MPLCONFIGDIR"):
        return
    if config.work_dir is not None:
        folder = config.work_dir / "matplotlib"
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["MPLCONFIGDIR"] = str(folder)
        return
    try:
        folder = Path(tempfile.mkdtemp(prefix="bidsapp-mpl-"))
    except OSError:
        logger.warning("No writable temporary directory: pass --work-dir for the reports")
        return
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["MPLCONFIGDIR"] = str(folder)


def run(config: RunConfig) -> int:
    """Run one bidsapp invocation (participant or group level).

    Parameters
    ----------
    config : RunConfig
        The invocation's settings.

    Returns
    -------
    int
        The exit code: 0 success; 1 a run failed, or nothing to do.

    Raises
    ------
    UsageProblem
        When the directories or options make the invocation impossible (exit code 2).
    """
    if config.work_dir is not None:
        try:
            config.work_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UsageProblem(f"cannot create --work-dir {config.work_dir}: {err}") from err
    _matplotlib_dir(config)
    if config.analysis_level == "group":
        from bidsapp.app.group import run_group

        return run_group(config)
    return run_participant(config)
