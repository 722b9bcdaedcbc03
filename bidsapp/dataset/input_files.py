"""Reading files of the input dataset safely: small JSON documents and file checks.

Part of the dataset layer (no pybids). The input dataset is read-only and may hold anything:
a FIFO or a device where a JSON file should be, a dangling DataLad link, a huge or garbled
file. :func:`read_json` refuses each with one line naming the file (:class:`QueryError`),
and never hangs; :func:`regular_file_problem` says why a path cannot be read as a file.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from bidsapp.errors import BidsappError

# Real BIDS sidecars and filter files are kilobytes; anything this large is not one.
_MAX_JSON_BYTES = 64 * 2**20


class QueryError(BidsappError, ValueError):
    """The derivatives folder or the query arguments cannot be used."""


# ------------------------------------------------------------------ JSON files


def read_json(path: str | Path, what: str) -> Any:
    """Read a small JSON document, refusing anything but a regular, readable UTF-8 file.

    The file's type is checked before it is opened, and it is opened non-blocking, so a
    FIFO or a device in its place never hangs the caller.

    Parameters
    ----------
    path : str or pathlib.Path
        The file.
    what : str
        What it is, for messages (e.g. ``"BIDS filter file"``).

    Returns
    -------
    object
        The parsed document.

    Raises
    ------
    QueryError
        One line naming the file: missing (or a dangling link), not a regular file,
        larger than 64 MiB, unreadable, not UTF-8, not JSON, or nested too deeply.
    """
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        broken = f" ({dangling(path)})" if path.is_symlink() else ""
        raise QueryError(f"{what} {path} does not exist{broken}") from None
    except OSError as err:
        raise QueryError(f"{what} {path} cannot be read ({err.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise QueryError(f"{what} {path} is not a regular file ({file_kind(info.st_mode)})")
    if info.st_size > _MAX_JSON_BYTES:
        raise QueryError(f"{what} {path} is {info.st_size} bytes: too large for a JSON file")
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(descriptor, "rb") as stream:
            if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):  # replaced meanwhile
                raise QueryError(f"{what} {path} is not a regular file")
            raw = stream.read(_MAX_JSON_BYTES + 1)
    except OSError as err:
        raise QueryError(f"{what} {path} cannot be read ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise QueryError(
            f"{what} {path} is not UTF-8 text ({err.reason} at byte {err.start})"
        ) from None
    try:
        return json.loads(text)
    except ValueError as err:  # JSONDecodeError, or an integer of more than 4300 digits
        raise QueryError(f"{what} {path} is not valid JSON ({err})") from None
    except RecursionError:
        raise QueryError(f"{what} {path} is nested too deeply to be read") from None


def file_kind(mode: int) -> str:
    """Name the type of a non-regular file."""
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def dangling(path: Path) -> str:
    """Describe a dangling link; DataLad datasets hold files not yet fetched as such links."""
    try:
        target = os.readlink(path)
    except OSError:
        target = ""
    if "annex/objects" in target:
        return "a dangling symbolic link into git-annex (not retrieved: run `datalad get` on it)"
    return "a dangling symbolic link"


def regular_file_problem(path: Path, what: str) -> str | None:
    """Say why ``path`` cannot be read as a file (missing, dangling link, FIFO...); else None."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if path.is_symlink():
            return f"{path}: the {what} is {dangling(path)}"
        return f"{path}: the {what} does not exist"
    except OSError as err:
        return f"{path}: the {what} cannot be read ({err.strerror})"
    if not stat.S_ISREG(info.st_mode):
        return f"{path}: the {what} is {file_kind(info.st_mode)}, not a regular file"
    return None
