"""Experiment 4: does orthogonal init still help as width grows (Huang, Wang, Tao & Zhao 2021,
"On the neural tangent kernel of deep networks with orthogonal initialization")?

In the NTK regime (infinite width, small steps) orthogonal and Gaussian init give the same
kernel and the same training dynamics; the paper finds the advantage of orthogonal init where
the regime breaks down (large step sizes, large depth). Here: critical tanh MLP classifiers of
MNIST at fixed depth, several widths, a small and a large SGD step, orthogonal vs Gaussian;
the training loss and the relative change of the weights over a fixed budget (small relative
change = lazy / NTK-like training). Pure torch, no Lightning.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ortho_lightning.experiments.fisher import critical_mlp, mnist_tensors, sgd_step


def train_width_lr(depth: int, width: int, weights: str, lr: float, sigma_b: float = 0.01,
                   steps: int = 200, batch_size: int = 64, n_train: int = 4096,
                   log_every: int = 20, data_dir: str | None = None,
                   seed: int = 0) -> list[dict[str, Any]]:
    """SGD on a fixed MNIST subset; rows every ``log_every`` steps with ``train_loss`` (mean
    since the last row), ``full_loss`` (on all ``n_train`` images) and ``weight_change``
    (||theta - theta_0|| / ||theta_0|| over the weight matrices)."""
    x, y, _ = mnist_tensors(n_train, 1, data_dir)
    model = critical_mlp(depth, width, weights, sigma_b, seed)
    start = [p.detach().clone() for p in model.parameters() if p.dim() == 2]
    norm0 = math.sqrt(sum(float(p.pow(2).sum()) for p in start))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    rows, losses = [], []
    for step in range(steps + 1):
        if step % log_every == 0 or step == steps:
            with torch.no_grad():
                full = nn.functional.cross_entropy(model(x), y).item()
                now = [p for p in model.parameters() if p.dim() == 2]
                change = math.sqrt(sum(float((p - p0).pow(2).sum()) for p, p0 in zip(now, start)))
            row = {"step": step, "full_loss": full, "weight_change": change / norm0}
            if losses:
                row["train_loss"] = sum(losses) / len(losses)
            rows.append(row)
            losses = []
            if not math.isfinite(full):
                break
        if step == steps:
            break
        losses.append(sgd_step(model, opt, x, y, n_train, batch_size, gen))
    return rows
