"""A training order that a resumed run reproduces exactly: from an epoch-boundary checkpoint and
from one taken in the middle of an epoch.

- :class:`EpochSampler` draws epoch ``e``'s order from ``(seed, e)`` alone (a permutation from a
  generator seeded by both, or file order with ``shuffle=False``). Lightning calls ``set_epoch``
  at every epoch start, as it does for ``DistributedSampler``; used on its own, each new pass
  over it is the next epoch unless ``set_epoch`` was called in between.
- :class:`ResumableDataLoader` is a ``DataLoader`` with ``state_dict``/``load_state_dict`` (so
  Lightning saves its state in every checkpoint and restores it on a mid-epoch resume): the epoch
  and the number of batches handed out. After ``load_state_dict`` the next pass over the same
  epoch skips the batches already handed out, by index, before any sample is loaded.

A torch ``DataLoader(shuffle=True)`` has neither: its order comes from the global RNG, so a run
resumed even from an epoch boundary trains on other batches than the uninterrupted one, and
Lightning restarts an interrupted epoch from its first batch. torchdata's ``StatefulDataLoader``
solves the second problem too, at the cost of a dependency and its own worker machinery; the
two small classes here keep torch's ``DataLoader`` (measured: the same speed, see
``docs/guarantees.md``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ortho_lightning.validation import check_int

__all__ = ["EpochSampler", "ResumableDataLoader", "epoch_generator"]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, epoch)`` through numpy's ``SeedSequence`` (so
    nearby pairs such as (0, 1) and (1, 0) give unrelated streams)."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class EpochSampler(Sampler[int]):
    """Indices ``0..n-1`` in an order that is a function of ``(seed, epoch)``.

    Args:
        n: dataset size.
        seed: non-negative integer.
        shuffle: a seeded permutation per epoch; ``False``: ``0..n-1`` every epoch.

    Attributes:
        epoch: the epoch the next (or current) pass draws.
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True) -> None:
        check_int("EpochSampler", "n", n, minimum=0)
        check_int("EpochSampler", "seed", seed, minimum=0)
        self.n = n
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self._iterated = False  # a pass over self.epoch has started
        self._pinned = False  # set_epoch was called since the last pass started
        self._start = 0  # indices the next pass leaves out (a resumed epoch)

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch``'s order on the next pass."""
        self.epoch = int(epoch)
        self._pinned = True

    @property
    def next_epoch(self) -> int:
        """The epoch the next pass draws."""
        return self.epoch + 1 if self._iterated and not self._pinned else self.epoch

    def skip_next_pass(self, count: int) -> None:
        """Leave the first ``count`` indices of the next pass out (its epoch unchanged)."""
        self._start = int(count)

    def order(self, epoch: int) -> torch.Tensor:
        """Epoch ``epoch``'s indices, int64 ``(n,)``."""
        if not self.shuffle:
            return torch.arange(self.n)
        return torch.randperm(self.n, generator=epoch_generator(self.seed, epoch))

    def __iter__(self) -> Iterator[int]:
        self.epoch = self.next_epoch
        self._iterated, self._pinned = True, False
        start, self._start = self._start, 0
        return iter(self.order(self.epoch)[start:].tolist())

    def __len__(self) -> int:
        return self.n


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` whose position Lightning saves and restores: ``state_dict()`` is
    ``{"epoch", "batches", "seed"}`` (the sampler's epoch and seed, the batches handed out in
    that epoch; plain ints, ``weights_only``-safe).

    Built like any ``DataLoader``. Over an :class:`EpochSampler` the skipped batches' indices are
    dropped before any sample is loaded; over another sampler (Lightning wraps it in a
    ``DistributedSampler`` under DDP, where the count is per rank, which is what each rank skips)
    they are loaded and discarded.
    """

    _handed_out = 0
    _skip = 0
    _skip_epoch: int | None = None

    def __iter__(self) -> Iterator[Any]:
        return self._resumed_iterator()

    def _resumed_iterator(self) -> Iterator[Any]:
        # a generator: nothing (workers, the sampler's pass) starts before the first batch is
        # asked for, i.e. after Lightning's set_epoch. Every pass over the epoch stopped in
        # resumes it (a callback reading a probe batch at train start makes a pass of its own).
        sampler = self.sampler
        epoch = sampler.next_epoch if isinstance(sampler, EpochSampler) else getattr(sampler, "epoch", None)
        if epoch != self._skip_epoch:
            self._skip, self._skip_epoch = 0, None  # another epoch: from its first batch
        skip = self._skip
        if epoch is None:
            self._skip = 0  # a sampler without epochs: resume one pass
        by_index = skip and isinstance(self.sampler, EpochSampler) and self.batch_size is not None
        if by_index:
            self.sampler.skip_next_pass(skip * self.batch_size)
        batches = super().__iter__()
        self._handed_out = skip
        if skip and not by_index:
            for _ in range(skip):
                next(batches, None)
        for batch in batches:
            self._handed_out += 1
            yield batch

    def state_dict(self) -> dict[str, int | None]:
        """The position in the current epoch (Lightning stores it in every checkpoint)."""
        return {
            "epoch": getattr(self.sampler, "epoch", None),
            "batches": self._handed_out,
            "seed": getattr(self.sampler, "seed", None),
        }

    def load_state_dict(self, state_dict: dict[str, int | None]) -> None:
        """Continue from ``state_dict``: passes over its epoch skip its batches."""
        epoch = state_dict.get("epoch")
        if epoch is not None and hasattr(self.sampler, "set_epoch"):
            if isinstance(self.sampler, EpochSampler) and state_dict.get("seed") is not None:
                self.sampler.seed = int(state_dict["seed"])  # the interrupted run's order
            self.sampler.set_epoch(epoch)
        self._skip, self._skip_epoch = int(state_dict.get("batches") or 0), epoch
        self._handed_out = self._skip
