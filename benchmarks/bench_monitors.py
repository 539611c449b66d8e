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
and with the same at ``log_spaced=False`` (``--variants``), interleaved round by round
(``--rounds``). Process CPU seconds, not wall time (the machine is shared). The table gives
each variant's overhead end to end (fastest run with over fastest run without), the CPU spent
inside the monitors' fit hooks over the rest of the same run (median of the rounds: the
overhead without the noise of comparing two whole runs), the CPU cost of one measurement of
each monitor inside the run (logging and figures included), and from those the overhead over
the recipe's full 6 epochs (2580 steps).

    .venv/bin/python benchmarks/bench_monitors.py --recipe [--recipe-epochs 1] [--rounds 2]
        [--variants recipe unspaced]
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


#: the monitors' Lightning hooks during fit: everything they add to a run (set-up and settings,
#: the probe, the cadence checks, the measurements with their logging and figures)
MONITOR_HOOKS = ("setup", "on_train_start", "on_train_batch_end", "on_train_epoch_end")


def timed(monitor):
    """``monitor`` with its measurements' process CPU seconds summed in ``cpu_seconds`` and
    those of all its fit hooks (measurements included) in ``hook_seconds``."""
    monitor.cpu_seconds = monitor.hook_seconds = 0.0

    def wrap(fn, attribute):
        def wrapped(*args, **kwargs):
            start = time.process_time()
            out = fn(*args, **kwargs)
            setattr(monitor, attribute, getattr(monitor, attribute) + time.process_time() - start)
            return out

        return wrapped

    monitor._measure = wrap(monitor._measure, "cpu_seconds")
    for hook in MONITOR_HOOKS:
        setattr(monitor, hook, wrap(getattr(monitor, hook), "hook_seconds"))
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
    """Measurements ``monitor`` makes in ``epochs`` epochs of the recipe (fit start included)."""
    steps = range(1, epochs * RECIPE_STEPS_PER_EPOCH + 1)
    count = int(monitor.measure_at_fit_start) + sum(map(monitor.is_cadence_step, steps))
    return count + (epochs // monitor.every_n_epochs if monitor.every_n_epochs else 0)


RECIPE_VARIANTS = {
    "none": ("no monitors", lambda: []),
    "recipe": ("the recipe's monitors, as configured", recipe_monitors),
    "unspaced": ("same, log_spaced=False", lambda: recipe_monitors(log_spaced=False)),
}


def recipe_report(epochs: int, rounds: int, variants: list[str], full_epochs: int = 6) -> None:
    """Runs ``variants`` (keys of :data:`RECIPE_VARIANTS`; "none" always) interleaved round by
    round and prints each round's CPU seconds, then the table of the fastest rounds.

    Two overheads per variant: measured end to end, (fastest run with) / (fastest run without)
    - 1, which carries the noise of two whole runs on a shared machine; and from inside the run,
    the CPU seconds spent in the monitors' fit hooks over the rest of that run (median of the
    rounds), which carries only the hooks' own noise."""
    chosen = {key: RECIPE_VARIANTS[key] for key in ["none", *[v for v in variants if v != "none"]]}
    cpu: dict[str, list[float]] = {key: [] for key in chosen}
    share: dict[str, list[float]] = {key: [] for key in chosen}
    per_call: dict[str, list[float]] = {key: [] for key in chosen}
    with tempfile.TemporaryDirectory() as save_dir:
        for round_ in range(rounds):  # interleaved, so drifts in the machine's state hit all alike
            for key, (_, build) in chosen.items():
                monitors = [timed(m) for m in build()]
                seconds = recipe_fit_cpu_seconds(epochs, monitors, save_dir)
                hooks = sum(m.hook_seconds for m in monitors)
                cpu[key].append(seconds)
                share[key].append(hooks / (seconds - hooks))
                per_call[key] = [m.cpu_seconds / max(1, len(m.measured_steps)) for m in monitors]
                print(f"round {round_ + 1}: {key}: {seconds:.2f} CPU s, of which monitor hooks {hooks:.2f}",
                      flush=True)
    base = min(cpu["none"])
    step = base / (epochs * RECIPE_STEPS_PER_EPOCH)
    print(
        f"\nMLP recipe (784-256x20-10 tanh, SGD, batch 128, offline W&B logger): {epochs} "
        f"epoch(s) = {epochs * RECIPE_STEPS_PER_EPOCH} steps, {rounds} interleaved rounds, process CPU "
        f"seconds (fastest of the rounds); bare: {1000 * step:.1f} ms a step"
    )
    print(
        f"| variant | CPU s | overhead, end to end | monitor hooks / rest of the run | CPU ms a "
        f"measurement (jacobian / fisher / weights) | measurements in {full_epochs} epochs | "
        f"{full_epochs}-epoch overhead, from the costs |"
    )
    print("|---|---|---|---|---|---|---|")
    for key, (name, build) in chosen.items():
        monitors = build()
        if not monitors:
            print(f"| {name} | {base:.1f} | | | | | |")
            continue
        counts = [recipe_count(m, full_epochs) for m in monitors]
        cost = sum(c * t for c, t in zip(counts, per_call[key]))
        full = cost / (step * full_epochs * RECIPE_STEPS_PER_EPOCH)
        print(
            f"| {name} | {min(cpu[key]):.1f} | {100 * (min(cpu[key]) / base - 1):.1f}% | "
            f"{100 * statistics.median(share[key]):.1f}% | "
            f"{' / '.join(f'{1000 * t:.0f}' for t in per_call[key])} | "
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
    parser.add_argument("--variants", nargs="+", choices=sorted(RECIPE_VARIANTS),
                        default=["recipe", "unspaced"], help="--recipe runs besides 'none'")
    add_device_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    DEVICE["device"] = resolve_device(args.device)
    if args.recipe and DEVICE["device"].type != "cpu":
        raise SystemExit("--recipe measures process CPU seconds: run it with --device cpu")
    if args.recipe:
        recipe_report(args.recipe_epochs, args.rounds, args.variants)
        return
    print(f"batch 128, device {describe(DEVICE['device'])}, {args.threads} threads, "
          f"an epoch = {STEPS_PER_EPOCH} steps")
    for name in args.models:
        report(name, args.steps, args.repeats)


if __name__ == "__main__":
    main()
