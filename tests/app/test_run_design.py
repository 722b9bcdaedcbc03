"""The design matrix and the censoring mask of each run, written with its outputs.

Through the command line on the small synthetic dataset: the files hold what the extraction
used (the regressors of ``load_confounds_strategy``, the volumes the sidecar says were
censored), every atlas's set records them, and resume trusts them only while unchanged.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from bidsapp import cli
from bidsapp.confounds import load_confounds_strategy
from bidsapp.dataset import fileio, run_outputs, tsvio

ATLASES = ("Schaefer2018:100Parcels7Networks", "Schaefer2018:400Parcels7Networks")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


@pytest.fixture
def longer(make_dataset, templateflow_home) -> Path:
    """One subject, two runs of 80 volumes: enough for scrubbing's 33 regressors."""
    return make_dataset(
        subjects=("01",), runs=(1, 2), n_volumes=80, voxel_size_mm=6.0,
        templateflow_home=templateflow_home,
    )  # fmt: skip


def _run(capsys, bids: Path, out: Path, *extra) -> str:
    argv = [str(bids), str(out), "participant", "--no-reports"]
    for atlas in ATLASES:
        argv += ["--atlas", atlas]
    code = cli.main(argv + [str(e) for e in extra])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    return stdout


def test_design_and_outliers_hold_what_the_run_used(capsys, tmp_path, longer):
    out = tmp_path / "out"
    _run(capsys, longer, out, "--denoise-strategy", "scrubbing.2")
    func = out / "sub-01" / "func"
    designs = sorted(func.glob("*_design.tsv"))
    assert [p.name for p in designs] == [
        f"sub-01_task-rest_run-{r}_space-MNI152NLin2009cAsym_res-2_desc-scrubbing2_design.tsv"
        for r in (1, 2)
    ]
    for design_path in designs:
        prefix = design_path.name[: -len("_res-2_desc-scrubbing2_design.tsv")]
        bold = longer / "sub-01" / "func" / f"{prefix}_res-2_desc-preproc_bold.nii.gz"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected, sample_mask = load_confounds_strategy(str(bold), "scrubbing.2")
        design = tsvio.read_tsv(design_path)
        assert list(design.columns) == list(expected.columns)
        np.testing.assert_allclose(design.to_numpy(), expected.to_numpy(), rtol=1e-12, atol=0)

        outliers = tsvio.read_tsv(
            design_path.with_name(design_path.name.replace("design", "outliers"))
        )
        flags = outliers["outlier"].to_numpy()
        assert len(flags) == len(design)
        kept = np.flatnonzero(flags == 0)
        np.testing.assert_array_equal(kept, sample_mask)
        assert 0 < flags.sum() < len(flags)  # FD > 0.2 mm censored something, not everything
        meta = json.loads(
            design_path.with_name(
                design_path.name.replace("design.tsv", "outliers.json")
            ).read_text()
        )
        assert meta["FramewiseDisplacementThreshold"] == 0.2
        assert meta["StdDVARSThreshold"] == 1.5
        assert meta["MinimumSegmentLength"] == 5

        # Both atlases' sets record the shared files, and agree with the file on disk.
        sidecars = sorted(func.glob(f"{prefix}_atlas-*_desc-scrubbing2_timeseries.json"))
        assert len(sidecars) == 2
        for path in sidecars:
            sidecar = json.loads(path.read_text())
            assert sidecar["CensoredVolumes"] == np.flatnonzero(flags).tolist()
            assert sidecar["ConfoundColumns"] == list(design.columns)
            members = sidecar[run_outputs.OUTPUT_FILES_KEY]
            assert members[design_path.name] == fileio.sha256_digest(design_path.read_bytes())
            assert design_path.name.replace("design", "outliers") in members


def test_resume_trusts_the_shared_files_only_while_unchanged(capsys, tmp_path, small):
    out = tmp_path / "out"
    _run(capsys, small, out)
    stdout = _run(capsys, small, out)
    assert "0 written, 4 already done" in stdout
    design = next((out / "sub-01" / "func").glob("*_run-1_*_design.tsv"))
    original = design.read_text()
    design.write_text(original.replace("0", "1", 1))
    stdout = _run(capsys, small, out)
    assert "2 written, 2 already done" in stdout  # both atlases of run 1
    assert design.read_text() == original
    stdout = _run(capsys, small, out)
    assert "0 written, 4 already done" in stdout


def test_none_strategy_writes_outliers_but_no_design(capsys, tmp_path, small):
    out = tmp_path / "out"
    _run(capsys, small, out, "--denoise-strategy", "none")
    func = out / "sub-01" / "func"
    assert not list(func.glob("*_design.tsv"))
    assert len(list(func.glob("*_desc-none_outliers.tsv"))) == 2
