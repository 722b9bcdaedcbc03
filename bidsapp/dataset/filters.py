"""What the user selects: subject/session/task labels and the ``--bids-filter-file`` query.

Part of the dataset layer, and light on purpose (no pybids, no pandas): the app's settings check
labels and read filter files with the same functions :func:`~bidsapp.dataset.query.find_runs`
applies, so both agree on what a valid label or filter is.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bidsapp.dataset.input_files import QueryError, read_json
from bidsapp.dataset.naming import BOLD_ENTITIES, BOLD_NAMES, LABEL_RE, index_value

logger = logging.getLogger(__name__)

#: Extensions of the images a run is made of (``.nii.gz`` preferred).
IMAGE_EXTENSIONS = [".nii.gz", ".nii"]

#: Keys of a filter that find_runs sets itself: the allowed values for each.
FIXED_FILTERS = {
    "suffix": {"bold"},
    "desc": {"preproc"},
    "extension": set(IMAGE_EXTENSIONS) | {"nii.gz", "nii"},
    "datatype": {"func"},
}

# Filter keys: file-name keys, long names and pybids's ``resolution``/``density`` spellings.
_LONG_NAMES = {**BOLD_NAMES, "resolution": "res", "density": "den"}


# ------------------------------------------------------------------ arguments


def bare_label(label: Any, prefix: str) -> str | None:
    """Return a label without its optional ``<prefix>-``, or None if it is not a BIDS label.

    Parameters
    ----------
    label : object
        A label such as ``"01"`` or ``"sub-01"``.
    prefix : str
        Entity key to strip, e.g. ``"sub"``.

    Returns
    -------
    str or None
        The alphanumeric label, or None when it has other characters (e.g. ``"../x"``) or
        is empty.
    """
    text = str(label)
    if text.startswith(f"{prefix}-"):
        text = text[len(prefix) + 1 :]
    return text if LABEL_RE.fullmatch(text) else None


def normalize_labels(
    labels: str | os.PathLike[str] | Iterable[str] | None,
    prefix: str,
    what: str,
    *,
    error: type[Exception] = QueryError,
) -> tuple[str, ...] | None:
    """Strip an optional BIDS prefix from labels and check that they are alphanumeric.

    The one check of subject, session and task labels: the app's settings and
    :func:`bidsapp.dataset.query.find_runs` both use it.

    Parameters
    ----------
    labels : str or os.PathLike or iterable of str or None
        Labels such as ``"01"`` or ``"sub-01"``.
        A single string (or path) is one label.
    prefix : str
        Entity key that may prefix the labels, e.g. ``"sub"``.
    what : str
        What the labels are, first in error messages: an option name
        (``"--participant-label"``) or a description (``"participant label"``).
    error : type of Exception, optional
        Exception class raised (:class:`~bidsapp.dataset.input_files.QueryError` by default; the
        app's settings pass their usage error).

    Returns
    -------
    tuple of str or None
        Unique labels in the order given, without the prefix; None when ``labels`` is None.

    Raises
    ------
    QueryError (or ``error``)
        If a label is empty or has characters other than letters and digits (which also
        rules out path escapes such as ``../x``), or no label is given.
    """
    if labels is None:
        return None
    if isinstance(labels, (str, os.PathLike)):
        labels = [os.fspath(labels)]
    cleaned: list[str] = []
    for label in labels:
        text = bare_label(label, prefix)
        if text is None:
            raise error(
                f"{what}: invalid label {str(label)!r}; BIDS labels contain only letters "
                f"and digits (with or without the '{prefix}-' prefix)"
            )
        if text not in cleaned:
            cleaned.append(text)
    if not cleaned:
        raise error(f"{what}: give at least one label")
    return tuple(cleaned)


#: Marker for a filter value ``"*"``: the entity is present, whatever its value.
ANY = "*"


def read_bids_filter_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check an fMRIPrep ``--bids-filter-file``.

    Parameters
    ----------
    path : str or os.PathLike
        JSON file such as ``{"bold": {"session": "1", "run": [1, 2]}}``.

    Returns
    -------
    dict
        The document, as written.

    Raises
    ------
    QueryError
        One line naming the file: unreadable (see
        :func:`~bidsapp.dataset.input_files.read_json`), not an object, or a ``bold`` query that
        :func:`load_bids_filters` refuses.
    """
    document = read_json(path, "BIDS filter file")
    load_bids_filters(document, source=str(path))
    return document


def load_bids_filters(
    bids_filters: Mapping | str | Path | None, *, source: str | None = None
) -> dict[str, list[Any]]:
    """Return the checked ``bold`` entity filters of an fMRIPrep ``--bids-filter-file``.

    Parameters
    ----------
    bids_filters : mapping or str or pathlib.Path or None
        The filter document (``{"bold": {"session": "1", "run": [1, 2]}, "t1w": ...}``)
        or a path to its JSON file. Only the ``"bold"`` query is used; other
        queries (``t1w``, ``fmap``, ...) are ignored. Each value is a string, a
        non-negative integer, ``null`` ("entity absent"), ``"*"`` ("any value") or a
        non-empty list of those. Index entities (``run``, ``echo``, ``chunk``) compare
        numerically: ``1``, ``"1"`` and ``"01"`` all select ``run-1`` and ``run-01``.
    source : str or None, optional
        Name of the document for messages (default: the path, or ``bids_filters``).

    Returns
    -------
    dict of str to list
        Long entity name -> allowed values (str, None or :data:`ANY`); the fixed keys
        ``suffix``, ``desc``, ``extension``, ``datatype`` and ``scope`` are kept as given.

    Raises
    ------
    QueryError
        If the file is unreadable, the document malformed, a key unknown or a value of
        another type (an object such as ``{"$gt": 1}``, a float, a boolean, a nested
        list); the message names the file, query, entity and value.
    """
    if bids_filters is None:
        return {}
    if isinstance(bids_filters, (str, Path)):
        source = source or str(bids_filters)
        bids_filters = read_json(bids_filters, "BIDS filter file")
    source = source or "bids_filters"
    if not isinstance(bids_filters, Mapping):
        raise QueryError(
            f"{source} must be a JSON object keyed by query name, e.g. {{'bold': {{}}}}."
        )
    ignored = sorted(str(key) for key in set(bids_filters) - {"bold"})
    if ignored:
        logger.debug("BIDS filters: ignoring queries %s (only 'bold' applies)", ignored)
    bold = bids_filters.get("bold", {})
    if not isinstance(bold, Mapping):
        raise QueryError(f"{source}: the 'bold' query must be an object of entity filters.")
    filters: dict[str, list[Any]] = {}
    for key, value in bold.items():
        name = _filter_key(key, source)
        values = value if isinstance(value, list) else [value]
        if not values:
            raise QueryError(f"{source}: 'bold' query, {key}: an empty list selects nothing.")
        filters[name] = [_filter_value(item, key, value, source) for item in values]
    return filters


def _filter_key(key: Any, source: str) -> str:
    """Map a filter key to a pybids entity name, rejecting unknown ones."""
    name = _LONG_NAMES.get(key, key) if isinstance(key, str) else key
    known = set(BOLD_ENTITIES) | set(FIXED_FILTERS) | {"scope"}
    if name not in known:
        raise QueryError(
            f"{source}: unknown entity {key!r} in the 'bold' query; use one of "
            f"{', '.join(sorted(known - {'scope'}))}."
        )
    return name


def _filter_value(item: Any, key: str, value: Any, source: str) -> Any:
    """Check one filter value: str, int >= 0, None or "*"; ints become strings."""
    name = _LONG_NAMES.get(key, key)
    if item is None or item == ANY:
        return item
    if isinstance(item, str):
        if name in FIXED_FILTERS or name == "scope" or LABEL_RE.fullmatch(item):
            return item
        problem = "labels contain only letters and digits"
    elif isinstance(item, int) and not isinstance(item, bool) and item >= 0:
        return str(item)
    elif isinstance(item, bool):
        problem = "a boolean is not an entity value"
    elif isinstance(item, float):
        problem = "a number with a fraction is not an entity value"
    elif isinstance(item, int):
        problem = "a negative number is not an entity value"
    else:
        problem = 'expected a string, an integer, null, "*" or a list of those'
    raise QueryError(
        f"{source}: 'bold' query, entity {key!r} = {json.dumps(value, default=str)[:80]}: "
        f"{problem}."
    )


def matches(entities: Mapping[str, str], filters: Mapping[str, list[Any]]) -> bool:
    """Whether file-name entities pass every entity filter."""
    for key, allowed in filters.items():
        value = entities.get(key)
        ok = False
        for item in allowed:
            if item is None:
                ok = value is None
            elif item == ANY:
                ok = value is not None
            elif value is not None:
                ok = index_value(key, value) == index_value(key, item)
            if ok:
                break
        if not ok:
            return False
    return True


def merge_fixed_filters(filters: dict[str, list[Any]], space: str) -> dict[str, list[Any]]:
    """Check user filters against what find_runs fixes; return the remaining ones."""
    remaining = dict(filters)
    remaining.pop("scope", None)
    for key, allowed in FIXED_FILTERS.items():
        if key not in remaining:
            continue
        values = remaining.pop(key)
        if not all(isinstance(v, str) and v in allowed for v in values):
            raise QueryError(
                f"BIDS filter {key}={values!r} conflicts with the preprocessed BOLD "
                f"query ({key} must be one of {sorted(allowed)}); remove it."
            )
        if key == "extension":  # the one fixed key a filter may narrow
            remaining[key] = ["." + v.lstrip(".") for v in values]
    if "space" in remaining:
        values = remaining.pop("space")
        if values != [space]:
            raise QueryError(
                f"BIDS filter space={values!r} conflicts with space={space!r}; "
                "choose the space with the space option instead."
            )
    return remaining
