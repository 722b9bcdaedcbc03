""":func:`clean`: censor, detrend, filter, regress out confounds, standardize.

Pure numpy/scipy re-implementation of the behaviour of ``nilearn.signal.clean`` as of
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

Part of the numerical core.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
from scipy import linalg

from bidsapp.errors import ParameterWarning, warn
from bidsapp.signal.censoring import censor, fill_censored, sanitize_sample_masks
from bidsapp.signal.filters import (
    add_cosine_drift,
    butterworth_both,
    butterworth_options,
    check_filter,
)
from bidsapp.signal.inputs import (
    as_signal_array,
    check_cutoff,
    check_flag,
    check_t_r,
    confounds_matrix,
    sanitize_runs,
)
from bidsapp.signal.scaling import (
    EPS64,
    Standardization,
    detrend_signal,
    mean_was_removed,
    standardization_of,
    standardize_signal,
    zscore,
)

logger = logging.getLogger(__name__)


# Columns of the confounds whose |R_ii| falls below this are treated as linearly dependent.
_QR_RANK_TOLERANCE = EPS64 * 100.0


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
    check_flag("detrend", detrend)
    check_flag("standardize_confounds", standardize_confounds)
    check_flag("extrapolate", extrapolate)
    if not isinstance(ensure_finite, bool):
        raise ValueError(f"ensure_finite must be True or False, got {ensure_finite!r}.")
    standardization = standardization_of(standardize)
    check_cutoff("low_pass", low_pass)
    check_cutoff("high_pass", high_pass)
    check_t_r(t_r)
    options = butterworth_options(kwargs)
    if confounds is not None and not detrend and not standardize_confounds:
        warn(
            "confounds are given with detrend=False and standardize_confounds=False: they "
            "are not centred before regression, so unless they already have zero mean the "
            "signals will not be cleaned correctly.",
            ParameterWarning,
        )
    filter_type = check_filter(filter, low_pass, high_pass, t_r)

    data = as_signal_array(signals, ensure_finite)
    one_dimensional = data.ndim == 1
    if one_dimensional:
        data = data[:, np.newaxis]
    n_timepoints = data.shape[0]
    run_labels = sanitize_runs(runs, n_timepoints)
    confound_array = confounds_matrix(confounds, n_timepoints)
    run_lengths = (
        [n_timepoints]
        if run_labels is None
        else [int(np.sum(run_labels == label)) for label in np.unique(run_labels)]
    )
    masks = sanitize_sample_masks(sample_mask, run_lengths)

    settings = {
        "detrend": detrend,
        "standardization": standardization,
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
    standardization: Standardization | None,
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
        confounds = add_cosine_drift(confounds, signals.shape[0], high_pass, t_r)
    if kept is not None:
        if filter_type == "butterworth":
            signals, confounds, kept = fill_censored(signals, confounds, kept, t_r, extrapolate)
        else:
            signals, confounds = censor(signals, confounds, kept)
            kept = None

    original_mean = signals.mean(axis=0)
    if detrend:
        signals = detrend_signal(signals)
        if confounds is not None:
            confounds = detrend_signal(confounds)

    if filter_type == "butterworth":
        signals, confounds = butterworth_both(
            signals, confounds, t_r, low_pass, high_pass, butterworth_options
        )
        if kept is not None:
            signals, confounds = censor(signals, confounds, kept)

    if confounds is not None and confounds.shape[1] > 0:
        signals = _project_out(signals, confounds, standardize_confounds)

    if standardization is None:
        return signals
    if standardization == "psc" and mean_was_removed(signals, original_mean):
        # Detrending or high-pass filtering zeroed the mean that psc divides by.
        signals = signals + original_mean
    return standardize_signal(signals, standardize=standardization)


def _project_out(
    signals: np.ndarray, confounds: np.ndarray, standardize_confounds: bool
) -> np.ndarray:
    """Remove from ``signals`` its projection on the span of ``confounds``."""
    if standardize_confounds:
        # A single time point cannot be z-scored (it would become 0), so it is left as is.
        if confounds.shape[0] > 1:
            confounds = zscore(confounds, ddof=0, centered=False)
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
