"""Temporal filters: Butterworth (scipy, zero-phase) and discrete cosine drift.

The Butterworth design and its checks (cut-offs clamped inside (0, Nyquist) as nilearn
0.12.1 does, filter length), the cosine drift regressors of ``filter="cosine"``, and the
checks of the ``filter`` arguments. Part of the numerical core.
"""

from __future__ import annotations

import logging
import numbers
from typing import Any, Literal

import numpy as np
from scipy import signal as sp_signal

from bidsapp.errors import FilterWarning, ParameterWarning, warn
from bidsapp.signal.inputs import check_cutoff

logger = logging.getLogger(__name__)


# nilearn keeps clamped cut-offs a few float32 epsilons inside (0, Nyquist); we use the
# same numpy float32 scalar so that the clamped value is bit-identical.
_EPS32 = np.finfo(np.float32).eps


_FILTERS = ("butterworth", "cosine")


_PADTYPES = ("odd", "even", "constant", None)


_BUTTERWORTH_OPTIONS = ("order", "padtype", "padlen", "copy")


# Above this correlation a user confound is taken to be one of the cosine regressors.
_COSINE_CORRELATION = 0.9


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
    check_cutoff("low_pass", low_pass)
    check_cutoff("high_pass", high_pass)
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
    check_cutoff("high_pass", high_pass)
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


def butterworth_both(
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


def add_cosine_drift(
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
            "ones filter='cosine' would add); only the given confounds are used.",
            ParameterWarning,
        )
        return confounds
    return np.hstack((confounds, drift))


def _has_cosine_regressors(drift: np.ndarray, confounds: np.ndarray) -> bool:
    """Tell whether any confound correlates above 0.9 with a cosine regressor."""
    n_cosines = drift.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        correlation = np.corrcoef(drift.T, confounds.T)[:n_cosines, n_cosines:]
    return bool(np.any(correlation > _COSINE_CORRELATION))


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


def butterworth_options(kwargs: dict[str, Any]) -> dict[str, Any]:
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


def check_filter(
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
