"""Labels images and region signals: checks, masking, reducers, and back to images.

Label values are checked, a mask removes voxels (and, optionally, whole regions),
:func:`labels_reducer` builds the :class:`~bidsapp.regions.RegionReducer` of a labels image
on the extraction grid, :func:`img_to_signals` reduces a whole image and
:func:`signals_to_img` gives each region's voxels its signal, as nilearn 0.12.1's
``signal_extraction`` functions do. Part of the numerical core.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import nibabel as nib
import numpy as np

from bidsapp.image import (
    check_niimg,
    new_img_like,
    safe_get_data,
    same_affine,
)
from bidsapp.regions.reducer import RegionReducer, check_reduction


def check_labels_values(labels: np.ndarray, name: str = "labels_img") -> None:
    """Raise if a labels array holds non-integer values.

    Parameters
    ----------
    labels : numpy.ndarray
        Labels data (any dtype); non-finite values are ignored.
    name : str, default="labels_img"
        Parameter name for the error message.

    Raises
    ------
    ValueError
        If some finite value is not a whole number.

    """
    if labels.dtype.kind in "iub":
        return
    values = np.unique(labels[np.isfinite(labels)])
    fractional = values[values != np.round(values)]
    if fractional.size:
        raise ValueError(
            f"'{name}' must contain integer labels; found non-integer values "
            f"{fractional[:5].tolist()}{' ...' if fractional.size > 5 else ''}. "
            "Is it a probabilistic atlas or a continuous image?"
        )


def check_grid(reference: nib.spatialimages.SpatialImage, other, ref_name: str, name: str):
    """Raise when two images do not share shape and affine (no resampling here)."""
    if tuple(reference.shape[:3]) != tuple(other.shape[:3]):
        raise ValueError(
            f"'{name}' has shape {tuple(other.shape[:3])} but '{ref_name}' has shape "
            f"{tuple(reference.shape[:3])}: images have incompatible shapes."
        )
    if not same_affine(reference.affine, other.affine):
        raise ValueError(
            f"'{name}' and '{ref_name}' have different affine matrices:\n"
            f"{other.affine}\nvs\n{reference.affine}"
        )


def masked_labels(
    labels_img: Any, mask_img: Any = None, background_label: float = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load labels, apply a mask, and list the label values before and after.

    Parameters
    ----------
    labels_img : niimg-like
        3D labels image.
    mask_img : niimg-like, optional
        3D mask on the same grid; voxels where it is 0 become background.
    background_label : number, default=0
        Label value meaning "no region".

    Returns
    -------
    labels_data : numpy.ndarray
        Labels array after masking (non-finite labels set to 0).
    ids_before : numpy.ndarray
        Sorted label values of the unmasked labels (background excluded).
    ids_after : numpy.ndarray
        Sorted label values left after masking (background excluded).

    """
    labels_img = check_niimg(labels_img, ndim=3, name="labels_img")
    labels_data = safe_get_data(labels_img, ensure_finite=True)
    before = np.unique(labels_data)
    if mask_img is not None:
        mask_img = check_niimg(mask_img, ndim=3, name="mask_img")
        check_grid(labels_img, mask_img, "labels_img", "mask_img")
        mask = safe_get_data(mask_img, ensure_finite=True).astype(bool)
        labels_data = np.where(mask, labels_data, background_label).astype(labels_data.dtype)
    after = np.unique(labels_data)
    return (
        labels_data,
        before[before != background_label],
        after[after != background_label],
    )


def img_to_signals(
    imgs: Any,
    labels_img: Any,
    mask_img: Any = None,
    background_label: float = 0,
    strategy: str = "mean",
    keep_masked_labels: bool = True,
) -> tuple[np.ndarray, list, nib.Nifti1Image]:
    """Extract one signal per region from a 4D image.

    Labels, mask and data must already share a grid (no resampling here).

    Parameters
    ----------
    imgs : niimg-like
        3D or 4D image; a 3D image is treated as a single volume.
    labels_img : niimg-like
        3D labels image on the data grid.
    mask_img : niimg-like, optional
        3D mask on the data grid; voxels outside it are ignored.
    background_label : number, default=0
        Label value meaning "no region".
    strategy : str, default="mean"
        Region reduction, one of :data:`~bidsapp.regions.REDUCTIONS`.
    keep_masked_labels : bool, default=True
        If True, regions entirely outside the mask are kept as all-zero
        columns; if False they are dropped.

    Returns
    -------
    signals : numpy.ndarray
        ``(n_volumes, n_regions)``, float32 for float32 data, else float64.
        Non-finite data values count as 0.
    region_ids : list
        Label value of each column.
    masked_atlas : nibabel.Nifti1Image
        The labels image after masking (integer dtype), on the data grid.

    """
    check_reduction(strategy)
    labels_img = check_niimg(labels_img, ndim=3, name="labels_img")
    imgs = check_niimg(imgs, atleast_4d=True, name="imgs")
    reducer, region_ids, atlas = labels_reducer(
        labels_img,
        mask_img,
        reference=imgs,
        background_label=background_label,
        reduction=strategy,
        keep_masked_labels=keep_masked_labels,
    )
    data = safe_get_data(imgs, ensure_finite=True)
    signals = reducer.reduce(reducer.take(data))
    return signals, region_ids, atlas


def labels_reducer(
    labels_img: Any,
    mask_img: Any = None,
    *,
    reference: Any = None,
    background_label: float = 0,
    reduction: str = "mean",
    keep_masked_labels: bool = True,
) -> tuple[RegionReducer, list, nib.Nifti1Image]:
    """Build the reducer of a labels image (and mask), as :func:`img_to_signals` uses it.

    Parameters
    ----------
    labels_img : niimg-like
        3D labels image, on the grid signals are extracted on.
    mask_img : niimg-like, optional
        3D mask on the same grid; voxels outside it are ignored.
    reference : nibabel image, optional
        Image on the extraction grid (only its header is used): labels and mask must
        share its shape and affine.
    background_label : number, default=0
        Label value meaning "no region".
    reduction : str, default="mean"
        One of :data:`~bidsapp.regions.REDUCTIONS` (a masker's ``strategy``).
    keep_masked_labels : bool, default=True
        If True, regions entirely outside the mask are kept as all-zero columns; if False
        they are dropped.

    Returns
    -------
    reducer : RegionReducer
        Reduces blocks of the grid's voxels to one column per region.
    region_ids : list
        Label value of each column.
    masked_atlas : nibabel.Nifti1Image
        The labels image after masking (integer dtype).

    Raises
    ------
    ValueError
        If labels, mask and reference do not share a grid.
    """
    check_reduction(reduction)
    labels_img = check_niimg(labels_img, ndim=3, name="labels_img")
    if reference is not None:
        check_grid(reference, labels_img, "imgs", "labels_img")
    if mask_img is not None:
        mask_img = check_niimg(mask_img, ndim=3, name="mask_img")
        if reference is not None:
            check_grid(reference, mask_img, "imgs", "mask_img")
    labels_data, before, after = masked_labels(labels_img, mask_img, background_label)
    region_ids = before if keep_masked_labels else after
    reducer = RegionReducer(labels_data, region_ids, reduction=reduction)
    atlas = nib.Nifti1Image(labels_data.astype(_atlas_dtype(labels_data)), labels_img.affine)
    return reducer, list(region_ids), atlas


def _atlas_dtype(labels_data: np.ndarray) -> type:
    """Return int8 (as nilearn) when the labels fit in it, else int32."""
    if labels_data.size == 0:
        return np.int8
    info = np.iinfo(np.int8)
    if info.min <= labels_data.min() and labels_data.max() <= info.max:
        return np.int8
    return np.int32


def signals_to_img(
    signals: np.ndarray,
    labels_img: Any,
    mask_img: Any = None,
    background_label: float = 0,
    region_ids: Sequence[float] | None = None,
) -> nib.spatialimages.SpatialImage:
    """Build an image where each region's voxels carry the region's signal.

    Parameters
    ----------
    signals : numpy.ndarray
        ``(n_volumes, n_regions)`` for a 4D image or ``(n_regions,)`` for a 3D
        image.
    labels_img : niimg-like
        3D labels image defining the regions.
    mask_img : niimg-like, optional
        3D mask on the labels grid; voxels outside it stay 0.
    background_label : number, default=0
        Label value meaning "no region".
    region_ids : sequence of numbers, optional
        Label value of each signal column. Default (as nilearn): the sorted
        labels present inside the mask, minus the background.

    Returns
    -------
    nibabel.spatialimages.SpatialImage
        Image on the labels grid, dtype of ``signals``, zero outside regions.

    """
    labels_img = check_niimg(labels_img, ndim=3, name="labels_img")
    labels_data, _, after = masked_labels(labels_img, mask_img, background_label)
    reducer = RegionReducer(labels_data, after if region_ids is None else region_ids)
    signals = np.asarray(signals)
    if signals.ndim not in (1, 2) or signals.shape[-1] != reducer.n_regions:
        raise ValueError(
            f"'signals' has shape {signals.shape}; expected (n_volumes, {reducer.n_regions}) "
            f"or ({reducer.n_regions},), one column per region."
        )
    data = reducer.to_volume(reducer.expand(signals), dtype=signals.dtype)
    return new_img_like(labels_img, data, labels_img.affine)
