"""run(config): one bidsapp invocation, participant or group level.

The app layer's entry point (called by the CLI and :func:`bidsapp.run`): it prepares the work
directory and matplotlib's cache, then hands over to the participant or group level.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
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

    return run_participant(config)
