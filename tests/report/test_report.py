"""Tests for bidsapp.report: the participant report, the masker report, HTML and figures.

The participant outputs are the session's (``participant_outputs_copy`` in conftest.py,
built by ``support/participant_outputs.py``), copied for this module, which writes reports
into them.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from support.html_page import assert_self_contained, decode_images, parse_page
from support.participant_outputs import (
    ATLAS_LABEL,
    DROPPED_LABEL,
    FAILED,
    STRATEGIES,
    SUBJECTS,
    report_atlas,
)

from bidsapp.report.run_data import report_data_path

RUN_FIGURES = {"contours", "coverage", "fd", "carpet", "connectivity"}


# --------------------------------------------------------------------------------------
# A participant-level output dataset
# --------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------
# HTML inspection
# --------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------
# Participant report
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reports(participant_outputs_copy):
    from bidsapp.report.participant import write_participant_report

    out = participant_outputs_copy["output_dir"]
    return {s: write_participant_report(out, s) for s in SUBJECTS}


def test_a_report_per_subject_at_the_output_root(participant_outputs_copy, reports):
    out = participant_outputs_copy["output_dir"]
    for subject, path in reports.items():
        assert path == out / f"sub-{subject}.html"
        assert path.is_file()


def test_every_run_has_one_figure_per_item(participant_outputs_copy, reports):
    from bidsapp.report.html import anchor_id

    for subject, path in reports.items():
        page = parse_page(path.read_text(encoding="utf-8"))
        ok = [
            r
            for r in participant_outputs_copy["records"]
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


def test_failures_and_warnings_are_written_in_words(participant_outputs_copy, reports):
    subject, run, strategy = FAILED
    text = " ".join(parse_page(reports[subject].read_text(encoding="utf-8")).text)
    assert f"run-{run} [{ATLAS_LABEL}, {strategy}] FAILED" in text
    assert "only 1 volume(s) left after censoring" in text
    assert "no RepetitionTime in the JSON sidecar" in text
    clean = " ".join(parse_page(reports["01"].read_text(encoding="utf-8")).text)
    assert "FAILED" not in clean


def test_regions_set_to_na_are_named(participant_outputs_copy, reports):
    lut = report_atlas(participant_outputs_copy["tf_home"]).lut
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


def test_sources_resolve_through_dataset_links(participant_outputs_copy, tmp_path):
    from bidsapp.report.sources import resolve_source

    out = participant_outputs_copy["output_dir"]
    bids_dir = participant_outputs_copy["bids_dir"]
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


def test_the_report_reads_what_the_app_wrote_never_the_bold(participant_outputs_copy, monkeypatch):
    """The mean BOLD, FD and censoring come from the app's report data, not the inputs."""
    from bidsapp.report.participant import build_participant_report
    from bidsapp.report.run_data import read_report_data

    out = participant_outputs_copy["output_dir"]
    timeseries = sorted(out.glob("sub-01/func/*_timeseries.tsv"))
    data = read_report_data(report_data_path(out, timeseries[0]))
    assert data is not None and data.mean is not None and data.mean.ndim == 3
    assert data.fd is not None and data.preset_description
    real_load = nib.load

    def no_bold(path, *args, **kwargs):
        assert not re.search(r"_bold\.nii(\.gz)?$", str(path)), f"the report read {path}"
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(nib, "load", no_bold)
    report = build_participant_report(out, "01", participant_outputs_copy["bids_dir"])
    page = parse_page(report.html)
    assert "not drawn" not in " ".join(page.text)
    assert [k for _, k in page.figures].count("contours") == 4


@pytest.mark.slow
def test_missing_inputs_are_reported_not_fatal(participant_outputs_copy, tmp_path):
    import shutil

    from bidsapp.report.participant import write_participant_report

    out = tmp_path / "copy"
    shutil.copytree(participant_outputs_copy["output_dir"], out)
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


def test_carpet_image_averages_bins_and_keeps_what_was_removed():
    from bidsapp.report.figures import carpet_image

    rng = np.random.default_rng(0)
    n_volumes, n_regions = 12, 6
    retained = [v for v in range(n_volumes) if v not in (0, 5)]  # 0: dummy, 5: censored
    series = rng.standard_normal((len(retained), n_regions))
    series[:, 4] = np.nan  # a region set to n/a
    full, blocks = carpet_image(series, retained, n_volumes, max_shape=(100, 100))
    assert full.shape == (n_regions, n_volumes) and blocks == []
    assert np.isnan(full[:, [0, 5]]).all() and np.isnan(full[4]).all()
    kept = series[:, [0, 1, 2, 3, 5]]
    zscored = (kept - kept.mean(axis=0)) / kept.std(axis=0)
    assert np.allclose(full[[0, 1, 2, 3, 5]][:, retained], zscored.T)

    binned, _ = carpet_image(series, retained, n_volumes, max_shape=(3, 4))
    assert binned.shape == (3, 4)  # rows in pairs, columns in threes
    expected = full.reshape(3, 2, 4, 3).mean(axis=(1, 3))
    # A bin holding a removed volume (columns 0-2, 3-5) or a region set to n/a (rows 4-5)
    # shows as removed; the others are the mean of their values.
    assert np.isnan(binned[:, :2]).all() and np.isnan(binned[2]).all()
    assert np.allclose(binned[:2, 2:], expected[:2, 2:])


def test_carpet_image_orders_rows_by_network():
    from bidsapp.report.figures import carpet_image

    series = np.arange(12.0).reshape(4, 3) ** 2
    networks = ["Vis", "Default", "Vis"]
    image, blocks = carpet_image(series, networks=networks)
    alone, _ = carpet_image(series)
    assert blocks == [("Vis", 0, 2), ("Default", 2, 3)]
    assert np.allclose(image, alone[[0, 2, 1]])


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
def masker_inputs(participant_outputs_copy):
    out = participant_outputs_copy["output_dir"]
    bids_dir = participant_outputs_copy["bids_dir"]
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

    subjects = ("01", "02")
    bids = make_dataset(
        subjects=subjects, n_volumes=100, voxel_size_mm=6.0, templateflow_home=templateflow_home
    )
    out = tmp_path / "out"
    common = ["--atlas", "Schaefer2018:100Parcels7Networks", "-w", str(tmp_path / "work")]
    assert main([str(bids), str(out), "participant", *common, "--no-reports"]) == 0
    assert not list(out.glob("*.html"))
    for strategy in STRATEGIES:
        args = [str(bids), str(out), "participant", *common, "--denoise-strategy", strategy]
        assert main([*args, "--overwrite"]) == 0
    for subject in subjects:
        page = parse_page((out / f"sub-{subject}.html").read_text(encoding="utf-8"))
        assert_self_contained(page)
        kinds = [k for _, k in page.figures]
        # 2 runs x 2 strategies, one figure per item each
        assert sorted(kinds) == sorted(list(RUN_FIGURES) * 4)
        decode_images(page)
    assert main([str(bids), str(out), "group"]) == 0
    summary = pd.read_csv(out / "group" / "runs.tsv", sep="\t")
    assert len(summary) == len(subjects) * 2 * 2
    assert set(summary["status"]) == {"ok"}
    assert (out / "group.html").is_file()
