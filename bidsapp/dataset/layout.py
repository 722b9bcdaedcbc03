"""The pybids index of the input dataset, built once and shared safely in the work dir.

Part of the dataset layer. One :class:`bids.BIDSLayout` lists the files of the derivatives
folder without reading any JSON (``index_metadata=False``). Nothing is written into the
(read-only) input folder: pybids keeps its index in memory, or in ``database_dir`` when
given, keyed by the list of files it indexed and built under a lock (see
:func:`make_layout`).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from bidsapp.dataset.filters import IMAGE_EXTENSIONS
from bidsapp.dataset.input_files import QueryError, read_json
from bidsapp.dataset.naming import ParsedName, parse_name

logger = logging.getLogger(__name__)


# Derivative folders fMRIPrep fills with files no run needs (figures, logs,
# FreeSurfer); skipping them keeps indexing fast.
_IGNORED_FOLDERS = re.compile(r"^/(code|models|sourcedata|stimuli|logs?|figures)(/|$)|/figures/")
_DATABASE_FILE = "layout_index.sqlite"
_FILE_LIKE = re.compile(r"_[A-Za-z0-9]+\.(nii|nii\.gz|tsv)/$")
# Bumped whenever what the persisted index holds changes (old folders are then unused).
_INDEX_FORMAT = "bidsapp-index-2"


# --------------------------------------------------------------------- layout


def _check_description(root: Path) -> None:
    """Refuse a root without a readable ``dataset_description.json`` object."""
    description = root / "dataset_description.json"
    if not os.path.lexists(description):
        raise QueryError(
            f"{root} has no dataset_description.json: pass fMRIPrep's output folder "
            "(the one holding its dataset_description.json)."
        )
    document = read_json(description, "The dataset description")
    if not isinstance(document, dict):
        raise QueryError(f"The dataset description {description} is not a JSON object.")


def _scan(root: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """List what pybids would index under ``root``, and what it must not try to.

    Mirrors pybids's walk: hidden entries, ``derivatives/`` and the ignored folders are
    skipped and links to folders are followed. Three kinds of entries would stop pybids
    from indexing the whole dataset, so they are returned apart for the indexer to ignore:
    a folder link to one of its own ancestors (pybids would recurse until the path is too
    long), a name that is not UTF-8 (the index cannot store it) and an unreadable folder.

    Returns
    -------
    entries : list of str
        Relative paths with a leading ``/``; folders end with ``/``.
    skipped : list of (str, str)
        Relative paths left out, with the reason.
    """
    entries: list[str] = []
    skipped: list[tuple[str, str]] = []
    ancestors: set[tuple[int, int]] = set()

    def visit(folder: Path, relative: str) -> None:
        try:
            info = os.stat(folder)
            identity = (info.st_dev, info.st_ino)
            if identity in ancestors:
                skipped.append((relative, "a link to a folder that contains it"))
                return
            with os.scandir(folder) as found:
                names = sorted((entry.name, entry.is_dir()) for entry in found)
        except OSError as err:
            skipped.append((relative, f"cannot be read ({err.strerror})"))
            return
        ancestors.add(identity)
        for name, is_dir in names:
            path = f"{relative}/{name}"
            if name.startswith(".") or _IGNORED_FOLDERS.search(path):
                continue
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                skipped.append((path, "its name is not UTF-8"))
                continue
            if not is_dir:
                entries.append(path)
            elif path != "/derivatives":
                entries.append(path + "/")
                visit(folder / name, path)
        ancestors.discard(identity)

    visit(root, "")
    return entries, skipped


def _signature(root: Path, entries: Iterable[str]) -> str:
    """Hash a file list with what else decides the index (format, pybids, patterns)."""
    import bids

    digest = hashlib.sha256()
    for part in (_INDEX_FORMAT, bids.__version__, _IGNORED_FOLDERS.pattern, str(root)):
        digest.update(part.encode() + b"\0")
    for entry in entries:
        digest.update(entry.encode("utf-8", "surrogateescape") + b"\0")
    return digest.hexdigest()


def tree_signature(root: str | Path) -> str:
    """Hash the list of files pybids would index under ``root`` (names only).

    The index holds file names and the entities parsed from them (no JSON content, which
    :func:`~bidsapp.dataset.query.find_runs` reads itself), so the names decide whether a stored
    index is current: adding, removing or renaming a file changes the signature; ``touch`` or an
    edit does not. About 0.05 s for 20,000 files (0.35 s with a cold file-system cache).

    Parameters
    ----------
    root : str or pathlib.Path
        The dataset folder.

    Returns
    -------
    str
        A hex digest, also covering the pybids version and the ignore patterns.
    """
    root = Path(root).absolute()
    return _signature(root, _scan(root)[0])


def _new_layout(root: Path, database: Path | None, skipped: Sequence[tuple[str, str]] = ()):
    """Index ``root`` with pybids (file names only), in memory or into ``database``."""
    from bids import BIDSLayout
    from bids.layout import BIDSLayoutIndexer

    ignore = [_IGNORED_FOLDERS]
    ignore += [re.compile(f"^{re.escape(path)}(/|$)") for path, _ in skipped if path]
    indexer = BIDSLayoutIndexer(validate=False, ignore=ignore, index_metadata=False)
    return BIDSLayout(
        root,
        validate=False,
        config=["bids", "derivatives"],
        indexer=indexer,
        database_path=database,
        reset_database=database is not None,
    )


def _stored_layout(
    root: Path, database_dir: Path, entries: list[str], skipped: list[tuple[str, str]]
):
    """Open, or build and publish, the stored index of ``root``'s current file list.

    Each index lives in its own folder, named by :func:`tree_signature`, that appears
    complete or not at all: it is built in a hidden temporary folder and renamed into
    place while holding an exclusive ``flock`` on ``<folder>.lock``, so concurrent jobs
    sharing a work dir build it once and only ever open finished databases, which are
    never written again.
    """
    from bids import BIDSLayout

    name = "index-" + _signature(root, entries)[:24]
    final = database_dir / name
    database_dir.mkdir(parents=True, exist_ok=True)
    if not (final / _DATABASE_FILE).is_file():
        lock = os.open(
            database_dir / f"{name}.lock",
            os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o644,
        )
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (final / _DATABASE_FILE).is_file():
                # Left by a killed job: nobody else builds this index while we hold the lock.
                for stale in database_dir.glob(f".{name}.tmp-*"):
                    shutil.rmtree(stale, ignore_errors=True)
                temporary = database_dir / f".{name}.tmp-{os.getpid()}"
                layout = _new_layout(root, temporary, skipped)
                layout.connection_manager.engine.dispose()  # closed before it is published
                del layout
                try:
                    os.rename(temporary, final)
                except OSError as err:
                    if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
                    shutil.rmtree(temporary, ignore_errors=True)
        finally:
            os.close(lock)
    return BIDSLayout(database_path=final, validate=False)


def make_layout(bids_dir: str | Path, database_dir: str | Path | None = None):
    """Index an fMRIPrep derivatives folder with pybids, writing nothing into it.

    Only file names are indexed (``index_metadata=False``): no JSON file is parsed, so a
    malformed sidecar cannot stop the indexing (:func:`~bidsapp.dataset.query.find_runs` reads
    the sidecars of the runs it returns).

    Parameters
    ----------
    bids_dir : str or pathlib.Path
        The fMRIPrep output folder (read-only is fine).
    database_dir : str or pathlib.Path or None, optional
        Folder for pybids's SQLite indexes. An index is reused only while the dataset holds
        exactly the files it was built from (see :func:`tree_signature`); otherwise a new
        one is built beside it. Several processes may share the folder at once. If it
        cannot be written, the index is kept in memory (with a warning).

    Returns
    -------
    bids.BIDSLayout
        Layout with the BIDS and derivatives configurations.

    Raises
    ------
    QueryError
        If ``bids_dir`` is not a folder, or has no readable ``dataset_description.json``
        object.
    """
    return open_layout(bids_dir, database_dir)[0]


def open_layout(bids_dir: str | Path, database_dir: str | Path | None):
    """Return :func:`make_layout`'s layout and the folders named like data files.

    pybids lists files only; a folder named like ``*_bold.nii.gz`` would vanish silently,
    so :func:`~bidsapp.dataset.query.find_runs` reports it as its run's problem.
    """
    root = Path(bids_dir).absolute()
    if not root.is_dir():
        raise QueryError(
            f"The fMRIPrep derivatives folder {root} does not exist or is not a folder; "
            "pass the folder holding fMRIPrep's dataset_description.json."
        )
    _check_description(root)
    entries, skipped = _scan(root)
    # Folders named like data files (``*_bold.nii.gz/``, ``*_timeseries.tsv/``).
    file_like = [parse_name(f"{root}{e[:-1]}") for e in entries if _FILE_LIKE.search(e)]
    for path, reason in skipped:
        printable = f"{root}{path}".encode("utf-8", "backslashreplace").decode("utf-8")
        logger.warning("Not indexing %s: %s.", printable, reason)
    try:
        if database_dir is not None:
            from sqlalchemy.exc import SQLAlchemyError

            try:
                layout = _stored_layout(root, Path(database_dir).absolute(), entries, skipped)
                return layout, file_like
            except (OSError, SQLAlchemyError) as err:
                logger.warning(
                    "Cannot use the pybids database folder %s (%s); indexing in memory.",
                    database_dir,
                    err,
                )
        return _new_layout(root, None, skipped), file_like
    except Exception as err:  # pybids raises many types on odd datasets: a usage error
        raise QueryError(
            f"pybids cannot index {root} ({type(err).__name__}: {' '.join(str(err).split())}); "
            "check its dataset_description.json"
        ) from err


def names_of(
    layout, folders: Sequence[ParsedName], suffix: str | list[str], extension: str | list[str]
) -> list[ParsedName]:
    """Return the parsed names of the files pybids lists, and of matching folders."""
    files = layout.get(return_type="filename", suffix=suffix, extension=extension)
    suffixes = [suffix] if isinstance(suffix, str) else suffix
    extensions = [extension] if isinstance(extension, str) else extension
    return [parse_name(path) for path in files] + [
        name for name in folders if name.suffix in suffixes and name.extension in extensions
    ]


def preproc_bold(layout, folders: Sequence[ParsedName] = ()) -> list[ParsedName]:
    """Every ``desc-preproc_bold`` image, whatever its space."""
    names = names_of(layout, folders, "bold", IMAGE_EXTENSIONS)
    return [n for n in names if n.entities.get("desc") == "preproc" and n.suffix == "bold"]


def describe_preproc_bold(layout_or_dir, database_dir: str | Path | None = None) -> dict:
    """List which spaces, subjects, sessions and tasks have preprocessed BOLD.

    Parameters
    ----------
    layout_or_dir : bids.BIDSLayout or str or pathlib.Path
        A layout from :func:`make_layout`, or a derivatives folder to index.
    database_dir : str or pathlib.Path or None, optional
        pybids database folder, used when a folder is given.

    Returns
    -------
    dict of str to list of str
        Keys ``"space"``, ``"subject"``, ``"session"``, ``"task"``, ``"res"``; sorted
        values found among ``desc-preproc_bold`` images.
    """
    layout = layout_or_dir
    if isinstance(layout_or_dir, (str, Path)):
        layout = make_layout(layout_or_dir, database_dir)
    keys = ("space", "subject", "session", "task", "res")
    found: dict[str, set[str]] = {key: set() for key in keys}
    for name in preproc_bold(layout):
        entities = name.entities
        for key, values in found.items():
            if key in entities:
                values.add(entities[key])
    return {key: sorted(values) for key, values in found.items()}
