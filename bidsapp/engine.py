"""One streaming pass over a BOLD series: volumes become region signals, for several atlases.

:func:`stream_region_signals` reads a 3D/4D image once, front to back, a block of volumes at
a time (:mod:`bidsapp.stream`: one inflate of a ``.nii.gz``, in a background thread), and
reduces each block to region values at once with one :class:`~bidsapp.regions.RegionReducer`
per atlas. The 4D array is never held: memory stays a few blocks whatever the number of
volumes (:func:`memory_bound`). Per volume, and only when asked, it applies what nilearn
0.12.1's ``NiftiLabelsMasker`` applies to the whole series before reducing, in the same
order and with the same numbers:

1. the masker's ``dtype`` cast (after ``scl_slope``/``scl_inter`` scaling, as nibabel does);
2. resampling onto the labels grid (``resampling_target="labels"``: cubic splines, clipped
   to the range of the whole series, which a first pass measures when interpolation can
   overshoot it);
3. Gaussian smoothing (``smoothing_fwhm``; non-finite values become 0 first);
4. non-finite values become 0 (with nilearn's warning) before the reduction.

The same pass counts, per volume, the non-finite values among the voxels the reduction
reads (:attr:`StreamedSignals.non_finite_fraction`), so that a caller can censor volumes
destroyed by NaN/Inf without a second read of the file.

The voxels of all atlases are gathered once (their union); each atlas then takes its own
columns. The mean volume over time is an optional by-product of the same pass.

Reducers come in through one small interface, :class:`Reducer`: the grid they are on, the
voxels they read and a ``reduce`` of a block of those voxels to region values.
:class:`~bidsapp.regions.RegionReducer` (a labels image: each voxel in one region) is one;
:class:`~bidsapp.regions.MapsReducer` (a probabilistic atlas: least squares of the maps'
weights on the voxels they cover) is another, so labels and maps atlases share one pass; a
reader of grayordinates (``shape`` the flat grid of a CIFTI series) would fit the same
interface without changing the engine.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from nibabel.spatialimages import SpatialImage

from bidsapp import image, stream
from bidsapp.errors import DataWarning, ParameterWarning, warn

logger = logging.getLogger(__name__)

#: Resident memory of a job before its pass: the interpreter with bidsapp's imports (numpy,
#: scipy, nibabel, pandas, joblib, scikit-learn: ~150 MB measured for the masker alone;
#: pybids and the CLI's modules: ~200 MB measured), rounded up.
BASELINE_BYTES = 256 * 2**20


@runtime_checkable
class Reducer(Protocol):
    """What the engine needs of a reducer: voxels in, one value per region and volume out.

    The members are read-only: a reducer may store them or compute them.
    """

    @property
    def shape(self) -> tuple[int, ...]:
        """The grid the reducer is built on: the engine refuses a reducer on another grid."""
        ...

    @property
    def voxel_indices(self) -> np.ndarray:
        """C-order flat indices (on :attr:`shape`) of the voxels read, in block-column order."""
        ...

    @property
    def n_regions(self) -> int:
        """Number of output columns (regions, maps, parcels)."""
        ...

    def reduce(self, block: np.ndarray) -> np.ndarray:
        """Reduce a ``(n_volumes, n_voxels)`` block of the voxels read to regions.

        Parameters
        ----------
        block : numpy.ndarray
            The values of :attr:`voxel_indices`, one row per volume, all finite.

        Returns
        -------
        numpy.ndarray
            ``(n_volumes, n_regions)`` region values.
        """
        ...


# A reducer may also have ``result_dtype(values_dtype) -> numpy.dtype``, the type of its
# signals for values of that type (the maps reducer: lstsq's type of maps and data); without
# it, signals are float32 for float32 values and float64 otherwise.


_NON_FINITE_MESSAGE = "Non-finite values detected. These values will be replaced with zeros."


@dataclass(frozen=True)
class StreamedSignals:
    """What one pass over an image produced.

    Attributes
    ----------
    signals : tuple of numpy.ndarray
        One ``(n_volumes, n_regions)`` array per reducer, raw (not cleaned) region values:
        float32 when the reduced data are float32, float64 otherwise.
    n_volumes : int
        Volumes read (1 for a 3D image).
    mean_volume : numpy.ndarray or None
        Mean over time of the input volumes on their own grid (after the ``dtype`` cast,
        before resampling and smoothing; non-finite values propagate), when asked for.
    non_finite : bool
        Whether non-finite values reached the reduction (and were set to 0).
    non_finite_fraction : numpy.ndarray or None
        ``(n_volumes,)`` fraction (0 to 1) of each volume's checked voxels that were NaN or
        infinite in the input, before any resampling or smoothing: the voxels of all
        reducers (the union of the atlases' voxels on the data grid) or, when resampling,
        every voxel of the volume. None when no values were checked (integer data).
    """

    signals: tuple[np.ndarray, ...]
    n_volumes: int
    mean_volume: np.ndarray | None = None
    non_finite: bool = False
    non_finite_fraction: np.ndarray | None = None


class _Source:
    """Where the volumes come from: a NIfTI file read as a stream, or an array."""

    def __init__(self, imgs: Any, dtype: Any) -> None:
        if isinstance(imgs, (str, Path, SpatialImage)):
            img = image.load_img(imgs, name="imgs")
        else:  # a list of 3D images is one series: build it (in memory) as nilearn does
            img = image.check_niimg(imgs, atleast_4d=True, dtype=dtype, name="imgs")
        if len(img.shape) not in (3, 4):
            raise image.DimensionError(
                f"'imgs': expected a 3D or 4D image, got {len(img.shape)}D image of shape "
                f"{img.shape}."
            )
        self.img = img
        self.shape = tuple(int(s) for s in img.shape[:3])
        self.affine = img.affine
        self.n_volumes = int(img.shape[3]) if len(img.shape) == 4 else 1
        self.n_voxels_total = int(np.prod(self.shape))
        self.layout = stream.file_layout(img)
        stored = self.layout.value_dtype if self.layout else image.img_data_dtype(img)
        self.cast = image.target_dtype(np.dtype(stored), dtype)
        self.dtype = self.cast if self.cast is not None else np.dtype(stored)

    def blocks(
        self,
        select: np.ndarray | None,
        *,
        volumes_per_block: int | None,
        inflater: str | None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, (n, n_selected))`` blocks, ``select`` being Fortran-order indices."""
        if self.layout is not None:
            blocks = stream.iter_file_blocks(
                self.layout, select, volumes_per_block=volumes_per_block, inflater=inflater
            )
        else:
            data = np.asanyarray(self.img.dataobj)
            blocks = stream.iter_array_blocks(data, select, volumes_per_block=volumes_per_block)
        with closing(blocks):
            for start, block in blocks:
                yield start, block if self.cast is None else block.astype(self.cast)

    def bounds(self, *, volumes_per_block: int | None, inflater: str | None) -> tuple:
        """``(min(data, 0), max(data, 0))`` over the series, NaNs ignored, as resample_img."""
        low, high = np.inf, -np.inf
        for _, block in self.blocks(None, volumes_per_block=volumes_per_block, inflater=inflater):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks
                block_low, block_high = np.nanmin(block), np.nanmax(block)
            low = np.fmin(low, block_low)
            high = np.fmax(high, block_high)
        return min(low, 0), max(high, 0)


def _fortran_indices(reducer: Reducer) -> np.ndarray:
    """Fortran-order flat indices of a reducer's voxels, in the reducer's column order."""
    return np.ravel_multi_index(
        np.unravel_index(reducer.voxel_indices, reducer.shape), reducer.shape, order="F"
    )


class _Gather:
    """Take the voxels of several reducers from volumes with one gather for all."""

    def __init__(self, reducers: Sequence[Reducer], shape: tuple[int, ...]) -> None:
        own = [_fortran_indices(r) for r in reducers]
        if len(reducers) == 1:
            # One atlas: gather straight into its column order.
            self.select = own[0]
            self.columns: list[np.ndarray | None] = [None]
        else:
            self.select = np.unique(np.concatenate(own)) if own else np.empty(0, np.intp)
            self.columns = [np.searchsorted(self.select, f) for f in own]
        self.select_c = np.ravel_multi_index(np.unravel_index(self.select, shape, order="F"), shape)

    def from_volume(self, volume: np.ndarray) -> np.ndarray:
        """Take the selected voxels of one 3D volume (any memory order)."""
        if volume.flags.f_contiguous:
            return np.take(volume.ravel(order="F"), self.select)
        return np.take(np.ascontiguousarray(volume).ravel(), self.select_c)

    def split(self, gathered: np.ndarray) -> Iterator[np.ndarray]:
        """Each reducer's block, from a block of the selected voxels."""
        for columns in self.columns:
            yield gathered if columns is None else np.take(gathered, columns, axis=1)


def stream_region_signals(
    imgs: Any,
    reducers: Sequence[Reducer],
    *,
    dtype: Any = None,
    target_affine: np.ndarray | None = None,
    target_shape: Sequence[int] | None = None,
    smoothing_fwhm: Any = None,
    mean_volume: bool = False,
    volumes_per_block: int | None = None,
    inflater: str | None = None,
) -> StreamedSignals:
    """Reduce an image to region signals for several reducers in one pass.

    Parameters
    ----------
    imgs : str, pathlib.Path, nibabel image, or list of 3D images
        The series. A file-backed NIfTI image (path, or an image loaded from a file) is
        streamed from disk, inflating a ``.nii.gz`` once; other images are read block by
        block from their array; a list of 3D images is first assembled (in memory).
    reducers : sequence of Reducer
        One per atlas, built on the grid the signals are extracted on: the image's grid,
        or ``target_shape`` when resampling.
    dtype : numpy dtype, "auto" or None, default=None
        Cast the (scaled) data to this type first, as the masker's ``dtype``.
    target_affine : numpy.ndarray of shape (4, 4), optional
        Resample each volume onto this grid (cubic splines) first, with ``target_shape``.
    target_shape : sequence of 3 int, optional
        Shape of the grid to resample onto.
    smoothing_fwhm : float, sequence of 3 floats, "fast" or None, optional
        Smooth each volume with a Gaussian kernel of this full width at half maximum (mm),
        after resampling (see :func:`bidsapp.image.smooth_array`).
    mean_volume : bool, default=False
        Also return the mean volume over time of the input (on the input grid).
    volumes_per_block : int, optional
        Volumes read and reduced at a time; by default as many as fit in
        :data:`bidsapp.stream.BLOCK_BYTES`.
    inflater : {"isal", "zlib-ng", "zlib"}, optional
        Gzip inflater; the fastest installed when None.

    Returns
    -------
    StreamedSignals
        Raw region signals per reducer (and the mean volume when asked for).

    Raises
    ------
    ValueError
        If a reducer is not on the grid signals are extracted on.
    bidsapp.stream.StreamError
        If the file is truncated or corrupt (the message names it).
    """
    if (
        isinstance(smoothing_fwhm, (int, float))
        and not isinstance(smoothing_fwhm, bool)
        and smoothing_fwhm == 0
    ):
        # As smooth_array (once, not once per volume): 0 means no smoothing, with a warning.
        warn(
            f"The parameter 'fwhm' for smoothing is specified as {smoothing_fwhm}. "
            "Setting it to None (no smoothing will be performed)",
            ParameterWarning,
        )
        smoothing_fwhm = None
    source = _Source(imgs, dtype)
    resampler = None
    if target_affine is not None or target_shape is not None:
        resampler = image.VolumeResampler(
            source.shape, source.affine, source.dtype, target_affine, target_shape
        )
        if not resampler.needed:
            resampler = None
    grid = resampler.target_shape if resampler else source.shape
    for i, reducer in enumerate(reducers):
        if tuple(reducer.shape) != tuple(grid):
            raise ValueError(
                f"reducer #{i} is on a grid of shape {reducer.shape}, but signals are "
                f"extracted on a grid of shape {grid}."
            )
    if resampler is not None and hasattr(source.img, "get_sform"):
        if not source.img.get_sform(coded=True)[1]:
            warn(
                "The provided image has no sform in its header. Please check the "
                "provided file. Results may not be as expected.",
                DataWarning,
            )
    clip = None
    if resampler is not None and resampler.needs_bounds:
        logger.debug("Measuring the data range for resampling (one more pass)")
        clip = source.bounds(volumes_per_block=volumes_per_block, inflater=inflater)
    spatial = resampler is not None or smoothing_fwhm is not None
    gather = _Gather(reducers, grid)
    block_dtype = _block_dtype(resampler.dtype if resampler else source.dtype, smoothing_fwhm)
    signals = [
        np.zeros((source.n_volumes, r.n_regions), dtype=_result_dtype(r, block_dtype))
        for r in reducers
    ]
    total = np.zeros(source.shape, dtype=np.float64, order="F") if mean_volume else None
    # The same sum in voxel (file) order, a view of ``total``: volumes are added to it one
    # by one (cast in numpy's small buffers; a float64 sum per block would allocate a
    # volume-sized temporary each time, ~2x slower).
    flat_total = None if total is None else total.reshape(-1, order="F")
    non_finite = False
    counts = np.zeros(source.n_volumes, dtype=np.int64)
    checked = source.n_voxels_total if resampler is not None else int(gather.select.size)
    select = None if (spatial or mean_volume) else gather.select
    blocks = source.blocks(select, volumes_per_block=volumes_per_block, inflater=inflater)
    with closing(blocks):  # stops the reader thread at once if a reduction fails
        for start, block in blocks:
            stop = start + len(block)
            if flat_total is not None:
                for volume in block:
                    np.add(flat_total, volume, out=flat_total)
            if spatial:
                # Count non-finite values on the input's own voxels, before resampling or
                # smoothing (which zero or spread them).
                if block.dtype.kind in "fc":
                    probe = block if resampler is not None else np.take(block, gather.select, 1)
                    _count_non_finite(probe, counts, start)
                gathered = np.stack(
                    [
                        gather.from_volume(
                            _transform_volume(
                                volume.reshape(source.shape, order="F"),
                                resampler,
                                clip,
                                smoothing_fwhm,
                                source.affine,
                            )
                        )
                        for volume in block
                    ]
                )
                all_finite = gathered.dtype.kind not in "fc" or np.isfinite(gathered).all()
            else:
                gathered = np.take(block, gather.select, axis=1) if select is None else block
                all_finite = gathered.dtype.kind not in "fc" or _count_non_finite(
                    gathered, counts, start
                )
            if not all_finite:
                if not non_finite:
                    warn(_NON_FINITE_MESSAGE, DataWarning)
                non_finite = True
                gathered = np.where(np.isfinite(gathered), gathered, 0).astype(gathered.dtype)
            for out, reducer, part in zip(signals, reducers, gather.split(gathered), strict=True):
                out[start:stop] = reducer.reduce(part)
    mean = None
    if total is not None:
        mean = total / max(source.n_volumes, 1)
        if source.dtype == np.float32:
            mean = mean.astype(np.float32)
    fraction = None
    if source.dtype.kind in "fc":
        fraction = counts / checked if checked else np.zeros(source.n_volumes)
    return StreamedSignals(
        signals=tuple(signals),
        n_volumes=source.n_volumes,
        mean_volume=mean,
        non_finite=non_finite,
        non_finite_fraction=fraction,
    )


def _count_non_finite(values: np.ndarray, counts: np.ndarray, start: int) -> bool:
    """Store each volume's (row's) number of non-finite values in ``counts[start:]``.

    Returns whether all values are finite.
    """
    finite = np.isfinite(values)
    if finite.all():
        return True
    counts[start : start + len(values)] = values.shape[1] - finite.sum(axis=1)
    return False


def _block_dtype(data_dtype: np.dtype, smoothing_fwhm: Any) -> np.dtype:
    """Type of the values reducers are given for data of ``data_dtype`` (smoothed or not)."""
    dtype = np.dtype(data_dtype)
    if smoothing_fwhm is not None and dtype.kind == "i":
        dtype = np.dtype(np.float64 if dtype == np.int64 else np.float32)
    return dtype


def _result_dtype(reducer: Reducer, block_dtype: np.dtype) -> np.dtype:
    """Return the type of a reducer's signals for values of ``block_dtype``.

    The reducer's own ``result_dtype`` if it has one, else float32 for float32 values and
    float64 otherwise (what the labels reductions give).
    """
    own = getattr(reducer, "result_dtype", None)
    if own is not None:
        return np.dtype(own(block_dtype))
    return np.dtype(np.float32) if block_dtype == np.float32 else np.dtype(np.float64)


def _transform_volume(volume, resampler, clip, smoothing_fwhm, affine) -> np.ndarray:
    """Resample then smooth one volume, as the masker does to the whole series."""
    if resampler is not None:
        volume = resampler(volume, clip=clip)
        affine = resampler.target_affine
    if smoothing_fwhm is not None:
        volume = image.smooth_array(volume, affine, fwhm=smoothing_fwhm, ensure_finite=True)
    return volume


def physical_memory() -> int | None:
    """Bytes of physical memory of this machine, or None when the system does not say."""
    import os

    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):  # not POSIX, or no such name
        return None


def memory_bound(
    shape: Sequence[int],
    dtype: Any = np.float32,
    n_atlases: int = 1,
    *,
    n_regions: int = 1000,
    smoothing: bool = False,
    resampling: bool = False,
    scaled: bool = False,
) -> int:
    """Upper bound of the peak memory (bytes) of extracting one run with this engine.

    The working set is a few blocks of volumes, whatever the number of volumes: only the
    small ``n_volumes x n_regions`` outputs grow with it (32 bytes per value: raw signals
    and the cleaning's copies).

    Parameters
    ----------
    shape : sequence of int
        Image shape ``(x, y, z[, t])``; a 3D shape counts as one volume.
    dtype : numpy dtype, default=float32
        Stored voxel type.
    n_atlases : int, default=1
        Atlases reduced in the same pass.
    n_regions : int, default=1000
        Regions per atlas (an upper bound).
    smoothing : bool, default=False
        Whether volumes are smoothed.
    resampling : bool, default=False
        Whether volumes are resampled (cubic splines; the target grid is assumed no larger
        than the data grid).
    scaled : bool, default=False
        Whether the file has ``scl_slope``/``scl_inter`` scaling (values become float64).

    Returns
    -------
    int
        :data:`BASELINE_BYTES` (interpreter and libraries) plus the working set: the
        stream's blocks (three alive plus the inflater's copy of one), the gathered and
        per-atlas voxel blocks with the float64 temporaries of the reduction, per-volume
        resampling/smoothing buffers, each atlas' voxel index, and the outputs.
    """
    shape = tuple(int(s) for s in shape)
    n_voxels = int(np.prod(shape[:3]))
    n_volumes = int(np.prod(shape[3:])) if len(shape) > 3 else 1
    itemsize = np.dtype(dtype).itemsize
    per_block = stream.volumes_per_block_for(n_voxels * itemsize)
    block = per_block * n_voxels * itemsize
    value_size = 8 if (scaled or itemsize > 4) else 4
    values = per_block * n_voxels * value_size  # one block of (scaled) values
    working = 4 * block + values
    # gathered union + each atlas' columns and float64 temporaries of its reduction
    working += values + n_atlases * (values + per_block * n_voxels * 8)
    if smoothing or resampling:
        # per volume: float64 spline coefficients, output, non-finite masks, smoothed copy
        working += per_block * n_voxels * (8 * 3 + 4 * value_size)
    # each atlas: labels and its voxel index (built before the pass, kept during it)
    working += n_atlases * n_voxels * (8 * 3 + 2)
    outputs = n_atlases * n_volumes * n_regions * 8 * 4
    return int(BASELINE_BYTES + working + outputs)
