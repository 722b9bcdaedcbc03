"""Detrending and standardization of signals, and high-variance confounds.

Linear detrending, z-scoring (``zscore``, ``zscore_sample``) and percent signal change as
nilearn 0.12.1's ``signal`` module does them; high-variance confounds (principal components
of the most variable signals). Time is the first axis. Part of the numerical core.
"""

from __future__ import annotations

import logging
import numbers
from typing import Any, Literal

import numpy as np
from scipy import linalg

from bidsapp.errors import DataWarning, ParameterDeprecationWarning, warn
from bidsapp.signal.inputs import check_flag, float_copy

logger = logging.getLogger(__name__)


EPS64 = np.finfo(np.float64).eps


_STANDARDIZATIONS = ("zscore", "zscore_sample", "psc")


# Below this ratio of |mean| after / before cleaning, psc restores the original mean first.
_PSC_MEAN_RATIO = 0.1


Standardization = Literal["zscore", "zscore_sample", "psc"]


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
    out = float_copy(signals, "signals")
    if out.shape[0] == 1:
        warn("Detrending a series of 1 time point would set it to zero; skipped.", DataWarning)
        return out
    out -= out.mean(axis=0)
    if kind == "linear":
        # A centred, unit-norm ramp: projecting onto it is one dot product per column.
        ramp = np.arange(out.shape[0], dtype=out.dtype)
        ramp -= ramp.mean()
        norm = np.sqrt((ramp**2).sum())
        if not norm < EPS64:
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
    standardization = standardization_of(standardize)
    check_flag("detrend", detrend)
    out = detrend_signal(signals) if detrend else float_copy(signals, "signals")
    if standardization is None:
        return out
    if out.shape[0] == 1:
        warn(
            f"standardize={standardize!r} on a series of 1 time point would set it to zero; "
            "skipped.",
            DataWarning,
        )
        return out
    if standardization == "psc":
        return _percent_signal_change(out)
    if standardization == "zscore":
        warn(
            "standardize='zscore' (and standardize=True) divide by the population standard "
            "deviation (ddof=0); nilearn deprecated this in favour of 'zscore_sample', "
            "which uses the sample standard deviation (ddof=1). Pass "
            "standardize='zscore_sample' to use it.",
            ParameterDeprecationWarning,
        )
    return zscore(out, ddof=1 if standardization == "zscore_sample" else 0, centered=detrend)


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
    check_flag("detrend", detrend)
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


def mean_was_removed(signals: np.ndarray, original_mean: np.ndarray) -> bool:
    """Tell whether cleaning shrank the average |mean| of the signals below 10 %."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(signals.mean(axis=0)).mean() / np.abs(original_mean).mean()
    return bool(ratio < _PSC_MEAN_RATIO)


def zscore(signals: np.ndarray, ddof: int, centered: bool) -> np.ndarray:
    """Center (unless already centred) and divide each column by its standard deviation."""
    if not centered:
        signals = signals - signals.mean(axis=0)
    std = signals.std(axis=0, ddof=ddof)
    # Constant columns would divide by ~0: leave them at 0 instead of producing NaN/inf.
    std = np.where(std < EPS64, 1.0, std).astype(signals.dtype, copy=False)
    signals /= std
    return signals


def _percent_signal_change(signals: np.ndarray) -> np.ndarray:
    """Express each column in percent of the absolute value of its mean."""
    mean = signals.mean(axis=0)
    zero_mean = np.abs(mean) < EPS64
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (signals - mean) / np.absolute(mean)
    out *= 100
    if np.any(zero_mean):
        warn(
            "standardize='psc' is undefined for signals whose mean is 0; those signals "
            "are set to 0.",
            DataWarning,
        )
        out[..., zero_mean] = 0
    return out


def standardization_of(standardize: Any) -> Standardization | None:
    """Map a ``standardize`` value to a standardization name, or None for no scaling."""
    if standardize is None or standardize is False or standardize is np.False_:
        return None
    if standardize is True or standardize is np.True_:
        return "zscore"
    if isinstance(standardize, str) and standardize in _STANDARDIZATIONS:
        return standardize  # type: ignore[return-value]
    raise ValueError(
        "standardize must be 'zscore_sample', 'zscore', 'psc', True, False or None, "
        f"got {standardize!r}."
    )
