"""Select fMRIPrep confound regressors for a denoising strategy.

The behaviour follows ``nilearn.interfaces.fmriprep`` 0.12.1 (``load_confounds`` and
``load_confounds_strategy``) without depending on nilearn: the confounds TSV written beside a
preprocessed BOLD image is found from the image name, the columns a strategy asks for are
selected, volumes flagged as non-steady-state or (optionally) as motion outliers are left out
of a ``sample_mask``, and the regressors are demeaned over the kept volumes.

Denoising presets (``simple``, ``scrubbing``, ``compcor``, ``ica_aroma``) are JSON files in
``bidsapp/data/presets``; a user may pass the path of a JSON file in the same format.
"""

from __future__ import annotations

import inspect
import io
import json
import logging
import numbers
import re
import warnings
from collections.abc import Sequence
from importlib import resources
from os import PathLike
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from bidsapp.errors import BidsappError

logger = logging.getLogger(__name__)

ConfoundsOutput: TypeAlias = "pd.DataFrame | None | list[pd.DataFrame | None]"
SampleMaskOutput: TypeAlias = "np.ndarray | None | list[np.ndarray | None]"

PathType: TypeAlias = "str | PathLike[str]"
ImageInput: TypeAlias = (
    "str | PathLike[str] | Sequence[str | PathLike[str] | Sequence[str | PathLike[str]]]"
)

#: Noise components a strategy may name.
COMPONENTS = (
    "motion",
    "high_pass",
    "wm_csf",
    "global_signal",
    "compcor",
    "ica_aroma",
    "scrub",
    "non_steady_state",
)

#: Expansion levels of motion, wm_csf and global_signal, and the column suffixes they add.
EXPANSION_SUFFIXES: dict[str, tuple[str, ...]] = {
    "basic": (),
    "power2": ("power2",),
    "derivatives": ("derivative1",),
    "full": ("derivative1", "power2", "derivative1_power2"),
}

# Each CompCor variant is a list of (column prefix, anatomical mask) groups; n_compcor is
# applied to every group.  A mask of None means the prefix alone identifies the group.
COMPCOR_GROUPS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "anat_combined": (("a", "combined"),),
    "anat_separated": (("a", "WM"), ("a", "CSF"), ("w", None), ("c", None)),
    "temporal": (("t", None),),
    "temporal_anat_combined": (("t", None), ("a", "combined")),
    "temporal_anat_separated": (
        ("t", None),
        ("a", "WM"),
        ("a", "CSF"),
        ("w", None),
        ("c", None),
    ),
}

ICA_AROMA_CHOICES = ("full", "basic")

#: Keyword parameters of :func:`load_confounds` a preset may set (besides ``strategy``).
PRESET_PARAMETERS = (
    "motion",
    "scrub",
    "fd_threshold",
    "std_dvars_threshold",
    "wm_csf",
    "global_signal",
    "compcor",
    "n_compcor",
    "ica_aroma",
    "demean",
)

#: Names of the motion measures used for censoring, in fMRIPrep >= 1.2 and in fMRIPrep
#: 1.0/1.1 files (camel-case headers).
MOTION_MEASURES: dict[str, tuple[str, ...]] = {
    "framewise_displacement": ("framewise_displacement", "FramewiseDisplacement"),
    "std_dvars": ("std_dvars", "stdDVARS"),
}
#: Name parts of the non-steady-state outlier columns (fMRIPrep >= 1.2, then 1.0/1.1).
NON_STEADY_STATE_MARKERS = ("non_steady_state", "NonSteadyStateOutlier")

_MOTION_BASES = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
_PRESET_KEYS = ("name", "description", "parameters", "overrides")
_OUTLIER_MARKERS = ("motion_outlier", "non_steady_state")
_PRESET_DIR = ("data", "presets")


class ConfoundsError(BidsappError, ValueError):
    """A confounds file, its JSON sidecar or a preset cannot be used.

    The message names the file and what is wrong with it.
    """


class UnknownPresetError(ConfoundsError, KeyError):
    """A denoising preset is neither a built-in name nor an existing JSON file.

    It is also a :class:`KeyError`, the exception nilearn raises for an unknown preset.
    """

    def __str__(self) -> str:
        # KeyError would print the message quoted; read it as the plain sentence it is.
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def load_confounds(
    img_files: ImageInput,
    strategy: Sequence[str] = ("motion", "high_pass", "wm_csf"),
    motion: str = "full",
    scrub: int = 5,
    fd_threshold: float = 0.5,
    std_dvars_threshold: float = 1.5,
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
    _check_strategy(strategy)
    for component in strategy:
        if component == "non_steady_state":
            warnings.warn(
                "Non-steady-state volumes are always censored; 'non_steady_state' in "
                "strategy has no further effect.",
                UserWarning,
                stacklevel=2,
            )
    if len(strategy) == 0:
        warnings.warn(
            "strategy is empty, confounds will be returned as None.", UserWarning, stacklevel=2
        )
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
    _check_parameters(components, params)
    images, single = _as_image_list(img_files)
    full_aroma = "ica_aroma" in components and ica_aroma == "full"

    confounds_out: list[pd.DataFrame | None] = []
    masks_out: list[np.ndarray | None] = []
    for image in images:
        _check_image_name(image, full_aroma)
        confounds_file = find_confounds_file(image)
        confounds, sample_mask = _load_confounds_file(
            confounds_file, components, params, bool(demean)
        )
        confounds_out.append(confounds if len(strategy) else None)
        masks_out.append(sample_mask)
    if single:
        return confounds_out[0], masks_out[0]
    return confounds_out, masks_out


def load_confounds_strategy(
    img_files: ImageInput, denoise_strategy: PathType = "simple", **kwargs: Any
) -> tuple[ConfoundsOutput, SampleMaskOutput]:
    """Load fMRIPrep confounds with a denoising preset.

    Parameters
    ----------
    img_files : str, os.PathLike or list
        Preprocessed image(s); see :func:`load_confounds`.
    denoise_strategy : str or os.PathLike, default="simple"
        A built-in preset name (see :func:`list_presets`: ``simple``, ``scrubbing``,
        ``compcor``, ``ica_aroma``) or the path of a JSON preset file (format described in
        :func:`load_preset`).
    **kwargs
        Overrides of the preset's :func:`load_confounds` parameters.  Only the parameters
        the preset lists in ``overrides`` are applied; a value of None keeps the preset's
        value.  Giving a string ``global_signal`` to a preset that accepts it adds the
        ``global_signal`` component to the strategy.

    Returns
    -------
    confounds : pandas.DataFrame, None or list
        See :func:`load_confounds`.
    sample_mask : numpy.ndarray, None or list
        See :func:`load_confounds`.

    Raises
    ------
    UnknownPresetError
        If ``denoise_strategy`` is neither a preset name nor an existing file.
    ConfoundsError
        If the preset file is malformed, or for the reasons given in
        :func:`load_confounds`.

    Warns
    -----
    UserWarning
        If a keyword argument is not accepted by the preset (it is ignored).

    """
    preset = load_preset(denoise_strategy)
    parameters = dict(preset["parameters"])
    strategy = list(parameters.pop("strategy"))
    accepted = list(preset["overrides"])

    not_needed = [key for key in kwargs if key not in accepted]
    if not_needed:
        warnings.warn(
            f"The following parameters are not needed for the selected strategy "
            f"'{preset['name']}': {not_needed}; parameters accepted: {accepted}",
            UserWarning,
            stacklevel=2,
        )
    for key in accepted:
        value = kwargs.get(key)
        if value is not None:
            parameters[key] = value
    # The built-in presets leave the global signal out unless the user names a level.
    if (
        "global_signal" in accepted
        and isinstance(kwargs.get("global_signal"), str)
        and "global_signal" not in strategy
    ):
        strategy.append("global_signal")
    return load_confounds(img_files, strategy=tuple(strategy), **parameters)


def apply_censoring_overrides(
    parameters: dict[str, Any],
    *,
    fd_threshold: float | None = None,
    std_dvars_threshold: float | None = None,
) -> dict[str, Any]:
    """Apply user censoring thresholds to a preset's :func:`load_confounds` parameters.

    Like XCP-D's ``--fd-thresh``, a threshold given on the command line censors volumes
    whatever the preset: it adds ``scrub`` to a preset without it. A threshold of 0
    disables censoring on that measure; both at 0 remove scrubbing altogether.

    Parameters
    ----------
    parameters : dict
        A preset's ``parameters`` (see :func:`load_preset`); not modified.
    fd_threshold : float, optional
        Framewise displacement threshold in mm; None keeps the preset's value.
    std_dvars_threshold : float, optional
        Standardized DVARS threshold; None keeps the preset's value.

    Returns
    -------
    dict
        New parameters for :func:`load_confounds`.
    """
    updated = dict(parameters)
    if fd_threshold is None and std_dvars_threshold is None:
        return updated
    strategy = [c for c in updated.get("strategy", ()) if c != "scrub"]
    scrubbing = "scrub" in updated.get("strategy", ())
    fd = fd_threshold if fd_threshold is not None else updated.get("fd_threshold", 0.5)
    dvars = (
        std_dvars_threshold
        if std_dvars_threshold is not None
        else updated.get("std_dvars_threshold", 1.5)
    )
    if not scrubbing:
        # A preset without scrubbing censors only on the measure the user named.
        fd = fd if fd_threshold is not None else 0
        dvars = dvars if std_dvars_threshold is not None else 0
    if fd == 0 and dvars == 0:
        updated["strategy"] = strategy
        return updated
    updated["strategy"] = [*strategy, "scrub"]
    updated["scrub"] = updated.get("scrub", 5)
    updated["fd_threshold"] = float(fd) if fd else float("inf")
    updated["std_dvars_threshold"] = float(dvars) if dvars else float("inf")
    return updated


def load_confounds_columns(
    img_file: PathType,
    patterns: Sequence[str],
    *,
    fd_threshold: float | None = None,
    std_dvars_threshold: float | None = None,
    scrub: int = 5,
    demean: bool = True,
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Load an explicit list of confound columns, selected by regular expressions.

    Non-steady-state volumes are censored as in :func:`load_confounds`; volumes above the
    given motion thresholds are censored with the same minimum-segment rule.

    Parameters
    ----------
    img_file : str or os.PathLike
        Preprocessed BOLD image; its confounds TSV is found beside it.
    patterns : sequence of str
        Regular expressions matched against whole column names (``re.fullmatch``), e.g.
        ``"trans_[xyz]"`` or ``"a_comp_cor_0[0-4]"``. Each must match at least one column.
    fd_threshold : float, optional
        Framewise displacement threshold in mm; None or 0 disables it.
    std_dvars_threshold : float, optional
        Standardized DVARS threshold; None or 0 disables it.
    scrub : int, default=5
        Kept segments shorter than this many volumes are censored too.
    demean : bool, default=True
        Subtract each regressor's mean over the kept volumes.

    Returns
    -------
    confounds : pandas.DataFrame
        The selected regressors, in the order the patterns match them.
    sample_mask : numpy.ndarray or None
        Indices of the kept volumes, or None when none is censored.

    Raises
    ------
    ConfoundsError
        When the confounds file is missing or malformed, or a pattern matches no column;
        the message names the file.
    """
    confounds_file = find_confounds_file(img_file)
    raw = _read_confounds_tsv(confounds_file)
    non_steady = non_steady_state_columns(raw.columns)
    selected: list[str] = []
    for pattern in patterns:
        matched = [column for column in raw.columns if re.fullmatch(pattern, column)]
        if not matched:
            raise ConfoundsError(
                f"Confounds file {confounds_file} has no column matching {pattern!r}."
            )
        # Non-steady-state columns censor their volumes (as with presets), never regress.
        selected.extend(c for c in matched if c not in selected and c not in non_steady)
    _check_numeric(raw, selected + non_steady, confounds_file)
    # _finalize recognises outlier columns by their fMRIPrep >= 1.2 names.
    renamed = {c: c if "non_steady_state" in c else f"non_steady_state_{c}" for c in non_steady}
    frames = [raw[selected], raw[non_steady].rename(columns=renamed)]
    if fd_threshold or std_dvars_threshold:
        measures = motion_measure_columns(raw.columns)
        wanted = {"framewise_displacement": fd_threshold, "std_dvars": std_dvars_threshold}
        absent = [
            " or ".join(repr(n) for n in MOTION_MEASURES[measure])
            for measure, threshold in wanted.items()
            if threshold and measures[measure] is None
        ]
        if absent:
            raise ConfoundsError(
                f"Confounds file {confounds_file} has no column {' and no column '.join(absent)}"
                f", needed by the censoring threshold(s) given."
            )
        present = [c for c in measures.values() if c is not None]
        _check_numeric(raw, present, confounds_file)
        params = {
            "scrub": scrub,
            "fd_threshold": fd_threshold or float("inf"),
            "std_dvars_threshold": std_dvars_threshold or float("inf"),
        }
        frames.append(_scrub_regressors(raw, confounds_file, params, measures))
    confounds, sample_mask = _finalize(pd.concat(frames, axis=1), demean, confounds_file)
    # _finalize sorts columns like nilearn; an explicit list keeps the user's order.
    return confounds.loc[:, [c for c in selected if c in confounds.columns]], sample_mask


def motion_measure_columns(columns: Sequence[str]) -> dict[str, str | None]:
    """Find the framewise displacement and standardized DVARS columns of a confounds table.

    fMRIPrep >= 1.2 names them ``framewise_displacement`` and ``std_dvars``; fMRIPrep 1.0
    and 1.1 (camel-case headers) ``FramewiseDisplacement`` and ``stdDVARS``. Censoring
    thresholds (``--fd-threshold``, ``--std-dvars-threshold``) apply to these columns.

    Parameters
    ----------
    columns : sequence of str
        Header of the confounds TSV.

    Returns
    -------
    dict
        ``{"framewise_displacement": name or None, "std_dvars": name or None}``: the
        column holding each measure (the fMRIPrep >= 1.2 name when both are present), or
        None when the table has neither name.
    """
    present = set(columns)
    return {
        measure: next((name for name in names if name in present), None)
        for measure, names in MOTION_MEASURES.items()
    }


def non_steady_state_columns(columns: Sequence[str]) -> list[str]:
    """List the non-steady-state outlier columns of a confounds table.

    Parameters
    ----------
    columns : sequence of str
        Header of the confounds TSV.

    Returns
    -------
    list of str
        Columns named ``non_steady_state_outlier*`` (fMRIPrep >= 1.2) or
        ``NonSteadyStateOutlier*`` (fMRIPrep 1.0/1.1), in table order.
    """
    return [str(c) for c in columns if any(m in str(c) for m in NON_STEADY_STATE_MARKERS)]


def is_legacy_header(columns: Sequence[str]) -> bool:
    """Whether a confounds header is fMRIPrep 1.0/1.1's (camel case, e.g. ``RotX``).

    Parameters
    ----------
    columns : sequence of str
        Header of the confounds TSV.

    Returns
    -------
    bool
        True if a column name mixes upper and lower case and has no underscore.
    """
    return bool(_camel_case(columns))


def _camel_case(columns: Sequence[str]) -> list[str]:
    return [
        str(name)
        for name in columns
        if str(name) != str(name).lower() and str(name) != str(name).upper() and "_" not in name
    ]


def list_presets() -> list[str]:
    """List the names of the built-in denoising presets.

    Returns
    -------
    list of str
        Sorted preset names, e.g. ``["compcor", "ica_aroma", "scrubbing", "simple"]``.

    """
    folder = resources.files("bidsapp").joinpath(*_PRESET_DIR)
    return sorted(
        entry.name[: -len(".json")] for entry in folder.iterdir() if entry.name.endswith(".json")
    )


def load_preset(name_or_path: PathType) -> dict[str, Any]:
    """Read a denoising preset, built-in or from a user's JSON file.

    A preset file holds a JSON object with the keys ``parameters`` (required: the
    :func:`load_confounds` keyword arguments, including the ``strategy`` list),
    ``overrides`` (the parameter names a user may change through
    :func:`load_confounds_strategy`; default none), and optional ``name`` and
    ``description`` strings.  Parameters a preset leaves out take
    :func:`load_confounds`'s defaults.

    Parameters
    ----------
    name_or_path : str or os.PathLike
        A built-in preset name (see :func:`list_presets`) or the path of a JSON file.

    Returns
    -------
    dict
        ``{"name": str, "description": str, "parameters": dict, "overrides": list}``;
        ``parameters["strategy"]`` is a list.  A fresh copy on each call.

    Raises
    ------
    UnknownPresetError
        If ``name_or_path`` is neither a built-in name nor an existing file.
    ConfoundsError
        If the file cannot be read, is not valid JSON, or holds unknown keys, unknown
        parameters or invalid parameter values.

    """
    builtin = list_presets()
    if isinstance(name_or_path, str) and name_or_path in builtin:
        resource = resources.files("bidsapp").joinpath(*_PRESET_DIR, f"{name_or_path}.json")
        text = resource.read_text(encoding="utf-8")
        return _parse_preset(text, origin=f"built-in preset '{name_or_path}'", name=name_or_path)
    path = Path(name_or_path)
    if not path.is_file():
        raise UnknownPresetError(
            f"Provided strategy '{name_or_path}' is not a preset strategy nor an existing "
            f"JSON preset file. Valid strategy: {builtin}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfoundsError(f"Cannot read preset file {path}: {err}") from err
    return _parse_preset(text, origin=f"preset file {path}", name=path.stem)


def find_confounds_file(image: PathType | Sequence[PathType]) -> Path:
    """Find the fMRIPrep confounds TSV that belongs to a preprocessed image.

    The confounds file must sit in the image's directory and be named
    ``<entities>_desc-confounds_timeseries.tsv`` (fMRIPrep >= 20.2) or
    ``<entities>_desc-confounds_regressors.tsv`` (older releases), where ``<entities>`` are
    some of the image's entities in the image's order.

    Parameters
    ----------
    image : str, os.PathLike or pair of them
        The image path; for a GIfTI pair the first file is used.

    Returns
    -------
    pathlib.Path
        Path of the confounds TSV.

    Raises
    ------
    ConfoundsError
        If no file or more than one file matches.

    """
    if isinstance(image, (list, tuple)):
        image = image[0]
    image_path = Path(image)
    wanted = _confounds_entities(image_path.name)
    folder = image_path.parent
    found = []
    if folder.is_dir():
        for entry in sorted(folder.iterdir()):
            match = re.fullmatch(r"(.+)_(?:timeseries|regressors)\.tsv", entry.name)
            if match and entry.is_file() and _matches_entities(match.group(1), wanted):
                found.append(entry)
    if not found:
        raise ConfoundsError(
            f"Could not find the confounds file of {image_path}: expected a "
            f"'*_desc-confounds_timeseries.tsv' or '*_desc-confounds_regressors.tsv' file "
            f"sharing the image's entities in {folder}."
        )
    if len(found) > 1:
        listing = "\n\t".join(str(path) for path in found)
        raise ConfoundsError(f"Found more than one confound file for {image_path}:\n\t{listing}")
    logger.debug("Confounds file of %s: %s", image_path, found[0])
    return found[0]


# --------------------------------------------------------------------------------------
# Checks of the user's arguments
# --------------------------------------------------------------------------------------


def _check_strategy(strategy: Any) -> None:
    """Raise ValueError unless ``strategy`` is a valid list of noise components."""
    if not isinstance(strategy, (tuple, list)):
        raise ValueError(
            f"strategy needs to be a tuple or list of strings; a {type(strategy)} was "
            f"provided instead."
        )
    for component in strategy:
        if component not in COMPONENTS:
            raise ValueError(
                f"{component} is not a supported type of confounds; choose among {COMPONENTS}."
            )
    # fMRIPrep computes CompCor after its own cosine high-pass filter, so the cosine
    # regressors must be removed as well.
    if "compcor" in strategy and "high_pass" not in strategy:
        raise ValueError(
            f"When using compcor, `high_pass` must be included in strategy. "
            f"Current strategy: '{strategy}'"
        )
    if "compcor" in strategy and "ica_aroma" in strategy:
        logger.warning(
            "Strategy %s combines CompCor with ICA-AROMA; fMRIPrep estimates CompCor on "
            "data not denoised by ICA-AROMA.",
            strategy,
        )


def _check_parameters(components: Sequence[str], params: dict[str, Any]) -> None:
    """Raise ValueError if a parameter of a component in ``components`` is invalid."""
    for name in ("motion", "wm_csf", "global_signal"):
        if name in components:
            _check_choice(name, params[name], tuple(EXPANSION_SUFFIXES))
    if "compcor" in components:
        _check_choice("compcor", params["compcor"], tuple(COMPCOR_GROUPS))
        n_compcor = params["n_compcor"]
        if n_compcor != "all" and not (_is_int(n_compcor) and n_compcor > 0):
            raise ValueError(f"n_compcor must be 'all' or a positive integer, got {n_compcor!r}.")
    if "ica_aroma" in components and params["ica_aroma"] not in ICA_AROMA_CHOICES:
        raise ValueError(
            f"Please select an option when using ICA-AROMA strategy ({ICA_AROMA_CHOICES}). "
            f"Current input: {params['ica_aroma']}"
        )
    if "scrub" in components:
        if not (_is_int(params["scrub"]) and params["scrub"] >= 0):
            raise ValueError(
                f"scrub (minimum segment length, in volumes) must be an integer >= 0, "
                f"got {params['scrub']!r}."
            )
        for name in ("fd_threshold", "std_dvars_threshold"):
            value = params[name]
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"{name} must be a number, got {value!r}.")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _as_image_list(img_files: ImageInput) -> tuple[list[Any], bool]:
    """Return the inputs as a list, and whether a single input was given."""
    if isinstance(img_files, (str, PathLike)):
        return [img_files], True
    if isinstance(img_files, (list, tuple)):
        if _is_gifti_pair(img_files):
            return [img_files], True
        return list(img_files), False
    raise TypeError(
        f"img_files must be a path, a pair of GIfTI paths or a list of those, "
        f"got {type(img_files)}."
    )


def _is_gifti_pair(item: Any) -> bool:
    return (
        isinstance(item, (list, tuple))
        and len(item) == 2
        and all(isinstance(p, (str, PathLike)) and str(p).endswith(".func.gii") for p in item)
    )


def _check_image_name(image: Any, full_aroma: bool) -> None:
    """Raise ValueError if the image name does not suit the strategy.

    The GIfTI test comes first: nilearn accepts a GIfTI pair whatever the ICA-AROMA
    option.
    """
    if isinstance(image, (list, tuple)):
        names = [Path(p).name for p in image]
        if len(names) != 2 or not all(
            re.search(r"_hemi-[LR](_space-.*)?_bold\.func\.gii$", n) for n in names
        ):
            raise ValueError(
                f"need fMRIPrep output with extension func.gii: a pair of "
                f"'*_hemi-L_*bold.func.gii' and '*_hemi-R_*bold.func.gii' files, got {image}."
            )
        return
    name = Path(image).name
    if full_aroma:
        if "_desc-smoothAROMAnonaggr_bold" not in name:
            raise ValueError(
                f"Input must be desc-smoothAROMAnonaggr_bold for full ICA-AROMA strategy; "
                f"got {image}."
            )
        return
    # Longest extensions first: ".dtseries.nii" must not be read as ".nii".
    patterns = {
        "dtseries.nii": r"_bold\.dtseries\.nii$",
        "func.gii": r"_hemi-[LR](_space-.*)?_bold\.func\.gii$",
        "nii.gz": r"_desc-preproc_bold\.nii\.gz$",
        "nii": r"_desc-preproc_bold\.nii$",
    }
    extension = next((ext for ext in patterns if name.endswith(f".{ext}")), None)
    if extension is None:
        raise ValueError(
            f"Unsupported input {image}: expected a '*_desc-preproc_bold.nii[.gz]', "
            f"'*_bold.dtseries.nii' or '*_hemi-[LR]_*bold.func.gii' file (or a "
            f"'*_desc-smoothAROMAnonaggr_bold' file with the full ICA-AROMA strategy)."
        )
    if not re.search(patterns[extension], name):
        raise ValueError(
            f"Invalid file type for the selected method: {image} does not match "
            f"'{patterns[extension]}'."
        )


# --------------------------------------------------------------------------------------
# Finding files
# --------------------------------------------------------------------------------------


def _confounds_entities(image_name: str) -> list[tuple[str, str]]:
    """Entities of an image name, in order, with ``desc`` set to ``confounds``."""
    entities: dict[str, str | None] = {}
    for part in image_name.split("_")[:-1]:
        key, dash, value = part.partition("-")
        entities[key] = value if dash else None
    entities["desc"] = "confounds"
    return [(key, value) for key, value in entities.items() if value is not None]


def _matches_entities(stem: str, wanted: list[tuple[str, str]]) -> bool:
    """Whether ``stem`` names some of ``wanted``'s entities, in order, including desc."""
    pairs = []
    for part in stem.split("_"):
        key, dash, value = part.partition("-")
        if not dash:
            return False
        pairs.append((key, value))
    if ("desc", "confounds") not in pairs:
        return False
    remaining = iter(wanted)
    # ``pair in remaining`` consumes the iterator, so this tests an ordered subsequence.
    return all(pair in remaining for pair in pairs)


def _sidecar_path(confounds_file: Path) -> Path:
    return confounds_file.with_name(confounds_file.name[: -len(".tsv")] + ".json")


# --------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------


def _read_confounds_tsv(path: Path) -> pd.DataFrame:
    """Read an fMRIPrep confounds TSV, raising ConfoundsError on a malformed file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ConfoundsError(f"Confounds file {path} does not exist.") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfoundsError(f"Cannot read confounds file {path}: {err}") from err
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise ConfoundsError(
            f"Confounds file {path} is empty or starts with a blank line; expected a "
            f"tab-separated header row."
        )
    header = lines[0].split("\t")
    _check_header(path, header)
    _check_row_lengths(path, lines, len(header))
    try:
        frame = pd.read_csv(io.StringIO(text), sep="\t")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ConfoundsError(f"Cannot parse confounds file {path} as TSV: {err}") from err
    if len(frame) == 0:
        raise ConfoundsError(f"Confounds file {path} has a header but no data rows.")
    return frame


def _check_header(path: Path, header: list[str]) -> None:
    if len(header) == 1 and re.search(r"[,; ]", header[0]):
        raise ConfoundsError(
            f"Confounds file {path} is not tab-separated: its header is a single field "
            f"{header[0][:80]!r}. fMRIPrep confounds files use tabs between columns."
        )
    try:
        float(header[0])
    except ValueError:
        pass
    else:
        raise ConfoundsError(
            f"Confounds file {path} contains no header (first field {header[0]!r} is a "
            f"number). Is this an old fMRIPrep output? Only fMRIPrep >= 1.2.0 is supported."
        )
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise ConfoundsError(f"Confounds file {path} has duplicated column(s) {duplicated}.")


def _refuse_legacy_header(path: Path, header: list[str]) -> None:
    """Presets name fMRIPrep >= 1.2 columns: explain what to do with a 1.0/1.1 file."""
    camel = _camel_case(header)
    if camel:
        raise ConfoundsError(
            f"Confounds file {path} contains header in camel case ({camel[:5]}): it is an "
            f"fMRIPrep 1.0.x/1.1.x file, and the denoising presets need fMRIPrep >= 1.2.0 "
            f"column names. Select its columns with --confounds-columns instead (e.g. 'X' "
            f"'Y' 'Z' 'Rot[XYZ]' 'CSF' 'WhiteMatter'); --fd-threshold and "
            f"--std-dvars-threshold then use its FramewiseDisplacement and stdDVARS columns."
        )


def _check_row_lengths(path: Path, lines: list[str], n_columns: int) -> None:
    ragged = [
        (number, len(line.split("\t")))
        for number, line in enumerate(lines[1:], start=2)
        if line.strip() and len(line.split("\t")) != n_columns
    ]
    if ragged:
        shown = ", ".join(f"line {number} has {count}" for number, count in ragged[:5])
        raise ConfoundsError(
            f"Confounds file {path} has rows whose number of fields differs from the "
            f"header's {n_columns}: {shown}" + (" ..." if len(ragged) > 5 else "") + "."
        )


def _read_sidecar(path: Path, required: bool) -> dict[str, Any]:
    """Read the confounds JSON sidecar; {} when absent and not required."""
    if not path.is_file():
        if required:
            raise ConfoundsError(
                f"Could not find the JSON sidecar {path} of the confounds file. It is "
                f"necessary for CompCor, which is only supported for fMRIPrep >= 1.4.0."
            )
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ConfoundsError(
            f"Malformed JSON sidecar {path}: {err.msg} (line {err.lineno}, column {err.colno})."
        ) from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfoundsError(f"Cannot read JSON sidecar {path}: {err}") from err
    if not isinstance(meta, dict):
        raise ConfoundsError(
            f"Malformed JSON sidecar {path}: expected an object mapping column names to "
            f"metadata, got {type(meta).__name__}."
        )
    return meta


# --------------------------------------------------------------------------------------
# Selecting regressors
# --------------------------------------------------------------------------------------


def _load_confounds_file(
    confounds_file: Path, components: Sequence[str], params: dict[str, Any], demean: bool
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Select, censor and demean the confounds of one fMRIPrep confounds file."""
    raw = _read_confounds_tsv(confounds_file)
    _refuse_legacy_header(confounds_file, list(raw.columns))
    meta = _read_sidecar(_sidecar_path(confounds_file), required="compcor" in components)

    plan: dict[str, list[str]] = {}
    missing: dict[str, list[str]] = {}
    for component in ["non_steady_state", *components]:
        if component == "scrub":
            needed = ["framewise_displacement", "std_dvars"]
        else:
            needed = _component_columns(component, raw, meta, params, confounds_file)
        absent = [column for column in needed if column not in raw.columns]
        if absent or (not needed and _required_nonempty(component, params)):
            missing[component] = absent or [_EMPTY_DESCRIPTIONS[component]]
        else:
            plan[component] = needed
    if missing:
        raise ConfoundsError(_missing_message(confounds_file, missing))
    _check_numeric(
        raw, list(dict.fromkeys(c for cols in plan.values() for c in cols)), confounds_file
    )

    frames: list[pd.DataFrame] = []
    for component, needed in plan.items():
        if component == "scrub":
            frames.append(_scrub_regressors(raw, confounds_file, params, _MODERN_MEASURES))
        elif needed:
            frames.append(raw[needed])
        elif component == "high_pass":
            logger.warning("Confounds file %s has no cosine (high-pass) column.", confounds_file)
    selected = pd.concat(frames, axis=1) if frames else pd.DataFrame()
    return _finalize(selected, demean, confounds_file)


_EMPTY_DESCRIPTIONS = {
    "compcor": "CompCor component columns (none listed in the JSON sidecar for this choice)",
    "ica_aroma": "ICA-AROMA noise columns (names containing 'aroma')",
}


def _required_nonempty(component: str, params: dict[str, Any]) -> bool:
    """Whether finding no column for ``component`` is an error rather than a no-op."""
    if component == "ica_aroma":
        return params["ica_aroma"] == "basic"
    return component == "compcor"


def _component_columns(
    component: str,
    raw: pd.DataFrame,
    meta: dict[str, Any],
    params: dict[str, Any],
    confounds_file: Path,
) -> list[str]:
    """Names of the columns a noise component asks for (present in the file or not)."""
    if component == "motion":
        return _expand(_MOTION_BASES, params["motion"])
    if component == "wm_csf":
        return _expand(("csf", "white_matter"), params["wm_csf"])
    if component == "global_signal":
        return _expand(("global_signal",), params["global_signal"])
    if component == "high_pass":
        return [column for column in raw.columns if "cosine" in column]
    if component == "non_steady_state":
        return non_steady_state_columns(raw.columns)
    if component == "ica_aroma":
        if params["ica_aroma"] == "full":
            return []
        return [column for column in raw.columns if "aroma" in column]
    if component == "compcor":
        return _compcor_columns(meta, params["compcor"], params["n_compcor"], confounds_file)
    raise ValueError(f"{component} is not a supported type of confounds.")


def _expand(bases: Sequence[str], level: str) -> list[str]:
    """List the base columns, then their suffixed versions for an expansion level."""
    return [*bases] + [f"{base}_{suffix}" for base in bases for suffix in EXPANSION_SUFFIXES[level]]


def _compcor_columns(
    meta: dict[str, Any], compcor: str, n_compcor: int | str, confounds_file: Path
) -> list[str]:
    """CompCor column names chosen from the JSON sidecar, ``n_compcor`` per group.

    fMRIPrep numbers the components of each prefix (``a_comp_cor_00`` ...) in decreasing
    order of explained variance and lists the discarded ones under other names
    (``dropped_<k>``, ``"Retained": false``).  Components are taken from the sidecar's
    ``<prefix>_comp_cor_<k>`` entries in the order of ``k``; an entry marked
    ``"Retained": false`` is never selected, whatever its name (nilearn 0.12.1 ignores
    ``Retained``; fMRIPrep's own sidecars, including those shipped with nilearn, never mark
    a ``*_comp_cor_*`` entry so, so the selection is nilearn's on them).
    """
    columns: list[str] = []
    for prefix, mask in COMPCOR_GROUPS[compcor]:
        numbered = []
        for key in meta:
            found = re.fullmatch(rf"{prefix}_comp_cor_(\d+)", str(key))
            if found and _retained(meta, key, confounds_file):
                numbered.append((int(found.group(1)), key))
        names = [key for _, key in sorted(numbered)]
        if mask is not None:
            names = [name for name in names if _sidecar_mask(meta, name, confounds_file) == mask]
        if n_compcor != "all":
            names = names[:n_compcor]
        columns += names
    return columns


def _retained(meta: dict[str, Any], column: str, confounds_file: Path) -> bool:
    """Whether the sidecar keeps a CompCor component (``Retained`` absent or true)."""
    entry = meta.get(column)
    if not isinstance(entry, dict) or "Retained" not in entry:
        return True
    retained = entry["Retained"]
    if not isinstance(retained, bool):
        raise ConfoundsError(
            f"JSON sidecar {_sidecar_path(confounds_file)} has a non-boolean 'Retained' "
            f"value {retained!r} for CompCor column '{column}' (expected true or false)."
        )
    return retained


def _sidecar_mask(meta: dict[str, Any], column: str, confounds_file: Path) -> Any:
    entry = meta.get(column)
    if not isinstance(entry, dict) or "Mask" not in entry:
        raise ConfoundsError(
            f"JSON sidecar {_sidecar_path(confounds_file)} has no 'Mask' entry for "
            f"CompCor column '{column}'."
        )
    return entry["Mask"]


def _missing_message(confounds_file: Path, missing: dict[str, list[str]]) -> str:
    details = "; ".join(f"{component}: {columns}" for component, columns in missing.items())
    return (
        f"Confounds file {confounds_file} lacks column(s) needed by the strategy "
        f"(missing keywords {list(missing)}) -- {details}. You may want to try a different "
        f"denoising strategy."
    )


def _check_numeric(raw: pd.DataFrame, columns: list[str], confounds_file: Path) -> None:
    """Raise ConfoundsError if a needed column holds text that is not a number."""
    bad = []
    for column in columns:
        series = raw[column]
        if pd.api.types.is_numeric_dtype(series):
            continue
        coerced = pd.to_numeric(series, errors="coerce")
        rows = np.flatnonzero(coerced.isna().to_numpy() & series.notna().to_numpy())
        example = f"{series.iloc[rows[0]]!r} on data row {rows[0] + 1}" if rows.size else ""
        bad.append(f"'{column}' ({example})" if example else f"'{column}'")
    if bad:
        raise ConfoundsError(
            f"Confounds file {confounds_file} has non-numeric values in column(s) {', '.join(bad)}."
        )


_MODERN_MEASURES = {measure: measure for measure in MOTION_MEASURES}


def _scrub_regressors(
    raw: pd.DataFrame,
    confounds_file: Path,
    params: dict[str, Any],
    measures: dict[str, str | None],
) -> pd.DataFrame:
    """One-hot columns ``motion_outlier_<k>``, one per volume censored by scrubbing.

    ``measures`` maps ``framewise_displacement`` and ``std_dvars`` to the columns holding
    them (see :func:`motion_measure_columns`); a measure without a column censors nothing.
    """

    def values(measure: str) -> np.ndarray:
        column = measures[measure]
        if column is None:
            return np.full(len(raw), np.nan)
        return pd.to_numeric(raw[column], errors="coerce").to_numpy(dtype=float)

    framewise = values("framewise_displacement")
    dvars = values("std_dvars")
    # NaN (the first volume) compares False, so it is never an outlier.
    flagged = (framewise > params["fd_threshold"]) | (dvars > params["std_dvars_threshold"])
    if params["scrub"] > 0 and flagged.any():
        flagged = _censor_short_segments(flagged, params["scrub"])
    outliers = np.flatnonzero(flagged)
    logger.debug("Scrubbing censors %d volumes of %s", outliers.size, confounds_file)
    one_hot = np.zeros((len(raw), outliers.size), dtype=np.int64)
    one_hot[outliers, np.arange(outliers.size)] = 1
    columns = [f"motion_outlier_{k}" for k in range(outliers.size)]
    return pd.DataFrame(one_hot, columns=columns, index=raw.index)


def _censor_short_segments(flagged: np.ndarray, min_length: int) -> np.ndarray:
    """Also flag every run of unflagged volumes shorter than ``min_length``."""
    edges = np.diff(np.concatenate(([0], (~flagged).astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    stops = np.flatnonzero(edges == -1)
    result = flagged.copy()
    for start, stop in zip(starts, stops, strict=True):
        if stop - start < min_length:
            result[start:stop] = True
    return result


def _finalize(
    selected: pd.DataFrame, demean: bool, confounds_file: Path
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Split outlier columns into a sample mask; fill and demean the regressors."""
    outlier_columns = sorted(
        {c for c in selected.columns if any(marker in c for marker in _OUTLIER_MARKERS)}
    )
    regressor_columns = sorted(set(selected.columns) - set(outlier_columns))
    sample_mask = None
    if outlier_columns:
        flags = selected.loc[:, outlier_columns].sum(axis=1).to_numpy()
        sample_mask = np.flatnonzero(flags == 0)
        if sample_mask.size == 0:
            warnings.warn(
                f"All volumes of {confounds_file} were marked as motion outliers or "
                f"non-steady-state; every volume would be scrubbed.",
                RuntimeWarning,
                stacklevel=4,
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


# --------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------


def _parse_preset(text: str, origin: str, name: str) -> dict[str, Any]:
    """Validate the text of a preset file and return it as a dict."""
    try:
        preset = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfoundsError(
            f"Malformed {origin}: {err.msg} (line {err.lineno}, column {err.colno})."
        ) from err
    if not isinstance(preset, dict):
        raise ConfoundsError(f"Malformed {origin}: expected a JSON object.")
    unknown = sorted(set(preset) - set(_PRESET_KEYS))
    if unknown:
        raise ConfoundsError(f"{origin} has unknown key(s) {unknown}; allowed: {_PRESET_KEYS}.")
    parameters = preset.get("parameters")
    if not isinstance(parameters, dict) or "strategy" not in parameters:
        raise ConfoundsError(
            f"{origin} needs a 'parameters' object with a 'strategy' list of noise components."
        )
    strategy = parameters["strategy"]
    if not isinstance(strategy, list) or not all(isinstance(c, str) for c in strategy):
        raise ConfoundsError(f"{origin}: 'strategy' must be a list of strings, got {strategy!r}.")
    unknown = sorted(set(parameters) - {"strategy", *PRESET_PARAMETERS})
    if unknown:
        raise ConfoundsError(
            f"{origin} sets unknown parameter(s) {unknown}; allowed: {PRESET_PARAMETERS}."
        )
    overrides = preset.get("overrides", [])
    if not isinstance(overrides, list) or not set(overrides) <= set(PRESET_PARAMETERS):
        raise ConfoundsError(
            f"{origin}: 'overrides' must be a list of parameter names among "
            f"{PRESET_PARAMETERS}, got {overrides!r}."
        )
    _check_preset_values(origin, parameters)
    return {
        "name": str(preset.get("name", name)),
        "description": str(preset.get("description", "")),
        "parameters": dict(parameters),
        "overrides": list(overrides),
    }


def _check_preset_values(origin: str, parameters: dict[str, Any]) -> None:
    """Check a preset's strategy and values as :func:`load_confounds` would."""
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(load_confounds).parameters.items()
        if name in PRESET_PARAMETERS
    }
    merged = defaults | {k: v for k, v in parameters.items() if v is not None}
    try:
        _check_strategy(parameters["strategy"])
        _check_parameters(parameters["strategy"], merged)
    except ValueError as err:
        raise ConfoundsError(f"Invalid {origin}: {err}") from err
