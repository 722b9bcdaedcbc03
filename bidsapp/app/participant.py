"""The participant level: find the runs, plan every output, lock subjects, run the jobs, sum up.

Part of the app layer; it ties the checks, atlases, planning, scheduling, subjects and progress
modules together. Every output name of the invocation is computed before anything is written.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from bidsapp import __version__
from bidsapp.app.atlases import grid_key, resolve_atlases
from bidsapp.app.checks import (
    UsageProblem,
    atlas_labels,
    check_atlas_labels,
    check_directories,
    check_options,
)
from bidsapp.app.citation import write_citation
from bidsapp.app.config import RunConfig
from bidsapp.app.planning import plan_outputs, set_paths
from bidsapp.app.progress import print_progress, progress, summarise
from bidsapp.app.run_inputs import RunInputs
from bidsapp.app.scheduling import parallel_results, print_memory_bound
from bidsapp.app.selection import find_selected_runs
from bidsapp.app.status import EXIT_RUN_FAILED, RunStatus, one_line
from bidsapp.app.subjects import clean_leftovers, finish_subject, open_subject


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
    from bidsapp.app.run_inputs import ExtractionError, RunExcluded, prepare_run
    from bidsapp.dataset import dataset_description, fileio, locking
    from bidsapp.dataset.input_files import QueryError
    from bidsapp.dataset.query import NoRunsFoundError

    check_directories(config)
    check_options(config)
    check_atlas_labels(config)
    started = time.perf_counter()
    try:
        runs = find_selected_runs(config)
    except NoRunsFoundError as err:
        progress.error(f"bidsapp: nothing to do: {err}")
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
        clean_leftovers(config)
    except OSError as err:
        raise UsageProblem(f"cannot write into OUTPUT_DIR {config.output_dir}: {err}") from err
    progress.info(
        f"bidsapp {__version__}: {len(runs)} run(s), {len(config.atlases)} atlas(es), "
        f"denoising {config.denoise.label}, stat {config.extraction.strategy}"
    )
    statuses: list[RunStatus] = []
    # subject -> (status, set) of stopped runs whose sets go once the subject's lock is held
    stale: dict[str, list[tuple[RunStatus, Any]]] = {}

    def stop(status: RunStatus, paths: Any) -> None:
        statuses.append(status)
        stale.setdefault(status.subject, []).append((status, paths))

    prepared: list[RunInputs] = []
    labels = atlas_labels(config)
    for run in runs:
        try:
            prepared.append(prepare_run(run, config.denoise))
        except ExtractionError as err:
            kind = "excluded" if isinstance(err, RunExcluded) else "failed"
            for label in labels:
                status = RunStatus(run.name, dict(run.entities), label, kind, one_line(err))
                stop(status, set_paths(config, dict(run.entities), label))
    targets, failures = resolve_atlases(prepared, config)
    write_citation(config, [t for found in targets.values() for t in found])

    jobs = []
    for inputs in prepared:
        key = grid_key(inputs)
        for label, reason in failures[key]:
            status = RunStatus(inputs.name, inputs.entities, label, "failed", reason)
            stop(status, set_paths(config, inputs.entities, label))
        if targets[key]:
            jobs.append((inputs, list(targets[key])))
    jobs, refused = plan_outputs(jobs, config)
    for status, paths in refused:
        stop(status, paths)
    for status in statuses:
        print_progress(status)

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
            open_subject(config, subject, stale.get(subject, []))
        unrecorded: list[str] = []  # subjects whose status table could not be written
        for subject in sorted(set(by_subject) - set(remaining)):
            if not finish_subject(config, subject, by_subject[subject]):
                unrecorded.append(subject)
            locks[subject].release()
        print_memory_bound(jobs, config)
        for batch in parallel_results(jobs, config):
            for status in batch:
                print_progress(status)
            statuses.extend(batch)
            if not batch:
                continue
            subject = batch[0].subject
            by_subject.setdefault(subject, []).extend(batch)
            remaining[subject] -= 1
            if remaining[subject] == 0:
                if not finish_subject(config, subject, by_subject[subject]):
                    unrecorded.append(subject)
                locks[subject].release()
    code = summarise(statuses, time.perf_counter() - started)
    if unrecorded:
        progress.info(f"status not recorded for: {', '.join(f'sub-{s}' for s in unrecorded)}")
        return EXIT_RUN_FAILED
    return code
