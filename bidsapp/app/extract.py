"""One run -> denoised region timeseries for each atlas.

This module joins the core (confounds, masker, signal cleaning) for one fMRIPrep run. It
knows the run's files but nothing of the command line or of where outputs go. Two steps:

1. :func:`prepare_run` decides which image is read (the preprocessed BOLD, or fMRIPrep's
   ``desc-smoothAROMAnonaggr_bold`` for ICA-AROMA presets), in which space it lies, which
   brain mask goes with it and its repetition time, reading headers only. The workflow
   needs the space and voxel size to pick the atlas images.
2. :func:`extract_run` selects confounds and kept volumes, runs the labels masker for each
   atlas and lays the signals out in look-up-table order.

Both raise :class:`ExtractionError`, whose one-line message names the file at fault.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from bidsapp import image, stream
from bidsapp.app.config import DenoiseConfig, ExtractionConfig
from bidsapp.dataset.atlas import Atlas, region_ids, region_names
from bidsapp.dataset.query import GRID_ENTITIES, BoldRun
from bidsapp.errors import BidsappError

logger = logging.getLogger(__name__)

_NIFTI = re.compile(r"\.nii(\.gz)?$")
_SPACE = re.compile(r"_space-([A-Za-z0-9]+)_")
# Masker warnings that the coverage table already reports, region by region.
_COVERED_BY_COVERAGE = ("labels were removed",)
_DEFAULT_SCRUB = {"scrub": 5, "fd_threshold": 0.5, "std_dvars_threshold": 1.5}
# The engine's warning about zeroed values; the run's own notes say more (which volumes).
_ZEROED_MESSAGE = "Non-finite values detected"

#: A volume is censored when more than this fraction of the voxels the atlases read from
#: it (their union, inside the brain mask) are NaN or infinite: its region means would be
#: made of zeros. Volumes with fewer non-finite voxels are kept, those voxels set to 0 with
#: a warning, as nilearn does.
NON_FINITE_VOLUME_FRACTION = 0.1


class ExtractionError(BidsappError, RuntimeError):
    """A run that cannot be processed; the message names the file and the problem."""


class RunExcluded(ExtractionError):
    """A run left out on purpose, with status ``excluded``; the message says why.

    Raised when too little data is left after censoring (``--min-time``) or no residual
    degrees of freedom remain.
    """


@dataclass(frozen=True)
class RunInputs:
    """The files and facts one extraction needs, found by :func:`prepare_run`.

    Attributes
    ----------
    run : BoldRun
        The fMRIPrep run.
    bold : Path
        The image read: the preprocessed BOLD, or the ICA-AROMA image.
    space : str
        Template space of ``bold`` (``MNI152NLin6Asym`` for fMRIPrep's AROMA images).
    mask : Path or None
        Brain mask on the grid of ``bold``; None when there is none (AROMA images in a
        space without a brain mask).
    t_r : float
        Repetition time in seconds.
    n_volumes : int
        Volumes in ``bold``.
    voxel_size_mm : tuple of float
        Voxel size of ``bold`` in mm (to choose the atlas resolution).
    entities : dict of str to str
        Entities naming the outputs: the run's, with ``space`` of ``bold``.
    warnings : tuple of str
        Problems found so far that do not stop the run.
    """

    run: BoldRun
    bold: Path
    space: str
    mask: Path | None
    t_r: float
    n_volumes: int
    voxel_size_mm: tuple[float, float, float]
    entities: dict[str, str] = field(hash=False)
    warnings: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """Entities naming the run, e.g. ``sub-01_ses-1_task-rest_run-1``."""
        return self.run.name


@dataclass
class AtlasTimeseries:
    """Region timeseries of one run for one atlas.

    Attributes
    ----------
    atlas : Atlas
        The atlas the regions come from.
    timeseries : pandas.DataFrame
        One column per LUT region (LUT ``index`` order, background excluded, named by the
        LUT ``name``), one row per retained volume; NaN for regions below the coverage
        threshold, absent from the BOLD grid, or whose cleaned signal is not finite.
    coverage : pandas.Series
        Fraction of each LUT region's voxels inside the brain mask, on the BOLD grid (0 when
        the region has no voxel there).
    below_coverage : list of str
        Names of the regions written as n/a.
    """

    atlas: Atlas
    timeseries: pd.DataFrame
    coverage: pd.Series
    below_coverage: list[str] = field(default_factory=list)


@dataclass
class RunExtraction:
    """Everything extracted from one run.

    Attributes
    ----------
    inputs : RunInputs
        What was read.
    retained, censored : list of int
        0-based indices of the volumes kept and dropped.
    confound_columns : list of str
        Confound regressors projected out.
    preset : dict or None
        The ``load_confounds`` parameters used (after threshold overrides), or None for
        explicit columns and ``none``.
    mean_fd : float or None
        Mean framewise displacement (mm) over all volumes, when the confounds file has it.
    per_atlas : list of AtlasTimeseries
        One entry per atlas.
    warnings : list of str
        Problems worth telling the user that did not stop the run.
    seconds : float
        Wall time of the extraction.
    non_finite_volumes : list of int
        0-based indices of the volumes with more than :data:`NON_FINITE_VOLUME_FRACTION`
        of non-finite (NaN/Inf) voxels; they are censored (also listed in ``censored``).
        Sidecar key ``NonFiniteVolumes``.
    fd : numpy.ndarray or None
        Framewise displacement (mm) per volume, when the confounds file has it.
    non_steady_state : list of int
        0-based volumes fMRIPrep flagged as non-steady-state, and the dummy scans.
    thresholds : tuple of (float or None)
        FD (mm) and standardized DVARS censoring thresholds in force; None when that
        measure does not censor.
    mean_img : nibabel.Nifti1Image or None
        Mean BOLD over time from the extraction pass, when asked for (``mean_image``).
    """

    inputs: RunInputs
    retained: list[int]
    censored: list[int]
    confound_columns: list[str]
    preset: dict[str, Any] | None
    mean_fd: float | None
    per_atlas: list[AtlasTimeseries] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    non_finite_volumes: list[int] = field(default_factory=list)
    fd: np.ndarray | None = None
    non_steady_state: list[int] = field(default_factory=list)
    thresholds: tuple[float | None, float | None] = (None, None)
    mean_img: Any = None

    @property
    def run(self) -> BoldRun:
        """The input run."""
        return self.inputs.run


# ------------------------------------------------------------------ preparing


def uses_aroma_image(denoise: DenoiseConfig) -> bool:
    """Whether a denoising setting reads fMRIPrep's ``desc-smoothAROMAnonaggr_bold``.

    Parameters
    ----------
    denoise : DenoiseConfig
        The denoising setting.

    Returns
    -------
    bool
        True for presets with the ``ica_aroma`` component at level ``full`` (as nilearn).

    Raises
    ------
    ExtractionError
        If a JSON preset cannot be read.
    """
    if denoise.confounds_columns or denoise.name == "none":
        return False
    parameters = _preset(denoise)["parameters"]
    return "ica_aroma" in parameters["strategy"] and parameters.get("ica_aroma", "full") == "full"


def _preset(denoise: DenoiseConfig) -> dict[str, Any]:
    from bidsapp import confounds as conf

    try:
        return conf.load_preset(denoise.name)
    except conf.ConfoundsError as err:
        raise ExtractionError(one_line(str(err))) from err


def one_line(text: Any) -> str:
    """Collapse a message (e.g. an exception) to one line, for status tables and summaries."""
    return " ".join(str(text).split())


def _load_header(path: Path) -> nib.spatialimages.SpatialImage:
    import stat

    # Checked before nibabel opens it: a FIFO or device in a file's place would block.
    try:
        mode = path.stat().st_mode
    except OSError as err:
        raise ExtractionError(f"{path}: cannot read the NIfTI header ({err.strerror})") from err
    if not stat.S_ISREG(mode):
        raise ExtractionError(f"{path}: not a regular file, so not a NIfTI image")
    try:
        img = nib.load(str(path))
    except Exception as err:  # nibabel raises many types for broken files
        raise ExtractionError(f"{path}: cannot read the NIfTI header ({one_line(err)})") from err
    # Before anything (the printed memory bound included) is sized from the header's shape;
    # then the geometry every resampling and grid comparison relies on.
    try:
        stream.check_data_size(img)
        image.check_header(img)
    except (stream.StreamError, image.HeaderError) as err:
        raise ExtractionError(one_line(err)) from err
    return img


def _header_repetition_time(img) -> float:
    """Return the header's repetition time in seconds (pixdim[4] in its time unit), or 0."""
    zooms = img.header.get_zooms()
    t_r = float(zooms[3]) if len(zooms) > 3 else 0.0
    unit = img.header.get_xyzt_units()[1]
    if unit == "msec":
        t_r /= 1000.0
    elif unit == "usec":
        t_r /= 1e6
    return t_r if np.isfinite(t_r) else 0.0


def _repetition_time(run: BoldRun, img, bold: Path, warnings_: list[str]) -> float:
    """Return the sidecar's repetition time (s), else the header's, if plausible.

    A sidecar value that differs from the header's by more than 1 % is used, with a
    warning of the run (fMRIPrep copies the sidecar's; a disagreement means one was edited).
    """
    from bidsapp.dataset.query import QueryError, check_repetition_time

    header_t_r = _header_repetition_time(img)
    if run.t_r is not None:
        t_r = float(run.t_r)
        if header_t_r > 0 and abs(header_t_r - t_r) > 0.01 * t_r:
            message = (
                f"RepetitionTime {t_r:g} s in {run.sidecar or 'the sidecar'} differs from the "
                f"NIfTI header's {header_t_r:g} s in {bold.name}; using the sidecar's"
            )
            logger.warning(message)
            warnings_.append(message)
        return t_r
    if not header_t_r > 0:
        raise ExtractionError(
            f"{bold}: no RepetitionTime in the JSON sidecar and none in the NIfTI header; "
            "add RepetitionTime (seconds) to the sidecar"
        )
    try:
        check_repetition_time(header_t_r, f"{bold} (NIfTI header; no sidecar value)")
    except QueryError as err:
        raise ExtractionError(f"{err}; add RepetitionTime (seconds) to the sidecar") from err
    message = (
        f"{run.preproc_bold.name}: no RepetitionTime in the JSON sidecar; using the NIfTI "
        f"header's {header_t_r:g} s"
    )
    logger.info(message)
    warnings_.append(message)
    return header_t_r


def _check_grid(mask: Path, img, bold: Path) -> None:
    mask_img = _load_header(mask)
    if mask_img.shape[:3] != img.shape[:3]:
        raise ExtractionError(
            f"{mask}: brain mask shape {tuple(mask_img.shape[:3])} differs from the shape "
            f"{tuple(img.shape[:3])} of {bold.name}; they must share one voxel grid"
        )
    if not np.allclose(mask_img.affine, img.affine, atol=1e-3):
        shift = np.abs(mask_img.affine - img.affine).max()
        raise ExtractionError(
            f"{mask}: brain mask affine differs from that of {bold.name} (by up to "
            f"{shift:.3g}); they must share one voxel grid"
        )


def _sibling_mask(bold: Path) -> Path | None:
    """Return the ``desc-brain_mask`` fMRIPrep wrote beside an image (same grid), if any."""
    stem = _NIFTI.sub("", bold.name)
    stem = re.sub(r"_desc-[A-Za-z0-9]+_bold$", "", stem)
    for extension in (".nii.gz", ".nii"):
        candidate = bold.with_name(f"{stem}_desc-brain_mask{extension}")
        if candidate.is_file():
            return candidate
    return None


def prepare_run(run: BoldRun, denoise: DenoiseConfig) -> RunInputs:
    """Find the image, space, mask and repetition time of one run (headers only).

    For ICA-AROMA presets the image is fMRIPrep's ``desc-smoothAROMAnonaggr_bold``, which
    fMRIPrep writes in ``MNI152NLin6Asym`` whatever the other output spaces: its space comes
    from its file name, and its brain mask is the ``desc-brain_mask`` of the same space and
    resolution when fMRIPrep wrote one; otherwise regions are extracted without a mask, with
    a warning.

    Parameters
    ----------
    run : BoldRun
        The run, as :func:`bidsapp.dataset.query.find_runs` found it.
    denoise : DenoiseConfig
        Denoising setting (decides which image is read).

    Returns
    -------
    RunInputs
        What :func:`extract_run` reads.

    Raises
    ------
    ExtractionError
        If the image is missing or unreadable, not 4D, the brain mask is missing (for the
        preprocessed BOLD) or on another grid, or the repetition time is unknown.
    """
    if run.problem is not None:
        raise ExtractionError(run.problem)
    notes: list[str] = []
    aroma = uses_aroma_image(denoise)
    if aroma:
        if run.aroma_problem is not None:
            raise ExtractionError(run.aroma_problem)
        if run.aroma_bold is None:
            raise ExtractionError(
                f"{run.preproc_bold}: denoise strategy '{denoise.label}' needs fMRIPrep's "
                f"desc-smoothAROMAnonaggr_bold image of {run.name}, and there is none (run "
                "fMRIPrep < 23.1 with --use-aroma, or choose another --denoise-strategy)"
            )
        bold = run.aroma_bold
    else:
        bold = run.preproc_bold
    img = _load_header(bold)
    if len(img.shape) != 4 or img.shape[3] < 2:
        raise ExtractionError(f"{bold}: expected a 4D BOLD series, got shape {img.shape}")
    t_r = _repetition_time(run, img, bold, notes)
    entities = dict(run.entities)
    if aroma:
        found = _SPACE.search(bold.name)
        if found is None:
            raise ExtractionError(f"{bold}: the file name has no space- entity")
        space = found.group(1)
        entities = {k: v for k, v in entities.items() if k not in GRID_ENTITIES}
        entities["space"] = space
        mask = _sibling_mask(bold)
        if mask is None:
            message = (
                f"{bold.name}: no desc-brain_mask in {space} beside it; regions are "
                "extracted without a brain mask (coverage counts every voxel)"
            )
            logger.info(message)
            notes.append(message)
    else:
        space = run.entities.get("space", "")
        mask = run.brain_mask
        if mask is None:
            raise ExtractionError(
                f"{bold}: no desc-brain_mask of the same space and resolution was found beside it"
            )
    if mask is not None:
        _check_grid(mask, img, bold)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    return RunInputs(
        run=run,
        bold=bold,
        space=space,
        mask=mask,
        t_r=t_r,
        n_volumes=int(img.shape[3]),
        voxel_size_mm=zooms,  # type: ignore[arg-type]
        entities=entities,
        warnings=tuple(notes),
    )


# ------------------------------------------------------------------ confounds


def _read_confounds_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep="\t", na_values=["n/a"])
    except Exception as err:  # pandas raises several types for malformed files
        raise ExtractionError(f"{path}: cannot read the confounds TSV ({one_line(err)})") from err


def _numeric(table: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)


def _outliers(table: pd.DataFrame, fd: float, dvars: float, min_segment: int) -> np.ndarray:
    """Volumes censored by scrubbing, with nilearn's rule for short kept segments."""
    from bidsapp.confounds import motion_measure_columns

    # fMRIPrep 1.0/1.1 files name them FramewiseDisplacement and stdDVARS.
    measures = motion_measure_columns(table.columns)
    flagged = np.zeros(len(table), dtype=bool)
    with np.errstate(invalid="ignore"):
        if np.isfinite(fd) and measures["framewise_displacement"] is not None:
            flagged |= _numeric(table, measures["framewise_displacement"]) > fd
        if np.isfinite(dvars) and measures["std_dvars"] is not None:
            flagged |= _numeric(table, measures["std_dvars"]) > dvars
    if min_segment > 0 and flagged.any():
        edges = np.diff(np.concatenate(([0], (~flagged).astype(np.int8), [0])))
        for start, stop in zip(
            np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True
        ):
            if stop - start < min_segment:
                flagged[start:stop] = True
    return flagged


def _preset_parameters(denoise: DenoiseConfig) -> dict[str, Any]:
    """``load_confounds`` parameters of the preset, with the censoring overrides applied."""
    from bidsapp import confounds as conf

    if denoise.name == "none":
        parameters: dict[str, Any] = {"strategy": []}
    else:
        parameters = _preset(denoise)["parameters"]
    parameters = conf.apply_censoring_overrides(
        parameters,
        fd_threshold=denoise.fd_threshold,
        std_dvars_threshold=denoise.std_dvars_threshold,
    )
    parameters = {k: v for k, v in parameters.items() if v is not None}
    parameters["strategy"] = list(parameters["strategy"])
    return parameters


def _censoring(denoise: DenoiseConfig, parameters: dict[str, Any] | None) -> tuple:
    """(fd, std_dvars, min segment) thresholds in force; inf disables a measure."""
    inf = float("inf")
    if parameters is None:  # explicit columns
        return (denoise.fd_threshold or inf, denoise.std_dvars_threshold or inf, 5)
    if "scrub" not in parameters["strategy"]:
        return (inf, inf, 0)
    merged = {**_DEFAULT_SCRUB, **parameters}
    return (merged["fd_threshold"], merged["std_dvars_threshold"], merged["scrub"])


@dataclass
class ConfoundsSelection:
    """Confounds and kept volumes of one run.

    Attributes
    ----------
    confounds : pandas.DataFrame or None
        One row per volume; None when nothing is regressed out.
    sample_mask : numpy.ndarray or None
        Indices of kept volumes; None keeps every volume.
    parameters : dict or None
        ``load_confounds`` parameters used; None for explicit columns.
    mean_fd : float or None
        Mean framewise displacement (mm) over all volumes, if the confounds file has it.
    fd : numpy.ndarray or None
        Framewise displacement (mm) per volume, if the confounds file has it.
    non_steady_state : list of int
        Volumes flagged by fMRIPrep's non-steady-state columns, and the dummy scans.
    """

    confounds: pd.DataFrame | None
    sample_mask: np.ndarray | None
    parameters: dict[str, Any] | None
    mean_fd: float | None
    fd: np.ndarray | None = None
    non_steady_state: list[int] = field(default_factory=list)


def select_confounds(
    inputs: RunInputs, denoise: DenoiseConfig, notes: list[str]
) -> ConfoundsSelection:
    """Select the confounds and kept volumes of one run.

    Parameters
    ----------
    inputs : RunInputs
        From :func:`prepare_run`.
    denoise : DenoiseConfig
        Preset or explicit columns, censoring thresholds and dummy scans.
    notes : list of str
        Warnings are appended here.

    Returns
    -------
    ConfoundsSelection
        Confounds, kept volumes, parameters used and mean framewise displacement.

    Raises
    ------
    ExtractionError
        If the confounds file is missing, malformed, lacks a column, has another number of
        rows than the image has volumes, or has missing values in kept volumes.
    """
    from bidsapp import confounds as conf

    run = inputs.run
    parameters = None if denoise.confounds_columns else _preset_parameters(denoise)
    needs_file = bool(
        denoise.confounds_columns or parameters["strategy"] or denoise.dummy_scans is None
    )
    if run.confounds is None:
        if needs_file and (denoise.confounds_columns or parameters["strategy"]):
            raise ExtractionError(
                f"{run.preproc_bold}: no desc-confounds_timeseries.tsv found for {run.name}"
            )
        if needs_file:
            notes.append(
                f"{run.name}: no confounds file, so fMRIPrep's non-steady-state volumes are "
                "unknown; every volume is kept (set --dummy-scans)"
            )
        confounds, sample_mask, table = None, None, None
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                if denoise.confounds_columns:
                    confounds, sample_mask = conf.load_confounds_columns(
                        str(run.preproc_bold),
                        denoise.confounds_columns,
                        fd_threshold=denoise.fd_threshold,
                        std_dvars_threshold=denoise.std_dvars_threshold,
                    )
                else:
                    confounds, sample_mask = conf.load_confounds(
                        str(inputs.bold),
                        **{**parameters, "strategy": tuple(parameters["strategy"])},
                    )
            except (conf.ConfoundsError, ValueError, OSError) as err:
                raise ExtractionError(one_line(err)) from err
        for warning in caught:
            text = str(warning.message)
            if "strategy is empty" not in text and "motion outliers" not in text:
                notes.append(one_line(text))
        table = _read_confounds_table(run.confounds)
        if len(table) != inputs.n_volumes:
            raise ExtractionError(
                f"{run.confounds}: {len(table)} rows but {inputs.bold.name} has "
                f"{inputs.n_volumes} volumes"
            )
        if confounds is not None and confounds.shape[1] == 0:
            confounds = None
    if denoise.dummy_scans is not None:
        fd, dvars, min_segment = _censoring(denoise, parameters)
        keep = np.ones(inputs.n_volumes, dtype=bool)
        keep[: denoise.dummy_scans] = False
        if table is not None:
            keep &= ~_outliers(table, fd, dvars, min_segment)
        sample_mask = None if keep.all() else np.flatnonzero(keep)
    if confounds is not None:
        confounds = _check_finite(confounds, sample_mask, run.confounds, table)
    mean_fd = None
    fd_values = None
    fd_column = None if table is None else conf.motion_measure_columns(table.columns)
    fd_column = None if fd_column is None else fd_column["framewise_displacement"]
    if table is not None and fd_column is not None:
        fd_values = _numeric(table, fd_column)
        mean_fd = float(np.nanmean(fd_values)) if np.isfinite(fd_values).any() else None
    nss = _non_steady_state(table, denoise.dummy_scans)
    return ConfoundsSelection(confounds, sample_mask, parameters, mean_fd, fd_values, nss)


def _non_steady_state(table: pd.DataFrame | None, dummy_scans: int | None) -> list[int]:
    """Volumes of fMRIPrep's non-steady-state columns, and the dummy scans (for the report)."""
    from bidsapp.confounds import non_steady_state_columns

    volumes: set[int] = set()
    if table is not None:
        for column in non_steady_state_columns(table.columns):
            flagged = np.flatnonzero(table[column].fillna(0).to_numpy() > 0)
            volumes.update(int(v) for v in flagged)
    if isinstance(dummy_scans, int) and dummy_scans > 0:
        volumes.update(range(dummy_scans))
    return sorted(volumes)


def censoring_thresholds(
    denoise: DenoiseConfig, parameters: dict[str, Any] | None
) -> tuple[float | None, float | None]:
    """FD (mm) and standardized DVARS thresholds that censor, None for a measure that does not.

    Parameters
    ----------
    denoise : DenoiseConfig
        The denoising setting.
    parameters : dict or None
        The ``load_confounds`` parameters used (:attr:`ConfoundsSelection.parameters`).

    Returns
    -------
    tuple of (float or None)
        The thresholds of :func:`_censoring` (the ones applied), None where disabled.
    """
    fd, dvars, _ = _censoring(denoise, parameters)
    return tuple(float(v) if np.isfinite(v) and v > 0 else None for v in (fd, dvars))


def preset_description(denoise: DenoiseConfig) -> str:
    """Say in words what a denoising setting regresses (the preset's description).

    Parameters
    ----------
    denoise : DenoiseConfig
        The denoising setting.

    Returns
    -------
    str
        The explicit columns, "no confound regression", or the preset's description.
    """
    if denoise.confounds_columns:
        return "explicit confound columns: " + ", ".join(denoise.confounds_columns)
    if not denoise.name or denoise.name == "none":
        return "no confound regression"
    try:
        return str(_preset(denoise).get("description") or denoise.name)
    except Exception:  # a preset file that moved: its name, nothing worse
        return str(denoise.name)


_EXPANSIONS = ("_derivative1_power2", "_derivative1", "_power2")


def _infinite_sources(table: pd.DataFrame | None, columns: Sequence[str]) -> str | None:
    """Where the TSV itself holds +-inf in the columns behind ``columns``, if anywhere.

    Demeaning spreads one infinity over every volume of its regressor, so the volumes of
    the regressors would point the user at the wrong rows; the TSV's own rows are named.
    """
    if table is None:
        return None
    sources = []
    for column in columns:
        base = next((column[: -len(e)] for e in _EXPANSIONS if column.endswith(e)), column)
        if base in table.columns and base not in sources:
            sources.append(base)
    found = []
    for base in sources:
        rows = np.flatnonzero(np.isinf(_numeric(table, base)))
        if rows.size:
            where = ", ".join(str(v) for v in rows[:5]) + (" ..." if rows.size > 5 else "")
            found.append(f"{base} (volume(s) {where})")
    return ", ".join(found) or None


def _check_finite(
    confounds: pd.DataFrame,
    sample_mask: np.ndarray | None,
    path: Path | None,
    table: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Refuse missing values in kept volumes; zero them in censored ones (never used)."""
    values = confounds.to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if not bad.any():
        return confounds
    kept = np.ones(len(values), dtype=bool)
    if sample_mask is not None:
        kept[:] = False
        kept[sample_mask] = True
    rows = np.flatnonzero(bad[kept].any(axis=1))
    if rows.size:
        volumes = np.flatnonzero(kept)[rows]
        columns = [c for c, b in zip(confounds.columns, bad[kept].any(axis=0), strict=True) if b]
        shown = ", ".join(columns[:4]) + (
            f" (+{len(columns) - 4} more)" if len(columns) > 4 else ""
        )
        infinite = _infinite_sources(table, columns)
        if infinite:
            raise ExtractionError(f"{path}: infinite values in column(s) {infinite}")
        where = ", ".join(str(v) for v in volumes[:5]) + (" ..." if volumes.size > 5 else "")
        raise ExtractionError(
            f"{path}: missing or non-finite values (n/a) at volume(s) {where} in column(s) {shown}"
        )
    return confounds.where(np.isfinite(values), 0.0)


# ------------------------------------------------------------------ extraction


def _masker_warnings(caught: Sequence[warnings.WarningMessage]) -> list[str]:
    notes = []
    for warning in caught:
        if issubclass(warning.category, DeprecationWarning):
            continue
        text = one_line(str(warning.message))
        if any(marker in text for marker in _COVERED_BY_COVERAGE):
            continue
        notes.append(text)
    return notes


def extract_run(
    inputs: RunInputs,
    atlases: Sequence[Atlas],
    denoise: DenoiseConfig,
    extraction: ExtractionConfig,
    *,
    mean_image: bool = False,
) -> RunExtraction:
    """Extract denoised region timeseries of one run for each atlas.

    The result equals ``NiftiLabelsMasker(labels_img=atlas, mask_img=mask,
    strategy=..., standardize=..., detrend=..., low_pass=..., high_pass=..., t_r=TR,
    smoothing_fwhm=...).fit_transform(bold, confounds=confounds, sample_mask=sample_mask)``
    with the confounds and sample mask of ``load_confounds_strategy`` (nilearn 0.12.1),
    with columns placed in look-up-table order and ``n/a`` for regions below
    ``extraction.min_coverage``.

    What the app adds to the masker, so that no result is silently wrong:

    * the BOLD header's claims are checked against its file size before anything is
      allocated;
    * a run is excluded (:class:`RunExcluded`) when less than ``denoise.min_time``
      seconds of data are left after censoring, or no residual degrees of freedom: kept
      volumes minus confound regressors, minus 1 for the mean, minus 1 more with
      ``detrend`` (a linear trend), must be positive. A Butterworth filter is not a
      regression and is not counted. Checked before the BOLD is read, and again after
      the non-finite censoring below;
    * a requested low-pass or high-pass cut-off at or above the Nyquist frequency
      (0.5 / TR) fails the run, and so does any :class:`bidsapp.signal.FilterWarning`
      (a filter adjusted or skipped while cleaning): a result is never called filtered
      when it is not. A high-pass below 1 / (kept duration) is applied, with a warning;
    * volumes with more than :data:`NON_FINITE_VOLUME_FRACTION` of non-finite voxels are
      censored (counted during the one pass over the BOLD), listed in
      ``non_finite_volumes`` and ``censored``, with a warning;
    * a region whose raw signal is constant over the kept volumes (all zero, say) is
      written as n/a with a warning naming it; an atlas left without any region with a
      signal fails the run.

    Parameters
    ----------
    inputs : RunInputs
        From :func:`prepare_run`.
    atlases : sequence of Atlas
        Atlases in ``inputs.space``.
    denoise : DenoiseConfig
        Confound selection, censoring and ``min_time``.
    extraction : ExtractionConfig
        Reduction strategy, filtering, standardization and coverage threshold.
    mean_image : bool, default=False
        Also compute the mean BOLD over time in the same pass (for the report).

    Returns
    -------
    RunExtraction
        Timeseries per atlas and the run's bookkeeping (kept volumes, confounds, FD).

    Raises
    ------
    RunExcluded
        When too little data or no degrees of freedom are left (status ``excluded``).
    ExtractionError
        When an input file is missing, unreadable or inconsistent, or a filter cannot be
        applied; the message names the file.
    """
    started = time.perf_counter()
    _check_size(inputs, atlases, extraction)
    notes = list(inputs.warnings)
    selection = select_confounds(inputs, denoise, notes)
    confounds, sample_mask = selection.confounds, selection.sample_mask
    n_volumes = inputs.n_volumes
    retained = list(range(n_volumes)) if sample_mask is None else [int(i) for i in sample_mask]
    n_regressors = 0 if confounds is None else confounds.shape[1]
    _check_enough_data(inputs, retained, n_regressors, denoise, extraction)
    _check_filters(inputs, retained, extraction, notes)
    result = RunExtraction(
        inputs=inputs,
        retained=retained,
        censored=sorted(set(range(n_volumes)) - set(retained)),
        confound_columns=[] if confounds is None else [str(c) for c in confounds.columns],
        preset=selection.parameters,
        mean_fd=selection.mean_fd,
        warnings=notes,
        fd=selection.fd,
        non_steady_state=selection.non_steady_state,
        thresholds=censoring_thresholds(denoise, selection.parameters),
    )
    _extract_atlases(result, inputs, atlases, confounds, denoise, extraction, mean_image)
    result.seconds = time.perf_counter() - started
    return result


def _check_size(inputs: RunInputs, atlases: Sequence[Atlas], extraction: ExtractionConfig) -> None:
    """Refuse a BOLD whose header lies about its size, or too large for this machine.

    Both checks come before anything is sized from the header (confounds, sample masks,
    atlases resampled onto the BOLD grid), so that a hostile header fails its run with a
    message instead of a ``MemoryError`` or the out-of-memory killer.
    """
    from bidsapp import engine

    try:
        stream.check_data_size(inputs.bold)
        img = nib.load(str(inputs.bold))
    except (stream.StreamError, OSError, ValueError) as err:
        raise ExtractionError(one_line(err)) from err
    needed = engine.memory_bound(
        img.shape,
        img.get_data_dtype(),
        n_atlases=max(len(atlases), 1),
        n_regions=max((len(atlas.lut) for atlas in atlases), default=1),
        smoothing=extraction.smoothing_fwhm is not None,
    )
    available = engine.physical_memory()
    if available is not None and needed > available:
        grid = "x".join(str(int(n)) for n in img.shape)
        raise ExtractionError(
            f"{inputs.bold}: extracting this {grid} series needs about {needed / 1e9:.3g} GB "
            f"of memory, more than this machine's {available / 1e9:.3g} GB"
        )


def _check_enough_data(
    inputs: RunInputs,
    retained: Sequence[int],
    n_regressors: int,
    denoise: DenoiseConfig,
    extraction: ExtractionConfig,
    non_finite: int = 0,
) -> None:
    """Raise :class:`RunExcluded` below ``--min-time`` or without degrees of freedom."""
    n_kept = len(retained)
    seconds = n_kept * inputs.t_r
    because = f", {non_finite} censored for non-finite values" if non_finite else ""
    left = (
        f"{seconds:g} s of data left after censoring ({n_kept} of {inputs.n_volumes} "
        f"volumes{because}, TR {inputs.t_r:g} s)"
    )
    if denoise.min_time and seconds < denoise.min_time:
        raise RunExcluded(f"{inputs.bold}: {left}, below --min-time {denoise.min_time:g} s")
    # The mean (removed by detrending, standardizing or centring the confounds) and, with
    # detrend, a linear trend are fitted besides the confound regressors.
    fitted = n_regressors + 1 + int(bool(extraction.detrend))
    if n_kept - fitted <= 0:
        trend = " and a linear trend" if extraction.detrend else ""
        raise RunExcluded(
            f"{inputs.bold}: no residual degrees of freedom: {left} for {n_regressors} "
            f"confound regressor(s) plus the mean{trend}"
        )


def _check_filters(
    inputs: RunInputs, retained: Sequence[int], extraction: ExtractionConfig, notes: list[str]
) -> None:
    """Fail a run whose requested filter cannot be applied at its repetition time."""
    nyquist = 0.5 / inputs.t_r
    for option, cutoff in (
        ("--low-pass", extraction.low_pass),
        ("--high-pass", extraction.high_pass),
    ):
        if cutoff is not None and cutoff >= nyquist:
            raise ExtractionError(
                f"{inputs.bold}: {option} {cutoff:g} Hz cannot be applied at TR "
                f"{inputs.t_r:g} s: it is at or above the Nyquist frequency ({nyquist:g} Hz)"
            )
    if extraction.high_pass is not None and retained:
        lowest = 1.0 / (len(retained) * inputs.t_r)
        if extraction.high_pass < lowest:
            notes.append(
                f"{inputs.bold.name}: --high-pass {extraction.high_pass:g} Hz is below "
                f"1/(kept duration) = {lowest:.3g} Hz: it removes little more than slow drift"
            )


def _extract_atlases(
    result: RunExtraction,
    inputs: RunInputs,
    atlases: Sequence[Atlas],
    confounds: pd.DataFrame | None,
    denoise: DenoiseConfig,
    extraction: ExtractionConfig,
    mean_image: bool = False,
) -> None:
    """Extract every atlas in one pass over the BOLD, appending to ``result.per_atlas``."""
    from bidsapp.maskers import stream_labels_signals
    from bidsapp.signal import FilterWarning

    notes = result.warnings
    standardize = False if extraction.standardize == "none" else extraction.standardize
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            raw = stream_labels_signals(
                str(inputs.bold),
                [str(atlas.dseg) for atlas in atlases],
                mask_img=None if inputs.mask is None else str(inputs.mask),
                confounds=confounds,
                strategy=extraction.strategy,
                standardize=standardize,
                detrend=extraction.detrend,
                low_pass=extraction.low_pass,
                high_pass=extraction.high_pass,
                t_r=inputs.t_r,
                smoothing_fwhm=extraction.smoothing_fwhm,
                resampling_target="data",
                keep_masked_labels=False,
                mean_img=mean_image,
            )
        except MemoryError as err:  # its message is empty: say what needed the memory
            raise ExtractionError(
                f"{inputs.bold}: not enough memory to extract region signals on its grid of "
                f"{'x'.join(str(n) for n in _grid_shape(inputs))} voxels (one volume of "
                "float64 values, the atlases resampled onto that grid)"
            ) from err
        except Exception as err:  # broken gzip, bad data: one-line reason
            logger.debug("extraction of %s failed", inputs.bold, exc_info=True)
            raise ExtractionError(
                f"{inputs.bold}: cannot extract region signals "
                f"({type(err).__name__}: {one_line(err)})"
            ) from err
        _censor_non_finite(result, raw.non_finite_fraction, confounds, denoise, extraction)
        sample_mask = (
            None if len(result.retained) == inputs.n_volumes else np.asarray(result.retained)
        )
        try:
            extracted = raw.clean(sample_mask=sample_mask)
        except Exception as err:  # signal errors: one-line reason
            logger.debug("cleaning of %s failed", inputs.bold, exc_info=True)
            raise ExtractionError(
                f"{inputs.bold}: cannot clean region signals "
                f"({type(err).__name__}: {one_line(err)})"
            ) from err
    for warning in caught:
        if issubclass(warning.category, FilterWarning):
            raise ExtractionError(
                f"{inputs.bold}: the requested filter cannot be applied at TR "
                f"{inputs.t_r:g} s ({one_line(warning.message)})"
            )
    for note in _masker_warnings(caught):
        if note not in notes and not note.startswith(_ZEROED_MESSAGE):
            notes.append(note)
    result.mean_img = extracted.mean_img
    kept = np.asarray(result.retained)
    for atlas, item, signals, ids in zip(atlases, extracted, raw.raw, raw.region_ids, strict=True):
        values = np.asarray(signals)
        if values.ndim == 1:
            values = values[np.newaxis, :]
        flat = values[kept]
        constant = {
            int(label)
            for label, is_flat in zip(ids, np.all(flat == flat[:1], axis=0), strict=True)
            if is_flat
        }
        frame = _lut_frame(
            atlas, item.masker, np.asarray(item.signals), extraction.min_coverage, notes, constant
        )
        if not np.isfinite(frame.timeseries.to_numpy()).all(axis=0).any():
            raise ExtractionError(
                f"{inputs.bold}: no region of atlas {atlas.label} has a signal (every region "
                "is constant over the kept volumes, e.g. an all-zero BOLD, or below the "
                "coverage threshold)"
            )
        result.per_atlas.append(frame)


def _grid_shape(inputs: RunInputs) -> tuple[int, ...]:
    try:
        return tuple(int(n) for n in nib.load(str(inputs.bold)).shape[:3])
    except Exception:  # only for a message
        return ()


def _censor_non_finite(
    result: RunExtraction,
    fraction: np.ndarray | None,
    confounds: pd.DataFrame | None,
    denoise: DenoiseConfig,
    extraction: ExtractionConfig,
) -> None:
    """Censor the volumes destroyed by NaN/Inf (counted by the engine's one pass)."""
    if fraction is None or not np.any(fraction > 0):
        return
    inputs = result.inputs
    bad = np.flatnonzero(fraction > NON_FINITE_VOLUME_FRACTION)
    few = np.flatnonzero((fraction > 0) & (fraction <= NON_FINITE_VOLUME_FRACTION))
    if few.size:
        result.warnings.append(
            f"{inputs.bold.name}: {few.size} volume(s) have a few non-finite (NaN/Inf) voxels "
            f"(at most {fraction[few].max():.2%} of the voxels read), set to 0 as nilearn does: "
            f"{_shown(few)}"
        )
    if not bad.size:
        return
    if bad.size == len(fraction):
        # Not a censoring decision: the file holds no usable data.
        raise ExtractionError(
            f"{inputs.bold}: every volume has more than {NON_FINITE_VOLUME_FRACTION:.0%} "
            "non-finite (NaN/Inf) voxels in the atlas regions: no usable data"
        )
    result.non_finite_volumes = [int(i) for i in bad]
    bad_set = set(result.non_finite_volumes)
    dropped = [i for i in result.retained if i in bad_set]
    result.retained = [i for i in result.retained if i not in bad_set]
    result.censored = sorted(set(result.censored) | bad_set)
    result.warnings.append(
        f"{inputs.bold.name}: {bad.size} volume(s) with more than "
        f"{NON_FINITE_VOLUME_FRACTION:.0%} non-finite (NaN/Inf) voxels censored: {_shown(bad)}"
    )
    n_regressors = 0 if confounds is None else confounds.shape[1]
    _check_enough_data(
        inputs, result.retained, n_regressors, denoise, extraction, non_finite=len(dropped)
    )


def _shown(indices: np.ndarray, limit: int = 10) -> str:
    """Volume indices for a message, the first ``limit`` of them."""
    shown = ", ".join(str(int(i)) for i in indices[:limit])
    return shown + (f" (+{len(indices) - limit} more)" if len(indices) > limit else "")


def _lut_frame(
    atlas: Atlas,
    masker: Any,
    signals: np.ndarray,
    min_coverage: float,
    notes: list[str],
    constant: set[int] | frozenset[int] = frozenset(),
) -> AtlasTimeseries:
    """Place the masker's columns into the LUT's order, n/a where coverage is too low.

    Regions whose label is in ``constant`` (raw signal constant over the kept volumes)
    are n/a too, with a warning naming them.
    """
    from bidsapp.regions import region_coverage

    ids = region_ids(atlas)
    names = region_names(atlas)
    coverage = region_coverage(masker.labels_img_, masker.mask_img_, region_ids=ids)
    coverage = np.nan_to_num(np.asarray(coverage, dtype=float), nan=0.0)
    column_of = {
        int(label): position
        for position, label in masker.region_ids_.items()
        if position != "background"
    }
    if signals.ndim == 1:
        signals = signals[np.newaxis, :]
    data = np.full((signals.shape[0], len(ids)), np.nan)
    not_finite = []
    flat = []
    for j, label in enumerate(ids):
        if label not in column_of or coverage[j] <= 0 or coverage[j] < min_coverage:
            continue
        if int(label) in constant:
            flat.append(names[j])
            continue
        column = signals[:, column_of[label]]
        if np.isfinite(column).all():
            data[:, j] = column
        else:
            not_finite.append(names[j])
    if not_finite:
        notes.append(
            f"atlas {atlas.label}: non-finite cleaned signal in {len(not_finite)} region(s) "
            f"({', '.join(not_finite[:5])}{' ...' if len(not_finite) > 5 else ''}); written as n/a"
        )
    if flat:
        notes.append(
            f"atlas {atlas.label}: raw signal constant over the kept volumes (no data) in "
            f"{len(flat)} region(s) ({', '.join(flat[:5])}{' ...' if len(flat) > 5 else ''}); "
            "written as n/a"
        )
    timeseries = pd.DataFrame(data, columns=names)
    below = [
        name for name, column in zip(names, data.T, strict=True) if not np.isfinite(column).all()
    ]
    return AtlasTimeseries(
        atlas=atlas,
        timeseries=timeseries,
        coverage=pd.Series(coverage, index=names, name="coverage"),
        below_coverage=below,
    )
