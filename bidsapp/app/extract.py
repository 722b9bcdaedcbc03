"""One prepared run -> denoised region timeseries for each atlas, in one pass over the BOLD.

Part of the app layer: it joins the core (masker streaming, signal cleaning) for one run.
:func:`extract_run` takes the confounds and kept volumes (:mod:`bidsapp.app.confounds_selection`),
runs the labels extraction for every atlas at once and lays the signals out in
look-up-table order. It knows the run's files but nothing of the command line or of where
outputs go; problems raise :class:`bidsapp.app.run_inputs.ExtractionError`.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from bidsapp import stream
from bidsapp.app.config import DenoiseConfig, ExtractionConfig
from bidsapp.app.confounds_selection import select_confounds, thresholds_in_force
from bidsapp.app.run_inputs import ExtractionError, RunExcluded, RunInputs
from bidsapp.app.status import one_line
from bidsapp.dataset.atlas import Atlas, region_ids, region_names
from bidsapp.dataset.query import BoldRun

logger = logging.getLogger(__name__)

# Masker warnings that the coverage table already reports, region by region.
_COVERED_BY_COVERAGE = ("labels were removed",)
# The engine's warning about zeroed values; the run's own notes say more (which volumes).
_ZEROED_MESSAGE = "Non-finite values detected"

#: A volume is censored when more than this fraction of the voxels the atlases read from
#: it (their union, inside the brain mask) are NaN or infinite: its region means would be
#: made of zeros. Volumes with fewer non-finite voxels are kept, those voxels set to 0 with
#: a warning, as nilearn does.
NON_FINITE_VOLUME_FRACTION = 0.1


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
    design : pandas.DataFrame or None
        The confound regressors given to the cleaning, one row per volume of the BOLD (the
        rows of censored volumes are not used); None without regressors.
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
    design: pd.DataFrame | None = None

    @property
    def run(self) -> BoldRun:
        """The input run."""
        return self.inputs.run


# ------------------------------------------------------------------ preparing


# ------------------------------------------------------------------ confounds


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
        thresholds=thresholds_in_force(denoise, selection.parameters),
        design=confounds,
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
