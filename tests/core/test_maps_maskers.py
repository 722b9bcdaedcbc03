"""Tests of bidsapp's maps maskers against nilearn 0.12.1's (the oracle).

Parity is checked on small synthetic images with the labels maskers' tolerances (float64,
rtol=1e-5, atol=1e-6): every resampling target with and without a mask, maps partly and
entirely outside the mask kept or dropped, the full product of the cleaning options,
smoothing, 3D and 4D inputs, lists of images, inverse transforms and fitted attributes;
and one pass over the BOLD for labels and maps atlases mixed.
"""

import gc
import inspect
import itertools
import warnings
from copy import deepcopy

import nibabel as nib
import numpy as np
import pytest
import scipy.linalg
import scipy.sparse
from nilearn import maskers as nl_maskers
from numpy.testing import assert_allclose, assert_array_equal

from bidsapp import image, regions, stream
from bidsapp.maskers import (
    MultiNiftiMapsMasker,
    NiftiLabelsMasker,
    NiftiMapsMasker,
)
from bidsapp.maskers.pipeline import clean_streamed, stream_fitted

RTOL, ATOL = 1e-5, 1e-6
N_VOLUMES = 40
T_R = 2.0
DATA_SHAPE = (12, 13, 11)
MAPS_SHAPE = (18, 20, 17)
MASK_SHAPE = (14, 16, 13)
OUTSIDE_MAP = 4  # lies entirely outside the mask
PARTLY_OUTSIDE_MAP = 1  # straddles the mask's edge


@pytest.fixture(scope="module", autouse=True)
def _fast_oracle():
    # nilearn calls gc.collect() each time it reads image data (see test_maskers.py).
    gc.freeze()
    yield
    gc.unfreeze()


def _grid_affine(voxel, origin):
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = origin
    return affine


DATA_AFFINE = _grid_affine(3.0, (-10.0, -12.0, -9.0))
MAPS_AFFINE = _grid_affine(2.0, (-11.3, -12.7, -8.1))
MASK_AFFINE = _grid_affine(2.5, (-10.6, -12.4, -9.3))

# Gaussian blobs in world coordinates (mm): centre, width; overlapping neighbours.
BLOBS = [
    ((0, 0, 0), 6.0),
    ((9, 6, 6), 5.0),
    ((4, 14, 3), 6.0),
    ((-4, 8, 9), 5.0),
    ((18, 20, 16), 2.0),
]


def _world(shape, affine):
    ijk = np.indices(shape).reshape(3, -1)
    xyz = affine[:3, :3] @ ijk + affine[:3, 3:4]
    return [c.reshape(shape) for c in xyz]


def _maps_data(shape, affine):
    x, y, z = _world(shape, affine)
    maps = []
    for (cx, cy, cz), width in BLOBS:
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * width**2))
        blob[blob < 0.05] = 0
        maps.append(blob)
    maps = np.stack(maps, axis=-1)
    maps[..., 2] -= 0.2 * (maps[..., 0] > 0.5)  # a negative lobe: not in the support
    return maps


def _mask_data(shape, affine):
    x, y, z = _world(shape, affine)
    return (~((x >= 8) & (y >= 10) & (z >= 5)) & (x < 14)).astype(np.uint8)


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(4321)


def _bold(rng, shift=0.0, n=N_VOLUMES):
    drift = np.linspace(0, 5, n)
    slow = np.sin(np.arange(n) / 3.0)
    spatial = rng.normal(0, 1, size=DATA_SHAPE)[..., None]
    data = 100 + shift + drift + 3 * spatial * slow + rng.normal(0, 2, size=(*DATA_SHAPE, n))
    return nib.Nifti1Image(data, DATA_AFFINE)


@pytest.fixture(scope="module")
def data(rng):
    maps_on_data = nib.Nifti1Image(_maps_data(DATA_SHAPE, DATA_AFFINE), DATA_AFFINE)
    maps_other = nib.Nifti1Image(_maps_data(MAPS_SHAPE, MAPS_AFFINE), MAPS_AFFINE)
    mask_on_data = nib.Nifti1Image(_mask_data(DATA_SHAPE, DATA_AFFINE), DATA_AFFINE)
    mask_other = nib.Nifti1Image(_mask_data(MASK_SHAPE, MASK_AFFINE), MASK_AFFINE)
    return {
        "bold": _bold(rng),
        "bold2": _bold(rng, shift=20.0),
        "maps": {None: maps_on_data, "data": maps_other, "mask": maps_other, "maps": maps_other},
        "mask": {None: mask_on_data, "data": mask_other, "mask": mask_other, "maps": mask_other},
        "confounds": rng.normal(size=(N_VOLUMES, 3)),
    }


def test_synthetic_design_has_what_the_tests_need(data):
    # Maps overlap, one map lies outside the mask, one straddles its edge.
    maps = image.get_data(data["maps"][None])
    mask = image.get_data(data["mask"][None]).astype(bool)
    assert np.any((maps > 0).sum(axis=3) > 1)
    inside = np.abs(maps[mask]).sum(axis=0)
    outside = np.abs(maps[~mask]).sum(axis=0)
    assert inside[OUTSIDE_MAP] == 0 and outside[OUTSIDE_MAP] > 0
    assert inside[PARTLY_OUTSIDE_MAP] > 0 and outside[PARTLY_OUTSIDE_MAP] > 0
    assert np.all(np.delete(inside, OUTSIDE_MAP) > 0)
    assert np.any(maps < 0)


# ---------------------------------------------------------------------------
# Parity helpers
# ---------------------------------------------------------------------------


def _quietly(func, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return func(*args, **kwargs)


def _assert_images_equal(ours, theirs, exact=True):
    if theirs is None:
        assert ours is None
        return
    assert ours.shape == theirs.shape
    assert_allclose(ours.affine, theirs.affine, rtol=0, atol=1e-10)
    if exact:
        assert_array_equal(np.asarray(ours.dataobj), np.asarray(theirs.dataobj))
    else:
        assert_allclose(
            np.asarray(ours.dataobj), np.asarray(theirs.dataobj), rtol=1e-10, atol=1e-12
        )


def _assert_fitted_equal(ours, theirs):
    assert ours.n_elements_ == theirs.n_elements_
    assert ours.clean_args_ == theirs.clean_args_
    # Linear interpolation: the same numbers up to rounding.
    _assert_images_equal(ours.maps_img_, theirs.maps_img_, exact=False)
    assert np.asarray(ours.maps_img_.dataobj).dtype == np.asarray(theirs.maps_img_.dataobj).dtype
    _assert_images_equal(ours.mask_img_, theirs.mask_img_)


def _assert_signals_equal(ours, theirs):
    assert ours.shape == theirs.shape
    assert ours.dtype == theirs.dtype
    assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL)


def _check_parity(params, imgs, transform_kwargs=None, fit_imgs=True, cls=None):
    cls = cls or (NiftiMapsMasker, nl_maskers.NiftiMapsMasker)
    transform_kwargs = transform_kwargs or {}
    ours, theirs = cls[0](**deepcopy(params)), cls[1](**deepcopy(params))
    fit_args = (imgs,) if fit_imgs else ()
    _quietly(ours.fit, *fit_args)
    _quietly(theirs.fit, *fit_args)
    _assert_fitted_equal(ours, theirs)
    got = _quietly(ours.transform, imgs, **deepcopy(transform_kwargs))
    expected = _quietly(theirs.transform, imgs, **deepcopy(transform_kwargs))
    if isinstance(expected, list):
        assert len(got) == len(expected)
        for one, other in zip(got, expected, strict=True):
            _assert_signals_equal(one, other)
    else:
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


# ---------------------------------------------------------------------------
# Extraction: resampling targets, masks, masked maps
# ---------------------------------------------------------------------------


EXTRACTION_CASES = [
    (target, mask, keep)
    for target in ["data", "mask", "maps", None]
    for mask, keep in [(False, True), (True, True), (True, False)]
    if not (target == "mask" and not mask)
]


@pytest.mark.parametrize(("resampling_target", "mask", "keep_masked_maps"), EXTRACTION_CASES)
def test_parity_extraction(data, resampling_target, mask, keep_masked_maps):
    params = {
        "maps_img": data["maps"][resampling_target],
        "resampling_target": resampling_target,
        "keep_masked_maps": keep_masked_maps,
    }
    if mask:
        params["mask_img"] = data["mask"][resampling_target]
    signals, ours, _ = _check_parity(params, data["bold"])
    if mask and resampling_target is None:
        # The map outside the mask is an all-zero column, or no column at all.
        assert signals.shape[1] == (5 if keep_masked_maps else 4)
        if keep_masked_maps:
            assert_array_equal(signals[:, OUTSIDE_MAP], 0)
    else:
        assert signals.shape[1] == ours.n_elements_ or not keep_masked_maps


@pytest.mark.parametrize("sample_mask", ["none", "indices", "boolean"])
@pytest.mark.parametrize("confounds_kind", ["none", "standardized", "raw"])
@pytest.mark.parametrize("band_pass", [False, True])
@pytest.mark.parametrize("detrend", [False, True])
@pytest.mark.parametrize("standardize", [False, "zscore", "zscore_sample", "psc"])
def test_parity_cleaning_full_product(
    data, standardize, detrend, band_pass, confounds_kind, sample_mask
):
    params = {
        "maps_img": data["maps"]["data"],
        "mask_img": data["mask"]["data"],
        "standardize": standardize,
        "detrend": detrend,
        "keep_masked_maps": False,
    }
    if band_pass:
        params.update(low_pass=0.1, high_pass=0.01, t_r=T_R)
    kwargs = {"sample_mask": _sample_mask(sample_mask)}
    if confounds_kind != "none":
        kwargs["confounds"] = data["confounds"]
        params["standardize_confounds"] = confounds_kind == "standardized"
    signals, _, _ = _check_parity(params, data["bold"], kwargs)
    n_kept = N_VOLUMES if sample_mask == "none" else N_VOLUMES - 5
    assert signals.shape == (n_kept, 4)


def test_signature_and_default_params_match_nilearn():
    for ours, theirs in [
        (NiftiMapsMasker, nl_maskers.NiftiMapsMasker),
        (MultiNiftiMapsMasker, nl_maskers.MultiNiftiMapsMasker),
    ]:
        ours_sig = inspect.signature(ours.__init__).parameters
        theirs_sig = inspect.signature(theirs.__init__).parameters
        assert list(ours_sig) == list(theirs_sig)
        for name, param in theirs_sig.items():
            assert ours_sig[name].default == param.default, name
            assert ours_sig[name].kind == param.kind, name
        assert ours().get_params() == theirs().get_params()
        for method in ("fit", "transform", "fit_transform", "inverse_transform"):
            assert list(inspect.signature(getattr(ours, method)).parameters) == list(
                inspect.signature(getattr(theirs, method)).parameters
            ), method


def test_fit_without_images_resamples_at_transform(data):
    params = {"maps_img": data["maps"]["data"], "mask_img": data["mask"]["data"]}
    ours, theirs = NiftiMapsMasker(**params), nl_maskers.NiftiMapsMasker(**params)
    ours.fit()
    theirs.fit()
    _assert_fitted_equal(ours, theirs)
    with pytest.warns(UserWarning, match="Resampling maps at transform time"):
        with pytest.warns(UserWarning, match="Resampling mask at transform time"):
            got = ours.transform(data["bold"])
    _assert_signals_equal(got, _quietly(theirs.transform, data["bold"]))
    assert ours.maps_img_.shape[:3] == MAPS_SHAPE  # the fitted maps are left as they were


@pytest.mark.parametrize("resampling_target", ["data", "maps"])
@pytest.mark.parametrize("fwhm", [4.0, 6])
def test_smoothing_parity(data, fwhm, resampling_target):
    params = {
        "maps_img": data["maps"][resampling_target],
        "mask_img": data["mask"][resampling_target],
        "resampling_target": resampling_target,
        "smoothing_fwhm": fwhm,
        "keep_masked_maps": False,
    }
    _check_parity(params, data["bold"])


@pytest.mark.parametrize(
    ("stored", "dtype"), [(np.float32, None), (np.float32, "auto"), (np.int16, None)]
)
def test_dtype_parity(data, stored, dtype):
    bold = nib.Nifti1Image(
        np.round(image.get_data(data["bold"])).astype(stored), data["bold"].affine
    )
    maps = nib.Nifti1Image(
        image.get_data(data["maps"]["data"]).astype(np.float32), data["maps"]["data"].affine
    )
    params = {"maps_img": maps, "dtype": dtype, "standardize": "zscore_sample"}
    ours, theirs = NiftiMapsMasker(**params), nl_maskers.NiftiMapsMasker(**params)
    got = _quietly(ours.fit_transform, bold)
    expected = _quietly(theirs.fit_transform, bold)
    assert got.dtype == expected.dtype
    # nilearn solves in float32 here (lstsq of float32 arrays): float32 rounding.
    assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    _assert_fitted_equal(ours, theirs)


@pytest.mark.parametrize("resampling_target", ["data", "maps"])
def test_3d_image_gives_1d_signals(data, resampling_target):
    volume = image.index_img(data["bold"], 5)
    params = {"maps_img": data["maps"][resampling_target], "resampling_target": resampling_target}
    signals, _, _ = _check_parity(params, volume)
    assert signals.shape == (5,)


def test_list_of_3d_images_is_one_series(data):
    volumes = [image.index_img(data["bold"], i) for i in range(6)]
    signals, _, _ = _check_parity({"maps_img": data["maps"]["data"]}, volumes)
    assert signals.shape == (6, 5)


def test_high_variance_confounds_parity(data):
    params = {"maps_img": data["maps"]["data"], "high_variance_confounds": True}
    _check_parity(params, data["bold"], {"confounds": data["confounds"]})


def test_clean_args_parity(data):
    params = {
        "maps_img": data["maps"]["data"],
        "high_pass": 0.01,
        "t_r": T_R,
        "clean_args": {"filter": "cosine"},
    }
    _check_parity(params, data["bold"])


def test_paths_as_inputs(data, tmp_path):
    bold = tmp_path / "bold.nii.gz"
    maps = tmp_path / "maps.nii.gz"
    nib.Nifti1Image(image.get_data(data["bold"]).astype(np.float32), DATA_AFFINE).to_filename(bold)
    data["maps"]["data"].to_filename(maps)
    params = {"maps_img": str(maps), "smoothing_fwhm": 5.0, "dtype": "auto"}
    ours = NiftiMapsMasker(**params)
    theirs = nl_maskers.NiftiMapsMasker(**params)
    got = _quietly(ours.fit_transform, str(bold))
    expected = _quietly(theirs.fit_transform, str(bold))
    assert got.dtype == expected.dtype == np.float32
    assert_allclose(got, expected, rtol=1e-4, atol=1e-3)


# ---------------------------------------------------------------------------
# Multi masker, inverse transform, warnings and errors
# ---------------------------------------------------------------------------


def test_multi_masker_list_parity(data):
    params = {
        "maps_img": data["maps"]["data"],
        "mask_img": data["mask"]["data"],
        "standardize": "zscore_sample",
        "detrend": True,
        "keep_masked_maps": False,
        "n_jobs": 1,
    }
    imgs = [data["bold"], data["bold2"]]
    kwargs = {
        "confounds": [data["confounds"], None],
        "sample_mask": [_sample_mask("indices"), None],
    }
    got, _, _ = _check_parity(
        params, imgs, kwargs, cls=(MultiNiftiMapsMasker, nl_maskers.MultiNiftiMapsMasker)
    )
    assert [g.shape for g in got] == [(N_VOLUMES - 5, 4), (N_VOLUMES, 4)]
    # One image (and lists of one confounds entry) gives an array, as nilearn.
    single, _, _ = _check_parity(
        params,
        data["bold"],
        {"confounds": [data["confounds"]]},
        cls=(MultiNiftiMapsMasker, nl_maskers.MultiNiftiMapsMasker),
    )
    assert single.shape == (N_VOLUMES, 4)


def test_multi_masker_high_variance_confounds_parity(data):
    params = {"maps_img": data["maps"]["data"], "high_variance_confounds": True}
    _check_parity(
        params,
        [data["bold"], data["bold2"]],
        {"confounds": [data["confounds"], data["confounds"]]},
        cls=(MultiNiftiMapsMasker, nl_maskers.MultiNiftiMapsMasker),
    )


@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("resampling_target", ["data", "maps"])
def test_inverse_transform_parity(data, with_mask, resampling_target):
    params = {"maps_img": data["maps"][resampling_target], "resampling_target": resampling_target}
    if with_mask:
        params["mask_img"] = data["mask"][resampling_target]
    signals, ours, theirs = _check_parity(params, data["bold"])
    for values in (signals, signals[3]):
        got = ours.inverse_transform(values)
        expected = _quietly(theirs.inverse_transform, values)
        assert got.shape == expected.shape
        assert np.asarray(got.dataobj).dtype == np.asarray(expected.dataobj).dtype
        assert_allclose(got.affine, expected.affine)
        assert_allclose(
            np.asarray(got.dataobj), np.asarray(expected.dataobj), rtol=1e-10, atol=1e-10
        )


def test_keep_masked_maps_warnings(data):
    params = {"maps_img": data["maps"][None], "mask_img": data["mask"][None]}
    with pytest.warns(DeprecationWarning, match="keep_masked_maps"):
        NiftiMapsMasker(**params).fit_transform(data["bold"])
    with pytest.warns(UserWarning, match=r"maps with the following indices were removed: \{4\}"):
        NiftiMapsMasker(**params, keep_masked_maps=False).fit_transform(data["bold"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no mask, nothing to say
        NiftiMapsMasker(data["maps"][None]).fit_transform(data["bold"])


def test_allow_overlap_false(data):
    with pytest.raises(ValueError, match="Overlap detected"):
        NiftiMapsMasker(data["maps"][None], allow_overlap=False).fit_transform(data["bold"])
    with pytest.raises(ValueError, match="Overlap detected"):
        nl_maskers.NiftiMapsMasker(data["maps"][None], allow_overlap=False).fit_transform(
            data["bold"]
        )
    separate = image.get_data(data["maps"][None])[..., [0, 4]]
    maps = nib.Nifti1Image(np.clip(separate, 0, None), DATA_AFFINE)
    _check_parity({"maps_img": maps, "allow_overlap": False}, data["bold"])


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        ({"resampling_target": "mask"}, ValueError, "no mask has been provided"),
        ({"resampling_target": "labels"}, ValueError, "'data', 'mask', 'maps' or None"),
        ({"keep_masked_maps": "yes"}, TypeError, "keep_masked_maps"),
        ({"allow_overlap": 1}, TypeError, "allow_overlap"),
        ({"maps_img": None}, TypeError, "maps_img"),
    ],
)
def test_fit_errors(data, params, error, match):
    params = {"maps_img": data["maps"]["data"], **params}
    with pytest.raises(error, match=match):
        NiftiMapsMasker(**params).fit(data["bold"])


def test_grids_must_match_without_resampling(data):
    masker = NiftiMapsMasker(data["maps"]["data"], resampling_target=None)
    with pytest.raises(ValueError, match="field of view"):
        masker.fit(data["bold"])
    masker.fit()
    with pytest.raises(ValueError, match="field of view"):
        masker.transform(data["bold"])


def test_not_fitted_and_inverse_transform_errors(data):
    from sklearn.exceptions import NotFittedError

    masker = NiftiMapsMasker(data["maps"]["data"])
    with pytest.raises(NotFittedError):
        masker.transform(data["bold"])
    masker.fit(data["bold"])
    with pytest.raises(ValueError, match="wrong shape"):
        masker.inverse_transform(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="NaN or infinity"):
        masker.inverse_transform(np.full((3, 5), np.nan))


def test_clone_and_inputs_not_modified(data):
    from sklearn.base import clone

    maps = data["maps"]["data"]
    before = np.asarray(maps.dataobj).copy()
    masker = NiftiMapsMasker(maps, mask_img=data["mask"]["data"], standardize="psc")
    masker.fit_transform(data["bold"])
    assert_array_equal(np.asarray(maps.dataobj), before)
    copy = clone(masker)
    assert copy.get_params().keys() == masker.get_params().keys()
    assert copy.standardize == "psc"
    assert not hasattr(copy, "maps_img_")


def test_generate_report(data, tmp_path):
    masker = NiftiMapsMasker(data["maps"]["data"], mask_img=data["mask"]["data"])
    masker.fit(data["bold"])
    report = masker.generate_report(3)
    path = tmp_path / "report.html"
    report.save_as_html(path)
    text = path.read_text()
    assert "NiftiMapsMasker" in text and "<img" in text
    with pytest.raises(TypeError, match="displayed_maps"):
        masker.generate_report("some")
    with pytest.raises(ValueError, match="only has 5 maps"):
        masker.generate_report([1, 7])


# ---------------------------------------------------------------------------
# The reducer and the one pass
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("sparse", [False, True])
def test_maps_reducer_is_lstsq_minimum_norm(rng, monkeypatch, sparse):
    from bidsapp.regions import maps as maps_module

    monkeypatch.setattr(maps_module, "SPARSE_DENSITY", 1.1 if sparse else 0.0)
    maps = _maps_data(DATA_SHAPE, DATA_AFFINE)
    # A duplicated map and an all-zero map: rank-deficient, as lstsq handles.
    maps = np.concatenate([maps, maps[..., :1], np.zeros((*DATA_SHAPE, 1))], axis=-1)
    reducer = regions.MapsReducer(maps)
    assert scipy.sparse.issparse(reducer.weights) is sparse
    series = rng.normal(size=(*DATA_SHAPE, 7))
    expected = scipy.linalg.lstsq(maps.reshape(-1, maps.shape[3]), series.reshape(-1, 7))[0].T
    got = reducer.reduce(reducer.take(series))
    assert_allclose(got, expected, rtol=1e-8, atol=1e-10)
    assert_array_equal(got[:, -1], 0)
    assert_allclose(got[:, 0], got[:, -2])  # the duplicate shares the weight


def _counting_open(monkeypatch):
    opened = []
    original = stream.open_stream
    monkeypatch.setattr(
        stream, "open_stream", lambda *a, **k: opened.append(a[0]) or original(*a, **k)
    )
    return opened


def test_labels_and_maps_atlases_mixed_read_the_bold_once(data, tmp_path, monkeypatch):
    bold = tmp_path / "bold.nii.gz"
    data["bold"].to_filename(bold)
    x, y, z = _world(DATA_SHAPE, DATA_AFFINE)
    labels = nib.Nifti1Image((np.digitize(x, [1.0, 12.0]) + 1).astype(np.int16), DATA_AFFINE)
    common = {"standardize": "zscore_sample", "detrend": True, "mask_img": data["mask"]["data"]}
    labels_masker = NiftiLabelsMasker(labels, keep_masked_labels=False, **common)
    maps_masker = NiftiMapsMasker(data["maps"]["data"], keep_masked_maps=False, **common)
    other_maps = NiftiMapsMasker(data["maps"][None], **common)
    maskers = [labels_masker, maps_masker, other_maps]
    expected = [_quietly(m.fit_transform, str(bold)) for m in maskers]
    oracle = _quietly(
        nl_maskers.NiftiMapsMasker(
            data["maps"]["data"], keep_masked_maps=False, **common
        ).fit_transform,
        str(bold),
    )
    opened = _counting_open(monkeypatch)
    streamed = _quietly(
        stream_fitted,
        str(bold),
        [m._fitted for m in maskers],
        [m._settings for m in maskers],
    )
    assert len(opened) == 1  # one inflate for one labels and two maps atlases
    got = _quietly(clean_streamed, streamed)
    for one, other in zip(got, expected, strict=True):
        assert_array_equal(one, other)
    _assert_signals_equal(got[1], oracle)
    assert streamed.region_ids[1] == [0, 1, 2, 3]  # map 4 lies outside the mask


def test_maps_pass_counts_non_finite_voxels(data):
    bold = np.asarray(image.get_data(data["bold"])).copy()
    bold[2, 3, 4, 7] = np.nan
    img = nib.Nifti1Image(bold, DATA_AFFINE)
    masker = NiftiMapsMasker(data["maps"][None]).fit(img)
    streamed = _quietly(stream_fitted, img, [masker._fitted], masker._settings)
    fraction = streamed.non_finite_fraction
    assert fraction[7] > 0 and np.count_nonzero(fraction) == 1
    expected = _quietly(nl_maskers.NiftiMapsMasker(data["maps"][None]).fit_transform, img)
    _assert_signals_equal(_quietly(clean_streamed, streamed)[0], expected)


def test_all_extraction_cases_are_distinct():
    assert len(set(EXTRACTION_CASES)) == len(EXTRACTION_CASES) == 11
    assert {c[0] for c in EXTRACTION_CASES} == {"data", "mask", "maps", None}
    assert set(itertools.chain.from_iterable([c[1:] for c in EXTRACTION_CASES])) == {True, False}
