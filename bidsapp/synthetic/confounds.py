"""Synthetic fMRIPrep confounds: motion, FD, DVARS, CompCor, WM/CSF, cosines, ICA-AROMA.

Part of the synthetic data: columns and JSON metadata follow fMRIPrep's, computed from the
synthetic BOLD itself.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bidsapp.synthetic.bold import HEAD_RADIUS_MM, RunSignals

# fMRIPrep defaults: --fd-spike-threshold and --dvars-spike-threshold.
_FD_SPIKE_MM = 0.5


_DVARS_SPIKE = 1.5


_HIGH_PASS_PERIOD_S = 128.0


_MOTION_COLUMNS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")


def _expand(frame: pd.DataFrame, column: str, values: np.ndarray) -> None:
    """Add a regressor with fMRIPrep's ``_derivative1`` and ``_power2`` expansions."""
    derivative = np.concatenate([[np.nan], np.diff(values)])
    frame[column] = values
    frame[f"{column}_derivative1"] = derivative
    frame[f"{column}_derivative1_power2"] = derivative**2
    frame[f"{column}_power2"] = values**2


def cosine_basis(n_volumes: int, t_r: float, period_s: float = _HIGH_PASS_PERIOD_S) -> np.ndarray:
    """Return fMRIPrep's discrete cosine high-pass regressors.

    Parameters
    ----------
    n_volumes : int
        Number of (steady-state) volumes.
    t_r : float
        Repetition time (s).
    period_s : float, optional
        Cut-off period (s); fMRIPrep uses 128 s.

    Returns
    -------
    numpy.ndarray
        ``(n_volumes, n_cosines)`` array, ``floor(2 n t_r / period)`` columns.
    """
    order = int(np.floor(2 * n_volumes * t_r / period_s))
    times = np.arange(n_volumes)
    columns = [
        np.sqrt(2.0 / n_volumes) * np.cos(np.pi / n_volumes * (times + 0.5) * k)
        for k in range(1, order + 1)
    ]
    return np.column_stack(columns) if columns else np.zeros((n_volumes, 0))


def _high_pass(data: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Remove mean and cosine drifts from ``(n_volumes, n_voxels)`` data."""
    design = np.column_stack([np.ones(len(data)), basis])
    # Project onto the orthonormal complement of the (small) design: much faster
    # than a least-squares solve with tens of thousands of right-hand sides.
    q, _ = np.linalg.qr(design)
    return data - q @ (q.T @ data)


def _compcor(data: np.ndarray, basis: np.ndarray):
    """Principal components of high-passed, variance-normalised voxel timeseries.

    Returns
    -------
    components : numpy.ndarray
        ``(n_volumes, k)`` left singular vectors, every component.
    singular : numpy.ndarray
        Singular values of the ``k`` components.
    explained : numpy.ndarray
        Fraction of variance explained by every component (sums to 1).
    """
    clean = _high_pass(data, basis)
    scale = clean.std(axis=0)
    clean = clean[:, scale > 0] / scale[scale > 0]
    # Left singular vectors from the eigenvectors of the small (time x time) Gram
    # matrix: same result as an SVD of the wide matrix, and immune to OpenBLAS's
    # threaded SVD slowing down 100-fold on busy shared cores.
    eigenvalues, eigenvectors = np.linalg.eigh(clean @ clean.T)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues = np.clip(eigenvalues[order], 0.0, None)
    keep = eigenvalues > eigenvalues[0] * 1e-10
    u, s = eigenvectors[:, order][:, keep], np.sqrt(eigenvalues[keep])
    return u, s, s**2 / np.sum(s**2)


def _dvars(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DVARS and Nichols' standardised DVARS of ``(n_volumes, n_voxels)`` data.

    The expected DVARS under stationarity uses robust voxel standard deviations
    (interquartile range) and lag-1 autocorrelations, as fMRIPrep's does.
    """
    diffs = np.diff(data, axis=0)
    dvars = np.sqrt(np.mean(diffs**2, axis=1))
    q75, q25 = np.percentile(data, [75, 25], axis=0)
    robust_sd = (q75 - q25) / 1.349
    centred = data - data.mean(axis=0)
    denominator = np.sum(centred**2, axis=0)
    ar1 = np.divide(
        np.sum(centred[1:] * centred[:-1], axis=0),
        denominator,
        out=np.zeros_like(denominator),
        where=denominator > 0,
    )
    expected = np.sqrt(np.mean(2 * (1 - ar1) * robust_sd**2))
    return dvars, dvars / expected


def _motion_metrics(motion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Framewise displacement (Power, 50 mm head) and RMS deviation, in mm."""
    delta = np.abs(np.diff(motion, axis=0))
    fd = delta[:, :3].sum(1) + HEAD_RADIUS_MM * delta[:, 3:].sum(1)
    rmsd = np.sqrt((delta[:, :3] ** 2).sum(1) + 0.2 * 80.0**2 * (delta[:, 3:] ** 2).sum(1))
    return np.concatenate([[np.nan], fd]), np.concatenate([[np.nan], rmsd])


def _compcor_columns(
    frame: pd.DataFrame,
    metadata: dict,
    data: np.ndarray,
    masks: dict,
    basis: np.ndarray,
    n_dummy: int,
) -> None:
    """Add t/c/w/a CompCor columns and their fMRIPrep JSON metadata (in place).

    Components are computed on steady-state volumes; non-steady-state rows are 0,
    as fMRIPrep writes them. Components up to 50% cumulative variance are retained
    (fMRIPrep's default); the next few are listed as ``dropped_N``.
    """
    steady = data[n_dummy:]
    variance = _high_pass(steady, basis).var(axis=0)
    top = variance >= np.percentile(variance, 98)
    frame["tcompcor"] = data[:, top].mean(axis=1)
    groups = (
        ("t", top, {"Method": "tCompCor"}),
        ("c", masks["csf"], {"Method": "aCompCor", "Mask": "CSF"}),
        ("w", masks["wm"], {"Method": "aCompCor", "Mask": "WM"}),
        ("a", masks["csf"] | masks["wm"], {"Method": "aCompCor", "Mask": "combined"}),
    )
    dropped = 0
    for prefix, voxels, info in groups:
        components, singular, explained = _compcor(steady[:, voxels], basis)
        cumulative = np.cumsum(explained)
        n_keep = int(np.searchsorted(cumulative, 0.5) + 1)
        for index in range(min(n_keep + 5, components.shape[1])):
            entry = dict(info)
            entry.update(
                CumulativeVarianceExplained=float(cumulative[index]),
                Retained=index < n_keep,
                SingularValue=float(singular[index]),
                VarianceExplained=float(explained[index]),
            )
            if index < n_keep:
                column = f"{prefix}_comp_cor_{index:02d}"
                frame[column] = np.concatenate([np.zeros(n_dummy), components[:, index]])
                metadata[column] = entry
            else:
                metadata[f"dropped_{dropped}"] = entry
                dropped += 1


def confounds_table(
    data: np.ndarray,
    masks: dict[str, np.ndarray],
    signals: RunSignals,
    t_r: float,
    rng: np.random.Generator,
    aroma: bool,
) -> tuple[pd.DataFrame, dict]:
    """Build fMRIPrep's confounds table and JSON metadata for one run.

    Parameters
    ----------
    data : numpy.ndarray
        ``(n_brain_voxels, n_volumes)`` BOLD intensities (MNI grid).
    masks : dict
        Tissue masks of that grid.
    signals : RunSignals
        Timecourses of the run (motion, spikes, dummy volumes).
    t_r : float
        Repetition time (s).
    rng : numpy.random.Generator
        Source of the ICA-AROMA component noise.
    aroma : bool
        Add ``aroma_motion_XX`` columns.

    Returns
    -------
    frame : pandas.DataFrame
        The confounds, fMRIPrep column names, NaN where fMRIPrep writes ``n/a``.
    metadata : dict
        The ``desc-confounds_timeseries.json`` content.
    """
    brain = masks["brain"]
    series = data.T  # (n_volumes, n_brain_voxels)
    in_brain = {name: mask[brain] for name, mask in masks.items()}
    n_volumes, n_dummy = series.shape[0], signals.n_dummy
    frame = pd.DataFrame(index=range(n_volumes))
    metadata: dict[str, dict] = {}
    means = {
        "global_signal": series.mean(axis=1),
        "csf": series[:, in_brain["csf"]].mean(axis=1),
        "white_matter": series[:, in_brain["wm"]].mean(axis=1),
    }
    for column, values in means.items():
        _expand(frame, column, values)
        metadata[column] = {"Method": "Mean"}
    frame["csf_wm"] = series[:, in_brain["csf"] | in_brain["wm"]].mean(axis=1)
    metadata["csf_wm"] = {"Method": "Mean"}

    dvars, std_dvars = _dvars(series)
    fd, rmsd = _motion_metrics(signals.motion)
    frame["std_dvars"] = np.concatenate([[np.nan], std_dvars])
    frame["dvars"] = np.concatenate([[np.nan], dvars])
    frame["framewise_displacement"] = fd
    frame["rmsd"] = rmsd

    basis = cosine_basis(n_volumes - n_dummy, t_r)
    _compcor_columns(frame, metadata, series, in_brain, basis, n_dummy)
    metadata["tcompcor"] = {"Method": "Mean"}
    for index in range(basis.shape[1]):
        frame[f"cosine{index:02d}"] = np.concatenate([np.zeros(n_dummy), basis[:, index]])
    for volume in range(n_dummy):
        frame[f"non_steady_state_outlier{volume:02d}"] = np.eye(n_volumes)[volume]
    for axis, column in enumerate(_MOTION_COLUMNS):
        _expand(frame, column, signals.motion[:, axis])
    outliers = np.flatnonzero(
        (np.nan_to_num(fd) > _FD_SPIKE_MM)
        | (np.nan_to_num(frame["std_dvars"].to_numpy()) > _DVARS_SPIKE)
    )
    for count, volume in enumerate(outliers):
        frame[f"motion_outlier{count:02d}"] = np.eye(n_volumes)[volume]
    if aroma:
        _aroma_columns(frame, signals, rng)
    return frame, metadata


def _aroma_columns(frame: pd.DataFrame, signals: RunSignals, rng: np.random.Generator):
    """Add ``aroma_motion_XX`` columns: ICA timecourses classified as motion."""
    n_volumes = len(frame)
    indices = np.sort(rng.choice(np.arange(1, 40), size=4, replace=False))
    derivative = np.vstack([np.zeros(6), np.diff(signals.motion, axis=0)])
    for index in indices:
        mixing = rng.normal(size=6)
        component = derivative @ mixing + 0.2 * derivative.std() * rng.normal(size=n_volumes)
        component = (component - component.mean()) / (component.std() or 1.0)
        frame[f"aroma_motion_{index:02d}"] = component
