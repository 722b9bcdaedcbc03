"""Group level: summarise the participant outputs and compare denoising strategies.

Reads only what the participant level wrote (status tables, timeseries TSVs and their
sidecars; never the BOLD) and writes, in ``OUTPUT_DIR/group/``:

``runs.tsv`` (+ ``runs.json``)
    One row per run x atlas x denoising: entities, atlas, statistic, denoising, volumes
    total and kept, confound regressors, mean framewise displacement, regions below
    coverage, status (``ok``, ``failed``, ``excluded``) and reason. Runs whose latest status
    is ``failed`` or ``excluded`` keep their row but are left out of everything below, even
    when older output files remain on disk; so are runs whose timeseries TSV or sidecar is
    cut short or garbled (a warning names the file).
``task-<t>_space-<s>_atlas-<a>_stat-pearsoncorrelation_desc-<d>_relmat.tsv`` (+ ``.json``)
    Group mean connectivity of each atlas x denoising x task: each run's Pearson r is
    Fisher z-transformed (``arctanh``), averaged over runs and transformed back (``tanh``).
``task-<t>_space-<s>_atlas-<a>_stat-qcfc_desc-<d>_relmat.tsv`` (+ ``.json``)
    QC-FC of each edge: the Pearson correlation, across runs, between the run's mean
    framewise displacement and the edge's connectivity (Ciric et al. 2017; Parkes et al.
    2018), the standard benchmark of how much motion a denoising strategy leaves in.
``qcfc.tsv``
    Per atlas x denoising x task: runs used, median |QC-FC|, share of edges with an
    uncorrected p < 0.05, mean volumes kept.

and ``OUTPUT_DIR/group.html``, the group report, beside the ``sub-<label>.html`` reports.

Matrices keep the participant-level names (minus subject and run), so tools that parse
XCP-D-style ``relmat`` names read them the same way; BIDS has no group-level naming, and
the validator ignores the folder through ``.bidsignore`` (:data:`BIDSIGNORE_PATTERNS`).
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bidsapp.errors import BidsappError
from bidsapp.report.participant import (
    LEFT_OUT_STATUSES,
    RUN_KEYS,
    RunRecord,
    collect_runs,
    section_anchor,
    tsv_problem,
)

logger = logging.getLogger(__name__)

__all__ = [
    "BIDSIGNORE_PATTERNS",
    "GROUP_DIR",
    "REPORT_NAME",
    "FisherZMean",
    "GroupResult",
    "QCFC",
    "compute_group",
    "fisher_z_mean",
    "qcfc",
    "run_group",
    "summary_table",
]

GROUP_DIR = "group"
REPORT_NAME = "group.html"
#: Patterns for ``.bidsignore``: the group folder and the HTML reports at the root. Checked
#: with bids-validator-deno 3.0.2: ``/group`` silences the folder and its files; ``group/`` or
#: ``/group/`` leave a NOT_INCLUDED error on the folder itself.
BIDSIGNORE_PATTERNS = ("/group", "*.html")

EXIT_OK = 0
EXIT_NO_RESULTS = 1

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
_MIN_RUNS_QCFC = 3


# --------------------------------------------------------------------------------------
# Computations (pure numpy)
# --------------------------------------------------------------------------------------


class FisherZMean:
    """Running Fisher-z average of correlation matrices, one run at a time.

    Parameters
    ----------
    shape : tuple of int
        Shape of the (square) matrices.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.total = np.zeros(shape)
        self.count = np.zeros(shape, dtype=int)

    def add(self, matrix: np.ndarray) -> None:
        """Add one run's Pearson correlation matrix (NaN for edges without data).

        Parameters
        ----------
        matrix : numpy.ndarray
            Square matrix of the accumulator's shape.
        """
        r = np.array(matrix, dtype=float)
        np.fill_diagonal(r, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.arctanh(r)
        finite = ~np.isnan(z)
        self.total += np.where(finite, z, 0.0)
        self.count += finite

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the back-transformed mean and the number of runs per edge.

        Returns
        -------
        mean : numpy.ndarray
            ``tanh(mean(arctanh(r)))``; NaN where no run has the edge; 1 on the diagonal of
            regions with data in some run.
        count : numpy.ndarray of int
            Runs averaged for each edge.
        """
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.tanh(np.where(self.count > 0, self.total / np.maximum(self.count, 1), np.nan))
        has_data = self.count.any(axis=0) | self.count.any(axis=1)
        np.fill_diagonal(mean, np.where(has_data, 1.0, np.nan))
        return mean, self.count.copy()


class QCFC:
    """Running QC-FC: per edge, correlation across runs of mean FD and connectivity.

    Sums of x, y, x², y², xy are kept per edge, so memory is a few matrices whatever the
    number of runs; mean FD is centred on ``center`` first for numerical accuracy.

    Parameters
    ----------
    shape : tuple of int
        Shape of the (square) matrices.
    center : float, default=0.0
        A typical mean FD (mm), for example the mean over runs.
    """

    def __init__(self, shape: tuple[int, ...], center: float = 0.0) -> None:
        self.center = center
        self.sums = {k: np.zeros(shape) for k in ("x", "y", "xx", "yy", "xy")}
        self.n = np.zeros(shape, dtype=int)

    def add(self, matrix: np.ndarray, mean_fd: float | None) -> None:
        """Add one run; runs without mean FD are ignored.

        Parameters
        ----------
        matrix : numpy.ndarray
            The run's connectivity (Pearson r); NaN edges are left out for that edge.
        mean_fd : float or None
            The run's mean framewise displacement in mm.
        """
        if mean_fd is None or not np.isfinite(mean_fd):
            return
        y = np.array(matrix, dtype=float)
        ok = np.isfinite(y)
        x = float(mean_fd) - self.center
        y0 = np.where(ok, y, 0.0)
        self.n += ok
        self.sums["x"] += np.where(ok, x, 0.0)
        self.sums["xx"] += np.where(ok, x * x, 0.0)
        self.sums["y"] += y0
        self.sums["yy"] += y0 * y0
        self.sums["xy"] += x * y0

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return QC-FC, its p-values and the runs used per edge.

        Returns
        -------
        r : numpy.ndarray
            QC-FC of each edge; NaN on the diagonal, where fewer than three runs have the
            edge, or where either variable is constant.
        p : numpy.ndarray
            Two-sided uncorrected p-value (t test with n - 2 degrees of freedom).
        n : numpy.ndarray of int
            Runs used for each edge.
        """
        from scipy import stats

        s, n = self.sums, self.n
        with np.errstate(divide="ignore", invalid="ignore"):
            cov = s["xy"] - s["x"] * s["y"] / n
            var_x = s["xx"] - s["x"] ** 2 / n
            var_y = s["yy"] - s["y"] ** 2 / n
            r = cov / np.sqrt(var_x * var_y)
        tiny = 1e-12
        r = np.clip(
            np.where((n >= _MIN_RUNS_QCFC) & (var_x > tiny) & (var_y > tiny), r, np.nan), -1.0, 1.0
        )
        np.fill_diagonal(r, np.nan)
        dof = np.maximum(n - 2, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = r * np.sqrt(dof / np.maximum(1.0 - r**2, 1e-300))
        p = np.where(np.isfinite(r), 2.0 * stats.t.sf(np.abs(t), dof), np.nan)
        return r, p, n.copy()


def fisher_z_mean(matrices: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Average correlation matrices in Fisher z space (see :class:`FisherZMean`).

    Parameters
    ----------
    matrices : sequence of numpy.ndarray
        Square Pearson correlation matrices of equal shape; NaN marks edges without data
        (regions set to ``n/a`` in that run).

    Returns
    -------
    mean : numpy.ndarray
        ``tanh(mean(arctanh(r)))`` over the runs where the edge is finite; NaN where no run
        has it; 1 on the diagonal of regions with data in some run.
    n_runs : numpy.ndarray of int
        Number of runs averaged for each edge.
    """
    if not len(matrices):
        raise ValueError("fisher_z_mean needs at least one matrix")
    acc = FisherZMean(np.shape(matrices[0]))
    for matrix in matrices:
        acc.add(matrix)
    return acc.result()


def qcfc(
    matrices: Sequence[np.ndarray], mean_fd: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """QC-FC: per edge, Pearson correlation across runs of mean FD and connectivity.

    Parameters
    ----------
    matrices : sequence of numpy.ndarray
        One square connectivity matrix (Pearson r) per run; NaN edges are left out of that
        edge's correlation.
    mean_fd : sequence of float
        Mean framewise displacement (mm) of each run; runs with NaN are left out.

    Returns
    -------
    r : numpy.ndarray
        QC-FC correlation of each edge; NaN on the diagonal and where fewer than three runs
        have the edge or either variable is constant.
    p : numpy.ndarray
        Two-sided uncorrected p-value of each QC-FC correlation (t test, n - 2 dof).
    n : numpy.ndarray of int
        Runs used for each edge.
    """
    fd = np.asarray(mean_fd, dtype=float)
    if len(matrices) != fd.size or not len(matrices):
        raise ValueError(f"{len(matrices)} matrices but {fd.size} mean FD values")
    acc = QCFC(np.shape(matrices[0]), float(np.nanmean(fd)) if np.isfinite(fd).any() else 0.0)
    for matrix, value in zip(matrices, fd, strict=True):
        acc.add(matrix, value)
    return acc.result()


def _upper(matrix: np.ndarray) -> np.ndarray:
    """Upper-triangle (edge) values of a square matrix, diagonal excluded."""
    return matrix[np.triu_indices(matrix.shape[0], k=1)]


# --------------------------------------------------------------------------------------
# Group results
# --------------------------------------------------------------------------------------


@dataclass
class GroupCell:
    """Results for one task x space x atlas x statistic x denoising."""

    task: str
    space: str
    atlas: str
    stat: str
    denoise: str
    regions: list[str]
    runs: list[RunRecord]
    mean: np.ndarray
    n_runs_edge: np.ndarray
    qcfc: np.ndarray
    qcfc_p: np.ndarray
    qcfc_n: np.ndarray
    skipped_runs: list[str] = field(default_factory=list)
    desc_label: str = ""

    @property
    def label(self) -> str:
        """Short human-readable name of the cell."""
        return f"task-{self.task} · atlas-{self.atlas} · {self.denoise}"

    @property
    def n_runs_fd(self) -> int:
        """Runs with a mean framewise displacement (those QC-FC can use)."""
        return sum(r.mean_fd is not None for r in self.runs)

    def qcfc_edges(self) -> np.ndarray:
        """Finite QC-FC values of every edge (upper triangle)."""
        values = _upper(self.qcfc)
        return values[np.isfinite(values)]

    def median_abs_qcfc(self) -> float:
        """Median absolute QC-FC over edges (NaN when not computable)."""
        edges = self.qcfc_edges()
        return float(np.median(np.abs(edges))) if edges.size else float("nan")

    def percent_significant(self) -> float:
        """Percentage of edges whose QC-FC has an uncorrected p < 0.05."""
        p = _upper(self.qcfc_p)
        p = p[np.isfinite(p)]
        return float(100.0 * np.mean(p < 0.05)) if p.size else float("nan")


@dataclass
class GroupResult:
    """Everything the group level computed."""

    records: list[RunRecord]
    cells: list[GroupCell]
    problems: list[str] = field(default_factory=list)


def _group_key(record: RunRecord) -> tuple[str, str, str, str, str]:
    e = record.entities
    return (e.get("task", ""), e.get("space", ""), record.atlas, record.stat, record.denoise)


def compute_group(
    records: Sequence[RunRecord], output_dir: str | os.PathLike[str] | None = None
) -> GroupResult:
    """Compute group connectivity and QC-FC for every task x space x atlas x denoising.

    A run's timeseries is used only when its bytes match the SHA-256 its sidecar records
    and neither it nor (when ``output_dir`` is given) a folder below ``output_dir`` on its
    path is a symbolic link; the others are listed in :attr:`GroupResult.problems`.

    Parameters
    ----------
    records : sequence of RunRecord
        Participant outcomes (:func:`bidsapp.report.participant.collect_runs`).
    output_dir : path-like, optional
        The output dataset the records come from.

    Returns
    -------
    GroupResult
        The records and one :class:`GroupCell` per combination with usable runs.
    """
    from bidsapp.report.participant import run_connectivity

    by_key: dict[tuple[str, ...], list[RunRecord]] = {}
    for record in records:
        if record.has_outputs:
            by_key.setdefault(_group_key(record), []).append(record)
    problems: list[str] = []
    cells: list[GroupCell] = []
    for key in sorted(by_key):
        task, space, atlas, stat, denoise = key
        used: list[RunRecord] = []
        skipped: list[str] = []
        regions: list[str] | None = None
        fds = [r.mean_fd for r in by_key[key] if r.mean_fd is not None]
        mean_acc: FisherZMean | None = None
        qc_acc: QCFC | None = None
        for record in by_key[key]:
            try:
                timeseries = _checked_timeseries(record, output_dir)
            except (OSError, ValueError, pd.errors.ParserError) as err:
                skipped.append(f"{record.timeseries}: left out, {' '.join(str(err).split())}")
                continue
            names = [str(c) for c in timeseries.columns]
            if regions is None:
                regions = names
                shape = (len(names), len(names))
                mean_acc = FisherZMean(shape)
                qc_acc = QCFC(shape, float(np.mean(fds)) if fds else 0.0)
            elif names != regions:
                skipped.append(
                    f"{record.timeseries}: its regions differ from the other runs of atlas "
                    f"{atlas} (different atlas versions under one label?)"
                )
                continue
            matrix = run_connectivity(timeseries).to_numpy()
            mean_acc.add(matrix)
            qc_acc.add(matrix, record.mean_fd)
            used.append(record)
        problems.extend(skipped)
        if not used or regions is None or mean_acc is None or qc_acc is None:
            continue
        mean, count = mean_acc.result()
        qc, p, n = qc_acc.result()
        cells.append(
            GroupCell(
                task, space, atlas, stat, denoise, regions, used, mean, count, qc, p, n, skipped
            )
        )
    _disambiguate(cells)
    return GroupResult(list(records), cells, problems)


def _checked_timeseries(
    record: RunRecord, output_dir: str | os.PathLike[str] | None = None
) -> pd.DataFrame:
    """Read a run's timeseries TSV, refusing one that is cut short, garbled, edited or linked.

    The participant level records the SHA-256 of the TSV in its sidecar (``OutputFiles``,
    see :func:`bidsapp.dataset.run_outputs.outputs_complete`); a file whose bytes differ was changed
    after it was written (an edit, a copy that stopped) and is not averaged.

    Raises
    ------
    ValueError
        If the file or a folder on its path is a symbolic link (never followed), the file
        is not a complete TSV (see :func:`tsv_problem`), its sidecar is missing, records no
        ``OutputFiles`` hash or another one, it holds a value that is not a number or
        ``n/a``, has no rows, or its rows are not the sidecar's ``RetainedVolumes``.
    OSError
        If the file cannot be read.
    """
    import io

    from bidsapp.dataset import fileio, run_outputs, tsvio

    path = record.timeseries
    if output_dir is not None and not fileio.no_linked_folder(output_dir, path.parent):
        raise ValueError("a folder on its path is a symbolic link bidsapp did not make")
    if os.path.islink(path):
        raise ValueError("it is a symbolic link bidsapp did not make")
    raw = fileio.read_regular_bytes(path)
    if raw is None:
        raise ValueError("it is not a regular file")
    text = raw.decode("utf-8")
    problem = tsv_problem(text)
    if problem:
        raise ValueError(problem)
    sidecar = path.with_name(path.name[: -len(".tsv")] + ".json")
    if not record.sidecar:
        raise ValueError(f"its JSON sidecar {sidecar.name} is missing or unreadable")
    members = record.sidecar.get(run_outputs.OUTPUT_FILES_KEY)
    if not isinstance(members, dict) or path.name not in members:
        raise ValueError(
            f"its sidecar {sidecar.name} records no {run_outputs.OUTPUT_FILES_KEY} hash for it "
            "(written by an older bidsapp?); run the participant level again"
        )
    if members[path.name] != fileio.sha256_digest(raw):
        raise ValueError(
            f"its content differs from the SHA-256 its sidecar records "
            f"({run_outputs.OUTPUT_FILES_KEY}): it changed after the participant level wrote it; "
            "run the participant level again"
        )
    table = tsvio.read_tsv(io.StringIO(text))
    if len(table) == 0:
        raise ValueError("it has no rows")
    try:
        table = table.astype(float)
    except ValueError as err:
        raise ValueError(f"it holds a value that is not a number ({err})") from err
    retained = record.sidecar.get("RetainedVolumes")
    if isinstance(retained, list) and len(retained) != len(table):
        raise ValueError(
            f"it has {len(table)} row(s) but its sidecar {sidecar.name} lists "
            f"{len(retained)} retained volume(s)"
        )
    return table


def _disambiguate(cells: list[GroupCell]) -> None:
    """Give a unique ``desc-`` label to cells differing only by extraction statistic."""
    seen: dict[tuple[str, ...], int] = {}
    for cell in cells:
        key = (cell.task, cell.space, cell.atlas, cell.denoise)
        seen[key] = seen.get(key, 0) + 1
    for cell in cells:
        key = (cell.task, cell.space, cell.atlas, cell.denoise)
        clash = seen[key] > 1 and cell.stat
        cell.desc_label = cell.denoise + (cell.stat[:1].upper() + cell.stat[1:] if clash else "")


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


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
    entity_cols = [k for k in RUN_KEYS if any(k in r.entities for r in records)]
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
            "EdgesWithMissingRuns": int(np.sum(_upper(cell.n_runs_edge) < len(cell.runs))),
            **common,
        },
    )
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
            "MinimumRuns": _MIN_RUNS_QCFC,
            "MedianAbsoluteQCFC": _json_float(cell.median_abs_qcfc()),
            "PercentEdgesSignificant": _json_float(cell.percent_significant()),
            "SignificanceThreshold": "uncorrected p < 0.05, two-sided t test with n - 2 dof",
            **common,
        },
    )
    return files


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


def _filter(records: list[RunRecord], config: Any) -> list[RunRecord]:
    keep = records
    if getattr(config, "participant_labels", None):
        keep = [r for r in keep if r.subject in set(config.participant_labels)]
    if getattr(config, "session_labels", None):
        keep = [r for r in keep if r.entities.get("session") in set(config.session_labels)]
    if getattr(config, "tasks", None):
        keep = [r for r in keep if r.entities.get("task") in set(config.tasks)]
    return keep


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


def _write_outputs(
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
        dataset_description.write_bidsignore(output_dir, BIDSIGNORE_PATTERNS)
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
    if result.cells:
        files[group_dir / "qcfc.tsv"] = tsvio.tsv_text(qcfc_table(result))
    written = list(files)
    report = output_dir / REPORT_NAME
    if getattr(config, "reports", True):
        # Staged with the set: a report never describes other results than group/ holds.
        files[report] = build_group_report(result, output_dir, written).html
    elif os.path.lexists(report) and not os.path.isdir(report):
        old.append(report)  # --no-reports: an earlier report would describe other results
    try:
        fileio.atomic_write_set(files, remove=[p for p in old if p not in files])
    except OSError as err:
        raise failed(err, group_dir) from err
    return list(files)


def _run_identity(entities: dict[str, Any]) -> tuple:
    """Return the entities that name one BOLD acquisition across spaces and resolutions."""
    from bidsapp.dataset.naming import RUN_ENTITIES

    # ICA-AROMA outputs are in another space and resolution than the run's query.
    keys = [k for k in RUN_ENTITIES if k not in ("space", "res", "den", "cohort")]
    return tuple(str(entities.get(k) or "") for k in keys)


def pending_runs(config: Any, records: Sequence[RunRecord]) -> tuple[int, list[str]] | None:
    """List the runs of the selection that have no participant outcome yet.

    The runs are found with :func:`bidsapp.dataset.query.find_runs` and the configuration's
    selection (space, participants, sessions, tasks, BIDS filters); a run counts as done
    when any status row or timeseries file of the output dataset names it, whatever its
    atlas, denoising or outcome.

    Parameters
    ----------
    config : RunConfig
        The invocation's settings (``bids_dir`` and the selection).
    records : sequence of RunRecord
        Participant outcomes (:func:`bidsapp.report.participant.collect_runs`).

    Returns
    -------
    tuple or None
        ``(number of runs selected, names of the runs without outcome)``, or None when
        the runs cannot be listed (a warning says why).
    """
    from bidsapp.dataset.query import NoRunsFoundError, find_runs

    work_dir = getattr(config, "work_dir", None)
    try:
        runs = find_runs(
            config.bids_dir,
            space=config.space,
            participant_labels=config.participant_labels,
            session_labels=config.session_labels,
            tasks=config.tasks,
            bids_filters=config.bids_filters,
            database_dir=Path(work_dir) / "pybids_db" if work_dir else None,
        )
    except NoRunsFoundError:
        return 0, []
    except Exception as err:  # advisory only: pybids and the query raise many types
        print(
            f"bidsapp group: warning: cannot list the runs of {config.bids_dir} to check "
            f"that the participant level is finished ({' '.join(str(err).split())})",
            file=sys.stderr,
        )
        return None
    done = {_run_identity(r.entities) for r in records}
    missing = [run.name for run in runs if _run_identity(run.entities) not in done]
    return len(runs), missing


def _left_out_lines(records: Sequence[RunRecord], problems: Sequence[str]) -> list[str]:
    """Lines saying which outcomes the group results leave out, and why."""
    left = [r for r in records if r.status in LEFT_OUT_STATUSES]
    if not left and not problems:
        return []
    counts = {s: sum(r.status == s for r in left) for s in sorted(LEFT_OUT_STATUSES)}
    parts = [f"{n} {s}" for s, n in counts.items() if n]
    if problems:
        parts.append(f"{len(problems)} with unusable outputs")
    lines = [
        f"bidsapp group: left out {len(left) + len(problems)} run outcome(s) from the group "
        f"results: {', '.join(parts)} (their rows stay in {GROUP_DIR}/runs.tsv)"
    ]
    shown = [
        f"  {r.status}: sub-{r.subject} {r.name} [{r.atlas}, {r.denoise}]: "
        f"{r.reason or 'no reason given'}"
        for r in left
    ] + [f"  warning: {p}" for p in problems]
    lines += shown[:_MAX_LISTED]
    if len(shown) > _MAX_LISTED:
        lines.append(f"  ... and {len(shown) - _MAX_LISTED} more (see {GROUP_DIR}/runs.tsv)")
    return lines


_MAX_LISTED = 20


def run_group(config: Any) -> int:
    """Run the group level on the participant outputs in ``config.output_dir``.

    Runs whose latest status is ``failed`` or ``excluded``, and runs whose outputs are cut
    short or garbled, are left out of the group results (with a message saying how many
    and why); their rows stay in ``runs.tsv``. When the selection has runs with no
    participant outcome yet (found with :func:`bidsapp.dataset.query.find_runs`), a warning says
    how many.

    Parameters
    ----------
    config : RunConfig
        The invocation's settings; ``output_dir``, ``bids_dir``, ``reports``, ``space``,
        ``work_dir`` and the participant, session, task and filter selections are used.

    Returns
    -------
    int
        0 when the group outputs were written; 1 when there are no participant results
        to summarise (the message says what is missing) or a group output cannot be
        written (full disk, read-only file system: a one-line message names the file;
        every file written is complete).
    """
    output_dir = Path(config.output_dir)
    broken: dict[str, str] = {}
    records = (
        _filter(collect_runs(output_dir, broken=broken), config) if output_dir.is_dir() else []
    )
    # One line per untrusted status table; its subject's runs are left out (not finished).
    selected = set(getattr(config, "participant_labels", None) or broken)
    for subject, problem in sorted(broken.items()):
        if subject in selected:
            print(
                f"bidsapp group: warning: {problem}; the runs of sub-{subject} are left out",
                file=sys.stderr,
            )
    if not records:
        print(
            f"bidsapp group: no participant-level results in {output_dir}: found no "
            "logs/sub-*_status.tsv and no sub-*/func/*_timeseries.tsv"
            + (" matching the selection" if output_dir.is_dir() else " (no such directory)")
            + ". Run the participant level first: bidsapp BIDS_DIR OUTPUT_DIR participant",
            file=sys.stderr,
        )
        return EXIT_NO_RESULTS
    pending = pending_runs(config, records)
    result = compute_group(records, output_dir)
    try:
        written = _write_outputs(config, output_dir, records, result)
    except GroupWriteError as err:
        print(f"bidsapp group: {err.strerror}", file=sys.stderr)
        return EXIT_NO_RESULTS
    n_left = sum(r.status in LEFT_OUT_STATUSES for r in records)
    n_used = sum(len(c.runs) for c in result.cells)
    print(
        f"bidsapp group: {len(records)} run outcome(s) from "
        f"{len({r.subject for r in records})} subject(s): {n_used} used, {n_left} left out; "
        f"{len(result.cells)} atlas x denoising x task combination(s); "
        f"wrote {len(written)} file(s) under {output_dir}"
    )
    for line in _left_out_lines(records, result.problems):
        print(line)
    if pending is not None and pending[1]:
        total, missing = pending
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        print(
            f"bidsapp group: warning: {len(missing)} of {total} runs have no participant "
            f"outputs yet ({shown}); the group results leave them out. Run the participant "
            "level for them, then the group level again.",
            file=sys.stderr,
        )
    if not result.cells:
        print(
            "bidsapp group: no run has usable outputs (every run failed or was left out); "
            f"see {output_dir / GROUP_DIR / 'runs.tsv'}",
            file=sys.stderr,
        )
        return EXIT_NO_RESULTS
    return EXIT_OK


# --------------------------------------------------------------------------------------
# Group report
# --------------------------------------------------------------------------------------


def _comparison(cells: Sequence[GroupCell]) -> str:
    """Table and figures comparing the denoising strategies of one task x atlas."""
    from bidsapp.report import figures
    from bidsapp.report import html as H

    rows = []
    for cell, row in zip(
        cells, qcfc_table(GroupResult([], list(cells))).to_dict("records"), strict=True
    ):
        rows.append(
            [
                cell.denoise,
                row["n_runs"],
                row["n_runs_with_fd"],
                row["mean_fd"],
                row["mean_percent_volumes_kept"],
                row["mean_n_confounds"],
                row["median_abs_qcfc"],
                row["percent_edges_p05"],
            ]
        )
    columns = [
        "denoise",
        "runs",
        "runs with FD",
        "mean FD (mm)",
        "volumes kept (%)",
        "confound regressors",
        "median |QC-FC|",
        "edges with p < 0.05 (%)",
    ]
    parts = [H.table(columns, rows)]
    few = [c.denoise for c in cells if c.n_runs_fd < _MIN_RUNS_QCFC]
    if few:
        parts.append(
            H.alert(
                [
                    f"QC-FC needs at least {_MIN_RUNS_QCFC} runs with framewise "
                    f"displacement; not computed for: {', '.join(few)}."
                ],
                "warning",
            )
        )
    qc = {c.denoise: c.qcfc_edges() for c in cells}
    kept = {
        c.denoise: [
            100 * r.n_volumes_kept / r.n_volumes
            for r in c.runs
            if r.n_volumes_kept is not None and r.n_volumes
        ]
        for c in cells
    }
    dof = {
        c.denoise: [
            len(r.sidecar.get("ConfoundColumns") or []) + r.n_volumes - r.n_volumes_kept
            for r in c.runs
            if r.n_volumes_kept is not None and r.n_volumes
        ]
        for c in cells
    }
    figs = [
        H.figure(
            figures.plot_distributions(
                qc,
                "QC-FC (r between mean FD and edge connectivity)",
                value_name="QC-FC",
                count_name="edges",
            ),
            "QC-FC distributions per denoising strategy",
            "Distribution of QC-FC over all edges, one outline per denoising strategy "
            "(dotted: median). The narrower and more centred on 0, the less motion is left "
            "in the connectivity; the legend gives the median |QC-FC| and the number of edges.",
            kind="qcfc",
        ),
        H.figure(
            figures.plot_strategy_boxes({"volumes kept (%)": kept, "degrees of freedom lost": dof}),
            "Volumes kept and degrees of freedom lost per denoising strategy",
            "Left: share of each run's volumes kept after non-steady-state removal and "
            "censoring. Right: confound regressors plus removed volumes, the temporal degrees "
            "of freedom each strategy spends. One dot per run.",
            kind="volumes",
        ),
    ]
    parts.append(f'<div class="grid2">{"".join(figs)}</div>')
    return "".join(parts)


def _connectivity_figures(cells: Sequence[GroupCell]) -> str:
    from bidsapp.report import figures
    from bidsapp.report import html as H

    figs = []
    for cell in cells:
        networks = figures.region_networks(cell.regions)
        figs.append(
            H.figure(
                figures.plot_connectivity(
                    cell.mean,
                    cell.regions,
                    networks,
                    title=f"{cell.denoise}: {len(cell.runs)} runs",
                ),
                f"Group mean connectivity, {cell.label}",
                f"{cell.label}: Fisher-z average of {len(cell.runs)} run(s) from "
                f"{len({r.subject for r in cell.runs})} subject(s)"
                + (", regions grouped by network." if networks else "."),
                kind="group-connectivity",
            )
        )
    return f'<div class="grid2">{"".join(figs)}</div>'


def _runs_section(records: Sequence[RunRecord], output_dir: Path) -> str:
    from bidsapp.report import html as H

    columns = [
        "subject",
        "run",
        "atlas",
        "denoise",
        "status",
        "volumes kept",
        "mean FD (mm)",
        "regions n/a",
        "reason / warnings",
    ]
    rows, classes = [], []
    for r in records:
        report = output_dir / f"sub-{r.subject}.html"
        subject, run = H.esc(r.subject), H.esc(r.name)
        if report.is_file():
            subject = f'<a href="{H.esc(report.name)}">{subject}</a>'
            if r.has_outputs:
                target = f"{report.name}#{section_anchor(r)}"
                run = f'<a href="{H.esc(target)}">{run}</a>'
        kept = (
            f"{r.n_volumes_kept} / {r.n_volumes}"
            if r.n_volumes_kept is not None and r.n_volumes is not None
            else None
        )
        rows.append(
            [
                subject,
                run,
                r.atlas,
                r.denoise,
                H.badge(r.status),
                kept,
                r.mean_fd,
                r.n_regions_low_coverage,
                r.reason,
            ]
        )
        classes.append("" if r.status == "ok" else r.status)
    return H.table(
        columns,
        rows,
        classes,
        raw_columns=("subject", "run", "status"),
        nowrap_columns=("run", "atlas", "volumes kept"),
    )


def build_group_report(result: GroupResult, output_dir: Path, written: Sequence[Path] = ()) -> Any:
    """Build the group HTML report.

    Parameters
    ----------
    result : GroupResult
        From :func:`compute_group`.
    output_dir : Path
        Output dataset root.
    written : sequence of Path, default=()
        Group files to list (and link) in the report.

    Returns
    -------
    bidsapp.report.html.HTMLReport
        The report.
    """
    from bidsapp import __version__
    from bidsapp.report import html as H

    records = result.records
    failed = [r for r in records if r.status in LEFT_OUT_STATUSES]
    subjects = sorted({r.subject for r in records})
    messages = [
        f"sub-{r.subject} {r.name} [{r.atlas}, {r.denoise}] {r.status.upper()}: "
        f"{r.reason or 'no reason given'}"
        for r in failed
    ]
    messages += [f"not used: {p}" for p in result.problems]
    intro = [
        f'<p class="lead">Output dataset <code>{H.esc(output_dir)}</code>: '
        f"{len(subjects)} subject(s), {len(records)} run outcome(s) "
        f"({sum(r.status == 'ok' for r in records)} ok, "
        f"{sum(r.status == 'failed' for r in records)} failed, "
        f"{sum(r.status == 'excluded' for r in records)} excluded). "
        f"Built {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} by bidsapp "
        f"{H.esc(__version__)} from the participant outputs only.</p>",
        H.alert(messages, "error", title="Failures and warnings")
        if messages
        else H.alert(["Every run succeeded."], "ok"),
    ]
    links = [("overview", "Overview")]
    sections = [H.section("Overview", "".join(intro), anchor="overview")]

    groups: dict[tuple[str, ...], list[GroupCell]] = {}
    for cell in result.cells:
        groups.setdefault((cell.task, cell.space, cell.atlas, cell.stat), []).append(cell)
    compare = [
        "<p>QC-FC is the correlation, across runs, between a run's mean framewise "
        "displacement and the connectivity of one edge; a denoising strategy that removes "
        "motion well leaves QC-FC distributed narrowly around 0 (Ciric et al. 2017, "
        "NeuroImage 154:174). It needs enough runs to mean something: with few runs the "
        "distributions are wide whatever the strategy.</p>"
    ]
    matrices = []
    for (task, space, atlas, stat), cells in groups.items():
        title = f"task-{task} · atlas-{atlas} · space-{space}" + (f" · stat-{stat}" if stat else "")
        compare.append(H.section(title, _comparison(cells), level=3))
        matrices.append(H.section(title, _connectivity_figures(cells), level=3))
    if groups:
        sections.append(
            H.section("Denoising strategies compared", "".join(compare), anchor="strategies")
        )
        sections.append(
            H.section("Group mean connectivity", "".join(matrices), anchor="connectivity")
        )
        links += [("strategies", "Strategies compared"), ("connectivity", "Group connectivity")]
    sections.append(H.section("Runs", _runs_section(records, output_dir), anchor="runs"))
    links.append(("runs", "Runs"))
    if written:
        items = []
        for path in written:
            try:
                rel = Path(path).relative_to(output_dir).as_posix()
            except ValueError:
                rel = str(path)
            items.append(f'<li><a href="{H.esc(rel)}"><code>{H.esc(rel)}</code></a></li>')
        sections.append(H.section("Files", "<ul>" + "".join(items) + "</ul>", anchor="files"))
        links.append(("files", "Files"))
    body = (
        "<h1>bidsapp group report</h1>"
        + H.nav(links)
        + "".join(sections)
        + f"<footer>bidsapp {H.esc(__version__)}. Self-contained page: figures are embedded, "
        "nothing is fetched.</footer>"
    )
    return H.HTMLReport("group · bidsapp", body, warnings=messages)


def write_group_report(result: GroupResult, output_dir: Path, written: Sequence[Path] = ()) -> Path:
    """Write ``OUTPUT_DIR/group.html``.

    Parameters
    ----------
    result : GroupResult
        From :func:`compute_group`.
    output_dir : Path
        Output dataset root.
    written : sequence of Path, default=()
        Group files to list in the report.

    Returns
    -------
    Path
        The report written.
    """
    report = build_group_report(result, output_dir, written)
    return report.save_as_html(Path(output_dir) / REPORT_NAME)
