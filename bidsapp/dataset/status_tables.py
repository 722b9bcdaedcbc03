"""Per-subject run status tables (``logs/sub-<s>_status.tsv``): merge, repair and read.

Part of the dataset layer. The participant level merges one row per run, atlas and
denoising label under a lock (a damaged table is repaired, its good rows kept); the group
level and the reports read them back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat as stat_module
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from bidsapp.dataset.fileio import LinkedPathError, ensure_directory, read_regular_bytes
from bidsapp.dataset.locking import locked
from bidsapp.dataset.naming import (
    DROPPED_ENTITIES,
    ENTITY_ALIASES,
    INDEX_ENTITIES,
    INDEX_RE,
    LABEL_RE,
    RUN_KEY_ENTITIES,
    RUN_NAME_ENTITIES,
    check_label,
    is_missing,
)
from bidsapp.dataset.tsvio import atomic_write_tsv

logger = logging.getLogger(__name__)


#: Entity columns every status table has: those naming a run (other entities of a run, and
#: ``chunk``, which the table's fixed columns predate, become extra columns when present).
_STATUS_ENTITY_COLUMNS: tuple[str, ...] = tuple(k for k in RUN_NAME_ENTITIES if k != "chunk")
#: Columns of the per-subject run status table, in file order.
STATUS_COLUMNS: tuple[str, ...] = (
    *_STATUS_ENTITY_COLUMNS,
    "space",
    "cohort",
    "res",
    "den",
    "atlas",
    "stat",
    "denoise",
    "status",
    "reason",
    "volumes_total",
    "volumes_kept",
    "mean_fd",
    "regions_below_coverage",
    "outputs",
)
#: Columns identifying one row: re-running a run replaces the row with the same key. Every
#: entity of the input is part of it, so rows of two resolutions (or parts) never merge.
STATUS_KEY: tuple[str, ...] = (*RUN_KEY_ENTITIES, "atlas", "stat", "denoise")
#: Allowed values of the ``status`` column.
STATUS_VALUES = frozenset({"ok", "failed", "skipped", "excluded"})
_STATUS_INT_COLUMNS = ("volumes_total", "volumes_kept", "regions_below_coverage")
_STATUS_FLOAT_COLUMNS = ("mean_fd",)


# --------------------------------------------------------------------------------------------
# Run status records (group level)
# --------------------------------------------------------------------------------------------


def status_path(output_dir: str | os.PathLike[str], subject: str) -> Path:
    """Return the path of a subject's run status table.

    The table lives in ``logs/``, a directory BIDS declares opaque in derivative datasets:
    the validator accepts it without a ``.bidsignore`` entry.

    Parameters
    ----------
    output_dir : path-like
        Output dataset root.
    subject : str
        Subject label without ``sub-``.

    Returns
    -------
    Path
        ``OUTPUT_DIR/logs/sub-<subject>_status.tsv``.

    """
    return Path(output_dir) / "logs" / f"sub-{check_label(subject, entity='subject')}_status.tsv"


def _status_key(row: Mapping[str, Any]) -> tuple[str, ...]:
    """Row identity: the :data:`STATUS_KEY` values as text ('' when absent)."""
    return tuple("" if is_missing(row.get(k)) else str(row.get(k)) for k in STATUS_KEY)


def _outputs_cell(value: Any, output_dir: Path) -> Any:
    """Join output paths with ';', made relative to the output dataset where inside it."""
    if is_missing(value) or isinstance(value, str):
        return value
    names = []
    for item in value:
        path = Path(item)
        with contextlib.suppress(ValueError):
            path = Path(os.path.abspath(path)).relative_to(os.path.abspath(output_dir))
        names.append(path.as_posix())
    return ";".join(names)


def _normalise_status_row(row: Mapping[str, Any], subject: str, output_dir: Path) -> dict[str, Any]:
    """Check one status row and turn its values into what the table stores."""
    clean = {
        ENTITY_ALIASES.get(k, k): (None if is_missing(v) else v)
        for k, v in row.items()
        if k not in DROPPED_ENTITIES
    }
    if clean.get("subject") is None:
        clean["subject"] = subject
    if str(clean["subject"]) != subject:
        raise ValueError(f"Status row for subject {clean['subject']!r} given for sub-{subject}.")
    if clean.get("status") not in STATUS_VALUES:
        raise ValueError(
            f"Status must be one of {sorted(STATUS_VALUES)}; got {clean.get('status')!r}."
        )
    for key in ("task", "space", "atlas", "denoise"):
        if clean.get(key) is None:
            raise ValueError(f"Status row lacks {key!r}: {dict(row)}.")
    for key in STATUS_KEY:
        if clean.get(key) is not None:
            clean[key] = str(clean[key])
    clean["outputs"] = _outputs_cell(clean.get("outputs"), output_dir)
    return clean


def _empty_status() -> pd.DataFrame:
    """Return a status table without rows."""
    return pd.DataFrame(columns=list(STATUS_COLUMNS), dtype=str)


def _read_status_table(path: Path) -> pd.DataFrame:
    """Read a status table as text cells; no rows when it is missing or a planted link."""
    try:
        raw = read_regular_bytes(path)
    except FileNotFoundError:
        return _empty_status()
    if raw is None:
        return _empty_status()
    return _status_from_bytes(raw)


def _status_cells(raw: bytes) -> tuple[list[str], list[list[str | None]]]:
    """Split a status table's bytes into today's column names and text cells (None: n/a).

    Plain string splitting: pandas costs ~5 ms a table, which the group level pays per
    subject. A line with another number of cells than the header is an error.
    """
    text = raw.decode("utf-8")
    if not text.strip():
        raise ValueError("the status table is empty")
    lines = text.split("\n")
    # Canonical entity names (an older table may say 'resolution').
    header = [ENTITY_ALIASES.get(c, c) for c in lines[0].split("\t")]
    rows: list[list[str | None]] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line and number == len(lines):  # the last line's newline
            continue
        cells: list[str | None] = [None if c == "n/a" else c for c in line.split("\t")]
        if len(cells) != len(header):
            raise ValueError(f"line {number} has {len(cells)} field(s), the header {len(header)}")
        rows.append(cells)
    if "status" in header:  # legacy 'skipped' rows were complete runs found again: 'ok'
        column = header.index("status")
        for cells in rows:
            if cells[column] == "skipped":
                cells[column] = "ok"
    return header, rows


def _status_from_bytes(raw: bytes) -> pd.DataFrame:
    """Parse a status table's bytes as text cells, with today's column names and statuses."""
    header, rows = _status_cells(raw)
    return pd.DataFrame(rows, columns=header, dtype=object)


def _number_cell(value: str | None, column: str, kind: type) -> int | float | None:
    """Read a count (``int``) or measure (``float``) cell of a status row (ValueError if none)."""
    if value is None:
        return None
    number = float(value)
    if kind is float:
        return number
    if not number.is_integer():
        raise ValueError(f"{column} {value!r} is not a whole number")
    return int(number)


def status_rows(raw: bytes) -> list[dict[str, Any]]:
    """Parse a subject's status table into rows, without pandas (the group level's reader).

    Parameters
    ----------
    raw : bytes
        The content of ``logs/sub-<label>_status.tsv``.

    Returns
    -------
    list of dict
        One dict per row: every :data:`STATUS_COLUMNS` key (None when missing), then any
        extra column; counts as ``int``, ``mean_fd`` as ``float``, the rest as text.

    Raises
    ------
    ValueError
        If a line has another number of cells than the header, or a count or ``mean_fd``
        cell is not a number.
    """
    header, cells = _status_cells(raw)
    rows = []
    for values in cells:
        row: dict[str, Any] = dict.fromkeys(STATUS_COLUMNS)
        row.update(zip(header, values, strict=True))
        for column in _STATUS_INT_COLUMNS:
            row[column] = _number_cell(row[column], column, int)
        for column in _STATUS_FLOAT_COLUMNS:
            row[column] = _number_cell(row[column], column, float)
        rows.append(row)
    return rows


#: Columns without which a status row says nothing usable.
_STATUS_REQUIRED: tuple[str, ...] = ("subject", "task", "space", "atlas", "denoise", "status")


def _status_row_problem(row: Mapping[str, Any], subject: str) -> str | None:
    """Say why a row read back from a status table cannot be trusted, or None."""
    if row.get("subject") != subject:
        return f"is for subject {row.get('subject')!r}, not {subject!r}"
    if row.get("status") not in STATUS_VALUES:
        return f"has status {row.get('status')!r}"
    for key in (*RUN_KEY_ENTITIES, "atlas"):  # stat and denoise are free text
        value = row.get(key)
        pattern = INDEX_RE if key in INDEX_ENTITIES else LABEL_RE
        if value is not None and not pattern.fullmatch(value):
            return f"has {key} {value!r}, which is not a BIDS label"
    for key in _STATUS_REQUIRED:
        if row.get(key) is None:
            return f"has no {key}"
    for key in _STATUS_INT_COLUMNS:
        if row.get(key) is not None and not INDEX_RE.fullmatch(row[key]):
            return f"has {key} {row[key]!r}, which is not a count"
    for key in _STATUS_FLOAT_COLUMNS:
        try:
            float(row[key] if row.get(key) is not None else "nan")
        except ValueError:
            return f"has {key} {row[key]!r}, which is not a number"
    return None


def _trusted_status_rows(raw: bytes, subject: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Parse a status table strictly: the rows that can be trusted, and what is wrong.

    A table is damaged by a writer killed by an older version, a full disk, a copy that
    stopped or a user's edit. pandas would fill a short row with NaN or read binary junk as
    text, and the merge would carry that garbage on; here each row is checked on its own, so
    the good rows of a damaged table survive and the others are dropped (and reported).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return [], [f"it is not UTF-8 text (byte {err.start})"]
    lines = text.split("\n")
    problems = [] if lines[-1] == "" else [f"line {len(lines)} is cut short"]
    lines = lines[:-1]
    if not lines:
        return [], problems or ["it is empty"]
    header = [ENTITY_ALIASES.get(c, c) for c in lines[0].split("\t")]
    missing = [c for c in _STATUS_REQUIRED if c not in header]
    if missing or len(set(header)) != len(header):
        what = f"lacks the column(s) {missing}" if missing else "repeats a column"
        return [], [*problems, f"its header {what}"]
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        if len(cells) != len(header):
            problems.append(f"line {number} has {len(cells)} field(s), the header {len(header)}")
            continue
        row = {k: (None if v == "n/a" else v) for k, v in zip(header, cells, strict=True)}
        if row.get("status") == "skipped":  # legacy: a complete run found again
            row["status"] = "ok"
        problem = _status_row_problem(row, subject)
        if problem is not None:
            problems.append(f"line {number} {problem}")
            continue
        rows.append(row)
    return rows, problems


def _read_status_rows(path: Path, subject: str) -> list[dict[str, Any]]:
    """Trusted rows of an existing status table as dicts of text values (None when missing).

    A damaged table is reported (one warning naming the file) and its bad rows dropped, so
    the caller rewrites it from its good rows and what it knows now.
    """
    try:
        raw = read_regular_bytes(path)
    except FileNotFoundError:
        return []
    if raw is None:  # a link or a folder: read_regular_bytes has said so; nothing is read
        return []
    rows, problems = _trusted_status_rows(raw, subject)
    if problems:
        more = f"; and {len(problems) - 3} more" if problems[3:] else ""
        shown = "; ".join(problems[:3]) + more
        logger.warning(
            "Repairing %s: it cannot be trusted (%s); rewriting it from its %d readable row(s) "
            "and the runs of this invocation",
            path,
            shown,
            len(rows),
        )
    return rows


def _clear_status_path(path: Path) -> None:
    """Make room for the status table: remove an empty folder in its place, refuse others.

    The atomic rename replaces a file or a planted link, but not a folder. bidsapp never
    makes one there; an empty one holds nothing of anyone's, but a non-empty one may hold a
    user's files, so it is left alone and the table is not written.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat_module.S_ISDIR(info.st_mode):
        return
    try:
        os.rmdir(path)
    except OSError as err:
        raise LinkedPathError(
            f"{path} is a folder where bidsapp keeps a status table, and it cannot be removed "
            f"({err.strerror or err}); move it away and run again"
        ) from err
    logger.warning("Removed the empty folder %s, where bidsapp keeps a status table", path)


def write_subject_status(
    output_dir: str | os.PathLike[str], subject: str, rows: Iterable[Mapping[str, Any]]
) -> Path:
    """Merge run status rows into a subject's status table.

    A row replaces the existing row with the same :data:`STATUS_KEY` (entities, space, atlas,
    statistic, denoise label); other rows are kept. The merge runs under a file lock and the
    table is written atomically, so concurrent processes working on one subject lose no row.

    Parameters
    ----------
    output_dir : path-like
        Output dataset root.
    subject : str
        Subject label without ``sub-``.
    rows : iterable of mapping
        One mapping per run, atlas and denoise label with keys from :data:`STATUS_COLUMNS`:
        pybids entity names (any spelling of :data:`~bidsapp.dataset.naming.ENTITY_ALIASES`;
        stored under the canonical name), ``space``, ``atlas``, ``denoise``, ``status`` (``ok``,
        ``failed``, ``excluded``; ``skipped`` from older versions reads back as ``ok``),
        ``reason``, ``volumes_total``, ``volumes_kept``, ``mean_fd`` (mm),
        ``regions_below_coverage``, ``stat`` (extraction statistic) and ``outputs`` (a sequence
        of paths, stored relative to ``output_dir`` and joined with ``;``, or a string kept as
        is). Keys in :data:`~bidsapp.dataset.naming.DROPPED_ENTITIES` are ignored (they name no
        output); other extra keys become extra columns.

    Returns
    -------
    Path
        The status table path (:func:`status_path`).

    An existing table that is damaged (not UTF-8, cut short, wrong columns, rows with
    values bidsapp never writes) is repaired: its good rows are kept, the others dropped, and
    a warning names the file. An empty folder in its place is removed.

    Raises
    ------
    ValueError
        For a row of another subject, an unknown status, or a row lacking ``task``,
        ``space``, ``atlas`` or ``denoise``.
    LinkedPathError
        If ``logs/`` is a symbolic link, or a folder that is not empty sits where the table
        goes (the message names it; nothing is written).

    """
    path = status_path(output_dir, subject)
    new = [_normalise_status_row(row, subject, Path(output_dir)) for row in rows]
    ensure_directory(output_dir, "logs")
    with locked(path):
        merged = {_status_key(row): row for row in _read_status_rows(path, subject)}
        _clear_status_path(path)
        merged.update({_status_key(row): row for row in new})
        ordered = [merged[key] for key in sorted(merged)]
        atomic_write_tsv(path, _typed_status(pd.DataFrame(ordered)))
    return path


def _typed_status(table: pd.DataFrame) -> pd.DataFrame:
    """Status table with canonical columns first (extras sorted after) and typed counts."""
    extras = sorted(c for c in table.columns if c not in STATUS_COLUMNS)
    table = table.reindex(columns=[*STATUS_COLUMNS, *extras])
    for column in _STATUS_INT_COLUMNS:
        table[column] = pd.to_numeric(table[column]).astype("Int64")
    for column in _STATUS_FLOAT_COLUMNS:
        table[column] = pd.to_numeric(table[column]).astype(float)
    return table


def read_subject_status(output_dir: str | os.PathLike[str], subject: str) -> pd.DataFrame:
    """Read a subject's run status table.

    Parameters
    ----------
    output_dir : path-like
        Output dataset root.
    subject : str
        Subject label without ``sub-``.

    Returns
    -------
    pandas.DataFrame
        One row per run, atlas and denoise label; entity columns as text (``"01"`` stays
        ``"01"``), counts as nullable integers, ``mean_fd`` as float. Empty (with the
        :data:`STATUS_COLUMNS`) when the subject has no table.

    """
    return _typed_status(_read_status_table(status_path(output_dir, subject)))


def read_all_status(output_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and concatenate the status tables of every subject (for the group level).

    Parameters
    ----------
    output_dir : path-like
        Output dataset root.

    Returns
    -------
    pandas.DataFrame
        All rows, subjects in sorted order; empty with :data:`STATUS_COLUMNS` when none.

    """
    paths = sorted((Path(output_dir) / "logs").glob("sub-*_status.tsv"))
    tables = [_read_status_table(path) for path in paths] or [_empty_status()]
    return _typed_status(pd.concat(tables, ignore_index=True))
