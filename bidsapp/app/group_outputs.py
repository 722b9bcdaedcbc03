"""Group level outputs: ``group/runs.tsv``, the relmat matrices and sidecars, ``qcfc.tsv``.

Part of the app layer. Every file (and the group report, drawn by :mod:`bidsapp.report.group`)
is staged before any is replaced, and files of cells that no longer exist are removed, so
``group/`` never mixes two invocations' results. Matrices keep the participant-level names
(minus subject and run), so tools parsing XCP-D-style ``relmat`` names read them the same way;
the validator ignores the folder through ``.bidsignore``
(:data:`bidsapp.dataset.dataset_description.BIDSIGNORE_PATTERNS`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bidsapp.app.group_compute import GroupCell, GroupResult
from bidsapp.app.group_stats import MIN_RUNS_QCFC, upper_triangle
from bidsapp.dataset.naming import RUN_KEY_ENTITIES
from bidsapp.errors import BidsappError
from bidsapp.report.records import RunRecord

GROUP_DIR = "group"


REPORT_NAME = "group.html"


#: Columns of ``runs.tsv`` after the entity columns, with their descriptions.
SUMMARY_COLUMNS: dict[str, str] = {
    "atlas": "Atlas label (the atlas- entity).",
    "stat": "How voxels were summarised per region (the stat- entity of the timeseries).",
    "denoise": "Denoising label (the desc- entity).",
    "n_volumes": "Volumes in the BOLD series.",
    "n_volumes_kept": "Volumes kept after removing non-steady-state and censored volumes.",
    "n_confounds": "Confound regressors projected out.",
    "mean_fd": "Mean framewise displacement over all volumes (mm).",
    "n_regions_low_coverage": "Regions written as n/a for lack of brain-mask coverage.",
    "status": "ok, skipped (outputs existed with the same parameters) or failed.",
    "reason": "Why the run failed, or warnings of a run that succeeded.",
    "timeseries": "The timeseries file, relative to the output dataset.",
}


def summary_table(records: Sequence[RunRecord], output_dir: Path) -> pd.DataFrame:
    """One row per run x atlas x denoising (the content of ``group/runs.tsv``).

    Parameters
    ----------
    records : sequence of RunRecord
        Participant outcomes.
    output_dir : Path
        Output dataset root (timeseries paths are written relative to it).

    Returns
    -------
    pandas.DataFrame
        Entity columns present in any record (pybids names), then :data:`SUMMARY_COLUMNS`.
    """
    entity_cols = [k for k in RUN_KEY_ENTITIES if any(k in r.entities for r in records)]
    rows = []
    for r in records:
        row: dict[str, Any] = {k: r.entities.get(k) for k in entity_cols}
        columns = r.sidecar.get("ConfoundColumns")
        rel = None
        if r.timeseries is not None:
            try:
                rel = r.timeseries.relative_to(output_dir).as_posix()
            except ValueError:
                rel = str(r.timeseries)
        row.update(
            atlas=r.atlas,
            stat=r.stat or None,
            denoise=r.denoise,
            n_volumes=r.n_volumes,
            n_volumes_kept=r.n_volumes_kept,
            n_confounds=len(columns) if isinstance(columns, list) else None,
            mean_fd=r.mean_fd,
            n_regions_low_coverage=r.n_regions_low_coverage,
            status=r.status,
            reason=" ".join(r.reason.split()) or None,
            timeseries=rel if r.has_outputs else None,
        )
        rows.append(row)
    table = pd.DataFrame(rows, columns=[*entity_cols, *SUMMARY_COLUMNS])
    for column in ("n_volumes", "n_volumes_kept", "n_confounds", "n_regions_low_coverage"):
        table[column] = pd.to_numeric(table[column]).astype("Int64")
    table["mean_fd"] = pd.to_numeric(table["mean_fd"]).astype(float)
    return table


def _cell_name(cell: GroupCell, stat: str, suffix: str, extension: str) -> str:
    from bidsapp.dataset import naming

    entities = {
        "task": cell.task,
        "space": cell.space or None,
        "atlas": cell.atlas,
        "stat": stat,
        "desc": cell.desc_label or cell.denoise,
    }
    return naming.bids_name(entities, suffix=suffix, extension=extension)


def _matrix_table(matrix: np.ndarray, regions: Sequence[str]) -> pd.DataFrame:
    table = pd.DataFrame(matrix, columns=list(regions))
    table.insert(0, "Node", list(regions))
    return table


def _cell_files(cell: GroupCell, group_dir: Path, output_dir: Path) -> dict[Path, str]:
    """Paths and contents of one cell's matrices and sidecars."""
    from bidsapp.dataset import jsonio, tsvio

    runs = [r.timeseries.relative_to(output_dir).as_posix() for r in cell.runs if r.timeseries]
    common = {
        "Task": cell.task,
        "Space": cell.space,
        "Atlas": cell.atlas,
        "ExtractionStatistic": cell.stat,
        "Denoising": cell.denoise,
        "NumberOfRuns": len(cell.runs),
        "NumberOfSubjects": len({r.subject for r in cell.runs}),
        "Sources": [f"bids::{p}" for p in runs],
    }
    files: dict[Path, str] = {}
    mean_path = group_dir / _cell_name(cell, "pearsoncorrelation", "relmat", ".tsv")
    files[mean_path] = tsvio.tsv_text(_matrix_table(cell.mean, cell.regions))
    files[mean_path.with_suffix(".json")] = jsonio.json_text(
        {
            "RelationshipMeasure": "Pearson correlation coefficient, group mean",
            "Weighted": True,
            "Directed": False,
            "ValidDiagonal": False,
            "StorageFormat": "Full",
            "Averaging": (
                "Each run's Pearson correlation matrix (computed from its timeseries TSV, "
                "regions set to n/a left out) was Fisher z-transformed (arctanh), averaged "
                "over the runs where the edge has data, and transformed back (tanh); every "
                "run counts once."
            ),
            "EdgesWithMissingRuns": int(np.sum(upper_triangle(cell.n_runs_edge) < len(cell.runs))),
            **common,
        },
    )
    if cell.tangent is not None:
        files.update(_tangent_files(cell, group_dir, common))
    qc_path = group_dir / _cell_name(cell, "qcfc", "relmat", ".tsv")
    files[qc_path] = tsvio.tsv_text(_matrix_table(cell.qcfc, cell.regions))
    files[qc_path.with_suffix(".json")] = jsonio.json_text(
        {
            "RelationshipMeasure": (
                "QC-FC: Pearson correlation across runs between each run's mean framewise "
                "displacement and the edge's connectivity (Pearson r)"
            ),
            "Weighted": True,
            "Directed": False,
            "ValidDiagonal": False,
            "StorageFormat": "Full",
            "NumberOfRunsWithFD": cell.n_runs_fd,
            "MinimumRuns": MIN_RUNS_QCFC,
            "MedianAbsoluteQCFC": _json_float(cell.median_abs_qcfc()),
            "PercentEdgesSignificant": _json_float(cell.percent_significant()),
            "SignificanceThreshold": "uncorrected p < 0.05, two-sided t test with n - 2 dof",
            **common,
        },
    )
    return files


def _tangent_files(cell: GroupCell, group_dir: Path, common: dict[str, Any]) -> dict[Path, str]:
    """Return the tangent-space reference of a cell and its sidecar, as texts."""
    from bidsapp.dataset import jsonio, tsvio

    tangent = cell.tangent
    assert tangent is not None
    path = group_dir / _cell_name(cell, "tangent", "relmat", ".tsv")
    left_out = [r for r, used in zip(cell.regions, tangent.regions_used, strict=True) if not used]
    sidecar = {
        "RelationshipMeasure": (
            "geometric mean of the runs' covariance matrices (the reference point of the "
            "tangent space, nilearn's ConnectivityMeasure(kind='tangent').mean_)"
        ),
        "Weighted": True,
        "Directed": False,
        "ValidDiagonal": True,
        "StorageFormat": "Full",
        "NonNegative": False,
        "CovarianceEstimator": "LedoitWolf",
        "Shrinkage": list(tangent.shrinkages),
        "Averaging": (
            "Each run's Ledoit-Wolf covariance of its timeseries TSV (centred, not rescaled) "
            "on the regions with data in every run; their geometric (affine-invariant "
            "Riemannian) mean by gradient descent from the arithmetic mean, at most 30 "
            "steps, tolerance 1e-7 (nilearn 0.12.1's defaults); every run counts once."
        ),
        "Converged": tangent.converged,
        "RegionsLeftOut": left_out,
        "RegionsLeftOutReason": "n/a (no data) in at least one run",
        **common,
    }
    return {
        path: tsvio.tsv_text(_matrix_table(tangent.matrix, cell.regions)),
        path.with_suffix(".json"): jsonio.json_text(sidecar),
    }


def _json_float(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


def qcfc_table(result: GroupResult) -> pd.DataFrame:
    """One row per task x space x atlas x statistic x denoising (``group/qcfc.tsv``).

    Parameters
    ----------
    result : GroupResult
        From :func:`compute_group`.

    Returns
    -------
    pandas.DataFrame
        Runs used, runs with FD, median |QC-FC|, % significant edges, mean FD, mean share
        of volumes kept and mean number of confound regressors.
    """
    rows = []
    for cell in result.cells:
        kept = [
            r.n_volumes_kept / r.n_volumes
            for r in cell.runs
            if r.n_volumes_kept is not None and r.n_volumes
        ]
        confounds = [
            len(r.sidecar["ConfoundColumns"])
            for r in cell.runs
            if isinstance(r.sidecar.get("ConfoundColumns"), list)
        ]
        fds = [r.mean_fd for r in cell.runs if r.mean_fd is not None]
        rows.append(
            {
                "task": cell.task,
                "space": cell.space,
                "atlas": cell.atlas,
                "stat": cell.stat,
                "denoise": cell.denoise,
                "n_runs": len(cell.runs),
                "n_runs_with_fd": cell.n_runs_fd,
                "n_edges": int(cell.qcfc_edges().size),
                "median_abs_qcfc": cell.median_abs_qcfc(),
                "percent_edges_p05": cell.percent_significant(),
                "mean_fd": float(np.mean(fds)) if fds else np.nan,
                "mean_percent_volumes_kept": 100 * float(np.mean(kept)) if kept else np.nan,
                "mean_n_confounds": float(np.mean(confounds)) if confounds else np.nan,
            }
        )
    return pd.DataFrame(rows)


def _runs_sidecar(entity_columns: Sequence[str]) -> dict[str, Any]:
    sidecar: dict[str, Any] = {
        c: {"Description": f"BIDS entity '{c}' of the run."} for c in entity_columns
    }
    sidecar.update({c: {"Description": d} for c, d in SUMMARY_COLUMNS.items()})
    sidecar["mean_fd"]["Units"] = "mm"
    return sidecar


class GroupWriteError(BidsappError, OSError):
    """A group output could not be written (full disk, read-only file system, ...)."""


#: Names of the files the group level writes in ``group/`` (the others are not its own).
_GROUP_OUTPUT_RE = re.compile(r"^(runs\.tsv|runs\.json|qcfc\.tsv|task-[^/]*_relmat\.(tsv|json))$")


def _old_group_outputs(group_dir: Path) -> list[Path]:
    """Files of ``group/`` that an earlier group level wrote (stale unless rewritten)."""
    return sorted(
        Path(entry.path)
        for entry in os.scandir(group_dir)
        if _GROUP_OUTPUT_RE.match(entry.name) and not entry.is_dir(follow_symlinks=False)
    )


def write_group_outputs(
    config: Any, output_dir: Path, records: list[RunRecord], result: GroupResult
) -> list[Path]:
    """Write every group output as one set; a failure raises :class:`GroupWriteError`.

    Every file is staged before any is replaced (:func:`bidsapp.dataset.fileio.atomic_write_set`),
    and the files of cells that no longer exist are removed, so ``group/`` never holds a mix
    of this run's results and an earlier one's. ``group/`` itself must be a real folder: a
    planted link is refused, never written through.
    """
    from bidsapp.dataset import dataset_description, fileio, jsonio, tsvio

    group_dir = output_dir / GROUP_DIR

    def failed(err: OSError, target: Path) -> GroupWriteError:
        reason = err.strerror or " ".join(str(err).split()) or type(err).__name__
        if isinstance(err, fileio.LinkedPathError):
            return GroupWriteError(err.errno, f"cannot write into {group_dir}: {reason}")
        return GroupWriteError(err.errno, f"cannot write {err.filename or target}: {reason}")

    try:
        dataset_description.write_bidsignore(output_dir)
        fileio.ensure_directory(output_dir, GROUP_DIR)
        fileio.remove_stale_temp_files(group_dir)  # of killed group runs
        old = _old_group_outputs(group_dir)
    except OSError as err:
        raise failed(err, group_dir) from err
    summary = summary_table(records, output_dir)
    entity_cols = [c for c in summary.columns if c not in SUMMARY_COLUMNS]
    files: dict[Path, str] = {
        group_dir / "runs.tsv": tsvio.tsv_text(summary),
        group_dir / "runs.json": jsonio.json_text(_runs_sidecar(entity_cols)),
    }
    for cell in result.cells:
        files.update(_cell_files(cell, group_dir, output_dir))
    summary_rows = qcfc_table(result)
    if result.cells:
        files[group_dir / "qcfc.tsv"] = tsvio.tsv_text(summary_rows)
    written = list(files)
    report = output_dir / REPORT_NAME
    if getattr(config, "reports", True):
        # Staged with the set: a report never describes other results than group/ holds.
        from bidsapp.report.group import build_group_report

        summaries = summary_rows.to_dict("records")
        drawn = build_group_report(
            result, output_dir, written, summaries=summaries, min_runs_qcfc=MIN_RUNS_QCFC
        )
        files[report] = drawn.html
    elif os.path.lexists(report) and not os.path.isdir(report):
        old.append(report)  # --no-reports: an earlier report would describe other results
    try:
        fileio.atomic_write_set(files, remove=[p for p in old if p not in files])
    except OSError as err:
        raise failed(err, group_dir) from err
    return list(files)
