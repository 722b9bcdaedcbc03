"""Run independent jobs (one per BOLD run) in parallel: joblib locally, or on a Dask cluster.

The primary scale-out path for clusters is a SLURM array of participant-level jobs, each
running the container on a few participants (outputs merge without locking problems). This
module is for one machine (``--n-jobs``) and for an existing Dask cluster
(``--dask-scheduler ADDRESS``, the optional ``dask`` extra), through joblib's Dask backend.

Each job holds at most :func:`bidsapp.engine.memory_bound` bytes, so ``n_jobs`` jobs need
``n_jobs`` times that: :func:`memory_message` says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

Job = TypeVar("Job")
Result = TypeVar("Result")

DASK_EXTRA_HINT = (
    "--dask-scheduler needs dask.distributed: install bidsapp with the 'dask' extra "
    "(pip install 'bidsapp[dask]'), in the same environment as the cluster's workers."
)


class DaskUnavailableError(ImportError):
    """``dask.distributed`` is not installed but a Dask scheduler was given."""


def run_jobs(
    function: Callable[[Job], Result],
    jobs: Iterable[Job],
    n_jobs: int = 1,
    dask_scheduler: str | Any | None = None,
    temp_folder: str | None = None,
) -> Iterator[Result]:
    """Yield ``function(job)`` for every job, as the jobs complete.

    Parameters
    ----------
    function : callable
        Called once per job; must be picklable (a module-level function, or a
        :func:`functools.partial` of one) unless ``n_jobs`` is 1.
    jobs : iterable
        The jobs' arguments (picklable).
    n_jobs : int, default=1
        Parallel jobs on this machine (joblib's loky processes); 1 runs them one after
        the other in this process, -1 uses all CPUs. Ignored with ``dask_scheduler``.
    dask_scheduler : str or distributed.Client, optional
        Address of a running Dask scheduler (e.g. ``tcp://10.0.0.5:8786``) or a connected
        ``distributed.Client``: the jobs then run on that cluster's workers through joblib's
        Dask backend (all workers are used).
    temp_folder : str, optional
        Folder for joblib's memory-mapped arguments (e.g. in ``--work-dir``); joblib's
        default when None.

    Yields
    ------
    object
        Each job's result, in completion order (in job order when ``n_jobs`` is 1).

    Raises
    ------
    DaskUnavailableError
        If ``dask_scheduler`` is given and ``dask.distributed`` is not installed.
    Exception
        Whatever ``function`` raises, re-raised when its result is reached.
    """
    if dask_scheduler is not None:
        yield from _on_dask(function, jobs, dask_scheduler)
        return
    if n_jobs == 1:
        for job in jobs:
            yield function(job)
        return
    from joblib import Parallel, delayed

    tasks = (delayed(function)(job) for job in jobs)
    options = {} if temp_folder is None else {"temp_folder": str(temp_folder)}
    yield from Parallel(n_jobs=n_jobs, return_as="generator_unordered", **options)(tasks)


def _on_dask(function, jobs, scheduler) -> Iterator:
    """Run the jobs through joblib's Dask backend on the cluster behind ``scheduler``."""
    try:
        from distributed import Client
    except ImportError as err:
        raise DaskUnavailableError(DASK_EXTRA_HINT) from err
    from joblib import Parallel, delayed, parallel_config

    own_client = not isinstance(scheduler, Client)
    client = Client(scheduler) if own_client else scheduler
    try:
        n_workers = len(client.scheduler_info().get("workers", {}))
        logger.info("Running jobs on the Dask cluster at %s (%d workers)", client, n_workers)
        tasks = (delayed(function)(job) for job in jobs)
        with parallel_config(backend="dask"):
            yield from Parallel(n_jobs=-1, return_as="generator_unordered")(tasks)
    finally:
        if own_client:
            client.close()


def memory_message(n_jobs: int, per_job_bytes: int, *, n_cpus: int | None = None) -> str:
    """Tell how much memory ``n_jobs`` parallel jobs need.

    Parameters
    ----------
    n_jobs : int
        Parallel jobs (-1: one per CPU).
    per_job_bytes : int
        Peak memory of one job (:func:`bidsapp.engine.memory_bound`).
    n_cpus : int, optional
        CPUs, to resolve ``n_jobs=-1``; by default this machine's.

    Returns
    -------
    str
        One line, e.g. ``"memory: 2 jobs x 0.27 GB per job = 0.54 GB to provision"``.
    """
    if n_jobs < 0:
        import os

        n_jobs = max(1, (n_cpus or os.cpu_count() or 1) + 1 + n_jobs)
    total = n_jobs * per_job_bytes
    return (
        f"memory: {n_jobs} job(s) x {per_job_bytes / 1e9:.2f} GB per job = "
        f"{total / 1e9:.2f} GB to provision"
    )
