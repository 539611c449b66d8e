"""Shared fixtures. Every test runs with W&B offline and a small, seeded torch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_GIT", "true")

REPO_ROOT = Path(__file__).resolve().parents[1]
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def find_mnist_dir() -> Path | None:
    """The real MNIST folder: ``$ORTHO_LIGHTNING_DATA`` if it holds the files, else
    ``../shared/data/mnist`` beside the checkout; ``None`` when neither has them."""
    candidates = [os.environ.get("ORTHO_LIGHTNING_DATA"), REPO_ROOT.parent / "shared/data/mnist"]
    for c in candidates:
        if c and all((Path(c) / f).exists() for f in MNIST_FILES):
            return Path(c)
    return None


@pytest.fixture
def mnist_dir() -> Path:
    """The real MNIST folder, or skip the test saying where it was looked for."""
    path = find_mnist_dir()
    if path is None:
        pytest.skip(
            "real MNIST not found: set ORTHO_LIGHTNING_DATA or put the four IDX files in "
            f"{REPO_ROOT.parent / 'shared/data/mnist'}"
        )
    return path


@pytest.fixture
def one_thread():
    """One intra-op thread for the test, restored after: the tests' small models gain nothing
    from torch's thread pool, which on a shared, oversubscribed 2-core runner only spins and
    contends (small matmuls and SVDs slow down 10-100x)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed_and_threads(tmp_path, monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    yield
