"""End-to-end tests of the participant level on synthetic fMRIPrep datasets.

Outputs are compared with nilearn 0.12.1 (``NiftiLabelsMasker`` + ``load_confounds`` /
``load_confounds_strategy`` on the same files) and with bidsapp's own
``MultiNiftiLabelsMasker``; selections, failure isolation, resume and atomic writes are
checked through the command line (``bidsapp.cli.main``) or ``bidsapp.run``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from support.runs import extract_one_run

import bidsapp
from bidsapp import cli
from bidsapp import synthetic as demo
from bidsapp.app.config import DenoiseConfig, ExtractionConfig
from bidsapp.app.status import EXIT_INTERRUPTED
from bidsapp.dataset import fileio, run_outputs, status_tables, tsvio

SPACE = "MNI152NLin2009cAsym"
AROMA_SPACE = "MNI152NLin6Asym"
ATLAS = "Schaefer2018:100Parcels7Networks"
LABEL = "Schaefer2018100Parcels7Networks"
TOL = {"rtol": 1e-5, "atol": 1e-6}

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


# ----------------------------------------------------------------------------- helpers


def tf_atlas(home: Path, template=SPACE, atlas="Schaefer2018", desc="100Parcels7Networks"):
    """(dseg image, look-up table) of a TemplateFlow atlas at res-02."""
    folder = home / f"tpl-{template}"
    entity = f"_desc-{desc}" if desc else ""
    dseg = folder / f"tpl-{template}_res-02_atlas-{atlas}{entity}_dseg.nii.gz"
    lut = folder / f"tpl-{template}_atlas-{atlas}{entity}_dseg.tsv"
    if not lut.is_file():
        lut = folder / f"tpl-{template}_atlas-{atlas}_dseg.tsv"
    return dseg, pd.read_csv(lut, sep="\t")


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def func_files(bids: Path, subject: str, run: int, session: str | None = None) -> dict:
    folder = bids / f"sub-{subject}" / (f"ses-{session}" if session else "") / "func"
    ses = f"_ses-{session}" if session else ""
    prefix = f"sub-{subject}{ses}_task-rest_run-{run}"
    return {
        "bold": folder / f"{prefix}_space-{SPACE}_res-2_desc-preproc_bold.nii.gz",
        "mask": folder / f"{prefix}_space-{SPACE}_res-2_desc-brain_mask.nii.gz",
        "confounds": folder / f"{prefix}_desc-confounds_timeseries.tsv",
        "aroma": folder / f"{prefix}_space-{AROMA_SPACE}_res-2_desc-smoothAROMAnonaggr_bold.nii.gz",
    }


def out_name(
    subject: str, run: int, *, desc="simple", stat="mean", atlas=LABEL, space=SPACE, res="2"
):
    grid = f"_res-{res}" if res else ""
    return (
        f"sub-{subject}/func/sub-{subject}_task-rest_run-{run}_space-{space}_atlas-{atlas}"
        f"{grid}_stat-{stat}_desc-{desc}_timeseries.tsv"
    )


def sidecar(path: Path) -> dict:
    return json.loads(path.with_suffix(".json").read_text())


def timeseries_files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*_timeseries.tsv"))


_LOADED: dict = {}


def _in_memory(path) -> nib.Nifti1Image:
    """The image held in memory, so that nilearn inflates each file once per session."""
    key = (str(path), Path(path).stat().st_mtime_ns)
    if key not in _LOADED:
        img = nib.load(str(path))
        _LOADED[key] = nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header)
    return _LOADED[key]


def _labels_on(dseg, bold) -> nib.Nifti1Image:
    """nilearn's own nearest-neighbour resampling of the atlas to the BOLD grid, cached."""
    from nilearn.image import resample_to_img

    key = ("labels", str(dseg), str(bold), Path(bold).stat().st_mtime_ns)
    if key not in _LOADED:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _LOADED[key] = resample_to_img(
                str(dseg), _in_memory(bold), interpolation="nearest", copy_header=True
            )
    return _LOADED[key]


def nilearn_by_label(bold, dseg, mask, confounds, sample_mask, t_r=2.0, **kwargs) -> dict:
    """nilearn 0.12.1's region signals, keyed by label value."""
    from nilearn.maskers import NiftiLabelsMasker

    masker = NiftiLabelsMasker(
        labels_img=_labels_on(dseg, bold),
        mask_img=None if mask is None else _in_memory(mask),
        t_r=t_r,
        standardize=kwargs.pop("standardize", "zscore_sample"),
        **kwargs,
    )
    if sample_mask is not None:
        sample_mask = np.asarray(sample_mask)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        signals = masker.fit_transform(
            _in_memory(bold), confounds=confounds, sample_mask=sample_mask
        )
    return {
        int(label): signals[:, column]
        for column, label in masker.region_ids_.items()
        if column != "background"
    }


def assert_matches(timeseries: pd.DataFrame, lut: pd.DataFrame, expected: dict) -> int:
    """Every finite column equals the oracle's signal of the same label; return how many."""
    lut = lut[lut["index"] != 0]
    assert list(timeseries.columns) == [str(n).strip() for n in lut["name"]]
    compared = 0
    for label, name in zip(lut["index"], lut["name"], strict=True):
        column = timeseries[str(name).strip()].to_numpy(dtype=float)
        if np.isnan(column).all():
            continue
        np.testing.assert_allclose(column, expected[int(label)], err_msg=str(name), **TOL)
        compared += 1
    return compared


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def one_run(fmriprep_dataset, templateflow_home):
    """sub-01 run-1 of the shared read-only dataset, and the 100-parcel atlas."""
    from bidsapp.dataset.atlas import get_atlas
    from bidsapp.dataset.query import find_runs

    runs = find_runs(fmriprep_dataset, participant_labels="01", bids_filters={"bold": {"run": 1}})
    assert len(runs) == 1
    return runs[0], get_atlas(ATLAS, space=SPACE, voxel_size_mm=4.0)


@pytest.fixture(scope="module")
def selection_dataset(tmp_path_factory, templateflow_home):
    """3 subjects x 2 sessions x 2 tasks; sub-03 has BOLD in T1w space only; sub-04 none."""
    root = demo.make_fmriprep_dataset(
        tmp_path_factory.mktemp("selection") / "fmriprep",
        subjects=("01", "02", "03"),
        sessions=("1", "2"),
        tasks=("rest", "nback"),
        runs=(None,),
        n_volumes=30,
        voxel_size_mm=6.0,
        t1w_space=True,
        anat_only_subjects=("04",),
        templateflow_home=templateflow_home,
    )
    for path in (root / "sub-03").rglob(f"*space-{SPACE}*"):
        path.unlink()
    return root


# ----------------------------------------------------------------------------- parity


@pytest.mark.slow
def test_default_outputs_equal_nilearn_and_validate(
    capsys, tmp_path, fmriprep_dataset, templateflow_home, snapshot_tree
):
    """The defaults equal load_confounds_strategy('simple') + NiftiLabelsMasker(mask)."""
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    before = snapshot_tree(fmriprep_dataset)  # read-only inputs, left as they were
    out = tmp_path / "out"
    code, stdout, _ = run_cli(capsys, fmriprep_dataset, out, "participant", "--no-reports")
    assert code == 0, stdout
    assert snapshot_tree(fmriprep_dataset) == before
    atlas_label = "Schaefer2018400Parcels7Networks"
    expected_files = [out_name(s, r, atlas=atlas_label) for s in ("01", "02") for r in (1, 2)]
    assert timeseries_files(out) == expected_files
    assert len([ln for ln in stdout.splitlines() if ln.startswith("ok ")]) == 4
    assert "58/60 volumes kept" in stdout and "done in" in stdout

    dseg, lut = tf_atlas(templateflow_home, desc="400Parcels7Networks")
    compared = 0
    for subject, run in (("01", 1), ("02", 2)):
        files = func_files(fmriprep_dataset, subject, run)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            confounds, sample_mask = load_confounds_strategy(str(files["bold"]), "simple")
        path = out / out_name(subject, run, atlas=atlas_label)
        timeseries = tsvio.read_tsv(path)
        expected = nilearn_by_label(files["bold"], dseg, files["mask"], confounds, sample_mask)
        compared += assert_matches(timeseries, lut, expected)
        meta = sidecar(path)
        assert meta["SamplingFrequency"] == 0.5
        assert meta["RetainedVolumes"] == [int(i) for i in sample_mask]
        assert meta["CensoredVolumes"] == [0, 1]
        assert len(timeseries) == len(sample_mask)
        assert meta["ConfoundColumns"] == list(confounds.columns)
        fd = pd.read_csv(files["confounds"], sep="\t")["framewise_displacement"]
        assert meta["MeanFramewiseDisplacement"] == pytest.approx(fd.mean())
        assert meta["Sources"][:3] == [
            f"bids:preprocessed:{p.relative_to(fmriprep_dataset)}"
            for p in (files["bold"], files["mask"], files["confounds"])
        ]
        assert meta["Sources"][3].startswith("bids:atlases:tpl-")
        assert meta["Denoising"]["name"] == "simple"
        assert meta["Extraction"]["standardize"] == "zscore_sample"
        assert meta["SoftwareVersion"] == bidsapp.__version__
        coverage = tsvio.read_tsv(
            path.with_name(
                path.name.replace("_stat-mean_desc-simple_timeseries", "_stat-coverage_bold")
            )
        )
        assert list(coverage["Node"]) == list(timeseries.columns)
        relmat = tsvio.read_tsv(
            path.with_name(
                path.name.replace("stat-mean", "stat-pearsoncorrelation").replace(
                    "timeseries", "relmat"
                )
            )
        )
        assert relmat.shape == (len(timeseries.columns), len(timeseries.columns) + 1)
    assert compared > 2 * 300  # most of the 400 regions are compared, in each run

    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetLinks"]["preprocessed"] == fmriprep_dataset.as_uri()
    assert (out / "sourcedata" / "atlases" / f"tpl-{SPACE}").is_dir()

    from bids import BIDSLayout

    layout = BIDSLayout(out, validate=False)
    found = layout.get(suffix="timeseries", extension=".tsv", atlas=atlas_label, desc="simple")
    assert sorted((f.entities["subject"], f.entities["run"]) for f in found) == [
        ("01", 1), ("01", 2), ("02", 1), ("02", 2)
    ]  # fmt: skip
    assert {f.entities["space"] for f in found} == {SPACE}

    validator = Path(sys.executable).parent / "bids-validator-deno"
    proc = subprocess.run(
        [str(validator), "--format", "json", str(out)], capture_output=True, text=True, timeout=300
    )
    report = json.loads(proc.stdout)
    errors = [i["code"] for i in report["issues"]["issues"] if i["severity"] == "error"]
    assert errors == [] and proc.returncode == 0


def test_multi_masker_of_a_subject_equals_the_outputs(
    tmp_path, fmriprep_dataset, templateflow_home
):
    """bidsapp's own MultiNiftiLabelsMasker over a subject's runs gives the same numbers."""
    from bidsapp.confounds import load_confounds_strategy
    from bidsapp.maskers import MultiNiftiLabelsMasker

    out = tmp_path / "out"
    assert (
        bidsapp.run(fmriprep_dataset, out, participant_label="02", atlas=ATLAS, reports=False) == 0
    )
    dseg, lut = tf_atlas(templateflow_home)
    files = [func_files(fmriprep_dataset, "02", r) for r in (1, 2)]
    bolds = [str(f["bold"]) for f in files]
    confounds, masks = load_confounds_strategy(bolds, "simple")
    masker = MultiNiftiLabelsMasker(
        labels_img=str(dseg),
        mask_img=str(files[0]["mask"]),
        standardize="zscore_sample",
        t_r=2.0,
        keep_masked_labels=False,
    )
    signals = masker.fit_transform(bolds, confounds=confounds, sample_mask=masks)
    ids = {int(v): k for k, v in masker.region_ids_.items() if k != "background"}
    for run, run_signals in zip((1, 2), signals, strict=True):
        timeseries = tsvio.read_tsv(out / out_name("02", run))
        expected = {label: run_signals[:, column] for label, column in ids.items()}
        assert assert_matches(timeseries, lut, expected) > 90


@pytest.mark.slow
@pytest.mark.parametrize(
    "preset, options",
    [
        ("scrubbing", {}),
        ("compcor", {"strategy": "median"}),
        ("simple", {"strategy": "standard_deviation", "standardize": "none"}),
        ("simple", {"standardize": "psc", "smoothing_fwhm": 8.0}),
        ("simple", {"standardize": "zscore", "detrend": True}),
        ("simple", {"low_pass": 0.08, "high_pass": 0.01}),
        ("scrubbing", {"low_pass": 0.1}),
    ],
    ids=lambda v: str(v) if isinstance(v, str) else "-".join(f"{k}={v[k]}" for k in v) or "-",
)
def test_presets_and_extraction_options_equal_nilearn(one_run, templateflow_home, preset, options):
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    run, atlas = one_run
    result = extract_one_run(run, atlas, DenoiseConfig(name=preset), ExtractionConfig(**options))
    kwargs = {"fd_threshold": 0.5, "std_dvars_threshold": 1.5} if preset == "scrubbing" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        confounds, sample_mask = load_confounds_strategy(str(run.preproc_bold), preset, **kwargs)
    assert result.retained == [int(i) for i in sample_mask]
    assert result.confound_columns == list(confounds.columns)
    if preset == "scrubbing":
        assert len(result.censored) > 2  # the synthetic motion spikes are censored
    nilearn_options = dict(options)
    if nilearn_options.get("standardize") == "none":
        nilearn_options["standardize"] = False
    expected = nilearn_by_label(
        run.preproc_bold, atlas.dseg, run.brain_mask, confounds, sample_mask, **nilearn_options
    )
    (series,) = result.per_atlas
    assert assert_matches(series.timeseries, atlas.lut, expected) > 90


@pytest.mark.slow
def test_none_json_preset_and_explicit_columns(one_run, tmp_path):
    from nilearn.interfaces.fmriprep import load_confounds

    run, atlas = one_run
    table = pd.read_csv(run.confounds, sep="\t")
    non_steady = list(range(2, 60))

    # none: no regression, fMRIPrep's non-steady-state volumes still dropped
    result = extract_one_run(run, atlas, DenoiseConfig(name="none"))
    assert result.confound_columns == [] and result.retained == non_steady
    expected = nilearn_by_label(run.preproc_bold, atlas.dseg, run.brain_mask, None, non_steady)
    assert assert_matches(result.per_atlas[0].timeseries, atlas.lut, expected) > 90

    # a JSON preset of load_confounds parameters
    preset = tmp_path / "motion6.json"
    preset.write_text(
        json.dumps({"parameters": {"strategy": ["high_pass", "motion"], "motion": "basic"}})
    )
    result = extract_one_run(run, atlas, DenoiseConfig(name=str(preset)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        confounds, mask = load_confounds(
            str(run.preproc_bold), strategy=("high_pass", "motion"), motion="basic"
        )
    assert result.confound_columns == list(confounds.columns) == [
        "cosine00", "rot_x", "rot_y", "rot_z", "trans_x", "trans_y", "trans_z"
    ]  # fmt: skip
    expected = nilearn_by_label(run.preproc_bold, atlas.dseg, run.brain_mask, confounds, mask)
    assert assert_matches(result.per_atlas[0].timeseries, atlas.lut, expected) > 90

    # explicit columns, regular expressions, in the order given
    denoise = DenoiseConfig(confounds_columns=("trans_[xyz]", "a_comp_cor_0[0-2]"))
    result = extract_one_run(run, atlas, denoise)
    columns = ["trans_x", "trans_y", "trans_z", "a_comp_cor_00", "a_comp_cor_01", "a_comp_cor_02"]
    assert result.confound_columns == columns and result.retained == non_steady
    expected = nilearn_by_label(
        run.preproc_bold, atlas.dseg, run.brain_mask, table[columns], non_steady
    )
    assert assert_matches(result.per_atlas[0].timeseries, atlas.lut, expected) > 90

    from bidsapp.app.run_inputs import ExtractionError

    with pytest.raises(ExtractionError, match="no column matching 'gsr_.*'"):
        extract_one_run(run, atlas, DenoiseConfig(confounds_columns=("gsr_.*",)))


def _expected_kept(table: pd.DataFrame, *, fd=np.inf, dvars=np.inf, first=2, segment=5):
    """Kept volumes computed here from the confounds table, independently of bidsapp."""
    with np.errstate(invalid="ignore"):
        bad = (table["framewise_displacement"] > fd).to_numpy() | (
            table["std_dvars"] > dvars
        ).to_numpy()
    kept = ~bad
    kept[:first] = False
    good = np.flatnonzero(~bad)
    # kept segments (between outliers) shorter than `segment` volumes are dropped too
    for piece in np.split(good, np.flatnonzero(np.diff(good) > 1) + 1):
        if 0 < piece.size < segment:
            kept[piece] = False
    return list(np.flatnonzero(kept))


@pytest.mark.parametrize(
    "denoise, thresholds",
    [
        ({"name": "simple", "fd_threshold": 0.5}, {"fd": 0.5}),
        ({"name": "simple", "std_dvars_threshold": 1.2}, {"dvars": 1.2}),
        ({"name": "scrubbing", "std_dvars_threshold": 0}, {"fd": 0.5}),
        (
            {"name": "scrubbing", "fd_threshold": 0.3, "std_dvars_threshold": 2},
            {"fd": 0.3, "dvars": 2},
        ),
        ({"name": "simple", "dummy_scans": 0}, {"first": 0}),
        ({"name": "simple", "dummy_scans": 5}, {"first": 5}),
        ({"name": "scrubbing", "dummy_scans": 1}, {"fd": 0.5, "dvars": 1.5, "first": 1}),
        ({"confounds_columns": ("csf",), "fd_threshold": 0.5}, {"fd": 0.5}),
    ],
    ids=lambda v: "-".join(f"{k}={v[k]}" for k in v),
)
def test_censoring_options_set_the_retained_volumes(one_run, denoise, thresholds):
    run, atlas = one_run
    table = pd.read_csv(run.confounds, sep="\t", na_values="n/a")
    result = extract_one_run(run, atlas, DenoiseConfig(**denoise))
    expected = _expected_kept(table, **thresholds)
    assert result.retained == expected
    assert result.censored == sorted(set(range(60)) - set(expected))
    assert len(result.per_atlas[0].timeseries) == len(expected)
    if "fd" in thresholds or "dvars" in thresholds:
        assert len(expected) < 58  # the thresholds did censor something


@pytest.mark.slow
def test_fd_threshold_matches_nilearn_scrubbing(one_run):
    from nilearn.interfaces.fmriprep import load_confounds

    run, atlas = one_run
    result = extract_one_run(run, atlas, DenoiseConfig(name="simple", fd_threshold=0.4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        confounds, sample_mask = load_confounds(
            str(run.preproc_bold),
            strategy=("high_pass", "motion", "wm_csf", "scrub"),
            fd_threshold=0.4,
            std_dvars_threshold=1e9,
        )
    assert result.retained == [int(i) for i in sample_mask]
    expected = nilearn_by_label(
        run.preproc_bold, atlas.dseg, run.brain_mask, confounds, sample_mask
    )
    assert assert_matches(result.per_atlas[0].timeseries, atlas.lut, expected) > 90


# ----------------------------------------------------------------------------- ICA-AROMA


@pytest.mark.slow
def test_ica_aroma_uses_the_aroma_image_its_space_and_mask(
    capsys, tmp_path, make_dataset, templateflow_home
):
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    bids = make_dataset(
        subjects=("01",), runs=(1,), n_volumes=40, aroma=True, templateflow_home=templateflow_home
    )
    out = tmp_path / "out"
    argv = [bids, out, "participant", "--denoise-strategy", "ica_aroma", "--atlas", "HOSPA:th25"]
    code, stdout, _ = run_cli(capsys, *argv, "--no-reports")
    assert code == 0, stdout
    assert "no desc-brain_mask in MNI152NLin6Asym" in stdout  # the warning, on its run
    name = out_name("01", 1, desc="icaaroma", atlas="HOSPAth25", space=AROMA_SPACE, res=None)
    assert timeseries_files(out) == [name]
    files = func_files(bids, "01", 1)
    meta = sidecar(out / name)
    assert meta["Sources"][0] == f"bids:preprocessed:{files['aroma'].relative_to(bids)}"
    assert not any("brain_mask" in s for s in meta["Sources"])
    assert meta["Atlas"]["Space"] == AROMA_SPACE
    assert meta["ConfoundColumns"] == ["cosine00", "csf", "white_matter"]

    dseg, lut = tf_atlas(templateflow_home, AROMA_SPACE, "HOSPA", "th25")
    assert (lut["index"] == 0).any()  # HOSPA's LUT lists the background...
    timeseries = tsvio.read_tsv(out / name)
    assert "Background" not in timeseries.columns  # ...which is not a region
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        confounds, sample_mask = load_confounds_strategy(str(files["aroma"]), "ica_aroma")
    expected = nilearn_by_label(files["aroma"], dseg, None, confounds, sample_mask)
    assert assert_matches(timeseries, lut, expected) == len(lut) - 1  # no mask: all regions

    # With fMRIPrep's mask of the AROMA space beside the image, it is used (and the new
    # input makes the rerun recompute rather than skip).
    aroma = nib.load(files["aroma"])
    mask = np.asarray(aroma.dataobj)[..., 0] != 0
    mask[: mask.shape[0] // 2] = False  # half a brain: some regions fall below coverage
    mask_path = files["aroma"].with_name(
        files["aroma"].name.replace("desc-smoothAROMAnonaggr_bold", "desc-brain_mask")
    )
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), aroma.affine), mask_path)
    code, stdout, _ = run_cli(capsys, *argv, "--no-reports")
    assert code == 0 and "1 written" in stdout and "no desc-brain_mask" not in stdout
    meta = sidecar(out / name)
    assert meta["Sources"][1] == f"bids:preprocessed:{mask_path.relative_to(bids)}"
    assert meta["RegionsBelowCoverage"]
    timeseries = tsvio.read_tsv(out / name)
    expected = nilearn_by_label(files["aroma"], dseg, mask_path, confounds, sample_mask)
    compared = assert_matches(timeseries, lut, expected)
    assert compared >= 5 and compared + len(meta["RegionsBelowCoverage"]) == len(lut) - 1


def test_ica_aroma_without_aroma_image_says_so(
    capsys, tmp_path, fmriprep_dataset, templateflow_home
):
    code, stdout, _ = run_cli(
        capsys, fmriprep_dataset, tmp_path / "out", "participant",
        "--participant-label", "01", "--denoise-strategy", "ica_aroma", "--atlas", "HOSPA:th25",
    )  # fmt: skip
    assert code == 1
    failed = [ln for ln in stdout.splitlines() if ln.startswith("FAILED")]
    assert len(failed) == 2
    assert all("desc-smoothAROMAnonaggr_bold" in ln and "--use-aroma" in ln for ln in failed)


# ----------------------------------------------------------------------------- atlases


@pytest.mark.slow
def test_min_coverage_writes_n_a_columns(capsys, tmp_path, make_dataset, templateflow_home):
    from bidsapp.image import resample_to_img

    bids = make_dataset(
        subjects=("01",), runs=(1,), n_volumes=40, templateflow_home=templateflow_home
    )
    files = func_files(bids, "01", 1)
    dseg, lut = tf_atlas(templateflow_home)
    labels = np.asarray(
        resample_to_img(str(dseg), str(files["bold"]), interpolation="nearest").dataobj
    )
    mask_img = nib.load(files["mask"])
    mask = np.asarray(mask_img.dataobj).astype(bool)
    present = [int(v) for v in lut["index"] if ((labels == v) & mask).sum() >= 10]
    gone, partial = present[0], present[1]
    mask[labels == gone] = False  # outside the mask altogether
    voxels = np.argwhere((labels == partial) & mask)
    drop = voxels[: int(0.6 * len(voxels))]
    mask[tuple(drop.T)] = False  # 40% of its voxels left in the mask
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), mask_img.affine), files["mask"])
    names = dict(zip(lut["index"], lut["name"], strict=True))
    coverage_of_partial = mask[labels == partial].mean()
    assert 0.3 < coverage_of_partial < 0.5

    out = tmp_path / "out"
    argv = [bids, out, "participant", "--atlas", ATLAS, "--no-reports"]
    assert run_cli(capsys, *argv)[0] == 0
    path = out / out_name("01", 1)
    timeseries = tsvio.read_tsv(path)
    assert list(timeseries.columns) == list(lut["name"])  # every LUT region, in LUT order
    assert timeseries[names[gone]].isna().all() and timeseries[names[partial]].isna().all()
    coverage = tsvio.read_tsv(
        path.with_name(
            path.name.replace("_stat-mean_desc-simple_timeseries", "_stat-coverage_bold")
        )
    )
    coverage = coverage.set_index("Node")["coverage"]
    assert coverage[names[gone]] == 0
    assert coverage[names[partial]] == pytest.approx(coverage_of_partial)
    assert {names[gone], names[partial]} <= set(sidecar(path)["RegionsBelowCoverage"])
    text = path.read_text().splitlines()[1].split("\t")
    assert text[list(lut["index"]).index(gone)] == "n/a"

    assert run_cli(capsys, *argv, "--min-coverage", "0.3")[0] == 0  # a new parameter: rerun
    timeseries = tsvio.read_tsv(path)
    assert timeseries[names[gone]].isna().all()
    assert timeseries[names[partial]].notna().all()
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        confounds, sample_mask = load_confounds_strategy(str(files["bold"]), "simple")
    expected = nilearn_by_label(files["bold"], dseg, files["mask"], confounds, sample_mask)
    np.testing.assert_allclose(timeseries[names[partial]], expected[partial], **TOL)
    assert names[partial] not in sidecar(path)["RegionsBelowCoverage"]


def test_several_atlases_local_sibling_lut_and_atlas_lut(
    capsys, tmp_path, fmriprep_dataset, templateflow_home
):
    dseg, lut = tf_atlas(templateflow_home)
    local = tmp_path / "atlases"
    local.mkdir()
    shutil.copy(dseg, local / "mine_dseg.nii.gz")
    renamed = pd.DataFrame({"index": lut["index"], "name": [f"R{i:03d}" for i in lut["index"]]})
    renamed.to_csv(local / "mine_dseg.tsv", sep="\t", index=False)
    shutil.copy(dseg, local / "other_dseg.nii.gz")
    renamed.assign(name=[f"P{i}" for i in lut["index"]]).to_csv(
        tmp_path / "lut.tsv", sep="\t", index=False
    )
    out = tmp_path / "out"
    common = [fmriprep_dataset, out, "participant", "--participant-label", "01", "--no-reports"]
    common += ["--atlas-space", SPACE]  # a local atlas declares its space
    code, stdout, _ = run_cli(
        capsys, *common, "--atlas", ATLAS, "--atlas", local / "mine_dseg.nii.gz"
    )
    assert code == 0, stdout
    code, stdout, _ = run_cli(
        capsys, *common, "--atlas", local / "other_dseg.nii.gz", "--atlas-lut", tmp_path / "lut.tsv"
    )
    assert code == 0, stdout
    assert timeseries_files(out) == sorted(
        out_name("01", r, atlas=a) for r in (1, 2) for a in (LABEL, "mine", "other")
    )
    for run in (1, 2):
        template = tsvio.read_tsv(out / out_name("01", run))
        mine = tsvio.read_tsv(out / out_name("01", run, atlas="mine"))
        other = tsvio.read_tsv(out / out_name("01", run, atlas="other"))
        assert list(mine.columns) == list(renamed["name"])
        assert list(other.columns) == [f"P{i}" for i in lut["index"]]
        np.testing.assert_array_equal(mine.to_numpy(), template.to_numpy())  # same image
        np.testing.assert_array_equal(other.to_numpy(), template.to_numpy())
        assert sidecar(out / out_name("01", run, atlas="mine"))["Atlas"]["Source"] == "local"
    copies = sorted(p.name for p in (out / "sourcedata" / "atlases").rglob("*_dseg.*"))
    assert "tpl-MNI152NLin2009cAsym_atlas-mine_dseg.tsv" in copies
    assert "tpl-MNI152NLin2009cAsym_atlas-other_dseg.nii.gz" in copies


def test_missing_templateflow_atlas_names_it_and_how_to_fetch(
    capsys, tmp_path, fmriprep_dataset, templateflow_home
):
    out = tmp_path / "out"
    atlas = "Schaefer2018:200Parcels7Networks"  # a zero-byte placeholder in the home
    code, stdout, stderr = run_cli(capsys, fmriprep_dataset, out, "participant", "--atlas", atlas)
    assert code == 1
    assert "200Parcels7Networks" in stderr and f"TEMPLATEFLOW_HOME={templateflow_home}" in stderr
    assert "api.get(" in stderr and "Traceback" not in stderr + stdout
    assert stdout.count("FAILED") == 4 and not timeseries_files(out)


# ----------------------------------------------------------------------------- selection


def test_labels_sessions_tasks_and_filters_select_runs(
    capsys, tmp_path, selection_dataset, templateflow_home
):
    work = tmp_path / "work"
    common = ["--atlas", ATLAS, "--denoise-strategy", "none", "--no-reports", "--work-dir", work]

    def outputs_for(*argv) -> list[str]:
        out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
        code, stdout, _ = run_cli(capsys, selection_dataset, out, "participant", *common, *argv)
        assert code == 0, stdout
        return [Path(p).name.split("_space-")[0] for p in timeseries_files(out)]

    selected = outputs_for(
        "--participant-label", "sub-01", "02", "--session-label", "2", "--task", "rest"
    )  # fmt: skip
    assert selected == ["sub-01_ses-2_task-rest", "sub-02_ses-2_task-rest"]
    # Only the labelled participants were indexed, in memory: nothing to keep for later.
    assert not list((work / "pybids_db").glob("index-*/layout_index.sqlite"))
    filters = tmp_path / "filters.json"
    filters.write_text(json.dumps({"bold": {"session": "1", "task": "nback"}}))
    assert outputs_for("--participant_label", "02", "--bids-filter-file", filters) == [
        "sub-02_ses-1_task-nback"
    ]
    assert outputs_for("--session-label", "ses-1", "--task", "nback") == [
        "sub-01_ses-1_task-nback", "sub-02_ses-1_task-nback"
    ]  # fmt: skip
    # Every participant: the index is kept in --work-dir for the next invocation.
    assert len(list((work / "pybids_db").glob("index-*/layout_index.sqlite"))) == 1


@pytest.mark.parametrize(
    "subject, explanation",
    [
        ("03", "Spaces with preprocessed BOLD: MNI152NLin2009cAsym, T1w"),
        ("04", "no preprocessed BOLD"),
    ],
)
def test_nothing_to_do_is_a_message(capsys, tmp_path, selection_dataset, subject, explanation):
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(
        capsys, selection_dataset, out, "participant", "--participant-label", subject
    )
    assert code == 1
    assert stderr.startswith("bidsapp: nothing to do: No preprocessed BOLD runs")
    assert explanation in stderr and "Traceback" not in stderr
    assert not out.exists()  # nothing was written


@pytest.mark.slow
def test_n_jobs_2_gives_the_same_files(capsys, tmp_path, fmriprep_dataset, templateflow_home):
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    common = ["participant", "--atlas", ATLAS, "--no-reports", "--strategy", "median"]
    assert run_cli(capsys, fmriprep_dataset, serial, *common)[0] == 0
    code, stdout, _ = run_cli(
        capsys, fmriprep_dataset, parallel, *common, "--n-jobs", "2", "-w", tmp_path / "work"
    )
    assert code == 0 and stdout.count("ok ") == 4
    files = timeseries_files(serial)
    assert files == timeseries_files(parallel) and len(files) == 4
    for name in files:
        assert (serial / name).read_bytes() == (parallel / name).read_bytes()
        # Every file of the set (relmat included: one BLAS thread) is byte-identical.
        one, two = sidecar(serial / name), sidecar(parallel / name)
        for record in [*one["InputFiles"].values(), *two["InputFiles"].values()]:
            record.pop("HashedAtNs")  # when each was hashed
        assert one == two


def test_missing_repetition_time_falls_back_to_the_header(
    capsys, tmp_path, make_dataset, templateflow_home
):
    bids = make_dataset(
        subjects=("01",), runs=(1,), n_volumes=40, t_r=1.5, write_tr=False,
        templateflow_home=templateflow_home,
    )  # fmt: skip
    out = tmp_path / "out"
    code, stdout, _ = run_cli(capsys, bids, out, "participant", "--atlas", ATLAS, "--no-reports")
    assert code == 0
    assert "warning:" in stdout and "no RepetitionTime in the JSON sidecar" in stdout
    meta = sidecar(out / out_name("01", 1))
    assert meta["RepetitionTime"] == 1.5
    assert meta["SamplingFrequency"] == pytest.approx(1 / 1.5)
    assert any("1.5 s" in w for w in meta["Warnings"])


# ----------------------------------------------------------------------------- failures


def test_bad_inputs_fail_only_their_run(capsys, tmp_path, make_dataset, templateflow_home):
    bids = make_dataset(
        subjects=("01", "02", "03", "04", "05"), runs=(1, 2), n_volumes=40, voxel_size_mm=6.0,
        templateflow_home=templateflow_home,
    )  # fmt: skip
    f = {(s, r): func_files(bids, s, r) for s in ("01", "02", "03", "04", "05") for r in (1, 2)}
    f["01", 1]["confounds"].unlink()
    path = f["01", 2]["confounds"]
    path.write_text(path.read_text().replace("\t", ","))
    path = f["02", 1]["confounds"]
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-3]))
    mask = nib.load(f["02", 2]["mask"])
    cropped = np.asarray(mask.dataobj)[:-1]
    nib.save(nib.Nifti1Image(cropped, mask.affine), f["02", 2]["mask"])
    data = f["03", 1]["bold"].read_bytes()
    f["03", 1]["bold"].write_bytes(data[: len(data) // 2])
    path = f["03", 2]["confounds"]
    lines = path.read_text().splitlines()
    lines[21] = "\t".join(["n/a"] * len(lines[0].split("\t")))  # volume 20
    path.write_text("\n".join(lines) + "\n")
    data = bytearray(f["04", 1]["bold"].read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # inflates, but to wrong numbers
    f["04", 1]["bold"].write_bytes(bytes(data))
    reasons = {
        ("01", 1): [f["01", 1]["bold"].name, "no desc-confounds_timeseries.tsv"],
        ("01", 2): [f["01", 2]["confounds"].name, "not tab-separated"],
        ("02", 1): [f["02", 1]["confounds"].name, "37 rows", "40 volumes"],
        ("02", 2): [f["02", 2]["mask"].name, f"brain mask shape {cropped.shape}"],
        ("03", 1): [f["03", 1]["bold"].name, "corrupt", "ended before the end-of-stream"],
        ("03", 2): [f["03", 2]["confounds"].name, "n/a", "volume(s) 20"],
        ("04", 1): [f["04", 1]["bold"].name, "corrupt", "CRC check failed"],
    }

    out = tmp_path / "out"
    code, stdout, stderr = run_cli(
        capsys, bids, out, "participant", "--atlas", ATLAS, "--no-reports"
    )
    assert code == 1 and "Traceback" not in stdout + stderr
    lines = stdout.splitlines()
    for (subject, run), words in reasons.items():
        failed = [
            ln for ln in lines if ln.startswith(f"FAILED  sub-{subject}_task-rest_run-{run} ")
        ]
        assert len(failed) == 1, (subject, run, stdout)
        for word in words:
            assert word in failed[0], (word, failed[0])
    assert timeseries_files(out) == [out_name(s, r) for s, r in (("04", 2), ("05", 1), ("05", 2))]
    summary = stdout[stdout.index("done in") :].splitlines()
    assert "3 written, 0 already done, 7 failed" in summary[0]
    assert summary[1] == "failed runs (7):" and len(summary) == 9
    status = status_tables.read_all_status(out)
    assert sorted(status.loc[status["status"] == "failed", "subject"]) == [
        "01", "01", "02", "02", "03", "03", "04"
    ]  # fmt: skip
    assert (status.loc[status["status"] == "failed", "reason"].str.len() > 0).all()


@pytest.mark.slow
def test_resume_overwrite_and_changed_parameters(
    capsys, tmp_path, fmriprep_dataset, templateflow_home
):
    out = tmp_path / "out"
    common = [fmriprep_dataset, out, "participant", "--atlas", ATLAS, "--no-reports"]
    assert run_cli(capsys, *common)[0] == 0
    first = {p: p.stat().st_mtime_ns for p in out.rglob("sub-*/func/*")}
    values = tsvio.read_tsv(out / out_name("01", 1))

    code, stdout, _ = run_cli(capsys, *common)
    assert code == 0 and stdout.count("already done") == 5  # 4 runs + the summary line
    assert "0 written, 4 already done, 0 failed" in stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("sub-*/func/*")} == first

    code, stdout, _ = run_cli(capsys, *common, "--overwrite")
    assert "4 written, 0 already done" in stdout
    assert all(p.stat().st_mtime_ns != t for p, t in first.items() if "timeseries.tsv" in p.name)
    pd.testing.assert_frame_equal(tsvio.read_tsv(out / out_name("01", 1)), values)

    mean_times = {p: p.stat().st_mtime_ns for p in out.rglob("*stat-mean*")}
    code, stdout, _ = run_cli(capsys, *common, "--strategy", "median")
    assert "4 written" in stdout
    assert (out / out_name("01", 1, stat="median")).is_file()
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*stat-mean*")} == mean_times

    code, stdout, _ = run_cli(capsys, *common, "--low-pass", "0.1")  # same names, new values
    assert "4 written, 0 already done" in stdout
    assert sidecar(out / out_name("01", 1))["Extraction"]["low_pass"] == 0.1
    assert not np.allclose(tsvio.read_tsv(out / out_name("01", 1)), values)

    code, stdout, _ = run_cli(
        capsys, *common, "--low-pass", "0.1", "--denoise-strategy", "scrubbing"
    )
    assert "4 written" in stdout and (out / out_name("02", 2, desc="scrubbing")).is_file()
    code, stdout, _ = run_cli(capsys, *common, "--low-pass", "0.1")
    assert "0 written, 4 already done" in stdout  # the simple outputs were left alone


def test_interrupted_write_leaves_no_finished_looking_tsv(
    capsys, tmp_path, fmriprep_dataset, templateflow_home, monkeypatch
):
    out = tmp_path / "out"
    argv = [fmriprep_dataset, out, "participant", "--atlas", ATLAS, "--no-reports"]
    victim = out / out_name("01", 2)
    real_write = fileio.atomic_write_text

    def crashing_write(path, text, **kwargs):
        if Path(path) == victim:
            raise KeyboardInterrupt  # the process is killed before the TSV is renamed
        return real_write(path, text, **kwargs)

    monkeypatch.setattr(run_outputs, "atomic_write_text", crashing_write)
    # Ctrl-C is reported in one line with exit 130 (it has unwound through the writers).
    assert cli.main([str(a) for a in argv]) == EXIT_INTERRUPTED
    assert victim.with_suffix(".json").is_file() and not victim.exists()
    assert (out / out_name("01", 1)).is_file()
    assert not list(out.rglob(".*.tmp"))

    def failing_write(path, text, **kwargs):
        if Path(path) == victim:
            raise OSError(28, "No space left on device")
        return real_write(path, text, **kwargs)

    monkeypatch.setattr(run_outputs, "atomic_write_text", failing_write)
    code, stdout, _ = run_cli(capsys, *argv)
    assert code == 1
    assert "FAILED  sub-01_task-rest_run-2" in stdout and "No space left on device" in stdout
    assert "2 written, 1 already done, 1 failed" in stdout and not victim.exists()

    monkeypatch.setattr(run_outputs, "atomic_write_text", real_write)
    code, stdout, _ = run_cli(capsys, *argv)
    assert code == 0 and "1 written, 3 already done" in stdout
    assert "ok      sub-01_task-rest_run-2" in stdout and victim.is_file()


# ----------------------------------------------------------------------------- reports


@pytest.mark.slow
def test_participant_report_is_written_and_its_failure_is_a_warning(
    capsys, tmp_path, fmriprep_dataset, templateflow_home, monkeypatch
):
    out = tmp_path / "out"
    argv = [fmriprep_dataset, out, "participant", "--participant-label", "01", "--atlas", ATLAS]
    assert run_cli(capsys, *argv, "-w", tmp_path / "work")[0] == 0
    assert (out / "sub-01.html").is_file() and not (out / "sub-02.html").exists()

    import bidsapp.report.participant as participant

    def broken(*args, **kwargs):
        raise RuntimeError("figure backend exploded")

    monkeypatch.setattr(participant, "write_participant_report", broken)
    code, stdout, _ = run_cli(capsys, *argv, "--overwrite")
    assert code == 0
    assert "warning: participant report for sub-01 not written: RuntimeError" in stdout
    assert len(timeseries_files(out)) == 2


# ----------------------------------------------------------------------------- font list


def test_font_list_is_built_aside_while_the_participant_level_runs(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from bidsapp.app import workflow

    folder = tmp_path / "mpl"
    folder.mkdir()
    monkeypatch.setenv("MPLCONFIGDIR", str(folder))
    off = SimpleNamespace(reports=False, analysis_level="participant")
    with workflow._font_cache_built_aside(off):
        pass
    assert not list(folder.glob("fontlist-v*.json"))
    on = SimpleNamespace(reports=True, analysis_level="participant")
    if workflow._n_cpus() > 1:
        with workflow._font_cache_built_aside(on):
            pass  # the child is waited for on leaving
        (written,) = folder.glob("fontlist-v*.json")
        assert json.loads(written.read_text())["ttflist"]

    def refuse(*args, **kwargs):
        raise AssertionError("no child when the font list is there")

    (folder / "fontlist-v0.json").write_text("{}")
    monkeypatch.setattr(workflow.subprocess, "Popen", refuse)
    with workflow._font_cache_built_aside(on):
        pass
