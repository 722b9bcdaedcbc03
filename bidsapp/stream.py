"""Read a 4D NIfTI series block of volumes by block, inflating its gzip stream once.

A NIfTI-1/2 image stores its voxels in Fortran order, so each volume is one contiguous run
of bytes and a 4D series is a sequence of volumes. Reading the (possibly gzip-compressed)
stream front to back, a few volumes at a time, costs one inflate of the file and holds only
a few volumes in memory, whatever the number of volumes.

The fastest gzip inflater installed is used (python-isal, then zlib-ng, then the standard
library); all of them produce identical bytes. Inflating happens in a background thread
(the inflaters release the GIL), so it overlaps with the caller's work on the previous block.
Measured on a res-2 MNI float32 series of 300 volumes (609 MB gzipped, 1.3 GB inflated; see
``benchmarks/bench_speed.py``): python-isal 2.1 s, zlib-ng 3.0 s, zlib 4.7 s, indexed_gzip
9.0 s; libdeflate 2.7 s but only on whole buffers (1.8 GB resident), so not for streaming.

Scaled data (``scl_slope``/``scl_inter``) are scaled exactly as nibabel scales them
(:func:`scale`), so streamed values equal ``np.asanyarray(img.dataobj)`` bit for bit.

Trust: a gzip stream is always read to its end, so every inflater checks the CRC32 and
ISIZE trailer of each member (data failing them raise :class:`StreamError`, never reach the
caller's result); and what a header claims is checked against the file's size before
anything is allocated (:func:`check_data_size`), and against the bytes found after the
voxel data (a wrong data type or shape). Whole images (brain masks, labels) are read with
the same checks by :func:`read_data`.
"""

from __future__ import annotations

import gzip
import os
import queue
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import nibabel as nib
import numpy as np
from nibabel.arrayproxy import ArrayProxy
from nibabel.volumeutils import apply_read_scaling

from bidsapp.errors import BidsappError

#: Bytes of raw voxel data per block (at least one volume): small enough to bound memory
#: (three blocks are alive at most: being inflated, queued, being reduced, plus the
#: inflater's transient copy of one), large enough to amortise per-call costs. On a res-2
#: MNI grid (4.3 MB per float32 volume) this is one volume per block, which measured as
#: fast as five (the per-block Python work is ~0.1 ms; inflating a volume takes ~5 ms).
BLOCK_BYTES = 8 * 2**20

INFLATERS = ("isal", "zlib-ng", "zlib")

#: Largest ratio of inflated to compressed bytes a deflate stream can reach (1032:1: a
#: 258-byte match coded in 2 bits, RFC 1951). A ``.nii.gz`` claiming more voxel bytes than
#: this times its size cannot hold them: its header lies (or the file is truncated).
MAX_DEFLATE_RATIO = 1032

#: Bytes read at a time when draining a stream to its end (the gzip trailer check).
_DRAIN_BYTES = 2**20

#: Bytes after the declared voxel data that are always tolerated (:func:`trailing_allowance`):
#: a little padding, as block-wise copy tools leave, is not a wrong header.
TRAILING_SLACK_BYTES = 4096


class StreamError(BidsappError, OSError):
    """A BOLD file that cannot be read to its end; the message names the file."""


@dataclass(frozen=True)
class VolumeLayout:
    """Where and how a NIfTI file stores its voxels.

    Attributes
    ----------
    path : Path
        The image file.
    shape : tuple of int
        Image shape; 3D images are treated as one volume.
    dtype : numpy.dtype
        On-disk voxel type, with its byte order.
    offset : int
        Byte offset of the first voxel in the (inflated) stream.
    slope, inter : float
        Scaling applied as ``raw * slope + inter`` (1 and 0 for none), exactly as nibabel
        applies it (:func:`nibabel.volumeutils.apply_read_scaling`, float64 scale factors).
    """

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int
    slope: float
    inter: float

    @property
    def n_voxels(self) -> int:
        """Voxels in one volume."""
        return int(np.prod(self.shape[:3]))

    @property
    def n_volumes(self) -> int:
        """Volumes in the series (1 for a 3D image)."""
        return int(np.prod(self.shape[3:])) if len(self.shape) > 3 else 1

    @property
    def scaled(self) -> bool:
        """Whether voxel values are scaled on reading."""
        return self.slope != 1.0 or self.inter != 0.0

    @property
    def value_dtype(self) -> np.dtype:
        """Type of the scaled values: nibabel's (float64 when scaled, else the stored type)."""
        if self.scaled:
            return scaled_dtype(self.dtype, self.slope, self.inter)
        return self.dtype.newbyteorder("=")

    @property
    def volume_bytes(self) -> int:
        """Bytes of one stored volume."""
        return self.n_voxels * self.dtype.itemsize

    @property
    def compressed(self) -> bool:
        """Whether the file is gzip-compressed."""
        return self.path.name.endswith(".gz")


def file_layout(img: Any) -> VolumeLayout | None:
    """Return the on-disk layout of a file-backed NIfTI image, or None.

    Parameters
    ----------
    img : str, os.PathLike or nibabel image
        A path to a ``.nii``/``.nii.gz`` file, or an image loaded from one whose data have
        not been replaced in memory.

    Returns
    -------
    VolumeLayout or None
        None when the image's data are not (only) on disk: in-memory arrays, non-NIfTI
        formats, or images whose proxy is not Fortran-ordered.

    Raises
    ------
    StreamError
        If the header claims more voxel data than the file can hold
        (:func:`check_data_size`).
    """
    if isinstance(img, (str, os.PathLike)):
        img = nib.load(os.fspath(img))
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        return None
    proxy = img.dataobj
    if not isinstance(proxy, ArrayProxy) or not isinstance(proxy.file_like, (str, os.PathLike)):
        return None
    if getattr(proxy, "order", "F") != "F" or not Path(proxy.file_like).is_file():
        return None
    # open_stream knows plain and gzip files only; nibabel reads the others (.nii.bz2, ...).
    if not Path(proxy.file_like).name.endswith((".nii", ".nii.gz")):
        return None
    check_data_size(img)
    slope, inter = proxy.slope, proxy.inter
    slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    return VolumeLayout(
        path=Path(proxy.file_like),
        shape=tuple(int(s) for s in proxy.shape),
        dtype=np.dtype(proxy.dtype),
        offset=int(proxy.offset),
        slope=slope,
        inter=inter,
    )


def check_data_size(img: Any) -> None:
    """Refuse a NIfTI file whose header's shape and data type disagree with its size.

    Checked before anything is allocated from the header's shape, so that a corrupt or
    hostile header (say 10⁹ volumes, or 10⁵ voxels a side) gives a clear error instead of
    a ``MemoryError`` or the machine's out-of-memory killer. An uncompressed file must hold
    ``vox_offset + prod(shape) * itemsize`` bytes; a gzip-compressed one cannot inflate to
    more than :data:`MAX_DEFLATE_RATIO` times its size. An uncompressed file must also not
    hold more than :func:`trailing_allowance` bytes after that: more means the header's
    data type or shape is wrong (int16 declared for float32 data, a volume or slice
    missing from ``dim``), and reading it would give wrong numbers silently. (NIfTI
    extensions sit before ``vox_offset``, so they are not counted.) A gzip file's inflated
    size is known only at its end, so :func:`read_data` and :func:`iter_file_blocks` check
    it there. Images that are not file-backed NIfTI images (in-memory arrays, other
    formats) are not checked.

    Parameters
    ----------
    img : str, os.PathLike or nibabel image
        A path to a ``.nii``/``.nii.gz`` file, or an image loaded from one.

    Raises
    ------
    StreamError
        If the header claims more bytes than the file can hold, or an uncompressed file
        holds too many bytes after its voxel data; the message names the file, the claimed
        shape and the sizes.
    """
    if isinstance(img, (str, os.PathLike)):
        img = nib.load(os.fspath(img))
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        return
    proxy = img.dataobj
    if not isinstance(proxy, ArrayProxy) or not isinstance(proxy.file_like, (str, os.PathLike)):
        return
    path = Path(proxy.file_like)
    try:
        size = path.stat().st_size
    except OSError:
        return  # reading it will say what is wrong
    shape = tuple(int(s) for s in proxy.shape)
    # Python integers: no overflow whatever the header claims.
    claimed = int(proxy.offset) + int(np.dtype(proxy.dtype).itemsize) * _product(shape)
    compressed = path.name.endswith(".gz")
    capacity = size * MAX_DEFLATE_RATIO if compressed else size
    if claimed <= capacity:
        if not compressed:
            _check_trailing(path, shape, np.dtype(proxy.dtype), size - claimed)
        return
    if compressed:
        holds = f"a gzip file of {size} bytes inflates to at most {capacity} bytes"
    else:
        holds = f"the file has {size} bytes"
    raise StreamError(
        f"{path}: the header claims shape {shape} of {np.dtype(proxy.dtype)} "
        f"({claimed} bytes with the {int(proxy.offset)}-byte header), but {holds}: "
        "truncated file or corrupt header"
    )


def trailing_allowance(shape: tuple[int, ...], itemsize: int) -> int:
    """Return the most bytes a NIfTI file may hold after its declared voxel data.

    A header with a wrong data type leaves at least as many extra bytes as the data
    declared; one with a volume or slice missing from ``dim`` leaves at least one slice
    (``dim[1] * dim[2]`` voxels). Anything shorter than one slice, or than
    :data:`TRAILING_SLACK_BYTES`, is taken as padding.

    Parameters
    ----------
    shape : tuple of int
        The shape the header declares.
    itemsize : int
        Bytes per stored voxel.

    Returns
    -------
    int
        Tolerated bytes after the voxel data.
    """
    slice_bytes = _product(tuple(shape[:2])) * int(itemsize)
    return max(TRAILING_SLACK_BYTES, slice_bytes - 1)


def _check_trailing(
    path: Path, shape: tuple[int, ...], dtype: np.dtype, extra: int, at_least: bool = False
) -> None:
    """Raise a :class:`StreamError` if ``extra`` bytes after the voxel data are too many."""
    if extra <= trailing_allowance(shape, dtype.itemsize):
        return
    raise StreamError(
        f"{path}: {'at least ' if at_least else ''}{extra} bytes follow the voxel data its "
        f"header declares (shape {shape} "
        f"of {dtype}, {_product(shape) * dtype.itemsize} bytes): the header's data type "
        "or shape does not match the data"
    )


def _product(shape: tuple[int, ...]) -> int:
    total = 1
    for n in shape:
        total *= max(int(n), 0)
    return total


def scaled_dtype(stored: np.dtype, slope: float, inter: float) -> np.dtype:
    """Type nibabel gives to stored values scaled by ``slope`` and ``inter``.

    Parameters
    ----------
    stored : numpy.dtype
        On-disk voxel type.
    slope, inter : float
        Scale factors (not 1 and 0).

    Returns
    -------
    numpy.dtype
        The dtype of ``nibabel.volumeutils.apply_read_scaling`` on such data.
    """
    probe = apply_read_scaling(np.zeros(1, dtype=stored), np.float64(slope), np.float64(inter))
    return probe.dtype


def scale(raw: np.ndarray, slope: float, inter: float) -> np.ndarray:
    """Apply NIfTI scaling to stored values, bit-identical to nibabel's proxies.

    Parameters
    ----------
    raw : numpy.ndarray
        Stored values (any byte order).
    slope, inter : float
        Scale factors; ``(1, 0)`` returns ``raw`` unchanged.

    Returns
    -------
    numpy.ndarray
        ``raw * slope + inter`` in the type nibabel uses (float64 for float32 or integer
        data with float64 factors).
    """
    # nibabel stores the factors as float64 arrays and calls apply_read_scaling.
    return apply_read_scaling(raw, np.float64(slope), np.float64(inter))


def available_inflater() -> str:
    """Name the fastest gzip inflater installed (``isal``, ``zlib-ng`` or ``zlib``)."""
    for name, module in (("isal", "isal.igzip"), ("zlib-ng", "zlib_ng.gzip_ng")):
        try:
            __import__(module)
        except ImportError:
            continue
        return name
    return "zlib"


def open_stream(path: str | os.PathLike, inflater: str | None = None) -> IO[bytes]:
    """Open a NIfTI file for reading its inflated bytes front to back.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.nii`` or ``.nii.gz`` file.
    inflater : {"isal", "zlib-ng", "zlib"}, optional
        Inflater for gzip files; the fastest installed one when None.

    Returns
    -------
    binary file object
        Supports ``read`` and ``readinto``.
    """
    path = os.fspath(path)
    if not path.endswith(".gz"):
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    inflater = inflater or available_inflater()
    if inflater not in INFLATERS:
        raise ValueError(f"inflater must be one of {INFLATERS}, got {inflater!r}")
    if inflater == "isal":
        from isal import igzip

        return igzip.open(path, "rb")
    if inflater == "zlib-ng":
        from zlib_ng import gzip_ng

        return gzip_ng.open(path, "rb")
    return gzip.open(path, "rb")


_READ_ERRORS = (EOFError, OSError, zlib.error, ValueError)


def _fill(stream: IO[bytes], buffer: memoryview, path: Path) -> None:
    """Read exactly ``len(buffer)`` bytes or raise a :class:`StreamError`."""
    filled = 0
    while filled < len(buffer):
        try:
            got = stream.readinto(buffer[filled:])
        except _READ_ERRORS as err:
            raise StreamError(f"{path}: corrupt or unreadable data ({err})") from err
        if not got:
            raise StreamError(
                f"{path}: file ends early (truncated download or copy?): expected "
                f"{len(buffer) - filled} more bytes of voxel data"
            )
        filled += got


def _skip(stream: IO[bytes], n_bytes: int, path: Path) -> None:
    buffer = memoryview(bytearray(min(max(n_bytes, 0), _DRAIN_BYTES)))
    while n_bytes > 0:
        count = min(n_bytes, len(buffer))
        _fill(stream, buffer[:count], path)
        n_bytes -= count


def _drain(stream: IO[bytes], layout: VolumeLayout, stop: threading.Event | None = None) -> None:
    """Read a gzip stream to its end, so that each member's CRC32 and ISIZE are checked.

    The inflaters verify a member's trailer only when they reach it; stopping after the
    last voxel would use data that fail it. Bytes after the voxel data (there should be
    none) are read and dropped a chunk at a time; more than :func:`trailing_allowance`
    of them mean a wrong data type or shape in the header (the uncompressed size is only
    known here: ISIZE is modulo 2³² and per member). Trailing zero bytes after the last
    member are accepted (as gzip does); any other trailing garbage is an error.
    """
    buffer = bytearray(_DRAIN_BYTES)
    extra = 0
    while stop is None or not stop.is_set():
        try:
            got = stream.readinto(buffer)
        except _READ_ERRORS as err:
            raise StreamError(
                f"{layout.path}: corrupt gzip data (the end of the stream fails its check: {err})"
            ) from err
        if not got:
            return
        extra += got
        # Stops at the first chunk too many: a header declaring a tenth of the data
        # fails without inflating the rest.
        _check_trailing(layout.path, layout.shape, layout.dtype, extra, at_least=True)


@contextmanager
def _producer(layout: VolumeLayout, per_block: int, inflater: str | None):
    """Yield a queue of raw blocks filled by a background reader thread."""
    blocks: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    volume_bytes = layout.n_voxels * layout.dtype.itemsize

    def read_all() -> None:
        try:
            with open_stream(layout.path, inflater) as stream:
                _skip(stream, layout.offset, layout.path)
                for start in range(0, layout.n_volumes, per_block):
                    count = min(per_block, layout.n_volumes - start)
                    buffer = bytearray(count * volume_bytes)
                    _fill(stream, memoryview(buffer), layout.path)
                    while not stop.is_set():
                        try:
                            blocks.put((start, count, buffer), timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                if layout.compressed:
                    _drain(stream, layout, stop)
        except BaseException as err:  # handed to the consumer, which re-raises it
            if isinstance(err, _READ_ERRORS) and not isinstance(err, StreamError):
                err = StreamError(f"{layout.path}: corrupt or unreadable data ({err})")
            blocks.put((None, 0, err))
            return
        blocks.put((None, 0, None))

    thread = threading.Thread(target=read_all, name="bidsapp-inflate", daemon=True)
    thread.start()
    try:
        yield blocks
    finally:
        stop.set()
        while thread.is_alive():
            try:
                blocks.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()


def iter_file_blocks(
    layout: VolumeLayout,
    select: np.ndarray | None = None,
    *,
    volumes_per_block: int | None = None,
    inflater: str | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield blocks of volumes of a NIfTI file, reading it once front to back.

    Parameters
    ----------
    layout : VolumeLayout
        The file's layout (:func:`file_layout`).
    select : numpy.ndarray of int, optional
        Fortran-order flat indices of the voxels to keep; all voxels when None.
    volumes_per_block : int, optional
        Volumes per block; by default as many as fit in :data:`BLOCK_BYTES`.
    inflater : str, optional
        Gzip inflater (see :func:`open_stream`).

    Yields
    ------
    start : int
        Index of the block's first volume.
    block : numpy.ndarray
        ``(n_volumes_in_block, n_selected_voxels)`` voxel values, scaled as nibabel scales
        them (:attr:`VolumeLayout.value_dtype`), native byte order. Without ``select`` the
        block is a fresh array the caller may modify.
    """
    per_block = volumes_per_block or volumes_per_block_for(layout.volume_bytes)
    with _producer(layout, per_block, inflater) as blocks:
        while True:
            start, count, payload = blocks.get()
            if start is None:
                if payload is not None:
                    raise payload
                return
            raw = np.frombuffer(payload, dtype=layout.dtype).reshape(count, layout.n_voxels)
            block = raw if select is None else np.take(raw, select, axis=1)
            if layout.scaled:
                block = scale(block, layout.slope, layout.inter)
            elif not block.dtype.isnative:
                block = block.astype(block.dtype.newbyteorder("="))
            yield start, block


def read_data(img: Any, *, inflater: str | None = None) -> np.ndarray:
    """Read the whole data array of a NIfTI image, with the checks of the BOLD stream.

    The reader of brain masks and labels images (through :func:`bidsapp.image.get_data`):
    nibabel stops inflating a ``.nii.gz`` after the last voxel, so a corrupt CRC32 or a
    truncated trailer would go unnoticed. Here the header's claims are checked against the
    file (:func:`check_data_size`) before the array is allocated, and a gzip stream is read
    to its end (its CRC32 and ISIZE checked, the bytes after the voxel data counted).

    Parameters
    ----------
    img : str, os.PathLike or nibabel image
        A path to a ``.nii``/``.nii.gz`` file, or an image, file-backed or not.
    inflater : {"isal", "zlib-ng", "zlib"}, optional
        Gzip inflater (see :func:`open_stream`).

    Returns
    -------
    numpy.ndarray
        The data, equal to ``np.asanyarray(img.dataobj)`` (scaled as nibabel scales them,
        native byte order) and freshly allocated for a file-backed image. Images that are
        not file-backed NIfTI-1/2 ``.nii``/``.nii.gz`` files (in-memory arrays, other
        formats) are read by nibabel.

    Raises
    ------
    StreamError
        If the header's claims disagree with the file, or the file is truncated or its
        gzip data corrupt; the message names the file.
    """
    if isinstance(img, (str, os.PathLike)):
        img = nib.load(os.fspath(img))
    layout = file_layout(img)
    if layout is None:
        return np.asanyarray(img.dataobj)
    buffer = bytearray(layout.n_voxels * layout.n_volumes * layout.dtype.itemsize)
    try:
        with open_stream(layout.path, inflater) as stream:
            _skip(stream, layout.offset, layout.path)
            _fill(stream, memoryview(buffer), layout.path)
            if layout.compressed:
                _drain(stream, layout)
    except StreamError:
        raise
    except _READ_ERRORS as err:  # opening it, say
        raise StreamError(f"{layout.path}: corrupt or unreadable data ({err})") from err
    data = np.frombuffer(buffer, dtype=layout.dtype).reshape(layout.shape, order="F")
    if layout.scaled:
        return scale(data, layout.slope, layout.inter)
    return data if data.dtype.isnative else data.astype(data.dtype.newbyteorder("="))


def volumes_per_block_for(volume_bytes: int) -> int:
    """Return the number of volumes in a block of :data:`BLOCK_BYTES` (at least one).

    Parameters
    ----------
    volume_bytes : int
        Bytes of one stored volume.

    Returns
    -------
    int
        Volumes per block.
    """
    return max(1, BLOCK_BYTES // max(int(volume_bytes), 1))


def iter_array_blocks(
    data: np.ndarray,
    select: np.ndarray | None = None,
    *,
    volumes_per_block: int | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield blocks of volumes of an in-memory 3D or 4D array, like :func:`iter_file_blocks`.

    Parameters
    ----------
    data : numpy.ndarray
        3D (one volume) or 4D array.
    select : numpy.ndarray of int, optional
        Fortran-order flat indices of the voxels to keep.
    volumes_per_block : int, optional
        Volumes per block.

    Yields
    ------
    start : int
        Index of the block's first volume.
    block : numpy.ndarray
        ``(n_volumes_in_block, n_selected_voxels)`` values; may share memory with ``data``
        (never modify it in place).
    """
    if data.ndim == 3:
        data = data[..., np.newaxis]
    n_voxels = int(np.prod(data.shape[:3]))
    n_volumes = int(np.prod(data.shape[3:]))
    flat = data.reshape((n_voxels, n_volumes), order="F")
    per_block = volumes_per_block or volumes_per_block_for(n_voxels * data.dtype.itemsize)
    for start in range(0, n_volumes, per_block):
        columns = slice(start, start + per_block)
        rows = flat[:, columns] if select is None else np.take(flat[:, columns], select, axis=0)
        yield start, np.ascontiguousarray(rows.T)
