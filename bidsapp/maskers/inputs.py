"""Checks and helpers for the images and confounds given to the labels maskers.

The grid of an input (one image, or a list of images sharing a grid), its number of
volumes, the confounds' rows, empty masks, high-variance confounds computed on all
voxels, and the representative volume a report shows (read lazily from a file). Part of
the numerical core, maskers layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.spatialimages import SpatialImage

from bidsapp import image, stream
from bidsapp.signal import high_variance_confounds

__all__ = [
    "NIIMG_TYPES",
    "check_confounds_rows",
    "check_mask_not_empty",
    "describe_input",
    "header_img",
    "image_high_variance_confounds",
    "middle_image",
    "n_volumes",
    "with_high_variance",
]

NIIMG_TYPES = (str, Path, SpatialImage)


def header_img(imgs: Any, name: str = "imgs", items_3d: bool = False) -> SpatialImage:
    """Return the (lazily loaded) image giving the grid of ``imgs``.

    For a list, all images must share a grid; ``items_3d`` requires each
    item to be 3D (a list is then one 4D series).
    """
    if isinstance(imgs, NIIMG_TYPES):
        img = image.load_img(imgs, name=name)
        if len(img.shape) not in (3, 4):
            raise image.DimensionError(
                f"'{name}': expected a 3D or 4D image, got {len(img.shape)}D image "
                f"of shape {img.shape}."
            )
        return img
    if not isinstance(imgs, Sequence) or isinstance(imgs, (bytes, bytearray)):
        raise TypeError(
            f"'{name}' must be a NIfTI path, a nibabel image or a list of those; "
            f"got {type(imgs).__name__}."
        )
    if len(imgs) == 0:
        raise ValueError(f"'{name}' is an empty list: there is no image to process.")
    loaded = [image.load_img(x, name=f"{name}[{i}]") for i, x in enumerate(imgs)]
    for i, img in enumerate(loaded):
        allowed = (3,) if items_3d else (3, 4)
        if len(img.shape) not in allowed:
            hint = " (use MultiNiftiLabelsMasker for a list of runs)" if items_3d else ""
            raise image.DimensionError(
                f"'{name}[{i}]': expected a 3D image{hint}, got {len(img.shape)}D image "
                f"of shape {img.shape}."
            )
        if not image.same_fov(loaded[0], img):
            raise ValueError(
                f"Field of view of image #{i} in '{name}' is different from image #0: "
                f"shapes {img.shape[:3]} vs {loaded[0].shape[:3]}, affines\n{img.affine}\n"
                f"vs\n{loaded[0].affine}."
            )
    return loaded[0]


def n_volumes(imgs: Any, header: SpatialImage) -> int:
    """Return the number of volumes the extraction will see for ``imgs``."""
    if isinstance(imgs, NIIMG_TYPES):
        return header.shape[3] if len(header.shape) == 4 else 1
    return len(imgs)


def check_confounds_rows(confounds: Any, n_volumes: int, name: str) -> None:
    """Raise when in-memory confounds do not have one row per volume.

    Confounds given as file paths are checked when :func:`signal.clean`
    reads them.
    """
    items = confounds if isinstance(confounds, list) else [confounds]
    for item in items:
        if isinstance(item, (np.ndarray, pd.DataFrame, pd.Series)):
            n_rows = item.shape[0]
            if n_rows != n_volumes:
                raise ValueError(
                    f"'confounds' has {n_rows} rows but {name} has {n_volumes} volumes: "
                    "give one confounds row per volume."
                )


def image_high_variance_confounds(imgs: Any) -> np.ndarray:
    """Compute high-variance confounds from all voxels of a 4D image (nilearn defaults)."""
    img = image.check_niimg(imgs, ndim=4, name="imgs")
    data = image.get_data(img)
    series = np.reshape(data, (-1, data.shape[-1])).T
    return high_variance_confounds(series, n_confounds=5, percentile=2.0, detrend=True)


def with_high_variance(confounds: Any, hv_confounds: np.ndarray, first: bool) -> list:
    """Return a new list of confounds with high-variance confounds added."""
    user = (
        [] if confounds is None else list(confounds) if isinstance(confounds, list) else [confounds]
    )
    return [hv_confounds, *user] if first else [*user, hv_confounds]


def check_mask_not_empty(mask_img: SpatialImage, name: str) -> None:
    """Raise ValueError when a mask has no nonzero voxel (``name`` is for the message)."""
    if not np.any(image.get_data(mask_img)):
        raise ValueError(
            f"'{name}' is empty: it masks all data (no nonzero voxel on the grid used)."
        )


def describe_input(imgs: Any) -> str:
    """Name an input in a message: its path, "the image" or "the list of images"."""
    if isinstance(imgs, (str, Path)):
        return f"image '{imgs}'"
    if isinstance(imgs, SpatialImage):
        return "the image"
    return "the list of images"


def middle_image(imgs: Any, loaded: SpatialImage | None = None) -> tuple[SpatialImage, int]:
    """Return a representative 3D volume for reports and its input dimensionality.

    The middle volume of a 4D NIfTI file is read only when a report uses it (reading it
    means inflating half of a ``.nii.gz``). ``loaded`` is ``imgs`` already loaded, if so.
    """
    if isinstance(imgs, NIIMG_TYPES):
        img = loaded if loaded is not None else image.load_img(imgs, name="imgs")
        if len(img.shape) == 4:
            middle = img.shape[3] // 2
            if stream.file_layout(img) is not None:
                lazy = _LazyVolume(img.dataobj, middle, image.img_data_dtype(img))
                return nib.Nifti1Image(lazy, img.affine), 4
            return image.index_img(img, middle), 4
        return img, 3
    first = image.load_img(imgs[0], name="imgs[0]")
    dims = 5 if len(first.shape) == 4 else 4
    return image.index_img(first, 0), dims


class _LazyVolume:
    """Array-like volume of a file-backed 4D image, read from the file on first use.

    Not flagged as a nibabel proxy (``is_proxy``): nibabel would read a voxel of it to
    learn its dtype when an image is built from it.
    """

    def __init__(self, proxy: Any, index: int, dtype: np.dtype) -> None:
        self._proxy = proxy
        self._index = index
        self.shape = tuple(proxy.shape[:3])
        self.ndim = 3
        self.dtype = np.dtype(dtype)
        self._data: np.ndarray | None = None

    def _read(self) -> np.ndarray:
        if self._data is None:
            self._data = np.asarray(self._proxy[..., self._index])
        return self._data

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self._read()
        return data if dtype is None else data.astype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        return self._read()[key]
