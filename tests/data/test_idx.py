"""IDX reading and writing, checked against the byte layout of the format itself."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from ortho_lightning.data.idx import read_idx, write_idx
from ortho_lightning.exceptions import DataError


def _idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """Reference encoder written from the format description: magic, dims, C-order data."""
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes(order="C")


SHAPES = [(7,), (3, 4), (5, 28, 28), (2, 3, 4, 5)]


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("shape", SHAPES, ids=[str(s) for s in SHAPES])
def test_reads_reference_encoding(tmp_path, shape, compress):
    array = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    payload = _idx_bytes(array)
    path = tmp_path / "x.idx"
    path.write_bytes(gzip.compress(payload) if compress else payload)
    got = read_idx(path)
    assert got.dtype == torch.uint8
    assert tuple(got.shape) == shape
    np.testing.assert_array_equal(got.numpy(), array)


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
def test_write_idx_produces_the_format_bytes(tmp_path, compress):
    array = np.arange(24, dtype=np.int64).reshape(2, 3, 4) * 10  # ints in range, not uint8
    path = write_idx(tmp_path / "x.idx", torch.from_numpy(array), gzip=compress)
    raw = path.read_bytes()
    assert raw.startswith(b"\x1f\x8b") == compress
    assert (gzip.decompress(raw) if compress else raw) == _idx_bytes(array)


def test_real_labels_header(mnist_dir):
    labels = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10000,)
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]  # the first test digits, as published


def _good() -> bytes:
    return _idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))


CORRUPT = {
    "empty": (b"", "too short"),
    "bad-magic": (b"\x01\x02" + _good()[2:], "bad magic number"),
    "float-type": (_idx_bytes(np.zeros(3, np.uint8), type_code=0x0D), "0x0d (float32)"),
    "zero-dims": (b"\x00\x00\x08\x00", "0 dimensions"),
    "cut-header": (_good()[:9], "truncated inside its header"),
    "truncated": (_good()[:-1], "only 11 bytes of data"),
    "trailing": (_good() + b"\x00\x00", "2 extra"),
    "gzip-truncated": (gzip.compress(_good())[:-6], "truncated or corrupt gzip"),
}


@pytest.mark.parametrize("payload,message", CORRUPT.values(), ids=CORRUPT.keys())
def test_corrupt_file_is_an_error_naming_it(tmp_path, payload, message):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(payload)
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz") as info:
        read_idx(path)
    assert message in str(info.value)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot read IDX file .*nothing.idx"):
        read_idx(tmp_path / "nothing.idx")


BAD_ARRAYS = {
    "float": (np.zeros(3, np.float32), "expected an integer array, got dtype float32"),
    "scalar": (np.array(3, np.uint8), "at least 1 dimension"),
    "too-big": (np.array([0, 256]), r"\[0, 255\], got range \[0, 256\]"),
    "negative": (np.array([-1, 3]), r"got range \[-1, 3\]"),
}


@pytest.mark.parametrize("array,message", BAD_ARRAYS.values(), ids=BAD_ARRAYS.keys())
def test_write_idx_rejects_non_bytes(tmp_path, array, message):
    with pytest.raises(DataError, match=message):
        write_idx(tmp_path / "x.idx", array)
    assert not (tmp_path / "x.idx").exists()
