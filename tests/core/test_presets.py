"""The denoising presets offered besides nilearn's four, checked against their peers.

Every preset is checked on the real fMRIPrep confounds files shipped with nilearn 0.12.1
(fMRIPrep 21 ``desc-confounds_timeseries`` and 1.x ``desc-confounds_regressors``):

* presets nilearn can express (its ``load_confounds_strategy`` with keyword arguments, or
  ``load_confounds``) must give nilearn's regressors, values and kept volumes;
* giga_connectome's presets are its JSON parameters passed to nilearn's
  ``load_confounds_strategy`` (giga requires nilearn >= 0.13, whose scrubbing preset censors at
  std_dvars 1.5: nilearn 0.12.1 is told that value);
* XCP-D's presets (``24P``, ``36P``, ``acompcor``, ``acompcor_gsr``) must select the columns
  its nuisance YAML files name (literal names and ``^...$`` regular expressions, restated
  below from ``xcp_d/data/nuisance/*.yml``) in the same file.
"""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from nilearn.interfaces import fmriprep as nilearn_fmriprep

from bidsapp import confounds as bc
from bidsapp.app.config import PRESETS, DenoiseConfig, denoise_label

NILEARN_DATA = Path(nilearn_fmriprep.__file__).parent / "data"
SOURCES = {
    "v21": "test-v21_desc-confounds_timeseries",
    "1x": "test_desc-confounds_regressors",
}
PREPROC = "sub-01_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"

#: giga_connectome's ``data/denoise_strategy/*.json`` parameters (nilearn >= 0.13 keeps
#: std_dvars_threshold 1.5 when giga passes null); our name -> nilearn call.
GIGA = {
    "simple+gsr": ("simple", {"global_signal": "basic"}),
    "scrubbing.2": ("scrubbing", {"fd_threshold": 0.2, "std_dvars_threshold": 1.5}),
    "scrubbing.2+gsr": (
        "scrubbing",
        {"fd_threshold": 0.2, "std_dvars_threshold": 1.5, "global_signal": "basic"},
    ),
    "scrubbing.5": ("scrubbing", {"fd_threshold": 0.5, "std_dvars_threshold": 1.5}),
    "scrubbing.5+gsr": (
        "scrubbing",
        {"fd_threshold": 0.5, "std_dvars_threshold": 1.5, "global_signal": "basic"},
    ),
    "acompcor50": ("compcor", {}),
}

#: The other presets nilearn can express: ours -> (function, keyword arguments).
NILEARN = {
    "scrubbing+gsr": (
        "load_confounds_strategy",
        {
            "denoise_strategy": "scrubbing",
            "fd_threshold": 0.5,
            "std_dvars_threshold": 1.5,
            "global_signal": "basic",
        },
    ),
    "compcor+gsr": (
        "load_confounds_strategy",
        {"denoise_strategy": "compcor", "global_signal": "basic"},
    ),
    "24P": ("load_confounds", {"strategy": ("motion",), "motion": "full"}),
    "36P": (
        "load_confounds",
        {
            "strategy": ("motion", "wm_csf", "global_signal"),
            "motion": "full",
            "wm_csf": "full",
            "global_signal": "full",
        },
    ),
    "acompcor": (
        "load_confounds",
        {
            "strategy": ("high_pass", "motion", "compcor"),
            "motion": "derivatives",
            "compcor": "anat_separated",
            "n_compcor": 5,
        },
    ),
    "acompcor+gsr": (
        "load_confounds",
        {
            "strategy": ("high_pass", "motion", "compcor", "global_signal"),
            "motion": "derivatives",
            "compcor": "anat_separated",
            "n_compcor": 5,
            "global_signal": "basic",
        },
    ),
}

_MOTION = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")


def _xcpd_expanded(bases: tuple[str, ...], suffixes: tuple[str, ...]) -> list[str]:
    return [f"{b}{s}" for b in bases for s in suffixes]


_FULL = ("", "_derivative1", "_power2", "_derivative1_power2")
#: XCP-D's nuisance YAML ``columns`` lists
#: (xcp_d/data/nuisance/{24P,36P,acompcor,acompcor_gsr}.yml).
XCPD = {
    "24P": _xcpd_expanded(_MOTION, _FULL),
    "36P": _xcpd_expanded(_MOTION, _FULL)
    + _xcpd_expanded(("global_signal", "csf", "white_matter"), _FULL),
    "acompcor": _xcpd_expanded(_MOTION, ("", "_derivative1"))
    + [r"^w_comp_cor_0[0-4]$", r"^c_comp_cor_0[0-4]$", r"^cosine\d+$"],
    "acompcor+gsr": _xcpd_expanded(_MOTION, ("", "_derivative1"))
    + ["global_signal", r"^w_comp_cor_0[0-4]$", r"^c_comp_cor_0[0-4]$", r"^cosine\d+$"],
}


def _xcpd_columns(header: list[str], spec: list[str]) -> set[str]:
    """XCP-D's rule: a ``^...$`` entry is a regular expression, the others are names."""
    selected = set()
    for entry in spec:
        if entry.startswith("^") and entry.endswith("$"):
            selected |= {c for c in header if re.match(entry, c)}
        else:
            selected.add(entry)
    return selected


@pytest.fixture(params=sorted(SOURCES))
def image(request, tmp_path) -> str:
    """A real fMRIPrep confounds TSV + JSON beside an empty preprocessed-image file."""
    stem = "sub-01_task-rest_desc-confounds_timeseries"
    shutil.copy(NILEARN_DATA / f"{SOURCES[request.param]}.tsv", tmp_path / f"{stem}.tsv")
    shutil.copy(NILEARN_DATA / f"{SOURCES[request.param]}.json", tmp_path / f"{stem}.json")
    (tmp_path / PREPROC).touch()
    return str(tmp_path / PREPROC)


def quietly(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # all-censored and no-sample-mask warnings
        return function(*args, **kwargs)


def assert_same(ours, theirs) -> None:
    conf_ours, mask_ours = ours
    conf_theirs, mask_theirs = theirs
    assert list(conf_ours.columns) == list(conf_theirs.columns)
    pd.testing.assert_frame_equal(conf_ours, conf_theirs, check_exact=False, rtol=1e-10, atol=0)
    if mask_theirs is None:
        assert mask_ours is None
    else:
        np.testing.assert_array_equal(mask_ours, mask_theirs)


def test_presets_are_the_data_files():
    assert bc.list_presets() == sorted(p for p in PRESETS if p != "none")


def test_labels_are_alphanumeric_and_distinct():
    labels = {name: denoise_label(name) for name in PRESETS}
    assert all(re.fullmatch(r"[A-Za-z0-9]+", label) for label in labels.values()), labels
    assert len(set(labels.values())) == len(labels), labels
    assert labels["simple+gsr"] == "simpleGSR"
    assert labels["scrubbing.5"] == "scrubbing5"
    assert labels["scrubbing.2+gsr"] == "scrubbing2GSR"
    assert DenoiseConfig(name="36P").label == "36P"


@pytest.mark.parametrize("name", sorted(GIGA))
def test_giga_presets_equal_giga_parameters_in_nilearn(name, image):
    preset, kwargs = GIGA[name]
    theirs = quietly(nilearn_fmriprep.load_confounds_strategy, image, preset, **kwargs)
    ours = quietly(bc.load_confounds_strategy, image, name)
    assert_same(ours, theirs)


@pytest.mark.parametrize("name", sorted(NILEARN))
def test_presets_equal_nilearn(name, image):
    function, kwargs = NILEARN[name]
    theirs = quietly(getattr(nilearn_fmriprep, function), image, **kwargs)
    ours = quietly(bc.load_confounds_strategy, image, name)
    assert_same(ours, theirs)


@pytest.mark.parametrize("name", sorted(XCPD))
def test_xcpd_presets_select_xcpd_columns(name, tmp_path):
    """On the fMRIPrep 21 file (XCP-D reads fMRIPrep >= 20.2's separate w_/c_ names)."""
    stem = "sub-01_task-rest_desc-confounds_timeseries"
    for suffix in (".tsv", ".json"):
        shutil.copy(NILEARN_DATA / f"{SOURCES['v21']}{suffix}", tmp_path / f"{stem}{suffix}")
    (tmp_path / PREPROC).touch()
    header = list(pd.read_csv(tmp_path / f"{stem}.tsv", sep="\t", nrows=0).columns)
    expected = _xcpd_columns(header, XCPD[name])
    confounds, _ = quietly(bc.load_confounds_strategy, str(tmp_path / PREPROC), name)
    assert set(confounds.columns) == expected
    # The real file holds fewer than 5 of each: the test must still see both masks.
    assert any(c.startswith("w_comp_cor") for c in expected) == name.startswith("acompcor")
    assert any(c.startswith("c_comp_cor") for c in expected) == name.startswith("acompcor")


def test_aliases_hold_the_same_parameters():
    assert bc.load_preset("acompcor50")["parameters"] == bc.load_preset("compcor")["parameters"]
    assert bc.load_preset("scrubbing.5")["parameters"] == bc.load_preset("scrubbing")["parameters"]


@pytest.mark.parametrize("name", [p for p in PRESETS if "+gsr" in p])
def test_gsr_presets_add_only_the_basic_global_signal(name, image):
    base = name.replace("+gsr", "")
    with_gsr, mask = quietly(bc.load_confounds_strategy, image, name)
    without, base_mask = quietly(bc.load_confounds_strategy, image, base)
    assert set(with_gsr.columns) - set(without.columns) == {"global_signal"}
    assert set(without.columns) <= set(with_gsr.columns)
    if base_mask is None:
        assert mask is None
    else:
        np.testing.assert_array_equal(mask, base_mask)
