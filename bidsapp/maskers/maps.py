"""NiftiMapsMasker: one least-squares signal per map of a probabilistic atlas (nilearn 0.12.1).

The estimator is a facade, as :class:`~bidsapp.maskers.NiftiLabelsMasker`: ``fit`` checks
its parameters (:func:`.settings.check_maps_settings`) and fits the maps
(:func:`.maps_fitting.fit_maps`); each transform is :func:`.pipeline.stream_fitted` (the
engine's one pass, with a :class:`bidsapp.regions.MapsReducer`) followed by
:func:`.pipeline.clean_streamed`. Part of the numerical core, maskers layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from bidsapp import image, regions
from bidsapp.maskers.base import LabelsEstimator, cached
from bidsapp.maskers.fitting import log
from bidsapp.maskers.inputs import image_high_variance_confounds, with_high_variance
from bidsapp.maskers.maps_fitting import FittedMaps, fit_maps
from bidsapp.maskers.pipeline import clean_streamed, stream_fitted
from bidsapp.maskers.settings import MapsSettings, check_maps_settings

__all__ = ["NiftiMapsMasker"]


class NiftiMapsMasker(LabelsEstimator):
    """Extract one signal per map of a set of (possibly overlapping) weighted maps.

    Each volume's signals are the least-squares coefficients of the maps (restricted to
    the mask) that best explain the volume, as nilearn 0.12.1's ``NiftiMapsMasker``.

    Parameters
    ----------
    maps_img : str, pathlib.Path or nibabel image, default=None
        4D image, one map of weights per volume (required at ``fit``).
    mask_img : str, pathlib.Path or nibabel image, optional
        Mask (3D, or 4D reduced with "all volumes nonzero"): only voxels inside it, where
        some map is positive, enter the least squares.
    allow_overlap : bool, default=True
        If False, transforms raise a ValueError when two maps are positive on one voxel.
    smoothing_fwhm : float, optional
        Full width at half maximum (mm) of a Gaussian kernel applied to the images first.
    standardize : {False, True, "zscore", "zscore_sample", "psc"}, default=False
        How signals are standardized (see :func:`bidsapp.signal.clean`).
    standardize_confounds : bool, default=True
        Z-score confounds before regressing them out.
    high_variance_confounds : bool, default=False
        Also regress out 5 high-variance confounds computed on all voxels of each image.
    detrend : bool, default=False
        Remove a linear trend from the signals.
    low_pass : float, optional
        Low-pass cutoff (Hz); needs ``t_r``.
    high_pass : float, optional
        High-pass cutoff (Hz); needs ``t_r``.
    t_r : float, optional
        Repetition time (seconds).
    dtype : numpy dtype or "auto", optional
        Cast image (and maps) data to this dtype first; "auto" gives float32 for floats.
    resampling_target : {"data", "mask", "maps", None}, default="data"
        Which grid signals are extracted on: "data" resamples maps (linear) and mask
        (nearest) to each image; "mask" resamples maps and images to the mask; "maps"
        resamples mask and images to the maps (images with cubic splines); None resamples
        nothing and requires matching grids.
    keep_masked_maps : bool, default=True
        Keep maps entirely outside ``mask_img`` as all-zero columns (deprecated, as in
        nilearn 0.12.1: a DeprecationWarning is issued at each transform with a mask);
        False drops them.
    memory : joblib.Memory, str or pathlib.Path, optional
        Cache for resampling and extraction (a directory path or a Memory).
    memory_level : int, default=0
        1 caches each image's whole extraction; 2 also caches each step.
    verbose : int, default=0
        If positive, log progress at INFO level (DEBUG otherwise).
    reports : bool, default=True
        Keep what a report needs (``_reporting_data``) after ``fit``.
    cmap : str, default="CMRmap_r"
        Colormap for report figures.
    clean_args : dict, optional
        Extra keyword arguments for :func:`bidsapp.signal.clean`.
    **kwargs
        Deprecated: ``clean__<name>=value`` passes ``<name>`` to
        :func:`bidsapp.signal.clean`. Cannot be combined with ``clean_args``.

    Attributes
    ----------
    maps_img_ : nibabel.Nifti1Image
        The maps used for extraction (floating point, finite; resampled at ``fit`` as
        ``resampling_target`` asks).
    mask_img_ : nibabel.Nifti1Image or None
        Binary mask on the grid of ``resampling_target``, if a mask was given.
    n_elements_ : int
        Number of maps (volumes of ``maps_img_``).
    clean_args_ : dict
        Keyword arguments passed to :func:`bidsapp.signal.clean`.
    memory_ : joblib.Memory
        The cache in use.
    """

    def __init__(
        self,
        maps_img=None,
        mask_img=None,
        allow_overlap=True,
        smoothing_fwhm=None,
        standardize=False,
        standardize_confounds=True,
        high_variance_confounds=False,
        detrend=False,
        low_pass=None,
        high_pass=None,
        t_r=None,
        dtype=None,
        resampling_target="data",
        keep_masked_maps=True,
        memory=None,
        memory_level=0,
        verbose=0,
        reports=True,
        cmap="CMRmap_r",
        clean_args=None,
        **kwargs,
    ):
        self.maps_img = maps_img
        self.mask_img = mask_img
        self.allow_overlap = allow_overlap
        self.smoothing_fwhm = smoothing_fwhm
        self.standardize = standardize
        self.standardize_confounds = standardize_confounds
        self.high_variance_confounds = high_variance_confounds
        self.detrend = detrend
        self.low_pass = low_pass
        self.high_pass = high_pass
        self.t_r = t_r
        self.dtype = dtype
        self.resampling_target = resampling_target
        self.keep_masked_maps = keep_masked_maps
        self.memory = memory
        self.memory_level = memory_level
        self.verbose = verbose
        self.reports = reports
        self.cmap = cmap
        self.clean_args = clean_args
        self.clean_kwargs = kwargs

    def __sklearn_is_fitted__(self) -> bool:
        """Tell scikit-learn whether ``fit`` has been called."""
        return hasattr(self, "maps_img_") and hasattr(self, "n_elements_")

    def _log(self, message: str, *args: Any) -> None:
        log(self._settings, message, *args)

    # -- fit ------------------------------------------------------------------

    def _check_settings(self) -> MapsSettings:
        """Check the parameters; return the settings an extraction uses."""
        params = self.get_params(deep=False)
        for name in self.clean_kwargs:
            params.pop(name)
        return check_maps_settings(params, self.clean_kwargs, type(self).__name__)

    def fit(self, imgs=None, y=None):
        """Load the maps (and mask) and resample them as ``resampling_target`` asks.

        Parameters
        ----------
        imgs : niimg-like or list of niimg-like, optional
            Images the masker will transform: with ``resampling_target="data"`` maps and
            mask are resampled to their grid now rather than at each transform.
        y : None
            Ignored; present for scikit-learn compatibility.

        Returns
        -------
        self
            The fitted masker.
        """
        del y
        settings = self._check_settings()
        fitted = fit_maps(self.maps_img, self.mask_img, settings, imgs, type(self).__name__)
        return self._adopt(settings, fitted)

    def _adopt(self, settings: MapsSettings, fitted: FittedMaps):
        """Take the fitted state (what ``fit`` computed)."""
        self._settings = settings
        self._fitted = fitted
        self.clean_kwargs_ = settings.forwarded_kwargs
        self.clean_args_ = settings.clean_args
        self.memory_ = settings.memory
        self.maps_img_ = fitted.maps_img
        self.mask_img_ = fitted.mask_img
        self.n_elements_ = fitted.n_maps
        self._reporting_data = fitted.reporting_data
        return self

    # -- transform --------------------------------------------------------------

    def _extract(self, imgs, confounds=None, sample_mask=None, items_3d=True):
        """Extract one image without changing the masker's state."""
        streamed = stream_fitted(imgs, [self._fitted], self._settings, confounds, items_3d=items_3d)
        (signals,) = clean_streamed(streamed, sample_mask)
        return signals, streamed.region_ids[0], streamed.atlases[0]

    def _record_columns(self, ids: list, atlas) -> None:
        """Nothing to remember: the columns are the maps (as nilearn's masker)."""

    def _high_variance_confounds(self, imgs) -> np.ndarray:
        settings = self._settings
        return cached(image_high_variance_confounds, settings.memory, 1, settings.memory_level)(
            imgs
        )

    def transform_single_imgs(self, imgs, confounds=None, sample_mask=None):
        """Extract map signals from one 3D or 4D image.

        Parameters
        ----------
        imgs : niimg-like or list of 3D niimg-like
            A 4D image (or a list of 3D volumes forming one); a 3D image gives a 1D output.
        confounds : array, DataFrame, path, or list of those, optional
            Confounds to regress out, one row per volume.
        sample_mask : array of int or bool, optional
            Volumes to keep (indices or a boolean mask).

        Returns
        -------
        numpy.ndarray
            ``(n_volumes, n_maps)`` (or ``(n_maps,)`` for a 3D image).
        """
        check_is_fitted(self)
        signals, _, _ = self._extract(imgs, confounds, sample_mask)
        return signals

    def transform(self, imgs, confounds=None, sample_mask=None):
        """Extract map signals, regressing out confounds if given.

        Parameters
        ----------
        imgs : niimg-like or list of 3D niimg-like
            Image to process; a 3D image gives a 1D output.
        confounds : array, DataFrame, path, or list of those, optional
            Confounds, one row per volume.
        sample_mask : array of int or bool, optional
            Volumes to keep (indices or a boolean mask).

        Returns
        -------
        numpy.ndarray
            ``(n_volumes, n_maps)`` (or ``(n_maps,)`` for a 3D image).
        """
        check_is_fitted(self)
        if self.high_variance_confounds:
            hv_confounds = self._high_variance_confounds(imgs)
            confounds = with_high_variance(confounds, hv_confounds, first=True)
        return self.transform_single_imgs(imgs, confounds=confounds, sample_mask=sample_mask)

    def fit_transform(self, imgs, y=None, confounds=None, sample_mask=None):
        """Fit on ``imgs`` and extract their map signals.

        Parameters
        ----------
        imgs : niimg-like or list of 3D niimg-like
            Image to process.
        y : None
            Ignored; present for scikit-learn compatibility.
        confounds : array, DataFrame, path, or list of those, optional
            Confounds, one row per volume.
        sample_mask : array of int or bool, optional
            Volumes to keep.

        Returns
        -------
        numpy.ndarray
            ``(n_volumes, n_maps)`` (or ``(n_maps,)`` for a 3D image).
        """
        del y
        return self.fit(imgs).transform(imgs, confounds=confounds, sample_mask=sample_mask)

    def inverse_transform(self, region_signals):
        """Build an image from map signals: each voxel gets ``signals @ maps``.

        Parameters
        ----------
        region_signals : numpy.ndarray
            ``(n_volumes, n_maps)`` or ``(n_maps,)``.

        Returns
        -------
        nibabel.Nifti1Image
            4D (or 3D for 1D signals) image on the grid of ``maps_img_``; voxels outside
            the mask, or where no map is positive inside it, are 0.
        """
        check_is_fitted(self)
        signals = np.atleast_1d(np.asarray(region_signals))
        if signals.ndim > 2:
            raise ValueError(
                f"Input to 'inverse_transform' must be 1D or 2D; got shape {signals.shape}."
            )
        expected = (
            (self.n_elements_,) if signals.ndim == 1 else (signals.shape[0], self.n_elements_)
        )
        if signals.shape != expected:
            raise ValueError(
                "Input to 'inverse_transform' has wrong shape.\n"
                f"Expected {expected}.\nGot {signals.shape}."
            )
        if signals.dtype.kind in "fc" and not np.isfinite(signals).all():
            raise ValueError("Input to 'inverse_transform' contains NaN or infinity.")
        self._log("Computing image from signals")
        return regions.signals_to_img_maps(signals, self.maps_img_, self.mask_img_)

    def generate_report(self, displayed_maps=10) -> Any:
        """Return an HTML report: the strongest map at each voxel over the fitted image.

        Parameters
        ----------
        displayed_maps : int, list of int, numpy.ndarray or "all", default=10
            The maps shown: the first n, those indices, or all of them.

        Returns
        -------
        bidsapp.report.html.HTMLReport
            Has ``save_as_html(path)`` and ``_repr_html_()``; empty, with a warning, when
            the masker was built with ``reports=False`` or is not fitted.

        Raises
        ------
        TypeError
            If ``displayed_maps`` is not an int, a list or array of ints, or "all".
        ValueError
            If it names a map the masker does not have.
        """
        from bidsapp.report.masker import generate_masker_report

        if isinstance(displayed_maps, str):
            ok = displayed_maps == "all"
        elif isinstance(displayed_maps, (bool, np.bool_)):
            ok = False
        else:
            ok = isinstance(displayed_maps, (int, list, np.ndarray)) and (
                np.asarray(displayed_maps).dtype.kind in "iu"
            )
        if not ok:
            raise TypeError(
                "Parameter 'displayed_maps' of generate_report() should be either 'all' or an "
                f"int, or a list/array of ints; got {displayed_maps!r}."
            )
        data = getattr(self, "_reporting_data", None)
        if not data:
            return generate_masker_report(self)
        return generate_masker_report(
            self, reporting_data=_labelled_report_data(data, displayed_maps)
        )


def _labelled_report_data(data: dict, displayed: Any) -> dict:
    """Return the maps as a labels masker's report data.

    Each voxel is labelled (1-based) with the displayed map of largest positive weight
    there; the table lists the maps shown.
    """
    import pandas as pd

    maps = image.get_data(data["maps_image"])
    n_maps = maps.shape[3]
    if isinstance(displayed, str):
        shown = list(range(n_maps))
    elif isinstance(displayed, (int, np.integer)):
        shown = list(range(min(int(displayed), n_maps)))
    else:
        shown = [int(i) for i in displayed]
        if shown and max(shown) >= n_maps:
            raise ValueError(
                f"Report cannot display the following maps {shown} because masker only has "
                f"{n_maps} maps."
            )
    weights = maps[..., shown] if shown else np.zeros((*maps.shape[:3], 1))
    labels = np.where(weights.max(axis=3) > 0, np.argmax(weights, axis=3) + 1, 0)
    return {
        "labels_image": image.new_img_like(data["maps_image"], labels.astype(np.int32)),
        "mask": data["mask"],
        "img": data["img"],
        "dim": data["dim"],
        "summary": pd.DataFrame(
            {
                "map": shown,
                "voxels with positive weight": [
                    int(np.count_nonzero(maps[..., i] > 0)) for i in shown
                ],
            }
        ),
        "number_of_regions": n_maps,
    }
