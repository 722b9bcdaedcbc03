"""Progress and summary lines of the participant level, and its exit code.

Part of the app layer: one line per run and atlas as it finishes, then the summary.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from bidsapp.app.status import EXIT_OK, EXIT_RUN_FAILED, RunStatus

#: The product's own lines: progress and summaries at INFO (the CLI prints them on stdout,
#: as they are), one-line problems at WARNING and ERROR (on stderr). Only the CLI gives it
#: handlers; from Python, attach one to see the lines.
progress = logging.getLogger("bidsapp.progress")


def print_progress(status: RunStatus) -> None:
    """Print the one progress line of a run and atlas (and its warnings)."""
    name = f"{status.name} [{status.atlas}]"
    if status.status == "failed":
        progress.info(f"FAILED  {name}: {status.reason}")
    elif status.status == "excluded":
        progress.info(f"EXCLUDED {name}: {status.reason}")
    elif status.resumed or status.status == "skipped":
        progress.info(f"skipped {name}: already done")
    else:
        progress.info(
            f"ok      {name}: {status.volumes_kept}/{status.volumes_total} volumes kept, "
            f"{status.seconds:.1f} s"
        )
        for warning in status.warnings:
            progress.info(f"        warning: {warning}")


def summarise(statuses: Sequence[RunStatus], seconds: float) -> int:
    """Print the summary of the participant level and return its exit code.

    Parameters
    ----------
    statuses : sequence of RunStatus
        Every run and atlas of the invocation.
    seconds : float
        Wall time of the invocation (s).

    Returns
    -------
    int
        0 when no run failed or was excluded, else 1.
    """
    failed = [s for s in statuses if s.status == "failed"]
    excluded = [s for s in statuses if s.status == "excluded"]
    ok = sum(s.status == "ok" and not s.resumed for s in statuses)
    resumed = sum(s.resumed for s in statuses)
    progress.info(
        f"done in {seconds:.1f} s: {ok} written, {resumed} already done, {len(failed)} failed, "
        f"{len(excluded)} excluded"
    )
    for title, group in (("failed", failed), ("excluded", excluded)):
        if group:
            progress.info(f"{title} runs ({len(group)}):")
            for status in group:
                progress.info(f"  {status.name} [{status.atlas}]: {status.reason}")
    return EXIT_RUN_FAILED if failed or excluded else EXIT_OK
