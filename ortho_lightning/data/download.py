"""Checked download of the MNIST files: public mirrors, md5 sums, atomic writes.

Each file is streamed into a temporary file in the destination folder, its md5 checked, and
only then renamed to its final name (``os.replace``, atomic on one file system). An interrupted
or corrupt download therefore never leaves a file under an MNIST name that a later run would
trust. Files already on disk are never checked here: they are parsed strictly when loaded.

Two limits bound the time spent: ``timeout`` for a connection or the next bytes of one mirror,
and ``deadline`` for the whole call, every file and mirror together (a mirror that trickles a
byte every few seconds never trips the first; a blackholed one costs ``timeout`` per file per
mirror). When the deadline passes the transfer in progress is cut (its socket shut down), no
further mirror is tried, and the error says so.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from ortho_lightning.exceptions import DataError
from ortho_lightning.validation import check_number, fail

#: The four MNIST files, in the order train images, train labels, test images, test labels.
MNIST_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

#: md5 of each original MNIST distribution file; downloads must match these.
MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

#: Public mirrors tried in order (the ones torchvision uses).
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

#: Seconds to wait for a connection or for the next chunk of data.
DEFAULT_TIMEOUT = 30.0
#: Seconds a whole download (every file, every mirror) may take: MNIST's 11 MB at 20 KB/s.
DEFAULT_DEADLINE = 600.0

_CHUNK = 1 << 16
_SCHEMES = ("http", "https", "file")


def how_to_provide(folder: Path, names: Sequence[str] = MNIST_FILES) -> str:
    """The sentence telling a user how to put the MNIST files where they are looked for."""
    return (
        f"Provide them by copying the IDX files ({', '.join(names)}; gzip-compressed or not) "
        f"into {folder} (or {folder / 'MNIST' / 'raw'}, torchvision's layout), or point "
        "data_dir / the ORTHO_LIGHTNING_DATA environment variable at a folder holding the "
        "four MNIST IDX files."
    )


def check_mirrors(mirrors: Sequence[str], owner: str = "download_mnist") -> list[str]:
    """Return ``mirrors`` as a list after checking each is an http(s)/file URL.

    Raises:
        ConfigurationError: naming ``owner``, the offending mirror and the accepted schemes.
    """
    if isinstance(mirrors, str):
        fail(owner, "mirrors", "a list of base URLs, not a single string", mirrors)
    checked = []
    for i, mirror in enumerate(mirrors):
        if urllib.parse.urlparse(str(mirror)).scheme not in _SCHEMES:
            fail(owner, f"mirrors[{i}]", f"a URL whose scheme is one of {list(_SCHEMES)}", mirror)
        checked.append(str(mirror))
    if not checked:
        fail(owner, "mirrors", "a non-empty list of base URLs, or None", mirrors)
    return checked


class DeadlineError(DataError):
    """The overall download deadline passed."""


def _cut(response) -> None:
    """Shut down the socket under ``response`` so a read blocked on it in another thread
    returns (at the deadline); a no-op for responses without one (``file:`` URLs)."""
    try:
        fd = os.dup(response.fileno())
    except (OSError, ValueError, AttributeError):
        return
    try:
        sock = socket.socket(fileno=fd)
    except OSError:  # not a socket
        os.close(fd)
        return
    with sock:  # closes only the duplicate
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _fetch_into(url: str, handle, timeout: float, until: float) -> str:
    """Stream ``url`` into the open binary ``handle`` before the monotonic time ``until``;
    return the md5 of what was read."""
    digest = hashlib.md5()
    received = 0
    left = until - time.monotonic()
    if left <= 0:
        raise DeadlineError("deadline passed before it was tried")
    with urllib.request.urlopen(url, timeout=min(timeout, left)) as response:
        length = response.headers.get("Content-Length")
        watchdog = threading.Timer(max(until - time.monotonic(), 0.0), _cut, (response,))
        watchdog.daemon = True
        watchdog.start()
        try:
            # read1: whatever has arrived (read() would wait for a full chunk, byte by byte)
            while chunk := response.read1(_CHUNK):
                digest.update(chunk)
                handle.write(chunk)
                received += len(chunk)
                if time.monotonic() >= until:
                    break
        except OSError:
            if time.monotonic() < until:
                raise
        finally:
            watchdog.cancel()
    if time.monotonic() >= until and (length is None or received != int(length)):
        raise DeadlineError(f"deadline passed after {received} of {length or '?'} bytes")
    if length is not None and received != int(length):
        raise DataError(f"connection closed after {received} of {length} bytes")
    return digest.hexdigest()


def download_file(
    urls: Sequence[str], dest: str | os.PathLike, md5: str, timeout: float = DEFAULT_TIMEOUT,
    deadline: float = DEFAULT_DEADLINE,
) -> Path:
    """Download one file to ``dest``, trying ``urls`` in order, accepting only bytes with ``md5``.

    The data goes to a temporary file beside ``dest`` that is renamed to ``dest`` only after
    its md5 matched; on any failure the temporary file is removed. ``timeout`` bounds the wait
    for a connection or the next bytes, ``deadline`` (seconds) the whole call.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        DataError: when every URL failed or the deadline passed, listing each URL with its reason.
        ConfigurationError: ``deadline`` is not a finite number > 0.
    """
    until = time.monotonic() + check_number("download_file", "deadline", deadline, positive=True)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in urls:
        if time.monotonic() >= until:
            failures.append(f"{url} (not tried: the overall deadline had passed)")
            continue
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as handle:
                got = _fetch_into(url, handle, timeout, until)
            if got != md5:
                raise DataError(f"md5 mismatch: expected {md5}, got {got}")
            os.replace(tmp, dest)
            return dest
        except DeadlineError as err:
            failures.append(f"{url} (the overall deadline passed: {err})")
        except Exception as err:
            # Any failure (refused, timeout, HTTP error, cut connection, md5) -> next mirror.
            failures.append(f"{url} ({type(err).__name__}: {err})")
        finally:
            tmp.unlink(missing_ok=True)
    raise DataError(f"could not download {dest.name} into {dest.parent}: tried " + "; ".join(failures))


def download_mnist(
    folder: str | os.PathLike,
    names: Sequence[str] = MNIST_FILES,
    mirrors: Sequence[str] | None = None,
    md5: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    deadline: float = DEFAULT_DEADLINE,
) -> list[Path]:
    """Download the MNIST files ``names`` into ``folder`` from ``mirrors``, md5-checked.

    Args:
        folder: destination folder (created if needed).
        names: file names, a subset of :data:`MNIST_FILES`.
        mirrors: base URLs tried in order (default :data:`MNIST_MIRRORS`).
        md5: expected md5 per file name (default :data:`MNIST_MD5`, read at call time).
        timeout: seconds to wait for a connection or the next chunk.
        deadline: seconds the whole call may take (every file and mirror); once passed, the
            transfer in progress is cut and nothing more is tried.

    Returns:
        The paths written, in the order of ``names``.

    Raises:
        DataError: naming the files that could not be downloaded, every URL tried with its
            reason, the folder, and how to provide the files by hand.
        ConfigurationError: a bad ``deadline`` or ``mirrors``, or a name without a known md5.
    """
    until = time.monotonic() + check_number("download_mnist", "deadline", deadline, positive=True)
    folder = Path(folder)
    mirrors = check_mirrors(MNIST_MIRRORS if mirrors is None else mirrors)
    table = MNIST_MD5 if md5 is None else md5
    written, failures = [], []
    for name in names:
        if name not in table:
            fail("download_mnist", "names", f"files with a known md5 {sorted(table)}", name)
        urls = [mirror.rstrip("/") + "/" + name for mirror in mirrors]
        try:
            left = max(until - time.monotonic(), 1e-9)  # one deadline over every file
            written.append(download_file(urls, folder / name, table[name], timeout, left))
        except DataError as err:
            failures.append((name, str(err)))
    if failures:
        missing = ", ".join(name for name, _ in failures)
        details = "\n  ".join(reason for _, reason in failures)
        if time.monotonic() >= until:
            details += f"\n  (deadline={deadline:g} s for the whole download; raise it for a slow mirror)"
        raise DataError(
            f"MNIST files missing from {folder} and not downloadable: {missing}.\n  {details}\n"
            + how_to_provide(folder)
        )
    return written
