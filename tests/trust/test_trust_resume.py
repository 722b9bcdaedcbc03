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
from support.cli_runs import LABEL, argv, paused_in_first_write, run_cli, set_of, spawn

from bidsapp.app import extract, resume, run_inputs
from bidsapp.app.status import EXIT_TERMINATED
from bidsapp.dataset import fileio, locking, query, run_outputs, status_tables, tsvio

SPACE = "MNI152NLin2009cAsym"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


# ----------------------------------------------------------------------------- helpers


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


def mtimes(paths: run_outputs.RunOutputPaths) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in paths.all()}


# ----------------------------------------------------------------------------- item 1


def test_resume_checks_input_content_and_ignores_touch(capsys, tmp_path, small):
    out = tmp_path / "out"
    assert run_cli(capsys, *argv(small, out))[0] == 0
    one, two = set_of(out, run=1), set_of(out, run=2)
    first = tsvio.read_tsv(one.timeseries)

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
    assert not np.array_equal(tsvio.read_tsv(one.timeseries).to_numpy(), first.to_numpy())

    recorded = json.loads(one.timeseries_json.read_text())["InputFiles"]
    assert set(recorded) == {"bold", "mask", "confounds", "confounds_json", "sidecar"}
    assert all(r["SHA256"].startswith("sha256:") for r in recorded.values())

    # The confounds JSON (CompCor metadata) and the BOLD sidecar are inputs too.
    for role in ("confounds_json", "sidecar"):
        path = inputs_of(small, run=2)[role]
        data = json.loads(path.read_text())
        path.write_text(json.dumps({**data, "Edited": role}))
        code, stdout = run_cli(capsys, *argv(small, out))
        assert code == 0 and "1 written, 1 already done" in stdout, (role, stdout)


def test_input_check_hashes_only_when_the_stat_key_differs(tmp_path, small, monkeypatch):
    from bidsapp.app.config import DenoiseConfig

    run = next(r for r in query.find_runs(small, space=SPACE) if str(r.entities["run"]) == "1")
    inputs = run_inputs.prepare_run(run, DenoiseConfig())
    records = resume.input_records(inputs, small)
    assert resume.inputs_unchanged(records, inputs, small)
    mask = inputs.mask
    info = mask.stat()
    data = bytearray(mask.read_bytes())
    data[-20] ^= 0xFF  # same size, other content
    mask.write_bytes(bytes(data))
    os.utime(mask, ns=(info.st_atime_ns, info.st_mtime_ns + 1))
    assert not resume.inputs_unchanged(records, inputs, small)
    mask.write_bytes(bytes(data[:-20]) + bytes([data[-20] ^ 0xFF]) + bytes(data[-19:]))
    assert resume.inputs_unchanged(records, inputs, small)  # content back: unchanged

    # Equal (size, mtime) of a file that had settled before it was hashed is the cheap path:
    # nothing is read.
    for record in records.values():
        record["HashedAtNs"] = time.time_ns() + 3 * 10**9
    os.utime(mask, ns=(info.st_atime_ns, info.st_mtime_ns))
    read = []
    monkeypatch.setattr(resume, "_sha256_file", lambda p: read.append(p) or "sha256:x")
    assert resume.inputs_unchanged(records, inputs, small) and mask not in read


# ----------------------------------------------------------------------------- items 3, 4


def test_incomplete_or_inconsistent_sets_are_recomputed(capsys, tmp_path, small):
    out = tmp_path / "out"
    assert run_cli(capsys, *argv(small, out))[0] == 0
    one = set_of(out, run=1)
    complete = {p: p.read_bytes() for p in one.all()}

    one.relmat.unlink()  # a deleted relmat is restored
    code, stdout = run_cli(capsys, *argv(small, out))
    assert "1 written, 1 already done" in stdout and one.relmat.read_bytes() == complete[one.relmat]

    one.coverage_json.unlink()
    assert "1 written, 1 already done" in run_cli(capsys, *argv(small, out))[1]
    assert one.coverage_json.is_file()

    lines = one.timeseries.read_text().splitlines(keepends=True)
    one.timeseries.write_text("".join(lines[:-5]))  # truncated
    assert "1 written, 1 already done" in run_cli(capsys, *argv(small, out))[1]
    assert one.timeseries.read_bytes() == complete[one.timeseries]

    # A relmat of another configuration beside these timeseries (same names).
    other = tmp_path / "other"
    assert run_cli(capsys, *argv(small, other, "--high-pass", "0.02"))[0] == 0
    shutil.copy(set_of(other, run=1).relmat, one.relmat)
    assert "1 written, 1 already done" in run_cli(capsys, *argv(small, out))[1]
    assert one.relmat.read_bytes() == complete[one.relmat]
    same = [p for p in one.all() if p != one.timeseries_json]  # the sidecar records times
    assert {p: p.read_bytes() for p in same} == {p: complete[p] for p in same}


def test_rerun_keeps_the_original_outcome_in_the_status_table(
    capsys, tmp_path, make_dataset, templateflow_home
):
    bids = make_dataset(
        subjects=("01",), runs=(1, 2), n_volumes=40, voxel_size_mm=6.0, write_tr=False,
        templateflow_home=templateflow_home,
    )  # fmt: skip
    out = tmp_path / "out"
    # Without RepetitionTime in the sidecars the header's is used: ok, with a warning.
    options = argv(bids, out, "--min-coverage", "0.9")
    assert run_cli(capsys, *options)[0] == 0
    first = status_tables.read_subject_status(out, "01")
    assert set(first["status"]) == {"ok"}
    assert first["reason"].str.len().min() > 0, "the runs should carry a warning"
    code, stdout = run_cli(capsys, *options)
    assert code == 0 and "0 written, 2 already done" in stdout and "skipped" in stdout
    again = status_tables.read_subject_status(out, "01")
    pd.testing.assert_frame_equal(again, first)


def test_legacy_skipped_rows_read_as_ok(tmp_path):
    row = {"subject": "01", "task": "rest", "space": SPACE, "atlas": LABEL, "denoise": "simple"}
    status_tables.write_subject_status(tmp_path, "01", [{**row, "status": "skipped"}])
    assert status_tables.read_subject_status(tmp_path, "01")["status"].tolist() == ["ok"]


# ----------------------------------------------------------------------------- failures


def test_excluded_and_failed_runs_remove_their_old_outputs(capsys, tmp_path, small, monkeypatch):
    out = tmp_path / "out"
    assert run_cli(capsys, *argv(small, out))[0] == 0
    one, two = set_of(out, run=1), set_of(out, run=2)
    real = extract.extract_run

    def excluding(inputs, *args, **kwargs):
        if str(inputs.entities.get("run")) == "1":
            raise run_inputs.RunExcluded(f"{inputs.bold}: 12.0 s left after censoring (< 100 s)")
        return real(inputs, *args, **kwargs)

    monkeypatch.setattr(extract, "extract_run", excluding)
    code, stdout = run_cli(capsys, *argv(small, out, "--overwrite"))
    assert code == 1
    assert "EXCLUDED sub-01_task-rest_run-1" in stdout and "1 excluded" in stdout
    assert not any(p.exists() for p in one.all()) and two.timeseries.is_file()
    table = status_tables.read_subject_status(out, "01").set_index("run")
    assert table.loc["1", "status"] == "excluded" and "< 100 s" in table.loc["1", "reason"]
    assert table.loc["2", "status"] == "ok"

    monkeypatch.setattr(extract, "extract_run", real)
    assert run_cli(capsys, *argv(small, out))[0] == 0
    inputs_of(small, run=2)["confounds"].write_text("not a table\n")
    code, stdout = run_cli(capsys, *argv(small, out))
    assert code == 1 and "FAILED  sub-01_task-rest_run-2" in stdout
    assert not any(p.exists() for p in two.all())  # the old numbers no longer look current


# ----------------------------------------------------------------------------- item 8


def test_two_resolutions_write_two_sets(capsys, tmp_path, small):
    for path in inputs_of(small, run=1).values():
        if "res-2" in path.name:
            shutil.copy(path, path.with_name(path.name.replace("res-2", "res-1")))
    out = tmp_path / "out"
    code, stdout = run_cli(capsys, *argv(small, out))
    assert code == 0, stdout
    assert set_of(out, run=1, res="1").timeseries.is_file()
    assert set_of(out, run=1, res="2").timeseries.is_file()
    table = status_tables.read_subject_status(out, "01")
    assert sorted(zip(table["run"], table["res"], strict=True)) == [
        ("1", "1"),
        ("1", "2"),
        ("2", "2"),
    ]


def test_two_inputs_for_one_output_name_both_fail(capsys, tmp_path, small, monkeypatch):
    stray = tmp_path / "stray"
    stray.mkdir()
    bold = inputs_of(small, run=1)["bold"]
    shutil.copy(bold, stray / bold.name)
    real = query.find_runs

    def with_twin(*args, **kwargs):
        runs = real(*args, **kwargs)
        first = next(r for r in runs if str(r.entities.get("run")) == "1")
        from dataclasses import replace

        return [*runs, replace(first, preproc_bold=stray / bold.name)]

    monkeypatch.setattr(query, "find_runs", with_twin)
    out = tmp_path / "out"
    code, stdout = run_cli(capsys, *argv(small, out))
    assert code == 1
    failed = [ln for ln in stdout.splitlines() if ln.startswith("FAILED  sub-01_task-rest_run-1")]
    assert len(failed) == 2
    for line in failed:
        assert str(bold) in line and str(stray / bold.name) in line and "does not pick" in line
    assert not set_of(out, run=1).timeseries.exists() and set_of(out, run=2).timeseries.is_file()


# ----------------------------------------------------------------------------- item 10


def _consistent(paths: run_outputs.RunOutputPaths) -> float:
    """Check one set is self-consistent; return the high-pass it was made with."""
    sidecar = json.loads(paths.timeseries_json.read_text())
    for name, digest in sidecar["OutputFiles"].items():
        data = (paths.directory / name).read_bytes()
        assert run_outputs._sha256_text(data.decode()) == digest, name
    timeseries = tsvio.read_tsv(paths.timeseries).to_numpy()
    relmat = tsvio.read_tsv(paths.relmat).drop(columns="Node").to_numpy()
    valid = np.isfinite(timeseries).all(axis=0) & (np.nanstd(timeseries, axis=0) > 0)
    expected = np.corrcoef(timeseries[:, valid], rowvar=False)
    np.testing.assert_allclose(relmat[np.ix_(valid, valid)], expected, atol=1e-9)
    return sidecar["Extraction"]["high_pass"]


@pytest.mark.slow
def test_concurrent_jobs_on_one_subject_take_turns(capsys, tmp_path, small):
    out = tmp_path / "out"
    jobs = [spawn(*argv(small, out, "--high-pass", hp)) for hp in ("0.01", "0.02")]
    logs = [job.communicate(timeout=600)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], logs
    held = {_consistent(set_of(out, run=r)) for r in (1, 2)}
    assert len(held) == 1, "both runs of the subject come from one configuration"
    (kept,) = held
    other = 0.02 if kept == 0.01 else 0.01
    code, stdout = run_cli(capsys, *argv(small, out, "--high-pass", kept))
    assert code == 0 and "0 written, 2 already done" in stdout
    code, stdout = run_cli(capsys, *argv(small, out, "--high-pass", other))
    assert code == 0 and "2 written, 0 already done" in stdout


@pytest.mark.slow
def test_a_second_invocation_waits_for_the_subject_lock(tmp_path, small):
    out = tmp_path / "out"
    lock = locking.SubjectLock(out, "01").acquire()
    job = spawn(*argv(small, out))
    try:
        assert job.stdout is not None
        seen = []
        for line in job.stdout:
            seen.append(line)
            if "waiting for sub-01" in line:
                break
        assert f"pid {os.getpid()}" in seen[-1], seen
        assert not set_of(out, run=1).timeseries.exists()  # nothing written while it waits
    finally:
        lock.release()
    rest = job.communicate(timeout=600)[0]
    assert job.returncode == 0 and "2 written" in rest


# ----------------------------------------------------------------------------- item 16


def test_planted_links_are_never_followed(capsys, tmp_path, small):
    out = tmp_path / "out"
    secret = tmp_path / "secret.txt"
    secret.write_text("do not copy me\n")
    (out / "logs").mkdir(parents=True)
    (out / ".bidsignore").symlink_to(secret)
    (out / "logs" / "sub-01_status.tsv").symlink_to(secret)
    (out / "dataset_description.json").symlink_to(secret)
    (out / "logs" / ".sub-01.lock").symlink_to(tmp_path / "created-through-link")
    (out / "logs" / ".sub-01_status.tsv.lock").symlink_to(tmp_path / "created-too")
    code, stdout = run_cli(capsys, *argv(small, out))
    assert code == 0, stdout
    assert secret.read_text() == "do not copy me\n"
    assert not (tmp_path / "created-through-link").exists()
    assert not (tmp_path / "created-too").exists()
    for name in (".bidsignore", "logs/sub-01_status.tsv", "dataset_description.json"):
        path = out / name
        assert not path.is_symlink() and "do not copy me" not in path.read_text(), name
    assert len(status_tables.read_subject_status(out, "01")) == 2


def test_a_linked_subject_folder_fails_its_runs_and_writes_nothing_there(capsys, tmp_path, small):
    out = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine\n")
    (out / "sub-01").mkdir(parents=True)
    (out / "sub-01" / "func").symlink_to(elsewhere)
    code, stdout = run_cli(capsys, *argv(small, out))
    assert code == 1
    failed = [ln for ln in stdout.splitlines() if ln.startswith("FAILED")]
    assert len(failed) == 2 and all("symbolic link" in ln and "func" in ln for ln in failed)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["keep.txt"]


# ----------------------------------------------------------------------------- item 17


def _dead_pid() -> int:
    probe = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], text=True,
                           capture_output=True, check=True)  # fmt: skip
    return int(probe.stdout)


def test_leftover_temporary_files_are_removed(capsys, tmp_path, small):
    out = tmp_path / "out"
    assert run_cli(capsys, *argv(small, out))[0] == 0
    host = fileio.host_label()
    dead, alive = _dead_pid(), os.getpid()
    func = out / "sub-01" / "func"
    leftovers = [
        func / f".x_timeseries.tsv.otherhost.{alive}.0123abcd.tmp",  # under the subject lock
        out / f".dataset_description.json.{host}.{dead}.0123abcd.tmp",  # dead writer
        out / "logs" / f".sub-01_status.tsv.{dead}.0123abcd.tmp",  # older naming, old
        out / "sourcedata" / "atlases" / f".x_dseg.tsv.elsewhere.{alive}.0123abcd.tmp",  # old
    ]
    kept = out / f".sub-02.html.{host}.{alive}.0123abcd.tmp"  # a live writer's file
    for path in [*leftovers, kept]:
        path.write_text("partial")
    hours_ago = time.time() - 2 * 3600
    for path in leftovers[2:]:
        os.utime(path, (hours_ago, hours_ago))
    assert run_cli(capsys, *argv(small, out))[0] == 0
    assert [p for p in leftovers if p.exists()] == [] and kept.exists()


def test_sigterm_mid_write_leaves_no_temporary_file_and_says_so(capsys, tmp_path, small):
    out = tmp_path / "out"
    job, seen = paused_in_first_write(small, out, subprocess.STDOUT)
    job.terminate()
    rest = job.communicate(timeout=120)[0]
    assert job.returncode == EXIT_TERMINATED == 143, seen + [rest]
    assert "stopped by SIGTERM" in rest
    assert [p for p in out.rglob("*.tmp")] == []
    assert not (out / "logs" / ".sub-01.lock").exists() or locking.SubjectLock(out, "01").acquire()
    code, stdout = run_cli(capsys, *argv(small, out))
    assert code == 0 and "2 written, 0 already done" in stdout


def test_overwrite_replaces_a_corrected_local_lut(capsys, tmp_path, small, templateflow_home):
    folder = templateflow_home / f"tpl-{SPACE}"
    dseg = folder / f"tpl-{SPACE}_res-02_atlas-Schaefer2018_desc-100Parcels7Networks_dseg.nii.gz"
    lut = pd.read_csv(folder / f"tpl-{SPACE}_atlas-Schaefer2018_desc-100Parcels7Networks_dseg.tsv",
                      sep="\t")  # fmt: skip
    local = tmp_path / "atlas"
    local.mkdir()
    shutil.copy(dseg, local / f"tpl-{SPACE}_atlas-mine_dseg.nii.gz")
    table = pd.DataFrame({"index": lut["index"], "name": [f"R{i}" for i in lut["index"]]})
    table.to_csv(local / f"tpl-{SPACE}_atlas-mine_dseg.tsv", sep="\t", index=False)
    out = tmp_path / "out"
    common = [small, out, "participant", "--no-reports", "--atlas"]
    common += [local / f"tpl-{SPACE}_atlas-mine_dseg.nii.gz"]
    assert run_cli(capsys, *common)[0] == 0
    table.assign(name=[f"Region{i}" for i in lut["index"]]).to_csv(
        local / f"tpl-{SPACE}_atlas-mine_dseg.tsv", sep="\t", index=False
    )
    code, stdout = run_cli(capsys, *common)
    assert code == 1 and "--overwrite" in stdout
    code, stdout = run_cli(capsys, *common, "--overwrite")
    assert code == 0, stdout
    copies = list((out / "sourcedata" / "atlases").rglob("*atlas-mine*_dseg.tsv"))
    assert len(copies) == 1 and "Region1" in copies[0].read_text()
    assert run_cli(capsys, *common)[0] == 0  # and later runs work again


def test_host_label_is_usable_in_names():
    assert fileio.host_label() and "." not in fileio.host_label()
    assert socket.gethostname()


def test_two_atlases_with_one_label_are_refused(capsys, tmp_path, small, templateflow_home):
    folder = templateflow_home / f"tpl-{SPACE}"
    dseg = folder / f"tpl-{SPACE}_res-02_atlas-Schaefer2018_desc-100Parcels7Networks_dseg.nii.gz"
    specs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        shutil.copy(dseg, tmp_path / name / f"tpl-{SPACE}_atlas-mine_dseg.nii.gz")
        pd.DataFrame({"index": [1], "name": [name]}).to_csv(
            tmp_path / name / f"tpl-{SPACE}_atlas-mine_dseg.tsv", sep="\t", index=False
        )
        specs += ["--atlas", tmp_path / name / f"tpl-{SPACE}_atlas-mine_dseg.nii.gz"]
    out = tmp_path / "out"
    code, stdout = run_cli(capsys, small, out, "participant", "--no-reports", *specs)
    assert code == 2 and str(tmp_path / "a") in stdout and str(tmp_path / "b") in stdout
    assert not list(out.rglob("*_timeseries.tsv"))
