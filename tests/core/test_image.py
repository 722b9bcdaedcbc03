"""Tests of bidsapp.image against nilearn 0.12.1 (the oracle) and by hand."""

import warnings

import nibabel as nib
import numpy as np
import pytest
from nilearn import image as nl_image
from nilearn._utils.niimg import img_data_dtype as nl_img_data_dtype
from nilearn.image.image import smooth_array as nl_smooth_array
from numpy.testing import assert_allclose, assert_array_equal

from bidsapp import image

SHAPE = (12, 13, 11)
RTOL, ATOL = 1e-5, 1e-6


def _affine(voxel=3.0, origin=(-10.0, -12.0, -9.0)):
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = origin
    return affine


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(42)


@pytest.fixture(scope="module")
def bold(rng):
    data = rng.normal(100.0, 10.0, size=(*SHAPE, 6))
    return nib.Nifti1Image(data, _affine())


@pytest.fixture(scope="module")
def labels(rng):
    data = rng.integers(0, 8, size=SHAPE).astype(np.int16)
    return nib.Nifti1Image(data, _affine())


def _nilearn_resample(img, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nl_image.resample_img(img, force_resample=False, copy_header=True, **kwargs)


def _assert_same_img(ours, theirs, exact=False):
    assert ours.shape == theirs.shape
    assert_allclose(ours.affine, theirs.affine, rtol=0, atol=1e-10)
    assert np.asarray(ours.dataobj).dtype == np.asarray(theirs.dataobj).dtype
    if exact:
        assert_array_equal(np.asarray(ours.dataobj), np.asarray(theirs.dataobj))
    else:
        assert_allclose(
            np.asarray(ours.dataobj),
            np.asarray(theirs.dataobj),
            rtol=RTOL,
            atol=ATOL,
            equal_nan=True,
        )


# --------------------------------------------------------------------------
# Loading and checking
# --------------------------------------------------------------------------


def test_load_img_from_path_str_and_path(tmp_path, bold):
    path = tmp_path / "bold.nii.gz"
    bold.to_filename(path)
    for given in (path, str(path)):
        loaded = image.load_img(given)
        assert loaded.shape == bold.shape
        assert_allclose(image.get_data(loaded), bold.get_fdata())


def test_load_img_returns_input_object_when_nothing_changes(bold):
    assert image.load_img(bold) is bold


def test_load_img_missing_file_names_the_parameter(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'labels_img': file not found: .*nope\.nii"):
        image.load_img(tmp_path / "nope.nii", name="labels_img")


def test_load_img_rejects_other_types():
    with pytest.raises(TypeError, match="'img' must be a path to a NIfTI file.*got int"):
        image.load_img(3)


def test_load_img_list_of_3d_is_concatenated_like_nilearn(bold):
    vols = [nl_image.index_img(bold, i) for i in range(3)]
    ours = image.load_img(vols)
    theirs = nl_image.concat_imgs(vols, dtype=None)
    _assert_same_img(ours, theirs, exact=True)


def test_concat_rejects_different_fields_of_view(bold):
    other = nib.Nifti1Image(np.zeros(SHAPE), _affine(voxel=2.0))
    with pytest.raises(ValueError, match=r"(?s)'imgs\[1\]' has shape .* share their field of view"):
        image.concat_imgs([nl_image.index_img(bold, 0), other])


def test_concat_rejects_empty_list():
    with pytest.raises(ValueError, match="empty list"):
        image.concat_imgs([])


def test_check_niimg_3d_given_where_4d_needed(labels):
    with pytest.raises(
        image.DimensionError, match=r"expected a 4D image, got 3D image of shape \(12, 13, 11\)"
    ):
        image.check_niimg(labels, ndim=4, name="imgs")


def test_check_niimg_4d_given_where_3d_needed(bold):
    with pytest.raises(
        image.DimensionError,
        match=r"'labels_img'.*expected a 3D image, got 4D image of shape \(12, 13, 11, 6\)",
    ):
        image.check_niimg(bold, ndim=3, name="labels_img")


def test_dimension_error_is_both_value_and_type_error(labels):
    # nilearn raises a TypeError subclass: code catching either keeps working.
    for kind in (TypeError, ValueError):
        with pytest.raises(kind):
            image.check_niimg(labels, ndim=4)


def test_check_niimg_squeezes_single_volume_for_3d(labels):
    one = nib.Nifti1Image(image.get_data(labels)[..., None], labels.affine)
    out = image.check_niimg(one, ndim=3)
    assert out.shape == SHAPE
    assert_array_equal(image.get_data(out), image.get_data(labels))


def test_check_niimg_atleast_4d(labels):
    out = image.check_niimg(labels, atleast_4d=True)
    assert out.shape == (*SHAPE, 1)


def test_check_niimg_rejects_5d():
    five = nib.Nifti1Image(np.zeros((*SHAPE, 2, 2), dtype=np.float32), _affine())
    with pytest.raises(image.DimensionError, match="expected a 3D or 4D image, got 5D"):
        image.check_niimg(five)


@pytest.mark.parametrize(
    ("stored", "requested"),
    [
        (np.int16, "auto"),
        (np.uint8, "auto"),
        (np.float64, "auto"),
        (np.float32, "auto"),
        (np.int16, np.float64),
        (np.float64, "float32"),
        (np.float32, None),
    ],
)
def test_dtype_conversion_matches_nilearn(stored, requested):
    img = nib.Nifti1Image(np.arange(np.prod(SHAPE)).reshape(SHAPE).astype(stored), _affine())
    ours = image.load_img(img, dtype=requested)
    theirs = nl_image.load_img(img, dtype=requested)
    assert image.get_data(ours).dtype == np.asarray(theirs.dataobj).dtype
    assert_array_equal(image.get_data(ours), np.asarray(theirs.dataobj))


def test_img_data_dtype_of_scaled_file_is_float64(tmp_path):
    img = nib.Nifti1Image(np.arange(np.prod(SHAPE)).reshape(SHAPE).astype(np.int16), _affine())
    img.header.set_slope_inter(2.0, 1.0)
    path = tmp_path / "scaled.nii"
    img.to_filename(path)
    loaded = nib.load(path)
    assert image.img_data_dtype(loaded) == nl_img_data_dtype(loaded) == np.float64
    unscaled = nib.Nifti1Image(np.zeros(SHAPE, np.int16), _affine())
    assert image.img_data_dtype(unscaled) == nl_img_data_dtype(unscaled) == np.int16


def test_safe_get_data_ensure_finite_never_modifies_image():
    data = np.ones(SHAPE)
    data[0, 0, 0] = np.nan
    img = nib.Nifti1Image(data, _affine())
    with pytest.warns(UserWarning, match="Non-finite values detected"):
        clean = image.safe_get_data(img, ensure_finite=True)
    assert clean[0, 0, 0] == 0
    assert np.isnan(image.get_data(img)[0, 0, 0])


def test_new_img_like_bool_and_int64():
    ref = nib.Nifti1Image(np.zeros(SHAPE, np.float32), _affine())
    assert image.new_img_like(ref, np.ones(SHAPE, bool)).get_data_dtype() == np.uint8
    assert image.new_img_like(ref, np.ones(SHAPE, np.int64)).get_data_dtype() == np.int32


def test_same_fov_and_check_same_fov(bold, labels):
    assert image.same_fov(bold, labels)
    shifted = nib.Nifti1Image(np.zeros(SHAPE), _affine(origin=(0.0, 0.0, 0.0)))
    small = nib.Nifti1Image(np.zeros((5, 5, 5)), _affine())
    assert not image.same_fov(bold, shifted)
    image.check_same_fov({"data": bold, "labels": labels})
    with pytest.raises(ValueError, match="- labels and mask do not have the same affine") as info:
        image.check_same_fov({"data": bold, "labels": labels, "mask": shifted})
    assert "data and mask do not have the same affine" in str(info.value)
    with pytest.raises(
        ValueError, match=r"do not have the same shape \(\(12, 13, 11\) vs \(5, 5, 5\)\)"
    ):
        image.check_same_fov({"data": bold, "small": small})


# --------------------------------------------------------------------------
# Resampling
# --------------------------------------------------------------------------


def _rotation_affine():
    theta = np.deg2rad(10)
    rot = np.array(
        [[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rot * 2.5
    affine[:3, 3] = [-8.0, -10.0, -6.0]
    return affine


@pytest.mark.parametrize(
    ("target_affine", "target_shape"),
    [
        (_affine(voxel=2.0, origin=(-11.3, -12.7, -8.1)), (17, 19, 16)),  # zoom + shift
        (_rotation_affine(), (14, 14, 12)),  # oblique: full matrix path
        (_affine(voxel=2.0, origin=(-11.0, -12.0, -9.0)), None),  # shape from bounds
    ],
)
def test_nearest_resampling_of_labels_matches_nilearn(labels, target_affine, target_shape):
    ours = image.resample_img(
        labels, target_affine=target_affine, target_shape=target_shape, interpolation="nearest"
    )
    theirs = _nilearn_resample(
        labels, target_affine=target_affine, target_shape=target_shape, interpolation="nearest"
    )
    _assert_same_img(ours, theirs, exact=True)


@pytest.mark.parametrize("interpolation", ["continuous", "linear"])
def test_4d_resampling_matches_nilearn(bold, interpolation):
    kwargs = {
        "target_affine": _affine(voxel=2.0, origin=(-11.3, -12.7, -8.1)),
        "target_shape": (17, 19, 16),
        "interpolation": interpolation,
    }
    ours = image.resample_img(bold, **kwargs)
    theirs = _nilearn_resample(bold, **kwargs)
    _assert_same_img(ours, theirs)
    # A data-driven check too: the resampled image is not a copy of zeros.
    assert np.asarray(ours.dataobj).std() > 1


def test_continuous_resampling_of_int_data_casts_to_float32(labels):
    kwargs = {"target_affine": _affine(voxel=2.0), "target_shape": (17, 19, 16)}
    with pytest.warns(UserWarning, match="Casting data from int16 to float32"):
        ours = image.resample_img(labels, **kwargs)
    _assert_same_img(ours, _nilearn_resample(labels, **kwargs))


def test_3x3_target_affine_matches_nilearn(bold):
    ours = image.resample_img(bold, target_affine=np.diag([2.0, 2.5, 2.0]))
    theirs = _nilearn_resample(bold, target_affine=np.diag([2.0, 2.5, 2.0]))
    _assert_same_img(ours, theirs)


def test_resampling_with_nans_matches_nilearn(bold):
    data = np.asarray(bold.dataobj).copy()
    data[3:5, 4:6, 2:4, :] = np.nan
    img = nib.Nifti1Image(data, bold.affine)
    kwargs = {
        "target_affine": _affine(voxel=2.0, origin=(-11.3, -12.7, -8.1)),
        "target_shape": (17, 19, 16),
    }
    with pytest.warns(RuntimeWarning, match="NaNs or infinite values"):
        ours = image.resample_img(img, **kwargs)
    theirs = _nilearn_resample(img, **kwargs)
    assert np.isnan(np.asarray(ours.dataobj)).any()
    _assert_same_img(ours, theirs)
    assert np.isnan(data).sum() == 2 * 2 * 2 * 6  # input untouched


def test_integer_shift_uses_copy_and_matches_nilearn(labels):
    # Target grid starts 2 voxels before the data: nilearn's copy shortcut
    # is exact in this direction.
    kwargs = {
        "target_affine": _affine(origin=(-16.0, -18.0, -9.0)),
        "target_shape": SHAPE,
        "interpolation": "nearest",
    }
    ours = image.resample_img(labels, **kwargs)
    _assert_same_img(ours, _nilearn_resample(labels, **kwargs), exact=True)
    assert_array_equal(image.get_data(ours)[2:, 2:], image.get_data(labels)[:-2, :-2])


def test_integer_shift_cut_at_lower_edge_is_correct(labels):
    # nilearn 0.12.1's shortcut misplaces the data here; we give what real
    # interpolation (its force_resample=True) gives.
    kwargs = {
        "target_affine": _affine(origin=(-4.0, -6.0, -9.0)),
        "target_shape": SHAPE,
        "interpolation": "nearest",
    }
    ours = image.resample_img(labels, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        forced = nl_image.resample_img(labels, force_resample=True, copy_header=True, **kwargs)
    _assert_same_img(ours, forced, exact=True)
    assert_array_equal(image.get_data(ours)[:-2, :-2], image.get_data(labels)[2:, 2:])


def test_no_resampling_needed_returns_copy(bold):
    out = image.resample_img(bold, target_affine=bold.affine, target_shape=SHAPE)
    assert out is not bold
    assert_array_equal(image.get_data(out), image.get_data(bold))
    assert image.resample_img(bold, copy=False) is bold


def test_clip_limits_spline_overshoot(labels):
    kwargs = {"target_affine": _affine(voxel=1.7), "target_shape": (20, 22, 19)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clipped = image.get_data(image.resample_img(labels, **kwargs))
        free = image.get_data(image.resample_img(labels, clip=False, **kwargs))
    assert clipped.max() <= 7 and clipped.min() >= 0
    assert free.max() > 7 or free.min() < 0


def test_resample_to_img_matches_nilearn(bold, labels):
    target = nib.Nifti1Image(
        np.zeros((17, 19, 16)), _affine(voxel=2.0, origin=(-11.3, -12.7, -8.1))
    )
    ours = image.resample_to_img(labels, target, interpolation="nearest")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = nl_image.resample_to_img(
            labels, target, interpolation="nearest", force_resample=False, copy_header=True
        )
        theirs_4d = nl_image.resample_to_img(bold, target, force_resample=False, copy_header=True)
    _assert_same_img(ours, theirs, exact=True)
    _assert_same_img(image.resample_to_img(bold, target), theirs_4d)


def test_fill_value_outside_field_of_view(bold):
    out = image.resample_img(
        bold,
        target_affine=_affine(voxel=3.0, origin=(-40.5, -12.0, -9.0)),
        target_shape=SHAPE,
        interpolation="nearest",
        fill_value=-1,
        clip=False,
    )
    assert np.all(image.get_data(out)[0] == -1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interpolation": "cubic"}, "'interpolation' must be one of"),
        ({"target_shape": (3, 3, 3)}, "'target_shape' was given without 'target_affine'"),
        ({"target_affine": np.eye(4), "target_shape": (3, 3)}, "3 values"),
        ({"target_affine": np.eye(3), "target_shape": (3, 3, 3)}, "must be 4x4"),
    ],
)
def test_resample_parameter_errors(bold, kwargs, message):
    with pytest.raises(ValueError, match=message):
        image.resample_img(bold, **kwargs)


def test_bounding_box_error(bold):
    far = _affine(origin=(500.0, 500.0, 500.0))
    with pytest.raises(image.BoundingBoxError, match="does not contain any of the data"):
        image.resample_img(bold, target_affine=far)


# --------------------------------------------------------------------------
# Smoothing and averaging
# --------------------------------------------------------------------------


@pytest.mark.parametrize("fwhm", [6.0, 4, [3.0, None, 8.0], "fast", None])
def test_smooth_array_matches_nilearn(bold, fwhm):
    data = image.get_data(bold)
    ours = image.smooth_array(data, bold.affine, fwhm=fwhm)
    theirs = nl_smooth_array(data, bold.affine, fwhm=fwhm)
    assert ours.dtype == theirs.dtype
    assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL)
    assert ours is not data


def test_smooth_array_int_and_nan_inputs_match_nilearn(labels):
    ints = image.get_data(labels)
    assert_allclose(
        image.smooth_array(ints, labels.affine, fwhm=5.0),
        nl_smooth_array(ints, labels.affine, fwhm=5.0),
        rtol=RTOL,
        atol=ATOL,
    )
    floats = ints.astype(np.float64)
    floats[0, 0, 0] = np.nan
    ours = image.smooth_array(floats, labels.affine, fwhm=5.0)
    assert np.isfinite(ours).all()
    assert_allclose(ours, nl_smooth_array(floats, labels.affine, fwhm=5.0), rtol=RTOL, atol=ATOL)
    assert np.isnan(floats[0, 0, 0])


def test_smooth_array_zero_fwhm_warns_and_does_nothing(bold):
    data = image.get_data(bold)
    with pytest.warns(UserWarning, match="Setting it to None"):
        out = image.smooth_array(data, bold.affine, fwhm=0)
    assert_array_equal(out, data)


def test_smooth_array_anisotropic_voxels_use_voxel_size(rng):
    # The kernel width in voxels follows each axis' voxel size (here 2 and 4 mm).
    affine = np.diag([2.0, 4.0, 2.0, 1.0])
    data = rng.normal(size=SHAPE)
    assert_allclose(
        image.smooth_array(data, affine, fwhm=6.0),
        nl_smooth_array(data, affine, fwhm=6.0),
        rtol=RTOL,
        atol=ATOL,
    )


def test_smooth_array_on_images_matches_nilearn_smooth_img(bold, labels):
    for img in (bold, labels):
        ours = image.smooth_array(image.get_data(img), img.affine, fwhm=5.0, copy=True)
        theirs = nl_image.smooth_img(img, 5.0)
        assert_allclose(ours, image.get_data(theirs), rtol=RTOL, atol=ATOL)


def test_index_img(bold):
    out = image.index_img(bold, 3)
    assert out.shape == SHAPE
    assert_array_equal(image.get_data(out), image.get_data(bold)[..., 3])


def test_load_checked_header_opens_checks_and_says_what_failed(tmp_path):
    from bidsapp import stream

    good = tmp_path / "good.nii"
    nib.save(nib.Nifti1Image(np.zeros((2, 3, 4), np.float32), np.eye(4)), good)
    img = image.load_checked_header(good)
    assert img.shape == (2, 3, 4) and not img.in_memory
    junk = tmp_path / "junk.nii"
    junk.write_bytes(b"not a nifti")
    with pytest.raises(image.ImageReadError) as info:
        image.load_checked_header(junk)
    assert info.value.__cause__ is not None  # nibabel's error, for the caller's message
    short = tmp_path / "short.nii"
    short.write_bytes(good.read_bytes()[:-8])
    with pytest.raises(stream.StreamError):
        image.load_checked_header(short)
    flat = tmp_path / "flat.nii"
    raw = bytearray(good.read_bytes())
    raw[80:84] = np.float32(np.nan).tobytes()  # pixdim[1], the first voxel size
    flat.write_bytes(bytes(raw))
    with pytest.raises(image.HeaderError, match="voxel sizes"):
        image.load_checked_header(flat)
