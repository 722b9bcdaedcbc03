"""The one code path of labels extraction: fitted atlases -> raw signals -> clean signals.

:func:`stream_fitted` reads an image once per extraction grid and reduces it to raw region
signals for several fitted atlases (:func:`bidsapp.regions.labels_reducer` reducers, run
by :func:`bidsapp.engine.stream_region_signals`); :func:`clean_streamed` then runs
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
from bidsapp.maskers.settings import LabelsSettings
from bidsapp.signal import clean

__all__ = ["StreamedLabels", "clean_streamed", "stream_fitted", "stream_signals"]


def stream_signals(
    imgs: Any,
    atlases: Sequence[tuple[SpatialImage, SpatialImage | None]],
    *,
    background_label: float,
    strategy: str,
    keep_masked_labels: bool,
    target_affine: np.ndarray | None,
    target_shape: tuple | None,
    smoothing_fwhm: Any,
    dtype: Any,
    mean_volume: bool = False,
    inflater: str | None = None,
) -> tuple[list[tuple[np.ndarray, list, SpatialImage]], np.ndarray | None, int, np.ndarray | None]:
    """Raw region signals of one image for several (labels, mask) pairs, in one pass.

    Parameters
    ----------
    imgs : niimg-like or list of niimg-like
        The image.
    atlases : sequence of (labels image, mask image or None)
        On the extraction grid: the image's, or the target grid when resampling.
    background_label, strategy, keep_masked_labels, smoothing_fwhm, dtype
        The masker parameters of the same names.
    target_affine, target_shape : optional
        The grid the image is resampled to (None: its own grid).
    mean_volume : bool, default=False
        Also compute the mean volume of the image.
    inflater : str, optional
        Gzip inflater (the fastest installed when None).

    Returns
    -------
    tuple
        Per pair, the raw signals ``(n_volumes, n_regions)``, the label value of each
        column and the masked labels image; the mean volume (or None); the input's
        dimensionality (3 for one 3D image, else 4); and the fraction of non-finite
        voxels of each volume (:attr:`bidsapp.engine.StreamedSignals.non_finite_fraction`).

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
    built = [
        regions.labels_reducer(
            labels_img,
            mask_img,
            reference=reference,
            background_label=background_label,
            reduction=strategy,
            keep_masked_labels=keep_masked_labels,
        )
        for labels_img, mask_img in atlases
    ]
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
class StreamedLabels:
    """Raw region signals of one image for several fitted atlases.

    Attributes
    ----------
    raw : tuple of numpy.ndarray
        Per atlas, ``(n_volumes, n_regions)`` raw signals.
    region_ids : tuple of list
        Per atlas, the label value of each column.
    atlases : tuple of nibabel images
        Per atlas, the labels image after masking (``region_atlas_``).
    grids : tuple
        Per atlas, what :func:`.fitting.extraction_grid` returned.
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
    grids: tuple[tuple, ...]
    non_finite_fraction: np.ndarray | None
    mean: np.ndarray | None
    three_d: bool
    confounds: Any


def stream_fitted(
    imgs: Any,
    fitted: Sequence[FittedLabels],
    settings: LabelsSettings,
    confounds: Any = None,
    *,
    items_3d: bool = True,
    mean_img: bool = False,
    inflater: str | None = None,
) -> StreamedLabels:
    """Read an image once per extraction grid and reduce it for several fitted atlases.

    Parameters
    ----------
    imgs : niimg-like or list of niimg-like
        The image.
    fitted : sequence of FittedLabels
        The atlases (at least one).
    settings : LabelsSettings
        The checked masker parameters.
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
    StreamedLabels
        The raw signals of every atlas.
    """
    grids = [extraction_grid(item, settings, imgs, confounds, items_3d) for item in fitted]
    # Atlases sharing an extraction grid share a pass (all of them when resampling to data).
    passes: dict[Any, list[int]] = defaultdict(list)
    for i, (_, _, target_affine, target_shape) in enumerate(grids):
        key = (
            None
            if target_affine is None
            else (np.asarray(target_affine).tobytes(), tuple(target_shape))
        )
        passes[key].append(i)
    raw: list[Any] = [None] * len(fitted)
    mean = fraction = None
    input_ndim = 4
    stream = cached(stream_signals, settings.memory, 1, settings.memory_level)
    for n, members in enumerate(passes.values()):
        _, _, target_affine, target_shape = grids[members[0]]
        log(settings, "Extracting region signals of %d atlas(es) from %r", len(members), imgs)
        per_atlas, pass_mean, input_ndim, pass_fraction = stream(
            imgs,
            [(grids[i][0], grids[i][1]) for i in members],
            target_affine=target_affine,
            target_shape=target_shape,
            mean_volume=mean_img and n == 0,
            inflater=inflater,
            **settings.stream_params,
        )
        mean = pass_mean if n == 0 else mean
        if pass_fraction is not None:
            fraction = pass_fraction if fraction is None else np.maximum(fraction, pass_fraction)
        for i, item in zip(members, per_atlas, strict=True):
            raw[i] = item
    return StreamedLabels(
        raw=tuple(signals for signals, _, _ in raw),
        region_ids=tuple(list(ids) for _, ids, _ in raw),
        atlases=tuple(atlas for _, _, atlas in raw),
        grids=tuple(grids),
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


def clean_streamed(
    streamed: StreamedLabels, settings: LabelsSettings, sample_mask: Any = None
) -> list[np.ndarray]:
    """Clean the raw signals of every atlas with :func:`bidsapp.signal.clean`.

    Parameters
    ----------
    streamed : StreamedLabels
        What :func:`stream_fitted` read.
    settings : LabelsSettings
        The checked masker parameters.
    sample_mask : array of int or bool, optional
        Volumes to keep.

    Returns
    -------
    list of numpy.ndarray
        Per atlas, ``(n_kept, n_regions)`` signals (``(n_regions,)`` for a 3D input).
    """
    cleaned = []
    for (labels_img, mask_img, _, _), signals, ids in zip(
        streamed.grids, streamed.raw, streamed.region_ids, strict=True
    ):
        if mask_img is not None and not settings.keep_masked_labels:
            _warn_removed_by_mask(labels_img, ids, settings.background_label)
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
