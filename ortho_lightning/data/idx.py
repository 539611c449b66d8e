"""IDX files, the format of the MNIST database: a strict reader and a small writer.

An IDX file is a 4-byte magic number ``00 00 <type> <ndim>``, then ``ndim`` big-endian uint32
dimension sizes, then the values in C order. MNIST uses type ``0x08`` (unsigned byte) only,
so only that type is read and written. Files may be gzip-compressed; the reader decides from
the file's first bytes, not its name.
"""

from __future__ import annotations

import gzip as _gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ortho_lightning.exceptions import DataError

_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08
_TYPE_NAMES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read IDX file {path}: {err}") from err
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return _gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as err:
        raise DataError(
            f"IDX file {path} is a truncated or corrupt gzip stream ({err}); delete it and "
            "download or copy it again"
        ) from err


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """Read one IDX file of unsigned bytes, gzip-compressed or not, strictly.

    Args:
        path: the file.

    Returns:
        A ``torch.uint8`` tensor whose shape is the file's dimension sizes, e.g.
        ``(60000, 28, 28)`` for MNIST training images, ``(60000,)`` for their labels.

    Raises:
        DataError: naming the file, when the magic number is wrong, the type is not unsigned
            byte, the header is cut short, or the data is shorter or longer than the header
            says (a truncated download, a different file under an IDX name).
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(
            f"IDX file {path} is too short for an IDX header: {len(data)} bytes, expected at "
            "least 4"
        )
    zero, type_code, ndim = data[:2], data[2], data[3]
    if zero != b"\x00\x00":
        raise DataError(
            f"IDX file {path} has a bad magic number {data[:4].hex()}: expected it to start "
            "with 0000 (not an IDX file, or a corrupt one)"
        )
    if type_code != _UBYTE:
        name = _TYPE_NAMES.get(type_code, "unknown")
        raise DataError(
            f"IDX file {path} has data type code 0x{type_code:02x} ({name}); only 0x08 "
            "(unsigned byte, as in MNIST) is supported"
        )
    if ndim == 0:
        raise DataError(f"IDX file {path} declares 0 dimensions; expected at least 1")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"IDX file {path} is truncated inside its header: {len(data)} bytes, the header "
            f"of a {ndim}-dimensional file needs {header}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = math.prod(shape)
    found = len(data) - header
    if found < expected:
        raise DataError(
            f"IDX file {path} is truncated: its header declares shape {tuple(shape)} "
            f"({expected} values) but only {found} bytes of data follow"
        )
    if found > expected:
        raise DataError(
            f"IDX file {path} has the wrong length: its header declares shape {tuple(shape)} "
            f"({expected} values) but {found} bytes of data follow ({found - expected} extra)"
        )
    array = np.frombuffer(data, dtype=np.uint8, count=expected, offset=header)
    return torch.from_numpy(array.copy()).reshape(shape)


def write_idx(
    path: str | os.PathLike, array: np.ndarray | torch.Tensor, gzip: bool = True
) -> Path:
    """Write ``array`` as an IDX file of unsigned bytes (type ``0x08``).

    Args:
        path: where to write; the name is kept as given (``gzip`` alone decides compression).
        array: integer values in ``[0, 255]``, any shape with at least one dimension
            (numpy array or tensor, any integer dtype).
        gzip: compress the file with gzip, as the MNIST distribution files are.

    Returns:
        The path written.

    Raises:
        DataError: when ``array`` is not integer, is 0-dimensional, or holds values outside
            ``[0, 255]``.
    """
    values = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    if values.dtype.kind not in "ui" and values.dtype != np.bool_:
        raise DataError(
            f"write_idx writes unsigned bytes: expected an integer array, got dtype {values.dtype}"
        )
    if values.ndim == 0:
        raise DataError("write_idx needs an array with at least 1 dimension, got a scalar")
    if values.size and (values.min() < 0 or values.max() > 255):
        raise DataError(
            "write_idx writes unsigned bytes: values must lie in [0, 255], got range "
            f"[{values.min()}, {values.max()}]"
        )
    header = bytes([0, 0, _UBYTE, values.ndim]) + struct.pack(f">{values.ndim}I", *values.shape)
    payload = header + np.ascontiguousarray(values, dtype=np.uint8).tobytes()
    if gzip:
        payload = _gzip.compress(payload, mtime=0)
    path = Path(path)
    path.write_bytes(payload)
    return path
