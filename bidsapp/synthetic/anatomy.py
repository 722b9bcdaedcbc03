"""Grids and tissues of the synthetic data: TemplateFlow's grids, a brain-shaped ellipsoid.

A brain-shaped ellipsoid in MNI millimetres, with a cortical shell (where cortical parcels
and neural signal live), white matter and two lateral ventricles (where the CompCor and
WM/CSF confounds come from). Part of the synthetic data (imports nothing of app or cli).
"""

from __future__ import annotations

import importlib.util
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: Centre and semi-axes (mm, MNI x/y/z) of the synthetic brain ellipsoid.
BRAIN_CENTER_MM = (0.0, -17.0, 14.0)


BRAIN_RADII_MM = (68.0, 88.0, 62.0)


#: Normalised ellipsoid radius where the cortical shell begins.
CORTEX_INNER_RADIUS = 0.55


#: Normalised radii bounding white matter.
WHITE_MATTER_RADII = (0.22, 0.5)


#: Lateral ventricles: centres and semi-axes (mm).
VENTRICLES_MM = (((-14.0, -8.0, 14.0), (8.0, 26.0, 10.0)), ((14.0, -8.0, 14.0), (8.0, 26.0, 10.0)))


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


def voxel_mm(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Return the world coordinates (mm) of the voxels in ``mask``, shape (n, 3)."""
    ijk = np.column_stack(np.nonzero(mask)).astype(float)
    return ijk @ affine[:3, :3].T + affine[:3, 3]
