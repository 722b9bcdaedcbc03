"""One subject's folder: opened (leftovers and stopped sets removed) and finished (status, report).

Part of the app layer. Each subject is written under an exclusive lock; after the last run of a
subject, its status table and HTML report are written.
"""

from __future__ import annotations

import logging
import os
import stat as stat_module
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bidsapp.app.config import RunConfig
from bidsapp.app.process import remove_stopped_outputs
from bidsapp.app.progress import print_progress, progress
from bidsapp.app.status import RunStatus, one_line

logger = logging.getLogger(__name__)


def _write_report(config: RunConfig, subject: str) -> bool:
    """Write a subject's HTML report; a failure is a printed warning, never fatal.

    Returns whether the report was written.
    """
    try:
        from bidsapp.report.participant import write_participant_report
    except ImportError as err:
        progress.info(f"warning: no participant report for sub-{subject}: {err}")
        return False
    try:
        path = write_participant_report(config.output_dir, subject, config.bids_dir)
    except Exception as err:  # a report must never fail the runs
        logger.debug("report of sub-%s failed", subject, exc_info=True)
        progress.info(
            f"warning: participant report for sub-{subject} not written: "
            f"{type(err).__name__}: {one_line(err)}"
        )
        return False
    logger.info("wrote %s", path)
    return True


def _remove_stale_report(report: Path) -> None:
    """Remove a report that describes earlier results (a folder in its place is left)."""
    try:
        if not stat_module.S_ISDIR(os.lstat(report).st_mode):
            os.unlink(report)
            progress.info(f"removed {report.name}: it described earlier results")
    except FileNotFoundError:
        pass
    except OSError as err:
        progress.info(f"warning: {report} describes earlier results: {one_line(err)}")


def finish_subject(config: RunConfig, subject: str, statuses: Sequence[RunStatus]) -> bool:
    """Record a subject's run statuses, then write its report (under the subject's lock).

    Returns False when the status table could not be written: the group level would then
    not know these outcomes, so the invocation must not end with 0.
    """
    from bidsapp.dataset import status_tables

    rows = [s.as_row(config.denoise.label, config.extraction.strategy) for s in statuses]
    recorded = True
    try:
        status_tables.write_subject_status(config.output_dir, subject, rows)
    except (OSError, ValueError) as err:
        progress.info(f"FAILED  sub-{subject}: status table not written: {one_line(err)}")
        recorded = False
    if config.concatenate_runs:
        from bidsapp.app.concatenation import write_concatenated

        write_concatenated(config, statuses)
    report = config.output_dir / f"sub-{subject}.html"
    changed = any(not s.resumed for s in statuses)
    written = False
    if config.reports and (changed or not report.is_file()):
        written = _write_report(config, subject)
    if changed and not written:
        # --no-reports, or the report failed: the old one would show other numbers.
        _remove_stale_report(report)
    return recorded


def clean_leftovers(config: RunConfig) -> None:
    """Remove temporary files of dead writers outside the subjects' folders."""
    from bidsapp.dataset import dataset_description, fileio

    fileio.remove_stale_temp_files(config.output_dir)
    fileio.remove_stale_temp_files(config.output_dir / "logs")
    fileio.remove_stale_temp_files(config.output_dir / "logs" / "report", recursive=True)
    fileio.remove_stale_temp_files(
        config.output_dir / dataset_description.ATLAS_DATASET, recursive=True
    )


def open_subject(config: RunConfig, subject: str, stale: Sequence[tuple[RunStatus, Any]]) -> None:
    """With the subject's lock held: remove its leftovers and the sets that must not stay.

    Every writer of ``sub-<s>/`` holds this lock, so any temporary file there is a leftover
    of a killed run. A stopped run whose old set cannot be removed becomes ``failed``.
    """
    from bidsapp.dataset import fileio

    folder = config.output_dir / f"sub-{subject}"
    if not folder.is_symlink():
        fileio.remove_stale_temp_files(folder, recursive=True, any_writer=True)
    for status, paths in stale:
        before = status.status, status.reason
        remove_stopped_outputs(status, paths)
        if (status.status, status.reason) != before:
            print_progress(status)
