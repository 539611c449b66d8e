"""Cost of keeping the recurrent matrix orthogonal: one Adam training step of a 128-unit tanh RNN
+ linear head (10 classes), sequential-MNIST shapes, ratios to an unconstrained step, one run.

Modes: ``pixel`` (784 steps x 1 input, batch 32) and ``row`` (28 steps x 28 inputs, batch 128).
Variants, all on ``weight_hh_l0`` only:

- ``unconstrained``
- ``geotorch``: ``geotorch.orthogonal`` as registered, plain forward
- ``geotorch+cached``: the same inside ``torch.nn.utils.parametrize.cached()``
- ``torch``: ``torch.nn.utils.parametrizations.orthogonal`` (matrix_exp), plain forward
- ``torch+cached``
- ``OrthogonalConstraint``: the callback's hooks driven around a bare loop (setup, batch start,
  before optimizer step, batch end), i.e. its own cost without Lightning's loop overhead; expm
  through ``skew_expm`` (one real symmetric eigh, exact gradient), and with ``triv="cayley"``
- ``OrthogonalRegularizer``: same for the soft penalty (frobenius, weight 1e-2)

Steps of all variants are interleaved round by round (so load drift on shared cores hits all of
them alike). On a shared machine wall time measures the neighbours as much as the code, so the
table's main number is the process CPU time of a step (one intra-op thread by default, so CPU
time is the work done); the median wall-time ratio is shown beside it.

    python benchmarks/bench_constraints.py [--rounds 7] [--threads 1] [--modes row pixel] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from types import SimpleNamespace

import geotorch
import torch
import torch.nn.functional as F
from _device import add_device_argument, describe, resolve_device, synchronize
from lightning.pytorch import LightningModule
from torch import nn
from torch.nn.utils import parametrizations, parametrize

from ortho_lightning.callbacks import OrthogonalConstraint, OrthogonalRegularizer

HIDDEN, CLASSES = 128, 10
MODES = {"pixel": (784, 1, 32), "row": (28, 28, 128)}  # steps, inputs, batch


class Net(LightningModule):
    def __init__(self, inputs: int) -> None:
        super().__init__()
        self.rnn = nn.RNN(inputs, HIDDEN, nonlinearity="tanh", batch_first=True)
        self.head = nn.Linear(HIDDEN, CLASSES)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


class Variant:
    """A model, its optimizer and the way one step is taken."""

    def __init__(self, name: str, inputs: int, device: torch.device) -> None:
        torch.manual_seed(0)
        self.name = name
        self.device = device
        self.model = Net(inputs).to(device)
        self.cached = name.endswith("+cached")
        self.callback = None
        self.trainer = SimpleNamespace(global_step=0, accumulate_grad_batches=1, global_rank=0,
                                       loggers=[])
        if name.startswith("geotorch"):
            geotorch.orthogonal(self.model.rnn, "weight_hh_l0")
        elif name.startswith("torch"):
            parametrizations.orthogonal(self.model.rnn, "weight_hh_l0")
        elif name.startswith("OrthogonalConstraint"):
            triv = "cayley" if "cayley" in name else "expm"
            self.callback = OrthogonalConstraint(include="rnn", triv=triv, log_every_n_steps=None)
        elif name == "OrthogonalRegularizer":
            self.callback = OrthogonalRegularizer(1e-2, include="rnn", log_every_n_steps=None)
        if self.callback is not None:
            self.callback.setup(self.trainer, self.model, "fit")
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)

    def step(self, x, y) -> tuple[float, float]:
        cb, trainer, model = self.callback, self.trainer, self.model
        synchronize(self.device)
        start, cpu_start = time.perf_counter(), time.process_time()
        self.opt.zero_grad()
        if cb is not None:
            cb.on_train_batch_start(trainer, model, (x, y), 0)
        with parametrize.cached() if self.cached else torch.enable_grad():
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        if cb is not None:
            cb.on_after_backward(trainer, model)
            cb.on_before_optimizer_step(trainer, model, self.opt)
        self.opt.step()
        trainer.global_step += 1
        if cb is not None:
            cb.on_train_batch_end(trainer, model, loss, (x, y), 0)
        synchronize(self.device)
        return time.perf_counter() - start, time.process_time() - cpu_start


VARIANTS = [
    "unconstrained",
    "geotorch",
    "geotorch+cached",
    "torch",
    "torch+cached",
    "OrthogonalConstraint",
    "OrthogonalConstraint(cayley)",
    "OrthogonalRegularizer",
]


def bench(mode: str, rounds: int, device: torch.device) -> list[tuple[str, float, float]]:
    steps, inputs, batch = MODES[mode]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, steps, inputs, generator=g).to(device)
    y = torch.randint(0, CLASSES, (batch,), generator=g).to(device)
    variants = [Variant(name, inputs, device) for name in VARIANTS]
    for v in variants:  # warm-up
        v.step(x, y)
    times = {v.name: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            times[v.name].append(v.step(x, y))
    wall = {n: statistics.median(w for w, _ in t) for n, t in times.items()}
    cpu = {n: statistics.median(c for _, c in t) for n, t in times.items()}
    return [
        (n, cpu[n], cpu[n] / cpu["unconstrained"], wall[n] / wall["unconstrained"]) for n in times
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--modes", nargs="+", default=["row", "pixel"], choices=sorted(MODES))
    add_device_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    warnings.filterwarnings("ignore", message=".*self.log.*")  # no Trainer in this bare loop
    print(f"torch {torch.__version__}, geotorch {getattr(geotorch, '__version__', '?')}, "
          f"device {describe(device)}, {args.threads} thread(s), {args.rounds} rounds, medians"
          + (" (on CUDA the CPU columns are the host's time; the wall ratio is the one to read)"
             if device.type == "cuda" else ""))
    header = " | ".join(f"{m} CPU ms | {m} CPU ratio | {m} wall ratio" for m in args.modes)
    print(f"| variant | {header} |")
    print("|---|" + "---|---|---|" * len(args.modes))
    results = {m: bench(m, args.rounds, device) for m in args.modes}
    for i, name in enumerate(VARIANTS):
        cells = []
        for m in args.modes:
            _, t, r, w = results[m][i]
            cells += [f"{1e3 * t:.1f}", f"{r:.2f}x", f"{w:.2f}x"]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
