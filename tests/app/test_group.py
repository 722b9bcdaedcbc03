"""Tests for bidsapp.app.group: summary table, group connectivity, QC-FC, group report, exit codes.

The participant outputs are the session's (``participant_outputs_copy`` in conftest.py): three
subjects x two runs x two denoising strategies, one failed run. Expected values are
computed here directly with numpy from the participant timeseries TSVs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from support.html_page import assert_self_contained, decode_images, parse_page
from support.participant_outputs import (
    ATLAS_LABEL,
    FAILED,
    RUNS,
    SPACE,
    STRATEGIES,
    SUBJECTS,
)

from bidsapp.app.config import RunConfig
from bidsapp.app.group import run_group
from bidsapp.app.group_stats import fisher_z_mean, qcfc


@pytest.fixture(scope="module")
def group_outputs(participant_outputs_copy):
    built = dict(participant_outputs_copy)
    config = RunConfig(built["bids_dir"], built["output_dir"], analysis_level="group")
    built["exit"] = run_group(config)
    return built


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)


def _direct_corr(path: Path) -> np.ndarray:
    """Pearson r of a timeseries TSV, NaN rows/columns for regions set to n/a."""
    values = _read(path).to_numpy(dtype=float)
    valid = np.isfinite(values).all(axis=0)
    corr = np.full((values.shape[1],) * 2, np.nan)
    corr[np.ix_(valid, valid)] = np.corrcoef(values[:, valid], rowvar=False)
    return corr


def _runs_of(records: list[dict], strategy: str) -> list[dict]:
    return [r for r in records if r["denoise"] == strategy and r["status"] == "ok"]


def _group_file(out: Path, stat: str, strategy: str) -> Path:
    name = f"task-rest_space-{SPACE}_atlas-{ATLAS_LABEL}_stat-{stat}_desc-{strategy}_relmat.tsv"
    return out / "group" / name


def test_group_level_succeeds_and_writes_its_files(group_outputs):
    out = group_outputs["output_dir"]
    assert group_outputs["exit"] == 0
    for name in ("runs.tsv", "runs.json", "qcfc.tsv"):
        assert (out / "group" / name).is_file()
    for strategy in STRATEGIES:
        for stat in ("pearsoncorrelation", "qcfc"):
            assert _group_file(out, stat, strategy).is_file()
            assert _group_file(out, stat, strategy).with_suffix(".json").is_file()
    assert (out / "group.html").is_file()
    ignored = (out / ".bidsignore").read_text().splitlines()
    assert "/group" in ignored and "*.html" in ignored


def test_summary_has_one_row_per_run_processed(group_outputs):
    summary = _read(group_outputs["output_dir"] / "group" / "runs.tsv")
    expected = {(r["subject"], r["run"], r["denoise"]): r for r in group_outputs["records"]}
    assert len(summary) == len(expected) == len(SUBJECTS) * len(RUNS) * len(STRATEGIES)
    got = {
        (f"{int(row.subject):02d}", int(row.run), row.denoise): row for row in summary.itertuples()
    }
    assert set(got) == set(expected)
    for key, record in expected.items():
        row = got[key]
        assert row.status == record["status"]
        assert row.atlas == ATLAS_LABEL
        if record["status"] == "ok":
            assert row.n_volumes == record["n_volumes"]
            assert row.n_volumes_kept == record["n_volumes_kept"]
            assert row.mean_fd == pytest.approx(record["mean_fd"])
            assert row.n_regions_low_coverage == record["n_regions_low_coverage"]
            assert row.stat == "mean"
        else:
            assert key == (FAILED[0], FAILED[1], FAILED[2])
            assert "only 1 volume(s) left after censoring" in row.reason
    # The scrubbing strategy censors more volumes than simple for the same run.
    kept = summary.pivot_table(index=["subject", "run"], columns="denoise", values="n_volumes_kept")
    assert (kept["scrubbing"].dropna() < kept["simple"][kept["scrubbing"].notna()]).all()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_group_connectivity_is_the_fisher_z_mean_of_the_runs(group_outputs, strategy):
    runs = _runs_of(group_outputs["records"], strategy)
    with np.errstate(divide="ignore"):
        z = np.stack([np.arctanh(_direct_corr(r["timeseries"])) for r in runs])
    expected = np.tanh(np.nanmean(z, axis=0))
    table = _read(_group_file(group_outputs["output_dir"], "pearsoncorrelation", strategy))
    assert table.columns[0] == "Node"
    got = table.drop(columns="Node").to_numpy(dtype=float)
    off = ~np.eye(got.shape[0], dtype=bool)
    np.testing.assert_allclose(got[off], expected[off], rtol=1e-12, atol=1e-12)
    # The region set to n/a in run-1 comes from run-2 only; every region has data somewhere.
    assert np.isfinite(got).all()
    assert len(runs) == (5 if strategy == FAILED[2] else 6)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_qcfc_matches_a_direct_computation(group_outputs, strategy):
    runs = _runs_of(group_outputs["records"], strategy)
    fd = np.array([r["mean_fd"] for r in runs])
    corr = np.stack([_direct_corr(r["timeseries"]) for r in runs])
    table = _read(_group_file(group_outputs["output_dir"], "qcfc", strategy))
    got = table.drop(columns="Node").to_numpy(dtype=float)
    n = got.shape[0]
    checked = too_few = 0
    for i in range(n):
        for j in range(i + 1, n):
            edge = corr[:, i, j]
            ok = np.isfinite(edge)
            if ok.sum() < 3:  # a correlation over fewer than 3 runs is left out (n/a)
                assert np.isnan(got[i, j]) and np.isnan(got[j, i])
                too_few += 1
                continue
            expected = np.corrcoef(fd[ok], edge[ok])[0, 1]
            assert got[i, j] == pytest.approx(expected, abs=1e-10)
            assert got[j, i] == pytest.approx(expected, abs=1e-10)
            checked += 1
    assert checked + too_few == n * (n - 1) // 2
    # The region dropped from run-1 has 3 runs for simple, 2 for scrubbing (one failed).
    assert too_few == (n - 1 if strategy == FAILED[2] else 0)
    summary = _read(group_outputs["output_dir"] / "group" / "qcfc.tsv")
    row = summary[summary["denoise"] == strategy].iloc[0]
    upper = got[np.triu_indices(n, k=1)]
    assert row.median_abs_qcfc == pytest.approx(np.nanmedian(np.abs(upper)))
    assert row.n_runs == len(runs)


def test_fisher_z_mean_skips_missing_edges():
    a = np.array([[1.0, 0.5, np.nan], [0.5, 1.0, np.nan], [np.nan, np.nan, np.nan]])
    b = np.array([[1.0, -0.2, 0.3], [-0.2, 1.0, 0.1], [0.3, 0.1, 1.0]])
    mean, count = fisher_z_mean([a, b])
    assert mean[0, 1] == pytest.approx(np.tanh((np.arctanh(0.5) + np.arctanh(-0.2)) / 2))
    assert mean[0, 2] == pytest.approx(0.3)  # only run b has region 2
    assert count[0, 1] == 2 and count[0, 2] == 1
    assert np.diag(mean).tolist() == [1.0, 1.0, 1.0]


def test_qcfc_against_scipy_with_missing_runs():
    rng = np.random.default_rng(3)
    fd = rng.uniform(0.05, 0.6, 12)
    mats = []
    for value in fd:
        m = np.eye(3)
        m[0, 1] = m[1, 0] = 0.8 * value + rng.normal(0, 0.05)
        m[0, 2] = m[2, 0] = rng.normal(0, 0.3)
        m[1, 2] = m[2, 1] = np.nan
        mats.append(m)
    mats[0][0, 2] = mats[0][2, 0] = np.nan
    fd[5] = np.nan
    r, p, n = qcfc(mats, fd)
    keep = np.isfinite(fd)
    expected = stats.pearsonr(fd[keep], [m[0, 1] for m, k in zip(mats, keep, strict=True) if k])
    assert r[0, 1] == pytest.approx(expected.statistic)
    assert p[0, 1] == pytest.approx(expected.pvalue)
    assert n[0, 1] == 11 and n[0, 2] == 10
    assert np.isnan(r[1, 2]) and np.isnan(r[0, 0])
    assert r[0, 1] > 0.8  # the built-in motion dependence is found


def test_group_report_compares_strategies(group_outputs):
    text = (group_outputs["output_dir"] / "group.html").read_text(encoding="utf-8")
    page = parse_page(text)
    assert_self_contained(page)
    decode_images(page)
    kinds = [k for _, k in page.figures]
    assert kinds.count("qcfc") == 1
    assert kinds.count("group-connectivity") == len(STRATEGIES)
    words = " ".join(page.text)
    assert "median |QC-FC|" in words
    assert "only 1 volume(s) left after censoring" in words
    for strategy in STRATEGIES:
        assert strategy in words
    hrefs = [v for tag, k, v in page.attrs if tag == "a" and k == "href"]
    assert "group/runs.tsv" in hrefs


def test_no_reports_skips_the_group_report(tmp_path, group_outputs):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(group_outputs["output_dir"], out)
    (out / "group.html").unlink()
    config = RunConfig(group_outputs["bids_dir"], out, analysis_level="group", reports=False)
    assert run_group(config) == 0
    assert not (out / "group.html").exists()
    assert (out / "group" / "runs.tsv").is_file()


def test_group_honours_the_participant_selection(tmp_path, group_outputs):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(group_outputs["output_dir"], out)
    config = RunConfig(
        group_outputs["bids_dir"],
        out,
        analysis_level="group",
        participant_labels=("01", "02"),
        reports=False,
    )
    assert run_group(config) == 0
    summary = _read(out / "group" / "runs.tsv")
    assert sorted(set(summary["subject"])) == [1, 2]
    assert len(summary) == 2 * len(RUNS) * len(STRATEGIES)
    qc = _read(out / "group" / "qcfc.tsv")
    assert qc["n_runs"].tolist() == [4, 4]


def test_group_without_participant_results_says_so(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    config = RunConfig(tmp_path, tmp_path / "out", analysis_level="group")
    assert run_group(config) != 0
    err = capsys.readouterr().err
    assert "no participant-level results" in err
    assert "Run the participant level first" in err
    assert not (tmp_path / "out" / "group").exists()
    missing = RunConfig(tmp_path, tmp_path / "nowhere", analysis_level="group")
    assert run_group(missing) != 0
    assert "no such directory" in capsys.readouterr().err


def test_group_with_only_failures_exits_non_zero(tmp_path, capsys):
    from bidsapp.dataset import status_tables

    rows = [
        {
            "subject": "01",
            "task": "rest",
            "space": SPACE,
            "atlas": ATLAS_LABEL,
            "denoise": "simple",
            "status": "failed",
            "reason": "no brain mask",
        }
    ]
    status_tables.write_subject_status(tmp_path, "01", rows)
    assert run_group(RunConfig(tmp_path, tmp_path, analysis_level="group")) == 1
    summary = _read(tmp_path / "group" / "runs.tsv")
    assert summary["status"].tolist() == ["failed"]
    assert "every run failed" in capsys.readouterr().err


def test_group_results_are_symmetric_with_counts_on_the_diagonal():
    rng = np.random.default_rng(7)
    fd = rng.uniform(0.05, 0.6, 6)
    mats = []
    for _ in fd:
        m = np.corrcoef(rng.normal(size=(30, 4)), rowvar=False)
        m[3, :] = m[:, 3] = np.nan  # region 3 has no data in any run
        mats.append(m)
    mats[0][1, 2] = mats[0][2, 1] = np.nan  # one run misses one edge
    mean, count = fisher_z_mean(mats)
    r, p, n = qcfc(mats, fd)
    for matrix in (mean, count, r, p, n):
        assert np.array_equal(matrix, matrix.T, equal_nan=True)
    assert np.isnan(mean[3, 3]) and np.diag(mean)[:3].tolist() == [1.0, 1.0, 1.0]
    assert count[1, 2] == 5 and count[0, 1] == 6 and np.diag(count).tolist() == [0, 0, 0, 0]
    assert np.diag(n).tolist() == [6, 6, 6, 0] and n[1, 2] == 5 and n[0, 3] == 0
    expected = stats.pearsonr(fd, [m[0, 2] for m in mats])
    assert r[2, 0] == pytest.approx(expected.statistic)
    assert p[2, 0] == pytest.approx(expected.pvalue)


def test_long_group_runs_print_a_progress_line(tmp_path, participant_outputs_copy, monkeypatch):
    import logging

    from bidsapp.app import group_compute

    monkeypatch.setattr(group_compute, "PROGRESS_MIN_RUNS", 2)
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("bidsapp.progress")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        config = RunConfig(
            participant_outputs_copy["bids_dir"],
            participant_outputs_copy["output_dir"],
            analysis_level="group",
            reports=False,
        )
        assert run_group(config) == 0
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    reads = [line for line in lines if line.startswith("bidsapp group: read ")]
    assert reads, lines
    total = int(reads[-1].split()[3].split("/")[1])
    assert reads[-1].startswith(f"bidsapp group: read {total}/{total} runs (100 %")
    counts = [int(line.split()[3].split("/")[0]) for line in reads]
    assert counts == sorted(counts) and len(counts) <= 10
