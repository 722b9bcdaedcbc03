"""One command-line invocation of the app: signals and a leaving stdout reader become exit codes.

Part of the app layer, between the CLI (which only parses) and :func:`bidsapp.app.workflow.run`:
SIGTERM is raised as :class:`Terminated` so that it unwinds through the atomic writers and the
subject locks; a stdout reader that leaves (``| head``) never stops the runs; a usage problem,
SIGTERM and SIGINT each end with one line on stderr and their exit code.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
from collections.abc import Iterator

from bidsapp.app.config import RunConfig
from bidsapp.app.progress import progress
from bidsapp.app.status import EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE


class Terminated(BaseException):
    """SIGTERM arrived; a ``BaseException`` so that no run's error handling records it."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` for the duration of the block.

    Python's default is to die at once, which skips every ``finally``: hidden temporary
    files stay behind and the summary never says what was left undone. Raised instead, the
    exception unwinds through the atomic writers (which remove their temporary files) and the
    subject lock. Only the main thread may install handlers; elsewhere nothing changes.
    """
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _StdoutReaderGone(io.TextIOBase):
    """``sys.stdout`` whose reader may leave (``bidsapp ... | head -1``) without harm.

    Progress lines are for the reader; the runs' product is on disk. When the pipe closes,
    ``print`` would raise ``BrokenPipeError`` in the middle of the loop that records the
    runs, losing the status table of runs already done. Instead, output is dropped from
    then on and the runs finish.
    """

    def __init__(self, stream: io.TextIOBase) -> None:
        self._stream = stream
        self._gone = False

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._drop()

    def _drop(self) -> None:
        self._gone = True
        # The interpreter flushes the real stdout at exit; pointed at the null device, that
        # flush cannot print "Exception ignored ... BrokenPipeError" either.
        try:
            fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError):
            return
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return not self._gone and self._stream.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", "utf-8")


@contextlib.contextmanager
def stdout_reader_may_leave() -> Iterator[None]:
    """Wrap ``sys.stdout`` in :class:`_StdoutReaderGone` for the duration of the block."""
    previous = sys.stdout
    sys.stdout = _StdoutReaderGone(previous)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        sys.stdout = previous


def run_command(config: RunConfig) -> int:
    """Run one invocation as the command line does, returning its exit code.

    Parameters
    ----------
    config : RunConfig
        The invocation's settings.

    Returns
    -------
    int
        The exit code: 0 success, 1 some run failed (or nothing to do), 2 usage problem,
        130 stopped by SIGINT, 143 stopped by SIGTERM.
    """
    from bidsapp.app.checks import UsageProblem
    from bidsapp.app.workflow import run

    try:
        with sigterm_raises(), stdout_reader_may_leave():
            return run(config)
    except UsageProblem as err:
        progress.error(f"bidsapp: error: {err}")
        return EXIT_USAGE
    except Terminated:
        progress.error(
            "bidsapp: stopped by SIGTERM; finished runs are kept, the same command does the rest"
        )
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        # Like SIGTERM: the exception has unwound through the atomic writers and the
        # subject locks, so one line says what happened instead of a traceback.
        progress.error(
            "bidsapp: stopped by SIGINT; finished runs are kept, the same command does the rest"
        )
        return EXIT_INTERRUPTED
