"""NIfTI helpers: load and check images, resample, smooth, average.

The numerical results follow nilearn 0.12.1 (``nilearn.image``) so that the
maskers built on top of this module give the same region signals, but no
function here modifies an image passed in by the caller: whenever data must be
changed (non-finite values zeroed, dtype cast, ...), a copy is made.

Images are "niimg-like": a path (``str`` or :class:`pathlib.Path`) to a NIfTI
file, a nibabel spatial image, or, where stated, a list of those.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.spatialimages import SpatialImage
from scipy import linalg, ndimage

from bidsapp import stream
from bidsapp.errors import BidsappError

logger = logging.getLogger(__name__)

NiimgLike = str | Path | SpatialImage

INTERPOLATION_ORDERS = {"continuous": 3, "linear": 1, "nearest": 0}

# FWHM = sqrt(8 ln 2) * sigma for a Gaussian kernel.
_FWHM_OVER_SIGMA = np.sqrt(8.0 * np.log(2.0))


class DimensionError(BidsappError, ValueError, TypeError):
    """An image has the wrong number of dimensions.

    It derives from both :class:`ValueError` and :class:`TypeError`: nilearn
    raises a ``TypeError`` subclass in this case, so code written for nilearn
    keeps working, while the error is a ``ValueError`` for everyone else.
    """


class BoundingBoxError(BidsappError, ValueError):
    """The target field of view of a resampling contains none of the data."""


class HeaderError(BidsappError, ValueError):
    """A NIfTI header whose geometry or data type cannot be used; the message names the file."""


# --------------------------------------------------------------------------
# Loading and checking
# --------------------------------------------------------------------------


def _describe(img: Any) -> str:
    """Return a short human-readable name for an image, for error messages."""
    if isinstance(img, (str, Path)):
        return f"'{img}'"
    filename = img.get_filename() if isinstance(img, SpatialImage) else None
    if filename:
        return f"'{filename}'"
    return f"in-memory {type(img).__name__}"


def _target_dtype(dtype: np.dtype, requested: Any) -> np.dtype | None:
    """Return the dtype data must be cast to, or None when no cast is needed.

    ``requested="auto"`` means int32 for signed-integer data and float32 for
    anything else (unsigned integers included), as in nilearn.
    """
    if requested is None:
        return None
    if isinstance(requested, str) and requested == "auto":
        requested = np.int32 if dtype.kind == "i" else np.float32
    requested = np.dtype(requested)
    return None if requested == dtype else requested


def get_data(img: SpatialImage) -> np.ndarray:
    """Return the data array of a loaded image without caching it.

    Parameters
    ----------
    img : nibabel.spatialimages.SpatialImage
        A loaded image.

    Returns
    -------
    numpy.ndarray
        For an in-memory image, the image's own array (not a copy: do not
        modify it); for a file-backed image, a freshly read array, scaled
        by the header's slope and intercept if any.

    Raises
    ------
    bidsapp.stream.StreamError
        If a file's header disagrees with its size, or the file is truncated or its
        gzip data fail their CRC32/length check (see :func:`bidsapp.stream.read_data`:
        the file is read to its end, which nibabel does not do).

    """
    return stream.read_data(img)


#: Smallest ratio of the affine's smallest to largest singular value taken as invertible:
#: real voxel grids (0.5 x 0.5 x 5 mm, oblique) are far above it.
_MIN_AFFINE_CONDITION = 1e-6


def check_header(img: SpatialImage) -> None:
    """Refuse an image whose voxel sizes, affine or data type cannot be used.

    Voxel sizes (``pixdim[1:4]``) must be finite and positive, and the voxel-to-world
    affine nibabel uses (the sform, else the qform, else one made from ``pixdim``) finite
    and invertible: resampling, smoothing and every comparison of grids rely on them, and
    a NaN or singular affine would give wrong voxels without an error. The data must be
    real numbers (booleans, integers or floats): complex or RGB voxels are refused, as
    nilearn refuses them, rather than losing their imaginary part or colours.

    Parameters
    ----------
    img : nibabel.spatialimages.SpatialImage
        A loaded image; its data are not read.

    Raises
    ------
    HeaderError
        If a check fails; the message names the file and the offending values.
    """
    name = _describe(img)
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=np.float64)
    if not (np.all(np.isfinite(zooms)) and np.all(zooms > 0)):
        raise HeaderError(
            f"{name}: voxel sizes (pixdim) {tuple(float(z) for z in zooms)} are not finite "
            "and positive; the header is corrupt"
        )
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise HeaderError(f"{name}: the affine (sform/qform) has NaN or infinite values")
    singular = np.linalg.svd(affine[:3, :3], compute_uv=False)
    if not singular[-1] > _MIN_AFFINE_CONDITION * singular[0]:
        raise HeaderError(
            f"{name}: the affine (sform/qform) is not invertible (singular values "
            f"{', '.join(f'{v:.3g}' for v in singular)}); the header is corrupt"
        )
    dtype = np.dtype(img.get_data_dtype())
    if dtype.kind not in "biuf":
        raise HeaderError(
            f"{name}: voxels of type {dtype} are not real numbers (complex or RGB data); "
            "an image of real values is needed"
        )


def img_data_dtype(img: SpatialImage) -> np.dtype:
    """Return the dtype that reading the image's data array will produce.

    Parameters
    ----------
    img : nibabel.spatialimages.SpatialImage
        A loaded image; its data is not read.

    Returns
    -------
    numpy.dtype
        float64 when the file stores scaled values (``scl_slope`` and
        ``scl_inter`` other than 1 and 0), otherwise the stored dtype.

    """
    dataobj = img.dataobj
    if nib.is_proxy(dataobj) and (dataobj.slope, dataobj.inter) != (1.0, 0.0):
        return np.dtype(np.float64)
    if hasattr(dataobj, "dtype"):
        return np.dtype(dataobj.dtype)
    return np.dtype(img.get_data_dtype())


def safe_get_data(img: SpatialImage, ensure_finite: bool = False, copy: bool = False) -> np.ndarray:
    """Return an image's data, never modifying the image itself.

    Parameters
    ----------
    img : nibabel.spatialimages.SpatialImage
        A loaded image.
    ensure_finite : bool, default=False
        If True, NaNs and infinities are replaced by zeros (in a copy) and a
        :class:`UserWarning` says so.
    copy : bool, default=False
        If True, the returned array is always a copy.

    Returns
    -------
    numpy.ndarray
        The data array.

    """
    data = get_data(img)
    if ensure_finite and data.dtype.kind in "fc":
        non_finite = ~np.isfinite(data)
        if non_finite.any():
            warnings.warn(
                "Non-finite values detected. These values will be replaced with zeros.",
                stacklevel=2,
            )
            data = np.where(non_finite, 0, data).astype(data.dtype, copy=False)
            copy = False
    return data.copy() if copy else data


def new_img_like(
    ref_img: SpatialImage,
    data: np.ndarray,
    affine: np.ndarray | None = None,
    copy_header: bool = False,
) -> nib.Nifti1Image:
    """Build a new image of the same class as a reference image.

    Parameters
    ----------
    ref_img : nibabel.spatialimages.SpatialImage
        Reference image: gives the class, the affine when ``affine`` is None,
        and the header when ``copy_header`` is True.
    data : numpy.ndarray
        Data of the new image. Booleans are stored as uint8; int64 data that
        fits in int32 is stored as int32 (many tools cannot read int64 NIfTI).
    affine : numpy.ndarray of shape (4, 4), optional
        Voxel-to-world affine (mm). Defaults to the reference affine.
    copy_header : bool, default=False
        If True, start from a copy of the reference header; the scaling
        fields are reset and ``cal_min``/``cal_max`` set to the data range.

    Returns
    -------
    nibabel.spatialimages.SpatialImage
        The new image (a :class:`nibabel.Nifti1Image` for NIfTI-1 pairs).

    """
    if affine is None:
        affine = ref_img.affine
    if data.dtype == bool:
        data = data.astype(np.uint8)
    data = _downcast_int64(data)
    header = None
    if copy_header and ref_img.header is not None:
        header = ref_img.header.copy()
        _reset_header_scaling(header, data)
    klass = type(ref_img)
    if klass is nib.Nifti1Pair:
        klass = nib.Nifti1Image
    return klass(data, affine, header=header)


def _downcast_int64(data: np.ndarray) -> np.ndarray:
    """Return int32 data when int64 values fit in int32, else the input."""
    if data.dtype not in (np.int64, np.uint64) or data.size == 0:
        return data
    info = np.iinfo(np.int32)
    if info.min <= data.min() and data.max() <= info.max:
        return data.astype(np.int32)
    return data


def _reset_header_scaling(header: Any, data: np.ndarray) -> None:
    """Clear a copied header's scaling and set its display range to the data."""
    keys = set(header.keys()) if hasattr(header, "keys") else set()
    for key in ("scl_slope", "scl_inter", "glmax"):
        if key in keys:
            header[key] = 0.0
    if "cal_max" in keys:
        header["cal_max"] = np.max(data) if data.size else 0.0
    if "cal_min" in keys:
        header["cal_min"] = np.min(data) if data.size else 0.0


def _load_single(img: Any, dtype: Any = None, name: str = "img") -> SpatialImage:
    """Load one path or image and cast its data when ``dtype`` asks for it."""
    if isinstance(img, (str, Path)):
        path = Path(img).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"'{name}': file not found: '{img}'")
        img = nib.load(path)
    elif not isinstance(img, SpatialImage):
        raise TypeError(
            f"'{name}' must be a path to a NIfTI file or a nibabel image; got {type(img).__name__}."
        )
    # Before anything reads or allocates from the header's shape: a header claiming more
    # voxels than its file holds is refused here, naming the file.
    stream.check_data_size(img)
    target = _target_dtype(img_data_dtype(img), dtype)
    if target is None:
        return img
    cast = get_data(img).astype(target)
    new = new_img_like(img, cast, img.affine, copy_header=True)
    new.header.set_data_dtype(cast.dtype)
    return new


def load_img(img: Any, dtype: Any = None, name: str = "img") -> SpatialImage:
    """Load a niimg-like object.

    Parameters
    ----------
    img : str, pathlib.Path, nibabel image, or sequence of those
        Image to load. A sequence of 3D or 4D images is concatenated along
        the 4th (time) axis; all images must then share shape and affine.
    dtype : numpy dtype, "auto" or None, default=None
        Cast the data to this dtype. ``"auto"`` gives int32 for signed-integer
        data and float32 otherwise. None keeps the stored dtype.
    name : str, default="img"
        Parameter name used in error messages.

    Returns
    -------
    nibabel.spatialimages.SpatialImage
        The loaded image; the input object itself when nothing had to change.

    Raises
    ------
    FileNotFoundError
        If a path does not exist.
    TypeError
        If ``img`` is neither a path, an image, nor a sequence of those.
    bidsapp.stream.StreamError
        If a file's header claims more voxel data than the file can hold (checked before
        anything is allocated, see :func:`bidsapp.stream.check_data_size`).

    """
    if isinstance(img, (str, Path, SpatialImage)):
        return _load_single(img, dtype=dtype, name=name)
    if isinstance(img, Sequence) and not isinstance(img, (bytes, bytearray)):
        return concat_imgs(img, dtype=dtype, name=name)
    raise TypeError(
        f"'{name}' must be a path to a NIfTI file, a nibabel image or a list of "
        f"those; got {type(img).__name__}."
    )


def check_niimg(
    img: Any,
    ndim: int | None = None,
    atleast_4d: bool = False,
    dtype: Any = None,
    name: str = "img",
) -> SpatialImage:
    """Load an image and check its number of dimensions.

    Parameters
    ----------
    img : str, pathlib.Path, nibabel image, or sequence of those
        Image to load (see :func:`load_img`).
    ndim : {3, 4} or None, default=None
        Required number of dimensions. A 4D image with a single volume is
        accepted (and squeezed) when ``ndim=3``.
    atleast_4d : bool, default=False
        If True, a 3D image is returned as a 4D image with one volume.
    dtype : numpy dtype, "auto" or None, default=None
        See :func:`load_img`.
    name : str, default="img"
        Parameter name used in error messages.

    Returns
    -------
    nibabel.spatialimages.SpatialImage
        The loaded image.

    Raises
    ------
    DimensionError
        If the image does not have ``ndim`` dimensions, or is not 3D/4D.

    """
    loaded = load_img(img, dtype=dtype, name=name)
    shape = loaded.shape
    if ndim == 3 and len(shape) == 4 and shape[3] == 1:
        loaded = new_img_like(loaded, get_data(loaded)[..., 0], loaded.affine)
    elif atleast_4d and len(shape) == 3:
        loaded = new_img_like(loaded, get_data(loaded)[..., np.newaxis], loaded.affine)
    if ndim is not None and len(loaded.shape) != ndim:
        raise DimensionError(
            f"'{name}' ({_describe(img)}): expected a {ndim}D image, "
            f"got {len(shape)}D image of shape {tuple(shape)}."
        )
    if len(loaded.shape) not in (3, 4):
        raise DimensionError(
            f"'{name}' ({_describe(img)}): expected a 3D or 4D image, "
            f"got {len(shape)}D image of shape {tuple(shape)}."
        )
    return loaded


def concat_imgs(imgs: Sequence[Any], dtype: Any = None, name: str = "imgs") -> SpatialImage:
    """Concatenate 3D and/or 4D images along the time axis.

    Parameters
    ----------
    imgs : sequence of niimg-like
        Images with the same 3D shape and affine.
    dtype : numpy dtype, "auto" or None, default=None
        Output dtype (see :func:`load_img`); None keeps the first image's.
    name : str, default="imgs"
        Parameter name used in error messages.

    Returns
    -------
    nibabel.spatialimages.SpatialImage
        A 4D image, header copied from the first image.

    Raises
    ------
    ValueError
        If the sequence is empty or the images' fields of view differ.

    """
    if len(imgs) == 0:
        raise ValueError(f"'{name}' is an empty list: there is no image to load.")
    loaded = [
        check_niimg(x, atleast_4d=True, dtype=dtype, name=f"{name}[{i}]")
        for i, x in enumerate(imgs)
    ]
    first = loaded[0]
    for i, other in enumerate(loaded[1:], start=1):
        if not same_fov(first, other):
            raise ValueError(
                f"'{name}[{i}]' has shape {other.shape[:3]} and affine\n{other.affine}\n"
                f"but '{name}[0]' has shape {first.shape[:3]} and affine\n{first.affine}:"
                " images in a list must share their field of view."
            )
    data = np.concatenate([get_data(x) for x in loaded], axis=3)
    return new_img_like(first, data, first.affine, copy_header=True)


def same_fov(img_a: SpatialImage, img_b: SpatialImage) -> bool:
    """Tell whether two images share a 3D shape and (nearly) an affine.

    Parameters
    ----------
    img_a, img_b : nibabel.spatialimages.SpatialImage
        Loaded images (only headers are used).

    Returns
    -------
    bool
        True when the first three dimensions are equal and the affines are
        equal within :func:`numpy.allclose` default tolerances.

    """
    return tuple(img_a.shape[:3]) == tuple(img_b.shape[:3]) and np.allclose(
        img_a.affine, img_b.affine
    )


def check_same_fov(images: Mapping[str, SpatialImage]) -> None:
    """Raise if named images do not all share shape and affine.

    Parameters
    ----------
    images : mapping of str to nibabel image
        Images keyed by the name to use in the error message.

    Raises
    ------
    ValueError
        Listing every pair of images whose shapes or affines differ.

    """
    names = list(images)
    problems = []
    for i, a_name in enumerate(names):
        for b_name in names[i + 1 :]:
            a_img, b_img = images[a_name], images[b_name]
            if tuple(a_img.shape[:3]) != tuple(b_img.shape[:3]):
                problems.append(
                    f"- {a_name} and {b_name} do not have the same shape "
                    f"({tuple(a_img.shape[:3])} vs {tuple(b_img.shape[:3])})"
                )
            if not np.allclose(a_img.affine, b_img.affine):
                problems.append(f"- {a_name} and {b_name} do not have the same affine")
    if problems:
        raise ValueError("Following field of view errors were detected:\n" + "\n".join(problems))


# --------------------------------------------------------------------------
# Resampling
# --------------------------------------------------------------------------


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
    return tuple(target_shape) == tuple(img.shape[:3]) and np.allclose(target_affine, img.affine)


def _resampled_dtype(dtype: np.dtype, interpolation: str) -> np.dtype:
    """Return the output dtype: signed ints become floats for splines."""
    if interpolation == "continuous" and dtype.kind == "i":
        size = max(dtype.itemsize, 4)
        new = np.dtype(f"float{8 * size}")
        warnings.warn(f"Casting data from {dtype.name} to {new.name}", stacklevel=3)
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
        warnings.warn(
            "NaNs or infinite values are present in the data passed to resample. "
            "They make resampling ill-defined and much slower.",
            RuntimeWarning,
            stacklevel=4,
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
        full = np.eye(4)
        full[:3, :3] = target_affine
        target_affine = full
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
        warnings.warn(
            "The provided image has no sform in its header. Please check the "
            "provided file. Results may not be as expected.",
            stacklevel=2,
        )
    if _resampling_not_needed(img, target_affine, target_shape):
        if copy:
            return new_img_like(img, get_data(img).copy(), img.affine.copy(), copy_header=True)
        return img
    data = get_data(img)
    target_affine, target_shape, to_source = _target_grid(img, data, target_affine, target_shape)
    matrix, offset = to_source[:3, :3], to_source[:3, 3]
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
            tuple(target_shape) == self._source_shape and np.allclose(target_affine, source_affine)
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
        matrix, self._offset = to_source[:3, :3], to_source[:3, 3]
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


# --------------------------------------------------------------------------
# Smoothing and averaging
# --------------------------------------------------------------------------


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
        warnings.warn(
            f"The parameter 'fwhm' for smoothing is specified as {fwhm}. "
            "Setting it to None (no smoothing will be performed)",
            stacklevel=2,
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


def smooth_img(imgs: Any, fwhm: Any) -> SpatialImage | list[SpatialImage]:
    """Smooth one image or each image of a list with a Gaussian kernel.

    Parameters
    ----------
    imgs : niimg-like or list of niimg-like
        Image(s) to smooth; non-finite values become 0.
    fwhm : float, sequence of 3 floats, "fast" or None
        Kernel full width at half maximum in mm (see :func:`smooth_array`).

    Returns
    -------
    nibabel image or list of nibabel images
        Smoothed image(s), a list when ``imgs`` is a list.

    """
    single = isinstance(imgs, (str, Path, SpatialImage))
    results = []
    for i, one in enumerate([imgs] if single else imgs):
        loaded = check_niimg(one, name="imgs" if single else f"imgs[{i}]")
        smoothed = smooth_array(get_data(loaded), loaded.affine, fwhm=fwhm, copy=True)
        results.append(new_img_like(loaded, smoothed, loaded.affine, copy_header=True))
    return results[0] if single else results


def mean_img(
    imgs: Any,
    target_affine: np.ndarray | None = None,
    target_shape: Sequence[int] | None = None,
) -> SpatialImage:
    """Average images over time (and over the images of a list).

    Parameters
    ----------
    imgs : niimg-like or list of niimg-like
        3D or 4D image(s). For a list, each image is averaged over time,
        resampled (continuous interpolation) to the target grid, and the
        per-image means are averaged.
    target_affine : numpy.ndarray, optional
        Target affine (mm); defaults to the first image's.
    target_shape : sequence of 3 int, optional
        Target shape (voxels); defaults to the first image's.

    Returns
    -------
    nibabel.spatialimages.SpatialImage
        A 3D mean image.

    """
    items = [imgs] if isinstance(imgs, (str, Path, SpatialImage)) else list(imgs)
    total = None
    for i, item in enumerate(items):
        loaded = check_niimg(item, name=f"imgs[{i}]")
        data = get_data(loaded)
        mean = data.mean(axis=-1) if data.ndim == 4 else data.copy()
        mean_img_ = resample_img(
            nib.Nifti1Image(mean, loaded.affine),
            target_affine=target_affine,
            target_shape=target_shape,
            copy=False,
        )
        if total is None:
            first, total = loaded, get_data(mean_img_).copy()
            target_affine, target_shape = mean_img_.affine, mean_img_.shape[:3]
        else:
            total += get_data(mean_img_)
    return new_img_like(first, total / float(len(items)), target_affine, copy_header=True)


def index_img(img: Any, index: int) -> SpatialImage:
    """Return one volume of a 4D image as a 3D image.

    Parameters
    ----------
    img : niimg-like
        A 4D image (a 3D image is returned unchanged for ``index`` 0).
    index : int
        Volume index (negative values count from the end).

    Returns
    -------
    nibabel.spatialimages.SpatialImage
        The selected 3D volume, header copied.

    """
    loaded = check_niimg(img, atleast_4d=True, name="img")
    data = loaded.dataobj[..., index]
    return new_img_like(loaded, np.asarray(data), loaded.affine, copy_header=True)
