"""Tests of bidsapp.maskers against nilearn 0.12.1's labels maskers (the oracle).

Parity is checked on small synthetic images (float64, rtol=1e-5, atol=1e-6): every
value of every option axis is covered, with full products over the extraction axes and
over the cleaning axes, plus a pairwise (all-pairs) design across all axes.
"""

import gc
import inspect
import itertools
import warnings
from copy import deepcopy

import joblib
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import sklearn
from nilearn import maskers as nl_maskers
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from bidsapp import image, regions
from bidsapp.maskers import MultiNiftiLabelsMasker, NiftiLabelsMasker

RTOL, ATOL = 1e-5, 1e-6
N_VOLUMES = 40
T_R = 2.0
DATA_SHAPE = (12, 13, 11)
STANDARDIZE = [False, "zscore", "zscore_sample", "psc"]

# The nilearn-0.12.1 deprecation of keep_masked_labels=True is tested once, below.
pytestmark = pytest.mark.filterwarnings("ignore:keep_masked_labels=True:DeprecationWarning")


@pytest.fixture(scope="module", autouse=True)
def _fast_oracle():
    # nilearn calls gc.collect() each time it reads image data; freezing the
    # objects that exist now makes those collections cheap (~60x faster
    # here) without changing any result.
    gc.freeze()
    yield
    gc.unfreeze()


# ---------------------------------------------------------------------------
# Synthetic data: regions are boxes in world coordinates (mm), sampled on
# several voxel grids so labels, mask and data can live on different grids.
# ---------------------------------------------------------------------------


def _grid_affine(voxel, origin):
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = origin
    return affine


DATA_AFFINE = _grid_affine(3.0, (-10.0, -12.0, -9.0))
LABELS_AFFINE = _grid_affine(2.0, (-11.3, -12.7, -8.1))
LABELS_SHAPE = (18, 20, 17)
MASK_AFFINE = _grid_affine(2.5, (-10.6, -12.4, -9.3))
MASK_SHAPE = (14, 16, 13)
OUTSIDE_REGION = 9  # lies entirely outside the mask


def _world(shape, affine):
    ijk = np.indices(shape).reshape(3, -1)
    xyz = affine[:3, :3] @ ijk + affine[:3, 3:4]
    return [c.reshape(shape) for c in xyz]


def _labels_data(shape, affine):
    x, y, z = _world(shape, affine)
    column = np.digitize(x, [1.0, 12.0])  # 3 slabs along x
    row = np.digitize(y, [6.0])  # 2 slabs along y
    ids = np.array([[1, 2], [3, 4], [5, 7]])
    labels = ids[column, row].astype(np.int16)
    labels[z < -3.0] = 0  # background at the bottom
    labels[(x >= 14) & (y >= 15) & (z >= 12)] = OUTSIDE_REGION
    return labels


def _mask_data(shape, affine):
    x, y, z = _world(shape, affine)
    return (~((x >= 8) & (y >= 10) & (z >= 5))).astype(np.uint8)


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(1234)


def _bold(rng, shift=0.0):
    drift = np.linspace(0, 5, N_VOLUMES)
    slow = np.sin(np.arange(N_VOLUMES) / 3.0)
    spatial = rng.normal(0, 1, size=DATA_SHAPE)[..., None]
    data = (
        100 + shift + drift + 3 * spatial * slow + rng.normal(0, 2, size=(*DATA_SHAPE, N_VOLUMES))
    )
    return nib.Nifti1Image(data, DATA_AFFINE)


@pytest.fixture(scope="module")
def bold(rng):
    return _bold(rng)


@pytest.fixture(scope="module")
def bold2(rng):
    return _bold(rng, shift=20.0)


@pytest.fixture(scope="module")
def labels_on_data():
    return nib.Nifti1Image(_labels_data(DATA_SHAPE, DATA_AFFINE), DATA_AFFINE)


@pytest.fixture(scope="module")
def labels_other():
    return nib.Nifti1Image(_labels_data(LABELS_SHAPE, LABELS_AFFINE), LABELS_AFFINE)


@pytest.fixture(scope="module")
def mask_on_data():
    return nib.Nifti1Image(_mask_data(DATA_SHAPE, DATA_AFFINE), DATA_AFFINE)


@pytest.fixture(scope="module")
def mask_other():
    return nib.Nifti1Image(_mask_data(MASK_SHAPE, MASK_AFFINE), MASK_AFFINE)


@pytest.fixture(scope="module")
def confounds(rng):
    return rng.normal(size=(N_VOLUMES, 3))


@pytest.fixture(scope="module")
def data(bold, bold2, labels_on_data, labels_other, mask_on_data, mask_other, confounds):
    """Everything the parity helpers need, in one place."""
    return {
        "bold": bold,
        "bold2": bold2,
        "labels": {None: labels_on_data, "data": labels_other, "labels": labels_other},
        "mask": {None: mask_on_data, "data": mask_other, "labels": mask_other},
        "confounds": confounds,
    }


def test_synthetic_design_has_what_the_tests_need(labels_on_data, labels_other, mask_other):
    # Every region exists on both grids, region 9 is entirely outside the
    # mask, and the others keep some voxels inside it.
    for img in (labels_on_data, labels_other):
        assert set(np.unique(image.get_data(img))) == {0, 1, 2, 3, 4, 5, 7, 9}
    on_mask_grid = image.resample_to_img(labels_other, mask_other, interpolation="nearest")
    inside = np.unique(image.get_data(on_mask_grid)[image.get_data(mask_other) > 0])
    assert OUTSIDE_REGION not in inside
    assert {1, 2, 3, 4, 5, 7} <= set(inside)


# ---------------------------------------------------------------------------
# Parity helpers
# ---------------------------------------------------------------------------


def _pair(cls_ours, cls_theirs, **params):
    # Each masker gets its own copy: nilearn modifies a 'labels' list in place.
    return cls_ours(**deepcopy(params)), cls_theirs(**deepcopy(params))


def _quietly(func, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return func(*args, **kwargs)


def _assert_images_equal(ours, theirs):
    if theirs is None:
        assert ours is None
        return
    assert ours.shape == theirs.shape
    assert_allclose(ours.affine, theirs.affine, rtol=0, atol=1e-10)
    assert_array_equal(np.asarray(ours.dataobj), np.asarray(theirs.dataobj))


def _assert_fitted_equal(ours, theirs, transformed=True):
    assert ours.labels_ == theirs.labels_
    assert ours.region_ids_ == theirs.region_ids_
    assert ours.region_names_ == theirs.region_names_
    assert ours.n_elements_ == theirs.n_elements_
    assert ours.lut_["index"].to_list() == theirs.lut_["index"].to_list()
    assert ours.lut_["name"].to_list() == theirs.lut_["name"].to_list()
    _assert_images_equal(ours.labels_img_, theirs.labels_img_)
    _assert_images_equal(ours.mask_img_, theirs.mask_img_)
    if transformed:
        _assert_images_equal(ours.region_atlas_, theirs.region_atlas_)


def _assert_signals_equal(ours, theirs):
    assert ours.shape == theirs.shape
    assert ours.dtype == theirs.dtype
    assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL)


def _check_parity(params, imgs, transform_kwargs=None, fit_imgs=True):
    """Fit both maskers and compare signals and fitted attributes."""
    transform_kwargs = transform_kwargs or {}
    ours, theirs = _pair(NiftiLabelsMasker, nl_maskers.NiftiLabelsMasker, **params)
    fit_args = (imgs,) if fit_imgs else ()
    _quietly(ours.fit, *fit_args)
    _quietly(theirs.fit, *fit_args)
    _assert_fitted_equal(ours, theirs, transformed=False)
    got = _quietly(ours.transform, imgs, **deepcopy(transform_kwargs))
    expected = _quietly(theirs.transform, imgs, **deepcopy(transform_kwargs))
    _assert_signals_equal(got, expected)
    _assert_fitted_equal(ours, theirs)
    return got, ours, theirs


def _sample_mask(kind):
    keep = np.setdiff1d(np.arange(N_VOLUMES), [0, 11, 12, 13, 30])
    if kind == "indices":
        return keep
    if kind == "boolean":
        return np.isin(np.arange(N_VOLUMES), keep)
    return None


def _build_case(data, case):
    """Turn one point of the design into masker parameters and transform arguments."""
    target = case["resampling_target"]
    params = {
        "labels_img": data["labels"][target],
        "resampling_target": target,
        "strategy": case["strategy"],
        "standardize": case["standardize"],
        "detrend": case["detrend"],
        "keep_masked_labels": case["keep_masked_labels"],
    }
    if case["mask"]:
        params["mask_img"] = data["mask"][target]
    if case["band_pass"]:
        params.update(low_pass=0.1, high_pass=0.01, t_r=T_R)
    kwargs = {"sample_mask": _sample_mask(case["sample_mask"])}
    if case["confounds"] != "none":
        kwargs["confounds"] = data["confounds"]
        params["standardize_confounds"] = case["confounds"] == "standardized"
    return params, kwargs


AXES = {
    "strategy": list(regions.REDUCTIONS),
    "standardize": STANDARDIZE,
    "resampling_target": ["data", "labels", None],
    "confounds": ["none", "standardized", "raw"],
    "sample_mask": ["none", "indices", "boolean"],
    "detrend": [False, True],
    "band_pass": [False, True],
    "mask": [False, True],
    "keep_masked_labels": [True, False],
}


def _all_pairs(axes):
    """Greedy all-pairs design: every pair of values of any two axes appears."""
    names = list(axes)
    uncovered = {
        (a, va, b, vb)
        for a, b in itertools.combinations(range(len(names)), 2)
        for va in range(len(axes[names[a]]))
        for vb in range(len(axes[names[b]]))
    }
    rows = []
    while uncovered:
        a, va, b, vb = min(uncovered)
        row = {a: va, b: vb}
        for k in range(len(names)):
            if k in row:
                continue
            gains = [
                sum(
                    (
                        (min(k, j), v if k < j else row[j], max(k, j), row[j] if k < j else v)
                        in uncovered
                    )
                    for j in row
                )
                for v in range(len(axes[names[k]]))
            ]
            row[k] = int(np.argmax(gains))
        for i, j in itertools.combinations(sorted(row), 2):
            uncovered.discard((i, row[i], j, row[j]))
        rows.append({names[k]: axes[names[k]][v] for k, v in row.items()})
    return rows


PAIRWISE_CASES = _all_pairs(AXES)
DEFAULT_CASE = {name: values[0] for name, values in AXES.items()}


def test_all_pairs_design_covers_every_pair():
    for a, b in itertools.combinations(AXES, 2):
        seen = {(repr(c[a]), repr(c[b])) for c in PAIRWISE_CASES}
        assert len(seen) == len(AXES[a]) * len(AXES[b])
    assert len(PAIRWISE_CASES) < 60


@pytest.mark.parametrize("case", PAIRWISE_CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_parity_all_pairs(data, case):
    params, kwargs = _build_case(data, case)
    _check_parity(params, data["bold"], kwargs)


@pytest.mark.parametrize(
    ("mask", "keep_masked_labels"), [(False, True), (True, True), (True, False)]
)
@pytest.mark.parametrize("resampling_target", ["data", "labels", None])
@pytest.mark.parametrize("strategy", regions.REDUCTIONS)
def test_parity_extraction_axes_full_product(
    data, strategy, resampling_target, mask, keep_masked_labels
):
    case = dict(
        DEFAULT_CASE,
        strategy=strategy,
        resampling_target=resampling_target,
        mask=mask,
        keep_masked_labels=keep_masked_labels,
    )
    params, kwargs = _build_case(data, case)
    signals, ours, _ = _check_parity(params, data["bold"], kwargs)
    if mask:
        in_columns = OUTSIDE_REGION in ours.region_ids_.values()
        assert in_columns is keep_masked_labels
        if keep_masked_labels:
            column = list(ours.region_ids_.values()).index(OUTSIDE_REGION) - 1
            assert_array_equal(signals[:, column], 0)


@pytest.mark.parametrize("sample_mask", AXES["sample_mask"])
@pytest.mark.parametrize("confounds_kind", AXES["confounds"])
@pytest.mark.parametrize("band_pass", [False, True])
@pytest.mark.parametrize("detrend", [False, True])
@pytest.mark.parametrize("standardize", STANDARDIZE)
def test_parity_cleaning_axes_full_product(
    data, standardize, detrend, band_pass, confounds_kind, sample_mask
):
    case = dict(
        DEFAULT_CASE,
        standardize=standardize,
        detrend=detrend,
        band_pass=band_pass,
        confounds=confounds_kind,
        sample_mask=sample_mask,
        resampling_target="data",
    )
    params, kwargs = _build_case(data, case)
    signals, _, _ = _check_parity(params, data["bold"], kwargs)
    n_kept = N_VOLUMES if sample_mask == "none" else N_VOLUMES - 5
    assert signals.shape == (n_kept, 7)


# ---------------------------------------------------------------------------
# Other options, each against nilearn
# ---------------------------------------------------------------------------


def test_signature_and_default_params_match_nilearn():
    for ours, theirs in [
        (NiftiLabelsMasker, nl_maskers.NiftiLabelsMasker),
        (MultiNiftiLabelsMasker, nl_maskers.MultiNiftiLabelsMasker),
    ]:
        ours_sig = inspect.signature(ours.__init__).parameters
        theirs_sig = inspect.signature(theirs.__init__).parameters
        assert list(ours_sig) == list(theirs_sig)
        for name, param in theirs_sig.items():
            assert ours_sig[name].default == param.default, name
            assert ours_sig[name].kind == param.kind, name
        assert ours().get_params() == theirs().get_params()


def test_fit_without_images_matches_nilearn(data):
    params = {"labels_img": data["labels"]["data"], "mask_img": data["mask"]["data"]}
    ours, theirs = _pair(NiftiLabelsMasker, nl_maskers.NiftiLabelsMasker, **params)
    _quietly(ours.fit)
    _quietly(theirs.fit)
    _assert_fitted_equal(ours, theirs, transformed=False)
    # Labels and mask are then resampled at transform time, with a warning.
    with pytest.warns(UserWarning, match="Resampling labels at transform time"):
        with pytest.warns(UserWarning, match="Resampling mask at transform time"):
            got = ours.transform(data["bold"])
    _assert_signals_equal(got, _quietly(theirs.transform, data["bold"]))
    _assert_fitted_equal(ours, theirs)
    # ... and the fitted labels are left on their own grid.
    assert ours.labels_img_.shape == LABELS_SHAPE


def test_float_labels_image_parity(data):
    labels = image.get_data(data["labels"]["data"]).astype(np.float32)
    params = {"labels_img": nib.Nifti1Image(labels, LABELS_AFFINE), "strategy": "median"}
    _, ours, _ = _check_parity(params, data["bold"])
    assert ours.labels_ == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 9.0]


@pytest.mark.parametrize("background_label", [0, 1, 7])
def test_background_label_parity(data, background_label):
    params = {"labels_img": data["labels"][None], "background_label": background_label}
    _, ours, _ = _check_parity(params, data["bold"])
    assert ours.region_ids_["background"] == background_label
    assert background_label not in list(ours.region_ids_.values())[1:]


@pytest.mark.parametrize(
    "labels",
    [
        ["Background", "a", "b", "c", "d", "e", "f", "g"],
        ["background", "a", "b", "c", "d", "e", "f", "g"],
        ["a", "b", "c", "d", "e", "f", "g"],
        ["a", "b"],  # padded with 'unknown'
        ["bg", "a", "b", "c", "d", "e", "f", "g", "h", "i"],  # truncated
    ],
)
def test_labels_list_parity(data, labels):
    params = {
        "labels_img": data["labels"]["data"],
        "labels": labels,
        "mask_img": data["mask"]["data"],
        "keep_masked_labels": False,
    }
    given = list(labels)
    _, ours, _ = _check_parity(params, data["bold"])
    assert params["labels"] == given  # never modified
    assert len(ours.region_names_) == ours.n_elements_


def _lut_frame():
    return pd.DataFrame(
        {
            "index": [0, 1, 2, 3, 4, 5, 7, 9, 11],
            "name": ["Background", "L-a", "R-a", "L-b", "R-b", "L-c", "R-c", "corner", "absent"],
            "color": ["#000000"] * 9,
        }
    )


def test_lut_dataframe_parity(data):
    lut = _lut_frame()
    params = {"labels_img": data["labels"]["data"], "lut": lut}
    _, ours, _ = _check_parity(params, data["bold"])
    assert ours.region_names_[ours.n_elements_ - 1] == "corner"
    assert lut.equals(_lut_frame())  # not modified


def test_lut_dseg_tsv_parity(data, tmp_path):
    path = tmp_path / "atlas_dseg.tsv"
    lut = _lut_frame().drop(index=0).iloc[:-1]  # no background row, as TemplateFlow's
    lut.to_csv(path, sep="\t", index=False)
    lut.iloc[2, 1] = "changed"  # check we read the file, not a cached table
    for lut_value in (path, str(path)):
        params = {"labels_img": data["labels"]["data"], "lut": lut_value}
        _, ours, _ = _check_parity(params, data["bold"])
        assert ours.region_names_ == {
            0: "L-a",
            1: "R-a",
            2: "L-b",
            3: "R-b",
            4: "L-c",
            5: "R-c",
            6: "corner",
        }


def test_lut_with_differently_named_background_row(data):
    # nilearn 0.12.1 shifts every name down one row when the background row of a
    # look-up table is not called "Background" (FreeSurfer calls it "Unknown"),
    # so region 1 gets the background's name. We rename that row instead.
    lut = _lut_frame()
    lut.loc[0, "name"] = "Unknown"
    ours = NiftiLabelsMasker(data["labels"][None], lut=lut).fit()
    assert ours.region_names_[0] == "L-a"
    assert ours.lut_["name"].to_list()[0] == "Background"


@pytest.mark.parametrize("resampling_target", ["data", "labels"])
@pytest.mark.parametrize("fwhm", [4.0, 6])
def test_smoothing_parity(data, fwhm, resampling_target):
    params = {
        "labels_img": data["labels"][resampling_target],
        "smoothing_fwhm": fwhm,
        "resampling_target": resampling_target,
    }
    smoothed, _, _ = _check_parity(params, data["bold"])
    plain = NiftiLabelsMasker(
        data["labels"][resampling_target], resampling_target=resampling_target
    ).fit_transform(data["bold"])
    assert not np.allclose(smoothed, plain)


@pytest.mark.parametrize(
    ("stored", "dtype"),
    [
        (np.float64, "auto"),
        (np.float64, np.float32),
        (np.float32, None),
        (np.int16, "auto"),
        (np.int16, None),
        (np.float32, "float64"),
    ],
)
def test_dtype_parity(data, stored, dtype):
    raw = np.asarray(data["bold"].dataobj)
    img = nib.Nifti1Image(np.round(raw).astype(stored), DATA_AFFINE)
    params = {"labels_img": data["labels"]["data"], "dtype": dtype, "standardize": "zscore_sample"}
    ours, theirs = _pair(NiftiLabelsMasker, nl_maskers.NiftiLabelsMasker, **params)
    got = _quietly(ours.fit_transform, img)
    expected = _quietly(theirs.fit_transform, img)
    assert got.dtype == expected.dtype
    # float32 pipelines agree to float32 precision.
    assert_allclose(got, expected, rtol=1e-4 if got.dtype == np.float32 else RTOL, atol=1e-4)


@pytest.mark.parametrize("resampling_target", ["data", "labels"])
def test_3d_image_gives_1d_signals(data, resampling_target):
    volume = image.index_img(data["bold"], 5)
    params = {
        "labels_img": data["labels"][resampling_target],
        "resampling_target": resampling_target,
        "mask_img": data["mask"]["data"],
    }
    signals, _, _ = _check_parity(params, volume)
    assert signals.shape == (7,)


def test_list_of_3d_images_is_one_series(data):
    volumes = [image.index_img(data["bold"], i) for i in range(6)]
    params = {"labels_img": data["labels"]["data"], "detrend": True}
    signals, _, _ = _check_parity(params, volumes)
    assert signals.shape == (6, 7)
    direct = NiftiLabelsMasker(**params).fit_transform(image.load_img(volumes))
    assert_allclose(signals, direct)


def test_paths_as_inputs(data, tmp_path):
    paths = {}
    for name in ("bold", "labels", "mask"):
        img = data[name] if name == "bold" else data[name]["data"]
        paths[name] = tmp_path / f"{name}.nii.gz"
        img.to_filename(paths[name])
    params = {"labels_img": paths["labels"], "mask_img": str(paths["mask"])}
    signals, _, _ = _check_parity(params, str(paths["bold"]))
    in_memory = NiftiLabelsMasker(data["labels"]["data"], mask_img=data["mask"]["data"])
    assert_allclose(signals, _quietly(in_memory.fit_transform, data["bold"]))


def test_4d_mask_reduced_with_all(data):
    mask = image.get_data(data["mask"][None])
    mask4d = np.stack([mask, mask, np.ones_like(mask)], axis=-1)
    mask4d[0, 0, 0, 2] = 0
    params = {
        "labels_img": data["labels"][None],
        "mask_img": nib.Nifti1Image(mask4d, DATA_AFFINE),
        "resampling_target": None,
    }
    _, ours, _ = _check_parity(params, data["bold"])
    assert image.get_data(ours.mask_img_)[0, 0, 0] == 0


def test_high_variance_confounds_parity(data):
    params = {"labels_img": data["labels"]["data"], "high_variance_confounds": True}
    _check_parity(params, data["bold"])
    _check_parity(params, data["bold"], {"confounds": [data["confounds"]]})
    plain = NiftiLabelsMasker(data["labels"]["data"]).fit_transform(data["bold"])
    hv = NiftiLabelsMasker(**params).fit_transform(data["bold"])
    assert not np.allclose(plain, hv)


def test_confounds_as_dataframe_and_tsv_path(data, tmp_path):
    frame = pd.DataFrame(data["confounds"], columns=["a", "b", "c"])
    path = tmp_path / "confounds.tsv"
    frame.to_csv(path, sep="\t", index=False)
    params = {"labels_img": data["labels"]["data"], "standardize": "zscore_sample"}
    from_array, _, _ = _check_parity(params, data["bold"], {"confounds": data["confounds"]})
    from_frame, _, _ = _check_parity(params, data["bold"], {"confounds": frame})
    from_path, _, _ = _check_parity(params, data["bold"], {"confounds": str(path)})
    several, _, _ = _check_parity(
        params, data["bold"], {"confounds": [frame[["a"]], data["confounds"][:, 1:]]}
    )
    for other in (from_frame, from_path, several):
        assert_allclose(other, from_array, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "clean_args",
    [{"filter": "cosine"}, {"butterworth__padtype": "even"}, {"filter": False}],
)
def test_clean_args_parity(data, clean_args):
    params = {
        "labels_img": data["labels"]["data"],
        "high_pass": 0.01,
        "low_pass": 0.1,
        "t_r": T_R,
        "clean_args": clean_args,
    }
    signals, ours, _ = _check_parity(params, data["bold"])
    assert ours.clean_args_ == clean_args
    default = NiftiLabelsMasker(**dict(params, clean_args=None)).fit_transform(data["bold"])
    assert not np.allclose(signals, default)


def test_deprecated_clean_kwargs_parity(data):
    params = {
        "labels_img": data["labels"]["data"],
        "high_pass": 0.01,
        "t_r": T_R,
        "clean__butterworth__padtype": "even",
        "ignored_kwarg": 1,
    }
    ours, theirs = _pair(NiftiLabelsMasker, nl_maskers.NiftiLabelsMasker, **params)
    with pytest.warns(DeprecationWarning, match="You passed some kwargs"):
        ours.fit(data["bold"])
    assert ours.clean_kwargs_ == {"butterworth__padtype": "even"}
    got = _quietly(ours.transform, data["bold"])
    expected = _quietly(theirs.fit_transform, data["bold"])
    _assert_signals_equal(got, expected)
    plain = NiftiLabelsMasker(data["labels"]["data"], high_pass=0.01, t_r=T_R)
    assert not np.allclose(got, plain.fit_transform(data["bold"]))


def test_standardize_true_parity(data):
    _check_parity({"labels_img": data["labels"]["data"], "standardize": True}, data["bold"])


# ---------------------------------------------------------------------------
# MultiNiftiLabelsMasker
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_multi_masker_list_parity(data, n_jobs):
    imgs = [data["bold"], data["bold2"]]
    params = {
        "labels_img": data["labels"]["data"],
        "mask_img": data["mask"]["data"],
        "standardize": "zscore_sample",
        "detrend": True,
        "n_jobs": n_jobs,
        "keep_masked_labels": False,
    }
    confounds = [data["confounds"], None]
    sample_masks = [None, _sample_mask("indices")]
    ours, theirs = _pair(MultiNiftiLabelsMasker, nl_maskers.MultiNiftiLabelsMasker, **params)
    got = _quietly(ours.fit_transform, imgs, confounds=confounds, sample_mask=sample_masks)
    expected = _quietly(theirs.fit_transform, imgs, confounds=confounds, sample_mask=sample_masks)
    assert isinstance(got, list) and len(got) == 2
    for a, b in zip(got, expected, strict=True):
        _assert_signals_equal(a, b)
    assert got[1].shape == (N_VOLUMES - 5, 6)  # region 9 dropped by the mask
    assert confounds[1] is None and len(confounds) == 2  # not modified
    # nilearn records the extracted columns only when images are processed in
    # its own process (n_jobs=1); we always do: compare with a sequential run.
    sequential = nl_maskers.MultiNiftiLabelsMasker(**dict(params, n_jobs=1))
    _quietly(sequential.fit_transform, imgs, confounds=confounds, sample_mask=sample_masks)
    _assert_fitted_equal(ours, sequential)


def test_multi_masker_with_single_image_and_list_arguments(data):
    params = {"labels_img": data["labels"]["data"]}
    ours, theirs = _pair(MultiNiftiLabelsMasker, nl_maskers.MultiNiftiLabelsMasker, **params)
    kwargs = {"confounds": [data["confounds"]], "sample_mask": [_sample_mask("boolean")]}
    got = _quietly(ours.fit_transform, data["bold"], **kwargs)
    expected = _quietly(theirs.fit_transform, data["bold"], **kwargs)
    _assert_signals_equal(got, expected)


def test_multi_masker_high_variance_confounds_parity(data):
    imgs = [data["bold"], data["bold2"]]
    params = {"labels_img": data["labels"]["data"], "high_variance_confounds": True}
    confounds = [data["confounds"], None]
    ours, theirs = _pair(MultiNiftiLabelsMasker, nl_maskers.MultiNiftiLabelsMasker, **params)
    got = _quietly(ours.fit_transform, imgs, confounds=list(confounds))
    expected = _quietly(theirs.fit_transform, imgs, confounds=list(confounds))
    for a, b in zip(got, expected, strict=True):
        _assert_signals_equal(a, b)
    given = [data["confounds"], None]
    _quietly(ours.transform, imgs, confounds=given)
    assert given[1] is None and given[0] is data["confounds"]


def test_multi_masker_list_of_3d_images(data):
    volumes = [image.index_img(data["bold"], i) for i in range(3)]
    ours, theirs = _pair(
        MultiNiftiLabelsMasker, nl_maskers.MultiNiftiLabelsMasker, labels_img=data["labels"]["data"]
    )
    got = _quietly(ours.fit_transform, volumes)
    expected = _quietly(theirs.fit_transform, volumes)
    assert [g.shape for g in got] == [(7,)] * 3
    for a, b in zip(got, expected, strict=True):
        _assert_signals_equal(a, b)


# ---------------------------------------------------------------------------
# inverse_transform
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("resampling_target", ["data", "labels"])
def test_inverse_transform_parity(data, with_mask, resampling_target):
    params = {
        "labels_img": data["labels"][resampling_target],
        "resampling_target": resampling_target,
        "keep_masked_labels": False,
    }
    if with_mask:
        params["mask_img"] = data["mask"][resampling_target]
    signals, ours, theirs = _check_parity(params, data["bold"])
    for values in (signals, signals[0]):
        got = ours.inverse_transform(values)
        expected = _quietly(theirs.inverse_transform, values)
        _assert_images_equal(got, expected)
    assert got.ndim == 3


def test_inverse_transform_maps_columns_by_region_id(data):
    # With keep_masked_labels=True and a region entirely outside the mask,
    # nilearn 0.12.1 maps columns to the wrong regions; we map by region id.
    masker = _quietly(NiftiLabelsMasker(data["labels"][None], mask_img=data["mask"][None]).fit)
    signals = np.arange(1.0, masker.n_elements_ + 1)[None, :]
    out = image.get_data(masker.inverse_transform(signals))[..., 0]
    labels = image.get_data(masker.labels_img_)
    inside = image.get_data(masker.mask_img_) > 0
    for column, region in list(masker.region_ids_.items())[1:]:
        values = np.unique(out[(labels == region) & inside])
        assert values.tolist() == ([] if region == OUTSIDE_REGION else [column + 1.0])


# ---------------------------------------------------------------------------
# Caching
# ---------------------------------------------------------------------------


def _count_reductions(monkeypatch):
    calls = []
    original = regions.RegionReducer.reduce

    def counting(self, block):
        calls.append(block.shape)
        return original(self, block)

    monkeypatch.setattr(regions.RegionReducer, "reduce", counting)
    return calls


@pytest.mark.parametrize("memory_level", [1, 2])
@pytest.mark.parametrize("as_path", [True, False])
def test_memory_cache_is_hit_on_second_call(data, tmp_path, monkeypatch, memory_level, as_path):
    cache_dir = tmp_path / "cache"
    memory = cache_dir if as_path else joblib.Memory(cache_dir, verbose=0)
    calls = _count_reductions(monkeypatch)
    masker = NiftiLabelsMasker(
        data["labels"]["data"],
        memory=memory,
        memory_level=memory_level,
        standardize="zscore_sample",
        keep_masked_labels=False,
    )
    first = masker.fit_transform(data["bold"])
    assert len(calls) == 1
    second = masker.transform(data["bold"])
    assert len(calls) == 1  # served from the cache
    assert_array_equal(first, second)
    assert any(cache_dir.rglob("output.pkl"))
    fresh = NiftiLabelsMasker(
        data["labels"]["data"],
        memory=memory,
        memory_level=memory_level,
        standardize="zscore_sample",
        keep_masked_labels=False,
    )
    assert_array_equal(fresh.fit_transform(data["bold"]), first)
    assert len(calls) == 1
    # Different data is not served from the cache.
    masker.transform(data["bold2"])
    assert len(calls) == 2


def test_no_memory_means_no_cache(data, monkeypatch):
    calls = _count_reductions(monkeypatch)
    masker = NiftiLabelsMasker(data["labels"]["data"], keep_masked_labels=False)
    masker.fit_transform(data["bold"])
    masker.transform(data["bold"])
    assert len(calls) == 2
    assert masker.memory_.location is None


def test_memory_level_zero_with_cache_warns(data, tmp_path):
    masker = NiftiLabelsMasker(
        data["labels"]["data"], memory=tmp_path, memory_level=0, keep_masked_labels=False
    )
    with pytest.warns(UserWarning, match="memory_level is currently set to 0"):
        masker.fit(data["bold"])
    assert masker.memory_level == 0  # the parameter is left as given


# ---------------------------------------------------------------------------
# scikit-learn contract
# ---------------------------------------------------------------------------


def test_not_fitted_errors(data):
    masker = NiftiLabelsMasker(data["labels"]["data"])
    with pytest.raises(NotFittedError):
        check_is_fitted(masker)
    for call in (
        lambda: masker.transform(data["bold"]),
        lambda: masker.inverse_transform([1.0]),
        lambda: masker.labels_,
        lambda: masker.region_ids_,
    ):
        with pytest.raises(
            NotFittedError, match="This NiftiLabelsMasker instance is not fitted yet"
        ):
            call()
    masker.fit()
    check_is_fitted(masker)


def test_init_only_stores_parameters(data):
    lut = _lut_frame()
    masker = NiftiLabelsMasker(
        labels_img="not/a/file.nii", lut=lut, strategy="bogus", memory_level="x"
    )
    assert masker.lut is lut
    assert masker.labels_img == "not/a/file.nii"
    assert not any(k.endswith("_") and not k.startswith("_") for k in vars(masker))


def test_fit_returns_self_and_fitted_attributes(data):
    masker = NiftiLabelsMasker(data["labels"]["data"], mask_img=data["mask"]["data"])
    assert masker.fit(data["bold"]) is masker
    assert masker.labels_img_.shape == DATA_SHAPE
    assert masker.mask_img_.shape == DATA_SHAPE
    assert masker.clean_args_ == {}
    assert isinstance(masker.memory_, joblib.Memory)


def test_get_params_set_params_round_trip(data):
    masker = NiftiLabelsMasker(data["labels"]["data"], strategy="median", t_r=2.0)
    params = masker.get_params()
    assert params["strategy"] == "median" and params["labels_img"] is data["labels"]["data"]
    rebuilt = NiftiLabelsMasker(**params)
    assert rebuilt.get_params() == params
    assert masker.set_params(strategy="maximum", detrend=True) is masker
    assert masker.strategy == "maximum" and masker.detrend is True
    with pytest.raises(
        ValueError, match="Invalid parameter 'strategi' for estimator NiftiLabelsMasker"
    ):
        masker.set_params(strategi="mean")
    masker.set_params(clean__butterworth__padtype="even")
    assert masker.get_params()["clean__butterworth__padtype"] == "even"


def test_clone_keeps_parameters_and_drops_fitted_state(data):
    masker = MultiNiftiLabelsMasker(
        data["labels"]["data"], lut=_lut_frame(), n_jobs=2, clean__butterworth__padtype="even"
    )
    _quietly(masker.fit, data["bold"])
    copy = clone(masker)
    assert type(copy) is MultiNiftiLabelsMasker
    assert not hasattr(copy, "labels_img_")
    assert copy.n_jobs == 2
    assert copy.lut.equals(masker.lut) and copy.lut is not masker.lut
    assert copy.clean_kwargs == {"clean__butterworth__padtype": "even"}
    assert set(copy.get_params()) == set(masker.get_params())


def test_repr_with_scikit_learn(data):
    masker = NiftiLabelsMasker(strategy="median", clean__butterworth__padtype="even")
    text = repr(masker)
    assert "strategy='median'" in text and "clean__butterworth__padtype='even'" in text


def test_pipeline_with_standard_scaler(data):
    masker = NiftiLabelsMasker(data["labels"]["data"], keep_masked_labels=False)
    pipe = Pipeline([("masker", masker), ("scaler", StandardScaler())])
    out = pipe.fit_transform(data["bold"])
    expected = StandardScaler().fit_transform(
        NiftiLabelsMasker(data["labels"]["data"], keep_masked_labels=False).fit_transform(
            data["bold"]
        )
    )
    assert_allclose(out, expected)
    pipe.set_params(masker__strategy="median")
    assert pipe.named_steps["masker"].strategy == "median"
    assert pipe.get_params()["masker__strategy"] == "median"
    assert clone(pipe).named_steps["masker"].strategy == "median"


def test_pipeline_metadata_routing(data):
    sample_mask = _sample_mask("indices")
    with sklearn.config_context(enable_metadata_routing=True):
        masker = NiftiLabelsMasker(data["labels"]["data"], keep_masked_labels=False)
        # As in nilearn, 'imgs' (the first argument of fit and transform, not
        # called X) counts as metadata: both requests must agree on it.
        masker.set_transform_request(imgs=False, confounds=True, sample_mask=True)
        assert masker.set_fit_request(imgs=False) is masker
        routing = masker.get_metadata_routing()
        assert routing.consumes("transform", ["confounds", "sample_mask"]) == {
            "confounds",
            "sample_mask",
        }
        pipe = Pipeline([("masker", masker), ("scaler", StandardScaler())])
        out = pipe.fit_transform(data["bold"], confounds=data["confounds"], sample_mask=sample_mask)
        again = pipe.transform(data["bold"], confounds=data["confounds"], sample_mask=sample_mask)
    direct = NiftiLabelsMasker(data["labels"]["data"], keep_masked_labels=False).fit_transform(
        data["bold"], confounds=data["confounds"], sample_mask=sample_mask
    )
    assert out.shape == (N_VOLUMES - 5, 7)
    assert_allclose(out, StandardScaler().fit_transform(direct))
    assert_allclose(again, out)


# ---------------------------------------------------------------------------
# Warnings and errors
# ---------------------------------------------------------------------------


def test_keep_masked_labels_warnings(data):
    params = {"labels_img": data["labels"]["data"], "mask_img": data["mask"]["data"]}
    with pytest.warns(DeprecationWarning, match="keep_masked_labels=True"):
        NiftiLabelsMasker(**params).fit_transform(data["bold"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        NiftiLabelsMasker(keep_masked_labels=False, **params).fit_transform(data["bold"])
    messages = [str(w.message) for w in caught]
    assert not any(issubclass(w.category, DeprecationWarning) for w in caught)
    assert any("the following labels were removed: [9]" in m for m in messages)


def test_labels_lost_by_resampling_warn(data):
    labels = image.get_data(data["labels"]["data"]).copy()
    labels[0, 0, 0] = 42  # one 2 mm voxel: vanishes on the 3 mm grid
    img = nib.Nifti1Image(labels, LABELS_AFFINE)
    with pytest.warns(UserWarning, match=r"labels were removed: \[42\]"):
        masker = NiftiLabelsMasker(img, keep_masked_labels=False).fit(data["bold"])
    assert 42 in masker.labels_  # the look-up table comes from the original labels
    theirs = _quietly(nl_maskers.NiftiLabelsMasker(img).fit, data["bold"])
    assert masker.labels_ == theirs.labels_
    masker.transform(data["bold"])
    assert 42 not in masker.labels_


def _errors(data):
    bold, labels = data["bold"], data["labels"]["data"]
    labels_data = image.get_data(labels)
    return [
        ({"labels_img": None}, (), TypeError, "'labels_img' is None"),
        (
            {"labels_img": nib.Nifti1Image(np.stack([labels_data] * 2, -1), LABELS_AFFINE)},
            (),
            image.DimensionError,
            r"'labels_img'.*expected a 3D image, got 4D image of shape \(18, 20, 17, 2\)",
        ),
        (
            {"labels_img": nib.Nifti1Image(labels_data * 0.5, LABELS_AFFINE)},
            (),
            ValueError,
            "'labels_img' must contain integer labels; found non-integer values",
        ),
        (
            {"labels_img": labels, "resampling_target": None},
            (bold,),
            ValueError,
            "labels and data do not have the same shape",
        ),
        (
            {
                "labels_img": data["labels"][None],
                "mask_img": data["mask"]["data"],
                "resampling_target": None,
            },
            (),
            ValueError,
            "labels and mask do not have the same affine",
        ),
        ({"labels_img": labels, "strategy": "mode"}, (), ValueError, "Invalid strategy 'mode'"),
        (
            {"labels_img": labels, "resampling_target": "mask"},
            (),
            ValueError,
            "invalid value for 'resampling_target' parameter: 'mask'",
        ),
        (
            {"labels_img": labels, "labels": ["a"], "lut": _lut_frame()},
            (),
            ValueError,
            "either labels or a lookup table",
        ),
        ({"labels_img": labels, "labels": "a,b"}, (), TypeError, "'labels' must be a list"),
        (
            {"labels_img": labels, "labels": ["a", 2]},
            (),
            TypeError,
            "All elements of 'labels' must be a string",
        ),
        (
            {"labels_img": labels, "lut": pd.DataFrame({"id": [1], "name": ["a"]})},
            (),
            ValueError,
            r"'lut' must have 'index' and 'name' columns; missing \['index'\]",
        ),
        ({"labels_img": labels, "lut": 3}, (), TypeError, "'lut' must be a pandas DataFrame"),
        (
            {"labels_img": labels, "clean_args": {"filter": "cosine"}, "clean__extrapolate": False},
            (),
            ValueError,
            "mutually exclusive with using 'clean_args'",
        ),
        ({"labels_img": labels, "detrend": "yes"}, (), TypeError, "'detrend' should be bool"),
        (
            {"labels_img": labels, "t_r": "2"},
            (),
            TypeError,
            r"'t_r' should be a number \(seconds\)",
        ),
        ({"labels_img": labels, "memory": 3}, (), TypeError, "'memory' should be a joblib.Memory"),
        (
            {"labels_img": labels, "memory": "/no/such/dir/cache"},
            (),
            ValueError,
            "parent directory of the cache directory",
        ),
        (
            {"labels_img": labels, "mask_img": nib.Nifti1Image(np.zeros(MASK_SHAPE), MASK_AFFINE)},
            (),
            ValueError,
            "'mask_img' is empty",
        ),
        (
            {"labels_img": labels},
            ("missing.nii.gz",),
            FileNotFoundError,
            "'imgs': file not found: 'missing.nii.gz'",
        ),
    ]


@pytest.mark.parametrize("index", range(19))
def test_fit_errors(data, index):
    params, fit_args, error, message = _errors(data)[index]
    with pytest.raises(error, match=message):
        _quietly(NiftiLabelsMasker(**params).fit, *fit_args)


def test_error_list_is_fully_parametrized(data):
    assert len(_errors(data)) == 19


def test_transform_errors(data):
    masker = NiftiLabelsMasker(data["labels"]["data"], keep_masked_labels=False).fit()
    bold = data["bold"]
    with pytest.raises(ValueError, match="'confounds' has 39 rows but the image has 40 volumes"):
        _quietly(masker.transform, bold, confounds=data["confounds"][:-1])
    with pytest.raises(ValueError, match="'confounds' has 39 rows"):
        _quietly(masker.transform, bold, confounds=[data["confounds"], data["confounds"][:-1]])
    hv = NiftiLabelsMasker(data["labels"]["data"], high_variance_confounds=True).fit()
    with pytest.raises(
        image.DimensionError, match=r"expected a 4D image, got 3D image of shape \(12, 13, 11\)"
    ):
        _quietly(hv.transform, image.index_img(bold, 0))
    with pytest.raises(image.DimensionError, match="use MultiNiftiLabelsMasker for a list of runs"):
        _quietly(masker.transform, [bold, bold])
    with pytest.raises(TypeError, match="'imgs' must be a NIfTI path"):
        masker.transform(np.zeros((3, 3, 3, 3)))
    with pytest.raises(ValueError, match="'imgs' is an empty list"):
        masker.transform([])


def test_confounds_file_with_wrong_length(data, tmp_path):
    path = tmp_path / "confounds.tsv"
    pd.DataFrame(data["confounds"][:-2], columns=["a", "b", "c"]).to_csv(
        path, sep="\t", index=False
    )
    masker = NiftiLabelsMasker(data["labels"]["data"], keep_masked_labels=False)
    with pytest.raises(ValueError, match="has 38 rows but signals have 40 time points"):
        masker.fit_transform(data["bold"], confounds=path)


def test_inverse_transform_errors(data):
    masker = _quietly(NiftiLabelsMasker(data["labels"]["data"]).fit)
    with pytest.raises(ValueError, match=r"wrong shape.\nExpected \(3, 7\).\nGot \(3, 5\)"):
        masker.inverse_transform(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="must be 1D or 2D"):
        masker.inverse_transform(np.zeros((3, 5, 7)))
    with pytest.raises(ValueError, match="contains NaN"):
        masker.inverse_transform(np.full(7, np.nan))


def test_multi_masker_errors(data):
    masker = MultiNiftiLabelsMasker(data["labels"]["data"]).fit()
    imgs = [data["bold"], data["bold2"]]
    with pytest.raises(TypeError, match="'confounds' must be a None or a list. Got ndarray"):
        masker.transform(imgs, confounds=data["confounds"])
    with pytest.raises(TypeError, match="'sample_mask' must be a None or a list"):
        masker.transform(imgs, sample_mask=np.arange(3))
    with pytest.raises(
        ValueError, match=r"number of confounds \(1\) unequal to number of images \(2\)"
    ):
        masker.transform(imgs, confounds=[data["confounds"]])
    with pytest.raises(ValueError, match=r"number of sample_mask \(3\) unequal"):
        masker.transform(imgs, sample_mask=[None, None, None])
    other = nib.Nifti1Image(np.zeros((*LABELS_SHAPE, 3)), LABELS_AFFINE)
    with pytest.raises(ValueError, match="Field of view of image #1 in 'imgs_list' is different"):
        masker.transform([data["bold"], other])
    with pytest.raises(TypeError, match="'n_jobs' should be an int"):
        MultiNiftiLabelsMasker(data["labels"]["data"], n_jobs=1.5).fit()
    with pytest.raises(TypeError, match="'imgs_list' must be a list of images; got a single"):
        masker.transform_imgs(data["bold"])


# ---------------------------------------------------------------------------
# Inputs are never modified; reports
# ---------------------------------------------------------------------------


def test_inputs_are_not_modified(data):
    raw = np.asarray(data["bold"].dataobj).copy()
    raw[1, 1, 1, :] = np.nan
    img = nib.Nifti1Image(raw, DATA_AFFINE)
    labels = ["Background", "a", "b", "background"]
    confounds = data["confounds"].copy()
    masker = NiftiLabelsMasker(
        data["labels"]["data"],
        labels=labels,
        smoothing_fwhm=4.0,
        high_variance_confounds=True,
        keep_masked_labels=False,
    )
    _quietly(masker.fit_transform, img, confounds=[confounds])
    assert np.isnan(np.asarray(img.dataobj)[1, 1, 1]).all()
    assert labels == ["Background", "a", "b", "background"]
    assert_array_equal(confounds, data["confounds"])
    assert masker.labels_img_ is not data["labels"]["data"]


def test_reporting_data(data):
    masker = NiftiLabelsMasker(data["labels"]["data"], mask_img=data["mask"]["data"])
    masker.fit(data["bold"])
    report = masker._reporting_data
    assert report["labels_image"] is masker.labels_img_
    assert report["mask"] is masker.mask_img_
    assert report["dim"] == 4
    assert_array_equal(image.get_data(report["img"]), image.get_data(data["bold"])[..., 20])
    summary = report["summary"]
    labels = image.get_data(masker.labels_img_)
    assert summary["label value"].to_list() == [1, 2, 3, 4, 5, 7, 9]
    size_7 = summary.loc[summary["label value"] == 7, "size (in mm^3)"].item()
    assert size_7 == round(np.sum(labels == 7) * 27.0)
    assert_allclose(summary["relative size (in %)"].sum(), 100.0, atol=0.05)
    assert report["number_of_regions"] == 7
    assert NiftiLabelsMasker(data["labels"]["data"], reports=False).fit()._reporting_data is None


def test_generate_report_is_an_html_report(tmp_path):
    rng = np.random.default_rng(7)
    labels = nib.Nifti1Image(rng.integers(0, 4, (8, 9, 7)).astype(np.int16), np.eye(4))
    data = nib.Nifti1Image(rng.standard_normal((8, 9, 7, 12)), np.eye(4))
    masker = NiftiLabelsMasker(labels_img=labels).fit(data)
    report = masker.generate_report()
    report.save_as_html(tmp_path / "report.html")
    html = (tmp_path / "report.html").read_text()
    assert "<img" in html and "data:image/png;base64," in html
    assert report._repr_html_()


# ---------------------------------------------------------------------------
# Several atlases in one pass (extract_labels_signals), streaming from files
# ---------------------------------------------------------------------------


def extract_labels_signals(*args, **kwargs):
    from bidsapp.maskers import extract_labels_signals as function

    return function(*args, **kwargs)


def _three_atlases(data):
    third = image.get_data(data["labels"]["data"]).copy()
    third[third == 3] = 0  # a different parcellation on the same grid as the second
    third_img = nib.Nifti1Image(third, LABELS_AFFINE)
    return [data["labels"][None], data["labels"]["data"], third_img]


@pytest.mark.parametrize("resampling_target", ["data", "labels"])
@pytest.mark.parametrize("keep_masked_labels", [False, True])
def test_extract_labels_signals_equals_one_masker_per_atlas(
    data, tmp_path, resampling_target, keep_masked_labels
):
    bold = tmp_path / "bold.nii.gz"
    data["bold"].to_filename(bold)
    params = {
        "standardize": "zscore_sample",
        "detrend": True,
        "high_pass": 0.01,
        "t_r": T_R,
        "keep_masked_labels": keep_masked_labels,
        "resampling_target": resampling_target,
    }
    mask = data["mask"]["data"]
    kwargs = {"confounds": data["confounds"], "sample_mask": _sample_mask("indices")}
    atlases = _three_atlases(data)
    result = _quietly(extract_labels_signals, str(bold), atlases, mask_img=mask, **kwargs, **params)
    assert len(result) == 3
    for labels_img, item in zip(atlases, result, strict=True):
        ours = NiftiLabelsMasker(labels_img=labels_img, mask_img=mask, **params)
        expected = _quietly(ours.fit_transform, str(bold), **kwargs)
        theirs = nl_maskers.NiftiLabelsMasker(labels_img=labels_img, mask_img=mask, **params)
        oracle = _quietly(theirs.fit_transform, str(bold), **kwargs)
        assert_array_equal(item.signals, expected)
        _assert_signals_equal(item.signals, oracle)
        assert item.region_ids == ours.region_ids_ == theirs.region_ids_
        _assert_fitted_equal(item.masker, theirs)


def test_extract_labels_signals_reads_the_file_once(data, tmp_path, monkeypatch):
    from bidsapp import stream

    bold = tmp_path / "bold.nii.gz"
    data["bold"].to_filename(bold)
    opened = []
    original = stream.open_stream
    monkeypatch.setattr(
        stream, "open_stream", lambda *a, **k: opened.append(a[0]) or original(*a, **k)
    )
    result = _quietly(
        extract_labels_signals,
        bold,
        _three_atlases(data),
        mask_img=data["mask"]["data"],
        keep_masked_labels=False,
        mean_img=True,
    )
    assert len(opened) == 1  # three atlases (two grids), one inflate, mean image included
    assert_allclose(
        image.get_data(result.mean_img), image.get_data(data["bold"]).mean(axis=-1), rtol=1e-6
    )
    assert_allclose(result.mean_img.affine, data["bold"].affine)


def test_extract_labels_signals_warnings_and_errors(data):
    with pytest.warns(UserWarning, match=r"the following labels were removed: \[9\]"):
        extract_labels_signals(
            data["bold"],
            [data["labels"]["data"]],
            mask_img=data["mask"]["data"],
            keep_masked_labels=False,
        )
    with pytest.raises(TypeError, match="use luts"):
        extract_labels_signals(data["bold"], [data["labels"]["data"]], lut=_lut_frame())
    with pytest.raises(ValueError, match="'luts' has 1 entries for 2 labels images"):
        extract_labels_signals(
            data["bold"], [data["labels"]["data"]] * 2, luts=[None], keep_masked_labels=False
        )
    assert len(extract_labels_signals(data["bold"], [])) == 0


def test_extract_labels_signals_with_luts_and_3d_image(data):
    volume = image.index_img(data["bold"], 3)
    result = _quietly(
        extract_labels_signals,
        volume,
        [data["labels"]["data"], data["labels"][None]],
        luts=[_lut_frame(), None],
        keep_masked_labels=False,
    )
    named = NiftiLabelsMasker(data["labels"]["data"], lut=_lut_frame(), keep_masked_labels=False)
    assert_array_equal(result[0].signals, _quietly(named.fit_transform, volume))
    assert result[0].signals.shape == (7,)
    assert result[0].masker.region_names_ == named.region_names_


def test_streamed_masker_matches_nilearn_on_gzip_file_with_smoothing(data, tmp_path):
    bold = tmp_path / "bold.nii.gz"
    nib.Nifti1Image(np.asarray(data["bold"].dataobj, dtype=np.float32), DATA_AFFINE).to_filename(
        bold
    )
    params = {"labels_img": data["labels"]["data"], "smoothing_fwhm": 5.0, "dtype": "auto"}
    _check_parity(params, str(bold))


def test_report_middle_volume_of_a_file_is_read_only_when_used(data, tmp_path, monkeypatch):
    bold = tmp_path / "bold.nii.gz"
    data["bold"].to_filename(bold)
    reads = []
    original = nib.arrayproxy.ArrayProxy.__getitem__

    def counting(self, key):
        reads.append(key)
        return original(self, key)

    monkeypatch.setattr(nib.arrayproxy.ArrayProxy, "__getitem__", counting)
    masker = NiftiLabelsMasker(data["labels"]["data"]).fit(bold)
    assert reads == []
    middle = image.get_data(masker._reporting_data["img"])
    assert len(reads) == 1
    assert_array_equal(middle, image.get_data(data["bold"])[..., N_VOLUMES // 2])
    assert masker._reporting_data["dim"] == 4


# ---------------------------------------------------------------------------
# Trust: non-finite labels (item 20), lying headers (item 13)
# ---------------------------------------------------------------------------


def _labels_with_non_finite():
    data = _labels_data(DATA_SHAPE, DATA_AFFINE).astype(np.float32)
    data[0, 0, -1] = np.nan
    data[5, 5, -1] = np.inf
    data[-1, -1, -1] = -np.inf
    return nib.Nifti1Image(data, DATA_AFFINE)


def test_non_finite_labels_fit_with_reports_as_nilearn(bold):
    labels = _labels_with_non_finite()
    ours, theirs = _pair(NiftiLabelsMasker, nl_maskers.NiftiLabelsMasker, labels_img=labels)
    assert ours.reports and theirs.reports  # the default
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        signals = ours.fit(bold).transform(bold)
    expected = _quietly(lambda: theirs.fit(bold).transform(bold))
    assert_allclose(signals, expected, rtol=RTOL, atol=ATOL)
    assert ours.region_ids_ == theirs.region_ids_
    assert ours.region_names_ == theirs.region_names_
    assert any("Non-finite values detected" in str(w.message) for w in caught)
    summary = ours._reporting_data["summary"]
    assert np.isfinite(summary["label value"]).all()
    assert set(summary["label value"]) == {1, 2, 3, 4, 5, 7, 9}


def _lying_file(path, shape):
    """A tiny NIfTI file whose header's dim field claims ``shape``."""
    import gzip

    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4)), path)
    gz = path.name.endswith(".gz")
    raw = bytearray(gzip.decompress(path.read_bytes()) if gz else path.read_bytes())
    raw[40:56] = np.array([len(shape), *shape, *([1] * (7 - len(shape)))], "<i2").tobytes()
    path.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
    return path


@pytest.mark.parametrize("shape", [(4, 4, 4, 30000), (20000, 20000, 20000, 2)])
def test_masker_refuses_a_header_claiming_more_than_its_file(tmp_path, labels_on_data, shape):
    from bidsapp.stream import StreamError

    liar = _lying_file(tmp_path / "liar_bold.nii.gz", shape)
    with pytest.raises(StreamError, match="liar_bold.nii.gz.*header claims"):
        NiftiLabelsMasker(labels_on_data, reports=False).fit_transform(str(liar))
    lying_labels = _lying_file(tmp_path / "liar_dseg.nii", (20000, 20000, 20000))
    with pytest.raises(StreamError, match="liar_dseg.nii.*header claims"):
        NiftiLabelsMasker(str(lying_labels)).fit()


def test_stream_then_clean_equals_nilearn_and_reports_non_finite_volumes(
    tmp_path, bold, labels_on_data, mask_on_data
):
    from bidsapp.maskers import stream_labels_signals

    data = np.asarray(bold.dataobj).copy()
    data[..., 3] = np.nan
    data[2, 2, 2, 7] = np.inf
    path = tmp_path / "bold.nii.gz"
    nib.save(nib.Nifti1Image(data, bold.affine), path)
    params = {"standardize": "zscore_sample", "detrend": True, "keep_masked_labels": False}
    raw = _quietly(
        stream_labels_signals, str(path), [labels_on_data], mask_img=mask_on_data, **params
    )
    assert raw.non_finite_fraction.shape == (N_VOLUMES,)
    assert raw.non_finite_fraction[3] == 1.0 and 0 < raw.non_finite_fraction[7] < 0.01
    assert (np.delete(raw.non_finite_fraction, [3, 7]) == 0).all()
    kept = np.delete(np.arange(N_VOLUMES), 3)
    (ours,) = _quietly(raw.clean, sample_mask=kept)
    theirs = nl_maskers.NiftiLabelsMasker(labels_on_data, mask_img=mask_on_data, **params)
    expected = _quietly(theirs.fit_transform, str(path), sample_mask=kept)
    assert_allclose(ours.signals, expected, rtol=RTOL, atol=ATOL)
    assert ours.region_ids == theirs.region_ids_
