"""Downloads have an overall deadline (issue 15): a mirror that trickles one byte every few
seconds used to hang forever, a blackholed one cost ``timeout`` per file per mirror. Against
loopback servers only."""

from __future__ import annotations

import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ortho_lightning.data.download import (
    DEFAULT_DEADLINE,
    MNIST_FILES,
    download_file,
    download_mnist,
)
from ortho_lightning.exceptions import ConfigurationError, DataError

BYTE_EVERY_S = 1.6
DEADLINE_S = 1.5
TRICKLE_DEADLINE_S = 2.0  # between the 2nd byte (1.6 s) and the 3rd (3.2 s): cut, not polled


class _Trickle(BaseHTTPRequestHandler):
    """Announces 1000 bytes, then sends one every ``BYTE_EVERY_S`` seconds (each read returns
    well within the 30 s timeout, so only a total deadline stops it)."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        try:
            for _ in range(1000):
                self.wfile.write(b"x")
                self.wfile.flush()
                if self.server.stop.wait(BYTE_EVERY_S):
                    return
        except OSError:  # the client hung up
            return

    def log_message(self, *args):
        pass


@pytest.fixture
def trickle_url():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    httpd.daemon_threads, httpd.stop = True, threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.stop.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture
def blackhole_url():
    """A port that completes the TCP handshake (the kernel's backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"


def test_a_trickling_mirror_is_cut_at_the_deadline(trickle_url, tmp_path):
    start = time.monotonic()
    with pytest.raises(DataError, match=r"overall deadline passed: deadline passed after 2 of 1000"):
        download_file([trickle_url + "f.gz"], tmp_path / "f.gz", "0" * 32, timeout=30,
                      deadline=TRICKLE_DEADLINE_S)
    elapsed = time.monotonic() - start
    # cut at the deadline (2.0 s), not at the next byte (3.2 s) nor ever (before: 1000 x 1.6 s)
    assert TRICKLE_DEADLINE_S <= elapsed < TRICKLE_DEADLINE_S + 0.8, elapsed
    assert list(tmp_path.iterdir()) == []  # no partial file


def test_a_blackholed_mirror_costs_the_deadline_not_timeout_per_file(blackhole_url, tmp_path):
    start = time.monotonic()
    with pytest.raises(DataError) as info:
        download_mnist(tmp_path, MNIST_FILES, mirrors=[blackhole_url, blackhole_url + "x/"],
                       timeout=30, deadline=DEADLINE_S)
    elapsed = time.monotonic() - start
    # before: 4 files x 2 mirrors x 30 s = 240 s
    assert elapsed < DEADLINE_S + 1.0, elapsed
    text = str(info.value)
    assert all(name in text for name in MNIST_FILES)
    assert "not tried: the overall deadline had passed" in text
    assert f"deadline={DEADLINE_S:g} s for the whole download" in text
    assert list(tmp_path.iterdir()) == []


def test_a_fast_download_is_unaffected(tmp_path):
    import hashlib

    src = tmp_path / "src"
    src.mkdir()
    (src / "f.gz").write_bytes(b"payload" * 1000)
    md5 = hashlib.md5(b"payload" * 1000).hexdigest()
    dest = download_file([src.as_uri() + "/f.gz"], tmp_path / "out" / "f.gz", md5, deadline=5)
    assert dest.read_bytes() == b"payload" * 1000
    assert DEFAULT_DEADLINE >= 60


@pytest.mark.parametrize("bad", [0, -1, "10", True, float("nan"), float("inf")])
def test_bad_deadlines_are_rejected(tmp_path, bad):
    with pytest.raises(ConfigurationError, match=r"^download_file: deadline must be a finite number "
                       r"> 0, got " + re.escape(repr(bad)) + "$"):
        download_file(["file:///nonexistent"], tmp_path / "f", "0" * 32, deadline=bad)


def test_download_mnist_names_itself_for_a_bad_deadline(tmp_path):
    with pytest.raises(ConfigurationError, match=r"^download_mnist: deadline must be a finite number "
                       r"> 0, got -5$"):
        download_mnist(tmp_path, MNIST_FILES, mirrors=["file:///nonexistent"], deadline=-5)
    assert not tmp_path.joinpath("train-images-idx3-ubyte.gz").exists()
