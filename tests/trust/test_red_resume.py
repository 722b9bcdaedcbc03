"""Hostile states of OUTPUT_DIR that a cluster produces: kills, concurrent jobs, full or
read-only disks, planted links.

Each test builds a tiny fMRIPrep dataset (the ``small`` fixture of ``conftest.py``),
runs the participant level through ``bidsapp.cli.main``, damages the output dataset the way
a killed job, a second job or a user would, and checks that the participant and group
levels neither crash nor use or show wrong results: a clear line names the file, the other
runs go on, and the exit code is 1.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
from support.cli_runs import LABEL, argv, run_cli, set_of

from bidsapp.app import extract, group_inputs, group_outputs, run_inputs
from bidsapp.dataset import run_outputs, status_tables, tsvio
from bidsapp.report.records import tsv_problem

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

OTHER_ATLAS = "Schaefer2018:400Parcels7Networks"
OTHER_LABEL = "Schaefer2018400Parcels7Networks"


def group_argv(bids: Path, out: Path, *extra) -> list:
    return [bids, out, "group", "--no-reports", *extra]


def no_traceback(text: str) -> None:
    assert "Traceback" not in text, text


def group_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "group").iterdir()) if p.is_file()}


# ------------------------------------------------------------------ 1. garbage status table


def _truncated(table: bytes) -> bytes:
    return table[: len(table) - 12]  # the last row cut short, no final newline


GARBAGE = {
    "binary": lambda table: bytes(range(256)) * 4,
    "truncated": _truncated,
    "wrong-columns": lambda table: b"a\tb\tc\n1\t2\t3\n",
    "non-utf8": lambda table: table.replace(b"rest", b"r\xe9st\xff"),
    "bad-status": lambda table: table.replace(b"\tok\t", b"\tdone\t"),
    "bad-count": lambda table: table.replace(b"\t40\t", b"\tforty\t"),
}


def test_participant_level_repairs_a_garbage_status_table(capsys, caplog, tmp_path, small):
    out = tmp_path / "out"
    assert run_cli(capsys, *argv(small, out))[0] == 0
    path = status_tables.status_path(out, "01")
    good = path.read_bytes()
    for kind, damage in GARBAGE.items():
        path.write_bytes(damage(good))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="bidsapp"):
            code, stdout = run_cli(capsys, *argv(small, out))
        no_traceback(stdout)
        assert code == 0 and "0 written, 2 already done" in stdout, (kind, stdout)
        table = status_tables.read_subject_status(out, "01")
        assert sorted(table["run"]) == ["1", "2"] and set(table["status"]) == {"ok"}, kind
        assert path.read_bytes() == good, kind  # rewritten from what the run knows
        warned = [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]
        assert len(warned) == 1 and "\n" not in warned[0], (kind, caplog.text)


def test_participant_level_keeps_the_good_rows_of_a_damaged_status_table(capsys, tmp_path, small):
    out = tmp_path / "out"
    assert run_cli(capsys, *argv(small, out))[0] == 0
    path = status_tables.status_path(out, "01")
    row = {"subject": "01", "task": "rest", "run": "3", "space": "MNI152NLin2009cAsym",
           "atlas": LABEL, "denoise": "simple", "status": "failed",
           "reason": "earlier"}  # fmt: skip
    status_tables.write_subject_status(out, "01", [row])
    lines = path.read_bytes().split(b"\n")
    assert len(lines) == 5  # header, three rows, final empty string
    lines[2] = lines[2][:20]  # the row of run 2 cut short (a torn write by an older version)
    path.write_bytes(b"\n".join(lines))
    assert run_cli(capsys, *argv(small, out))[0] == 0
    table = status_tables.read_subject_status(out, "01").set_index("run")
    assert sorted(table.index) == ["1", "2", "3"] and tsv_problem(path.read_text()) is None
    assert table.loc["3", "reason"] == "earlier"  # a good row of an earlier invocation is kept


def test_a_folder_in_place_of_the_status_table(capsys, tmp_path, small):
    out = tmp_path / "out"
    assert run_cli(capsys, *argv(small, out))[0] == 0
    path = status_tables.status_path(out, "01")
    path.unlink()
    path.mkdir()  # empty: nothing of anyone's is lost by removing it
    code, stdout = run_cli(capsys, *argv(small, out))
    assert code == 0 and path.is_file(), stdout
    assert len(status_tables.read_subject_status(out, "01")) == 2

    path.unlink()
    path.mkdir()
    (path / "notes.txt").write_text("someone's file\n")  # not ours: never removed
    code, stdout = run_cli(capsys, *argv(small, out))
    no_traceback(stdout)
    assert code == 1, stdout
    lines = [ln for ln in stdout.splitlines() if str(path) in ln]
    assert lines and "folder" in lines[0], stdout
    assert (path / "notes.txt").read_text() == "someone's file\n"

    code, stdout = run_cli(capsys, *group_argv(small, out))
    no_traceback(stdout)
    assert code == 1 and str(path) in stdout, stdout


@pytest.mark.parametrize("kind", [*GARBAGE, "folder", "link"])
def test_group_level_reports_a_garbage_status_table_once(capsys, tmp_path, small, kind):
    out = tmp_path / "out"
    assert run_cli(capsys, *argv(small, out))[0] == 0
    path = status_tables.status_path(out, "01")
    good = path.read_bytes()
    path.unlink()
    if kind == "folder":
        path.mkdir()
    elif kind == "link":  # a valid table, but through a link bidsapp did not make
        (tmp_path / "elsewhere.tsv").write_bytes(good)
        path.symlink_to(tmp_path / "elsewhere.tsv")
    else:
        path.write_bytes(GARBAGE[kind](good))
    code, stdout = run_cli(capsys, *group_argv(small, out))
    no_traceback(stdout)
    # The subject's runs are not taken as finished: nothing is averaged, exit 1.
    assert code == 1, stdout
    naming = [ln for ln in stdout.splitlines() if str(path) in ln]
    assert len(naming) == 1, stdout
    summary = tsvio.read_tsv(out / "group" / "runs.tsv", dtype=str)
    assert set(summary["status"]) == {"failed"}
    assert not list((out / "group").glob("*_relmat.tsv"))


# ------------------------------------------------------------------ 2. removal that fails


def test_remove_run_outputs_never_raises(tmp_path, monkeypatch):
    paths = set_of(tmp_path)
    paths.directory.mkdir(parents=True)
    for path in paths.all():
        path.write_text("old\n")
    paths.relmat.unlink()
    paths.relmat.mkdir()
    (paths.relmat / "inside").write_text("x\n")
    removed = run_outputs.remove_run_outputs(paths)
    assert not paths.timeseries.exists()
    assert paths.relmat in removed.failed and str(paths.relmat) in removed.problem()
    assert "\n" not in removed.problem()
    assert (paths.relmat / "inside").exists()  # a folder is never removed
    assert not paths.coverage.exists()  # the others still went

    for path in (paths.coverage, paths.timeseries):
        path.write_text("old\n")
    real = os.unlink

    def read_only(path, *args, **kwargs):
        if Path(path) == paths.coverage:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", read_only)
    removed = run_outputs.remove_run_outputs(paths)
    assert set(removed.failed) == {paths.relmat, paths.coverage}
    assert "Permission denied" in removed.problem() and not paths.timeseries.exists()


def test_a_failed_run_whose_old_outputs_cannot_be_removed(capsys, tmp_path, small, monkeypatch):
    out = tmp_path / "out"
    assert run_cli(capsys, *argv(small, out))[0] == 0
    one, two = set_of(out, run=1), set_of(out, run=2)
    one.relmat.unlink()
    one.relmat.mkdir()
    (one.relmat / "x").write_text("x\n")
    two.relmat.unlink()
    two.relmat.mkdir()
    (two.relmat / "x").write_text("x\n")
    real = extract.extract_run

    def failing(inputs, *args, **kwargs):
        if str(inputs.entities.get("run")) == "1":
            raise run_inputs.RunExcluded(f"{inputs.bold}: 12.0 s left after censoring (< 100 s)")
        return real(inputs, *args, **kwargs)

    def unprepared(run, *args, **kwargs):
        if str(run.entities.get("run")) == "2":
            raise run_inputs.ExtractionError(f"{run.preproc_bold}: broken header")
        return real_prepare(run, *args, **kwargs)

    real_prepare = run_inputs.prepare_run
    monkeypatch.setattr(extract, "extract_run", failing)
    monkeypatch.setattr(run_inputs, "prepare_run", unprepared)
    code, stdout = run_cli(capsys, *argv(small, out, "--overwrite"))
    no_traceback(stdout)
    assert code == 1, stdout
    assert not one.timeseries.exists() and not two.timeseries.exists()
    table = status_tables.read_subject_status(out, "01").set_index("run")
    for run, paths in (("1", one), ("2", two)):
        reason = table.loc[run, "reason"]
        assert table.loc[run, "status"] == "failed", (run, reason)
        assert str(paths.relmat) in reason and "cannot remove" in reason, reason
        assert "\n" not in reason
    assert "< 100 s" in table.loc["1", "reason"] and "broken header" in table.loc["2", "reason"]


# ------------------------------------------------------------------ 3. stale group files


@pytest.fixture
def two_atlases(capsys, tmp_path, small):
    """Participant outputs of two runs for two atlases: two group cells."""
    out = tmp_path / "out"
    code, stdout = run_cli(capsys, *argv(small, out, "--atlas", OTHER_ATLAS))
    assert code == 0, stdout
    code, stdout = run_cli(capsys, *group_argv(small, out))
    assert code == 0, stdout
    return out


def _fail_atlas(out: Path, label: str) -> None:
    """Record that the runs of one atlas failed, as a participant rerun would."""
    rows = [
        {"subject": "01", "task": "rest", "run": str(run), "space": "MNI152NLin2009cAsym",
         "res": "2", "atlas": label, "stat": "mean", "denoise": "simple", "status": "failed",
         "reason": "broken on rerun"}
        for run in (1, 2)
    ]  # fmt: skip
    status_tables.write_subject_status(out, "01", rows)


def test_group_rerun_removes_the_files_of_a_cell_that_no_longer_exists(capsys, small, two_atlases):
    out = two_atlases
    names = group_files(out)
    assert sum(OTHER_LABEL in n for n in names) == 4
    _fail_atlas(out, OTHER_LABEL)
    code, stdout = run_cli(capsys, *group_argv(small, out))
    assert code == 0, stdout
    now = group_files(out)
    assert not [n for n in now if OTHER_LABEL in n], sorted(now)
    assert sum(LABEL in n and OTHER_LABEL not in n for n in now) == 4
    (out / "group" / "notes.txt").write_text("mine\n")  # not a group output: kept

    _fail_atlas(out, LABEL)  # no cell left: the old matrices and qcfc.tsv go too
    code, stdout = run_cli(capsys, *group_argv(small, out))
    assert code == 1, stdout
    assert sorted(group_files(out)) == ["notes.txt", "runs.json", "runs.tsv"]


def test_group_write_failing_half_way_leaves_the_old_set(capsys, small, two_atlases):
    out = two_atlases
    (out / "group" / "qcfc.tsv").unlink()
    before = group_files(out)
    (out / "group" / "qcfc.tsv").mkdir()  # the last file of the set cannot be written
    (out / "group" / "qcfc.tsv" / "x").write_text("x\n")
    _fail_atlas(out, OTHER_LABEL)  # the new results differ from the old
    code, stdout = run_cli(capsys, *group_argv(small, out))
    no_traceback(stdout)
    assert code == 1, stdout
    naming = [ln for ln in stdout.splitlines() if "qcfc.tsv" in ln]
    assert len(naming) == 1 and "cannot write" in naming[0], stdout
    assert group_files(out) == before  # not one new file beside old ones
    assert not [p for p in (out / "group").iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------ 4. planted group/ link


def test_a_linked_group_folder_is_refused(capsys, tmp_path, small):
    out = tmp_path / "out"
    assert run_cli(capsys, *argv(small, out))[0] == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "group").symlink_to(elsewhere)
    code, stdout = run_cli(capsys, *group_argv(small, out))
    no_traceback(stdout)
    assert code == 1, stdout
    naming = [ln for ln in stdout.splitlines() if "symbolic link" in ln]
    assert len(naming) == 1 and str(out / "group") in naming[0], stdout
    assert list(elsewhere.iterdir()) == []


# ------------------------------------------------------------------ 5. edited timeseries


def test_group_leaves_out_a_timeseries_changed_after_the_participant_level(capsys, tmp_path, small):
    out = tmp_path / "out"
    assert run_cli(capsys, *argv(small, out))[0] == 0
    one, two = set_of(out, run=1), set_of(out, run=2)
    text = one.timeseries.read_text()
    digit = next(i for i, c in enumerate(text) if c in "12345678" and i > text.index("\n"))
    edited = text[:digit] + str(int(text[digit]) + 1) + text[digit + 1 :]
    one.timeseries.write_text(edited)  # same shape, other number
    code, stdout = run_cli(capsys, *group_argv(small, out))
    assert code == 0, stdout
    naming = [ln for ln in stdout.splitlines() if one.timeseries.name in ln]
    assert len(naming) == 1 and "OutputFiles" in naming[0], stdout
    qc = tsvio.read_tsv(out / "group" / "qcfc.tsv")
    assert qc["n_runs"].tolist() == [1]

    one.timeseries.write_text(text)
    copy = tmp_path / "copy.tsv"
    shutil.copy(two.timeseries, copy)
    two.timeseries.unlink()
    two.timeseries.symlink_to(copy)  # same bytes, but through a link bidsapp did not make
    code, stdout = run_cli(capsys, *group_argv(small, out))
    assert code == 0, stdout
    naming = [ln for ln in stdout.splitlines() if two.timeseries.name in ln]
    assert len(naming) == 1 and "symbolic link" in naming[0], stdout
    assert tsvio.read_tsv(out / "group" / "qcfc.tsv")["n_runs"].tolist() == [1]


def test_group_does_not_read_through_a_linked_func_folder(capsys, tmp_path, small):
    out = tmp_path / "out"
    assert run_cli(capsys, *argv(small, out))[0] == 0
    func = out / "sub-01" / "func"
    moved = tmp_path / "moved"
    shutil.move(func, moved)
    func.symlink_to(moved)
    code, stdout = run_cli(capsys, *group_argv(small, out))
    no_traceback(stdout)
    assert code == 1, stdout  # no run is usable
    assert not list((out / "group").glob("*_relmat.tsv"))


def test_checked_timeseries_needs_the_recorded_hash(tmp_path, capsys, small):
    from bidsapp.report.records import collect_runs

    out = tmp_path / "out"
    assert run_cli(capsys, *argv(small, out))[0] == 0
    (record, *_) = [r for r in collect_runs(out) if r.has_outputs]
    assert len(group_inputs.checked_timeseries(record, out)) > 0
    del record.sidecar[run_outputs.OUTPUT_FILES_KEY]
    with pytest.raises(ValueError, match="OutputFiles"):
        group_inputs.checked_timeseries(record, out)


# ------------------------------------------------------------------ stale reports


@pytest.mark.slow
def test_a_report_of_earlier_results_is_removed_not_left_beside_new_ones(capsys, tmp_path, small):
    out = tmp_path / "out"
    with_reports = [a for a in argv(small, out) if a != "--no-reports"]
    assert run_cli(capsys, *with_reports)[0] == 0
    report = out / "sub-01.html"
    assert report.is_file()
    code, stdout = run_cli(capsys, *argv(small, out))  # nothing changed: the report stays
    assert code == 0 and "2 already done" in stdout and report.is_file()
    code, stdout = run_cli(capsys, *argv(small, out, "--high-pass", "0.02"))
    assert code == 0 and "2 written" in stdout, stdout
    assert not report.exists() and "removed sub-01.html" in stdout

    assert run_cli(capsys, *group_argv(small, out)[:-1])[0] == 0  # group with its report
    assert (out / group_outputs.REPORT_NAME).is_file()
    assert run_cli(capsys, *group_argv(small, out))[0] == 0
    assert not (out / group_outputs.REPORT_NAME).exists()
