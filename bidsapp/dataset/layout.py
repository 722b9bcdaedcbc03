"""The pybids index of the input dataset: only the files a query can use, only its subjects.

Part of the dataset layer. One :class:`bids.BIDSLayout` lists the files of the derivatives
folder without reading any JSON (``index_metadata=False``), and only those the query asks
for (BOLD and mask images, confounds tables: fMRIPrep's anatomical images, surfaces,
transforms, figures and sidecars are never indexed). With participant labels, only those
participants' folders are listed and indexed, so finding one participant's runs costs the
same in a dataset of 100 subjects or 5,000 (XCP-D and fMRIPrep ignore the other ``sub-*``
folders the same way).

Nothing is written into the (read-only) input folder. The index is kept in memory, or:

- in ``database_dir`` (``--work-dir``), for queries of every participant: one index per list
  of files, built under a lock and reused while the dataset holds the same files
  (:func:`tree_signature`);
- in ``bids_database_dir`` (``--bids-database-dir``, fMRIPrep's option): one index of the whole
  dataset that many jobs read at once. The first job builds it (the others wait for it);
  each job then checks that it still lists exactly the files of its own participants, and
  indexes them itself when they changed (see :func:`open_layout`).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import re
import shutil
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bidsapp.dataset.filters import IMAGE_EXTENSIONS
from bidsapp.dataset.input_files import QueryError, read_json
from bidsapp.dataset.naming import ParsedName, parse_name

logger = logging.getLogger(__name__)


# Derivative folders fMRIPrep fills with files no run needs (figures, logs,
# FreeSurfer); skipping them keeps indexing fast.
_IGNORED_FOLDERS = re.compile(
    r"^/(code|models|sourcedata|stimuli|logs?|figures)(/|$)|/(figures|log)(/|$)"
)
# Entries named like a file (a dot in the last part) that no query asks for: a query uses
# BOLD and mask images and confounds tables only (sidecars are read by path, not indexed).
# One rule for the listing and for pybids, so both index the same files.
_UNQUERIED = re.compile(
    r"^(?!.*_(?:bold|mask)\.nii(?:\.gz)?$)(?!.*_(?:timeseries|regressors)\.tsv$).*/[^/]*\.[^/]*$"
)
_DATABASE_FILE = "layout_index.sqlite"
_FILE_LIKE = re.compile(r"_[A-Za-z0-9]+\.(nii|nii\.gz|tsv)/$")
# Bumped whenever what the persisted index holds changes (old folders are then unused).
_INDEX_FORMAT = "bidsapp-index-3"


@dataclass(frozen=True)
class IndexedDataset:
    """A pybids layout of the input dataset and what the query needs beside it.

    Attributes
    ----------
    layout : bids.BIDSLayout
        The index; it may hold more subjects than ``subjects`` (a shared index).
    folders : list of ParsedName
        Folders named like data files (pybids lists files only, so they would vanish).
    subjects : list of str or None
        The participants queried; None for all.
    subject_folders : list of str
        Labels of every ``sub-<label>`` folder at the root (a listing, not the index).
    """

    layout: object
    folders: list[ParsedName]
    subjects: list[str] | None
    subject_folders: list[str]

    @property
    def root(self) -> Path:
        """The dataset folder."""
        return Path(self.layout.root)


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


def listed_preproc_bold(root: str | Path) -> list[ParsedName]:
    """Every ``desc-preproc_bold`` image of the whole dataset, from a listing (no index).

    For messages about what the dataset holds beyond the participants queried.
    """
    root = Path(root).absolute()
    names = [parse_name(f"{root}{entry}") for entry in _scan(root)[0] if entry[-1] != "/"]
    return [
        n
        for n in names
        if n.suffix == "bold"
        and n.extension in IMAGE_EXTENSIONS
        and n.entities.get("desc") == "preproc"
    ]


def _scope_pattern(subjects: Sequence[str] | None) -> re.Pattern | None:
    """Match every root entry named ``sub-*`` but the folders of ``subjects`` (None: none)."""
    if subjects is None:
        return None
    kept = "|".join(re.escape(label) for label in subjects)
    return re.compile(rf"^/sub-(?!(?:{kept})(?:/|$))[^/]*")


def _scan(
    root: Path, subjects: Sequence[str] | None = None
) -> tuple[list[str], list[tuple[str, str]]]:
    """List what pybids would index under ``root``, and what it must not try to.

    Mirrors pybids's walk: hidden entries, ``derivatives/``, the ignored folders, files no
    query uses and, with ``subjects``, the other ``sub-*`` folders are skipped, and links to
    folders are followed. Three kinds of entries would stop pybids from indexing the whole
    dataset, so they are returned apart for the indexer to ignore: a folder link to one of
    its own ancestors (pybids would recurse until the path is too long), a name that is not
    UTF-8 (the index cannot store it) and an unreadable folder.

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
    scope = _scope_pattern(subjects)

    def visit(folder: Path, relative: str) -> None:
        try:
            info = os.stat(folder)
            identity = (info.st_dev, info.st_ino)
            if identity in ancestors:
                skipped.append((relative, "a link to a folder that contains it"))
                return
            with os.scandir(folder) as found:
                listed = [(entry.name, entry) for entry in found]
        except OSError as err:
            skipped.append((relative, f"cannot be read ({err.strerror})"))
            return
        ancestors.add(identity)
        kept = []
        for name, entry in listed:
            path = f"{relative}/{name}"
            if (
                name.startswith(".")
                or _IGNORED_FOLDERS.search(path)
                or _UNQUERIED.search(path)
                or (scope is not None and scope.search(path))
            ):
                continue
            kept.append((name, entry.is_dir()))
        for name, is_dir in sorted(kept):
            path = f"{relative}/{name}"
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
    patterns = (_IGNORED_FOLDERS.pattern, _UNQUERIED.pattern)
    for part in (_INDEX_FORMAT, bids.__version__, *patterns, str(root)):
        digest.update(part.encode() + b"\0")
    for entry in entries:
        # Files, and folders named like files (runs report them); other folders index nothing.
        if not entry.endswith("/") or _FILE_LIKE.search(entry):
            digest.update(entry.encode("utf-8", "surrogateescape") + b"\0")
    return digest.hexdigest()


def tree_signature(root: str | Path) -> str:
    """Hash the list of files pybids would index under ``root`` (names only).

    The index holds the names of the files a query can use and the entities parsed from
    them (no JSON content, which :func:`~bidsapp.dataset.query.find_runs` reads itself), so
    those names decide whether a stored index is current: adding, removing or renaming a
    BOLD, mask or confounds file changes the signature; ``touch``, an edit or a new figure
    does not. About 0.05 s for 20,000 files (0.35 s with a cold file-system cache).

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


def _listed_indexer(files: Sequence[str]):
    """Return a pybids indexer that indexes the listed files instead of walking the dataset.

    pybids's own walk checks every entry of every folder against the ignore patterns
    (about 0.5 ms each), so the root listing of a dataset of 5,000 subjects alone costs
    seconds whatever is queried. This indexer gives pybids the files :func:`_scan`
    listed (same rules) and lets pybids parse and store them as its walk would. It uses
    pybids's per-file indexing step, which is not public API: None when it is missing, and
    the walk with ignore patterns is used instead.
    """
    from bids.layout import BIDSLayoutIndexer
    from bids.layout.models import Tag

    if not callable(getattr(BIDSLayoutIndexer, "_index_file", None)):
        return None

    class ListedIndexer(BIDSLayoutIndexer):
        def __call__(self, layout) -> None:
            self._layout = layout
            self._config = list(layout.config.values())
            entities: dict = {}
            for config in self._config:
                entities.update(config.entities)
            root = layout._root
            records, tags = [], []
            for relative in files:
                record, file_tags = self._index_file(root / relative[1:], entities)
                records.append(record)
                tags += file_tags
            self.session.bulk_save_objects(records)
            self.session.bulk_insert_mappings(Tag, tags)
            self.session.commit()

    return ListedIndexer(validate=False, index_metadata=False)


def _new_layout(
    root: Path,
    database: Path | None,
    entries: Sequence[str],
    skipped: Sequence[tuple[str, str]] = (),
    subjects: Sequence[str] | None = None,
):
    """Index the files :func:`_scan` listed with pybids, in memory or into ``database``."""
    from bids import BIDSLayout
    from bids.layout import BIDSLayoutIndexer

    indexer = _listed_indexer([entry for entry in entries if not entry.endswith("/")])
    if indexer is None:
        ignore = [_IGNORED_FOLDERS, _UNQUERIED]
        scope = _scope_pattern(subjects)
        if scope is not None:
            ignore.append(scope)
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


def _build_aside(
    root: Path,
    folder: Path,
    name: str,
    entries: Sequence[str],
    skipped: Sequence[tuple[str, str]],
) -> Path:
    """Index ``root`` into a new hidden folder ``folder/.<name>.tmp-<pid>`` and return it.

    The caller holds the lock of ``name`` and publishes the index by renaming; a hidden
    folder left by a killed builder of the same index is removed first.
    """
    for stale in folder.glob(f".{name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    temporary = folder / f".{name}.tmp-{os.getpid()}"
    layout = _new_layout(root, temporary, entries, skipped)
    layout.connection_manager.engine.dispose()  # closed before it is published
    del layout
    return temporary


def _locked(folder: Path, name: str):
    """Open ``folder/<name>.lock`` for an exclusive ``flock`` (the caller closes it)."""
    lock = os.open(
        folder / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644
    )
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


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
        lock = _locked(database_dir, name)
        try:
            if not (final / _DATABASE_FILE).is_file():
                temporary = _build_aside(root, database_dir, name, entries, skipped)
                try:
                    os.rename(temporary, final)
                except OSError as err:
                    if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
                    shutil.rmtree(temporary, ignore_errors=True)
        finally:
            os.close(lock)
    return BIDSLayout(database_path=final, validate=False)


def _indexed_paths(database: Path, root: Path, subjects: Sequence[str] | None) -> set[str]:
    """Paths (relative, leading ``/``) of the queried files a pybids database lists.

    Read with SQLite in read-only mode, by range on the primary key for each subject's
    folder, so the cost does not grow with the subjects the database holds.
    """
    prefix = str(root)
    uri = database.absolute().as_uri() + "?mode=ro"
    with sqlite3.connect(uri, uri=True) as connection:
        ranges = (
            [(prefix + "/", prefix + "0")]
            if subjects is None
            else [(f"{prefix}/sub-{s}/", f"{prefix}/sub-{s}0") for s in subjects]
        )
        found: set[str] = set()
        for low, high in ranges:
            rows = connection.execute(
                "SELECT path FROM files WHERE path >= ? AND path < ? AND NOT is_dir",
                (low, high),
            )
            found.update(row[0][len(prefix) :] for row in rows)
    return {path for path in found if not _UNQUERIED.search(path) and _in_scope(path)}


def _in_scope(path: str) -> bool:
    """Whether a relative path is one :func:`_scan` would list (leaving scope aside)."""
    return not (
        _IGNORED_FOLDERS.search(path)
        or any(part.startswith(".") for part in path.split("/"))
        or path.startswith("/derivatives/")
    )


def _shared_layout(
    root: Path,
    folder: Path,
    entries: list[str],
    skipped: list[tuple[str, str]],
    subjects: Sequence[str] | None,
):
    """Open the one index of the whole dataset in ``folder``; build it if there is none.

    The index is ``folder/layout_index.sqlite`` (where pybids and fMRIPrep keep theirs): made
    by the first job that finds none, under an exclusive ``flock`` (the others wait, then
    read it), built aside and renamed into place. It is never written again: a job whose
    participants' files are not exactly those it lists (files added, removed or renamed
    since it was built, or an index of another dataset) indexes them in memory, with a
    warning saying how to rebuild it.
    """
    from bids import BIDSLayout

    database = folder / _DATABASE_FILE
    if not database.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        lock = _locked(folder, "layout_index")
        try:
            if not database.is_file():
                every = (entries, skipped) if subjects is None else _scan(root)
                temporary = _build_aside(root, folder, "layout_index", *every)
                os.rename(temporary / _DATABASE_FILE, database)
                shutil.rmtree(temporary, ignore_errors=True)
        finally:
            os.close(lock)
    layout = BIDSLayout(database_path=folder, validate=False)
    listed = {
        entry
        for entry in entries
        if not entry.endswith("/")
        and (subjects is None or entry.split("/")[1] in {f"sub-{s}" for s in subjects})
    }
    if Path(layout.root) != root or _indexed_paths(database, root, subjects) != listed:
        logger.warning(
            "The pybids index in %s does not list the current files of %s (built before "
            "files were added, removed or renamed, or for another folder); indexing them "
            "in memory. Remove %s to have it built again.",
            folder,
            "the dataset" if subjects is None else "sub-" + ", sub-".join(subjects),
            database,
        )
        return None
    return layout


def _subject_folders(root: Path) -> list[str]:
    """Labels of the ``sub-<label>`` folders at the root (one listing)."""
    try:
        with os.scandir(root) as found:
            return sorted(e.name[4:] for e in found if e.name.startswith("sub-") and e.is_dir())
    except OSError:
        return []


def make_layout(bids_dir: str | Path, database_dir: str | Path | None = None):
    """Index an fMRIPrep derivatives folder with pybids, writing nothing into it.

    Only the names of the files a query uses are indexed (``index_metadata=False``): no
    JSON file is parsed, so a malformed sidecar cannot stop the indexing
    (:func:`~bidsapp.dataset.query.find_runs` reads the sidecars of the runs it returns).

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
    return open_layout(bids_dir, database_dir).layout


def open_layout(
    bids_dir: str | Path,
    database_dir: str | Path | None = None,
    *,
    subjects: Sequence[str] | None = None,
    bids_database_dir: str | Path | None = None,
) -> IndexedDataset:
    """Index the dataset for a query of ``subjects`` (None: all), the cheapest safe way.

    Parameters
    ----------
    bids_dir : str or pathlib.Path
        The fMRIPrep output folder.
    database_dir : str or pathlib.Path or None, optional
        Folder of stored indexes for queries of every participant (see
        :func:`make_layout`); a query of some participants indexes them in memory, which
        costs about as much as opening a stored index.
    subjects : sequence of str or None, optional
        Participant labels (without ``sub-``); only their folders are listed and indexed.
    bids_database_dir : str or pathlib.Path or None, optional
        Folder of one shared index of the whole dataset (``--bids-database-dir``), used
        instead of ``database_dir``; see :func:`_shared_layout`.

    Returns
    -------
    IndexedDataset
        The layout, folders named like data files, and the subjects queried.
    """
    root = Path(bids_dir).absolute()
    if not root.is_dir():
        raise QueryError(
            f"The fMRIPrep derivatives folder {root} does not exist or is not a folder; "
            "pass the folder holding fMRIPrep's dataset_description.json."
        )
    _check_description(root)
    subjects = None if subjects is None else sorted(set(subjects))
    entries, skipped = _scan(root, subjects)
    # Folders named like data files (``*_bold.nii.gz/``, ``*_timeseries.tsv/``).
    file_like = [parse_name(f"{root}{e[:-1]}") for e in entries if _FILE_LIKE.search(e)]
    for path, reason in skipped:
        printable = f"{root}{path}".encode("utf-8", "backslashreplace").decode("utf-8")
        logger.warning("Not indexing %s: %s.", printable, reason)

    def indexed(layout) -> IndexedDataset:
        return IndexedDataset(layout, file_like, subjects, _subject_folders(root))

    if bids_database_dir is not None:
        folder = Path(bids_database_dir).absolute()
        try:
            layout = _shared_layout(root, folder, entries, skipped, subjects)
        except Exception as err:  # an unusable shared index must not stop the runs
            logger.warning(
                "Cannot use the pybids database %s (%s: %s); indexing in memory.",
                folder,
                type(err).__name__,
                " ".join(str(err).split()),
            )
            layout = None
        if layout is not None:
            return indexed(layout)
    try:
        if database_dir is not None and subjects is None and bids_database_dir is None:
            from sqlalchemy.exc import SQLAlchemyError

            try:
                return indexed(
                    _stored_layout(root, Path(database_dir).absolute(), entries, skipped)
                )
            except (OSError, SQLAlchemyError) as err:
                logger.warning(
                    "Cannot use the pybids database folder %s (%s); indexing in memory.",
                    database_dir,
                    err,
                )
        return indexed(_new_layout(root, None, entries, skipped, subjects))
    except Exception as err:  # pybids raises many types on odd datasets: a usage error
        raise QueryError(
            f"pybids cannot index {root} ({type(err).__name__}: {' '.join(str(err).split())}); "
            "check its dataset_description.json"
        ) from err


def names_of(
    dataset: IndexedDataset, suffix: str | list[str], extension: str | list[str]
) -> list[ParsedName]:
    """Return the parsed names of the files pybids lists, and of matching folders."""
    query = {} if dataset.subjects is None else {"subject": list(dataset.subjects)}
    files = dataset.layout.get(return_type="filename", suffix=suffix, extension=extension, **query)
    suffixes = [suffix] if isinstance(suffix, str) else suffix
    extensions = [extension] if isinstance(extension, str) else extension
    return [parse_name(path) for path in files] + [
        name for name in dataset.folders if name.suffix in suffixes and name.extension in extensions
    ]


def preproc_bold(dataset: IndexedDataset) -> list[ParsedName]:
    """Every ``desc-preproc_bold`` image, whatever its space."""
    names = names_of(dataset, "bold", IMAGE_EXTENSIONS)
    return [n for n in names if n.entities.get("desc") == "preproc" and n.suffix == "bold"]


def describe_preproc_bold(
    layout_or_dir: IndexedDataset | str | Path, database_dir: str | Path | None = None
) -> dict:
    """List which spaces, subjects, sessions and tasks have preprocessed BOLD.

    Parameters
    ----------
    layout_or_dir : IndexedDataset or str or pathlib.Path
        An index from :func:`open_layout`, or a derivatives folder to index.
    database_dir : str or pathlib.Path or None, optional
        pybids database folder, used when a folder is given.

    Returns
    -------
    dict of str to list of str
        Keys ``"space"``, ``"subject"``, ``"session"``, ``"task"``, ``"res"``; sorted
        values found among ``desc-preproc_bold`` images.
    """
    dataset = layout_or_dir
    if isinstance(layout_or_dir, (str, Path)):
        dataset = open_layout(layout_or_dir, database_dir)
    return summarize_preproc_bold(preproc_bold(dataset))


def summarize_preproc_bold(names: Iterable[ParsedName]) -> dict:
    """Sorted ``space``, ``subject``, ``session``, ``task`` and ``res`` values of ``names``."""
    keys = ("space", "subject", "session", "task", "res")
    found: dict[str, set[str]] = {key: set() for key in keys}
    for name in names:
        entities = name.entities
        for key, values in found.items():
            if key in entities:
                values.add(entities[key])
    return {key: sorted(values) for key, values in found.items()}
