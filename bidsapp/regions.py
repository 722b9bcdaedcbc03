"""The one place where voxel signals become region signals.

:class:`RegionReducer` is built once from a labels array (and an optional
mask); it records which voxels feed which region, so that reducing a block of
volumes takes at most a few vectorised numpy calls per region (never a Python
loop over voxels). A block is any ``(n_volumes, n_voxels)`` array whose
columns are the reducer's voxels, in the reducer's order (see
:meth:`RegionReducer.take`), so data can be streamed through it a few volumes
at a time.

The strategies give the same numbers as ``scipy.ndimage`` measurements
(``mean``, ``median``, ``sum``, ``minimum``, ``maximum``, ``variance``,
``standard_deviation``), which is what nilearn 0.12.1's
``img_to_signals_labels`` uses, volume by volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import nibabel as nib
import numpy as np

from bidsapp.image import (
    check_niimg,
    get_data,
    new_img_like,
    resample_img,
    safe_get_data,
    same_affine,
    same_fov,
)

STRATEGIES = (
    "mean",
    "median",
    "sum",
    "minimum",
    "maximum",
    "variance",
    "standard_deviation",
)


def check_strategy(strategy: Any) -> str:
    """Return ``strategy`` if it is a known reduction strategy.

    Parameters
    ----------
    strategy : str
        One of :data:`STRATEGIES`.

    Returns
    -------
    str
        The strategy, unchanged.

    Raises
    ------
    ValueError
        If the strategy is unknown.

    """
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise ValueError(
            f"Invalid strategy {strategy!r}: 'strategy' must be one of {list(STRATEGIES)}."
        )
    return strategy


class RegionReducer:
    """Reduce voxel signals to one signal per region.

    The engine's reducer for labels images (it implements :class:`bidsapp.engine.Reducer`:
    ``shape``, ``voxel_indices``, ``n_regions`` and ``reduce``).

    Parameters
    ----------
    labels : numpy.ndarray
        3D array of region labels (one value per voxel). Non-finite values
        are treated as 0.
    region_ids : sequence of numbers, optional
        Label values of the regions, in output column order. Regions with no
        voxel (e.g. entirely outside ``mask``) give all-zero columns.
        Default: the sorted label values present inside the mask, minus
        ``background_label``.
    strategy : str, default="mean"
        One of :data:`STRATEGIES`.
    mask : numpy.ndarray, optional
        3D array, same shape as ``labels``; only voxels where it is nonzero
        are used.
    background_label : number, default=0
        Label value meaning "no region"; only used for the default
        ``region_ids``.

    Attributes
    ----------
    shape : tuple of int
        The 3D grid shape.
    region_ids : numpy.ndarray
        Label value of each output column.
    voxel_indices : numpy.ndarray of int
        Flat (C-order) indices into the 3D grid of the voxels used, grouped
        by region (column order), ascending within a region.
    region_index : numpy.ndarray of int
        Output column of each voxel in ``voxel_indices`` (non-decreasing).
    counts : numpy.ndarray of int
        Number of voxels of each region.

    """

    def __init__(
        self,
        labels: np.ndarray,
        region_ids: Sequence[float] | None = None,
        strategy: str = "mean",
        mask: np.ndarray | None = None,
        background_label: float = 0,
    ) -> None:
        self.strategy = check_strategy(strategy)
        labels = np.asarray(labels)
        if labels.ndim != 3:
            raise ValueError(f"'labels' must be a 3D array; got shape {labels.shape}.")
        flat = labels.ravel()
        if flat.dtype.kind in "fc" and not np.isfinite(flat).all():
            flat = np.where(np.isfinite(flat), flat, 0)
        inside = np.ones(flat.shape, dtype=bool)
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != labels.shape:
                raise ValueError(
                    f"'mask' has shape {mask.shape} but 'labels' has shape {labels.shape}."
                )
            inside = mask.ravel().astype(bool)
        if region_ids is None:
            present = np.unique(flat[inside])
            region_ids = present[present != background_label]
        self.shape = labels.shape
        self.region_ids = _check_region_ids(region_ids)
        self._index_voxels(flat, inside)

    def _index_voxels(self, flat: np.ndarray, inside: np.ndarray) -> None:
        """Find each region's voxels and group them by output column."""
        n_regions = len(self.region_ids)
        order = np.argsort(self.region_ids, kind="stable")
        sorted_ids = self.region_ids[order]
        position = np.searchsorted(sorted_ids, flat)
        position[position >= n_regions] = 0
        if n_regions:
            hit = inside & (sorted_ids[position] == flat)
        else:
            hit = np.zeros(flat.shape, dtype=bool)
        voxels = np.flatnonzero(hit)
        column = order[position[voxels]]
        grouping = np.argsort(column, kind="stable")
        self.voxel_indices = voxels[grouping]
        self.region_index = column[grouping]
        self.counts = np.bincount(self.region_index, minlength=n_regions)
        self._starts = np.zeros(n_regions, dtype=np.intp)
        self._starts[1:] = np.cumsum(self.counts)[:-1]
        self._coords = np.unravel_index(self.voxel_indices, self.shape)

    @property
    def n_regions(self) -> int:
        """Number of output columns (regions)."""
        return len(self.region_ids)

    @property
    def n_voxels(self) -> int:
        """Number of voxels feeding some region."""
        return len(self.voxel_indices)

    def take(self, data: np.ndarray) -> np.ndarray:
        """Gather the reducer's voxels from a volume or a 4D array.

        Parameters
        ----------
        data : numpy.ndarray
            3D array with the reducer's grid shape, or 4D with volumes along
            the last axis.

        Returns
        -------
        numpy.ndarray
            ``(n_voxels,)`` for a 3D input, ``(n_volumes, n_voxels)`` for 4D
            (the transpose of a voxel-major copy, the layout :meth:`reduce`
            is fastest on).

        """
        if tuple(data.shape[:3]) != tuple(self.shape) or data.ndim not in (3, 4):
            raise ValueError(
                f"data of shape {data.shape} does not match the labels grid {self.shape}."
            )
        gathered = data[self._coords]
        return gathered if data.ndim == 3 else gathered.T

    def reduce(self, block: np.ndarray) -> np.ndarray:
        """Reduce a block of voxel signals to region signals.

        Parameters
        ----------
        block : numpy.ndarray
            ``(n_volumes, n_voxels)`` (or ``(n_voxels,)`` for one volume),
            columns in the order of :attr:`voxel_indices`. Values must be
            finite.

        Returns
        -------
        numpy.ndarray
            ``(n_volumes, n_regions)`` (or ``(n_regions,)``): float32 for a
            float32 block, float64 otherwise. Regions without voxels are 0.

        """
        block = np.asarray(block)
        one_volume = block.ndim == 1
        block = np.atleast_2d(block)
        if block.ndim != 2 or block.shape[1] != self.n_voxels:
            raise ValueError(
                f"block of shape {block.shape} does not have {self.n_voxels} columns "
                "(one per voxel of the reducer)."
            )
        out_dtype = np.float32 if block.dtype == np.float32 else np.float64
        if block.dtype.kind not in "f":
            block = block.astype(np.float64)
        out = np.zeros((block.shape[0], self.n_regions), dtype=out_dtype)
        filled = self.counts > 0
        if filled.any() and block.shape[0]:
            kernel = _KERNELS[self.strategy]
            out[:, filled] = kernel(block.T, self._starts[filled], self.counts[filled]).T
        return out[0] if one_volume else out

    def expand(self, signals: np.ndarray) -> np.ndarray:
        """Broadcast region signals back to the reducer's voxels.

        Parameters
        ----------
        signals : numpy.ndarray
            ``(n_volumes, n_regions)`` or ``(n_regions,)``.

        Returns
        -------
        numpy.ndarray
            ``(n_volumes, n_voxels)`` or ``(n_voxels,)``: each voxel gets
            its region's signal.

        """
        signals = np.asarray(signals)
        if signals.shape[-1] != self.n_regions:
            raise ValueError(
                f"signals of shape {signals.shape} do not have {self.n_regions} columns "
                "(one per region)."
            )
        return signals[..., self.region_index]

    def to_volume(self, block: np.ndarray, dtype: Any = None, order: str = "F") -> np.ndarray:
        """Scatter voxel values back onto the 3D grid (zeros elsewhere).

        Parameters
        ----------
        block : numpy.ndarray
            ``(n_volumes, n_voxels)`` or ``(n_voxels,)``.
        dtype : numpy dtype, optional
            Output dtype; defaults to the block's.
        order : {"F", "C"}, default="F"
            Memory layout of the output.

        Returns
        -------
        numpy.ndarray
            3D array (1D block) or 4D array with volumes last.

        """
        block = np.asarray(block)
        extra = () if block.ndim == 1 else (block.shape[0],)
        out = np.zeros(self.shape + extra, dtype=dtype or block.dtype, order=order)
        out[self._coords] = block if block.ndim == 1 else block.T
        return out


def _check_region_ids(region_ids: Sequence[float]) -> np.ndarray:
    """Return region ids as a 1D array, refusing duplicates."""
    ids = np.asarray(region_ids)
    if ids.ndim != 1:
        raise ValueError(f"'region_ids' must be one-dimensional; got shape {ids.shape}.")
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"'region_ids' contains duplicates: {ids.tolist()}.")
    return ids


# ---------------------------------------------------------------------------
# Segment kernels. They take the block voxel-major, ``(n_voxels, n_volumes)``
# (the layout ``take`` gathers, so each region is a run of contiguous rows),
# with rows grouped by region; ``starts`` and ``counts`` describe the non-empty
# groups, which tile the rows exactly. They return ``(n_groups, n_volumes)``.
#
# Sums accumulate in float64 even for float32 data, one value after the other,
# as scipy's bincount does: the block is first converted to float64 (one fast
# vectorised copy), then ``np.add.reduceat`` sums every region in one C loop.
# (``reduceat`` with ``dtype=np.float64`` instead casts element by element and
# is ~12x slower; a Python loop over regions costs ~4 us per region and volume.)
# ---------------------------------------------------------------------------


def _per_region(voxels, starts, counts, reduce_rows):
    """Apply ``reduce_rows`` to each region's rows and stack the results."""
    return np.stack(
        [
            reduce_rows(voxels[start : start + count])
            for start, count in zip(starts, counts, strict=True)
        ]
    )


def _as_float64(voxels):
    return voxels if voxels.dtype == np.float64 else voxels.astype(np.float64)


def _sums(voxels, starts, counts):
    return np.add.reduceat(_as_float64(voxels), starts, axis=0)


def _mean(voxels, starts, counts):
    return _sums(voxels, starts, counts) / counts[:, np.newaxis]


def _variance(voxels, starts, counts):
    values = _as_float64(voxels)
    means = np.add.reduceat(values, starts, axis=0) / counts[:, np.newaxis]
    centred = values - np.repeat(means, counts, axis=0)
    np.multiply(centred, centred, out=centred)
    return np.add.reduceat(centred, starts, axis=0) / counts[:, np.newaxis]


def _standard_deviation(voxels, starts, counts):
    return np.sqrt(_variance(voxels, starts, counts))


def _minimum(voxels, starts, counts):
    return np.minimum.reduceat(voxels, starts, axis=0)


def _maximum(voxels, starts, counts):
    return np.maximum.reduceat(voxels, starts, axis=0)


def _region_median(rows):
    # Average of the two middle order statistics (the same value for odd
    # counts), in the data's dtype as scipy does; a partial sort suffices.
    low, high = (len(rows) - 1) // 2, len(rows) // 2
    part = np.partition(rows, (low, high), axis=0)
    return (part[low] + part[high]) / 2.0


def _median(voxels, starts, counts):
    return _per_region(voxels, starts, counts, _region_median)


_KERNELS = {
    "mean": _mean,
    "median": _median,
    "sum": _sums,
    "minimum": _minimum,
    "maximum": _maximum,
    "variance": _variance,
    "standard_deviation": _standard_deviation,
}


# ---------------------------------------------------------------------------
# Image-level helpers
# ---------------------------------------------------------------------------


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


def _check_grid(reference: nib.spatialimages.SpatialImage, other, ref_name: str, name: str):
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
        _check_grid(labels_img, mask_img, "labels_img", "mask_img")
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
        One of :data:`STRATEGIES`.
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
    check_strategy(strategy)
    labels_img = check_niimg(labels_img, ndim=3, name="labels_img")
    imgs = check_niimg(imgs, atleast_4d=True, name="imgs")
    reducer, region_ids, atlas = labels_reducer(
        labels_img,
        mask_img,
        reference=imgs,
        background_label=background_label,
        strategy=strategy,
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
    strategy: str = "mean",
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
    strategy : str, default="mean"
        One of :data:`STRATEGIES`.
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
    check_strategy(strategy)
    labels_img = check_niimg(labels_img, ndim=3, name="labels_img")
    if reference is not None:
        _check_grid(reference, labels_img, "imgs", "labels_img")
    if mask_img is not None:
        mask_img = check_niimg(mask_img, ndim=3, name="mask_img")
        if reference is not None:
            _check_grid(reference, mask_img, "imgs", "mask_img")
    labels_data, before, after = masked_labels(labels_img, mask_img, background_label)
    region_ids = before if keep_masked_labels else after
    reducer = RegionReducer(labels_data, region_ids, strategy=strategy)
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
        _check_grid(labels_img, mask_img, "labels", "mask")
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


def labels_to_array(labels_img: Any) -> np.ndarray:
    """Return the data of a 3D labels image (non-finite values set to 0).

    Parameters
    ----------
    labels_img : niimg-like
        3D labels image.

    Returns
    -------
    numpy.ndarray
        The labels array (a copy when values had to be replaced).

    """
    img = check_niimg(labels_img, ndim=3, name="labels_img")
    data = get_data(img)
    if data.dtype.kind in "fc" and not np.isfinite(data).all():
        data = np.where(np.isfinite(data), data, 0)
    return data
