"""MNIST files that decode but are the wrong split are errors naming the file (issue 15): the
test images copied under the training names used to train silently on 10,000 images."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ortho_lightning.data import MNISTDataModule
from ortho_lightning.data.download import MNIST_FILES
from ortho_lightning.data.idx import write_idx
from ortho_lightning.exceptions import DataError
from tests.data.conftest import make_tiny_mnist

TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = MNIST_FILES


def _write_split(folder, images_name, labels_name, n):
    write_idx(folder / images_name, np.zeros((n, 28, 28), dtype=np.uint8))
    write_idx(folder / labels_name, np.arange(n) % 10)


def test_test_files_under_the_training_names_are_an_error_naming_the_file(tmp_path):
    _write_split(tmp_path, TEST_IMAGES, TEST_LABELS, 10_000)
    shutil.copy(tmp_path / TEST_IMAGES, tmp_path / TRAIN_IMAGES)
    shutil.copy(tmp_path / TEST_LABELS, tmp_path / TRAIN_LABELS)
    dm = MNISTDataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(DataError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert str(tmp_path / TRAIN_IMAGES) in message
    assert "holds 10,000 images, MNIST's training split has 60,000" in message
    assert "are the test files copied under the training names?" in message
    dm.setup("test")  # the test split itself is right


def test_a_subset_is_an_error_unless_allowed_and_never_larger_than_mnist(tmp_path):
    tiny = make_tiny_mnist(tmp_path / "tiny", n_train=40, n_test=20)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz holds 20 images, MNIST's "
                       r"test split has 10,000; pass allow_subset=True"):
        MNISTDataModule(data_dir=str(tiny.folder), download=False, val_size=4).setup("test")
    dm = MNISTDataModule(data_dir=str(tiny.folder), download=False, val_size=4, allow_subset=True)
    dm.setup()
    assert len(dm.train_dataset) == 36 and len(dm.test_dataset) == 20

    _write_split(tiny.folder, TEST_IMAGES, TEST_LABELS, 10_001)
    with pytest.raises(DataError, match=r"holds 10,001 images, MNIST's test split has 10,000$"):
        MNISTDataModule(data_dir=str(tiny.folder), download=False, allow_subset=True).setup("test")
