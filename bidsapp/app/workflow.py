"""run(config): one bidsapp invocation, participant or group level.

The app layer's entry point (called by the CLI and :func:`bidsapp.run`): it prepares the work
directory and matplotlib's cache, then hands over to the participant or group level.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bidsapp.app.checks import UsageProblem
from bidsapp.app.config import RunConfig

logger = logging.getLogger(__name__)


def _matplotlib_dir(config: RunConfig) -> None:
    """Give matplotlib (reports) a writable cache in --work-dir or a temporary directory.

    Nothing happens when ``MPLCONFIGDIR`` is set or reports are off. Without --work-dir
    and without any writable temporary directory, reports fail with a warning.
    """
    if not config.reports or os.environ.get("MPLCONFIGDIR"):
        return
    if config.work_dir is not None:
        folder = config.work_dir / "matplotlib"
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["MPLCONFIGDIR"] = str(folder)
        return
    try:
        folder = Path(tempfile.mkdtemp(prefix="bidsapp-mpl-"))
    except OSError:
        logger.warning("No writable temporary directory: pass --work-dir for the reports")
        return
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["MPLCONFIGDIR"] = str(folder)


def _n_cpus() -> int:
    """CPUs this process may run on (all of the machine's where that is not known)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextlib.contextmanager
def _font_cache_built_aside(config: RunConfig) -> Iterator[None]:
    """Build matplotlib's font list in a child process while the participant level runs.

    A new cache folder (the temporary one, or a new --work-dir) has no font list, and
    matplotlib's first import then parses every font it ships (0.2-0.4 s), on the report's
    path. A child process (``import matplotlib.font_manager``) writes the list on another
    CPU while the runs are extracted, and the report reads it. matplotlib locks the file
    while writing it and rebuilds the list from the fonts should it read an incomplete one,
    so a report that starts first only does the work itself. Nothing is started when the
    list exists, with reports off, at the group level or on one CPU. The child is waited
    for (then ended) before returning.
    """
    folder = os.environ.get("MPLCONFIGDIR")
    child = None
    if (
        config.reports
        and config.analysis_level == "participant"
        and folder
        and os.path.isdir(folder)
        and sys.executable
        and _n_cpus() > 1
        and not any(Path(folder).glob("fontlist-v*.json"))
    ):
        try:
            child = subprocess.Popen(
                [sys.executable, "-c", "import matplotlib.font_manager"],
                cwd=folder,  # the child's sys.path[0]: a folder of caches only
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except OSError as err:
            logger.debug("matplotlib's font list not built aside: %s", err)
    try:
        yield
    finally:
        if child is not None:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def run(config: RunConfig) -> int:
    """Run one bidsapp invocation (participant or group level).

    Parameters
    ----------
    config : RunConfig
        The invocation's settings.

    Returns
    -------
    int
        The exit code: 0 success; 1 a run failed, or nothing to do.

    Raises
    ------
    UsageProblem
        When the directories or options make the invocation impossible (exit code 2).
    """
    if config.work_dir is not None:
        try:
            config.work_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UsageProblem(f"cannot create --work-dir {config.work_dir}: {err}") from err
    _matplotlib_dir(config)
    if config.analysis_level == "group":
        from bidsapp.app.group import run_group

        return run_group(config)
    # Imported here: the group level never loads the extraction machinery (~2 s of imports).
    from bidsapp.app.participant import run_participant

    with _font_cache_built_aside(config):
        return run_participant(config)
