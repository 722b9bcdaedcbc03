"""The one code path of extraction: fitted atlases -> raw signals -> clean signals.

:func:`stream_fitted` reads an image once per extraction grid and reduces it to raw signals
for several fitted atlases, labels (:class:`~.fitting.FittedLabels`, reduced by
:func:`bidsapp.regions.labels_reducer`) and probabilistic maps
(:class:`~.maps_fitting.FittedMaps`, :func:`bidsapp.regions.maps_reducer`) mixed, all run
by :func:`bidsapp.engine.stream_region_signals`; :func:`clean_streamed` then runs
:func:`bidsapp.signal.clean` on each atlas's signals. The estimators' transforms and
:func:`bidsapp.maskers.extract_labels_signals` are both these two calls. Part of the
numerical core, maskers layer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from nibabel.spatialimages import SpatialImage

from bidsapp import engine, image, regions
from bidsapp.blas import one_blas_thread
from bidsapp.errors import RegionWarning, warn
from bidsapp.maskers.base import cached
from bidsapp.maskers.fitting import FittedLabels, extraction_grid, log
from bidsapp.maskers.inputs import NIIMG_TYPES, header_img
from bidsapp.maskers.maps_fitting import FittedMaps, maps_extraction_grid
from bidsapp.maskers.settings import LabelsSettings, MapsSettings
from bidsapp.signal import clean

__all__ = [
    "LabelsPlan",
    "MapsPlan",
    "StreamedAtlases",
    "clean_streamed",
    "stream_fitted",
    "stream_signals",
]

Settings = LabelsSettings | MapsSettings
Fitted = FittedLabels | FittedMaps


@dataclass(frozen=True)
class LabelsPlan:
    """A labels atlas on the extraction grid: what its reducer is built from."""

    labels_img: SpatialImage
    mask_img: SpatialImage | None
    background_label: Any
    strategy: str
    keep_masked_labels: bool

    def reducer(self, reference: SpatialImage | None) -> tuple:
        """``(reducer, label value of each column, masked labels image)``."""
        return regions.labels_reducer(
            self.labels_img,
            self.mask_img,
            reference=reference,
            background_label=self.background_label,
            reduction=self.strategy,
            keep_masked_labels=self.keep_masked_labels,
        )

    def warn_dropped(self, ids: list) -> None:
        """Warn (as nilearn) about regions a mask removed."""
        if self.mask_img is not None and not self.keep_masked_labels:
            _warn_removed_by_mask(self.labels_img, ids, self.background_label)


@dataclass(frozen=True)
class MapsPlan:
    """A maps atlas on the extraction grid: what its reducer is built from."""

    maps_img: SpatialImage
    mask_img: SpatialImage | None
    keep_masked_maps: bool

    def reducer(self, reference: SpatialImage | None) -> tuple:
        """``(reducer, map index of each column, maps image)``."""
        return regions.maps_reducer(
            self.maps_img,
            self.mask_img,
            reference=reference,
            keep_masked_maps=self.keep_masked_maps,
        )

    def warn_dropped(self, ids: list) -> None:
        """Warn (as nilearn) about maps a mask removes, or would remove."""
        if self.mask_img is not None:
            regions.warn_masked_maps(int(self.maps_img.shape[3]), ids, self.keep_masked_maps)


Plan = LabelsPlan | MapsPlan


def stream_signals(
    imgs: Any,
    plans: Sequence[Plan],
    *,
    target_affine: np.ndarray | None,
    target_shape: tuple | None,
    smoothing_fwhm: Any,
    dtype: Any,
    mean_volume: bool = False,
    inflater: str | None = None,
) -> tuple[list[tuple[np.ndarray, list, SpatialImage]], np.ndarray | None, int, np.ndarray | None]:
    """Raw signals of one image for several atlases (labels or maps), in one pass.

    Parameters
    ----------
    imgs : niimg-like or list of niimg-like
        The image.
    plans : sequence of LabelsPlan or MapsPlan
        The atlases on the extraction grid: the image's, or the target grid when resampling.
    target_affine, target_shape : optional
        The grid the image is resampled to (None: its own grid).
    smoothing_fwhm, dtype
        The masker parameters of the same names (shared by the atlases of a pass).
    mean_volume : bool, default=False
        Also compute the mean volume of the image.
    inflater : str, optional
        Gzip inflater (the fastest installed when None).

    Returns
    -------
    tuple
        Per atlas, the raw signals ``(n_volumes, n_columns)``, the label value (labels) or
        map index (maps) of each column and the masked labels image (labels) or the maps
        image (maps); the mean volume (or None); the input's dimensionality (3 for one 3D
        image, else 4); and the fraction of non-finite voxels of each volume
        (:attr:`bidsapp.engine.StreamedSignals.non_finite_fraction`).

    Notes
    -----
    A path is loaded once (loading a ``.nii.gz`` header can cost tens of milliseconds
    when nibabel uses indexed_gzip).
    """
    if isinstance(imgs, NIIMG_TYPES):
        imgs = image.load_img(imgs, name="imgs")
        header, input_ndim = imgs, len(imgs.shape)
    else:
        header, input_ndim = header_img(imgs, name="imgs"), 4
    reference = None if target_affine is not None else header
    built = [plan.reducer(reference) for plan in plans]
    streamed = engine.stream_region_signals(
        imgs,
        [reducer for reducer, _, _ in built],
        dtype=dtype,
        target_affine=target_affine,
        target_shape=target_shape,
        smoothing_fwhm=smoothing_fwhm,
        mean_volume=mean_volume,
        inflater=inflater,
    )
    per_atlas = [
        (signals, ids, atlas)
        for signals, (_, ids, atlas) in zip(streamed.signals, built, strict=True)
    ]
    return per_atlas, streamed.mean_volume, input_ndim, streamed.non_finite_fraction


@dataclass(frozen=True)
class StreamedAtlases:
    """Raw signals of one image for several fitted atlases.

    Attributes
    ----------
    raw : tuple of numpy.ndarray
        Per atlas, ``(n_volumes, n_columns)`` raw signals.
    region_ids : tuple of list
        Per atlas, the label value (labels) or map index (maps) of each column.
    atlases : tuple of nibabel images
        Per atlas, the labels image after masking (``region_atlas_``), or the maps image.
    plans : tuple of LabelsPlan or MapsPlan
        Per atlas, the atlas on its extraction grid.
    settings : tuple of LabelsSettings or MapsSettings
        Per atlas, the checked masker parameters.
    non_finite_fraction : numpy.ndarray or None
        Fraction of non-finite voxels of each volume (None for integer data).
    mean : numpy.ndarray or None
        Mean volume, when asked for.
    three_d : bool
        Whether the input was one 3D image (signals are then 1D).
    confounds : any
        The confounds the signals are cleaned with.
    """

    raw: tuple[np.ndarray, ...]
    region_ids: tuple[list, ...]
    atlases: tuple[SpatialImage, ...]
    plans: tuple[Plan, ...]
    settings: tuple[Settings, ...]
    non_finite_fraction: np.ndarray | None
    mean: np.ndarray | None
    three_d: bool
    confounds: Any


def _plan(item: Fitted, settings: Settings, imgs, confounds, items_3d) -> tuple:
    """Return the atlas on the extraction grid of ``imgs``, and that grid (affine, shape)."""
    if isinstance(item, FittedMaps):
        maps_img, mask_img, target_affine, target_shape = maps_extraction_grid(
            item, settings, imgs, confounds, items_3d
        )
        plan: Plan = MapsPlan(maps_img, mask_img, settings.keep_masked_maps)
    else:
        labels_img, mask_img, target_affine, target_shape = extraction_grid(
            item, settings, imgs, confounds, items_3d
        )
        plan = LabelsPlan(
            labels_img,
            mask_img,
            settings.background_label,
            settings.strategy,
            settings.keep_masked_labels,
        )
    return plan, target_affine, target_shape


def _per_atlas(settings: Settings | Sequence[Settings], n_atlases: int) -> tuple:
    if isinstance(settings, (LabelsSettings, MapsSettings)):
        return (settings,) * n_atlases
    settings = tuple(settings)
    if len(settings) != n_atlases:
        raise ValueError(f"{len(settings)} settings for {n_atlases} atlases: give one per atlas.")
    return settings


def stream_fitted(
    imgs: Any,
    fitted: Sequence[Fitted],
    settings: Settings | Sequence[Settings],
    confounds: Any = None,
    *,
    items_3d: bool = True,
    mean_img: bool = False,
    inflater: str | None = None,
) -> StreamedAtlases:
    """Read an image once per extraction grid and reduce it for several fitted atlases.

    Labels and maps atlases can be mixed: every atlas that shares an extraction grid, a
    ``smoothing_fwhm`` and a ``dtype`` with others shares their pass (all of them with
    ``resampling_target="data"``, the default, and equal settings).

    Parameters
    ----------
    imgs : niimg-like or list of niimg-like
        The image.
    fitted : sequence of FittedLabels or FittedMaps
        The atlases (at least one).
    settings : LabelsSettings or MapsSettings, or a sequence of them
        The checked masker parameters: one for all atlases, or one per atlas.
    confounds : optional
        The confounds (checked to have one row per volume).
    items_3d : bool, default=True
        Whether the items of a list must be 3D.
    mean_img : bool, default=False
        Also compute the mean volume (in the first pass).
    inflater : str, optional
        Gzip inflater.

    Returns
    -------
    StreamedAtlases
        The raw signals of every atlas.
    """
    per_atlas = _per_atlas(settings, len(fitted))
    planned = [
        _plan(item, one, imgs, confounds, items_3d)
        for item, one in zip(fitted, per_atlas, strict=True)
    ]
    passes: dict[Any, list[int]] = defaultdict(list)
    for i, (_, target_affine, target_shape) in enumerate(planned):
        grid = (
            None
            if target_affine is None
            else (np.asarray(target_affine).tobytes(), tuple(target_shape))
        )
        passes[(grid, repr(per_atlas[i].smoothing_fwhm), repr(per_atlas[i].dtype))].append(i)
    raw: list[Any] = [None] * len(fitted)
    mean = fraction = None
    input_ndim = 4
    for n, members in enumerate(passes.values()):
        _, target_affine, target_shape = planned[members[0]]
        first = per_atlas[members[0]]
        stream = cached(stream_signals, first.memory, 1, first.memory_level)
        log(first, "Extracting region signals of %d atlas(es) from %r", len(members), imgs)
        results, pass_mean, input_ndim, pass_fraction = stream(
            imgs,
            [planned[i][0] for i in members],
            target_affine=target_affine,
            target_shape=target_shape,
            smoothing_fwhm=first.smoothing_fwhm,
            dtype=first.dtype,
            mean_volume=mean_img and n == 0,
            inflater=inflater,
        )
        mean = pass_mean if n == 0 else mean
        if pass_fraction is not None:
            fraction = pass_fraction if fraction is None else np.maximum(fraction, pass_fraction)
        for i, item in zip(members, results, strict=True):
            raw[i] = item
    return StreamedAtlases(
        raw=tuple(signals for signals, _, _ in raw),
        region_ids=tuple(list(ids) for _, ids, _ in raw),
        atlases=tuple(atlas for _, _, atlas in raw),
        plans=tuple(plan for plan, _, _ in planned),
        settings=per_atlas,
        non_finite_fraction=fraction,
        mean=mean,
        three_d=input_ndim == 3,
        confounds=confounds,
    )


def _warn_removed_by_mask(labels_img: SpatialImage, ids: list, background_label) -> None:
    """Warn about regions dropped because they lie entirely outside the mask."""
    before = set(np.unique(image.safe_get_data(labels_img, ensure_finite=True)).tolist())
    before.discard(background_label)
    removed = before - set(np.asarray(ids).tolist())
    if removed:
        warn(
            "After applying mask to the labels image, the following labels were "
            f"removed: {sorted(removed)}. Out of {len(before)} regions, the masked "
            f"labels image only contains {len(ids)} regions.",
            RegionWarning,
        )


def clean_streamed(streamed: StreamedAtlases, sample_mask: Any = None) -> list[np.ndarray]:
    """Clean the raw signals of every atlas with :func:`bidsapp.signal.clean`.

    Parameters
    ----------
    streamed : StreamedAtlases
        What :func:`stream_fitted` read (with each atlas's settings).
    sample_mask : array of int or bool, optional
        Volumes to keep.

    Returns
    -------
    list of numpy.ndarray
        Per atlas, ``(n_kept, n_columns)`` signals (``(n_columns,)`` for a 3D input).
    """
    cleaned = []
    for plan, settings, signals, ids in zip(
        streamed.plans, streamed.settings, streamed.raw, streamed.region_ids, strict=True
    ):
        plan.warn_dropped(ids)
        with one_blas_thread():
            signals = cached(clean, settings.memory, 1, settings.memory_level)(
                signals,
                confounds=streamed.confounds,
                sample_mask=sample_mask,
                runs=None,
                **settings.clean_params,
                **settings.clean_kwargs,
            )
        cleaned.append(signals[0] if streamed.three_d else signals)
    return cleaned
