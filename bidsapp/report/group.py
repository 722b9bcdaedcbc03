"""Group report: ``OUTPUT_DIR/group.html``, drawn from the group level's results.

Part of the report layer: it computes nothing (the app hands it the cells, their QC-FC summary
rows and the minimum run count) and imports nothing of the app; the figures come from
:mod:`bidsapp.report.figures`.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bidsapp.report import html as H
from bidsapp.report.networks import region_networks
from bidsapp.report.participant import section_anchor
from bidsapp.report.records import LEFT_OUT_STATUSES


def _comparison(cells: Sequence[Any], summaries: Sequence[Mapping[str, Any]], min_runs: int) -> str:
    """Table and figures comparing the denoising strategies of one task x atlas."""
    from bidsapp.report import figures

    rows = []
    for cell, row in zip(cells, summaries, strict=True):
        rows.append(
            [
                cell.denoise,
                row["n_runs"],
                row["n_runs_with_fd"],
                row["mean_fd"],
                row["mean_percent_volumes_kept"],
                row["mean_n_confounds"],
                row["median_abs_qcfc"],
                row["percent_edges_p05"],
            ]
        )
    columns = [
        "denoise",
        "runs",
        "runs with FD",
        "mean FD (mm)",
        "volumes kept (%)",
        "confound regressors",
        "median |QC-FC|",
        "edges with p < 0.05 (%)",
    ]
    parts = [H.table(columns, rows)]
    few = [c.denoise for c in cells if c.n_runs_fd < min_runs]
    if few:
        parts.append(
            H.alert(
                [
                    f"QC-FC needs at least {min_runs} runs with framewise "
                    f"displacement; not computed for: {', '.join(few)}."
                ],
                "warning",
            )
        )
    qc = {c.denoise: c.qcfc_edges() for c in cells}
    kept = {
        c.denoise: [
            100 * r.n_volumes_kept / r.n_volumes
            for r in c.runs
            if r.n_volumes_kept is not None and r.n_volumes
        ]
        for c in cells
    }
    dof = {
        c.denoise: [
            len(r.sidecar.get("ConfoundColumns") or []) + r.n_volumes - r.n_volumes_kept
            for r in c.runs
            if r.n_volumes_kept is not None and r.n_volumes
        ]
        for c in cells
    }
    figs = [
        H.figure(
            figures.plot_distributions(
                qc,
                "QC-FC (r between mean FD and edge connectivity)",
                value_name="QC-FC",
                count_name="edges",
            ),
            "QC-FC distributions per denoising strategy",
            "Distribution of QC-FC over all edges, one outline per denoising strategy "
            "(dotted: median). The narrower and more centred on 0, the less motion is left "
            "in the connectivity; the legend gives the median |QC-FC| and the number of edges.",
            kind="qcfc",
        ),
        H.figure(
            figures.plot_denoising_boxes(
                {"volumes kept (%)": kept, "degrees of freedom lost": dof}
            ),
            "Volumes kept and degrees of freedom lost per denoising strategy",
            "Left: share of each run's volumes kept after non-steady-state removal and "
            "censoring. Right: confound regressors plus removed volumes, the temporal degrees "
            "of freedom each strategy spends. One dot per run.",
            kind="volumes",
        ),
    ]
    parts.append(f'<div class="grid2">{"".join(figs)}</div>')
    return "".join(parts)


def _connectivity_figures(cells: Sequence[Any]) -> str:
    from bidsapp.report import figures

    figs = []
    for cell in cells:
        networks = region_networks(cell.regions)
        figs.append(
            H.figure(
                figures.plot_connectivity(
                    cell.mean,
                    cell.regions,
                    networks,
                    title=f"{cell.denoise}: {len(cell.runs)} runs",
                ),
                f"Group mean connectivity, {cell.label}",
                f"{cell.label}: Fisher-z average of {len(cell.runs)} run(s) from "
                f"{len({r.subject for r in cell.runs})} subject(s)"
                + (", regions grouped by network." if networks else "."),
                kind="group-connectivity",
            )
        )
    return f'<div class="grid2">{"".join(figs)}</div>'


def _runs_section(records: Sequence[Any], output_dir: Path) -> str:

    columns = [
        "subject",
        "run",
        "atlas",
        "denoise",
        "status",
        "volumes kept",
        "mean FD (mm)",
        "regions n/a",
        "reason / warnings",
    ]
    rows, classes = [], []
    for r in records:
        report = output_dir / f"sub-{r.subject}.html"
        subject, run = H.esc(r.subject), H.esc(r.name)
        if report.is_file():
            subject = f'<a href="{H.esc(report.name)}">{subject}</a>'
            if r.has_outputs:
                target = f"{report.name}#{section_anchor(r)}"
                run = f'<a href="{H.esc(target)}">{run}</a>'
        kept = (
            f"{r.n_volumes_kept} / {r.n_volumes}"
            if r.n_volumes_kept is not None and r.n_volumes is not None
            else None
        )
        rows.append(
            [
                subject,
                run,
                r.atlas,
                r.denoise,
                H.badge(r.status),
                kept,
                r.mean_fd,
                r.n_regions_low_coverage,
                r.reason,
            ]
        )
        classes.append("" if r.status == "ok" else r.status)
    return H.table(
        columns,
        rows,
        classes,
        raw_columns=("subject", "run", "status"),
        nowrap_columns=("run", "atlas", "volumes kept"),
    )


def build_group_report(
    result: Any,
    output_dir: Path,
    written: Sequence[Path] = (),
    *,
    summaries: Sequence[Mapping[str, Any]],
    min_runs_qcfc: int,
) -> H.HTMLReport:
    """Build the group HTML report from the group level's results (nothing is computed here).

    Parameters
    ----------
    result : bidsapp.app.group_compute.GroupResult
        The group level's records (``records``), cells (``cells``: one per task x space x
        atlas x statistic x denoising, with their runs, mean connectivity and QC-FC) and
        problems (``problems``).
    output_dir : Path
        Output dataset root.
    written : sequence of Path, default=()
        Group files to list (and link) in the report.
    summaries : sequence of mapping
        One row of ``group/qcfc.tsv`` per cell of ``result.cells``, in the same order.
    min_runs_qcfc : int
        Runs with framewise displacement QC-FC needs (fewer: a warning names the cells).

    Returns
    -------
    bidsapp.report.html.HTMLReport
        The report.
    """
    from bidsapp import __version__

    records = result.records
    failed = [r for r in records if r.status in LEFT_OUT_STATUSES]
    subjects = sorted({r.subject for r in records})
    messages = [
        f"sub-{r.subject} {r.name} [{r.atlas}, {r.denoise}] {r.status.upper()}: "
        f"{r.reason or 'no reason given'}"
        for r in failed
    ]
    messages += [f"not used: {p}" for p in result.problems]
    intro = [
        f'<p class="lead">Output dataset <code>{H.esc(output_dir)}</code>: '
        f"{len(subjects)} subject(s), {len(records)} run outcome(s) "
        f"({sum(r.status == 'ok' for r in records)} ok, "
        f"{sum(r.status == 'failed' for r in records)} failed, "
        f"{sum(r.status == 'excluded' for r in records)} excluded). "
        f"Built {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} by bidsapp "
        f"{H.esc(__version__)} from the participant outputs only.</p>",
        H.alert(messages, "error", title="Failures and warnings")
        if messages
        else H.alert(["Every run succeeded."], "ok"),
    ]
    links = [("overview", "Overview")]
    sections = [H.section("Overview", "".join(intro), anchor="overview")]

    groups: dict[tuple[str, ...], list[tuple[Any, Mapping[str, Any]]]] = {}
    for cell, summary in zip(result.cells, summaries, strict=True):
        key = (cell.task, cell.space, cell.atlas, cell.stat)
        groups.setdefault(key, []).append((cell, summary))
    compare = [
        "<p>QC-FC is the correlation, across runs, between a run's mean framewise "
        "displacement and the connectivity of one edge; a denoising strategy that removes "
        "motion well leaves QC-FC distributed narrowly around 0 (Ciric et al. 2017, "
        "NeuroImage 154:174). It needs enough runs to mean something: with few runs the "
        "distributions are wide whatever the strategy.</p>"
    ]
    matrices = []
    for (task, space, atlas, stat), pairs in groups.items():
        cells = [cell for cell, _ in pairs]
        title = f"task-{task} · atlas-{atlas} · space-{space}" + (f" · stat-{stat}" if stat else "")
        compare.append(
            H.section(title, _comparison(cells, [row for _, row in pairs], min_runs_qcfc), level=3)
        )
        matrices.append(H.section(title, _connectivity_figures(cells), level=3))
    if groups:
        sections.append(
            H.section("Denoising strategies compared", "".join(compare), anchor="strategies")
        )
        sections.append(
            H.section("Group mean connectivity", "".join(matrices), anchor="connectivity")
        )
        links += [("strategies", "Strategies compared"), ("connectivity", "Group connectivity")]
    sections.append(H.section("Runs", _runs_section(records, output_dir), anchor="runs"))
    links.append(("runs", "Runs"))
    if written:
        items = []
        for path in written:
            try:
                rel = Path(path).relative_to(output_dir).as_posix()
            except ValueError:
                rel = str(path)
            items.append(f'<li><a href="{H.esc(rel)}"><code>{H.esc(rel)}</code></a></li>')
        sections.append(H.section("Files", "<ul>" + "".join(items) + "</ul>", anchor="files"))
        links.append(("files", "Files"))
    body = (
        "<h1>bidsapp group report</h1>"
        + H.nav(links)
        + "".join(sections)
        + f"<footer>bidsapp {H.esc(__version__)}. Self-contained page: figures are embedded, "
        "nothing is fetched.</footer>"
    )
    return H.HTMLReport("group · bidsapp", body, warnings=messages)
