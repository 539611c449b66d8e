"""Overhead of the spectrum monitors on the training wall time of the MLP and RNN recipes.

Models of the recipes' shapes, trained with Adam on random MNIST-shaped data, batch 128 (an
MNIST epoch is 469 steps): the MLP 784-256x8-10 tanh (``MLPClassifier``) and the row-mode
128-unit tanh RNN on 28 rows of 28 pixels (``RNNClassifier``). For each, from one process:

- the time of one bare training step (median of 95) and of one measurement of each monitor
  (default arguments, median of 7): medians, because on a shared machine other processes add
  bursts of time to any single run;
- the steady-state overhead of each monitor at its default cadence,
  cost / (cadence in steps x step time), and of the three together: the number the defaults
  promise to keep under 5%;
- a real check: ``--steps`` steps trained with no monitor and with the three at their default
  cadence (this includes the three fit-start measurements, a fixed cost a short run does not
  amortise; fastest of ``--repeats`` alternating runs of each). On a busy machine this
  wall-clock ratio is noise-dominated; the steady-state estimate above is the robust number.

    .venv/bin/python benchmarks/bench_monitors.py [--models mlp rnn] [--steps 300] [--repeats 3]
        [--device cuda]

``--recipe`` instead measures the monitors of ``recipes/mnist_mlp_critical.yaml`` with the
arguments that file gives them (read from it, figures and cadence included) on the recipe's
model (784-256x20-10 tanh MLP, orthogonal critical init, SGD lr 0.01 momentum 0.9, batch 128,
430 steps an epoch, offline W&B logger receiving scalars, histograms and figures; MNIST-shaped
random data): ``--recipe-epochs`` epochs trained with no monitor, with the recipe's monitors,
and with the same at ``log_spaced=False``, interleaved round by round (``--rounds``). Process
CPU seconds, not wall time (the machine is shared). The table gives each run's overhead, the
CPU cost of one measurement of each monitor inside the run (logging included), and from those
the overhead over the recipe's full 6 epochs (2580 steps).

    .venv/bin/python benchmarks/bench_monitors.py --recipe [--recipe-epochs 1] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "offline")

import torch
from _device import add_device_argument, describe, resolve_device, synchronize
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, TensorDataset

from ortho_lightning.callbacks import (
    FisherSpectrumMonitor,
    JacobianSpectrumMonitor,
    OrthogonalInit,
    WeightSpectrumMonitor,
)
from ortho_lightning.models import MLPClassifier, RNNClassifier

STEPS_PER_EPOCH = 469  # MNIST, batch 128
#: where the models train and the monitors measure (``--device``; the --recipe mode is CPU only)
DEVICE = {"device": torch.device("cpu")}


MODELS = {
    "mlp": (lambda: MLPClassifier(depth=8, width=256, activation="tanh"), (1, 28, 28)),
    "rnn": (lambda: RNNClassifier(cell="rnn", hidden_size=128, input_shape=(28, 28)), (28, 28)),
}


def data(shape: tuple[int, ...], steps: int, batch: int = 128) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    n = steps * batch
    x = torch.rand(n, *shape, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True)


def monitors() -> list:
    """The three monitors with their default arguments."""
    return [JacobianSpectrumMonitor(), FisherSpectrumMonitor(), WeightSpectrumMonitor()]


def fit_seconds(model_name: str, steps: int, callbacks: list) -> float:
    torch.manual_seed(0)
    build, shape = MODELS[model_name]
    trainer = Trainer(
        accelerator="gpu" if DEVICE["device"].type == "cuda" else "cpu",
        devices=1,
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = data(shape, steps)
    model = build()
    start = time.perf_counter()
    trainer.fit(model, loader)
    return time.perf_counter() - start


def step_seconds(model_name: str, steps: int = 100) -> float:
    """Median seconds of one bare training step (forward, backward, Adam) at batch 128: no
    Lightning overhead, so the overheads computed from it are upper bounds."""
    build, shape = MODELS[model_name]
    dev = DEVICE["device"]
    model = build().to(dev)
    optimizer = torch.optim.Adam(model.parameters())
    times = []
    for x, y in data(shape, steps):
        x, y = x.to(dev), y.to(dev)
        synchronize(dev)
        start = time.perf_counter()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        synchronize(dev)
        times.append(time.perf_counter() - start)
    return statistics.median(times[5:])


def measurement_seconds(model_name: str, repeats: int = 7) -> dict[str, float]:
    """Median of ``repeats`` measurements of each monitor (default arguments) on the model,
    after one warm-up call."""
    build, shape = MODELS[model_name]
    dev = DEVICE["device"]
    model = build().to(dev)
    probe = torch.rand(64, *shape).to(dev)
    out = {}
    for monitor in monitors():
        monitor.probe = probe[: monitor.probe_size]
        monitor.compute(model, monitor.probe)  # warm-up
        times = []
        for _ in range(repeats):
            synchronize(dev)
            start = time.perf_counter()
            monitor.compute(model, monitor.probe)
            synchronize(dev)
            times.append(time.perf_counter() - start)
        out[type(monitor).__name__] = statistics.median(times)
    return out


def report(model_name: str, steps: int, repeats: int) -> None:
    per_call = measurement_seconds(model_name)
    step = step_seconds(model_name)
    fit_seconds(model_name, 10, [])  # warm up
    base, with_monitors = float("inf"), float("inf")
    for _ in range(repeats):  # alternate the two runs, keep the fastest of each
        base = min(base, fit_seconds(model_name, steps, []))
        with_monitors = min(with_monitors, fit_seconds(model_name, steps, monitors()))
    print(f"\n{model_name}: one training step {1000 * step:.1f} ms (median of 95)")
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
    print(f"{'three together, steady state':<53}{100 * total:>9.2f}%")
    print(f"{'run of ' + str(steps) + ' steps':<26}{'seconds':>9}{'ratio':>9}")
    print(f"{'  no monitors':<26}{base:>9.2f}{1.0:>9.3f}")
    print(f"{'  3 monitors, defaults':<26}{with_monitors:>9.2f}{with_monitors / base:>9.3f}")


RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "mnist_mlp_critical.yaml"
RECIPE_STEPS_PER_EPOCH = 430  # MNISTDataModule: 55,000 training images (5,000 held out), batch 128


def recipe_monitors(log_spaced: bool | None = None) -> list:
    """The monitors of ``recipes/mnist_mlp_critical.yaml``, with the arguments it gives them
    (read from the file, so this follows the recipe); ``log_spaced`` overrides its cadence."""
    import importlib

    import yaml

    config = yaml.safe_load(RECIPE.read_text())
    monitors = []
    for key in ("jacobian_monitor", "fisher_monitor", "weight_monitor"):
        module, _, name = config[key]["class_path"].rpartition(".")
        kwargs = dict(config[key].get("init_args", {}))
        if log_spaced is not None and kwargs.get("every_n_steps"):
            kwargs["log_spaced"] = log_spaced
        monitors.append(getattr(importlib.import_module(module), name)(**kwargs))
    return monitors


def timed(monitor):
    """``monitor`` with its measurements' process CPU seconds summed in ``cpu_seconds``."""
    measure = monitor._measure
    monitor.cpu_seconds = 0.0

    def wrapped(trainer, pl_module) -> None:
        start = time.process_time()
        measure(trainer, pl_module)
        monitor.cpu_seconds += time.process_time() - start

    monitor._measure = wrapped
    return monitor


def recipe_fit_cpu_seconds(epochs: int, monitors: list, save_dir: str) -> float:
    """Process CPU seconds of ``trainer.fit`` of the MLP recipe's model for ``epochs``
    MNIST-sized epochs, with the recipe's init callback, an offline W&B logger and ``monitors``
    (CPU time, not wall time: on a shared machine other processes' load barely moves it)."""
    from lightning.pytorch.loggers import WandbLogger

    torch.manual_seed(0)
    model = MLPClassifier(
        depth=20,
        width=256,
        activation="tanh",
        optimizer=lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9),
    )
    init = OrthogonalInit(scheme="orthogonal", gain="critical", activation="tanh", sigma_b=0.0)
    logger = WandbLogger(save_dir=save_dir, offline=True, project="bench-monitors")
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        limit_val_batches=0,
        logger=logger,
        log_every_n_steps=50,
        callbacks=[init, *monitors],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = data((1, 28, 28), RECIPE_STEPS_PER_EPOCH)
    start = time.process_time()
    trainer.fit(model, loader)
    seconds = time.process_time() - start
    logger.experiment.finish()
    return seconds


def recipe_count(monitor, epochs: int) -> int:
    """Measurements ``monitor`` makes in ``epochs`` epochs of 469 steps (fit start included)."""
    steps = range(1, epochs * RECIPE_STEPS_PER_EPOCH + 1)
    count = int(monitor.measure_at_fit_start) + sum(map(monitor.is_cadence_step, steps))
    return count + (epochs // monitor.every_n_epochs if monitor.every_n_epochs else 0)


def recipe_report(epochs: int, rounds: int, full_epochs: int = 6) -> None:
    variants = {
        "no monitors": lambda: [],
        "the recipe's monitors, as configured": recipe_monitors,
        "same, log_spaced=False": lambda: recipe_monitors(log_spaced=False),
    }
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    per_call: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as save_dir:
        for _ in range(rounds):  # interleaved, so drifts in the machine's state hit all alike
            for name, build in variants.items():
                monitors = [timed(m) for m in build()]
                cpu[name].append(recipe_fit_cpu_seconds(epochs, monitors, save_dir))
                per_call[name] = [m.cpu_seconds / max(1, len(m.measured_steps)) for m in monitors]
    base = min(cpu["no monitors"])
    step = base / (epochs * RECIPE_STEPS_PER_EPOCH)
    print(
        f"\nMLP recipe (784-256x20-10 tanh, SGD, batch 128, offline W&B logger): {epochs} "
        f"epoch(s) = {epochs * RECIPE_STEPS_PER_EPOCH} steps, {rounds} interleaved rounds, process CPU "
        f"seconds (fastest of the rounds); bare: {1000 * step:.1f} ms a step"
    )
    print(
        f"| variant | CPU s | overhead | CPU ms a measurement (jacobian / fisher / weights) | "
        f"measurements in {full_epochs} epochs | {full_epochs}-epoch overhead |"
    )
    print("|---|---|---|---|---|---|")
    for name, build in variants.items():
        monitors = build()
        if not monitors:
            print(f"| {name} | {base:.1f} | | | | |")
            continue
        counts = [recipe_count(m, full_epochs) for m in monitors]
        cost = sum(c * t for c, t in zip(counts, per_call[name]))
        full = cost / (step * full_epochs * RECIPE_STEPS_PER_EPOCH)
        print(
            f"| {name} | {min(cpu[name]):.1f} | {100 * (min(cpu[name]) / base - 1):.1f}% | "
            f"{' / '.join(f'{1000 * t:.0f}' for t in per_call[name])} | "
            f"{' / '.join(map(str, counts))} | {100 * full:.1f}% |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["mlp", "rnn"])
    parser.add_argument("--steps", type=int, default=300, help="steps of the real check")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each kind (fastest kept)")
    parser.add_argument("--recipe", action="store_true", help="the MLP recipe's cadence instead")
    parser.add_argument("--recipe-epochs", type=int, default=1, help="epochs of each --recipe run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of --recipe")
    add_device_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    DEVICE["device"] = resolve_device(args.device)
    if args.recipe and DEVICE["device"].type != "cpu":
        raise SystemExit("--recipe measures process CPU seconds: run it with --device cpu")
    if args.recipe:
        recipe_report(args.recipe_epochs, args.rounds)
        return
    print(f"batch 128, device {describe(DEVICE['device'])}, {args.threads} threads, "
          f"an epoch = {STEPS_PER_EPOCH} steps")
    for name in args.models:
        report(name, args.steps, args.repeats)


if __name__ == "__main__":
    main()
