"""Tiny MNIST-shaped IDX sets written with ``write_idx``, for the data-module unit tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ortho_lightning.data.download import MNIST_FILES
from ortho_lightning.data.idx import write_idx


@dataclass
class TinyMNIST:
    """A tiny MNIST on disk: ``folder`` holds the four files; arrays are what they contain."""

    folder: Path
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    def path(self, name: str) -> Path:
        return self.folder / name


def make_tiny_mnist(
    folder: Path, n_train: int = 40, n_test: int = 20, gzip: bool = True, seed: int = 0
) -> TinyMNIST:
    """Write four IDX files into ``folder`` (created): random pixels, labels ``i % 10``.

    Pixel (0, 0) of image ``i`` is ``i`` (``i < 256``), so a test can tell which image it got.
    """
    rng = np.random.default_rng(seed)
    arrays = []
    for n in (n_train, n_test):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = np.arange(n) % 256
        arrays += [images, (np.arange(n) % 10).astype(np.uint8)]
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in zip(MNIST_FILES, arrays):
        write_idx(folder / (name if gzip else name.removesuffix(".gz")), array, gzip=gzip)
    return TinyMNIST(folder, *arrays)


@pytest.fixture
def tiny_mnist(tmp_path) -> TinyMNIST:
    """40 training and 20 test images in ``tmp_path / "mnist"``, gzip-compressed."""
    return make_tiny_mnist(tmp_path / "mnist")
