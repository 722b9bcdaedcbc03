"""Find preprocessed BOLD runs (and their mask, confounds and TR) in fMRIPrep outputs.

One :class:`bids.BIDSLayout` indexes the derivatives folder; every file a run needs is
then matched in Python by the run's entities, so the dataset is indexed once however
many runs it holds. Nothing is written into the (read-only) input folder: pybids keeps
its index in memory, or in ``database_dir`` when given.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Entities naming a run, in BIDS file-name order (pybids long names).
RUN_ENTITIES = (
    "subject",
    "session",
    "task",
    "acquisition",
    "ceagent",
    "reconstruction",
    "direction",
    "run",
    "echo",
)
#: Entities naming the output grid of a run.
SPACE_ENTITIES = ("space", "res", "den")

_SHORT_NAMES = {
    "subject": "sub",
    "session": "ses",
    "task": "task",
    "acquisition": "acq",
    "ceagent": "ce",
    "reconstruction": "rec",
    "direction": "dir",
    "run": "run",
    "echo": "echo",
}
_LONG_NAMES = {short: long for long, short in _SHORT_NAMES.items()}
_LONG_NAMES.update({"resolution": "res", "density": "den"})
_IMAGE_EXTENSIONS = [".nii.gz", ".nii"]
_LABEL = re.compile(r"[A-Za-z0-9]+")
# Keys of a filter that find_runs sets itself: the allowed values for each.
_FIXED_FILTERS = {
    "suffix": {"bold"},
    "desc": {"preproc"},
    "extension": set(_IMAGE_EXTENSIONS) | {"nii.gz", "nii"},
    "datatype": {"func"},
}
# Derivative folders fMRIPrep fills with files no run needs (figures, logs,
# FreeSurfer); skipping them keeps indexing fast.
_IGNORED_FOLDERS = re.compile(r"^/(code|models|sourcedata|stimuli|logs?|figures)(/|$)|/figures/")
_DATABASE_FILE = "layout_index.sqlite"


class QueryError(ValueError):
    """The derivatives folder or the query arguments cannot be used."""


class NoRunsFoundError(QueryError):
    """No preprocessed BOLD run matches the query."""


@dataclass(frozen=True)
class BoldRun:
    """One preprocessed BOLD run and the files that go with it.

    Attributes
    ----------
    preproc_bold : pathlib.Path
        The ``desc-preproc_bold`` image.
    entities : dict of str to str
        Its entities, pybids long names (``subject``, ``session``, ``task``,
        ``acquisition``, ``ceagent``, ``reconstruction``, ``direction``, ``run``,
        ``echo``, ``space``, ``res``, ``den``); only those present.
    brain_mask : pathlib.Path or None
        The ``desc-brain_mask`` of the same run on the same grid (space, res, den).
    confounds : pathlib.Path or None
        ``desc-confounds_timeseries.tsv`` (or fMRIPrep 1.x
        ``desc-confounds_regressors.tsv``) of the run.
    t_r : float or None
        ``RepetitionTime`` (s) from the BOLD sidecar; None when the sidecar has none.
    aroma_bold : pathlib.Path or None
        The run's ICA-AROMA ``desc-smoothAROMAnonaggr_bold`` image, if any.
    sidecar : pathlib.Path or None
        The BOLD's JSON sidecar (where ``RepetitionTime`` comes from), if any.
    problem : str or None
        Why this run cannot be processed (e.g. two candidate files for it, or an unusable
        sidecar), naming the file(s); None when it can. Such a run fails alone.
    """

    preproc_bold: Path
    entities: dict[str, str] = field(hash=False)
    brain_mask: Path | None = None
    confounds: Path | None = None
    t_r: float | None = None
    aroma_bold: Path | None = None
    sidecar: Path | None = None
    problem: str | None = None

    @property
    def name(self) -> str:
        """Entities naming the run, e.g. ``sub-01_ses-1_task-rest_run-1``."""
        return "_".join(
            f"{_SHORT_NAMES[key]}-{self.entities[key]}"
            for key in RUN_ENTITIES
            if key in self.entities
        )


# ------------------------------------------------------------------ arguments


def bare_label(label: Any, prefix: str) -> str | None:
    """Return a label without its optional ``<prefix>-``, or None if it is not a BIDS label.

    Parameters
    ----------
    label : object
        A label such as ``"01"`` or ``"sub-01"``.
    prefix : str
        Entity key to strip, e.g. ``"sub"``.

    Returns
    -------
    str or None
        The alphanumeric label, or None when it has other characters (e.g. ``"../x"``) or
        is empty.
    """
    text = str(label)
    if text.startswith(f"{prefix}-"):
        text = text[len(prefix) + 1 :]
    return text if _LABEL.fullmatch(text) else None


def normalize_labels(
    labels: str | Iterable[str] | None, prefix: str, what: str
) -> list[str] | None:
    """Strip an optional BIDS prefix from labels and check they are alphanumeric.

    Parameters
    ----------
    labels : str or iterable of str or None
        Labels such as ``"01"`` or ``"sub-01"``.
    prefix : str
        Entity key to strip, e.g. ``"sub"``.
    what : str
        What the labels are, for error messages (e.g. ``"participant label"``).

    Returns
    -------
    list of str or None
        Sorted unique labels, or None when ``labels`` is None.

    Raises
    ------
    QueryError
        If a label is empty or has characters other than letters and digits
        (e.g. ``"../x"``).
    """
    if labels is None:
        return None
    if isinstance(labels, str):
        labels = [labels]
    cleaned = set()
    for label in labels:
        text = bare_label(label, prefix)
        if text is None:
            raise QueryError(
                f"Invalid {what} {label!r}: BIDS labels contain only letters and "
                f"digits (with or without the '{prefix}-' prefix)."
            )
        cleaned.add(text)
    return sorted(cleaned)


def load_bids_filters(bids_filters: Mapping | str | Path | None) -> dict[str, Any]:
    """Return the ``bold`` entity filters of an fMRIPrep ``--bids-filter-file``.

    Parameters
    ----------
    bids_filters : mapping or str or pathlib.Path or None
        The filter document (``{"bold": {"session": "1", "run": [1, 2]}, "t1w": ...}``)
        or a path to its JSON file. Only the ``"bold"`` query is used; other
        queries (``t1w``, ``fmap``, ...) are ignored. A value ``null`` means "entity
        absent", ``"*"`` means "any value".

    Returns
    -------
    dict
        pybids ``get`` keyword arguments (long entity names).

    Raises
    ------
    QueryError
        If the file is unreadable or the document is malformed.
    """
    if bids_filters is None:
        return {}
    source = "bids_filters"
    if isinstance(bids_filters, (str, Path)):
        source = str(bids_filters)
        try:
            bids_filters = json.loads(Path(bids_filters).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise QueryError(f"Cannot read the BIDS filter file {source}: {exc}") from exc
    if not isinstance(bids_filters, Mapping):
        raise QueryError(
            f"{source} must be a JSON object keyed by query name, e.g. {{'bold': {{}}}}."
        )
    ignored = sorted(set(bids_filters) - {"bold"})
    if ignored:
        logger.debug("BIDS filters: ignoring queries %s (only 'bold' applies)", ignored)
    bold = bids_filters.get("bold", {})
    if not isinstance(bold, Mapping):
        raise QueryError(f"{source}: the 'bold' query must be an object of entity filters.")
    return {_filter_key(key, source): _filter_value(value) for key, value in bold.items()}


def _filter_key(key: str, source: str) -> str:
    """Map a filter key to a pybids entity name, rejecting unknown ones."""
    name = _LONG_NAMES.get(key, key)
    known = set(RUN_ENTITIES) | set(SPACE_ENTITIES) | set(_FIXED_FILTERS) | {"scope"}
    if name not in known:
        raise QueryError(
            f"{source}: unknown entity {key!r} in the 'bold' query; use one of "
            f"{', '.join(sorted(known - {'scope'}))}."
        )
    return name


def _filter_value(value: Any) -> Any:
    """Translate fMRIPrep's filter conventions (null, "*") into pybids queries."""
    from bids.layout import Query

    if value is None:
        return Query.NONE
    if value == "*":
        return Query.ANY
    if isinstance(value, (list, tuple)):
        return [_filter_value(item) for item in value]
    return value


def _merge_fixed_filters(filters: dict[str, Any], space: str) -> dict[str, Any]:
    """Check user filters against what find_runs fixes; return the remaining ones."""
    remaining = dict(filters)
    remaining.pop("scope", None)
    for key, allowed in _FIXED_FILTERS.items():
        if key not in remaining:
            continue
        values = remaining.pop(key)
        values = values if isinstance(values, list) else [values]
        if not all(isinstance(v, str) and v in allowed for v in values):
            raise QueryError(
                f"BIDS filter {key}={values!r} conflicts with the preprocessed BOLD "
                f"query ({key} must be one of {sorted(allowed)}); remove it."
            )
        if key == "extension":  # the one fixed key a filter may narrow
            remaining[key] = ["." + v.lstrip(".") for v in values]
    if "space" in remaining:
        values = remaining.pop("space")
        values = values if isinstance(values, list) else [values]
        if values != [space]:
            raise QueryError(
                f"BIDS filter space={values!r} conflicts with space={space!r}; "
                "choose the space with the space option instead."
            )
    return remaining


# --------------------------------------------------------------------- layout


def _stored_root(database_dir: Path) -> str | None:
    """Return the dataset root a pybids database was built for (None if none)."""
    database = database_dir / _DATABASE_FILE
    if not database.is_file():
        return None
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
            row = connection.execute("SELECT root FROM layout_info").fetchone()
    except sqlite3.Error:
        return ""
    return row[0] if row else ""


def make_layout(bids_dir: str | Path, database_dir: str | Path | None = None):
    """Index an fMRIPrep derivatives folder with pybids, writing nothing into it.

    Parameters
    ----------
    bids_dir : str or pathlib.Path
        The fMRIPrep output folder (read-only is fine).
    database_dir : str or pathlib.Path or None, optional
        Folder for pybids's SQLite index. When it already holds an index of the
        same folder, that index is reused (no re-indexing: delete it after the
        dataset changes); an index of another folder is rebuilt.

    Returns
    -------
    bids.BIDSLayout
        Layout with the BIDS and derivatives configurations (``desc``, ``space``,
        ``res`` and ``den`` are parsed).

    Raises
    ------
    QueryError
        If ``bids_dir`` is not a folder.
    """
    from bids import BIDSLayout
    from bids.layout import BIDSLayoutIndexer

    root = Path(bids_dir).absolute()
    if not root.is_dir():
        raise QueryError(
            f"The fMRIPrep derivatives folder {root} does not exist or is not a folder; "
            "pass the folder holding fMRIPrep's dataset_description.json."
        )
    reset = False
    if database_dir is not None:
        database_dir = Path(database_dir).absolute()
        stored = _stored_root(database_dir)
        reset = stored is not None and stored != str(root)
        if reset:
            logger.warning(
                "The pybids database in %s indexes %s, not %s: rebuilding it.",
                database_dir,
                stored or "an unreadable dataset",
                root,
            )
    indexer = BIDSLayoutIndexer(validate=False, ignore=[_IGNORED_FOLDERS])
    return BIDSLayout(
        root,
        validate=False,
        config=["bids", "derivatives"],
        indexer=indexer,
        database_path=database_dir,
        reset_database=reset,
    )


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
    files = layout.get(suffix="bold", desc="preproc", extension=_IMAGE_EXTENSIONS)
    keys = ("space", "subject", "session", "task", "res")
    found: dict[str, set[str]] = {key: set() for key in keys}
    for bids_file in files:
        entities = bids_file.get_entities()
        for key, values in found.items():
            if key in entities:
                values.add(str(entities[key]))
    return {key: sorted(values) for key, values in found.items()}


# ---------------------------------------------------------------------- query


def _entity_strings(bids_file) -> dict[str, str]:
    """Return the run and grid entities of a pybids file as strings."""
    entities = bids_file.get_entities()
    return {
        key: str(entities[key])
        for key in RUN_ENTITIES + SPACE_ENTITIES
        if entities.get(key) is not None
    }


def _key(entities: Mapping[str, str], keys: Sequence[str]) -> tuple:
    """Return a hashable key of some entities (absent ones included as None)."""
    return tuple((name, entities.get(name)) for name in keys)


def _index_by(files, keys: Sequence[str]) -> dict[tuple, list]:
    """Group pybids files by some of their entities."""
    index: dict[tuple, list] = {}
    for bids_file in files:
        index.setdefault(_key(_entity_strings(bids_file), keys), []).append(bids_file)
    return index


def _pick_confounds(candidates: list) -> Path | None:
    """Prefer ``_timeseries.tsv`` over fMRIPrep 1.x ``_regressors.tsv``."""
    if not candidates:
        return None
    ordered = sorted(
        candidates, key=lambda f: (f.get_entities().get("suffix") != "timeseries", f.path)
    )
    if len(ordered) > 1:
        logger.warning(
            "Several confounds files for one run; using %s (others: %s)",
            ordered[0].path,
            ", ".join(f.path for f in ordered[1:]),
        )
    return Path(ordered[0].path)


def _pick_image(candidates: list, what: str) -> Path | None:
    """Return the ``.nii.gz`` candidate (else ``.nii``), warning about extras."""
    if not candidates:
        return None
    ordered = sorted(candidates, key=lambda f: (not f.path.endswith(".nii.gz"), f.path))
    if len(ordered) > 1:
        logger.warning("Several %s files match; using %s", what, ordered[0].path)
    return Path(ordered[0].path)


def _repetition_time(bids_file) -> float | None:
    """Read ``RepetitionTime`` (s) from the sidecar; None when absent."""
    value = bids_file.get_metadata().get("RepetitionTime")
    if value is None:
        return None
    try:
        t_r = float(value)
    except (TypeError, ValueError):
        t_r = float("nan")
    if not t_r > 0:
        sidecar = re.sub(r"\.nii(\.gz)?$", ".json", bids_file.path)
        source = sidecar if Path(sidecar).is_file() else f"the sidecar metadata of {bids_file.path}"
        raise QueryError(
            f"RepetitionTime={value!r} in {source} is not a positive number of seconds. "
            "Fix or remove it (the NIfTI header's value is used when the sidecar has none)."
        )
    return t_r


def _passes(entities: Mapping[str, str], wanted: Mapping[str, list[str] | None]) -> bool:
    """Whether entities pass every label filter (a None filter keeps everything)."""
    return all(allowed is None or entities.get(key) in allowed for key, allowed in wanted.items())


def _describe_filters(bids_filters: Mapping | str | Path | None) -> str | None:
    """Render the user's BIDS filters for a message (path, or the 'bold' query)."""
    if bids_filters is None:
        return None
    if isinstance(bids_filters, (str, Path)):
        return str(bids_filters)
    return json.dumps({"bold": bids_filters.get("bold", {})}, default=str)


def _no_runs_message(
    root: Path, space: str, criteria: dict, available: dict, all_subjects: list[str]
) -> str:
    """Explain what was searched, what exists, and why requested subjects are missing."""
    searched = ", ".join(f"{key}={value}" for key, value in criteria.items() if value)
    lines = [
        f"No preprocessed BOLD runs (*_desc-preproc_bold.nii[.gz]) in {root} "
        f"for space={space}" + (f", {searched}" if searched else "") + "."
    ]
    if not any(available.values()):
        lines.append(
            "The folder holds no desc-preproc_bold images at all: is it fMRIPrep's "
            "output folder (the one with dataset_description.json)?"
        )
        return "\n".join(lines)
    for key, label in (("space", "Spaces"), ("subject", "Subjects"), ("task", "Tasks")):
        lines.append(f"{label} with preprocessed BOLD: {', '.join(available[key]) or 'none'}.")
    if available["session"]:
        lines.append(f"Sessions with preprocessed BOLD: {', '.join(available['session'])}.")
    requested = criteria.get("participant_labels") or []
    no_bold = [s for s in requested if s in all_subjects and s not in available["subject"]]
    absent = [s for s in requested if s not in all_subjects]
    if no_bold:
        lines.append(
            f"Participant(s) {', '.join(no_bold)} have outputs but no preprocessed BOLD "
            "(anatomical-only, or functional preprocessing failed or was skipped)."
        )
    if absent:
        lines.append(f"Participant(s) {', '.join(absent)} are not in the dataset.")
    return "\n".join(lines)


def find_runs(
    bids_dir: str | Path,
    *,
    space: str = "MNI152NLin2009cAsym",
    participant_labels: str | Iterable[str] | None = None,
    session_labels: str | Iterable[str] | None = None,
    tasks: str | Iterable[str] | None = None,
    bids_filters: Mapping | str | Path | None = None,
    database_dir: str | Path | None = None,
) -> list[BoldRun]:
    """Find the preprocessed BOLD runs of an fMRIPrep derivatives folder.

    Parameters
    ----------
    bids_dir : str or pathlib.Path
        fMRIPrep's output folder; it is only read.
    space : str, optional
        Template (or ``T1w``) space of the runs.
    participant_labels : str or iterable of str or None, optional
        Subjects to keep, with or without ``sub-``; None keeps all.
    session_labels : str or iterable of str or None, optional
        Sessions to keep, with or without ``ses-``; None keeps all.
    tasks : str or iterable of str or None, optional
        Tasks to keep, with or without ``task-``; None keeps all.
    bids_filters : mapping or str or pathlib.Path or None, optional
        fMRIPrep ``--bids-filter-file`` document or path; its ``"bold"`` query
        narrows the runs (see :func:`load_bids_filters`).
    database_dir : str or pathlib.Path or None, optional
        Folder for pybids's index, reused by later calls (see :func:`make_layout`).

    Returns
    -------
    list of BoldRun
        Sorted by run name, then grid entities and path.

    Raises
    ------
    QueryError
        On an invalid label, filter or sidecar, or a missing folder.
    NoRunsFoundError
        If no run matches; the message says what was searched and what exists.
    """
    participants = normalize_labels(participant_labels, "sub", "participant label")
    sessions = normalize_labels(session_labels, "ses", "session label")
    task_labels = normalize_labels(tasks, "task", "task label")
    if not _LABEL.fullmatch(str(space)):
        raise QueryError(
            f"Invalid space {space!r}: letters and digits only, e.g. MNI152NLin2009cAsym."
        )
    filters = _merge_fixed_filters(load_bids_filters(bids_filters), space)

    extensions = filters.pop("extension", _IMAGE_EXTENSIONS)
    layout = make_layout(bids_dir, database_dir)
    bold_files = layout.get(
        suffix="bold", desc="preproc", space=space, extension=extensions, **filters
    )
    wanted = {"subject": participants, "session": sessions, "task": task_labels}
    selected = [f for f in bold_files if _passes(_entity_strings(f), wanted)]
    if not selected:
        criteria = {
            "participant_labels": participants,
            "session_labels": sessions,
            "tasks": task_labels,
            "bids_filters": _describe_filters(bids_filters),
        }
        raise NoRunsFoundError(
            _no_runs_message(
                Path(layout.root),
                space,
                criteria,
                describe_preproc_bold(layout),
                sorted(str(s) for s in layout.get_subjects()),
            )
        )

    runs = _assemble_runs(layout, selected, space)
    _warn_missing_participants(participants, runs)
    return runs


def _assemble_runs(layout, bold_files: list, space: str) -> list[BoldRun]:
    """Match masks, confounds and AROMA images to each BOLD file."""
    grid_keys = RUN_ENTITIES + SPACE_ENTITIES
    masks = _index_by(
        layout.get(suffix="mask", desc="brain", space=space, extension=_IMAGE_EXTENSIONS),
        grid_keys,
    )
    confounds = _index_by(
        layout.get(desc="confounds", suffix=["timeseries", "regressors"], extension=".tsv"),
        RUN_ENTITIES,
    )
    aroma = _index_by(
        layout.get(suffix="bold", desc="smoothAROMAnonaggr", extension=_IMAGE_EXTENSIONS),
        RUN_ENTITIES,
    )
    by_grid = _index_by(bold_files, grid_keys)
    runs = []
    for grid_key, candidates in by_grid.items():
        bold = _pick_image(candidates, "preprocessed BOLD")
        chosen = next(f for f in candidates if Path(f.path) == bold)
        entities = _entity_strings(chosen)
        run_key = _key(entities, RUN_ENTITIES)
        runs.append(
            BoldRun(
                preproc_bold=bold,
                entities=entities,
                brain_mask=_pick_image(masks.get(grid_key, []), "brain mask"),
                confounds=_pick_confounds(confounds.get(run_key, [])),
                t_r=_repetition_time(chosen),
                aroma_bold=_pick_image(aroma.get(run_key, []), "ICA-AROMA BOLD"),
            )
        )
    runs.sort(key=_sort_key)
    _warn_duplicate_names(runs)
    return runs


def _natural(value: str | None) -> tuple:
    """Order absent entities first, then numbers numerically, then text."""
    if value is None:
        return (0, 0, "")
    return (1, int(value), value) if value.isdigit() else (2, 0, value)


def _sort_key(run: BoldRun) -> tuple:
    """Sort runs by entity (BIDS order, run-2 before run-10), then grid and path."""
    entities = tuple(_natural(run.entities.get(key)) for key in RUN_ENTITIES + SPACE_ENTITIES)
    return entities + (str(run.preproc_bold),)


def _warn_duplicate_names(runs: list[BoldRun]) -> None:
    """Warn when one run exists on several grids (e.g. res-1 and res-2)."""
    seen: dict[str, list[BoldRun]] = {}
    for run in runs:
        seen.setdefault(run.name, []).append(run)
    for name, group in seen.items():
        if len(group) > 1:
            grids = ", ".join(
                "_".join(f"{k}-{r.entities[k]}" for k in SPACE_ENTITIES if k in r.entities)
                for r in group
            )
            logger.warning(
                "Run %s exists on several grids (%s); narrow it with a BIDS filter such as "
                '{"bold": {"res": "2"}}.',
                name,
                grids,
            )


def _warn_missing_participants(participants: list[str] | None, runs: list[BoldRun]) -> None:
    """Warn about requested participants without any run."""
    if participants is None:
        return
    found = {run.entities.get("subject") for run in runs}
    missing = [label for label in participants if label not in found]
    if missing:
        logger.warning(
            "No preprocessed BOLD runs for participant(s) %s; continuing with the others.",
            ", ".join(missing),
        )
