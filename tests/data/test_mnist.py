"""MNISTDataModule: tiny IDX sets for the mechanics, the real MNIST for published facts."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from ortho_lightning.data import MNISTDataModule, write_idx
from ortho_lightning.data import mnist as mnist_module
from ortho_lightning.data.download import MNIST_FILES
from ortho_lightning.exceptions import ConfigurationError, DataError

from .conftest import make_tiny_mnist

MEAN, STD = 0.1307, 0.3081


def _all(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


def _dm(folder, **kwargs) -> MNISTDataModule:
    kwargs = {"val_size": 10, "batch_size": 8, "download": False, "allow_subset": True, **kwargs}
    dm = MNISTDataModule(data_dir=str(folder), **kwargs)
    dm.setup()
    return dm


# -- mechanics on tiny files ---------------------------------------------------------------


def test_batches_shapes_dtypes_and_pixels(tiny_mnist):
    dm = _dm(tiny_mnist.folder, normalize=False, val_split="last", shuffle=False)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (8,) and y.dtype == torch.int64
    assert dm.input_shape == (1, 28, 28) and dm.num_classes == 10
    expected = torch.from_numpy(tiny_mnist.train_images[:8]).float().unsqueeze(1) / 255
    torch.testing.assert_close(x, expected, rtol=0, atol=0)
    assert y.tolist() == tiny_mnist.train_labels[:8].tolist()
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_normalisation_is_mean_std_of_unit_pixels(tiny_mnist):
    dm = _dm(tiny_mnist.folder, val_split="last", shuffle=False)
    x, _ = _all(dm.test_dataloader())
    pixels = torch.from_numpy(tiny_mnist.test_images).float().unsqueeze(1) / 255
    torch.testing.assert_close(x, (pixels - MEAN) / STD)


def test_last_split_is_the_last_images_in_order(tiny_mnist):
    dm = _dm(tiny_mnist.folder, val_split="last", val_size=12, shuffle=False, normalize=False)
    xv, yv = _all(dm.val_dataloader())
    xt, yt = _all(dm.train_dataloader())
    first_pixel = (xv[:, 0, 0, 0] * 255).round().long().tolist()
    assert first_pixel == list(range(28, 40))  # pixel (0, 0) of image i is i
    assert yv.tolist() == tiny_mnist.train_labels[28:].tolist()
    assert (xt[:, 0, 0, 0] * 255).round().long().tolist() == list(range(28))
    assert len(yt) + len(yv) == 40


def _val_ids(dm) -> list[int]:
    return (dm.val_dataset.images[:, 0, 0]).long().tolist()


def test_random_split_is_seeded_and_disjoint(tiny_mnist):
    a = _dm(tiny_mnist.folder, split_seed=3)
    b = _dm(tiny_mnist.folder, split_seed=3)
    c = _dm(tiny_mnist.folder, split_seed=4)
    train_ids = a.train_dataset.images[:, 0, 0].long().tolist()
    assert sorted(train_ids + _val_ids(a)) == list(range(40))
    assert _val_ids(a) == _val_ids(b)
    assert _val_ids(a) != _val_ids(c)
    assert _val_ids(a) != list(range(30, 40))  # not simply the last ones


LAYOUTS = {
    "flat-gz": ("", True),
    "flat-raw": ("", False),
    "torchvision-raw": ("MNIST/raw", False),
    "torchvision-gz": ("MNIST/raw", True),
}


@pytest.mark.parametrize("sub,compress", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_file_layouts(tmp_path, sub, compress):
    tiny = make_tiny_mnist(tmp_path / "root" / sub, gzip=compress)
    dm = _dm(tmp_path / "root", val_split="last", shuffle=False, normalize=False)
    x, y = _all(dm.test_dataloader())
    assert y.tolist() == tiny.test_labels.tolist()
    assert torch.equal((x * 255).round().to(torch.uint8)[:, 0], torch.from_numpy(tiny.test_images))


def test_data_dir_default_from_environment(tiny_mnist, monkeypatch, tmp_path):
    monkeypatch.setenv("ORTHO_LIGHTNING_DATA", str(tiny_mnist.folder))
    assert MNISTDataModule().data_dir == tiny_mnist.folder
    monkeypatch.delenv("ORTHO_LIGHTNING_DATA")
    monkeypatch.chdir(tmp_path)
    dm = MNISTDataModule(download=False)
    assert dm.data_dir.resolve() == (tmp_path / "data").resolve()
    assert dm.hparams.data_dir is None  # the config stays portable


def test_setup_is_idempotent_and_decodes_once(tiny_mnist, monkeypatch):
    calls = []
    real = mnist_module.read_idx
    monkeypatch.setattr(mnist_module, "read_idx", lambda p: calls.append(p) or real(p))
    monkeypatch.setattr(mnist_module, "_CACHE", type(mnist_module._CACHE)())
    dm = MNISTDataModule(data_dir=str(tiny_mnist.folder), allow_subset=True, val_size=5)
    dm.setup("fit")
    train = dm.train_dataset
    dm.setup("fit")
    dm.setup("validate")
    assert dm.train_dataset is train
    assert dm.test_dataset is None  # fit does not load the test split
    dm.setup("test")
    other = MNISTDataModule(data_dir=str(tiny_mnist.folder), allow_subset=True, val_size=5)
    other.setup()
    assert len(calls) == 4  # each of the four files decoded once in the process
    assert isinstance(train.images, torch.Tensor) and train.images.dtype == torch.uint8


def test_hyperparameters_are_saved(tiny_mnist):
    dm = MNISTDataModule(data_dir=str(tiny_mnist.folder), allow_subset=True, batch_size=7, val_size=3, split_seed=5)
    assert dm.hparams.batch_size == 7 and dm.hparams.val_size == 3
    assert dm.hparams.split_seed == 5 and dm.hparams.mean == MEAN and dm.hparams.std == STD
    assert dm.hparams.val_split == "random" and dm.hparams.num_workers == 0


def test_worker_process_loader_matches_main_process(tiny_mnist):
    single = _dm(tiny_mnist.folder, shuffle=False)
    workers = _dm(tiny_mnist.folder, shuffle=False, num_workers=1, persistent_workers=True)
    loader = workers.train_dataloader()
    for _ in range(2):  # the persistent worker serves a second epoch
        x, y = _all(loader)
        x0, y0 = _all(single.train_dataloader())
        assert torch.equal(x, x0) and torch.equal(y, y0)


class _Linear(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(784, 10)

    def step(self, batch):
        x, y = batch
        return nn.functional.cross_entropy(self.layer(x.flatten(1)), y)

    def training_step(self, batch, batch_idx):
        return self.step(batch)

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.step(batch))

    def test_step(self, batch, batch_idx):
        self.log("test_loss", self.step(batch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_fit_and_test_with_the_datamodule(tiny_mnist, tmp_path):
    dm = MNISTDataModule(data_dir=str(tiny_mnist.folder), allow_subset=True, batch_size=8, val_size=8)
    trainer = L.Trainer(
        max_epochs=1, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False,
    )
    model = _Linear()
    trainer.fit(model, dm)
    assert trainer.num_training_batches == 4 and trainer.num_val_batches == [1]
    result = trainer.test(model, datamodule=dm, verbose=False)
    assert np.isfinite(result[0]["test_loss"])


# -- bad input -----------------------------------------------------------------------------

BAD_ARGS = {
    "val_split": ({"val_split": "first"}, r"val_split must be one of \['random', 'last'\], got 'first'"),
    "batch_size": ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    "val_size": ({"val_size": -1}, "val_size must be an integer >= 0, got -1"),
    "num_workers": ({"num_workers": 1.5}, "num_workers must be an integer >= 0, got 1.5"),
    "std": ({"std": 0.0}, "std must be a finite number > 0, got 0.0"),
    "shuffle_seed": ({"shuffle_seed": -1}, "shuffle_seed must be an integer >= 0 or None, got -1"),
    "persistent": ({"persistent_workers": True},
                   "num_workers must be > 0 when persistent_workers=True, got 0"),
}


@pytest.mark.parametrize("kwargs,message", BAD_ARGS.values(), ids=BAD_ARGS.keys())
def test_bad_arguments(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        MNISTDataModule(**kwargs)


def test_val_size_not_smaller_than_training_set(tiny_mnist):
    dm = MNISTDataModule(data_dir=str(tiny_mnist.folder), allow_subset=True, val_size=40)
    with pytest.raises(ConfigurationError, match=r"^MNISTDataModule: val_size must be smaller than the 40 training images in .*, got 40$"):
        dm.setup("fit")


def test_setup_without_files_says_what_is_missing(tmp_path):
    dm = MNISTDataModule(data_dir=str(tmp_path))
    with pytest.raises(DataError) as info:
        dm.setup("test")
    text = str(info.value)
    assert "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz" in text
    assert str(tmp_path) in text and "call prepare_data()" in text
    assert "ORTHO_LIGHTNING_DATA" in text


def test_loader_before_setup_is_an_error(tiny_mnist):
    dm = MNISTDataModule(data_dir=str(tiny_mnist.folder), allow_subset=True)
    with pytest.raises(DataError, match="the train split is not set up; call setup()"):
        dm.train_dataloader()


def _replace(tiny, name, array):
    write_idx(tiny.path(name), array)


CORRUPT_SETS = {
    "count-mismatch": (
        MNIST_FILES[3], np.zeros(19, np.uint8),
        r"count mismatch: .*t10k-images-idx3-ubyte.gz holds 20 images but .*t10k-labels-idx1-ubyte.gz holds 19",
    ),
    "label-range": (
        MNIST_FILES[3], np.full(20, 10, np.uint8), r"t10k-labels-idx1-ubyte.gz holds label 10",
    ),
    "image-size": (
        MNIST_FILES[2], np.zeros((20, 27, 28), np.uint8),
        r"t10k-images-idx3-ubyte.gz holds shape \(20, 27, 28\); expected \(N, 28, 28\)",
    ),
    "labels-2d": (
        MNIST_FILES[3], np.zeros((20, 1), np.uint8), r"t10k-labels-idx1-ubyte.gz holds shape \(20, 1\)",
    ),
}


@pytest.mark.parametrize("name,array,message", CORRUPT_SETS.values(), ids=CORRUPT_SETS.keys())
def test_inconsistent_files_are_errors_naming_them(tiny_mnist, name, array, message):
    _replace(tiny_mnist, name, array)
    dm = MNISTDataModule(data_dir=str(tiny_mnist.folder), allow_subset=True, download=False)
    with pytest.raises(DataError, match=message):
        dm.setup("test")


def test_truncated_present_file_is_an_error_naming_it(tiny_mnist):
    path = tiny_mnist.path(MNIST_FILES[2])
    path.write_bytes(path.read_bytes()[:100])
    dm = MNISTDataModule(data_dir=str(tiny_mnist.folder), allow_subset=True, download=False)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz is a truncated or corrupt gzip"):
        dm.setup("test")


# -- the real MNIST (published facts) ------------------------------------------------------

TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture
def real_dm(mnist_dir) -> MNISTDataModule:
    # Decoding happens once per process: the module-level cache shares it across tests.
    dm = MNISTDataModule(data_dir=str(mnist_dir), download=False)
    dm.setup()
    return dm


@pytest.mark.mnist
def test_real_test_split_class_counts(real_dm):
    assert len(real_dm.test_dataset) == 10_000
    assert torch.bincount(real_dm.test_dataset.labels, minlength=10).tolist() == TEST_COUNTS


@pytest.mark.mnist
def test_real_train_and_val_make_the_60000_training_images(real_dm):
    train, val = real_dm.train_dataset, real_dm.val_dataset
    assert len(train) + len(val) == 60_000 and len(val) == 5000
    counts = torch.bincount(torch.cat([train.labels, val.labels]), minlength=10)
    assert counts.tolist() == TRAIN_COUNTS


@pytest.mark.mnist
def test_real_normalised_training_pixels_have_mean_0_std_1(real_dm):
    # mean/std are the published statistics of the full training set; 20,000 images suffice.
    x = real_dm.train_dataset.transform(real_dm.train_dataset.images[::2][:20_000])
    assert abs(x.mean().item()) < 0.01
    assert abs(x.std().item() - 1.0) < 0.01


@pytest.mark.mnist
def test_real_last_split_recipe(mnist_dir):
    dm = MNISTDataModule(
        data_dir=str(mnist_dir), val_size=12_000, val_split="last", normalize=False, download=False
    )
    dm.setup("fit")
    assert len(dm.train_dataset) == 48_000 and len(dm.val_dataset) == 12_000
    x, _ = next(iter(dm.val_dataloader()))
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert torch.bincount(dm.val_dataset.labels, minlength=10).sum() == 12_000
