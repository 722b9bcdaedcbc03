"""Look-up tables of labels images: region names and sizes, as nilearn 0.12.1 builds them.

A look-up table is a DataFrame with ``index`` (label value) and ``name`` columns. This
module reads one (a DataFrame or a ``dseg.tsv``), builds one from region names or from
the label values alone, orders its rows like the extracted columns, and tabulates region
sizes for reports. Part of the numerical core, maskers layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bidsapp.errors import RegionWarning, warn

__all__ = ["build_lut", "finite_labels", "lut_for_columns", "read_lut", "region_size_table"]


def read_lut(lut: Any) -> pd.DataFrame:
    """Return a copy of a look-up table given as a DataFrame or a TSV path."""
    if isinstance(lut, (str, Path)):
        if not Path(lut).exists():
            raise FileNotFoundError(f"'lut': file not found: '{lut}'")
        table = pd.read_csv(lut, sep=None, engine="python")
    elif isinstance(lut, pd.DataFrame):
        table = lut.copy()
    else:
        raise TypeError(
            "'lut' must be a pandas DataFrame or a path to a dseg.tsv file with "
            f"'index' and 'name' columns; got {type(lut).__name__}."
        )
    missing = {"index", "name"} - set(table.columns)
    if missing:
        raise ValueError(
            f"'lut' must have 'index' and 'name' columns; missing {sorted(missing)} "
            f"(columns: {list(table.columns)})."
        )
    return table


def _names_from_labels(labels: list[str], present: list, background_label) -> list[str]:
    """Align a list of region names with the label values of the image."""
    names = ["Background" if n == "background" else n for n in labels]
    if background_label in present and "Background" not in names:
        names.insert(present.index(background_label), "Background")
    if len(names) < len(present):
        warn("Too many indices for the names. Padding 'names' with 'unknown'.", RegionWarning)
        names += ["unknown"] * (len(present) - len(names))
    elif len(names) > len(present):
        warn("Too many names for the indices. Dropping excess names values.", RegionWarning)
        names = names[: len(present)]
    return names


def _rows_for(table: pd.DataFrame, values: list) -> pd.DataFrame:
    """Keep the rows of ``values``; values without a row get one named "unknown" (appended)."""
    table = table[table["index"].isin(values)]
    known = set(table["index"].to_list())
    missing = [v for v in values if v not in known]
    if missing:
        table = pd.concat(
            [table, pd.DataFrame({"name": ["unknown"] * len(missing), "index": missing})],
            ignore_index=True,
        )
    return table


def build_lut(present: list, background_label, lut: Any = None, labels: Any = None) -> pd.DataFrame:
    """Build the look-up table (``index``, ``name``) of a labels image.

    ``present`` lists the label values found in the image (sorted). Rows for
    values absent from the image are dropped, values missing from the table
    are named "unknown", and the background row (if the background is in
    the image) is named "Background".
    """
    has_background = background_label in present
    if lut is not None:
        table = read_lut(lut)
    elif labels:
        table = pd.DataFrame(
            {"index": present, "name": _names_from_labels(labels, present, background_label)}
        )
    else:
        names = [
            "Background" if has_background and v == background_label else str(v) for v in present
        ]
        table = pd.DataFrame({"index": present, "name": names})
    table = _rows_for(table, present)
    is_background = table["index"] == background_label
    table = table.astype({"name": object})
    table.loc[is_background, "name"] = "Background"
    return table.sort_values("index").reset_index(drop=True)


def lut_for_columns(lut: pd.DataFrame, ids: list, background_present: bool, background_label):
    """Reorder the look-up table rows to follow the extracted columns."""
    order = [background_label, *ids] if background_present else list(ids)
    table = _rows_for(lut, order)
    return table.set_index("index").loc[order].reset_index()


def finite_labels(labels_data: np.ndarray) -> np.ndarray:
    """Labels with non-finite values set to 0, as the extraction sees them (no warning)."""
    labels_data = np.asarray(labels_data)
    if labels_data.dtype.kind in "fc" and not np.isfinite(labels_data).all():
        return np.where(np.isfinite(labels_data), labels_data, 0)
    return labels_data


def region_size_table(lut, labels_data, affine, background_label) -> pd.DataFrame:
    """Tabulate each region's size (mm^3) and share of all labelled voxels (%).

    Non-finite label values count as 0, as the extraction zeroes them (nilearn 0.12.1's
    ``safe_get_data(ensure_finite=True)``); their look-up-table rows have no size.
    """
    labels_data = finite_labels(labels_data)
    table = lut[["index", "name"]].copy()
    table = table[np.isfinite(pd.to_numeric(table["index"], errors="coerce"))]
    values, counts = np.unique(labels_data.astype(np.int32), return_counts=True)
    size_of = dict(zip(values.tolist(), counts.tolist(), strict=True))
    voxel_volume = abs(np.linalg.det(affine[:3, :3]))
    n_labelled = int(np.sum(labels_data.astype(np.int32) != background_label)) or 1
    sizes = [size_of.get(int(v), 0) for v in table["index"]]
    table = table.assign(
        index=table["index"].astype(int),
        **{
            "size (in mm^3)": [round(s * voxel_volume) for s in sizes],
            "relative size (in %)": [round(s / n_labelled * 100, 2) for s in sizes],
        },
    ).rename(columns={"name": "region name", "index": "label value"})
    return table[table["label value"] != background_label].reset_index(drop=True)


# ---------------------------------------------------------------------------
