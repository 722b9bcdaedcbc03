"""Gaussian smoothing of volumes with nilearn 0.12.1's semantics.

:func:`smooth_array` smooths along each axis with a kernel given as a full width at half
maximum in mm (per axis, from the affine's voxel sizes), with nilearn's ``"fast"`` kernel
and its handling of non-finite values. ``nibabel.processing.smooth_image`` is not used: it
pads differently. Part of the numerical core.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from bidsapp.errors import ParameterWarning, warn

# FWHM = sqrt(8 ln 2) * sigma for a Gaussian kernel.
_FWHM_OVER_SIGMA = np.sqrt(8.0 * np.log(2.0))


def _fast_smooth(arr: np.ndarray) -> np.ndarray:
    """Smooth with a [0.2, 1, 0.2] kernel per axis, normalised by 1 + 6 * 0.2."""
    weight = 0.2
    out = arr.copy()
    weighted = weight * arr
    for axis in range(3):
        lower = [slice(None)] * arr.ndim
        upper = [slice(None)] * arr.ndim
        lower[axis] = slice(None, -1)
        upper[axis] = slice(1, None)
        out[tuple(lower)] += weighted[tuple(upper)]
        out[tuple(upper)] += weighted[tuple(lower)]
    out /= 1 + 6 * weight
    return out


def smooth_array(
    arr: np.ndarray,
    affine: np.ndarray | None,
    fwhm: Any = None,
    ensure_finite: bool = True,
    copy: bool = True,
) -> np.ndarray:
    """Smooth an array with a Gaussian kernel along its first three axes.

    Parameters
    ----------
    arr : numpy.ndarray
        3D array, or 4D with volumes along the last axis. Signed-integer
        arrays are converted to float32 (float64 for int64).
    affine : numpy.ndarray of shape (4, 4) or (3, 3), or None
        Voxel-to-world affine, giving the voxel size (mm) along each axis.
        Unused (may be None) when ``fwhm`` is None or "fast".
    fwhm : float, sequence of 3 floats, "fast" or None, default=None
        Full width at half maximum of the kernel, in mm (one value for all
        axes, or one per axis where None or 0 means no smoothing along that
        axis). "fast" applies a cheap [0.2, 1, 0.2] kernel. None or 0 means
        no smoothing (0 warns, as in nilearn).
    ensure_finite : bool, default=True
        Replace NaNs and infinities by 0 before smoothing.
    copy : bool, default=True
        If False, a float input array may be smoothed in place.

    Returns
    -------
    numpy.ndarray
        The smoothed array.

    """
    if isinstance(fwhm, (int, float)) and not isinstance(fwhm, bool) and fwhm == 0:
        warn(
            f"The parameter 'fwhm' for smoothing is specified as {fwhm}. "
            "Setting it to None (no smoothing will be performed)",
            ParameterWarning,
        )
        fwhm = None
    if arr.dtype.kind == "i":
        arr = arr.astype(np.float64 if arr.dtype == np.int64 else np.float32)
    elif copy:
        arr = arr.copy()
    if ensure_finite:
        arr[~np.isfinite(arr)] = 0
    if isinstance(fwhm, str):
        if fwhm != "fast":
            raise ValueError(f"'fwhm' must be a number, a sequence, 'fast' or None; got {fwhm!r}.")
        return _fast_smooth(arr)
    if fwhm is None:
        return arr
    fwhm = np.array(
        [0.0 if v is None else v for v in np.ravel(np.asarray(fwhm, dtype=object))], dtype=float
    )
    voxel_size = np.sqrt(np.sum(np.asarray(affine)[:3, :3] ** 2, axis=0))
    sigma = fwhm / (_FWHM_OVER_SIGMA * voxel_size)
    for axis, s in enumerate(sigma):
        if s > 0.0:
            ndimage.gaussian_filter1d(arr, s, output=arr, axis=axis)
    return arr
