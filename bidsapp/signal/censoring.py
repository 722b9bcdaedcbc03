"""Censoring: sample masks, dropped volumes and their interpolation.

Sample masks (indices or booleans, per run) become kept indices; censored volumes are
dropped, or filled by cubic-spline interpolation before a Butterworth filter and removed
after it, as nilearn 0.12.1 does. Part of the numerical core.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.interpolate import CubicSpline

from bidsapp.errors import BidsappError, ParameterFutureWarning, warn


class AllVolumesRemovedError(BidsappError, ValueError):
    """Raised when ``sample_mask`` keeps no volume of a run."""


def censor(
    signals: np.ndarray, confounds: np.ndarray | None, kept: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """Keep only the volumes listed in ``kept``."""
    return signals[kept], None if confounds is None else confounds[kept]


def fill_censored(
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
            ParameterFutureWarning,
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


def sanitize_sample_masks(sample_mask: Any, run_lengths: list[int]) -> list[np.ndarray] | None:
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
