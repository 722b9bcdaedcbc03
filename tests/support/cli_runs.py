"""Running the CLI in-process or as a child process, and naming the outputs it writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bidsapp import cli
from bidsapp.dataset import run_outputs
from support.participant_outputs import SPACE

LABEL = "Schaefer2018100Parcels7Networks"


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def set_of(out: Path, subject="01", run=1, *, res="2", desc="simple") -> run_outputs.RunOutputPaths:
    entities = {"subject": subject, "task": "rest", "run": str(run), "space": SPACE, "res": res}
    return run_outputs.output_paths(out, entities, LABEL, "mean", desc)


def argv(bids: Path, out: Path, *extra) -> list:
    return [bids, out, "participant", "--atlas", ATLAS, "--no-reports", *extra]


MAIN_CODE = "import sys; from bidsapp import cli; sys.exit(cli.main(sys.argv[1:]))"


def spawn(*args) -> subprocess.Popen:
    env = {**os.environ, "TEMPLATEFLOW_AUTOUPDATE": "0"}
    return subprocess.Popen(
        [sys.executable, "-c", MAIN_CODE, *[str(a) for a in args]],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def paused_in_first_write(bids: Path, out: Path, stderr: int) -> tuple[subprocess.Popen, list]:
    """Start the participant level and return once its first write is paused, mid-write.

    Returns the job and the lines it printed up to then.
    """
    job = subprocess.Popen(
        [sys.executable, "-c", PAUSE_IN_FIRST_WRITE, *map(str, argv(bids, out))],
        stdout=subprocess.PIPE, stderr=stderr, text=True,
        env={**os.environ, "TEMPLATEFLOW_AUTOUPDATE": "0"},
    )  # fmt: skip
    assert job.stdout is not None
    seen = []
    for line in job.stdout:
        seen.append(line)
        if line.startswith("WRITING"):
            break
    assert [p for p in out.rglob("*.tmp")], "the paused write has its temporary file on disk"
    return job, seen


# The first fsync (inside an atomic write, with its temporary file on disk) announces itself and
# waits, so SIGTERM arrives at a known point: mid-write, like a scheduler's time limit.
PAUSE_IN_FIRST_WRITE = """
import os, sys, time
from bidsapp import cli
real_fsync = os.fsync
def fsync(fd):
    os.fsync = real_fsync
    print("WRITING", flush=True)
    time.sleep(120)
os.fsync = fsync
sys.exit(cli.main(sys.argv[1:]))
"""


ATLAS = "Schaefer2018:100Parcels7Networks"
