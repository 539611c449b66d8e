"""Resume is exact with the defaults (issue 15): a run stopped at an epoch boundary or in the
middle of an epoch and resumed from its checkpoint ends with every weight and every optimizer
entry equal (0 difference) to the uninterrupted run's, with ``shuffle=True`` (the default).

Before, the train loader drew its order from the global RNG: 0.14 max weight difference at step
300 even from an epoch-boundary checkpoint, and a mid-epoch resume restarted the epoch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import TensorDataset

from ortho_lightning.data import MNISTDataModule, SeqMNISTDataModule
from ortho_lightning.data.sampling import EpochSampler, ResumableDataLoader
from ortho_lightning.models import MLPClassifier, RNNClassifier
from tests._ddp import run_ddp_script
from tests.data.conftest import make_tiny_mnist

BATCHES_PER_EPOCH, EPOCHS = 8, 3  # 40 images - 8 held out, batch 4

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_mnist(tmp_path_factory.mktemp("mnist"), n_train=40, n_test=8).folder


def _datamodule(tiny: Path, sequential: bool):
    options = dict(data_dir=str(tiny), batch_size=4, val_size=8, download=False, allow_subset=True)
    return SeqMNISTDataModule(mode="row", **options) if sequential else MNISTDataModule(**options)


class ReadsTrainLoaderAtStart(Callback):
    """Reads a batch of the trainer's own train loader at train start, as the spectrum monitors
    take their probe (a pass of its own over the loader, in every run, resumed or not)."""

    def on_train_start(self, trainer, pl_module):
        next(iter(trainer.train_dataloader))


def _fit(tiny, root: Path, sequential: bool = False, ckpt_path: Path | None = None, seed: int = 7):
    """Fit for EPOCHS epochs from a fresh process state (seed_everything, as the CLI does),
    saving a checkpoint after every step, at every epoch end and after every validation (at the
    end of each epoch); returns the trainer."""
    seed_everything(seed)
    if sequential:
        model = RNNClassifier(cell="lstm", hidden_size=8)
    else:
        model = MLPClassifier(depth=2, width=8)  # Adam: per-entry optimizer state
    probe = ReadsTrainLoaderAtStart()
    steps = ModelCheckpoint(root / "steps", "{step}", every_n_train_steps=1, save_top_k=-1)
    epochs = ModelCheckpoint(root / "epochs", "{epoch}", save_on_train_epoch_end=True, save_top_k=-1)
    after_val = ModelCheckpoint(root / "val", "{epoch}", monitor="val/loss", save_top_k=-1)  # default time
    trainer = Trainer(
        accelerator="cpu", max_epochs=EPOCHS, logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=root, callbacks=[probe, steps, epochs, after_val],
        num_sanity_val_steps=0, limit_val_batches=1,
    )
    trainer.fit(model, _datamodule(tiny, sequential), ckpt_path=ckpt_path)
    return trainer


def _assert_identical(resumed: Trainer, reference: Trainer) -> None:
    assert resumed.global_step == reference.global_step == EPOCHS * BATCHES_PER_EPOCH
    ours, theirs = resumed.lightning_module.state_dict(), reference.lightning_module.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), f"{key}: max diff {(ours[key] - theirs[key]).abs().max()}"
    opt, ref = resumed.optimizers[0].state_dict(), reference.optimizers[0].state_dict()
    assert opt["param_groups"] == ref["param_groups"] and opt["state"].keys() == ref["state"].keys()
    for index, entries in ref["state"].items():
        for name, value in entries.items():
            assert torch.equal(torch.as_tensor(opt["state"][index][name]), torch.as_tensor(value)), (index, name)


@pytest.mark.filterwarnings("ignore:The dirpath has changed")
@pytest.mark.parametrize("sequential", [False, True], ids=["mnist-mlp", "seqmnist-lstm"])
def test_resume_from_epoch_boundary_and_mid_epoch_is_bit_exact(tiny, tmp_path, sequential, monkeypatch):
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    reference = _fit(tiny, tmp_path / "reference", sequential)
    boundary = tmp_path / "reference" / "epochs" / "epoch=0.ckpt"
    middle = tmp_path / "reference" / "steps" / f"step={BATCHES_PER_EPOCH + 3}.ckpt"
    # the resuming process may be seeded differently: the order's seed comes from the checkpoint
    after_val = tmp_path / "reference" / "val" / "epoch=1.ckpt"
    for name, ckpt, seed in (("boundary", boundary, 99), ("middle", middle, 7), ("val", after_val, 7)):
        resumed = _fit(tiny, tmp_path / name, sequential, ckpt_path=ckpt, seed=seed)
        _assert_identical(resumed, reference)
    state = torch.load(middle, weights_only=True)["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert state == [{"epoch": 1, "batches": 3, "seed": 7}]  # weights_only-safe plain ints


def test_training_order_is_a_function_of_seed_and_epoch():
    a, b = EpochSampler(50, seed=3), EpochSampler(50, seed=3)
    first = list(a)
    assert first == list(b) and sorted(first) == list(range(50))
    second = list(a)  # a new pass is the next epoch
    assert second != first and a.epoch == 1
    b.set_epoch(1)
    assert list(b) == second
    b.set_epoch(0)
    assert list(b) == first  # (seed, epoch) alone, whatever came before
    assert list(EpochSampler(50, seed=4)) != first
    assert list(EpochSampler(5, shuffle=False)) == [0, 1, 2, 3, 4]
    assert a.order(5).tolist() == EpochSampler(50, seed=3).order(5).tolist()


def _remaining_after(loader_factory, k: int):
    """(the uninterrupted epoch's batches after the k-th, those of a fresh loader resumed from
    the state after k batches, that state), all in epoch 1 where the sampler has epochs."""
    def epoch_one():
        loader = loader_factory()
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(1)
        return loader

    expected = list(epoch_one())[k:]
    interrupted = epoch_one()
    iterator = iter(interrupted)
    for _ in range(k):
        next(iterator)
    state = interrupted.state_dict()
    resumed = loader_factory()
    resumed.load_state_dict(state)
    return expected, list(resumed), state


@pytest.mark.parametrize("num_workers", [0, 1])
def test_resumable_loader_continues_where_it_stopped(num_workers):
    data = TensorDataset(torch.arange(30))

    def factory():
        return ResumableDataLoader(data, batch_size=4, sampler=EpochSampler(30, seed=1),
                                   num_workers=num_workers)

    expected, got, state = _remaining_after(factory, 3)
    assert state == {"epoch": 1, "batches": 3, "seed": 1}
    assert len(got) == 5 and all(torch.equal(x[0], y[0]) for x, y in zip(got, expected))


def test_resumable_loader_over_another_sampler_discards_the_seen_batches():
    data = TensorDataset(torch.arange(10))
    expected, got, state = _remaining_after(lambda: ResumableDataLoader(data, batch_size=3), 2)
    assert state["batches"] == 2 and state["epoch"] is None
    assert [b[0].tolist() for b in got] == [b[0].tolist() for b in expected] == [[6, 7, 8], [9]]


@pytest.mark.parametrize("rank", [0, 1])
def test_under_ddp_each_rank_gets_its_shard_of_the_epoch_order_and_resumes_it(rank):
    """The loader Lightning builds under DDP (our sampler inside its DistributedSamplerWrapper),
    in one process: rank r's batches are its shard of the (seed, epoch) order, resumed exactly."""
    data = TensorDataset(torch.arange(20))

    def factory():
        sampler = DistributedSamplerWrapper(EpochSampler(20, seed=5), num_replicas=2, rank=rank,
                                            shuffle=False)
        return ResumableDataLoader(data, batch_size=3, sampler=sampler)

    expected, got, state = _remaining_after(factory, 2)
    order = EpochSampler(20, seed=5).order(1).tolist()
    shard = order[rank::2]
    assert [b[0].tolist() for b in expected] == [shard[6:9], shard[9:]]
    assert [b[0].tolist() for b in got] == [b[0].tolist() for b in expected]
    assert state["epoch"] == 1 and state["batches"] == 2


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_mid_epoch_resume_is_bit_exact_on_every_rank(tiny, tmp_path):
    """2 processes (gloo): resumed from step 6 (epoch 1, batch 2 of each rank's 4), both ranks
    end with the uninterrupted run's weights and Adam state."""
    run_ddp_script("resume_ddp.py", str(tmp_path), str(tiny), timeout=400)
    for rank in (0, 1):
        runs = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        reference, resumed = runs["reference"], runs["resumed"]
        assert resumed["step"] == reference["step"] == 8
        for key, value in reference["weights"].items():
            assert torch.equal(resumed["weights"][key], value), (rank, key)
        for index, entries in reference["optimizer"].items():
            for name, value in entries.items():
                assert torch.equal(resumed["optimizer"][index][name], value), (rank, index, name)
