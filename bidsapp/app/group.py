"""Group level: summarise the participant outputs and compare denoising strategies.

Reads only what the participant level wrote (status tables, timeseries TSVs and their
sidecars; never the BOLD) and writes, in ``OUTPUT_DIR/group/``:

``runs.tsv`` (+ ``runs.json``)
    One row per run x atlas x denoising: entities, atlas, statistic, denoising, volumes
    total and kept, confound regressors, mean framewise displacement, regions below
    coverage, status (``ok``, ``failed``, ``excluded``) and reason. Runs whose latest status
    is ``failed`` or ``excluded`` keep their row but are left out of everything below, even
    when older output files remain on disk; so are runs whose timeseries TSV or sidecar is
    cut short or garbled (a warning names the file).
``task-<t>_space-<s>_atlas-<a>_stat-pearsoncorrelation_desc-<d>_relmat.tsv`` (+ ``.json``)
    Group mean connectivity of each atlas x denoising x task: each run's Pearson r is
    Fisher z-transformed (``arctanh``), averaged over runs and transformed back (``tanh``).
``task-<t>_space-<s>_atlas-<a>_stat-qcfc_desc-<d>_relmat.tsv`` (+ ``.json``)
    QC-FC of each edge: the Pearson correlation, across runs, between the run's mean
    framewise displacement and the edge's connectivity (Ciric et al. 2017; Parkes et al.
    2018), the standard benchmark of how much motion a denoising strategy leaves in.
``task-<t>_space-<s>_atlas-<a>_stat-tangent_desc-<d>_relmat.tsv`` (+ ``.json``)
    With ``--connectivity tangent`` only: the reference of the tangent space, nilearn's
    ``ConnectivityMeasure(kind="tangent").mean_``, i.e. the geometric mean of the runs'
    Ledoit-Wolf covariance matrices, on the regions with data in every run (``n/a`` for
    the others).
``qcfc.tsv``
    Per atlas x denoising x task: runs used, median |QC-FC|, share of edges with an
    uncorrected p < 0.05, mean volumes kept.

and ``OUTPUT_DIR/group.html``, the group report, beside the ``sub-<label>.html`` reports.

Matrices keep the participant-level names (minus subject and run), so tools that parse
XCP-D-style ``relmat`` names read them the same way; BIDS has no group-level naming, and
the validator ignores the folder through ``.bidsignore``
(:data:`bidsapp.dataset.dataset_description.BIDSIGNORE_PATTERNS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bidsapp.app.group_compute import compute_group
from bidsapp.app.group_inputs import pending_runs, select_records
from bidsapp.app.group_outputs import GROUP_DIR, GroupWriteError, write_group_outputs
from bidsapp.app.progress import progress
from bidsapp.app.status import EXIT_OK, EXIT_RUN_FAILED
from bidsapp.report.records import (
    LEFT_OUT_STATUSES,
    RunRecord,
    collect_runs,
)

#: Exit code when there is nothing to summarise or a group output cannot be written.
EXIT_NO_RESULTS = EXIT_RUN_FAILED


_MAX_LISTED = 20


def _left_out_lines(records: Sequence[RunRecord], problems: Sequence[str]) -> list[str]:
    """Lines saying which outcomes the group results leave out, and why."""
    left = [r for r in records if r.status in LEFT_OUT_STATUSES]
    if not left and not problems:
        return []
    counts = {s: sum(r.status == s for r in left) for s in sorted(LEFT_OUT_STATUSES)}
    parts = [f"{n} {s}" for s, n in counts.items() if n]
    if problems:
        parts.append(f"{len(problems)} with unusable outputs")
    lines = [
        f"bidsapp group: left out {len(left) + len(problems)} run outcome(s) from the group "
        f"results: {', '.join(parts)} (their rows stay in {GROUP_DIR}/runs.tsv)"
    ]
    shown = [
        f"  {r.status}: sub-{r.subject} {r.name} [{r.atlas}, {r.denoise}]: "
        f"{r.reason or 'no reason given'}"
        for r in left
    ] + [f"  warning: {p}" for p in problems]
    lines += shown[:_MAX_LISTED]
    if len(shown) > _MAX_LISTED:
        lines.append(f"  ... and {len(shown) - _MAX_LISTED} more (see {GROUP_DIR}/runs.tsv)")
    return lines


def run_group(config: Any) -> int:
    """Run the group level on the participant outputs in ``config.output_dir``.

    Runs whose latest status is ``failed`` or ``excluded``, and runs whose outputs are cut
    short or garbled, are left out of the group results (with a message saying how many
    and why); their rows stay in ``runs.tsv``. When the selection has runs with no
    participant outcome yet (found with :func:`bidsapp.dataset.query.find_runs`), a warning says
    how many.

    Parameters
    ----------
    config : RunConfig
        The invocation's settings; ``output_dir``, ``bids_dir``, ``reports``, ``space``,
        ``work_dir`` and the participant, session, task and filter selections are used.

    Returns
    -------
    int
        0 when the group outputs were written; 1 when there are no participant results
        to summarise (the message says what is missing) or a group output cannot be
        written (full disk, read-only file system: a one-line message names the file;
        every file written is complete).
    """
    output_dir = Path(config.output_dir)
    broken: dict[str, str] = {}
    records = (
        select_records(collect_runs(output_dir, broken=broken), config)
        if output_dir.is_dir()
        else []
    )
    # One line per untrusted status table; its subject's runs are left out (not finished).
    selected = set(getattr(config, "participant_labels", None) or broken)
    for subject, problem in sorted(broken.items()):
        if subject in selected:
            progress.warning(
                f"bidsapp group: warning: {problem}; the runs of sub-{subject} are left out"
            )
    if not records:
        progress.error(
            f"bidsapp group: no participant-level results in {output_dir}: found no "
            "logs/sub-*_status.tsv and no sub-*/func/*_timeseries.tsv"
            + (" matching the selection" if output_dir.is_dir() else " (no such directory)")
            + ". Run the participant level first: bidsapp BIDS_DIR OUTPUT_DIR participant"
        )
        return EXIT_NO_RESULTS
    pending = pending_runs(config, records)
    result = compute_group(
        records, output_dir, tangent="tangent" in getattr(config, "connectivity", ())
    )
    try:
        written = write_group_outputs(config, output_dir, records, result)
    except GroupWriteError as err:
        progress.error(f"bidsapp group: {err.strerror}")
        return EXIT_NO_RESULTS
    n_left = sum(r.status in LEFT_OUT_STATUSES for r in records)
    n_used = sum(len(c.runs) for c in result.cells)
    progress.info(
        f"bidsapp group: {len(records)} run outcome(s) from "
        f"{len({r.subject for r in records})} subject(s): {n_used} used, {n_left} left out; "
        f"{len(result.cells)} atlas x denoising x task combination(s); "
        f"wrote {len(written)} file(s) under {output_dir}"
    )
    for line in _left_out_lines(records, result.problems):
        progress.info(line)
    if pending is not None and pending[1]:
        total, missing = pending
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        progress.warning(
            f"bidsapp group: warning: {len(missing)} of {total} runs have no participant "
            f"outputs yet ({shown}); the group results leave them out. Run the participant "
            "level for them, then the group level again."
        )
    if not result.cells:
        progress.error(
            "bidsapp group: no run has usable outputs (every run failed or was left out); "
            f"see {output_dir / GROUP_DIR / 'runs.tsv'}"
        )
        return EXIT_NO_RESULTS
    return EXIT_OK
