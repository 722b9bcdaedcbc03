"""Trust on the numerical path: no silently wrong number, whatever the data throw at it.

End-to-end checks of :func:`bidsapp.app.extract.extract_run` (and the command line) on
synthetic fMRIPrep runs made hostile: non-finite volumes, all-zero data, dead regions,
filters that cannot be applied at the run's TR, too little data left, and headers that
claim more data than their file holds. Numbers are compared with nilearn 0.12.1.
"""

from __future__ import annotations

import gzip
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from support.cli_runs import ATLAS
from support.runs import N_VOLUMES, T_R, extract_one_run

from bidsapp import cli, image
from bidsapp.app.config import DenoiseConfig, ExtractionConfig
from bidsapp.app.extract import extract_run
from bidsapp.app.run_inputs import ExtractionError, RunExcluded, prepare_run

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


def _rewrite_bold(run, change) -> np.ndarray:
    """Apply ``change(data)`` to the run's BOLD (float32) in place; return the new data."""
    img = nib.load(run.preproc_bold)
    data = np.asarray(img.dataobj, dtype=np.float32).copy()
    change(data)
    nib.save(nib.Nifti1Image(data, img.affine, img.header), run.preproc_bold)
    return data


def _labels_on_bold(run, atlas) -> np.ndarray:
    bold = nib.load(run.preproc_bold)
    resampled = image.resample_to_img(str(atlas.dseg), bold, interpolation="nearest")
    return np.asarray(resampled.dataobj)


def _nilearn(run, atlas, sample_mask, **kwargs):
    """nilearn 0.12.1's signals by label for the run, with the 'simple' confounds."""
    from nilearn.interfaces.fmriprep import load_confounds_strategy
    from nilearn.maskers import NiftiLabelsMasker

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        confounds, _ = load_confounds_strategy(str(run.preproc_bold), "simple")
        bold = nib.load(run.preproc_bold)
        labels = image.resample_to_img(str(atlas.dseg), bold, interpolation="nearest")
        masker = NiftiLabelsMasker(
            labels_img=labels, mask_img=str(run.brain_mask), t_r=T_R,
            standardize="zscore_sample", **kwargs,
        )  # fmt: skip
        signals = masker.fit_transform(
            bold, confounds=confounds, sample_mask=np.asarray(sample_mask)
        )
    return {
        int(label): signals[:, column]
        for column, label in masker.region_ids_.items()
        if column != "background"
    }


def _assert_equal_to(series, atlas, expected) -> int:
    lut = atlas.lut[atlas.lut["index"] != 0]
    compared = 0
    for label, name in zip(lut["index"], lut["name"], strict=True):
        column = series.timeseries[str(name).strip()].to_numpy(dtype=float)
        if np.isnan(column).all():
            continue
        np.testing.assert_allclose(column, expected[int(label)], rtol=1e-5, atol=1e-6)
        compared += 1
    return compared


# ----------------------------------------------------------------------------- item 5


@pytest.mark.slow
def test_non_finite_volumes_are_censored_and_the_rest_equals_nilearn(run_and_atlas):
    run, atlas = run_and_atlas
    labels = _labels_on_bold(run, atlas)

    def spoil(data):
        data[..., 10] = np.nan  # a whole volume
        data[..., 25] = np.inf
        brain = np.asarray(nib.load(run.brain_mask).dataobj) > 0
        half = brain.copy()
        half[: data.shape[0] // 2] = False
        data[half, 30] = np.nan  # about half the brain
        first = tuple(np.argwhere(brain & (labels > 0))[0])
        data[(*first, 5)] = np.nan  # a single voxel: zeroed, kept

    _rewrite_bold(run, spoil)
    result = extract_one_run(run, atlas)
    assert result.non_finite_volumes == [10, 25, 30]
    assert not {10, 25, 30} & set(result.retained)
    assert {10, 25, 30} <= set(result.censored)
    assert 5 in result.retained
    assert sorted(result.retained + result.censored) == list(range(N_VOLUMES))
    assert any("3 volume(s)" in w and "censored: 10, 25, 30" in w for w in result.warnings)
    assert any("a few non-finite" in w and w.endswith(": 5") for w in result.warnings)
    (series,) = result.per_atlas
    assert len(series.timeseries) == len(result.retained)
    # The app's censoring, then exactly what nilearn computes on the kept volumes.
    assert _assert_equal_to(series, atlas, _nilearn(run, atlas, result.retained)) > 50


def test_all_zero_bold_fails_naming_the_bold(run_and_atlas):
    run, atlas = run_and_atlas
    _rewrite_bold(run, lambda data: data.fill(0.0))
    with pytest.raises(ExtractionError, match=rf"{run.preproc_bold.name}.*no region .* signal"):
        extract_one_run(run, atlas)


def test_region_with_constant_signal_is_written_as_na(run_and_atlas):
    run, atlas = run_and_atlas
    labels = _labels_on_bold(run, atlas)
    brain = np.asarray(nib.load(run.brain_mask).dataobj) > 0
    values, counts = np.unique(labels[brain & (labels > 0)], return_counts=True)
    dead = int(values[np.argmax(counts)])
    name = str(atlas.lut.set_index("index").loc[dead, "name"]).strip()
    _rewrite_bold(run, lambda data: data.__setitem__(labels == dead, 0.0))
    result = extract_one_run(run, atlas)
    (series,) = result.per_atlas
    assert series.timeseries[name].isna().all()
    assert name in series.below_coverage
    assert any("constant" in w and name in w for w in result.warnings)
    assert series.timeseries.notna().all().sum() > 50  # the other regions keep their signal


# ----------------------------------------------------------------------------- item 6


@pytest.mark.parametrize(
    "options", [{"low_pass": 0.3}, {"high_pass": 0.25}, {"low_pass": 0.5, "high_pass": 0.01}]
)
def test_filter_beyond_nyquist_fails_the_run(run_and_atlas, options):
    run, atlas = run_and_atlas
    with pytest.raises(ExtractionError) as caught:
        extract_one_run(run, atlas, extraction=ExtractionConfig(**options))
    message = str(caught.value)
    assert run.preproc_bold.name in message and "TR 2 s" in message
    assert "Nyquist" in message and "0.25 Hz" in message


def test_a_filter_adjusted_while_cleaning_fails_the_run(run_and_atlas, monkeypatch):
    """Whatever the up-front checks miss, a FilterWarning from cleaning is a failure."""
    from bidsapp.app import extract

    run, atlas = run_and_atlas
    monkeypatch.setattr(extract, "_check_filters", lambda *args: None)
    with pytest.raises(ExtractionError, match=r"filter cannot be applied at TR 2 s.*Nyquist"):
        extract_one_run(run, atlas, extraction=ExtractionConfig(low_pass=0.3))


def test_high_pass_below_the_kept_duration_is_a_warning(run_and_atlas):
    run, atlas = run_and_atlas
    result = extract_one_run(run, atlas, extraction=ExtractionConfig(high_pass=0.005))
    assert any("1/(kept duration)" in w for w in result.warnings)


# ----------------------------------------------------------------------------- item 7


def test_min_time_excludes_the_run_before_reading_the_bold(run_and_atlas, monkeypatch):
    from bidsapp import maskers

    run, atlas = run_and_atlas
    monkeypatch.setattr(maskers, "stream_labels_signals", None)  # must not be reached
    with pytest.raises(RunExcluded) as caught:
        extract_one_run(run, atlas, denoise=DenoiseConfig(min_time=100))
    assert str(caught.value) == (
        f"{run.preproc_bold}: 76 s of data left after censoring (38 of 40 volumes, TR 2 s), "
        "below --min-time 100 s"
    )


def test_no_degrees_of_freedom_excludes_the_run(run_and_atlas):
    run, atlas = run_and_atlas
    with pytest.raises(RunExcluded, match=r"no residual degrees of freedom: .*\(10 of 40"):
        extract_one_run(run, atlas, denoise=DenoiseConfig(dummy_scans=30))


def test_min_time_is_checked_again_after_non_finite_censoring(run_and_atlas):
    run, atlas = run_and_atlas
    denoise = DenoiseConfig(min_time=70)
    assert len(extract_one_run(run, atlas, denoise=denoise).retained) == 38  # 76 s: kept
    _rewrite_bold(run, lambda data: data.__setitem__((..., slice(20, 24)), np.nan))
    with pytest.raises(RunExcluded, match=r"68 s .*34 of 40 volumes, 4 censored for non-finite"):
        extract_one_run(run, atlas, denoise=denoise)


# ----------------------------------------------------------------------------- items 13, 15


def _claim(path, shape):
    """Rewrite a .nii.gz as NIfTI-2 whose header claims ``shape`` (its data unchanged)."""
    img = nib.load(path)
    nib.save(nib.Nifti2Image(np.asarray(img.dataobj), img.affine), path)
    raw = bytearray(gzip.decompress(path.read_bytes()))
    dims = [len(shape), *shape, *([1] * (7 - len(shape)))]
    raw[16:80] = np.array(dims, dtype="<i8").tobytes()  # NIfTI-2 dim[8], int64
    path.write_bytes(gzip.compress(bytes(raw), compresslevel=1))


@pytest.mark.parametrize("claim", ["volumes", "volumes-no-confounds", "dimensions"])
def test_header_claims_beyond_the_file_fail_that_run_alone(
    capsys, tmp_path, make_dataset, templateflow_home, claim
):
    bids = make_dataset(
        subjects=("01",), runs=(1, 2), n_volumes=20, voxel_size_mm=8.0,
        templateflow_home=templateflow_home,
    )  # fmt: skip
    func = bids / "sub-01" / "func"
    liar = next(func.glob("*run-1*_desc-preproc_bold.nii.gz"))
    shape = nib.load(liar).shape
    if claim.startswith("volumes"):
        _claim(liar, (*shape[:3], 10**9))
        if claim == "volumes-no-confounds":  # nothing else sized from the header stops it
            next(func.glob("*run-1*_desc-confounds_timeseries.tsv")).unlink()
    else:  # the mask must claim the same grid, or the grid check fails the run first
        _claim(liar, (10**5, 10**5, 10**5, 20))
        _claim(next(func.glob("*run-1*_desc-brain_mask.nii.gz")), (10**5, 10**5, 10**5))
    code = cli.main(
        [str(bids), str(tmp_path / "out"), "participant", "--atlas", ATLAS,
         "--denoise-strategy", "none", "--no-reports"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1, out
    failed = [line for line in out.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and "run-1" in failed[0]
    assert liar.name in failed[0] and "header claims" in failed[0]
    assert any(line.startswith("ok") and "run-2" in line for line in out.splitlines())
    assert "MemoryError" not in out


def test_extract_checks_the_header_before_sizing_anything(run_and_atlas):
    run, atlas = run_and_atlas
    denoise = DenoiseConfig(name="none")
    inputs = prepare_run(run, denoise)
    _claim(run.preproc_bold, (*nib.load(run.preproc_bold).shape[:3], 10**9))
    # As if the header had been read before the file changed (or by a lenient reader).
    inputs = type(inputs)(**{**inputs.__dict__, "n_volumes": 10**9})
    with pytest.raises(ExtractionError, match="header claims"):
        extract_run(inputs, [atlas], denoise, ExtractionConfig())


def test_coverage_table_is_unchanged_by_censoring(run_and_atlas):
    """Censoring volumes changes timeseries rows only, never the region coverage."""
    run, atlas = run_and_atlas
    before = extract_one_run(run, atlas).per_atlas[0].coverage
    _rewrite_bold(run, lambda data: data.__setitem__((..., 7), np.nan))
    after = extract_one_run(run, atlas).per_atlas[0].coverage
    pd.testing.assert_series_equal(before, after)


def test_all_non_finite_bold_fails_naming_the_bold(run_and_atlas):
    run, atlas = run_and_atlas
    _rewrite_bold(run, lambda data: data.fill(np.nan))
    with pytest.raises(ExtractionError, match=rf"{run.preproc_bold.name}: every volume has"):
        extract_one_run(run, atlas)


def test_out_of_memory_names_the_bold_and_its_grid(run_and_atlas, monkeypatch):
    from bidsapp import maskers

    run, atlas = run_and_atlas

    def no_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(maskers, "stream_labels_signals", no_memory)
    shape = "x".join(str(n) for n in nib.load(run.preproc_bold).shape[:3])
    with pytest.raises(
        ExtractionError, match=rf"{run.preproc_bold.name}: not enough memory.*{shape}"
    ):
        extract_one_run(run, atlas)


def test_a_series_too_large_for_this_machine_fails_before_allocating(run_and_atlas, monkeypatch):
    """A gzip bomb (huge grid of zeros) is within deflate's ratio: memory decides."""
    from bidsapp import engine, maskers

    run, atlas = run_and_atlas
    monkeypatch.setattr(engine, "physical_memory", lambda: 2**20)  # a 1 MiB machine
    monkeypatch.setattr(maskers, "stream_labels_signals", None)  # must not be reached
    with pytest.raises(ExtractionError, match=rf"{run.preproc_bold.name}: extracting .* GB"):
        extract_one_run(run, atlas)


def test_non_finite_volumes_reach_the_sidecar_through_the_cli(
    make_dataset, templateflow_home, tmp_path, capsys
):
    """A NaN volume in one run: that run is ok with the volume censored and recorded; the
    other run of the subject is untouched."""
    import json

    from bidsapp.dataset.query import find_runs

    bids = make_dataset(
        subjects=("01",), runs=(1, 2), n_volumes=N_VOLUMES, t_r=T_R, voxel_size_mm=6.0,
        templateflow_home=templateflow_home,
    )  # fmt: skip
    first, second = find_runs(bids, participant_labels="01")

    def poison(data):
        data[..., 12] = np.nan

    _rewrite_bold(first, poison)
    out = tmp_path / "out"
    code = cli.main([str(bids), str(out), "participant", "--atlas", ATLAS, "--no-reports"])
    assert code == 0, capsys.readouterr().out
    sidecars = {
        path.name.split("_space-")[0]: json.loads(path.read_text())
        for path in out.rglob("*_desc-simple_timeseries.json")
    }
    poisoned, clean = sidecars[first.name], sidecars[second.name]
    assert poisoned["NonFiniteVolumes"] == [12]
    assert 12 in poisoned["CensoredVolumes"] and 12 not in poisoned["RetainedVolumes"]
    assert clean["NonFiniteVolumes"] == [] and 12 in clean["RetainedVolumes"]
    (table,) = [p for p in out.rglob(f"{first.name}_*_timeseries.tsv")]
    values = pd.read_csv(table, sep="\t", na_values="n/a").to_numpy(dtype=float)
    assert len(values) == len(poisoned["RetainedVolumes"])
    assert np.isfinite(values).any(axis=0).sum() > 0
    assert any("non-finite" in w for w in poisoned["Warnings"])
