"""Labels and mask of a labels masker: loaded, checked and put on the extraction grid.

What ``fit`` does to the atlas (:func:`fit_labels`: load and check the labels image and
the mask, build the look-up table, resample both to the data with
``resampling_target="data"``) and what each transform does for one image
(:func:`extraction_grid`: resample again when the image is on another grid, and name the
grid signals are extracted on). Both estimators and :func:`.extraction.stream_labels_signals`
call these functions. Part of the numerical core, maskers layer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from nibabel.spatialimages import SpatialImage

from bidsapp import image, regions
from bidsapp.errors import ParameterDeprecationWarning, RegionWarning, warn
from bidsapp.maskers.base import cached
from bidsapp.maskers.inputs import (
    check_confounds_rows,
    check_mask_not_empty,
    describe_input,
    header_img,
    middle_image,
    n_volumes,
)
from bidsapp.maskers.lut import build_lut, finite_labels, region_size_table
from bidsapp.maskers.settings import LabelsSettings

__all__ = ["FittedLabels", "extraction_grid", "fit_labels", "load_mask"]

# One logger for the maskers' progress (verbose=1 shows it at INFO level).
logger = logging.getLogger("bidsapp.maskers")


@dataclass(frozen=True)
class FittedLabels:
    """The fitted state of a labels masker for one atlas.

    Attributes
    ----------
    labels_img : nibabel image
        Labels image used for extraction (``labels_img_``).
    mask_img : nibabel image or None
        Binary mask on the same grid (``mask_img_``).
    lut : pandas.DataFrame
        Look-up table of the labels in the image (``lut_``).
    background_present : bool
        Whether the background label is in the (finite) labels image.
    reporting_data : dict or None
        What a report needs (``_reporting_data``), when ``reports`` is on.
    """

    labels_img: SpatialImage
    mask_img: SpatialImage | None
    lut: pd.DataFrame
    background_present: bool
    reporting_data: dict | None


def log(settings: LabelsSettings, message: str, *args: Any) -> None:
    """Log progress at INFO level when the masker is verbose, else at DEBUG level."""
    logger.log(logging.INFO if settings.verbose else logging.DEBUG, message, *args)


def _load_labels(labels_img: Any, owner: str) -> SpatialImage:
    """Load, check and copy the labels image."""
    if labels_img is None:
        raise TypeError(
            f"'labels_img' is None: give a 3D labels image (path or nibabel image) to {owner}."
        )
    img = image.check_niimg(labels_img, ndim=3, name="labels_img")
    data = np.array(image.get_data(img))
    regions.check_labels_values(data, name="labels_img")
    return image.new_img_like(img, data, img.affine.copy(), copy_header=True)


def load_mask(mask_img: Any) -> SpatialImage | None:
    """Load the mask as a 3D binary image (4D masks: all volumes nonzero)."""
    if mask_img is None:
        return None
    img = image.check_niimg(mask_img, atleast_4d=True, name="mask_img")
    mask = image.safe_get_data(img, ensure_finite=True).astype(bool).all(axis=3)
    mask_img = image.new_img_like(img, mask, img.affine.copy())
    check_mask_not_empty(mask_img, "mask_img")
    return mask_img


def _resample_labels(
    labels_img: SpatialImage, ref: SpatialImage, settings: LabelsSettings
) -> SpatialImage:
    """Resample labels to ``ref``'s grid, warning about labels lost on the way."""
    log(settings, "Resampling regions")
    before = set(np.unique(image.get_data(labels_img)).tolist())
    resampled = cached(image.resample_img, settings.memory, 2, settings.memory_level)(
        labels_img,
        interpolation="nearest",
        target_shape=ref.shape[:3],
        target_affine=ref.affine,
        copy_header=True,
    )
    after = set(np.unique(image.get_data(resampled)).tolist())
    if lost := before - after:
        warn(
            "After resampling the label image to the data image, the following "
            f"labels were removed: {sorted(lost)}. Label image only contains "
            f"{len(after)} labels (including background).",
            RegionWarning,
        )
    return resampled


def _resample_mask(
    mask_img: SpatialImage, ref: SpatialImage, settings: LabelsSettings
) -> SpatialImage:
    log(settings, "Resampling mask")
    resampled = cached(image.resample_img, settings.memory, 2, settings.memory_level)(
        mask_img,
        interpolation="nearest",
        target_shape=ref.shape[:3],
        target_affine=ref.affine,
        copy_header=True,
    )
    check_mask_not_empty(resampled, "mask_img (resampled)")
    return resampled


def _align_at_fit(labels_img, mask_img, ref, settings: LabelsSettings):
    """Check or resample labels and mask according to ``resampling_target``."""
    if settings.resampling_target is None:
        named = {"labels": labels_img}
        if mask_img is not None:
            named["mask"] = mask_img
        if ref is not None:
            named["data"] = ref
        image.check_same_fov(named)
        return labels_img, mask_img
    if settings.resampling_target == "data" and ref is not None:
        if not image.same_fov(ref, labels_img):
            labels_img = _resample_labels(labels_img, ref, settings)
    target = ref if settings.resampling_target == "data" else labels_img
    if mask_img is not None and target is not None and not image.same_fov(target, mask_img):
        mask_img = _resample_mask(mask_img, target, settings)
    return labels_img, mask_img


def fit_labels(
    labels_img: Any,
    mask_img: Any,
    lut: Any,
    settings: LabelsSettings,
    imgs: Any = None,
    owner: str = "NiftiLabelsMasker",
) -> FittedLabels:
    """Load the labels (and mask) of one atlas and put them on the grid of ``imgs``.

    Parameters
    ----------
    labels_img : niimg-like
        3D labels image.
    mask_img : niimg-like or None
        Mask (3D, or 4D reduced with "all volumes nonzero").
    lut : pandas.DataFrame, str, pathlib.Path or None
        Look-up table of the labels.
    settings : LabelsSettings
        The checked masker parameters.
    imgs : niimg-like or list of niimg-like, optional
        Images that will be transformed: with ``resampling_target="data"`` labels and
        mask are resampled to their grid now.
    owner : str, default="NiftiLabelsMasker"
        The estimator's class name, for messages.

    Returns
    -------
    FittedLabels
        The fitted state.
    """
    log(settings, "Loading regions from %r", labels_img)
    labels = _load_labels(labels_img, owner)
    present = np.unique(image.get_data(labels)).tolist()
    table = build_lut(present, settings.background_label, lut, settings.labels)
    ref = None if imgs is None else header_img(imgs, name="imgs")
    mask = load_mask(mask_img)
    labels, mask = _align_at_fit(labels, mask, ref, settings)
    # NaN/Inf labels become 0 when signals are extracted (nilearn's zeroing), so they
    # count as background when the background is 0, as in nilearn's region_ids_.
    background_present = settings.background_label in set(
        np.unique(finite_labels(image.get_data(labels))).tolist()
    )
    reporting = None
    if settings.reports:
        reporting = _reporting_data(labels, mask, table, settings.background_label, imgs, ref)
    log(settings, "Finished fit")
    return FittedLabels(labels, mask, table, background_present, reporting)


def _reporting_data(labels_img, mask_img, lut, background_label, imgs, ref) -> dict:
    """Store what a report needs: images, and a table of region sizes."""
    data = {
        "labels_image": labels_img,
        "mask": mask_img,
        "dim": None,
        "img": None,
        "summary": region_size_table(
            lut, image.get_data(labels_img), labels_img.affine, background_label
        ),
        "number_of_regions": int((lut["index"] != background_label).sum()),
    }
    if imgs is not None:
        data["img"], data["dim"] = middle_image(imgs, ref)
    return data


def _grids_for(fitted: FittedLabels, header: SpatialImage, settings: LabelsSettings):
    """Labels and mask on the grid signals are extracted on, for one image."""
    labels_img, mask_img = fitted.labels_img, fitted.mask_img
    if settings.resampling_target != "data":
        return labels_img, mask_img
    if not image.same_fov(header, labels_img):
        warn(
            "Resampling labels at transform time...\nTo avoid this warning, make sure "
            "to pass the images you want to transform to fit() first, or directly "
            "use fit_transform().",
            RegionWarning,
        )
        labels_img = _resample_labels(labels_img, header, settings)
    if mask_img is not None and not image.same_fov(header, mask_img):
        warn(
            "Resampling mask at transform time...\nTo avoid this warning, make sure "
            "to pass the images you want to transform to fit() first, or directly "
            "use fit_transform().",
            RegionWarning,
        )
        mask_img = _resample_mask(mask_img, header, settings)
    return labels_img, mask_img


def extraction_grid(
    fitted: FittedLabels,
    settings: LabelsSettings,
    imgs: Any,
    confounds: Any = None,
    items_3d: bool = True,
) -> tuple[SpatialImage, SpatialImage | None, np.ndarray | None, tuple | None]:
    """Check an image and its confounds; return labels, mask and target grid for it.

    Parameters
    ----------
    fitted : FittedLabels
        The atlas, as fitted.
    settings : LabelsSettings
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
        The labels image and the mask on the extraction grid, and the target affine and
        shape the image is resampled to (None when signals are read on its own grid).
    """
    header = header_img(imgs, name="imgs", items_3d=items_3d)
    check_confounds_rows(confounds, n_volumes(imgs, header), describe_input(imgs))
    labels_img, mask_img = _grids_for(fitted, header, settings)
    target_affine = target_shape = None
    if settings.resampling_target == "labels":
        target_affine, target_shape = labels_img.affine, labels_img.shape[:3]
    if settings.keep_masked_labels:
        warn(
            "keep_masked_labels=True (the nilearn 0.12.1 default) keeps regions lying "
            "entirely outside mask_img as all-zero columns; this behaviour is "
            "deprecated. Pass keep_masked_labels=False to drop such regions.",
            ParameterDeprecationWarning,
        )
    return labels_img, mask_img, target_affine, target_shape
