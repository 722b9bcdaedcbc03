"""Resample images onto another voxel grid, as nilearn 0.12.1's ``resample_img`` does.

Whole images (:func:`resample_img`, :func:`resample_to_img`) or one volume at a time on a
fixed pair of grids (:class:`VolumeResampler`, what the streaming engine uses):
nearest-neighbour, linear or cubic-spline interpolation with nilearn's extrapolation of
the data outside its mask. Part of the numerical core.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.affines import from_matvec, to_matvec
from nibabel.spatialimages import SpatialImage
from scipy import linalg, ndimage

from bidsapp.errors import BidsappError, DataWarning, NonFiniteWarning, warn
from bidsapp.image.loading import check_niimg, get_data, new_img_like, same_affine

INTERPOLATION_ORDERS = {"continuous": 3, "linear": 1, "nearest": 0}


class BoundingBoxError(BidsappError, ValueError):
    """The target field of view of a resampling contains none of the data."""


def get_bounds(shape: Sequence[int], affine: np.ndarray) -> list[tuple[float, float]]:
    """Return the world-space extent of a voxel grid.

    Parameters
    ----------
    shape : sequence of 3 int
        Grid shape (voxels).
    affine : numpy.ndarray of shape (4, 4)
        Voxel-to-world affine.

    Returns
    -------
    list of 3 (min, max) tuples
        Extent along each world axis, measured at the centres of the corner
        voxels (mm when the affine is in mm).

    """
    corners = np.array(
        [
            [i, j, k, 1.0]
            for i in (0, shape[0] - 1)
            for j in (0, shape[1] - 1)
            for k in (0, shape[2] - 1)
        ]
    ).T
    world = affine.dot(corners)[:3]
    return list(zip(world.min(axis=1), world.max(axis=1), strict=True))


def _check_resample_inputs(target_affine, target_shape, interpolation) -> None:
    """Validate resampling parameters before any data is read."""
    if interpolation not in INTERPOLATION_ORDERS:
        raise ValueError(
            f"'interpolation' must be one of {tuple(INTERPOLATION_ORDERS)}; got {interpolation!r}."
        )
    if target_shape is None:
        return
    if target_affine is None:
        raise ValueError("'target_shape' was given without 'target_affine'.")
    if len(target_shape) != 3:
        raise ValueError(
            f"'target_shape' must be the 3D grid shape (3 values); got {tuple(target_shape)}."
        )
    if np.shape(target_affine) == (3, 3):
        raise ValueError(
            "'target_affine' must be 4x4 when 'target_shape' is given (a 3x3 matrix has no origin)."
        )


def _resampling_not_needed(img, target_affine, target_shape) -> bool:
    """Tell whether the requested grid is the image's own grid."""
    if target_affine is None and target_shape is None:
        return True
    if target_shape is None:
        return False
    return tuple(target_shape) == tuple(img.shape[:3]) and same_affine(target_affine, img.affine)


def _resampled_dtype(dtype: np.dtype, interpolation: str) -> np.dtype:
    """Return the output dtype: signed ints become floats for splines."""
    if interpolation == "continuous" and dtype.kind == "i":
        size = max(dtype.itemsize, 4)
        new = np.dtype(f"float{8 * size}")
        warn(f"Casting data from {dtype.name} to {new.name}", DataWarning)
        return new
    return dtype.newbyteorder("=") if not dtype.isnative else dtype


def _extrapolate_out_mask(data: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grow ``mask`` by one voxel, filling the new shell with neighbour means.

    Each voxel added to the mask (6-connected dilation) gets the mean of its
    in-mask face neighbours; voxels outside the grown mask are set to 0.
    """
    grown = ndimage.binary_dilation(mask)
    padded = np.full(np.add(data.shape, 2), np.nan)
    padded[1:-1, 1:-1, 1:-1] = np.where(mask, data, np.nan)
    total = np.zeros(data.shape)
    count = np.zeros(data.shape)
    for axis in range(3):
        for step in (-1, 1):
            index = [slice(1, -1)] * 3
            index[axis] = slice(1 + step, padded.shape[axis] - 1 + step)
            neighbour = padded[tuple(index)]
            valid = np.isfinite(neighbour)
            total += np.where(valid, neighbour, 0.0)
            count += valid
    with np.errstate(invalid="ignore", divide="ignore"):
        shell_values = np.where(count > 0, total / count, 0.0)
    out = np.zeros(data.shape)
    shell = grown & ~mask
    out[shell] = shell_values[shell]
    out[mask] = data[mask]
    return out, grown


def _resample_volume(volume, matrix, offset, target_shape, order, out, fill_value) -> None:
    """Resample one 3D volume into ``out`` (non-finite values handled)."""
    not_finite = None
    if volume.dtype.kind not in "iub":
        not_finite = ~np.isfinite(volume)
        if not not_finite.any():
            not_finite = None
    if not_finite is not None:
        warn(
            "NaNs or infinite values are present in the data passed to resample. "
            "They make resampling ill-defined and much slower.",
            NonFiniteWarning,
        )
        # Fill two voxels around the finite part so the spline is not
        # contaminated, then mark the target voxels fed by non-finite ones.
        filled, valid = _extrapolate_out_mask(volume, ~not_finite)
        volume, _ = _extrapolate_out_mask(filled, valid)
    ndimage.affine_transform(
        volume,
        matrix,
        offset=offset,
        output_shape=target_shape,
        output=out,
        cval=fill_value,
        order=order,
    )
    if not_finite is not None:
        bad = ndimage.affine_transform(
            not_finite, matrix, offset=offset, output_shape=target_shape, order=0
        )
        out[bad] = np.nan


def _shift_copy(data: np.ndarray, shift: np.ndarray, out: np.ndarray) -> None:
    """Place ``data`` into ``out`` for a pure integer voxel translation.

    Target voxel ``t`` takes source voxel ``t + shift`` (zero elsewhere).
    This is what interpolation gives on such grids, without interpolating.
    """
    src, dst = [], []
    for size_in, size_out, s in zip(data.shape[:3], out.shape[:3], shift, strict=True):
        s = int(s)
        start = max(0, -s)
        stop = min(size_out, size_in - s)
        if stop <= start:
            return
        dst.append(slice(start, stop))
        src.append(slice(start + s, stop + s))
    out[tuple(dst)] = data[tuple(src)]


def _target_grid(img, data, target_affine, target_shape):
    """Complete the target affine/shape and return the source<-target transform."""
    target_affine = np.array(target_affine, dtype=float)
    missing_offset = target_affine.shape == (3, 3)
    if missing_offset:
        target_affine = from_matvec(target_affine)
    affine = img.affine
    to_target = np.linalg.inv(target_affine).dot(affine)
    (xmin, xmax), (ymin, ymax), (zmin, zmax) = get_bounds(data.shape[:3], to_target)
    if missing_offset:
        target_affine[:3, 3] = target_affine[:3, :3].dot([xmin, ymin, zmin])
        xmin, xmax, ymin, ymax, zmin, zmax = 0, xmax - xmin, 0, ymax - ymin, 0, zmax - zmin
    if target_shape is None:
        target_shape = tuple(int(np.ceil(v)) + 1 for v in (xmax, ymax, zmax))
    if xmax < 0 or ymax < 0 or zmax < 0:
        raise BoundingBoxError(
            "The field of view given by 'target_affine' does not contain any of the data."
        )
    if np.all(target_affine == affine):
        to_source = np.eye(4)
    else:
        to_source = linalg.inv(affine).dot(target_affine)
    return target_affine, tuple(int(v) for v in target_shape), to_source


def resample_img(
    img: Any,
    target_affine: np.ndarray | None = None,
    target_shape: Sequence[int] | None = None,
    interpolation: str = "continuous",
    copy: bool = True,
    order: str = "F",
    clip: bool = True,
    fill_value: float = 0,
    force_resample: bool = False,
    copy_header: bool = True,
) -> SpatialImage:
    """Resample a 3D or 4D image onto another voxel grid.

    Parameters
    ----------
    img : niimg-like
        Image to resample; 4D images are resampled volume by volume.
    target_affine : numpy.ndarray of shape (4, 4) or (3, 3), optional
        Voxel-to-world affine (mm) of the target grid. A 3x3 matrix gives
        only the axes: origin and shape are then chosen to hold all the data.
    target_shape : sequence of 3 int, optional
        Shape of the target grid (voxels); needs a 4x4 ``target_affine``.
        When omitted, the grid extends from voxel (0, 0, 0) far enough to
        hold all the data plus one voxel.
    interpolation : {"continuous", "linear", "nearest"}, default="continuous"
        Cubic spline, trilinear, or nearest-neighbour interpolation. Use
        "nearest" for labels and masks.
    copy : bool, default=True
        If True and no resampling is needed, return a copy.
    order : {"F", "C"}, default="F"
        Memory layout of the output array.
    clip : bool, default=True
        Clip output values to ``[min(data, 0), max(data, 0)]`` (removes the
        spline's overshoot).
    fill_value : float, default=0
        Value of target voxels outside the source field of view.
    force_resample : bool, default=False
        If False, a pure integer voxel translation is done by copying data
        instead of interpolating (same values, faster).
    copy_header : bool, default=True
        Copy the input header into the output.

    Returns
    -------
    nibabel.spatialimages.SpatialImage
        The resampled image. Signed-integer data interpolated with
        "continuous" becomes float (float32, or float64 for 64-bit ints).

    Raises
    ------
    ValueError
        For invalid parameter combinations.
    BoundingBoxError
        If the target grid contains none of the data.

    Notes
    -----
    Matches ``nilearn.image.resample_img`` 0.12.1 (with
    ``force_resample=False``), except that its integer-translation shortcut
    misplaces data when the target grid starts inside the data's bounding
    box; here that case gives the interpolation result.

    """
    _check_resample_inputs(target_affine, target_shape, interpolation)
    img = check_niimg(img, name="img")
    if hasattr(img, "get_sform") and not img.get_sform(coded=True)[1]:
        warn(
            "The provided image has no sform in its header. Please check the "
            "provided file. Results may not be as expected.",
            DataWarning,
        )
    if _resampling_not_needed(img, target_affine, target_shape):
        if copy:
            return new_img_like(img, get_data(img).copy(), img.affine.copy(), copy_header=True)
        return img
    data = get_data(img)
    target_affine, target_shape, to_source = _target_grid(img, data, target_affine, target_shape)
    matrix, offset = to_matvec(to_source)
    out_dtype = _resampled_dtype(data.dtype, interpolation)
    extra_shape = data.shape[3:]
    resampled = np.zeros(target_shape + extra_shape, order=order, dtype=out_dtype)
    if np.all(np.eye(3) == matrix) and all(v == np.round(v) for v in offset) and not force_resample:
        _shift_copy(data, offset, resampled)
    else:
        # A diagonal matrix lets scipy use its faster zoom/shift kernel.
        if np.all(np.diag(np.diag(matrix)) == matrix):
            matrix = np.diag(matrix)
        spatial = (slice(None),) * 3
        for index in np.ndindex(*extra_shape):
            _resample_volume(
                data[spatial + index],
                matrix,
                offset,
                target_shape,
                INTERPOLATION_ORDERS[interpolation],
                resampled[spatial + index],
                fill_value,
            )
    if clip:
        vmin = min(np.nanmin(data), 0)
        vmax = max(np.nanmax(data), 0)
        resampled.clip(vmin, vmax, out=resampled)
    return new_img_like(img, resampled, target_affine, copy_header=copy_header)


class VolumeResampler:
    """Resample the volumes of a 4D series one at a time, as :func:`resample_img` does.

    Built once from the source grid; each call resamples one 3D volume. Used to stream a
    series onto another grid without holding it whole. :func:`resample_img` clips its output
    to ``[min(data, 0), max(data, 0)]`` over the whole series: pass those bounds as ``clip``
    (see :attr:`needs_bounds`) to get identical values.

    Parameters
    ----------
    source_shape : sequence of 3 int
        Shape of the source volumes.
    source_affine : numpy.ndarray of shape (4, 4)
        Voxel-to-world affine of the source grid.
    dtype : numpy.dtype
        Type of the source volumes.
    target_affine : numpy.ndarray of shape (4, 4)
        Voxel-to-world affine of the target grid.
    target_shape : sequence of 3 int
        Shape of the target grid.
    interpolation : {"continuous", "linear", "nearest"}, default="continuous"
        See :func:`resample_img`.
    fill_value : float, default=0
        Value of target voxels outside the source field of view.
    force_resample : bool, default=False
        See :func:`resample_img`.

    Attributes
    ----------
    target_affine : numpy.ndarray
        Affine of the output volumes.
    target_shape : tuple of int
        Shape of the output volumes.
    dtype : numpy.dtype
        Type of the output volumes.
    needed : bool
        False when the target grid is the source grid (volumes are returned as copies).
    needs_bounds : bool
        True when values are interpolated, so that clipping to the series' range can
        change them (an integer voxel translation only copies values).
    """

    def __init__(
        self,
        source_shape: Sequence[int],
        source_affine: np.ndarray,
        dtype: Any,
        target_affine: np.ndarray,
        target_shape: Sequence[int],
        interpolation: str = "continuous",
        fill_value: float = 0,
        force_resample: bool = False,
    ) -> None:
        _check_resample_inputs(target_affine, target_shape, interpolation)
        source = nib.Nifti1Image(np.empty((1, 1, 1), dtype=np.uint8), source_affine)
        self._source_shape = tuple(int(s) for s in source_shape[:3])
        self.needed = not (
            tuple(target_shape) == self._source_shape and same_affine(target_affine, source_affine)
        )
        self.dtype = (
            _resampled_dtype(np.dtype(dtype), interpolation) if self.needed else np.dtype(dtype)
        )
        self.target_affine = np.asarray(target_affine, dtype=float)
        self.target_shape = tuple(int(s) for s in target_shape)
        self._order = INTERPOLATION_ORDERS[interpolation]
        self._fill_value = fill_value
        self.needs_bounds = False
        if not self.needed:
            return
        grid = np.empty(self._source_shape, dtype=np.uint8)
        self.target_affine, self.target_shape, to_source = _target_grid(
            source, grid, target_affine, target_shape
        )
        matrix, self._offset = to_matvec(to_source)
        self._shift = bool(
            np.all(np.eye(3) == matrix)
            and all(v == np.round(v) for v in self._offset)
            and not force_resample
        )
        if np.all(np.diag(np.diag(matrix)) == matrix):
            matrix = np.diag(matrix)
        self._matrix = matrix
        self.needs_bounds = not self._shift

    def __call__(self, volume: np.ndarray, clip: tuple[float, float] | None = None) -> np.ndarray:
        """Resample one volume.

        Parameters
        ----------
        volume : numpy.ndarray
            3D array on the source grid.
        clip : (float, float), optional
            ``(min(series, 0), max(series, 0))`` of the whole series, as
            :func:`resample_img` clips; None does not clip.

        Returns
        -------
        numpy.ndarray
            3D array on the target grid, Fortran order, of type :attr:`dtype`.
        """
        if tuple(volume.shape) != self._source_shape:
            raise ValueError(
                f"volume of shape {volume.shape} is not on the source grid {self._source_shape}."
            )
        if not self.needed:
            return np.array(volume, dtype=self.dtype, order="F")
        out = np.zeros(self.target_shape, order="F", dtype=self.dtype)
        if self._shift:
            _shift_copy(volume, self._offset, out)
        else:
            _resample_volume(
                volume,
                self._matrix,
                self._offset,
                self.target_shape,
                self._order,
                out,
                self._fill_value,
            )
        if clip is not None:
            out.clip(clip[0], clip[1], out=out)
        return out


def resample_to_img(
    source_img: Any,
    target_img: Any,
    interpolation: str = "continuous",
    copy: bool = True,
    order: str = "F",
    clip: bool = False,
    fill_value: float = 0,
    force_resample: bool = False,
    copy_header: bool = True,
) -> SpatialImage:
    """Resample an image onto the voxel grid of another image.

    Parameters
    ----------
    source_img : niimg-like
        Image to resample (3D or 4D).
    target_img : niimg-like
        Image whose shape (first three dimensions) and affine define the grid.
    interpolation : {"continuous", "linear", "nearest"}, default="continuous"
        See :func:`resample_img`.
    copy : bool, default=True
        See :func:`resample_img`.
    order : {"F", "C"}, default="F"
        See :func:`resample_img`.
    clip : bool, default=False
        See :func:`resample_img` (note the different default, as in nilearn).
    fill_value : float, default=0
        See :func:`resample_img`.
    force_resample : bool, default=False
        See :func:`resample_img`.
    copy_header : bool, default=True
        See :func:`resample_img`.

    Returns
    -------
    nibabel.spatialimages.SpatialImage
        The resampled image.

    """
    target = check_niimg(target_img, name="target_img")
    return resample_img(
        source_img,
        target_affine=target.affine,
        target_shape=target.shape[:3],
        interpolation=interpolation,
        copy=copy,
        order=order,
        clip=clip,
        fill_value=fill_value,
        force_resample=force_resample,
        copy_header=copy_header,
    )
