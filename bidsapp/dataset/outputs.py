"""BIDS-derivative names and crash-safe writing of every file bidsapp produces.

This module receives plain data (entity dicts, DataFrames, metadata dicts) and knows nothing
of argparse, pybids queries or signal processing.

Layout of an output dataset (XCP-D 26.x compatible names, BEP038 ``atlas-`` entity)::

    OUTPUT_DIR/
      dataset_description.json       DatasetType "derivative", DatasetLinks
      .bidsignore                    suffixes the BIDS schema lacks
      logs/sub-<s>_status.tsv        one row per (run, atlas, denoise label)
      sourcedata/atlases/            small BIDS atlas dataset (BIDS URIs ``bids:atlases:...``)
        dataset_description.json
        atlas-<A>_description.json
        tpl-<space>/tpl-<space>_atlas-<A>[_res-<r>]_dseg.{nii.gz,tsv,json}
      sub-<s>/[ses-<x>/]func/
        <run>_space-<space>_atlas-<A>_stat-<strategy>_desc-<D>_timeseries.{tsv,json}
        <run>_space-<space>_atlas-<A>_stat-coverage_bold.{tsv,json}
        <run>_space-<space>_atlas-<A>_stat-pearsoncorrelation_desc-<D>_relmat.{tsv,json}

Every file is written to a hidden temporary file in the destination directory, flushed to
disk and renamed over the destination, so a reader (or a resumed run) never sees a partial
file. Within one run the timeseries TSV is written last (see :func:`write_run_outputs`), and
the timeseries sidecar records the SHA-256 of every other file of the set, so a resumed run
can tell a complete, consistent set from a truncated or mixed one (:func:`outputs_complete`).

Nothing is read, written or created through a symbolic link bidsapp did not make inside the
output dataset (:func:`read_regular_bytes`, :func:`ensure_directory`, lock files opened with
``O_NOFOLLOW``); a planted link is ignored and replaced by the atomic rename. One process at
a time writes a subject (:class:`SubjectLock`); temporary files of killed writers are
removed (:func:`remove_stale_temp_files`).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import logging
import math
import os
import re
import secrets
import stat as stat_module
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from bidsapp import __version__
from bidsapp.errors import BidsappError

try:  # POSIX only; on other platforms merges are not protected against concurrent writers.
    import fcntl
except ImportError:  # pragma: no cover - exercised on Windows only
    fcntl = None

logger = logging.getLogger(__name__)

#: Version of the BIDS specification the outputs follow. A constant rather than the installed
#: schema's version: the names below were checked against BIDS 1.11 (the first release with the
#: ``atlas-`` entity) with bids-validator 3.0.2, and a package upgrade must not change what the
#: dataset claims, nor make two nodes of one SLURM array write different descriptions.
BIDS_VERSION = "1.11.1"

#: Entities bidsapp may write, as (name, filename key), in the order of the BIDS schema
#: (``rules.entities`` of BIDS 1.11; names are the schema's, except ``res``, ``den`` and
#: ``desc``, which keep pybids's short names). ``stat`` is not a BIDS entity; it sits where
#: XCP-D puts it, after ``atlas``/``res``/``den`` and before ``desc``. ``cohort`` (a
#: TemplateFlow entity fMRIPrep writes after ``space-``) is in the schema's list.
ENTITY_ORDER: tuple[tuple[str, str], ...] = (
    ("subject", "sub"),
    ("template", "tpl"),
    ("session", "ses"),
    ("cohort", "cohort"),
    ("sample", "sample"),
    ("task", "task"),
    ("tracksys", "tracksys"),
    ("acquisition", "acq"),
    ("nucleus", "nuc"),
    ("volume", "voi"),
    ("ceagent", "ce"),
    ("tracer", "trc"),
    ("stain", "stain"),
    ("reconstruction", "rec"),
    ("direction", "dir"),
    ("run", "run"),
    ("modality", "mod"),
    ("echo", "echo"),
    ("flip", "flip"),
    ("inversion", "inv"),
    ("mtransfer", "mt"),
    ("part", "part"),
    ("processing", "proc"),
    ("hemisphere", "hemi"),
    ("space", "space"),
    ("split", "split"),
    ("recording", "recording"),
    ("chunk", "chunk"),
    ("atlas", "atlas"),
    ("segmentation", "seg"),
    ("scale", "scale"),
    ("res", "res"),
    ("den", "den"),
    ("label", "label"),
    ("stat", "stat"),
    ("desc", "desc"),
)
_ENTITY_KEYS = dict(ENTITY_ORDER)
_INDEX_ENTITIES = frozenset({"run", "echo", "flip", "inversion", "split", "chunk"})
#: Other spellings of an entity (pybids config names, schema long names, file-name keys)
#: -> the name used in :data:`ENTITY_ORDER`; entity dicts from pybids use the first kind.
ENTITY_ALIASES: dict[str, str] = {
    **{key: name for name, key in ENTITY_ORDER},
    **{name: name for name, _ in ENTITY_ORDER},
    "staining": "stain",
    "proc": "processing",
    "inv": "inversion",
    "mt": "mtransfer",
    "hemi": "hemisphere",
    "resolution": "res",
    "density": "den",
    "description": "desc",
}

#: Entities of the input BOLD carried into output names (every entity but ``space``, which
#: is written separately, and those bidsapp sets itself), in BIDS order. Keeping all of them
#: is what keeps two inputs (two resolutions, ``part-mag``/``part-phase``, two cohorts)
#: from writing one output name.
RUN_ENTITIES: tuple[str, ...] = tuple(
    name for name, _ in ENTITY_ORDER if name not in {"template", "space", "atlas", "stat", "desc"}
)
#: Keys of a pybids entity dict that are deliberately not carried into output names.
DROPPED_ENTITIES = frozenset({"desc", "description", "suffix", "extension", "datatype"})

#: Where the atlas dataset lives, relative to the output directory (BIDS ``sourcedata/`` is
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
    # HTML reports and the group level's folder: the schema has no place for them.
    "*.html",
    "/group",
)

#: Entity columns every status table has (other entities of a run become extra columns).
_STATUS_ENTITY_COLUMNS: tuple[str, ...] = (
    "subject",
    "session",
    "task",
    "acquisition",
    "ceagent",
    "reconstruction",
    "direction",
    "run",
    "echo",
    "part",
)
#: Columns of the per-subject run status table, in file order.
STATUS_COLUMNS: tuple[str, ...] = (
    *_STATUS_ENTITY_COLUMNS,
    "space",
    "cohort",
    "res",
    "den",
    "atlas",
    "stat",
    "denoise",
    "status",
    "reason",
    "volumes_total",
    "volumes_kept",
    "mean_fd",
    "regions_below_coverage",
    "outputs",
)
#: Columns identifying one row: re-running a run replaces the row with the same key. Every
#: entity of the input is part of it, so rows of two resolutions (or parts) never merge.
STATUS_KEY: tuple[str, ...] = (*RUN_ENTITIES, "space", "atlas", "stat", "denoise")
#: Allowed values of the ``status`` column.
STATUS_VALUES = frozenset({"ok", "failed", "skipped", "excluded"})
_STATUS_INT_COLUMNS = ("volumes_total", "volumes_kept", "regions_below_coverage")
_STATUS_FLOAT_COLUMNS = ("mean_fd",)

_LABEL_RE = re.compile(r"[A-Za-z0-9]+")
_INDEX_RE = re.compile(r"[0-9]+")
_EXTENSION_RE = re.compile(r"(\.[A-Za-z0-9]+)+")
_TSV_FORBIDDEN = re.compile(r"[\t\r\n]")


class AtlasLike(Protocol):
    """What :func:`copy_atlas` needs from an atlas (``bidsapp.dataset.atlas.Atlas`` satisfies it).

    Attributes
    ----------
    label : str
        Alphanumeric atlas label (the ``atlas-`` entity).
    space : str
        Template space of the atlas image (the ``tpl-`` entity of the copy).
    dseg : path-like
        Discrete segmentation NIfTI (``.nii`` or ``.nii.gz``).
    lut : pandas.DataFrame
        Look-up table with at least ``index`` and ``name`` columns.
    lut_path : path-like or None
        File the look-up table was read from, recorded as provenance.

    """

    label: str
    space: str
    dseg: str | os.PathLike[str]
    lut: pd.DataFrame
    lut_path: str | os.PathLike[str] | None


# --------------------------------------------------------------------------------------------
# Labels and names
# --------------------------------------------------------------------------------------------


def to_label(value: Any) -> str:
    """Turn an arbitrary string into a valid BIDS label (letters and digits only).

    Runs of other characters are removed and the letter that follows them is upper-cased, so
    word boundaries stay readable.

    Parameters
    ----------
    value : str
        Any text, e.g. an atlas description or an extraction strategy.

    Returns
    -------
    str
        An alphanumeric label, e.g. ``"400Parcels 7Networks"`` -> ``"400Parcels7Networks"``,
        ``"standard_deviation"`` -> ``"standardDeviation"``.

    Raises
    ------
    ValueError
        If ``value`` contains no ASCII letter or digit.

    """
    parts = [part for part in re.split(r"[^A-Za-z0-9]+", str(value)) if part]
    if not parts:
        raise ValueError(f"Cannot make a BIDS label from {value!r}: it has no letter or digit.")
    return parts[0] + "".join(part[0].upper() + part[1:] for part in parts[1:])


def check_label(value: Any, *, entity: str = "label") -> str:
    """Return ``value`` as a string if it is a valid BIDS label, else raise.

    Parameters
    ----------
    value : str or int
        Candidate entity value.
    entity : str
        Entity name, used in the error message.

    Returns
    -------
    str
        The value, unchanged, as a string.

    Raises
    ------
    ValueError
        If the value is empty or contains anything but ASCII letters and digits.

    """
    text = str(value)
    if isinstance(value, bool) or not _LABEL_RE.fullmatch(text):
        hint = ""
        with contextlib.suppress(ValueError):
            hint = f"; to_label() would give {to_label(text)!r}"
        raise ValueError(
            f"Invalid value {text!r} for BIDS entity {entity!r}: labels may contain only "
            f"letters and digits (A-Z, a-z, 0-9){hint}."
        )
    return text


def _check_index(value: Any, *, entity: str) -> str:
    """Return an index entity value (``run``, ``echo``) as a string of digits, else raise."""
    text = str(value)
    if isinstance(value, bool) or not _INDEX_RE.fullmatch(text):
        raise ValueError(
            f"Invalid value {text!r} for BIDS entity {entity!r}: it must be a non-negative "
            "integer (digits only)."
        )
    return text


def bids_name(entities: Mapping[str, Any], *, suffix: str, extension: str) -> str:
    """Build a BIDS file name from entities, in BIDS entity order.

    Parameters
    ----------
    entities : mapping
        pybids long names (``subject``, ``session``, ``task``, ``acquisition``, ``ceagent``,
        ``reconstruction``, ``direction``, ``run``, ``echo``, ``part``, ``space``, ``res``,
        ``den``, ``desc``) plus ``template``, ``atlas`` and ``stat``. None values are skipped;
        the caller decides which entities to pass (see :func:`output_paths`).
    suffix : str
        Alphanumeric suffix, e.g. ``"timeseries"``.
    extension : str
        Extension with its leading dot, e.g. ``".tsv"`` or ``".nii.gz"``.

    Returns
    -------
    str
        A file name such as ``"sub-01_task-rest_space-MNI152NLin2009cAsym_atlas-X_bold.tsv"``.

    Raises
    ------
    ValueError
        For an unknown entity, an invalid value, suffix or extension.

    """
    entities = canonical_entities(entities)
    unknown = sorted(set(entities) - set(_ENTITY_KEYS))
    if unknown:
        raise ValueError(
            f"Unknown BIDS entities {unknown}; bids_name accepts {[n for n, _ in ENTITY_ORDER]}."
        )
    parts = []
    for name, key in ENTITY_ORDER:
        value = entities.get(name)
        if value is None:
            continue
        check = _check_index if name in _INDEX_ENTITIES else check_label
        parts.append(f"{key}-{check(value, entity=name)}")
    if not parts:
        raise ValueError("A BIDS file name needs at least one entity.")
    check_label(suffix, entity="suffix")
    if not _EXTENSION_RE.fullmatch(extension):
        raise ValueError(f"Invalid extension {extension!r}: expected e.g. '.tsv' or '.nii.gz'.")
    return "_".join([*parts, suffix]) + extension


def bids_uri(path: str | os.PathLike[str], *, root: str | os.PathLike[str], dataset: str) -> str:
    """Return the BIDS URI (``bids:<dataset>:<relative path>``) of a file inside a dataset.

    Parameters
    ----------
    path : path-like
        File inside ``root``.
    root : path-like
        Root of the dataset that ``dataset`` names in ``DatasetLinks``.
    dataset : str
        Key of ``DatasetLinks`` (``"preprocessed"``, ``"atlases"``), or ``""`` for the
        current dataset.

    Returns
    -------
    str
        E.g. ``"bids:preprocessed:sub-01/func/sub-01_task-rest_desc-preproc_bold.nii.gz"``.

    Raises
    ------
    ValueError
        If ``path`` is not inside ``root``.

    """
    full, base = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    try:
        relative = full.relative_to(base)
    except ValueError:
        # One of the two may have been reached through a symbolic link (pybids, containers).
        try:
            relative = full.resolve().relative_to(base.resolve())
        except ValueError:
            raise ValueError(f"{full} is not inside the dataset {base}.") from None
    return f"bids:{dataset}:{relative.as_posix()}"


@dataclass(frozen=True)
class RunOutputPaths:
    """Paths of the files written for one run, one atlas and one denoising label.

    Attributes
    ----------
    directory : Path
        ``OUTPUT_DIR/sub-<s>/[ses-<x>/]func``.
    timeseries, timeseries_json : Path
        Region timeseries TSV and its sidecar (the TSV is the run's completion marker).
    coverage, coverage_json : Path
        Per-region brain-mask coverage TSV and sidecar.
    relmat, relmat_json : Path
        Pearson correlation matrix TSV and sidecar.
    root : Path or None
        The output dataset root; when set, the folders between it and ``directory`` must
        not be symbolic links (:func:`ensure_directory`).

    """

    directory: Path
    timeseries: Path
    timeseries_json: Path
    coverage: Path
    coverage_json: Path
    relmat: Path
    relmat_json: Path
    root: Path | None = None

    def all(self) -> list[Path]:
        """Return every file path, in the order :func:`write_run_outputs` writes them.

        Returns
        -------
        list of Path
            Coverage, relmat, timeseries sidecar, then the timeseries TSV.

        """
        return [
            self.coverage,
            self.coverage_json,
            self.relmat,
            self.relmat_json,
            self.timeseries_json,
            self.timeseries,
        ]


def canonical_entities(entities: Mapping[str, Any]) -> dict[str, Any]:
    """Rename entity keys to the names of :data:`ENTITY_ORDER` (pybids or short spellings).

    Parameters
    ----------
    entities : mapping
        Entity dict, e.g. from pybids (``resolution``, ``proc``) or with file-name keys.

    Returns
    -------
    dict
        The same items under canonical names (``res``, ``processing``); None values are
        dropped; unknown keys are kept as given (callers decide whether they are an error).

    Raises
    ------
    ValueError
        If two spellings of one entity carry different values.

    """
    clean: dict[str, Any] = {}
    for key, value in entities.items():
        if _is_missing(value):
            continue
        name = ENTITY_ALIASES.get(key, key)
        if name in clean and str(clean[name]) != str(value):
            raise ValueError(
                f"Entity {name!r} given twice with different values: {clean[name]!r} and "
                f"{value!r} (in {dict(entities)})."
            )
        clean[name] = value
    return clean


def _run_entities(entities: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the input entities that name an output; reject ones that cannot be placed.

    An entity that cannot be written is an error, never silently dropped: dropping it would
    let two different inputs write one output name.
    """
    canonical = canonical_entities(entities)
    unexpected = sorted(set(canonical) - set(RUN_ENTITIES) - DROPPED_ENTITIES - {"space"})
    if unexpected:
        raise ValueError(
            f"Run entities {unexpected} cannot be written in output names; "
            f"known entities are {list(RUN_ENTITIES)} (plus space, and {sorted(DROPPED_ENTITIES)}"
            " which are dropped)."
        )
    kept = {name: canonical.get(name) for name in RUN_ENTITIES}
    if kept["subject"] is None or kept["task"] is None:
        raise ValueError(f"Run entities need 'subject' and 'task'; got {dict(entities)}.")
    return kept


def output_paths(
    output_dir: str | os.PathLike[str],
    entities: Mapping[str, Any],
    atlas: str,
    strategy: str,
    denoise: str,
) -> RunOutputPaths:
    """Name the outputs of one run for one atlas and one denoising label.

    Parameters
    ----------
    output_dir : path-like
        Root of the output derivative dataset.
    entities : mapping
        Entities of the preprocessed BOLD (pybids long names or file-name keys). Every
        entity is kept, in BIDS order (``res``, ``den``, ``cohort``, ``part`` included), so
        two inputs never share output names; ``desc``, ``suffix``, ``extension`` and
        ``datatype`` are dropped; ``space`` is required.
    atlas : str
        Alphanumeric atlas label.
    strategy : str
        Extraction statistic (``mean``, ``median``, ``standard_deviation``, ...); written as
        ``stat-<to_label(strategy)>`` because config values may contain underscores.
    denoise : str
        Alphanumeric denoising label (``simple``, ``scrubbing``, ...), the ``desc-`` entity.

    Returns
    -------
    RunOutputPaths
        The six output paths of the run.

    Raises
    ------
    ValueError
        If an entity is missing, unknown or not a valid label.

    """
    run = _run_entities(entities)
    space = canonical_entities(entities).get("space")
    if space is None:
        raise ValueError(f"Run entities need 'space'; got {dict(entities)}.")
    base = {**run, "space": space, "atlas": atlas}
    directory = Path(output_dir) / f"sub-{check_label(run['subject'], entity='subject')}"
    if run["session"] is not None:
        directory = directory / f"ses-{check_label(run['session'], entity='session')}"
    directory = directory / "func"

    def path(stat: str, desc: str | None, suffix: str, extension: str) -> Path:
        names = {**base, "stat": stat, "desc": desc}
        return directory / bids_name(names, suffix=suffix, extension=extension)

    stat = to_label(strategy)
    # The relmat's stat- is the correlation, so a non-mean extraction statistic goes into
    # its desc- to keep e.g. mean- and median-based matrices apart.
    relmat_desc = denoise if stat == "mean" else f"{denoise}{stat[0].upper()}{stat[1:]}"
    return RunOutputPaths(
        directory=directory,
        timeseries=path(stat, denoise, "timeseries", ".tsv"),
        timeseries_json=path(stat, denoise, "timeseries", ".json"),
        coverage=path("coverage", None, "bold", ".tsv"),
        coverage_json=path("coverage", None, "bold", ".json"),
        relmat=path("pearsoncorrelation", relmat_desc, "relmat", ".tsv"),
        relmat_json=path("pearsoncorrelation", relmat_desc, "relmat", ".json"),
        root=Path(output_dir),
    )


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------


#: Hidden temporary files: ``.<name>.<host>.<pid>.<token>.tmp`` (older versions wrote
#: ``.<name>.<pid>.<token>.tmp``). The host and pid tell a later run whether the writer is
#: dead, so its leftovers can be removed safely (:func:`remove_stale_temp_files`).
_TEMP_RE = re.compile(
    r"^\.(?P<name>.+?)(?:\.(?P<host>[A-Za-z0-9-]+))?\.(?P<pid>[0-9]+)\.[0-9a-f]{8}\.tmp$"
)
#: Leftover temporary files older than this are removed whoever wrote them (seconds).
STALE_TEMP_SECONDS = 3600.0


def _host() -> str:
    """Return the host name as a label usable inside a temporary file name."""
    import socket

    return re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname()) or "host"


def _temp_path(path: Path) -> Path:
    """Hidden, unique sibling of ``path``: ignored by pybids and the validator if left over."""
    return path.with_name(f".{path.name}.{_host()}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _pid_alive(pid: int) -> bool:
    """Tell whether a process of this machine with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_temp_files(
    directory: str | os.PathLike[str], *, recursive: bool = False, any_writer: bool = False
) -> list[Path]:
    """Remove hidden temporary files left in ``directory`` by killed writers.

    A temporary file is removed when ``any_writer`` is True (the caller holds the lock that
    every writer of this folder holds, e.g. the subject lock), when its writer ran on this
    host and its process no longer exists, or when it is older than
    :data:`STALE_TEMP_SECONDS`. A file of a live writer is never removed otherwise. Symbolic
    links are never followed (a link named like a temporary file is removed, not its target).

    Parameters
    ----------
    directory : path-like
        Folder to clean; nothing happens when it does not exist.
    recursive : bool
        Also clean sub-folders (never entering linked folders).
    any_writer : bool
        Remove every temporary file, whoever wrote it.

    Returns
    -------
    list of Path
        Files removed.

    """
    import time

    root = Path(directory)
    host, now, removed = _host(), time.time(), []
    try:
        entries = list(os.scandir(root))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    except OSError as err:  # unreadable folder: its leftovers stay, nothing else depends on it
        logger.warning("Cannot look for leftover temporary files in %s: %s", root, err)
        return removed
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if recursive:
                removed += remove_stale_temp_files(
                    entry.path, recursive=True, any_writer=any_writer
                )
            continue
        found = _TEMP_RE.match(entry.name)
        if found is None:
            continue
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_SECONDS
        except FileNotFoundError:
            continue
        dead = found["host"] == host and not _pid_alive(int(found["pid"]))
        if any_writer or old or dead:
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            except OSError as err:  # read-only folder: a hidden leftover harms no reader
                logger.warning("Cannot remove the leftover temporary file %s: %s", entry.path, err)
                continue
            removed.append(Path(entry.path))
            logger.info("Removed %s, left by an interrupted run", entry.path)
    return removed


class LinkedPathError(BidsappError, OSError):
    """A path bidsapp would create or write through is a symbolic link it did not make."""


def ensure_directory(root: str | os.PathLike[str], directory: str | os.PathLike[str]) -> Path:
    """Create ``directory`` (inside ``root``) without going through a symbolic link.

    ``root`` itself may be a link the user made; every folder below it that bidsapp creates
    or uses must be a real directory, so that no file is written outside the dataset.

    Parameters
    ----------
    root : path-like
        The output dataset root (created if missing).
    directory : path-like
        A folder inside ``root`` (absolute, or relative to ``root``).

    Returns
    -------
    Path
        ``directory``.

    Raises
    ------
    LinkedPathError
        If a folder between ``root`` and ``directory`` is a symbolic link or not a folder.
    ValueError
        If ``directory`` is not inside ``root``.

    """
    base = Path(root)
    target = Path(directory) if Path(directory).is_absolute() else base / directory
    relative = Path(os.path.abspath(target)).relative_to(os.path.abspath(base))
    base.mkdir(parents=True, exist_ok=True)
    current = base
    for part in relative.parts:
        current = current / part
        try:
            os.mkdir(current)
        except FileExistsError:
            pass
        info = os.lstat(current)
        if stat_module.S_ISLNK(info.st_mode) or not stat_module.S_ISDIR(info.st_mode):
            kind = "a symbolic link" if stat_module.S_ISLNK(info.st_mode) else "not a folder"
            raise LinkedPathError(
                f"{current} is {kind}: bidsapp writes only into folders it made; remove it"
            )
    return target


def no_linked_folder(root: str | os.PathLike[str], directory: str | os.PathLike[str]) -> bool:
    """Tell whether no folder between ``root`` and ``directory`` is a symbolic link.

    Folders that do not exist yet count as fine; ``root`` itself may be a link.

    Parameters
    ----------
    root : path-like
        The output dataset root.
    directory : path-like
        A folder inside ``root``.

    Returns
    -------
    bool
        False if any existing component below ``root`` is a link or not a folder.

    """
    current = Path(root)
    try:
        relative = Path(os.path.abspath(directory)).relative_to(os.path.abspath(root))
    except ValueError:
        return False
    for part in relative.parts:
        current = current / part
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            return True
        if not stat_module.S_ISDIR(info.st_mode):
            return False
    return True


def read_regular_bytes(path: str | os.PathLike[str]) -> bytes | None:
    """Read a file bidsapp wrote, refusing to follow a symbolic link.

    Parameters
    ----------
    path : path-like
        A file inside the output dataset.

    Returns
    -------
    bytes or None
        Its content; None (with a warning) when ``path`` is a symbolic link or not a regular
        file: such a file was planted, is never read, and is replaced by the next write.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.

    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        if os.path.islink(path):
            logger.warning("Ignoring %s: it is a symbolic link bidsapp did not make", path)
            return None
        raise
    # Checked on the descriptor before wrapping it: a folder opens, but fdopen refuses it.
    if not stat_module.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        logger.warning("Ignoring %s: it is not a regular file", path)
        return None
    with os.fdopen(fd, "rb") as fobj:
        return fobj.read()


def _fsync_directory(directory: Path) -> None:
    """Flush a directory entry so a completed rename survives a power cut (POSIX only)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _stage(path: Path, data: bytes) -> Path:
    """Write ``data`` to a new hidden temporary sibling of ``path``, flushed to disk.

    Returns the temporary file, ready to be renamed over ``path``; on any error it is
    removed and the error raised.
    """
    tmp = _temp_path(path)
    # O_EXCL: never reuse someone else's temporary file; mode 0o666 lets the umask apply.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fobj:
            fobj.write(data)
            fobj.flush()
            os.fsync(fobj.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` so that ``path`` is either absent/old or complete.

    The bytes go to a hidden temporary file in the same directory, are flushed with
    ``fsync`` and then renamed over ``path`` with :func:`os.replace` (atomic on POSIX and
    Windows within one file system). On any error the temporary file is removed and ``path``
    is left as it was. The file gets the usual permissions (``0o666`` minus the umask).

    Parameters
    ----------
    path : path-like
        Destination; missing parent directories are created.
    data : bytes
        Complete file content.

    Returns
    -------
    Path
        The destination path.

    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        tmp = _stage(path, data)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:
            # A full disk or an I/O error (raised by write or fsync) names no file: the
            # message must say which one could not be written.
            exc.filename = str(path)
        if hasattr(exc, "add_note"):
            exc.add_note(f"while writing {path}")
        raise
    _fsync_directory(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> Path:
    """Atomically write text (see :func:`atomic_write_bytes`).

    Parameters
    ----------
    path : path-like
        Destination file.
    text : str
        Complete content; newlines are written as given (no platform translation).
    encoding : str
        Text encoding.

    Returns
    -------
    Path
        The destination path.

    """
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_set(
    files: Mapping[Path, str | bytes], *, remove: Iterable[Path] = ()
) -> list[Path]:
    """Write several files as one set: every file is staged before any is replaced.

    Each content goes to a hidden temporary file beside its destination and is flushed;
    only when all are staged are they renamed over their destinations, then the files of
    ``remove`` (stale members of an older set) are deleted. A failure while staging (full
    disk, a folder where a file goes) removes the temporary files and leaves every
    destination as it was; a rename failing part-way (rare: same folder) removes the whole
    set, so old and new files are never found side by side.

    Parameters
    ----------
    files : mapping of Path to str or bytes
        Destination -> complete content (text is written as UTF-8). Parent folders must
        exist (create them with :func:`ensure_directory`).
    remove : iterable of Path
        Files to delete once the set is in place (missing ones are ignored).

    Returns
    -------
    list of Path
        The destinations, in the order given.

    Raises
    ------
    OSError
        If a file cannot be staged, renamed or removed; ``filename`` names it.

    """
    staged: dict[Path, Path] = {}
    remove = list(remove)
    try:
        for path, content in files.items():
            with contextlib.suppress(FileNotFoundError):
                if stat_module.S_ISDIR(os.lstat(path).st_mode):
                    raise IsADirectoryError(errno.EISDIR, "a folder is in its place", str(path))
            data = content.encode("utf-8") if isinstance(content, str) else content
            staged[Path(path)] = _stage(Path(path), data)
    except BaseException as exc:
        for tmp in staged.values():
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)
        raise
    done: list[Path] = []
    for path, tmp in staged.items():
        try:
            os.replace(tmp, path)
        except OSError:
            for other in [*files, *staged.values(), *remove]:  # no mix: none of the set stays
                with contextlib.suppress(OSError):
                    os.unlink(other)
            raise
        done.append(path)
    for path in remove:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    for folder in {p.parent for p in done}:
        _fsync_directory(folder)
    return done


def _json_default(obj: Any) -> Any:
    """Convert numpy scalars/arrays, paths and sets for :func:`json.dumps`."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable: {obj!r}")


def json_text(data: Any, *, indent: int = 2) -> str:
    """Return the strict JSON text :func:`atomic_write_json` writes.

    Parameters
    ----------
    data : object
        JSON-compatible content; numpy scalars and arrays and paths are converted.
    indent : int
        Indentation of the output.

    Returns
    -------
    str
        JSON text with a trailing newline.

    Raises
    ------
    TypeError, ValueError
        For values JSON cannot hold (NaN and infinite floats included).

    """
    return json.dumps(data, indent=indent, default=_json_default, allow_nan=False) + "\n"


def atomic_write_json(path: str | os.PathLike[str], data: Any, *, indent: int = 2) -> Path:
    """Atomically write a JSON document (see :func:`atomic_write_bytes`).

    Parameters
    ----------
    path : path-like
        Destination file.
    data : object
        JSON-compatible content; numpy scalars and arrays and paths are converted.
    indent : int
        Indentation of the output.

    Returns
    -------
    Path
        The destination path.

    Raises
    ------
    TypeError
        For values that cannot be represented in JSON (nothing is written).
    ValueError
        For NaN or infinite floats, which strict JSON cannot hold (nothing is written).

    """
    try:
        text = json_text(data, indent=indent)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"Cannot write {path} as JSON: {exc}") from exc
    return atomic_write_text(path, text)


def _check_tsv_cells(df: pd.DataFrame, *, index: bool, path: Any) -> None:
    """Reject what a BIDS TSV cannot hold: tabs, newlines (no quoting) and repeated headers."""
    headers = [str(c) for c in df.columns]
    values = [df.iloc[:, i] for i in range(df.shape[1])]
    if index:
        headers = [str(n) for n in df.index.names if n is not None] + headers
        values.append(df.index.to_series())
    repeated = sorted({h for h in headers if headers.count(h) > 1})
    if repeated:
        raise ValueError(f"Cannot write {path}: repeated column names {repeated[:5]}.")
    for header in headers:
        if _TSV_FORBIDDEN.search(header):
            raise ValueError(f"Cannot write {path}: column name {header!r} has a tab or newline.")
    for column in values:
        if column.dtype.kind in "biufcmM":
            continue
        text = column.dropna().astype(str)
        bad = text[text.str.contains(_TSV_FORBIDDEN)]
        if len(bad):
            raise ValueError(
                f"Cannot write {path}: value {bad.iloc[0]!r} in column {column.name!r} has a "
                "tab or newline."
            )


def tsv_text(
    df: pd.DataFrame,
    *,
    index: bool = False,
    float_format: str | None = None,
    path: Any = "<tsv>",
) -> str:
    """Return a DataFrame as the BIDS TSV text :func:`atomic_write_tsv` writes.

    Parameters
    ----------
    df : pandas.DataFrame
        Table; column names become the header.
    index : bool
        Also write the index as the first column(s).
    float_format : str or None
        printf-style format for floats; None keeps the exact round-trip digits.
    path : object
        Where the text goes, named in the error.

    Returns
    -------
    str
        Tab-separated text with ``n/a`` for missing values and LF line ends.

    Raises
    ------
    ValueError
        If a column name or string value contains a tab or newline.

    """
    _check_tsv_cells(df, index=index, path=path)
    buffer = io.StringIO()
    df.to_csv(
        buffer,
        sep="\t",
        na_rep="n/a",
        index=index,
        float_format=float_format,
        quoting=csv.QUOTE_NONE,  # BIDS TSV has no quoting: a '"' is an ordinary character
        lineterminator="\n",
    )
    return buffer.getvalue()


def atomic_write_tsv(
    path: str | os.PathLike[str],
    df: pd.DataFrame,
    *,
    index: bool = False,
    float_format: str | None = None,
) -> Path:
    """Atomically write a DataFrame as a BIDS TSV file.

    Tab-separated, ``n/a`` for missing values, LF line ends, no quoting. With the default
    ``float_format=None`` each float is written as the shortest decimal that reads back to
    the identical float64 (Python's ``repr``): ``%.10g`` would keep only 10 significant
    digits (relative error up to 5e-11, and almost no value reads back identical), while
    float64 needs up to 17. Exact round-trip costs about 25 % more bytes, which is cheap
    next to a reader silently getting different numbers.

    Parameters
    ----------
    path : path-like
        Destination file.
    df : pandas.DataFrame
        Table to write; column names become the header.
    index : bool
        Also write the index as the first column(s).
    float_format : str or None
        printf-style format for floats, e.g. ``"%.6g"`` to trade precision for size.

    Returns
    -------
    Path
        The destination path.

    Raises
    ------
    ValueError
        If a column name or string value contains a tab or newline (nothing is written).

    """
    return atomic_write_text(path, tsv_text(df, index=index, float_format=float_format, path=path))


def read_tsv(path: str | os.PathLike[str], *, dtype: Any = None) -> pd.DataFrame:
    """Read a BIDS TSV file written by :func:`atomic_write_tsv`.

    Parameters
    ----------
    path : path-like
        TSV file.
    dtype : type, str or mapping, optional
        Passed to :func:`pandas.read_csv`, e.g. ``str`` to keep ``"01"`` as text.

    Returns
    -------
    pandas.DataFrame
        The table; only ``n/a`` cells are missing values (an empty cell is not).

    """
    return pd.read_csv(
        path,
        sep="\t",
        na_values=["n/a"],
        keep_default_na=False,
        quoting=csv.QUOTE_NONE,
        dtype=dtype,
    )


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Read a JSON sidecar for resume checks.

    Parameters
    ----------
    path : path-like
        JSON file.

    Returns
    -------
    dict or None
        Its content, or None when the file is missing, unreadable, a symbolic link (never
        followed), not valid JSON or not a JSON object (all mean "recompute").

    """
    try:
        raw = read_regular_bytes(path)
        if raw is None:  # a planted link or a special file: never read
            return None
        data = json.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("Ignoring unreadable sidecar %s: %s", path, exc)
        return None
    if not isinstance(data, dict):
        logger.warning("Ignoring sidecar %s: it is not a JSON object", path)
        return None
    return data


def _write_if_changed(path: Path, text: str) -> bool:
    """Atomically write ``text`` unless ``path`` already holds exactly that text."""
    try:
        if read_regular_bytes(path) == text.encode("utf-8"):
            logger.debug("%s is up to date", path)
            return False
    except FileNotFoundError:
        pass
    atomic_write_text(path, text)  # the rename replaces a planted link, never its target
    return True


def _open_lock_file(path: Path) -> int:
    """Open (creating) a lock file without following a symbolic link; return its fd.

    A link planted at ``path`` is removed (bidsapp never makes one), so the lock is never
    taken on, nor creates, the file it points to.
    """
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(3):
        try:
            fd = os.open(path, flags, 0o666)
        except OSError:
            if not os.path.islink(path):
                raise
            logger.warning("Removing %s: a symbolic link where bidsapp keeps a lock file", path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            continue
        if not stat_module.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise LinkedPathError(f"{path} is not a regular file; remove it")
        return fd
    raise LinkedPathError(f"{path} keeps being replaced by a symbolic link; remove it")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock for a read-merge-write of ``path`` across processes.

    The lock is a hidden sibling file (left in place: deleting it would race with a waiting
    process). ``flock`` works on local file systems and on NFS (Linux maps it to POSIX locks).
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_lock_file(path.with_name(f".{path.name.lstrip('.')}.lock"))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class SubjectLock:
    """An exclusive, cross-process lock on one subject's outputs (``logs/.sub-<s>.lock``).

    One invocation holds it while it checks, writes or removes that subject's run outputs,
    status table and report, so two jobs with different options can never leave files of
    two configurations side by side. The lock file holds the holder's pid and host; a second
    invocation prints that it waits, and for whom, then proceeds when the lock is released
    (``flock`` is released by the kernel when the holder dies, even by ``kill -9``). Take
    several subjects' locks in sorted order, so two invocations never deadlock.

    Parameters
    ----------
    output_dir : path-like
        Output dataset root.
    subject : str
        Subject label without ``sub-``.
    announce : callable, optional
        Called with a message when the lock is busy (default: print it).

    """

    def __init__(
        self, output_dir: str | os.PathLike[str], subject: str, announce: Any = None
    ) -> None:
        self.output_dir = Path(output_dir)
        self.subject = check_label(subject, entity="subject")
        self.path = self.output_dir / "logs" / f".sub-{self.subject}.lock"
        self._announce = announce or logging.getLogger("bidsapp.progress").info
        self._fd: int | None = None

    def acquire(self) -> SubjectLock:
        """Take the lock, waiting (with a message) while another process holds it.

        Returns
        -------
        SubjectLock
            ``self``.

        Raises
        ------
        LinkedPathError
            If ``logs/`` is a symbolic link or the lock path is not a regular file.

        """
        ensure_directory(self.output_dir, "logs")
        fd = _open_lock_file(self.path)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 256, 0).decode("utf-8", "replace").strip() or "unknown"
                self._announce(
                    f"waiting for sub-{self.subject}: another bidsapp ({holder}) is writing "
                    f"it (lock {self.path})"
                )
                fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {_host()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> SubjectLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# --------------------------------------------------------------------------------------------
# Per-run outputs
# --------------------------------------------------------------------------------------------


def relmat_metadata(node_files: Sequence[str] | None = None) -> dict[str, Any]:
    """Return the BEP017-style metadata of a Pearson correlation matrix.

    Parameters
    ----------
    node_files : sequence of str, optional
        BIDS URIs of the atlas image and look-up table defining the nodes
        (:attr:`AtlasFiles.node_files`); ``NodeFiles`` is left out when None.

    Returns
    -------
    dict
        ``RelationshipMeasure``, ``Weighted``, ``Directed``, ``ValidDiagonal``,
        ``StorageFormat`` and (when given) ``NodeFiles``; add the run's parameters as
        needed.

    """
    metadata: dict[str, Any] = {
        "RelationshipMeasure": "Pearson correlation coefficient",
        "Weighted": True,
        "Directed": False,
        "ValidDiagonal": False,  # the diagonal is 1 by construction
        "StorageFormat": "Full",
    }
    if node_files is not None:
        metadata["NodeFiles"] = list(node_files)
    return metadata


def coverage_metadata() -> dict[str, Any]:
    """Return column descriptions for the coverage table (its default sidecar).

    Returns
    -------
    dict
        BIDS TSV column dictionary for ``Node`` and ``coverage``.
    """
    return {
        "Node": {"Description": "Region name, as in the atlas look-up table."},
        "coverage": {
            "Description": "Fraction of the region's voxels inside the BOLD brain mask.",
            "Units": "arbitrary",
        },
    }


def _coverage_table(coverage: pd.Series | Mapping[str, float], regions: pd.Index) -> pd.DataFrame:
    """Coverage as a ``Node``/``coverage`` table in the timeseries' region order."""
    series = pd.Series(coverage, dtype=float)
    if list(series.index) != list(regions):
        raise ValueError(
            "Coverage regions must match the timeseries columns in the same order; got "
            f"{list(series.index)[:5]}... for {list(regions)[:5]}..."
        )
    return pd.DataFrame({"Node": list(regions), "coverage": series.to_numpy()})


def _relmat_table(relmat: pd.DataFrame, regions: pd.Index) -> pd.DataFrame:
    """Correlation matrix with its row names as a leading ``Node`` column."""
    if list(relmat.index) != list(regions) or list(relmat.columns) != list(regions):
        raise ValueError(
            "The relmat rows and columns must both be the timeseries regions, in order."
        )
    table = relmat.copy()
    table.insert(0, "Node", list(regions))
    return table.reset_index(drop=True)


def write_run_outputs(
    paths: RunOutputPaths,
    *,
    timeseries: pd.DataFrame,
    timeseries_sidecar: Mapping[str, Any],
    coverage: pd.Series | Mapping[str, float],
    coverage_sidecar: Mapping[str, Any] | None = None,
    relmat: pd.DataFrame | None = None,
    relmat_sidecar: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write all files of one run so that "timeseries TSV exists" means "run complete".

    Order: (1) remove an existing timeseries TSV, the completion marker, so a crash during
    a re-run cannot leave new parameters beside old data; (2) write coverage, relmat and the
    timeseries sidecar; (3) write the timeseries TSV last. Each write is atomic. Therefore
    a timeseries TSV whose sidecar records the requested parameters proves that every file
    of the run was written with those parameters (:func:`outputs_complete`). Everything is
    validated and serialised before step (1), so bad input never destroys finished outputs.

    Parameters
    ----------
    paths : RunOutputPaths
        From :func:`output_paths`.
    timeseries : pandas.DataFrame
        One column per region (LUT order), one row per retained volume; NaN for regions
        written as ``n/a``.
    timeseries_sidecar : mapping
        Sidecar of the timeseries, including the parameters resume checks compare.
    coverage : pandas.Series or mapping
        Fraction of each region's voxels inside the brain mask, indexed by region name in
        the timeseries' column order.
    coverage_sidecar : mapping, optional
        Sidecar of the coverage table; :func:`coverage_metadata` when None.
    relmat : pandas.DataFrame, optional
        Region-by-region correlation matrix; when None, stale relmat files are removed.
    relmat_sidecar : mapping, optional
        Sidecar of the relmat; :func:`relmat_metadata` (without ``NodeFiles``) when None.

    Returns
    -------
    list of Path
        Files written, in write order.

    Raises
    ------
    ValueError
        If the regions of the tables disagree or a table cannot be written as TSV.

    """
    regions = timeseries.columns
    if coverage_sidecar is None:
        coverage_sidecar = coverage_metadata()
    planned: list[tuple[Path, str]] = [
        (paths.coverage, tsv_text(_coverage_table(coverage, regions), path=paths.coverage)),
        (paths.coverage_json, json_text(dict(coverage_sidecar))),
    ]
    if relmat is not None:
        if relmat_sidecar is None:
            relmat_sidecar = relmat_metadata()
        table = _relmat_table(relmat, regions)
        planned += [
            (paths.relmat, tsv_text(table, path=paths.relmat)),
            (paths.relmat_json, json_text(dict(relmat_sidecar))),
        ]
    timeseries_text = tsv_text(timeseries, path=paths.timeseries)
    # The sidecar records the hash of every other file of the set (all texts are known
    # before anything is written), so resume can tell a complete, consistent set from a
    # truncated TSV or a relmat left by another configuration (:func:`outputs_complete`).
    members = {path.name: _sha256_text(text) for path, text in planned}
    members[paths.timeseries.name] = _sha256_text(timeseries_text)
    sidecar = {**dict(timeseries_sidecar), OUTPUT_FILES_KEY: members}
    planned += [
        (paths.timeseries_json, json_text(sidecar)),
        (paths.timeseries, timeseries_text),
    ]
    if paths.root is not None:  # no folder of the set may be a planted link
        ensure_directory(paths.root, paths.directory)
    paths.timeseries.unlink(missing_ok=True)
    if relmat is None:
        paths.relmat.unlink(missing_ok=True)
        paths.relmat_json.unlink(missing_ok=True)
    for path, text in planned:
        atomic_write_text(path, text)
    logger.debug("Wrote %s", paths.timeseries)
    return [path for path, _ in planned]


#: Key of the timeseries sidecar recording the SHA-256 of every other file of the run's set.
OUTPUT_FILES_KEY = "OutputFiles"


def sha256_digest(data: bytes) -> str:
    """Return ``sha256:<hex>`` of ``data``: how ``OutputFiles`` records each file of a set.

    Parameters
    ----------
    data : bytes
        A file's content.

    Returns
    -------
    str
        The digest, prefixed with its algorithm.
    """
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _sha256_text(text: str) -> str:
    """``sha256:<hex>`` of a text's UTF-8 bytes."""
    return sha256_digest(text.encode("utf-8"))


def outputs_complete(paths: RunOutputPaths, parameters: Mapping[str, Any]) -> bool:
    """Tell whether a run's whole set of outputs exists, is consistent and has the parameters.

    Complete means: the timeseries sidecar is a regular file (not a symbolic link) holding
    every item of ``parameters`` with an equal value and an ``OutputFiles`` record, and every
    file that record names (timeseries TSV, coverage TSV and JSON, relmat TSV and JSON) is a
    regular file whose SHA-256 equals the recorded one. A truncated TSV, a deleted coverage
    or relmat file, or one written by another configuration makes the set incomplete, and
    the run is recomputed. The files are small (a 400-region relmat is ~3 MB), so hashing
    them costs milliseconds.

    Parameters
    ----------
    paths : RunOutputPaths
        From :func:`output_paths`.
    parameters : mapping
        Sidecar items that must match (compared after a JSON round trip, so tuples equal
        lists).

    Returns
    -------
    bool
        True if the set is complete and matches ``parameters``.

    """
    if paths.root is not None and not no_linked_folder(paths.root, paths.directory):
        return False
    sidecar = read_sidecar(paths.timeseries_json)
    if sidecar is None:
        return False
    expected = json.loads(json_text(dict(parameters)))
    if not all(key in sidecar and sidecar[key] == value for key, value in expected.items()):
        return False
    members = sidecar.get(OUTPUT_FILES_KEY)
    known = {p.name: p for p in paths.all() if p != paths.timeseries_json}
    if not isinstance(members, dict) or paths.timeseries.name not in members:
        return False
    for name, digest in members.items():
        path = known.get(name)
        if path is None:
            return False
        try:
            data = read_regular_bytes(path)
        except OSError:
            return False
        if data is None or sha256_digest(data) != digest:
            logger.info("%s is missing or differs from its record: recomputing", path)
            return False
    # A relmat the record does not name must not sit beside the set (another configuration).
    return all(name in members or not os.path.lexists(p) for name, p in known.items())


@dataclass(frozen=True)
class RemovedOutputs:
    """What :func:`remove_run_outputs` removed, and what it could not.

    Attributes
    ----------
    removed : tuple of Path
        Files removed.
    failed : tuple of Path
        Paths that could not be removed (a folder in a file's place, a read-only folder).
    reasons : tuple of str
        Why, one per path of ``failed``.

    """

    removed: tuple[Path, ...] = ()
    failed: tuple[Path, ...] = ()
    reasons: tuple[str, ...] = ()

    def problem(self) -> str:
        """Return one line naming what could not be removed, or ``""`` when all went.

        Returns
        -------
        str
            E.g. ``"cannot remove its old outputs: /out/...relmat.tsv (it is a folder);
            remove them by hand"``.

        """
        if not self.failed:
            return ""
        listed = "; ".join(f"{p} ({r})" for p, r in zip(self.failed, self.reasons, strict=True))
        return f"cannot remove its old outputs: {listed}; remove them by hand"


def remove_run_outputs(paths: RunOutputPaths) -> RemovedOutputs:
    """Remove the files of one run's set (only the names bidsapp gives that set); never raises.

    Used when a run fails or is excluded, so outputs of an earlier invocation do not stay
    looking current. The timeseries TSV (the completion marker) goes first. Nothing is
    removed when a folder of the set is a symbolic link (its files are not bidsapp's). A
    folder in a file's place is never removed, and a file that cannot be removed (read-only
    folder) does not stop the others: both are reported in the result, for the run's status.

    Parameters
    ----------
    paths : RunOutputPaths
        From :func:`output_paths`.

    Returns
    -------
    RemovedOutputs
        Files removed, and those that could not be with why (:meth:`RemovedOutputs.problem`).

    """
    removed: list[Path] = []
    failed: list[tuple[Path, str]] = []
    try:
        linked = paths.root is not None and not no_linked_folder(paths.root, paths.directory)
    except OSError as err:  # a folder of the set cannot even be looked at
        return RemovedOutputs(failed=(paths.directory,), reasons=(err.strerror or str(err),))
    if linked:
        return RemovedOutputs()  # never delete through a planted link (the target is not ours)
    for path in reversed(paths.all()):
        try:
            if stat_module.S_ISDIR(os.lstat(path).st_mode):
                failed.append((path, "it is a folder, not a file bidsapp wrote"))
                continue
            os.unlink(path)  # a planted link is removed itself, never its target
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as err:  # read-only folder, I/O error: this file only
            failed.append((path, err.strerror or " ".join(str(err).split())))
            continue
        removed.append(path)
    return RemovedOutputs(tuple(removed), tuple(p for p, _ in failed), tuple(r for _, r in failed))


# --------------------------------------------------------------------------------------------
# Dataset-level files
# --------------------------------------------------------------------------------------------


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
    ``bids:preprocessed:sub-01/func/...``, see :func:`bids_uri`) and ``atlases`` to
    ``sourcedata/atlases`` inside this dataset (``NodeFiles`` are ``bids:atlases:...``).

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
    _write_if_changed(path, json_text(description))
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
    with _locked(path):
        try:  # a planted link is not read (its target's lines are not copied) but replaced
            raw = read_regular_bytes(path)
        except FileNotFoundError:
            raw = b""
        lines = (raw or b"").decode("utf-8", "replace").splitlines()
        missing = [p for p in dict.fromkeys(patterns) if p not in {s.strip() for s in lines}]
        if missing or raw is None:
            atomic_write_text(path, "\n".join([*lines, *missing]) + "\n")
    return path


# --------------------------------------------------------------------------------------------
# Atlas dataset
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AtlasFiles:
    """Files of one atlas inside the output's atlas dataset.

    Attributes
    ----------
    root : Path
        Root of the atlas dataset (``OUTPUT_DIR/sourcedata/atlases``).
    image, lut, sidecar : Path
        ``tpl-<space>/tpl-<space>_atlas-<A>[_res-<r>]_dseg`` ``.nii[.gz]``, ``.tsv``, ``.json``.
    description : Path
        ``atlas-<A>_description.json`` at the atlas dataset root.

    """

    root: Path
    image: Path
    lut: Path
    sidecar: Path
    description: Path

    @property
    def node_files(self) -> list[str]:
        """BIDS URIs (``bids:atlases:...``) of the image and LUT, for relmat ``NodeFiles``."""
        return [bids_uri(p, root=self.root, dataset="atlases") for p in (self.image, self.lut)]


def _nifti_extension(path: Path) -> str:
    """Return ``.nii.gz`` or ``.nii`` for a NIfTI path, else raise."""
    for extension in (".nii.gz", ".nii"):
        if path.name.endswith(extension):
            return extension
    raise ValueError(f"Atlas image {path} is not a NIfTI file (.nii or .nii.gz).")


def _lut_table(lut: pd.DataFrame, label: str) -> pd.DataFrame:
    """LUT with ``index`` and ``name`` first, as BIDS ``dseg.tsv`` requires."""
    missing = {"index", "name"} - set(lut.columns)
    if missing:
        raise ValueError(
            f"The look-up table of atlas {label!r} lacks the column(s) {sorted(missing)}; "
            "a dseg.tsv needs 'index' and 'name'."
        )
    if lut["index"].duplicated().any():
        raise ValueError(f"The look-up table of atlas {label!r} has duplicate 'index' values.")
    others = [c for c in lut.columns if c not in ("index", "name")]
    return lut[["index", "name", *others]].reset_index(drop=True)


def _lut_column_descriptions(lut: pd.DataFrame) -> dict[str, Any]:
    """Describe LUT columns BIDS does not define (the validator warns about undefined ones)."""
    defined = {"index", "name", "abbreviation", "color", "mapping"}
    return {
        str(column): {"Description": f"'{column}' column of the atlas's look-up table."}
        for column in lut.columns
        if column not in defined
    }


def _write_unless_different(path: Path, data: bytes, *, overwrite: bool, what: str) -> None:
    """Write ``data`` if ``path`` is missing; keep an identical file; refuse a different one.

    A symbolic link at ``path`` is not read and is replaced (bidsapp never makes one).
    """
    try:
        old = read_regular_bytes(path)
    except FileNotFoundError:
        old = None
    else:
        if old == data:
            return
    if old is not None and not overwrite:
        raise FileExistsError(
            f"{path} already holds a different {what}: another atlas of this name was used "
            "before (or the atlas file changed). Pass --overwrite to replace it and recompute "
            "the runs made with it, or give this atlas another name."
        )
    atomic_write_bytes(path, data)


def _atlas_dataset_description() -> str:
    """JSON text of the atlas dataset's ``dataset_description.json``."""
    return json_text(
        {
            "Name": "Atlases used by bidsapp",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [
                {
                    "Name": "bidsapp",
                    "Version": __version__,
                    "Description": "Copies of the atlases the parcel timeseries were made with.",
                }
            ],
        }
    )


def copy_atlas(
    output_dir: str | os.PathLike[str], atlas: AtlasLike, *, overwrite: bool = False
) -> AtlasFiles:
    """Copy an atlas image and LUT into the output's atlas dataset (BEP038 layout).

    Writes, under ``OUTPUT_DIR/sourcedata/atlases/``: ``dataset_description.json``,
    ``atlas-<A>_description.json`` (``AtlasName``, ``License``, plus the items of
    ``atlas.metadata`` if the atlas has such a mapping), and
    ``tpl-<space>/tpl-<space>_atlas-<A>[_res-<r>]_dseg.{nii.gz,tsv,json}`` (``res`` from an
    optional ``atlas.res``). This is the layout bids-validator accepts; XCP-D's older
    ``atlas-<A>/atlas-<A>_space-<space>_dseg`` layout is rejected. Idempotent: identical
    files are left alone; every write is atomic, so concurrent calls are safe.

    Parameters
    ----------
    output_dir : path-like
        Output dataset root.
    atlas : AtlasLike
        Atlas with ``label``, ``space``, ``dseg``, ``lut`` and ``lut_path``.
    overwrite : bool
        Replace an existing image or LUT of the same name whose content differs (the
        ``--overwrite`` option: e.g. a corrected local LUT).

    Returns
    -------
    AtlasFiles
        Paths of the copies and their BIDS URIs.

    Raises
    ------
    FileExistsError
        If a different image or LUT already has this name and ``overwrite`` is False; the
        message says to pass ``--overwrite``.
    LinkedPathError
        If a folder of the atlas dataset is a symbolic link.
    FileNotFoundError
        If the atlas image does not exist.
    ValueError
        For an invalid label or space, a non-NIfTI image or a LUT without ``index``/``name``.

    """
    label = check_label(atlas.label, entity="atlas")
    space = check_label(atlas.space, entity="template")
    source = Path(atlas.dseg)
    root = Path(output_dir) / ATLAS_DATASET
    entities = {"template": space, "atlas": label, "res": getattr(atlas, "res", None)}

    def dseg_path(extension: str) -> Path:
        return root / f"tpl-{space}" / bids_name(entities, suffix="dseg", extension=extension)

    files = AtlasFiles(
        root=root,
        image=dseg_path(_nifti_extension(source)),
        lut=dseg_path(".tsv"),
        sidecar=dseg_path(".json"),
        description=root / f"atlas-{label}_description.json",
    )
    lut_text = tsv_text(_lut_table(atlas.lut, label), path=files.lut)
    ensure_directory(output_dir, files.image.parent.relative_to(Path(output_dir)))
    _write_if_changed(root / "dataset_description.json", _atlas_dataset_description())
    _write_unless_different(files.image, source.read_bytes(), overwrite=overwrite, what="image")
    _write_unless_different(files.lut, lut_text.encode(), overwrite=overwrite, what="LUT")
    sources = [Path(os.path.abspath(source)).as_uri()]
    if atlas.lut_path is not None:
        sources.append(Path(os.path.abspath(atlas.lut_path)).as_uri())
    sidecar = {
        "Description": f"Atlas {label} in {space}, as used by bidsapp.",
        "Sources": sources,
        **_lut_column_descriptions(atlas.lut),
    }
    _write_if_changed(files.sidecar, json_text(sidecar))
    description = {
        "AtlasName": label,
        "License": "See the license of the atlas's original distribution.",
        **dict(getattr(atlas, "metadata", None) or {}),
    }
    _write_if_changed(files.description, json_text(description))
    return files


# --------------------------------------------------------------------------------------------
# Run status records (group level)
# --------------------------------------------------------------------------------------------


def status_path(output_dir: str | os.PathLike[str], subject: str) -> Path:
    """Return the path of a subject's run status table.

    The table lives in ``logs/``, a directory BIDS declares opaque in derivative datasets:
    the validator accepts it without a ``.bidsignore`` entry.

    Parameters
    ----------
    output_dir : path-like
        Output dataset root.
    subject : str
        Subject label without ``sub-``.

    Returns
    -------
    Path
        ``OUTPUT_DIR/logs/sub-<subject>_status.tsv``.

    """
    return Path(output_dir) / "logs" / f"sub-{check_label(subject, entity='subject')}_status.tsv"


def _is_missing(value: Any) -> bool:
    """Tell whether a value is None or float NaN (how a missing cell reads back)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _status_key(row: Mapping[str, Any]) -> tuple[str, ...]:
    """Row identity: the :data:`STATUS_KEY` values as text ('' when absent)."""
    return tuple("" if _is_missing(row.get(k)) else str(row.get(k)) for k in STATUS_KEY)


def _outputs_cell(value: Any, output_dir: Path) -> Any:
    """Join output paths with ';', made relative to the output dataset where inside it."""
    if _is_missing(value) or isinstance(value, str):
        return value
    names = []
    for item in value:
        path = Path(item)
        with contextlib.suppress(ValueError):
            path = Path(os.path.abspath(path)).relative_to(os.path.abspath(output_dir))
        names.append(path.as_posix())
    return ";".join(names)


def _normalise_status_row(row: Mapping[str, Any], subject: str, output_dir: Path) -> dict[str, Any]:
    """Check one status row and turn its values into what the table stores."""
    clean = {
        ENTITY_ALIASES.get(k, k): (None if _is_missing(v) else v)
        for k, v in row.items()
        if k not in DROPPED_ENTITIES
    }
    if clean.get("subject") is None:
        clean["subject"] = subject
    if str(clean["subject"]) != subject:
        raise ValueError(f"Status row for subject {clean['subject']!r} given for sub-{subject}.")
    if clean.get("status") not in STATUS_VALUES:
        raise ValueError(
            f"Status must be one of {sorted(STATUS_VALUES)}; got {clean.get('status')!r}."
        )
    for key in ("task", "space", "atlas", "denoise"):
        if clean.get(key) is None:
            raise ValueError(f"Status row lacks {key!r}: {dict(row)}.")
    for key in STATUS_KEY:
        if clean.get(key) is not None:
            clean[key] = str(clean[key])
    clean["outputs"] = _outputs_cell(clean.get("outputs"), output_dir)
    return clean


def _empty_status() -> pd.DataFrame:
    """Return a status table without rows."""
    return pd.DataFrame(columns=list(STATUS_COLUMNS), dtype=str)


def _read_status_table(path: Path) -> pd.DataFrame:
    """Read a status table as text cells; no rows when it is missing or a planted link."""
    try:
        raw = read_regular_bytes(path)
    except FileNotFoundError:
        return _empty_status()
    if raw is None:
        return _empty_status()
    table = read_tsv(io.BytesIO(raw), dtype=str)
    # Canonical entity names (an older table may say 'resolution'); legacy 'skipped' rows
    # were complete runs found again: they read as 'ok'.
    table = table.rename(columns={c: ENTITY_ALIASES.get(c, c) for c in table.columns})
    if "status" in table:
        table["status"] = table["status"].replace({"skipped": "ok"})
    return table


#: Columns without which a status row says nothing usable.
_STATUS_REQUIRED: tuple[str, ...] = ("subject", "task", "space", "atlas", "denoise", "status")


def _status_row_problem(row: Mapping[str, Any], subject: str) -> str | None:
    """Say why a row read back from a status table cannot be trusted, or None."""
    if row.get("subject") != subject:
        return f"is for subject {row.get('subject')!r}, not {subject!r}"
    if row.get("status") not in STATUS_VALUES:
        return f"has status {row.get('status')!r}"
    for key in (*RUN_ENTITIES, "space", "atlas"):  # stat and denoise are free text
        value = row.get(key)
        pattern = _INDEX_RE if key in _INDEX_ENTITIES else _LABEL_RE
        if value is not None and not pattern.fullmatch(value):
            return f"has {key} {value!r}, which is not a BIDS label"
    for key in _STATUS_REQUIRED:
        if row.get(key) is None:
            return f"has no {key}"
    for key in _STATUS_INT_COLUMNS:
        if row.get(key) is not None and not _INDEX_RE.fullmatch(row[key]):
            return f"has {key} {row[key]!r}, which is not a count"
    for key in _STATUS_FLOAT_COLUMNS:
        try:
            float(row[key] if row.get(key) is not None else "nan")
        except ValueError:
            return f"has {key} {row[key]!r}, which is not a number"
    return None


def _trusted_status_rows(raw: bytes, subject: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Parse a status table strictly: the rows that can be trusted, and what is wrong.

    A table is damaged by a writer killed by an older version, a full disk, a copy that
    stopped or a user's edit. pandas would fill a short row with NaN or read binary junk as
    text, and the merge would carry that garbage on; here each row is checked on its own, so
    the good rows of a damaged table survive and the others are dropped (and reported).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return [], [f"it is not UTF-8 text (byte {err.start})"]
    lines = text.split("\n")
    problems = [] if lines[-1] == "" else [f"line {len(lines)} is cut short"]
    lines = lines[:-1]
    if not lines:
        return [], problems or ["it is empty"]
    header = [ENTITY_ALIASES.get(c, c) for c in lines[0].split("\t")]
    missing = [c for c in _STATUS_REQUIRED if c not in header]
    if missing or len(set(header)) != len(header):
        what = f"lacks the column(s) {missing}" if missing else "repeats a column"
        return [], [*problems, f"its header {what}"]
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        if len(cells) != len(header):
            problems.append(f"line {number} has {len(cells)} field(s), the header {len(header)}")
            continue
        row = {k: (None if v == "n/a" else v) for k, v in zip(header, cells, strict=True)}
        if row.get("status") == "skipped":  # legacy: a complete run found again
            row["status"] = "ok"
        problem = _status_row_problem(row, subject)
        if problem is not None:
            problems.append(f"line {number} {problem}")
            continue
        rows.append(row)
    return rows, problems


def _read_status_rows(path: Path, subject: str) -> list[dict[str, Any]]:
    """Trusted rows of an existing status table as dicts of text values (None when missing).

    A damaged table is reported (one warning naming the file) and its bad rows dropped, so
    the caller rewrites it from its good rows and what it knows now.
    """
    try:
        raw = read_regular_bytes(path)
    except FileNotFoundError:
        return []
    if raw is None:  # a link or a folder: read_regular_bytes has said so; nothing is read
        return []
    rows, problems = _trusted_status_rows(raw, subject)
    if problems:
        more = f"; and {len(problems) - 3} more" if problems[3:] else ""
        shown = "; ".join(problems[:3]) + more
        logger.warning(
            "Repairing %s: it cannot be trusted (%s); rewriting it from its %d readable row(s) "
            "and the runs of this invocation",
            path,
            shown,
            len(rows),
        )
    return rows


def _clear_status_path(path: Path) -> None:
    """Make room for the status table: remove an empty folder in its place, refuse others.

    The atomic rename replaces a file or a planted link, but not a folder. bidsapp never
    makes one there; an empty one holds nothing of anyone's, but a non-empty one may hold a
    user's files, so it is left alone and the table is not written.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat_module.S_ISDIR(info.st_mode):
        return
    try:
        os.rmdir(path)
    except OSError as err:
        raise LinkedPathError(
            f"{path} is a folder where bidsapp keeps a status table, and it cannot be removed "
            f"({err.strerror or err}); move it away and run again"
        ) from err
    logger.warning("Removed the empty folder %s, where bidsapp keeps a status table", path)


def write_subject_status(
    output_dir: str | os.PathLike[str], subject: str, rows: Iterable[Mapping[str, Any]]
) -> Path:
    """Merge run status rows into a subject's status table.

    A row replaces the existing row with the same :data:`STATUS_KEY` (entities, space, atlas,
    statistic, denoise label); other rows are kept. The merge runs under a file lock and the
    table is written atomically, so concurrent processes working on one subject lose no row.

    Parameters
    ----------
    output_dir : path-like
        Output dataset root.
    subject : str
        Subject label without ``sub-``.
    rows : iterable of mapping
        One mapping per run, atlas and denoise label with keys from :data:`STATUS_COLUMNS`:
        pybids entity names (any spelling of :data:`ENTITY_ALIASES`; stored under the
        canonical name), ``space``, ``atlas``, ``denoise``, ``status`` (``ok``, ``failed``,
        ``excluded``; ``skipped`` from older versions reads back as ``ok``), ``reason``,
        ``volumes_total``, ``volumes_kept``, ``mean_fd`` (mm), ``regions_below_coverage``,
        ``stat`` (extraction statistic) and ``outputs`` (a sequence of paths, stored
        relative to ``output_dir`` and joined with ``;``, or a string kept as is). Keys in
        :data:`DROPPED_ENTITIES` are ignored (they name no output); other extra keys become
        extra columns.

    Returns
    -------
    Path
        The status table path (:func:`status_path`).

    An existing table that is damaged (not UTF-8, cut short, wrong columns, rows with
    values bidsapp never writes) is repaired: its good rows are kept, the others dropped, and
    a warning names the file. An empty folder in its place is removed.

    Raises
    ------
    ValueError
        For a row of another subject, an unknown status, or a row lacking ``task``,
        ``space``, ``atlas`` or ``denoise``.
    LinkedPathError
        If ``logs/`` is a symbolic link, or a folder that is not empty sits where the table
        goes (the message names it; nothing is written).

    """
    path = status_path(output_dir, subject)
    new = [_normalise_status_row(row, subject, Path(output_dir)) for row in rows]
    ensure_directory(output_dir, "logs")
    with _locked(path):
        merged = {_status_key(row): row for row in _read_status_rows(path, subject)}
        _clear_status_path(path)
        merged.update({_status_key(row): row for row in new})
        ordered = [merged[key] for key in sorted(merged)]
        atomic_write_tsv(path, _typed_status(pd.DataFrame(ordered)))
    return path


def _typed_status(table: pd.DataFrame) -> pd.DataFrame:
    """Status table with canonical columns first (extras sorted after) and typed counts."""
    extras = sorted(c for c in table.columns if c not in STATUS_COLUMNS)
    table = table.reindex(columns=[*STATUS_COLUMNS, *extras])
    for column in _STATUS_INT_COLUMNS:
        table[column] = pd.to_numeric(table[column]).astype("Int64")
    for column in _STATUS_FLOAT_COLUMNS:
        table[column] = pd.to_numeric(table[column]).astype(float)
    return table


def read_subject_status(output_dir: str | os.PathLike[str], subject: str) -> pd.DataFrame:
    """Read a subject's run status table.

    Parameters
    ----------
    output_dir : path-like
        Output dataset root.
    subject : str
        Subject label without ``sub-``.

    Returns
    -------
    pandas.DataFrame
        One row per run, atlas and denoise label; entity columns as text (``"01"`` stays
        ``"01"``), counts as nullable integers, ``mean_fd`` as float. Empty (with the
        :data:`STATUS_COLUMNS`) when the subject has no table.

    """
    return _typed_status(_read_status_table(status_path(output_dir, subject)))


def read_all_status(output_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and concatenate the status tables of every subject (for the group level).

    Parameters
    ----------
    output_dir : path-like
        Output dataset root.

    Returns
    -------
    pandas.DataFrame
        All rows, subjects in sorted order; empty with :data:`STATUS_COLUMNS` when none.

    """
    paths = sorted((Path(output_dir) / "logs").glob("sub-*_status.tsv"))
    tables = [_read_status_table(path) for path in paths] or [_empty_status()]
    return _typed_status(pd.concat(tables, ignore_index=True))
