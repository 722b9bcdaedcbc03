"""Participant report: ``OUTPUT_DIR/sub-<label>.html``, built from what is on disk.

Part of the report layer. The report reads only files: the subject's status table
(``logs/sub-<label>_status.tsv``),
the timeseries, coverage and sidecars written for each run, the atlas copies under
``sourcedata/atlases`` and the inputs named in each sidecar's ``Sources`` (BIDS URIs resolved
through ``dataset_description.json``'s ``DatasetLinks``). It can therefore be rebuilt at any
time, and the same reading code (:func:`collect_runs`) serves the group level.

One section per run, atlas and denoising shows: the parameters, the atlas outlines over the
run's mean BOLD and brain mask, per-region coverage (regions set to ``n/a`` named), framewise
displacement with removed volumes marked, a carpet plot, the connectivity matrix, and the
run's warnings. Failures and warnings of the whole subject come first, in words.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bidsapp.report import html as H
from bidsapp.report.contours import plot_atlas_contours
from bidsapp.report.networks import region_networks
from bidsapp.report.records import (
    LEFT_OUT_STATUSES,
    RunRecord,
    collect_runs,
    float_or_none,
    int_or_none,
    present,
)
from bidsapp.report.run_data import (
    RunReportData,
    read_report_data,
    report_data_path,
)
from bidsapp.report.sources import RunSources, boldref_of, find_sources

logger = logging.getLogger(__name__)

__all__ = ["section_anchor", "write_participant_report"]


# --------------------------------------------------------------------------------------
# Computations
# --------------------------------------------------------------------------------------


def _read_relmat(record: RunRecord, names: Sequence[str]) -> np.ndarray:
    """Read the run's ``_relmat.tsv`` as the participant level wrote it, rows in ``names`` order."""
    from bidsapp.dataset import tsvio

    path = record.sibling("pearsoncorrelation", record.denoise, "relmat")
    if path is None or not path.is_file():
        name = path.name if path else "_relmat.tsv"
        raise FileNotFoundError(f"no connectivity matrix {name} beside the timeseries")
    table = tsvio.read_tsv(path)
    table = table.set_index(table["Node"].astype(str)).drop(columns="Node")
    table.columns = [str(c) for c in table.columns]
    return table.reindex(index=list(names), columns=list(names)).to_numpy(dtype=float)


def read_timeseries(path: Path) -> pd.DataFrame:
    """Read a timeseries TSV (``n/a`` as NaN), keeping region names as columns.

    Parameters
    ----------
    path : Path
        A ``_timeseries.tsv`` file.

    Returns
    -------
    pandas.DataFrame
        Float values, one column per region.
    """
    from bidsapp.dataset import tsvio

    return tsvio.read_tsv(path).astype(float)


# --------------------------------------------------------------------------------------
# Report sections
# --------------------------------------------------------------------------------------


def _hz(value: Any) -> str:
    return "none" if value in (None, 0) else f"{float(value):g} Hz"


def _parameters(record: RunRecord, data: RunReportData) -> str:
    sc = record.sidecar
    den = sc.get("Denoising") or {}
    ext = sc.get("Extraction") or {}
    atlas = sc.get("Atlas") or {}
    retained = sc.get("RetainedVolumes") or []
    censored = sc.get("CensoredVolumes") or []
    columns = sc.get("ConfoundColumns") or []
    t_r = sc.get("RepetitionTime")
    fd_thr, dvars = data.fd_threshold, data.std_dvars_threshold
    censoring = [f"FD > {fd_thr:g} mm" if fd_thr else "", f"std DVARS > {dvars:g}" if dvars else ""]
    denoising = {
        "Denoise strategy": f"{den.get('name', record.denoise)} (desc-{record.denoise})",
        "What it regresses": data.preset_description or str(den.get("name", record.denoise)),
        "Confound columns": f"{len(columns)} regressors",
        "Censoring": " or ".join(c for c in censoring if c) or "none",
        "Dummy scans": "auto (fMRIPrep's non-steady-state volumes)"
        if den.get("dummy_scans") is None
        else den.get("dummy_scans"),
        "Volumes": f"{len(retained)} kept of {sc.get('NumberOfVolumes', 'n/a')} "
        f"({len(censored)} removed)",
        "Mean framewise displacement": "n/a"
        if record.mean_fd is None
        else f"{record.mean_fd:.3f} mm",
    }
    extraction = {
        "Atlas": f"{atlas.get('Name', record.atlas)} {atlas.get('Description') or ''}".strip()
        + (f" ({atlas.get('Source')})" if atlas.get("Source") else ""),
        "Extraction statistic": ext.get("strategy", record.stat),
        "Standardize": ext.get("standardize"),
        "Detrend": ext.get("detrend"),
        "Filters": f"high-pass {_hz(ext.get('high_pass'))}, low-pass {_hz(ext.get('low_pass'))}",
        "Smoothing": "none"
        if not ext.get("smoothing_fwhm")
        else f"{float(ext['smoothing_fwhm']):g} mm FWHM",
        "Minimum coverage": ext.get("min_coverage"),
        "Repetition time": "n/a" if t_r is None else f"{float(t_r):g} s",
        "Software": f"{sc.get('SoftwareName', 'bidsapp')} {sc.get('SoftwareVersion', '')}",
    }
    parts = [
        '<div class="grid2">'
        + H.definition_table(denoising)
        + H.definition_table(extraction)
        + "</div>"
    ]
    if columns:
        parts.append(
            H.details(
                f"Confound columns ({len(columns)})",
                "<p>" + ", ".join(f"<code>{H.esc(c)}</code>" for c in columns) + "</p>",
            )
        )
    sources = [str(s) for s in sc.get("Sources", []) or []]
    if sources:
        parts.append(
            H.details(
                "Sources",
                "<ul>" + "".join(f"<li><code>{H.esc(s)}</code></li>" for s in sources) + "</ul>",
            )
        )
    return "".join(parts)


def _safe_figure(
    kind: str,
    alt: str,
    caption: str | Callable[[], str],
    draw: Callable[[], str],
    problems: list[str],
) -> str:
    """Draw one figure; a failure becomes a message figure and a warning, never a crash."""
    from bidsapp.report import figures

    try:
        uri = draw()
    except Exception as err:  # one broken input must not lose the whole report
        logger.debug("figure %s failed", kind, exc_info=True)
        message = f"{alt}: not drawn ({type(err).__name__}: {err})"
        problems.append(message)
        uri = figures.plot_message(message)
    text = caption() if callable(caption) else caption
    return H.figure(uri, alt, text, kind=kind)


def _load_grids(inputs: RunSources, data: RunReportData | None) -> dict[str, Any]:
    import nibabel as nib

    from bidsapp.image import resample_to_img

    if inputs.bold is None or inputs.atlas is None:
        missing = [n for n, p in (("BOLD", inputs.bold), ("atlas", inputs.atlas)) if p is None]
        raise FileNotFoundError(
            f"{' and '.join(missing)} image not found (Sources: {inputs.missing or 'none'})"
        )
    boldref = boldref_of(inputs.bold)
    if boldref is not None:
        reference = nib.load(str(boldref))
        mean, affine = np.asarray(reference.dataobj, dtype=float), reference.affine
    elif data is not None and data.mean is not None:
        mean, affine = data.mean, data.affine  # from the app's single pass over the BOLD
    else:
        raise FileNotFoundError(
            "the run's mean BOLD was not recorded by the participant level "
            "(run it again with reports on)"
        )
    ref = nib.Nifti1Image(mean.astype(np.float32), affine)
    atlas_img = nib.load(str(inputs.atlas))
    labels = resample_to_img(atlas_img, ref, interpolation="nearest")
    images = {"background": ref, "labels": labels}
    if inputs.mask is not None:
        images["mask"] = resample_to_img(nib.load(str(inputs.mask)), ref, interpolation="nearest")
    canonical = {k: nib.as_closest_canonical(v) for k, v in images.items()}
    out: dict[str, Any] = {
        "background": np.asarray(canonical["background"].dataobj, dtype=float),
        "labels": np.asarray(canonical["labels"].dataobj).astype(int),
        "mask": None if "mask" not in canonical else np.asarray(canonical["mask"].dataobj) > 0,
        "affine": canonical["background"].affine,
        "from_boldref": boldref is not None,
    }
    return out


def _lut_colors(lut: pd.DataFrame | None) -> dict[int, str] | None:
    if lut is None or "color" not in lut.columns:
        return None
    return {int(i): str(c) for i, c in zip(lut["index"], lut["color"], strict=False) if present(c)}


def _read_lut(path: Path | None) -> pd.DataFrame | None:
    if path is None:
        return None
    try:
        from bidsapp.dataset import tsvio

        return tsvio.read_tsv(path)
    except (OSError, ValueError, pd.errors.ParserError):
        return None


def _run_section(
    record: RunRecord, output_dir: Path, bids_dir: Path | None
) -> tuple[str, list[str]]:
    """HTML of one run x atlas x denoising section and the problems met drawing it."""
    from bidsapp.report import figures

    problems: list[str] = []
    sc = record.sidecar
    inputs = find_sources(record, output_dir, bids_dir)
    for source in inputs.missing:
        problems.append(f"input not found: {source} (pass the fMRIPrep directory to rebuild)")
    timeseries = read_timeseries(record.timeseries)
    names = [str(c) for c in timeseries.columns]
    lut = _read_lut(inputs.lut)
    networks = region_networks(names, lut)
    t_r = float_or_none(sc.get("RepetitionTime"))
    n_volumes = int_or_none(sc.get("NumberOfVolumes"))
    retained = [int(v) for v in sc.get("RetainedVolumes") or range(len(timeseries))]
    censored = [int(v) for v in sc.get("CensoredVolumes") or []]
    ext = sc.get("Extraction") or {}
    threshold = float(ext.get("min_coverage", 0.5))
    group_note = (
        f"grouped into {len(set(networks))} networks read from the atlas look-up table"
        if networks
        else "in look-up-table order (the region names carry no network)"
    )

    path = report_data_path(output_dir, record.timeseries)
    data = read_report_data(path)
    if data is None:
        problems.append(
            f"{path.relative_to(output_dir)} not found: the participant level records there "
            "the run's mean BOLD, framewise displacement and censoring (run it again)"
        )
    shown = data or RunReportData()
    parts = [H.section("Parameters", _parameters(record, shown), level=3)]

    def contours() -> str:
        grids = _load_grids(inputs, data)
        background_note.append(
            "fMRIPrep's BOLD reference" if grids["from_boldref"] else "the run's mean BOLD"
        )
        return plot_atlas_contours(
            grids["background"],
            grids["labels"],
            grids["mask"],
            grids["affine"],
            colors=_lut_colors(lut),
        )

    background_note: list[str] = []

    def contours_caption() -> str:
        what = background_note[0] if background_note else "the run's mean BOLD"
        return (
            f"Atlas {record.atlas}: coloured outlines of its regions (resampled to the BOLD "
            f"grid, nearest neighbour) over {what}; green: brain mask outline. Sagittal, "
            "coronal and axial slices spread over the atlas extent."
        )

    fig = _safe_figure(
        "contours",
        "Atlas regions over the mean BOLD and brain mask",
        contours_caption,
        contours,
        problems,
    )
    parts.append(H.section("Atlas over the BOLD", fig, level=3))

    coverage_path = record.sibling("coverage", None, "bold")
    coverage = None
    if coverage_path is not None and coverage_path.is_file():
        table = _read_lut(coverage_path)
        if table is not None and {"Node", "coverage"} <= set(table.columns):
            coverage = table.set_index(table["Node"].astype(str))["coverage"].astype(float)
    below_named = [str(n) for n in sc.get("RegionsBelowCoverage") or []]
    empty = [n for n in names if timeseries[n].isna().all() and n not in below_named]
    cov_values = (
        coverage.reindex(names).to_numpy() if coverage is not None else np.full(len(names), np.nan)
    )
    cov_html = _safe_figure(
        "coverage",
        "Per-region coverage by the brain mask",
        f"Fraction of each region's voxels inside the brain mask, {group_note}; red: below "
        f"the {threshold:g} threshold, written as n/a. "
        + ("" if coverage is not None else "(coverage table not found: nothing to plot)"),
        lambda: figures.plot_coverage(cov_values, threshold, networks),
        problems,
    )
    if below_named or empty:
        listing = "".join(f"<li>{H.esc(n)}</li>" for n in below_named + empty)
        cov_html += (
            f"<p><strong>{len(below_named) + len(empty)} region(s) set to n/a</strong> "
            f"(coverage below {threshold:g}, or no voxel in the BOLD grid):</p>"
            f'<ul class="names">{listing}</ul>'
        )
    else:
        cov_html += H.alert(
            [f"All {len(names)} regions have coverage of at least {threshold:g}."], "ok"
        )
    parts.append(H.section("Coverage", cov_html, level=3))

    fd = shown.fd
    nss = shown.non_steady_state
    scrubbed = sorted(set(censored) - set(nss))
    fd_threshold = shown.fd_threshold
    parts.append(
        H.section(
            "Framewise displacement",
            _safe_figure(
                "fd",
                "Framewise displacement over time",
                "Framewise displacement (mm) per volume from the fMRIPrep confounds; "
                + (
                    f"red: {len(scrubbed)} volume(s) censored by the denoising"
                    + (f" (FD threshold {fd_threshold:g} mm, dashed)" if fd_threshold else "")
                    if scrubbed
                    else "no volume censored by the denoising"
                )
                + (
                    f"; grey: {len(nss)} non-steady-state volume(s) dropped. "
                    if nss
                    else "; no non-steady-state volume. "
                )
                + f"{len(retained)} of {n_volumes} volumes kept.",
                lambda: figures.plot_framewise_displacement(
                    fd, t_r, scrubbed, nss, fd_threshold, n_volumes
                ),
                problems,
            ),
            level=3,
        )
    )
    parts.append(
        H.section(
            "Carpet plot",
            _safe_figure(
                "carpet",
                "Carpet plot of the region timeseries",
                f"Denoised region timeseries (one row per region, {group_note}), z-scored per "
                "row for display, at their original volume positions: pale red columns are "
                "removed volumes (they line up with the plot above), pale red rows are regions "
                "set to n/a.",
                lambda: figures.plot_carpet(
                    timeseries.to_numpy(), retained, n_volumes, networks, t_r
                ),
                problems,
            ),
            level=3,
        )
    )
    parts.append(
        H.section(
            "Connectivity",
            _safe_figure(
                "connectivity",
                "Region by region connectivity matrix",
                f"Pearson correlation between the denoised region timeseries (the run's "
                f"_relmat.tsv), {group_note}; grey: regions set to n/a.",
                lambda: figures.plot_connectivity(_read_relmat(record, names), names, networks),
                problems,
            ),
            level=3,
        )
    )
    warnings = [str(w) for w in sc.get("Warnings") or []] + problems
    if warnings:
        parts.append(H.section("Warnings", H.alert(warnings, "warning"), level=3))
    return "".join(parts), problems


def _status_table(records: Sequence[RunRecord]) -> str:
    columns = [
        "run",
        "atlas",
        "denoise",
        "stat",
        "status",
        "volumes kept",
        "mean FD (mm)",
        "regions n/a",
        "reason / warnings",
    ]
    rows = []
    classes = []
    for r in records:
        kept = (
            f"{r.n_volumes_kept} / {r.n_volumes}"
            if r.n_volumes_kept is not None and r.n_volumes is not None
            else "n/a"
        )
        if r.has_outputs:
            link = f'<a href="#{section_anchor(r)}">{H.esc(r.name)}</a>'
        else:
            link = H.esc(r.name)
        rows.append(
            [
                link,
                r.atlas,
                r.denoise,
                r.stat or "n/a",
                H.badge(r.status),
                kept,
                r.mean_fd,
                r.n_regions_low_coverage,
                r.reason,
            ]
        )
        classes.append(r.status if r.status != "ok" else "")
    return H.table(columns, rows, classes, raw_columns=("run", "status"), nowrap_columns=("atlas",))


def section_anchor(record: RunRecord) -> str:
    """Return the id of a run's section in its subject's report (for links to it).

    Parameters
    ----------
    record : RunRecord
        The run.

    Returns
    -------
    str
        An HTML id such as ``task-rest-run-1-Schaefer100-mean-simple``.
    """
    return H.anchor_id(f"{record.name}-{record.atlas}-{record.stat}-{record.denoise}")


def build_participant_report(
    output_dir: str | os.PathLike[str], subject: str, bids_dir: str | os.PathLike[str] | None = None
) -> H.HTMLReport:
    """Build (without writing) the report of one subject.

    Parameters
    ----------
    output_dir : path-like
        Output dataset root.
    subject : str
        Subject label, with or without ``sub-``.
    bids_dir : path-like, optional
        The fMRIPrep dataset, when it is not (or no longer) where ``DatasetLinks`` says.

    Returns
    -------
    HTMLReport
        The report.
    """
    from bidsapp import __version__

    output_dir = Path(output_dir)
    subject = subject[4:] if subject.startswith("sub-") else subject
    bids_path = Path(bids_dir) if bids_dir is not None else None
    records = collect_runs(output_dir, subject)
    done = [r for r in records if r.has_outputs]
    failed = [r for r in records if r.status in LEFT_OUT_STATUSES]

    sections: list[str] = []
    links: list[tuple[str, str]] = [("summary", "Summary")]
    all_problems: list[str] = []
    for record in done:
        anchor = section_anchor(record)
        title = f"{record.name} · atlas-{record.atlas} · {record.denoise}"
        if record.stat:
            title += f" · stat-{record.stat}"
        try:
            content, problems = _run_section(record, output_dir, bids_path)
        except Exception as err:  # unreadable outputs: say so in the report, go on
            logger.warning("Report section %s failed: %s", title, err, exc_info=True)
            problems = [f"{title}: cannot build this section ({type(err).__name__}: {err})"]
            content = H.alert(problems, "error")
        all_problems.extend(
            f"{record.name} [{record.atlas}, {record.denoise}]: {p}" for p in problems
        )
        sections.append(H.section(title, content, anchor=anchor))
        label = " · ".join(
            [record.name]
            + ([record.atlas] if len({r.atlas for r in done}) > 1 else [])
            + ([f"stat-{record.stat}"] if len({r.stat for r in done}) > 1 else [])
            + [record.denoise]
        )
        links.append((anchor, label))

    failures = [
        f"{r.name} [{r.atlas}, {r.denoise}] {r.status.upper()}: {r.reason or 'no reason given'}"
        for r in failed
    ]
    notes: list[str] = []
    for r in done:
        for w in r.sidecar.get("Warnings") or []:
            notes.append(f"{r.name} [{r.atlas}, {r.denoise}]: {w}")
        if r.n_regions_low_coverage:
            notes.append(
                f"{r.name} [{r.atlas}, {r.denoise}]: {r.n_regions_low_coverage} region(s) "
                "below the coverage threshold were written as n/a"
            )
    notes.extend(all_problems)
    messages = failures + notes
    summary = [
        f'<p class="lead">Output dataset <code>{H.esc(output_dir)}</code>; report built '
        f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} by bidsapp {H.esc(__version__)}."
        f" {len(done)} run output(s), {len(failed)} failure(s).</p>"
    ]
    if not records:
        summary.append(
            H.alert([f"No participant-level outputs or status found for sub-{subject}."], "error")
        )
    if failures:
        summary.append(H.alert(failures, "error", title="Failures"))
    if notes:
        summary.append(H.alert(notes, "warning", title="Warnings"))
    if records and not messages:
        summary.append(H.alert(["Every run succeeded without warnings."], "ok"))
    if records:
        summary.append(_status_table(records))
    body = (
        f"<h1>bidsapp report: sub-{H.esc(subject)}</h1>"
        + H.nav(links)
        + H.section("Summary", "".join(summary), anchor="summary")
        + "".join(sections)
        + f"<footer>bidsapp {H.esc(__version__)}. Self-contained page: figures are embedded, "
        "nothing is fetched.</footer>"
    )
    return H.HTMLReport(f"sub-{subject} · bidsapp", body, warnings=messages)


def write_participant_report(output_dir: Path, subject: str, bids_dir: Path | None = None) -> Path:
    """Write ``OUTPUT_DIR/sub-<label>.html`` from the subject's outputs on disk.

    Also makes sure ``.bidsignore`` lists ``*.html`` (with every pattern of
    :data:`bidsapp.dataset.dataset_description.BIDSIGNORE_PATTERNS`).

    Parameters
    ----------
    output_dir : Path
        Output dataset root.
    subject : str
        Subject label, with or without ``sub-``.
    bids_dir : Path, optional
        The fMRIPrep dataset, when it is not where ``DatasetLinks`` says.

    Returns
    -------
    Path
        The report written.
    """
    from bidsapp.dataset import dataset_description

    subject = subject[4:] if subject.startswith("sub-") else subject
    report = build_participant_report(output_dir, subject, bids_dir)
    path = report.save_as_html(Path(output_dir) / f"sub-{subject}.html")
    dataset_description.write_bidsignore(output_dir)
    return path
