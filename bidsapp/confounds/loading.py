""":func:`load_confounds`: regressors and kept volumes of a denoising strategy.

The behaviour follows ``nilearn.interfaces.fmriprep.load_confounds`` 0.12.1 without
depending on nilearn: the confounds TSV beside a preprocessed image is found, the columns a
strategy asks for are selected, volumes flagged as non-steady-state or (optionally) as
motion outliers are left out of a ``sample_mask``, and the regressors are demeaned over
the kept volumes. Part of the numerical core, confounds layer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from bidsapp.confounds.checks import ImageInput, as_image_list, check_components, check_parameters
from bidsapp.confounds.columns import (
    EMPTY_DESCRIPTIONS,
    OUTLIER_MARKERS,
    check_numeric,
    component_columns,
    missing_message,
    required_nonempty,
)
from bidsapp.confounds.files import (
    ConfoundsError,
    check_image_name,
    find_confounds_file,
    read_confounds_tsv,
    read_sidecar,
    refuse_legacy_header,
    sidecar_path,
)
from bidsapp.confounds.scrubbing import (
    DEFAULT_FD_THRESHOLD,
    DEFAULT_SCRUB,
    DEFAULT_STD_DVARS_THRESHOLD,
    MODERN_MEASURES,
    scrub_regressors,
)
from bidsapp.errors import AllVolumesCensoredWarning, ParameterWarning, warn

logger = logging.getLogger(__name__)


ConfoundsOutput: TypeAlias = "pd.DataFrame | None | list[pd.DataFrame | None]"


SampleMaskOutput: TypeAlias = "np.ndarray | None | list[np.ndarray | None]"


def load_confounds(
    img_files: ImageInput,
    strategy: Sequence[str] = ("motion", "high_pass", "wm_csf"),
    motion: str = "full",
    scrub: int = DEFAULT_SCRUB,
    fd_threshold: float = DEFAULT_FD_THRESHOLD,
    std_dvars_threshold: float = DEFAULT_STD_DVARS_THRESHOLD,
    wm_csf: str = "basic",
    global_signal: str = "basic",
    compcor: str = "anat_combined",
    n_compcor: int | str = "all",
    ica_aroma: str = "full",
    demean: bool = True,
) -> tuple[ConfoundsOutput, SampleMaskOutput]:
    """Load the fMRIPrep confounds of one or more images for a denoising strategy.

    Parameters
    ----------
    img_files : str, os.PathLike or list
        Preprocessed image(s) written by fMRIPrep; the confounds TSV (and its JSON sidecar)
        must sit in the same directory with BIDS names sharing the image's entities.
        Accepted: ``*_desc-preproc_bold.nii.gz`` or ``.nii``, ``*_bold.dtseries.nii``, a
        pair ``[*_hemi-L_*bold.func.gii, *_hemi-R_*bold.func.gii]``, and, for the full
        ICA-AROMA strategy only, ``*_desc-smoothAROMAnonaggr_bold.nii.gz`` or ``.nii``.  A
        list of such inputs loads each in turn.
    strategy : tuple or list of str, default=("motion", "high_pass", "wm_csf")
        Noise components to include, among ``motion``, ``high_pass`` (discrete cosine
        regressors), ``wm_csf``, ``global_signal``, ``compcor`` (needs ``high_pass``),
        ``ica_aroma`` and ``scrub``.  The parameters below only apply to the components
        named here.  Non-steady-state volumes are always censored.
    motion : {"full", "basic", "power2", "derivatives"}, default="full"
        Head motion regressors: the 6 rigid-body parameters (``basic``), plus their
        squares (``power2``) or temporal derivatives (``derivatives``), or all four sets
        (``full``, 24 regressors).
    scrub : int, default=5
        Minimum length, in volumes, of a run of kept volumes between motion outliers;
        shorter runs are censored too.  0 censors the outliers only.
    fd_threshold : float, default=0.5
        Framewise displacement (mm) above which a volume is a motion outlier.
    std_dvars_threshold : float, default=1.5
        Standardized DVARS above which a volume is a motion outlier.
    wm_csf : {"basic", "power2", "derivatives", "full"}, default="basic"
        Mean white-matter and CSF signals, expanded as for ``motion`` (2 to 8 regressors).
    global_signal : {"basic", "power2", "derivatives", "full"}, default="basic"
        Mean global signal, expanded as for ``motion`` (1 to 4 regressors).
    compcor : str, default="anat_combined"
        CompCor components (fMRIPrep >= 1.4): ``anat_combined`` (combined WM+CSF mask),
        ``anat_separated`` (WM and CSF masks), ``temporal``, ``temporal_anat_combined`` or
        ``temporal_anat_separated``.  Read from the JSON sidecar.
    n_compcor : int or "all", default="all"
        Number of components kept per mask; ``"all"`` keeps every component fMRIPrep
        retained (by default those explaining 50 % of the variance).
    ica_aroma : {"full", "basic"}, default="full"
        ``full`` expects the non-aggressively denoised ``desc-smoothAROMAnonaggr_bold``
        image and adds no regressor; ``basic`` adds the ``aroma_motion_*`` noise components.
    demean : bool, default=True
        Subtract from each regressor its mean over the kept volumes.

    Returns
    -------
    confounds : pandas.DataFrame, None or list
        One column per regressor, columns in alphabetical order, one row per volume
        (censored volumes included).  None when ``strategy`` is empty.  A list when
        ``img_files`` is a list of inputs.
    sample_mask : numpy.ndarray, None or list
        Indices (int) of the volumes to keep, or None when the file flags no
        non-steady-state volume and scrubbing found no outlier.  A list when ``img_files``
        is a list of inputs.

    Raises
    ------
    ValueError
        If ``strategy`` or a parameter value is invalid, or the image name does not suit
        the strategy (e.g. full ICA-AROMA without the ``desc-smoothAROMAnonaggr`` image).
    ConfoundsError
        If the confounds file is missing, ambiguous or malformed, its JSON sidecar is
        malformed (or missing while CompCor needs it), or it lacks a needed column.

    Warns
    -----
    UserWarning
        If ``strategy`` is empty or names ``non_steady_state``.
    RuntimeWarning
        If every volume is censored.

    Notes
    -----
    Differences from nilearn 0.12.1: ``fd_threshold`` and ``std_dvars_threshold`` default
    to fMRIPrep's 0.5 and 1.5 (nilearn's planned 0.13 defaults); a list input always gives
    list outputs, even with one element (with an empty strategy, a list of None); an
    uncompressed ``*_desc-preproc_bold.nii`` is accepted like its ``.nii.gz`` twin; file
    problems raise :class:`ConfoundsError` (a ``ValueError``) naming the file and
    column(s), and invalid parameter values raise ``ValueError`` rather than ``KeyError``.

    """
    check_components(strategy)
    for component in strategy:
        if component == "non_steady_state":
            warn(
                "Non-steady-state volumes are always censored; 'non_steady_state' in "
                "strategy has no further effect.",
                ParameterWarning,
            )
    if len(strategy) == 0:
        warn("strategy is empty, confounds will be returned as None.", ParameterWarning)
    components = [c for c in dict.fromkeys(strategy) if c != "non_steady_state"]
    params = {
        "motion": motion,
        "scrub": scrub,
        "fd_threshold": fd_threshold,
        "std_dvars_threshold": std_dvars_threshold,
        "wm_csf": wm_csf,
        "global_signal": global_signal,
        "compcor": compcor,
        "n_compcor": n_compcor,
        "ica_aroma": ica_aroma,
    }
    check_parameters(components, params)
    images, single = as_image_list(img_files)
    full_aroma = "ica_aroma" in components and ica_aroma == "full"

    confounds_out: list[pd.DataFrame | None] = []
    masks_out: list[np.ndarray | None] = []
    for image in images:
        check_image_name(image, full_aroma)
        confounds_file = find_confounds_file(image)
        confounds, sample_mask = _load_confounds_file(
            confounds_file, components, params, bool(demean)
        )
        confounds_out.append(confounds if len(strategy) else None)
        masks_out.append(sample_mask)
    if single:
        return confounds_out[0], masks_out[0]
    return confounds_out, masks_out


def _load_confounds_file(
    confounds_file: Path, components: Sequence[str], params: dict[str, Any], demean: bool
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Select, censor and demean the confounds of one fMRIPrep confounds file."""
    raw = read_confounds_tsv(confounds_file)
    refuse_legacy_header(confounds_file, list(raw.columns))
    meta = read_sidecar(sidecar_path(confounds_file), required="compcor" in components)

    plan: dict[str, list[str]] = {}
    missing: dict[str, list[str]] = {}
    for component in ["non_steady_state", *components]:
        if component == "scrub":
            needed = ["framewise_displacement", "std_dvars"]
        else:
            needed = component_columns(component, raw, meta, params, confounds_file)
        absent = [column for column in needed if column not in raw.columns]
        if absent or (not needed and required_nonempty(component, params)):
            missing[component] = absent or [EMPTY_DESCRIPTIONS[component]]
        else:
            plan[component] = needed
    if missing:
        raise ConfoundsError(missing_message(confounds_file, missing))
    check_numeric(
        raw, list(dict.fromkeys(c for cols in plan.values() for c in cols)), confounds_file
    )

    frames: list[pd.DataFrame] = []
    for component, needed in plan.items():
        if component == "scrub":
            frames.append(scrub_regressors(raw, confounds_file, params, MODERN_MEASURES))
        elif needed:
            frames.append(raw[needed])
        elif component == "high_pass":
            logger.warning("Confounds file %s has no cosine (high-pass) column.", confounds_file)
    selected = pd.concat(frames, axis=1) if frames else pd.DataFrame()
    return finalize_confounds(selected, demean, confounds_file)


def finalize_confounds(
    selected: pd.DataFrame, demean: bool, confounds_file: Path
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Split outlier columns into a sample mask; fill and demean the regressors.

    Parameters
    ----------
    selected : pandas.DataFrame
        The selected columns; those named ``motion_outlier*`` or ``non_steady_state*``
        (fMRIPrep >= 1.2 names) flag censored volumes, the others are regressors.
    demean : bool
        Subtract each regressor's mean over the kept volumes.
    confounds_file : pathlib.Path
        The confounds TSV, named in warnings.

    Returns
    -------
    confounds : pandas.DataFrame
        The regressors, columns in alphabetical order (as nilearn's).
    sample_mask : numpy.ndarray or None
        Indices of the kept volumes, or None when no column flags a volume.
    """
    outlier_columns = sorted(
        {c for c in selected.columns if any(marker in c for marker in OUTLIER_MARKERS)}
    )
    regressor_columns = sorted(set(selected.columns) - set(outlier_columns))
    sample_mask = None
    if outlier_columns:
        flags = selected.loc[:, outlier_columns].sum(axis=1).to_numpy()
        sample_mask = np.flatnonzero(flags == 0)
        if sample_mask.size == 0:
            warn(
                f"All volumes of {confounds_file} were marked as motion outliers or "
                f"non-steady-state; every volume would be scrubbed.",
                AllVolumesCensoredWarning,
            )
    confounds = selected.loc[:, regressor_columns]
    if confounds.size == 0:
        return confounds, sample_mask
    confounds = _fill_first_row(confounds)
    _warn_missing_values(confounds, confounds_file)
    if demean:
        confounds = _demean(confounds, sample_mask)
    return confounds, sample_mask


def _fill_first_row(confounds: pd.DataFrame) -> pd.DataFrame:
    """Copy the second volume's value into NaN cells of the first volume.

    Derivative columns have no value at the first volume, which signal cleaning rejects.
    """
    confounds = confounds.copy()
    first_nan = np.flatnonzero(confounds.iloc[0].isna().to_numpy())
    if first_nan.size and len(confounds) > 1:
        confounds.iloc[0, first_nan] = confounds.iloc[1, first_nan].to_numpy()
    return confounds


def _warn_missing_values(confounds: pd.DataFrame, confounds_file: Path) -> None:
    with_nan = [column for column in confounds.columns if confounds[column].isna().any()]
    if with_nan:
        shown = ", ".join(with_nan[:3]) + (
            f" and {len(with_nan) - 3} more" if len(with_nan) > 3 else ""
        )
        logger.warning(
            "Confounds file %s has missing values (n/a) after the first row in %d column(s): %s.",
            confounds_file,
            len(with_nan),
            shown,
        )


def _demean(confounds: pd.DataFrame, sample_mask: np.ndarray | None) -> pd.DataFrame:
    """Subtract each column's mean over the kept volumes (all volumes if no mask)."""
    if sample_mask is not None:
        return confounds - confounds.iloc[sample_mask].mean(axis=0)
    values = confounds.to_numpy(dtype=np.float64, copy=True)
    values -= np.nanmean(values, axis=0)
    # A second pass removes the rounding residue left by very large values, as
    # scikit-learn's ``scale`` (nilearn's tool here) does.
    residual = np.nanmean(values, axis=0)
    if not np.allclose(residual, 0):
        values -= residual
    return pd.DataFrame(values, columns=confounds.columns)
