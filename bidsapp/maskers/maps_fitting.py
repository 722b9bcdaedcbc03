"""Maps and mask of a maps masker: loaded, checked and put on the extraction grid.

What ``fit`` does to a probabilistic atlas (:func:`fit_maps`: load the 4D maps with the
masker's ``dtype`` and non-finite weights set to 0, load the mask, resample according to
``resampling_target``: maps with linear interpolation, the mask with nearest neighbour)
and what each transform does for one image (:func:`maps_extraction_grid`: resample again
to an image on another grid with ``"data"``, check overlaps when they are not allowed, and
name the grid signals are extracted on), as nilearn 0.12.1's ``NiftiMapsMasker``. Part of
the numerical core, maskers layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from nibabel.spatialimages import SpatialImage

from bidsapp import image
from bidsapp.errors import RegionWarning, warn
from bidsapp.maskers.base import cached
from bidsapp.maskers.fitting import load_mask, log
from bidsapp.maskers.inputs import (
    check_confounds_rows,
    check_mask_not_empty,
    describe_input,
    header_img,
    middle_image,
    n_volumes,
)
from bidsapp.maskers.settings import MapsSettings

__all__ = ["FittedMaps", "fit_maps", "maps_extraction_grid"]

_AT_TRANSFORM = (
    "Resampling {} at transform time...\nTo avoid this warning, make sure to pass the "
    "images you want to transform to fit() first, or directly use fit_transform()."
)


@dataclass(frozen=True)
class FittedMaps:
    """The fitted state of a maps masker.

    Attributes
    ----------
    maps_img : nibabel image
        4D maps used for extraction (``maps_img_``).
    mask_img : nibabel image or None
        Binary mask (``mask_img_``).
    reporting_data : dict or None
        What a report needs (``_reporting_data``), when ``reports`` is on.
    """

    maps_img: SpatialImage
    mask_img: SpatialImage | None
    reporting_data: dict | None

    @property
    def n_maps(self) -> int:
        """Number of maps (``n_elements_``)."""
        return int(self.maps_img.shape[3])


def _load_maps(maps_img: Any, settings: MapsSettings, owner: str) -> SpatialImage:
    """Load the maps as nilearn's fit does: dtype cast, 4D, finite, floating point."""
    if maps_img is None:
        raise TypeError(
            f"'maps_img' is None: give a 4D maps image (path or nibabel image) to {owner}."
        )
    img = image.check_niimg(maps_img, atleast_4d=True, dtype=settings.dtype, name="maps_img")
    data = np.asarray(image.get_data(img))
    # nilearn runs clean_img(ensure_finite=True): integers become float32, NaN/Inf 0.
    if data.dtype.kind not in "f":
        data = data.astype(np.float32)
    data = np.where(np.isfinite(data), data, 0).astype(data.dtype)
    return image.new_img_like(img, data, img.affine.copy(), copy_header=True)


def _resample_maps(maps_img: SpatialImage, ref: SpatialImage, settings: MapsSettings):
    log(settings, "Resampling maps")
    return cached(image.resample_img, settings.memory, 1, settings.memory_level)(
        maps_img,
        interpolation="linear",
        target_shape=ref.shape[:3],
        target_affine=ref.affine,
        copy_header=True,
    )


def _resample_mask(mask_img: SpatialImage, ref: SpatialImage, settings: MapsSettings):
    log(settings, "Resampling mask")
    resampled = cached(image.resample_img, settings.memory, 1, settings.memory_level)(
        mask_img,
        interpolation="nearest",
        target_shape=ref.shape[:3],
        target_affine=ref.affine,
        copy_header=True,
    )
    check_mask_not_empty(resampled, "mask_img (resampled)")
    return resampled


def fit_maps(
    maps_img: Any,
    mask_img: Any,
    settings: MapsSettings,
    imgs: Any = None,
    owner: str = "NiftiMapsMasker",
) -> FittedMaps:
    """Load the maps (and mask) and put them on the grid ``resampling_target`` names.

    Parameters
    ----------
    maps_img : niimg-like
        4D maps (a 3D image is one map).
    mask_img : niimg-like or None
        Mask (3D, or 4D reduced with "all volumes nonzero").
    settings : MapsSettings
        The checked masker parameters.
    imgs : niimg-like or list of niimg-like, optional
        Images that will be transformed (the target of ``resampling_target="data"``).
    owner : str, default="NiftiMapsMasker"
        The estimator's class name, for messages.

    Returns
    -------
    FittedMaps
        The fitted state.
    """
    log(settings, "Loading regions from %r", maps_img)
    maps = _load_maps(maps_img, settings, owner)
    mask = load_mask(mask_img)
    ref_data = None if imgs is None else header_img(imgs, name="imgs")
    target = settings.resampling_target
    if target is None:
        named = {"maps": maps}
        if mask is not None:
            named["mask"] = mask
        if ref_data is not None:
            named["data"] = ref_data
        image.check_same_fov(named)
    ref = {"data": ref_data, "mask": mask, "maps": maps}.get(target)
    if ref is not None:
        if target != "maps" and not image.same_fov(ref, maps):
            maps = _resample_maps(maps, ref, settings)
        if mask is not None and not image.same_fov(ref, mask):
            mask = _resample_mask(mask, ref, settings)
    reporting = None
    if settings.reports:
        reporting = {"maps_image": maps, "mask": mask, "dim": None, "img": None}
        if imgs is not None:
            reporting["img"], reporting["dim"] = middle_image(imgs, ref_data)
    log(settings, "Finished fit")
    return FittedMaps(maps, mask, reporting)


def _check_overlap(maps_img: SpatialImage) -> None:
    """Raise when two maps are positive on one voxel (values below eps count as 0)."""
    data = image.get_data(maps_img)
    positive = data >= np.finfo(data.dtype).eps if data.dtype.kind == "f" else data > 0
    if np.any(positive.sum(axis=3) > 1):
        raise ValueError(
            "Overlap detected in the maps. The overlap may be due to the atlas itself or "
            "possibly introduced by resampling; pass allow_overlap=True to allow it."
        )


def maps_extraction_grid(
    fitted: FittedMaps,
    settings: MapsSettings,
    imgs: Any,
    confounds: Any = None,
    items_3d: bool = True,
) -> tuple[SpatialImage, SpatialImage | None, np.ndarray | None, tuple | None]:
    """Check an image and its confounds; return maps, mask and target grid for it.

    Parameters
    ----------
    fitted : FittedMaps
        The maps, as fitted.
    settings : MapsSettings
        The checked masker parameters.
    imgs : niimg-like or list of 3D niimg-like
        The image to extract from.
    confounds : optional
        Its confounds (in-memory ones must have one row per volume).
    items_3d : bool, default=True
        Whether the items of a list must be 3D (the list is then one series).

    Returns
    -------
    tuple
        The maps and the mask on the extraction grid, and the target affine and shape
        the image is resampled to (None when signals are read on its own grid).

    Raises
    ------
    ValueError
        If grids differ with ``resampling_target=None``, or maps overlap when
        ``allow_overlap=False``.
    """
    header = header_img(imgs, name="imgs", items_3d=items_3d)
    check_confounds_rows(confounds, n_volumes(imgs, header), describe_input(imgs))
    maps_img, mask_img = fitted.maps_img, fitted.mask_img
    if settings.resampling_target is None:
        named = {"maps": maps_img, "data": header}
        if mask_img is not None:
            named["mask"] = mask_img
        image.check_same_fov(named)
    elif settings.resampling_target == "data":
        if not image.same_fov(header, maps_img):
            warn(_AT_TRANSFORM.format("maps"), RegionWarning)
            maps_img = _resample_maps(maps_img, header, settings)
        if mask_img is not None and not image.same_fov(header, mask_img):
            warn(_AT_TRANSFORM.format("mask"), RegionWarning)
            mask_img = _resample_mask(mask_img, header, settings)
    if not settings.allow_overlap:
        _check_overlap(maps_img)
    target_affine = target_shape = None
    if settings.resampling_target != "data":
        target_affine, target_shape = maps_img.affine, maps_img.shape[:3]
    return maps_img, mask_img, target_affine, target_shape
