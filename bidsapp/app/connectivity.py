"""Connectivity between region timeseries: Pearson correlation and Ledoit-Wolf measures.

Part of the app layer: the participant level writes each run's ``_relmat.tsv`` files and the
group level averages them over runs (the reports read the files).

- ``correlation`` is the Pearson correlation, numpy's ``corrcoef`` on the regions with data
  (``stat-pearsoncorrelation``, as XCP-D). ``pandas.DataFrame.corr`` was measured on the
  demo's runs and differs in the last bits (up to 1.6e-15), so it is not used: the bytes
  written must not change.
- ``partialcorrelation``, ``covariance`` and ``precision`` are what nilearn 0.12.1's
  ``ConnectivityMeasure(kind=...)`` computes by default: scikit-learn's ``LedoitWolf``
  covariance of the (centred, not rescaled) timeseries, its inverse, and the inverse
  rescaled to unit diagonal with its sign flipped off the diagonal.
- :func:`tangent_reference` is nilearn's ``ConnectivityMeasure(kind="tangent").mean_``: the
  geometric (affine-invariant Riemannian) mean of the runs' Ledoit-Wolf covariances.

nilearn's own ``kind="correlation"`` is not Pearson's r: it z-scores each region (ddof 0),
shrinks with Ledoit-Wolf and rescales, which gives ``(1 - shrinkage) * r`` off the diagonal.
bidsapp writes Pearson's r under that name, and the shrinkage of the other measures in their
sidecars. Regions without data (a non-finite value, or constant) get NaN rows and columns; the
measures are computed on the other regions only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bidsapp.blas import one_blas_thread

#: Per-run measures (``--connectivity``), in the order their files are written.
RUN_MEASURES = ("correlation", "partialcorrelation", "covariance", "precision")
#: Group-level measures (``--connectivity tangent`` at the group level).
GROUP_MEASURES = ("tangent",)
#: Measures whose values are correlations, which ``--fisher-z`` transforms.
CORRELATION_MEASURES = ("correlation", "partialcorrelation")

# nilearn 0.12.1's ConnectivityMeasure fits the tangent reference with these.
_TANGENT_MAX_ITER = 30
_TANGENT_TOL = 1e-7


class ConnectivityError(ValueError):
    """A connectivity measure that cannot be computed from the given timeseries."""


def valid_regions(values: np.ndarray) -> np.ndarray:
    """Boolean mask of the columns with data: all values finite and not constant.

    Parameters
    ----------
    values : numpy.ndarray
        ``(n_volumes, n_regions)`` region timeseries.

    Returns
    -------
    numpy.ndarray of bool
        ``(n_regions,)``.
    """
    values = np.asarray(values, dtype=float)
    valid = np.isfinite(values).all(axis=0)
    valid[valid] = np.std(values[:, valid], axis=0) > 0
    return valid


def pearson(values: np.ndarray) -> np.ndarray:
    """Pearson correlation between the columns of ``values``; NaN for columns without data.

    A column without data holds a non-finite value or is constant. Call it under
    :func:`bidsapp.blas.one_blas_thread` for bytes that do not depend on the thread count
    (:func:`relmat` does).

    Parameters
    ----------
    values : numpy.ndarray
        ``(n_volumes, n_regions)`` region timeseries.

    Returns
    -------
    numpy.ndarray
        ``(n_regions, n_regions)`` correlations.
    """
    values = np.asarray(values, dtype=float)
    valid = valid_regions(values)
    corr = np.full((values.shape[1], values.shape[1]), np.nan)
    if valid.any():
        corr[np.ix_(valid, valid)] = np.corrcoef(values[:, valid], rowvar=False)
    return corr


def ledoit_wolf(values: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf covariance of the columns, as nilearn's ``ConnectivityMeasure`` fits it.

    ``sklearn.covariance.LedoitWolf(store_precision=False)``: the data are centred, not
    rescaled; the estimate is ``(1 - s) * S + s * trace(S) / p * I`` with the empirical
    covariance ``S`` (ddof 0) and the shrinkage ``s`` that minimises the expected squared
    error.

    Parameters
    ----------
    values : numpy.ndarray
        ``(n_volumes, n_regions)`` timeseries, every column with data.

    Returns
    -------
    covariance : numpy.ndarray
        ``(n_regions, n_regions)``, in the squared units of ``values``.
    shrinkage : float
        ``s``, between 0 and 1.
    """
    from sklearn.covariance import LedoitWolf

    estimator = LedoitWolf(store_precision=False).fit(np.asarray(values, dtype=float))
    return estimator.covariance_, float(estimator.shrinkage_)


def _cov_to_corr(matrix: np.ndarray) -> np.ndarray:
    """Rescale a symmetric matrix to unit diagonal (nilearn's ``cov_to_corr``)."""
    scale = np.atleast_2d(1.0 / np.sqrt(np.diag(matrix)))
    corr = matrix * scale * scale.T
    np.fill_diagonal(corr, 1.0)
    return corr


@dataclass(frozen=True)
class Measure:
    """One connectivity matrix of a run.

    Attributes
    ----------
    matrix : numpy.ndarray
        ``(n_regions, n_regions)``; NaN rows and columns for regions without data.
    shrinkage : float or None
        Ledoit-Wolf shrinkage of the covariance it derives from; None for Pearson's r.
    """

    matrix: np.ndarray
    shrinkage: float | None = None


def measure(values: np.ndarray, kind: str) -> Measure:
    """Compute one per-run connectivity measure on the regions with data.

    Parameters
    ----------
    values : numpy.ndarray
        ``(n_volumes, n_regions)`` region timeseries; regions with a non-finite value or a
        constant signal get NaN rows and columns.
    kind : {"correlation", "partialcorrelation", "covariance", "precision"}
        ``correlation`` is Pearson's r (:func:`pearson`); the others are nilearn 0.12.1's
        ``ConnectivityMeasure`` kinds of the same name (``"partial correlation"`` there)
        with its default Ledoit-Wolf estimator.

    Returns
    -------
    Measure
        The matrix and the shrinkage used.

    Raises
    ------
    ConnectivityError
        For an unknown kind.
    """
    from scipy import linalg

    if kind == "correlation":
        return Measure(pearson(values))
    if kind not in RUN_MEASURES:
        raise ConnectivityError(f"unknown connectivity measure {kind!r}; use one of {RUN_MEASURES}")
    values = np.asarray(values, dtype=float)
    valid = valid_regions(values)
    out = np.full((values.shape[1], values.shape[1]), np.nan)
    if not valid.any():
        return Measure(out)
    covariance, shrinkage = ledoit_wolf(values[:, valid])
    if kind == "covariance":
        matrix = covariance
    else:  # Ledoit-Wolf shrinkage keeps the estimate positive definite: it inverts
        matrix = linalg.inv(covariance)
        if kind == "partialcorrelation":
            matrix = -_cov_to_corr(matrix)
            np.fill_diagonal(matrix, 1.0)
    out[np.ix_(valid, valid)] = matrix
    return Measure(out, shrinkage)


def fisher_z(matrix: np.ndarray) -> np.ndarray:
    """Fisher z-transform (``arctanh``) of a correlation matrix; NaN on the diagonal.

    The diagonal (1 by construction) would be infinite, so it is written as ``n/a``.

    Parameters
    ----------
    matrix : numpy.ndarray
        Square matrix of correlations (Pearson or partial), NaN where undefined.

    Returns
    -------
    numpy.ndarray
        ``arctanh(matrix)`` off the diagonal.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.arctanh(np.asarray(matrix, dtype=float))
    np.fill_diagonal(z, np.nan)
    return z


def relmat(timeseries: pd.DataFrame, kind: str = "correlation") -> pd.DataFrame:
    """One connectivity measure between regions, as a table; n/a for regions without data.

    Computed with one BLAS thread, so that the bytes written do not depend on how many
    threads the process has (joblib workers get fewer than the main process): a rerun or
    ``--n-jobs`` never changes a file that resume compares by hash.

    Parameters
    ----------
    timeseries : pandas.DataFrame
        One column per region.
    kind : str, default="correlation"
        See :func:`measure`.

    Returns
    -------
    pandas.DataFrame
        Regions by regions.
    """
    return relmats(timeseries, (kind,))[kind][0]


def relmats(
    timeseries: pd.DataFrame, kinds: Sequence[str], *, fisher: bool = False
) -> dict[str, tuple[pd.DataFrame, float | None]]:
    """Every requested measure of one run, as tables, with their shrinkage.

    Parameters
    ----------
    timeseries : pandas.DataFrame
        One column per region.
    kinds : sequence of str
        Measures of :data:`RUN_MEASURES`.
    fisher : bool, default=False
        Also return ``"<kind>_fisherz"`` (:func:`fisher_z`) for each kind of
        :data:`CORRELATION_MEASURES`.

    Returns
    -------
    dict
        ``kind -> (table, shrinkage or None)``.
    """
    names = timeseries.columns
    values = timeseries.to_numpy(dtype=float)
    out: dict[str, tuple[pd.DataFrame, float | None]] = {}
    with one_blas_thread():
        for kind in kinds:
            result = measure(values, kind)
            out[kind] = (pd.DataFrame(result.matrix, index=names, columns=names), result.shrinkage)
            if fisher and kind in CORRELATION_MEASURES:
                z = fisher_z(result.matrix)
                out[f"{kind}_fisherz"] = (
                    pd.DataFrame(z, index=names, columns=names),
                    result.shrinkage,
                )
    return out


def _eigen_apply(function, values: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Return the symmetric matrix of these eigenvectors with ``function(values)``."""
    return np.dot(vectors * function(values), vectors.T)


def _map_eigenvalues(function, symmetric: np.ndarray) -> np.ndarray:
    from scipy import linalg

    values, vectors = linalg.eigh(symmetric)
    return _eigen_apply(function, values, vectors)


def _check_spd(matrix: np.ndarray, what: str) -> None:
    """Refuse a matrix that is not symmetric positive definite (nilearn: 7 decimals)."""
    from scipy import linalg

    if not np.allclose(matrix, matrix.T, atol=1e-7) or linalg.eigvalsh(matrix).min() <= 0:
        raise ConnectivityError(f"{what} is not a symmetric positive definite matrix")


def geometric_mean(
    matrices: Sequence[np.ndarray], *, max_iter: int = _TANGENT_MAX_ITER, tol: float = _TANGENT_TOL
) -> tuple[np.ndarray, bool]:
    """Geometric mean of symmetric positive definite matrices (Fletcher & Joshi 2007).

    The matrix ``G`` minimising ``sum_k ||logm(G^-1/2 M_k G^-1/2)||^2``, found by gradient
    descent from the arithmetic mean, halving the step whenever the gradient norm grows:
    the algorithm and stopping rule of nilearn 0.12.1's ``_geometric_mean`` (which its
    ``ConnectivityMeasure(kind="tangent")`` calls with ``max_iter=30, tol=1e-7``).

    Parameters
    ----------
    matrices : sequence of numpy.ndarray
        Square SPD matrices of one shape.
    max_iter : int
        Most gradient steps.
    tol : float
        Convergence when the gradient's Frobenius norm divided by the matrix size
        (``n_regions ** 2``) is below it.

    Returns
    -------
    mean : numpy.ndarray
        The geometric mean.
    converged : bool
        Whether ``tol`` was reached within ``max_iter`` steps.

    Raises
    ------
    ConnectivityError
        If a matrix is not SPD, or a logarithm gives NaN.
    """
    from scipy import linalg

    stack = np.array([np.asarray(m, dtype=float) for m in matrices])
    for k, matrix in enumerate(stack):
        _check_spd(matrix, f"covariance {k}")
    gmean = np.mean(stack, axis=0)
    norm_old = np.inf
    step = 1.0
    norm = np.inf
    for _ in range(max_iter):
        vals, vecs = linalg.eigh(gmean)
        inv_sqrt = _eigen_apply(np.sqrt, 1.0 / vals, vecs)
        logs_mean = np.mean(
            [_map_eigenvalues(np.log, inv_sqrt.dot(m).dot(inv_sqrt)) for m in stack], axis=0
        )
        if np.any(np.isnan(logs_mean)):
            raise ConnectivityError("NaN after a matrix logarithm in the geometric mean")
        norm = np.linalg.norm(logs_mean)
        vals_log, vecs_log = linalg.eigh(logs_mean)
        sqrt = _eigen_apply(np.sqrt, vals, vecs)
        gmean = sqrt.dot(_eigen_apply(np.exp, vals_log * step, vecs_log)).dot(sqrt)
        if norm < norm_old:
            norm_old = norm
        elif norm > norm_old:
            step /= 2.0
            norm = norm_old
        if norm / gmean.size < tol:
            break
    return gmean, bool(norm / gmean.size < tol)


@dataclass(frozen=True)
class TangentReference:
    """The group reference of the tangent space: geometric mean of the runs' covariances.

    Attributes
    ----------
    matrix : numpy.ndarray
        ``(n_regions, n_regions)``; NaN rows and columns for regions left out.
    regions_used : numpy.ndarray of bool
        Regions with data in every run (the others are left out).
    shrinkages : tuple of float
        Ledoit-Wolf shrinkage of each run's covariance.
    converged : bool
        Whether the geometric mean reached nilearn's tolerance.
    """

    matrix: np.ndarray
    regions_used: np.ndarray
    shrinkages: tuple[float, ...]
    converged: bool


def tangent_reference(runs: Sequence[np.ndarray]) -> TangentReference:
    """Compute nilearn 0.12.1's ``ConnectivityMeasure(kind="tangent").fit(runs).mean_``.

    Each run's Ledoit-Wolf covariance (:func:`ledoit_wolf`) is computed on the regions with
    data in every run, and their geometric mean (:func:`geometric_mean`) is the point at
    which nilearn's tangent space is taken: a covariance matrix (in the squared units of the
    timeseries), not an average of tangent vectors (those average to about zero there).

    Parameters
    ----------
    runs : sequence of numpy.ndarray
        ``(n_volumes_k, n_regions)`` timeseries of each run, same regions.

    Returns
    -------
    TangentReference
        The reference matrix and what it was computed from.

    Raises
    ------
    ConnectivityError
        Without runs, or when no region has data in every run.
    """
    if not runs:
        raise ConnectivityError("the tangent reference needs at least one run")
    used = np.logical_and.reduce([valid_regions(r) for r in runs])
    if not used.any():
        raise ConnectivityError("no region has data in every run")
    with one_blas_thread():
        fits = [ledoit_wolf(np.asarray(r, dtype=float)[:, used]) for r in runs]
        gmean, converged = geometric_mean([cov for cov, _ in fits])
    out = np.full((used.size, used.size), np.nan)
    out[np.ix_(used, used)] = gmean
    return TangentReference(out, used, tuple(s for _, s in fits), converged)
