"""The demo builders write what they say: files, grids, labels, confounds, signals."""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from bidsapp import cli
from bidsapp import synthetic as demo
from bidsapp.synthetic.fmriprep import _default_spikes

NILEARN_DATA = Path(__import__("nilearn").__file__).parent / "interfaces" / "fmriprep" / "data"
TPL = "MNI152NLin2009cAsym"
RUN1 = "sub-01/func/sub-01_task-rest_run-1"
BOLD1 = f"{RUN1}_space-{TPL}_res-2_desc-preproc_bold.nii.gz"
MASK1 = f"{RUN1}_space-{TPL}_res-2_desc-brain_mask.nii.gz"
CONFOUNDS1 = f"{RUN1}_desc-confounds_timeseries.tsv"
# Columns whose name ends in a component/volume number.
NUMBERED = re.compile(
    r"^(?:[tcwa]_comp_cor_\d+|cosine\d+|non_steady_state_outlier\d+|motion_outlier\d+"
    r"|aroma_motion_\d+)$"
)


def _load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def _tf_file(home: Path, template: str, name: str) -> Path:
    return home / f"tpl-{template}" / f"tpl-{template}_{name}"


# ------------------------------------------------------------ TemplateFlow home


def test_templateflow_home_keeps_skeleton_and_writes_real_atlas(templateflow_home):
    dseg = _tf_file(
        templateflow_home, TPL, "res-02_atlas-Schaefer2018_desc-400Parcels7Networks_dseg.nii.gz"
    )
    placeholder = _tf_file(
        templateflow_home, TPL, "res-01_atlas-Schaefer2018_desc-400Parcels7Networks_dseg.nii.gz"
    )
    lut_path = _tf_file(
        templateflow_home, TPL, "atlas-Schaefer2018_desc-400Parcels7Networks_dseg.tsv"
    )
    assert placeholder.stat().st_size == 0  # not requested: still a skeleton placeholder
    assert _tf_file(templateflow_home, TPL, "res-01_T1w.nii.gz").stat().st_size == 0
    assert (templateflow_home / "tpl-fsLR").is_dir()

    image = nib.load(str(dseg))
    assert image.shape == (97, 115, 97)
    np.testing.assert_allclose(image.header.get_zooms(), (2.0, 2.0, 2.0))
    np.testing.assert_allclose(image.affine[:3, 3], (-96.5, -132.5, -78.5))
    assert np.issubdtype(image.get_data_dtype(), np.integer)
    labels = np.unique(_load(dseg))
    lut = pd.read_csv(lut_path, sep="\t")
    assert set(labels[labels > 0]) == set(lut["index"])  # every region drawn, no stranger

    mask = _tf_file(templateflow_home, TPL, "res-02_desc-brain_mask.nii.gz")
    assert nib.load(str(mask)).shape == (97, 115, 97)
    assert np.all(_load(mask)[_load(dseg) > 0] == 1)  # parcels lie inside the brain


def test_parcels_are_contiguous_and_lateralised(templateflow_home):
    dseg = _tf_file(
        templateflow_home, TPL, "res-02_atlas-Schaefer2018_desc-100Parcels7Networks_dseg.nii.gz"
    )
    image = nib.load(str(dseg))
    data = _load(dseg)
    lut = pd.read_csv(
        _tf_file(templateflow_home, TPL, "atlas-Schaefer2018_desc-100Parcels7Networks_dseg.tsv"),
        sep="\t",
    )
    for index, name in zip(lut["index"], lut["name"], strict=True):
        voxels = data == index
        assert ndimage.label(voxels, structure=np.ones((3, 3, 3)))[1] == 1, name
        x_mm = nib.affines.apply_affine(image.affine, np.argwhere(voxels))[:, 0]
        if "_LH_" in name:
            assert x_mm.max() < 0, name
        else:
            assert "_RH_" in name and x_mm.min() >= 0, name


def test_same_parcels_at_every_resolution(templateflow_home):
    name = "atlas-Schaefer2018_desc-100Parcels7Networks_dseg.nii.gz"
    fine = nib.load(str(_tf_file(templateflow_home, TPL, f"res-01_{name}")))
    coarse = nib.load(str(_tf_file(templateflow_home, TPL, f"res-02_{name}")))
    assert fine.shape == (193, 229, 193)
    coarse_data, fine_data = np.asarray(coarse.dataobj), np.asarray(fine.dataobj)
    ijk = np.argwhere(coarse_data > 0)
    fine_ijk = np.round(
        nib.affines.apply_affine(
            np.linalg.inv(fine.affine), nib.affines.apply_affine(coarse.affine, ijk)
        )
    ).astype(int)
    agree = coarse_data[tuple(ijk.T)] == fine_data[tuple(fine_ijk.T)]
    assert agree.mean() > 0.9


def test_other_template_and_desc_less_lut(templateflow_home):
    template = "MNI152NLin6Asym"
    dseg = _tf_file(templateflow_home, template, "res-02_atlas-HOSPA_desc-th25_dseg.nii.gz")
    image = nib.load(str(dseg))
    assert image.shape == (91, 109, 91)
    np.testing.assert_allclose(image.affine[:3, 3], (-90.0, -126.0, -72.0))
    lut = pd.read_csv(_tf_file(templateflow_home, template, "atlas-HOSPA_dseg.tsv"), sep="\t")
    labels = np.unique(_load(dseg))
    assert set(labels[labels > 0]) == set(lut["index"]) - {0}


def test_make_templateflow_home_is_idempotent(make_templateflow_home, tmp_path):
    home = make_templateflow_home(atlases=[("Schaefer2018", "100Parcels7Networks")])
    dseg = _tf_file(home, TPL, "res-02_atlas-Schaefer2018_desc-100Parcels7Networks_dseg.nii.gz")
    before = _load(dseg)
    demo.make_templateflow_home(home, atlases=[("HOSPA", "th25")], template="MNI152NLin6Asym")
    np.testing.assert_array_equal(_load(dseg), before)  # the second call kept the first's image


def test_make_templateflow_home_rejects_unknown_atlas(make_templateflow_home):
    with pytest.raises(ValueError, match="Nope"):
        make_templateflow_home(atlases=[("Nope", "x")])
    with pytest.raises(ValueError, match="res"):
        make_templateflow_home(atlases=[], resolutions=(9,))


def test_template_grid_reads_template_description():
    shape, affine = demo.template_grid(TPL, 2)
    assert shape == (97, 115, 97)
    np.testing.assert_allclose(np.diag(affine)[:3], 2.0)
    with pytest.raises(ValueError, match="NotATemplate"):
        demo.template_grid("NotATemplate", 2)


# ------------------------------------------------------------------ fMRIPrep


def test_default_dataset_layout(fmriprep_dataset):
    description = json.loads((fmriprep_dataset / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "fMRIPrep"
    bolds = sorted(p.name for p in fmriprep_dataset.rglob("*_desc-preproc_bold.nii.gz"))
    assert bolds == [
        f"sub-{s}_task-rest_run-{r}_space-{TPL}_res-2_desc-preproc_bold.nii.gz"
        for s in ("01", "02")
        for r in (1, 2)
    ]
    for bold in fmriprep_dataset.rglob("*_desc-preproc_bold.nii.gz"):
        stem = bold.name.replace("_desc-preproc_bold.nii.gz", "")
        run = stem.replace(f"_space-{TPL}_res-2", "")
        assert (bold.parent / f"{stem}_desc-brain_mask.nii.gz").is_file()
        assert (bold.parent / f"{run}_desc-confounds_timeseries.tsv").is_file()
        assert (bold.parent / f"{run}_desc-confounds_timeseries.json").is_file()
    assert not list(fmriprep_dataset.rglob("*AROMA*"))
    assert not list(fmriprep_dataset.rglob("*space-T1w*"))


def test_bold_image_grid_and_content(fmriprep_dataset):
    image = nib.load(str(fmriprep_dataset / BOLD1))
    assert image.shape == (49, 58, 49, 60)
    assert image.get_data_dtype() == np.float32
    np.testing.assert_allclose(image.header.get_zooms(), (4.0, 4.0, 4.0, 2.0))
    np.testing.assert_allclose(image.affine[:3, 3], (-96.0, -132.0, -78.0))
    data = np.asarray(image.dataobj)
    mask = _load(fmriprep_dataset / MASK1).astype(bool)
    assert mask.sum() > 10_000
    assert np.all(data[~mask] == 0)
    assert np.all(data[mask].min(axis=-1) > 0)

    sidecar = json.loads((fmriprep_dataset / BOLD1.replace(".nii.gz", ".json")).read_text())
    assert sidecar == {"RepetitionTime": 2.0, "SkullStripped": True, "TaskName": "rest"}


def _fixed_columns(columns) -> set[str]:
    return {c for c in columns if not NUMBERED.match(c)}


def _families(columns) -> set[str]:
    return {re.sub(r"\d+$", "", c) for c in columns if NUMBERED.match(c)}


def test_confounds_columns_are_fmriprep_columns(fmriprep_dataset):
    ours = pd.read_csv(fmriprep_dataset / CONFOUNDS1, sep="\t")
    real = pd.read_csv(NILEARN_DATA / "test-v21_desc-confounds_timeseries.tsv", sep="\t")
    assert _fixed_columns(ours.columns) == _fixed_columns(real.columns)
    assert _families(ours.columns) == _families(real.columns)
    assert len(ours) == 60
    # n/a where fMRIPrep writes n/a: first row of every temporal derivative
    first = ours.iloc[0]
    derivative_columns = [c for c in ours.columns if "derivative1" in c]
    derivative_columns += ["framewise_displacement", "dvars", "std_dvars", "rmsd"]
    assert first[derivative_columns].isna().all()
    assert not ours.drop(columns=derivative_columns).isna().any().any()
    text = (fmriprep_dataset / CONFOUNDS1).read_text()
    assert "\tn/a\t" in text


def test_confounds_json_is_fmriprep_compcor_metadata(fmriprep_dataset):
    ours = json.loads((fmriprep_dataset / CONFOUNDS1.replace(".tsv", ".json")).read_text())
    real = json.loads((NILEARN_DATA / "test-v21_desc-confounds_timeseries.json").read_text())
    frame = pd.read_csv(fmriprep_dataset / CONFOUNDS1, sep="\t")
    for prefix in ("t", "c", "w", "a"):
        columns = [c for c in frame.columns if c.startswith(f"{prefix}_comp_cor_")]
        assert columns, prefix
        real_keys = set(real[f"{prefix}_comp_cor_00"])
        cumulative = [ours[c]["CumulativeVarianceExplained"] for c in columns]
        assert np.all(np.diff(cumulative) > 0)
        for column in columns:
            assert set(ours[column]) == real_keys
            assert ours[column]["Retained"] is True
            assert ours[column]["Method"] == real[f"{prefix}_comp_cor_00"]["Method"]
            assert ours[column].get("Mask") == real[f"{prefix}_comp_cor_00"].get("Mask")
        # fMRIPrep keeps components up to 50% of the variance
        assert cumulative[-1] >= 0.5 and (len(cumulative) == 1 or cumulative[-2] < 0.5)
    dropped = [v for k, v in ours.items() if k.startswith("dropped_")]
    assert dropped and all(entry["Retained"] is False for entry in dropped)
    assert ours["csf"] == {"Method": "Mean"}


def test_confounds_values_follow_the_motion(fmriprep_dataset):
    frame = pd.read_csv(fmriprep_dataset / CONFOUNDS1, sep="\t")
    fd = frame["framewise_displacement"].to_numpy()
    spikes = _default_spikes(60, 2)  # the volumes the defaults make high-motion
    assert spikes == (24, 25, 45)
    assert np.all(fd[list(spikes)] > 0.5)
    calm = np.setdiff1d(np.arange(1, 60), spikes)
    assert np.nanmax(fd[calm]) < 0.2  # below nilearn 0.12's scrubbing threshold
    # Power's FD recomputed from the realignment parameters
    motion = frame[["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]].to_numpy()
    delta = np.abs(np.diff(motion, axis=0))
    np.testing.assert_allclose(fd[1:], delta[:, :3].sum(1) + 50 * delta[:, 3:].sum(1))
    # non-steady-state volumes: one-hot, zero CompCor and cosine rows there
    np.testing.assert_array_equal(frame["non_steady_state_outlier00"], np.eye(60)[0])
    np.testing.assert_array_equal(frame["non_steady_state_outlier01"], np.eye(60)[1])
    assert (frame.filter(regex="comp_cor|cosine").iloc[:2] == 0).all().all()
    assert [c for c in frame if c.startswith("cosine")] == ["cosine00"]  # floor(2*58*2/128)
    # motion outliers: fMRIPrep's rule (FD > 0.5 mm or std DVARS > 1.5), one column each
    flagged = (np.nan_to_num(fd) > 0.5) | (np.nan_to_num(frame["std_dvars"]) > 1.5)
    outliers = frame.filter(like="motion_outlier")
    np.testing.assert_array_equal(outliers.sum(axis=1).to_numpy(), flagged.astype(float))
    # the spikes also show in the data
    assert np.all(frame["std_dvars"].to_numpy()[list(spikes[::2])] > 1.5)


def _cleaned_gm_series(dataset: Path):
    """GM voxel timecourses after censoring and regressing motion/WM/CSF."""
    image = nib.load(str(dataset / BOLD1))
    data = np.asarray(image.dataobj)
    frame = pd.read_csv(dataset / CONFOUNDS1, sep="\t")
    calm = (frame.filter(like="non_steady").sum(axis=1) == 0) & (
        frame["framewise_displacement"].fillna(0) < 0.5
    )
    keep = np.flatnonzero(calm & (frame["std_dvars"].fillna(0) < 1.5))
    regressors = frame[
        ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z", "csf", "white_matter"]
    ].to_numpy()[keep]
    design = np.column_stack([np.ones(len(keep)), np.linspace(-1, 1, len(keep)), regressors])
    q, _ = np.linalg.qr(design)
    gm = demo.tissue_masks(data.shape[:3], image.affine)["gm"]

    def series(ijk):
        x = data[tuple(np.asarray(ijk).T)][:, keep]
        x = x - (x @ q) @ q.T
        return x / x.std(axis=1, keepdims=True)

    return image.affine, gm, series


def test_signals_have_connectivity_structure(fmriprep_dataset):
    affine, gm, series = _cleaned_gm_series(fmriprep_dataset)
    rng = np.random.default_rng(0)
    voxels = np.argwhere(gm)
    sample = voxels[rng.choice(len(voxels), 1500, replace=False)]
    others = voxels[rng.choice(len(voxels), 1500, replace=False)]

    def corr(a, b):
        return np.median((series(a) * series(b)).mean(axis=1))

    neighbours = sample + (1, 0, 0)
    inside = gm[tuple(neighbours.T)]
    assert corr(sample[inside], neighbours[inside]) > 0.15
    mm = nib.affines.apply_affine(affine, sample)
    far = np.linalg.norm(mm - nib.affines.apply_affine(affine, others), axis=1) > 80
    assert abs(corr(sample[far], others[far])) < 0.08
    mirrored = np.round(nib.affines.apply_affine(np.linalg.inv(affine), mm * (-1, 1, 1))).astype(
        int
    )
    lateral = gm[tuple(mirrored.T)] & (np.abs(mm[:, 0]) > 30)
    assert corr(sample[lateral], mirrored[lateral]) > 0.15  # homologous networks


def test_motion_parameters_explain_signal_variance(fmriprep_dataset):
    data = _load(fmriprep_dataset / BOLD1)
    mask = _load(fmriprep_dataset / MASK1).astype(bool)
    frame = pd.read_csv(fmriprep_dataset / CONFOUNDS1, sep="\t")
    y = data[mask][:, 2:].astype(float)
    y -= y.mean(axis=1, keepdims=True)
    motion = frame[["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]].to_numpy()[2:]

    def r2(regressors):
        q, _ = np.linalg.qr(np.column_stack([np.ones(len(y.T)), regressors]))
        fitted = (y @ q) @ q.T
        return np.mean((fitted**2).sum(axis=1) / (y**2).sum(axis=1))

    shuffled = np.random.default_rng(1).standard_normal(motion.shape)
    assert r2(motion) > 1.5 * r2(shuffled)


@pytest.fixture(scope="module")
def aroma_dataset(tmp_path_factory):
    return demo.make_fmriprep_dataset(
        tmp_path_factory.mktemp("aroma"), subjects=["01"], runs=[1], aroma=True
    )


@pytest.mark.parametrize("strategy", ["simple", "scrubbing", "compcor", "ica_aroma"])
def test_nilearn_loads_demo_confounds(aroma_dataset, strategy):
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    func = aroma_dataset / "sub-01" / "func"
    image = (
        func
        / "sub-01_task-rest_run-1_space-MNI152NLin6Asym_res-2_desc-smoothAROMAnonaggr_bold.nii.gz"
        if strategy == "ica_aroma"
        else func / f"sub-01_task-rest_run-1_space-{TPL}_res-2_desc-preproc_bold.nii.gz"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        confounds, sample_mask = load_confounds_strategy(str(image), denoise_strategy=strategy)
    assert len(confounds) == 60
    assert not confounds.isna().any().any()
    censored = sorted(set(range(60)) - set(sample_mask))
    columns = set(confounds.columns)
    metadata = json.loads(
        (func / "sub-01_task-rest_run-1_desc-confounds_timeseries.json").read_text()
    )
    if strategy == "simple":
        assert censored == [0, 1]
        assert {"csf", "white_matter", "cosine00", "rot_z_derivative1_power2"} <= columns
        assert len(columns) == 24 + 2 + 1
    elif strategy == "scrubbing":
        assert {0, 1, 24, 25, 45} <= set(censored)
        assert len(censored) < 15
    elif strategy == "compcor":
        retained = {k for k, v in metadata.items() if k.startswith("a_comp_cor") and v["Retained"]}
        assert {c for c in columns if "comp_cor" in c} == retained
    else:
        assert columns == {"cosine00", "csf", "white_matter"}


def test_dataset_options(make_dataset):
    root = make_dataset(
        subjects=["01"],
        sessions=["1", "2"],
        acquisitions=["mb4"],
        runs=[None],
        n_volumes=20,
        n_dummy=0,
        high_motion_volumes=(),
        t1w_space=True,
        aroma=True,
        anat_only_subjects=["03"],
        confounds_suffix="regressors",
        bold_extension=".nii",
        res=None,
        write_tr=False,
    )
    func = root / "sub-01" / "ses-2" / "func"
    stem = "sub-01_ses-2_task-rest_acq-mb4"
    assert (func / f"{stem}_space-{TPL}_desc-preproc_bold.nii").is_file()
    assert (func / f"{stem}_space-{TPL}_desc-brain_mask.nii").is_file()
    assert (func / f"{stem}_space-T1w_desc-preproc_bold.nii").is_file()
    assert (func / f"{stem}_space-MNI152NLin6Asym_res-2_desc-smoothAROMAnonaggr_bold.nii").is_file()
    frame = pd.read_csv(func / f"{stem}_desc-confounds_regressors.tsv", sep="\t")
    assert not frame.filter(regex="non_steady|motion_outlier").columns.size
    assert frame.filter(like="aroma_motion_").shape[1] == 4
    sidecar = json.loads((func / f"{stem}_space-{TPL}_desc-preproc_bold.json").read_text())
    assert "RepetitionTime" not in sidecar
    assert (root / "sub-03" / "anat" / "sub-03_desc-preproc_T1w.nii.gz").is_file()
    assert not (root / "sub-03" / "func").exists()
    aroma = nib.load(
        str(func / f"{stem}_space-MNI152NLin6Asym_res-2_desc-smoothAROMAnonaggr_bold.nii")
    )
    # MNI152NLin6Asym's box, from the origin of its finest (0.5 mm, res-03) grid
    np.testing.assert_allclose(aroma.affine[:3, 3], (-91.5, -126.0, -72.0))
    assert aroma.shape[:3] == (46, 55, 46)


def test_seed_makes_data_reproducible(make_dataset):
    options = dict(subjects=["01"], runs=[1], n_volumes=12, n_dummy=1, high_motion_volumes=[6])
    first, again, other = (
        make_dataset(**options),
        make_dataset(**options),
        make_dataset(seed=1, **options),
    )
    bold = f"{RUN1}_space-{TPL}_res-2_desc-preproc_bold.nii.gz"
    np.testing.assert_array_equal(_load(first / bold), _load(again / bold))
    assert not np.array_equal(_load(first / bold), _load(other / bold))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"subjects": ["../x"]}, "subject"),
        ({"tasks": ["rest_1"]}, "task"),
        ({"high_motion_volumes": [60]}, "high_motion_volumes"),
        ({"confounds_suffix": "other"}, "confounds_suffix"),
        ({"n_dummy": 60}, "n_dummy"),
    ],
)
def test_dataset_rejects_bad_options(make_dataset, options, message):
    with pytest.raises(ValueError, match=message):
        make_dataset(**options)


@pytest.mark.slow
def test_run_demo_builds_inputs_quickly_and_runs_both_levels(tmp_path, monkeypatch):
    import bidsapp.app.demo
    from bidsapp.app.config import DEFAULT_ATLAS
    from bidsapp.dataset.atlas import get_atlas

    calls = []

    def fake_run(config):
        home = os.environ["TEMPLATEFLOW_HOME"]
        # what the participant level will do: resolve the default atlas from the env home
        atlas = get_atlas(DEFAULT_ATLAS, space=TPL, voxel_size_mm=4.0)
        calls.append((config, home, atlas.dseg))
        return 0

    monkeypatch.setattr(bidsapp.app.demo, "run_command", fake_run)
    before = os.environ.get("TEMPLATEFLOW_HOME")
    start = time.perf_counter()
    assert bidsapp.app.demo.run_demo(tmp_path / "demo") == 0
    # ~2.5 s on two idle cores, up to ~3x more under load; far slower means something broke
    assert time.perf_counter() - start < 30
    assert os.environ.get("TEMPLATEFLOW_HOME") == before  # restored
    root = tmp_path / "demo"
    assert [config.analysis_level for config, _, _ in calls] == ["participant", "group"]
    config, home, dseg = calls[0]
    assert (config.bids_dir, config.output_dir) == (root / "fmriprep", root / "derivatives")
    assert config.work_dir == root / "work"
    argv = [str(root / "fmriprep"), str(root / "derivatives"), "participant"]
    cli_config = cli.config_from_args(
        cli.build_parser().parse_args([*argv, "--work-dir", str(root / "work")])
    )
    assert config == cli_config  # what ``bidsapp ... participant --work-dir`` runs
    assert home == str(root / "templateflow")
    assert dseg.is_relative_to(root / "templateflow") and dseg.stat().st_size > 0
    assert len(list((root / "fmriprep").rglob("*_desc-preproc_bold.nii.gz"))) == 4


def test_run_demo_stops_at_first_failure(tmp_path, monkeypatch):
    import bidsapp.app.demo

    levels = []
    monkeypatch.setattr(
        bidsapp.app.demo, "run_command", lambda config: levels.append(config.analysis_level) or 1
    )
    monkeypatch.setattr(demo, "make_templateflow_home", lambda root, **kw: Path(root))
    monkeypatch.setattr(demo, "make_fmriprep_dataset", lambda root, **kw: Path(root))
    assert bidsapp.app.demo.run_demo(tmp_path / "demo") == 1
    assert levels == ["participant"]
