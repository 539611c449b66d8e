"""Resume under DDP (2 CPU processes, gloo) with the default data module.

Usage: ``resume_ddp.py OUT_DIR MNIST_DIR``. Fits an MLP for 2 epochs on the tiny MNIST in
MNIST_DIR, saving a checkpoint after every step, then fits again from the mid-epoch checkpoint
of step 6 (epoch 1, batch 2 of each rank's 4); each rank writes ``OUT_DIR/rank<r>.pt`` with the
final weights and optimizer state of both fits.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from ortho_lightning.data import MNISTDataModule
from ortho_lightning.models import MLPClassifier


def fit(out: Path, name: str, data: Path, ckpt_path: Path | None = None) -> Trainer:
    seed_everything(3)
    trainer = Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, logger=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=0, default_root_dir=out / name,
        callbacks=[ModelCheckpoint(out / name, "{step}", every_n_train_steps=1, save_top_k=-1)],
    )
    datamodule = MNISTDataModule(data_dir=str(data), batch_size=4, val_size=8, download=False,
                                 allow_subset=True)
    trainer.fit(MLPClassifier(depth=2, width=8), datamodule, ckpt_path=ckpt_path)
    return trainer


def state(trainer: Trainer) -> dict:
    return {
        "weights": {k: v.detach().clone() for k, v in trainer.lightning_module.state_dict().items()},
        "optimizer": trainer.optimizers[0].state_dict()["state"],
        "step": trainer.global_step,
    }


def main(out: Path, data: Path) -> None:
    reference = fit(out, "reference", data)
    resumed = fit(out, "resumed", data, ckpt_path=out / "reference" / "step=6.ckpt")
    torch.save({"reference": state(reference), "resumed": state(resumed)},
               out / f"rank{reference.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
