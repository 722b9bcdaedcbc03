"""Checks and readers of :func:`bidsapp.signal.clean`'s inputs.

Signals as float arrays, flags, cut-offs and repetition time, runs, and confounds given
as arrays, DataFrames or files (CSV/TSV, with or without a header). Part of the
numerical core.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def check_flag(name: str, value: Any) -> None:
    """Raise TypeError unless ``value`` is a boolean."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}.")


def check_cutoff(name: str, value: Any) -> None:
    """Raise unless ``value`` is None or a finite frequency in Hz."""
    if value is None:
        return
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a frequency in Hz (a number) or None, got {value!r}.")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite frequency in Hz, got {value!r}.")


def check_t_r(t_r: Any) -> None:
    """Raise TypeError unless ``t_r`` is None or a number of seconds."""
    if t_r is None:
        return
    if isinstance(t_r, (bool, np.bool_)) or not isinstance(t_r, numbers.Real):
        raise TypeError(f"t_r must be a number of seconds or None, got {t_r!r}.")


def as_signal_array(signals: Any, ensure_finite: bool) -> np.ndarray:
    """Copy ``signals`` into a floating-point array of 1 or 2 dimensions."""
    try:
        data = np.array(signals, copy=True)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"signals must be a numeric array, got {type(signals).__name__}."
        ) from error
    if data.dtype.kind not in "biuf":
        raise TypeError(f"signals must hold real numbers, got dtype {data.dtype}.")
    if data.ndim not in (1, 2):
        raise ValueError(
            f"signals must be 2D (n_timepoints, n_signals) or 1D, got shape {data.shape}."
        )
    if data.shape[0] == 0:
        raise ValueError("signals has no time point (its first axis has length 0).")
    if ensure_finite:
        data[~np.isfinite(data)] = 0
    return _ensure_float(data, "signals")


def sanitize_runs(runs: Any, n_timepoints: int) -> np.ndarray | None:
    """Return ``runs`` as a 1D array of one label per time point."""
    if runs is None:
        return None
    labels = np.asarray(runs)
    if labels.ndim != 1 or labels.shape[0] != n_timepoints:
        raise ValueError(
            f"runs must give one label per time point ({n_timepoints}), got shape {labels.shape}."
        )
    return labels


def confounds_matrix(confounds: Any, n_timepoints: int) -> np.ndarray | None:
    """Stack the confounds into one floating-point (n_timepoints, n_confounds) array."""
    if confounds is None:
        return None
    items = list(confounds) if isinstance(confounds, (list, tuple)) else [confounds]
    if not items:
        raise ValueError("confounds is an empty list; pass None for no confounds.")
    blocks = [_confound_block(item, n_timepoints) for item in items]
    return _ensure_float(np.hstack(blocks), "confounds")


def _confound_block(item: Any, n_timepoints: int) -> np.ndarray:
    """Read one confounds item (array, DataFrame or file) as a 2D array."""
    if isinstance(item, (str, os.PathLike)):
        block = _read_confounds_file(Path(item))
        source = f"confounds file {os.fspath(item)}"
    elif isinstance(item, pd.DataFrame):
        block = item.to_numpy()
        source = "confounds DataFrame"
    elif isinstance(item, np.ndarray):
        block = item
        source = "confounds array"
    else:
        raise TypeError(
            "confounds must be a numpy array, a pandas DataFrame, a path to a delimited "
            f"text file, or a list of these; got {type(item).__name__}."
        )
    if block.ndim == 1:
        block = block[:, np.newaxis]
    if block.ndim != 2:
        raise ValueError(f"{source} must be 1D or 2D, got {block.ndim} dimensions.")
    if block.shape[0] != n_timepoints:
        raise ValueError(
            f"{source} has {block.shape[0]} rows but signals have {n_timepoints} time points."
        )
    return block


def _read_confounds_file(path: Path) -> np.ndarray:
    """Read a delimited text file of numbers, skipping a header line if there is one."""
    if not path.is_file():
        raise FileNotFoundError(f"confounds file {path} does not exist.")
    lines = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise ValueError(f"confounds file {path} is empty.")
    delimiter = _guess_delimiter(lines[0])
    rows = [[cell.strip() for cell in line.split(delimiter)] for line in lines]
    if not all(_is_number(cell) for cell in rows[0]):
        rows = rows[1:]  # a header line of column names
    if not rows or len({len(row) for row in rows}) != 1:
        raise ValueError(
            f"confounds file {path} must hold a table of numbers with the same number of "
            "columns on every line."
        )
    return np.array([[_parse_number(cell, path) for cell in row] for row in rows])


def _guess_delimiter(line: str) -> str | None:
    """Return the column delimiter of a line (None: runs of whitespace)."""
    for delimiter in ("\t", ",", ";"):
        if delimiter in line:
            return delimiter
    return None


def _is_number(text: str) -> bool:
    """Tell whether ``text`` reads as a float."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_number(text: str, path: Path) -> float:
    """Read one cell of a confounds file; empty and 'n/a' cells become NaN."""
    if text.lower() in ("", "n/a", "na"):
        return np.nan
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"confounds file {path}: cannot read {text!r} as a number.") from None


def _ensure_float(data: np.ndarray, name: str) -> np.ndarray:
    """Convert non-float arrays to float32 (items <= 4 bytes) or float64, as nilearn does."""
    if data.dtype.kind == "f":
        return data
    dtype = np.float64 if data.dtype.itemsize == 8 else np.float32
    try:
        return data.astype(dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must hold numbers only: {error}") from error


def float_copy(signals: Any, name: str) -> np.ndarray:
    """Return a floating-point copy of ``signals``."""
    data = np.array(signals, copy=True)
    if data.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {data.dtype}.")
    return _ensure_float(data, name)
