"""Dataset-level files of the output dataset: ``dataset_description.json`` and ``.bidsignore``.

Part of the dataset layer. Both are written by many processes at once (SLURM array tasks):
writes are atomic, an identical file is not rewritten, and ``.bidsignore`` is merged under a
lock. :data:`BIDSIGNORE_PATTERNS` is the one list of patterns bidsapp's files need.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bidsapp.dataset.fileio import atomic_write_text, read_regular_bytes, write_if_changed
from bidsapp.dataset.jsonio import json_text, read_sidecar
from bidsapp.dataset.locking import locked

logger = logging.getLogger(__name__)


logger = logging.getLogger(__name__)

#: Version of the BIDS specification the outputs follow. A constant rather than the installed
#: schema's version: the names below were checked against BIDS 1.11 (the first release with the
#: ``atlas-`` entity) with bids-validator 3.0.2, and a package upgrade must not change what the
#: dataset claims, nor make two nodes of one SLURM array write different descriptions.
BIDS_VERSION = "1.11.1"


#: opaque to the validator and skipped by pybids, and XCP-D uses the same place).
ATLAS_DATASET = "sourcedata/atlases"

#: ``.bidsignore`` patterns for files the BIDS schema does not describe: ``timeseries`` and
#: ``relmat`` suffixes do not exist, and ``stat-`` is not an entity (the validator rejects the
#: coverage ``_stat-coverage_bold.tsv`` as a misnamed BOLD file). Kept literal on purpose:
#: bids-validator 3.0.2's matcher missed ``*_stat-*_bold.*``, which gitignore rules match.
BIDSIGNORE_PATTERNS: tuple[str, ...] = (
    "*_timeseries.*",
    "*_relmat.*",
    "*_stat-coverage_bold.*",
    "*_design.tsv",
    "*_outliers.*",
    # HTML reports and the group level's folder: the schema has no place for them. Checked
    # with bids-validator-deno 3.0.2: ``/group`` silences the folder and its files;
    # ``group/`` or ``/group/`` leave a NOT_INCLUDED error on the folder itself.
    "*.html",
    "/group",
)


def _container_entry(container: Mapping[str, str] | str) -> dict[str, str]:
    """``Container`` object from a mapping or a ``<type>://<tag>`` string."""
    if isinstance(container, str):
        kind, sep, tag = container.partition("://")
        if not (sep and kind and tag):
            raise ValueError(f"Container {container!r} must look like 'docker://org/image:tag'.")
        return {"Type": kind, "Tag": tag, "URI": container}
    unknown = sorted(set(container) - {"Type", "Tag", "URI"})
    if unknown:
        raise ValueError(f"Container keys must be Type, Tag or URI; got {unknown}.")
    return dict(container)


def _generated_by(
    version: str, container: Mapping[str, str] | str | None, code_url: str | None
) -> dict[str, Any]:
    """Build the ``GeneratedBy`` entry describing this bidsapp run."""
    entry: dict[str, Any] = {"Name": "bidsapp", "Version": str(version)}
    if code_url:
        entry["CodeURL"] = code_url
    if container:
        entry["Container"] = _container_entry(container)
    return entry


def write_dataset_description(
    output_dir: str | os.PathLike[str],
    *,
    version: str,
    source_dir: str | os.PathLike[str],
    name: str = "bidsapp parcel timeseries",
    container: Mapping[str, str] | str | None = None,
    code_url: str | None = None,
) -> Path:
    """Write the output dataset's ``dataset_description.json``; safe under concurrency.

    Several processes (e.g. SLURM array tasks) may call this at once: each write is atomic,
    so readers see a complete file, and a file that already holds the same content is not
    rewritten. A differing existing file is replaced, with a warning naming what changed.

    ``DatasetLinks`` maps ``preprocessed`` to the source dataset (so ``Sources`` can be
    ``bids:preprocessed:sub-01/func/...``, see :func:`~bidsapp.dataset.naming.bids_uri`) and
    ``atlases`` to ``sourcedata/atlases`` inside this dataset (``NodeFiles`` are
    ``bids:atlases:...``).

    Parameters
    ----------
    output_dir : path-like
        Output dataset root (created if missing).
    version : str
        bidsapp version.
    source_dir : path-like
        The fMRIPrep derivatives dataset that was processed; recorded as a ``file://`` URI.
    name : str
        Human-readable dataset name.
    container : mapping or str, optional
        ``{"Type": "docker", "Tag": "org/bidsapp:0.1.0"}`` (``URI`` also accepted), or a
        string ``"docker://org/bidsapp:0.1.0"`` (the image's ``BIDSAPP_CONTAINER``), when
        run from a container. Empty or None: no ``Container`` entry.
    code_url : str, optional
        Where the code can be found (``GeneratedBy[0].CodeURL``).

    Returns
    -------
    Path
        Path of ``dataset_description.json``.

    """
    source_uri = Path(os.path.abspath(source_dir)).as_uri()
    description = {
        "Name": name,
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [_generated_by(version, container, code_url)],
        "SourceDatasets": [{"URL": source_uri}],
        "DatasetLinks": {"preprocessed": source_uri, "atlases": ATLAS_DATASET},
    }
    path = Path(output_dir) / "dataset_description.json"
    old = read_sidecar(path)
    if old is not None and old != description:
        changed = sorted(k for k in set(old) | set(description) if old.get(k) != description.get(k))
        logger.warning("Replacing %s: %s differ from this run", path, ", ".join(changed))
    write_if_changed(path, json_text(description))
    return path


def write_bidsignore(
    output_dir: str | os.PathLike[str], patterns: Iterable[str] = BIDSIGNORE_PATTERNS
) -> Path:
    """Add ``patterns`` to the output dataset's ``.bidsignore``, keeping existing lines.

    Idempotent (nothing is written when every pattern is present) and safe when several
    processes call it at once (the merge happens under a file lock; the write is atomic).

    Parameters
    ----------
    output_dir : path-like
        Output dataset root.
    patterns : iterable of str
        gitignore-style patterns; by default :data:`BIDSIGNORE_PATTERNS`.

    Returns
    -------
    Path
        Path of ``.bidsignore``.

    """
    path = Path(output_dir) / ".bidsignore"
    with locked(path):
        try:  # a planted link is not read (its target's lines are not copied) but replaced
            raw = read_regular_bytes(path)
        except FileNotFoundError:
            raw = b""
        lines = (raw or b"").decode("utf-8", "replace").splitlines()
        missing = [p for p in dict.fromkeys(patterns) if p not in {s.strip() for s in lines}]
        if missing or raw is None:
            atomic_write_text(path, "\n".join([*lines, *missing]) + "\n")
    return path
