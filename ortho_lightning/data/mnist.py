"""MNIST as a LightningDataModule: images ``(1, 28, 28)``, labels ``0..9``.

The four IDX files are looked up in ``data_dir`` (argument; default ``$ORTHO_LIGHTNING_DATA``,
else ``./data``), flat or in torchvision's ``MNIST/raw/`` layout, gzip-compressed or not.
Missing files are downloaded in :meth:`MNISTDataModule.prepare_data` (md5-checked, atomic);
:meth:`~MNISTDataModule.setup` never touches the network. Each split is decoded once into one
``uint8`` tensor, shared by every datamodule of the process reading the same files; batches
are converted to float and normalised per batch, never per decoded item.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from ortho_lightning.data.download import (
    DEFAULT_DEADLINE,
    MNIST_FILES,
    check_mirrors,
    download_mnist,
    how_to_provide,
)
from ortho_lightning.data.idx import read_idx
from ortho_lightning.data.sampling import EpochSampler, ResumableDataLoader
from ortho_lightning.exceptions import DataError
from ortho_lightning.validation import check_choice, check_int, check_number, fail

#: Environment variable naming the default data folder.
DATA_ENV = "ORTHO_LIGHTNING_DATA"
IMAGE_SIZE = 28
NUM_CLASSES = 10
TRAIN_FILES = MNIST_FILES[:2]
TEST_FILES = MNIST_FILES[2:]
VAL_SPLITS = ("random", "last")
#: images in MNIST's training and test files
SPLIT_SIZES = {"training": 60_000, "test": 10_000}
#: environment variable Lightning's ``seed_everything`` sets (the default shuffle seed)
GLOBAL_SEED_ENV = "PL_GLOBAL_SEED"

_CACHE_SIZE = 4
_CACHE: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """``data_dir`` if given, else ``$ORTHO_LIGHTNING_DATA`` if set, else ``./data``."""
    if data_dir is None:
        data_dir = os.environ.get(DATA_ENV) or "data"
    return Path(data_dir).expanduser()


def _candidates(folder: Path, name: str) -> list[Path]:
    stem = name.removesuffix(".gz")
    raw = folder / "MNIST" / "raw"
    # Uncompressed first: it reads faster, and torchvision keeps both beside each other.
    return [folder / stem, folder / name, raw / stem, raw / name]


def locate_mnist(
    folder: str | os.PathLike, names: Sequence[str] = MNIST_FILES
) -> tuple[dict[str, Path], list[str]]:
    """Find the MNIST files ``names`` in ``folder`` or ``folder/MNIST/raw``, ``.gz`` or not.

    Returns:
        ``(found, missing)``: the path found for each name, and the names not found.
    """
    folder = Path(folder)
    found, missing = {}, []
    for name in names:
        path = next((p for p in _candidates(folder, name) if p.is_file()), None)
        if path is None:
            missing.append(name)
        else:
            found[name] = path
    return found, missing


def _cache_key(*paths: Path) -> tuple:
    key = []
    for path in paths:
        stat = path.stat()
        key.append((str(path.resolve()), stat.st_mtime_ns, stat.st_size))
    return tuple(key)


def load_mnist_pair(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one split: images ``uint8 (N, 28, 28)`` and labels ``int64 (N,)``, checked.

    Decoded tensors are cached per process (keyed by path, size and modification time), so
    several datamodules and repeated ``setup`` calls decode each file once.

    Raises:
        DataError: naming the file, for a corrupt IDX file, images that are not 28x28, labels
            that are not one-dimensional or outside ``0..9``, or a count mismatch between the
            images and labels files.
    """
    key = _cache_key(images_path, labels_path)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or tuple(images.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(
            f"MNIST images file {images_path} holds shape {tuple(images.shape)}; expected "
            f"(N, {IMAGE_SIZE}, {IMAGE_SIZE})"
        )
    if labels.ndim != 1:
        raise DataError(
            f"MNIST labels file {labels_path} holds shape {tuple(labels.shape)}; expected (N,)"
        )
    if len(images) != len(labels):
        raise DataError(
            f"MNIST image/label count mismatch: {images_path} holds {len(images)} images but "
            f"{labels_path} holds {len(labels)} labels"
        )
    if len(labels) and int(labels.max()) >= NUM_CLASSES:
        raise DataError(
            f"MNIST labels file {labels_path} holds label {int(labels.max())}; expected "
            f"labels in 0..{NUM_CLASSES - 1}"
        )
    pair = (images, labels.long())
    _CACHE[key] = pair
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return pair


def load_mnist_split(found: Mapping[str, Path], split: str,
                     allow_subset: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode MNIST's ``"training"`` or ``"test"`` split from the files :func:`locate_mnist`
    found: images ``uint8 (N, 28, 28)`` and labels ``int64 (N,)``, checked as
    :func:`load_mnist_pair` does and sized as MNIST's split (:func:`check_split_size`).

    Raises:
        DataError: naming the file, for a corrupt file or a split of the wrong size.
    """
    images_name, labels_name = TRAIN_FILES if split == "training" else TEST_FILES
    images, labels = load_mnist_pair(found[images_name], found[labels_name])
    check_split_size(found[images_name], len(labels), split, allow_subset)
    return images, labels


class PixelTransform:
    """Turn a batch of ``uint8`` images ``(B, 28, 28)`` into float32 inputs ``(B, *shape)``.

    Pixels are scaled to ``[0, 1]``, then (optionally) permuted as flattened row-major
    784-vectors, then (optionally) normalised as ``(x - mean) / std``, then reshaped.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        normalize: bool = True,
        mean: float = 0.1307,
        std: float = 0.3081,
        permutation: torch.Tensor | None = None,
    ) -> None:
        self.shape = tuple(shape)
        self.normalize = normalize
        self.mean = mean
        self.std = std
        self.permutation = permutation

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.reshape(len(images), -1).to(torch.float32).div_(255.0)
        if self.permutation is not None:
            x = x[:, self.permutation]
        if self.normalize:
            x = x.sub_(self.mean).div_(self.std)
        return x.reshape(len(images), *self.shape)


class MNISTTensorDataset(Dataset):
    """A map-style dataset over one decoded split, transformed a batch at a time.

    Items are ``(x, y)``: ``x`` float32 of ``transform``'s shape, ``y`` an int64 scalar.
    The DataLoader fetches a batch with one call to :meth:`__getitems__`, which indexes and
    transforms the whole batch at once.
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, transform: PixelTransform
    ) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        index = torch.as_tensor(indices, dtype=torch.long)
        x = self.transform(self.images[index])
        return list(zip(x.unbind(0), self.labels[index].unbind(0)))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__([index])[0]


class MNISTDataModule(LightningDataModule):
    """MNIST images for classifiers: batches ``(x, y)``, ``x`` float32 ``(B, 1, 28, 28)``,
    ``y`` int64 ``(B,)``.

    Args:
        data_dir: folder holding (or receiving) the IDX files; default
            ``$ORTHO_LIGHTNING_DATA``, else ``./data``. ``data_dir/MNIST/raw`` is also searched.
        batch_size: samples per batch for every split.
        val_size: training images held out for validation (of 60,000); 0 for none.
        val_split: ``"random"`` (a seeded random subset) or ``"last"`` (the last ``val_size``
            training images, in file order).
        split_seed: seed of the random validation split.
        normalize: if True, ``(x - mean) / std`` with ``x`` in ``[0, 1]``; else ``x`` in
            ``[0, 1]``.
        mean, std: normalisation constants (MNIST training-set pixel mean and std).
        num_workers, persistent_workers, pin_memory: passed to every DataLoader.
        download: download missing files in :meth:`prepare_data`; False never uses the network.
        mirrors: base URLs to download from (default: the public MNIST mirrors).
        deadline: seconds the whole download in :meth:`prepare_data` may take, every file and
            mirror together (:func:`~ortho_lightning.data.download.download_mnist`).
        shuffle: shuffle the training loader.
        shuffle_seed: the training order of epoch ``e`` is a function of ``(shuffle_seed, e)``
            (:class:`~ortho_lightning.data.sampling.EpochSampler`); ``None``: the seed of
            Lightning's ``seed_everything`` (``$PL_GLOBAL_SEED``, which the CLI sets), else 0.
            The training loader is a :class:`~ortho_lightning.data.sampling.ResumableDataLoader`:
            a run resumed from any checkpoint, mid-epoch included, sees the batches the
            uninterrupted run saw.
        allow_subset: accept files holding fewer images than MNIST's 60,000 / 10,000 (a subset
            made from MNIST); ``False`` makes any other count an error naming the file.
    """

    num_classes: int = NUM_CLASSES

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 128,
        val_size: int = 5000,
        val_split: Literal["random", "last"] = "random",
        split_seed: int = 0,
        normalize: bool = True,
        mean: float = 0.1307,
        std: float = 0.3081,
        num_workers: int = 0,
        persistent_workers: bool = False,
        pin_memory: bool = False,
        download: bool = True,
        mirrors: list[str] | None = None,
        shuffle: bool = True,
        shuffle_seed: int | None = None,
        allow_subset: bool = False,
        deadline: float = DEFAULT_DEADLINE,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_int(owner, "batch_size", batch_size, minimum=1)
        check_int(owner, "shuffle_seed", shuffle_seed, minimum=0, optional=True)
        check_int(owner, "val_size", val_size, minimum=0)
        check_int(owner, "num_workers", num_workers, minimum=0)
        check_choice(owner, "val_split", val_split, VAL_SPLITS)
        check_number(owner, "std", std, positive=True)
        check_number(owner, "deadline", deadline, positive=True)
        if persistent_workers and num_workers == 0:
            fail(owner, "num_workers", "> 0 when persistent_workers=True", num_workers)
        self.mirrors = None if mirrors is None else check_mirrors(mirrors, owner)
        self.save_hyperparameters()
        self.data_dir = resolve_data_dir(data_dir)
        self.train_dataset: MNISTTensorDataset | None = None
        self.val_dataset: MNISTTensorDataset | None = None
        self.test_dataset: MNISTTensorDataset | None = None
        self._resumed_seed: int | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, without the batch dimension: ``(1, 28, 28)``."""
        return (1, IMAGE_SIZE, IMAGE_SIZE)

    def make_transform(self) -> PixelTransform:
        """The per-batch transform from ``uint8`` images to this module's inputs."""
        hp = self.hparams
        return PixelTransform(self.input_shape, hp.normalize, hp.mean, hp.std)

    # -- files ------------------------------------------------------------------------------

    def _missing_message(self, missing: Sequence[str], why: str) -> str:
        folders = f"{self.data_dir} and {self.data_dir / 'MNIST' / 'raw'}"
        return f"MNIST files missing: {', '.join(missing)}. Looked in {folders} ({why}). " + (
            how_to_provide(self.data_dir)
        )

    def prepare_data(self) -> None:
        """Download the missing IDX files into ``data_dir`` (once per node; no-op if present).

        Raises:
            DataError: when files are missing and ``download=False``, or the download failed.
        """
        _, missing = locate_mnist(self.data_dir)
        if not missing:
            return
        if not self.hparams.download:
            raise DataError(self._missing_message(missing, "download=False, so none was fetched"))
        download_mnist(self.data_dir, missing, mirrors=self.mirrors,
                       deadline=self.hparams.deadline)

    def _load(self, names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        found, missing = locate_mnist(self.data_dir, names)
        if missing:
            why = (
                "setup() never downloads; call prepare_data() first, as the Trainer does"
                if self.hparams.download
                else "download=False, so none was fetched"
            )
            raise DataError(self._missing_message(missing, why))
        split = "training" if tuple(names) == tuple(TRAIN_FILES) else "test"
        return load_mnist_split(found, split, self.hparams.allow_subset)

    # -- splits -----------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Decode the splits ``stage`` needs; calling it again is a no-op.

        ``fit``/``validate`` build train and validation from the training files, ``test`` and
        ``predict`` the test split from the test files; ``None`` builds all three.

        Raises:
            DataError: missing or corrupt files.
            ConfigurationError: ``val_size`` not smaller than the number of training images.
        """
        transform = self.make_transform()
        if stage in (None, "fit", "validate") and self.train_dataset is None:
            images, labels = self._load(TRAIN_FILES)
            train_idx, val_idx = self._split_indices(len(labels))
            self.val_dataset = MNISTTensorDataset(images[val_idx], labels[val_idx], transform)
            self.train_dataset = MNISTTensorDataset(
                images[train_idx], labels[train_idx], transform
            )
        if stage in (None, "test", "predict") and self.test_dataset is None:
            images, labels = self._load(TEST_FILES)
            self.test_dataset = MNISTTensorDataset(images, labels, transform)

    def _split_indices(self, n: int) -> tuple[slice | torch.Tensor, slice | torch.Tensor]:
        val_size = self.hparams.val_size
        if val_size >= n:
            fail("MNISTDataModule", "val_size", f"smaller than the {n} training images in "
                 f"{self.data_dir}", val_size)
        if self.hparams.val_split == "last":
            return slice(0, n - val_size), slice(n - val_size, n)
        generator = torch.Generator().manual_seed(self.hparams.split_seed)
        held_out = torch.zeros(n, dtype=torch.bool)
        held_out[torch.randperm(n, generator=generator)[:val_size]] = True
        # Both splits keep file order; which images are held out is set by the seed alone.
        return (~held_out).nonzero().squeeze(1), held_out.nonzero().squeeze(1)

    # -- loaders ----------------------------------------------------------------------------

    def _loader(self, dataset: MNISTTensorDataset | None, split: str, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise DataError(
                f"MNISTDataModule: the {split} split is not set up; call setup() (the Trainer "
                "does) before asking for its DataLoader"
            )
        hp = self.hparams
        options = dict(
            batch_size=hp.batch_size,
            num_workers=hp.num_workers,
            persistent_workers=hp.persistent_workers,
            pin_memory=hp.pin_memory,
        )
        if split != "train":
            return DataLoader(dataset, shuffle=shuffle, **options)
        sampler = EpochSampler(len(dataset), self.shuffle_seed, shuffle)
        return ResumableDataLoader(dataset, sampler=sampler, **options)

    @property
    def shuffle_seed(self) -> int:
        """The training order's seed: the ``shuffle_seed`` argument, else the seed of the run
        this one resumes (from the checkpoint), else ``$PL_GLOBAL_SEED``, else 0."""
        if self.hparams.shuffle_seed is not None:
            return self.hparams.shuffle_seed
        if self._resumed_seed is not None:
            return self._resumed_seed
        return int(os.environ.get(GLOBAL_SEED_ENV, 0))

    def state_dict(self) -> dict[str, int]:
        """Saved in every checkpoint: the training order's seed, so a resumed run keeps its
        order even when the resuming process is seeded differently."""
        return {"shuffle_seed": self.shuffle_seed}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Restore the seed :meth:`state_dict` saved (before the train loader is built)."""
        self._resumed_seed = state_dict.get("shuffle_seed")

    def train_dataloader(self) -> DataLoader:
        """Training batches, in an order set by ``(shuffle_seed, epoch)`` (file order when
        ``shuffle=False``); resumable mid-epoch (a
        :class:`~ortho_lightning.data.sampling.ResumableDataLoader`)."""
        return self._loader(self.train_dataset, "train", self.hparams.shuffle)

    def val_dataloader(self) -> DataLoader:
        """Validation batches (held-out training images), in order."""
        return self._loader(self.val_dataset, "validation", False)

    def test_dataloader(self) -> DataLoader:
        """The 10,000 test images, in file order."""
        return self._loader(self.test_dataset, "test", False)

    def predict_dataloader(self) -> DataLoader:
        """The test images, in file order, for ``trainer.predict``."""
        return self._loader(self.test_dataset, "test", False)


def check_split_size(path: Path, count: int, split: str, allow_subset: bool = False) -> None:
    """Raise :class:`DataError` naming ``path`` unless it holds MNIST's ``split`` size
    (:data:`SPLIT_SIZES`), or at most that many with ``allow_subset``."""
    expected = SPLIT_SIZES[split]
    if count == expected or (allow_subset and count < expected):
        return
    other = next(name for name in SPLIT_SIZES if name != split)
    hint = (
        f" (that is the size of MNIST's {other} split: are the {other} files copied under the "
        f"{split} names?)"
        if count == SPLIT_SIZES[other]
        else ""
    )
    advice = (
        "; pass allow_subset=True to use a smaller set made from MNIST"
        if count < expected and not allow_subset
        else ""
    )
    raise DataError(
        f"MNIST {split} file {path} holds {count:,} images, MNIST's {split} split has "
        f"{expected:,}{hint}{advice}"
    )
