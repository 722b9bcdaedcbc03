"""Find preprocessed BOLD runs (and their mask, confounds and TR) in fMRIPrep outputs.

Part of the dataset layer. The input dataset is indexed once (:mod:`bidsapp.dataset.layout`);
every file a run needs is then matched in Python by the entities of its file name, however
many runs it holds, and each run's BOLD sidecar is read following BIDS inheritance
(:mod:`bidsapp.dataset.bold_sidecars`).

Files the query cannot tell apart (a ``.nii`` and a ``.nii.gz`` of one run, two brain
masks or two confounds tables for one run, a file whose name has an entity bidsapp does
not know) are never picked between: the run gets a :attr:`BoldRun.problem` that names
every candidate, and fails alone.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bidsapp.dataset.bold_sidecars import read_bold_sidecar
from bidsapp.dataset.filters import (
    IMAGE_EXTENSIONS,
    load_bids_filters,
    matches,
    merge_fixed_filters,
    normalize_labels,
)
from bidsapp.dataset.input_files import QueryError, regular_file_problem
from bidsapp.dataset.layout import (
    IndexedDataset,
    listed_preproc_bold,
    names_of,
    open_layout,
    preproc_bold,
    summarize_preproc_bold,
)
from bidsapp.dataset.naming import (
    BOLD_ENTITIES,
    BOLD_KEYS,
    GRID_ENTITIES,
    LABEL_RE,
    RUN_NAME_ENTITIES,
    ParsedName,
)

logger = logging.getLogger(__name__)


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
        Every entity of its file name that can distinguish two inputs, pybids long names, only
        those present; the keys are among :data:`~bidsapp.dataset.naming.BOLD_ENTITIES`
        (``subject``, ``session``, ``task``, ``acquisition``, ``ceagent``, ``reconstruction``,
        ``direction``, ``run``, ``echo``, ``part``, ``chunk``, ``space``, ``cohort``, ``res``,
        ``den``). Values are the labels as written (``run-01`` gives ``"01"``).
    brain_mask : pathlib.Path or None
        The ``desc-brain_mask`` with all the same entities (same run, same grid).
    confounds : pathlib.Path or None
        ``desc-confounds_timeseries.tsv`` (or fMRIPrep 1.x
        ``desc-confounds_regressors.tsv``) with the same entities but the grid ones.
    t_r : float or None
        ``RepetitionTime`` (s) from the BOLD sidecar (BIDS inheritance applied); None when
        no sidecar has one, or when it is unusable (then ``problem`` says why).
    aroma_bold : pathlib.Path or None
        The run's ICA-AROMA ``desc-smoothAROMAnonaggr_bold`` image, if exactly one.
    sidecar : pathlib.Path or None
        The JSON sidecar ``RepetitionTime`` comes from (else the most specific sidecar
        that applies to the BOLD), if any.
    problem : str or None
        Why this run cannot be processed (e.g. two candidate files for it, or an unusable
        sidecar), one line naming the file(s); None when it can. Such a run fails alone.
    aroma_problem : str or None
        Why the ICA-AROMA image cannot be chosen (several candidates); it matters only to
        the ICA-AROMA strategies.
    """

    preproc_bold: Path
    entities: dict[str, str] = field(hash=False)
    brain_mask: Path | None = None
    confounds: Path | None = None
    t_r: float | None = None
    aroma_bold: Path | None = None
    sidecar: Path | None = None
    problem: str | None = None
    aroma_problem: str | None = None

    @property
    def name(self) -> str:
        """Entities naming the run whatever its grid, e.g. ``sub-01_ses-1_task-rest_run-1``."""
        return "_".join(
            f"{BOLD_KEYS[key]}-{self.entities[key]}"
            for key in RUN_NAME_ENTITIES
            if key in self.entities
        )


# ---------------------------------------------------------------------- query


def _describe_filters(bids_filters: Mapping | str | Path | None) -> str | None:
    """Render the user's BIDS filters for a message (path, or the 'bold' query)."""
    if bids_filters is None:
        return None
    if isinstance(bids_filters, (str, Path)):
        return str(bids_filters)
    return json.dumps({"bold": bids_filters.get("bold", {})}, default=str)


def _no_runs_message(
    root: Path,
    space: str,
    criteria: dict,
    available: dict,
    all_subjects: list[str],
    spaces_by_subject: Mapping[str, set[str]],
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
    lines.append(f"Spaces with preprocessed BOLD: {', '.join(available['space']) or 'none'}.")
    in_space = sorted(s for s, spaces in spaces_by_subject.items() if space in spaces)
    elsewhere = sorted(s for s in spaces_by_subject if s not in in_space)
    lines.append(
        f"Subjects with preprocessed BOLD in space {space}: {', '.join(in_space) or 'none'}."
    )
    if elsewhere:
        lines.append(
            "Subjects with preprocessed BOLD only in other spaces: "
            + "; ".join(f"{s} ({', '.join(sorted(spaces_by_subject[s]))})" for s in elsewhere)
            + "."
        )
    lines.append(f"Tasks with preprocessed BOLD: {', '.join(available['task']) or 'none'}.")
    if available["session"]:
        lines.append(f"Sessions with preprocessed BOLD: {', '.join(available['session'])}.")
    requested = criteria.get("participant_labels") or []
    no_bold = [s for s in requested if s in all_subjects and s not in spaces_by_subject]
    other_space = [s for s in requested if s in spaces_by_subject and s not in in_space]
    absent = [s for s in requested if s not in all_subjects and s not in spaces_by_subject]
    if no_bold:
        lines.append(
            f"Participant(s) {', '.join(no_bold)} have outputs but no preprocessed BOLD "
            "(anatomical-only, or functional preprocessing failed or was skipped)."
        )
    if other_space:
        lines.append(
            f"Participant(s) {', '.join(other_space)} have preprocessed BOLD only in other "
            "spaces; choose one with the space option (--space)."
        )
    if absent:
        lines.append(f"Participant(s) {', '.join(absent)} are not in the dataset.")
    return "\n".join(lines)


def _sorted_labels(labels: str | Iterable[str] | None, prefix: str, what: str) -> list[str] | None:
    """Return the checked labels, sorted (how the query compares and reports them)."""
    found = normalize_labels(labels, prefix, what)
    return None if found is None else sorted(found)


def find_runs(
    bids_dir: str | Path,
    *,
    space: str = "MNI152NLin2009cAsym",
    participant_labels: str | Iterable[str] | None = None,
    session_labels: str | Iterable[str] | None = None,
    tasks: str | Iterable[str] | None = None,
    bids_filters: Mapping | str | Path | None = None,
    database_dir: str | Path | None = None,
    bids_database_dir: str | Path | None = None,
) -> list[BoldRun]:
    """Find the preprocessed BOLD runs of an fMRIPrep derivatives folder.

    A run that was found but cannot be processed (ambiguous or unreadable files, an
    unusable sidecar or RepetitionTime) is returned with :attr:`BoldRun.problem` set, so
    that it fails alone; only arguments and the dataset root raise.

    Parameters
    ----------
    bids_dir : str or pathlib.Path
        fMRIPrep's output folder; it is only read.
    space : str, optional
        Template (or ``T1w``) space of the runs.
    participant_labels : str or iterable of str or None, optional
        Subjects to keep, with or without ``sub-``; None keeps all (and subjects whose
        preprocessed BOLD is only in other spaces are named in a warning).
    session_labels : str or iterable of str or None, optional
        Sessions to keep, with or without ``ses-``; None keeps all.
    tasks : str or iterable of str or None, optional
        Tasks to keep, with or without ``task-``; None keeps all.
    bids_filters : mapping or str or pathlib.Path or None, optional
        fMRIPrep ``--bids-filter-file`` document or path; its ``"bold"`` query
        narrows the runs (see :func:`~bidsapp.dataset.filters.load_bids_filters`).
    database_dir : str or pathlib.Path or None, optional
        Folder for pybids's index of every participant, reused by later calls (see
        :func:`~bidsapp.dataset.layout.make_layout`); with ``participant_labels``, only
        those participants are indexed, in memory.
    bids_database_dir : str or pathlib.Path or None, optional
        Folder of one pybids index of the whole dataset shared by many jobs
        (fMRIPrep's ``--bids-database-dir``), built by the first job that finds none;
        each job checks it against its participants' files (see
        :func:`~bidsapp.dataset.layout.open_layout`).

    Returns
    -------
    list of BoldRun
        Sorted by run name, then grid entities and path.

    Raises
    ------
    QueryError
        On an invalid label or filter, or a missing or unusable dataset folder.
    NoRunsFoundError
        If no run matches; the message says what was searched and what exists.
    """
    participants = _sorted_labels(participant_labels, "sub", "participant label")
    sessions = _sorted_labels(session_labels, "ses", "session label")
    task_labels = _sorted_labels(tasks, "task", "task label")
    if not LABEL_RE.fullmatch(str(space)):
        raise QueryError(
            f"Invalid space {space!r}: letters and digits only, e.g. MNI152NLin2009cAsym."
        )
    filters = merge_fixed_filters(load_bids_filters(bids_filters), space)
    extensions = filters.pop("extension", IMAGE_EXTENSIONS)
    labels = {
        key: values
        for key, values in (
            ("subject", participants),
            ("session", sessions),
            ("task", task_labels),
        )
        if values is not None
    }

    dataset = open_layout(
        bids_dir, database_dir, subjects=participants, bids_database_dir=bids_database_dir
    )
    root = dataset.root
    every_bold = preproc_bold(dataset)
    spaces = _spaces_by_subject(every_bold)
    selected = [
        name
        for name in every_bold
        if name.entities.get("space") == space
        and name.extension in extensions
        and matches(name.entities, filters)
        and matches(name.entities, labels)  # labels and filters must both pass
    ]
    if not selected:
        criteria = {
            "participant_labels": participants,
            "session_labels": sessions,
            "tasks": task_labels,
            "bids_filters": _describe_filters(bids_filters),
        }
        # With participant labels only they were indexed: say what the whole dataset holds.
        everything = every_bold if dataset.subjects is None else listed_preproc_bold(root)
        available = summarize_preproc_bold(everything)
        all_spaces = _spaces_by_subject(everything)
        raise NoRunsFoundError(
            _no_runs_message(root, space, criteria, available, dataset.subject_folders, all_spaces)
        )

    runs = _assemble_runs(dataset, selected)
    _warn_missing_participants(participants, runs, spaces, space)
    return runs


def _spaces_by_subject(names: Iterable[ParsedName]) -> dict[str, set[str]]:
    """Map each subject with preprocessed BOLD to the spaces it has."""
    spaces: dict[str, set[str]] = {}
    for name in names:
        entities = name.entities
        if "subject" in entities:
            spaces.setdefault(entities["subject"], set()).add(entities.get("space", "(none)"))
    return spaces


def _group(names: Iterable[ParsedName], drop: Sequence[str] = ()) -> dict[tuple, list[ParsedName]]:
    """Group parsed names by their identity (see :meth:`ParsedName.key`)."""
    groups: dict[tuple, list[ParsedName]] = {}
    for name in names:
        groups.setdefault(name.key(drop), []).append(name)
    return groups


def _name_problems(name: ParsedName, root: Path) -> list[str]:
    """Say what makes a file name unusable: malformed parts, unknown entities, wrong folder."""
    problems = [name.error] if name.error else []
    if name.unknown:
        problems.append(
            f"{name.path}: entity {', '.join(name.unknown)} is not one bidsapp can carry into "
            f"output names (it knows {', '.join(BOLD_KEYS[k] for k in BOLD_ENTITIES)}); "
            "rename or remove the file"
        )
    entities = name.entities
    try:
        folders = name.path.parent.relative_to(root).parts
    except ValueError:
        folders = ()
    for prefix, key in (("sub-", "subject"), ("ses-", "session")):
        for folder in folders:
            if folder.startswith(prefix) and folder != f"{prefix}{entities.get(key)}":
                problems.append(f"{name.path}: its name does not match its folder {folder}")
    return problems


def _pick(
    candidates: list[ParsedName], what: str, root: Path, problems: list[str], hint: str = ""
) -> Path | None:
    """Return the one candidate file, or record why none can be used in ``problems``."""
    if not candidates:
        return None
    paths = sorted(str(c.path) for c in candidates)
    if len(candidates) > 1:
        problems.append(
            f"{len(candidates)} {what} files match one run and bidsapp will not choose "
            f"between them: {', '.join(paths)}; remove or rename all but one{hint}"
        )
        return None
    (candidate,) = candidates
    problems.extend(_name_problems(candidate, root))
    found = regular_file_problem(candidate.path, what)
    if found:
        problems.append(found)
    return candidate.path


def _assemble_runs(dataset: IndexedDataset, bold_files: list[ParsedName]) -> list[BoldRun]:
    """Match masks, confounds, AROMA images and sidecars to each BOLD file."""
    root = dataset.root
    masks = _group(
        n
        for n in names_of(dataset, "mask", IMAGE_EXTENSIONS)
        if n.suffix == "mask" and n.entities.get("desc") == "brain"
    )
    confounds = _group(
        (
            n
            for n in names_of(dataset, ["timeseries", "regressors"], ".tsv")
            if n.extension == ".tsv" and n.entities.get("desc") == "confounds"
        ),
        GRID_ENTITIES,
    )
    aroma = _group(
        (
            n
            for n in names_of(dataset, "bold", IMAGE_EXTENSIONS)
            if n.suffix == "bold" and n.entities.get("desc") == "smoothAROMAnonaggr"
        ),
        GRID_ENTITIES,
    )
    listings: dict[Path, list[str]] = {}
    runs = []
    for key, candidates in _group(bold_files).items():
        candidates.sort(key=lambda n: (n.extension != ".nii.gz", str(n.path)))
        chosen = candidates[0]  # the path shown for the run; a problem if not alone
        if "subject" not in chosen.entities:
            logger.warning(
                "Ignoring %s: a preprocessed BOLD needs a sub- entity in its file name.",
                ", ".join(str(c.path) for c in candidates),
            )
            continue
        problems: list[str] = []
        _pick(
            candidates,
            "preprocessed BOLD",
            root,
            problems,
            ' (or narrow the query with a BIDS filter such as {"bold": {"extension": ".nii.gz"}})',
        )
        run_key = chosen.key(GRID_ENTITIES)
        mask = _pick(masks.get(key, []), "brain mask", root, problems)
        confounds_file = _pick(confounds.get(run_key, []), "confounds", root, problems)
        if confounds_file is not None:
            # Its JSON (CompCor metadata) is optional, but a FIFO or folder there is no JSON.
            metadata = confounds_file.with_name(confounds_file.name[: -len(".tsv")] + ".json")
            if os.path.lexists(metadata):
                found = regular_file_problem(metadata, "confounds JSON")
                if found:
                    problems.append(found)
        aroma_problems: list[str] = []
        aroma_bold = _pick(aroma.get(run_key, []), "ICA-AROMA BOLD", root, aroma_problems)
        t_r, sidecar, sidecar_problem = read_bold_sidecar(chosen, root, listings)
        if sidecar_problem:
            problems.append(sidecar_problem)
        runs.append(
            BoldRun(
                preproc_bold=chosen.path,
                entities={k: chosen.entities[k] for k in BOLD_ENTITIES if k in chosen.entities},
                brain_mask=mask,
                confounds=confounds_file,
                t_r=t_r,
                aroma_bold=None if aroma_problems else aroma_bold,
                sidecar=sidecar,
                problem="; ".join(dict.fromkeys(problems)) or None,
                aroma_problem="; ".join(aroma_problems) or None,
            )
        )
    runs.sort(key=_sort_key)
    _log_several_grids(runs)
    return runs


def _natural(value: str | None) -> tuple:
    """Order absent entities first, then numbers numerically, then text."""
    if value is None:
        return (0, 0, "")
    return (1, int(value), value) if value.isdigit() else (2, 0, value)


def _sort_key(run: BoldRun) -> tuple:
    """Sort runs by entity (BIDS order, run-2 before run-10), then grid and path."""
    entities = tuple(_natural(run.entities.get(key)) for key in BOLD_ENTITIES)
    return entities + (str(run.preproc_bold),)


def _log_several_grids(runs: list[BoldRun]) -> None:
    """Say when one run exists on several grids (e.g. res-1 and res-2): each is processed."""
    seen: dict[str, list[BoldRun]] = {}
    for run in runs:
        seen.setdefault(run.name, []).append(run)
    for name, group in seen.items():
        if len(group) > 1:
            grids = ", ".join(
                "_".join(
                    f"{BOLD_KEYS[k]}-{r.entities[k]}" for k in GRID_ENTITIES if k in r.entities
                )
                for r in group
            )
            logger.info(
                "Run %s exists on several grids (%s); each is processed (narrow it with a BIDS "
                'filter such as {"bold": {"res": "2"}}).',
                name,
                grids,
            )


def _warn_missing_participants(
    participants: list[str] | None,
    runs: list[BoldRun],
    spaces: Mapping[str, set[str]],
    space: str,
) -> None:
    """Warn about requested participants without runs, or subjects left out by the space.

    When all participants run, subjects whose preprocessed BOLD is only in other spaces
    are named with their spaces.
    """
    found = {run.entities.get("subject") for run in runs}
    if participants is None:
        elsewhere = sorted(s for s, has in spaces.items() if space not in has)
        if elsewhere:
            logger.warning(
                "Subject(s) with preprocessed BOLD only in other spaces are not processed: "
                "%s; to process them, choose their space with --space.",
                "; ".join(f"{s} ({', '.join(sorted(spaces[s]))})" for s in elsewhere),
            )
        return
    missing = [label for label in participants if label not in found]
    if missing:
        logger.warning(
            "No preprocessed BOLD runs for participant(s) %s; continuing with the others.",
            ", ".join(
                s + (f" (only in {', '.join(sorted(spaces[s]))})" if s in spaces else "")
                for s in missing
            ),
        )
