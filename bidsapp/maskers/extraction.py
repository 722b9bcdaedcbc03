"""Several atlases, one pass: extract_labels_signals and its two halves.

:func:`stream_labels_signals` fits each atlas and reads the image once
(:mod:`.pipeline`); :meth:`RawLabelsSignals.clean` cleans the signals; between the two a
caller (the app's per-run extraction) can look at the non-finite values of each volume and
choose which volumes to keep. :func:`extract_labels_signals` is the two in a row. The
results carry, per atlas, a fitted :class:`~bidsapp.maskers.NiftiLabelsMasker` in the state
its ``fit_transform`` would leave, built from the same fitted state. Part of the numerical
core, maskers layer.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np

from bidsapp.maskers.base import cached
from bidsapp.maskers.fitting import FittedLabels, fit_labels
from bidsapp.maskers.inputs import header_img, image_high_variance_confounds, with_high_variance
from bidsapp.maskers.labels import NiftiLabelsMasker
from bidsapp.maskers.pipeline import StreamedAtlases, clean_streamed, stream_fitted
from bidsapp.maskers.settings import LabelsSettings, check_parameters, check_settings

__all__ = [
    "LabelsExtraction",
    "LabelsSignals",
    "RawLabelsSignals",
    "extract_labels_signals",
    "stream_labels_signals",
]

# The masker's parameters and their defaults: what a name left out of ``**params`` means.
_DEFAULTS = {
    name: param.default
    for name, param in inspect.signature(NiftiLabelsMasker.__init__).parameters.items()
    if param.default is not inspect.Parameter.empty
}


@dataclass(frozen=True)
class LabelsSignals:
    """Region signals of one image for one atlas.

    Attributes
    ----------
    signals : numpy.ndarray
        ``(n_volumes, n_regions)`` (``(n_regions,)`` for a 3D image): what
        ``NiftiLabelsMasker(labels_img=..., ...).fit_transform(imgs, ...)`` returns.
    region_ids : dict
        The masker's ``region_ids_`` after that transform: column index -> label value,
        ``"background"`` -> background label when the labels image has a background.
    masker : NiftiLabelsMasker
        The fitted masker, in the state ``fit_transform`` leaves it in (``labels_img_``,
        ``mask_img_``, ``region_names_``, ``region_atlas_``, ``lut_`` ...).
    """

    signals: np.ndarray
    region_ids: dict
    masker: NiftiLabelsMasker


@dataclass(frozen=True)
class LabelsExtraction:
    """Region signals of one image for several atlases, from one pass over the image.

    Iterating over it (or indexing it) gives the :class:`LabelsSignals` of each atlas,
    in the order the atlases were given.

    Attributes
    ----------
    atlases : tuple of LabelsSignals
        One entry per labels image.
    mean_img : nibabel.Nifti1Image or None
        Mean over time of the image (on its own grid), when asked for.
    """

    atlases: tuple[LabelsSignals, ...]
    mean_img: nib.Nifti1Image | None = None

    def __iter__(self):
        """Iterate over the atlases' results."""
        return iter(self.atlases)

    def __len__(self) -> int:
        """Return the number of atlases."""
        return len(self.atlases)

    def __getitem__(self, index: int) -> LabelsSignals:
        """Return the result of the ``index``-th atlas."""
        return self.atlases[index]


def extract_labels_signals(
    imgs: Any,
    labels_imgs: Sequence[Any],
    *,
    mask_img: Any = None,
    confounds: Any = None,
    sample_mask: Any = None,
    luts: Sequence[Any] | None = None,
    mean_img: bool = False,
    inflater: str | None = None,
    **params: Any,
) -> LabelsExtraction:
    """Extract region signals of one image for several atlases, reading the image once.

    For each labels image ``L`` the result equals
    ``NiftiLabelsMasker(labels_img=L, mask_img=mask_img, lut=lut, **params)
    .fit_transform(imgs, confounds=confounds, sample_mask=sample_mask)``, with the same
    warnings; but the image is streamed once for all atlases that share an extraction
    grid (all of them with ``resampling_target="data"``, the default): a ``.nii.gz`` is
    inflated once, not once per atlas, and the 4D array is never held in memory.

    This is :func:`stream_labels_signals` followed by :meth:`RawLabelsSignals.clean`: the
    functions each masker's ``fit_transform`` runs (:func:`.fitting.fit_labels`,
    :func:`.pipeline.stream_fitted`, :func:`.pipeline.clean_streamed`), without building
    an estimator per atlas.

    Parameters
    ----------
    imgs : str, pathlib.Path, nibabel image or list of 3D images
        One 3D or 4D image (a list of 3D images is one series).
    labels_imgs : sequence of niimg-like
        The atlases (3D labels images, on any grid).
    mask_img : niimg-like, optional
        Brain mask shared by all atlases.
    confounds : array, DataFrame, path, or list of those, optional
        Confounds to regress out, one row per volume.
    sample_mask : array of int or bool, optional
        Volumes to keep.
    luts : sequence, optional
        One look-up table (``lut`` parameter) per atlas, or None entries.
    mean_img : bool, default=False
        Also return the mean image over time, computed in the same pass.
    inflater : {"isal", "zlib-ng", "zlib"}, optional
        Gzip inflater; the fastest installed when None.
    **params
        Any other :class:`NiftiLabelsMasker` parameter (``strategy``, ``standardize``,
        ``detrend``, ``low_pass``, ``high_pass``, ``t_r``, ``smoothing_fwhm``,
        ``keep_masked_labels``, ``resampling_target``, ``clean_args``, ``memory`` ...),
        applied to every atlas. ``reports`` defaults to False here.

    Returns
    -------
    LabelsExtraction
        One :class:`LabelsSignals` per atlas (iterable), and the mean image if asked for.

    Raises
    ------
    TypeError
        If ``params`` holds ``labels_img``, ``mask_img`` or ``lut``, or an unknown name.
    ValueError
        If ``luts`` does not have one entry per atlas; and as the masker does.
    """
    raw = stream_labels_signals(
        imgs,
        labels_imgs,
        mask_img=mask_img,
        confounds=confounds,
        luts=luts,
        mean_img=mean_img,
        inflater=inflater,
        **params,
    )
    return raw.clean(sample_mask=sample_mask)


@dataclass(frozen=True)
class RawLabelsSignals:
    """Raw (not yet cleaned) region signals of one image for several atlases.

    What :func:`stream_labels_signals` read in its one pass; :meth:`clean` finishes the
    extraction. Between the two a caller can look at the raw signals and at the
    non-finite values of each volume, and choose which volumes to keep.

    Attributes
    ----------
    raw : tuple of numpy.ndarray
        One ``(n_volumes, n_regions)`` array of raw region signals per atlas (columns in
        the order of :attr:`region_ids`).
    region_ids : tuple of list
        Per atlas, the label value of each column of ``raw``.
    non_finite_fraction : numpy.ndarray or None
        ``(n_volumes,)`` fraction of each volume's voxels (those the atlases read) that
        were NaN or infinite, before they were set to 0; None for integer data.
    n_volumes : int
        Volumes read (1 for a 3D image).
    """

    raw: tuple[np.ndarray, ...]
    region_ids: tuple[list, ...]
    non_finite_fraction: np.ndarray | None
    n_volumes: int
    _streamed: StreamedAtlases | None = field(repr=False)
    _settings: LabelsSettings = field(repr=False)
    _fitted: tuple[FittedLabels, ...] = field(repr=False)
    _masker_params: tuple[dict, ...] = field(repr=False)
    _imgs: Any = field(repr=False)

    def clean(self, sample_mask: Any = None) -> LabelsExtraction:
        """Clean the raw signals of every atlas, as each masker's transform does.

        Parameters
        ----------
        sample_mask : array of int or bool, optional
            Volumes to keep (see :func:`bidsapp.signal.clean`).

        Returns
        -------
        LabelsExtraction
            One :class:`LabelsSignals` per atlas, and the mean image if it was asked for.
        """
        streamed = self._streamed
        if streamed is None:
            return LabelsExtraction(atlases=())
        cleaned = clean_streamed(streamed, sample_mask)
        results = []
        for params, fitted, signals, ids, atlas in zip(
            self._masker_params,
            self._fitted,
            cleaned,
            streamed.region_ids,
            streamed.atlases,
            strict=True,
        ):
            masker = NiftiLabelsMasker(**params)._adopt(self._settings, fitted)
            masker._record_columns(ids, atlas)
            results.append(
                LabelsSignals(signals=signals, region_ids=masker.region_ids_, masker=masker)
            )
        mean_image = None
        if streamed.mean is not None:
            header = header_img(self._imgs, name="imgs")
            mean_image = nib.Nifti1Image(streamed.mean, header.affine)
        return LabelsExtraction(atlases=tuple(results), mean_img=mean_image)


def stream_labels_signals(
    imgs: Any,
    labels_imgs: Sequence[Any],
    *,
    mask_img: Any = None,
    confounds: Any = None,
    luts: Sequence[Any] | None = None,
    mean_img: bool = False,
    inflater: str | None = None,
    **params: Any,
) -> RawLabelsSignals:
    """Read an image once and reduce it to raw region signals for several atlases.

    The first half of :func:`extract_labels_signals` (same parameters, but the volumes to
    keep are chosen later, in :meth:`RawLabelsSignals.clean`): checks the parameters once,
    fits each atlas, checks the confounds' rows (and adds high-variance confounds when
    asked), and streams the image once per extraction grid.

    Parameters
    ----------
    imgs, labels_imgs, mask_img, confounds, luts, mean_img, inflater, **params
        As :func:`extract_labels_signals`.

    Returns
    -------
    RawLabelsSignals
        Raw signals per atlas, the non-finite fraction of each volume, and what
        :meth:`RawLabelsSignals.clean` needs.

    Raises
    ------
    TypeError
        If ``params`` holds ``labels_img``, ``mask_img`` or ``lut``.
    ValueError
        If ``luts`` does not have one entry per atlas; and as the masker does.
    """
    for name, instead in (
        ("labels_img", "labels_imgs"),
        ("mask_img", "mask_img="),
        ("lut", "luts"),
    ):
        if name in params:
            raise TypeError(
                f"extract_labels_signals: '{name}' is not a shared masker parameter; use {instead}."
            )
    labels_imgs = list(labels_imgs)
    luts = [None] * len(labels_imgs) if luts is None else list(luts)
    if len(luts) != len(labels_imgs):
        raise ValueError(
            f"'luts' has {len(luts)} entries for {len(labels_imgs)} labels images: give one "
            "look-up table (or None) per atlas."
        )
    params.setdefault("reports", False)
    # As the masker's **kwargs: names that are not parameters are deprecated clean__ ones.
    kwargs = {k: v for k, v in params.items() if k not in _DEFAULTS}
    masker_params = [
        {"labels_img": labels_img, "mask_img": mask_img, "lut": lut, **params}
        for labels_img, lut in zip(labels_imgs, luts, strict=True)
    ]
    if not labels_imgs:
        return RawLabelsSignals((), (), None, 0, None, None, (), (), imgs)
    checked = [
        {k: v for k, v in {**_DEFAULTS, **one}.items() if k not in kwargs} for one in masker_params
    ]
    for one in checked[1:]:  # each atlas has its own look-up table
        check_parameters(one)
    settings = check_settings(checked[0], kwargs, "NiftiLabelsMasker")
    fitted = tuple(
        fit_labels(labels_img, mask_img, lut, settings, imgs)
        for labels_img, lut in zip(labels_imgs, luts, strict=True)
    )
    if settings.high_variance_confounds:
        hv = cached(image_high_variance_confounds, settings.memory, 1, settings.memory_level)
        confounds = with_high_variance(confounds, hv(imgs), first=True)
    streamed = stream_fitted(
        imgs, fitted, settings, confounds, mean_img=mean_img, inflater=inflater
    )
    return RawLabelsSignals(
        raw=streamed.raw,
        region_ids=streamed.region_ids,
        non_finite_fraction=streamed.non_finite_fraction,
        n_volumes=int(streamed.raw[0].shape[0]),
        _streamed=streamed,
        _settings=settings,
        _fitted=fitted,
        _masker_params=tuple(masker_params),
        _imgs=imgs,
    )
