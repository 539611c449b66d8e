"""MNIST and sequential MNIST as LightningDataModules, read from the standard IDX files.

``MNISTDataModule`` gives images ``(1, 28, 28)``; ``SeqMNISTDataModule`` gives sequences
``(784, 1)`` (pixel mode) or ``(28, 28)`` (row mode), optionally with a fixed pixel
permutation. Files come from ``data_dir`` (default ``$ORTHO_LIGHTNING_DATA``, else ``./data``)
or are downloaded with md5 checks (:mod:`ortho_lightning.data.download`).
"""

from ortho_lightning.data.idx import read_idx, write_idx
from ortho_lightning.data.mnist import MNISTDataModule
from ortho_lightning.data.sampling import EpochSampler, ResumableDataLoader
from ortho_lightning.data.sequential import SeqMNISTDataModule

__all__ = [
    "EpochSampler",
    "MNISTDataModule",
    "ResumableDataLoader",
    "SeqMNISTDataModule",
    "read_idx",
    "write_idx",
]
