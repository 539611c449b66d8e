"""Both constraint callbacks under DDP (2 CPU processes, gloo), float64, gradient accumulation 2.

One module trains three copies of TinyRNN side by side on the same batches: ``con`` under
OrthogonalConstraint (with dynamic trivialization), ``reg`` under OrthogonalRegularizer, and
``hand`` with the regularizer's penalty added to its loss by hand (same start as ``reg``).
One DDP launch checks both callbacks (DDP tests are expensive on 2 cores).

Usage: ``constraint_ddp.py OUT_DIR``. Each rank writes ``OUT_DIR/rank<r>.pt`` with the start and
final state dicts; the trainer writes ``OUT_DIR/last.ckpt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule

from ortho_lightning.callbacks import OrthogonalConstraint, OrthogonalRegularizer
from ortho_lightning.constraints import selected_tensors, total_penalty
from ortho_lightning.selection import ModuleSelector
from tests.callbacks.test_constraint import TinyRNN, loader, make_trainer

LAM, GAIN = 0.5, 1.2


class Trio(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.con = TinyRNN()
        self.reg = TinyRNN()
        self.hand = TinyRNN()
        self.hand.load_state_dict(self.reg.state_dict())

    def training_step(self, batch, batch_idx):
        x, y = batch
        targets = ModuleSelector.build(["rnn", "encoder"])
        penalty = total_penalty(selected_tensors(self.hand, targets), GAIN, "frobenius", "sum")
        losses = [F.cross_entropy(m(x), y) for m in (self.con, self.reg, self.hand)]
        return sum(losses) + LAM * penalty

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.03)


def main(out: Path) -> None:
    torch.manual_seed(0)
    model = Trio().double()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    callbacks = [
        OrthogonalConstraint(include=["con.rnn", "con.encoder"], gain=GAIN,
                             update_base_every_n_steps=2, log_every_n_steps=None),
        OrthogonalRegularizer(LAM, GAIN, "frobenius", "sum", include=["reg.rnn", "reg.encoder"],
                              log_every_n_steps=None),
    ]
    trainer = make_trainer(out, callbacks, devices=2, strategy="ddp", max_steps=6,
                           accumulate_grad_batches=2, precision="64-true")
    trainer.fit(model, loader(n=64, dtype=torch.float64))
    trainer.save_checkpoint(out / "last.ckpt")
    final = {k: v.detach().clone() for k, v in model.state_dict().items()}
    final["con.rnn.weight_hh_l0"] = model.con.rnn.weight_hh_l0.detach()
    final["con.encoder.weight"] = model.con.encoder.weight.detach()
    torch.save({"start": start, "final": final}, out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
