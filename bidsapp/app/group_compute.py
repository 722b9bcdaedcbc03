"""Group results: one cell per task x space x atlas x statistic x denoising, with its runs.

Part of the app layer: the participant outcomes are grouped, each usable run's connectivity is
added to the cell's Fisher-z mean and QC-FC (:mod:`bidsapp.app.group_stats`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bidsapp.app.connectivity import ConnectivityError, TangentReference, pearson, tangent_reference
from bidsapp.app.group_inputs import checked_timeseries
from bidsapp.app.group_stats import QCFC, FisherZMean, upper_triangle
from bidsapp.app.progress import progress
from bidsapp.blas import one_blas_thread
from bidsapp.report.records import (
    RunRecord,
)

#: Groups of at least this many runs print a progress line at every tenth of them.
PROGRESS_MIN_RUNS = 100


class _ReadProgress:
    """The progress line of a long group level: runs read so far, of how many, since when."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.step = max(1, -(-total // 10)) if total >= PROGRESS_MIN_RUNS else 0
        self.start = time.monotonic()

    def tick(self) -> None:
        """Count one run read (used or left out)."""
        self.done += 1
        if self.step and (self.done % self.step == 0 or self.done == self.total):
            seconds = time.monotonic() - self.start
            progress.info(
                f"bidsapp group: read {self.done}/{self.total} runs "
                f"({100 * self.done // self.total} %, {seconds:.0f} s)"
            )


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
    tangent: TangentReference | None = None
    tangent_problem: str = ""

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
        values = upper_triangle(self.qcfc)
        return values[np.isfinite(values)]

    def median_abs_qcfc(self) -> float:
        """Median absolute QC-FC over edges (NaN when not computable)."""
        edges = self.qcfc_edges()
        return float(np.median(np.abs(edges))) if edges.size else float("nan")

    def percent_significant(self) -> float:
        """Percentage of edges whose QC-FC has an uncorrected p < 0.05."""
        p = upper_triangle(self.qcfc_p)
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
    records: Sequence[RunRecord],
    output_dir: str | os.PathLike[str] | None = None,
    *,
    tangent: bool = False,
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
    tangent : bool, default=False
        Also compute each cell's tangent-space reference
        (:func:`bidsapp.app.connectivity.tangent_reference`). It needs every run's
        timeseries at once (the geometric mean is iterative), so it is opt-in: memory grows
        with the runs of a cell, and each step costs an eigendecomposition per run.

    Returns
    -------
    GroupResult
        The records and one :class:`GroupCell` per combination with usable runs.
    """
    by_key: dict[tuple[str, ...], list[RunRecord]] = {}
    for record in records:
        if record.has_outputs:
            by_key.setdefault(_group_key(record), []).append(record)
    problems: list[str] = []
    cells: list[GroupCell] = []
    counter = _ReadProgress(sum(len(runs) for runs in by_key.values()))
    # One BLAS thread, entered once (each entry costs ~2 ms): the bytes do not depend on it.
    with one_blas_thread():
        for key in sorted(by_key):
            cell, skipped = _cell(key, by_key[key], output_dir, counter, tangent)
            problems.extend(skipped)
            if cell is not None:
                cells.append(cell)
    _disambiguate(cells)
    return GroupResult(list(records), cells, problems)


def _cell(
    key: tuple[str, ...],
    records: Sequence[RunRecord],
    output_dir: str | os.PathLike[str] | None,
    counter: _ReadProgress,
    tangent: bool = False,
) -> tuple[GroupCell | None, list[str]]:
    """One cell from its runs, read one at a time; None when no run is usable."""
    task, space, atlas, stat, denoise = key
    used: list[RunRecord] = []
    skipped: list[str] = []
    regions: list[str] | None = None
    fds = [r.mean_fd for r in records if r.mean_fd is not None]
    mean_acc: FisherZMean | None = None
    qc_acc: QCFC | None = None
    kept: list[np.ndarray] = []  # every run's timeseries, for the tangent reference only
    for record in records:
        counter.tick()
        try:
            timeseries = checked_timeseries(record, output_dir)
        except (OSError, ValueError, pd.errors.ParserError) as err:
            skipped.append(f"{record.timeseries}: left out, {' '.join(str(err).split())}")
            continue
        names = timeseries.columns.tolist()  # text: the header of the TSV
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
        values = timeseries.to_numpy()
        matrix = pearson(values)
        if tangent:
            kept.append(values)
        mean_acc.add(matrix)
        qc_acc.add(matrix, record.mean_fd)
        used.append(record)
    if not used or regions is None or mean_acc is None or qc_acc is None:
        return None, skipped
    mean, count = mean_acc.result()
    qc, p, n = qc_acc.result()
    cell = GroupCell(
        task, space, atlas, stat, denoise, regions, used, mean, count, qc, p, n, skipped
    )
    if tangent:
        try:
            cell.tangent = tangent_reference(kept)
        except ConnectivityError as err:  # the other results stand
            cell.tangent_problem = f"no tangent reference for {cell.label}: {err}"
            progress.warning(f"bidsapp group: warning: {cell.tangent_problem}")
    return cell, skipped


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
