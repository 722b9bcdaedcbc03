"""Process-level failures end to end: dead workers, SIGINT/SIGTERM, a closed stdout, a full disk.

Each test builds the ``small`` dataset (one subject, two runs) and runs the participant level,
mostly in a subprocess, then checks that one run's trouble stays that run's: the other run is
written and recorded, the message is one line without a traceback, and no temporary file or
worker process is left behind.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.cli_runs import MAIN_CODE, argv, paused_in_first_write, run_cli, set_of, spawn

from bidsapp.app import parallel
from bidsapp.app.status import EXIT_INTERRUPTED
from bidsapp.dataset import fileio, status_tables

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

# A module the loky workers import (they start fresh, so a patch in the parent would not
# reach them): its ``process_job`` stands in for ``scheduling.process_job``.
_WORKER_MODULE = """
import os, sys, time
from bidsapp.app import process

def process_job(job, config):
    inputs, targets = job
    {body}
    return process.process_run(inputs, targets, config)
"""

_PATCHED_MAIN = """
import sys
import redworker
from bidsapp import cli
from bidsapp.app import scheduling
scheduling.process_job = redworker.process_job
sys.exit(cli.main(sys.argv[1:]))
"""


def _start_patched(tmp_path: Path, body: str, *args) -> subprocess.Popen:
    """Start the CLI with ``scheduling.process_job`` running ``body`` first, in every worker."""
    (tmp_path / "redworker.py").write_text(_WORKER_MODULE.format(body=body))
    path = os.pathsep.join([str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "TEMPLATEFLOW_AUTOUPDATE": "0", "PYTHONPATH": path}
    return subprocess.Popen(
        [sys.executable, "-c", _PATCHED_MAIN, *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def _statuses(out: Path) -> dict[str, tuple[str, str]]:
    table = status_tables.read_subject_status(out, "01")
    return {str(r["run"]): (r["status"], r["reason"]) for _, r in table.iterrows()}


# ----------------------------------------------------------------------------- 1. dead worker


@pytest.mark.slow
def test_a_worker_killed_by_the_oom_killer_fails_only_its_run(tmp_path, small):
    out = tmp_path / "out"
    kill_run_2 = 'if "run-2" in inputs.name: os.kill(os.getpid(), 9)'
    job = _start_patched(tmp_path, kill_run_2, *argv(small, out, "--n-jobs", "2"))
    stdout, stderr = job.communicate(timeout=600)
    assert job.returncode == 1, stdout + stderr
    assert "Traceback" not in stdout + stderr
    (failed,) = [ln for ln in stdout.splitlines() if ln.startswith("FAILED")]
    assert "run-2" in failed and "_desc-preproc_bold.nii.gz" in failed
    assert "worker process died (signal 9: killed, often out of memory)" in failed
    statuses = _statuses(out)
    assert statuses["1"][0] == "ok" and set_of(out, run=1).timeseries.is_file()
    assert statuses["2"][0] == "failed" and "signal 9" in statuses["2"][1]
    assert not set_of(out, run=2).timeseries.exists()
    assert [p for p in out.rglob("*.tmp")] == []


def _exit_abruptly(x: int, how: str) -> int:
    if x == 2:
        if how == "exit":
            os._exit(3)
        import faulthandler

        faulthandler._sigsegv()
    return x * 10


@pytest.mark.slow
@pytest.mark.parametrize(
    ("how", "reason"),
    [("exit", "exit code 3"), ("segfault", f"signal {int(signal.SIGSEGV)}: segmentation fault")],
)
def test_run_jobs_pins_a_worker_death_on_its_job(how, reason):
    from functools import partial

    died = []
    results = parallel.run_jobs(
        partial(_exit_abruptly, how=how),
        range(5),
        n_jobs=2,
        on_worker_death=lambda job, why: died.append((job, why)) or "died",
    )
    assert sorted(r for r in results if r != "died") == [0, 10, 30, 40]
    assert died == [(2, f"its worker process died ({reason})")]

    # Without a handler the death is an error naming the job.
    with pytest.raises(parallel.WorkerDiedError) as info:
        list(parallel.run_jobs(partial(_exit_abruptly, how=how), [2], n_jobs=2))
    assert info.value.job == 2 and reason in info.value.reason


# ----------------------------------------------------------------------------- 2. signals


def test_sigint_mid_write_leaves_no_temporary_file_and_exits_130(capsys, tmp_path, small):
    out = tmp_path / "out"
    job, _ = paused_in_first_write(small, out, subprocess.PIPE)
    job.send_signal(signal.SIGINT)
    stdout, stderr = job.communicate(timeout=120)
    assert job.returncode == EXIT_INTERRUPTED == 130, stdout + stderr
    assert "Traceback" not in stdout + stderr and "KeyboardInterrupt" not in stderr
    (line,) = stderr.strip().splitlines()
    assert line.startswith("bidsapp: stopped by SIGINT")
    assert [p for p in out.rglob("*.tmp")] == []
    code, stdout = run_cli(capsys, *argv(small, out))
    assert code == 0 and "2 written, 0 already done" in stdout


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")  # a zombie runs nothing


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_with_two_jobs_stops_cleanly_and_leaves_no_worker(tmp_path, small, signum, code):
    out = tmp_path / "out"
    # One write per line: the two workers share the pipe, and a write this small is atomic.
    announce = 'sys.stdout.write(f"WORKER {os.getpid()}\\n"); sys.stdout.flush(); time.sleep(300)'
    job = _start_patched(tmp_path, announce, *argv(small, out, "--n-jobs", "2"))
    assert job.stdout is not None
    workers = []
    for line in job.stdout:
        if line.startswith("WORKER"):
            workers.append(int(line.split()[1]))
            if len(workers) == 2:
                break
    job.send_signal(signum)
    stdout, stderr = job.communicate(timeout=120)
    assert job.returncode == code, stdout + stderr
    assert "Traceback" not in stdout + stderr
    assert f"stopped by {signal.Signals(signum).name}" in stderr
    # Poll (not a timing assertion): a killed process disappears once reaped.
    deadline = time.monotonic() + 60
    while not all(_gone(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [pid for pid in workers if not _gone(pid)] == []
    assert [p for p in out.rglob("*.tmp")] == []


# ----------------------------------------------------------------------------- 3. stdout closed


@pytest.mark.slow
@pytest.mark.parametrize("n_jobs", ["1", "2"])
def test_a_closed_stdout_does_not_stop_or_lose_the_runs(tmp_path, small, n_jobs):
    out = tmp_path / "out"
    job = subprocess.Popen(
        [sys.executable, "-c", MAIN_CODE, *map(str, argv(small, out, "--n-jobs", n_jobs))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TEMPLATEFLOW_AUTOUPDATE": "0"},
    )  # fmt: skip
    assert job.stdout is not None and job.stderr is not None
    assert job.stdout.readline().startswith("bidsapp ")
    job.stdout.close()  # like `bidsapp ... | head -1`
    stderr = job.stderr.read()
    job.wait(timeout=600)
    assert job.returncode == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr
    assert {s for s, _ in _statuses(out).values()} == {"ok"}
    assert set_of(out, run=1).timeseries.is_file() and set_of(out, run=2).timeseries.is_file()


@pytest.mark.slow
def test_the_spawned_cli_still_prints_every_line(tmp_path, small):
    # The guard against a closed stdout must not swallow output while the reader is there.
    job = spawn(*argv(small, tmp_path / "out"))
    stdout = job.communicate(timeout=600)[0]
    assert job.returncode == 0 and stdout.count("\nok ") == 2 and "2 written" in stdout


# ----------------------------------------------------------------------------- 4. full disk


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EIO])
def test_a_full_disk_fails_one_run_naming_the_file(capsys, tmp_path, small, monkeypatch, error):
    out = tmp_path / "out"
    real_temp_path, real_fsync = fileio._temp_path, os.fsync
    opened: list[str] = []

    def temp_path(path):
        opened.append(str(path))
        return real_temp_path(path)

    def fsync(fd):  # a full disk or a failing device shows at fsync on many file systems
        if opened and "run-2" in opened[-1] and opened[-1].endswith("_relmat.tsv"):
            raise OSError(error, os.strerror(error))
        return real_fsync(fd)

    monkeypatch.setattr(fileio, "_temp_path", temp_path)
    monkeypatch.setattr(os, "fsync", fsync)
    code, stdout = run_cli(capsys, *argv(small, out))
    assert code == 1, stdout
    (failed,) = [ln for ln in stdout.splitlines() if ln.startswith("FAILED")]
    relmat = set_of(out, run=2).relmat
    assert f"cannot write {relmat.name}: {os.strerror(error)}" in failed, failed
    assert "Traceback" not in stdout
    assert [p for p in out.rglob("*.tmp")] == []
    assert not any(p.exists() for p in set_of(out, run=2).all())
    statuses = _statuses(out)
    assert statuses["1"][0] == "ok" and set_of(out, run=1).timeseries.is_file()
    assert statuses["2"] == ("failed", f"cannot write {relmat.name}: {os.strerror(error)}")


def test_atomic_write_names_the_file_of_an_unnamed_os_error(tmp_path, monkeypatch):
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)
    target = tmp_path / "x.tsv"
    with pytest.raises(OSError) as info:
        fileio.atomic_write_text(target, "a\n")
    assert info.value.filename == str(target) and "No space left on device" in str(info.value)
    assert list(tmp_path.iterdir()) == []
