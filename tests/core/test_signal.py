"""Tests of bidsapp.signal against nilearn 0.12.1's nilearn.signal (the numerical oracle).

Unless stated otherwise, results are compared in float64 with rtol=1e-5, atol=1e-6.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from nilearn import signal as nilearn_signal
from nilearn.glm.first_level.design_matrix import create_cosine_drift

from bidsapp import signal as bsig

# Our own deprecation of the population z-score (standardize="zscore", the default) is
# tested explicitly below; elsewhere it would only clutter the report.
pytestmark = pytest.mark.filterwarnings("ignore:standardize='zscore':DeprecationWarning")

RTOL = 1e-5
ATOL = 1e-6
N_TIME = 120
N_SIGNALS = 7
T_R = 2.0  # seconds: Nyquist frequency 0.25 Hz
HALF = N_TIME // 2

# Kept indices: drops the head (0-2), a burst (40, 41, 77) and the tail (117, 118). The
# pairs 1/118 and 2/117 are mirror images (i, n - 1 - i), which matters for nilearn's
# interpolation ahead of Butterworth filtering (see bidsapp.signal.clean, Notes).
INDEX_MASK = np.setdiff1d(np.arange(N_TIME), [0, 1, 2, 40, 41, 77, 117, 118])
BOOL_MASK = np.ones(N_TIME, dtype=bool)
BOOL_MASK[[5, 6, 60, 100, 114]] = False
RUN_INDEX_MASKS = [
    np.setdiff1d(np.arange(HALF), [0, 1, 30]),
    np.setdiff1d(np.arange(HALF), [10, 49, 59]),
]
RUN_BOOL_MASKS = [np.arange(HALF) % 13 != 5, np.arange(HALF) % 11 != 3]
TWO_RUNS = np.repeat([0, 1], HALF)

FILTERS = {
    "no-filter": {"filter": False},
    "butterworth-low": {"filter": "butterworth", "low_pass": 0.1},
    "butterworth-high": {"filter": "butterworth", "high_pass": 0.01},
    "butterworth-band": {"filter": "butterworth", "low_pass": 0.1, "high_pass": 0.01},
    "cosine-high": {"filter": "cosine", "high_pass": 0.01},
}


def _make_signals(seed: int = 0) -> np.ndarray:
    """Return positive-mean signals with trends and oscillations; column 3 has a negative mean."""
    rng = np.random.default_rng(seed)
    time = np.arange(N_TIME)
    signals = 100.0 + 5.0 * rng.normal(size=(N_TIME, N_SIGNALS))
    signals += 0.05 * np.outer(time, rng.normal(size=N_SIGNALS))
    signals += 3.0 * np.sin(np.outer(time, rng.uniform(0.05, 0.4, N_SIGNALS)))
    signals[:, 3] -= 250.0
    return signals


def _make_confounds(seed: int = 1) -> np.ndarray:
    """Return 4 confounds, two of them with a linear drift."""
    rng = np.random.default_rng(seed)
    time = np.arange(N_TIME)
    return rng.normal(size=(N_TIME, 4)) + np.outer(time, [0.01, 0.0, 0.02, 0.0])


@pytest.fixture(scope="module")
def signals() -> np.ndarray:
    return _make_signals()


@pytest.fixture(scope="module")
def confounds() -> np.ndarray:
    return _make_confounds()


@pytest.fixture(scope="module")
def confounds_tsv(tmp_path_factory: pytest.TempPathFactory, confounds: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("confounds") / "confounds.tsv"
    frame = pd.DataFrame(confounds, columns=["trans_x", "csf", "white_matter", "rot_z"])
    frame.to_csv(path, sep="\t", index=False)
    return path


def _both(signals: np.ndarray, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Run nilearn's and our clean on the same inputs, ignoring their warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = nilearn_signal.clean(signals, **kwargs)
        actual = bsig.clean(signals, **kwargs)
    return expected, actual


def _assert_parity(expected: np.ndarray, actual: np.ndarray, rtol=RTOL, atol=ATOL) -> None:
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------------------
# The cross product of the main options
# --------------------------------------------------------------------------------------


def _confounds_arg(kind: str | None, confounds: np.ndarray, tsv: Path):
    return {
        None: None,
        "array": confounds,
        "dataframe": pd.DataFrame(confounds, columns=list("abcd")),
        "tsv-path": str(tsv),
    }[kind]


def _sample_mask_arg(kind: str | None, with_runs: bool):
    if kind is None:
        return None
    if with_runs:
        masks = RUN_INDEX_MASKS if kind == "indices" else RUN_BOOL_MASKS
        return [mask.copy() for mask in masks]
    return INDEX_MASK.copy() if kind == "indices" else BOOL_MASK.copy()


STANDARDIZE = [False, "zscore", "zscore_sample", "psc"]
MASK_KINDS = [None, "indices", "boolean"]


def _cross_product_cases() -> list:
    """List the option combinations of the parity test.

    Full product of detrend x standardize x filter x confounds (none, array) x
    standardize_confounds x sample_mask x runs, except standardize_confounds=False without
    confounds, which changes nothing unless the cosine filter adds regressors. The other
    confound inputs (DataFrame, TSV path) only change how confounds are read, so they run
    over filter x sample_mask x runs, with the other options rotating.
    """
    cases = []
    for detrend in (True, False):
        for standardize in STANDARDIZE:
            for filter_name in FILTERS:
                for confounds_kind in (None, "array"):
                    for standardize_confounds in (True, False):
                        if (
                            confounds_kind is None
                            and not standardize_confounds
                            and not filter_name.startswith("cosine")
                        ):
                            continue
                        for mask_kind in MASK_KINDS:
                            for with_runs in (False, True):
                                cases.append(
                                    (
                                        detrend,
                                        standardize,
                                        filter_name,
                                        confounds_kind,
                                        standardize_confounds,
                                        mask_kind,
                                        with_runs,
                                    )
                                )
    rotation = 0
    for confounds_kind in ("dataframe", "tsv-path"):
        for filter_name in FILTERS:
            for mask_kind in MASK_KINDS:
                for with_runs in (False, True):
                    rotation += 1
                    cases.append(
                        (
                            rotation % 2 == 0,
                            STANDARDIZE[rotation % len(STANDARDIZE)],
                            filter_name,
                            confounds_kind,
                            rotation % 3 != 0,
                            mask_kind,
                            with_runs,
                        )
                    )
    return [pytest.param(*case, id="-".join(str(value) for value in case)) for case in cases]


@pytest.mark.parametrize(
    (
        "detrend",
        "standardize",
        "filter_name",
        "confounds_kind",
        "standardize_confounds",
        "mask_kind",
        "with_runs",
    ),
    _cross_product_cases(),
)
def test_clean_matches_nilearn(
    signals,
    confounds,
    confounds_tsv,
    detrend,
    standardize,
    filter_name,
    confounds_kind,
    standardize_confounds,
    mask_kind,
    with_runs,
):
    kwargs = {
        "detrend": detrend,
        "standardize": standardize,
        "standardize_confounds": standardize_confounds,
        "t_r": T_R,
        "confounds": _confounds_arg(confounds_kind, confounds, confounds_tsv),
        "sample_mask": _sample_mask_arg(mask_kind, with_runs),
        "runs": TWO_RUNS if with_runs else None,
        **FILTERS[filter_name],
    }
    expected, actual = _both(signals, **kwargs)
    _assert_parity(expected, actual)


# --------------------------------------------------------------------------------------
# Censoring with a Butterworth filter
# --------------------------------------------------------------------------------------

CENSORING_MASKS = {
    "head-and-tail": np.setdiff1d(np.arange(N_TIME), [0, 1, 2, 117, 118, 119]),
    "head-and-middle": np.setdiff1d(np.arange(N_TIME), [0, 1, 2, 50, 51]),
    "mirrored-pairs": np.setdiff1d(np.arange(N_TIME), [10, 11, 60, 108, 109]),
    "tail-only": np.arange(N_TIME - 4),
}


@pytest.mark.parametrize("with_confounds", [False, True])
@pytest.mark.parametrize("extrapolate", [True, False])
@pytest.mark.parametrize("mask_name", list(CENSORING_MASKS))
def test_censoring_with_butterworth_matches_nilearn(
    signals, confounds, mask_name, extrapolate, with_confounds
):
    expected, actual = _both(
        signals,
        sample_mask=CENSORING_MASKS[mask_name].copy(),
        filter="butterworth",
        low_pass=0.1,
        high_pass=0.01,
        t_r=T_R,
        extrapolate=extrapolate,
        confounds=confounds if with_confounds else None,
        standardize="zscore_sample",
    )
    _assert_parity(expected, actual)


def test_censored_volume_with_censored_mirror_is_not_interpolated(signals):
    # nilearn 0.12.1 fills the rows n - 1 - i for kept i. Volume 10 and its mirror 109 are
    # both censored, so volume 10 keeps its raw value and leaks into the filtered output;
    # volume 60 (mirror 59 kept) is interpolated, so its raw value does not matter.
    mask = CENSORING_MASKS["mirrored-pairs"]
    kwargs = {"low_pass": 0.1, "t_r": T_R, "standardize": False, "detrend": False}

    def run(spike_at: int, spike: float) -> np.ndarray:
        data = signals.copy()
        data[spike_at] += spike
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return bsig.clean(data, sample_mask=mask, **kwargs)

    assert not np.allclose(run(10, 1e3), run(10, 0.0))
    np.testing.assert_allclose(run(60, 1e3), run(60, 0.0), rtol=RTOL, atol=ATOL)


def test_extrapolate_true_warns_about_future_default(signals):
    with pytest.warns(FutureWarning, match="extrapolate"):
        bsig.clean(
            signals, sample_mask=INDEX_MASK, low_pass=0.1, t_r=T_R, standardize="zscore_sample"
        )


# --------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------


def test_interleaved_run_labels_match_nilearn(signals, confounds):
    runs = np.tile(np.repeat([0, 1], 6), N_TIME // 12)
    expected, actual = _both(signals, runs=runs, confounds=confounds, high_pass=0.01, t_r=T_R)
    _assert_parity(expected, actual)


def test_run_labels_other_than_0_to_n(signals):
    runs = np.repeat([3, 7], HALF)
    expected, actual = _both(signals, runs=runs, standardize="zscore_sample")
    _assert_parity(expected, actual)


def test_masks_for_runs_labelled_1_and_2_follow_sorted_labels(signals):
    # nilearn raises here (it counts run i's volumes with runs == i); we clean each run
    # with its mask, as nilearn does for runs labelled 0 and 1.
    masks = [np.arange(3, HALF), np.arange(0, HALF - 3)]
    kwargs = {"filter": False, "standardize": "zscore_sample"}
    actual = bsig.clean(signals, runs=np.repeat([1, 2], HALF), sample_mask=masks, **kwargs)
    expected = np.vstack(
        [
            nilearn_signal.clean(signals[:HALF], sample_mask=masks[0], **kwargs),
            nilearn_signal.clean(signals[HALF:], sample_mask=masks[1], **kwargs),
        ]
    )
    _assert_parity(expected, actual)


def test_single_run_label_with_mask_equals_no_runs(signals):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = nilearn_signal.clean(signals, sample_mask=INDEX_MASK, high_pass=0.01, t_r=T_R)
        actual = bsig.clean(
            signals,
            runs=np.zeros(N_TIME),
            sample_mask=[INDEX_MASK],
            high_pass=0.01,
            t_r=T_R,
        )
    _assert_parity(expected, actual)


def test_runs_ignore_per_call_settings_like_nilearn(signals, confounds, caplog):
    kwargs = {
        "runs": TWO_RUNS,
        "confounds": confounds,
        "detrend": False,
        "standardize_confounds": False,
        "low_pass": 0.1,
        "t_r": T_R,
        "butterworth__order": 2,
    }
    with caplog.at_level(logging.WARNING, logger="bidsapp.signal"):
        expected, actual = _both(signals, **kwargs)
    _assert_parity(expected, actual)
    assert "standardize_confounds=False" in caplog.text
    assert "butterworth__order=2" in caplog.text


# --------------------------------------------------------------------------------------
# Options, inputs and dtypes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"butterworth__order": 3},
        {"butterworth__padtype": "even"},
        {"butterworth__padtype": "constant", "butterworth__padlen": 10},
        {"butterworth__padtype": None},
        {"butterworth__copy": True},
    ],
)
def test_butterworth_options_match_nilearn(signals, options):
    expected, actual = _both(signals, low_pass=0.1, high_pass=0.01, t_r=T_R, **options)
    _assert_parity(expected, actual)


def test_ensure_finite_matches_nilearn(signals):
    data = signals.copy()
    data[3, 1] = np.nan
    data[7, 2] = np.inf
    data[9, 4] = -np.inf
    expected, actual = _both(data, ensure_finite=True, low_pass=0.1, t_r=T_R)
    _assert_parity(expected, actual)
    assert np.all(np.isfinite(actual))


@pytest.mark.parametrize(
    ("dtype", "expected_dtype"),
    [
        (np.int16, np.float32),
        (np.int32, np.float32),
        (np.uint8, np.float32),
        (np.int64, np.float64),
        (np.float32, np.float32),
        (np.float64, np.float64),
    ],
)
def test_dtypes_follow_nilearn(signals, confounds, dtype, expected_dtype):
    data = np.clip(signals, 0, 255).astype(dtype) if dtype == np.uint8 else signals.astype(dtype)
    expected, actual = _both(
        data, confounds=confounds, low_pass=0.1, t_r=T_R, standardize="zscore_sample"
    )
    assert actual.dtype == expected_dtype
    # float32 computations: compared at float32 precision.
    tolerance = {"rtol": 1e-4, "atol": 1e-5} if expected_dtype == np.float32 else {}
    _assert_parity(expected, actual, **tolerance)


@pytest.mark.parametrize("detrend", [True, False])
def test_psc_with_negative_and_positive_means(signals, detrend):
    assert signals.mean(axis=0)[3] < 0 < signals.mean(axis=0)[0]
    expected, actual = _both(signals, standardize="psc", detrend=detrend, filter=False)
    _assert_parity(expected, actual)
    # psc divides by |mean|, so the sign of the fluctuations is kept for negative means.
    centred = signals[:, 3] - signals[:, 3].mean()
    if not detrend:
        np.testing.assert_allclose(actual[:, 3], centred / abs(signals[:, 3].mean()) * 100)


def test_psc_zero_mean_signals_are_zeroed_with_warning(signals):
    data = signals - signals.mean(axis=0)
    data[:, 0] = 0.0
    with pytest.warns(UserWarning, match="psc"):
        actual = bsig.clean(data, standardize="psc", detrend=False, filter=False)
    expected, _ = _both(data, standardize="psc", detrend=False, filter=False)
    _assert_parity(expected, actual)
    assert np.all(actual[:, 0] == 0)


def test_single_time_point_is_left_unscaled(signals, confounds):
    with pytest.warns(UserWarning, match="1 time point"):
        actual = bsig.clean(signals[:1], confounds=confounds[:1], filter=False)
    expected, _ = _both(signals[:1], confounds=confounds[:1], filter=False)
    _assert_parity(expected, actual)


def test_one_dimensional_signal_is_one_column(signals):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = nilearn_signal.clean(signals[:, :1], low_pass=0.1, t_r=T_R)
        actual = bsig.clean(signals[:, 0], low_pass=0.1, t_r=T_R)
    assert actual.shape == (N_TIME,)
    np.testing.assert_allclose(actual, expected[:, 0], rtol=RTOL, atol=ATOL)


def test_list_input_is_accepted(signals):
    expected, _ = _both(signals, standardize="zscore_sample")
    actual = bsig.clean(signals.tolist(), standardize="zscore_sample")
    _assert_parity(expected, actual)


def test_masker_style_call_matches_nilearn(signals):
    # The call nilearn's maskers make (filter_and_extract), with their default settings.
    kwargs = {
        "detrend": False,
        "standardize": False,
        "standardize_confounds": True,
        "t_r": None,
        "low_pass": None,
        "high_pass": None,
        "confounds": None,
        "sample_mask": None,
        "runs": None,
    }
    expected, actual = _both(signals, **kwargs)
    _assert_parity(expected, actual)
    np.testing.assert_array_equal(actual, signals)


@pytest.mark.parametrize("standardize_confounds", [True, False])
@pytest.mark.parametrize("detrend", [True, False])
def test_constant_and_duplicate_confounds_match_nilearn(
    signals, confounds, detrend, standardize_confounds
):
    degenerate = np.column_stack([confounds, np.ones(N_TIME), 2.0 * confounds[:, 0]])
    expected, actual = _both(
        signals,
        confounds=degenerate,
        detrend=detrend,
        standardize_confounds=standardize_confounds,
        filter=False,
    )
    _assert_parity(expected, actual)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("layout", ["csv-header", "tsv-no-header", "whitespace", "path-object"])
def test_confound_files_match_nilearn(tmp_path, signals, confounds, layout):
    rows = [" ".join(repr(float(value)) for value in row) for row in confounds]
    if layout == "csv-header":
        lines = ["a,b,c,d"] + [row.replace(" ", ",") for row in rows]
    elif layout == "tsv-no-header":
        lines = [row.replace(" ", "\t") for row in rows]
    else:
        lines = rows
    path = _write(tmp_path / f"{layout}.txt", "\n".join(lines) + "\n")
    argument = path if layout == "path-object" else str(path)
    # nilearn cannot read a comma-separated file with a header (it sees NaNs), so the
    # oracle is given the values that were written.
    expected, _ = _both(signals, confounds=confounds, filter=False)
    actual = bsig.clean(signals, confounds=argument, filter=False)
    _assert_parity(expected, actual)


def test_confounds_list_and_1d_match_nilearn(signals, confounds, confounds_tsv):
    mixed = [confounds[:, 0], pd.DataFrame(confounds[:, 1:3]), str(confounds_tsv)]
    expected, actual = _both(signals, confounds=mixed, high_pass=0.01, t_r=T_R)
    _assert_parity(expected, actual)


def test_zero_column_confounds_do_nothing(signals):
    actual = bsig.clean(signals, confounds=np.empty((N_TIME, 0)), standardize="zscore_sample")
    expected = bsig.clean(signals, standardize="zscore_sample")
    np.testing.assert_array_equal(actual, expected)


def test_nan_confounds_in_censored_volumes_are_allowed(signals, confounds):
    # fMRIPrep's derivative columns start with n/a; censoring that volume makes it usable.
    with_nan = confounds.copy()
    with_nan[0, 1] = np.nan
    mask = np.arange(1, N_TIME)
    expected, actual = _both(signals, confounds=with_nan, sample_mask=mask, filter=False)
    _assert_parity(expected, actual)


def test_inputs_are_not_modified(signals, confounds):
    data = signals.copy()
    conf = confounds.copy()
    frame = pd.DataFrame(confounds.copy())
    mask = INDEX_MASK.astype(np.int32)
    kwargs = {"low_pass": 0.1, "t_r": T_R, "extrapolate": False}
    bsig.clean(data, confounds=[conf, frame], sample_mask=mask, **kwargs)
    np.testing.assert_array_equal(data, signals)
    np.testing.assert_array_equal(conf, confounds)
    np.testing.assert_array_equal(frame.to_numpy(), confounds)
    np.testing.assert_array_equal(mask, INDEX_MASK)


# --------------------------------------------------------------------------------------
# Filter warnings and clamping
# --------------------------------------------------------------------------------------


def test_low_pass_above_nyquist_is_clamped_with_warning(signals):
    with pytest.warns(UserWarning, match="low_pass"):
        bsig.clean(signals, low_pass=0.3, t_r=T_R)
    expected, actual = _both(signals, low_pass=0.3, t_r=T_R)
    _assert_parity(expected, actual)


def test_negative_high_pass_is_clamped_with_warning(signals):
    with pytest.warns(UserWarning, match="high_pass"):
        bsig.clean(signals, high_pass=-0.01, low_pass=0.1, t_r=T_R)
    expected, actual = _both(signals, high_pass=-0.01, low_pass=0.1, t_r=T_R)
    _assert_parity(expected, actual)


def test_band_collapsing_above_nyquist_returns_unfiltered(signals):
    with pytest.warns(UserWarning) as record:
        actual = bsig.clean(signals, high_pass=0.3, low_pass=0.4, t_r=T_R)
    messages = " ".join(str(warning.message) for warning in record)
    assert "high_pass=0.3" in messages
    assert "low_pass=0.4" in messages
    assert "unfiltered" in messages
    unfiltered = bsig.clean(signals, filter=False)
    np.testing.assert_allclose(actual, unfiltered, rtol=RTOL, atol=ATOL)
    expected, _ = _both(signals, high_pass=0.3, low_pass=0.4, t_r=T_R)
    _assert_parity(expected, actual)


def test_cutoffs_without_filter_warn(signals):
    with pytest.warns(UserWarning, match="ignored"):
        actual = bsig.clean(signals, filter=False, low_pass=0.1, t_r=T_R)
    np.testing.assert_allclose(actual, bsig.clean(signals, filter=False), rtol=RTOL, atol=ATOL)


def test_uncentred_confounds_warn(signals, confounds):
    with pytest.warns(UserWarning, match="standardize_confounds=False"):
        bsig.clean(signals, confounds=confounds, detrend=False, standardize_confounds=False)


def test_user_cosines_are_not_duplicated(signals, confounds):
    cosines = create_cosine_drift(0.01, np.arange(N_TIME) * T_R)[:, :-1]
    with_cosines = np.column_stack([confounds, cosines])
    with pytest.warns(UserWarning, match="cosine"):
        bsig.clean(signals, filter="cosine", high_pass=0.01, t_r=T_R, confounds=with_cosines)
    expected, actual = _both(
        signals, filter="cosine", high_pass=0.01, t_r=T_R, confounds=with_cosines
    )
    _assert_parity(expected, actual)


def test_cosine_filter_too_low_to_build_a_regressor_warns(signals):
    with pytest.warns(UserWarning, match="no cosine regressor"):
        bsig.clean(signals, filter="cosine", high_pass=1e-4, t_r=T_R)
    expected, actual = _both(signals, filter="cosine", high_pass=1e-4, t_r=T_R)
    _assert_parity(expected, actual)


@pytest.mark.parametrize("standardize", ["zscore", True])
def test_population_zscore_is_deprecated(signals, standardize):
    with pytest.warns(DeprecationWarning, match="zscore_sample"):
        bsig.clean(signals, standardize=standardize)
    expected, actual = _both(signals, standardize=standardize)
    _assert_parity(expected, actual)


def test_sample_zscore_is_not_deprecated(signals):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        bsig.clean(signals, standardize="zscore_sample")


# --------------------------------------------------------------------------------------
# Error paths of clean
# --------------------------------------------------------------------------------------

# (id, keyword arguments, exception, pattern the message must match, nilearn raises too)
CLEAN_ERRORS = [
    ("detrend-type", {"detrend": "yes"}, TypeError, "detrend", True),
    ("standardize_confounds-type", {"standardize_confounds": 1}, TypeError,
     "standardize_confounds", True),
    ("standardize-value", {"standardize": "zscored"}, ValueError, "standardize", True),
    ("ensure_finite-type", {"ensure_finite": "no"}, ValueError, "ensure_finite", True),
    ("extrapolate-type", {"extrapolate": "no"}, TypeError, "extrapolate", False),
    ("low_pass-type", {"low_pass": "0.1"}, TypeError, "low_pass", True),
    ("high_pass-bool", {"high_pass": True}, TypeError, "high_pass", True),
    ("low_pass-nan", {"low_pass": float("nan")}, ValueError, "low_pass", False),
    ("t_r-type", {"t_r": "2"}, TypeError, "t_r", True),
    ("t_r-zero", {"t_r": 0, "low_pass": 0.1}, ValueError, "t_r", False),
    ("t_r-missing", {"t_r": None, "low_pass": 0.1}, ValueError, "t_r", True),
    ("filter-name", {"filter": "gaussian"}, ValueError, "filter", True),
    ("filter-true", {"filter": True}, ValueError, "filter", True),
    ("cosine-no-high_pass", {"filter": "cosine"}, ValueError, "high_pass", True),
    ("cosine-no-t_r", {"filter": "cosine", "high_pass": 0.01, "t_r": None}, ValueError,
     "t_r", True),
    ("cosine-negative", {"filter": "cosine", "high_pass": -0.01}, ValueError, "high_pass",
     False),
    ("band-inverted", {"high_pass": 0.1, "low_pass": 0.05}, ValueError, "high_pass", True),
    ("high_pass-zero", {"high_pass": 0.0}, ValueError, "high_pass", True),
    ("low_pass-zero", {"low_pass": 0.0}, ValueError, "low_pass", True),
    ("runs-length", {"runs": np.zeros(10)}, ValueError, "runs", True),
    ("confounds-type", {"confounds": {"a": 1}}, TypeError, "confounds", True),
    ("confounds-item-type", {"confounds": [{"a": 1}]}, TypeError, "confounds", True),
    ("confounds-length", {"confounds": np.zeros((10, 2))}, ValueError, "confounds", True),
    ("confounds-3d", {"confounds": np.zeros((N_TIME, 2, 2))}, ValueError, "confounds", True),
    ("confounds-empty-list", {"confounds": []}, ValueError, "confounds", True),
    ("confounds-nan", {"confounds": np.full((N_TIME, 1), np.nan)}, ValueError, "confounds",
     True),
    ("confounds-strings", {"confounds": pd.DataFrame({"a": ["x"] * N_TIME})}, ValueError,
     "confounds", True),
    ("sample_mask-type", {"sample_mask": "0,1"}, TypeError, "sample_mask", True),
    ("sample_mask-negative", {"sample_mask": np.array([-1, 2, 3])}, ValueError,
     "sample_mask", True),
    ("sample_mask-too-large", {"sample_mask": np.array([0, 5, N_TIME])}, IndexError,
     "sample_mask", True),
    ("sample_mask-too-long", {"sample_mask": np.arange(N_TIME + 1) % N_TIME}, IndexError,
     "sample_mask", True),
    ("sample_mask-bool-length", {"sample_mask": np.ones(N_TIME - 5, dtype=bool)}, ValueError,
     "sample_mask", False),
    ("sample_mask-run-count", {"sample_mask": [np.arange(5)] * 2}, ValueError,
     "sample_mask", True),
    ("sample_mask-all-false", {"sample_mask": np.zeros(N_TIME, dtype=bool)},
     bsig.AllVolumesRemovedError, "sample_mask", True),
    ("sample_mask-empty", {"sample_mask": np.array([], dtype=int)},
     bsig.AllVolumesRemovedError, "sample_mask", True),
    ("sample_mask-2d", {"sample_mask": np.ones((2, 3), dtype=int)}, ValueError,
     "sample_mask", False),
    ("sample_mask-fractional", {"sample_mask": np.array([0.5, 1.5])}, TypeError,
     "sample_mask", False),
    ("sample_mask-unsorted-butterworth",
     {"sample_mask": np.array([5, 3, 9, 20, 40]), "low_pass": 0.1}, ValueError,
     "sample_mask", True),
    ("sample_mask-one-kept-butterworth", {"sample_mask": np.array([5]), "low_pass": 0.1},
     ValueError, "sample_mask", True),
    ("unknown-kwarg", {"smoothing": 3}, TypeError, "smoothing", False),
    ("unknown-butterworth-kwarg", {"butterworth__ripple": 3, "low_pass": 0.1}, TypeError,
     "butterworth__ripple", False),
    ("butterworth-padtype", {"butterworth__padtype": "mirror", "low_pass": 0.1}, ValueError,
     "padtype", True),
    ("butterworth-order", {"butterworth__order": 0, "low_pass": 0.1}, ValueError, "order",
     False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "exception", "pattern", "nilearn_raises"),
    [case[1:] for case in CLEAN_ERRORS],
    ids=[case[0] for case in CLEAN_ERRORS],
)
def test_clean_errors_name_the_parameter(signals, kwargs, exception, pattern, nilearn_raises):
    kwargs = {"t_r": T_R, **kwargs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(exception, match=pattern):
            bsig.clean(signals, **kwargs)
        if nilearn_raises:
            # Same family of exception as the oracle (ours may be a subclass).
            nilearn_type = ValueError if exception is bsig.AllVolumesRemovedError else exception
            with pytest.raises(nilearn_type):
                nilearn_signal.clean(signals, **kwargs)


@pytest.mark.parametrize(
    ("data", "exception"),
    [
        (np.zeros((4, 3, 2)), ValueError),
        (np.zeros((0, 3)), ValueError),
        (np.array([["a", "b"], ["c", "d"]]), TypeError),
        (np.float64(3.0), ValueError),
    ],
    ids=["3d", "no-time-point", "strings", "scalar"],
)
def test_clean_rejects_bad_signals(data, exception):
    with pytest.raises(exception, match="signals"):
        bsig.clean(data)


def test_clean_rejects_signals_too_short_for_the_filter(signals):
    with pytest.raises(ValueError, match="padlen"):
        bsig.clean(signals[:10], low_pass=0.1, t_r=T_R)


def test_cosine_filter_needs_two_time_points(signals):
    with pytest.raises(ValueError, match="signals"):
        bsig.clean(signals[:1], filter="cosine", high_pass=0.01, t_r=T_R)


@pytest.mark.parametrize(
    ("text", "exception"),
    [
        ("a\tb\n1\t2\n3\tx\n", ValueError),
        ("a\tb\n1\t2\n3\n", ValueError),
        ("", ValueError),
    ],
    ids=["non-numeric-cell", "ragged", "empty"],
)
def test_bad_confound_files_are_rejected(tmp_path, text, exception):
    path = _write(tmp_path / "confounds.tsv", text)
    with pytest.raises(exception, match="confounds"):
        bsig.clean(np.ones((2, 1)), confounds=str(path), filter=False)


def test_missing_confound_file_is_rejected(tmp_path, signals):
    with pytest.raises(FileNotFoundError, match="confounds"):
        bsig.clean(signals, confounds=str(tmp_path / "missing.tsv"))


def test_confound_file_with_wrong_length_is_rejected(confounds_tsv):
    with pytest.raises(ValueError, match="confounds"):
        bsig.clean(np.ones((N_TIME - 1, 2)), confounds=str(confounds_tsv), filter=False)


# --------------------------------------------------------------------------------------
# Public helpers
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("copy", [True, False])
@pytest.mark.parametrize(
    "cutoffs",
    [{"low_pass": 0.1}, {"high_pass": 0.01}, {"low_pass": 0.1, "high_pass": 0.01}, {}],
    ids=["low", "high", "band", "none"],
)
@pytest.mark.parametrize("one_dimensional", [False, True], ids=["2d", "1d"])
def test_butterworth_matches_nilearn(signals, cutoffs, copy, one_dimensional):
    data = signals[:, 0] if one_dimensional else signals
    ours_in = data.copy()
    theirs_in = data.copy()
    actual = bsig.butterworth(ours_in, 1 / T_R, copy=copy, **cutoffs)
    expected = nilearn_signal.butterworth(theirs_in, 1 / T_R, copy=copy, **cutoffs)
    _assert_parity(expected, actual)
    if copy:
        np.testing.assert_array_equal(ours_in, data)
    else:
        assert actual is ours_in


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"sampling_rate": 0.0}, "sampling_rate"),
        ({"sampling_rate": 0.5, "order": 2.5}, "order"),
        ({"sampling_rate": 0.5, "padlen": -1}, "padlen"),
        ({"sampling_rate": 0.5, "low_pass": "high"}, "low_pass"),
    ],
)
def test_butterworth_errors_name_the_parameter(signals, kwargs, pattern):
    with pytest.raises((TypeError, ValueError), match=pattern):
        bsig.butterworth(signals.copy(), **kwargs)


def test_butterworth_in_place_needs_a_float_array(signals):
    with pytest.raises(TypeError, match="copy"):
        bsig.butterworth(signals.tolist(), 0.5, low_pass=0.1)
    filtered = bsig.butterworth(signals.tolist(), 0.5, low_pass=0.1, copy=True)
    assert filtered.shape == signals.shape


@pytest.mark.parametrize("detrend", [True, False])
@pytest.mark.parametrize("standardize", [False, True, "zscore", "zscore_sample", "psc"])
def test_standardize_signal_matches_nilearn(signals, detrend, standardize):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = nilearn_signal.standardize_signal(
            signals, detrend=detrend, standardize=standardize
        )
        actual = bsig.standardize_signal(signals, detrend=detrend, standardize=standardize)
    _assert_parity(expected, actual)


def test_standardize_signal_guards_constant_columns():
    data = np.column_stack([np.full(20, 3.0), np.arange(20.0)])
    out = bsig.standardize_signal(data, standardize="zscore_sample")
    np.testing.assert_array_equal(out[:, 0], 0.0)
    np.testing.assert_allclose(out[:, 1].std(ddof=1), 1.0)


def test_standardize_signal_rejects_unknown_strategy(signals):
    with pytest.raises(ValueError, match="standardize"):
        bsig.standardize_signal(signals, standardize="minmax")


@pytest.mark.parametrize("kind", ["linear", "constant"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_detrend_signal_matches_nilearn(signals, kind, dtype):
    data = signals.astype(dtype)
    expected = nilearn_signal._detrend(data, type=kind)
    actual = bsig.detrend_signal(data, kind=kind)
    _assert_parity(expected, actual, rtol=1e-4 if dtype == np.float32 else RTOL)
    np.testing.assert_array_equal(data, signals.astype(dtype))


def test_detrend_signal_removes_a_line_exactly():
    time = np.arange(50.0)
    data = np.column_stack([3.0 + 0.5 * time, -2.0 * time])
    np.testing.assert_allclose(bsig.detrend_signal(data), 0.0, atol=1e-10)


def test_detrend_signal_rejects_unknown_kind(signals):
    with pytest.raises(ValueError, match="kind"):
        bsig.detrend_signal(signals, kind="quadratic")


@pytest.mark.parametrize("high_pass", [0.0, 0.005, 0.01, 0.1, 0.3])
def test_cosine_drift_matches_nilearn(high_pass):
    frame_times = np.arange(N_TIME) * T_R
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = create_cosine_drift(high_pass, frame_times)[:, :-1]
        actual = bsig.cosine_drift(high_pass, frame_times)
    _assert_parity(expected, actual)


@pytest.mark.parametrize(
    ("high_pass", "frame_times", "pattern"),
    [(0.01, np.array([0.0]), "frame_times"), (-0.01, np.arange(10.0), "high_pass")],
)
def test_cosine_drift_errors_name_the_parameter(high_pass, frame_times, pattern):
    with pytest.raises(ValueError, match=pattern):
        bsig.cosine_drift(high_pass, frame_times)


def _align_signs(reference: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Flip components to point the same way as the reference ones (signs are arbitrary)."""
    signs = np.sign(np.sum(reference * components, axis=0))
    signs[signs == 0] = 1
    return components * signs


@pytest.mark.parametrize(
    ("n_series", "n_confounds", "percentile", "detrend", "dtype"),
    [
        (300, 5, 2.0, True, np.float64),
        (300, 5, 2.0, False, np.float64),
        (300, 1, 10.0, True, np.float64),
        (600, 5, 50.0, True, np.float64),
        (300, 3, 5.0, True, np.float32),
    ],
)
def test_high_variance_confounds_matches_nilearn(n_series, n_confounds, percentile, detrend, dtype):
    rng = np.random.default_rng(7)
    mixing = rng.normal(size=(4, n_series)) * rng.uniform(0.1, 5.0, n_series)
    series = (rng.normal(size=(N_TIME, 4)) @ mixing + rng.normal(size=(N_TIME, n_series))).astype(
        dtype
    )
    original = series.copy()
    expected = nilearn_signal.high_variance_confounds(
        series, n_confounds=n_confounds, percentile=percentile, detrend=detrend
    )
    actual = bsig.high_variance_confounds(
        series, n_confounds=n_confounds, percentile=percentile, detrend=detrend
    )
    assert actual.shape == expected.shape == (N_TIME, n_confounds)
    tolerance = {"rtol": 1e-3, "atol": 1e-4} if dtype == np.float32 else {}
    _assert_parity(expected, _align_signs(expected, actual), **tolerance)
    np.testing.assert_array_equal(series, original)


def test_high_variance_confounds_of_constant_series_match_nilearn():
    series = np.ones((30, 50))
    expected = nilearn_signal.high_variance_confounds(series)
    actual = bsig.high_variance_confounds(series)
    _assert_parity(expected, actual)


@pytest.mark.parametrize(
    ("kwargs", "exception", "pattern"),
    [
        ({"n_confounds": 0}, ValueError, "n_confounds"),
        ({"percentile": 150.0}, ValueError, "percentile"),
        ({"detrend": "yes"}, TypeError, "detrend"),
    ],
)
def test_high_variance_confounds_errors_name_the_parameter(signals, kwargs, exception, pattern):
    with pytest.raises(exception, match=pattern):
        bsig.high_variance_confounds(signals, **kwargs)


def test_high_variance_confounds_needs_2d_series(signals):
    with pytest.raises(ValueError, match="series"):
        bsig.high_variance_confounds(signals[:, 0])


@pytest.mark.parametrize(
    "options",
    [
        {"low_pass": 0.3},  # above Nyquist (0.25 Hz at TR 2 s): lowered
        {"high_pass": 0.3},
        {"low_pass": 0.3, "high_pass": 0.26},  # both clamp to one frequency: unfiltered
        {"filter": False, "low_pass": 0.1},  # no filter applied
    ],
)
def test_adjusted_or_skipped_filters_warn_with_filter_warning(options):
    from bidsapp.signal import FilterWarning, clean

    signals = np.random.default_rng(0).standard_normal((60, 3))
    with pytest.warns(FilterWarning):
        clean(signals, t_r=2.0, detrend=False, standardize=False, **options)
    assert issubclass(FilterWarning, UserWarning)  # what nilearn's users catch


@pytest.mark.parametrize(
    ("category", "builtin"),
    [
        ("ParameterDeprecationWarning", DeprecationWarning),
        ("ParameterFutureWarning", FutureWarning),
        ("NonFiniteWarning", RuntimeWarning),
        ("AllVolumesCensoredWarning", RuntimeWarning),
    ],
)
def test_warning_classes_keep_their_builtin_base(category, builtin):
    from bidsapp import errors

    assert issubclass(getattr(errors, category), builtin)
    assert issubclass(getattr(errors, category), errors.BidsappWarning)


def test_deprecated_zscore_warns_with_a_bidsapp_class(signals):
    from bidsapp.errors import ParameterDeprecationWarning

    with pytest.warns(ParameterDeprecationWarning, match="zscore_sample"):
        bsig.clean(signals, standardize="zscore")
