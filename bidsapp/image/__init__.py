"""NIfTI images for the numerical core: load and check, resample, smooth.

The numerical results follow nilearn 0.12.1 (``nilearn.image``) so that the maskers give
the same region signals, but no function here modifies an image passed in by the caller.
Images are "niimg-like": a path (``str`` or :class:`pathlib.Path`) to a NIfTI file, a
nibabel spatial image, or, where stated, a list of those. Part of the numerical core.

Modules: :mod:`.loading` (niimg-like inputs, the checked opening of a file, headers, data,
grids and the one affine tolerance), :mod:`.resampling` (onto another grid, whole images
or volume by volume), :mod:`.smoothing` (Gaussian, nilearn's semantics).
"""

from bidsapp.image.loading import (
    AFFINE_ATOL,
    MASK_GRID_ATOL,
    DimensionError,
    HeaderError,
    ImageReadError,
    NiimgLike,
    check_header,
    check_niimg,
    check_same_fov,
    concat_imgs,
    get_data,
    img_data_dtype,
    index_img,
    load_checked_header,
    load_img,
    new_img_like,
    safe_get_data,
    same_affine,
    same_fov,
    target_dtype,
)
from bidsapp.image.resampling import (
    INTERPOLATION_ORDERS,
    BoundingBoxError,
    VolumeResampler,
    get_bounds,
    resample_img,
    resample_to_img,
)
from bidsapp.image.smoothing import smooth_array

__all__ = [
    "AFFINE_ATOL",
    "MASK_GRID_ATOL",
    "INTERPOLATION_ORDERS",
    "BoundingBoxError",
    "DimensionError",
    "HeaderError",
    "ImageReadError",
    "NiimgLike",
    "VolumeResampler",
    "check_header",
    "check_niimg",
    "check_same_fov",
    "concat_imgs",
    "get_bounds",
    "get_data",
    "img_data_dtype",
    "index_img",
    "load_checked_header",
    "load_img",
    "new_img_like",
    "resample_img",
    "resample_to_img",
    "safe_get_data",
    "same_affine",
    "same_fov",
    "smooth_array",
    "target_dtype",
]
