"""Overhead of the spectrum monitors on the training wall time of the MLP recipe.

The model is the MLP recipe's shape (784-256x8-10 tanh, ``MLPClassifier``), trained with Adam
on random MNIST-shaped data (batch 128, so an MNIST epoch is 469 steps). Printed side by side,
from one process:

- the time of one training step and of one measurement of each monitor (default arguments);
- the steady-state overhead of each monitor at its default cadence,
  cost / (cadence in steps x step time), and of the three together: the number the defaults
  promise to keep under 5%;
- a real check: the same ``--steps`` trained with no monitor and with the three at their
  default cadence (this includes the three fit-start measurements, a fixed cost that a short
  run does not amortise).

    .venv/bin/python benchmarks/bench_monitors.py [--steps 469] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("WANDB_MODE", "offline")

import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, TensorDataset

from ortho_lightning.callbacks import (
    FisherSpectrumMonitor,
    JacobianSpectrumMonitor,
    WeightSpectrumMonitor,
)
from ortho_lightning.models import MLPClassifier

STEPS_PER_EPOCH = 469  # MNIST, batch 128


def data(steps: int, batch: int = 128) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    n = steps * batch
    x = torch.rand(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True)


def monitors() -> list:
    """The three monitors with their default arguments."""
    return [JacobianSpectrumMonitor(), FisherSpectrumMonitor(), WeightSpectrumMonitor()]


def fit_seconds(steps: int, callbacks: list) -> float:
    torch.manual_seed(0)
    model = MLPClassifier(depth=8, width=256, activation="tanh")
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = data(steps)
    start = time.perf_counter()
    trainer.fit(model, loader)
    return time.perf_counter() - start


def measurement_seconds(repeats: int = 3) -> dict[str, float]:
    """Median seconds of one measurement of each monitor (default arguments) on the model."""
    model = MLPClassifier(depth=8, width=256, activation="tanh")
    probe = torch.rand(64, 1, 28, 28)
    out = {}
    for monitor in monitors():
        monitor.probe = probe[: monitor.probe_size]
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            monitor.compute(model, monitor.probe)
            times.append(time.perf_counter() - start)
        out[type(monitor).__name__] = sorted(times)[len(times) // 2]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=469, help="optimizer steps (469 = an MNIST epoch)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    per_call = measurement_seconds()
    fit_seconds(20, [])  # warm up
    base = fit_seconds(args.steps, [])
    with_monitors = fit_seconds(args.steps, monitors())
    step = base / args.steps

    print(f"MLP 784-256x8-10 tanh, batch 128, {args.threads} threads; one step {1000 * step:.1f} ms")
    print(f"{'monitor':<26}{'ms/call':>9}{'= steps':>9}{'cadence':>9}{'overhead':>10}")
    total = 0.0
    for monitor in monitors():
        name = type(monitor).__name__
        cadence = monitor.every_n_steps or STEPS_PER_EPOCH * monitor.every_n_epochs
        overhead = per_call[name] / (cadence * step)
        total += overhead
        print(
            f"{name:<26}{1000 * per_call[name]:>9.0f}{per_call[name] / step:>9.1f}"
            f"{cadence:>9d}{100 * overhead:>9.2f}%"
        )
    print(f"{'three together (steady state)':<53}{100 * total:>9.2f}%")
    print(f"{'run of ' + str(args.steps) + ' steps':<26}{'seconds':>9}{'ratio':>9}")
    print(f"{'  no monitors':<26}{base:>9.2f}{1.0:>9.3f}")
    print(f"{'  3 monitors, defaults':<26}{with_monitors:>9.2f}{with_monitors / base:>9.3f}")


if __name__ == "__main__":
    main()
