"""Scrubbing: motion outliers and short segments become censored volumes.

The one definition of the censoring defaults (FD 0.5 mm, standardized DVARS 1.5, kept
segments of at least 5 volumes: fMRIPrep's and nilearn 0.13's) and of the rule that
turns thresholds into censored volumes, as one-hot ``motion_outlier_<k>`` regressors.
Part of the numerical core, confounds layer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from bidsapp.confounds.columns import MOTION_MEASURES

#: Minimum length, in volumes, of a kept segment between motion outliers (nilearn's).
DEFAULT_SCRUB = 5
#: Framewise displacement (mm) above which a volume is a motion outlier (fMRIPrep's,
#: nilearn 0.13's).
DEFAULT_FD_THRESHOLD = 0.5
#: Standardized DVARS above which a volume is a motion outlier (fMRIPrep's, nilearn 0.13's).
DEFAULT_STD_DVARS_THRESHOLD = 1.5
#: The censoring parameters of :func:`~bidsapp.confounds.load_confounds` and their defaults:
#: the one definition (presets that scrub state their own values).
CENSORING_DEFAULTS = {
    "scrub": DEFAULT_SCRUB,
    "fd_threshold": DEFAULT_FD_THRESHOLD,
    "std_dvars_threshold": DEFAULT_STD_DVARS_THRESHOLD,
}

logger = logging.getLogger(__name__)


MODERN_MEASURES = {measure: measure for measure in MOTION_MEASURES}


def scrub_regressors(
    raw: pd.DataFrame,
    confounds_file: Path,
    params: dict[str, Any],
    measures: dict[str, str | None],
) -> pd.DataFrame:
    """One-hot columns ``motion_outlier_<k>``, one per volume censored by scrubbing.

    ``measures`` maps ``framewise_displacement`` and ``std_dvars`` to the columns holding
    them (see :func:`motion_measure_columns`); a measure without a column censors nothing.
    """
    flagged = motion_outliers(
        raw,
        measures,
        fd_threshold=params["fd_threshold"],
        std_dvars_threshold=params["std_dvars_threshold"],
        scrub=params["scrub"],
    )
    outliers = np.flatnonzero(flagged)
    logger.debug("Scrubbing censors %d volumes of %s", outliers.size, confounds_file)
    one_hot = np.zeros((len(raw), outliers.size), dtype=np.int64)
    one_hot[outliers, np.arange(outliers.size)] = 1
    columns = [f"motion_outlier_{k}" for k in range(outliers.size)]
    return pd.DataFrame(one_hot, columns=columns, index=raw.index)


def motion_outliers(
    raw: pd.DataFrame,
    measures: dict[str, str | None],
    *,
    fd_threshold: float,
    std_dvars_threshold: float,
    scrub: int,
) -> np.ndarray:
    """Flag the volumes censored by scrubbing: motion outliers and short kept segments.

    Parameters
    ----------
    raw : pandas.DataFrame
        The confounds table, one row per volume.
    measures : dict
        Maps ``framewise_displacement`` and ``std_dvars`` to the columns holding them
        (see :func:`~bidsapp.confounds.motion_measure_columns`); a measure without a
        column censors nothing.
    fd_threshold : float
        Framewise displacement (mm) above which a volume is an outlier; inf disables it.
    std_dvars_threshold : float
        Standardized DVARS above which a volume is an outlier; inf disables it.
    scrub : int
        Minimum length, in volumes, of a kept segment (:func:`censor_short_segments`);
        0 censors the outliers only.

    Returns
    -------
    numpy.ndarray of bool
        ``(n_volumes,)``: True for the censored volumes.
    """

    def values(measure: str) -> np.ndarray:
        column = measures[measure]
        if column is None:
            return np.full(len(raw), np.nan)
        return pd.to_numeric(raw[column], errors="coerce").to_numpy(dtype=float)

    # NaN (the first volume) compares False, so it is never an outlier.
    with np.errstate(invalid="ignore"):
        flagged = (values("framewise_displacement") > fd_threshold) | (
            values("std_dvars") > std_dvars_threshold
        )
    if scrub > 0 and flagged.any():
        flagged = censor_short_segments(flagged, scrub)
    return flagged


def censor_short_segments(flagged: np.ndarray, min_length: int) -> np.ndarray:
    """Also flag every run of unflagged volumes shorter than ``min_length``.

    Parameters
    ----------
    flagged : numpy.ndarray of bool
        ``(n_volumes,)``: the volumes already censored.
    min_length : int
        Minimum number of volumes of a kept segment.

    Returns
    -------
    numpy.ndarray of bool
        ``flagged`` with the short kept segments flagged too (a new array).
    """
    segments, _ = ndimage.label(~flagged)
    lengths = np.bincount(segments)
    short = lengths < min_length
    short[0] = False  # label 0: the flagged volumes themselves
    return flagged | short[segments]


def censoring_thresholds(parameters: dict[str, Any]) -> tuple[float, float, int]:
    """Return the censoring in force for :func:`~bidsapp.confounds.load_confounds` parameters.

    Parameters
    ----------
    parameters : dict
        ``load_confounds`` keyword arguments (a preset's ``parameters``, overrides applied),
        with the ``strategy`` list.

    Returns
    -------
    tuple
        ``(fd_threshold, std_dvars_threshold, scrub)``: FD in mm, standardized DVARS, and the
        minimum kept segment in volumes; ``(inf, inf, 0)`` when ``scrub`` is not in the
        strategy. A parameter left out takes :data:`CENSORING_DEFAULTS`.
    """
    if "scrub" not in parameters.get("strategy", ()):
        return (float("inf"), float("inf"), 0)
    merged = {**CENSORING_DEFAULTS, **parameters}
    return (merged["fd_threshold"], merged["std_dvars_threshold"], merged["scrub"])
