"""SeqMNISTDataModule: pixel and row sequences, and the fixed permutation of permuted MNIST."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ortho_lightning.data import MNISTDataModule, SeqMNISTDataModule, write_idx
from ortho_lightning.data.download import MNIST_FILES
from ortho_lightning.exceptions import ConfigurationError


def _seq(folder, **kwargs) -> SeqMNISTDataModule:
    kwargs = {"val_size": 10, "batch_size": 16, "download": False, "shuffle": False,
              "allow_subset": True, **kwargs}
    dm = SeqMNISTDataModule(data_dir=str(folder), **kwargs)
    dm.setup()
    return dm


def _first_batch(loader) -> tuple[torch.Tensor, torch.Tensor]:
    return next(iter(loader))


MODES = {"pixel": ("pixel", (784, 1)), "row": ("row", (28, 28))}


@pytest.mark.parametrize("mode,shape", MODES.values(), ids=MODES.keys())
def test_shapes(tiny_mnist, mode, shape):
    dm = _seq(tiny_mnist.folder, mode=mode)
    assert dm.input_shape == shape and dm.num_classes == 10
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        x, y = _first_batch(loader)
        n = min(16, len(loader.dataset))
        assert x.shape == (n, *shape) and x.dtype == torch.float32
        assert y.shape == (n,) and y.dtype == torch.int64


def test_pixel_steps_are_row_major_pixels(tiny_mnist):
    dm = _seq(tiny_mnist.folder, mode="pixel", normalize=False)
    x, _ = _first_batch(dm.test_dataloader())
    images = torch.from_numpy(tiny_mnist.test_images[:16]).float() / 255
    for t in (0, 27, 28, 400, 783):  # step t is pixel (t // 28, t % 28)
        torch.testing.assert_close(x[:, t, 0], images[:, t // 28, t % 28], rtol=0, atol=0)


def test_row_steps_are_image_rows(tiny_mnist):
    dm = _seq(tiny_mnist.folder, mode="row", normalize=False)
    x, _ = _first_batch(dm.test_dataloader())
    images = torch.from_numpy(tiny_mnist.test_images[:16]).float() / 255
    torch.testing.assert_close(x, images, rtol=0, atol=0)


@pytest.fixture
def position_mnist(tmp_path):
    """Every image encodes pixel positions: even images hold ``p % 256``, odd ``p // 256``,
    so a pair of images decodes which original pixel sits at each step."""
    position = np.arange(784).reshape(28, 28)
    pair = np.stack([position % 256, position // 256]).astype(np.uint8)
    folder = tmp_path / "positions"
    folder.mkdir()
    for name, n in zip(MNIST_FILES, (40, 40, 20, 20)):
        is_images = "images" in name
        write_idx(folder / name, np.tile(pair, (n // 2, 1, 1)) if is_images else np.zeros(n, np.uint8))
    return folder


def _decoded_order(x: torch.Tensor) -> torch.Tensor:
    """The original pixel index at each step, from a batch of position-encoding images."""
    codes = (x.reshape(len(x), -1) * 255).round().long()
    return codes[0] + 256 * codes[1]


@pytest.mark.parametrize("mode", ["pixel", "row"])
def test_permutation_is_fixed_and_equal_across_splits(position_mnist, mode):
    dm = _seq(
        position_mnist, mode=mode, permute=True, permutation_seed=7, normalize=False,
        val_split="last",  # keeps the (even, odd) image pairs together in every split
    )
    assert dm.permutation.dtype == torch.int64 and dm.permutation.shape == (784,)
    assert torch.equal(dm.permutation.sort().values, torch.arange(784))
    assert not torch.equal(dm.permutation, torch.arange(784))
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        for x, _ in loader:
            for start in range(0, len(x), 2):
                assert torch.equal(_decoded_order(x[start : start + 2]), dm.permutation)


def test_permutation_depends_on_the_seed_only(position_mnist):
    a = _seq(position_mnist, mode="pixel", permute=True, permutation_seed=1)
    b = _seq(position_mnist, mode="pixel", permute=True, permutation_seed=1, split_seed=9)
    c = _seq(position_mnist, mode="pixel", permute=True, permutation_seed=2)
    assert torch.equal(a.permutation, b.permutation)
    assert not torch.equal(a.permutation, c.permutation)
    assert a.hparams.permutation_seed == 1 and a.hparams.permute is True


def test_unpermuting_recovers_the_plain_sequence(tiny_mnist):
    plain = _seq(tiny_mnist.folder, mode="pixel")
    permuted = _seq(tiny_mnist.folder, mode="pixel", permute=True, permutation_seed=3)
    x, y = _first_batch(plain.test_dataloader())
    xp, yp = _first_batch(permuted.test_dataloader())
    assert torch.equal(y, yp)
    assert not torch.equal(xp, x)
    torch.testing.assert_close(xp[:, permuted.permutation.argsort()], x, rtol=0, atol=0)


def test_no_permutation_unless_asked(tiny_mnist):
    assert _seq(tiny_mnist.folder).permutation is None


def test_hyperparameters_include_the_image_ones(tiny_mnist):
    dm = SeqMNISTDataModule(mode="pixel", data_dir=str(tiny_mnist.folder), allow_subset=True, batch_size=5)
    assert dm.hparams.mode == "pixel" and dm.hparams.batch_size == 5
    assert set(MNISTDataModule(data_dir=str(tiny_mnist.folder), allow_subset=True).hparams) < set(dm.hparams)


BAD_ARGS = {
    "mode": ({"mode": "column"}, r"mode must be one of \['pixel', 'row'\], got 'column'"),
    "seed": ({"permutation_seed": "7"}, "permutation_seed must be an integer, got '7'"),
    "inherited": ({"val_split": "middle"}, "val_split must be one of"),
}


@pytest.mark.parametrize("kwargs,message", BAD_ARGS.values(), ids=BAD_ARGS.keys())
def test_bad_arguments(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        SeqMNISTDataModule(**kwargs)


@pytest.mark.mnist
def test_real_row_sequences_are_the_images(mnist_dir):
    rows = SeqMNISTDataModule(mode="row", data_dir=str(mnist_dir), download=False, shuffle=False)
    images = MNISTDataModule(data_dir=str(mnist_dir), download=False, shuffle=False)
    rows.setup("test")
    images.setup("test")
    x, y = _first_batch(rows.test_dataloader())
    xi, yi = _first_batch(images.test_dataloader())
    assert x.shape == (128, 28, 28)
    assert torch.equal(x, xi[:, 0]) and torch.equal(y, yi)
