"""Checked downloads, for real, against an HTTP server the test runs on 127.0.0.1.

No test here contacts any other host: every download names the local server (or a closed
local port) as its only mirror.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ortho_lightning.data import MNISTDataModule
from ortho_lightning.data import download as dl
from ortho_lightning.data.download import MNIST_FILES, download_file, download_mnist
from ortho_lightning.exceptions import ConfigurationError, DataError

from .conftest import make_tiny_mnist

PAYLOAD = bytes(range(256)) * 64  # 16 KiB
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.routes[path] = (body, behaviour)``; behaviour "good", "drop" (send half
    of the declared length, then close) or "stall" (send half, then wait past any timeout)."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.server.requests.append(self.path)
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        body, behaviour = route
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if behaviour == "good":
            self.wfile.write(body)
            return
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        if behaviour == "stall":
            self.server.release.wait(10)
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.routes, httpd.requests, httpd.release = {}, [], threading.Event()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture
def closed_port_url():
    """A 127.0.0.1 URL on which nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_good_file_is_written_and_nothing_else(server, tmp_path):
    server.routes["/f.gz"] = (PAYLOAD, "good")
    dest = download_file([server.url + "f.gz"], tmp_path / "f.gz", PAYLOAD_MD5, timeout=5)
    assert dest.read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.gz"]


FAILURES = {
    "wrong-md5": ("good", "md5 mismatch: expected 0123456789abcdef0123456789abcdef"),
    "dropped": ("drop", "f.gz"),
    "stalled": ("stall", "timed out"),
}


@pytest.mark.parametrize("behaviour,message", FAILURES.values(), ids=FAILURES.keys())
def test_failed_download_leaves_no_file(server, tmp_path, behaviour, message):
    server.routes["/f.gz"] = (PAYLOAD, behaviour)
    md5 = "0123456789abcdef0123456789abcdef" if behaviour == "good" else PAYLOAD_MD5
    start = time.monotonic()
    with pytest.raises(DataError, match=f"could not download f.gz into {tmp_path}") as info:
        download_file([server.url + "f.gz"], tmp_path / "f.gz", md5, timeout=0.5)
    assert message in str(info.value)
    assert server.url + "f.gz" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no final file, no temporary left behind
    assert time.monotonic() - start < 5


def test_dropped_connection_is_reported_as_cut(server, tmp_path):
    server.routes["/f.gz"] = (PAYLOAD, "drop")
    with pytest.raises(DataError) as info:
        download_file([server.url + "f.gz"], tmp_path / "f.gz", PAYLOAD_MD5, timeout=2)
    # Either http.client notices the short body, or the length check does.
    assert "IncompleteRead" in str(info.value) or "connection closed after" in str(info.value)


def test_falls_back_to_the_next_mirror(server, tmp_path, closed_port_url):
    server.routes["/good/f.gz"] = (PAYLOAD, "good")
    urls = [closed_port_url + "f.gz", server.url + "missing/f.gz", server.url + "good/f.gz"]
    dest = download_file(urls, tmp_path / "f.gz", PAYLOAD_MD5, timeout=2)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == ["/missing/f.gz", "/good/f.gz"]


def test_download_mnist_error_names_files_folder_and_remedy(tmp_path, closed_port_url):
    folder = tmp_path / "data"
    with pytest.raises(DataError) as info:
        download_mnist(folder, MNIST_FILES[2:], mirrors=[closed_port_url], timeout=1)
    text = str(info.value)
    assert f"MNIST files missing from {folder} and not downloadable" in text
    for name in MNIST_FILES[2:]:
        assert name in text
        assert closed_port_url + name in text
    assert "ORTHO_LIGHTNING_DATA" in text and "MNIST/raw" in text
    assert not any(folder.iterdir())


def _serve_tiny(server, tmp_path, monkeypatch):
    tiny = make_tiny_mnist(tmp_path / "served")
    table = {}
    for name in MNIST_FILES:
        body = tiny.path(name).read_bytes()
        server.routes["/mnist/" + name] = (body, "good")
        table[name] = hashlib.md5(body).hexdigest()
    monkeypatch.setattr(dl, "MNIST_MD5", table)
    return tiny


def test_datamodule_downloads_missing_files_once(server, tmp_path, monkeypatch):
    tiny = _serve_tiny(server, tmp_path, monkeypatch)
    dm = MNISTDataModule(
        data_dir=str(tmp_path / "data"), mirrors=[server.url + "mnist"], val_size=10, shuffle=False,
        allow_subset=True,
    )
    dm.prepare_data()
    assert sorted(server.requests) == sorted("/mnist/" + n for n in MNIST_FILES)
    for name in MNIST_FILES:
        assert (tmp_path / "data" / name).read_bytes() == tiny.path(name).read_bytes()
    dm.prepare_data()  # files now present: no second download
    assert len(server.requests) == 4
    dm.setup("test")
    assert dm.test_dataset.labels.tolist() == tiny.test_labels.tolist()


def test_only_missing_files_are_downloaded(server, tmp_path, monkeypatch):
    _serve_tiny(server, tmp_path, monkeypatch)
    present = make_tiny_mnist(tmp_path / "data", seed=1)
    for name in MNIST_FILES[2:]:
        present.path(name).unlink()
    MNISTDataModule(data_dir=str(present.folder), mirrors=[server.url + "mnist"]).prepare_data()
    assert sorted(server.requests) == sorted("/mnist/" + n for n in MNIST_FILES[2:])


def test_present_files_are_not_md5_checked(server, tiny_mnist):
    # The tiny files' md5s differ from the original MNIST table; they must be used as they are.
    assert dl.MNIST_MD5["t10k-labels-idx1-ubyte.gz"] != hashlib.md5(
        tiny_mnist.path("t10k-labels-idx1-ubyte.gz").read_bytes()
    ).hexdigest()
    dm = MNISTDataModule(
        data_dir=str(tiny_mnist.folder), mirrors=[server.url], val_size=4, allow_subset=True
    )
    dm.prepare_data()
    dm.setup()
    assert server.requests == []
    assert len(dm.test_dataset) == 20


def test_download_false_never_touches_the_network(server, tmp_path):
    dm = MNISTDataModule(data_dir=str(tmp_path / "empty"), download=False, mirrors=[server.url])
    with pytest.raises(DataError) as info:
        dm.prepare_data()
    text = str(info.value)
    for name in MNIST_FILES:
        assert name in text
    assert str(tmp_path / "empty") in text and "download=False" in text
    assert "ORTHO_LIGHTNING_DATA" in text
    assert server.requests == []


def test_datamodule_download_failure_is_a_clear_error(tmp_path, closed_port_url):
    dm = MNISTDataModule(data_dir=str(tmp_path / "data"), mirrors=[closed_port_url])
    with pytest.raises(DataError, match="not downloadable: train-images-idx3-ubyte.gz, "):
        dm.prepare_data()


BAD_MIRRORS = {
    "ftp": (["http://127.0.0.1/", "ftp://example.org/mnist/"],
            r"mirrors\[1\] must be a URL whose scheme is one of \['http', 'https', 'file'\], "
            "got 'ftp://example.org/mnist/'"),
    "string": ("http://127.0.0.1/", "mirrors must be a list of base URLs, not a single string, "
               "got 'http://127.0.0.1/'"),
    "empty": ([], r"mirrors must be a non-empty list of base URLs, or None, got \[\]"),
}


@pytest.mark.parametrize("mirrors,message", BAD_MIRRORS.values(), ids=BAD_MIRRORS.keys())
def test_bad_mirrors_are_rejected(mirrors, message):
    with pytest.raises(ConfigurationError, match="MNISTDataModule: " + message):
        MNISTDataModule(mirrors=mirrors)
    with pytest.raises(ConfigurationError, match="download_mnist: " + message):
        download_mnist("unused", mirrors=mirrors)


def test_datamodule_passes_its_deadline_to_the_download(server, tmp_path, monkeypatch):
    # every file stalls after half its bytes (10 s, then the connection is closed): without the
    # deadline the four files would take 4 x 10 s; with it the whole download stops at 0.5 s
    for name in MNIST_FILES:
        server.routes["/mnist/" + name] = (PAYLOAD, "stall")
    monkeypatch.setattr(dl, "MNIST_MD5", dict.fromkeys(MNIST_FILES, PAYLOAD_MD5))
    dm = MNISTDataModule(data_dir=str(tmp_path / "data"), mirrors=[server.url + "mnist"],
                         deadline=0.5)
    start = time.monotonic()
    with pytest.raises(DataError, match=r"deadline=0.5 s for the whole download"):
        dm.prepare_data()
    assert time.monotonic() - start < 5
    assert not list((tmp_path / "data").iterdir())  # no partial file left behind
    with pytest.raises(ConfigurationError, match="MNISTDataModule: deadline must be a finite number > 0, got 0"):
        MNISTDataModule(deadline=0)


def test_unknown_file_name_has_no_md5(tmp_path, closed_port_url):
    with pytest.raises(ConfigurationError, match=r"^download_mnist: names must be files with a known "
                       r"md5 \['t10k-images-idx3-ubyte.gz', .*\], got 'emnist.gz'$"):
        download_mnist(tmp_path, ["emnist.gz"], mirrors=[closed_port_url])


def test_file_mirror(tmp_path):
    source = tmp_path / "mirror"
    source.mkdir()
    (source / "f.gz").write_bytes(PAYLOAD)
    dest = download_file([source.as_uri() + "/f.gz"], tmp_path / "out" / "f.gz", PAYLOAD_MD5)
    assert dest.read_bytes() == PAYLOAD
