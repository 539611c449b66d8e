"""Locks that let several runners share one output folder: each cell is computed once, and a
cell's folder is never wiped while another runner is writing it.

A lock is a file (``OUT/cells/<cell id>.lock``) held with ``flock``: the kernel releases it when
its process exits or is killed, so a crashed runner never leaves a lock that blocks the cell (the
file stays, naming its last owner, and the next runner simply takes it). The file holds the
owner's pid, host and start time, for messages. Releasing unlinks the file while still holding
it; a runner that opened the old file before the unlink sees that the path no longer names the
file it locked, and tries again. Local file systems and NFSv4 support ``flock``; where ``fcntl``
does not exist (Windows) locking is skipped and one runner per folder is the user's job.

The same module gives unique temporary names for atomic writes (:func:`atomic_write_text`), so
two runners writing one file never share a temporary file.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_SUFFIX = ".lock"


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a uniquely named temporary file in the same folder and
    ``os.replace`` (atomic): readers see the old or the new file, never half of one, and
    concurrent writers never collide on the temporary name. Returns ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def lock_owner(path: str | os.PathLike) -> dict[str, Any]:
    """What a lock file says about its (last) owner: ``pid``, ``host``, ``since``; ``{}`` if
    unreadable."""
    try:
        return json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def try_lock(path: str | os.PathLike, *, blocking: bool = False) -> int | None:
    """Take the lock at ``path``: returns its file descriptor (pass it to :func:`unlock`), or
    ``None`` when another process holds it (never ``None`` with ``blocking=True``, which
    waits)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:  # pragma: no cover - Windows: no locking
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                     "since": time.time()}).encode())
            return fd
        os.close(fd)  # released and unlinked between our open and flock: lock the new file


def unlock(fd: int, path: str | os.PathLike) -> None:
    """Release a lock from :func:`try_lock`: unlink its file while holding it, then close."""
    Path(path).unlink(missing_ok=True)
    os.close(fd)


@contextmanager
def locked(path: str | os.PathLike, *, blocking: bool = False) -> Iterator[bool]:
    """``with locked(path) as mine:``: ``mine`` is whether this process holds the lock for the
    block (always true with ``blocking=True``); released on exit."""
    fd = try_lock(path, blocking=blocking)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            unlock(fd, path)
