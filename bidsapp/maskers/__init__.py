"""Labels maskers: region signals from NIfTI images, nilearn-compatible.

:class:`NiftiLabelsMasker` and :class:`MultiNiftiLabelsMasker` take the same
parameters as nilearn 0.12.1's classes of the same name and give the same
signals and fitted attributes. They follow scikit-learn's estimator contract:
``__init__`` only stores parameters, ``fit`` validates them and sets
attributes ending in ``_``, inputs are never modified. When scikit-learn is
installed the maskers derive from its ``BaseEstimator`` and
``TransformerMixin`` (so ``clone``, ``Pipeline`` and metadata routing work);
it is not required.

Per image, ``transform`` does: resample labels/mask to the data grid
(``resampling_target="data"``, nearest neighbour) or the data to the labels
grid (``"labels"``, cubic spline) -> optional Gaussian smoothing -> non-finite
values to 0 -> one value per region and volume (:mod:`bidsapp.regions`) ->
:func:`bidsapp.signal.clean` on the region signals. The steps before cleaning
run volume by volume in one streaming pass (:mod:`bidsapp.engine`): a
``.nii.gz`` is inflated once and the 4D array is never held in memory.

:func:`extract_labels_signals` gives, for several atlases in one pass over the
image, what one masker per atlas gives.
"""

from __future__ import annotations

import inspect
import logging
from collections import defaultdict
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from joblib import Memory, Parallel, delayed
from nibabel.spatialimages import SpatialImage

from bidsapp import engine, image, regions, stream
from bidsapp.errors import warn
from bidsapp.signal import clean, high_variance_confounds

logger = logging.getLogger(__name__)

try:  # scikit-learn is optional: use its base classes when it is installed.
    from sklearn.base import BaseEstimator as _SklearnEstimator
    from sklearn.base import TransformerMixin as _SklearnTransformer
    from sklearn.exceptions import NotFittedError

    _ESTIMATOR_BASES: tuple[type, ...] = (_SklearnTransformer, _SklearnEstimator)
    # transform always returns arrays (set_output is not supported): do not
    # let scikit-learn wrap transform/fit_transform to convert their output.
    _CLASS_OPTIONS: dict[str, Any] = {"auto_wrap_output_keys": None}
except ImportError:  # pragma: no cover - exercised only without scikit-learn

    class NotFittedError(ValueError, AttributeError):
        """A masker was used before ``fit`` was called."""

    _ESTIMATOR_BASES = ()
    _CLASS_OPTIONS = {}

__all__ = [
    "LabelsExtraction",
    "LabelsSignals",
    "MultiNiftiLabelsMasker",
    "NiftiLabelsMasker",
    "NotFittedError",
    "RawLabelsSignals",
    "extract_labels_signals",
    "stream_labels_signals",
]

_NIIMG_TYPES = (str, Path, SpatialImage)
_NUMBER = (int, float, np.integer, np.floating)
_BOOL = (bool, np.bool_)

# Parameters whose type nilearn checks in ``fit`` (nilearn._utils.param_validation).
_PARAM_TYPES: dict[str, tuple[tuple[type, ...], bool, str]] = {
    # name: (accepted types, None allowed, description)
    "detrend": (_BOOL, False, "bool"),
    "standardize_confounds": (_BOOL, False, "bool"),
    "keep_masked_labels": (_BOOL, False, "bool"),
    "high_pass": (_NUMBER, True, "a number (Hz) or None"),
    "low_pass": (_NUMBER, True, "a number (Hz) or None"),
    "t_r": (_NUMBER, True, "a number (seconds) or None"),
    "smoothing_fwhm": (_NUMBER, True, "a number (mm) or None"),
    "memory": ((Memory, str, Path), True, "a joblib.Memory, a cache directory path or None"),
    "memory_level": ((int, np.integer), False, "an int"),
    "verbose": ((int, np.integer), False, "an int"),
    "n_jobs": ((int, np.integer), False, "an int"),
}


# ---------------------------------------------------------------------------
# Estimator plumbing
# ---------------------------------------------------------------------------


class _ParamsMixin:
    """``get_params``/``set_params`` read from the ``__init__`` signature.

    Deprecated ``clean__*`` keyword arguments (stored in ``clean_kwargs``) are
    reported by ``get_params`` too, so that cloning keeps them.
    """

    @classmethod
    def _get_param_names(cls) -> list[str]:
        """Return the sorted names of the ``__init__`` parameters."""
        init = cls.__init__
        if init is object.__init__:
            return []
        names = []
        for param in inspect.signature(init).parameters.values():
            if param.name == "self" or param.kind == param.VAR_KEYWORD:
                continue
            if param.kind == param.VAR_POSITIONAL:
                raise RuntimeError(
                    f"{cls.__name__}.__init__ must not take *args: estimator "
                    "parameters have to be named."
                )
            names.append(param.name)
        return sorted(names)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Return the estimator's parameters.

        Parameters
        ----------
        deep : bool, default=True
            Also return the parameters of parameters that are estimators,
            as ``<parameter>__<name>``.

        Returns
        -------
        dict
            Parameter names mapped to their values (the stored objects).

        """
        params: dict[str, Any] = {}
        for name in self._get_param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                params.update({f"{name}__{k}": v for k, v in value.get_params().items()})
            params[name] = value
        params.update(getattr(self, "clean_kwargs", None) or {})
        return params

    def set_params(self, **params: Any):
        """Set parameters (``<parameter>__<name>`` reaches nested estimators).

        Parameters
        ----------
        **params : dict
            Parameter names and new values. Deprecated ``clean__*`` names are
            stored with the other deprecated keyword arguments.

        Returns
        -------
        self
            The estimator.

        Raises
        ------
        ValueError
            If a name is not a parameter of this estimator.

        """
        valid = self.get_params(deep=True)
        nested: dict[str, dict[str, Any]] = defaultdict(dict)
        for key, value in params.items():
            if key.startswith("clean__") and hasattr(self, "clean_kwargs"):
                self.clean_kwargs = {**self.clean_kwargs, key: value}
                continue
            name, delim, sub_name = key.partition("__")
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for estimator {type(self).__name__}. "
                    f"Valid parameters are: {self._get_param_names()!r}."
                )
            if delim:
                nested[name][sub_name] = value
            else:
                setattr(self, name, value)
                valid[name] = value
        for name, sub_params in nested.items():
            valid[name].set_params(**sub_params)
        return self

    if not _ESTIMATOR_BASES:  # pragma: no cover - scikit-learn provides its own repr

        def __repr__(self) -> str:
            defaults = {
                p.name: p.default
                for p in inspect.signature(type(self).__init__).parameters.values()
            }
            changed = [
                f"{k}={v!r}"
                for k, v in self.get_params(deep=False).items()
                if k not in defaults or repr(v) != repr(defaults[k])
            ]
            return f"{type(self).__name__}({', '.join(changed)})"


def _check_memory(memory: Any) -> Memory:
    """Return a joblib Memory for a Memory, a cache directory path, or None."""
    if memory is None:
        return Memory(location=None, verbose=0)
    if isinstance(memory, Memory):
        return memory
    path = Path(memory).expanduser()
    if not path.parent.exists():
        raise ValueError(
            f"'memory': the parent directory of the cache directory '{memory}' does "
            "not exist; create it or pass another path."
        )
    return Memory(location=str(path), verbose=0)


def _cached(func, memory: Memory, func_level: int, memory_level: int, **kwargs):
    """Wrap ``func`` in ``memory.cache`` when the memory level asks for it."""
    if memory.location is not None and memory_level >= func_level:
        return memory.cache(func, **kwargs)
    return func


# ---------------------------------------------------------------------------
# Look-up table (region names), as nilearn 0.12.1 builds it
# ---------------------------------------------------------------------------


def _read_lut(lut: Any) -> pd.DataFrame:
    """Return a copy of a look-up table given as a DataFrame or a TSV path."""
    if isinstance(lut, (str, Path)):
        if not Path(lut).exists():
            raise FileNotFoundError(f"'lut': file not found: '{lut}'")
        table = pd.read_csv(lut, sep=None, engine="python")
    elif isinstance(lut, pd.DataFrame):
        table = lut.copy()
    else:
        raise TypeError(
            "'lut' must be a pandas DataFrame or a path to a dseg.tsv file with "
            f"'index' and 'name' columns; got {type(lut).__name__}."
        )
    missing = {"index", "name"} - set(table.columns)
    if missing:
        raise ValueError(
            f"'lut' must have 'index' and 'name' columns; missing {sorted(missing)} "
            f"(columns: {list(table.columns)})."
        )
    return table


def _names_from_labels(labels: list[str], present: list, background_label) -> list[str]:
    """Align a list of region names with the label values of the image."""
    names = ["Background" if n == "background" else n for n in labels]
    if background_label in present and "Background" not in names:
        names.insert(present.index(background_label), "Background")
    if len(names) < len(present):
        warn("Too many indices for the names. Padding 'names' with 'unknown'.")
        names += ["unknown"] * (len(present) - len(names))
    elif len(names) > len(present):
        warn("Too many names for the indices. Dropping excess names values.")
        names = names[: len(present)]
    return names


def _build_lut(
    present: list, background_label, lut: Any = None, labels: Any = None
) -> pd.DataFrame:
    """Build the look-up table (``index``, ``name``) of a labels image.

    ``present`` lists the label values found in the image (sorted). Rows for
    values absent from the image are dropped, values missing from the table
    are named "unknown", and the background row (if the background is in
    the image) is named "Background".
    """
    has_background = background_label in present
    if lut is not None:
        table = _read_lut(lut)
    elif labels:
        table = pd.DataFrame(
            {"index": present, "name": _names_from_labels(labels, present, background_label)}
        )
    else:
        names = [
            "Background" if has_background and v == background_label else str(v) for v in present
        ]
        table = pd.DataFrame({"index": present, "name": names})
    table = table[table["index"].isin(present)]
    known = set(table["index"].to_list())
    missing = [v for v in present if v not in known]
    if missing:
        table = pd.concat(
            [table, pd.DataFrame({"name": ["unknown"] * len(missing), "index": missing})],
            ignore_index=True,
        )
    is_background = table["index"] == background_label
    table = table.astype({"name": object})
    table.loc[is_background, "name"] = "Background"
    return table.sort_values("index").reset_index(drop=True)


def _lut_for_columns(lut: pd.DataFrame, ids: list, background_present: bool, background_label):
    """Reorder the look-up table rows to follow the extracted columns."""
    order = [background_label, *ids] if background_present else list(ids)
    table = lut[lut["index"].isin(order)]
    known = set(table["index"].to_list())
    missing = [v for v in order if v not in known]
    if missing:
        table = pd.concat(
            [table, pd.DataFrame({"name": ["unknown"] * len(missing), "index": missing})],
            ignore_index=True,
        )
    return table.set_index("index").loc[order].reset_index()


def _finite_labels(labels_data: np.ndarray) -> np.ndarray:
    """Labels with non-finite values set to 0, as the extraction sees them (no warning)."""
    labels_data = np.asarray(labels_data)
    if labels_data.dtype.kind in "fc" and not np.isfinite(labels_data).all():
        return np.where(np.isfinite(labels_data), labels_data, 0)
    return labels_data


def _region_size_table(lut, labels_data, affine, background_label) -> pd.DataFrame:
    """Tabulate each region's size (mm^3) and share of all labelled voxels (%).

    Non-finite label values count as 0, as the extraction zeroes them (nilearn 0.12.1's
    ``safe_get_data(ensure_finite=True)``); their look-up-table rows have no size.
    """
    labels_data = _finite_labels(labels_data)
    table = lut[["index", "name"]].copy()
    table = table[np.isfinite(pd.to_numeric(table["index"], errors="coerce"))]
    values, counts = np.unique(labels_data.astype(np.int32), return_counts=True)
    size_of = dict(zip(values.tolist(), counts.tolist(), strict=True))
    voxel_volume = abs(np.linalg.det(affine[:3, :3]))
    n_labelled = int(np.sum(labels_data.astype(np.int32) != background_label)) or 1
    sizes = [size_of.get(int(v), 0) for v in table["index"]]
    table = table.assign(
        index=table["index"].astype(int),
        **{
            "size (in mm^3)": [round(s * voxel_volume) for s in sizes],
            "relative size (in %)": [round(s / n_labelled * 100, 2) for s in sizes],
        },
    ).rename(columns={"name": "region name", "index": "label value"})
    return table[table["label value"] != background_label].reset_index(drop=True)


# ---------------------------------------------------------------------------
# Input helpers
# ---------------------------------------------------------------------------


def _header_img(imgs: Any, name: str = "imgs", items_3d: bool = False) -> SpatialImage:
    """Return the (lazily loaded) image giving the grid of ``imgs``.

    For a list, all images must share a grid; ``items_3d`` requires each
    item to be 3D (a list is then one 4D series).
    """
    if isinstance(imgs, _NIIMG_TYPES):
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


def _n_volumes(imgs: Any, header: SpatialImage) -> int:
    """Return the number of volumes the extraction will see for ``imgs``."""
    if isinstance(imgs, _NIIMG_TYPES):
        return header.shape[3] if len(header.shape) == 4 else 1
    return len(imgs)


def _check_confounds_rows(confounds: Any, n_volumes: int, name: str) -> None:
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


def _image_high_variance_confounds(imgs: Any) -> np.ndarray:
    """Compute high-variance confounds from all voxels of a 4D image (nilearn defaults)."""
    img = image.check_niimg(imgs, ndim=4, name="imgs")
    data = image.get_data(img)
    series = np.reshape(data, (-1, data.shape[-1])).T
    return high_variance_confounds(series, n_confounds=5, percentile=2.0, detrend=True)


def _with_high_variance(confounds: Any, hv_confounds: np.ndarray, first: bool) -> list:
    """Return a new list of confounds with high-variance confounds added."""
    user = (
        [] if confounds is None else list(confounds) if isinstance(confounds, list) else [confounds]
    )
    return [hv_confounds, *user] if first else [*user, hv_confounds]


def _extract_signals(
    imgs: Any,
    labels_img: SpatialImage,
    mask_img: SpatialImage | None,
    *,
    background_label: float,
    strategy: str,
    keep_masked_labels: bool,
    target_affine: np.ndarray | None,
    target_shape: tuple | None,
    smoothing_fwhm: Any,
    dtype: Any,
    clean_params: dict,
    clean_kwargs: dict,
    confounds: Any,
    sample_mask: Any,
    memory: Memory,
    memory_level: int,
) -> tuple[np.ndarray, list, SpatialImage]:
    """Resample, smooth, reduce to regions (one streaming pass) and clean one image.

    Returns the region signals (1D for a 3D input image), the label value
    of each column, and the labels image after masking.
    """
    per_atlas, _, input_ndim, _ = _cached(_stream_signals, memory, 2, memory_level)(
        imgs,
        [(labels_img, mask_img)],
        background_label=background_label,
        strategy=strategy,
        keep_masked_labels=keep_masked_labels,
        target_affine=target_affine,
        target_shape=target_shape,
        smoothing_fwhm=smoothing_fwhm,
        dtype=dtype,
    )
    (raw, ids, atlas) = per_atlas[0]
    if mask_img is not None and not keep_masked_labels:
        _warn_removed_by_mask(labels_img, ids, background_label)
    with _one_blas_thread():
        signals = _cached(clean, memory, 2, memory_level)(
            raw,
            confounds=confounds,
            sample_mask=sample_mask,
            runs=None,
            **clean_params,
            **clean_kwargs,
        )
    if input_ndim == 3:
        signals = signals[0]
    return signals, ids, atlas


@contextmanager
def _one_blas_thread():
    """Run BLAS/LAPACK single-threaded (region signals are small matrices).

    On a busy machine a multi-threaded BLAS is much slower on ``(n_volumes x n_regions)``
    matrices than one thread (pivoted QR of 300 x 37: ~130 ms against 0.2 ms measured on
    two shared cores). Uses threadpoolctl when it is installed; otherwise does nothing.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _stream_signals(
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

    Labels and masks must be on the extraction grid: the image's, or the target grid
    when resampling. Returns, per pair, the raw signals ``(n_volumes, n_regions)``, the
    label value of each column and the masked labels image; the mean volume of the
    image when ``mean_volume`` (else None); the input's dimensionality (3 for one
    3D image, else 4); and the fraction of non-finite voxels of each volume
    (:attr:`bidsapp.engine.StreamedSignals.non_finite_fraction`). A path is loaded once
    (loading a ``.nii.gz`` header can cost tens of milliseconds when nibabel uses
    indexed_gzip).
    """
    if isinstance(imgs, _NIIMG_TYPES):
        imgs = image.load_img(imgs, name="imgs")
        header, input_ndim = imgs, len(imgs.shape)
    else:
        header, input_ndim = _header_img(imgs, name="imgs"), 4
    reference = None if target_affine is not None else header
    built = [
        regions.labels_reducer(
            labels_img,
            mask_img,
            reference=reference,
            background_label=background_label,
            strategy=strategy,
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


def _warn_removed_by_mask(labels_img: SpatialImage, ids: list, background_label) -> None:
    """Warn about regions dropped because they lie entirely outside the mask."""
    before = set(np.unique(image.safe_get_data(labels_img, ensure_finite=True)).tolist())
    before.discard(background_label)
    removed = before - set(np.asarray(ids).tolist())
    if removed:
        warn(
            "After applying mask to the labels image, the following labels were "
            f"removed: {sorted(removed)}. Out of {len(before)} regions, the masked "
            f"labels image only contains {len(ids)} regions."
        )


# ---------------------------------------------------------------------------
# The maskers
# ---------------------------------------------------------------------------


class NiftiLabelsMasker(_ParamsMixin, *_ESTIMATOR_BASES, **_CLASS_OPTIONS):
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

    def __sklearn_is_fitted__(self) -> bool:
        """Tell scikit-learn whether ``fit`` has been called."""
        return hasattr(self, "labels_img_") and hasattr(self, "lut_")

    def _check_fitted(self) -> None:
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' "
                "with appropriate arguments before using this estimator."
            )

    def _log(self, message: str, *args: Any) -> None:
        logger.log(logging.INFO if self.verbose else logging.DEBUG, message, *args)

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

    def _check_parameters(self) -> None:
        """Validate parameter types and values (nilearn's checks, clearer messages)."""
        for name, (types, none_ok, description) in _PARAM_TYPES.items():
            if not hasattr(self, name):
                continue
            value = getattr(self, name)
            if (value is None and none_ok) or (value is not None and isinstance(value, types)):
                continue
            raise TypeError(
                f"'{name}' should be {description}; got {value!r} ({type(value).__name__})."
            )
        regions.check_strategy(self.strategy)
        if self.resampling_target not in ("data", "labels", None):
            raise ValueError(
                "invalid value for 'resampling_target' parameter: "
                f"{self.resampling_target!r}; use 'data', 'labels' or None."
            )
        if self.labels and self.lut is not None:
            raise ValueError(
                "Pass either labels or a lookup table (lut) to the masker, but not both."
            )
        if self.labels:
            if not isinstance(self.labels, list):
                raise TypeError(f"'labels' must be a list. Got: {type(self.labels).__name__}")
            if not all(isinstance(x, str) for x in self.labels):
                kinds = sorted({type(x).__name__ for x in self.labels})
                raise TypeError(f"All elements of 'labels' must be a string; got types {kinds}.")

    def _forwarded_clean_kwargs(self) -> dict:
        """Return the deprecated ``clean__*`` keyword arguments, prefix removed."""
        if not self.clean_kwargs:
            return {}
        warn(
            f"You passed some kwargs to {type(self).__name__}: {sorted(self.clean_kwargs)}. "
            "This behavior is deprecated (as in nilearn 0.12.1): use 'clean_args' "
            "instead. Only 'clean__'-prefixed arguments are passed to signal.clean.",
            DeprecationWarning,
        )
        if self.clean_args:
            raise ValueError(
                "Passing arguments via 'kwargs' (clean__...) is mutually exclusive with "
                "using 'clean_args'; put them all in 'clean_args'."
            )
        return {
            k[len("clean__") :]: v for k, v in self.clean_kwargs.items() if k.startswith("clean__")
        }

    def _effective_memory_level(self) -> int:
        if self.memory_level == 0 and self.memory_.location is not None:
            warn(
                "memory_level is currently set to 0 but a Memory object has been "
                "provided: caching as with memory_level=1."
            )
            return 1
        return self.memory_level

    def _load_labels(self) -> SpatialImage:
        """Load, check and copy the labels image."""
        if self.labels_img is None:
            raise TypeError(
                "'labels_img' is None: give a 3D labels image (path or nibabel image) "
                f"to {type(self).__name__}."
            )
        img = image.check_niimg(self.labels_img, ndim=3, name="labels_img")
        data = np.array(image.get_data(img))
        regions.check_labels_values(data, name="labels_img")
        return image.new_img_like(img, data, img.affine.copy(), copy_header=True)

    def _load_mask(self) -> SpatialImage | None:
        """Load the mask as a 3D binary image (4D masks: all volumes nonzero)."""
        if self.mask_img is None:
            return None
        img = image.check_niimg(self.mask_img, atleast_4d=True, name="mask_img")
        mask = image.safe_get_data(img, ensure_finite=True).astype(bool).all(axis=3)
        mask_img = image.new_img_like(img, mask, img.affine.copy())
        _check_mask_not_empty(mask_img, "mask_img")
        return mask_img

    def _resample_labels(self, labels_img: SpatialImage, ref: SpatialImage) -> SpatialImage:
        """Resample labels to ``ref``'s grid, warning about labels lost on the way."""
        self._log("Resampling regions")
        before = set(np.unique(image.get_data(labels_img)).tolist())
        resampled = _cached(image.resample_img, self.memory_, 2, self._memory_level)(
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
                f"{len(after)} labels (including background)."
            )
        return resampled

    def _resample_mask(self, mask_img: SpatialImage, ref: SpatialImage) -> SpatialImage:
        self._log("Resampling mask")
        resampled = _cached(image.resample_img, self.memory_, 2, self._memory_level)(
            mask_img,
            interpolation="nearest",
            target_shape=ref.shape[:3],
            target_affine=ref.affine,
            copy_header=True,
        )
        _check_mask_not_empty(resampled, "mask_img (resampled)")
        return resampled

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
        self._check_parameters()
        self.clean_kwargs_ = self._forwarded_clean_kwargs()
        self.clean_args_ = {} if self.clean_args is None else dict(self.clean_args)
        self.memory_ = _check_memory(self.memory)
        self._memory_level = self._effective_memory_level()
        self._log("Loading regions from %r", self.labels_img)
        labels_img = self._load_labels()
        present = np.unique(image.get_data(labels_img)).tolist()
        lut = _build_lut(present, self.background_label, self.lut, self.labels)
        ref = None if imgs is None else _header_img(imgs, name="imgs")
        mask_img = self._load_mask()
        labels_img, mask_img = self._align_at_fit(labels_img, mask_img, ref)
        self.lut_ = lut
        self.labels_img_ = labels_img
        self.mask_img_ = mask_img
        # NaN/Inf labels become 0 when signals are extracted (nilearn's zeroing), so they
        # count as background when the background is 0, as in nilearn's region_ids_.
        self._background_present = self.background_label in set(
            np.unique(_finite_labels(image.get_data(labels_img))).tolist()
        )
        for stale in ("_lut_", "region_atlas_"):
            self.__dict__.pop(stale, None)
        self._reporting_data = self._make_reporting_data(imgs, ref) if self.reports else None
        self._log("Finished fit")
        return self

    def _align_at_fit(self, labels_img, mask_img, ref):
        """Check or resample labels and mask according to ``resampling_target``."""
        if self.resampling_target is None:
            named = {"labels": labels_img}
            if mask_img is not None:
                named["mask"] = mask_img
            if ref is not None:
                named["data"] = ref
            image.check_same_fov(named)
            return labels_img, mask_img
        if self.resampling_target == "data" and ref is not None:
            if not image.same_fov(ref, labels_img):
                labels_img = self._resample_labels(labels_img, ref)
        target = ref if self.resampling_target == "data" else labels_img
        if mask_img is not None and target is not None and not image.same_fov(target, mask_img):
            mask_img = self._resample_mask(mask_img, target)
        return labels_img, mask_img

    def _make_reporting_data(self, imgs, ref=None) -> dict:
        """Store what a report needs: images, and a table of region sizes."""
        data = {
            "labels_image": self.labels_img_,
            "mask": self.mask_img_,
            "dim": None,
            "img": None,
            "summary": _region_size_table(
                self.lut_,
                image.get_data(self.labels_img_),
                self.labels_img_.affine,
                self.background_label,
            ),
            "number_of_regions": self.n_elements_,
        }
        if imgs is not None:
            data["img"], data["dim"] = _middle_image(imgs, ref)
        return data

    # -- transform --------------------------------------------------------------

    def _grids_for(self, header: SpatialImage):
        """Labels and mask on the grid signals are extracted on, for one image."""
        labels_img, mask_img = self.labels_img_, self.mask_img_
        if self.resampling_target != "data":
            return labels_img, mask_img
        if not image.same_fov(header, labels_img):
            warn(
                "Resampling labels at transform time...\nTo avoid this warning, make sure "
                "to pass the images you want to transform to fit() first, or directly "
                "use fit_transform()."
            )
            labels_img = self._resample_labels(labels_img, header)
        if mask_img is not None and not image.same_fov(header, mask_img):
            warn(
                "Resampling mask at transform time...\nTo avoid this warning, make sure "
                "to pass the images you want to transform to fit() first, or directly "
                "use fit_transform()."
            )
            mask_img = self._resample_mask(mask_img, header)
        return labels_img, mask_img

    def _clean_params(self) -> dict:
        return {
            "detrend": self.detrend,
            "standardize": self.standardize,
            "standardize_confounds": self.standardize_confounds,
            "t_r": self.t_r,
            "low_pass": self.low_pass,
            "high_pass": self.high_pass,
        }

    def _extraction_grid(self, imgs, confounds=None, items_3d=True):
        """Check an image and its confounds; return labels, mask and target grid for it."""
        header = _header_img(imgs, name="imgs", items_3d=items_3d)
        _check_confounds_rows(confounds, _n_volumes(imgs, header), _describe_input(imgs))
        labels_img, mask_img = self._grids_for(header)
        target_affine = target_shape = None
        if self.resampling_target == "labels":
            target_affine, target_shape = labels_img.affine, labels_img.shape[:3]
        if self.keep_masked_labels:
            warn(
                "keep_masked_labels=True (the nilearn 0.12.1 default) keeps regions lying "
                "entirely outside mask_img as all-zero columns; this behaviour is "
                "deprecated. Pass keep_masked_labels=False to drop such regions.",
                DeprecationWarning,
            )
        return labels_img, mask_img, target_affine, target_shape

    def _stream_params(self) -> dict:
        """Parameters of the streaming pass (see :func:`_stream_signals`)."""
        return {
            "background_label": self.background_label,
            "strategy": self.strategy,
            "keep_masked_labels": self.keep_masked_labels,
            "smoothing_fwhm": self.smoothing_fwhm,
            "dtype": self.dtype,
        }

    def _extract(self, imgs, confounds=None, sample_mask=None, items_3d=True):
        """Extract one image without changing the masker's state."""
        labels_img, mask_img, target_affine, target_shape = self._extraction_grid(
            imgs, confounds, items_3d
        )
        self._log("Extracting region signals from %r", imgs)
        extract = _cached(
            _extract_signals,
            self.memory_,
            1,
            self._memory_level,
            ignore=["memory", "memory_level"],
        )
        return extract(
            imgs,
            labels_img,
            mask_img,
            target_affine=target_affine,
            target_shape=target_shape,
            clean_params=self._clean_params(),
            clean_kwargs=self._active_clean_kwargs(),
            confounds=confounds,
            sample_mask=sample_mask,
            memory=self.memory_,
            memory_level=self._memory_level,
            **self._stream_params(),
        )

    def _active_clean_kwargs(self) -> dict:
        # As nilearn: deprecated clean__ kwargs, when given, replace clean_args.
        return self.clean_kwargs_ if self.clean_kwargs else self.clean_args_

    def _record_columns(self, ids: list, atlas: SpatialImage) -> None:
        """Remember which regions the last transform returned, in column order."""
        self._lut_ = _lut_for_columns(
            self.lut_, ids, self._background_present, self.background_label
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
            hv = _cached(_image_high_variance_confounds, self.memory_, 1, self._memory_level)(imgs)
            confounds = _with_high_variance(confounds, hv, first=True)
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


class MultiNiftiLabelsMasker(NiftiLabelsMasker):
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
        self._check_fitted()
        if isinstance(imgs_list, _NIIMG_TYPES):
            raise TypeError(
                "'imgs_list' must be a list of images; got a single image "
                f"({type(imgs_list).__name__}). Use transform() for one image."
            )
        _header_img(imgs_list, name="imgs_list")
        n_imgs = len(imgs_list)
        confounds = self._per_image(confounds, n_imgs, "confounds")
        sample_mask = self._per_image(sample_mask, n_imgs, "sample_mask")
        if self.high_variance_confounds:
            hv = _cached(_image_high_variance_confounds, self.memory_, 1, self._memory_level)
            confounds = [
                _with_high_variance(c, hv(img), first=False)
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
        self._check_fitted()
        for name, value in (("confounds", confounds), ("sample_mask", sample_mask)):
            if not (value is None or isinstance(value, list)):
                raise TypeError(f"'{name}' must be a None or a list. Got {type(value).__name__}.")
        if isinstance(imgs, _NIIMG_TYPES):
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


# ---------------------------------------------------------------------------
# Several atlases, one pass
# ---------------------------------------------------------------------------


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

    This is :func:`stream_labels_signals` followed by :meth:`RawLabelsSignals.clean`.

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
    _maskers: tuple[NiftiLabelsMasker, ...] = field(repr=False)
    _grids: tuple[tuple, ...] = field(repr=False)
    _atlases: tuple[SpatialImage, ...] = field(repr=False)
    _confounds: Any = field(repr=False)
    _mean: np.ndarray | None = field(repr=False)
    _three_d: bool = field(repr=False)
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
        results = []
        for masker, (labels_img, mask_img, _, _), signals, ids, atlas in zip(
            self._maskers, self._grids, self.raw, self.region_ids, self._atlases, strict=True
        ):
            if mask_img is not None and not masker.keep_masked_labels:
                _warn_removed_by_mask(labels_img, ids, masker.background_label)
            with _one_blas_thread():
                signals = _cached(clean, masker.memory_, 1, masker._memory_level)(
                    signals,
                    confounds=self._confounds,
                    sample_mask=sample_mask,
                    runs=None,
                    **masker._clean_params(),
                    **masker._active_clean_kwargs(),
                )
            if self._three_d:
                signals = signals[0]
            masker._record_columns(ids, atlas)
            results.append(
                LabelsSignals(signals=signals, region_ids=masker.region_ids_, masker=masker)
            )
        mean_image = None
        if self._mean is not None:
            header = _header_img(self._imgs, name="imgs")
            mean_image = nib.Nifti1Image(self._mean, header.affine)
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
    keep are chosen later, in :meth:`RawLabelsSignals.clean`): fits one masker per atlas,
    checks the confounds' rows (and adds high-variance confounds when asked), and streams
    the image once per extraction grid.

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
        If ``params`` holds ``labels_img``, ``mask_img`` or ``lut``, or an unknown name.
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
    maskers = [
        NiftiLabelsMasker(labels_img=labels_img, mask_img=mask_img, lut=lut, **params).fit(imgs)
        for labels_img, lut in zip(labels_imgs, luts, strict=True)
    ]
    if not maskers:
        return RawLabelsSignals((), (), None, 0, (), (), (), confounds, None, False, imgs)
    first = maskers[0]
    if first.high_variance_confounds:
        hv = _cached(_image_high_variance_confounds, first.memory_, 1, first._memory_level)(imgs)
        confounds = _with_high_variance(confounds, hv, first=True)
    grids = [masker._extraction_grid(imgs, confounds) for masker in maskers]
    # Atlases sharing an extraction grid share a pass (all of them when resampling to data).
    passes: dict[Any, list[int]] = defaultdict(list)
    for i, (_, _, target_affine, target_shape) in enumerate(grids):
        key = (
            None
            if target_affine is None
            else (np.asarray(target_affine).tobytes(), tuple(target_shape))
        )
        passes[key].append(i)
    raw: list[Any] = [None] * len(maskers)
    mean = fraction = None
    stream_signals = _cached(_stream_signals, first.memory_, 1, first._memory_level)
    for n, members in enumerate(passes.values()):
        _, _, target_affine, target_shape = grids[members[0]]
        first._log("Extracting region signals of %d atlas(es) from %r", len(members), imgs)
        per_atlas, pass_mean, input_ndim, pass_fraction = stream_signals(
            imgs,
            [(grids[i][0], grids[i][1]) for i in members],
            target_affine=target_affine,
            target_shape=target_shape,
            mean_volume=mean_img and n == 0,
            inflater=inflater,
            **first._stream_params(),
        )
        mean = pass_mean if n == 0 else mean
        if pass_fraction is not None:
            fraction = pass_fraction if fraction is None else np.maximum(fraction, pass_fraction)
        for i, item in zip(members, per_atlas, strict=True):
            raw[i] = item
    return RawLabelsSignals(
        raw=tuple(signals for signals, _, _ in raw),
        region_ids=tuple(list(ids) for _, ids, _ in raw),
        non_finite_fraction=fraction,
        n_volumes=int(raw[0][0].shape[0]),
        _maskers=tuple(maskers),
        _grids=tuple(grids),
        _atlases=tuple(atlas for _, _, atlas in raw),
        _confounds=confounds,
        _mean=mean,
        _three_d=input_ndim == 3,
        _imgs=imgs,
    )


def _check_mask_not_empty(mask_img: SpatialImage, name: str) -> None:
    if not np.any(image.get_data(mask_img)):
        raise ValueError(
            f"'{name}' is empty: it masks all data (no nonzero voxel on the grid used)."
        )


def _describe_input(imgs: Any) -> str:
    if isinstance(imgs, (str, Path)):
        return f"image '{imgs}'"
    if isinstance(imgs, SpatialImage):
        return "the image"
    return "the list of images"


def _middle_image(imgs: Any, loaded: SpatialImage | None = None) -> tuple[SpatialImage, int]:
    """Return a representative 3D volume for reports and its input dimensionality.

    The middle volume of a 4D NIfTI file is read only when a report uses it (reading it
    means inflating half of a ``.nii.gz``). ``loaded`` is ``imgs`` already loaded, if so.
    """
    if isinstance(imgs, _NIIMG_TYPES):
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
