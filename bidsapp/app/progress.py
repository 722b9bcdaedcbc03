"""Progress and summary lines of the participant level, and its exit code.

Part of the app layer: one line per run and atlas as it finishes, then the summary.
"""

from __future__ import annotations

from collections.abc import Sequence

from bidsapp.app.status import EXIT_OK, EXIT_RUN_FAILED, RunStatus


def print_progress(status: RunStatus) -> None:
    """Print the one progress line of a run and atlas (and its warnings)."""
    name = f"{status.name} [{status.atlas}]"
    if status.status == "failed":
        print(f"FAILED  {name}: {status.reason}", flush=True)
    elif status.status == "excluded":
        print(f"EXCLUDED {name}: {status.reason}", flush=True)
    elif status.resumed or status.status == "skipped":
        print(f"skipped {name}: already done", flush=True)
    else:
        print(
            f"ok      {name}: {status.volumes_kept}/{status.volumes_total} volumes kept, "
            f"{status.seconds:.1f} s",
            flush=True,
        )
        for warning in status.warnings:
            print(f"        warning: {warning}", flush=True)


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
    print(
        f"done in {seconds:.1f} s: {ok} written, {resumed} already done, {len(failed)} failed, "
        f"{len(excluded)} excluded",
        flush=True,
    )
    for title, group in (("failed", failed), ("excluded", excluded)):
        if group:
            print(f"{title} runs ({len(group)}):")
            for status in group:
                print(f"  {status.name} [{status.atlas}]: {status.reason}")
    return EXIT_RUN_FAILED if failed or excluded else EXIT_OK
