"""Broken and hostile input images and look-up tables, as a real lab meets them.

Brain masks and labels images read to the end of their gzip stream (CRC32, length);
headers whose data type or shape disagree with the bytes present; voxel sizes and affines
that cannot be used (nibabel itself repairs a zero or negative pixdim on loading, so only
non-finite ones reach us); duplicate region names; complex voxels; NIfTI scaling factors
that nibabel ignores or refuses. Each must give either nilearn's result or a clear failure
naming the file.
"""

from __future__ import annotations

import dataclasses
import gzip
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

# Reused helpers and fixtures (pytest puts tests/ on sys.path: it has no __init__.py).
from support.nifti import SHAPE, write_float32
from support.runs import extract_one_run

from bidsapp import image, maskers, stream
from bidsapp.app.config import DenoiseConfig
from bidsapp.app.run_inputs import ExtractionError, prepare_run
from bidsapp.dataset.atlas_checks import check_labels_image, read_lut
from bidsapp.dataset.atlas_spec import AtlasError
from bidsapp.stream import StreamError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

#: Byte offsets of NIfTI-1 header fields (nifti1.h).
DIM, DATATYPE, BITPIX, PIXDIM, SCL_SLOPE = 40, 70, 72, 76, 112
SFORM_CODE, SROW_X = 254, 280


def _raw(path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


def _save_raw(path, raw: bytes) -> None:
    path.write_bytes(gzip.compress(raw, compresslevel=1) if path.name.endswith(".gz") else raw)


def _patch(path, offset: int, values, dtype: str) -> None:
    """Overwrite header bytes at ``offset`` with ``values`` of ``dtype`` (the data kept)."""
    raw = bytearray(_raw(path))
    packed = np.asarray(values, dtype=dtype).tobytes()
    raw[offset : offset + len(packed)] = packed
    _save_raw(path, bytes(raw))


def _mask_like(path, shape=(20, 20, 12)):
    data = np.zeros(shape, np.uint8)
    data[2:-2, 2:-2, 2:-2] = 1
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), path)
    return data


def _break_trailer(path, how: str) -> None:
    """Spoil the gzip trailer of a .nii.gz: its CRC32, its ISIZE, or cut it short."""
    compressed = bytearray(path.read_bytes())
    if how == "crc32":
        compressed[-8] ^= 0x01
    elif how == "isize":
        compressed[-4] ^= 0x01
    else:  # a copy stopped within the last 8 bytes: every voxel is there, the check is not
        compressed = compressed[:-5]
    path.write_bytes(bytes(compressed))


# ----------------------------------------------------------------- 1. masks and labels: gzip


@pytest.mark.parametrize("how", ["crc32", "isize", "truncated"])
def test_get_data_refuses_a_mask_whose_gzip_trailer_fails(tmp_path, how):
    path = tmp_path / "mask.nii.gz"
    _mask_like(path)
    _break_trailer(path, how)
    with pytest.raises(StreamError, match=r"mask\.nii\.gz"):
        image.get_data(nib.load(path))


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("kind", ["float32", "int16-scaled", "big-endian", "3d-uint8"])
def test_read_data_equals_nibabel(tmp_path, suffix, kind):
    rng = np.random.default_rng(21)
    path = tmp_path / f"img{suffix}"
    if kind == "float32":
        img = write_float32(path, rng.standard_normal(SHAPE))
    elif kind == "3d-uint8":
        nib.save(nib.Nifti1Image(rng.integers(0, 9, SHAPE[:3]).astype(np.uint8), np.eye(4)), path)
    else:
        header = nib.Nifti1Header()
        if kind == "big-endian":
            header = header.as_byteswapped(">")
        header.set_data_dtype(np.int16)
        img = nib.Nifti1Image(rng.integers(-300, 300, SHAPE).astype(np.int16), np.eye(4), header)
        if kind == "int16-scaled":
            img.header.set_slope_inter(0.25, -7.0)
        nib.save(img, path)
    img = nib.load(path)
    data = stream.read_data(img)
    expected = np.asanyarray(img.dataobj)
    assert data.dtype == expected.dtype.newbyteorder("=") and data.dtype.isnative
    np.testing.assert_array_equal(data, expected)


@pytest.mark.parametrize("how", ["crc32", "truncated"])
def test_a_brain_mask_with_a_broken_gzip_trailer_fails_the_run(run_and_atlas, how):
    run, atlas = run_and_atlas
    _break_trailer(run.brain_mask, how)
    with pytest.raises(ExtractionError, match=rf"{run.brain_mask.name}"):
        extract_one_run(run, atlas)


# ----------------------------------------------------- 2. header data type / shape vs bytes


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("lie", ["dtype", "one-volume-short", "one-slice-short"])
def test_header_declaring_less_data_than_present_is_refused(tmp_path, suffix, lie):
    path = tmp_path / f"liar{suffix}"
    rng = np.random.default_rng(22)
    write_float32(path, rng.standard_normal((20, 20, 12, 6)))  # float32
    if lie == "dtype":  # int16 declared for float32 data: half the bytes left over
        _patch(path, DATATYPE, [4, 16], "<i2")
    elif lie == "one-volume-short":
        _patch(path, DIM, [4, 20, 20, 12, 5], "<i2")
    else:
        _patch(path, DIM, [4, 20, 20, 11, 6], "<i2")
    img = nib.load(path)
    with pytest.raises(StreamError, match=r"liar\.nii.*bytes follow the voxel data"):
        stream.read_data(img)
    with pytest.raises(StreamError, match=r"liar\.nii.*does not match"):
        list(stream.iter_file_blocks(stream.file_layout(img)))


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_small_padding_after_the_data_and_extensions_are_accepted(tmp_path, suffix):
    rng = np.random.default_rng(23)
    data = rng.standard_normal((20, 20, 12, 3)).astype(np.float32)
    img = nib.Nifti1Image(data, np.eye(4))
    # Extensions sit between the header and vox_offset: they are not trailing bytes.
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"x" * 5000))
    path = tmp_path / f"padded{suffix}"
    nib.save(img, path)
    _save_raw(path, _raw(path) + bytes(stream.TRAILING_SLACK_BYTES))
    loaded = nib.load(path)
    assert loaded.dataobj.offset > 5000
    np.testing.assert_array_equal(stream.read_data(loaded), data)
    stream.check_data_size(loaded)


def test_truncated_uncompressed_mask_is_refused(tmp_path):
    path = tmp_path / "mask.nii"
    _mask_like(path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(StreamError, match=r"mask\.nii.*header claims"):
        image.get_data(nib.load(path))


def test_uncompressed_bold_with_a_wrong_dtype_fails_the_run(run_and_atlas):
    run, _ = run_and_atlas
    bold = run.preproc_bold.with_name(run.preproc_bold.name.replace(".nii.gz", ".nii"))
    bold.write_bytes(_raw(run.preproc_bold))
    run.preproc_bold.unlink()
    _patch(bold, DATATYPE, [4, 16], "<i2")  # float32 data declared int16
    run = dataclasses.replace(run, preproc_bold=bold)
    with pytest.raises(ExtractionError, match=rf"{bold.name}.*does not match the data"):
        prepare_run(run, DenoiseConfig())


# --------------------------------------------------------------- 3. labels image, same reader


@pytest.mark.parametrize("how", ["crc32", "isize", "truncated", "dtype"])
def test_check_labels_image_uses_the_checked_reader(tmp_path, how):
    path = tmp_path / "atlas_dseg.nii.gz"
    labels = np.zeros((20, 20, 12), np.int16)
    labels[:10], labels[10:] = 1, 2
    nib.save(nib.Nifti1Image(labels, np.eye(4)), path)
    if how == "dtype":  # int16 labels declared uint8: every second byte read as a label
        _patch(path, DATATYPE, [2, 8], "<i2")
    else:
        _break_trailer(path, how)
    with pytest.raises(AtlasError, match=r"Labels image .*atlas_dseg\.nii\.gz"):
        check_labels_image(path)


def test_check_labels_image_refuses_a_singular_affine(tmp_path):
    path = tmp_path / "atlas_dseg.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.int16), np.eye(4)), path)
    _patch(path, SROW_X, [0, 0, 0, 0], "<f4")
    with pytest.raises(AtlasError, match=r"atlas_dseg\.nii\.gz.*not invertible"):
        check_labels_image(path)


# ------------------------------------------------------------------- 4. repeated LUT names


def test_read_lut_refuses_repeated_region_names(tmp_path):
    path = tmp_path / "atlas_dseg.tsv"
    path.write_text("index\tname\n1\tThalamus\n2\tCaudate\n3\tThalamus \n4\tCaudate\n5\tPutamen\n")
    with pytest.raises(AtlasError) as caught:
        read_lut(path)
    message = str(caught.value)
    assert str(path) in message and "repeats region name" in message
    assert "'Thalamus' at index 1, 3" in message and "'Caudate' at index 2, 4" in message


def test_read_lut_refuses_repeated_indices_naming_them(tmp_path):
    path = tmp_path / "atlas_dseg.tsv"
    path.write_text("index\tname\n1\ta\n2\tb\n2\tc\n")
    with pytest.raises(AtlasError, match=rf"{path.name} repeats index value\(s\) 2"):
        read_lut(path)


# ------------------------------------------------------------ 5. voxel sizes and the affine


@pytest.mark.parametrize(
    ("field", "offset", "values", "dtype", "says"),
    [
        ("pixdim-nan", PIXDIM + 4, [np.nan], "<f4", "voxel sizes"),
        ("sform-nan", SROW_X, [np.nan, 0, 0, 0], "<f4", "NaN or infinite"),
        ("sform-singular", SROW_X, [0, 0, 0, 0], "<f4", "not invertible"),
    ],
)
@pytest.mark.parametrize("which", ["preproc_bold", "brain_mask"])
def test_unusable_geometry_fails_the_run_naming_the_file(
    run_and_atlas,
    which,
    field,
    offset,
    values,
    dtype,
    says,
):
    run, _ = run_and_atlas
    path = getattr(run, which)
    _patch(path, offset, values, dtype)
    with pytest.raises(ExtractionError, match=rf"{path.name}.*{says}"):
        prepare_run(run, DenoiseConfig())


def test_qform_only_affine_is_checked(run_and_atlas):
    """With sform_code 0 nibabel uses the qform (quaternion and pixdim): checked too."""
    run, _ = run_and_atlas
    for path in (run.preproc_bold, run.brain_mask):  # the two keep one grid
        _patch(path, SFORM_CODE, [0], "<i2")
    prepare_run(run, DenoiseConfig())  # the qform nibabel wrote is fine
    _patch(run.preproc_bold, PIXDIM + 4, [np.inf], "<f4")
    with pytest.raises(ExtractionError, match=rf"{run.preproc_bold.name}.*voxel sizes"):
        prepare_run(run, DenoiseConfig())


# ------------------------------------------------ own class: complex voxels, ignored scaling


def test_complex_bold_fails_the_run_instead_of_losing_its_imaginary_part(run_and_atlas):
    run, atlas = run_and_atlas
    img = nib.load(run.preproc_bold)
    data = np.asarray(img.dataobj, dtype=np.float32)
    nib.save(nib.Nifti1Image((data + 1j * data).astype(np.complex64), img.affine), run.preproc_bold)
    with pytest.raises(ExtractionError, match=rf"{run.preproc_bold.name}.*not real numbers"):
        extract_one_run(run, atlas)


@pytest.mark.parametrize(
    ("slope", "inter"), [(0.5, 10.0), (0.0, 5.0), (np.nan, 5.0), (np.inf, 0.0)]
)
def test_int16_bold_scaling_equals_nilearn(tmp_path, slope, inter):
    """nibabel (so nilearn) ignores a zero, NaN or infinite scl_slope, and a NaN scl_inter."""
    from nilearn.maskers import NiftiLabelsMasker

    rng = np.random.default_rng(24)
    shape = (6, 7, 5, 30)
    labels = rng.integers(0, 4, shape[:3]).astype(np.int16)
    nib.save(nib.Nifti1Image(labels, np.eye(4)), tmp_path / "labels.nii.gz")
    bold = tmp_path / "bold.nii.gz"
    data = (rng.standard_normal(shape) * 300).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.eye(4)), bold)
    _patch(bold, SCL_SLOPE, [slope, inter], "<f4")  # set_slope_inter refuses these
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = maskers.stream_labels_signals(
            str(bold), [str(tmp_path / "labels.nii.gz")], t_r=2.0, standardize=False,
            detrend=False, keep_masked_labels=False,
        ).clean()[0].signals  # fmt: skip
        expected = NiftiLabelsMasker(
            str(tmp_path / "labels.nii.gz"), t_r=2.0, standardize=False, detrend=False,
            keep_masked_labels=False,
        ).fit_transform(str(bold))  # fmt: skip
    np.testing.assert_allclose(np.asarray(ours), expected, rtol=1e-6, atol=1e-6)


def test_nan_scl_inter_with_a_valid_slope_fails_the_run(run_and_atlas):
    """nibabel (so nilearn) refuses to load it; the run fails naming the file."""
    run, _ = run_and_atlas
    img = nib.load(run.preproc_bold)
    data = np.asarray(img.dataobj, dtype=np.float32)
    nib.save(nib.Nifti1Image(np.round(data).astype(np.int16), img.affine), run.preproc_bold)
    _patch(run.preproc_bold, SCL_SLOPE, [1.0, np.nan], "<f4")
    with pytest.raises(ExtractionError, match=rf"{run.preproc_bold.name}.*invalid intercept"):
        prepare_run(run, DenoiseConfig())


@pytest.mark.parametrize("value", ["inf", "-inf"])
def test_an_infinite_confound_is_named_at_its_own_volume(run_and_atlas, value):
    # Demeaning spreads one infinity over the whole regressor: the message must still point
    # at the TSV's row, not at every volume.
    run, atlas = run_and_atlas
    table = pd.read_csv(run.confounds, sep="\t", keep_default_na=False)
    table["trans_x"] = table["trans_x"].astype(object)
    table.loc[7, "trans_x"] = value
    table.to_csv(run.confounds, sep="\t", index=False)
    with pytest.raises(ExtractionError) as raised:
        extract_one_run(run, atlas)
    message = str(raised.value)
    assert run.confounds.name in message
    assert "infinite values in column(s) trans_x (volume(s) 7)" in message
