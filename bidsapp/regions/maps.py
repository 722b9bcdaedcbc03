"""Probabilistic (weighted) maps: voxel signals to one signal per map, by least squares.

nilearn 0.12.1's ``img_to_signals_maps`` solves, for the whole 2D data at once,
``min ||maps_in_mask @ signals.T - data_in_mask||`` with ``scipy.linalg.lstsq``. The
:class:`MapsReducer` here solves the same least-squares problem a block of volumes at a
time, so that it runs in the streaming engine (:class:`bidsapp.engine.Reducer`) next to
labels reducers: the maps matrix ``W`` (voxels x maps) and the pseudo-inverse of its Gram
matrix ``W.T @ W`` are computed once; each block is then ``(block @ W) @ pinv(W.T @ W)``,
the minimum-norm least-squares solution that ``lstsq`` returns (maps with no voxel give
all-zero columns, as there). The normal equations square the condition number of ``W``:
for maps whose condition number is below ~1e4 the result agrees with ``lstsq`` to ~1e-8
relative in float64. ``W`` is kept sparse when most of its entries are zero (real atlases
such as DiFuMo), so memory stays about the size of the nonzero weights.

Which voxels enter the system follows nilearn's ``_trim_maps``: without a mask every voxel
(here only those where some map is nonzero: zero rows change nothing); with a mask, the
voxels inside it where some kept map is positive. Part of the numerical core.
"""

from __future__ import annotations

from typing import Any

import nibabel as nib
import numpy as np
import scipy.linalg
import scipy.sparse

from bidsapp.errors import RegionWarning, warn
from bidsapp.image import check_niimg, new_img_like, safe_get_data
from bidsapp.regions.labels import check_grid

__all__ = [
    "MapsReducer",
    "img_to_signals_maps",
    "maps_reducer",
    "signals_to_img_maps",
    "trim_maps",
    "warn_masked_maps",
]

#: Below this fraction of nonzero weights the maps matrix is stored sparse.
SPARSE_DENSITY = 0.25


def trim_maps(
    maps: np.ndarray, mask: np.ndarray | None, keep_empty: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Restrict maps to a mask, as nilearn's ``_trim_maps``.

    Parameters
    ----------
    maps : numpy.ndarray
        ``(x, y, z, n_maps)`` finite weights.
    mask : numpy.ndarray or None
        ``(x, y, z)`` mask; None keeps every voxel and every map.
    keep_empty : bool
        Keep maps with no weight inside the mask (as all-zero maps).

    Returns
    -------
    support : numpy.ndarray of bool
        ``(x, y, z)`` voxels entering the least-squares system: where some kept map is
        positive inside the mask (every voxel where some map is nonzero without a mask).
    kept : numpy.ndarray of int
        Indices (in ``maps``) of the maps kept, in order.
    """
    n_maps = maps.shape[3]
    if mask is None:
        return np.any(maps != 0, axis=3), np.arange(n_maps)
    inside = np.asarray(mask).astype(bool)
    sums = np.abs(maps[inside]).sum(axis=0)
    kept = np.arange(n_maps) if keep_empty else np.flatnonzero(sums > 0)
    support = inside & np.any(maps[..., kept] > 0, axis=3)
    return support, kept


class MapsReducer:
    """Least-squares signals of weighted maps: the engine's reducer for probabilistic atlases.

    It implements :class:`bidsapp.engine.Reducer` (``shape``, ``voxel_indices``,
    ``n_regions``, ``reduce``) and ``result_dtype``.

    Parameters
    ----------
    maps : numpy.ndarray
        ``(x, y, z, n_maps)`` weights; non-finite values count as 0.
    mask : numpy.ndarray, optional
        ``(x, y, z)`` mask: only voxels inside it (and where a map is positive) are used.
    keep_masked_maps : bool, default=True
        Keep maps with no weight inside the mask as all-zero columns; False drops them.

    Attributes
    ----------
    shape : tuple of int
        The 3D grid.
    voxel_indices : numpy.ndarray of int
        C-order flat indices of the voxels of the system, ascending.
    map_indices : numpy.ndarray of int
        Index (in ``maps``) of each output column.
    weights : numpy.ndarray or scipy.sparse.csc_array
        ``(n_voxels, n_regions)`` float64 weights of the kept maps on those voxels.
    weights_dtype : numpy.dtype
        dtype of ``maps`` (with the data's, it gives the signals' dtype, as lstsq).
    """

    def __init__(
        self, maps: np.ndarray, mask: np.ndarray | None = None, keep_masked_maps: bool = True
    ) -> None:
        maps = np.asarray(maps)
        if maps.ndim != 4:
            raise ValueError(f"'maps' must be a 4D array; got shape {maps.shape}.")
        if mask is not None and np.shape(mask) != maps.shape[:3]:
            raise ValueError(f"'mask' has shape {np.shape(mask)} but 'maps' has {maps.shape}.")
        self.weights_dtype = maps.dtype
        if maps.dtype.kind in "fc" and not np.isfinite(maps).all():
            maps = np.where(np.isfinite(maps), maps, 0)
        self.shape = tuple(int(s) for s in maps.shape[:3])
        support, self.map_indices = trim_maps(maps, mask, keep_masked_maps)
        self.voxel_indices = np.flatnonzero(support.ravel())
        dense = maps.reshape(-1, maps.shape[3])[self.voxel_indices][:, self.map_indices]
        dense = dense.astype(np.float64)
        if dense.size and np.count_nonzero(dense) < SPARSE_DENSITY * dense.size:
            self.weights: Any = scipy.sparse.csc_array(dense)
            gram = (self.weights.T @ self.weights).toarray()
        else:
            self.weights = dense
            gram = dense.T @ dense
        # Maps without voxel have zero rows and columns in the Gram matrix: their minimum-norm
        # coefficient is 0. The others are solved with the pseudo-inverse (rank-deficient
        # maps, e.g. duplicates, get lstsq's minimum-norm split).
        self._solved = np.flatnonzero(np.diag(gram) > 0)
        self._inverse = (
            scipy.linalg.pinvh(gram[np.ix_(self._solved, self._solved)])
            if self._solved.size
            else np.zeros((0, 0))
        )

    @property
    def n_regions(self) -> int:
        """Number of output columns (kept maps)."""
        return len(self.map_indices)

    @property
    def n_voxels(self) -> int:
        """Number of voxels of the least-squares system."""
        return len(self.voxel_indices)

    def result_dtype(self, data_dtype: Any) -> np.dtype:
        """Return the signals' dtype for data of ``data_dtype``: lstsq's (float32 or float64)."""
        dtype = np.result_type(self.weights_dtype, np.dtype(data_dtype))
        return np.dtype(np.float32) if dtype == np.float32 else np.dtype(np.float64)

    def take(self, data: np.ndarray) -> np.ndarray:
        """Gather the reducer's voxels from a 3D volume or a 4D array (volumes last).

        Returns ``(n_voxels,)`` or ``(n_volumes, n_voxels)``.
        """
        if tuple(data.shape[:3]) != self.shape or data.ndim not in (3, 4):
            raise ValueError(f"data of shape {data.shape} does not match the maps grid.")
        flat = data.reshape(-1, *data.shape[3:])[self.voxel_indices]
        return flat if data.ndim == 3 else flat.T

    def reduce(self, block: np.ndarray) -> np.ndarray:
        """Least-squares map signals of a block of voxel signals.

        Parameters
        ----------
        block : numpy.ndarray
            ``(n_volumes, n_voxels)`` (or ``(n_voxels,)``), columns in the order of
            :attr:`voxel_indices`; values must be finite.

        Returns
        -------
        numpy.ndarray
            ``(n_volumes, n_regions)`` (or ``(n_regions,)``) in :meth:`result_dtype`.
        """
        block = np.asarray(block)
        one_volume = block.ndim == 1
        block = np.atleast_2d(block)
        if block.ndim != 2 or block.shape[1] != self.n_voxels:
            raise ValueError(
                f"block of shape {block.shape} does not have {self.n_voxels} columns "
                "(one per voxel of the reducer)."
            )
        out = np.zeros((block.shape[0], self.n_regions), dtype=self.result_dtype(block.dtype))
        if self._solved.size and block.shape[0]:
            values = block.astype(np.float64, copy=False)
            if scipy.sparse.issparse(self.weights):
                projected = np.asarray(self.weights.T @ values.T).T
            else:
                projected = values @ self.weights
            out[:, self._solved] = projected[:, self._solved] @ self._inverse
        return out[0] if one_volume else out

    def expand(self, signals: np.ndarray) -> np.ndarray:
        """Voxel values ``signals @ weights.T`` of map signals (as ``signals_to_img_maps``)."""
        signals = np.asarray(signals)
        if signals.shape[-1] != self.n_regions:
            raise ValueError(
                f"signals of shape {signals.shape} do not have {self.n_regions} columns "
                "(one per map)."
            )
        return np.asarray(self.weights @ np.atleast_2d(signals).T).T.reshape(
            *signals.shape[:-1], self.n_voxels
        )


def _maps_and_mask(maps_img: Any, mask_img: Any, reference: Any) -> tuple[Any, np.ndarray | None]:
    maps_img = check_niimg(maps_img, atleast_4d=True, name="maps_img")
    if reference is not None:
        check_grid(reference, maps_img, "imgs", "maps_img")
    mask = None
    if mask_img is not None:
        mask_img = check_niimg(mask_img, ndim=3, name="mask_img")
        check_grid(maps_img, mask_img, "maps_img", "mask_img")
        mask = safe_get_data(mask_img, ensure_finite=True)
    return maps_img, mask


def maps_reducer(
    maps_img: Any,
    mask_img: Any = None,
    *,
    reference: Any = None,
    keep_masked_maps: bool = True,
) -> tuple[MapsReducer, list, nib.spatialimages.SpatialImage]:
    """Build the reducer of a maps image (and mask) on the extraction grid.

    Parameters
    ----------
    maps_img : niimg-like
        4D maps image (one map per volume), on the grid signals are extracted on.
    mask_img : niimg-like, optional
        3D mask on the same grid.
    reference : nibabel image, optional
        Image on the extraction grid (only its header is used).
    keep_masked_maps : bool, default=True
        Keep maps entirely outside the mask as all-zero columns; False drops them.

    Returns
    -------
    reducer : MapsReducer
        Reduces blocks of the grid's voxels to one column per kept map.
    map_indices : list of int
        Index of the map of each column.
    maps_img : nibabel image
        The maps image used.

    Raises
    ------
    ValueError
        If maps, mask and reference do not share a grid.
    """
    maps_img, mask = _maps_and_mask(maps_img, mask_img, reference)
    data = safe_get_data(maps_img, ensure_finite=True)
    reducer = MapsReducer(data, mask, keep_masked_maps=keep_masked_maps)
    return reducer, [int(i) for i in reducer.map_indices], maps_img


def warn_masked_maps(n_maps: int, map_indices: list, keep_masked_maps: bool) -> None:
    """Issue nilearn 0.12.1's warning about maps a mask removes (or would remove)."""
    if keep_masked_maps:
        warn(
            'Applying "mask_img" before signal extraction may result in empty region '
            "signals in the output. These are currently kept (keep_masked_maps=True, the "
            "nilearn 0.12.1 default, deprecated); pass keep_masked_maps=False to remove them.",
            DeprecationWarning,
        )
        return
    removed = sorted(set(range(n_maps)) - set(map_indices))
    if removed:
        warn(
            "After applying mask to the maps image, maps with the following indices were "
            f"removed: {set(removed)}. Out of {n_maps} maps, the masked map image only "
            f"contains {len(map_indices)} maps.",
            RegionWarning,
        )


def img_to_signals_maps(
    imgs: Any, maps_img: Any, mask_img: Any = None, keep_masked_maps: bool = True
) -> tuple[np.ndarray, list]:
    """Least-squares signal of each map, for a whole image (grids must already match).

    Parameters
    ----------
    imgs : niimg-like
        3D or 4D image.
    maps_img : niimg-like
        4D maps on the image grid.
    mask_img : niimg-like, optional
        3D mask on the image grid.
    keep_masked_maps : bool, default=True
        Keep maps entirely outside the mask as all-zero columns.

    Returns
    -------
    signals : numpy.ndarray
        ``(n_volumes, n_maps)``.
    map_indices : list of int
        Index of the map of each column.
    """
    imgs = check_niimg(imgs, atleast_4d=True, name="imgs")
    reducer, indices, _ = maps_reducer(
        maps_img, mask_img, reference=imgs, keep_masked_maps=keep_masked_maps
    )
    if mask_img is not None:
        warn_masked_maps(check_niimg(maps_img, atleast_4d=True).shape[3], indices, keep_masked_maps)
    data = safe_get_data(imgs, ensure_finite=True)
    return reducer.reduce(reducer.take(data)), indices


def signals_to_img_maps(
    signals: np.ndarray, maps_img: Any, mask_img: Any = None
) -> nib.spatialimages.SpatialImage:
    """Build an image from map signals: each voxel gets ``signals @ maps`` (nilearn's rule).

    Parameters
    ----------
    signals : numpy.ndarray
        ``(n_volumes, n_maps)`` or ``(n_maps,)``, one column per map of ``maps_img``.
    maps_img : niimg-like
        4D maps.
    mask_img : niimg-like, optional
        3D mask on the maps grid; voxels outside it, or where no map is positive, are 0.

    Returns
    -------
    nibabel.spatialimages.SpatialImage
        4D (3D for 1D signals) image on the maps grid.
    """
    maps_img, mask = _maps_and_mask(maps_img, mask_img, None)
    reducer = MapsReducer(safe_get_data(maps_img, ensure_finite=True), mask, True)
    signals = np.asarray(signals)
    if signals.ndim not in (1, 2) or signals.shape[-1] != reducer.n_regions:
        raise ValueError(
            f"'signals' has shape {signals.shape}; expected (n_volumes, {reducer.n_regions}) "
            f"or ({reducer.n_regions},), one column per map."
        )
    values = reducer.expand(signals)
    dtype = np.result_type(signals.dtype, reducer.weights_dtype)
    extra = () if signals.ndim == 1 else (signals.shape[0],)
    out = np.zeros((int(np.prod(reducer.shape)), *extra), dtype=dtype)
    out[reducer.voxel_indices] = values if signals.ndim == 1 else values.T
    return new_img_like(maps_img, out.reshape(*reducer.shape, *extra), maps_img.affine)
