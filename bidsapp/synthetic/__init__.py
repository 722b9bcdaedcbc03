"""Synthetic fMRIPrep derivatives and TemplateFlow homes, built offline in seconds.

Used by the ``bidsapp demo`` command and by the test suite. Two builders:

- :func:`make_templateflow_home` unpacks the skeleton archive shipped inside the
  ``templateflow`` wheel (real ``dseg.tsv`` look-up tables, zero-byte images) and
  replaces the requested atlas images with real, synthetic parcellations drawn on
  TemplateFlow's true grid for each resolution.
- :func:`make_fmriprep_dataset` writes an fMRIPrep-like derivatives dataset:
  preprocessed BOLD runs with region-structured signals, brain masks, sidecars and
  confounds files whose columns and JSON metadata follow fMRIPrep's.

Geometry is shared by both: a brain-shaped ellipsoid in MNI millimetres, with a
cortical shell (where cortical parcels and neural signal live), white matter and two
lateral ventricles (where the CompCor and WM/CSF confounds come from).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

logger = logging.getLogger(__name__)

#: Centre and semi-axes (mm, MNI x/y/z) of the synthetic brain ellipsoid.
BRAIN_CENTER_MM = (0.0, -17.0, 14.0)
BRAIN_RADII_MM = (68.0, 88.0, 62.0)
#: Normalised ellipsoid radius where the cortical shell begins.
CORTEX_INNER_RADIUS = 0.55
#: Normalised radii bounding white matter.
WHITE_MATTER_RADII = (0.22, 0.5)
#: Lateral ventricles: centres and semi-axes (mm).
VENTRICLES_MM = (((-14.0, -8.0, 14.0), (8.0, 26.0, 10.0)), ((14.0, -8.0, 14.0), (8.0, 26.0, 10.0)))

# Lattice spacing (mm) of the point cloud used to relax parcel seeds; independent of
# the output resolution so every resolution of an atlas shows the same parcels.
_SEED_LATTICE_MM = 3.0
_LLOYD_ITERATIONS = 4
# Mean intensity per tissue (arbitrary scanner units, the order of fMRIPrep outputs).
_BASELINE = {"gm": 9000.0, "wm": 10000.0, "csf": 13000.0}
_N_NETWORK_PAIRS = 12
_NETWORK_SIGMA_MM = 18.0
# fMRIPrep defaults: --fd-spike-threshold and --dvars-spike-threshold.
_FD_SPIKE_MM = 0.5
_DVARS_SPIKE = 1.5
_HIGH_PASS_PERIOD_S = 128.0
_MOTION_COLUMNS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
_HEAD_RADIUS_MM = 50.0
_AROMA_SPACE = "MNI152NLin6Asym"


# --------------------------------------------------------------------------- grids


def skeleton_zip_path() -> Path:
    """Locate the TemplateFlow skeleton archive shipped in the ``templateflow`` wheel.

    The package is located without being imported, because importing
    ``templateflow`` initialises a TemplateFlow home as a side effect.

    Returns
    -------
    pathlib.Path
        Path to ``templateflow/conf/templateflow-skel.zip``.

    Raises
    ------
    FileNotFoundError
        If templateflow is not installed or its wheel lacks the archive.
    """
    spec = importlib.util.find_spec("templateflow")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / "conf" / "templateflow-skel.zip"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "The TemplateFlow skeleton archive (templateflow/conf/templateflow-skel.zip) "
        "was not found: install the 'templateflow' package (pip install templateflow)."
    )


def read_template_description(template: str, templateflow_home: Path | None = None) -> dict:
    """Read ``template_description.json`` of a TemplateFlow template.

    Parameters
    ----------
    template : str
        Template identifier, e.g. ``"MNI152NLin2009cAsym"``.
    templateflow_home : pathlib.Path or None, optional
        TemplateFlow home to read from; when None, or when the file is absent there,
        the copy inside the wheel's skeleton archive is read.

    Returns
    -------
    dict
        The parsed JSON document.

    Raises
    ------
    ValueError
        If the template is unknown to the skeleton archive.
    """
    relative = f"tpl-{template}/template_description.json"
    if templateflow_home is not None:
        local = Path(templateflow_home) / relative
        if local.is_file() and local.stat().st_size > 0:
            return json.loads(local.read_text())
    archive = skeleton_zip_path()
    with zipfile.ZipFile(archive) as zipped:
        try:
            return json.loads(zipped.read(relative))
        except KeyError:
            raise ValueError(
                f"Template {template!r} is not in the TemplateFlow skeleton {archive}; "
                "use a template identifier such as 'MNI152NLin2009cAsym'."
            ) from None


def template_grid(
    template: str, resolution: int, templateflow_home: Path | None = None
) -> tuple[tuple[int, int, int], np.ndarray]:
    """Return TemplateFlow's voxel grid for one resolution of a template.

    Parameters
    ----------
    template : str
        Template identifier, e.g. ``"MNI152NLin2009cAsym"``.
    resolution : int
        TemplateFlow resolution index (the ``res-`` entity), e.g. ``2``.
    templateflow_home : pathlib.Path or None, optional
        Where to read ``template_description.json`` from (see
        :func:`read_template_description`).

    Returns
    -------
    shape : tuple of int
        Grid shape (voxels).
    affine : numpy.ndarray
        4x4 voxel-to-world affine (mm), RAS+, axis-aligned.

    Raises
    ------
    ValueError
        If the template description lists no such resolution.
    """
    description = read_template_description(template, templateflow_home)
    grids = {int(key): value for key, value in description.get("res", {}).items()}
    if int(resolution) not in grids:
        raise ValueError(
            f"template_description.json of {template} lists resolutions "
            f"{sorted(grids)}, not {resolution}; pick one of those."
        )
    grid = grids[int(resolution)]
    affine = np.diag([*map(float, grid["zooms"]), 1.0])
    affine[:3, 3] = grid["origin"]
    return tuple(int(n) for n in grid["shape"]), affine


def box_grid(
    template: str, voxel_size_mm: float, templateflow_home: Path | None = None
) -> tuple[tuple[int, int, int], np.ndarray]:
    """Return a grid of isotropic voxels covering a template's bounding box.

    The box is that of the template's finest resolution; voxels start at its origin.

    Parameters
    ----------
    template : str
        Template identifier, e.g. ``"MNI152NLin2009cAsym"``.
    voxel_size_mm : float
        Edge of the isotropic voxels (mm).
    templateflow_home : pathlib.Path or None, optional
        Where to read ``template_description.json`` from.

    Returns
    -------
    shape : tuple of int
        Grid shape (voxels).
    affine : numpy.ndarray
        4x4 voxel-to-world affine (mm).
    """
    description = read_template_description(template, templateflow_home)
    grids = list(description.get("res", {}).values())
    if not grids:
        raise ValueError(f"template_description.json of {template} has no 'res' grids.")
    finest = min(grids, key=lambda grid: float(np.mean(grid["zooms"])))
    zooms = np.asarray(finest["zooms"], dtype=float)
    extent = (np.asarray(finest["shape"]) - 1) * zooms
    shape = tuple(int(n) for n in np.floor(extent / voxel_size_mm + 1e-6).astype(int) + 1)
    affine = np.diag([voxel_size_mm] * 3 + [1.0])
    affine[:3, 3] = finest["origin"]
    return shape, affine


def _axis_coordinates(shape: Sequence[int], affine: np.ndarray) -> list[np.ndarray]:
    """Return world coordinates (mm) along each axis, shaped for broadcasting."""
    if not np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3]))):
        raise ValueError("demo grids must be axis-aligned (diagonal affine).")
    axes = []
    for axis in range(3):
        values = affine[axis, 3] + affine[axis, axis] * np.arange(shape[axis])
        view = [1, 1, 1]
        view[axis] = shape[axis]
        axes.append(values.reshape(view))
    return axes


def _ellipsoid_radius(axes: list[np.ndarray], center, radii) -> np.ndarray:
    """Return the normalised ellipsoid radius at each voxel (1 on the surface)."""
    squared = sum(((axes[i] - center[i]) / radii[i]) ** 2 for i in range(3))
    return np.sqrt(squared)


def tissue_masks(shape: Sequence[int], affine: np.ndarray) -> dict[str, np.ndarray]:
    """Return the synthetic brain's tissue masks on a grid.

    Parameters
    ----------
    shape : sequence of int
        Grid shape (voxels).
    affine : numpy.ndarray
        4x4 axis-aligned voxel-to-world affine (mm).

    Returns
    -------
    dict of str to numpy.ndarray
        Boolean 3D masks ``"brain"``, ``"gm"`` (cortical shell), ``"wm"`` and
        ``"csf"`` (lateral ventricles).
    """
    axes = _axis_coordinates(shape, affine)
    radius = _ellipsoid_radius(axes, BRAIN_CENTER_MM, BRAIN_RADII_MM)
    brain = radius <= 1.0
    csf = np.zeros(tuple(shape), dtype=bool)
    for center, radii in VENTRICLES_MM:
        csf |= _ellipsoid_radius(axes, center, radii) <= 1.0
    low, high = WHITE_MATTER_RADII
    wm = (radius >= low) & (radius <= high) & ~csf
    gm = brain & (radius >= CORTEX_INNER_RADIUS)
    return {"brain": brain, "gm": gm, "wm": wm, "csf": csf & brain}


def _voxel_mm(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Return the world coordinates (mm) of the voxels in ``mask``, shape (n, 3)."""
    ijk = np.column_stack(np.nonzero(mask)).astype(float)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


# --------------------------------------------------------------------- parcellation


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
    lattice_mm = _voxel_mm(lattice_tissue[region], lattice_affine)
    grid_mm = _voxel_mm(grid_tissue[region], affine)

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


def _smallest_int_dtype(max_value: int) -> type:
    """Return the smallest NIfTI-friendly integer dtype holding ``max_value``."""
    if max_value <= np.iinfo(np.uint8).max:
        return np.uint8
    if max_value <= np.iinfo(np.int16).max:
        return np.int16
    return np.int32


def _save_nifti(data: np.ndarray, affine: np.ndarray, path: Path, *, t_r: float | None = None):
    """Write a NIfTI-1 image with scanner-aligned q/sform and mm (and s) units."""
    image = nib.Nifti1Image(data, affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    image.header.set_xyzt_units(xyz="mm", t="sec")
    if t_r is not None:
        image.header.set_zooms(image.header.get_zooms()[:3] + (float(t_r),))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))


# --------------------------------------------------------------- TemplateFlow home


def _extract_skeleton(root: Path) -> None:
    """Unpack the skeleton archive into ``root`` without overwriting existing files.

    Existing files may be real images written by an earlier call: leave them.
    """
    with zipfile.ZipFile(skeleton_zip_path()) as zipped:
        for member in zipped.infolist():
            target = root / member.filename
            if target.exists():
                continue
            zipped.extract(member, root)


def _tf_name(template: str, *, resolution: int | None = None, **entities: str | None) -> str:
    """Build a TemplateFlow file name (``suffix`` and ``extension`` in ``entities``)."""
    parts = [f"tpl-{template}"]
    if resolution is not None:
        parts.append(f"res-{int(resolution):02d}")
    for key in ("atlas", "desc"):
        if entities.get(key):
            parts.append(f"{key}-{entities[key]}")
    return "_".join(parts) + f"_{entities['suffix']}{entities['extension']}"


def _skeleton_lut(root: Path, template: str, atlas: str, desc: str | None) -> Path:
    """Find an atlas look-up table in a TemplateFlow home (with, then without desc)."""
    folder = root / f"tpl-{template}"
    candidates = [_tf_name(template, atlas=atlas, desc=desc, suffix="dseg", extension=".tsv")]
    candidates += [
        path.name for path in sorted(folder.glob(f"tpl-{template}_res-*_atlas-{atlas}_*dseg.tsv"))
    ]
    candidates.append(_tf_name(template, atlas=atlas, suffix="dseg", extension=".tsv"))
    for name in candidates:
        if (folder / name).is_file() and (folder / name).stat().st_size > 0:
            return folder / name
    raise ValueError(
        f"No dseg.tsv look-up table for atlas {atlas!r} (desc {desc!r}) in {folder}; "
        "the demo can only draw atlases whose LUT TemplateFlow ships."
    )


def _available_atlases(root: Path, template: str) -> list[str]:
    """List ``NAME:DESC`` of the dseg images of a template (for error messages)."""
    found = set()
    for path in (root / f"tpl-{template}").glob("*_atlas-*_dseg.nii.gz"):
        atlas = re.search(r"_atlas-([A-Za-z0-9]+)", path.name).group(1)
        desc = re.search(r"_desc-([A-Za-z0-9]+)", path.name)
        found.add(f"{atlas}:{desc.group(1)}" if desc else atlas)
    return sorted(found)


def make_templateflow_home(
    root: str | Path,
    atlases: Iterable[tuple[str, str | None]] = (("Schaefer2018", "400Parcels7Networks"),),
    template: str = "MNI152NLin2009cAsym",
    resolutions: Iterable[int] = (2,),
    *,
    seed: int = 0,
) -> Path:
    """Build an offline TemplateFlow home with real images for a few atlases.

    The skeleton shipped in the ``templateflow`` wheel is unpacked into ``root``
    (real look-up tables, zero-byte placeholders for every image, as TemplateFlow
    itself does); then, for each requested atlas and resolution, the placeholder
    ``dseg`` image is replaced by a synthetic parcellation on TemplateFlow's grid for
    that resolution, using the label indices of the atlas's real look-up table. The
    template's ``desc-brain_mask`` is written at the same resolutions. Calling it
    again on the same ``root`` (e.g. for another template) keeps earlier images.

    Parameters
    ----------
    root : str or pathlib.Path
        Directory to use as ``TEMPLATEFLOW_HOME`` (created if missing).
    atlases : iterable of (str, str or None)
        ``(atlas, desc)`` pairs present in the skeleton, e.g.
        ``("Schaefer2018", "400Parcels7Networks")`` or ``("HOSPA", "th25")`` for
        ``MNI152NLin6Asym``.
    template : str, optional
        Template identifier.
    resolutions : iterable of int, optional
        TemplateFlow resolution indices to write (``res-02`` is 2 mm for MNI templates).
    seed : int, optional
        Seed of the parcel placement.

    Returns
    -------
    pathlib.Path
        ``root``, ready to be used as ``TEMPLATEFLOW_HOME``.

    Raises
    ------
    ValueError
        If an atlas, resolution or template is not part of TemplateFlow's skeleton.
    """
    root = Path(root).absolute()
    root.mkdir(parents=True, exist_ok=True)
    _extract_skeleton(root)
    folder = root / f"tpl-{template}"
    if not folder.is_dir():
        raise ValueError(f"Template {template!r} is not in the TemplateFlow skeleton.")
    for resolution in resolutions:
        shape, affine = template_grid(template, resolution, root)
        mask = tissue_masks(shape, affine)["brain"].astype(np.uint8)
        mask_name = _tf_name(
            template, resolution=resolution, desc="brain", suffix="mask", extension=".nii.gz"
        )
        _save_nifti(mask, affine, folder / mask_name)
    for atlas, desc in atlases:
        lut = pd.read_csv(_skeleton_lut(root, template, atlas, desc), sep="\t")
        name_seed = [seed, zlib.crc32(f"{template}/{atlas}/{desc}".encode())]
        for resolution in resolutions:
            target = folder / _tf_name(
                template,
                resolution=resolution,
                atlas=atlas,
                desc=desc,
                suffix="dseg",
                extension=".nii.gz",
            )
            if not target.exists():
                raise ValueError(
                    f"{target.name} is not part of TemplateFlow's skeleton in {folder}; "
                    f"atlases there: {', '.join(_available_atlases(root, template))}."
                )
            shape, affine = template_grid(template, resolution, root)
            labels = synthetic_parcellation(
                lut, shape, affine, cortical=atlas.startswith("Schaefer"), rng_seed=name_seed
            )
            dtype = _smallest_int_dtype(int(labels.max(initial=0)))
            _save_nifti(labels.astype(dtype), affine, target)
            logger.debug("wrote %s", target)
    return root


# ------------------------------------------------------------------ BOLD signals


@dataclass(frozen=True)
class _RunSignals:
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


def _run_signals(
    rng: np.random.Generator, n: int, t_r: float, spikes: Sequence[int], n_dummy: int
) -> _RunSignals:
    """Draw the timecourses of one run."""
    neural = np.stack([_band_limited(rng, n, t_r) for _ in range(_N_NETWORK_PAIRS)])
    lateral = np.stack([_band_limited(rng, n, t_r) for _ in range(2 * _N_NETWORK_PAIRS)])
    nyquist = 0.5 / t_r
    bands = ((0.0, 0.05), (0.1, 0.4), (0.0, nyquist))
    physio = np.stack([_band_limited(rng, n, t_r, band=band) for band in bands])
    t = np.linspace(-1.0, 1.0, n)
    drift = rng.normal(0, 0.004) * t + rng.normal(0, 0.002) * (t**2 - 1 / 3)
    motion = _simulate_motion(rng, n, spikes)
    return _RunSignals(neural, lateral, physio, drift, motion, tuple(spikes), n_dummy)


def _render_bold(
    grid: tuple[Sequence[int], np.ndarray],
    signals: _RunSignals,
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
    signals : _RunSignals
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
    coords = _voxel_mm(brain, affine)
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
        rotation = (relative[:, [1, 2, 0]] @ signals.motion[:, 3:].T) * _HEAD_RADIUS_MM
        fraction += 0.02 * (translation + rotation)
        for volume in signals.spikes:
            fraction[:, volume] -= 0.02 + 0.02 * np.abs(relative[:, 2])

    data = baseline[:, None] * (1.0 + fraction)
    data += rng.normal(0.0, 0.01, data.shape) * baseline[:, None]  # thermal noise, 1%
    # Non-steady-state volumes: brighter before T1 saturation settles.
    for volume in range(signals.n_dummy):
        data[:, volume] *= 1.0 + 0.5 * 0.4**volume
    return data, masks


def _to_volume(data: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Place ``(n_brain_voxels, n_volumes)`` data into a zero 4D float32 array."""
    volume = np.zeros(brain.shape + (data.shape[1],), dtype=np.float32)
    volume[brain] = data
    return volume


# -------------------------------------------------------------------- confounds


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
    fd = delta[:, :3].sum(1) + _HEAD_RADIUS_MM * delta[:, 3:].sum(1)
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


def _confounds(
    data: np.ndarray,
    masks: dict[str, np.ndarray],
    signals: _RunSignals,
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
    signals : _RunSignals
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


def _aroma_columns(frame: pd.DataFrame, signals: _RunSignals, rng: np.random.Generator):
    """Add ``aroma_motion_XX`` columns: ICA timecourses classified as motion."""
    n_volumes = len(frame)
    indices = np.sort(rng.choice(np.arange(1, 40), size=4, replace=False))
    derivative = np.vstack([np.zeros(6), np.diff(signals.motion, axis=0)])
    for index in indices:
        mixing = rng.normal(size=6)
        component = derivative @ mixing + 0.2 * derivative.std() * rng.normal(size=n_volumes)
        component = (component - component.mean()) / (component.std() or 1.0)
        frame[f"aroma_motion_{index:02d}"] = component


# ------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class _Run:
    """Identity of one BOLD run in the demo dataset."""

    subject: str
    session: str | None
    task: str
    acquisition: str | None
    run: str | None

    @property
    def prefix(self) -> str:
        """BIDS entities of the run, e.g. ``sub-01_ses-1_task-rest_run-1``."""
        parts = [f"sub-{self.subject}"]
        if self.session:
            parts.append(f"ses-{self.session}")
        parts.append(f"task-{self.task}")
        if self.acquisition:
            parts.append(f"acq-{self.acquisition}")
        if self.run is not None:
            parts.append(f"run-{self.run}")
        return "_".join(parts)

    def folder(self, root: Path) -> Path:
        """Return the ``func`` folder of the run."""
        path = root / f"sub-{self.subject}"
        if self.session:
            path = path / f"ses-{self.session}"
        return path / "func"


def _check_label(value: object, what: str) -> str:
    """Return ``value`` as a BIDS label, or raise ValueError if not alphanumeric."""
    text = str(value)
    if not re.fullmatch(r"[A-Za-z0-9]+", text):
        raise ValueError(f"{what} {text!r} is not a BIDS label (letters and digits only).")
    return text


def _write_json(path: Path, content: Mapping) -> None:
    """Write pretty JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")


def _write_tsv(path: Path, frame: pd.DataFrame) -> None:
    """Write a TSV with fMRIPrep's ``n/a`` for missing values."""
    frame.to_csv(path, sep="\t", index=False, na_rep="n/a")


def _space_entities(space: str, res: str | None) -> str:
    """Return ``space-X[_res-Y]``."""
    return f"space-{space}" + (f"_res-{res}" if res is not None else "")


def _write_bold_outputs(
    folder: Path,
    stem: str,
    volume: np.ndarray,
    brain: np.ndarray,
    affine: np.ndarray,
    t_r: float,
    task: str,
    *,
    desc: str,
    extension: str,
    write_tr: bool,
    write_mask: bool,
) -> None:
    """Write one BOLD image, its JSON sidecar and (optionally) its brain mask."""
    _save_nifti(volume, affine, folder / f"{stem}_desc-{desc}_bold{extension}", t_r=t_r)
    sidecar = {"SkullStripped": True, "TaskName": task}
    if write_tr:
        sidecar["RepetitionTime"] = float(t_r)
    _write_json(folder / f"{stem}_desc-{desc}_bold.json", sidecar)
    if write_mask:
        _save_nifti(brain.astype(np.uint8), affine, folder / f"{stem}_desc-brain_mask{extension}")
        _write_json(folder / f"{stem}_desc-brain_mask.json", {"Type": "Brain"})


def _write_anat(root: Path, subject: str, space: str, res: str | None, grid) -> None:
    """Write a subject's anatomical outputs (T1w-space and template-space masks)."""
    folder = root / f"sub-{subject}" / "anat"
    t1w_shape, t1w_affine = _t1w_grid(grid)
    t1w_masks = tissue_masks(t1w_shape, t1w_affine)
    t1w = np.where(t1w_masks["wm"], 110.0, np.where(t1w_masks["brain"], 70.0, 0.0))
    t1w_path = folder / f"sub-{subject}_desc-preproc_T1w.nii.gz"
    _save_nifti(t1w.astype(np.float32), t1w_affine, t1w_path)
    _save_nifti(
        t1w_masks["brain"].astype(np.uint8),
        t1w_affine,
        folder / f"sub-{subject}_desc-brain_mask.nii.gz",
    )
    # A template-space anatomical mask: same space and res as the BOLD, no task.
    shape, affine = grid
    _save_nifti(
        tissue_masks(shape, affine)["brain"].astype(np.uint8),
        affine,
        folder / f"sub-{subject}_{_space_entities(space, res)}_desc-brain_mask.nii.gz",
    )


def _t1w_grid(grid) -> tuple[tuple[int, int, int], np.ndarray]:
    """Return a native-like T1w grid: the MNI box shifted, same voxel size."""
    shape, affine = grid
    shifted = affine.copy()
    shifted[:3, 3] += (2.0, -4.0, 6.0)
    return tuple(int(n) - 2 for n in shape), shifted


def _dataset_description(version: str) -> dict:
    """Return fMRIPrep's ``dataset_description.json`` content."""
    return {
        "Name": "fMRIPrep - fMRI PREProcessing workflow (bidsapp synthetic demo)",
        "BIDSVersion": "1.8.0",
        "DatasetType": "derivative",
        "GeneratedBy": [
            {
                "Name": "fMRIPrep",
                "Version": version,
                "CodeURL": f"https://github.com/nipreps/fmriprep/archive/{version}.tar.gz",
            }
        ],
        "HowToAcknowledge": "Synthetic data written by bidsapp demo; not real fMRIPrep output.",
    }


def _default_spikes(n_volumes: int, n_dummy: int) -> tuple[int, ...]:
    """Default high-motion volumes: a pair at 40% of the run and one at 75%."""
    candidates = {int(0.4 * n_volumes), int(0.4 * n_volumes) + 1, int(0.75 * n_volumes)}
    return tuple(sorted(v for v in candidates if n_dummy < v < n_volumes))


def _runs(subjects, sessions, tasks, acquisitions, runs) -> list[_Run]:
    """Enumerate runs, checking every label."""
    listed = []
    for subject in subjects:
        for session in sessions:
            for task in tasks:
                for acquisition in acquisitions:
                    for run in runs:
                        listed.append(
                            _Run(
                                _check_label(subject, "subject"),
                                None if session is None else _check_label(session, "session"),
                                _check_label(task, "task"),
                                None
                                if acquisition is None
                                else _check_label(acquisition, "acquisition"),
                                None if run is None else _check_label(run, "run"),
                            )
                        )
    return listed


def make_fmriprep_dataset(
    root: str | Path,
    *,
    subjects: Sequence[str] = ("01", "02"),
    sessions: Sequence[str | None] = (None,),
    tasks: Sequence[str] = ("rest",),
    acquisitions: Sequence[str | None] = (None,),
    runs: Sequence[int | str | None] = (1, 2),
    n_volumes: int = 60,
    t_r: float = 2.0,
    space: str = "MNI152NLin2009cAsym",
    res: str | None = "2",
    voxel_size_mm: float = 4.0,
    seed: int = 0,
    templateflow_home: str | Path | None = None,
    n_dummy: int = 2,
    high_motion_volumes: Sequence[int] | None = None,
    aroma: bool = False,
    t1w_space: bool = False,
    anat_only_subjects: Sequence[str] = (),
    confounds_suffix: str = "timeseries",
    bold_extension: str = ".nii.gz",
    write_tr: bool = True,
    write_masks: bool = True,
    fmriprep_version: str = "23.2.3",
) -> Path:
    """Write a synthetic fMRIPrep derivatives dataset.

    Each run has a preprocessed BOLD series in ``space`` (float32, zeros outside
    the brain) whose signal mixes band-limited (0.01-0.1 Hz) network timecourses
    shared by homologous left/right cortical blobs, physiological noise concentrated
    in white matter and ventricles, slow drifts, motion artefacts driven by the
    realignment parameters written to the confounds, non-steady-state volumes and
    thermal noise (1% of baseline). The voxel grid covers the template's bounding box
    with ``voxel_size_mm`` voxels, so a 2 mm atlas must be resampled to it. Alongside:
    the JSON sidecar, the ``desc-brain_mask``, and ``desc-confounds_timeseries.tsv``
    / ``.json`` with fMRIPrep's columns (computed from the data where fMRIPrep
    computes them from the data) and CompCor metadata.

    Parameters
    ----------
    root : str or pathlib.Path
        Dataset folder (created if missing).
    subjects, sessions, tasks, acquisitions, runs : sequence
        Labels; ``None`` in ``sessions``, ``acquisitions`` or ``runs`` omits the entity.
    n_volumes : int, optional
        Volumes per run.
    t_r : float, optional
        Repetition time (s).
    space : str, optional
        Template space of the BOLD outputs.
    res : str or None, optional
        ``res-`` entity value (None omits it, as fMRIPrep 1.x and ``res-native`` do).
    voxel_size_mm : float, optional
        Isotropic voxel size of the BOLD grid (mm).
    seed : int, optional
        Seed of every random draw; a run's data depends only on the seed and its name.
    templateflow_home : str or pathlib.Path or None, optional
        TemplateFlow home to read template grids from; default: the wheel's skeleton.
    n_dummy : int, optional
        Non-steady-state volumes at the start of each run (flagged in the confounds).
    high_motion_volumes : sequence of int or None, optional
        Volumes with sudden head motion (framewise displacement ~1 mm) in every run;
        None picks three volumes (40% and 75% into the run); ``()`` means none.
    aroma : bool, optional
        Also write ``space-MNI152NLin6Asym_res-2_desc-smoothAROMAnonaggr_bold`` and
        ``aroma_motion_XX`` confounds.
    t1w_space : bool, optional
        Also write ``space-T1w`` BOLD outputs (and their masks).
    anat_only_subjects : sequence of str, optional
        Subjects with anatomical outputs only (no BOLD).
    confounds_suffix : {"timeseries", "regressors"}, optional
        ``"regressors"`` gives fMRIPrep 1.x names (``desc-confounds_regressors.tsv``).
    bold_extension : {".nii.gz", ".nii"}, optional
        Extension of BOLD and mask images.
    write_tr : bool, optional
        Write ``RepetitionTime`` into the BOLD sidecars.
    write_masks : bool, optional
        Write the BOLD ``desc-brain_mask`` images.
    fmriprep_version : str, optional
        Version written into ``dataset_description.json``.

    Returns
    -------
    pathlib.Path
        ``root``.

    Raises
    ------
    ValueError
        On a label that is not alphanumeric, an out-of-range high-motion volume or an
        unknown option value.
    """
    root = Path(root).absolute()
    home = Path(templateflow_home) if templateflow_home is not None else None
    if confounds_suffix not in ("timeseries", "regressors"):
        raise ValueError(
            f"confounds_suffix must be 'timeseries' or 'regressors', not {confounds_suffix!r}."
        )
    if bold_extension not in (".nii.gz", ".nii"):
        raise ValueError(f"bold_extension must be '.nii.gz' or '.nii', not {bold_extension!r}.")
    if not 0 <= n_dummy < n_volumes:
        raise ValueError(f"n_dummy={n_dummy} must be in [0, n_volumes={n_volumes}).")
    spikes = (
        _default_spikes(n_volumes, n_dummy)
        if high_motion_volumes is None
        else tuple(int(v) for v in high_motion_volumes)
    )
    if any(not 0 < v < n_volumes for v in spikes):
        raise ValueError(f"high_motion_volumes {spikes} must lie in [1, {n_volumes}).")

    root.mkdir(parents=True, exist_ok=True)
    _write_json(root / "dataset_description.json", _dataset_description(fmriprep_version))
    grid = box_grid(space, voxel_size_mm, home)
    aroma_grid = box_grid(_AROMA_SPACE, voxel_size_mm, home) if aroma else None
    for subject in list(subjects) + list(anat_only_subjects):
        _write_anat(root, _check_label(subject, "subject"), space, res, grid)
    for run in _runs(subjects, sessions, tasks, acquisitions, runs):
        _write_run(
            root,
            run,
            grid=grid,
            aroma_grid=aroma_grid,
            n_volumes=n_volumes,
            t_r=t_r,
            space=space,
            res=res,
            seed=seed,
            n_dummy=n_dummy,
            spikes=spikes,
            t1w_space=t1w_space,
            confounds_suffix=confounds_suffix,
            extension=bold_extension,
            write_tr=write_tr,
            write_masks=write_masks,
        )
    return root


def _write_run(
    root: Path,
    run: _Run,
    *,
    grid,
    aroma_grid,
    n_volumes,
    t_r,
    space,
    res,
    seed,
    n_dummy,
    spikes,
    t1w_space,
    confounds_suffix,
    extension,
    write_tr,
    write_masks,
) -> None:
    """Write every output of one run (see :func:`make_fmriprep_dataset`)."""
    rng = np.random.default_rng([seed, zlib.crc32(run.prefix.encode())])
    signals = _run_signals(rng, n_volumes, t_r, spikes, n_dummy)
    folder = run.folder(root)
    options = dict(extension=extension, write_tr=write_tr, write_mask=write_masks)

    data, masks = _render_bold(grid, signals, rng, seed=seed, with_motion=True)
    _write_bold_outputs(
        folder,
        f"{run.prefix}_{_space_entities(space, res)}",
        _to_volume(data, masks["brain"]),
        masks["brain"],
        grid[1],
        t_r,
        run.task,
        desc="preproc",
        **options,
    )
    frame, metadata = _confounds(data, masks, signals, t_r, rng, aroma=aroma_grid is not None)
    stem = folder / f"{run.prefix}_desc-confounds_{confounds_suffix}"
    _write_tsv(stem.with_suffix(".tsv"), frame)
    _write_json(stem.with_suffix(".json"), metadata)

    if aroma_grid is not None:
        clean, aroma_masks = _render_bold(aroma_grid, signals, rng, seed=seed, with_motion=False)
        _write_bold_outputs(
            folder,
            f"{run.prefix}_{_space_entities(_AROMA_SPACE, '2')}",
            _to_volume(clean, aroma_masks["brain"]),
            aroma_masks["brain"],
            aroma_grid[1],
            t_r,
            run.task,
            desc="smoothAROMAnonaggr",
            extension=extension,
            write_tr=write_tr,
            write_mask=False,
        )
    if t1w_space:
        t1w_grid = _t1w_grid(grid)
        native, t1w_masks = _render_bold(t1w_grid, signals, rng, seed=seed, with_motion=True)
        _write_bold_outputs(
            folder,
            f"{run.prefix}_space-T1w",
            _to_volume(native, t1w_masks["brain"]),
            t1w_masks["brain"],
            t1w_grid[1],
            t_r,
            run.task,
            desc="preproc",
            **options,
        )
    logger.debug("wrote run %s", run.prefix)


# ---------------------------------------------------------------------- command


def run_demo(outdir: str | Path) -> int:
    """Build the demo inputs, then run the participant and group levels on them.

    Writes ``OUTDIR/templateflow`` (a TemplateFlow home with the default atlas),
    ``OUTDIR/fmriprep`` (the default synthetic dataset), and runs
    ``bidsapp OUTDIR/fmriprep OUTDIR/derivatives {participant,group}`` with
    ``--work-dir OUTDIR/work`` and ``TEMPLATEFLOW_HOME`` pointing at the demo home
    (restored afterwards). No network is needed.

    Parameters
    ----------
    outdir : str or pathlib.Path
        Folder to write into (created if missing).

    Returns
    -------
    int
        Exit code of the first level that failed, else 0.
    """
    from bidsapp.app.config import DEFAULT_ATLAS, DEFAULT_SPACE
    from bidsapp.cli import main

    outdir = Path(outdir).absolute()
    atlas, _, desc = DEFAULT_ATLAS.partition(":")
    home = make_templateflow_home(
        outdir / "templateflow", atlases=[(atlas, desc or None)], template=DEFAULT_SPACE
    )
    bids_dir = make_fmriprep_dataset(
        outdir / "fmriprep", space=DEFAULT_SPACE, templateflow_home=home
    )
    output_dir, work_dir = outdir / "derivatives", outdir / "work"
    previous = os.environ.get("TEMPLATEFLOW_HOME")
    os.environ["TEMPLATEFLOW_HOME"] = str(home)
    try:
        for level in ("participant", "group"):
            code = main([str(bids_dir), str(output_dir), level, "--work-dir", str(work_dir)])
            if code != 0:
                return code
    finally:
        if previous is None:
            os.environ.pop("TEMPLATEFLOW_HOME", None)
        else:
            os.environ["TEMPLATEFLOW_HOME"] = previous
    print(f"bidsapp demo: inputs in {bids_dir} (TemplateFlow home {home})")
    print(f"bidsapp demo: outputs in {output_dir}")
    reports = sorted(output_dir.glob("*.html"))
    if reports:
        print("bidsapp demo: reports (open in a browser):")
        for report in reports:
            print(f"  {report}")
    return 0
