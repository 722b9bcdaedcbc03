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
import os
import re
import signal
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from bidsapp.errors import BidsappError

logger = logging.getLogger(__name__)

Job = TypeVar("Job")
Result = TypeVar("Result")

DASK_EXTRA_HINT = (
    "--dask-scheduler needs dask.distributed: install bidsapp with the 'dask' extra "
    "(pip install 'bidsapp[dask]'), in the same environment as the cluster's workers."
)


class DaskUnavailableError(BidsappError, ImportError):
    """``dask.distributed`` is not installed but a Dask scheduler was given."""


class WorkerDiedError(BidsappError, RuntimeError):
    """A job's worker process died (a signal, ``os._exit``) and no ``on_worker_death`` was given.

    Attributes
    ----------
    job : object
        The job whose process died.
    reason : str
        What happened, e.g. ``"its worker process died (signal 9: killed, often out of
        memory)"``.
    """

    def __init__(self, job: Any, reason: str) -> None:
        super().__init__(reason)
        self.job = job
        self.reason = reason


def run_jobs(
    function: Callable[[Job], Result],
    jobs: Iterable[Job],
    n_jobs: int = 1,
    dask_scheduler: str | Any | None = None,
    temp_folder: str | None = None,
    on_worker_death: Callable[[Job, str], Result] | None = None,
) -> Iterator[Result]:
    """Yield ``function(job)`` for every job, as the jobs complete.

    With ``n_jobs`` > 1, a worker process that dies (killed by the out-of-memory killer, a
    segmentation fault in a compiled library) takes no other job with it: the jobs that
    had not finished are run again, each in a worker of its own, so the death is pinned on
    the one job that causes it and the others still finish.

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
    on_worker_death : callable, optional
        ``on_worker_death(job, reason)`` gives the result of a job whose process died,
        ``reason`` being one line such as ``"its worker process died (signal 9: killed,
        often out of memory)"``; without it, :class:`WorkerDiedError` is raised.

    Yields
    ------
    object
        Each job's result, in completion order (in job order when ``n_jobs`` is 1).

    Raises
    ------
    DaskUnavailableError
        If ``dask_scheduler`` is given and ``dask.distributed`` is not installed.
    WorkerDiedError
        If a job's worker process died and ``on_worker_death`` is None.
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
    yield from _on_processes(function, list(jobs), n_jobs, temp_folder, on_worker_death)


def _numbered(function: Callable, number: int, job: Any) -> tuple[int, Any]:
    """Run one job in a worker and say which it was (results come in completion order)."""
    return number, function(job)


def death_reason(error: BaseException) -> str:
    """Say in one line how a worker process died, from loky's ``TerminatedWorkerError``.

    Parameters
    ----------
    error : BaseException
        The error; loky's message lists the dead workers' exit codes, e.g. ``SIGKILL(-9)``.

    Returns
    -------
    str
        E.g. ``"its worker process died (signal 9: killed, often out of memory)"``.
    """
    codes = [int(c) for c in re.findall(r"\((-?\d+)\)", str(error))]
    if not codes:
        return "its worker process died"
    code = codes[0]
    if code >= 0:
        return f"its worker process died (exit code {code})"
    number = -code
    if number == signal.SIGKILL:
        what = "killed, often out of memory"
    elif number == signal.SIGSEGV:
        what = "segmentation fault"
    else:
        try:
            what = signal.strsignal(number) or signal.Signals(number).name
        except ValueError:
            what = "unknown signal"
    return f"its worker process died (signal {number}: {what})"


def _on_processes(
    function: Callable, jobs: list, n_jobs: int, temp_folder: str | None, on_worker_death
) -> Iterator:
    """Run the jobs on joblib's loky processes; after a worker's death, isolate the rest.

    A dead worker breaks loky's whole executor: every job still queued or running fails
    with ``TerminatedWorkerError`` and nothing says which job killed it. So the normal
    path is joblib's (one pool, memory-mapped arguments), and only after a death are the
    unfinished jobs run again, each in a single-worker executor, where a death names its
    job.
    """
    from joblib import Parallel, delayed
    from joblib.externals.loky.process_executor import TerminatedWorkerError

    done: set[int] = set()
    tasks = (delayed(_numbered)(function, i, job) for i, job in enumerate(jobs))
    options = {} if temp_folder is None else {"temp_folder": str(temp_folder)}
    try:
        for number, result in Parallel(n_jobs=n_jobs, return_as="generator_unordered", **options)(
            tasks
        ):
            done.add(number)
            yield result
        return
    except TerminatedWorkerError as err:
        logger.warning(
            "a job's worker process died (%s); running the %d unfinished job(s) again, "
            "one per worker",
            death_reason(err).partition("(")[2].rstrip(")") or "no exit code",
            len(jobs) - len(done),
        )
    rest = [job for i, job in enumerate(jobs) if i not in done]
    yield from _isolated(function, rest, n_jobs, on_worker_death)


def _isolated(function: Callable, jobs: list, n_jobs: int, on_worker_death) -> Iterator:
    """Run each job in a single-worker executor (``n_jobs`` at a time), so a death is its own."""
    from concurrent.futures import FIRST_COMPLETED, wait

    from joblib.externals.loky import ProcessPoolExecutor
    from joblib.externals.loky.process_executor import BrokenProcessPool

    n_jobs = _resolved_n_jobs(n_jobs)
    queue = list(reversed(jobs))
    idle: list = []
    running: dict = {}  # future -> (executor, job)
    try:
        while queue or running:
            while queue and len(running) < n_jobs:
                executor = idle.pop() if idle else ProcessPoolExecutor(max_workers=1)
                job = queue.pop()
                running[executor.submit(function, job)] = (executor, job)
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                executor, job = running.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool as err:
                    executor.shutdown(wait=False, kill_workers=True)
                    reason = death_reason(err)
                    if on_worker_death is None:
                        raise WorkerDiedError(job, reason) from err
                    yield on_worker_death(job, reason)
                    continue
                idle.append(executor)
                yield result
    finally:
        # Also on SIGTERM/SIGINT or an error: no worker may outlive the invocation.
        for executor in idle + [e for e, _ in running.values()]:
            executor.shutdown(wait=False, kill_workers=True)


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


def _resolved_n_jobs(n_jobs: int, n_cpus: int | None = None) -> int:
    """Resolve joblib's negative ``n_jobs`` (-1: one per CPU) to a count of jobs."""
    if n_jobs >= 0:
        return n_jobs
    return max(1, (n_cpus or os.cpu_count() or 1) + 1 + n_jobs)


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
    n_jobs = _resolved_n_jobs(n_jobs, n_cpus)
    total = n_jobs * per_job_bytes
    return (
        f"memory: {n_jobs} job(s) x {per_job_bytes / 1e9:.2f} GB per job = "
        f"{total / 1e9:.2f} GB to provision"
    )
