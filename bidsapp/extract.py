"""One run -> denoised region timeseries for each atlas.

This module joins the core (confounds, masker, signal cleaning) for one fMRIPrep run. It
knows the run's files but nothing of the command line or of where outputs go.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from bidsapp.atlas import Atlas
from bidsapp.config import DenoiseConfig, ExtractionConfig
from bidsapp.query import BoldRun

logger = logging.getLogger(__name__)


class ExtractionError(RuntimeError):
    """A run that cannot be processed; the message names the file and the problem."""


@dataclass
class AtlasTimeseries:
    """Region timeseries of one run for one atlas.

    Attributes
    ----------
    atlas : Atlas
        The atlas the regions come from.
    timeseries : pandas.DataFrame
        One column per LUT region (LUT ``index`` order, named by the LUT ``name``), one row
        per retained volume; NaN for regions below the coverage threshold or absent.
    coverage : pandas.Series
        Fraction of each LUT region's voxels inside the brain mask (0 when absent).
    """

    atlas: Atlas
    timeseries: pd.DataFrame
    coverage: pd.Series


@dataclass
class RunExtraction:
    """Everything extracted from one run.

    Attributes
    ----------
    run : BoldRun
        The input run.
    bold : Path
        The BOLD image actually read (the AROMA image for ``ica_aroma``).
    t_r : float
        Repetition time in seconds.
    n_volumes : int
        Volumes in the BOLD series.
    retained, censored : list of int
        0-based indices of the volumes kept and dropped.
    confound_columns : list of str
        Confound regressors projected out.
    mean_fd : float or None
        Mean framewise displacement (mm) over all volumes, when the confounds file has it.
    framewise_displacement : list of float or None
        Framewise displacement per volume (NaN where fMRIPrep writes n/a).
    per_atlas : list of AtlasTimeseries
        One entry per atlas.
    warnings : list of str
        Problems worth telling the user that did not stop the run.
    seconds : float
        Wall time of the extraction.
    """

    run: BoldRun
    bold: Path
    t_r: float
    n_volumes: int
    retained: list[int]
    censored: list[int]
    confound_columns: list[str]
    mean_fd: float | None
    framewise_displacement: list[float] | None
    per_atlas: list[AtlasTimeseries] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _bold_image(run: BoldRun, denoise: DenoiseConfig) -> Path:
    if _uses_aroma(denoise):
        if run.aroma_bold is None:
            raise ExtractionError(
                f"{run.preproc_bold.name}: denoise strategy '{denoise.name}' needs fMRIPrep's "
                "desc-smoothAROMAnonaggr_bold image for this run, and there is none (was "
                "fMRIPrep run with --use-aroma?)"
            )
        return run.aroma_bold
    return run.preproc_bold


def _uses_aroma(denoise: DenoiseConfig) -> bool:
    if denoise.confounds_columns or denoise.name == "none":
        return False
    from bidsapp.confounds import load_preset

    parameters = load_preset(denoise.name)["parameters"]
    return "ica_aroma" in parameters["strategy"] and parameters.get("ica_aroma") == "full"


def _load_header(path: Path) -> nib.Nifti1Image:
    try:
        img = nib.load(str(path))
    except Exception as err:  # nibabel raises many types for broken files
        raise ExtractionError(f"{path}: cannot read NIfTI header ({err})") from err
    if len(img.shape) != 4:
        raise ExtractionError(f"{path}: expected a 4D BOLD series, got shape {img.shape}")
    return img


def _repetition_time(run: BoldRun, img: nib.Nifti1Image, warnings: list[str]) -> float:
    if run.t_r is not None:
        return float(run.t_r)
    zooms = img.header.get_zooms()
    t_r = float(zooms[3]) if len(zooms) > 3 else 0.0
    if t_r <= 0:
        raise ExtractionError(
            f"{run.preproc_bold}: no RepetitionTime in the JSON sidecar and none in the header"
        )
    if img.header.get_xyzt_units()[1] == "msec":
        t_r /= 1000.0
    message = (
        f"{run.preproc_bold.name}: no RepetitionTime in the JSON sidecar; "
        f"using the header's {t_r:g} s"
    )
    logger.warning(message)
    warnings.append(message)
    return t_r


def _check_mask(run: BoldRun, img: nib.Nifti1Image) -> None:
    if run.brain_mask is None:
        raise ExtractionError(
            f"{run.preproc_bold.name}: no desc-brain_mask found in the same space and resolution"
        )
    mask = nib.load(str(run.brain_mask))
    if mask.shape[:3] != img.shape[:3] or not np.allclose(mask.affine, img.affine, atol=1e-3):
        raise ExtractionError(
            f"{run.brain_mask}: brain mask grid {mask.shape[:3]} does not match the BOLD grid "
            f"{img.shape[:3]} of {run.preproc_bold.name} (shape or affine differ)"
        )


def _read_confounds_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep="\t", na_values=["n/a"])
    except Exception as err:
        raise ExtractionError(f"{path}: cannot read confounds TSV ({err})") from err


def _framewise_displacement(table: pd.DataFrame | None) -> list[float] | None:
    if table is None or "framewise_displacement" not in table:
        return None
    return [float(v) for v in pd.to_numeric(table["framewise_displacement"], errors="coerce")]


def _explicit_columns(table: pd.DataFrame, patterns: Sequence[str], path: Path) -> list[str]:
    columns: list[str] = []
    for pattern in patterns:
        matched = [c for c in table.columns if re.fullmatch(pattern, c)]
        if not matched:
            raise ExtractionError(f"{path}: no confound column matches {pattern!r}")
        columns.extend(c for c in matched if c not in columns)
    return columns


def _select_confounds(
    bold: Path, run: BoldRun, denoise: DenoiseConfig, n_volumes: int
) -> tuple[pd.DataFrame | None, np.ndarray | None]:
    """Return the confounds and the sample mask (kept indices) for one run."""
    from bidsapp import confounds as conf

    if denoise.name == "none" and not denoise.confounds_columns:
        return None, None
    try:
        if denoise.confounds_columns:
            return conf.load_confounds_columns(
                bold,
                denoise.confounds_columns,
                fd_threshold=denoise.fd_threshold,
                std_dvars_threshold=denoise.std_dvars_threshold,
            )
        params = conf.apply_censoring_overrides(
            conf.load_preset(denoise.name)["parameters"],
            fd_threshold=denoise.fd_threshold,
            std_dvars_threshold=denoise.std_dvars_threshold,
        )
        params["strategy"] = tuple(params["strategy"])
        return conf.load_confounds(str(bold), **params)
    except conf.ConfoundsError as err:
        raise ExtractionError(str(err)) from err


def _apply_dummy_scans(
    sample_mask: np.ndarray | None, dummy_scans: int | None, n_volumes: int
) -> np.ndarray | None:
    if not dummy_scans:
        return sample_mask
    kept = np.arange(n_volumes) if sample_mask is None else np.asarray(sample_mask)
    return kept[kept >= dummy_scans]


def extract_run(
    run: BoldRun,
    atlases: Sequence[Atlas],
    denoise: DenoiseConfig,
    extraction: ExtractionConfig,
) -> RunExtraction:
    """Extract denoised region timeseries of one run for each atlas.

    Parameters
    ----------
    run : BoldRun
        The fMRIPrep run (preprocessed BOLD, brain mask, confounds, TR).
    atlases : sequence of Atlas
        Atlases in the run's space.
    denoise : DenoiseConfig
        Confound selection and censoring.
    extraction : ExtractionConfig
        Reduction strategy, filtering, standardization and coverage threshold.

    Returns
    -------
    RunExtraction
        Timeseries per atlas and the run's bookkeeping (kept volumes, confounds, FD).

    Raises
    ------
    ExtractionError
        When an input file is missing, unreadable or inconsistent; the message names it.
    """
    from bidsapp.maskers import NiftiLabelsMasker
    from bidsapp.regions import region_coverage

    started = time.perf_counter()
    warnings: list[str] = []
    bold = _bold_image(run, denoise)
    img = _load_header(bold)
    n_volumes = int(img.shape[3])
    t_r = _repetition_time(run, img, warnings)
    if bold == run.preproc_bold:
        _check_mask(run, img)
    mask = run.brain_mask if bold == run.preproc_bold else None

    table = None
    if run.confounds is not None:
        table = _read_confounds_table(run.confounds)
        if len(table) != n_volumes:
            raise ExtractionError(
                f"{run.confounds}: {len(table)} rows but {bold.name} has {n_volumes} volumes"
            )
    elif denoise.name != "none" or denoise.confounds_columns:
        raise ExtractionError(f"{run.preproc_bold.name}: no desc-confounds_timeseries.tsv found")

    confounds, sample_mask = _select_confounds(bold, run, denoise, n_volumes)
    sample_mask = _apply_dummy_scans(sample_mask, denoise.dummy_scans, n_volumes)
    if confounds is not None:
        bad = [c for c in confounds.columns if not np.isfinite(confounds[c].to_numpy()).all()]
        if bad:
            raise ExtractionError(f"{run.confounds}: non-finite values in column(s) {bad}")
    retained = list(range(n_volumes)) if sample_mask is None else [int(i) for i in sample_mask]
    if len(retained) < 2:
        raise ExtractionError(
            f"{bold.name}: only {len(retained)} volume(s) left after censoring; nothing to extract"
        )
    fd = _framewise_displacement(table)
    finite_fd = [v for v in fd or [] if np.isfinite(v)]

    result = RunExtraction(
        run=run,
        bold=bold,
        t_r=t_r,
        n_volumes=n_volumes,
        retained=retained,
        censored=sorted(set(range(n_volumes)) - set(retained)),
        confound_columns=[] if confounds is None else list(confounds.columns),
        mean_fd=float(np.mean(finite_fd)) if finite_fd else None,
        framewise_displacement=fd,
        warnings=warnings,
    )
    standardize = False if extraction.standardize == "none" else extraction.standardize
    for atlas in atlases:
        masker = NiftiLabelsMasker(
            labels_img=str(atlas.dseg),
            mask_img=None if mask is None else str(mask),
            strategy=extraction.strategy,
            standardize=standardize,
            detrend=extraction.detrend,
            low_pass=extraction.low_pass,
            high_pass=extraction.high_pass,
            t_r=t_r,
            smoothing_fwhm=extraction.smoothing_fwhm,
            resampling_target="data",
            keep_masked_labels=False,
            reports=False,
        )
        try:
            signals = masker.fit_transform(str(bold), confounds=confounds, sample_mask=sample_mask)
        except (OSError, EOFError, ValueError) as err:
            raise ExtractionError(f"{bold}: extraction failed ({err})") from err
        if not np.isfinite(signals).all():
            raise ExtractionError(f"{bold}: non-finite values in the extracted region signals")
        coverage = region_coverage(atlas.dseg, mask, reference=bold, region_ids=atlas.lut["index"])
        result.per_atlas.append(
            _lut_frame(atlas, masker.region_ids_, signals, coverage, extraction.min_coverage)
        )
    result.seconds = time.perf_counter() - started
    return result


def _lut_frame(
    atlas: Atlas,
    region_ids: dict,
    signals: np.ndarray,
    coverage: np.ndarray,
    min_coverage: float,
) -> AtlasTimeseries:
    """Place the masker's columns into the LUT's order, n/a where coverage is too low."""
    lut_index = [int(i) for i in atlas.lut["index"]]
    names = [str(n) for n in atlas.lut["name"]]
    column_of = {int(label): pos for pos, label in region_ids.items() if pos != "background"}
    data = np.full((signals.shape[0], len(lut_index)), np.nan)
    for j, label in enumerate(lut_index):
        if label in column_of and coverage[j] >= min_coverage and coverage[j] > 0:
            data[:, j] = signals[:, column_of[label]]
    return AtlasTimeseries(
        atlas=atlas,
        timeseries=pd.DataFrame(data, columns=names),
        coverage=pd.Series(coverage, index=names, name="coverage"),
    )
