"""Outcome of one run for one atlas (a row of a subject's status table) and the exit codes.

Part of the app layer: the participant level builds a :class:`RunStatus` for every run and
atlas, prints it as progress, records it in the status table and sums them up in the exit code.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Any

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
# The shell's code for a process ended by SIGTERM, which is what a batch scheduler sends at
# a job's time limit (SLURM, PBS, ``docker stop``).
EXIT_TERMINATED = 128 + signal.SIGTERM
# Ctrl-C (SIGINT, Python's KeyboardInterrupt): the shell's code for it.
EXIT_INTERRUPTED = 128 + signal.SIGINT


@dataclass
class RunStatus:
    """Outcome of one run for one atlas (a row of the subject's status table).

    Attributes
    ----------
    name : str
        Run name, e.g. ``sub-01_task-rest_run-1``.
    entities : dict
        Entities of the outputs (pybids long names, ``space`` included).
    atlas : str
        Atlas label.
    status : str
        ``ok``, ``failed`` or ``excluded`` (left out on purpose, e.g. ``--min-time``). A run
        found complete by a rerun keeps its original ``ok`` (see ``resumed``).
    reason : str
        One-line reason of a failure or exclusion, or the run's warnings.
    volumes_total, volumes_kept : int or None
        Volumes in the series and kept after censoring.
    mean_fd : float or None
        Mean framewise displacement (mm).
    regions_below_coverage : int or None
        Regions written as n/a.
    seconds : float
        Wall time of the extraction.
    outputs : list of str
        Files written (or found, when skipped).
    warnings : list of str
        Problems that did not stop the run.
    resumed : bool
        The outputs were found complete with the same parameters and inputs, and were kept;
        the other fields come from the run's sidecar (its original outcome).
    """

    name: str
    entities: dict[str, str]
    atlas: str
    status: str
    reason: str = ""
    volumes_total: int | None = None
    volumes_kept: int | None = None
    mean_fd: float | None = None
    regions_below_coverage: int | None = None
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    resumed: bool = False

    @property
    def subject(self) -> str:
        """Subject label without ``sub-``."""
        return self.entities["subject"]

    def as_row(self, denoise_label: str, stat: str) -> dict[str, Any]:
        """Return this status as a flat dict for the status table (``write_subject_status``).

        Parameters
        ----------
        denoise_label : str
            ``desc-`` label of the denoising setting.
        stat : str
            Extraction statistic.

        Returns
        -------
        dict
            Entities, ``atlas``, ``denoise``, ``stat``, ``status``, ``reason`` and counts.
        """
        row: dict[str, Any] = dict(self.entities)
        row.update(
            atlas=self.atlas,
            denoise=denoise_label,
            stat=stat,
            status=self.status,
            reason=self.reason,
            volumes_total=self.volumes_total,
            volumes_kept=self.volumes_kept,
            mean_fd=self.mean_fd,
            regions_below_coverage=self.regions_below_coverage,
            outputs=list(self.outputs),
        )
        return row


def one_line(text: Any) -> str:
    """Collapse a message (e.g. an exception) to one line, for status tables and summaries."""
    return " ".join(str(text).split())
