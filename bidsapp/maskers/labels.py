"""NiftiLabelsMasker: one signal per region of a labels image, nilearn 0.12.1-compatible.

The estimator is a facade: ``fit`` checks its parameters (:mod:`.settings`) and fits the
atlas (:func:`.fitting.fit_labels`); each transform is :func:`.pipeline.stream_fitted`
followed by :func:`.pipeline.clean_streamed`, the functions
:func:`bidsapp.maskers.extract_labels_signals` runs for several atlases. Part of the
numerical core, maskers layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from bidsapp import regions
from bidsapp.maskers.base import LabelsEstimator, cached
from bidsapp.maskers.fitting import FittedLabels, fit_labels, log
from bidsapp.maskers.inputs import image_high_variance_confounds, with_high_variance
from bidsapp.maskers.lut import lut_for_columns
from bidsapp.maskers.pipeline import clean_streamed, stream_fitted
from bidsapp.maskers.settings import LabelsSettings, check_settings

__all__ = ["NiftiLabelsMasker"]


class NiftiLabelsMasker(LabelsEstimator):
    """Extract one signal per region of a labels (parcellation) image.

    Parameters
    ----------
    labels_img : str, pathlib.Path or nibabel image, default=None
        3D image of integer region labels (required at ``fit``).
    labels : list of str, optional
        Region names in increasing label-value order, optionally starting
        with "Background"; padded with "unknown" or truncated to the number
        of labels in the image. Mutually exclusive with ``lut``.
    lut : pandas.DataFrame, str or pathlib.Path, optional
        Look-up table with ``index`` (label value) and ``name`` columns, or
        the path of a BIDS ``dseg.tsv`` file holding one.
    background_label : int or float, default=0
        Label value meaning "no region".
    mask_img : str, pathlib.Path or nibabel image, optional
        Mask (3D, or 4D reduced with "all volumes nonzero"); only voxels
        inside it contribute to region signals.
    smoothing_fwhm : float, optional
        Full width at half maximum (mm) of a Gaussian kernel applied to the
        images before extraction.
    standardize : {False, True, "zscore", "zscore_sample", "psc"}, default=False
        How region signals are standardized (see :func:`bidsapp.signal.clean`).
    standardize_confounds : bool, default=True
        Z-score confounds before regressing them out.
    high_variance_confounds : bool, default=False
        Also regress out 5 high-variance confounds computed on all voxels of
        each image (2 % highest-variance voxels).
    detrend : bool, default=False
        Remove a linear trend from region signals.
    low_pass : float, optional
        Low-pass cutoff (Hz); needs ``t_r``.
    high_pass : float, optional
        High-pass cutoff (Hz); needs ``t_r``.
    t_r : float, optional
        Repetition time (seconds).
    dtype : numpy dtype or "auto", optional
        Cast image data to this dtype before processing; "auto" gives int32
        for signed-integer data and float32 otherwise.
    resampling_target : {"data", "labels", None}, default="data"
        Which grid signals are extracted on: "data" resamples labels and mask
        to each image (nearest neighbour); "labels" resamples mask and images
        to the labels image (images with cubic splines); None resamples
        nothing and requires matching grids.
    memory : joblib.Memory, str or pathlib.Path, optional
        Cache for resampling and extraction (a directory path or a Memory).
    memory_level : int, default=1
        1 caches each image's whole extraction; 2 also caches each step.
    verbose : int, default=0
        If positive, log progress at INFO level (DEBUG otherwise).
    strategy : str, default="mean"
        One of "mean", "median", "sum", "minimum", "maximum", "variance",
        "standard_deviation": how voxel values are combined per region.
    keep_masked_labels : bool, default=True
        Keep regions entirely outside ``mask_img`` as all-zero columns
        (deprecated, as in nilearn 0.12.1: a DeprecationWarning is issued at
        each transform); False drops them.
    reports : bool, default=True
        Keep what a report needs (``_reporting_data``) after ``fit``.
    cmap : str, default="CMRmap_r"
        Colormap for report figures.
    clean_args : dict, optional
        Extra keyword arguments for :func:`bidsapp.signal.clean` (e.g.
        ``{"filter": "cosine"}`` or ``{"butterworth__padtype": "even"}``).
    **kwargs
        Deprecated: ``clean__<name>=value`` passes ``<name>`` to
        :func:`bidsapp.signal.clean`; other names are ignored. Cannot be
        combined with ``clean_args``.

    Attributes
    ----------
    labels_img_ : nibabel.Nifti1Image
        Labels image used for extraction (resampled to the data at ``fit``
        when ``resampling_target="data"`` and images are given).
    mask_img_ : nibabel.Nifti1Image or None
        Binary mask on the same grid, if a mask was given.
    lut_ : pandas.DataFrame
        Look-up table (``index``, ``name``) of the labels in the image.
    clean_args_ : dict
        Keyword arguments passed to :func:`bidsapp.signal.clean`.
    memory_ : joblib.Memory
        The cache in use.
    region_atlas_ : nibabel.Nifti1Image
        After ``transform``: the labels image after masking, on the grid of
        the last transformed image.

    """

    def __init__(
        self,
        labels_img=None,
        labels=None,
        lut=None,
        background_label=0,
        mask_img=None,
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
        memory=None,
        memory_level=1,
        verbose=0,
        strategy="mean",
        keep_masked_labels=True,
        reports=True,
        cmap="CMRmap_r",
        clean_args=None,
        **kwargs,
    ):
        self.labels_img = labels_img
        self.labels = labels
        self.lut = lut
        self.background_label = background_label
        self.mask_img = mask_img
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
        self.memory = memory
        self.memory_level = memory_level
        self.verbose = verbose
        self.strategy = strategy
        self.keep_masked_labels = keep_masked_labels
        self.reports = reports
        self.cmap = cmap
        self.clean_args = clean_args
        self.clean_kwargs = kwargs

    # -- fitted-state helpers ------------------------------------------------

    # -- fitted-state helpers ------------------------------------------------

    def __sklearn_is_fitted__(self) -> bool:
        """Tell scikit-learn whether ``fit`` has been called."""
        return hasattr(self, "labels_img_") and hasattr(self, "lut_")

    def _check_fitted(self) -> None:
        check_is_fitted(self)

    def _log(self, message: str, *args: Any) -> None:
        log(self._settings, message, *args)

    @property
    def _current_lut(self) -> pd.DataFrame:
        # After a transform, rows follow the extracted columns.
        return self._lut_ if hasattr(self, "_lut_") else self.lut_

    @property
    def labels_(self) -> list:
        """Label values (background included if present), in column order."""
        self._check_fitted()
        return self._current_lut["index"].to_list()

    @property
    def region_ids_(self) -> dict:
        """Column index -> label value; ``"background"`` -> background label."""
        self._check_fitted()
        index = self.labels_
        ids: dict = {}
        if self.background_label in index:
            index.pop(index.index(self.background_label))
            ids["background"] = self.background_label
        ids.update(enumerate(index))
        return ids

    @property
    def region_names_(self) -> dict:
        """Column index -> region name (background excluded)."""
        self._check_fitted()
        valid = [v for v in self.labels_ if v != self.background_label]
        names = self.lut_[self.lut_["index"].isin(valid)]["name"]
        return names.reset_index(drop=True).to_dict()

    @property
    def n_elements_(self) -> int:
        """Number of regions (columns of ``transform``'s output)."""
        self._check_fitted()
        lut = self._current_lut
        return int((lut["index"] != self.background_label).sum())

    # -- fit ------------------------------------------------------------------

    # -- fit ------------------------------------------------------------------

    def _check_settings(self) -> LabelsSettings:
        """Check the parameters; return the settings an extraction uses."""
        params = self.get_params(deep=False)
        for name in self.clean_kwargs:
            params.pop(name)
        return check_settings(params, self.clean_kwargs, type(self).__name__)

    def fit(self, imgs=None, y=None):
        """Load the labels (and mask) and resample them as required.

        Parameters
        ----------
        imgs : niimg-like or list of niimg-like, optional
            Images the masker will transform: with
            ``resampling_target="data"`` labels and mask are resampled to
            their grid now rather than at each transform.
        y : None
            Ignored; present for scikit-learn compatibility.

        Returns
        -------
        self
            The fitted masker.

        """
        del y
        settings = self._check_settings()
        fitted = fit_labels(
            self.labels_img, self.mask_img, self.lut, settings, imgs, type(self).__name__
        )
        return self._adopt(settings, fitted)

    def _adopt(self, settings: LabelsSettings, fitted: FittedLabels):
        """Take the fitted state (what ``fit`` computed, or what an extraction did)."""
        self._settings = settings
        self._fitted = fitted
        self.clean_kwargs_ = settings.forwarded_kwargs
        self.clean_args_ = settings.clean_args
        self.memory_ = settings.memory
        self.lut_ = fitted.lut
        self.labels_img_ = fitted.labels_img
        self.mask_img_ = fitted.mask_img
        for stale in ("_lut_", "region_atlas_"):
            self.__dict__.pop(stale, None)
        self._reporting_data = fitted.reporting_data
        return self

    # -- transform --------------------------------------------------------------

    def _extract(self, imgs, confounds=None, sample_mask=None, items_3d=True):
        """Extract one image without changing the masker's state."""
        streamed = stream_fitted(imgs, [self._fitted], self._settings, confounds, items_3d=items_3d)
        (signals,) = clean_streamed(streamed, sample_mask)
        return signals, streamed.region_ids[0], streamed.atlases[0]

    def _high_variance_confounds(self, imgs) -> np.ndarray:
        settings = self._settings
        return cached(image_high_variance_confounds, settings.memory, 1, settings.memory_level)(
            imgs
        )

    def _record_columns(self, ids: list, atlas) -> None:
        """Remember which regions the last transform returned, in column order."""
        self._lut_ = lut_for_columns(
            self.lut_, ids, self._fitted.background_present, self.background_label
        )
        self.region_atlas_ = atlas

    def transform_single_imgs(self, imgs, confounds=None, sample_mask=None):
        """Extract region signals from one 3D or 4D image.

        Parameters
        ----------
        imgs : niimg-like or list of 3D niimg-like
            A 4D image (or a list of 3D volumes forming one); a 3D image
            gives a 1D output.
        confounds : array, DataFrame, path, or list of those, optional
            Confounds to regress out, one row per volume.
        sample_mask : array of int or bool, optional
            Volumes to keep (indices or a boolean mask).

        Returns
        -------
        numpy.ndarray
            ``(n_volumes, n_regions)`` (or ``(n_regions,)`` for a 3D image).

        """
        self._check_fitted()
        signals, ids, atlas = self._extract(imgs, confounds, sample_mask)
        self._record_columns(ids, atlas)
        return signals

    def transform(self, imgs, confounds=None, sample_mask=None):
        """Extract region signals, regressing out confounds if given.

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
            ``(n_volumes, n_regions)`` (or ``(n_regions,)`` for a 3D image).

        """
        self._check_fitted()
        if self.high_variance_confounds:
            hv_confounds = self._high_variance_confounds(imgs)
            confounds = with_high_variance(confounds, hv_confounds, first=True)
        return self.transform_single_imgs(imgs, confounds=confounds, sample_mask=sample_mask)

    def fit_transform(self, imgs, y=None, confounds=None, sample_mask=None):
        """Fit on ``imgs`` and extract their region signals.

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
            ``(n_volumes, n_regions)`` (or ``(n_regions,)`` for a 3D image).

        """
        del y
        return self.fit(imgs).transform(imgs, confounds=confounds, sample_mask=sample_mask)

    def generate_report(self) -> Any:
        """Return an HTML report of the fitted masker: regions over the image, region sizes.

        Returns
        -------
        bidsapp.report.html.HTMLReport
            Has ``save_as_html(path)`` and ``_repr_html_()`` (shown inline in notebooks);
            empty, with a warning, when the masker was built with ``reports=False`` or is
            not fitted.
        """
        from bidsapp.report.masker import generate_masker_report

        return generate_masker_report(self)

    def inverse_transform(self, signals):
        """Build an image from region signals (each region's voxels get its signal).

        Parameters
        ----------
        signals : numpy.ndarray
            ``(n_volumes, n_regions)`` or ``(n_regions,)``, columns as
            returned by ``transform``.

        Returns
        -------
        nibabel.Nifti1Image
            4D (or 3D for 1D signals) image on the labels grid; voxels outside
            the mask and the regions are 0.

        """
        self._check_fitted()
        signals = np.atleast_1d(np.asarray(signals))
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
        ids = [v for v in self.labels_ if v != self.background_label]
        return regions.signals_to_img(
            signals,
            self.labels_img_,
            self.mask_img_,
            background_label=self.background_label,
            region_ids=ids,
        )

    def set_output(self, *, transform=None):
        """Not implemented: transform always returns numpy arrays.

        Raises
        ------
        NotImplementedError
            Always.

        """
        raise NotImplementedError(f"{type(self).__name__} always returns numpy arrays.")
