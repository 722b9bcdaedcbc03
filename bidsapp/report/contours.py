"""The atlas-over-BOLD figure: coloured outlines of an atlas's regions on slices of an image.

Part of the report layer (with :mod:`bidsapp.report.figures`'s helpers). Arrays are expected
in RAS+ voxel order (``nibabel.as_closest_canonical``). The mosaic is composed in numpy at its
final pixel size and encoded by Pillow, its labels drawn in matplotlib's font: no matplotlib
figure is drawn for it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from bidsapp.report.figures import MASK_COLOR, PNG_DPI, _colormap, _png_data_uri


def _label_colors(labels: np.ndarray, colors: Mapping[int, str] | None) -> np.ndarray:
    from matplotlib.colors import to_rgba

    top = int(labels.max()) if labels.size else 0
    table = np.zeros((top + 1, 4))
    cycle = _colormap("tab20")
    for value in np.unique(labels):
        value = int(value)
        if value <= 0:
            continue
        color = colors.get(value) if colors else None
        try:
            table[value] = to_rgba(color) if color else cycle(value % 20)
        except ValueError:
            table[value] = cycle(value % 20)
    return table


def _edges(slice_: np.ndarray) -> np.ndarray:
    """Pixels whose right, left, upper or lower neighbour has another value."""
    edge = np.zeros(slice_.shape, dtype=bool)
    diff0 = slice_[1:, :] != slice_[:-1, :]
    diff1 = slice_[:, 1:] != slice_[:, :-1]
    edge[1:, :] |= diff0
    edge[:-1, :] |= diff0
    edge[:, 1:] |= diff1
    edge[:, :-1] |= diff1
    return edge


def _cuts(extent_mask: np.ndarray, axis: int, n_cuts: int) -> list[int]:
    other = tuple(a for a in range(3) if a != axis)
    present = np.flatnonzero(extent_mask.any(axis=other))
    if present.size == 0:
        present = np.arange(extent_mask.shape[axis])
    lo, hi = present[0], present[-1]
    return sorted({int(round(v)) for v in np.linspace(lo, hi, n_cuts + 2)[1:-1]})


def _panel(
    background: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray | None,
    table: np.ndarray,
    window: tuple[float, float],
    scale: tuple[int, int],
) -> np.ndarray:
    """Compose one slice as 8-bit RGB: grey background, faint region fill, outlines, mask.

    The slice is upsampled (nearest) by ``scale`` pixels per voxel, so outlines are one
    pixel wide, thinner than a voxel, and anisotropic voxels get their true aspect. Colours
    are mixed per voxel and only then upsampled; the outlines are found on the upsampled
    labels.
    """

    def up(a: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(a, scale[0], axis=0), scale[1], axis=1)

    vmin, vmax = window
    grey = np.nan_to_num(np.clip((background - vmin) / (vmax - vmin), 0.0, 1.0))
    inside = labels > 0
    colors = table[np.where(inside, labels, 0), :3]
    fill = np.repeat(grey[..., None], 3, axis=2)
    fill[inside] = 0.85 * fill[inside] + 0.15 * colors[inside]
    bright = 1.0 - 0.5 * (1.0 - colors)  # outlines, brightened: they stand out
    lab = up(labels)
    rgb = up(np.rint(fill * 255).astype(np.uint8))
    edge = _edges(lab) & (lab > 0)
    rgb[edge] = up(np.rint(bright * 255).astype(np.uint8))[edge]
    if mask is not None:
        m = up(mask)
        rgb[_edges(m) & m] = np.rint(_rgb(MASK_COLOR) * 255).astype(np.uint8)
    # Image convention: first axis is the image's rows (top to bottom).
    return np.flipud(np.transpose(rgb, (1, 0, 2)))


def _rgb(color: str) -> np.ndarray:
    from matplotlib.colors import to_rgb

    return np.asarray(to_rgb(color))


def plot_atlas_contours(
    background: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray | None = None,
    affine: np.ndarray | None = None,
    colors: Mapping[int, str] | None = None,
    n_cuts: int = 6,
    target_width: int = 1500,
) -> str:
    """Draw atlas region outlines and the brain-mask outline over a background image.

    One row per orientation (sagittal, coronal, axial), ``n_cuts`` slices each, spread
    over the extent of the atlas. Left is on the left (neurological convention).

    Parameters
    ----------
    background : numpy.ndarray
        3D image (for example the run's mean BOLD), RAS+ voxel order.
    labels : numpy.ndarray
        3D integer atlas on the same grid (0 = background).
    mask : numpy.ndarray, optional
        3D brain mask on the same grid, drawn as a green outline.
    affine : numpy.ndarray, optional
        Voxel-to-world (mm) affine of the grid, for slice positions and voxel sizes;
        1 mm isotropic voxels when None.
    colors : mapping of int to str, optional
        Colour of each label (for example the LUT's ``color`` column); a qualitative
        cycle otherwise.
    n_cuts : int, default=6
        Slices per orientation.
    target_width : int, default=1500
        Approximate width of the image in pixels.

    Returns
    -------
    str
        A ``data:image/png;base64`` URI.
    """
    background = np.asarray(background, dtype=float)
    labels = np.asarray(labels).astype(int)
    if background.shape != labels.shape or background.ndim != 3:
        raise ValueError(f"background {background.shape} and labels {labels.shape} differ")
    mask_arr = None if mask is None else np.asarray(mask) > 0
    if mask_arr is not None and mask_arr.shape != labels.shape:
        raise ValueError(f"mask {mask_arr.shape} and labels {labels.shape} differ")
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=float)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    table = _label_colors(labels, colors)
    extent_mask = labels > 0 if (labels > 0).any() else background > 0
    inside = background[mask_arr] if mask_arr is not None and mask_arr.any() else background
    finite = inside[np.isfinite(inside)]
    vmin, vmax = np.percentile(finite, [2, 99.5]) if finite.size else (0.0, 1.0)
    if vmax <= vmin:
        vmax = vmin + 1.0
    # Crop to the atlas and mask (plus a margin), then size the widest row near
    # ``target_width`` pixels, with at least 2 pixels per voxel so outlines stay thinner
    # than a voxel.
    occupied = extent_mask | (mask_arr if mask_arr is not None else False)
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(occupied.any(axis=other))
        lo, hi = (present[0], present[-1]) if present.size else (0, labels.shape[axis] - 1)
        box.append(slice(max(0, lo - 2), min(labels.shape[axis], hi + 3)))
    extent_mm = [(b.stop - b.start) * z for b, z in zip(box, zooms, strict=True)]
    row_mm = max(n_cuts * extent_mm[[a for a in range(3) if a != axis][0]] for axis in range(3))
    px_per_mm = target_width / row_mm
    gap = 6
    rows: list[list[np.ndarray]] = []
    titles: list[list[str]] = []
    for axis in range(3):
        plane = [a for a in range(3) if a != axis]
        scale = tuple(max(2, int(round(zooms[a] * px_per_mm))) for a in plane)
        panels, names = [], []
        for cut in _cuts(extent_mask, axis, n_cuts):
            index: list[Any] = list(box)
            index[axis] = cut
            sl = tuple(index)
            panels.append(
                _panel(
                    background[sl],
                    labels[sl],
                    None if mask_arr is None else mask_arr[sl],
                    table,
                    (vmin, vmax),
                    scale,
                )
            )
            voxel = np.zeros(4)
            voxel[axis], voxel[3] = cut, 1
            names.append(f"{'xyz'[axis]} = {(affine @ voxel)[axis]:.0f} mm")
        rows.append(panels)
        titles.append(names)
    title_h = 18
    width = 48 + max(sum(p.shape[1] for p in r) + gap * (len(r) - 1) for r in rows)
    height = sum(max(p.shape[0] for p in r) + title_h for r in rows) + gap * 2
    # Composed at its final size in 8-bit RGB and encoded as it is: no figure to draw, no
    # resampling; the few labels are drawn straight onto it.
    mosaic = np.zeros((height, width, 3), dtype=np.uint8)
    top = 0
    positions = []
    for r, panels in enumerate(rows):
        row_h = max(p.shape[0] for p in panels)
        left = (width - sum(p.shape[1] for p in panels) - gap * (len(panels) - 1)) // 2
        for c, p in enumerate(panels):
            y0 = top + title_h + (row_h - p.shape[0]) // 2
            mosaic[y0 : y0 + p.shape[0], left : left + p.shape[1]] = p
            positions.append((left + p.shape[1] / 2, top + title_h - 4, titles[r][c]))
            if r > 0 and c == 0:
                positions.append((left - 10, top + title_h + row_h / 2, "L"))
            if r > 0 and c == len(panels) - 1:
                positions.append((left + p.shape[1] + 10, top + title_h + row_h / 2, "R"))
            left += p.shape[1] + gap
        top += row_h + title_h + gap
    return _png_data_uri(_draw_labels(mosaic, positions))


def _draw_labels(mosaic: np.ndarray, positions: list[tuple[float, float, str]]) -> np.ndarray:
    """Write white labels (slice positions centred above their point; L and R centred)."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(mosaic)
    draw = ImageDraw.Draw(image)
    fonts = {8: _font(8), 9: _font(9)}
    for x, y, text in positions:
        single = len(text) == 1
        font = fonts[9 if single else 8]
        draw.text((x, y), text, fill="white", font=font, anchor="mm" if single else "md")
    return np.asarray(image)


def _font(points: int) -> Any:
    """Load matplotlib's DejaVu Sans at ``points`` (at :data:`PNG_DPI`), or Pillow's font."""
    import matplotlib
    from PIL import ImageFont

    size = points * PNG_DPI / 72
    path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
    try:
        return ImageFont.truetype(path, size=size)
    except (OSError, ImportError):  # no FreeType in this Pillow
        return ImageFont.load_default()
