"""Crash-safe file I/O inside the output dataset: atomic writes, no-follow reads, folders.

Part of the dataset layer. Every file is written to a hidden temporary file in the
destination directory, flushed to disk and renamed over the destination, so a reader (or a
resumed run) never sees a partial file (:func:`atomic_write_bytes`, :func:`atomic_write_set`
for a set written as one). Nothing is read, written or created through a symbolic link
bidsapp did not make inside the output dataset (:func:`read_regular_bytes`,
:func:`ensure_directory`); a planted link is ignored and replaced by the atomic rename.
Temporary files of killed writers are removed (:func:`remove_stale_temp_files`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import secrets
import stat as stat_module
from collections.abc import Iterable, Mapping
from pathlib import Path

from bidsapp.errors import BidsappError

logger = logging.getLogger(__name__)


#: Hidden temporary files: ``.<name>.<host>.<pid>.<token>.tmp`` (older versions wrote
#: ``.<name>.<pid>.<token>.tmp``). The host and pid tell a later run whether the writer is
#: dead, so its leftovers can be removed safely (:func:`remove_stale_temp_files`).
_TEMP_RE = re.compile(
    r"^\.(?P<name>.+?)(?:\.(?P<host>[A-Za-z0-9-]+))?\.(?P<pid>[0-9]+)\.[0-9a-f]{8}\.tmp$"
)
#: Leftover temporary files older than this are removed whoever wrote them (seconds).
STALE_TEMP_SECONDS = 3600.0


def host_label() -> str:
    """Return the host name as a label usable inside a temporary file name."""
    import socket

    return re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname()) or "host"


def _temp_path(path: Path) -> Path:
    """Hidden, unique sibling of ``path``: ignored by pybids and the validator if left over."""
    return path.with_name(f".{path.name}.{host_label()}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _pid_alive(pid: int) -> bool:
    """Tell whether a process of this machine with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_temp_files(
    directory: str | os.PathLike[str], *, recursive: bool = False, any_writer: bool = False
) -> list[Path]:
    """Remove hidden temporary files left in ``directory`` by killed writers.

    A temporary file is removed when ``any_writer`` is True (the caller holds the lock that
    every writer of this folder holds, e.g. the subject lock), when its writer ran on this
    host and its process no longer exists, or when it is older than
    :data:`STALE_TEMP_SECONDS`. A file of a live writer is never removed otherwise. Symbolic
    links are never followed (a link named like a temporary file is removed, not its target).

    Parameters
    ----------
    directory : path-like
        Folder to clean; nothing happens when it does not exist.
    recursive : bool
        Also clean sub-folders (never entering linked folders).
    any_writer : bool
        Remove every temporary file, whoever wrote it.

    Returns
    -------
    list of Path
        Files removed.

    """
    import time

    root = Path(directory)
    host, now, removed = host_label(), time.time(), []
    try:
        entries = list(os.scandir(root))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    except OSError as err:  # unreadable folder: its leftovers stay, nothing else depends on it
        logger.warning("Cannot look for leftover temporary files in %s: %s", root, err)
        return removed
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if recursive:
                removed += remove_stale_temp_files(
                    entry.path, recursive=True, any_writer=any_writer
                )
            continue
        found = _TEMP_RE.match(entry.name)
        if found is None:
            continue
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_SECONDS
        except FileNotFoundError:
            continue
        dead = found["host"] == host and not _pid_alive(int(found["pid"]))
        if any_writer or old or dead:
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            except OSError as err:  # read-only folder: a hidden leftover harms no reader
                logger.warning("Cannot remove the leftover temporary file %s: %s", entry.path, err)
                continue
            removed.append(Path(entry.path))
            logger.info("Removed %s, left by an interrupted run", entry.path)
    return removed


class LinkedPathError(BidsappError, OSError):
    """A path bidsapp would create or write through is a symbolic link it did not make."""


def ensure_directory(root: str | os.PathLike[str], directory: str | os.PathLike[str]) -> Path:
    """Create ``directory`` (inside ``root``) without going through a symbolic link.

    ``root`` itself may be a link the user made; every folder below it that bidsapp creates
    or uses must be a real directory, so that no file is written outside the dataset.

    Parameters
    ----------
    root : path-like
        The output dataset root (created if missing).
    directory : path-like
        A folder inside ``root`` (absolute, or relative to ``root``).

    Returns
    -------
    Path
        ``directory``.

    Raises
    ------
    LinkedPathError
        If a folder between ``root`` and ``directory`` is a symbolic link or not a folder.
    ValueError
        If ``directory`` is not inside ``root``.

    """
    base = Path(root)
    target = Path(directory) if Path(directory).is_absolute() else base / directory
    relative = Path(os.path.abspath(target)).relative_to(os.path.abspath(base))
    base.mkdir(parents=True, exist_ok=True)
    current = base
    for part in relative.parts:
        current = current / part
        try:
            os.mkdir(current)
        except FileExistsError:
            pass
        info = os.lstat(current)
        if stat_module.S_ISLNK(info.st_mode) or not stat_module.S_ISDIR(info.st_mode):
            kind = "a symbolic link" if stat_module.S_ISLNK(info.st_mode) else "not a folder"
            raise LinkedPathError(
                f"{current} is {kind}: bidsapp writes only into folders it made; remove it"
            )
    return target


def no_linked_folder(root: str | os.PathLike[str], directory: str | os.PathLike[str]) -> bool:
    """Tell whether no folder between ``root`` and ``directory`` is a symbolic link.

    Folders that do not exist yet count as fine; ``root`` itself may be a link.

    Parameters
    ----------
    root : path-like
        The output dataset root.
    directory : path-like
        A folder inside ``root``.

    Returns
    -------
    bool
        False if any existing component below ``root`` is a link or not a folder.

    """
    current = Path(root)
    try:
        relative = Path(os.path.abspath(directory)).relative_to(os.path.abspath(root))
    except ValueError:
        return False
    for part in relative.parts:
        current = current / part
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            return True
        if not stat_module.S_ISDIR(info.st_mode):
            return False
    return True


def read_regular_bytes(path: str | os.PathLike[str]) -> bytes | None:
    """Read a file bidsapp wrote, refusing to follow a symbolic link.

    Parameters
    ----------
    path : path-like
        A file inside the output dataset.

    Returns
    -------
    bytes or None
        Its content; None (with a warning) when ``path`` is a symbolic link or not a regular
        file: such a file was planted, is never read, and is replaced by the next write.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.

    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        if os.path.islink(path):
            logger.warning("Ignoring %s: it is a symbolic link bidsapp did not make", path)
            return None
        raise
    # Checked on the descriptor before wrapping it: a folder opens, but fdopen refuses it.
    if not stat_module.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        logger.warning("Ignoring %s: it is not a regular file", path)
        return None
    with os.fdopen(fd, "rb") as fobj:
        return fobj.read()


def _fsync_directory(directory: Path) -> None:
    """Flush a directory entry so a completed rename survives a power cut (POSIX only)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _stage(path: Path, data: bytes) -> Path:
    """Write ``data`` to a new hidden temporary sibling of ``path``, flushed to disk.

    Returns the temporary file, ready to be renamed over ``path``; on any error it is
    removed and the error raised.
    """
    tmp = _temp_path(path)
    # O_EXCL: never reuse someone else's temporary file; mode 0o666 lets the umask apply.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fobj:
            fobj.write(data)
            fobj.flush()
            os.fsync(fobj.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` so that ``path`` is either absent/old or complete.

    The bytes go to a hidden temporary file in the same directory, are flushed with
    ``fsync`` and then renamed over ``path`` with :func:`os.replace` (atomic on POSIX and
    Windows within one file system). On any error the temporary file is removed and ``path``
    is left as it was. The file gets the usual permissions (``0o666`` minus the umask).

    Parameters
    ----------
    path : path-like
        Destination; missing parent directories are created.
    data : bytes
        Complete file content.

    Returns
    -------
    Path
        The destination path.

    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        tmp = _stage(path, data)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:
            # A full disk or an I/O error (raised by write or fsync) names no file: the
            # message must say which one could not be written.
            exc.filename = str(path)
        if hasattr(exc, "add_note"):
            exc.add_note(f"while writing {path}")
        raise
    _fsync_directory(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> Path:
    """Atomically write text (see :func:`atomic_write_bytes`).

    Parameters
    ----------
    path : path-like
        Destination file.
    text : str
        Complete content; newlines are written as given (no platform translation).
    encoding : str
        Text encoding.

    Returns
    -------
    Path
        The destination path.

    """
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_set(
    files: Mapping[Path, str | bytes], *, remove: Iterable[Path] = ()
) -> list[Path]:
    """Write several files as one set: every file is staged before any is replaced.

    Each content goes to a hidden temporary file beside its destination and is flushed;
    only when all are staged are they renamed over their destinations, then the files of
    ``remove`` (stale members of an older set) are deleted. A failure while staging (full
    disk, a folder where a file goes) removes the temporary files and leaves every
    destination as it was; a rename failing part-way (rare: same folder) removes the whole
    set, so old and new files are never found side by side.

    Parameters
    ----------
    files : mapping of Path to str or bytes
        Destination -> complete content (text is written as UTF-8). Parent folders must
        exist (create them with :func:`ensure_directory`).
    remove : iterable of Path
        Files to delete once the set is in place (missing ones are ignored).

    Returns
    -------
    list of Path
        The destinations, in the order given.

    Raises
    ------
    OSError
        If a file cannot be staged, renamed or removed; ``filename`` names it.

    """
    staged: dict[Path, Path] = {}
    remove = list(remove)
    try:
        for path, content in files.items():
            with contextlib.suppress(FileNotFoundError):
                if stat_module.S_ISDIR(os.lstat(path).st_mode):
                    raise IsADirectoryError(errno.EISDIR, "a folder is in its place", str(path))
            data = content.encode("utf-8") if isinstance(content, str) else content
            staged[Path(path)] = _stage(Path(path), data)
    except BaseException as exc:
        for tmp in staged.values():
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)
        raise
    done: list[Path] = []
    for path, tmp in staged.items():
        try:
            os.replace(tmp, path)
        except OSError:
            for other in [*files, *staged.values(), *remove]:  # no mix: none of the set stays
                with contextlib.suppress(OSError):
                    os.unlink(other)
            raise
        done.append(path)
    for path in remove:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    for folder in {p.parent for p in done}:
        _fsync_directory(folder)
    return done


def write_if_changed(path: Path, text: str) -> bool:
    """Atomically write ``text`` unless ``path`` already holds exactly that text."""
    try:
        if read_regular_bytes(path) == text.encode("utf-8"):
            logger.debug("%s is up to date", path)
            return False
    except FileNotFoundError:
        pass
    atomic_write_text(path, text)  # the rename replaces a planted link, never its target
    return True


def sha256_digest(data: bytes) -> str:
    """Return ``sha256:<hex>`` of ``data``: how ``OutputFiles`` records each file of a set.

    Parameters
    ----------
    data : bytes
        A file's content.

    Returns
    -------
    str
        The digest, prefixed with its algorithm.
    """
    return "sha256:" + hashlib.sha256(data).hexdigest()
