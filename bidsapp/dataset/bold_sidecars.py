"""BOLD sidecars of the input dataset: BIDS inheritance and the repetition time.

Part of the dataset layer. Each selected run's ``*_bold.json`` files are found and merged
following BIDS inheritance and read here (pybids indexes names only), so a malformed JSON
file fails only the runs that use it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from bidsapp.dataset.input_files import QueryError, read_json
from bidsapp.dataset.naming import ParsedName, parse_name

#: Plausible repetition times (s): below, no fMRI sequence; above, a value in milliseconds
#: or a typo (sparse-sampling designs stay under 30 s).
TR_RANGE_S = (0.05, 30.0)


# ------------------------------------------------------------------ sidecars


def check_repetition_time(value: Any, source: str) -> float:
    """Return a ``RepetitionTime`` in seconds, or raise naming its source.

    Parameters
    ----------
    value : object
        The value as read (JSON number expected).
    source : str
        Where it comes from, for the message (e.g. a sidecar path).

    Returns
    -------
    float
        The repetition time (s), within :data:`TR_RANGE_S`.

    Raises
    ------
    QueryError
        For a boolean, a string or another non-number, a non-finite or non-positive
        number, or one outside :data:`TR_RANGE_S` (a value above 30 that is a plausible
        number of milliseconds is said to look like milliseconds).
    """
    low, high = TR_RANGE_S
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise QueryError(
            f"{source}: RepetitionTime={json.dumps(value, default=str)[:40]} is not a number "
            "of seconds (a JSON number such as 2.0 is expected)"
        )
    try:
        t_r = float(value)
    except OverflowError:  # an integer beyond any float
        t_r = math.inf
    if not math.isfinite(t_r) or t_r <= 0:
        raise QueryError(f"{source}: RepetitionTime={value!r} is not a positive number of seconds")
    if t_r > high and low * 1000 <= t_r <= high * 1000:
        raise QueryError(
            f"{source}: RepetitionTime={value!r} looks like milliseconds; BIDS wants seconds "
            f"({t_r / 1000:g})"
        )
    if not low <= t_r <= high:
        raise QueryError(
            f"{source}: RepetitionTime={value!r} s is outside the plausible range "
            f"{low:g}-{high:g} s"
        )
    return t_r


def _applicable_sidecars(
    bold: ParsedName, root: Path, listings: dict[Path, list[str]]
) -> list[tuple[int, Path]]:
    """BIDS inheritance: ``*_bold.json`` files at or above the BOLD whose entities it has.

    Returns (depth, path) pairs ordered from the least to the most specific (top folder
    first, fewer entities first), the order in which their keys are merged.
    """
    own = set(bold.pairs)
    found = []
    folder = bold.path.parent
    depth = 0
    while True:
        if folder not in listings:
            try:
                with os.scandir(folder) as entries:
                    listings[folder] = sorted(e.name for e in entries if e.name.endswith(".json"))
            except OSError:
                listings[folder] = []
        for file_name in listings[folder]:
            candidate = parse_name(folder / file_name)
            if (
                candidate.extension == ".json"
                and candidate.suffix == bold.suffix
                and candidate.error is None
                and set(candidate.pairs) <= own
            ):
                found.append((depth, len(candidate.pairs), candidate.path))
        if folder == root or root not in folder.parents:
            break
        folder = folder.parent
        depth += 1
    found.sort(key=lambda item: (-item[0], item[1], str(item[2])))
    return [(depth, path) for depth, _, path in found]


def read_bold_sidecar(
    bold: ParsedName, root: Path, listings: dict[Path, list[str]]
) -> tuple[float | None, Path | None, str | None]:
    """Return (RepetitionTime, its sidecar, problem) for one BOLD image."""
    applicable = _applicable_sidecars(bold, root, listings)
    merged: dict[str, Any] = {}
    origin: dict[str, Path] = {}
    entities_at: dict[tuple[int, int], list[Path]] = {}
    for depth, path in applicable:
        entities_at.setdefault((depth, len(parse_name(path).pairs)), []).append(path)
    for paths in entities_at.values():
        if len(paths) > 1:
            return (
                None,
                None,
                (
                    f"{bold.path}: several sidecars apply at one level "
                    f"({', '.join(map(str, paths))}); "
                    "BIDS inheritance cannot choose between them"
                ),
            )
    for _, path in applicable:
        try:
            document = read_json(path, "The BOLD sidecar")
        except QueryError as err:
            return None, path, " ".join(str(err).split())
        if not isinstance(document, dict):
            return None, path, f"The BOLD sidecar {path} is not a JSON object"
        for key, value in document.items():
            merged[key] = value
            origin[key] = path
    sidecar = origin.get("RepetitionTime") or (applicable[-1][1] if applicable else None)
    if "RepetitionTime" not in merged or merged["RepetitionTime"] is None:
        return None, sidecar, None
    try:
        return check_repetition_time(merged["RepetitionTime"], str(sidecar)), sidecar, None
    except QueryError as err:
        return None, sidecar, str(err)
