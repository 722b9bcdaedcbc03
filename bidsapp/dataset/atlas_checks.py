"""Checks of an atlas's files: the look-up table and the labels image.

Part of the dataset layer. A look-up table has one row per index and one index per name
(:func:`read_lut`); a labels image is a 3D image of non-negative integer labels read
through the checked reader of every image (:func:`check_labels_image`); every label of the
image has a row in the table (:func:`check_labels_in_lut`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from bidsapp.dataset.atlas_spec import AtlasError

logger = logging.getLogger(__name__)


# ------------------------------------------------------- look-up tables


def read_lut(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a BIDS ``dseg.tsv`` look-up table.

    Parameters
    ----------
    path : str or os.PathLike
        Tab-separated file with at least ``index`` and ``name`` columns.

    Returns
    -------
    pandas.DataFrame
        Sorted by ``index`` (int64), ``name`` as stripped strings, other columns kept.

    Raises
    ------
    AtlasError
        If the file is missing, empty or unreadable, lacks a column, or has
        missing, non-integer, negative or duplicate indices, or empty or repeated names.
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise AtlasError(f"Look-up table {path} is missing or empty; it needs index and name.")
    try:
        lut = pd.read_csv(path, sep="\t", dtype={"name": str}, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise AtlasError(f"Look-up table {path} is not a readable TSV file: {exc}") from exc
    missing = {"index", "name"} - set(lut.columns)
    if missing:
        raise AtlasError(
            f"Look-up table {path} lacks column(s) {', '.join(sorted(missing))}; a dseg.tsv "
            f"needs tab-separated 'index' and 'name' columns (found: {', '.join(lut.columns)})."
        )
    index = pd.to_numeric(lut["index"].replace("n/a", np.nan), errors="coerce")
    bad = index.isna() | (index % 1 != 0) | (index < 0)
    if bad.any():
        rows = ", ".join(str(v) for v in lut.loc[bad, "index"].head(5))
        raise AtlasError(
            f"Look-up table {path} has index values that are not non-negative integers "
            f"({rows}); fix the 'index' column."
        )
    lut = lut.assign(index=index.astype(np.int64), name=lut["name"].astype(str).str.strip())
    duplicated = lut["index"][lut["index"].duplicated()].unique()
    if len(duplicated):
        raise AtlasError(
            f"Look-up table {path} repeats index value(s) {', '.join(map(str, duplicated[:5]))}; "
            "each region needs one row."
        )
    empty = lut.loc[(lut["name"] == "") | (lut["name"] == "n/a"), "index"]
    if len(empty):
        raise AtlasError(
            f"Look-up table {path} has no name for index value(s) "
            f"{', '.join(map(str, empty.head(5)))}; fill the 'name' column."
        )
    # Names become the timeseries columns: two regions with one name would give two
    # columns nobody can tell apart (and a relmat indexed ambiguously).
    repeated = lut["name"][lut["name"].duplicated()].unique()
    if len(repeated):
        rows = lut[lut["name"].isin(repeated[:5])]
        shown = "; ".join(
            f"{name!r} at index {', '.join(map(str, group['index']))}"
            for name, group in rows.groupby("name", sort=False)
        )
        raise AtlasError(
            f"Look-up table {path} repeats region name(s): {shown}; each region needs its "
            "own name (add the hemisphere, say)."
        )
    return lut.sort_values("index", kind="stable").reset_index(drop=True)


# ------------------------------------------------------------ labels image


def check_labels_image(path: str | os.PathLike) -> np.ndarray:
    """Check that a file is a 3D image of non-negative integer labels.

    Parameters
    ----------
    path : str or os.PathLike
        NIfTI labels image (a trailing singleton 4th dimension is accepted).

    Returns
    -------
    numpy.ndarray
        Sorted unique labels present in the image, 0 included if present.

    Raises
    ------
    AtlasError
        If the file is empty or unreadable (a header disagreeing with the file's size, a
        truncated or corrupt gzip stream), has unusable voxel sizes or affine, is not 3D,
        or holds non-finite, negative or non-integer values.
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise AtlasError(f"Labels image {path} is missing or empty.")
    from bidsapp import image as _image
    from bidsapp import stream

    try:
        # The checked opening of every image (header claims against the file, the geometry
        # resampling onto the BOLD relies on), then its data read, gzip to its end (CRC32,
        # length).
        img = _image.load_checked_header(path)
        data = stream.read_data(img)
    except _image.ImageReadError as err:
        exc = err.__cause__
        raise AtlasError(f"Labels image {path} cannot be read as NIfTI: {exc}") from exc
    except (stream.StreamError, _image.HeaderError) as exc:
        raise AtlasError(f"Labels image {exc}") from exc
    except Exception as exc:  # nibabel's fallback reader (other formats)
        raise AtlasError(f"Labels image {path} cannot be read as NIfTI: {exc}") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise AtlasError(
            f"Labels image {path} has shape {data.shape}; a dseg must be 3D (one integer "
            "label per voxel). 4D probabilistic atlases (probseg) are not supported."
        )
    if not np.issubdtype(data.dtype, np.integer):
        if not np.all(np.isfinite(data)):
            raise AtlasError(
                f"Labels image {path} has NaN or infinite values; labels are integers."
            )
        if not np.array_equal(data, np.round(data)):
            raise AtlasError(
                f"Labels image {path} has non-integer values (dtype {data.dtype}); is it a "
                "probabilistic map rather than a dseg? Use an integer labels image."
            )
    labels = np.unique(data)
    if labels.size and labels[0] < 0:
        raise AtlasError(f"Labels image {path} has negative labels ({labels[0]}).")
    return labels.astype(np.int64)


def check_labels_in_lut(dseg: Path, labels: np.ndarray, lut: pd.DataFrame, lut_path: Path):
    """Every non-zero label of the image must have a row in the look-up table."""
    unknown = sorted(set(labels.tolist()) - set(lut["index"].tolist()) - {0})
    if unknown:
        shown = ", ".join(map(str, unknown[:10])) + (" ..." if len(unknown) > 10 else "")
        raise AtlasError(
            f"Labels image {dseg} has {len(unknown)} label(s) missing from its look-up table "
            f"{lut_path}: {shown}. Use the matching dseg.tsv (or pass lut_path)."
        )
    absent = len(set(lut_region_ids(lut)) - set(labels.tolist()))
    if absent:
        logger.info("%d region(s) of %s are not in %s", absent, lut_path, dseg)


def lut_region_ids(lut: pd.DataFrame) -> list[int]:
    """Return the non-background indices of a look-up table."""
    return [int(i) for i in lut["index"] if i != 0]
