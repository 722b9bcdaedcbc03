"""The command line is a thin layer: argv -> RunConfig (the same as from Python) -> workflow.

Usage errors exit with 2 and a one-line message, before anything is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bidsapp import __version__, cli
from bidsapp.app.config import make_config


def _parse(argv: list[str]):
    return cli.config_from_args(cli.build_parser().parse_args(argv))


def test_every_option_reaches_the_config(tmp_path):
    filters = tmp_path / "filters.json"
    filters.write_text(json.dumps({"bold": {"run": 1}}))
    argv = [
        "in", "out", "participant",
        "--participant_label", "sub-01", "02",
        "--session-label", "ses-A",
        "--task", "rest",
        "--bids-filter-file", str(filters),
        "--space", "MNI152NLin6Asym",
        "--atlas", "HOSPA:th25", "--atlas", "local/my_dseg.nii.gz",
        "--atlas-lut", "lut.tsv",
        "--denoise-strategy", "scrubbing",
        "--confounds-columns", "trans_.*", "a_comp_cor_0[0-4]",
        "--fd-threshold", "0.3",
        "--std-dvars-threshold", "2",
        "--dummy-scans", "4",
        "--strategy", "median",
        "--standardize", "psc",
        "--detrend",
        "--low-pass", "0.08",
        "--high-pass", "0.01",
        "--smoothing-fwhm", "6",
        "--min-coverage", "0.25",
        "--n-jobs", "3",
        "--work-dir", "work",
        "--overwrite",
        "--no-reports",
        "-vv",
    ]  # fmt: skip
    config = _parse(argv)
    expected = make_config(
        "in",
        "out",
        "participant",
        participant_label=["01", "02"],
        session_label=["A"],
        task=["rest"],
        bids_filter_file={"bold": {"run": 1}},
        space="MNI152NLin6Asym",
        atlas=["HOSPA:th25", "local/my_dseg.nii.gz"],
        atlas_lut="lut.tsv",
        denoise_strategy="scrubbing",
        confounds_columns=["trans_.*", "a_comp_cor_0[0-4]"],
        fd_threshold=0.3,
        std_dvars_threshold=2.0,
        dummy_scans=4,
        strategy="median",
        standardize="psc",
        detrend=True,
        low_pass=0.08,
        high_pass=0.01,
        smoothing_fwhm=6.0,
        min_coverage=0.25,
        n_jobs=3,
        work_dir="work",
        overwrite=True,
        reports=False,
    )
    assert config == expected
    assert config.denoise.label == "custom"  # explicit columns replace the preset's
    assert config.work_dir == Path("work").absolute()


def test_defaults_equal_the_python_defaults():
    assert _parse(["in", "out", "group"]) == make_config("in", "out", "group")
    assert _parse(["in", "out", "participant", "--dummy-scans", "auto"]).denoise.dummy_scans is None


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--participant-label", "../../etc"], "invalid label '../../etc'"),
        (["--session-label", "ses-../x"], "--session-label"),
        (["--confounds-columns", "(unclosed"], "invalid regular expression"),
        (["--low-pass", "0.01", "--high-pass", "0.1"], "must be above --high-pass"),
    ],
)
def test_bad_values_exit_2_with_one_line(capsys, tmp_path, fmriprep_dataset, extra, message):
    out = tmp_path / "out"
    code, stdout, stderr = _main(capsys, fmriprep_dataset, out, "participant", *extra)
    assert code == cli.EXIT_USAGE == 2
    assert message in stderr and "Traceback" not in stderr
    assert [ln for ln in stderr.splitlines() if ln.startswith("bidsapp: error:")]
    assert not out.exists()


def test_output_dir_equal_to_bids_dir_exits_2(capsys, fmriprep_dataset):
    code, _, stderr = _main(capsys, fmriprep_dataset, fmriprep_dataset, "participant")
    assert code == 2
    assert "OUTPUT_DIR" in stderr and "is BIDS_DIR" in stderr
    # Also through a different spelling of the same directory.
    alias = fmriprep_dataset / "sub-01" / ".."
    assert _main(capsys, fmriprep_dataset, alias, "participant")[0] == 2


def test_bad_files_exit_2(capsys, tmp_path, fmriprep_dataset):
    out = tmp_path / "out"
    preset = tmp_path / "broken.json"
    preset.write_text('{"parameters": {"strategy": ["motion"], "motion": "huge"}}')
    cases = [
        (["--denoise-strategy", str(preset)], "--denoise-strategy"),
        (["--denoise-strategy", str(tmp_path / "absent.json")], "--denoise-strategy"),
        (["--atlas", str(tmp_path / "absent_dseg.nii.gz")], "no such file"),
        (["--atlas", "Schaefer-2018"], "--atlas"),
        (["--atlas-lut", str(tmp_path / "lut.tsv")], "--atlas-lut applies to a local atlas"),
    ]
    (tmp_path / "bad_filter.json").write_text('{"bold": {"colour": "red"}}')
    cases.append((["--bids-filter-file", str(tmp_path / "bad_filter.json")], "colour"))
    for extra, message in cases:
        code, _, stderr = _main(capsys, fmriprep_dataset, out, "participant", *extra)
        assert code == 2, (extra, stderr)
        assert message in stderr, (extra, stderr)
        assert "Traceback" not in stderr
    assert not list(out.rglob("*_timeseries.tsv"))


def test_bids_dir_without_dataset_description_exits_2(capsys, tmp_path):
    code, _, stderr = _main(capsys, tmp_path, tmp_path / "out", "participant")
    assert code == 2 and "dataset_description.json" in stderr


def test_version_and_help(capsys):
    assert _main(capsys, "--version")[:2] == (0, f"bidsapp {__version__}\n")
    code, stdout, _ = _main(capsys, "--help")
    assert code == 0
    for option in ("--participant-label", "--denoise-strategy", "--min-coverage", "--n-jobs"):
        assert option in stdout
    assert "exit codes:" in stdout and "no run matched" in stdout


def test_repeated_selection_options_accumulate():
    # fMRIPrep's convention: --participant-label 01 --participant-label 02 selects both.
    config = _parse(
        [
            "in", "out", "participant",
            "--participant-label", "01", "--participant-label", "sub-02", "03",
            "--session-label", "A", "--session-label", "B",
            "--task", "rest", "--task", "nback",
        ]
    )  # fmt: skip
    assert config.participant_labels == ("01", "02", "03")
    assert config.session_labels == ("A", "B")
    assert set(config.tasks) == {"rest", "nback"}


def test_min_time_and_atlas_space_reach_the_config():
    config = _parse(
        ["in", "out", "participant", "--min-time", "240", "--atlas-space", "MNI152NLin6Asym"]
    )
    assert config.denoise.min_time == 240.0
    assert config.atlas_space == "MNI152NLin6Asym"
    assert _parse(["in", "out", "participant"]).denoise.min_time == 0.0


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
@pytest.mark.parametrize("option", ["--low-pass", "--min-time", "--fd-threshold"])
def test_numbers_must_be_finite_and_non_negative(option, value, capsys):
    assert cli.main(["in", "out", "participant", option, value]) == cli.EXIT_USAGE
    assert option in capsys.readouterr().err


def test_atlas_space_must_be_a_label(capsys):
    assert cli.main(["in", "out", "participant", "--atlas-space", "../x"]) == cli.EXIT_USAGE
    assert "--atlas-space" in capsys.readouterr().err
