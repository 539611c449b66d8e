"""Read back what an offline W&B run logged, from its ``run-<id>.wandb`` file.

The file is a LevelDB-style log (a 7-byte ``:W&B`` header, then 32 KiB blocks of records
``crc32 (4) | length (2) | type (1) | data``, a record split over blocks as FIRST/MIDDLE/LAST)
whose payloads are ``wandb_internal_pb2.Record`` protobufs. wandb >= 0.19 no longer ships a
Python reader, so tests use this one.

    from tests._wandb import offline_runs, history_keys, history
    run = offline_runs(tmp_path)[-1]           # folders under <dir>/wandb/offline-run-*
    assert "spectra/jacobian/sv_max" in history_keys(run)
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

_HEADER = struct.Struct("<4sHB")  # ident, magic, version
_RECORD = struct.Struct("<IHB")  # crc32, length, type
_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def offline_runs(root: str | Path) -> list[Path]:
    """The offline run folders (``offline-run-*``) anywhere under ``root``, oldest first."""
    return sorted(Path(root).rglob("offline-run-*"), key=lambda p: p.name)


def _payloads(path: Path) -> list[bytes]:
    data = path.read_bytes()
    ident, magic, _ = _HEADER.unpack_from(data, 0)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path}: not a W&B run file (header {ident!r}, magic {magic:#x})")
    out: list[bytes] = []
    pos, pending = _HEADER.size, b""
    while pos + _RECORD.size <= len(data):
        left_in_block = _BLOCK - (pos % _BLOCK)
        if left_in_block < _RECORD.size:  # block trailer padding
            pos += left_in_block
            continue
        _, length, kind = _RECORD.unpack_from(data, pos)
        pos += _RECORD.size
        chunk = data[pos : pos + length]
        pos += length
        if kind == _FULL:
            out.append(chunk)
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            out.append(pending + chunk)
            pending = b""
        else:  # zero padding at the end of a block written so far
            break
    return out


def _parse(path: Path) -> list[pb.Record]:
    result = []
    for payload in _payloads(path):
        record = pb.Record()
        record.ParseFromString(payload)
        result.append(record)
    return result


def records(run_dir: str | Path, timeout: float = 30.0) -> list[pb.Record]:
    """Every record of the run in ``run_dir`` (an ``offline-run-*`` folder).

    ``wandb.finish()`` can return a moment before the W&B service has written the file, so
    this waits (up to ``timeout`` seconds) for the run's final ``exit`` record.
    """
    files = sorted(Path(run_dir).glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no run-*.wandb file in {run_dir}")
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = _parse(files[0])
        except Exception:  # a record caught half-written
            result = []
        if any(r.WhichOneof("record_type") == "exit" for r in result) or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def _items_to_dict(items: Any) -> dict[str, Any]:
    """History / config items -> a dict. Media (histograms, tables) arrive as one item per
    field with a ``nested_key`` path (``["spectra/x/singular_values", "_type"]``); they are
    gathered back into one nested dict under their first key."""
    result: dict[str, Any] = {}
    for item in items:
        path = [item.key] if item.key else list(item.nested_key)
        node = result
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = json.loads(item.value_json)
    return result


def history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The logged history rows, each a dict from key to its JSON-decoded value (a histogram is
    a dict with ``"_type": "histogram"``, a table one with ``"_type": "table-file"``)."""
    return [
        _items_to_dict(r.history.item)
        for r in records(run_dir)
        if r.WhichOneof("record_type") == "history"
    ]


def history_keys(run_dir: str | Path) -> set[str]:
    """Every key that appears in any history row."""
    return {key for row in history(run_dir) for key in row}


def config(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``wandb.config`` as finally updated (later updates win)."""
    result: dict[str, Any] = {}
    for record in records(run_dir):
        if record.WhichOneof("record_type") == "config":
            result.update(_items_to_dict(record.config.update))
    return result
