"""Group level inputs: the participant outcomes selected, their timeseries checked before use.

Part of the app layer. The group level reads only what the participant level wrote: a run's
timeseries is used only when its bytes match the SHA-256 its sidecar records and no link is on
its path; the runs of the selection without any outcome yet are listed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pandas as pd

from bidsapp.app.progress import progress
from bidsapp.report.records import (
    RunRecord,
    tsv_problem,
)


def checked_timeseries(
    record: RunRecord, output_dir: str | os.PathLike[str] | None = None
) -> pd.DataFrame:
    """Read a run's timeseries TSV, refusing one that is cut short, garbled, edited or linked.

    The participant level records the SHA-256 of the TSV in its sidecar (``OutputFiles``,
    see :func:`bidsapp.dataset.run_outputs.outputs_complete`); a file whose bytes differ was changed
    after it was written (an edit, a copy that stopped) and is not averaged.

    Raises
    ------
    ValueError
        If the file or a folder on its path is a symbolic link (never followed), the file
        is not a complete TSV (see :func:`tsv_problem`), its sidecar is missing, records no
        ``OutputFiles`` hash or another one, it holds a value that is not a number or
        ``n/a``, has no rows, or its rows are not the sidecar's ``RetainedVolumes``.
    OSError
        If the file cannot be read.
    """
    from bidsapp.dataset import fileio, run_outputs, tsvio

    path = record.timeseries
    if output_dir is not None and not fileio.no_linked_folder(output_dir, path.parent):
        raise ValueError("a folder on its path is a symbolic link bidsapp did not make")
    if os.path.islink(path):
        raise ValueError("it is a symbolic link bidsapp did not make")
    raw = fileio.read_regular_bytes(path)
    if raw is None:
        raise ValueError("it is not a regular file")
    text = raw.decode("utf-8")
    problem = tsv_problem(text)
    if problem:
        raise ValueError(problem)
    sidecar = path.with_name(path.name[: -len(".tsv")] + ".json")
    if not record.sidecar:
        raise ValueError(f"its JSON sidecar {sidecar.name} is missing or unreadable")
    members = record.sidecar.get(run_outputs.OUTPUT_FILES_KEY)
    if not isinstance(members, dict) or path.name not in members:
        raise ValueError(
            f"its sidecar {sidecar.name} records no {run_outputs.OUTPUT_FILES_KEY} hash for it "
            "(written by an older bidsapp?); run the participant level again"
        )
    if members[path.name] != fileio.sha256_digest(raw):
        raise ValueError(
            f"its content differs from the SHA-256 its sidecar records "
            f"({run_outputs.OUTPUT_FILES_KEY}): it changed after the participant level wrote it; "
            "run the participant level again"
        )
    try:
        table = tsvio.numeric_table(text)
    except ValueError as err:
        raise ValueError(f"it holds a value that is not a number ({err})") from err
    if len(table) == 0:
        raise ValueError("it has no rows")
    retained = record.sidecar.get("RetainedVolumes")
    if isinstance(retained, list) and len(retained) != len(table):
        raise ValueError(
            f"it has {len(table)} row(s) but its sidecar {sidecar.name} lists "
            f"{len(retained)} retained volume(s)"
        )
    return table


def select_records(records: list[RunRecord], config: Any) -> list[RunRecord]:
    """Keep the records of the selected participants, sessions and tasks (all when unset)."""
    keep = records
    if getattr(config, "participant_labels", None):
        keep = [r for r in keep if r.subject in set(config.participant_labels)]
    if getattr(config, "session_labels", None):
        keep = [r for r in keep if r.entities.get("session") in set(config.session_labels)]
    if getattr(config, "tasks", None):
        keep = [r for r in keep if r.entities.get("task") in set(config.tasks)]
    return keep


def _run_identity(entities: dict[str, Any]) -> tuple:
    """Return the entities that name one BOLD acquisition across spaces and resolutions."""
    from bidsapp.dataset.naming import RUN_ACQUISITION_ENTITIES

    return tuple(str(entities.get(k) or "") for k in RUN_ACQUISITION_ENTITIES)


def pending_runs(config: Any, records: Sequence[RunRecord]) -> tuple[int, list[str]] | None:
    """List the runs of the selection that have no participant outcome yet.

    The runs are found with :func:`bidsapp.dataset.query.find_runs` and the configuration's
    selection (space, participants, sessions, tasks, BIDS filters); a run counts as done
    when any status row or timeseries file of the output dataset names it, whatever its
    atlas, denoising or outcome.

    Parameters
    ----------
    config : RunConfig
        The invocation's settings (``bids_dir`` and the selection).
    records : sequence of RunRecord
        Participant outcomes (:func:`bidsapp.report.participant.collect_runs`).

    Returns
    -------
    tuple or None
        ``(number of runs selected, names of the runs without outcome)``, or None when
        the runs cannot be listed (a warning says why).
    """
    from bidsapp.app.selection import find_selected_runs
    from bidsapp.dataset.query import NoRunsFoundError

    try:
        runs = find_selected_runs(config)
    except NoRunsFoundError:
        return 0, []
    except Exception as err:  # advisory only: pybids and the query raise many types
        progress.warning(
            f"bidsapp group: warning: cannot list the runs of {config.bids_dir} to check "
            f"that the participant level is finished ({' '.join(str(err).split())})"
        )
        return None
    done = {_run_identity(r.entities) for r in records}
    missing = [run.name for run in runs if _run_identity(run.entities) not in done]
    return len(runs), missing
