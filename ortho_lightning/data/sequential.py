"""Sequential MNIST: each image read as a sequence, for recurrent networks.

``mode="pixel"`` reads the 784 pixels one at a time (sequences ``(784, 1)``), ``mode="row"``
one row of 28 pixels at a time (``(28, 28)``). ``permute=True`` is *permuted* sequential
MNIST: one fixed permutation of the 784 pixels, drawn from ``permutation_seed``, applied
identically to every split (before rows are formed in row mode).
"""

from __future__ import annotations

from typing import Literal

import torch

from ortho_lightning.data.download import DEFAULT_DEADLINE
from ortho_lightning.data.mnist import IMAGE_SIZE, MNISTDataModule, PixelTransform
from ortho_lightning.validation import check_choice, check_int

MODES = ("pixel", "row")
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE


def pixel_permutation(seed: int) -> torch.Tensor:
    """The fixed permutation of the 784 pixel positions for ``seed``: int64 ``(784,)``.

    Step ``t`` of a permuted sequence holds the (row-major) pixel ``permutation[t]``.
    """
    return torch.randperm(NUM_PIXELS, generator=torch.Generator().manual_seed(seed))


class SeqMNISTDataModule(MNISTDataModule):
    """MNIST as sequences: batches ``(x, y)``, ``x`` float32 ``(B, 784, 1)`` (pixel mode) or
    ``(B, 28, 28)`` (row mode, time along dimension 1), ``y`` int64 ``(B,)``.

    Args:
        mode: ``"pixel"`` (784 steps of 1 pixel) or ``"row"`` (28 steps of 28 pixels).
        permute: apply the fixed pixel permutation of ``permutation_seed`` (permuted MNIST).
        permutation_seed: seed of that permutation; the permutation itself is
            :attr:`permutation` (int64 ``(784,)``, ``None`` when ``permute=False``).
        Every other argument is :class:`~ortho_lightning.data.MNISTDataModule`'s.
    """

    def __init__(
        self,
        mode: Literal["pixel", "row"] = "row",
        permute: bool = False,
        permutation_seed: int = 0,
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
        check_choice("SeqMNISTDataModule", "mode", mode, MODES)
        check_int("SeqMNISTDataModule", "permutation_seed", permutation_seed)
        super().__init__(
            data_dir=data_dir,
            batch_size=batch_size,
            val_size=val_size,
            val_split=val_split,
            split_seed=split_seed,
            normalize=normalize,
            mean=mean,
            std=std,
            num_workers=num_workers,
            persistent_workers=persistent_workers,
            pin_memory=pin_memory,
            download=download,
            mirrors=mirrors,
            shuffle=shuffle,
            shuffle_seed=shuffle_seed,
            allow_subset=allow_subset,
            deadline=deadline,
        )
        self.permutation: torch.Tensor | None = (
            pixel_permutation(permutation_seed) if permute else None
        )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sequence, without the batch dimension: ``(784, 1)`` or ``(28, 28)``."""
        return (NUM_PIXELS, 1) if self.hparams.mode == "pixel" else (IMAGE_SIZE, IMAGE_SIZE)

    def make_transform(self) -> PixelTransform:
        """The per-batch transform: scale, permute, normalise, reshape to sequences."""
        hp = self.hparams
        return PixelTransform(self.input_shape, hp.normalize, hp.mean, hp.std, self.permutation)
