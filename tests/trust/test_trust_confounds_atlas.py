"""End-to-end trust tests for confounds, atlases and the group level (``bidsapp.cli.main``).

Each builds a small synthetic fMRIPrep dataset (:func:`bidsapp.synthetic.make_fmriprep_dataset`)
and checks that an odd but legitimate input gives the right numbers, and that a wrong one
fails with a message naming the file, never a silently wrong result.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bidsapp import cli

SPACE = "MNI152NLin2009cAsym"
AROMA_SPACE = "MNI152NLin6Asym"
SMALL = {"subjects": ("01",), "runs": (1,), "n_volumes": 40}

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def timeseries(out: Path) -> dict[str, pd.DataFrame]:
    """Every timeseries TSV under ``out``, by file name."""
    return {p.name: pd.read_csv(p, sep="\t") for p in sorted(out.rglob("*_timeseries.tsv"))}


# ----------------------------------------------------------------------------- item 14


@pytest.mark.parametrize(
    ("strategy", "atlas"),
    [
        ("simple", "Schaefer2018:100Parcels7Networks"),
        ("scrubbing", "Schaefer2018:100Parcels7Networks"),
        ("compcor", "Schaefer2018:100Parcels7Networks"),
        ("ica_aroma", "HOSPA:th25"),
    ],
)
def test_uncompressed_nii_bold_gives_the_numbers_of_its_gz_twin(
    make_dataset, templateflow_home, tmp_path, capsys, strategy, atlas
):
    # 80 volumes: scrubbing's 33 regressors must leave residual degrees of freedom.
    options = {
        **SMALL,
        "n_volumes": 80,
        "aroma": strategy == "ica_aroma",
        "templateflow_home": templateflow_home,
    }
    nii = make_dataset(bold_extension=".nii", **options)
    gz = make_dataset(**options)
    assert list(nii.rglob("*_desc-preproc_bold.nii")) and not list(nii.rglob("func/*.nii.gz"))
    results = {}
    for name, bids in (("nii", nii), ("gz", gz)):
        out = tmp_path / f"out-{name}"
        code, out_text, err = run_cli(
            capsys,
            bids,
            out,
            "participant",
            "--denoise-strategy",
            strategy,
            "--atlas",
            atlas,
            "--no-reports",
        )
        assert code == 0, err + out_text
        results[name] = timeseries(out)
    assert results["nii"] and list(results["nii"]) == list(results["gz"])
    for name, table in results["nii"].items():
        np.testing.assert_allclose(
            table.to_numpy(float), results["gz"][name].to_numpy(float), rtol=1e-6, atol=1e-7
        )
        assert np.isfinite(table.to_numpy(float)).any()


# ----------------------------------------------------------------------------- item 19

#: fMRIPrep 1.0/1.1 header names of the synthetic dataset's fMRIPrep >= 1.2 columns.
LEGACY = {
    "trans_x": "X", "trans_y": "Y", "trans_z": "Z",
    "rot_x": "RotX", "rot_y": "RotY", "rot_z": "RotZ",
    "csf": "CSF", "white_matter": "WhiteMatter", "global_signal": "GlobalSignal",
    "std_dvars": "stdDVARS", "dvars": "non-stdDVARS",
    "framewise_displacement": "FramewiseDisplacement",
}  # fmt: skip


def _to_legacy(table: pd.DataFrame) -> pd.DataFrame:
    names = {}
    for column in table.columns:
        if column in LEGACY:
            names[column] = LEGACY[column]
        elif column.startswith("a_comp_cor_"):
            names[column] = "aCompCor" + column[len("a_comp_cor_") :]
        elif column.startswith("t_comp_cor_"):
            names[column] = "tCompCor" + column[len("t_comp_cor_") :]
        elif column.startswith("cosine"):
            names[column] = "Cosine" + column[len("cosine") :]
        elif column.startswith("non_steady_state_outlier"):
            names[column] = "NonSteadyStateOutlier" + column[len("non_steady_state_outlier") :]
    legacy = table[list(names)].rename(columns=names).copy()
    legacy["vx-wisestdDVARS"] = table["std_dvars"] * 1.1
    return legacy


@pytest.fixture
def legacy_dataset(make_dataset, templateflow_home):
    """(fMRIPrep >= 1.2 dataset, the same with fMRIPrep 1.0/1.1 confounds headers)."""
    modern = make_dataset(templateflow_home=templateflow_home, **SMALL)
    legacy = make_dataset(templateflow_home=templateflow_home, **SMALL)
    for tsv in legacy.rglob("*_desc-confounds_timeseries.tsv"):
        table = pd.read_csv(tsv, sep="\t", na_values="n/a")
        _to_legacy(table).to_csv(tsv, sep="\t", index=False, na_rep="n/a")
        tsv.with_suffix(".json").unlink()  # fMRIPrep 1.0/1.1 wrote no confounds sidecar
    return modern, legacy


@pytest.mark.parametrize("dummy_scans", [None, "3"])
def test_legacy_confounds_with_explicit_columns_and_censoring(
    legacy_dataset, tmp_path, capsys, dummy_scans
):
    modern, legacy = legacy_dataset
    censor = ["--fd-threshold", "0.3", "--std-dvars-threshold", "1.5"]
    censor += ["--dummy-scans", dummy_scans] if dummy_scans else []
    runs = {
        "modern": (modern, ["trans_[xyz]", "rot_[xyz]", "csf", "white_matter"]),
        "legacy": (legacy, ["X", "Y", "Z", "Rot[XYZ]", "CSF", "WhiteMatter"]),
    }
    found = {}
    for name, (bids, columns) in runs.items():
        out = tmp_path / f"out-{name}"
        code, _, err = run_cli(
            capsys,
            bids,
            out,
            "participant",
            "--atlas",
            "Schaefer2018:100Parcels7Networks",
            "--confounds-columns",
            *columns,
            *censor,
            "--no-reports",
        )
        assert code == 0, err
        (path,) = out.rglob("*_timeseries.tsv")
        sidecar = json.loads(path.with_suffix(".json").read_text())
        found[name] = (pd.read_csv(path, sep="\t").to_numpy(float), sidecar)
    np.testing.assert_allclose(found["legacy"][0], found["modern"][0], rtol=1e-6, atol=1e-7)
    kept = found["legacy"][1]["RetainedVolumes"]
    assert kept == found["modern"][1]["RetainedVolumes"]
    assert len(kept) < SMALL["n_volumes"] - 3  # the high-motion volumes are censored
    mean_fd = found["legacy"][1].get("MeanFramewiseDisplacement")
    assert mean_fd == pytest.approx(found["modern"][1]["MeanFramewiseDisplacement"])


def test_preset_on_legacy_confounds_fails_that_run_with_what_to_do(
    legacy_dataset, tmp_path, capsys
):
    _, legacy = legacy_dataset
    out = tmp_path / "out"
    code, out_text, err = run_cli(
        capsys,
        legacy,
        out,
        "participant",
        "--atlas",
        "Schaefer2018:100Parcels7Networks",
        "--no-reports",
    )
    assert code == 1
    text = out_text + err
    assert "fMRIPrep 1.0" in text and "--confounds-columns" in text
    assert "desc-confounds_timeseries.tsv" in text
    assert not list(out.rglob("*_timeseries.tsv"))


# ----------------------------------------------------------------------------- item 9


def _local_atlas(templateflow_home: Path, folder: Path, stem: str) -> Path:
    """A copy of the 2 mm Schaefer 100 atlas (MNI152NLin2009cAsym) under a local name."""
    source = templateflow_home / f"tpl-{SPACE}"
    folder.mkdir(parents=True, exist_ok=True)
    dseg = folder / f"{stem}_dseg.nii.gz"
    dseg.write_bytes(
        (
            source / f"tpl-{SPACE}_res-02_atlas-Schaefer2018_desc-100Parcels7Networks_dseg.nii.gz"
        ).read_bytes()
    )
    lut = source / f"tpl-{SPACE}_atlas-Schaefer2018_desc-100Parcels7Networks_dseg.tsv"
    (folder / f"{stem}_dseg.tsv").write_bytes(lut.read_bytes())
    return dseg


@pytest.fixture
def t1w_dataset(make_dataset, templateflow_home):
    return make_dataset(templateflow_home=templateflow_home, t1w_space=True, **SMALL)


def test_undeclared_local_atlas_space_is_a_usage_error(
    t1w_dataset, templateflow_home, tmp_path, capsys
):
    dseg = _local_atlas(templateflow_home, tmp_path / "atlases", "mine")
    out = tmp_path / "out"
    code, _, err = run_cli(
        capsys, t1w_dataset, out, "participant", "--space", "T1w", "--atlas", dseg
    )
    assert code == 2
    assert str(dseg) in err and "space-<label>" in err and "--atlas-space" in err
    assert not list(out.rglob("*_timeseries.tsv"))
    assert not list(out.rglob("tpl-T1w*"))


def test_local_atlas_of_another_space_fails_those_runs(
    t1w_dataset, templateflow_home, tmp_path, capsys
):
    dseg = _local_atlas(templateflow_home, tmp_path / "atlases", f"space-{SPACE}_atlas-mine")
    out = tmp_path / "out"
    code, out_text, err = run_cli(
        capsys, t1w_dataset, out, "participant", "--space", "T1w", "--atlas", dseg, "--no-reports"
    )
    assert code == 1
    assert str(dseg) in out_text + err and "not resampled across spaces" in out_text + err
    assert not list(out.rglob("*_timeseries.tsv"))
    assert not list(out.rglob("tpl-T1w*"))


@pytest.mark.parametrize("declared", ["T1w", "boldref"])
def test_local_atlas_declared_in_a_native_space_is_a_usage_error(
    t1w_dataset, templateflow_home, tmp_path, capsys, declared
):
    dseg = _local_atlas(templateflow_home, tmp_path / "atlases", "mine")
    code, _, err = run_cli(
        capsys,
        t1w_dataset,
        tmp_path / "out",
        "participant",
        "--space",
        "T1w",
        "--atlas",
        dseg,
        "--atlas-space",
        declared,
    )
    assert code == 2 and str(dseg) in err and "specific to one subject" in err


def test_atlas_space_option_declares_a_local_atlas(
    make_dataset, templateflow_home, tmp_path, capsys
):
    bids = make_dataset(templateflow_home=templateflow_home, **SMALL)
    dseg = _local_atlas(templateflow_home, tmp_path / "atlases", "mine")
    out = tmp_path / "out"
    code, _, err = run_cli(
        capsys,
        bids,
        out,
        "participant",
        "--atlas",
        dseg,
        "--atlas-space",
        SPACE,
        "--atlas",
        "Schaefer2018:100Parcels7Networks",
        "--no-reports",
    )
    assert code == 0, err
    found = timeseries(out)
    mine = next(t for n, t in found.items() if "atlas-mine_" in n)
    template = next(t for n, t in found.items() if "atlas-Schaefer2018100" in n)
    np.testing.assert_array_equal(mine.to_numpy(float), template.to_numpy(float))
    assert list((out / "sourcedata" / "atlases").glob(f"tpl-{SPACE}/*atlas-mine_dseg.nii.gz"))


def test_local_atlas_for_ica_aroma_runs_in_another_space_fails_them(
    make_dataset, templateflow_home, tmp_path, capsys
):
    bids = make_dataset(templateflow_home=templateflow_home, aroma=True, **SMALL)
    dseg = _local_atlas(templateflow_home, tmp_path / "atlases", "mine")
    out = tmp_path / "out"
    code, out_text, err = run_cli(
        capsys,
        bids,
        out,
        "participant",
        "--denoise-strategy",
        "ica_aroma",
        "--atlas",
        dseg,
        "--atlas-space",
        SPACE,
        "--no-reports",
    )
    assert code == 1
    assert AROMA_SPACE in out_text + err and str(dseg) in out_text + err
    assert not list(out.rglob("*_timeseries.tsv"))
    assert not list(out.rglob(f"tpl-{AROMA_SPACE}*"))


def test_atlas_space_without_a_local_atlas_is_a_usage_error(
    make_dataset, templateflow_home, tmp_path, capsys
):
    bids = make_dataset(templateflow_home=templateflow_home, **SMALL)
    code, _, err = run_cli(capsys, bids, tmp_path / "out", "participant", "--atlas-space", SPACE)
    assert code == 2 and "--atlas-space" in err


# ----------------------------------------------------------------------- group level

GROUP_SUBJECTS = ("01", "02", "03", "04")
S100 = "Schaefer2018:100Parcels7Networks"


@pytest.fixture(scope="module")
def participant_outputs(tmp_path_factory, templateflow_home):
    """(BIDS dir, output dir) after the participant level: 4 subjects x 1 run, ok."""
    from bidsapp import synthetic as demo

    root = tmp_path_factory.mktemp("group-trust")
    bids = demo.make_fmriprep_dataset(
        root / "fmriprep",
        subjects=GROUP_SUBJECTS,
        runs=(1,),
        n_volumes=40,
        templateflow_home=templateflow_home,
    )
    out = root / "out"
    code = cli.main([str(bids), str(out), "participant", "--atlas", S100, "--no-reports"])
    assert code == 0
    return bids, out


@pytest.fixture
def outputs_copy(participant_outputs, tmp_path):
    import shutil

    bids, out = participant_outputs
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    return bids, copy


def _status(out: Path, subject: str) -> pd.DataFrame:
    return pd.read_csv(out / "logs" / f"sub-{subject}_status.tsv", sep="\t", dtype=str)


def _set_status(out: Path, subject: str, status: str, reason: str = "") -> None:
    """Rewrite a subject's status table as another version (or outcome) would have."""
    table = _status(out, subject)
    table["status"] = status
    table["reason"] = reason or "n/a"
    table.to_csv(out / "logs" / f"sub-{subject}_status.tsv", sep="\t", index=False)


def _group(capsys, bids, out, *extra) -> tuple[int, str, str, pd.DataFrame | None]:
    code, text, err = run_cli(capsys, bids, out, "group", "--no-reports", *extra)
    runs = out / "group" / "runs.tsv"
    table = pd.read_csv(runs, sep="\t", dtype=str) if runs.is_file() else None
    return code, text, err, table


def _runs_used(out: Path) -> int:
    (relmat,) = (out / "group").glob("*stat-pearsoncorrelation*_relmat.json")
    return json.loads(relmat.read_text())["NumberOfRuns"]


def test_group_reads_skipped_rows_of_older_versions_as_ok(outputs_copy, capsys):
    bids, out = outputs_copy
    _set_status(out, "02", "skipped", "sub-02: a warning of the original run")
    code, _, err, runs = _group(capsys, bids, out)
    assert code == 0, err
    assert set(runs["status"]) == {"ok"}
    assert (
        runs.loc[runs["subject"] == "02", "reason"].item()
        == "sub-02: a warning of the original run"
    )
    assert _runs_used(out) == len(GROUP_SUBJECTS)


@pytest.mark.parametrize("status", ["failed", "excluded"])
def test_group_leaves_out_failed_and_excluded_runs_despite_old_files(outputs_copy, capsys, status):
    bids, out = outputs_copy
    reason = "only 12 s of data left after censoring, below --min-time 60 s"
    _set_status(out, "03", status, reason)
    assert list(out.glob("sub-03/func/*_timeseries.tsv"))  # the older outputs remain
    code, text, err, runs = _group(capsys, bids, out)
    assert code == 0, err
    row = runs[runs["subject"] == "03"]
    assert row["status"].item() == status and row["reason"].item() == reason
    assert row["timeseries"].isna().all()
    assert _runs_used(out) == len(GROUP_SUBJECTS) - 1
    assert "left out 1 run outcome(s)" in text and f"1 {status}" in text and reason in text


def test_group_says_how_many_runs_have_no_participant_outputs_yet(outputs_copy, capsys):
    import shutil

    bids, out = outputs_copy
    for subject in ("02", "04"):
        shutil.rmtree(out / f"sub-{subject}")
        (out / "logs" / f"sub-{subject}_status.tsv").unlink()
    code, _, err, _ = _group(capsys, bids, out)
    assert code == 0
    assert "2 of 4 runs have no participant outputs yet" in err
    assert "sub-02_task-rest_run-1" in err and "sub-04_task-rest_run-1" in err
    # With the selection narrowed to finished subjects there is nothing to say.
    code, _, err, _ = _group(capsys, bids, out, "--participant-label", "01", "03")
    assert code == 0 and "no participant outputs yet" not in err


def test_group_goes_on_when_the_runs_cannot_be_listed(outputs_copy, capsys, monkeypatch):
    from bidsapp.dataset import query

    def broken(*args, **kwargs):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(query, "find_runs", broken)
    bids, out = outputs_copy
    code, _, err, runs = _group(capsys, bids, out)
    assert code == 0 and runs is not None
    assert "cannot list the runs" in err and "database is locked" in err


@pytest.mark.parametrize("target", ["runs.tsv", "qcfc.tsv", "_relmat.tsv", "group.html"])
@pytest.mark.parametrize("code_name", ["ENOSPC", "EDQUOT", "EROFS", "EACCES"])
def test_group_write_errors_name_the_file_and_leave_nothing_half_written(
    outputs_copy, capsys, monkeypatch, target, code_name
):
    import errno
    import os

    bids, out = outputs_copy
    number = getattr(errno, code_name)
    real_open, real_fsync, failing = os.open, os.fsync, set()

    def fake_open(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        if target in Path(path).name and Path(path).name.endswith(".tmp"):
            failing.add(fd)
        return fd

    def fake_fsync(fd):
        if fd in failing:
            raise OSError(number, os.strerror(number))
        return real_fsync(fd)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "fsync", fake_fsync)
    reports = [] if target == "group.html" else ["--no-reports"]
    code, text, err = run_cli(capsys, bids, out, "group", *reports)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert target in lines[0] and os.strerror(number) in lines[0]
    assert not [p for p in out.rglob("*.tmp")]
    assert not [p for p in [*out.glob("group/*"), *out.glob("*.html")] if target in p.name]


def _timeseries_of(out: Path, subject: str) -> Path:
    (path,) = out.glob(f"sub-{subject}/func/*_timeseries.tsv")
    return path


@pytest.mark.parametrize(
    "damage", ["cut_mid_line", "cut_lines", "garbage", "empty", "text_cell", "no_sidecar"]
)
def test_group_leaves_out_a_damaged_timeseries_and_names_it(outputs_copy, capsys, damage):
    bids, out = outputs_copy
    path = _timeseries_of(out, "02")
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    if damage == "cut_mid_line":
        path.write_text(text[: len(text) - len(lines[-1]) // 2])
    elif damage == "cut_lines":
        path.write_text("".join(lines[:-5]))
    elif damage == "garbage":
        path.write_bytes(b"\x1f\x8b\x08\x00\xff\xfe garbage \x00\x01")
    elif damage == "empty":
        path.write_text("")
    elif damage == "text_cell":
        cells = lines[3].split("\t")
        lines[3] = "\t".join(["oops", *cells[1:]])
        path.write_text("".join(lines))
    elif damage == "no_sidecar":
        path.with_suffix(".json").unlink()
    code, text_out, err, runs = _group(capsys, bids, out)
    assert code == 0, err
    assert str(path) in text_out and "Traceback" not in text_out + err
    assert _runs_used(out) == len(GROUP_SUBJECTS) - 1


def test_group_does_not_trust_a_garbled_status_table(outputs_copy, capsys):
    bids, out = outputs_copy
    _set_status(out, "01", "failed", "the run failed")
    table = out / "logs" / "sub-01_status.tsv"
    table.write_text(table.read_text()[:-15])  # cut short: the failure is unreadable
    code, text, err, runs = _group(capsys, bids, out)
    assert code == 0, err
    assert str(table) in text + err  # named once, in full
    row = runs[runs["subject"] == "01"]
    reason = row["reason"].item()
    assert row["status"].item() == "failed" and "logs/sub-01_status.tsv" in reason
    assert _runs_used(out) == len(GROUP_SUBJECTS) - 1
    # The other subjects' tables are still read.
    assert (runs.loc[runs["subject"] != "01", "status"] == "ok").all()
