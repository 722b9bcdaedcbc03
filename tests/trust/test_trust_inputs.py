"""Whatever a real dataset throws at the inputs: each bad file fails its run alone, or the
whole invocation as a usage error when it is an argument, and nothing hangs or goes stale.

End-to-end through ``bidsapp.cli.main`` (or the installed ``bidsapp`` in subprocesses), on
tiny synthetic fMRIPrep datasets.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import pandas as pd
import pytest

from bidsapp import cli
from bidsapp.app.config import DenoiseConfig
from bidsapp.app.run_inputs import ExtractionError, prepare_run
from bidsapp.dataset.query import find_runs

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

SPACE = "MNI152NLin2009cAsym"
ATLAS = "Schaefer2018:100Parcels7Networks"
TINY = {"n_volumes": 20, "n_dummy": 1, "high_motion_volumes": (), "voxel_size_mm": 8.0}
FAST = ["--atlas", ATLAS, "--denoise-strategy", "none", "--no-reports"]


def participant(capsys, bids: Path, out: Path, *extra) -> tuple[int, str]:
    """Run the participant level in-process; return (exit code, stdout + stderr)."""
    code = cli.main([str(a) for a in (bids, out, "participant", *FAST, *extra)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def written_runs(out: Path) -> list[str]:
    """Run names that have a timeseries table in ``out``."""
    return sorted(
        {p.name.split("_space-")[0] for p in out.rglob("*_timeseries.tsv")}
    )  # fmt: skip


def status_rows(out: Path, subject: str) -> pd.DataFrame:
    return pd.read_csv(out / "logs" / f"sub-{subject}_status.tsv", sep="\t", dtype=str)


def sidecar_of(bids: Path, run: int, subject: str = "01") -> Path:
    return next(
        bids.glob(f"sub-{subject}/func/sub-{subject}_task-rest_run-{run}_*preproc_bold.json")
    )


# ------------------------------------------------------------ item 12: one bad JSON


def _break(path: Path, how: str) -> None:
    path.unlink()
    if how == "malformed":
        path.write_text('{"RepetitionTime": 2.0,')
    elif how == "array":
        path.write_text("[2.0]")
    elif how == "not-utf8":
        path.write_bytes(b'{"TaskName": "\xff\xfe"}')
    elif how == "fifo":
        os.mkfifo(path)
    elif how == "dangling":
        path.symlink_to(path.with_name("missing.json"))
    elif how == "directory":
        path.mkdir()


@pytest.mark.parametrize("how", ["malformed", "array", "not-utf8", "fifo", "dangling", "directory"])
def test_a_bad_sidecar_fails_only_its_run(capsys, tmp_path, make_dataset, templateflow_home, how):
    bids = make_dataset(subjects=["01"], runs=[1, 2], **TINY)
    sidecar = sidecar_of(bids, 1)
    _break(sidecar, how)
    code, text = participant(capsys, bids, tmp_path / "out")
    assert code == 1, text
    assert "Traceback" not in text
    assert written_runs(tmp_path / "out") == ["sub-01_task-rest_run-2"]
    rows = status_rows(tmp_path / "out", "01")
    failed = rows[rows["run"] == "1"]
    assert list(failed["status"]) == ["failed"]
    assert str(sidecar) in failed["reason"].iloc[0]


def test_a_malformed_json_no_run_uses_is_harmless(
    capsys, tmp_path, make_dataset, templateflow_home
):
    bids = make_dataset(subjects=["01"], runs=[1, 2], t1w_space=True, **TINY)
    (bids / "sub-01" / "anat" / "sub-01_desc-preproc_T1w.json").write_text("{oops")
    # the sidecar of the run in another space: not used by an MNI run
    sidecar_t1w = next(bids.glob("sub-01/func/*run-1_space-T1w_desc-preproc_bold.json"))
    sidecar_t1w.write_text("{oops")
    (bids / "sub-01" / "func" / "notes.json").write_text("]")
    code, text = participant(capsys, bids, tmp_path / "out")
    assert code == 0, text
    assert written_runs(tmp_path / "out") == ["sub-01_task-rest_run-1", "sub-01_task-rest_run-2"]


def test_inherited_sidecar_gives_the_repetition_time(make_dataset):
    bids = make_dataset(subjects=["01"], runs=[1, 2], **TINY)
    for run in (1, 2):
        sidecar = sidecar_of(bids, run)
        sidecar.write_text(json.dumps({"TaskName": "rest"}))
    top = bids / "task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.json"
    top.write_text(json.dumps({"RepetitionTime": 1.5}))
    runs = find_runs(bids)
    assert [(r.t_r, r.sidecar) for r in runs] == [(1.5, top), (1.5, top)]
    # the inherited file is used, so a broken one fails the runs it applies to
    top.write_text("{")
    assert all(str(top) in r.problem for r in find_runs(bids))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        (b"\xff\xfe{}", "not UTF-8"),
        ('{"Name": "x", "DatasetType": "derivative", "GeneratedBy": [1]}', "pybids cannot"),
    ],
)
def test_a_bad_dataset_description_is_a_usage_error(
    capsys, tmp_path, make_dataset, content, message
):
    bids = make_dataset(subjects=["01"], runs=[1], **TINY)
    description = bids / "dataset_description.json"
    if isinstance(content, bytes):
        description.write_bytes(content)
    else:
        description.write_text(content)
    code, text = participant(capsys, bids, tmp_path / "out")
    assert code == 2, text
    assert "dataset_description.json" in text and message in text
    assert "Traceback" not in text


# ---------------------------------------------------------- item 6: RepetitionTime


@pytest.mark.parametrize(
    ("value", "message"),
    [(2000, "looks like milliseconds"), (True, "not a number"), ("two", "not a number")],
)
def test_a_bad_repetition_time_fails_only_its_run(
    capsys, tmp_path, make_dataset, templateflow_home, value, message
):
    bids = make_dataset(subjects=["01"], runs=[1, 2], **TINY)
    sidecar = sidecar_of(bids, 1)
    sidecar.write_text(json.dumps({"RepetitionTime": value, "TaskName": "rest"}))
    code, text = participant(capsys, bids, tmp_path / "out", "--low-pass", "0.1")
    assert code == 1, text
    assert written_runs(tmp_path / "out") == ["sub-01_task-rest_run-2"]
    reason = status_rows(tmp_path / "out", "01").set_index("run").loc["1", "reason"]
    assert str(sidecar) in reason and message in reason


def _set_header_tr(path: Path, t_r: float, unit: str = "sec") -> None:
    img = nib.load(str(path))
    data = img.get_fdata(dtype="float32")
    header = img.header.copy()
    header.set_zooms(header.get_zooms()[:3] + (t_r,))
    header.set_xyzt_units(xyz="mm", t=unit)
    path.unlink()
    nib.save(nib.Nifti1Image(data, img.affine, header), str(path))


def test_sidecar_and_header_disagreeing_is_a_warning_of_the_run(make_dataset):
    bids = make_dataset(subjects=["01"], runs=[1], **TINY)
    (run,) = find_runs(bids)
    _set_header_tr(run.preproc_bold, 2.5)
    inputs = prepare_run(run, DenoiseConfig())
    assert inputs.t_r == 2.0  # the sidecar's
    (warning,) = [w for w in inputs.warnings if "differs from the NIfTI header" in w]
    assert str(run.sidecar) in warning and "2.5" in warning
    _set_header_tr(run.preproc_bold, 2000, unit="msec")  # the same TR in ms: no warning
    assert not prepare_run(run, DenoiseConfig()).warnings


@pytest.mark.parametrize(
    ("t_r", "message"), [(2000.0, "looks like milliseconds"), (45.0, "outside the plausible range")]
)
def test_an_implausible_header_repetition_time_is_refused(make_dataset, t_r, message):
    bids = make_dataset(subjects=["01"], runs=[1], write_tr=False, **TINY)
    (run,) = find_runs(bids)
    assert run.t_r is None
    _set_header_tr(run.preproc_bold, t_r)
    with pytest.raises(ExtractionError, match=message) as error:
        prepare_run(run, DenoiseConfig())
    assert str(run.preproc_bold) in str(error.value)


# ----------------------------------------------------- item 2: the stored pybids index


def _copy_subject(source: Path, target: Path, subject: str) -> None:
    shutil.copytree(source / f"sub-{subject}", target / f"sub-{subject}")


def test_a_subject_added_later_is_processed_with_the_same_work_dir(
    capsys, tmp_path, make_dataset, templateflow_home
):
    bids = make_dataset(subjects=["01"], runs=[1], **TINY)
    later = make_dataset(subjects=["02"], runs=[1], **TINY)
    work = tmp_path / "work"
    out = tmp_path / "out"
    code, text = participant(capsys, bids, out, "--work-dir", work)
    assert code == 0, text
    _copy_subject(later, bids, "02")
    code, text = participant(capsys, bids, out, "--work-dir", work)
    assert code == 0, text
    assert written_runs(out) == ["sub-01_task-rest_run-1", "sub-02_task-rest_run-1"]


@pytest.mark.slow
def test_concurrent_jobs_sharing_one_work_dir_all_succeed(
    tmp_path, make_dataset, templateflow_home
):
    bids = make_dataset(subjects=["01", "02", "03"], runs=[1], **TINY)
    work = tmp_path / "work"
    executable = Path(sys.executable).with_name("bidsapp")
    labels = [["01"], ["02"], ["01"], ["03"], []]
    jobs = []
    for number, label in enumerate(labels):
        argv = [executable, bids, tmp_path / f"out{number}", "participant", *FAST]
        argv += ["--work-dir", work] + (["--participant-label", *label] if label else [])
        jobs.append(
            subprocess.Popen(
                [str(a) for a in argv],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, "TEMPLATEFLOW_HOME": str(templateflow_home)},
            )
        )
    results = [(job.wait(timeout=600), job.stdout.read()) for job in jobs]
    for job in jobs:
        job.stdout.close()
    for (code, text), label in zip(results, labels, strict=True):
        assert code == 0, (label, text)
    for number, label in enumerate(labels):
        expected = [f"sub-{s}_task-rest_run-1" for s in (label or ["01", "02", "03"])]
        assert written_runs(tmp_path / f"out{number}") == expected
    assert len(list((work / "pybids_db").glob("index-*/layout_index.sqlite"))) == 1


# ----------------------------------------------------------- item 15: filter files


def _filter_file(tmp_path: Path, content) -> Path:
    path = tmp_path / "filters.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"bold": {"run": {"$gt": 1}}}, "'run'"),
        ({"bold": {"run": 1.5}}, "fraction"),
        ({"bold": {"run": True}}, "boolean"),
        ({"bold": {"run": [[1]]}}, "'run'"),
        ({"bold": {"run": []}}, "empty list"),
        ({"bold": {"session": "1 or 1=1"}}, "letters and digits"),
        ({"bold": {"colour": "red"}}, "unknown entity 'colour'"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        (b'{"bold": {"task": "r\xe9st"}}', "not UTF-8"),
        ("{", "not valid JSON"),
        ('{"bold": {"run": ' + "9" * 5000 + "}}", "not valid JSON"),
    ],
)
def test_a_bad_filter_file_is_a_usage_error(capsys, tmp_path, fmriprep_dataset, content, message):
    path = _filter_file(tmp_path, content)
    code, text = participant(capsys, fmriprep_dataset, tmp_path / "out", "--bids-filter-file", path)
    assert code == 2, text
    assert str(path) in text and message in text
    assert "Traceback" not in text


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_a_filter_path_that_is_not_a_file_never_hangs(capsys, tmp_path, fmriprep_dataset, kind):
    if kind == "fifo":
        path = tmp_path / "filters.json"
        os.mkfifo(path)  # nobody writes: opening it for reading would block for ever
    elif kind == "device":
        path = Path("/dev/zero")  # reading it would never end
    else:
        path = tmp_path
    code, text = participant(capsys, fmriprep_dataset, tmp_path / "out", "--bids-filter-file", path)
    assert code == 2, text
    assert str(path) in text and "not a regular file" in text


@pytest.mark.parametrize("value", [1, "1", "01", [1], ["1", 3]])
def test_run_filters_as_numbers_or_strings(capsys, tmp_path, fmriprep_dataset, value):
    path = _filter_file(tmp_path, {"bold": {"run": value}, "t1w": {"run": {"$gt": 1}}})
    runs = find_runs(fmriprep_dataset, participant_labels=["01"], bids_filters=path)
    assert [r.name for r in runs] == ["sub-01_task-rest_run-1"]


# ---------------------------------------------------- item 18: subjects left out


def test_subjects_with_bold_only_in_other_spaces_are_named(
    capsys, caplog, tmp_path, make_dataset, templateflow_home
):
    bids = make_dataset(subjects=["01", "02"], runs=[1], t1w_space=True, **TINY)
    for path in bids.glob(f"sub-02/func/*space-{SPACE}*"):
        path.unlink()
    with caplog.at_level(logging.WARNING):  # the default verbosity
        code, text = participant(capsys, bids, tmp_path / "out")
    assert code == 0, text
    assert written_runs(tmp_path / "out") == ["sub-01_task-rest_run-1"]
    (record,) = [r for r in caplog.records if "only in other spaces" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "02 (T1w)" in record.getMessage() and "--space" in record.getMessage()
