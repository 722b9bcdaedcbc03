"""The one connectivity rule: Pearson correlation between region timeseries (``relmat``).

Part of the app layer: the participant level writes it as each run's ``_relmat.tsv`` and the
group level averages it over runs (the reports read the files). numpy's ``corrcoef`` on the
regions with data; ``pandas.DataFrame.corr`` was measured on the demo's runs and differs in
the last bits (up to 1.6e-15), so it is not used: the bytes written must not change.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bidsapp.blas import one_blas_thread


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
    valid = np.isfinite(values).all(axis=0)
    valid[valid] = np.std(values[:, valid], axis=0) > 0
    corr = np.full((values.shape[1], values.shape[1]), np.nan)
    if valid.any():
        corr[np.ix_(valid, valid)] = np.corrcoef(values[:, valid], rowvar=False)
    return corr


def relmat(timeseries: pd.DataFrame) -> pd.DataFrame:
    """Pearson correlation between regions; n/a for regions without data.

    Computed with one BLAS thread, so that the bytes written do not depend on how many
    threads the process has (joblib workers get fewer than the main process): a rerun or
    ``--n-jobs`` never changes a file that resume compares by hash.
    """
    with one_blas_thread():
        corr = pearson(timeseries.to_numpy(dtype=float))
    return pd.DataFrame(corr, index=timeseries.columns, columns=timeseries.columns)
