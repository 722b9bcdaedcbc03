"""Synthetic BOLD signals: band-limited network activity, motion, and their rendering in a grid.

Part of the synthetic data: region-structured signals (pairs of networks) in the cortical
shell, tissue baselines, and motion that moves the intensities like a head would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bidsapp.synthetic.anatomy import BRAIN_CENTER_MM, BRAIN_RADII_MM, tissue_masks, voxel_mm

# Mean intensity per tissue (arbitrary scanner units, the order of fMRIPrep outputs).
_BASELINE = {"gm": 9000.0, "wm": 10000.0, "csf": 13000.0}


_N_NETWORK_PAIRS = 12


_NETWORK_SIGMA_MM = 18.0


HEAD_RADIUS_MM = 50.0


@dataclass(frozen=True)
class RunSignals:
    """Timecourses shared by every image of one run (units: see fields)."""

    neural: np.ndarray  # (n_pairs, n_volumes), unit variance
    lateral: np.ndarray  # (2 * n_pairs, n_volumes), unit variance, per-blob part
    physio: np.ndarray  # (3, n_volumes), unit variance (slow, respiratory, cardiac)
    drift: np.ndarray  # (n_volumes,), fraction of baseline
    motion: np.ndarray  # (n_volumes, 6): mm and radians
    spikes: tuple[int, ...]
    n_dummy: int


def _band_limited(rng: np.random.Generator, n: int, t_r: float, band=(0.01, 0.1)) -> np.ndarray:
    """Return unit-variance Gaussian noise restricted to a frequency band (Hz)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, d=t_r)
    spectrum[(freqs < band[0]) | (freqs > band[1])] = 0
    signal = np.fft.irfft(spectrum, n)
    signal -= signal.mean()
    if signal.std() < 1e-12:  # a run too short for any frequency of the band
        signal = rng.standard_normal(n)
        signal -= signal.mean()
    return signal / signal.std()


def _network_centers(seed: int) -> np.ndarray:
    """Return left-hemisphere cortical centres (mm) of the homologous network pairs."""
    rng = np.random.default_rng([seed, 0x5EED])
    points = []
    while len(points) < _N_NETWORK_PAIRS:
        candidate = np.asarray(BRAIN_CENTER_MM) + rng.uniform(-1, 1, 3) * BRAIN_RADII_MM
        candidate[0] = -abs(candidate[0])
        radius = np.sqrt(np.sum(((candidate - BRAIN_CENTER_MM) / np.asarray(BRAIN_RADII_MM)) ** 2))
        if 0.65 <= radius <= 0.95 and candidate[0] < -10:
            points.append(candidate)
    return np.asarray(points)


def _simulate_motion(rng: np.random.Generator, n: int, spikes: Sequence[int]) -> np.ndarray:
    """Return realignment parameters (mm, radians) with sudden jumps at ``spikes``."""
    steps = np.zeros((n, 6))
    steps[1:, :3] = rng.normal(0.0, 0.012, (n - 1, 3))
    steps[1:, 3:] = rng.normal(0.0, 0.00018, (n - 1, 3))
    for volume in spikes:
        # A jump of ~1 mm framewise displacement, held afterwards.
        direction = rng.choice([-1.0, 1.0], 6)
        steps[volume, :3] += direction[:3] * rng.uniform(0.25, 0.45, 3)
        steps[volume, 3:] += direction[3:] * rng.uniform(0.002, 0.004, 3)
    motion = np.cumsum(steps, axis=0)
    return motion - motion[0]


def run_signals(
    rng: np.random.Generator, n: int, t_r: float, spikes: Sequence[int], n_dummy: int
) -> RunSignals:
    """Draw the timecourses of one run."""
    neural = np.stack([_band_limited(rng, n, t_r) for _ in range(_N_NETWORK_PAIRS)])
    lateral = np.stack([_band_limited(rng, n, t_r) for _ in range(2 * _N_NETWORK_PAIRS)])
    nyquist = 0.5 / t_r
    bands = ((0.0, 0.05), (0.1, 0.4), (0.0, nyquist))
    physio = np.stack([_band_limited(rng, n, t_r, band=band) for band in bands])
    t = np.linspace(-1.0, 1.0, n)
    drift = rng.normal(0, 0.004) * t + rng.normal(0, 0.002) * (t**2 - 1 / 3)
    motion = _simulate_motion(rng, n, spikes)
    return RunSignals(neural, lateral, physio, drift, motion, tuple(spikes), n_dummy)


def render_bold(
    grid: tuple[Sequence[int], np.ndarray],
    signals: RunSignals,
    rng: np.random.Generator,
    *,
    seed: int,
    with_motion: bool,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Compute BOLD intensities of the brain voxels of a grid.

    Parameters
    ----------
    grid : (shape, affine)
        Output grid.
    signals : RunSignals
        Shared timecourses of the run.
    rng : numpy.random.Generator
        Source of thermal noise.
    seed : int
        Dataset seed (network geometry).
    with_motion : bool
        Add motion artefacts (False mimics ICA-AROMA's non-aggressive denoising).

    Returns
    -------
    data : numpy.ndarray
        ``(n_brain_voxels, n_volumes)`` float64 intensities.
    masks : dict of str to numpy.ndarray
        Tissue masks of the grid (see :func:`tissue_masks`).
    """
    shape, affine = grid
    masks = tissue_masks(shape, affine)
    brain = masks["brain"]
    coords = voxel_mm(brain, affine)
    baseline = np.full(len(coords), _BASELINE["gm"])
    baseline[masks["wm"][brain]] = _BASELINE["wm"]
    baseline[masks["csf"][brain]] = _BASELINE["csf"]
    gm_weight = masks["gm"][brain].astype(float) * 0.8 + 0.2

    centers = _network_centers(seed)
    mirrored = centers * np.array([-1.0, 1.0, 1.0])
    blobs = np.concatenate([centers, mirrored])
    distance2 = ((coords[:, None, :] - blobs[None, :, :]) ** 2).sum(-1)
    weights = np.exp(-distance2 / (2 * _NETWORK_SIGMA_MM**2))  # (n_vox, 2 * n_pairs)
    pair_weights = weights[:, :_N_NETWORK_PAIRS] + weights[:, _N_NETWORK_PAIRS:]
    neural = pair_weights @ signals.neural + 0.5 * (weights @ signals.lateral)
    fraction = 0.012 * gm_weight[:, None] * neural

    # Physiological noise: strongest in ventricles, then white matter (what CompCor
    # and the WM/CSF regressors capture), each voxel mixing the three sources.
    physio_weight = np.where(masks["csf"][brain], 1.0, np.where(masks["wm"][brain], 0.6, 0.15))
    mixing = np.random.default_rng([seed, 0xB10]).uniform(0.5, 1.0, (len(coords), 3))
    fraction += 0.008 * physio_weight[:, None] * (mixing @ signals.physio)
    fraction += signals.drift[None, :]

    if with_motion:
        # Partial-volume changes: ~2% of baseline per mm of displacement at the brain's
        # edge, less towards its centre; spin-history dips at the high-motion volumes.
        relative = (coords - BRAIN_CENTER_MM) / np.asarray(BRAIN_RADII_MM)
        translation = relative @ signals.motion[:, :3].T
        rotation = (relative[:, [1, 2, 0]] @ signals.motion[:, 3:].T) * HEAD_RADIUS_MM
        fraction += 0.02 * (translation + rotation)
        for volume in signals.spikes:
            fraction[:, volume] -= 0.02 + 0.02 * np.abs(relative[:, 2])

    data = baseline[:, None] * (1.0 + fraction)
    data += rng.normal(0.0, 0.01, data.shape) * baseline[:, None]  # thermal noise, 1%
    # Non-steady-state volumes: brighter before T1 saturation settles.
    for volume in range(signals.n_dummy):
        data[:, volume] *= 1.0 + 0.5 * 0.4**volume
    return data, masks


def to_volume(data: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Place ``(n_brain_voxels, n_volumes)`` data into a zero 4D float32 array."""
    volume = np.zeros(brain.shape + (data.shape[1],), dtype=np.float32)
    volume[brain] = data
    return volume
