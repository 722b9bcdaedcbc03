"""Scheduling of the participant level's jobs: in-process, on joblib workers or a Dask cluster.

Part of the app layer, over :mod:`bidsapp.app.parallel`: one job is one run with its atlases;
a worker that dies fails its runs (their sets removed), and the memory the jobs need is announced.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from bidsapp.app.atlases import AtlasTarget
from bidsapp.app.config import RunConfig
from bidsapp.app.planning import set_paths
from bidsapp.app.process import process_run, remove_stopped_outputs
from bidsapp.app.progress import progress
from bidsapp.app.run_inputs import RunInputs
from bidsapp.app.status import RunStatus


def process_job(job: tuple[RunInputs, list[AtlasTarget]], config: RunConfig) -> list[RunStatus]:
    """Process one ``(inputs, targets)`` job (module level, so that it pickles)."""
    inputs, targets = job
    return process_run(inputs, targets, config)


def worker_died(
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
        paths = set_paths(config, inputs.entities, target.atlas.label)
        if paths is not None:
            fileio.remove_stale_temp_files(paths.directory)
        remove_stopped_outputs(status, paths)
        statuses.append(status)
    return statuses


def parallel_results(
    jobs: Sequence[tuple[RunInputs, list[AtlasTarget]]], config: RunConfig
) -> Iterator[list[RunStatus]]:
    """Run the jobs, yielding each one's statuses as it finishes."""
    from functools import partial

    from bidsapp.app.parallel import run_jobs

    yield from run_jobs(
        partial(process_job, config=config),
        jobs,
        n_jobs=config.n_jobs,
        dask_scheduler=config.dask_scheduler,
        temp_folder=None if config.work_dir is None else str(config.work_dir / "joblib"),
        on_worker_death=partial(worker_died, config=config),
    )


def print_memory_bound(jobs: Sequence[tuple[RunInputs, list[AtlasTarget]]], config) -> None:
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
    progress.info(
        memory_message(n_jobs, bound) + (" (per Dask worker)" if config.dask_scheduler else "")
    )
