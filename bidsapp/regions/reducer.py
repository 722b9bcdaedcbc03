"""RegionReducer: the one place where voxel signals become region signals.

:class:`RegionReducer` is built once from a labels array (and an optional mask); it
records which voxels feed which region, so that reducing a block of volumes takes at most
a few vectorised numpy calls per region (never a Python loop over voxels). A block is any
``(n_volumes, n_voxels)`` array whose columns are the reducer's voxels, in the reducer's
order (see :meth:`RegionReducer.take`), so data can be streamed through it a few volumes
at a time. It is the engine's reducer for labels images (:class:`bidsapp.engine.Reducer`).

The reductions give the same numbers as ``scipy.ndimage`` measurements (``mean``,
``median``, ``sum``, ``minimum``, ``maximum``, ``variance``, ``standard_deviation``),
which is what nilearn 0.12.1's ``img_to_signals_labels`` uses, volume by volume. Part of
the numerical core.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Region reductions (a masker's ``strategy``), named as ``scipy.ndimage`` measurements.
REDUCTIONS = (
    "mean",
    "median",
    "sum",
    "minimum",
    "maximum",
    "variance",
    "standard_deviation",
)


def check_reduction(reduction: Any) -> str:
    """Return ``reduction`` if it is a known region reduction (a masker's ``strategy``).

    Parameters
    ----------
    reduction : str
        One of :data:`REDUCTIONS`.

    Returns
    -------
    str
        The reduction, unchanged.

    Raises
    ------
    ValueError
        If the reduction is unknown (the message names the masker's ``strategy``).

    """
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(
            f"Invalid strategy {reduction!r}: 'strategy' must be one of {list(REDUCTIONS)}."
        )
    return reduction


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
    reduction : str, default="mean"
        One of :data:`REDUCTIONS` (a masker's ``strategy``).
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
        reduction: str = "mean",
        mask: np.ndarray | None = None,
        background_label: float = 0,
    ) -> None:
        self.reduction = check_reduction(reduction)
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
            kernel = _KERNELS[self.reduction]
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
