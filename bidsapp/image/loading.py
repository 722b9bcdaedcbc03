"""Load and check NIfTI images: niimg-like inputs, headers, data, grids.

The numerical results follow nilearn 0.12.1 (``nilearn.image``), but no function here
modifies an image passed in by the caller: whenever data must be changed (non-finite
values zeroed, dtype cast, ...), a copy is made. Images are "niimg-like": a path (``str``
or :class:`pathlib.Path`) to a NIfTI file, a nibabel spatial image, or, where stated, a
list of those. Part of the numerical core.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.spatialimages import SpatialImage

from bidsapp import stream
from bidsapp.errors import BidsappError, DataWarning, warn

NiimgLike = str | Path | SpatialImage


class DimensionError(BidsappError, ValueError, TypeError):
    """An image has the wrong number of dimensions.

    It derives from both :class:`ValueError` and :class:`TypeError`: nilearn
    raises a ``TypeError`` subclass in this case, so code written for nilearn
    keeps working, while the error is a ``ValueError`` for everyone else.
    """


class HeaderError(BidsappError, ValueError):
    """A NIfTI header whose geometry or data type cannot be used; the message names the file."""


class ImageReadError(BidsappError, ValueError):
    """nibabel cannot open a file as an image; ``__cause__`` is nibabel's exception."""


def _describe(img: Any) -> str:
    """Return a short human-readable name for an image, for error messages."""
    if isinstance(img, (str, Path)):
        return f"'{img}'"
    filename = img.get_filename() if isinstance(img, SpatialImage) else None
    if filename:
        return f"'{filename}'"
    return f"in-memory {type(img).__name__}"


def target_dtype(dtype: np.dtype, requested: Any) -> np.dtype | None:
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


def load_checked_header(path: str | os.PathLike[str]) -> SpatialImage:
    """Open a NIfTI file and check its header, before anything is sized from it.

    The checked opening of every input image (BOLD series, brain masks, labels images):
    nibabel reads the header, :func:`bidsapp.stream.check_data_size` checks its shape and
    data type against the file's size (before the caller allocates anything, a printed
    memory bound included), then :func:`check_header` checks the geometry every resampling
    and grid comparison relies on. The data are not read. The caller checks first that the
    path is a regular file: nibabel would block on a FIFO or a device.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.nii`` or ``.nii.gz`` file.

    Returns
    -------
    nibabel.spatialimages.SpatialImage
        The image, its data not loaded.

    Raises
    ------
    ImageReadError
        If nibabel cannot open the file (its exception is the ``__cause__``), so that each
        caller words the failure for its own input.
    bidsapp.stream.StreamError
        If the header's shape and data type disagree with the file's size.
    HeaderError
        If the voxel sizes, affine or data type cannot be used.
    """
    try:
        img = nib.load(os.fspath(path))
    except Exception as err:  # nibabel raises many types for broken files
        raise ImageReadError(f"{path}: nibabel cannot open it ({err})") from err
    stream.check_data_size(img)
    check_header(img)
    return img


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
            warn(
                "Non-finite values detected. These values will be replaced with zeros.",
                DataWarning,
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
    target = target_dtype(img_data_dtype(img), dtype)
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


#: Absolute tolerance (mm) of :func:`same_affine` by default: :func:`numpy.allclose`'s
#: (relative tolerance 1e-5 on top), what nilearn 0.12.1's field-of-view checks use, and
#: so what decides whether a masker resamples.
AFFINE_ATOL = 1e-8

#: Looser absolute tolerance (mm) for refusing a brain mask on another grid than its BOLD
#: series. The two are separate files, and NIfTI stores the affine in float32, so the same
#: grid written twice may differ by rounding; 1e-3 mm absorbs that while still refusing
#: any grid really shifted or scaled (a thousandth of a voxel).
MASK_GRID_ATOL = 1e-3


def same_affine(affine_a: np.ndarray, affine_b: np.ndarray, *, atol: float = AFFINE_ATOL) -> bool:
    """Tell whether two affines describe the same voxel grid: the one affine comparison.

    Parameters
    ----------
    affine_a, affine_b : numpy.ndarray of shape (4, 4)
        Voxel-to-world affines.
    atol : float, default=AFFINE_ATOL
        Absolute tolerance (mm); :data:`MASK_GRID_ATOL` for the brain-mask check.

    Returns
    -------
    bool
        True when they are equal within :func:`numpy.allclose` tolerances (relative 1e-5,
        absolute ``atol``).
    """
    return bool(np.allclose(affine_a, affine_b, atol=atol))


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
        equal within :func:`same_affine`'s tolerance.

    """
    return tuple(img_a.shape[:3]) == tuple(img_b.shape[:3]) and same_affine(
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
            if not same_affine(a_img.affine, b_img.affine):
                problems.append(f"- {a_name} and {b_name} do not have the same affine")
    if problems:
        raise ValueError("Following field of view errors were detected:\n" + "\n".join(problems))


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
