"""Tests for bidsapp.report: the participant report, the masker report, HTML and figures.

Participant outputs are built in a temporary directory from a synthetic fMRIPrep dataset
(``bidsapp.synthetic``): real BOLD, brain masks, confounds and atlas images, a simple numpy
extraction (region means, motion/WM/CSF regression, censoring), and the real writers of
``bidsapp.dataset.outputs`` (names, sidecars, status tables). ``make_participant_outputs`` is also
used by ``tests/test_group.py``.
"""

from __future__ import annotations

import base64
import io
import json
import re
import warnings
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bidsapp import synthetic as demo
from bidsapp.app.config import DenoiseConfig
from bidsapp.app.confounds_selection import (
    _non_steady_state,
    _preset_parameters,
    preset_description,
    thresholds_in_force,
)
from bidsapp.dataset import atlas_copy, dataset_description, naming, run_outputs, status_tables
from bidsapp.image import resample_to_img
from bidsapp.report.run_data import RunReportData, report_data_path, write_report_data

SPACE = "MNI152NLin2009cAsym"
ATLAS_LABEL = "Schaefer100"
SUBJECTS = ("01", "02", "03")
RUNS = (1, 2)
STRATEGIES = ("simple", "scrubbing")
#: (subject, run, strategy) that fails at the participant level in the fixture.
FAILED = ("03", 2, "scrubbing")
#: Atlas label value removed from run-1 brain masks, so it is written as n/a.
DROPPED_LABEL = 5
RUN_FIGURES = {"contours", "coverage", "fd", "carpet", "connectivity"}


# --------------------------------------------------------------------------------------
# A participant-level output dataset
# --------------------------------------------------------------------------------------


def _atlas(tf_home: Path) -> SimpleNamespace:
    folder = tf_home / f"tpl-{SPACE}"
    dseg = folder / f"tpl-{SPACE}_res-02_atlas-Schaefer2018_desc-100Parcels7Networks_dseg.nii.gz"
    lut_path = folder / f"tpl-{SPACE}_atlas-Schaefer2018_desc-100Parcels7Networks_dseg.tsv"
    lut = pd.read_csv(lut_path, sep="\t")
    return SimpleNamespace(label=ATLAS_LABEL, space=SPACE, dseg=dseg, lut=lut, lut_path=lut_path)


def _extract(bold, mask, atlas, confounds, strategy):
    """Region means, confound regression, censoring, z-scoring: a small stand-in pipeline."""
    img = nib.load(bold)
    data = np.asarray(img.dataobj, dtype=float)
    labels = np.asarray(
        resample_to_img(nib.load(atlas.dseg), img, interpolation="nearest").dataobj
    ).astype(int)
    brain = np.asarray(nib.load(mask).dataobj) > 0
    n = data.shape[3]
    nss = [
        int(np.flatnonzero(confounds[c].to_numpy())[0])
        for c in confounds
        if c.startswith("non_steady_state_outlier")
    ]
    fd = confounds["framewise_displacement"].to_numpy(dtype=float)
    censored = set(nss)
    if strategy == "scrubbing":
        censored |= {int(i) for i in np.flatnonzero(np.nan_to_num(fd) > 0.5)}
    kept = [i for i in range(n) if i not in censored]
    columns = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z", "csf", "white_matter"]
    if strategy == "scrubbing":
        columns += [f"{c}_derivative1" for c in columns[:6]]
    design = confounds[columns].fillna(0).to_numpy()[kept]
    design = np.column_stack([design - design.mean(0), np.ones(len(kept))])
    names, series, coverage = [], [], []
    for index, name in zip(atlas.lut["index"], atlas.lut["name"], strict=True):
        region = labels == index
        cov = float((region & brain).sum() / max(region.sum(), 1))
        names.append(name)
        coverage.append(cov)
        if cov < 0.5:
            series.append(np.full(len(kept), np.nan))
            continue
        signal = data[region & brain].mean(axis=0)[kept]
        resid = signal - design @ np.linalg.lstsq(design, signal, rcond=None)[0]
        series.append((resid - resid.mean()) / resid.std(ddof=1))
    timeseries = pd.DataFrame(np.column_stack(series), columns=names)
    cov_series = pd.Series(coverage, index=names)
    return timeseries, cov_series, kept, sorted(censored), columns, fd


def make_participant_outputs(root: Path) -> dict:
    """Build an fMRIPrep dataset and participant outputs like bidsapp writes them.

    Returns a dict with ``bids_dir``, ``output_dir`` and ``records``: one entry per
    (subject, run, strategy) with its status and, when ok, the timeseries path.
    """
    tf_home = demo.make_templateflow_home(
        root / "templateflow", atlases=(("Schaefer2018", "100Parcels7Networks"),)
    )
    bids_dir = demo.make_fmriprep_dataset(
        root / "fmriprep", subjects=SUBJECTS, runs=RUNS, templateflow_home=tf_home
    )
    out = root / "out"
    dataset_description.write_dataset_description(
        out, name="bidsapp outputs", version="0.1.0", source_dir=bids_dir
    )
    atlas = _atlas(tf_home)
    files = atlas_copy.copy_atlas(out, atlas)
    atlas_uri = naming.bids_uri(files.image, root=files.root, dataset="atlases")
    records = []
    for subject in SUBJECTS:
        rows = []
        for run in RUNS:
            func = bids_dir / f"sub-{subject}" / "func"
            prefix = f"sub-{subject}_task-rest_run-{run}"
            bold = func / f"{prefix}_space-{SPACE}_res-2_desc-preproc_bold.nii.gz"
            mask = func / f"{prefix}_space-{SPACE}_res-2_desc-brain_mask.nii.gz"
            conf_path = func / f"{prefix}_desc-confounds_timeseries.tsv"
            if run == 1:  # signal dropout: one region falls outside the brain mask
                mask_img = nib.load(mask)
                labels = np.asarray(
                    resample_to_img(nib.load(atlas.dseg), mask_img, "nearest").dataobj
                )
                keep = (np.asarray(mask_img.dataobj) > 0) & (labels != DROPPED_LABEL)
                nib.save(nib.Nifti1Image(keep.astype(np.uint8), mask_img.affine), mask)
            confounds = pd.read_csv(conf_path, sep="\t", na_values=["n/a"])
            entities = {"subject": subject, "task": "rest", "run": run, "space": SPACE}
            for strategy in STRATEGIES:
                row = {**entities, "atlas": ATLAS_LABEL, "denoise": strategy}
                if (subject, run, strategy) == FAILED:
                    reason = f"{bold.name}: only 1 volume(s) left after censoring"
                    rows.append({**row, "status": "failed", "reason": reason})
                    records.append({**row, "status": "failed", "reason": reason})
                    continue
                ts, cov, kept, censored, columns, fd = _extract(
                    bold, mask, atlas, confounds, strategy
                )
                paths = run_outputs.output_paths(
                    out, entities, atlas=ATLAS_LABEL, strategy="mean", denoise=strategy
                )
                below = [n for n, c in cov.items() if c < 0.5]
                warn = ["no RepetitionTime in the JSON sidecar; using 2 s"] if run == 2 else []
                sidecar = {
                    "SamplingFrequency": 0.5,
                    "RepetitionTime": 2.0,
                    "Sources": [
                        naming.bids_uri(p, root=bids_dir, dataset="preprocessed")
                        for p in (bold, mask, conf_path)
                    ]
                    + [atlas_uri],
                    "Atlas": {
                        "Name": "Schaefer2018",
                        "Description": "100Parcels7Networks",
                        "Label": ATLAS_LABEL,
                        "Space": SPACE,
                        "Source": "templateflow",
                    },
                    "Extraction": {
                        "strategy": "mean",
                        "standardize": "zscore_sample",
                        "detrend": False,
                        "low_pass": None,
                        "high_pass": None,
                        "smoothing_fwhm": None,
                        "min_coverage": 0.5,
                    },
                    "Denoising": {
                        "name": strategy,
                        "label": strategy,
                        "confounds_columns": None,
                        "fd_threshold": None,
                        "std_dvars_threshold": None,
                        "dummy_scans": None,
                    },
                    "ConfoundColumns": columns,
                    "NumberOfVolumes": len(fd),
                    "RetainedVolumes": kept,
                    "CensoredVolumes": censored,
                    "MeanFramewiseDisplacement": float(np.nanmean(fd)),
                    "RegionsBelowCoverage": below,
                    "Warnings": warn,
                    "SoftwareName": "bidsapp",
                    "SoftwareVersion": "0.1.0",
                }
                corr = ts.corr()  # NaN rows/columns for regions set to n/a
                written = run_outputs.write_run_outputs(
                    paths,
                    timeseries=ts,
                    timeseries_sidecar=sidecar,
                    coverage=cov,
                    coverage_sidecar={"Description": "coverage"},
                    relmat=corr,
                    relmat_sidecar={**run_outputs.relmat_metadata(), "NodeFiles": files.node_files},
                )
                # What the app records for the report from its one pass (logs/report/).
                denoise = DenoiseConfig(name=strategy)
                thresholds = thresholds_in_force(denoise, _preset_parameters(denoise))
                data = RunReportData(
                    non_steady_state=_non_steady_state(confounds, None),
                    fd=fd,
                    fd_threshold=thresholds[0],
                    std_dvars_threshold=thresholds[1],
                    preset_description=preset_description(denoise),
                    mean=np.asarray(nib.load(bold).dataobj, dtype=float).mean(axis=3),
                    affine=nib.load(bold).affine,
                )
                write_report_data(report_data_path(out, paths.timeseries), data, out)
                status = {
                    "status": "ok",
                    "reason": "; ".join(warn),
                    "n_volumes": len(fd),
                    "n_volumes_kept": len(kept),
                    "mean_fd": float(np.nanmean(fd)),
                    "n_regions_low_coverage": len(below),
                    "outputs": [str(p) for p in written],
                }
                rows.append({**row, **status})
                records.append({**row, **status, "timeseries": paths.timeseries})
        status_tables.write_subject_status(out, subject, rows)
    return {"bids_dir": bids_dir, "output_dir": out, "records": records, "tf_home": tf_home}


@pytest.fixture(scope="module")
def participant_outputs(tmp_path_factory):
    return make_participant_outputs(tmp_path_factory.mktemp("report"))


# --------------------------------------------------------------------------------------
# HTML inspection
# --------------------------------------------------------------------------------------


class _Page(HTMLParser):
    """Collect sections, figures, images, links and text of a report."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []
        self.figures: list[tuple[str | None, str]] = []  # (section id, kind)
        self.images: list[str] = []
        self.text: list[str] = []
        self.stack: list[str | None] = []
        self.section: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        self.attrs.extend((tag, k, v or "") for k, v in attrs)
        if tag == "section":
            self.stack.append(a.get("id"))
            if a.get("id"):
                self.section = a["id"]
        if tag == "figure":
            self.figures.append((self.section, a.get("data-figure", "")))
        if tag == "img":
            self.images.append(a.get("src", ""))

    def handle_endtag(self, tag):
        if tag == "section" and self.stack:
            closed = self.stack.pop()
            if closed is not None:
                ids = [s for s in self.stack if s is not None]
                self.section = ids[-1] if ids else None

    def handle_data(self, data):
        self.text.append(data)


def parse_page(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def assert_self_contained(page: _Page) -> None:
    """No script, no external resource: images inline, links in-page or relative."""
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    for tag, key, value in page.attrs:
        if key == "src":
            assert value.startswith("data:image/"), f"<{tag}> loads {value[:60]}"
        if key == "href":
            assert not re.match(r"^[a-z][a-z0-9+.-]*:|^//", value, re.I), f"external {value}"
        assert "http://" not in value and "https://" not in value, f"URL in {tag} {key}"


def decode_images(page: _Page) -> list[tuple[int, int]]:
    """Decode every embedded PNG; return their sizes."""
    from PIL import Image

    sizes = []
    for src in page.images:
        header, _, payload = src.partition(",")
        assert header == "data:image/png;base64"
        image = Image.open(io.BytesIO(base64.b64decode(payload, validate=True)))
        image.load()
        assert image.width > 100 and image.height > 50
        sizes.append(image.size)
    return sizes


# --------------------------------------------------------------------------------------
# Participant report
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reports(participant_outputs):
    from bidsapp.report.participant import write_participant_report

    out = participant_outputs["output_dir"]
    return {s: write_participant_report(out, s) for s in SUBJECTS}


def test_a_report_per_subject_at_the_output_root(participant_outputs, reports):
    out = participant_outputs["output_dir"]
    for subject, path in reports.items():
        assert path == out / f"sub-{subject}.html"
        assert path.is_file()


def test_every_run_has_one_figure_per_item(participant_outputs, reports):
    from bidsapp.report.html import anchor_id

    for subject, path in reports.items():
        page = parse_page(path.read_text(encoding="utf-8"))
        ok = [
            r
            for r in participant_outputs["records"]
            if r["subject"] == subject and r["status"] == "ok"
        ]
        assert ok
        for r in ok:
            anchor = anchor_id(f"task-rest_run-{r['run']}-{ATLAS_LABEL}-mean-{r['denoise']}")
            kinds = [kind for section, kind in page.figures if section == anchor]
            assert sorted(kinds) == sorted(RUN_FIGURES), (subject, anchor, kinds)
        run_figures = [k for _, k in page.figures if k in RUN_FIGURES]
        assert len(run_figures) == len(RUN_FIGURES) * len(ok)


def test_reports_are_self_contained_and_images_decode(reports):
    for path in reports.values():
        text = path.read_text(encoding="utf-8")
        page = parse_page(text)
        assert_self_contained(page)
        sizes = decode_images(page)
        assert len(sizes) == len(page.figures)
        assert "Content-Security-Policy" in text


def test_failures_and_warnings_are_written_in_words(participant_outputs, reports):
    subject, run, strategy = FAILED
    text = " ".join(parse_page(reports[subject].read_text(encoding="utf-8")).text)
    assert f"run-{run} [{ATLAS_LABEL}, {strategy}] FAILED" in text
    assert "only 1 volume(s) left after censoring" in text
    assert "no RepetitionTime in the JSON sidecar" in text
    clean = " ".join(parse_page(reports["01"].read_text(encoding="utf-8")).text)
    assert "FAILED" not in clean


def test_regions_set_to_na_are_named(participant_outputs, reports):
    lut = _atlas(participant_outputs["tf_home"]).lut
    dropped = lut.loc[lut["index"] == DROPPED_LABEL, "name"].item()
    text = reports["01"].read_text(encoding="utf-8")

    def coverage_part(run: int, denoise: str) -> str:
        start = text.index(f'id="task-rest-run-{run}-{ATLAS_LABEL}-mean-{denoise}"')
        start = text.index('data-figure="coverage"', start)
        return text[start : text.index('data-figure="fd"', start)]

    for denoise in STRATEGIES:
        assert f"<li>{dropped}</li>" in coverage_part(1, denoise)
        assert f"<li>{dropped}</li>" not in coverage_part(2, denoise)
        assert "All 100 regions have coverage" in coverage_part(2, denoise)


def test_parameters_are_shown(reports):
    text = " ".join(parse_page(reports["02"].read_text(encoding="utf-8")).text)
    for expected in (
        "Denoise strategy",
        "scrubbing (desc-scrubbing)",
        "rot_z_derivative1",
        "zscore_sample",
        "Repetition time",
        "2 s",
        "high-pass none",
    ):
        assert expected in text, expected


def test_sources_resolve_through_dataset_links(participant_outputs, tmp_path):
    from bidsapp.report.sources import resolve_source

    out = participant_outputs["output_dir"]
    bids_dir = participant_outputs["bids_dir"]
    sidecar = json.loads(next(out.glob("sub-01/func/*run-1*simple_timeseries.json")).read_text())
    bold_uri, _, _, atlas_uri = sidecar["Sources"]
    assert resolve_source(bold_uri, out) == bids_dir / bold_uri.split(":", 2)[2]
    assert resolve_source(atlas_uri, out).is_relative_to(out / "sourcedata" / "atlases")
    # A moved fMRIPrep dataset is found through bids_dir, a missing one gives None.
    assert resolve_source(bold_uri.replace("sub-01", "sub-99"), out) is None
    moved = tmp_path / "moved"
    target = moved / bold_uri.split(":", 2)[2]
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x")
    assert resolve_source(bold_uri, out, bids_dir=moved) == target


def test_the_report_reads_what_the_app_wrote_never_the_bold(participant_outputs, monkeypatch):
    """The mean BOLD, FD and censoring come from the app's report data, not the inputs."""
    from bidsapp.report.participant import build_participant_report
    from bidsapp.report.run_data import read_report_data, report_data_path

    out = participant_outputs["output_dir"]
    timeseries = sorted(out.glob("sub-01/func/*_timeseries.tsv"))
    data = read_report_data(report_data_path(out, timeseries[0]))
    assert data is not None and data.mean is not None and data.mean.ndim == 3
    assert data.fd is not None and data.preset_description
    real_load = nib.load

    def no_bold(path, *args, **kwargs):
        assert not re.search(r"_bold\.nii(\.gz)?$", str(path)), f"the report read {path}"
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(nib, "load", no_bold)
    report = build_participant_report(out, "01", participant_outputs["bids_dir"])
    page = parse_page(report.html)
    assert "not drawn" not in " ".join(page.text)
    assert [k for _, k in page.figures].count("contours") == 4


def test_missing_inputs_are_reported_not_fatal(participant_outputs, tmp_path):
    import shutil

    from bidsapp.report.participant import write_participant_report

    out = tmp_path / "copy"
    shutil.copytree(participant_outputs["output_dir"], out)
    description = json.loads((out / "dataset_description.json").read_text())
    description["DatasetLinks"]["preprocessed"] = (tmp_path / "gone").as_uri()
    (out / "dataset_description.json").write_text(json.dumps(description))
    page = parse_page(write_participant_report(out, "01").read_text(encoding="utf-8"))
    text = " ".join(page.text)
    assert "input not found: bids:preprocessed:sub-01" in text
    assert "not drawn" in text  # the contour figure says why it is empty
    kinds = [k for _, k in page.figures]
    assert kinds.count("carpet") == 4 and kinds.count("connectivity") == 4
    decode_images(page)


def test_report_for_a_subject_without_outputs_says_so(tmp_path):
    from bidsapp.report.participant import write_participant_report

    path = write_participant_report(tmp_path, "09")
    assert "No participant-level outputs or status found for sub-09" in path.read_text()


# --------------------------------------------------------------------------------------
# Network grouping and figures
# --------------------------------------------------------------------------------------


def test_region_networks_from_names_and_lut():
    from bidsapp.report.networks import network_blocks, region_networks

    names = ["7Networks_LH_Vis_1", "7Networks_LH_Default_1", "7Networks_RH_Vis_1"]
    assert region_networks(names) == ["Vis", "Default", "Vis"]
    assert region_networks(["LH_SomMot_1", "RH_Cont_2"]) == ["SomMot", "Cont"]
    assert region_networks(["Left-Thalamus", "Right-Thalamus"]) is None
    lut = pd.DataFrame({"index": [1, 2], "name": ["a", "b"], "network": ["DMN", "Vis"]})
    assert region_networks(["a", "b"], lut) == ["DMN", "Vis"]
    order, blocks = network_blocks(["Vis", "Default", "Vis"])
    assert order.tolist() == [0, 2, 1]
    assert blocks == [("Vis", 0, 2), ("Default", 2, 3)]


def test_carpet_rejects_mismatched_retained_volumes():
    from bidsapp.report.figures import plot_carpet

    with pytest.raises(ValueError, match="3 retained indices for 4"):
        plot_carpet(np.zeros((4, 2)), retained=[0, 1, 2], n_volumes=6)


def test_figures_need_no_writable_home(tmp_path):
    import subprocess
    import sys

    code = (
        "import os\n"
        "from bidsapp.report import figures\n"
        "uri = figures.plot_message('no data')\n"
        "assert uri.startswith('data:image/png;base64,')\n"
        "print(os.environ['MPLCONFIGDIR'])\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "missing-home")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    folder = Path(done.stdout.strip())
    assert folder.name.startswith("bidsapp-mpl-")
    assert not folder.exists()  # removed at exit
    assert "not a writable directory" not in done.stderr and "Matplotlib" not in done.stderr
    assert not (tmp_path / "missing-home").exists()


def test_figure_helper_refuses_external_images():
    from bidsapp.report.html import figure

    with pytest.raises(ValueError, match="data:image"):
        figure("https://example.org/x.png", "x")


def test_html_escapes_text():
    from bidsapp.report.html import alert, table

    assert "<b>" not in alert(["<b>x</b>"])
    assert "&lt;b&gt;" in table(["a"], [["<b>"]])


# --------------------------------------------------------------------------------------
# Masker report
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def masker_inputs(participant_outputs):
    out = participant_outputs["output_dir"]
    bids_dir = participant_outputs["bids_dir"]
    func = bids_dir / "sub-02" / "func"
    bold = next(func.glob("*run-2*_desc-preproc_bold.nii.gz"))
    mask = next(func.glob("*run-2*_desc-brain_mask.nii.gz"))
    dseg = next((out / "sourcedata" / "atlases").rglob("*_dseg.nii.gz"))
    return SimpleNamespace(
        bold=bold, mask=mask, dseg=dseg, lut=dseg.with_name(dseg.name.replace(".nii.gz", ".tsv"))
    )


def test_masker_report_shows_regions_over_the_image(masker_inputs, tmp_path):
    from bidsapp.maskers import NiftiLabelsMasker
    from bidsapp.report.html import HTMLReport
    from bidsapp.report.masker import generate_masker_report

    masker = NiftiLabelsMasker(
        labels_img=str(masker_inputs.dseg),
        lut=str(masker_inputs.lut),
        mask_img=str(masker_inputs.mask),
        reports=True,
    ).fit(str(masker_inputs.bold))
    report = generate_masker_report(masker)
    assert isinstance(report, HTMLReport)
    page = parse_page(report.html)
    assert_self_contained(page)
    assert len(decode_images(page)) == 1
    text = " ".join(page.text)
    assert "7Networks_LH_Vis_1" in text  # the region table
    assert "NiftiLabelsMasker" in text and "labels_img" in text  # parameters
    assert report._repr_html_().startswith("<style>")
    assert "srcdoc=" in report.get_iframe()
    saved = report.save_as_html(tmp_path / "masker.html")
    assert saved.read_text(encoding="utf-8") == report.html


def test_masker_report_when_reports_disabled_or_not_fitted(masker_inputs):
    from bidsapp.maskers import NiftiLabelsMasker
    from bidsapp.report.masker import generate_masker_report

    masker = NiftiLabelsMasker(labels_img=str(masker_inputs.dseg), reports=False).fit()
    with pytest.warns(UserWarning, match="Report generation not enabled"):
        report = generate_masker_report(masker)
    page = parse_page(report.html)
    assert page.images == []
    assert "Report generation not enabled" in " ".join(page.text)
    with pytest.warns(UserWarning, match="run `fit`"):
        report = generate_masker_report(NiftiLabelsMasker(labels_img=str(masker_inputs.dseg)))
    assert parse_page(report.html).images == []


def test_masker_report_without_an_image_shows_the_atlas_alone(masker_inputs):
    from bidsapp.maskers import NiftiLabelsMasker
    from bidsapp.report.masker import generate_masker_report

    masker = NiftiLabelsMasker(labels_img=str(masker_inputs.dseg)).fit()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = generate_masker_report(masker)
    assert any("No image provided to fit" in str(w.message) for w in caught)
    page = parse_page(report.html)
    assert len(decode_images(page)) == 1
    assert "No image provided to fit" in " ".join(page.text)


# --------------------------------------------------------------------------------------
# End to end: the real pipeline writes the reports, the group level reads them
# --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_participant_and_group_levels_write_reports(tmp_path, templateflow_home, make_dataset):
    from bidsapp.cli import main

    bids = make_dataset(subjects=("01", "02", "03"), templateflow_home=templateflow_home)
    out = tmp_path / "out"
    common = ["--atlas", "Schaefer2018:100Parcels7Networks", "-w", str(tmp_path / "work")]
    assert main([str(bids), str(out), "participant", *common, "--no-reports"]) == 0
    assert not list(out.glob("*.html"))
    for strategy in STRATEGIES:
        args = [str(bids), str(out), "participant", *common, "--denoise-strategy", strategy]
        assert main([*args, "--overwrite"]) == 0
    for subject in ("01", "02", "03"):
        page = parse_page((out / f"sub-{subject}.html").read_text(encoding="utf-8"))
        assert_self_contained(page)
        kinds = [k for _, k in page.figures]
        # 2 runs x 2 strategies, one figure per item each
        assert sorted(kinds) == sorted(list(RUN_FIGURES) * 4)
        decode_images(page)
    assert main([str(bids), str(out), "group"]) == 0
    summary = pd.read_csv(out / "group" / "runs.tsv", sep="\t")
    assert len(summary) == 3 * 2 * 2
    assert set(summary["status"]) == {"ok"}
    assert (out / "group.html").is_file()
