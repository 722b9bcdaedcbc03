"""Settings for one bidsapp invocation, as frozen dataclasses.

Every setting that changes a number in an output lives here, so that it can be written
into each sidecar (provenance) and compared on re-runs (resume). The dataclasses check
and normalise their values when built (labels lose their ``sub-``/``ses-`` prefix, lists
become tuples) and raise :class:`ConfigError` for values that cannot work; nothing here
reads the disk. :func:`make_config` builds a :class:`RunConfig` from keyword options named
like the command-line options, so the CLI and Python callers share one path.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bidsapp.dataset import filters
from bidsapp.errors import BidsappError

#: Region reductions (``--strategy``): :data:`bidsapp.regions.REDUCTIONS`, repeated here so
#: that the settings import no numpy (tests/test_config.py checks they agree).
REDUCTIONS = ("mean", "median", "sum", "minimum", "maximum", "variance", "standard_deviation")
STANDARDIZE_CHOICES = ("zscore_sample", "zscore", "psc", "none")
#: Denoising presets: the files of bidsapp/data/presets (tests/core/test_presets.py checks
#: they agree), then ``none``.
PRESETS = (
    "simple",
    "simple+gsr",
    "scrubbing",
    "scrubbing+gsr",
    "scrubbing.2",
    "scrubbing.2+gsr",
    "scrubbing.5",
    "scrubbing.5+gsr",
    "compcor",
    "compcor+gsr",
    "acompcor50",
    "acompcor",
    "acompcor+gsr",
    "24P",
    "36P",
    "ica_aroma",
    "none",
)
ANALYSIS_LEVELS = ("participant", "group")
DEFAULT_ATLAS = "Schaefer2018:400Parcels7Networks"
DEFAULT_SPACE = "MNI152NLin2009cAsym"
DEFAULT_MIN_COVERAGE = 0.5
#: ``--connectivity`` choices: :data:`bidsapp.app.connectivity.RUN_MEASURES` and
#: ``GROUP_MEASURES``, repeated here so that the settings import no numpy (tests check).
CONNECTIVITY_CHOICES = ("correlation", "partialcorrelation", "covariance", "precision", "tangent")
GROUP_ONLY_MEASURES = ("tangent",)
DEFAULT_CONNECTIVITY = ("correlation",)

_LABEL = re.compile(r"[A-Za-z0-9]+")


class ConfigError(BidsappError, ValueError):
    """A setting that cannot be used; the message names the option and the value."""


def _set(obj: Any, name: str, value: Any) -> None:
    """Normalise a field of a frozen dataclass in ``__post_init__``."""
    object.__setattr__(obj, name, value)


def _optional_float(value: Any, option: str, *, zero_is_none: bool = False) -> float | None:
    """Return a non-negative float (or None), rejecting anything else."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{option}: expected a number, got {value!r}") from None
    if not number >= 0 or number == float("inf"):
        raise ConfigError(f"{option}: expected a finite number >= 0, got {value!r}")
    return None if (zero_is_none and number == 0) else number


def denoise_label(name: str, confounds_columns: Iterable[str] | None = None) -> str:
    """Return the ``desc-`` label of a denoising setting.

    Parameters
    ----------
    name : str
        Preset name or path of a JSON preset.
    confounds_columns : iterable of str, optional
        Explicit confound columns; when given the label is ``custom``.

    Returns
    -------
    str
        A preset's name with each ``+<part>`` written in capitals and other characters
        that are not letters or digits dropped (``simple+gsr`` -> ``simpleGSR``,
        ``scrubbing.5`` -> ``scrubbing5``, ``scrubbing.2+gsr`` -> ``scrubbing2GSR``,
        ``ica_aroma`` -> ``icaaroma``; BIDS labels are alphanumeric, and no two built-in
        presets share a label), the JSON file's stem made alphanumeric, or ``custom``.
    """
    if confounds_columns:
        return "custom"
    if name.endswith(".json"):
        stem = Path(name).name[: -len(".json")]
        return re.sub(r"[^A-Za-z0-9]", "", stem) or "custom"
    # Capitals keep "+gsr" readable in a label that cannot hold "+".
    name = re.sub(r"\+([A-Za-z0-9]+)", lambda found: found.group(1).upper(), name)
    return re.sub(r"[^A-Za-z0-9]", "", name)


@dataclass(frozen=True)
class DenoiseConfig:
    """How confounds are chosen and volumes censored.

    Parameters
    ----------
    name : str
        Preset name (one of :data:`PRESETS`: ``simple``, ``simple+gsr``, ``scrubbing``,
        ..., ``24P``, ``36P``, ``ica_aroma``, ``none``) or the path of a JSON preset file of
        ``load_confounds`` parameters (made absolute).
    label : str or None
        Alphanumeric label used as the ``desc-`` entity of the outputs; None derives it
        from ``name`` (see :func:`denoise_label`).
    confounds_columns : tuple of str or None
        Explicit confound columns (full-match regular expressions) replacing the preset's
        selection, or None to use the preset.
    fd_threshold : float or None
        Framewise displacement threshold in mm above which volumes are censored; None keeps
        the preset's value, 0 disables censoring on framewise displacement.
    std_dvars_threshold : float or None
        Standardized DVARS threshold above which volumes are censored; None keeps the
        preset's value, 0 disables it.
    dummy_scans : int or None
        Number of initial volumes to drop; None ("auto") drops the volumes fMRIPrep flagged
        as non-steady-state. An explicit number replaces fMRIPrep's flags.
    min_time : float
        Runs with less than this many seconds of data left after censoring are excluded
        (XCP-D's ``--min-time``); 0 excludes only runs without residual degrees of freedom.

    Raises
    ------
    ConfigError
        For an unknown preset name, an invalid regular expression, label or threshold.
    """

    name: str = "simple"
    label: str | None = None
    confounds_columns: tuple[str, ...] | None = None
    fd_threshold: float | None = None
    std_dvars_threshold: float | None = None
    dummy_scans: int | None = None
    min_time: float = 0.0

    def __post_init__(self) -> None:
        name = os.fspath(self.name)
        if name.endswith(".json"):
            name = str(Path(name).expanduser().absolute())
        elif name not in PRESETS:
            raise ConfigError(
                f"--denoise-strategy: expected one of {', '.join(PRESETS)} or a path to a "
                f"JSON preset, got {name!r}"
            )
        _set(self, "name", name)
        columns = self.confounds_columns
        if columns is not None:
            columns = (columns,) if isinstance(columns, str) else tuple(columns)
            if not columns:
                columns = None
        for pattern in columns or ():
            try:
                re.compile(pattern)
            except re.error as err:
                raise ConfigError(
                    f"--confounds-columns: invalid regular expression {pattern!r} ({err})"
                ) from None
        _set(self, "confounds_columns", columns)
        label = self.label if self.label is not None else denoise_label(name, columns)
        if not _LABEL.fullmatch(label):
            raise ConfigError(f"denoise label {label!r}: letters and digits only")
        _set(self, "label", label)
        _set(self, "fd_threshold", _optional_float(self.fd_threshold, "--fd-threshold"))
        _set(
            self,
            "std_dvars_threshold",
            _optional_float(self.std_dvars_threshold, "--std-dvars-threshold"),
        )
        dummy = self.dummy_scans
        if dummy is not None:
            if isinstance(dummy, bool) or not isinstance(dummy, int) or dummy < 0:
                raise ConfigError(
                    f"--dummy-scans: expected 'auto' or an integer >= 0, got {dummy!r}"
                )
        _set(self, "dummy_scans", dummy)
        _set(self, "min_time", _optional_float(self.min_time, "--min-time") or 0.0)

    @property
    def is_preset_file(self) -> bool:
        """Whether :attr:`name` is the path of a JSON preset."""
        return self.name.endswith(".json")


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
        Butterworth band edges in Hz; None (or 0) disables that edge.
    smoothing_fwhm : float or None
        Gaussian smoothing kernel FWHM in mm applied to the BOLD before extraction; None
        (or 0) disables smoothing.
    min_coverage : float
        Regions with a smaller fraction of their voxels inside the brain mask are written as
        ``n/a`` (between 0 and 1).

    Raises
    ------
    ConfigError
        For an unknown reduction or standardization, a negative value, a coverage outside
        [0, 1], or a low-pass cutoff not above the high-pass cutoff.
    """

    strategy: str = "mean"
    standardize: str = "zscore_sample"
    detrend: bool = False
    low_pass: float | None = None
    high_pass: float | None = None
    smoothing_fwhm: float | None = None
    min_coverage: float = DEFAULT_MIN_COVERAGE

    def __post_init__(self) -> None:
        if self.strategy not in REDUCTIONS:
            raise ConfigError(
                f"--strategy: expected one of {', '.join(REDUCTIONS)}, got {self.strategy!r}"
            )
        standardize = self.standardize
        if standardize is False or standardize is None:
            standardize = "none"
        if standardize not in STANDARDIZE_CHOICES:
            raise ConfigError(
                f"--standardize: expected one of {', '.join(STANDARDIZE_CHOICES)}, "
                f"got {self.standardize!r}"
            )
        _set(self, "standardize", standardize)
        _set(self, "detrend", bool(self.detrend))
        low = _optional_float(self.low_pass, "--low-pass", zero_is_none=True)
        high = _optional_float(self.high_pass, "--high-pass", zero_is_none=True)
        if low is not None and high is not None and low <= high:
            raise ConfigError(
                f"--low-pass ({low:g} Hz) must be above --high-pass ({high:g} Hz) for a "
                "band-pass filter"
            )
        _set(self, "low_pass", low)
        _set(self, "high_pass", high)
        fwhm = _optional_float(self.smoothing_fwhm, "--smoothing-fwhm", zero_is_none=True)
        _set(self, "smoothing_fwhm", fwhm)
        coverage = _optional_float(self.min_coverage, "--min-coverage")
        if coverage is None or coverage > 1:
            raise ConfigError(
                f"--min-coverage: expected a fraction between 0 and 1, got {self.min_coverage!r}"
            )
        _set(self, "min_coverage", coverage)


@dataclass(frozen=True)
class RunConfig:
    """Everything one ``bidsapp`` invocation needs.

    Parameters
    ----------
    bids_dir : Path
        fMRIPrep derivatives dataset (read-only); made absolute.
    output_dir : Path
        Where BIDS-derivative outputs are written; made absolute.
    analysis_level : str
        ``participant`` or ``group``.
    participant_labels, session_labels, tasks : tuple of str or None
        Selection filters, without ``sub-``/``ses-``/``task-`` prefixes; None selects all.
    bids_filters : dict or None
        fMRIPrep-style ``--bids-filter-file`` content (only its ``bold`` query is used).
    space : str
        Template space of the preprocessed BOLD to use.
    atlases : tuple of str
        Atlas specifications (``NAME[:DESC]`` or paths to local ``*_dseg.nii.gz``).
    atlas_lut : Path or None
        Look-up table for the local atlas(es), instead of their sibling ``*_dseg.tsv``.
    atlas_space : str or None
        Template space of the local atlas(es) whose file name has no ``space-`` entity.
    denoise, extraction : DenoiseConfig, ExtractionConfig
        Denoising and extraction settings.
    n_jobs : int
        Runs processed in parallel.
    work_dir : Path or None
        Scratch space (pybids database, caches); None keeps the pybids index in memory.
    bids_database_dir : Path or None
        Folder of one pybids index of the whole dataset, shared by many jobs (fMRIPrep's
        ``--bids-database-dir``); built by the first job that finds none.
    overwrite : bool
        Recompute outputs even when they exist with the same parameters.
    reports : bool
        Write HTML reports.
    dask_scheduler : str or None
        Address of a Dask scheduler to run the jobs on.
    connectivity : tuple of str
        Connectivity measures (:data:`CONNECTIVITY_CHOICES`, kept in that order): per run
        ``correlation`` (Pearson), ``partialcorrelation``, ``covariance``, ``precision``
        (Ledoit-Wolf); ``tangent`` is group level only (the geometric-mean reference).
    fisher_z : bool
        Also write the Fisher z-transform of the per-run correlation measures.
    concatenate_runs : bool
        Also write each subject's matrices of each task from its runs' timeseries
        concatenated (participant level).

    Raises
    ------
    ConfigError
        For an invalid label, analysis level, space, atlas list, job count or
        connectivity measure.
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
    atlas_space: str | None = None
    denoise: DenoiseConfig = field(default_factory=DenoiseConfig)
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    n_jobs: int = 1
    work_dir: Path | None = None
    bids_database_dir: Path | None = None
    overwrite: bool = False
    reports: bool = True
    dask_scheduler: str | None = None
    connectivity: tuple[str, ...] = DEFAULT_CONNECTIVITY
    fisher_z: bool = False
    concatenate_runs: bool = False

    @property
    def run_measures(self) -> tuple[str, ...]:
        """The per-run measures of :attr:`connectivity` (without the group-level ones)."""
        return tuple(m for m in self.connectivity if m not in GROUP_ONLY_MEASURES)

    def __post_init__(self) -> None:
        _set(self, "bids_dir", Path(self.bids_dir).expanduser().absolute())
        _set(self, "output_dir", Path(self.output_dir).expanduser().absolute())
        if self.analysis_level not in ANALYSIS_LEVELS:
            raise ConfigError(
                f"analysis level: expected one of {', '.join(ANALYSIS_LEVELS)}, "
                f"got {self.analysis_level!r}"
            )
        _set(
            self,
            "participant_labels",
            filters.normalize_labels(
                self.participant_labels, "sub", "--participant-label", error=ConfigError
            ),
        )
        _set(
            self,
            "session_labels",
            filters.normalize_labels(
                self.session_labels, "ses", "--session-label", error=ConfigError
            ),
        )
        _set(
            self, "tasks", filters.normalize_labels(self.tasks, "task", "--task", error=ConfigError)
        )
        if self.bids_filters is not None and not isinstance(self.bids_filters, Mapping):
            raise ConfigError(
                "--bids-filter-file: expected a JSON object of queries, e.g. "
                '{"bold": {"session": "1"}}'
            )
        if not isinstance(self.space, str) or not _LABEL.fullmatch(self.space):
            raise ConfigError(
                f"--space: invalid space {self.space!r} (letters and digits only, "
                "e.g. MNI152NLin2009cAsym)"
            )
        atlases = self.atlases
        atlases = (atlases,) if isinstance(atlases, (str, os.PathLike)) else tuple(atlases)
        atlases = tuple(os.fspath(a) for a in atlases)
        if not atlases:
            raise ConfigError("--atlas: give at least one atlas")
        _set(self, "atlases", tuple(dict.fromkeys(atlases)))
        if self.atlas_lut is not None:
            _set(self, "atlas_lut", Path(self.atlas_lut).expanduser().absolute())
        if self.atlas_space is not None and not (
            isinstance(self.atlas_space, str) and _LABEL.fullmatch(self.atlas_space)
        ):
            raise ConfigError(
                f"--atlas-space: invalid space {self.atlas_space!r} (letters and digits only, "
                "e.g. MNI152NLin2009cAsym)"
            )
        for name in ("work_dir", "bids_database_dir"):
            if getattr(self, name) is not None:
                _set(self, name, Path(getattr(self, name)).expanduser().absolute())
        if isinstance(self.n_jobs, bool) or not isinstance(self.n_jobs, int) or self.n_jobs < 1:
            raise ConfigError(f"--n-jobs: expected an integer >= 1, got {self.n_jobs!r}")
        measures = self.connectivity
        measures = (measures,) if isinstance(measures, str) else tuple(measures or ())
        unknown = [m for m in measures if m not in CONNECTIVITY_CHOICES]
        if unknown or not measures:
            raise ConfigError(
                f"--connectivity: expected one or more of {', '.join(CONNECTIVITY_CHOICES)}, "
                f"got {list(measures)!r}"
            )
        # One canonical order: the same choice in another order is the same setting.
        _set(self, "connectivity", tuple(m for m in CONNECTIVITY_CHOICES if m in measures))
        _set(self, "fisher_z", bool(self.fisher_z))
        _set(self, "concatenate_runs", bool(self.concatenate_runs))
        if self.fisher_z and not {"correlation", "partialcorrelation"} & set(measures):
            raise ConfigError(
                "--fisher-z transforms correlations: add correlation or partialcorrelation "
                "to --connectivity"
            )


def read_bids_filter_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check an fMRIPrep ``--bids-filter-file``.

    The one reader of filter files is :func:`bidsapp.dataset.filters.read_bids_filter_file`; this
    wrapper turns its errors into usage errors naming the option.

    Parameters
    ----------
    path : str or os.PathLike
        JSON file such as ``{"bold": {"session": "1", "run": [1, 2]}}``.

    Returns
    -------
    dict
        The document.

    Raises
    ------
    ConfigError
        If the path is not a regular file (a FIFO or device is refused before it is
        opened), cannot be read, is not UTF-8 JSON, is nested too deeply, is not a JSON
        object, or its ``bold`` query has an unknown entity or a value that is not a
        string, an integer, null, ``"*"`` or a list of those.
    """
    try:
        return filters.read_bids_filter_file(path)
    except filters.QueryError as err:
        raise ConfigError(f"--bids-filter-file: {' '.join(str(err).split())}") from None


def _dummy_scans(value: Any) -> int | None:
    if value is None or value == "auto":
        return None
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise ConfigError(
                f"--dummy-scans: expected 'auto' or an integer >= 0, got {value!r}"
            ) from None
    return value


def make_config(
    bids_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    analysis_level: str = "participant",
    *,
    participant_label: str | Iterable[str] | None = None,
    session_label: str | Iterable[str] | None = None,
    task: str | Iterable[str] | None = None,
    bids_filter_file: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    space: str = DEFAULT_SPACE,
    atlas: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None = None,
    atlas_lut: str | os.PathLike[str] | None = None,
    atlas_space: str | None = None,
    denoise_strategy: str | os.PathLike[str] = "simple",
    confounds_columns: str | Iterable[str] | None = None,
    fd_threshold: float | None = None,
    std_dvars_threshold: float | None = None,
    dummy_scans: int | str | None = None,
    min_time: float = 0.0,
    strategy: str = "mean",
    standardize: str = "zscore_sample",
    detrend: bool = False,
    low_pass: float | None = None,
    high_pass: float | None = None,
    smoothing_fwhm: float | None = None,
    min_coverage: float = DEFAULT_MIN_COVERAGE,
    n_jobs: int = 1,
    work_dir: str | os.PathLike[str] | None = None,
    bids_database_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    reports: bool = True,
    dask_scheduler: str | None = None,
    connectivity: str | Iterable[str] | None = None,
    fisher_z: bool = False,
    concatenate_runs: bool = False,
    verbose: int = 0,
) -> RunConfig:
    """Build a :class:`RunConfig` from options named like the command line's.

    Each keyword is the command-line option with dashes turned into underscores
    (``--participant-label`` -> ``participant_label``) and takes the same values, with the
    same defaults; list options also accept a single string.

    Parameters
    ----------
    bids_dir : str or os.PathLike
        fMRIPrep derivatives dataset.
    output_dir : str or os.PathLike
        Output dataset.
    analysis_level : {"participant", "group"}
        What to run.
    participant_label, session_label, task : str or iterable of str, optional
        Selection, with or without the ``sub-``/``ses-`` prefix; None selects all.
    bids_filter_file : str, os.PathLike or mapping, optional
        Path of an fMRIPrep filter file, or its content as a mapping.
    space : str
        Space of the preprocessed BOLD.
    atlas : str, os.PathLike or iterable of those, optional
        ``NAME[:DESC]`` TemplateFlow atlases or local ``*_dseg.nii.gz`` paths; default
        :data:`DEFAULT_ATLAS`.
    atlas_lut : str or os.PathLike, optional
        Look-up table of the local atlas(es).
    atlas_space : str, optional
        Space of the local atlas(es) whose file name has no ``space-``.
    denoise_strategy : str or os.PathLike
        Preset name or JSON preset path.
    confounds_columns : str or iterable of str, optional
        Explicit confound columns (regular expressions).
    fd_threshold, std_dvars_threshold : float, optional
        Censoring thresholds (mm, standardized DVARS); None keeps the preset's.
    dummy_scans : int or "auto", optional
        Initial volumes to drop; None or "auto" uses fMRIPrep's non-steady-state flags.
    min_time : float
        Seconds of data a run must keep after censoring (0: only degrees of freedom count).
    strategy : str
        Region reduction.
    standardize : str
        Standardization of region signals.
    detrend : bool
        Linear detrending.
    low_pass, high_pass : float, optional
        Butterworth cutoffs in Hz.
    smoothing_fwhm : float, optional
        Smoothing FWHM in mm.
    min_coverage : float
        Minimal fraction of a region's voxels inside the brain mask.
    n_jobs : int
        Runs processed in parallel.
    work_dir : str or os.PathLike, optional
        Scratch directory (pybids database, caches).
    bids_database_dir : str or os.PathLike, optional
        Shared pybids index of the whole dataset (built when missing).
    overwrite : bool
        Recompute existing outputs.
    reports : bool
        Write HTML reports.
    dask_scheduler : str, optional
        Dask scheduler address.
    connectivity : str or iterable of str, optional
        Connectivity measures; default ``correlation`` (Pearson) only.
    fisher_z : bool
        Also write Fisher z-transformed correlations.
    concatenate_runs : bool
        Also write per-subject matrices from each task's runs concatenated.
    verbose : int
        Ignored here (logging is the caller's business); accepted so that the CLI's
        parsed options can be passed as they are.

    Returns
    -------
    RunConfig
        The settings.

    Raises
    ------
    ConfigError
        For any value that cannot be used (the message names the option).
    """
    del verbose
    if bids_filter_file is None or isinstance(bids_filter_file, Mapping):
        filters = None if bids_filter_file is None else dict(bids_filter_file)
    else:
        filters = read_bids_filter_file(bids_filter_file)
    if atlas is None:
        atlases: tuple[str, ...] = (DEFAULT_ATLAS,)
    elif isinstance(atlas, (str, os.PathLike)):
        atlases = (os.fspath(atlas),)
    else:
        atlases = tuple(os.fspath(a) for a in atlas)
    denoise = DenoiseConfig(
        name=os.fspath(denoise_strategy),
        confounds_columns=confounds_columns,
        fd_threshold=fd_threshold,
        std_dvars_threshold=std_dvars_threshold,
        dummy_scans=_dummy_scans(dummy_scans),
        min_time=min_time,
    )
    extraction = ExtractionConfig(
        strategy=strategy,
        standardize=standardize,
        detrend=detrend,
        low_pass=low_pass,
        high_pass=high_pass,
        smoothing_fwhm=smoothing_fwhm,
        min_coverage=min_coverage,
    )
    return RunConfig(
        bids_dir=Path(bids_dir),
        output_dir=Path(output_dir),
        analysis_level=analysis_level,
        participant_labels=participant_label,
        session_labels=session_label,
        tasks=task,
        bids_filters=filters,
        space=space,
        atlases=atlases,
        atlas_lut=None if atlas_lut is None else Path(atlas_lut),
        atlas_space=atlas_space,
        denoise=denoise,
        extraction=extraction,
        n_jobs=n_jobs,
        work_dir=None if work_dir is None else Path(work_dir),
        bids_database_dir=None if bids_database_dir is None else Path(bids_database_dir),
        overwrite=bool(overwrite),
        reports=bool(reports),
        dask_scheduler=dask_scheduler,
        connectivity=DEFAULT_CONNECTIVITY if connectivity is None else connectivity,
        fisher_z=fisher_z,
        concatenate_runs=concatenate_runs,
    )


def fingerprint(obj: Any) -> str:
    """Return a short stable hash of a JSON-compatible description of ``obj``.

    Parameters
    ----------
    obj : object
        Anything :func:`bidsapp.dataset.jsonio.json_value` accepts (settings dataclasses,
        mappings, sequences, paths).

    Returns
    -------
    str
        16 hexadecimal characters; equal settings give equal fingerprints across runs.
    """
    # Imported here: numpy comes with it, and the settings stay light to import.
    from bidsapp.dataset.jsonio import json_value

    text = json.dumps(json_value(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
