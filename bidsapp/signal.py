"""Clean region timeseries: censor, detrend, filter, regress out confounds, standardize.

Pure numpy/scipy re-implementation of the behaviour of ``nilearn.signal`` as of
nilearn 0.12.1 (which the test-suite uses as its numerical oracle). Time is always the
first axis: ``signals`` has shape ``(n_timepoints, n_signals)``.

For one run, :func:`clean` works in this order:

1. with ``filter="cosine"``, discrete cosine drift regressors are built on the whole run
   and appended to the confounds;
2. censoring: with a Butterworth filter, censored volumes are filled by cubic-spline
   interpolation (and removed after filtering); otherwise they are dropped now;
3. linear detrending of signals and confounds;
4. Butterworth filtering of signals and confounds, then removal of censored volumes;
5. confounds are scaled and projected out (pivoted QR, no intercept added);
6. standardization of the signals.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import linalg
from scipy import signal as sp_signal
from scipy.interpolate import CubicSpline

from bidsapp.errors import BidsappError, FilterWarning, warn

logger = logging.getLogger(__name__)

__all__ = [
    "AllVolumesRemovedError",
    "FilterWarning",
    "butterworth",
    "clean",
    "cosine_drift",
    "detrend_signal",
    "high_variance_confounds",
    "standardize_signal",
]

_EPS64 = np.finfo(np.float64).eps
# nilearn keeps clamped cut-offs a few float32 epsilons inside (0, Nyquist); we use the
# same numpy float32 scalar so that the clamped value is bit-identical.
_EPS32 = np.finfo(np.float32).eps
_FILTERS = ("butterworth", "cosine")
_STRATEGIES = ("zscore", "zscore_sample", "psc")
_PADTYPES = ("odd", "even", "constant", None)
_BUTTERWORTH_OPTIONS = ("order", "padtype", "padlen", "copy")
# Columns of the confounds whose |R_ii| falls below this are treated as linearly dependent.
_QR_RANK_TOLERANCE = _EPS64 * 100.0
# Below this ratio of |mean| after / before cleaning, psc restores the original mean first.
_PSC_MEAN_RATIO = 0.1
# Above this correlation a user confound is taken to be one of the cosine regressors.
_COSINE_CORRELATION = 0.9

Strategy = Literal["zscore", "zscore_sample", "psc"]


class AllVolumesRemovedError(BidsappError, ValueError):
    """Raised when ``sample_mask`` keeps no volume of a run."""


# --------------------------------------------------------------------------------------
# Public helpers
# --------------------------------------------------------------------------------------


def detrend_signal(
    signals: np.ndarray, kind: Literal["linear", "constant"] = "linear"
) -> np.ndarray:
    """Remove the mean and, optionally, the linear trend of each column.

    Parameters
    ----------
    signals : numpy.ndarray of shape (n_timepoints,) or (n_timepoints, n_signals)
        Timeseries, one per column, sampled at regular intervals. Not modified.
    kind : {"linear", "constant"}, default="linear"
        ``"constant"`` removes the mean only; ``"linear"`` also removes the least-squares
        straight line through each column.

    Returns
    -------
    numpy.ndarray
        Detrended copy of ``signals``, same shape. Integer input is converted to floats
        (float32 for integers of 4 bytes or fewer, float64 otherwise). A series of a
        single time point is returned unchanged, with a warning.

    """
    if kind not in ("linear", "constant"):
        raise ValueError(f"kind must be 'linear' or 'constant', got {kind!r}.")
    out = _float_copy(signals, "signals")
    if out.shape[0] == 1:
        warn("Detrending a series of 1 time point would set it to zero; skipped.")
        return out
    out -= out.mean(axis=0)
    if kind == "linear":
        # A centred, unit-norm ramp: projecting onto it is one dot product per column.
        ramp = np.arange(out.shape[0], dtype=out.dtype)
        ramp -= ramp.mean()
        norm = np.sqrt((ramp**2).sum())
        if not norm < _EPS64:
            ramp /= norm
        slope = ramp @ out
        out -= ramp.reshape((-1,) + (1,) * (out.ndim - 1)) * slope
    return out


def standardize_signal(
    signals: np.ndarray,
    detrend: bool = False,
    standardize: bool | str | None = "zscore",
) -> np.ndarray:
    """Center and scale each column of ``signals``.

    Parameters
    ----------
    signals : numpy.ndarray of shape (n_timepoints,) or (n_timepoints, n_signals)
        Timeseries, one per column. Not modified.
    detrend : bool, default=False
        Remove the linear trend of each column before scaling.
    standardize : {"zscore", "zscore_sample", "psc", True, False, None}, default="zscore"
        ``"zscore"`` (or ``True``): center and divide by the population standard deviation
        (``ddof=0``); deprecated in favour of ``"zscore_sample"``, which divides by the
        sample standard deviation (``ddof=1``). Standard deviations below float64 epsilon
        are replaced by 1, so constant columns become 0 rather than NaN.
        ``"psc"``: percent signal change, ``(x - mean) / |mean| * 100``, where the mean is
        that of the column as given (so this is only meaningful on un-detrended data);
        columns whose mean is below float64 epsilon in absolute value are set to 0, with a
        warning. ``False`` or ``None``: no scaling.

    Returns
    -------
    numpy.ndarray
        Scaled copy of ``signals``, same shape, floating-point. A series of a single time
        point is returned unscaled, with a warning.

    """
    strategy = _standardize_strategy(standardize)
    _check_flag("detrend", detrend)
    out = detrend_signal(signals) if detrend else _float_copy(signals, "signals")
    if strategy is None:
        return out
    if out.shape[0] == 1:
        warn(
            f"standardize={standardize!r} on a series of 1 time point would set it to zero; "
            "skipped."
        )
        return out
    if strategy == "psc":
        return _percent_signal_change(out)
    if strategy == "zscore":
        warn(
            "standardize='zscore' (and standardize=True) divide by the population standard "
            "deviation (ddof=0); nilearn deprecated this in favour of 'zscore_sample', "
            "which uses the sample standard deviation (ddof=1). Pass "
            "standardize='zscore_sample' to use it.",
            DeprecationWarning,
        )
    return _zscore(out, ddof=1 if strategy == "zscore_sample" else 0, centered=detrend)


def butterworth(
    signals: np.ndarray,
    sampling_rate: float,
    low_pass: float | None = None,
    high_pass: float | None = None,
    order: int = 5,
    padtype: Literal["odd", "even", "constant"] | None = "odd",
    padlen: int | None = None,
    copy: bool = False,
) -> np.ndarray:
    """Apply a zero-phase low-, high- or band-pass Butterworth filter along time.

    The filter is designed in second-order sections and run forward and backward
    (:func:`scipy.signal.sosfiltfilt`), so the effective order is twice ``order``.

    Parameters
    ----------
    signals : numpy.ndarray of shape (n_timepoints,) or (n_timepoints, n_signals)
        Timeseries, one per column, sampled every ``1 / sampling_rate`` seconds.
    sampling_rate : float
        Sampling frequency in Hz (``1 / t_r`` for fMRI).
    low_pass : float or None, default=None
        Cut-off in Hz above which frequencies are removed. ``None``: no low-pass.
    high_pass : float or None, default=None
        Cut-off in Hz below which frequencies are removed. ``None``: no high-pass.
    order : int, default=5
        Order of the Butterworth filter.
    padtype : {"odd", "even", "constant", None}, default="odd"
        How the series is extended at both ends before filtering (see
        :func:`scipy.signal.sosfiltfilt`); ``None`` disables padding.
    padlen : int or None, default=None
        Number of padded points at each end; ``None`` uses scipy's default of
        ``3 * (2 * n_sections + 1)`` minus the sections' zero coefficients (18 for order 5).
        The series must be longer than this.
    copy : bool, default=False
        If ``False``, ``signals`` (a floating-point numpy array) is overwritten with the
        result and returned, keeping its dtype. If ``True``, a new float64 array is
        returned and ``signals`` is untouched.

    Returns
    -------
    numpy.ndarray
        Filtered signals, same shape as ``signals``.

    Warns
    -----
    UserWarning
        When a cut-off is at or above the Nyquist frequency (``sampling_rate / 2``) it is
        lowered just below it; when it is negative it is raised just above 0 Hz. When both
        cut-offs end up equal, the signals are returned unfiltered.

    """
    _check_cutoff("low_pass", low_pass)
    _check_cutoff("high_pass", high_pass)
    _check_butterworth_design(sampling_rate, order, padtype, padlen)
    if not copy and not (isinstance(signals, np.ndarray) and signals.dtype.kind == "f"):
        raise TypeError(
            "signals must be a floating-point numpy array when copy=False (it is filtered "
            f"in place); got {type(signals).__name__}. Pass copy=True."
        )
    if low_pass is None and high_pass is None:
        return np.array(signals, copy=True) if copy else signals
    if low_pass is not None and high_pass is not None and high_pass >= low_pass:
        raise ValueError(
            f"high_pass ({high_pass} Hz) must be lower than low_pass ({low_pass} Hz) for a "
            "band-pass filter."
        )
    wn, btype = _critical_frequencies(low_pass, high_pass, 0.5 * sampling_rate)
    if wn is None:
        return np.array(signals, copy=True) if copy else signals
    sos = sp_signal.butter(N=order, Wn=wn, btype=btype, output="sos", fs=sampling_rate)
    data = np.asarray(signals)
    _check_filter_length(data.shape[0], sos, order, padtype, padlen)
    filtered = sp_signal.sosfiltfilt(sos, data, axis=0, padtype=padtype, padlen=padlen)
    if copy:
        return filtered
    signals[...] = filtered
    return signals


def cosine_drift(high_pass: float, frame_times: np.ndarray) -> np.ndarray:
    """Build the discrete cosine (DCT-II) basis of frequencies up to ``high_pass``.

    Regressing these columns out of a signal acts as a high-pass filter. The constant
    column is not included.

    Parameters
    ----------
    high_pass : float
        Highest frequency of the basis, in Hz.
    frame_times : numpy.ndarray of shape (n_timepoints,)
        Acquisition time of each volume, in seconds, regularly spaced.

    Returns
    -------
    numpy.ndarray of shape (n_timepoints, n_cosines)
        Cosine regressors, each of unit norm. ``n_cosines`` is
        ``floor(2 * n_timepoints * high_pass * dt)`` (capped at ``n_timepoints - 1``),
        where ``dt`` is the sampling interval in seconds; it may be 0.

    """
    _check_cutoff("high_pass", high_pass)
    if high_pass is None or high_pass < 0:
        raise ValueError(f"high_pass must be a non-negative frequency in Hz, got {high_pass}.")
    times = np.asarray(frame_times, dtype=np.float64)
    n_frames = times.shape[0] if times.ndim == 1 else 0
    if n_frames < 2:
        raise ValueError(
            f"frame_times must be a 1D array of at least 2 times, got shape {times.shape}."
        )
    dt = (times[-1] - times[0]) / (n_frames - 1)
    if high_pass * dt >= 0.5:
        warn(
            f"high_pass={high_pass} Hz is at or above the Nyquist frequency: the cosine "
            "basis spans every frequency and will remove all signal.",
            FilterWarning,
        )
    n_cosines = min(n_frames - 1, int(np.floor(2 * n_frames * high_pass * dt)))
    phases = (np.pi / n_frames) * (np.arange(n_frames) + 0.5)
    return np.sqrt(2.0 / n_frames) * np.cos(phases[:, np.newaxis] * np.arange(1, n_cosines + 1))


def high_variance_confounds(
    series: np.ndarray,
    n_confounds: int = 5,
    percentile: float = 2.0,
    detrend: bool = True,
) -> np.ndarray:
    """Extract the main temporal components of the highest-power series (CompCor-like).

    The mean of squares of each column is computed (after detrending, if asked); the
    columns above the ``100 - percentile`` percentile are kept, and the eigenvectors of
    their time-by-time covariance with the largest eigenvalues are returned.

    Parameters
    ----------
    series : numpy.ndarray of shape (n_timepoints, n_series)
        Timeseries, one per column (for instance, voxels). Not modified.
    n_confounds : int, default=5
        Number of components to return.
    percentile : float, default=2.0
        Percentage (0 to 100) of the series, those of highest power, to keep.
    detrend : bool, default=True
        Remove the mean and linear trend of each series first.

    Returns
    -------
    numpy.ndarray of shape (n_timepoints, min(n_confounds, n_timepoints))
        Unit-norm components, by decreasing eigenvalue. Their signs are arbitrary.

    """
    _check_flag("detrend", detrend)
    if (
        isinstance(n_confounds, bool)
        or not isinstance(n_confounds, numbers.Integral)
        or n_confounds < 1
    ):
        raise ValueError(f"n_confounds must be a positive integer, got {n_confounds!r}.")
    if not isinstance(percentile, numbers.Real) or not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be a number between 0 and 100, got {percentile!r}.")
    data = np.asarray(series)
    if data.ndim != 2:
        raise ValueError(
            f"series must be 2D (n_timepoints, n_series), got {data.ndim}D shape {data.shape}."
        )
    if detrend:
        data = detrend_signal(data)
    power = np.mean(data**2, axis=0).astype(np.float64)
    selected = data[:, power > np.nanpercentile(power, 100.0 - percentile)]
    if selected.shape[1] == 0:
        logger.warning(
            "high_variance_confounds: no series has power above the %s percentile; the "
            "returned components are arbitrary.",
            100.0 - percentile,
        )
    eigenvalues, eigenvectors = linalg.eigh(selected @ selected.T / selected.shape[0])
    largest = np.argsort(eigenvalues)[::-1][:n_confounds]
    return eigenvectors[:, largest].copy()


# --------------------------------------------------------------------------------------
# clean
# --------------------------------------------------------------------------------------


def clean(
    signals: np.ndarray,
    runs: np.ndarray | None = None,
    detrend: bool = True,
    standardize: bool | str | None = "zscore",
    sample_mask: Any = None,
    confounds: Any = None,
    standardize_confounds: bool = True,
    filter: Literal["butterworth", "cosine"] | bool | None = "butterworth",
    low_pass: float | None = None,
    high_pass: float | None = None,
    t_r: float | None = 2.5,
    ensure_finite: bool = False,
    extrapolate: bool = True,
    **kwargs: Any,
) -> np.ndarray:
    """Clean timeseries: censor, detrend, filter, remove confounds and standardize.

    Same parameters, defaults and results as ``nilearn.signal.clean`` in nilearn 0.12.1.

    Parameters
    ----------
    signals : array-like of shape (n_timepoints, n_signals) or (n_timepoints,)
        Timeseries, one per column. Not modified. A 1D array is cleaned as one column
        and returned 1D.
    runs : array-like of shape (n_timepoints,) or None, default=None
        Run label of each time point. Each run is cleaned on its own and the results
        are stacked in the order of the sorted labels (see Notes).
    detrend : bool, default=True
        Remove the mean and linear trend of signals and confounds (per run).
    standardize : {"zscore", "zscore_sample", "psc", True, False, None}, default="zscore"
        Final scaling of the cleaned signals; see :func:`standardize_signal`. ``"psc"``
        is computed relative to the mean of the signals before detrending and filtering
        when those steps have brought the mean close to zero.
    sample_mask : array-like, list of array-like, or None, default=None
        Volumes to keep (censoring, or "scrubbing"): indices of kept volumes, or a boolean
        array of length ``n_timepoints`` that is ``True`` for kept volumes. With ``runs``,
        a list with one such mask per run, indices counted from each run's start.
    confounds : numpy.ndarray, pandas.DataFrame, str, os.PathLike, list of these, or None
        Regressors to project out, of shape ``(n_timepoints, n_confounds)`` or
        ``(n_timepoints,)``. A path names a delimited text file (TSV, CSV, ...) with an
        optional one-line header. A list is stacked column-wise. Default None.
    standardize_confounds : bool, default=True
        Z-score the confounds (population standard deviation) before regression. If
        ``False``, each confound is only divided by its maximum absolute value.
    filter : {"butterworth", "cosine", False}, default="butterworth"
        ``"butterworth"``: zero-phase Butterworth filter with ``low_pass`` and/or
        ``high_pass`` (nothing is filtered when both are None). ``"cosine"``: discrete
        cosine regressors up to ``high_pass`` are added to the confounds (``low_pass``
        is ignored). ``False`` (or None): no filtering.
    low_pass : float or None, default=None
        Low-pass cut-off in Hz.
    high_pass : float or None, default=None
        High-pass cut-off in Hz.
    t_r : float or None, default=2.5
        Repetition time in seconds; required for filtering.
    ensure_finite : bool, default=False
        Replace NaN and infinite values in ``signals`` by 0 first.
    extrapolate : bool, default=True
        With a Butterworth filter and ``sample_mask``: if ``True``, censored volumes
        before the first and after the last kept volume are extrapolated by the spline;
        if ``False`` they are discarded before filtering.
    **kwargs
        ``butterworth__order``, ``butterworth__padtype``, ``butterworth__padlen`` and
        ``butterworth__copy`` are passed to :func:`butterworth`. Anything else is an error.

    Returns
    -------
    numpy.ndarray of shape (n_kept_timepoints, n_signals)
        Cleaned signals: floating-point (float input keeps its dtype; integers of 4 bytes
        or fewer become float32, others float64), with the censored volumes removed.

    Raises
    ------
    TypeError
        For arguments of the wrong type (the message names the parameter).
    ValueError
        For inconsistent shapes, unknown options, or missing ``t_r`` / ``high_pass``.
    IndexError
        When ``sample_mask`` indexes beyond its run.
    AllVolumesRemovedError
        When ``sample_mask`` keeps no volume.

    Notes
    -----
    Deliberate nilearn 0.12.1 behaviours, kept for parity:

    - With ``runs``, each run is cleaned with ``standardize_confounds=True``,
      ``extrapolate=True`` and default Butterworth options, whatever was passed.
    - Before Butterworth filtering, censored volumes are written from the spline at the
      positions ``n - 1 - i`` for every kept index ``i`` (nilearn takes the bitwise NOT
      of the index array). So a censored volume whose mirror ``n - 1 - c`` is also
      censored keeps its original value, and with ``extrapolate=False`` the volumes
      selected after filtering can be shifted when censoring is not confined to one end.
    - Confounds are projected out without adding an intercept.

    Beyond nilearn: 1D signals, plain lists of indices or booleans as one mask,
    comma-separated confound files with a header, confound tables of zero columns, and
    run labels other than ``0..n_runs-1`` with ``sample_mask`` work here where nilearn
    fails; a boolean mask must match its run's length, and unexpected keyword arguments
    are rejected.

    """
    _check_flag("detrend", detrend)
    _check_flag("standardize_confounds", standardize_confounds)
    _check_flag("extrapolate", extrapolate)
    if not isinstance(ensure_finite, bool):
        raise ValueError(f"ensure_finite must be True or False, got {ensure_finite!r}.")
    strategy = _standardize_strategy(standardize)
    _check_cutoff("low_pass", low_pass)
    _check_cutoff("high_pass", high_pass)
    _check_t_r(t_r)
    options = _butterworth_options(kwargs)
    if confounds is not None and not detrend and not standardize_confounds:
        warn(
            "confounds are given with detrend=False and standardize_confounds=False: they "
            "are not centred before regression, so unless they already have zero mean the "
            "signals will not be cleaned correctly."
        )
    filter_type = _filter_type(filter, low_pass, high_pass, t_r)

    data = _as_signal_array(signals, ensure_finite)
    one_dimensional = data.ndim == 1
    if one_dimensional:
        data = data[:, np.newaxis]
    n_timepoints = data.shape[0]
    run_labels = _sanitize_runs(runs, n_timepoints)
    confound_array = _load_confounds(confounds, n_timepoints)
    run_lengths = (
        [n_timepoints]
        if run_labels is None
        else [int(np.sum(run_labels == label)) for label in np.unique(run_labels)]
    )
    masks = _sanitize_sample_masks(sample_mask, run_lengths)

    settings = {
        "detrend": detrend,
        "strategy": strategy,
        "filter_type": filter_type,
        "low_pass": low_pass,
        "high_pass": high_pass,
        "t_r": t_r,
    }
    if run_labels is None:
        cleaned = _clean_run(
            data,
            confound_array,
            None if masks is None else masks[0],
            standardize_confounds=standardize_confounds,
            extrapolate=extrapolate,
            butterworth_options=options,
            **settings,
        )
    else:
        _log_ignored_run_settings(
            standardize_confounds or (confound_array is None and filter_type != "cosine"),
            extrapolate or masks is None or filter_type != "butterworth",
            options if filter_type == "butterworth" else {},
        )
        cleaned = _clean_runs(data, run_labels, confound_array, masks, settings)
    return cleaned.ravel() if one_dimensional else cleaned


def _log_ignored_run_settings(
    standardize_confounds_kept: bool, extrapolate_kept: bool, options: dict[str, Any]
) -> None:
    """Log the settings that nilearn 0.12.1 drops when cleaning run by run."""
    ignored = []
    if not standardize_confounds_kept:
        ignored.append("standardize_confounds=False")
    if not extrapolate_kept:
        ignored.append("extrapolate=False")
    ignored.extend(f"butterworth__{name}={value!r}" for name, value in options.items())
    if ignored:
        logger.warning(
            "clean(): with runs, every run is cleaned with standardize_confounds=True, "
            "extrapolate=True and default Butterworth options, as nilearn 0.12.1 does; "
            "ignoring %s.",
            ", ".join(ignored),
        )


def _clean_runs(
    data: np.ndarray,
    run_labels: np.ndarray,
    confounds: np.ndarray | None,
    masks: list[np.ndarray] | None,
    settings: dict[str, Any],
) -> np.ndarray:
    """Clean each run separately and stack the results by sorted run label."""
    cleaned = []
    for index, label in enumerate(np.unique(run_labels)):
        in_run = run_labels == label
        cleaned.append(
            _clean_run(
                data[in_run],
                None if confounds is None else confounds[in_run],
                None if masks is None else masks[index],
                standardize_confounds=True,
                extrapolate=True,
                butterworth_options={},
                **settings,
            )
        )
    return np.vstack(cleaned)


def _clean_run(
    signals: np.ndarray,
    confounds: np.ndarray | None,
    kept: np.ndarray | None,
    *,
    detrend: bool,
    strategy: Strategy | None,
    standardize_confounds: bool,
    filter_type: str | None,
    low_pass: float | None,
    high_pass: float | None,
    t_r: float | None,
    extrapolate: bool,
    butterworth_options: dict[str, Any],
) -> np.ndarray:
    """Clean one run; ``signals`` and ``confounds`` are private copies."""
    if filter_type == "cosine":
        confounds = _add_cosine_drift(confounds, signals.shape[0], high_pass, t_r)
    if kept is not None:
        if filter_type == "butterworth":
            signals, confounds, kept = _fill_censored(signals, confounds, kept, t_r, extrapolate)
        else:
            signals, confounds = _censor(signals, confounds, kept)
            kept = None

    original_mean = signals.mean(axis=0)
    if detrend:
        signals = detrend_signal(signals)
        if confounds is not None:
            confounds = detrend_signal(confounds)

    if filter_type == "butterworth":
        signals, confounds = _butterworth_both(
            signals, confounds, t_r, low_pass, high_pass, butterworth_options
        )
        if kept is not None:
            signals, confounds = _censor(signals, confounds, kept)

    if confounds is not None and confounds.shape[1] > 0:
        signals = _project_out(signals, confounds, standardize_confounds)

    if strategy is None:
        return signals
    if strategy == "psc" and _mean_was_removed(signals, original_mean):
        # Detrending or high-pass filtering zeroed the mean that psc divides by.
        signals = signals + original_mean
    return standardize_signal(signals, standardize=strategy)


def _butterworth_both(
    signals: np.ndarray,
    confounds: np.ndarray | None,
    t_r: float,
    low_pass: float | None,
    high_pass: float | None,
    options: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray | None]:
    """Filter signals and confounds alike, keeping the regression orthogonal to the filter."""
    sampling_rate = 1.0 / t_r
    signals = butterworth(signals, sampling_rate, low_pass, high_pass, **options)
    if confounds is not None:
        confounds = butterworth(confounds, sampling_rate, low_pass, high_pass, **options)
    return signals, confounds


def _mean_was_removed(signals: np.ndarray, original_mean: np.ndarray) -> bool:
    """Tell whether cleaning shrank the average |mean| of the signals below 10 %."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(signals.mean(axis=0)).mean() / np.abs(original_mean).mean()
    return bool(ratio < _PSC_MEAN_RATIO)


def _project_out(
    signals: np.ndarray, confounds: np.ndarray, standardize_confounds: bool
) -> np.ndarray:
    """Remove from ``signals`` its projection on the span of ``confounds``."""
    if standardize_confounds:
        # A single time point cannot be z-scored (it would become 0), so it is left as is.
        if confounds.shape[0] > 1:
            confounds = _zscore(confounds, ddof=0, centered=False)
    else:
        # Scale each confound to a maximum of 1 to keep the QR well conditioned, without
        # centring it, so that a constant confound still acts as an intercept.
        largest = np.max(np.abs(confounds), axis=0)
        largest[largest == 0] = 1
        confounds = confounds / largest
    if not np.all(np.isfinite(confounds)):
        raise ValueError(
            "confounds contain NaN or infinite values in kept volumes (fMRIPrep's "
            "derivative columns start with 'n/a'): fill them, or censor those volumes."
        )
    q, r, _ = linalg.qr(confounds, mode="economic", pivoting=True)
    q = q[:, np.abs(np.diag(r)) > _QR_RANK_TOLERANCE]
    signals -= q @ (q.T @ signals)
    return signals


# --------------------------------------------------------------------------------------
# Scaling
# --------------------------------------------------------------------------------------


def _zscore(signals: np.ndarray, ddof: int, centered: bool) -> np.ndarray:
    """Center (unless already centred) and divide each column by its standard deviation."""
    if not centered:
        signals = signals - signals.mean(axis=0)
    std = signals.std(axis=0, ddof=ddof)
    # Constant columns would divide by ~0: leave them at 0 instead of producing NaN/inf.
    std = np.where(std < _EPS64, 1.0, std).astype(signals.dtype, copy=False)
    signals /= std
    return signals


def _percent_signal_change(signals: np.ndarray) -> np.ndarray:
    """Express each column in percent of the absolute value of its mean."""
    mean = signals.mean(axis=0)
    zero_mean = np.abs(mean) < _EPS64
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (signals - mean) / np.absolute(mean)
    out *= 100
    if np.any(zero_mean):
        warn(
            "standardize='psc' is undefined for signals whose mean is 0; those signals "
            "are set to 0."
        )
        out[..., zero_mean] = 0
    return out


def _standardize_strategy(standardize: Any) -> Strategy | None:
    """Map a ``standardize`` value to a strategy name, or None for no scaling."""
    if standardize is None or standardize is False or standardize is np.False_:
        return None
    if standardize is True or standardize is np.True_:
        return "zscore"
    if isinstance(standardize, str) and standardize in _STRATEGIES:
        return standardize  # type: ignore[return-value]
    raise ValueError(
        "standardize must be 'zscore_sample', 'zscore', 'psc', True, False or None, "
        f"got {standardize!r}."
    )


# --------------------------------------------------------------------------------------
# Censoring and cosine drift
# --------------------------------------------------------------------------------------


def _censor(
    signals: np.ndarray, confounds: np.ndarray | None, kept: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """Keep only the volumes listed in ``kept``."""
    return signals[kept], None if confounds is None else confounds[kept]


def _fill_censored(
    signals: np.ndarray,
    confounds: np.ndarray | None,
    kept: np.ndarray,
    t_r: float,
    extrapolate: bool,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Fill censored volumes by cubic-spline interpolation ahead of filtering.

    Returns the filled signals and confounds (without rows the spline left undefined)
    and the indices of the kept volumes in them.
    """
    if kept.size < 2:
        raise ValueError(
            f"sample_mask keeps {kept.size} volume(s): interpolating the censored volumes "
            "before Butterworth filtering needs at least 2 kept volumes."
        )
    if np.any(np.diff(kept) <= 0):
        raise ValueError(
            "sample_mask indices must be strictly increasing when a Butterworth filter is "
            "applied (censored volumes are interpolated between kept ones)."
        )
    if extrapolate:
        warn(
            "extrapolate=True: censored volumes before the first or after the last kept "
            "volume are extrapolated by the cubic spline before filtering, which can "
            "distort the filtered signal; nilearn 0.13 discards them by default instead. "
            "Pass extrapolate=False to discard them.",
            FutureWarning,
        )
    signals = _spline_fill(signals, kept, t_r, extrapolate)
    if confounds is not None:
        confounds = _spline_fill(confounds, kept, t_r, extrapolate)
    if not extrapolate:
        # nilearn re-counts the kept indices from the first kept volume, assuming that
        # the rows dropped as undefined are exactly the censored head of the run.
        kept = kept - kept[0]
    return signals, confounds, kept


def _spline_fill(
    volumes: np.ndarray, kept: np.ndarray, t_r: float, extrapolate: bool
) -> np.ndarray:
    """Overwrite volumes with a cubic spline through the kept ones; drop undefined rows."""
    times = np.arange(volumes.shape[0]) * t_r
    spline = CubicSpline(times[kept], volumes[kept], extrapolate=extrapolate)
    targets = _positions_to_fill(kept)
    filled = volumes.copy()
    filled[targets] = spline(times)[targets]
    return filled[~np.isnan(filled).all(axis=1)]


def _positions_to_fill(kept: np.ndarray) -> np.ndarray:
    """Return the row positions that nilearn 0.12.1 overwrites with the spline.

    nilearn selects them with ``~sample_mask`` on an integer index array: the bitwise NOT
    of index ``i`` is ``-i - 1``, i.e. row ``n - 1 - i``. We reproduce this for parity
    with nilearn; replacing it by the complement of ``kept`` would fill exactly the
    censored volumes.
    """
    return np.invert(kept)


def _add_cosine_drift(
    confounds: np.ndarray | None, n_timepoints: int, high_pass: float, t_r: float
) -> np.ndarray | None:
    """Append cosine drift regressors to the confounds, unless the user already has them."""
    if n_timepoints < 2:
        raise ValueError("filter='cosine' needs signals of at least 2 time points.")
    drift = cosine_drift(high_pass, np.arange(n_timepoints) * t_r)
    if drift.shape[1] == 0:
        warn(
            f"filter='cosine' with high_pass={high_pass} Hz gives no cosine regressor for "
            f"{n_timepoints} volumes of {t_r} s; the signals are not high-pass filtered.",
            FilterWarning,
        )
        return confounds
    if confounds is None:
        return drift
    if _has_cosine_regressors(drift, confounds):
        warn(
            "confounds already contain cosine drift regressors (correlation > 0.9 with the "
            "ones filter='cosine' would add); only the given confounds are used."
        )
        return confounds
    return np.hstack((confounds, drift))


def _has_cosine_regressors(drift: np.ndarray, confounds: np.ndarray) -> bool:
    """Tell whether any confound correlates above 0.9 with a cosine regressor."""
    n_cosines = drift.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        correlation = np.corrcoef(drift.T, confounds.T)[:n_cosines, n_cosines:]
    return bool(np.any(correlation > _COSINE_CORRELATION))


# --------------------------------------------------------------------------------------
# Butterworth design checks
# --------------------------------------------------------------------------------------


def _critical_frequencies(
    low_pass: float | None, high_pass: float | None, nyquist: float
) -> tuple[Any, str | None]:
    """Return the filter's critical frequency (or pair) in Hz and its type.

    Returns ``(None, None)`` when a band-pass collapses to a single frequency.
    """
    frequencies = []
    if high_pass is not None:
        frequencies.append(_clamp_cutoff("high_pass", high_pass, nyquist))
    if low_pass is not None:
        frequencies.append(_clamp_cutoff("low_pass", low_pass, nyquist))
    if len(frequencies) == 1:
        return frequencies[0], "high" if high_pass is not None else "low"
    if frequencies[0] == frequencies[1]:
        warn(
            f"high_pass ({high_pass} Hz) and low_pass ({low_pass} Hz) both end up at "
            f"{frequencies[0]} Hz after clamping to below the Nyquist frequency "
            f"({nyquist} Hz); the signals are returned unfiltered.",
            FilterWarning,
        )
        return None, None
    return frequencies, "band"


def _clamp_cutoff(name: str, frequency: float, nyquist: float) -> float:
    """Move a cut-off inside (0, Nyquist), warning when it has to change."""
    if frequency >= nyquist:
        clamped = nyquist - (nyquist * 10 * _EPS32)
        warn(
            f"{name}={frequency} Hz is at or above the Nyquist frequency ({nyquist} Hz, "
            f"half the sampling rate); lowered to {clamped} Hz.",
            FilterWarning,
        )
        return clamped
    if frequency < 0.0:
        clamped = nyquist * _EPS32
        warn(f"{name}={frequency} Hz is negative; raised to {clamped} Hz.", FilterWarning)
        return clamped
    if frequency == 0.0:
        raise ValueError(
            f"{name} must be above 0 Hz for a Butterworth filter; pass None for no {name}."
        )
    return frequency


def _check_butterworth_design(
    sampling_rate: float, order: int, padtype: str | None, padlen: int | None
) -> None:
    """Validate the parameters of :func:`butterworth` other than the cut-offs."""
    if (
        isinstance(sampling_rate, bool)
        or not isinstance(sampling_rate, numbers.Real)
        or not sampling_rate > 0
    ):
        raise ValueError(f"sampling_rate must be a positive number (Hz), got {sampling_rate!r}.")
    if isinstance(order, bool) or not isinstance(order, numbers.Integral) or order < 1:
        raise ValueError(f"order (butterworth__order) must be an integer >= 1, got {order!r}.")
    if padtype not in _PADTYPES:
        raise ValueError(
            "padtype (butterworth__padtype) must be 'odd', 'even', 'constant' or None, "
            f"got {padtype!r}."
        )
    if padlen is not None and (
        isinstance(padlen, bool) or not isinstance(padlen, numbers.Integral) or padlen < 0
    ):
        raise ValueError(
            f"padlen (butterworth__padlen) must be a non-negative integer or None, got {padlen!r}."
        )


def _check_filter_length(
    n_timepoints: int, sos: np.ndarray, order: int, padtype: str | None, padlen: int | None
) -> None:
    """Raise a clear error when the series is too short for the filter's padding."""
    if padtype is None:
        return
    if padlen is None:
        # scipy's default for sosfiltfilt: 3 * (number of taps), zero coefficients excepted.
        n_taps = 2 * sos.shape[0] + 1
        n_taps -= min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
        padlen = 3 * n_taps
    if n_timepoints <= padlen:
        raise ValueError(
            f"signals have {n_timepoints} time points, but a Butterworth filter of order "
            f"{order} pads {padlen} points (padlen) at each end and needs more than that. "
            "Use fewer padded points (butterworth__padlen), a lower order, or no filter."
        )


def _butterworth_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Extract ``butterworth__*`` options from ``clean``'s keyword arguments."""
    options = {}
    unknown = []
    for key, value in kwargs.items():
        name = key.removeprefix("butterworth__")
        if key.startswith("butterworth__") and name in _BUTTERWORTH_OPTIONS:
            options[name] = value
        else:
            unknown.append(key)
    if unknown:
        accepted = ", ".join(f"butterworth__{name}" for name in _BUTTERWORTH_OPTIONS)
        raise TypeError(
            f"clean() got unexpected keyword argument(s) {unknown}; accepted: {accepted}."
        )
    return options


# --------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------


def _filter_type(
    filter: Any,
    low_pass: float | None,
    high_pass: float | None,
    t_r: float | None,
) -> str | None:
    """Validate the filter settings; return "butterworth", "cosine" or None (no filter)."""
    if isinstance(filter, str) and filter in _FILTERS:
        if filter == "cosine":
            return _check_cosine_settings(low_pass, high_pass, t_r)
        if low_pass is None and high_pass is None:
            return None
        if t_r is None:
            raise ValueError(
                "t_r (repetition time, seconds) is required for filter='butterworth' with "
                f"low_pass={low_pass}, high_pass={high_pass}."
            )
        if not t_r > 0:
            raise ValueError(f"t_r must be a positive number of seconds, got {t_r}.")
        return "butterworth"
    if isinstance(filter, np.ndarray) or filter not in (False, None, "", 0):
        raise ValueError(f"filter must be 'butterworth', 'cosine' or False, got {filter!r}.")
    if low_pass is not None or high_pass is not None:
        warn(
            f"filter={filter!r}: no filter is applied, so low_pass={low_pass} and "
            f"high_pass={high_pass} are ignored.",
            FilterWarning,
        )
    return None


def _check_cosine_settings(
    low_pass: float | None, high_pass: float | None, t_r: float | None
) -> str:
    """Validate the settings of the cosine filter."""
    if t_r is None or high_pass is None:
        raise ValueError(
            "filter='cosine' needs both t_r (seconds) and high_pass (Hz); got "
            f"t_r={t_r}, high_pass={high_pass}."
        )
    if not t_r > 0:
        raise ValueError(f"t_r must be a positive number of seconds, got {t_r}.")
    if high_pass < 0:
        raise ValueError(f"high_pass must be >= 0 Hz for filter='cosine', got {high_pass}.")
    if low_pass is not None:
        logger.warning("filter='cosine' only high-pass filters: low_pass=%s is ignored.", low_pass)
    return "cosine"


def _check_flag(name: str, value: Any) -> None:
    """Raise TypeError unless ``value`` is a boolean."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}.")


def _check_cutoff(name: str, value: Any) -> None:
    """Raise unless ``value`` is None or a finite frequency in Hz."""
    if value is None:
        return
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a frequency in Hz (a number) or None, got {value!r}.")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite frequency in Hz, got {value!r}.")


def _check_t_r(t_r: Any) -> None:
    """Raise TypeError unless ``t_r`` is None or a number of seconds."""
    if t_r is None:
        return
    if isinstance(t_r, (bool, np.bool_)) or not isinstance(t_r, numbers.Real):
        raise TypeError(f"t_r must be a number of seconds or None, got {t_r!r}.")


def _as_signal_array(signals: Any, ensure_finite: bool) -> np.ndarray:
    """Copy ``signals`` into a floating-point array of 1 or 2 dimensions."""
    try:
        data = np.array(signals, copy=True)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"signals must be a numeric array, got {type(signals).__name__}."
        ) from error
    if data.dtype.kind not in "biuf":
        raise TypeError(f"signals must hold real numbers, got dtype {data.dtype}.")
    if data.ndim not in (1, 2):
        raise ValueError(
            f"signals must be 2D (n_timepoints, n_signals) or 1D, got shape {data.shape}."
        )
    if data.shape[0] == 0:
        raise ValueError("signals has no time point (its first axis has length 0).")
    if ensure_finite:
        data[~np.isfinite(data)] = 0
    return _ensure_float(data, "signals")


def _sanitize_runs(runs: Any, n_timepoints: int) -> np.ndarray | None:
    """Return ``runs`` as a 1D array of one label per time point."""
    if runs is None:
        return None
    labels = np.asarray(runs)
    if labels.ndim != 1 or labels.shape[0] != n_timepoints:
        raise ValueError(
            f"runs must give one label per time point ({n_timepoints}), got shape {labels.shape}."
        )
    return labels


def _load_confounds(confounds: Any, n_timepoints: int) -> np.ndarray | None:
    """Stack the confounds into one floating-point (n_timepoints, n_confounds) array."""
    if confounds is None:
        return None
    items = list(confounds) if isinstance(confounds, (list, tuple)) else [confounds]
    if not items:
        raise ValueError("confounds is an empty list; pass None for no confounds.")
    blocks = [_confound_block(item, n_timepoints) for item in items]
    return _ensure_float(np.hstack(blocks), "confounds")


def _confound_block(item: Any, n_timepoints: int) -> np.ndarray:
    """Read one confounds item (array, DataFrame or file) as a 2D array."""
    if isinstance(item, (str, os.PathLike)):
        block = _read_confounds_file(Path(item))
        source = f"confounds file {os.fspath(item)}"
    elif isinstance(item, pd.DataFrame):
        block = item.to_numpy()
        source = "confounds DataFrame"
    elif isinstance(item, np.ndarray):
        block = item
        source = "confounds array"
    else:
        raise TypeError(
            "confounds must be a numpy array, a pandas DataFrame, a path to a delimited "
            f"text file, or a list of these; got {type(item).__name__}."
        )
    if block.ndim == 1:
        block = block[:, np.newaxis]
    if block.ndim != 2:
        raise ValueError(f"{source} must be 1D or 2D, got {block.ndim} dimensions.")
    if block.shape[0] != n_timepoints:
        raise ValueError(
            f"{source} has {block.shape[0]} rows but signals have {n_timepoints} time points."
        )
    return block


def _read_confounds_file(path: Path) -> np.ndarray:
    """Read a delimited text file of numbers, skipping a header line if there is one."""
    if not path.is_file():
        raise FileNotFoundError(f"confounds file {path} does not exist.")
    lines = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise ValueError(f"confounds file {path} is empty.")
    delimiter = _guess_delimiter(lines[0])
    rows = [[cell.strip() for cell in line.split(delimiter)] for line in lines]
    if not all(_is_number(cell) for cell in rows[0]):
        rows = rows[1:]  # a header line of column names
    if not rows or len({len(row) for row in rows}) != 1:
        raise ValueError(
            f"confounds file {path} must hold a table of numbers with the same number of "
            "columns on every line."
        )
    return np.array([[_parse_number(cell, path) for cell in row] for row in rows])


def _guess_delimiter(line: str) -> str | None:
    """Return the column delimiter of a line (None: runs of whitespace)."""
    for delimiter in ("\t", ",", ";"):
        if delimiter in line:
            return delimiter
    return None


def _is_number(text: str) -> bool:
    """Tell whether ``text`` reads as a float."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_number(text: str, path: Path) -> float:
    """Read one cell of a confounds file; empty and 'n/a' cells become NaN."""
    if text.lower() in ("", "n/a", "na"):
        return np.nan
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"confounds file {path}: cannot read {text!r} as a number.") from None


def _sanitize_sample_masks(sample_mask: Any, run_lengths: list[int]) -> list[np.ndarray] | None:
    """Return one array of kept indices per run, or None."""
    if sample_mask is None:
        return None
    masks = _split_masks(sample_mask)
    if len(masks) != len(run_lengths):
        raise ValueError(
            f"sample_mask gives {len(masks)} mask(s) for {len(run_lengths)} run(s); give "
            "one mask per run."
        )
    return [
        _mask_to_indices(mask, n_volumes, f"run {index + 1} of {len(run_lengths)}")
        for index, (mask, n_volumes) in enumerate(zip(masks, run_lengths, strict=True))
    ]


def _split_masks(sample_mask: Any) -> list[np.ndarray]:
    """Turn ``sample_mask`` into a list of per-run masks."""
    if isinstance(sample_mask, (list, tuple)):
        if all(np.ndim(item) == 0 for item in sample_mask):
            return [np.asarray(sample_mask)]
        return [np.asarray(item) for item in sample_mask]
    if isinstance(sample_mask, (np.ndarray, pd.Series, pd.Index)):
        return [np.asarray(sample_mask)]
    raise TypeError(
        "sample_mask must be an array of kept indices, a boolean array, or a list of "
        f"those (one per run); got {type(sample_mask).__name__}."
    )


def _mask_to_indices(mask: np.ndarray, n_volumes: int, where: str) -> np.ndarray:
    """Validate one run's mask and return the indices of its kept volumes."""
    if mask.ndim != 1:
        raise ValueError(f"sample_mask ({where}) must be 1D, got shape {mask.shape}.")
    if mask.dtype.kind == "b":
        if mask.shape[0] != n_volumes:
            raise ValueError(
                f"boolean sample_mask ({where}) has {mask.shape[0]} values for {n_volumes} volumes."
            )
        indices = np.flatnonzero(mask)
    elif mask.size == 0 or mask.dtype.kind in "iu":
        indices = mask.astype(np.intp)
    elif mask.dtype.kind == "f" and np.all(np.mod(mask, 1) == 0):
        indices = mask.astype(np.intp)
    else:
        raise TypeError(
            f"sample_mask ({where}) must hold integer indices or booleans, got dtype {mask.dtype}."
        )
    if indices.size == 0:
        raise AllVolumesRemovedError(
            f"sample_mask ({where}) keeps no volume: every volume was censored."
        )
    if indices.min() < 0:
        raise ValueError(f"sample_mask ({where}) should not contain negative values.")
    if indices.size > n_volumes:
        raise IndexError(
            f"sample_mask ({where}) has {indices.size} indices but the run has only "
            f"{n_volumes} volumes."
        )
    if indices.max() >= n_volumes:
        raise IndexError(
            f"sample_mask ({where}) contains indices {indices[indices >= n_volumes]} beyond "
            f"the run's {n_volumes} volumes."
        )
    return indices


# --------------------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------------------


def _ensure_float(data: np.ndarray, name: str) -> np.ndarray:
    """Convert non-float arrays to float32 (items <= 4 bytes) or float64, as nilearn does."""
    if data.dtype.kind == "f":
        return data
    dtype = np.float64 if data.dtype.itemsize == 8 else np.float32
    try:
        return data.astype(dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must hold numbers only: {error}") from error


def _float_copy(signals: Any, name: str) -> np.ndarray:
    """Return a floating-point copy of ``signals``."""
    data = np.array(signals, copy=True)
    if data.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {data.dtype}.")
    return _ensure_float(data, name)
