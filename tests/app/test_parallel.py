"""Tests of bidsapp.app.parallel: sequential, joblib processes, and a local Dask cluster."""

from __future__ import annotations

import os
import sys
from functools import partial

import numpy as np
import pytest

from bidsapp.app import parallel
from bidsapp.app.parallel import memory_message, run_jobs


def _square_with_pid(x: int, offset: int = 0) -> tuple[int, int, int]:
    return x, x * x + offset, os.getpid()


def _extract_in_worker(job: tuple[str, str]) -> tuple[str, float]:
    # Runs the real engine in the worker: a run's file in, region signals out.
    import nibabel as nib

    from bidsapp.engine import stream_region_signals
    from bidsapp.regions import RegionReducer

    bold, labels = job
    reducer = RegionReducer(np.asarray(nib.load(labels).dataobj))
    return bold, float(stream_region_signals(bold, [reducer]).signals[0].sum())


def _fail(x: int) -> int:
    raise RuntimeError(f"job {x} failed")


def test_sequential_runs_in_this_process_in_order():
    results = list(run_jobs(_square_with_pid, range(5)))
    assert [r[:2] for r in results] == [(x, x * x) for x in range(5)]
    assert {r[2] for r in results} == {os.getpid()}


def test_sequential_is_lazy():
    seen = []

    def record(x):
        seen.append(x)
        return x

    results = run_jobs(record, range(3))
    assert seen == []
    assert next(results) == 0
    assert seen == [0]


def test_joblib_processes_return_every_result():
    results = list(run_jobs(partial(_square_with_pid, offset=1), range(6), n_jobs=2))
    assert sorted(r[:2] for r in results) == [(x, x * x + 1) for x in range(6)]
    assert os.getpid() not in {r[2] for r in results}


def test_joblib_temp_folder(tmp_path):
    results = list(run_jobs(_square_with_pid, range(3), n_jobs=2, temp_folder=str(tmp_path)))
    assert sorted(r[1] for r in results) == [0, 1, 4]


def test_job_errors_propagate():
    with pytest.raises(RuntimeError, match="job 0 failed"):
        list(run_jobs(_fail, [0]))
    with pytest.raises(RuntimeError, match="failed"):
        list(run_jobs(_fail, [1, 2], n_jobs=2))


def test_missing_dask_gives_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(parallel.DaskUnavailableError, match=r"bidsapp\[dask\]"):
        list(run_jobs(_square_with_pid, [1], dask_scheduler="tcp://127.0.0.1:1"))


def test_memory_message():
    assert memory_message(2, 270_000_000) == (
        "memory: 2 job(s) x 0.27 GB per job = 0.54 GB to provision"
    )
    assert memory_message(-1, 10**9, n_cpus=4).startswith("memory: 4 job(s)")


@pytest.fixture(scope="module")
def dask_cluster():
    distributed = pytest.importorskip(
        "distributed",
        reason="dask.distributed is not installed (the optional 'dask' extra): "
        "pip install 'dask[distributed]>=2024.1' to run the Dask tests",
    )
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        host="127.0.0.1",
    )
    try:
        yield cluster
    finally:
        cluster.close()


def test_dask_cluster_by_address(dask_cluster):
    results = list(
        run_jobs(_square_with_pid, range(6), dask_scheduler=dask_cluster.scheduler_address)
    )
    assert sorted(r[:2] for r in results) == [(x, x * x) for x in range(6)]
    worker_pids = {w.pid for w in dask_cluster.workers.values()}
    assert {r[2] for r in results} <= worker_pids


def test_dask_cluster_runs_the_engine(dask_cluster, tmp_path):
    import nibabel as nib

    rng = np.random.default_rng(0)
    labels = tmp_path / "labels.nii.gz"
    nib.save(nib.Nifti1Image(rng.integers(0, 4, (6, 7, 5)).astype(np.int16), np.eye(4)), labels)
    jobs = []
    for run in range(3):
        bold = tmp_path / f"bold{run}.nii.gz"
        nib.save(nib.Nifti1Image(rng.normal(size=(6, 7, 5, 8)).astype(np.float32), np.eye(4)), bold)
        jobs.append((str(bold), str(labels)))
    expected = dict(map(_extract_in_worker, jobs))
    from distributed import Client

    with Client(dask_cluster) as client:
        got = dict(run_jobs(_extract_in_worker, jobs, dask_scheduler=client))
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12)
