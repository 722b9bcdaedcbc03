"""Tests of the streaming engine: one pass, several atlases, the numbers of the whole array."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from bidsapp import engine, image, regions, stream
from bidsapp.engine import memory_bound, stream_region_signals
from bidsapp.regions import RegionReducer

SHAPE = (9, 10, 8)
N_VOLUMES = 17
AFFINE = np.diag([3.0, 3.0, 3.0, 1.0])
AFFINE[:3, 3] = (-12.0, -14.0, -10.0)


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(2024)


@pytest.fixture(scope="module")
def series(rng):
    data = 100 + rng.normal(size=(*SHAPE, N_VOLUMES)) * 5
    data[..., 3] += np.linspace(-40, 40, SHAPE[0])[:, None, None]
    return data.astype(np.float32)


@pytest.fixture(scope="module")
def reducers(rng):
    labels_a = rng.integers(0, 6, SHAPE)
    labels_b = rng.integers(0, 4, SHAPE)
    mask = rng.random(SHAPE) > 0.25
    return [
        RegionReducer(labels_a),
        RegionReducer(labels_b, mask=mask, reduction="median"),
        RegionReducer(labels_a, region_ids=[5, 1, 42], mask=mask, reduction="standard_deviation"),
    ]


def _expected(reducers, data):
    data = np.asarray(data)
    if data.ndim == 3:
        data = data[..., None]
    return [r.reduce(r.take(data)) for r in reducers]


def _assert_same(got, expected):
    """Same dtype and values (summation order may differ with memory layout)."""
    assert got.dtype == expected.dtype
    assert_allclose(got, expected, rtol=1e-6 if got.dtype == np.float32 else 1e-12, atol=0)


def _save(tmp_path, data, name, affine=AFFINE, header=None):
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, affine, header), path)
    return path


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("per_block", [None, 1, 5, 40])
def test_file_pass_equals_whole_array(tmp_path, series, reducers, suffix, per_block):
    path = _save(tmp_path, series, f"bold{suffix}")
    result = stream_region_signals(path, reducers, volumes_per_block=per_block)
    assert result.n_volumes == N_VOLUMES
    for got, expected in zip(result.signals, _expected(reducers, series), strict=True):
        assert got.dtype == np.float32
        _assert_same(got, expected)


@pytest.mark.parametrize("source", ["image", "loaded_file", "list_of_3d"])
def test_other_sources_equal_whole_array(tmp_path, series, reducers, source):
    if source == "image":
        imgs = nib.Nifti1Image(series, AFFINE)
    elif source == "loaded_file":
        imgs = nib.load(_save(tmp_path, series, "bold.nii.gz"))
    else:
        imgs = [nib.Nifti1Image(series[..., t], AFFINE) for t in range(N_VOLUMES)]
    result = stream_region_signals(imgs, reducers, volumes_per_block=4)
    for got, expected in zip(result.signals, _expected(reducers, series), strict=True):
        _assert_same(got, expected)


def test_3d_image_is_one_volume(tmp_path, series, reducers):
    path = _save(tmp_path, series[..., 2], "vol.nii.gz")
    result = stream_region_signals(path, reducers)
    assert result.n_volumes == 1
    for got, expected in zip(result.signals, _expected(reducers, series[..., 2]), strict=True):
        assert got.shape == expected.shape == (1, expected.shape[1])
        _assert_same(got, expected)


def test_all_atlases_share_one_inflate(tmp_path, series, reducers, monkeypatch):
    path = _save(tmp_path, series, "bold.nii.gz")
    opened = []
    original = stream.open_stream

    def counting(*args, **kwargs):
        opened.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(stream, "open_stream", counting)
    stream_region_signals(path, reducers, mean_volume=True, smoothing_fwhm=5.0)
    assert len(opened) == 1


def test_scaled_integers_match_nibabel(tmp_path, rng, reducers):
    data = rng.integers(-3000, 3000, (*SHAPE, N_VOLUMES)).astype(np.int16)
    img = nib.Nifti1Image(data, AFFINE)
    img.header.set_slope_inter(0.25, 7.0)
    path = tmp_path / "scaled.nii.gz"
    nib.save(img, path)
    values = np.asanyarray(nib.load(path).dataobj)
    assert values.dtype == np.float64
    result = stream_region_signals(path, reducers)
    for got, expected in zip(result.signals, _expected(reducers, values), strict=True):
        assert got.dtype == np.float64
        _assert_same(got, expected)


@pytest.mark.parametrize("dtype", ["auto", np.float64, np.float32])
def test_dtype_cast_before_reduction(tmp_path, series, reducers, dtype):
    path = _save(tmp_path, series.astype(np.float64), "bold64.nii.gz")
    cast = image.get_data(image.load_img(path, dtype=dtype))
    result = stream_region_signals(path, reducers, dtype=dtype)
    for got, expected in zip(result.signals, _expected(reducers, cast), strict=True):
        _assert_same(got, expected)


@pytest.mark.parametrize("fwhm", [4.0, (3.0, None, 8.0), "fast"])
def test_smoothing_per_volume_equals_4d_smoothing(tmp_path, series, reducers, fwhm):
    path = _save(tmp_path, series, "bold.nii.gz")
    smoothed = image.smooth_array(series, AFFINE, fwhm=fwhm, ensure_finite=True)
    result = stream_region_signals(path, reducers, smoothing_fwhm=fwhm, volumes_per_block=3)
    for got, expected in zip(result.signals, _expected(reducers, smoothed), strict=True):
        assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_zero_fwhm_warns_once_and_does_not_smooth(series, reducers):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = stream_region_signals(
            nib.Nifti1Image(series, AFFINE), reducers, smoothing_fwhm=0, volumes_per_block=1
        )
    assert sum("'fwhm' for smoothing is specified as 0" in str(w.message) for w in caught) == 1
    for got, expected in zip(result.signals, _expected(reducers, series), strict=True):
        _assert_same(got, expected)


@pytest.mark.parametrize("with_nan", [False, True])
def test_resampling_per_volume_equals_4d_resampling(tmp_path, series, rng, with_nan):
    data = series.copy()
    if with_nan:
        data[4, 4, 4, 2] = np.nan
    path = _save(tmp_path, data, "bold.nii.gz")
    target_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    target_affine[:3, 3] = (-11.3, -12.7, -8.1)
    target_shape = (12, 14, 11)
    labels = rng.integers(0, 7, target_shape)
    targets = [RegionReducer(labels), RegionReducer(labels, reduction="maximum")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resampled = image.resample_img(
            nib.Nifti1Image(data, AFFINE),
            target_affine=target_affine,
            target_shape=target_shape,
            interpolation="continuous",
        )
        expected = _expected(targets, image.safe_get_data(resampled, ensure_finite=True))
        result = stream_region_signals(
            path, targets, target_affine=target_affine, target_shape=target_shape
        )
    assert result.non_finite is with_nan
    for got, want in zip(result.signals, expected, strict=True):
        assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_resampling_clips_to_the_range_of_the_whole_series(tmp_path, rng):
    # A sharp peak only in the last volume raises the clip bound of every earlier volume:
    # the spline overshoot of the first volumes must be clipped with the final bounds.
    data = np.zeros((*SHAPE, 4), dtype=np.float32)
    data[4, 5, 4, 0] = 100.0
    data[2:7, 2:8, 2:6, 1:3] = 50.0
    data[1, 1, 1, 3] = 300.0
    target_affine = AFFINE.copy()
    target_affine[:3, 3] += 1.1
    labels = np.ones(SHAPE, dtype=int)
    labels[4:, :, :] = 2
    targets = [RegionReducer(labels, reduction=s) for s in ("mean", "maximum", "minimum")]
    img = nib.Nifti1Image(data, AFFINE)
    resampled = image.resample_img(
        img, target_affine=target_affine, target_shape=SHAPE, interpolation="continuous"
    )
    expected = _expected(targets, image.get_data(resampled))
    result = stream_region_signals(
        _save(tmp_path, data, "peaks.nii.gz"),
        targets,
        target_affine=target_affine,
        target_shape=SHAPE,
        volumes_per_block=1,
    )
    for got, want in zip(result.signals, expected, strict=True):
        assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_resampling_reads_the_file_twice_only_when_interpolating(tmp_path, series, monkeypatch):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])  # exact inverse: a whole-voxel shift is exact
    path = _save(tmp_path, series, "bold.nii.gz", affine=affine)
    opened = []
    original = stream.open_stream
    monkeypatch.setattr(
        stream, "open_stream", lambda *a, **k: opened.append(a[0]) or original(*a, **k)
    )
    shifted = affine.copy()
    shifted[:3, 3] += 2.0  # a whole voxel: values are copied, not interpolated
    stream_region_signals(
        path, [RegionReducer(np.ones(SHAPE))], target_affine=shifted, target_shape=SHAPE
    )
    assert len(opened) == 1
    moved = affine.copy()
    moved[:3, 3] += 1.0
    stream_region_signals(
        path, [RegionReducer(np.ones(SHAPE))], target_affine=moved, target_shape=SHAPE
    )
    assert len(opened) == 3  # one pass for the series' range, one to reduce


def test_non_finite_values_become_zero_with_a_warning(tmp_path, series, reducers):
    data = series.copy()
    data[1, 2, 3, 4] = np.nan
    data[0, 0, 0, :] = np.inf
    path = _save(tmp_path, data, "bold.nii.gz")
    with pytest.warns(UserWarning, match="Non-finite values detected"):
        result = stream_region_signals(path, reducers, volumes_per_block=2)
    assert result.non_finite
    finite = np.where(np.isfinite(data), data, 0)
    for got, expected in zip(result.signals, _expected(reducers, finite), strict=True):
        _assert_same(got, expected)


def test_mean_volume_by_product(tmp_path, series, reducers):
    path = _save(tmp_path, series, "bold.nii.gz")
    result = stream_region_signals(path, reducers, mean_volume=True, volumes_per_block=4)
    expected = series.mean(axis=-1)
    assert result.mean_volume.dtype == np.float32
    assert_allclose(result.mean_volume, expected, rtol=1e-6)
    for got, want in zip(result.signals, _expected(reducers, series), strict=True):
        _assert_same(got, want)


def test_reducer_on_another_grid_is_refused(series):
    with pytest.raises(ValueError, match=r"reducer #0 is on a grid of shape \(3, 3, 3\)"):
        stream_region_signals(nib.Nifti1Image(series, AFFINE), [RegionReducer(np.ones((3, 3, 3)))])


def test_truncated_file_names_the_file(tmp_path, series, reducers):
    import gzip

    path = _save(tmp_path, series, "bold.nii.gz")
    raw = gzip.decompress(path.read_bytes())
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(gzip.compress(raw[: len(raw) * 2 // 3]))
    with pytest.raises(stream.StreamError, match="broken.nii.gz.*ends early"):
        stream_region_signals(broken, reducers)


def test_labels_reducer_matches_img_to_signals(series, rng):
    labels = nib.Nifti1Image(rng.integers(0, 5, SHAPE).astype(np.int16), AFFINE)
    mask = nib.Nifti1Image((rng.random(SHAPE) > 0.5).astype(np.uint8), AFFINE)
    img = nib.Nifti1Image(series, AFFINE)
    for keep in (True, False):
        reducer, ids, atlas = regions.labels_reducer(
            labels, mask, reference=img, keep_masked_labels=keep
        )
        signals, expected_ids, expected_atlas = regions.img_to_signals(
            img, labels, mask, keep_masked_labels=keep
        )
        assert ids == expected_ids
        _assert_same(stream_region_signals(img, [reducer]).signals[0], signals)
        assert_array_equal(np.asarray(atlas.dataobj), np.asarray(expected_atlas.dataobj))


def test_memory_bound_barely_grows_with_volumes_and_grows_with_atlases():
    grid = (97, 115, 97)
    one = memory_bound((*grid, 300), n_regions=400)
    # Only the (n_volumes x n_regions) outputs grow with the series: 32 bytes per value.
    assert memory_bound((*grid, 1200), n_regions=400) - one == 900 * 400 * 32
    assert memory_bound((*grid, 300), n_regions=400, n_atlases=3) > one
    assert memory_bound((*grid, 300), n_regions=400, smoothing=True) > one
    assert engine.BASELINE_BYTES < one < 384 * 2**20


def test_a_failing_reduction_stops_the_reader_thread(tmp_path, series, monkeypatch):
    import threading

    path = _save(tmp_path, series, "bold.nii.gz")

    def broken(self, block):
        raise RuntimeError("reduction failed")

    monkeypatch.setattr(RegionReducer, "reduce", broken)
    with pytest.raises(RuntimeError, match="reduction failed"):
        stream_region_signals(path, [RegionReducer(np.ones(SHAPE))], volumes_per_block=1)
    assert not [t for t in threading.enumerate() if t.name == "bidsapp-inflate"]


@pytest.mark.parametrize(
    "options",
    [{}, {"mean_volume": True}, {"smoothing_fwhm": 6.0}, {"volumes_per_block": 3}],
    ids=["plain", "mean", "smoothed", "blocks"],
)
def test_non_finite_fraction_is_counted_per_volume_in_the_same_pass(
    tmp_path, series, reducers, monkeypatch, options
):
    data = series.copy()
    data[..., 2] = np.nan  # a whole volume
    data[..., 9] = np.inf
    data[:3, ..., 5] = np.nan  # a slab of one volume
    data[1, 2, 3, 11] = -np.inf  # one voxel
    path = _save(tmp_path, data, "bold.nii.gz")
    opened = []
    real_open = stream.open_stream
    monkeypatch.setattr(
        stream, "open_stream", lambda *a, **k: opened.append(a) or real_open(*a, **k)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stream_region_signals(path, reducers, **options)
    assert len(opened) == 1  # counted during the one pass
    voxels = np.unique(
        np.concatenate(
            [
                np.ravel_multi_index(np.unravel_index(r.voxel_indices, SHAPE), SHAPE)
                for r in reducers
            ]
        )
    )
    flat = data.reshape(-1, N_VOLUMES)[voxels]
    expected = (~np.isfinite(flat)).sum(axis=0) / len(voxels)
    assert_allclose(result.non_finite_fraction, expected)
    assert result.non_finite_fraction[2] == 1.0 and result.non_finite_fraction[9] == 1.0
    assert 0 < result.non_finite_fraction[5] < 1 and result.non_finite_fraction[0] == 0


def test_physical_memory_is_known_here_and_bounds_are_below_it():
    total = engine.physical_memory()
    assert total is None or total > memory_bound((9, 10, 8, 17))


class _WeightedReducer:
    """A weighted-maps reducer written against engine.Reducer only (as a probabilistic atlas)."""

    def __init__(self, maps: np.ndarray) -> None:
        self.shape = maps.shape[:3]
        flat = maps.reshape(-1, maps.shape[3])
        self.voxel_indices = np.flatnonzero(flat.any(axis=1))
        self.weights = flat[self.voxel_indices]
        self.n_regions = maps.shape[3]

    def reduce(self, block: np.ndarray) -> np.ndarray:
        return block @ self.weights


def test_reducers_plug_in_through_the_reducer_interface():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(4, 5, 3, 6))
    labels = np.repeat(np.arange(3), 20).reshape(4, 5, 3)
    maps = rng.uniform(size=(4, 5, 3, 2)) * (rng.uniform(size=(4, 5, 3, 1)) > 0.5)
    labels_reducer = RegionReducer(labels, [1, 2])
    weighted = _WeightedReducer(maps)
    assert isinstance(labels_reducer, engine.Reducer)
    assert isinstance(weighted, engine.Reducer)
    streamed = stream_region_signals(nib.Nifti1Image(data, np.eye(4)), [labels_reducer, weighted])
    series = data.reshape(-1, 6).T
    assert_allclose(streamed.signals[1], series @ maps.reshape(-1, 2))
    assert_allclose(streamed.signals[0], labels_reducer.reduce(labels_reducer.take(data)))
