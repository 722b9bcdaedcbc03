"""Group statistics in pure numpy: Fisher-z mean connectivity and QC-FC, one run at a time.

Part of the app layer's group level (it knows nothing of files). QC-FC is the Pearson
correlation, across runs, between each run's mean framewise displacement and an edge's
connectivity (Ciric et al. 2017; Parkes et al. 2018).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_RUNS_QCFC = 3


def _symmetric(upper: np.ndarray, size: int, diagonal: float | np.ndarray) -> np.ndarray:
    """Build the square matrix whose edges (upper triangle, mirrored) are ``upper``."""
    full = np.empty((size, size), dtype=upper.dtype)
    rows, cols = np.triu_indices(size, k=1)
    full[rows, cols] = upper
    full[cols, rows] = upper
    np.fill_diagonal(full, diagonal)
    return full


class FisherZMean:
    """Running Fisher-z average of correlation matrices, one run at a time.

    Only the edges (upper triangle) are kept: a correlation matrix is symmetric, and this
    halves the work per run.

    Parameters
    ----------
    shape : tuple of int
        Shape of the (square) matrices.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.size = int(shape[0])
        self._edges = np.triu_indices(self.size, k=1)
        self.total = np.zeros(self._edges[0].size)
        self.count = np.zeros(self._edges[0].size, dtype=int)

    def add(self, matrix: np.ndarray) -> None:
        """Add one run's Pearson correlation matrix (NaN for edges without data).

        Parameters
        ----------
        matrix : numpy.ndarray
            Square matrix of the accumulator's shape.
        """
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.arctanh(np.asarray(matrix, dtype=float)[self._edges])
        finite = ~np.isnan(z)
        np.copyto(z, 0.0, where=~finite)
        self.total += z
        self.count += finite

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the back-transformed mean and the number of runs per edge.

        Returns
        -------
        mean : numpy.ndarray
            ``tanh(mean(arctanh(r)))``; NaN where no run has the edge; 1 on the diagonal of
            regions with data in some run.
        count : numpy.ndarray of int
            Runs averaged for each edge (0 on the diagonal).
        """
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.tanh(np.where(self.count > 0, self.total / np.maximum(self.count, 1), np.nan))
        count = _symmetric(self.count, self.size, 0)
        has_data = count.any(axis=0)
        return _symmetric(mean, self.size, np.where(has_data, 1.0, np.nan)), count


class QCFC:
    """Running QC-FC: per edge, correlation across runs of mean FD and connectivity.

    Sums of x, y, x², y², xy are kept per edge (upper triangle: the matrices are
    symmetric), so memory is a few matrices whatever the number of runs; mean FD is
    centred on ``center`` first for numerical accuracy.

    Parameters
    ----------
    shape : tuple of int
        Shape of the (square) matrices.
    center : float, default=0.0
        A typical mean FD (mm), for example the mean over runs.
    """

    def __init__(self, shape: tuple[int, ...], center: float = 0.0) -> None:
        self.center = center
        self.size = int(shape[0])
        self._edges = np.triu_indices(self.size, k=1)
        self.sums = {k: np.zeros(self._edges[0].size) for k in ("x", "y", "xx", "yy", "xy")}
        self.n = np.zeros(self._edges[0].size, dtype=int)
        self.n_regions = np.zeros(self.size, dtype=int)

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
        matrix = np.asarray(matrix, dtype=float)
        y = matrix[self._edges]
        ok = np.isfinite(y)
        x = float(mean_fd) - self.center
        y0 = np.where(ok, y, 0.0)
        self.n += ok
        self.n_regions += np.isfinite(np.diagonal(matrix))
        self.sums["x"] += x * ok
        self.sums["xx"] += (x * x) * ok
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
            Runs used for each edge (on the diagonal: runs where the region has data).
        """
        # scipy.special, not scipy.stats (whose import alone is ~1 s): t.sf is stdtr(dof, -t).
        from scipy.special import stdtr

        s, n = self.sums, self.n
        with np.errstate(divide="ignore", invalid="ignore"):
            cov = s["xy"] - s["x"] * s["y"] / n
            var_x = s["xx"] - s["x"] ** 2 / n
            var_y = s["yy"] - s["y"] ** 2 / n
            r = cov / np.sqrt(var_x * var_y)
        tiny = 1e-12
        r = np.clip(
            np.where((n >= MIN_RUNS_QCFC) & (var_x > tiny) & (var_y > tiny), r, np.nan), -1.0, 1.0
        )
        dof = np.maximum(n - 2, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = r * np.sqrt(dof / np.maximum(1.0 - r**2, 1e-300))
        p = np.where(np.isfinite(r), 2.0 * stdtr(dof, -np.abs(t)), np.nan)
        return (
            _symmetric(r, self.size, np.nan),
            _symmetric(p, self.size, np.nan),
            _symmetric(n, self.size, self.n_regions),
        )


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


def upper_triangle(matrix: np.ndarray) -> np.ndarray:
    """Upper-triangle (edge) values of a square matrix, diagonal excluded."""
    return matrix[np.triu_indices(matrix.shape[0], k=1)]
