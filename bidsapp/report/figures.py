"""Report figures: numpy arrays in, embedded PNG (``data:image/png;base64,...``) out.

matplotlib is imported inside the functions only, and through its object-oriented API
(``matplotlib.figure.Figure``), never ``pyplot``: no global backend is switched, no window
is opened, nothing is left registered after a figure is drawn, and it works under any
interactive backend a notebook may have chosen. ``MPLCONFIGDIR`` is pointed at a temporary
directory (removed at exit) when unset, so matplotlib never needs a writable home directory.

Part of the report layer. The atlas outlines are drawn by :mod:`bidsapp.report.contours`
(with the helpers here), the regions' networks come from :mod:`bidsapp.report.networks`.
"""

from __future__ import annotations

import atexit
import base64
import io
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bidsapp.report.networks import network_blocks

__all__ = [
    "carpet_image",
    "plot_carpet",
    "plot_connectivity",
    "plot_coverage",
    "plot_distributions",
    "plot_framewise_displacement",
    "plot_message",
    "plot_denoising_boxes",
]

PNG_DPI = 96
#: zlib level of the embedded PNGs: 3 is ~2x faster than 6 for a few % more bytes.
PNG_COMPRESSION = 3
CENSORED_COLOR = "#e53e3e"
NON_STEADY_COLOR = "#718096"
MASK_COLOR = "#38d430"
MISSING_COLOR = "#f4c7c3"

# Schaefer 2018 LUT names: "7Networks_LH_Vis_1", "17Networks_RH_DefaultA_PFCm_3", or the
# same without the "7Networks_" prefix.


def _figure(width: float, height: float, layout: str | None = "constrained", **kwargs: Any) -> Any:
    """Make a ``width`` x ``height`` inches figure at :data:`PNG_DPI` (no pyplot, no backend)."""
    if "matplotlib" not in sys.modules and not os.environ.get("MPLCONFIGDIR"):
        folder = tempfile.mkdtemp(prefix="bidsapp-mpl-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        os.environ["MPLCONFIGDIR"] = folder
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=PNG_DPI, layout=layout, **kwargs)


#: Horizontal extent (figure fraction) of the time axis shared by the coverage, framewise
#: displacement and carpet figures, all 13 in wide: their axes line up on the page.
_TRACK_LEFT, _TRACK_RIGHT = 0.1, 0.93
_TRACK_WIDTH = 13.0


def _track_axes(fig: Any) -> Any:
    """Add the main axes at the shared horizontal position (0.5 in below, 0.45 in above)."""
    height = fig.get_figheight()
    bottom, top = 0.5 / height, 1 - 0.45 / height
    return fig.add_axes((_TRACK_LEFT, bottom, _TRACK_RIGHT - _TRACK_LEFT, top - bottom))


def _to_data_uri(fig: Any, dpi: int = PNG_DPI) -> str:
    """Draw ``fig`` once with Agg and encode it as an opaque RGB PNG data URI.

    The canvas is drawn directly (no ``savefig``: no second draw, no bounding-box pass) and
    the alpha channel of the opaque figure is dropped.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if fig.get_dpi() != dpi:
        fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return _png_data_uri(np.asarray(canvas.buffer_rgba())[..., :3])


def _png_data_uri(rgb: np.ndarray) -> str:
    """Encode an ``(height, width, 3)`` uint8 image as a ``data:image/png;base64`` URI.

    zlib runs at :data:`PNG_COMPRESSION`; the PNG carries no text chunk (no address, no
    version string).
    """
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(
        buffer, format="png", compress_level=PNG_COMPRESSION
    )
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"data:image/png;base64,{encoded}"


def _colormap(name: str) -> Any:
    import matplotlib

    return matplotlib.colormaps[name]


def plot_message(text: str, width: float = 10.0, height: float = 1.2) -> str:
    """Draw a figure holding only a message, for an item that cannot be shown.

    Parameters
    ----------
    text : str
        What is missing and why.
    width, height : float, default=10.0, 1.2
        Figure size in inches.

    Returns
    -------
    str
        A ``data:image/png;base64`` URI.
    """
    fig = _figure(width, height)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=11, color="#4a5560")
    return _to_data_uri(fig)


# --------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------


def _network_colors(blocks: Sequence[tuple[str, int, int]]) -> dict[str, Any]:
    cmap = _colormap("tab10")
    return {name: cmap(i % 10) for i, (name, _, _) in enumerate(blocks)}


# --------------------------------------------------------------------------------------
# Atlas over the mean BOLD
# --------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------
# Coverage, motion
# --------------------------------------------------------------------------------------


def plot_coverage(
    coverage: Sequence[float],
    threshold: float,
    networks: Sequence[str] | None = None,
) -> str:
    """Bar chart of the fraction of each region's voxels inside the brain mask.

    Parameters
    ----------
    coverage : sequence of float
        Coverage of each region (0 to 1), in LUT order.
    threshold : float
        Minimum coverage; regions below it were written as ``n/a`` (red bars).
    networks : sequence of str, optional
        Network of each region; regions are grouped by network and labelled.

    Returns
    -------
    str
        A ``data:image/png;base64`` URI.
    """
    values = np.asarray(coverage, dtype=float)
    order = np.arange(values.size)
    blocks: list[tuple[str, int, int]] = []
    if networks is not None:
        order, blocks = network_blocks(networks)
    shown = values[order]
    below = ~(shown >= threshold)
    fig = _figure(_TRACK_WIDTH, 2.9, layout=None)
    ax = _track_axes(fig)
    x = np.arange(shown.size)
    # One filled step outline per colour: the same bars as ``ax.bar(width=1)`` with one
    # artist instead of one patch per region (hundreds of patches cost ~0.5 s to draw).
    heights = np.nan_to_num(shown)
    edges = np.arange(shown.size + 1) - 0.5
    ax.stairs(np.where(below, 0.0, heights), edges, fill=True, color="#4a90c2", linewidth=0)
    if below.any():
        ax.stairs(
            np.where(below, heights, 0.0),
            edges,
            fill=True,
            color=CENSORED_COLOR,
            linewidth=0,
            label=f"below {threshold:g}: set to n/a ({int(below.sum())} of {shown.size})",
        )
        # Regions with zero coverage have no bar: mark them under the axis.
        zero = below & ~(np.nan_to_num(shown) > 0)
        ax.plot(
            x[zero],
            np.full(int(zero.sum()), -0.04),
            "|",
            color=CENSORED_COLOR,
            markersize=6,
            clip_on=False,
        )
    ax.axhline(threshold, color="black", linestyle="--", linewidth=1, label="threshold")
    ax.set_xlim(-0.5, shown.size - 0.5)
    ax.set_ylim(-0.06, 1.05)
    ax.set_ylabel("coverage")
    for _, start, _stop in blocks[1:]:
        ax.axvline(start - 0.5, color="#a0aec0", linewidth=0.6)
    if blocks:
        ax.set_xticks(
            [(a + b - 1) / 2 for _, a, b in blocks], [n for n, _, _ in blocks], fontsize=8
        )
    else:
        ax.set_xlabel("region (LUT order)")
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize=8, frameon=False)
    return _to_data_uri(fig)


def _spans(indices: Sequence[int]) -> list[tuple[int, int]]:
    """Contiguous runs of sorted integer indices as (first, last)."""
    spans: list[tuple[int, int]] = []
    for i in sorted(int(v) for v in indices):
        if spans and i == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], i)
        else:
            spans.append((i, i))
    return spans


def plot_framewise_displacement(
    fd: Sequence[float] | None,
    t_r: float | None,
    censored: Sequence[int] = (),
    non_steady_state: Sequence[int] = (),
    fd_threshold: float | None = None,
    n_volumes: int | None = None,
) -> str:
    """Plot framewise displacement over time with removed volumes shaded.

    Parameters
    ----------
    fd : sequence of float or None
        Framewise displacement per volume in mm (NaN for the first volume); None when the
        confounds file has none (the figure then says so and still marks removed volumes).
    t_r : float or None
        Repetition time in seconds, for the time axis on top.
    censored : sequence of int, default=()
        0-based volumes removed by censoring (motion or outlier scrubbing), shaded red.
    non_steady_state : sequence of int, default=()
        0-based non-steady-state (dummy) volumes, shaded grey.
    fd_threshold : float, optional
        Censoring threshold in mm, drawn as a dashed line.
    n_volumes : int, optional
        Number of volumes; ``len(fd)`` when None.

    Returns
    -------
    str
        A ``data:image/png;base64`` URI.
    """
    values = None if fd is None else np.asarray(fd, dtype=float)
    n = n_volumes if n_volumes is not None else (0 if values is None else values.size)
    fig = _figure(_TRACK_WIDTH, 2.9, layout=None)
    ax = _track_axes(fig)
    handles = []
    from matplotlib.patches import Patch

    for first, last in _spans(non_steady_state):
        ax.axvspan(first - 0.5, last + 0.5, color=NON_STEADY_COLOR, alpha=0.35, linewidth=0)
    for first, last in _spans(censored):
        ax.axvspan(first - 0.5, last + 0.5, color=CENSORED_COLOR, alpha=0.3, linewidth=0)
    if values is not None and values.size:
        (line,) = ax.plot(
            np.arange(values.size),
            values,
            color="#1a365d",
            linewidth=1.1,
            label=f"FD (mean {np.nanmean(values):.3f} mm)",
        )
        handles.append(line)
        top = np.nanmax(values) if np.isfinite(values).any() else 1.0
        ax.set_ylim(0, max(top, fd_threshold or 0) * 1.12 + 1e-3)
    else:
        ax.set_ylim(0, 1)
        ax.text(
            0.5,
            0.5,
            "no framewise_displacement column in the confounds file",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color="#4a5560",
        )
    if fd_threshold:
        handles.append(
            ax.axhline(
                fd_threshold,
                color=CENSORED_COLOR,
                linestyle="--",
                linewidth=1,
                label=f"threshold {fd_threshold:g} mm",
            )
        )
    if len(censored):
        handles.append(
            Patch(color=CENSORED_COLOR, alpha=0.3, label=f"censored ({len(censored)} volumes)")
        )
    if len(non_steady_state):
        handles.append(
            Patch(
                color=NON_STEADY_COLOR,
                alpha=0.35,
                label=f"non-steady-state ({len(non_steady_state)} volumes)",
            )
        )
    ax.set_xlim(-0.5, max(n, 1) - 0.5)
    ax.set_xlabel("volume")
    ax.set_ylabel("FD (mm)")
    if t_r:
        top_axis = ax.secondary_xaxis("top", functions=(lambda v: v * t_r, lambda s: s / t_r))
        top_axis.set_xlabel("time (s)", fontsize=9)
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.9)
    return _to_data_uri(fig)


# --------------------------------------------------------------------------------------
# Carpet, connectivity
# --------------------------------------------------------------------------------------


def _zscore_rows(data: np.ndarray) -> np.ndarray:
    out = np.full(data.shape, np.nan)
    rows = np.isfinite(data).any(axis=1)
    if rows.any():
        part = data[rows]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.nanmean(part, axis=1, keepdims=True)
            std = np.nanstd(part, axis=1, keepdims=True)
            out[rows] = (part - mean) / np.where(std > 0, std, 1.0)
    return out


def _network_strip(ax: Any, blocks: Sequence[tuple[str, int, int]], colors: Mapping) -> None:
    """Draw coloured network blocks in a narrow vertical axis (top to bottom)."""
    total = blocks[-1][2]
    for name, start, stop in blocks:
        ax.axhspan(start - 0.5, stop - 0.5, color=colors[name], linewidth=0)
        if stop - start >= total / 60:
            ax.text(
                -0.15,
                (start + stop - 1) / 2,
                name,
                ha="right",
                va="center",
                fontsize=8,
                transform=ax.get_yaxis_transform(),
            )
    ax.set_ylim(total - 0.5, -0.5)
    ax.set_xlim(0, 1)
    ax.set_axis_off()


#: Size (inches) of the carpet figure, and its image axes in pixels: the carpet array is
#: reduced to at most one value per pixel before drawing (:func:`carpet_image`).
_CARPET_HEIGHT = 4.8
CARPET_PIXELS = (
    int((_CARPET_HEIGHT - 0.95) * PNG_DPI),
    int((_TRACK_RIGHT - _TRACK_LEFT) * _TRACK_WIDTH * PNG_DPI),
)


def _bin_starts(n: int, limit: int) -> np.ndarray | None:
    """First index of each of ``limit`` near-equal bins of ``n`` items; None when n <= limit."""
    if n <= limit:
        return None
    return np.unique(np.linspace(0, n, limit + 1)[:-1].round().astype(int))


def _bin_means(full: np.ndarray, max_shape: tuple[int, int]) -> np.ndarray:
    """Average neighbouring rows and columns of ``full`` down to at most ``max_shape``.

    A bin with an all-NaN row (a region set to ``n/a``) or an all-NaN column (a removed
    volume) is NaN as a whole: what was removed stays visible at any size.
    """
    finite = np.isfinite(full)
    values = np.where(finite, full, 0.0)
    counts = finite.astype(np.int64)
    empty_rows = ~finite.any(axis=1)
    empty_cols = ~finite.any(axis=0)
    for axis, limit in enumerate(max_shape):
        starts = _bin_starts(values.shape[axis], max(int(limit), 1))
        if starts is None:
            continue
        values = np.add.reduceat(values, starts, axis=axis)
        counts = np.add.reduceat(counts, starts, axis=axis)
        if axis == 0:
            empty_rows = np.logical_or.reduceat(empty_rows, starts)
        else:
            empty_cols = np.logical_or.reduceat(empty_cols, starts)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(counts > 0, values / np.maximum(counts, 1), np.nan)
    out[empty_rows, :] = np.nan
    out[:, empty_cols] = np.nan
    return out


def carpet_image(
    timeseries: np.ndarray,
    retained: Sequence[int] | None = None,
    n_volumes: int | None = None,
    networks: Sequence[str] | None = None,
    max_shape: tuple[int, int] = CARPET_PIXELS,
) -> tuple[np.ndarray, list[tuple[str, int, int]]]:
    """Compute what a carpet plot shows: regions x volumes, z-scored per region, binned.

    Parameters
    ----------
    timeseries, retained, n_volumes, networks
        As :func:`plot_carpet`.
    max_shape : (int, int), default=CARPET_PIXELS
        At most this many rows and columns (the pixels of the carpet's axes): beyond it,
        neighbouring regions (rows) and volumes (columns) are averaged, and a bin holding a
        removed volume or a region set to ``n/a`` is NaN as a whole.

    Returns
    -------
    image : numpy.ndarray
        ``(min(n_regions, max_shape[0]), min(n_volumes, max_shape[1]))`` values (NaN where
        nothing is shown), rows in network order when ``networks`` is given.
    blocks : list of (str, int, int)
        Network blocks as ``(name, first region, stop)`` in region units (empty without
        networks).
    """
    full, blocks = _carpet_full(timeseries, retained, n_volumes, networks)
    return _bin_means(full, max_shape), blocks


def _carpet_full(
    timeseries: np.ndarray,
    retained: Sequence[int] | None,
    n_volumes: int | None,
    networks: Sequence[str] | None,
) -> tuple[np.ndarray, list[tuple[str, int, int]]]:
    """Regions x all volumes, z-scored per region, NaN where removed; network order."""
    data = np.asarray(timeseries, dtype=float)
    kept = np.arange(data.shape[0]) if retained is None else np.asarray(retained, dtype=int)
    if kept.size != data.shape[0]:
        raise ValueError(f"{kept.size} retained indices for {data.shape[0]} timeseries rows")
    total = int(n_volumes) if n_volumes is not None else int(kept.max(initial=-1) + 1)
    full = np.full((data.shape[1], max(total, 1)), np.nan)
    full[:, kept] = _zscore_rows(data.T)
    blocks: list[tuple[str, int, int]] = []
    if networks is not None:
        order, blocks = network_blocks(networks)
        full = full[order]
    return full, blocks


def plot_carpet(
    timeseries: np.ndarray,
    retained: Sequence[int] | None = None,
    n_volumes: int | None = None,
    networks: Sequence[str] | None = None,
    t_r: float | None = None,
) -> str:
    """Carpet plot: one row per region, one column per volume, z-scored per row.

    Columns sit at their original volume positions, so censored volumes show as gaps that
    line up with the framewise displacement plot. Beyond one region or volume per pixel,
    neighbours are averaged (:func:`carpet_image`).

    Parameters
    ----------
    timeseries : numpy.ndarray
        ``(n_retained_volumes, n_regions)`` region signals; NaN columns (regions set to
        ``n/a``) are drawn as empty rows.
    retained : sequence of int, optional
        0-based original index of each row of ``timeseries``; ``range(n)`` when None.
    n_volumes : int, optional
        Volumes in the original series; ``max(retained) + 1`` when None.
    networks : sequence of str, optional
        Network of each region: rows are grouped by network with a coloured strip.
    t_r : float, optional
        Repetition time in seconds, for the time axis on top.

    Returns
    -------
    str
        A ``data:image/png;base64`` URI.
    """
    full, blocks = _carpet_full(timeseries, retained, n_volumes, networks)
    n_regions, n_columns = full.shape
    cmap = _colormap("gray").with_extremes(bad=MISSING_COLOR)
    fig = _figure(_TRACK_WIDTH, _CARPET_HEIGHT, layout=None)
    ax = _track_axes(fig)
    x0, y0, _, h = ax.get_position().bounds
    if blocks:
        strip_ax = fig.add_axes((x0 - 0.016, y0, 0.011, h))
        _network_strip(strip_ax, blocks, _network_colors(blocks))
    # The binned array spans the original extent: the axes stay in volumes and regions.
    image = ax.imshow(
        _bin_means(full, CARPET_PIXELS),
        aspect="auto",
        cmap=cmap,
        vmin=-2,
        vmax=2,
        interpolation="nearest",
        extent=(-0.5, n_columns - 0.5, n_regions - 0.5, -0.5),
    )
    for _, start, _stop in blocks[1:]:
        ax.axhline(start - 0.5, color="#e2a03f", linewidth=0.7)
    ax.set_xlabel("volume")
    ax.set_ylabel("region" if not blocks else "")
    if blocks:
        ax.set_yticks([])
    if t_r:
        top_axis = ax.secondary_xaxis("top", functions=(lambda v: v * t_r, lambda s: s / t_r))
        top_axis.set_xlabel("time (s)", fontsize=9)
    bar = fig.colorbar(image, cax=fig.add_axes((_TRACK_RIGHT + 0.008, y0, 0.01, h)))
    bar.set_label("z", fontsize=9)
    return _to_data_uri(fig)


def plot_connectivity(
    matrix: np.ndarray,
    names: Sequence[str] | None = None,
    networks: Sequence[str] | None = None,
    title: str = "",
    vmin: float = -1.0,
    vmax: float = 1.0,
    cmap: str = "RdBu_r",
    label: str = "Pearson r",
) -> str:
    """Draw a region x region matrix, grouped by network when known.

    Parameters
    ----------
    matrix : numpy.ndarray
        Square matrix; NaN entries (regions without data) are drawn light grey and the
        diagonal is left blank.
    names : sequence of str, optional
        Region names; used as tick labels when there are at most 40 regions and no
        networks.
    networks : sequence of str, optional
        Network of each region; rows and columns are grouped and the blocks outlined.
    title : str, default=""
        Title above the matrix.
    vmin, vmax : float, default=-1.0, 1.0
        Colour scale limits.
    cmap : str, default="RdBu_r"
        matplotlib colour map name.
    label : str, default="Pearson r"
        Colour bar label.

    Returns
    -------
    str
        A ``data:image/png;base64`` URI.
    """
    values = np.array(matrix, dtype=float)
    if values.ndim != 2 or values.shape[0] != values.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {values.shape}")
    np.fill_diagonal(values, np.nan)
    blocks: list[tuple[str, int, int]] = []
    if networks is not None:
        order, blocks = network_blocks(networks)
        values = values[np.ix_(order, order)]
    ticks: list[float] = []
    tick_labels: list[str] = []
    fontsize = 8
    if blocks:
        ticks = [(a + b - 1) / 2 for _, a, b in blocks]
        tick_labels = [n for n, _, _ in blocks]
    elif names is not None and len(names) <= 40:
        ticks = list(range(len(names)))
        tick_labels = [str(n) for n in names]
        fontsize = 7
    # Fixed margins sized from the longest tick label (no layout engine: it would measure
    # every label in an extra draw).
    longest = max((len(t) for t in tick_labels), default=0)
    margin = min(0.15 + 0.6 * fontsize / 72 * longest, 2.5) if tick_labels else 0.75
    width, height = 7.4, 6.4
    top = 0.35 if title else 0.12
    right = 1.0  # colour bar, its ticks and label
    side = max(min(width - margin - right, height - margin - top), 1.0)
    fig = _figure(width, height, layout=None)
    ax = fig.add_axes((margin / width, margin / height, side / width, side / height))
    image = ax.imshow(
        values,
        cmap=_colormap(cmap).with_extremes(bad="#e2e8f0"),
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
    )
    for _, start, _stop in blocks[1:]:
        ax.axhline(start - 0.5, color="black", linewidth=0.6)
        ax.axvline(start - 0.5, color="black", linewidth=0.6)
    if tick_labels:
        ax.set_xticks(ticks, tick_labels, rotation=90, fontsize=fontsize)
        ax.set_yticks(ticks, tick_labels, fontsize=fontsize)
    else:
        ax.set_xlabel("region")
        ax.set_ylabel("region")
    if title:
        ax.set_title(title, fontsize=10)
    left = (margin + side + 0.12) / width
    cax = fig.add_axes((left, margin / height, 0.2 / width, side / height))
    bar = fig.colorbar(image, cax=cax)
    bar.set_label(label)
    return _to_data_uri(fig)


# --------------------------------------------------------------------------------------
# Group comparisons
# --------------------------------------------------------------------------------------


def plot_distributions(
    values: Mapping[str, np.ndarray],
    xlabel: str,
    title: str = "",
    value_range: tuple[float, float] = (-1.0, 1.0),
    bins: int = 40,
    value_name: str = "value",
    count_name: str = "values",
) -> str:
    """Overlaid histograms (one outline per group), with each group's median |value|.

    Parameters
    ----------
    values : mapping of str to numpy.ndarray
        Values of each group (for example the QC-FC of every edge, per denoise strategy);
        NaN values are ignored.
    xlabel : str
        Label of the horizontal axis.
    title : str, default=""
        Title.
    value_range : (float, float), default=(-1.0, 1.0)
        Histogram range.
    bins : int, default=40
        Number of bins.
    value_name, count_name : str, default="value", "values"
        Words used in the legend (``median |QC-FC| 0.12, 4950 edges``).

    Returns
    -------
    str
        A ``data:image/png;base64`` URI.
    """
    fig = _figure(8.0, 3.6)
    ax = fig.add_subplot()
    cmap = _colormap("tab10")
    edges = np.linspace(value_range[0], value_range[1], bins + 1)
    for i, (name, data) in enumerate(values.items()):
        finite = np.asarray(data, dtype=float)
        finite = finite[np.isfinite(finite)]
        if finite.size == 0:
            continue
        med = float(np.median(np.abs(finite)))
        ax.hist(
            finite,
            bins=edges,
            density=True,
            histtype="step",
            linewidth=1.8,
            color=cmap(i % 10),
            label=f"{name}: median |{value_name}| {med:.3f}, {finite.size} {count_name}",
        )
        ax.axvline(np.median(finite), color=cmap(i % 10), linewidth=0.8, linestyle=":")
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlim(*value_range)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    if title:
        ax.set_title(title, fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper right", framealpha=0.9)
    return _to_data_uri(fig)


def plot_denoising_boxes(panels: Mapping[str, Mapping[str, Sequence[float]]]) -> str:
    """Box plots with every run as a dot: one panel per measure, one box per strategy.

    Parameters
    ----------
    panels : mapping of str to mapping of str to sequence of float
        For each panel (keyed by its vertical-axis label), one value per run for each
        group (denoise strategy); NaN values are ignored.

    Returns
    -------
    str
        A ``data:image/png;base64`` URI.
    """
    n_groups = max((len(v) for v in panels.values()), default=1)
    width = max(2.8, 0.8 * n_groups + 1.3) * max(len(panels), 1)
    fig = _figure(min(width, 13.0), 3.6)
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
    cmap = _colormap("tab10")
    rng = np.random.default_rng(0)
    for ax, (ylabel, values) in zip(axes, panels.items(), strict=False):
        names = list(values)
        data = [np.asarray(values[n], dtype=float) for n in names]
        data = [d[np.isfinite(d)] for d in data]
        positions = np.arange(1, len(names) + 1)
        if any(d.size for d in data):
            ax.boxplot(
                [d if d.size else [np.nan] for d in data],
                positions=positions,
                widths=0.5,
                showfliers=False,
                medianprops={"color": "black"},
            )
        for i, d in enumerate(data):
            jitter = rng.uniform(-0.12, 0.12, d.size)
            ax.plot(positions[i] + jitter, d, "o", color=cmap(i % 10), markersize=4, alpha=0.8)
        ax.set_xticks(positions, names, fontsize=9)
        ax.set_xlim(0.4, len(names) + 0.6)
        ax.set_ylabel(ylabel)
        ax.margins(y=0.15)
    return _to_data_uri(fig)
