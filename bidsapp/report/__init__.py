"""HTML reports: one page per subject, one for the group, one per fitted masker.

Every report is a single self-contained HTML file: figures are embedded as base64 PNG,
the style sheet is inline, there is no script and no external address, so a report opened
from disk (or mailed, or archived) shows the same thing offline.

Nothing is imported here at package import time; matplotlib is imported inside the
figure functions only.
"""

from __future__ import annotations

__all__ = ["generate_masker_report", "write_participant_report", "HTMLReport"]


def __getattr__(name: str):  # lazy: keep ``import bidsapp.report`` free of matplotlib
    if name == "HTMLReport":
        from bidsapp.report.html import HTMLReport

        return HTMLReport
    if name == "generate_masker_report":
        from bidsapp.report.masker import generate_masker_report

        return generate_masker_report
    if name == "write_participant_report":
        from bidsapp.report.participant import write_participant_report

        return write_participant_report
    raise AttributeError(f"module 'bidsapp.report' has no attribute {name!r}")
