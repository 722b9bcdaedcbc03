"""Synthetic parcellations: relaxed seeds in the cortical shell, named after a real look-up table.

Part of the synthetic data. Every resolution of an atlas shows the same parcels (seeds are
relaxed on a fixed millimetre lattice).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from bidsapp.synthetic.anatomy import BRAIN_CENTER_MM, BRAIN_RADII_MM, tissue_masks, voxel_mm

# Lattice spacing (mm) of the point cloud used to relax parcel seeds; independent of
# the output resolution so every resolution of an atlas shows the same parcels.
_SEED_LATTICE_MM = 3.0


_LLOYD_ITERATIONS = 4


def _hemisphere(name: str) -> str | None:
    """Guess the hemisphere of a region from its name ("left", "right" or None)."""
    tokens = {token.lower() for token in re.split(r"[^A-Za-z]+", str(name)) if token}
    if tokens & {"lh", "left", "l"}:
        return "left"
    if tokens & {"rh", "right", "r"}:
        return "right"
    return None


def _assign_sides(names: Sequence[str]) -> list[str]:
    """Give each region a side; unlateralised regions alternate between sides."""
    sides, toggle = [], 0
    for name in names:
        side = _hemisphere(name)
        if side is None:
            side = ("left", "right")[toggle % 2]
            toggle += 1
        sides.append(side)
    return sides


def _relaxed_seeds(points: np.ndarray, n_seeds: int, rng: np.random.Generator) -> np.ndarray:
    """Place ``n_seeds`` seeds in a point cloud and spread them by Lloyd relaxation.

    Seeds start at distinct random points; each iteration moves every seed to the
    centroid of the points nearest to it, then snaps it back onto the cloud (the
    region need not be convex), which gives compact parcels of similar size.
    """
    if n_seeds > len(points):
        raise ValueError(f"cannot place {n_seeds} parcels in {len(points)} lattice points.")
    seeds = points[rng.choice(len(points), size=n_seeds, replace=False)]
    cloud = cKDTree(points)
    for _ in range(_LLOYD_ITERATIONS):
        _, owner = cKDTree(seeds).query(points)
        counts = np.bincount(owner, minlength=n_seeds)
        sums = np.stack(
            [np.bincount(owner, weights=points[:, i], minlength=n_seeds) for i in range(3)], 1
        )
        moved = counts > 0
        centroids = seeds.copy()
        centroids[moved] = sums[moved] / counts[moved, None]
        seeds = points[cloud.query(centroids)[1]]
    return seeds


def _fill_missing_labels(
    labels: np.ndarray, coords: np.ndarray, seeds: np.ndarray, ids: np.ndarray
) -> None:
    """Give each label that owns no voxel one voxel near its seed (in place).

    The voxel is taken from the background or from a label that keeps other voxels.
    """
    tree = cKDTree(coords)
    for position, label in enumerate(ids):
        if np.any(labels == label):
            continue
        for index in np.atleast_1d(tree.query(seeds[position], k=min(8, len(coords)))[1]):
            current = labels[index]
            if current == 0 or np.count_nonzero(labels == current) > 1:
                labels[index] = label
                break


def synthetic_parcellation(
    lut: pd.DataFrame,
    shape: Sequence[int],
    affine: np.ndarray,
    *,
    cortical: bool,
    rng_seed: Sequence[int] | int,
) -> np.ndarray:
    """Draw a parcellation with one contiguous blob per look-up-table entry.

    Seeds are placed in MNI millimetres (so every grid of the same atlas shows the
    same parcels), relaxed with Lloyd's algorithm, then each voxel takes the label of
    the nearest seed of its hemisphere (nearest-seed Voronoi cells clipped to the
    brain). Regions whose names say left (``LH``, ``lh``, ``Left``) lie at x < 0.

    Parameters
    ----------
    lut : pandas.DataFrame
        Look-up table with ``index`` and ``name`` columns; index 0 is background.
    shape : sequence of int
        Output grid shape (voxels).
    affine : numpy.ndarray
        4x4 axis-aligned voxel-to-world affine (mm).
    cortical : bool
        Restrict parcels to the cortical shell (else the whole ellipsoid).
    rng_seed : int or sequence of int
        Seed of the random generator placing the parcels.

    Returns
    -------
    numpy.ndarray
        Integer labels, shape ``shape``, 0 outside every parcel.
    """
    entries = lut[lut["index"].astype(int) != 0]
    ids = entries["index"].astype(int).to_numpy()
    sides = np.asarray(_assign_sides(entries["name"].astype(str).tolist()))
    rng = np.random.default_rng(rng_seed)

    lattice_shape = np.ceil(2 * np.asarray(BRAIN_RADII_MM) / _SEED_LATTICE_MM).astype(int) + 1
    lattice_affine = np.diag([_SEED_LATTICE_MM] * 3 + [1.0])
    lattice_affine[:3, 3] = np.asarray(BRAIN_CENTER_MM) - np.asarray(BRAIN_RADII_MM)
    lattice_tissue = tissue_masks(lattice_shape, lattice_affine)
    grid_tissue = tissue_masks(shape, affine)
    region = "gm" if cortical else "brain"
    lattice_mm = voxel_mm(lattice_tissue[region], lattice_affine)
    grid_mm = voxel_mm(grid_tissue[region], affine)

    flat = np.zeros(len(grid_mm), dtype=np.int32)
    for side, in_side in (("left", lambda x: x < 0), ("right", lambda x: x >= 0)):
        chosen = sides == side
        if not chosen.any():
            continue
        points = lattice_mm[in_side(lattice_mm[:, 0])]
        seeds = _relaxed_seeds(points, int(chosen.sum()), rng)
        voxels = np.flatnonzero(in_side(grid_mm[:, 0]))
        if len(voxels) == 0:
            continue
        _, owner = cKDTree(seeds).query(grid_mm[voxels])
        side_labels = ids[chosen][owner]
        _fill_missing_labels(side_labels, grid_mm[voxels], seeds, ids[chosen])
        flat[voxels] = side_labels
    labels = np.zeros(tuple(shape), dtype=np.int32)
    labels[grid_tissue[region]] = flat
    return labels


def smallest_int_dtype(max_value: int) -> type:
    """Return the smallest NIfTI-friendly integer dtype holding ``max_value``."""
    if max_value <= np.iinfo(np.uint8).max:
        return np.uint8
    if max_value <= np.iinfo(np.int16).max:
        return np.int16
    return np.int32
