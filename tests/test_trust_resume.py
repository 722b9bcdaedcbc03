"""End-to-end trust checks of resume, output names, locks, links and leftovers.

Each test builds a tiny fMRIPrep dataset and runs the participant level through
``bidsapp.cli.main`` (or a subprocess when two invocations must overlap), then checks that
no stale, silently wrong or lost result remains: a rerun recomputes exactly what changed,
keeps the original outcome of what did not, and never writes through a planted link.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bidsapp import cli, extract, outputs, query, workflow

SPACE = "MNI152NLin2009cAsym"
ATLAS = "Schaefer2018:100Parcels7Networks"
LABEL = "Schaefer2018100Parcels7Networks"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


# ----------------------------------------------------------------------------- helpers


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def inputs_of(bids: Path, subject="01", run=1) -> dict[str, Path]:
    folder = bids / f"sub-{subject}" / "func"
    prefix = f"sub-{subject}_task-rest_run-{run}"
    return {
        "bold": folder / f"{prefix}_space-{SPACE}_res-2_desc-preproc_bold.nii.gz",
        "sidecar": folder / f"{prefix}_space-{SPACE}_res-2_desc-preproc_bold.json",
        "mask": folder / f"{prefix}_space-{SPACE}_res-2_desc-brain_mask.nii.gz",
        "confounds": folder / f"{prefix}_desc-confounds_timeseries.tsv",
        "confounds_json": folder / f"{prefix}_desc-confounds_timeseries.json",
    }


def set_of(out: Path, subject="01", run=1, *, res="2", desc="simple") -> outputs.RunOutputPaths:
    entities = {"subject": subject, "task": "rest", "run": str(run), "space": SPACE, "res": res}
    return outputs.output_paths(out, entities, LABEL, "mean", desc)


def mtimes(paths: outputs.RunOutputPaths) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in paths.all()}


@pytest.fixture
def small(make_dataset, templateflow_home):
    """A writable dataset of one subject with two runs (40 volumes, 6 mm voxels)."""
    return make_dataset(
        subjects=("01",), runs=(1, 2), n_volumes=40, voxel_size_mm=6.0,
        templateflow_home=templateflow_home,
    )  # fmt: skip


def argv(bids: Path, out: Path, *extra) -> list:
    return [bids, out, "participant", "--atlas", ATLAS, "--no-reports", *extra]


# ----------------------------------------------------------------------------- item 1


def test_resume_checks_input_content_and_ignores_touch(capsys, tmp_path, small):
    out = tmp_path / "out"
    assert run_cli(capsys, *argv(small, out))[0] == 0
    one, two = set_of(out, run=1), set_of(out, run=2)
    first = outputs.read_tsv(one.timeseries)
    recorded = json.loads(one.timeseries_json.read_text())["InputFiles"]
    assert set(recorded) == {"bold", "mask", "confounds", "confounds_json", "sidecar"}
    assert all(r["SHA256"].startswith("sha256:") for r in recorded.values())

    # touch: new mtimes, same bytes -> hashed once, never recomputed
    before = mtimes(one) | mtimes(two)
    for path in [*inputs_of(small, run=1).values(), *inputs_of(small, run=2).values()]:
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    code, stdout = run_cli(capsys, *argv(small, out))
    assert code == 0 and "0 written, 2 already done" in stdout
    assert mtimes(one) | mtimes(two) == before

    # A same-size edit of the confounds TSV (one digit) must be noticed.
    path = inputs_of(small)["confounds"]
    lines = path.read_text().splitlines(keepends=True)
    column = lines[0].rstrip("\n").split("\t").index("csf")
    cells = lines[11].split("\t")
    digit = next(i for i, c in enumerate(cells[column]) if c in "123456789")
    cells[column] = cells[column][:digit] + "9" + cells[column][digit + 1 :]  # volume 10
    if cells[column] == lines[11].split("\t")[column]:
        cells[column] = cells[column][:digit] + "8" + cells[column][digit + 1 :]
    edited = "".join([*lines[:11], "\t".join(cells), *lines[12:]])
    assert len(edited) == len("".join(lines)) and edited != "".join(lines)
    path.write_text(edited)
    code, stdout = run_cli(capsys, *argv(small, out))
    assert code == 0 and "1 written, 1 already done" in stdout
    assert not np.array_equal(outputs.read_tsv(one.timeseries).to_numpy(), first.to_numpy())

    # The confounds JSON (CompCor metadata) and the BOLD sidecar are inputs too.
    for role in ("confounds_json", "sidecar"):
        path = inputs_of(small, run=2)[role]
        data = json.loads(path.read_text())
        path.write_text(json.dumps({**data, "Edited": role}))
        code, stdout = run_cli(capsys, *argv(small, out))
        assert code == 0 and "1 written, 1 already done" in stdout, (role, stdout)


def test_input_check_hashes_only_when_the_stat_key_differs(tmp_path, small, monkeypatch):
    from bidsapp.config import DenoiseConfig

    run = next(r for r in query.find_runs(small, space=SPACE) if str(r.entities["run"]) == "1")
    inputs = extract.prepare_run(run, DenoiseConfig())
    records = workflow.input_records(inputs, small)
    assert workflow.inputs_unchanged(records, inputs, small)
    mask = inputs.mask
    info = mask.stat()
    data = bytearray(mask.read_bytes())
    data[-20] ^= 0xFF  # same size, other content
    mask.write_bytes(bytes(data))
    os.utime(mask, ns=(info.st_atime_ns, info.st_mtime_ns + 1))
    assert not workflow.inputs_unchanged(records, inputs, small)
    mask.write_bytes(bytes(data[:-20]) + bytes([data[-20] ^ 0xFF]) + bytes(data[-19:]))
    assert workflow.inputs_unchanged(records, inputs, small)  # content back: unchanged

    # Equal (size, mtime) of a file that had settled before it was hashed is the cheap path:
    # nothing is read.
    for record in records.values():
        record["HashedAtNs"] = time.time_ns() + 3 * 10**9
    os.utime(mask, ns=(info.st_atime_ns, info.st_mtime_ns))
    read = []
    monkeypatch.setattr(workflow, "_sha256_file", lambda p: read.append(p) or "sha256:x")
    assert workflow.inputs_unchanged(records, inputs, small) and mask not in read
