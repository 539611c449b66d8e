"""Fit a tiny MLP with OrthogonalInit(seed=None) under DDP (2 CPU processes, gloo).

Usage: ``init_ddp.py OUT_DIR``. Each rank seeds its global RNG differently (so the default
torch init differs between ranks) and writes ``OUT_DIR/rank<r>.pt`` with the weights before
and right after ``OrthogonalInit.setup`` (before DDP wraps the model and broadcasts).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from lightning.pytorch import Callback

from ortho_lightning.callbacks import OrthogonalInit
from tests.callbacks._monitor_helpers import TinyNet, loader, trainer


class Snapshot(Callback):
    def __init__(self, key: str, store: dict) -> None:
        self.key, self.store = key, store

    def setup(self, trainer, pl_module, stage):
        self.store[self.key] = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def main(out: Path) -> None:
    # Lightning sets LOCAL_RANK in the re-executed child; the launcher process is rank 0
    torch.manual_seed(100 + int(os.environ.get("LOCAL_RANK", "0")))
    model = TinyNet()
    store: dict = {}
    callbacks = [Snapshot("before", store), OrthogonalInit(gain=1.1), Snapshot("after_init", store)]
    fit = trainer(out, callbacks, devices=2, strategy="ddp", max_steps=2)
    fit.fit(model, loader())
    torch.save(store, out / f"rank{fit.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
