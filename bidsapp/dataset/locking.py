"""Cross-process locks on output files: merges under ``flock`` and the per-subject lock.

Part of the dataset layer. One process at a time writes a subject (:class:`SubjectLock`);
read-merge-write updates of shared files (status tables, ``.bidsignore``) run under
:func:`locked`. Lock files are opened without following a symbolic link.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat as stat_module
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bidsapp.dataset.fileio import LinkedPathError, ensure_directory, host_label
from bidsapp.dataset.naming import check_label

try:  # POSIX only; on other platforms merges are not protected against concurrent writers.
    import fcntl
except ImportError:  # pragma: no cover - exercised on Windows only
    fcntl = None

logger = logging.getLogger(__name__)


def _open_lock_file(path: Path) -> int:
    """Open (creating) a lock file without following a symbolic link; return its fd.

    A link planted at ``path`` is removed (bidsapp never makes one), so the lock is never
    taken on, nor creates, the file it points to.
    """
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(3):
        try:
            fd = os.open(path, flags, 0o666)
        except OSError:
            if not os.path.islink(path):
                raise
            logger.warning("Removing %s: a symbolic link where bidsapp keeps a lock file", path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            continue
        if not stat_module.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise LinkedPathError(f"{path} is not a regular file; remove it")
        return fd
    raise LinkedPathError(f"{path} keeps being replaced by a symbolic link; remove it")


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock for a read-merge-write of ``path`` across processes.

    The lock is a hidden sibling file (left in place: deleting it would race with a waiting
    process). ``flock`` works on local file systems and on NFS (Linux maps it to POSIX locks).
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_lock_file(path.with_name(f".{path.name.lstrip('.')}.lock"))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class SubjectLock:
    """An exclusive, cross-process lock on one subject's outputs (``logs/.sub-<s>.lock``).

    One invocation holds it while it checks, writes or removes that subject's run outputs,
    status table and report, so two jobs with different options can never leave files of
    two configurations side by side. The lock file holds the holder's pid and host; a second
    invocation prints that it waits, and for whom, then proceeds when the lock is released
    (``flock`` is released by the kernel when the holder dies, even by ``kill -9``). Take
    several subjects' locks in sorted order, so two invocations never deadlock.

    Parameters
    ----------
    output_dir : path-like
        Output dataset root.
    subject : str
        Subject label without ``sub-``.
    announce : callable, optional
        Called with a message when the lock is busy (default: print it).

    """

    def __init__(
        self, output_dir: str | os.PathLike[str], subject: str, announce: Any = None
    ) -> None:
        self.output_dir = Path(output_dir)
        self.subject = check_label(subject, entity="subject")
        self.path = self.output_dir / "logs" / f".sub-{self.subject}.lock"
        self._announce = announce or logging.getLogger("bidsapp.progress").info
        self._fd: int | None = None

    def acquire(self) -> SubjectLock:
        """Take the lock, waiting (with a message) while another process holds it.

        Returns
        -------
        SubjectLock
            ``self``.

        Raises
        ------
        LinkedPathError
            If ``logs/`` is a symbolic link or the lock path is not a regular file.

        """
        ensure_directory(self.output_dir, "logs")
        fd = _open_lock_file(self.path)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 256, 0).decode("utf-8", "replace").strip() or "unknown"
                self._announce(
                    f"waiting for sub-{self.subject}: another bidsapp ({holder}) is writing "
                    f"it (lock {self.path})"
                )
                fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {host_label()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> SubjectLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
