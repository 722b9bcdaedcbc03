"""Settings for one bidsapp invocation, as frozen dataclasses.

Every setting that changes a number in an output lives here, so that it can be written
into each sidecar (provenance) and compared on re-runs (resume).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STRATEGIES = ("mean", "median", "sum", "minimum", "maximum", "variance", "standard_deviation")
STANDARDIZE_CHOICES = ("zscore_sample", "zscore", "psc", "none")
DEFAULT_ATLAS = "Schaefer2018:400Parcels7Networks"
DEFAULT_SPACE = "MNI152NLin2009cAsym"


@dataclass(frozen=True)
class DenoiseConfig:
    """How confounds are chosen and volumes censored.

    Parameters
    ----------
    name : str
        Preset name (``simple``, ``scrubbing``, ``compcor``, ``ica_aroma``, ``none``) or the
        path of a JSON preset file.
    label : str
        Alphanumeric label used as the ``desc-`` entity of the outputs.
    confounds_columns : tuple of str or None
        Explicit confound columns (full-match regular expressions) replacing the preset's
        selection, or None to use the preset.
    fd_threshold : float or None
        Framewise displacement threshold in mm above which volumes are censored; None keeps
        the preset's value (no censoring for presets without scrubbing).
    std_dvars_threshold : float or None
        Standardized DVARS threshold above which volumes are censored; None keeps the
        preset's value.
    dummy_scans : int or None
        Number of initial volumes to drop; None ("auto") drops the volumes fMRIPrep flagged
        as non-steady-state.
    """

    name: str = "simple"
    label: str = "simple"
    confounds_columns: tuple[str, ...] | None = None
    fd_threshold: float | None = None
    std_dvars_threshold: float | None = None
    dummy_scans: int | None = None


@dataclass(frozen=True)
class ExtractionConfig:
    """How voxels become regions and how region signals are cleaned.

    Parameters
    ----------
    strategy : str
        Reduction of a region's voxels at each volume (``mean``, ``median``, ...).
    standardize : str
        ``zscore_sample``, ``zscore``, ``psc`` or ``none``.
    detrend : bool
        Remove a linear trend from each region signal.
    low_pass, high_pass : float or None
        Butterworth band edges in Hz; None disables that edge.
    smoothing_fwhm : float or None
        Gaussian smoothing kernel FWHM in mm applied to the BOLD before extraction.
    min_coverage : float
        Regions with a smaller fraction of their voxels inside the brain mask are written as
        ``n/a``.
    """

    strategy: str = "mean"
    standardize: str = "zscore_sample"
    detrend: bool = False
    low_pass: float | None = None
    high_pass: float | None = None
    smoothing_fwhm: float | None = None
    min_coverage: float = 0.5


@dataclass(frozen=True)
class RunConfig:
    """Everything one ``bidsapp`` invocation needs.

    Parameters
    ----------
    bids_dir : Path
        fMRIPrep derivatives dataset (read-only).
    output_dir : Path
        Where BIDS-derivative outputs are written.
    analysis_level : str
        ``participant`` or ``group``.
    participant_labels, session_labels, tasks : tuple of str or None
        Selection filters; None selects all.
    bids_filters : dict or None
        fMRIPrep-style ``--bids-filter-file`` content.
    space : str
        Template space of the preprocessed BOLD to use.
    atlases : tuple of str
        Atlas specifications (``NAME[:DESC]`` or paths to local ``*_dseg.nii.gz``).
    atlas_lut : Path or None
        Look-up table for a local atlas without a sibling ``*_dseg.tsv``.
    denoise, extraction : DenoiseConfig, ExtractionConfig
        Denoising and extraction settings.
    n_jobs : int
        Runs processed in parallel.
    work_dir : Path or None
        Scratch space (pybids database, caches); a temporary directory when None.
    overwrite : bool
        Recompute outputs even when they exist with the same parameters.
    reports : bool
        Write HTML reports.
    dask_scheduler : str or None
        Address of a Dask scheduler to run the jobs on.
    """

    bids_dir: Path
    output_dir: Path
    analysis_level: str = "participant"
    participant_labels: tuple[str, ...] | None = None
    session_labels: tuple[str, ...] | None = None
    tasks: tuple[str, ...] | None = None
    bids_filters: dict[str, Any] | None = None
    space: str = DEFAULT_SPACE
    atlases: tuple[str, ...] = (DEFAULT_ATLAS,)
    atlas_lut: Path | None = None
    denoise: DenoiseConfig = field(default_factory=DenoiseConfig)
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    n_jobs: int = 1
    work_dir: Path | None = None
    overwrite: bool = False
    reports: bool = True
    dask_scheduler: str | None = None


def to_jsonable(obj: Any) -> Any:
    """Convert a config dataclass (or any nesting of them) to JSON-compatible values.

    Parameters
    ----------
    obj : object
        A dataclass instance, mapping, sequence, path or scalar.

    Returns
    -------
    object
        The same content made of dicts, lists, strings, numbers, booleans and None.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def fingerprint(obj: Any) -> str:
    """Return a short stable hash of a JSON-compatible description of ``obj``.

    Parameters
    ----------
    obj : object
        Anything :func:`to_jsonable` accepts.

    Returns
    -------
    str
        16 hexadecimal characters; equal settings give equal fingerprints across runs.
    """
    text = json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
