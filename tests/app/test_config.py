"""Settings: validation and normalisation of RunConfig, and the Python entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bidsapp import regions
from bidsapp.app.config import (
    DEFAULT_ATLAS,
    REDUCTIONS,
    ConfigError,
    DenoiseConfig,
    ExtractionConfig,
    RunConfig,
    denoise_label,
    fingerprint,
    make_config,
)


def test_settings_offer_the_core_region_reductions():
    assert REDUCTIONS == regions.REDUCTIONS


def test_make_config_defaults_match_the_documented_ones(tmp_path):
    config = make_config(tmp_path / "in", tmp_path / "out")
    assert config.analysis_level == "participant"
    assert config.atlases == (DEFAULT_ATLAS,)
    assert config.space == "MNI152NLin2009cAsym"
    assert config.denoise == DenoiseConfig(name="simple", label="simple")
    assert config.extraction == ExtractionConfig(
        strategy="mean",
        standardize="zscore_sample",
        detrend=False,
        low_pass=None,
        high_pass=None,
        smoothing_fwhm=None,
        min_coverage=0.5,
    )
    assert config.participant_labels is None and config.n_jobs == 1
    assert config.reports is True and config.overwrite is False
    assert config.bids_dir.is_absolute() and config.output_dir.is_absolute()


def test_labels_lose_their_prefix_and_duplicates(tmp_path):
    config = make_config(
        tmp_path,
        tmp_path / "out",
        participant_label=["sub-01", "02", "01"],
        session_label="ses-1",
        task=["task-rest"],
    )
    assert config.participant_labels == ("01", "02")
    assert config.session_labels == ("1",)
    assert config.tasks == ("rest",)


@pytest.mark.parametrize(
    "option, value",
    [
        ("participant_label", "../x"),
        ("participant_label", ["01", "sub-../../etc"]),
        ("session_label", "1/2"),
        ("task", "rest nback"),
        ("participant_label", ""),
    ],
)
def test_labels_that_could_escape_are_refused(tmp_path, option, value):
    with pytest.raises(ConfigError, match="invalid label"):
        make_config(tmp_path, tmp_path / "out", **{option: value})


@pytest.mark.parametrize(
    "options, message",
    [
        ({"denoise_strategy": "aggressive"}, "--denoise-strategy"),
        ({"confounds_columns": ["trans_(x"]}, "--confounds-columns"),
        ({"fd_threshold": -1}, "--fd-threshold"),
        ({"dummy_scans": "many"}, "--dummy-scans"),
        ({"dummy_scans": -2}, "--dummy-scans"),
        ({"strategy": "mode"}, "--strategy"),
        ({"standardize": "robust"}, "--standardize"),
        ({"low_pass": 0.01, "high_pass": 0.1}, "--low-pass"),
        ({"min_coverage": 1.5}, "--min-coverage"),
        ({"n_jobs": 0}, "--n-jobs"),
        ({"space": "MNI/../x"}, "--space"),
        ({"atlas": []}, "--atlas"),
        ({"analysis_level": "session"}, "analysis level"),
    ],
)
def test_unusable_values_name_their_option(tmp_path, options, message):
    with pytest.raises(ConfigError) as caught:
        make_config(tmp_path, tmp_path / "out", **options)
    assert message in str(caught.value)


def test_zero_disables_filters_and_smoothing(tmp_path):
    config = make_config(tmp_path, tmp_path / "o", low_pass=0, high_pass=0.0, smoothing_fwhm=0)
    assert config.extraction.low_pass is None
    assert config.extraction.high_pass is None
    assert config.extraction.smoothing_fwhm is None
    assert ExtractionConfig(standardize=False).standardize == "none"


def test_denoise_labels(tmp_path):
    preset = tmp_path / "my-preset_v2.json"
    config = make_config(tmp_path, tmp_path / "o", denoise_strategy=str(preset))
    assert config.denoise.label == "mypresetv2"
    assert Path(config.denoise.name).is_absolute() and config.denoise.is_preset_file
    columns = make_config(tmp_path, tmp_path / "o", confounds_columns="trans_[xyz]")
    assert columns.denoise.confounds_columns == ("trans_[xyz]",)
    assert columns.denoise.label == "custom"
    assert denoise_label("ica_aroma") == "icaaroma"
    assert make_config(tmp_path, tmp_path / "o", dummy_scans="auto").denoise.dummy_scans is None
    assert make_config(tmp_path, tmp_path / "o", dummy_scans="3").denoise.dummy_scans == 3


def test_bids_filter_file_is_read(tmp_path):
    path = tmp_path / "filters.json"
    path.write_text(json.dumps({"bold": {"session": "1"}}))
    config = make_config(tmp_path, tmp_path / "o", bids_filter_file=path)
    assert config.bids_filters == {"bold": {"session": "1"}}
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="--bids-filter-file"):
        make_config(tmp_path, tmp_path / "o", bids_filter_file=path)
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        make_config(tmp_path, tmp_path / "o", bids_filter_file=path)


def test_single_atlas_string_and_run_config_normalisation(tmp_path):
    config = make_config(tmp_path, tmp_path / "o", atlas="HOSPA:th25")
    assert config.atlases == ("HOSPA:th25",)
    direct = RunConfig(str(tmp_path), "relative/out", participant_labels="sub-7")
    assert direct.participant_labels == ("7",)
    assert direct.output_dir == Path("relative/out").absolute()


def test_fingerprint_changes_with_any_setting(tmp_path):
    base = make_config(tmp_path, tmp_path / "o")
    assert fingerprint(base.extraction) == fingerprint(
        make_config(tmp_path, tmp_path / "o").extraction
    )
    changed = make_config(tmp_path, tmp_path / "o", low_pass=0.1)
    assert fingerprint(base.extraction) != fingerprint(changed.extraction)


def test_import_is_lazy_and_run_is_exported():
    code = (
        "import sys, bidsapp\n"
        "heavy = [m for m in ('numpy', 'pandas', 'nibabel', 'bids', 'bidsapp.app.workflow')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert callable(bidsapp.run)\n"
        "from bidsapp import RunConfig, make_config, ConfigError, UsageProblem\n"
        "print(RunConfig.__module__, UsageProblem.__module__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["bidsapp.app.config", "bidsapp.app.checks"]


def test_bids_filter_file_values_are_checked_when_read(tmp_path):
    path = tmp_path / "filters.json"
    path.write_text(json.dumps({"bold": {"run": {"$gt": 1}}}))
    with pytest.raises(ConfigError, match="--bids-filter-file.*filters.json.*'run'"):
        make_config(tmp_path, tmp_path / "o", bids_filter_file=path)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # refused before it is opened: opening would block
    with pytest.raises(ConfigError, match="not a regular file"):
        make_config(tmp_path, tmp_path / "o", bids_filter_file=fifo)
    path.write_text(json.dumps({"bold": {"run": 1}, "t1w": {"run": {"$gt": 1}}}))
    config = make_config(tmp_path, tmp_path / "o", bids_filter_file=path)
    assert config.bids_filters == {"bold": {"run": 1}, "t1w": {"run": {"$gt": 1}}}
