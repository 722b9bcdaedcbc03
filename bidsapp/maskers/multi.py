"""MultiNiftiLabelsMasker and MultiNiftiMapsMasker: the maskers for several images.

Each takes its single-image masker's parameters plus ``n_jobs``; ``transform`` of a list
extracts each image (in parallel with joblib) through the same functions as the
single-image masker (:class:`_MultiImages`, shared by both). Part of the numerical core,
maskers layer.
"""

from __future__ import annotations

from joblib import Parallel, delayed
from sklearn.utils.validation import check_is_fitted

from bidsapp.maskers.inputs import NIIMG_TYPES, header_img, with_high_variance
from bidsapp.maskers.labels import NiftiLabelsMasker
from bidsapp.maskers.maps import NiftiMapsMasker

__all__ = ["MultiNiftiLabelsMasker", "MultiNiftiMapsMasker"]


class _MultiImages:
    """``transform`` of one image or a list, for a single-image masker with ``n_jobs``.

    The masker provides ``_extract(img, confounds, sample_mask,
    items_3d)`` returning ``(signals, column ids, atlas)``, ``_record_columns`` and
    ``_high_variance_confounds``.
    """

    def transform_imgs(self, imgs_list, confounds=None, n_jobs=1, sample_mask=None):
        """Extract region signals from each image of a list.

        Parameters
        ----------
        imgs_list : list of niimg-like
            3D or 4D images sharing one grid.
        confounds : list, optional
            One confounds entry (array, DataFrame, path, list or None) per image.
        n_jobs : int, default=1
            Number of images processed in parallel (joblib).
        sample_mask : list, optional
            One sample mask (or None) per image.

        Returns
        -------
        list of numpy.ndarray
            Region signals of each image.

        """
        check_is_fitted(self)
        if isinstance(imgs_list, NIIMG_TYPES):
            raise TypeError(
                "'imgs_list' must be a list of images; got a single image "
                f"({type(imgs_list).__name__}). Use transform() for one image."
            )
        header_img(imgs_list, name="imgs_list")
        n_imgs = len(imgs_list)
        confounds = self._per_image(confounds, n_imgs, "confounds")
        sample_mask = self._per_image(sample_mask, n_imgs, "sample_mask")
        if self.high_variance_confounds:
            confounds = [
                with_high_variance(c, self._high_variance_confounds(img), first=False)
                for img, c in zip(imgs_list, confounds, strict=True)
            ]
        results = Parallel(n_jobs=n_jobs)(
            delayed(self._extract)(img, conf, mask, items_3d=False)
            for img, conf, mask in zip(imgs_list, confounds, sample_mask, strict=True)
        )
        if results:
            self._record_columns(results[-1][1], results[-1][2])
        return [signals for signals, _, _ in results]

    @staticmethod
    def _per_image(values, n_imgs: int, name: str) -> list:
        if values is None:
            return [None] * n_imgs
        if len(values) != n_imgs:
            raise ValueError(
                f"number of {name} ({len(values)}) unequal to number of images ({n_imgs})."
            )
        return list(values)

    def transform(self, imgs, confounds=None, sample_mask=None):
        """Extract region signals from one image or each image of a list.

        Parameters
        ----------
        imgs : niimg-like or list of niimg-like
            One image, or a list of images sharing one grid.
        confounds : list, optional
            One confounds entry per image.
        sample_mask : list, optional
            One sample mask per image.

        Returns
        -------
        numpy.ndarray or list of numpy.ndarray
            An array for a single image, a list of arrays for a list.

        """
        check_is_fitted(self)
        for name, value in (("confounds", confounds), ("sample_mask", sample_mask)):
            if not (value is None or isinstance(value, list)):
                raise TypeError(f"'{name}' must be a None or a list. Got {type(value).__name__}.")
        if isinstance(imgs, NIIMG_TYPES):
            return super().transform(
                imgs,
                confounds=confounds[0] if isinstance(confounds, list) else confounds,
                sample_mask=sample_mask[0] if isinstance(sample_mask, list) else sample_mask,
            )
        return self.transform_imgs(
            imgs, confounds=confounds, sample_mask=sample_mask, n_jobs=self.n_jobs
        )

    def fit_transform(self, imgs, y=None, confounds=None, sample_mask=None):
        """Fit on ``imgs`` and extract their region signals.

        Parameters
        ----------
        imgs : niimg-like or list of niimg-like
            One image, or a list of images sharing one grid.
        y : None
            Ignored; present for scikit-learn compatibility.
        confounds : list, optional
            One confounds entry per image.
        sample_mask : list, optional
            One sample mask per image.

        Returns
        -------
        numpy.ndarray or list of numpy.ndarray
            An array for a single image, a list of arrays for a list.

        """
        return self.fit(imgs, y=y).transform(imgs, confounds=confounds, sample_mask=sample_mask)


class MultiNiftiLabelsMasker(_MultiImages, NiftiLabelsMasker):
    """Extract region signals from several images (e.g. runs or subjects).

    Takes the parameters of :class:`NiftiLabelsMasker`, plus:

    Parameters
    ----------
    n_jobs : int, default=1
        Number of images processed in parallel by ``transform`` (joblib;
        -1 means all CPUs).

    Notes
    -----
    ``transform`` of a list returns a list of arrays, one per image;
    ``confounds`` and ``sample_mask`` are then lists with one entry per image.

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
        n_jobs=1,
        clean_args=None,
        **kwargs,
    ):
        self.n_jobs = n_jobs
        super().__init__(
            labels_img=labels_img,
            labels=labels,
            lut=lut,
            background_label=background_label,
            mask_img=mask_img,
            smoothing_fwhm=smoothing_fwhm,
            standardize=standardize,
            standardize_confounds=standardize_confounds,
            high_variance_confounds=high_variance_confounds,
            detrend=detrend,
            low_pass=low_pass,
            high_pass=high_pass,
            t_r=t_r,
            dtype=dtype,
            resampling_target=resampling_target,
            memory=memory,
            memory_level=memory_level,
            verbose=verbose,
            strategy=strategy,
            keep_masked_labels=keep_masked_labels,
            reports=reports,
            cmap=cmap,
            clean_args=clean_args,
            **kwargs,
        )


class MultiNiftiMapsMasker(_MultiImages, NiftiMapsMasker):
    """Extract map signals from several images (e.g. runs or subjects).

    Takes the parameters of :class:`~bidsapp.maskers.NiftiMapsMasker`, plus:

    Parameters
    ----------
    n_jobs : int, default=1
        Number of images processed in parallel by ``transform`` (joblib; -1 means all
        CPUs).

    Notes
    -----
    ``transform`` of a list returns a list of arrays, one per image; ``confounds`` and
    ``sample_mask`` are then lists with one entry per image.
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
        n_jobs=1,
        clean_args=None,
        **kwargs,
    ):
        self.n_jobs = n_jobs
        super().__init__(
            maps_img=maps_img,
            mask_img=mask_img,
            allow_overlap=allow_overlap,
            smoothing_fwhm=smoothing_fwhm,
            standardize=standardize,
            standardize_confounds=standardize_confounds,
            high_variance_confounds=high_variance_confounds,
            detrend=detrend,
            low_pass=low_pass,
            high_pass=high_pass,
            t_r=t_r,
            dtype=dtype,
            resampling_target=resampling_target,
            keep_masked_maps=keep_masked_maps,
            memory=memory,
            memory_level=memory_level,
            verbose=verbose,
            reports=reports,
            cmap=cmap,
            clean_args=clean_args,
            **kwargs,
        )
