"""JSON sidecars: the one converter to JSON values, strict JSON text, writing and reading.

Part of the dataset layer. Every JSON file bidsapp writes goes through :func:`json_text`
(numpy values and paths converted by :func:`json_default`, no NaN); content built before
it is written (settings, fingerprints) is converted by :func:`json_value`, with the same
leaf rule; every JSON file it reads back from its own outputs goes through
:func:`read_sidecar`, which never follows a link.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bidsapp.dataset.fileio import atomic_write_text, read_regular_bytes

logger = logging.getLogger(__name__)


def json_default(obj: Any) -> Any:
    """Convert numpy scalars/arrays, paths and sets for :func:`json.dumps` (its ``default``).

    The one converter of the values bidsapp writes into JSON files.

    Parameters
    ----------
    obj : object
        A value :mod:`json` cannot encode by itself.

    Returns
    -------
    object
        ``obj.item()`` for numpy scalars, a list for arrays, the path text for paths, a
        sorted list for sets.

    Raises
    ------
    TypeError
        For any other type.
    """
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable: {obj!r}")


def json_value(obj: Any, *, finite: bool = False) -> Any:
    """Convert nested content to plain JSON values (dicts, lists, str, numbers, None).

    Dataclass instances become the dict of their fields (in field order), mappings dicts
    with string keys, lists and tuples lists; numpy values, paths and sets are converted
    as by :func:`json_default`.

    Parameters
    ----------
    obj : object
        A dataclass instance, mapping, sequence, path, numpy value or scalar.
    finite : bool, default=False
        Replace infinite and NaN floats by None (strict JSON: an infinite threshold means
        "disabled"); otherwise they are kept.

    Returns
    -------
    object
        The same content made of dicts, lists, strings, numbers, booleans and None.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: json_value(getattr(obj, f.name), finite=finite) for f in dataclasses.fields(obj)
        }
    if isinstance(obj, Mapping):
        return {str(k): json_value(v, finite=finite) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_value(v, finite=finite) for v in obj]
    if isinstance(obj, (np.generic, np.ndarray, os.PathLike, set, frozenset)):
        return json_value(json_default(obj), finite=finite)
    if finite and isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def json_text(data: Any, *, indent: int = 2) -> str:
    """Return the strict JSON text :func:`atomic_write_json` writes.

    Parameters
    ----------
    data : object
        JSON-compatible content; numpy scalars and arrays and paths are converted.
    indent : int
        Indentation of the output.

    Returns
    -------
    str
        JSON text with a trailing newline.

    Raises
    ------
    TypeError, ValueError
        For values JSON cannot hold (NaN and infinite floats included).

    """
    return json.dumps(data, indent=indent, default=json_default, allow_nan=False) + "\n"


def atomic_write_json(path: str | os.PathLike[str], data: Any, *, indent: int = 2) -> Path:
    """Atomically write a JSON document (see :func:`~bidsapp.dataset.fileio.atomic_write_bytes`).

    Parameters
    ----------
    path : path-like
        Destination file.
    data : object
        JSON-compatible content; numpy scalars and arrays and paths are converted.
    indent : int
        Indentation of the output.

    Returns
    -------
    Path
        The destination path.

    Raises
    ------
    TypeError
        For values that cannot be represented in JSON (nothing is written).
    ValueError
        For NaN or infinite floats, which strict JSON cannot hold (nothing is written).

    """
    try:
        text = json_text(data, indent=indent)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"Cannot write {path} as JSON: {exc}") from exc
    return atomic_write_text(path, text)


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Read a JSON sidecar for resume checks.

    Parameters
    ----------
    path : path-like
        JSON file.

    Returns
    -------
    dict or None
        Its content, or None when the file is missing, unreadable, a symbolic link (never
        followed), not valid JSON or not a JSON object (all mean "recompute").

    """
    try:
        raw = read_regular_bytes(path)
        if raw is None:  # a planted link or a special file: never read
            return None
        data = json.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("Ignoring unreadable sidecar %s: %s", path, exc)
        return None
    if not isinstance(data, dict):
        logger.warning("Ignoring sidecar %s: it is not a JSON object", path)
        return None
    return data
