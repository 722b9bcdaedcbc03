"""The confounds and kept volumes of one run: the denoising setting applied to its confounds file.

Part of the app layer, over :mod:`bidsapp.confounds`: the preset's ``load_confounds``
parameters with the censoring overrides, the dummy scans, the scrubbing of the run's motion
outliers, checks of the confounds table, and what the report shows of it (non-steady-state
volumes, thresholds applied, the preset's description).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bidsapp.app.config import DenoiseConfig
from bidsapp.app.run_inputs import ExtractionError, RunInputs, preset_of
from bidsapp.app.status import one_line
from bidsapp.confounds import apply_censoring_overrides, load_confounds_columns
from bidsapp.confounds.files import ConfoundsError, read_confounds_tsv

logger = logging.getLogger(__name__)


def _numeric(table: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)


def _preset_parameters(denoise: DenoiseConfig) -> dict[str, Any]:
    """``load_confounds`` parameters of the preset, with the censoring overrides applied."""
    if denoise.name == "none":
        parameters: dict[str, Any] = {"strategy": []}
    else:
        parameters = preset_of(denoise)["parameters"]
    parameters = apply_censoring_overrides(
        parameters,
        fd_threshold=denoise.fd_threshold,
        std_dvars_threshold=denoise.std_dvars_threshold,
    )
    parameters = {k: v for k, v in parameters.items() if v is not None}
    parameters["strategy"] = list(parameters["strategy"])
    return parameters


def _censoring(denoise: DenoiseConfig, parameters: dict[str, Any] | None) -> tuple:
    """(fd, std_dvars, min segment) thresholds in force; inf disables a measure."""
    from bidsapp import confounds as conf

    if parameters is None:  # explicit columns
        inf = float("inf")
        return (
            denoise.fd_threshold or inf,
            denoise.std_dvars_threshold or inf,
            conf.DEFAULT_SCRUB,
        )
    return conf.censoring_thresholds(parameters)


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
                    confounds, sample_mask = load_confounds_columns(
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
        try:
            table = read_confounds_tsv(run.confounds)
        except ConfoundsError as err:
            raise ExtractionError(one_line(err)) from err
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
            # fMRIPrep 1.0/1.1 files name the measures FramewiseDisplacement and stdDVARS.
            keep &= ~conf.motion_outliers(
                table,
                conf.motion_measure_columns(table.columns),
                fd_threshold=fd,
                std_dvars_threshold=dvars,
                scrub=min_segment,
            )
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


def thresholds_in_force(
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
        return str(preset_of(denoise).get("description") or denoise.name)
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
