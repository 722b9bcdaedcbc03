"""Region coverage: how much of each region a brain mask keeps.

Voxel counts per region, inside and outside a mask, on the labels grid (the mask
resampled to it by nearest neighbour when needed). Part of the numerical core.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bidsapp.image import (
    check_niimg,
    resample_img,
    safe_get_data,
    same_fov,
)
from bidsapp.regions.labels import check_grid
from bidsapp.regions.reducer import RegionReducer


def region_voxel_counts(
    labels: np.ndarray, region_ids: Sequence[float], mask: np.ndarray | None = None
) -> np.ndarray:
    """Count each region's voxels (inside ``mask`` when given).

    Parameters
    ----------
    labels : numpy.ndarray
        3D labels array.
    region_ids : sequence of numbers
        Label values to count.
    mask : numpy.ndarray, optional
        3D mask, same shape as ``labels``.

    Returns
    -------
    numpy.ndarray of int
        One count per region id.

    """
    return RegionReducer(labels, region_ids, mask=mask).counts.copy()


def region_coverage(
    labels: Any,
    mask: Any = None,
    region_ids: Sequence[float] | None = None,
    *,
    reference: Any = None,
    background_label: float = 0,
) -> np.ndarray:
    """Fraction of each region's voxels that lie inside a (brain) mask.

    Parameters
    ----------
    labels : numpy.ndarray or niimg-like
        3D labels array, or labels image (path or nibabel image).
    mask : numpy.ndarray or niimg-like, optional
        3D mask (nonzero means inside) on the labels grid, or a mask image.
        None counts every voxel as inside.
    region_ids : sequence of numbers, optional
        Label values of the regions, in output order. Default: the sorted
        label values present, minus ``background_label``.
    reference : niimg-like, optional
        Image whose voxel grid is used (only its header is read): image
        inputs are first resampled onto it with nearest-neighbour
        interpolation, as the masker does with ``resampling_target="data"``.
        Requires image inputs.
    background_label : number, default=0
        Label value meaning "no region" (only used for the default
        ``region_ids``).

    Returns
    -------
    numpy.ndarray of float
        Coverage in [0, 1] for each region; NaN for a region with no voxel at
        all on the grid used.

    Raises
    ------
    ValueError
        If labels and mask arrays differ in shape, or image grids differ and
        no ``reference`` is given.
    """
    labels_data, mask_data = _coverage_inputs(labels, mask, reference)
    if region_ids is None:
        present = np.unique(labels_data)
        region_ids = present[present != background_label]
    region_ids = np.asarray(region_ids)
    total = region_voxel_counts(labels_data, region_ids)
    if mask_data is None:
        inside = total
    else:
        inside = region_voxel_counts(labels_data, region_ids, mask=mask_data)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / np.maximum(total, 1), np.nan)


def _coverage_inputs(labels: Any, mask: Any, reference: Any):
    """Return labels and mask arrays on a common grid for :func:`region_coverage`."""
    if isinstance(labels, np.ndarray):
        if reference is not None:
            raise ValueError("'reference' needs 'labels' given as an image, not an array.")
        mask_data = None if mask is None else np.asarray(mask)
        if mask_data is not None and mask_data.shape != labels.shape:
            raise ValueError(
                f"'mask' has shape {mask_data.shape} but 'labels' has shape {labels.shape}."
            )
        return labels, mask_data
    labels_img = check_niimg(labels, ndim=3, name="labels")
    mask_img = None if mask is None else check_niimg(mask, ndim=3, name="mask")
    if reference is not None:
        grid = check_niimg(reference, name="reference")
        labels_img = _on_grid(labels_img, grid)
        mask_img = None if mask_img is None else _on_grid(mask_img, grid)
    if mask_img is not None:
        check_grid(labels_img, mask_img, "labels", "mask")
    labels_data = safe_get_data(labels_img, ensure_finite=True)
    mask_data = None if mask_img is None else safe_get_data(mask_img, ensure_finite=True)
    return labels_data, mask_data


def _on_grid(img, grid):
    """Resample ``img`` (nearest neighbour) onto ``grid`` unless already there."""
    if same_fov(img, grid):
        return img
    return resample_img(
        img, target_affine=grid.affine, target_shape=grid.shape[:3], interpolation="nearest"
    )
