"""Tests of bidsapp.confounds, with nilearn 0.12.1 as the oracle.

The confounds files are the real fMRIPrep outputs shipped in nilearn's package (fMRIPrep 21
``desc-confounds_timeseries`` and 1.x ``desc-confounds_regressors``), copied into tmp_path
beside empty image files: the loaders only read the image *names*.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from nilearn.interfaces import fmriprep as nilearn_fmriprep
from nilearn.interfaces.fmriprep.load_confounds_strategy import preset_strategies

from bidsapp import confounds as bc
from bidsapp.confounds import apply_censoring_overrides, load_confounds_columns

NILEARN_DATA = Path(nilearn_fmriprep.__file__).parent / "data"
SOURCES = {
    "v21": ("test-v21_desc-confounds_timeseries.tsv", "test-v21_desc-confounds_timeseries.json"),
    "1x": ("test_desc-confounds_regressors.tsv", "test_desc-confounds_regressors.json"),
    "no_nss": ("no_nonsteady_desc-confounds_regressors.tsv", "test_desc-confounds_regressors.json"),
}
PREFIX = "sub-01_task-rest"
PREPROC = f"{PREFIX}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
AROMA = f"{PREFIX}_space-MNI152NLin6Asym_desc-smoothAROMAnonaggr_bold.nii.gz"
N_VOLUMES = 30
# Our scrubbing defaults are fMRIPrep's (nilearn 0.13's); nilearn 0.12.1 must be told.
SCRUB_THRESHOLDS = {"fd_threshold": 0.5, "std_dvars_threshold": 1.5}


@dataclass
class Run:
    source: str
    preproc: str
    aroma: str
    tsv: Path
    sidecar: Path


def make_run(
    folder: Path,
    source: str = "1x",
    suffix: str = "timeseries",
    table: pd.DataFrame | None = None,
    sidecar: bool = True,
) -> Run:
    """Write a confounds TSV (+ JSON) and touch the images in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    tsv_name, json_name = SOURCES[source]
    tsv = folder / f"{PREFIX}_desc-confounds_{suffix}.tsv"
    if table is None:
        shutil.copy(NILEARN_DATA / tsv_name, tsv)
    else:
        table.to_csv(tsv, sep="\t", index=False, na_rep="n/a")
    meta = folder / f"{PREFIX}_desc-confounds_{suffix}.json"
    if sidecar:
        shutil.copy(NILEARN_DATA / json_name, meta)
    (folder / PREPROC).touch()
    (folder / AROMA).touch()
    return Run(source, str(folder / PREPROC), str(folder / AROMA), tsv, meta)


def source_table(source: str) -> pd.DataFrame:
    return pd.read_csv(NILEARN_DATA / SOURCES[source][0], sep="\t")


def assert_same(ours, theirs) -> None:
    """Compare (confounds, sample_mask) outputs: columns, order, values, mask."""
    conf_ours, mask_ours = ours
    conf_theirs, mask_theirs = theirs
    if conf_theirs is None:
        assert conf_ours is None
    else:
        assert list(conf_ours.columns) == list(conf_theirs.columns)
        pd.testing.assert_frame_equal(conf_ours, conf_theirs, check_exact=False, rtol=1e-10, atol=0)
    if mask_theirs is None:
        assert mask_ours is None
    else:
        assert mask_ours is not None
        assert np.issubdtype(mask_ours.dtype, np.integer)
        np.testing.assert_array_equal(mask_ours, mask_theirs)


def quietly(function, *args, **kwargs):
    """Call ``function`` ignoring warnings (compared in dedicated tests)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


@pytest.fixture(params=["v21", "1x"])
def run(request, tmp_path) -> Run:
    return make_run(tmp_path / request.param, request.param)


@pytest.fixture
def run_1x(tmp_path) -> Run:
    return make_run(tmp_path / "1x", "1x")


# --------------------------------------------------------------------------------------
# Preset data files
# --------------------------------------------------------------------------------------


def test_list_presets():
    assert {"compcor", "ica_aroma", "scrubbing", "simple"} <= set(bc.list_presets())


@pytest.mark.parametrize("name", ["simple", "scrubbing", "compcor", "ica_aroma"])
def test_builtin_presets_hold_nilearn_parameters(name):
    preset = bc.load_preset(name)
    expected = dict(preset_strategies[name])
    expected["strategy"] = list(expected["strategy"])
    if name == "scrubbing":
        # nilearn 0.12.1 still has the deprecated 0.2 / 3 thresholds.
        assert (expected["fd_threshold"], expected["std_dvars_threshold"]) == (0.2, 3)
        expected.update(SCRUB_THRESHOLDS)
    assert preset["parameters"] == expected
    accepted = [key for key in preset_strategies[name] if key not in ("strategy", "ica_aroma")]
    assert sorted(preset["overrides"]) == sorted(accepted)
    assert preset["name"] == name
    assert preset["description"]


def test_load_preset_returns_a_fresh_copy():
    first = bc.load_preset("simple")
    first["parameters"]["strategy"].append("scrub")
    first["overrides"].clear()
    second = bc.load_preset("simple")
    assert second["parameters"]["strategy"] == ["high_pass", "motion", "wm_csf"]
    assert second["overrides"]


def test_unknown_preset_is_a_key_error_like_nilearn(run_1x):
    with pytest.raises(KeyError):
        nilearn_fmriprep.load_confounds_strategy(run_1x.preproc, denoise_strategy="nope")
    with pytest.raises(bc.UnknownPresetError) as info:
        bc.load_confounds_strategy(run_1x.preproc, denoise_strategy="nope")
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, ValueError)
    assert "'nope'" in str(info.value) and "simple" in str(info.value)
    assert not str(info.value).startswith('"')


# --------------------------------------------------------------------------------------
# load_confounds_strategy parity
# --------------------------------------------------------------------------------------


def nilearn_strategy_kwargs(name: str, kwargs: dict) -> dict:
    if name == "scrubbing":
        return {**SCRUB_THRESHOLDS, **kwargs}
    return dict(kwargs)


@pytest.mark.parametrize("source", ["v21", "1x", "no_nss"])
@pytest.mark.parametrize("name", ["simple", "scrubbing", "compcor", "ica_aroma"])
def test_presets_match_nilearn(tmp_path, source, name):
    run = make_run(tmp_path, source)
    image = run.aroma if name == "ica_aroma" else run.preproc
    ours = quietly(bc.load_confounds_strategy, image, denoise_strategy=name)
    theirs = quietly(
        nilearn_fmriprep.load_confounds_strategy,
        image,
        denoise_strategy=name,
        **nilearn_strategy_kwargs(name, {}),
    )
    assert_same(ours, theirs)
    assert ours[0].shape[0] == N_VOLUMES


PRESET_OVERRIDES = [
    ("simple", {"motion": "basic"}),
    ("simple", {"wm_csf": "full", "global_signal": "full"}),
    ("simple", {"motion": "power2", "global_signal": "basic", "demean": False}),
    # censors some volumes of the fMRIPrep 21 file, none of the 1.x file
    ("scrubbing", {"scrub": 0, "fd_threshold": 1.5, "std_dvars_threshold": 3.5, "motion": "basic"}),
    # censors all volumes of the fMRIPrep 21 file, some of the 1.x file
    (
        "scrubbing",
        {
            "scrub": 3,
            "fd_threshold": 0.15,
            "std_dvars_threshold": 5,
            "motion": "derivatives",
            "wm_csf": "basic",
            "global_signal": "power2",
            "demean": False,
        },
    ),
    ("compcor", {"compcor": "temporal_anat_separated", "n_compcor": 3}),
    ("compcor", {"compcor": "anat_separated", "n_compcor": 2, "global_signal": "basic"}),
    ("compcor", {"compcor": "temporal", "motion": "basic", "demean": False}),
    ("ica_aroma", {"wm_csf": "power2", "global_signal": "derivatives"}),
    ("ica_aroma", {"demean": False}),
]


@pytest.mark.parametrize(("name", "kwargs"), PRESET_OVERRIDES)
def test_presets_with_overrides_match_nilearn(run, name, kwargs):
    image = run.aroma if name == "ica_aroma" else run.preproc
    ours = quietly(bc.load_confounds_strategy, image, denoise_strategy=name, **kwargs)
    theirs = quietly(
        nilearn_fmriprep.load_confounds_strategy,
        image,
        denoise_strategy=name,
        **nilearn_strategy_kwargs(name, kwargs),
    )
    assert_same(ours, theirs)
    default = quietly(bc.load_confounds_strategy, image, denoise_strategy=name)
    assert not (
        list(default[0].columns) == list(ours[0].columns)
        and np.allclose(default[0].to_numpy(), ours[0].to_numpy(), equal_nan=True)
        and _same_mask(default[1], ours[1])
    ), "the override changed nothing"


def _same_mask(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return np.array_equal(a, b)


def test_global_signal_override_adds_the_component(run_1x):
    confounds, _ = bc.load_confounds_strategy(run_1x.preproc, "simple", global_signal="full")
    assert [c for c in confounds.columns if c.startswith("global_signal")] == [
        "global_signal",
        "global_signal_derivative1",
        "global_signal_derivative1_power2",
        "global_signal_power2",
    ]
    plain, _ = bc.load_confounds_strategy(run_1x.preproc, "simple")
    assert not any(c.startswith("global_signal") for c in plain.columns)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("ica_aroma", {"ica_aroma": "basic"}), ("simple", {"scrub": 3, "compcor": "temporal"})],
)
def test_parameters_a_preset_does_not_accept_warn_and_are_ignored(run_1x, name, kwargs):
    image = run_1x.aroma if name == "ica_aroma" else run_1x.preproc
    with pytest.warns(UserWarning, match="not needed"):
        theirs = nilearn_fmriprep.load_confounds_strategy(image, denoise_strategy=name, **kwargs)
    with pytest.warns(UserWarning, match="not needed") as record:
        ours = bc.load_confounds_strategy(image, denoise_strategy=name, **kwargs)
    assert all(key in str(record[0].message) for key in kwargs)
    assert_same(ours, theirs)
    assert_same(ours, bc.load_confounds_strategy(image, denoise_strategy=name))


# --------------------------------------------------------------------------------------
# load_confounds parity, parameter by parameter
# --------------------------------------------------------------------------------------


def both(image, **kwargs):
    """Return (ours, nilearn's) outputs of load_confounds for the same arguments."""
    kwargs = {**SCRUB_THRESHOLDS, **kwargs}
    ours = quietly(bc.load_confounds, image, **kwargs)
    theirs = quietly(nilearn_fmriprep.load_confounds, image, **kwargs)
    return ours, theirs


@pytest.mark.parametrize("level", ["basic", "power2", "derivatives", "full"])
def test_motion_levels(run, level):
    ours, theirs = both(run.preproc, strategy=("motion",), motion=level)
    assert_same(ours, theirs)
    assert ours[0].shape == (N_VOLUMES, {"basic": 6, "full": 24}.get(level, 12))


@pytest.mark.parametrize("level", ["basic", "power2", "derivatives", "full"])
@pytest.mark.parametrize("component", ["wm_csf", "global_signal"])
def test_wm_csf_and_global_signal_levels(run, component, level):
    ours, theirs = both(run.preproc, strategy=("high_pass", component), **{component: level})
    assert_same(ours, theirs)
    n_bases = 2 if component == "wm_csf" else 1
    n_expected = n_bases * {"basic": 1, "full": 4}.get(level, 2)
    assert sum(not c.startswith("cosine") for c in ours[0].columns) == n_expected


@pytest.mark.parametrize("n_compcor", ["all", 1, 3, 500])
@pytest.mark.parametrize("compcor", list(bc.COMPCOR_GROUPS))
def test_compcor_variants(run, compcor, n_compcor):
    ours, theirs = both(
        run.preproc, strategy=("high_pass", "compcor"), compcor=compcor, n_compcor=n_compcor
    )
    assert_same(ours, theirs)
    assert any("comp_cor" in c for c in ours[0].columns)


def test_compcor_anat_combined_keeps_the_retained_components(tmp_path):
    run = make_run(tmp_path, "1x")
    meta = json.loads(run.sidecar.read_text())
    retained = sorted(
        key
        for key, value in meta.items()
        if key.startswith("a_comp_cor") and value["Mask"] == "combined"
    )
    confounds, _ = bc.load_confounds(
        run.preproc, strategy=("high_pass", "compcor"), compcor="anat_combined"
    )
    assert [c for c in confounds.columns if "comp_cor" in c] == retained
    assert len(retained) == 57


def test_ica_aroma_full_uses_the_denoised_image(run):
    ours, theirs = both(run.aroma, strategy=("high_pass", "wm_csf", "ica_aroma"))
    assert_same(ours, theirs)
    assert not any("aroma" in c for c in ours[0].columns)


def test_ica_aroma_full_alone_gives_no_regressor(run):
    ours, theirs = both(run.aroma, strategy=("ica_aroma",))
    assert_same(ours, theirs)
    assert ours[0].size == 0


def test_ica_aroma_basic_adds_noise_components(run_1x):
    ours, theirs = both(run_1x.preproc, strategy=("high_pass", "ica_aroma"), ica_aroma="basic")
    assert_same(ours, theirs)
    assert sum(c.startswith("aroma_motion") for c in ours[0].columns) == 13


def test_ica_aroma_basic_without_aroma_columns_fails(tmp_path):
    run = make_run(tmp_path, "v21")  # fMRIPrep 21 file has no aroma_motion columns
    with pytest.raises(ValueError):
        nilearn_fmriprep.load_confounds(run.preproc, strategy=("ica_aroma",), ica_aroma="basic")
    with pytest.raises(bc.ConfoundsError, match="aroma") as info:
        bc.load_confounds(run.preproc, strategy=("ica_aroma",), ica_aroma="basic")
    assert str(run.tsv) in str(info.value)


@pytest.mark.parametrize("demean", [True, False])
@pytest.mark.parametrize("source", ["v21", "1x", "no_nss"])
def test_demean(tmp_path, source, demean):
    run = make_run(tmp_path, source)
    ours, theirs = both(
        run.preproc,
        strategy=("high_pass", "motion", "wm_csf", "global_signal"),
        global_signal="full",
        demean=demean,
    )
    assert_same(ours, theirs)
    confounds, mask = ours
    kept = confounds.to_numpy() if mask is None else confounds.to_numpy()[mask]
    centred = np.abs(kept.mean(axis=0)) <= 1e-10 * np.abs(kept).max(axis=0)
    assert bool(centred.all()) is demean
    assert not confounds.isna().any().any()  # first-row n/a of derivatives filled


def test_demean_uses_only_kept_volumes(tmp_path):
    run = make_run(tmp_path, "v21")  # three non-steady-state volumes
    confounds, mask = bc.load_confounds(run.preproc, strategy=("motion",), motion="basic")
    np.testing.assert_array_equal(mask, np.arange(3, N_VOLUMES))
    values = confounds.to_numpy()
    np.testing.assert_allclose(values[mask].mean(axis=0), 0, atol=1e-12)
    assert np.abs(values.mean(axis=0)).max() > 1e-6


def test_first_row_derivatives_take_the_second_row_value(run_1x):
    confounds, _ = bc.load_confounds(
        run_1x.preproc, strategy=("motion",), motion="derivatives", demean=False
    )
    raw = source_table("1x")
    assert np.isnan(raw.loc[0, "trans_x_derivative1"])
    assert confounds.loc[0, "trans_x_derivative1"] == raw.loc[1, "trans_x_derivative1"]
    assert confounds.loc[5, "trans_x"] == raw.loc[5, "trans_x"]


def test_columns_sorted_and_every_volume_kept_in_rows(run):
    confounds, _ = bc.load_confounds(run.preproc)
    assert list(confounds.columns) == sorted(confounds.columns)
    assert len(confounds) == N_VOLUMES


def test_non_steady_state_volumes_always_censored(tmp_path):
    v21 = make_run(tmp_path / "v21", "v21")
    old = make_run(tmp_path / "1x", "1x")
    no_nss = make_run(tmp_path / "none", "no_nss")
    assert list(bc.load_confounds(v21.preproc)[1][:2]) == [3, 4]
    assert list(bc.load_confounds(old.preproc)[1][:2]) == [1, 2]
    assert bc.load_confounds(no_nss.preproc)[1] is None


def test_empty_strategy_warns_and_returns_none(run):
    with pytest.warns(UserWarning, match="empty"):
        theirs = nilearn_fmriprep.load_confounds(run.preproc, strategy=())
    with pytest.warns(UserWarning, match="empty"):
        ours = bc.load_confounds(run.preproc, strategy=())
    assert ours[0] is None
    assert_same(ours, theirs)


def test_non_steady_state_in_strategy_warns(run_1x):
    with pytest.warns(UserWarning, match="Non-steady"):
        ours = bc.load_confounds(run_1x.preproc, strategy=("non_steady_state", "motion"))
    theirs = quietly(
        nilearn_fmriprep.load_confounds, run_1x.preproc, strategy=("non_steady_state", "motion")
    )
    assert_same(ours, theirs)


# --------------------------------------------------------------------------------------
# Scrubbing
# --------------------------------------------------------------------------------------

# Volumes 3, 10, 12, 27 exceed the FD threshold and volume 20 the DVARS threshold;
# the 1.x file flags volume 0 as non-steady-state.
FD_OUTLIERS = [3, 10, 12, 27]
DVARS_OUTLIERS = [20]
EXPECTED_KEPT = {
    # scrub=0: only the outliers (and the non-steady-state volume) go.
    0: sorted(set(range(N_VOLUMES)) - {0, 3, 10, 12, 20, 27}),
    # scrub=5: also runs shorter than 5 volumes: 0-2, 11, 28-29.
    5: [*range(4, 10), *range(13, 20), *range(21, 27)],
    # scrub=7: also the 6-volume runs 4-9 and 21-26.
    7: list(range(13, 20)),
}


@pytest.fixture
def motion_run(tmp_path) -> Run:
    table = source_table("1x")
    table["framewise_displacement"] = 0.05
    table.loc[0, "framewise_displacement"] = np.nan
    table.loc[FD_OUTLIERS, "framewise_displacement"] = 0.9
    table["std_dvars"] = 0.8
    table.loc[DVARS_OUTLIERS, "std_dvars"] = 2.5
    return make_run(tmp_path, "1x", table=table)


@pytest.mark.parametrize("demean", [True, False])
@pytest.mark.parametrize("scrub", sorted(EXPECTED_KEPT))
def test_scrub_censors_outliers_and_short_segments(motion_run, scrub, demean):
    ours, theirs = both(
        motion_run.preproc,
        strategy=("high_pass", "motion", "wm_csf", "scrub"),
        scrub=scrub,
        fd_threshold=0.5,
        std_dvars_threshold=1.5,
        demean=demean,
    )
    assert_same(ours, theirs)
    assert ours[1].tolist() == EXPECTED_KEPT[scrub]
    assert not any("outlier" in c for c in ours[0].columns)


def test_scrub_thresholds_are_applied_separately(motion_run):
    ours, theirs = both(motion_run.preproc, strategy=("motion", "scrub"), scrub=0, fd_threshold=1.0)
    assert_same(ours, theirs)
    assert ours[1].tolist() == sorted(set(range(1, N_VOLUMES)) - set(DVARS_OUTLIERS))
    ours, theirs = both(
        motion_run.preproc, strategy=("motion", "scrub"), scrub=0, std_dvars_threshold=3.0
    )
    assert_same(ours, theirs)
    assert ours[1].tolist() == sorted(set(range(1, N_VOLUMES)) - set(FD_OUTLIERS))


@pytest.mark.parametrize("scrub", [5, N_VOLUMES + 10])
def test_scrub_without_outliers_censors_nothing(tmp_path, scrub):
    # The minimum-segment rule only applies once an outlier was found.
    run = make_run(tmp_path / "a", "no_nss")
    ours, theirs = both(run.preproc, strategy=("motion", "scrub"), fd_threshold=4, scrub=scrub)
    assert_same(ours, theirs)
    assert ours[1] is None


def test_scrub_on_real_data(run):
    # The fMRIPrep 21 test subject moves a lot more than the 1.x one.
    fd_threshold, std_dvars_threshold = (1.5, 2.5) if run.source == "v21" else (0.15, 1.2)
    ours, theirs = both(
        run.preproc,
        strategy=("motion", "scrub"),
        fd_threshold=fd_threshold,
        std_dvars_threshold=std_dvars_threshold,
    )
    assert_same(ours, theirs)
    assert 0 < len(ours[1]) < N_VOLUMES - 3


def test_scrub_ignored_when_not_in_strategy(motion_run):
    ours, theirs = both(motion_run.preproc, strategy=("motion",), scrub=5, fd_threshold=0.01)
    assert_same(ours, theirs)
    assert ours[1].tolist() == list(range(1, N_VOLUMES))


def test_all_volumes_censored_warns(motion_run):
    with pytest.warns(RuntimeWarning, match="motion outliers"):
        theirs = nilearn_fmriprep.load_confounds(
            motion_run.preproc,
            strategy=("motion", "scrub"),
            fd_threshold=0.0,
            std_dvars_threshold=1.5,
            scrub=0,
        )
    with pytest.warns(RuntimeWarning, match="motion outliers"):
        ours = bc.load_confounds(
            motion_run.preproc, strategy=("motion", "scrub"), fd_threshold=0.0, scrub=0
        )
    assert ours[1].size == 0
    assert_same(ours, theirs)


# --------------------------------------------------------------------------------------
# Finding the confounds file
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["v21", "1x"])
def test_old_regressors_naming(tmp_path, source):
    run = make_run(tmp_path, source, suffix="regressors")
    assert bc.find_confounds_file(run.preproc) == run.tsv
    for name in ("simple", "compcor"):
        ours = quietly(bc.load_confounds_strategy, run.preproc, name)
        theirs = quietly(nilearn_fmriprep.load_confounds_strategy, run.preproc, name)
        assert_same(ours, theirs)


def test_more_than_one_confounds_file(tmp_path):
    run = make_run(tmp_path, "1x")
    other = tmp_path / f"{PREFIX}_desc-confounds_regressors.tsv"
    shutil.copy(run.tsv, other)
    with pytest.raises(ValueError, match="more than one"):
        nilearn_fmriprep.load_confounds(run.preproc)
    with pytest.raises(bc.ConfoundsError, match="more than one") as info:
        bc.load_confounds(run.preproc)
    assert str(other) in str(info.value) and str(run.tsv) in str(info.value)


IMAGE_NAMES = {
    "native": ["sub-01_ses-a_task-rest_run-01_desc-preproc_bold.nii.gz"],
    "res": [
        "sub-01_ses-a_task-rest_run-01_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz"
    ],
    "part": ["sub-01_ses-a_task-rest_run-01_part-mag_space-T1w_desc-preproc_bold.nii.gz"],
    "cifti": ["sub-01_ses-a_task-rest_run-01_space-fsLR_den-91k_bold.dtseries.nii"],
    "gifti": [
        "sub-01_ses-a_task-rest_run-01_hemi-L_space-fsaverage5_bold.func.gii",
        "sub-01_ses-a_task-rest_run-01_hemi-R_space-fsaverage5_bold.func.gii",
    ],
}


@pytest.mark.parametrize("kind", list(IMAGE_NAMES))
def test_image_name_variants(tmp_path, kind):
    shutil.copy(
        NILEARN_DATA / SOURCES["v21"][0],
        tmp_path / "sub-01_ses-a_task-rest_run-01_desc-confounds_timeseries.tsv",
    )
    shutil.copy(
        NILEARN_DATA / SOURCES["v21"][1],
        tmp_path / "sub-01_ses-a_task-rest_run-01_desc-confounds_timeseries.json",
    )
    # Decoys: another run, no desc-confounds, entities out of order.
    for decoy in (
        "sub-01_ses-a_task-rest_run-02_desc-confounds_timeseries.tsv",
        "sub-01_ses-a_task-rest_run-01_timeseries.tsv",
        "run-01_sub-01_desc-confounds_timeseries.tsv",
    ):
        shutil.copy(NILEARN_DATA / SOURCES["1x"][0], tmp_path / decoy)
    images = [str(tmp_path / name) for name in IMAGE_NAMES[kind]]
    for image in images:
        Path(image).touch()
    image = images if kind == "gifti" else images[0]
    ours, theirs = both(image, strategy=("high_pass", "motion", "compcor"))
    assert_same(ours, theirs)
    assert ours[1].tolist() == list(range(3, N_VOLUMES))


def test_confounds_file_with_fewer_entities_is_found(tmp_path):
    make_run(tmp_path, "1x")
    image = tmp_path / f"{PREFIX}_run-3_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
    image.touch()
    assert bc.find_confounds_file(image) == tmp_path / f"{PREFIX}_desc-confounds_timeseries.tsv"
    assert_same(*both(str(image)))


def test_confounds_file_with_other_entity_values_is_not_found(tmp_path):
    make_run(tmp_path, "1x")
    image = tmp_path / "sub-02_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
    with pytest.raises(bc.ConfoundsError, match="Could not find"):
        bc.find_confounds_file(image)


def test_list_inputs_return_lists(tmp_path):
    first = make_run(tmp_path / "a", "1x")
    second = make_run(tmp_path / "b", "v21")
    ours = quietly(bc.load_confounds_strategy, [first.preproc, second.preproc], "scrubbing")
    theirs = quietly(
        nilearn_fmriprep.load_confounds_strategy,
        [first.preproc, second.preproc],
        "scrubbing",
        **SCRUB_THRESHOLDS,
    )
    assert isinstance(ours[0], list) and isinstance(ours[1], list)
    assert len(ours[0]) == len(ours[1]) == 2
    for index in range(2):
        assert_same((ours[0][index], ours[1][index]), (theirs[0][index], theirs[1][index]))


def test_one_element_list_returns_lists(run_1x):
    # Deliberate deviation: nilearn 0.12.1 returns a bare DataFrame for a 1-element list.
    confounds, masks = bc.load_confounds([run_1x.preproc])
    assert isinstance(confounds, list) and isinstance(masks, list)
    assert_same((confounds[0], masks[0]), nilearn_fmriprep.load_confounds([run_1x.preproc]))


def test_path_objects_are_accepted(run_1x):
    assert_same(
        bc.load_confounds(Path(run_1x.preproc)), nilearn_fmriprep.load_confounds(run_1x.preproc)
    )


# --------------------------------------------------------------------------------------
# Errors: images and strategies
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "match"),
    [
        ("motion", "tuple or list"),
        (("motion", "cardiac"), "cardiac is not a supported"),
        (("motion", "compcor"), "high_pass"),
    ],
)
def test_invalid_strategies(run_1x, strategy, match):
    with pytest.raises(ValueError):
        nilearn_fmriprep.load_confounds(run_1x.preproc, strategy=strategy)
    with pytest.raises(ValueError, match=match):
        bc.load_confounds(run_1x.preproc, strategy=strategy)


def test_full_ica_aroma_needs_the_aroma_image(run_1x):
    with pytest.raises(ValueError, match="smoothAROMAnonaggr"):
        nilearn_fmriprep.load_confounds(run_1x.preproc, strategy=("ica_aroma",))
    with pytest.raises(ValueError, match="smoothAROMAnonaggr") as info:
        bc.load_confounds(run_1x.preproc, strategy=("ica_aroma",))
    assert run_1x.preproc in str(info.value)


def test_aroma_image_needs_the_full_ica_aroma_strategy(run_1x):
    with pytest.raises(ValueError, match="Invalid file type"):
        nilearn_fmriprep.load_confounds(run_1x.aroma)
    with pytest.raises(ValueError, match="Invalid file type"):
        bc.load_confounds(run_1x.aroma)
    with pytest.raises(ValueError, match="Invalid file type"):
        bc.load_confounds(run_1x.aroma, strategy=("ica_aroma",), ica_aroma="basic")


def test_unsupported_input(run_1x):
    with pytest.raises(ValueError):
        nilearn_fmriprep.load_confounds(str(run_1x.tsv))
    with pytest.raises(ValueError, match="Unsupported input"):
        bc.load_confounds(str(run_1x.tsv))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"strategy": ("ica_aroma",), "ica_aroma": "invalid"}, "Current input: invalid"),
        ({"strategy": ("motion",), "motion": "quadratic"}, "motion must be one of"),
        ({"strategy": ("wm_csf",), "wm_csf": None}, "wm_csf must be one of"),
        ({"strategy": ("high_pass", "compcor"), "compcor": "anat"}, "compcor must be one of"),
        ({"strategy": ("high_pass", "compcor"), "n_compcor": 0}, "n_compcor"),
        ({"strategy": ("high_pass", "compcor"), "n_compcor": "some"}, "n_compcor"),
        ({"strategy": ("scrub",), "scrub": -1}, "scrub"),
        ({"strategy": ("scrub",), "fd_threshold": "high"}, "fd_threshold"),
    ],
)
def test_invalid_parameter_values(run_1x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        bc.load_confounds(run_1x.preproc, **kwargs)


def test_parameters_of_unused_components_are_ignored(run_1x):
    ours = bc.load_confounds(run_1x.preproc, strategy=("motion",), compcor="bogus", wm_csf=None)
    assert_same(ours, nilearn_fmriprep.load_confounds(run_1x.preproc, strategy=("motion",)))


# --------------------------------------------------------------------------------------
# Errors: files
# --------------------------------------------------------------------------------------


def test_missing_confounds_file(tmp_path):
    image = tmp_path / PREPROC
    image.touch()
    with pytest.raises(ValueError):
        nilearn_fmriprep.load_confounds(str(image))
    with pytest.raises(bc.ConfoundsError, match="Could not find") as info:
        bc.load_confounds(str(image))
    assert str(image) in str(info.value)


def test_image_in_missing_directory(tmp_path):
    with pytest.raises(bc.ConfoundsError, match="Could not find"):
        bc.load_confounds(str(tmp_path / "nowhere" / PREPROC))


def write_text_run(tmp_path, text: str) -> Run:
    run = make_run(tmp_path, "1x")
    run.tsv.write_text(text)
    return run


def test_wrong_delimiter(tmp_path):
    table = source_table("1x")
    run = make_run(tmp_path, "1x")
    table.to_csv(run.tsv, sep=",", index=False)
    with pytest.raises(bc.ConfoundsError, match="not tab-separated") as info:
        bc.load_confounds(run.preproc)
    assert str(run.tsv) in str(info.value)


def test_no_header(tmp_path):
    run = make_run(tmp_path, "1x")
    np.savetxt(run.tsv, np.random.default_rng(0).random((N_VOLUMES, 20)), delimiter="\t")
    with pytest.raises(ValueError, match="no header"):
        nilearn_fmriprep.load_confounds(run.preproc)
    with pytest.raises(bc.ConfoundsError, match="no header") as info:
        bc.load_confounds(run.preproc)
    assert str(run.tsv) in str(info.value)


def test_camel_case_header(tmp_path):
    table = source_table("1x")
    table = table.rename(columns=lambda c: "".join(p.title() for p in c.split("_")))
    run = make_run(tmp_path, "1x", table=table)
    with pytest.raises(ValueError, match="camel case"):
        nilearn_fmriprep.load_confounds(run.preproc)
    with pytest.raises(bc.ConfoundsError, match="camel case") as info:
        bc.load_confounds(run.preproc)
    assert str(run.tsv) in str(info.value)


@pytest.mark.parametrize("change", ["longer", "shorter"])
def test_ragged_rows(tmp_path, change):
    run = make_run(tmp_path, "1x")
    lines = run.tsv.read_text().splitlines()
    lines[4] = lines[4] + "\t0.5" if change == "longer" else lines[4].rsplit("\t", 3)[0]
    run.tsv.write_text("\n".join(lines) + "\n")
    with pytest.raises(bc.ConfoundsError, match="line 5") as info:
        bc.load_confounds(run.preproc)
    assert str(run.tsv) in str(info.value)


@pytest.mark.parametrize(("text", "match"), [("", "empty"), ("trans_x\ttrans_y\n", "no data rows")])
def test_empty_files(tmp_path, text, match):
    run = write_text_run(tmp_path, text)
    with pytest.raises(bc.ConfoundsError, match=match) as info:
        bc.load_confounds(run.preproc)
    assert str(run.tsv) in str(info.value)


def test_duplicated_columns(tmp_path):
    run = make_run(tmp_path, "1x")
    lines = run.tsv.read_text().splitlines()
    lines[0] = lines[0].replace("trans_y\t", "trans_x\t", 1)
    run.tsv.write_text("\n".join(lines) + "\n")
    with pytest.raises(bc.ConfoundsError, match="duplicated") as info:
        bc.load_confounds(run.preproc)
    assert "trans_x" in str(info.value)


def test_non_numeric_value_in_a_needed_column(tmp_path):
    table = source_table("1x").astype({"trans_x": object})
    table.loc[4, "trans_x"] = "abc"
    run = make_run(tmp_path, "1x", table=table)
    with pytest.raises(bc.ConfoundsError, match="non-numeric") as info:
        bc.load_confounds(run.preproc)
    message = str(info.value)
    assert "'trans_x'" in message and "'abc'" in message and str(run.tsv) in message


def test_non_numeric_value_in_a_column_not_needed(tmp_path):
    table = source_table("1x").astype({"dvars": object})
    table.loc[4, "dvars"] = "abc"
    run = make_run(tmp_path, "1x", table=table)
    assert_same(*both(run.preproc))


def test_non_numeric_scrub_column(tmp_path):
    table = source_table("1x").astype({"std_dvars": object})
    table.loc[7, "std_dvars"] = "high"
    run = make_run(tmp_path, "1x", table=table)
    with pytest.raises(bc.ConfoundsError, match="'std_dvars'"):
        bc.load_confounds(run.preproc, strategy=("motion", "scrub"))


@pytest.mark.parametrize(
    ("strategy", "dropped", "named"),
    [
        (("motion",), ["trans_y_derivative1"], ["trans_y_derivative1"]),
        (("high_pass", "wm_csf"), ["csf", "white_matter"], ["wm_csf", "csf", "white_matter"]),
        (("high_pass", "global_signal"), ["global_signal"], ["global_signal"]),
        (("high_pass", "compcor"), ["a_comp_cor_03"], ["a_comp_cor_03"]),
    ],
)
def test_missing_columns_are_named(tmp_path, strategy, dropped, named):
    table = source_table("1x").drop(columns=dropped)
    run = make_run(tmp_path, "1x", table=table)
    with pytest.raises((ValueError, KeyError)):
        nilearn_fmriprep.load_confounds(run.preproc, strategy=strategy)
    with pytest.raises(bc.ConfoundsError) as info:
        bc.load_confounds(run.preproc, strategy=strategy)
    message = str(info.value)
    assert str(run.tsv) in message
    assert all(name in message for name in named)


@pytest.mark.parametrize("column", ["framewise_displacement", "std_dvars"])
def test_scrub_needs_fd_and_dvars(tmp_path, column):
    run = make_run(tmp_path, "1x", table=source_table("1x").drop(columns=[column]))
    with pytest.raises(bc.ConfoundsError, match=column) as info:
        bc.load_confounds(run.preproc, strategy=("motion", "scrub"))
    assert str(run.tsv) in str(info.value)
    bc.load_confounds(run.preproc, strategy=("motion",))  # not needed without scrub


def test_malformed_json_sidecar(run_1x):
    run_1x.sidecar.write_text('{"a_comp_cor_00": {"Mask": "combined",}')
    with pytest.raises(ValueError):
        nilearn_fmriprep.load_confounds(run_1x.preproc)
    with pytest.raises(bc.ConfoundsError, match="Malformed JSON") as info:
        bc.load_confounds(run_1x.preproc)
    assert str(run_1x.sidecar) in str(info.value)


def test_json_sidecar_not_an_object(run_1x):
    run_1x.sidecar.write_text("[1, 2]")
    with pytest.raises(bc.ConfoundsError, match="expected an object") as info:
        bc.load_confounds(run_1x.preproc, strategy=("high_pass", "compcor"))
    assert str(run_1x.sidecar) in str(info.value)


def test_json_sidecar_entry_without_mask(run_1x):
    meta = json.loads(run_1x.sidecar.read_text())
    del meta["a_comp_cor_02"]["Mask"]
    run_1x.sidecar.write_text(json.dumps(meta))
    with pytest.raises(bc.ConfoundsError, match="a_comp_cor_02") as info:
        bc.load_confounds(run_1x.preproc, strategy=("high_pass", "compcor"))
    assert str(run_1x.sidecar) in str(info.value)


@pytest.mark.parametrize("compcor", ["anat_combined", "temporal"])
def test_missing_json_sidecar_with_compcor(tmp_path, compcor):
    run = make_run(tmp_path, "1x", sidecar=False)
    strategy = ("high_pass", "compcor")
    with pytest.raises(ValueError):
        nilearn_fmriprep.load_confounds(run.preproc, strategy=strategy, compcor=compcor)
    with pytest.raises(bc.ConfoundsError, match="JSON sidecar") as info:
        bc.load_confounds(run.preproc, strategy=strategy, compcor=compcor)
    assert str(run.sidecar) in str(info.value)


def test_missing_json_sidecar_without_compcor(tmp_path):
    run = make_run(tmp_path, "1x", sidecar=False)
    assert_same(*both(run.preproc, strategy=("high_pass", "motion", "wm_csf", "scrub")))


# --------------------------------------------------------------------------------------
# User presets
# --------------------------------------------------------------------------------------


def write_preset(folder: Path, content) -> Path:
    path = folder / "my_preset.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


USER_PRESET = {
    "description": "motion derivatives, full global signal, light scrubbing",
    "parameters": {
        "strategy": ["high_pass", "motion", "global_signal", "scrub"],
        "motion": "derivatives",
        "global_signal": "full",
        "scrub": 0,
        "fd_threshold": 0.15,
        "std_dvars_threshold": 1.2,
    },
    "overrides": ["fd_threshold", "global_signal"],
}


@pytest.mark.parametrize("as_path", [True, False])
def test_user_preset_file(motion_run, tmp_path, as_path):
    path = write_preset(tmp_path, USER_PRESET)
    preset = bc.load_preset(path if as_path else str(path))
    assert preset["name"] == "my_preset"
    assert preset["parameters"] == USER_PRESET["parameters"]
    ours = bc.load_confounds_strategy(motion_run.preproc, path if as_path else str(path))
    theirs = nilearn_fmriprep.load_confounds(
        motion_run.preproc,
        **{
            **USER_PRESET["parameters"],
            "strategy": ("high_pass", "motion", "global_signal", "scrub"),
        },
    )
    assert_same(ours, theirs)
    assert ours[1].tolist() == EXPECTED_KEPT[0]


def test_user_preset_overrides(run_1x, tmp_path):
    path = write_preset(tmp_path, USER_PRESET)
    ours = bc.load_confounds_strategy(run_1x.preproc, path, fd_threshold=0.1, global_signal="basic")
    parameters = {**USER_PRESET["parameters"], "fd_threshold": 0.1, "global_signal": "basic"}
    parameters["strategy"] = tuple(parameters["strategy"])
    assert_same(ours, nilearn_fmriprep.load_confounds(run_1x.preproc, **parameters))
    assert sum(c.startswith("global_signal") for c in ours[0].columns) == 1
    with pytest.warns(UserWarning, match="not needed"):
        bc.load_confounds_strategy(run_1x.preproc, path, motion="basic")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "Malformed"),
        ("[]", "expected a JSON object"),
        ({"strategy": ["motion"]}, "unknown key"),
        ({"parameters": {"motion": "full"}}, "strategy"),
        ({"parameters": {"strategy": "motion"}}, "list of strings"),
        ({"parameters": {"strategy": ["motion"], "tr": 2}}, "unknown parameter"),
        ({"parameters": {"strategy": ["motion", "cardiac"]}}, "cardiac"),
        ({"parameters": {"strategy": ["compcor"]}}, "high_pass"),
        ({"parameters": {"strategy": ["motion"], "motion": "huge"}}, "motion must be one of"),
        ({"parameters": {"strategy": ["motion"]}, "overrides": ["strategy"]}, "overrides"),
    ],
)
def test_malformed_user_presets(tmp_path, content, match):
    path = write_preset(tmp_path, content)
    with pytest.raises(bc.ConfoundsError, match=match) as info:
        bc.load_preset(path)
    assert str(path) in str(info.value)


def test_missing_preset_file(tmp_path):
    with pytest.raises(bc.UnknownPresetError, match="not a preset"):
        bc.load_preset(tmp_path / "absent.json")


# --------------------------------------------------------------------------------------
# Logged notices
# --------------------------------------------------------------------------------------


def test_file_without_cosine_columns_logs_a_warning(tmp_path, caplog):
    table = source_table("1x")
    run = make_run(tmp_path, "1x", table=table.drop(columns=table.filter(like="cosine").columns))
    with caplog.at_level("WARNING", logger="bidsapp.confounds"):
        ours = bc.load_confounds(run.preproc)
    assert "cosine" in caplog.text and str(run.tsv) in caplog.text
    assert_same(ours, nilearn_fmriprep.load_confounds(run.preproc))


def test_compcor_with_ica_aroma_is_allowed_but_logged(run_1x, caplog):
    strategy = ("high_pass", "compcor", "ica_aroma")
    with caplog.at_level("WARNING", logger="bidsapp.confounds"):
        ours = bc.load_confounds(run_1x.aroma, strategy=strategy)
    assert "ICA-AROMA" in caplog.text
    assert_same(ours, nilearn_fmriprep.load_confounds(run_1x.aroma, strategy=strategy))


def test_empty_strategy_with_a_list_gives_a_list_of_none(run_1x):
    with pytest.warns(UserWarning, match="empty"):
        confounds, masks = bc.load_confounds([run_1x.preproc, run_1x.preproc], strategy=[])
    assert confounds == [None, None]
    assert [mask.tolist() for mask in masks] == [list(range(1, N_VOLUMES))] * 2


# --------------------------------------------------------------------------------------
# Command-line adapters: censoring overrides and explicit columns
# --------------------------------------------------------------------------------------


def test_censoring_overrides_leave_preset_alone_without_thresholds():
    params = bc.load_preset("simple")["parameters"]
    assert apply_censoring_overrides(params) == params


def test_fd_threshold_adds_scrubbing_to_a_preset_without_it(run_1x):
    params = apply_censoring_overrides(bc.load_preset("simple")["parameters"], fd_threshold=0.1)
    assert "scrub" in params["strategy"]
    assert params["std_dvars_threshold"] == float("inf")
    params["strategy"] = tuple(params["strategy"])
    _, mask = quietly(bc.load_confounds, run_1x.preproc, **params)
    fd = source_table("1x")["framewise_displacement"].to_numpy()
    # Every volume above the threshold is censored; none below it is, unless a short segment.
    assert mask is not None
    assert not set(np.flatnonzero(fd > 0.1)) & set(mask.tolist())


def test_zero_thresholds_remove_scrubbing_from_the_scrubbing_preset():
    params = apply_censoring_overrides(
        bc.load_preset("scrubbing")["parameters"], fd_threshold=0, std_dvars_threshold=0
    )
    assert "scrub" not in params["strategy"]


def test_explicit_columns_by_regex(run_1x):
    table = source_table("1x")
    conf, mask = quietly(
        load_confounds_columns, run_1x.preproc, ["trans_[xyz]", "csf"], demean=False
    )
    assert list(conf.columns) == ["trans_x", "trans_y", "trans_z", "csf"]
    np.testing.assert_allclose(conf["csf"].to_numpy(), table["csf"].to_numpy())
    non_steady = [c for c in table.columns if "non_steady_state" in c]
    if non_steady:
        assert mask is not None and len(mask) == len(table) - len(non_steady)


def test_explicit_column_pattern_matching_nothing_names_file_and_pattern(run_1x):
    with pytest.raises(bc.ConfoundsError, match=r"no column matching 'nope_.\*'") as err:
        load_confounds_columns(run_1x.preproc, ["nope_.*"])
    assert "desc-confounds" in str(err.value)


# --------------------------------------------------------------------------------------
# Uncompressed images, fMRIPrep 1.0/1.1 headers, CompCor "Retained"
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["simple", "scrubbing", "compcor"])
def test_uncompressed_nii_image_is_accepted_like_its_gz_twin(run_1x, strategy):
    nii = Path(run_1x.preproc[: -len(".gz")])
    nii.touch()
    ours = quietly(bc.load_confounds_strategy, str(nii), strategy)
    twin = quietly(bc.load_confounds_strategy, run_1x.preproc, strategy)
    assert_same(ours, twin)


def test_uncompressed_aroma_image_is_accepted(run_1x):
    nii = Path(run_1x.aroma[: -len(".gz")])
    nii.touch()
    ours = quietly(bc.load_confounds_strategy, str(nii), "ica_aroma")
    assert_same(ours, quietly(bc.load_confounds_strategy, run_1x.aroma, "ica_aroma"))


def test_other_nii_names_are_still_refused(run_1x):
    other = Path(run_1x.preproc).with_name(f"{PREFIX}_desc-brain_mask.nii")
    other.touch()
    with pytest.raises(ValueError, match="does not match"):
        bc.load_confounds(str(other))


#: fMRIPrep 1.0/1.1 names of the fMRIPrep >= 1.2 columns (from fMRIPrep 1.1's documentation).
LEGACY_NAMES = {
    "csf": "CSF",
    "white_matter": "WhiteMatter",
    "global_signal": "GlobalSignal",
    "std_dvars": "stdDVARS",
    "dvars": "non-stdDVARS",
    "framewise_displacement": "FramewiseDisplacement",
    "trans_x": "X",
    "trans_y": "Y",
    "trans_z": "Z",
    "rot_x": "RotX",
    "rot_y": "RotY",
    "rot_z": "RotZ",
}


def _legacy_name(column: str) -> str | None:
    if column in LEGACY_NAMES:
        return LEGACY_NAMES[column]
    for prefix, legacy in (
        ("a_comp_cor_", "aCompCor"),
        ("t_comp_cor_", "tCompCor"),
        ("cosine", "Cosine"),
        ("non_steady_state_outlier", "NonSteadyStateOutlier"),
        ("aroma_motion_", "AROMAAggrComp"),
    ):
        if column.startswith(prefix):
            return legacy + column[len(prefix) :]
    return None  # expansions (derivative1, power2) did not exist in fMRIPrep 1.0/1.1


@pytest.fixture
def legacy_pair(tmp_path):
    """(modern run, fMRIPrep 1.0/1.1 run) holding the same values under both headers."""
    table = source_table("1x")
    # More motion than the real file has, so that censoring has work to do.
    table.loc[[5, 6, 20], "framewise_displacement"] = 0.9
    table.loc[[12], "std_dvars"] = 2.5
    modern = make_run(tmp_path / "modern", "1x", table=table)
    names = {c: _legacy_name(c) for c in table.columns}
    legacy_table = table[[c for c, n in names.items() if n]].rename(columns=names).copy()
    legacy_table.insert(5, "vx-wisestdDVARS", table["std_dvars"] * 1.1)
    legacy = make_run(tmp_path / "legacy", "1x", table=legacy_table, sidecar=False)
    return modern, legacy


def test_legacy_header_is_recognised(legacy_pair):
    _, legacy = legacy_pair
    header = pd.read_csv(legacy.tsv, sep="\t", nrows=0).columns
    assert bc.is_legacy_header(header)
    assert not bc.is_legacy_header(source_table("1x").columns)
    assert bc.motion_measure_columns(header) == {
        "framewise_displacement": "FramewiseDisplacement",
        "std_dvars": "stdDVARS",
    }
    assert bc.non_steady_state_columns(header) == ["NonSteadyStateOutlier00"]


@pytest.mark.parametrize(
    "thresholds", [{}, {"fd_threshold": 0.5}, {"fd_threshold": 0.5, "std_dvars_threshold": 1.5}]
)
def test_legacy_file_with_explicit_columns_matches_the_modern_file(legacy_pair, thresholds):
    modern, legacy = legacy_pair
    ours, ours_mask = load_confounds_columns(
        legacy.preproc,
        ["X", "Y", "Z", "Rot[XYZ]", "CSF", "WhiteMatter", "aCompCor0[0-4]"],
        **thresholds,
    )
    expected, expected_mask = load_confounds_columns(
        modern.preproc,
        ["trans_[xyz]", "rot_[xyz]", "csf", "white_matter", "a_comp_cor_0[0-4]"],
        **thresholds,
    )
    assert list(ours.columns)[:3] == ["X", "Y", "Z"]
    np.testing.assert_allclose(ours.to_numpy(), expected.to_numpy())
    np.testing.assert_array_equal(ours_mask, expected_mask)
    # The non-steady-state volume is censored, and the thresholds censor more.
    assert 0 not in ours_mask
    if thresholds:
        assert ours_mask.size < N_VOLUMES - 1


def test_legacy_non_steady_state_column_selected_by_a_pattern_censors(legacy_pair):
    _, legacy = legacy_pair
    confounds, mask = load_confounds_columns(legacy.preproc, ["X", "NonSteady.*"])
    assert list(confounds.columns) == ["X"]
    assert 0 not in mask


def test_legacy_file_without_fd_column_names_both_names(legacy_pair):
    _, legacy = legacy_pair
    table = pd.read_csv(legacy.tsv, sep="\t").drop(columns="FramewiseDisplacement")
    table.to_csv(legacy.tsv, sep="\t", index=False, na_rep="n/a")
    with pytest.raises(bc.ConfoundsError, match="FramewiseDisplacement") as info:
        load_confounds_columns(legacy.preproc, ["X"], fd_threshold=0.5)
    assert str(legacy.tsv) in str(info.value)
    # Without a threshold on it, the missing measure does not matter.
    load_confounds_columns(legacy.preproc, ["X"], std_dvars_threshold=1.5)


@pytest.mark.parametrize("preset", ["simple", "scrubbing", "compcor"])
def test_preset_on_a_legacy_file_says_what_to_do(legacy_pair, preset):
    _, legacy = legacy_pair
    with pytest.raises(bc.ConfoundsError, match="fMRIPrep 1.0") as info:
        quietly(bc.load_confounds_strategy, legacy.preproc, preset)
    message = str(info.value)
    assert str(legacy.tsv) in message and "--confounds-columns" in message


def _mark_not_retained(sidecar: Path, columns: list[str]) -> None:
    meta = json.loads(sidecar.read_text())
    for column in columns:
        meta[column]["Retained"] = False
    sidecar.write_text(json.dumps(meta))


def test_nilearn_sidecars_mark_no_compcor_column_as_not_retained():
    """Respecting "Retained" cannot change parity on the real files nilearn ships."""
    for _, json_name in SOURCES.values():
        meta = json.loads((NILEARN_DATA / json_name).read_text())
        dropped = [k for k, v in meta.items() if isinstance(v, dict) and v.get("Retained") is False]
        assert dropped == [] or not any("comp_cor" in k for k in dropped)


@pytest.mark.parametrize("compcor", ["anat_combined", "temporal", "temporal_anat_separated"])
def test_compcor_never_selects_components_marked_not_retained(tmp_path, compcor):
    run = make_run(tmp_path, "1x")
    before, _ = bc.load_confounds(run.preproc, strategy=("high_pass", "compcor"), compcor=compcor)
    chosen = [c for c in before.columns if "comp_cor" in c]
    dropped = [chosen[1], chosen[-1]]
    _mark_not_retained(run.sidecar, dropped)
    after, _ = bc.load_confounds(run.preproc, strategy=("high_pass", "compcor"), compcor=compcor)
    # nilearn 0.12.1 ignores "Retained": the expectation is its selection minus those two.
    assert [c for c in after.columns if "comp_cor" in c] == [c for c in chosen if c not in dropped]


def test_compcor_n_compcor_counts_only_retained_components(tmp_path):
    run = make_run(tmp_path, "1x")
    _mark_not_retained(run.sidecar, ["t_comp_cor_00"])
    confounds, _ = bc.load_confounds(
        run.preproc, strategy=("high_pass", "compcor"), compcor="temporal", n_compcor=2
    )
    assert [c for c in confounds.columns if "comp_cor" in c] == ["t_comp_cor_01", "t_comp_cor_02"]


def test_compcor_non_boolean_retained_names_the_sidecar(tmp_path):
    run = make_run(tmp_path, "1x")
    meta = json.loads(run.sidecar.read_text())
    meta["a_comp_cor_00"]["Retained"] = "no"
    run.sidecar.write_text(json.dumps(meta))
    with pytest.raises(bc.ConfoundsError, match="Retained") as info:
        bc.load_confounds(run.preproc, strategy=("high_pass", "compcor"))
    assert str(run.sidecar) in str(info.value)
