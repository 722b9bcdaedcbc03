"""Tests of bidsapp.regions: the reducer against direct numpy and nilearn 0.12.1."""

import gc
import warnings

import nibabel as nib
import numpy as np
import pytest
from nilearn.regions import signal_extraction as nl_extraction
from numpy.testing import assert_allclose, assert_array_equal
from scipy import ndimage

from bidsapp import image, regions

SHAPE = (12, 13, 11)
RTOL, ATOL = 1e-5, 1e-6
AFFINE = np.diag([3.0, 3.0, 3.0, 1.0])

# Direct, per-region definitions of each strategy (population variance, as scipy).
DIRECT = {
    "mean": np.mean,
    "median": np.median,
    "sum": np.sum,
    "minimum": np.min,
    "maximum": np.max,
    "variance": np.var,
    "standard_deviation": np.std,
}


@pytest.fixture(scope="module", autouse=True)
def _fast_oracle():
    # nilearn runs gc.collect() whenever it reads image data; freezing the
    # objects alive now makes that cheap without changing any result.
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(7)


@pytest.fixture(scope="module")
def labels(rng):
    data = rng.choice([0, 1, 2, 5, 9, 12], size=SHAPE).astype(np.int16)
    data[:2, :2, :2] = 30  # a small region (8 voxels: even count for the median)
    data[-1, -1, -1] = 31  # a one-voxel region
    return data


@pytest.fixture(scope="module")
def mask(labels):
    out = np.ones(SHAPE, dtype=bool)
    out[:3] = False  # region 30 lies entirely outside the mask
    return out


@pytest.fixture(scope="module")
def series(rng):
    return rng.normal(100.0, 10.0, size=(*SHAPE, 25))


def _direct(strategy, data4d, labels, region_ids, mask=None):
    """Reference: one region at a time, plain numpy on the voxels of that region."""
    out = np.zeros((data4d.shape[-1], len(region_ids)))
    inside = np.ones(labels.shape, bool) if mask is None else mask
    for column, region in enumerate(region_ids):
        voxels = data4d[(labels == region) & inside]  # (n_voxels, n_volumes)
        if len(voxels):
            out[:, column] = DIRECT[strategy](voxels, axis=0)
    return out


@pytest.mark.parametrize("strategy", regions.REDUCTIONS)
def test_each_strategy_equals_direct_numpy(strategy, labels, series):
    reducer = regions.RegionReducer(labels, reduction=strategy)
    assert_array_equal(reducer.region_ids, [1, 2, 5, 9, 12, 30, 31])
    got = reducer.reduce(reducer.take(series))
    expected = _direct(strategy, series, labels, reducer.region_ids)
    assert got.shape == (25, 7) and got.dtype == np.float64
    assert_allclose(got, expected, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("strategy", regions.REDUCTIONS)
def test_each_strategy_with_mask_and_empty_region(strategy, labels, mask, series):
    ids = [31, 2, 30, 1, 12, 5, 9]  # unsorted: output columns follow this order
    reducer = regions.RegionReducer(labels, ids, reduction=strategy, mask=mask)
    got = reducer.reduce(reducer.take(series))
    expected = _direct(strategy, series, labels, ids, mask=mask)
    assert_allclose(got, expected, rtol=1e-10, atol=1e-9)
    assert_array_equal(got[:, 2], 0)  # region 30: no voxel inside the mask
    assert reducer.counts[2] == 0


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("strategy", regions.REDUCTIONS)
def test_each_strategy_equals_scipy_ndimage_float32(strategy, labels, series):
    data = series.astype(np.float32)
    reducer = regions.RegionReducer(labels, reduction=strategy)
    got = reducer.reduce(reducer.take(data))
    reference = getattr(ndimage, strategy)
    expected = np.array(
        [reference(data[..., t], labels=labels, index=reducer.region_ids) for t in range(25)]
    )
    assert got.dtype == np.float32
    assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("strategy", regions.REDUCTIONS)
def test_blockwise_reduction_equals_whole_array(strategy, labels, mask, series):
    reducer = regions.RegionReducer(labels, reduction=strategy, mask=mask)
    block = reducer.take(series)
    whole = reducer.reduce(block)
    pieces = np.vstack([reducer.reduce(block[start : start + 7]) for start in range(0, 25, 7)])
    # Volume by volume, from 3D volumes: the streaming use.
    streamed = np.vstack([reducer.reduce(reducer.take(series[..., t])) for t in range(25)])
    for other in (pieces, streamed):
        if strategy in ("median", "minimum", "maximum"):
            assert_array_equal(other, whole)  # order statistics are exact
        else:
            # Sums may differ in the last bit: numpy's summation order depends
            # on the array layout.
            assert_allclose(other, whole, rtol=1e-13, atol=1e-12)


def test_integer_block_is_reduced_in_float64(labels, rng):
    data = rng.integers(-50, 50, size=(*SHAPE, 4)).astype(np.int16)
    reducer = regions.RegionReducer(labels, reduction="median")
    got = reducer.reduce(reducer.take(data))
    assert got.dtype == np.float64
    assert_allclose(got, _direct("median", data.astype(float), labels, reducer.region_ids))


def test_voxel_indices_are_grouped_by_region(labels, mask):
    reducer = regions.RegionReducer(labels, [12, 1, 5], mask=mask)
    assert np.all(np.diff(reducer.region_index) >= 0)
    flat_labels = labels.ravel()[reducer.voxel_indices]
    assert_array_equal(flat_labels, np.array([12, 1, 5])[reducer.region_index])
    assert np.all(mask.ravel()[reducer.voxel_indices])
    for column, region in enumerate([12, 1, 5]):
        assert reducer.counts[column] == np.sum((labels == region) & mask)
    assert reducer.n_voxels == reducer.counts.sum() == len(reducer.voxel_indices)


def test_take_expand_and_to_volume_round_trip(labels, series):
    reducer = regions.RegionReducer(labels)
    signals = reducer.reduce(reducer.take(series))
    volume = reducer.to_volume(reducer.expand(signals))
    assert volume.shape == (*SHAPE, 25)
    for column, region in enumerate(reducer.region_ids):
        assert_allclose(
            volume[labels == region], np.tile(signals[:, column], (np.sum(labels == region), 1))
        )
    assert_array_equal(volume[labels == 0], 0)
    one = reducer.to_volume(reducer.expand(signals[0]))
    assert one.shape == SHAPE
    assert_array_equal(one, volume[..., 0])


def test_one_volume_block_gives_1d(labels, series):
    reducer = regions.RegionReducer(labels)
    out = reducer.reduce(reducer.take(series[..., 0]))
    assert out.shape == (reducer.n_regions,)


def test_float_labels_and_non_finite_labels(labels, series):
    as_float = labels.astype(np.float32)
    as_float[0, 0, 0] = np.nan  # treated as background
    reducer = regions.RegionReducer(as_float)
    assert 0 not in reducer.region_ids.tolist()
    expected_labels = labels.copy()
    expected_labels[0, 0, 0] = 0
    assert_allclose(
        reducer.reduce(reducer.take(series)),
        _direct("mean", series, expected_labels, reducer.region_ids),
        rtol=1e-10,
    )


def test_reducer_without_regions(labels, series):
    reducer = regions.RegionReducer(labels, [])
    assert reducer.n_regions == reducer.n_voxels == 0
    assert reducer.reduce(reducer.take(series)).shape == (25, 0)


def test_region_ids_missing_from_labels_give_zero_columns(labels, series):
    reducer = regions.RegionReducer(labels, [1, 777])
    out = reducer.reduce(reducer.take(series))
    assert_array_equal(out[:, 1], 0)
    assert out[:, 0].std() > 0


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"reduction": "mode"}, ValueError, "Invalid strategy 'mode'"),
        ({"region_ids": [1, 1]}, ValueError, "duplicates"),
        ({"mask": np.ones((3, 3, 3))}, ValueError, r"'mask' has shape \(3, 3, 3\)"),
    ],
)
def test_reducer_errors(labels, kwargs, error, message):
    with pytest.raises(error, match=message):
        regions.RegionReducer(labels, **kwargs)


def test_reducer_rejects_wrong_blocks(labels):
    reducer = regions.RegionReducer(labels)
    with pytest.raises(ValueError, match="does not have .* columns"):
        reducer.reduce(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="does not match the labels grid"):
        reducer.take(np.zeros((3, 3, 3)))
    with pytest.raises(ValueError, match="'labels' must be a 3D array"):
        regions.RegionReducer(np.zeros((3, 3)))


def test_check_labels_values():
    regions.check_labels_values(np.array([0.0, 1.0, np.nan]))
    with pytest.raises(
        ValueError, match=r"'atlas' must contain integer labels; found non-integer values \[0.5\]"
    ):
        regions.check_labels_values(np.array([0.0, 0.5, 1.0]), name="atlas")


def test_region_coverage_and_counts(labels, mask):
    ids = [1, 30, 31, 404]
    counts = regions.region_voxel_counts(labels, ids)
    assert counts.tolist() == [np.sum(labels == i) for i in ids]
    coverage = regions.region_coverage(labels, mask, ids)
    expected_1 = np.sum((labels == 1) & mask) / np.sum(labels == 1)
    assert_allclose(coverage[:3], [expected_1, 0.0, 1.0])
    assert np.isnan(coverage[3])  # not in the atlas at all
    default = regions.region_coverage(labels, mask)
    assert len(default) == 7  # every label present but the background
    assert_allclose(regions.region_coverage(labels), 1.0)  # no mask: all inside


def test_region_coverage_from_images_on_a_reference_grid(labels, mask, tmp_path):
    labels_path = tmp_path / "atlas_dseg.nii.gz"
    nib.Nifti1Image(labels, AFFINE).to_filename(labels_path)
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), AFFINE)
    same = regions.region_coverage(labels_path, mask_img, [1, 30])
    assert_allclose(same, regions.region_coverage(labels, mask, [1, 30]))
    # On a coarser reference grid, labels and mask are resampled first
    # (nearest neighbour), as the masker does.
    ref_affine = np.diag([6.0, 6.0, 6.0, 1.0])
    reference = nib.Nifti1Image(np.zeros((6, 7, 6, 3), np.float32), ref_affine)
    got = regions.region_coverage(labels_path, mask_img, [1, 30], reference=reference)
    grid_labels = image.get_data(
        image.resample_to_img(nib.Nifti1Image(labels, AFFINE), reference, interpolation="nearest")
    )
    grid_mask = image.get_data(image.resample_to_img(mask_img, reference, interpolation="nearest"))
    expected = np.sum((grid_labels == 1) & (grid_mask > 0)) / np.sum(grid_labels == 1)
    assert_allclose(got, [expected, 0.0])
    with pytest.raises(ValueError, match="'mask' and 'labels' have different affine"):
        regions.region_coverage(labels_path, nib.Nifti1Image(mask.astype(np.uint8), ref_affine))
    with pytest.raises(ValueError, match="'reference' needs 'labels' given as an image"):
        regions.region_coverage(labels, mask, reference=reference)


# --------------------------------------------------------------------------
# Image-level functions against nilearn's signal_extraction
# --------------------------------------------------------------------------


def _images(labels, mask, series):
    return (
        nib.Nifti1Image(series, AFFINE),
        nib.Nifti1Image(labels, AFFINE),
        nib.Nifti1Image(mask.astype(np.uint8), AFFINE),
    )


@pytest.mark.parametrize("keep_masked_labels", [True, False])
@pytest.mark.parametrize("strategy", regions.REDUCTIONS)
def test_img_to_signals_matches_nilearn(strategy, keep_masked_labels, labels, mask, series):
    img, labels_img, mask_img = _images(labels, mask, series)
    ours, ids, atlas = regions.img_to_signals(
        img, labels_img, mask_img, strategy=strategy, keep_masked_labels=keep_masked_labels
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs, their_ids, their_atlas = nl_extraction.img_to_signals_labels(
            img,
            labels_img,
            mask_img,
            strategy=strategy,
            keep_masked_labels=keep_masked_labels,
            return_masked_atlas=True,
        )
    assert ids == [int(i) for i in their_ids]
    assert (30 in ids) is keep_masked_labels
    assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL)
    assert_array_equal(np.asarray(atlas.dataobj), np.asarray(their_atlas.dataobj))
    assert_allclose(atlas.affine, their_atlas.affine)


def test_masked_atlas_keeps_labels_above_int8(labels, series):
    # nilearn 0.12.1 casts the masked atlas to int8, which wraps label 300
    # around; we switch to int32 when labels do not fit.
    big = np.where(labels == 12, 300, labels).astype(np.int16)
    _, ids, atlas = regions.img_to_signals(
        nib.Nifti1Image(series, AFFINE), nib.Nifti1Image(big, AFFINE)
    )
    assert 300 in ids
    assert np.asarray(atlas.dataobj).dtype == np.int32
    assert_array_equal(np.asarray(atlas.dataobj), big)


def test_img_to_signals_3d_and_non_finite_data(labels, series):
    data = series[..., 0].copy()
    data[5, 5, 5] = np.nan
    img = nib.Nifti1Image(data, AFFINE)
    with pytest.warns(UserWarning, match="Non-finite values"):
        ours, _, _ = regions.img_to_signals(img, nib.Nifti1Image(labels, AFFINE))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs, _ = nl_extraction.img_to_signals_labels(
            nib.Nifti1Image(data[..., None].copy(), AFFINE), nib.Nifti1Image(labels, AFFINE)
        )
    assert ours.shape == (1, 7)
    assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL)
    assert np.isnan(data[5, 5, 5])  # input untouched


def test_img_to_signals_rejects_other_grids(labels, series):
    img = nib.Nifti1Image(series, AFFINE)
    with pytest.raises(ValueError, match="'labels_img' has shape .* incompatible shapes"):
        regions.img_to_signals(img, nib.Nifti1Image(labels[:-1], AFFINE))
    shifted = AFFINE.copy()
    shifted[0, 3] = 1.0
    with pytest.raises(ValueError, match="'mask_img' and 'imgs' have different affine"):
        regions.img_to_signals(
            img, nib.Nifti1Image(labels, AFFINE), nib.Nifti1Image(np.ones(SHAPE), shifted)
        )


@pytest.mark.filterwarnings("ignore:After applying mask:UserWarning")
@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("one_dimensional", [False, True])
def test_signals_to_img_matches_nilearn(use_mask, one_dimensional, labels, mask, rng):
    _, labels_img, mask_img = _images(labels, mask, np.zeros((*SHAPE, 1)))
    mask_img = mask_img if use_mask else None
    n_regions = 6 if use_mask else 7  # region 30 is outside the mask
    signals = rng.normal(size=(n_regions,) if one_dimensional else (9, n_regions))
    ours = regions.signals_to_img(signals, labels_img, mask_img)
    theirs = nl_extraction.signals_to_img_labels(signals, labels_img, mask_img)
    assert ours.shape == theirs.shape
    assert_array_equal(np.asarray(ours.dataobj), np.asarray(theirs.dataobj))
    assert_allclose(ours.affine, theirs.affine)


def test_signals_to_img_with_explicit_region_ids(labels, rng):
    labels_img = nib.Nifti1Image(labels, AFFINE)
    signals = rng.normal(size=(3, 2))
    out = np.asarray(regions.signals_to_img(signals, labels_img, region_ids=[9, 1]).dataobj)
    assert_array_equal(out[labels == 9], np.tile(signals[:, 0], (np.sum(labels == 9), 1)))
    assert_array_equal(out[labels == 1], np.tile(signals[:, 1], (np.sum(labels == 1), 1)))
    assert_array_equal(out[labels == 2], 0)
    with pytest.raises(
        ValueError, match=r"'signals' has shape \(3, 5\); expected \(n_volumes, 2\)"
    ):
        regions.signals_to_img(np.zeros((3, 5)), labels_img, region_ids=[9, 1])
