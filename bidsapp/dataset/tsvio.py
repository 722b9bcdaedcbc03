"""BIDS TSV tables: text, atomic writing and reading (``n/a`` cells, no quoting, LF ends).

Part of the dataset layer; every TSV bidsapp writes or reads back goes through here.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bidsapp.dataset.fileio import atomic_write_text

_TSV_FORBIDDEN = re.compile(r"[\t\r\n]")


def _check_tsv_cells(df: pd.DataFrame, *, index: bool, path: Any) -> None:
    """Reject what a BIDS TSV cannot hold: tabs, newlines (no quoting) and repeated headers."""
    headers = [str(c) for c in df.columns]
    values = [df.iloc[:, i] for i in range(df.shape[1])]
    if index:
        headers = [str(n) for n in df.index.names if n is not None] + headers
        values.append(df.index.to_series())
    repeated = sorted(h for h, n in Counter(headers).items() if n > 1)
    if repeated:
        raise ValueError(f"Cannot write {path}: repeated column names {repeated[:5]}.")
    for header in headers:
        if _TSV_FORBIDDEN.search(header):
            raise ValueError(f"Cannot write {path}: column name {header!r} has a tab or newline.")
    for column in values:
        if column.dtype.kind in "biufcmM":
            continue
        text = column.dropna().astype(str)
        bad = text[text.str.contains(_TSV_FORBIDDEN)]
        if len(bad):
            raise ValueError(
                f"Cannot write {path}: value {bad.iloc[0]!r} in column {column.name!r} has a "
                "tab or newline."
            )


def tsv_text(
    df: pd.DataFrame,
    *,
    index: bool = False,
    float_format: str | None = None,
    path: Any = "<tsv>",
) -> str:
    """Return a DataFrame as the BIDS TSV text :func:`atomic_write_tsv` writes.

    Parameters
    ----------
    df : pandas.DataFrame
        Table; column names become the header.
    index : bool
        Also write the index as the first column(s).
    float_format : str or None
        printf-style format for floats; None keeps the exact round-trip digits.
    path : object
        Where the text goes, named in the error.

    Returns
    -------
    str
        Tab-separated text with ``n/a`` for missing values and LF line ends.

    Raises
    ------
    ValueError
        If a column name or string value contains a tab or newline.

    """
    _check_tsv_cells(df, index=index, path=path)
    buffer = io.StringIO()
    df.to_csv(
        buffer,
        sep="\t",
        na_rep="n/a",
        index=index,
        float_format=float_format,
        quoting=csv.QUOTE_NONE,  # BIDS TSV has no quoting: a '"' is an ordinary character
        lineterminator="\n",
    )
    return buffer.getvalue()


def atomic_write_tsv(
    path: str | os.PathLike[str],
    df: pd.DataFrame,
    *,
    index: bool = False,
    float_format: str | None = None,
) -> Path:
    """Atomically write a DataFrame as a BIDS TSV file.

    Tab-separated, ``n/a`` for missing values, LF line ends, no quoting. With the default
    ``float_format=None`` each float is written as the shortest decimal that reads back to
    the identical float64 (Python's ``repr``): ``%.10g`` would keep only 10 significant
    digits (relative error up to 5e-11, and almost no value reads back identical), while
    float64 needs up to 17. Exact round-trip costs about 25 % more bytes, which is cheap
    next to a reader silently getting different numbers.

    Parameters
    ----------
    path : path-like
        Destination file.
    df : pandas.DataFrame
        Table to write; column names become the header.
    index : bool
        Also write the index as the first column(s).
    float_format : str or None
        printf-style format for floats, e.g. ``"%.6g"`` to trade precision for size.

    Returns
    -------
    Path
        The destination path.

    Raises
    ------
    ValueError
        If a column name or string value contains a tab or newline (nothing is written).

    """
    return atomic_write_text(path, tsv_text(df, index=index, float_format=float_format, path=path))


def read_tsv(path: str | os.PathLike[str], *, dtype: Any = None) -> pd.DataFrame:
    """Read a BIDS TSV file written by :func:`atomic_write_tsv`.

    Parameters
    ----------
    path : path-like
        TSV file.
    dtype : type, str or mapping, optional
        Passed to :func:`pandas.read_csv`, e.g. ``str`` to keep ``"01"`` as text.

    Returns
    -------
    pandas.DataFrame
        The table; only ``n/a`` cells are missing values (an empty cell is not).

    """
    return pd.read_csv(
        path,
        sep="\t",
        na_values=["n/a"],
        keep_default_na=False,
        quoting=csv.QUOTE_NONE,
        dtype=dtype,
    )


def numeric_table(text: str) -> pd.DataFrame:
    """Parse the text of a TSV of numbers (``n/a`` for missing values) into float64 columns.

    Each cell is parsed by Python's own float conversion, so a value written by
    :func:`atomic_write_tsv` (the shortest decimal of a float64) reads back identical; one
    float64 array holds the table (pandas' parser yields one column at a time: three
    times slower on a table of 400 regions). Check the file's shape first
    (:func:`bidsapp.report.records.tsv_problem`): an empty cell is an error here, not a
    missing value.

    Parameters
    ----------
    text : str
        The file's content: a header line, then rows, each line ending with a newline.

    Returns
    -------
    pandas.DataFrame
        Float64 columns named by the header.

    Raises
    ------
    ValueError
        If a cell is not a number or ``n/a`` (the message quotes it), or the cells do not
        fill whole rows.
    """
    header, _, body = text.partition("\n")
    names = header.split("\t")
    # "n/a" replaced in the text (a cell holding more than "n/a" still fails to parse).
    body = body[:-1].replace("n/a", "nan").replace("\n", "\t")
    cells = body.split("\t") if body else []
    if len(cells) % len(names):
        raise ValueError(f"{len(cells)} cells do not fill rows of {len(names)} columns")
    try:
        values = np.array(cells, dtype=np.float64)
    except ValueError as err:  # numpy says "could not convert string to float: 'x'"
        raise ValueError(str(err)) from None
    return pd.DataFrame(values.reshape(-1, len(names)), columns=names)
