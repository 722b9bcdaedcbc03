from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
from support.nifti import SHAPE, write_float32

from bidsapp import stream
from bidsapp.stream import StreamError, file_layout, iter_array_blocks, iter_file_blocks


def _collect(blocks):
    parts = list(blocks)
    starts = [start for start, _ in parts]
    return starts, np.concatenate([b for _, b in parts], axis=0)


def _expected(img, select=None):
    data = np.asanyarray(img.dataobj)
    flat = data.reshape((-1, data.shape[3]), order="F").T
    return flat if select is None else flat[:, select]


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("per_block", [1, 4, 23, 50])
def test_blocks_equal_nibabel(tmp_path, suffix, per_block):
    rng = np.random.default_rng(0)
    img = write_float32(tmp_path / f"bold{suffix}", rng.standard_normal(SHAPE))
    select = np.sort(rng.choice(int(np.prod(SHAPE[:3])), 50, replace=False))
    starts, values = _collect(
        iter_file_blocks(file_layout(img), select, volumes_per_block=per_block)
    )
    assert starts == list(range(0, SHAPE[3], per_block))
    np.testing.assert_array_equal(values, _expected(img, select))


@pytest.mark.parametrize("inflater", ["isal", "zlib-ng", "zlib"])
def test_inflaters_are_bit_identical(tmp_path, inflater):
    pytest.importorskip({"isal": "isal", "zlib-ng": "zlib_ng", "zlib": "zlib"}[inflater])
    rng = np.random.default_rng(1)
    img = write_float32(tmp_path / "bold.nii.gz", rng.standard_normal(SHAPE))
    _, values = _collect(iter_file_blocks(file_layout(img), inflater=inflater))
    np.testing.assert_array_equal(values, _expected(img))


def test_scaled_integers_and_big_endian(tmp_path):
    rng = np.random.default_rng(2)
    data = rng.integers(-300, 300, SHAPE)
    header = nib.Nifti1Header().as_byteswapped(">")
    header.set_data_dtype(np.int16)
    img = nib.Nifti1Image(data.astype(np.int16), np.eye(4), header)
    img.header.set_slope_inter(0.5, 10.0)
    nib.save(img, tmp_path / "scaled.nii.gz")
    loaded = nib.load(tmp_path / "scaled.nii.gz")
    layout = file_layout(loaded)
    assert (layout.slope, layout.inter) == (0.5, 10.0)
    assert not layout.dtype.isnative
    _, values = _collect(iter_file_blocks(layout))
    # Scaled exactly as nibabel scales: same float64 values, bit for bit.
    assert values.dtype == np.float64 == layout.value_dtype
    np.testing.assert_array_equal(values, _expected(loaded))


def test_array_blocks_equal_file_blocks(tmp_path):
    rng = np.random.default_rng(3)
    img = write_float32(tmp_path / "bold.nii.gz", rng.standard_normal(SHAPE))
    select = np.arange(0, int(np.prod(SHAPE[:3])), 3)
    _, from_file = _collect(iter_file_blocks(file_layout(img), select, volumes_per_block=5))
    _, from_array = _collect(
        iter_array_blocks(np.asanyarray(img.dataobj), select, volumes_per_block=7)
    )
    np.testing.assert_array_equal(from_file, from_array)


def test_in_memory_image_has_no_file_layout():
    img = nib.Nifti1Image(np.zeros(SHAPE, np.float32), np.eye(4))
    assert file_layout(img) is None


def test_truncated_gzip_names_the_file(tmp_path):
    rng = np.random.default_rng(4)
    write_float32(tmp_path / "bold.nii.gz", rng.standard_normal(SHAPE))
    raw = gzip.decompress((tmp_path / "bold.nii.gz").read_bytes())
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    layout = stream.VolumeLayout(truncated, SHAPE, np.dtype("<f4"), 352, 1.0, 0.0)
    with pytest.raises(StreamError, match="truncated.nii.gz.*ends early"):
        _collect(iter_file_blocks(layout))


def test_corrupt_gzip_names_the_file(tmp_path):
    rng = np.random.default_rng(5)
    write_float32(tmp_path / "bold.nii.gz", rng.standard_normal(SHAPE))
    compressed = bytearray((tmp_path / "bold.nii.gz").read_bytes())
    # Keep the header readable, break the deflate stream further on.
    middle = len(compressed) // 2
    compressed[middle : middle + 64] = bytes(64)
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(bytes(compressed))
    layout = stream.VolumeLayout(corrupt, SHAPE, np.dtype("<f4"), 352, 1.0, 0.0)
    with pytest.raises(StreamError, match="corrupt.nii.gz"):
        _collect(iter_file_blocks(layout))


def test_stopping_early_releases_the_reader(tmp_path):
    rng = np.random.default_rng(6)
    img = write_float32(tmp_path / "bold.nii.gz", rng.standard_normal(SHAPE))
    blocks = iter_file_blocks(file_layout(img), volumes_per_block=1)
    first_start, _ = next(blocks)
    blocks.close()  # must not hang on the reader thread
    assert first_start == 0


@pytest.mark.parametrize("stored", [np.float32, np.uint8, np.int32])
def test_scaling_is_bit_identical_to_nibabel(tmp_path, stored):
    rng = np.random.default_rng(7)
    data = (rng.random(SHAPE) * 200).astype(stored)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_slope_inter(1.7, -3.25)
    nib.save(img, tmp_path / "scaled.nii.gz")
    loaded = nib.load(tmp_path / "scaled.nii.gz")
    layout = file_layout(loaded)
    select = np.arange(0, int(np.prod(SHAPE[:3])), 5)
    _, values = _collect(iter_file_blocks(layout, select, volumes_per_block=4))
    expected = _expected(loaded, select)
    assert values.dtype == expected.dtype == layout.value_dtype
    np.testing.assert_array_equal(values, expected)


def test_block_size_is_at_least_one_volume():
    assert stream.volumes_per_block_for(stream.BLOCK_BYTES * 3) == 1
    assert stream.volumes_per_block_for(stream.BLOCK_BYTES // 4) == 4


# --------------------------------------------------------------- trust: gzip trailer, header claims

_INFLATER_MODULES = {"isal": "isal", "zlib-ng": "zlib_ng", "zlib": "zlib"}


def _gzip_series(tmp_path, name="bold.nii.gz"):
    rng = np.random.default_rng(11)
    return write_float32(tmp_path / name, rng.standard_normal(SHAPE))


@pytest.mark.parametrize("inflater", list(_INFLATER_MODULES))
@pytest.mark.parametrize("field", ["crc32", "isize"])
def test_gzip_trailer_is_verified_with_every_inflater(tmp_path, inflater, field):
    pytest.importorskip(_INFLATER_MODULES[inflater])
    img = _gzip_series(tmp_path)
    compressed = bytearray((tmp_path / "bold.nii.gz").read_bytes())
    # The last 8 bytes of a gzip member are CRC32 then ISIZE (little-endian).
    compressed[-8 if field == "crc32" else -4] ^= 0x01
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(bytes(compressed))
    layout = stream.VolumeLayout(bad, SHAPE, np.dtype("<f4"), int(img.dataobj.offset), 1.0, 0.0)
    with pytest.raises(StreamError, match="bad.nii.gz"):
        _collect(iter_file_blocks(layout, inflater=inflater))


@pytest.mark.parametrize("inflater", list(_INFLATER_MODULES))
def test_multi_member_gzip_and_trailing_zeros_are_read(tmp_path, inflater):
    pytest.importorskip(_INFLATER_MODULES[inflater])
    img = _gzip_series(tmp_path)
    raw = gzip.decompress((tmp_path / "bold.nii.gz").read_bytes())
    cut = len(raw) // 3
    multi = tmp_path / "multi.nii.gz"
    multi.write_bytes(gzip.compress(raw[:cut]) + gzip.compress(raw[cut:]) + bytes(16))
    _, values = _collect(iter_file_blocks(file_layout(nib.load(multi)), inflater=inflater))
    np.testing.assert_array_equal(values, _expected(img))


@pytest.mark.parametrize("inflater", list(_INFLATER_MODULES))
def test_trailing_garbage_after_gzip_is_an_error(tmp_path, inflater):
    pytest.importorskip(_INFLATER_MODULES[inflater])
    _gzip_series(tmp_path)
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes((tmp_path / "bold.nii.gz").read_bytes() + b"not gzip data")
    with pytest.raises(StreamError, match="garbage.nii.gz"):
        _collect(iter_file_blocks(file_layout(nib.load(garbage)), inflater=inflater))


def _lying_header(path, shape):
    """A small NIfTI file whose header claims ``shape``."""
    img = nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4))
    nib.save(img, path)
    # Rewrite the dim field only: the file keeps its few bytes of data.
    raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    fixed = bytearray(raw)
    dims = np.array([len(shape), *shape, *([1] * (7 - len(shape)))], dtype="<i2")
    fixed[40:56] = dims.tobytes()
    path.write_bytes(gzip.compress(bytes(fixed)) if path.name.endswith(".gz") else bytes(fixed))
    return path


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("shape", [(4, 4, 4, 30000), (30000, 30000, 30000, 2)])
def test_header_claiming_more_than_the_file_holds_is_refused(tmp_path, suffix, shape):
    path = _lying_header(tmp_path / f"liar{suffix}", shape)
    with pytest.raises(StreamError, match=r"liar\.nii.*header claims shape"):
        stream.check_data_size(path)
    with pytest.raises(StreamError, match=r"liar\.nii"):
        file_layout(path)


def test_honest_headers_pass_the_size_check(tmp_path):
    rng = np.random.default_rng(12)
    for suffix in (".nii", ".nii.gz"):
        img = write_float32(tmp_path / f"ok{suffix}", rng.standard_normal(SHAPE))
        stream.check_data_size(img)
        # Highly compressible data (zeros) stay within deflate's ratio.
        zeros = write_float32(tmp_path / f"zeros{suffix}", np.zeros((40, 40, 40, 20)))
        stream.check_data_size(zeros)
