"""The demo: train a short recipe end to end with the monitors on and W&B offline, then draw
pictures a person can look at.

    make demo                          # or: python scripts/demo.py [--steps 1000] [--out runs/demo]

Trains the depth-20 critical orthogonal tanh MLP of ``recipes/mnist_mlp_critical.yaml`` on MNIST
(``$ORTHO_LIGHTNING_DATA``, else ``./data``, downloaded if missing) for a few hundred steps,
evaluates it on the test set, and writes into ``--out``:

- ``spectra_init_vs_trained.png``: the squared singular values of the Jacobian of the critical
  stack (last hidden layer / first hidden layer) and the Fisher information's eigenvalues on one
  fixed batch: at init, after training, and for the Gaussian switch at init (same critical
  point, same matched input layer) -- orthogonal concentrated at 1, Gaussian over decades;
- ``training_curves.png``: training loss and validation accuracy against steps;
- ``wandb/offline-run-*/files/figures/``: the monitors' own spectrum-over-training panels (the same ones
  are in W&B);
- ``wandb/offline-run-*``: the W&B run (``wandb sync`` it to see it online), and ``csv/``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "mnist_mlp_critical.yaml"
RECIPE_Q_STAR = 1 / 64  # the recipe's init.init_args.q_star


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="training steps (default 1000)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "demo", help="output folder")
    parser.add_argument("--probe", type=int, default=32, help="samples in the spectra batch")
    return parser.parse_args(argv)


def _loggers(out: Path) -> str:
    return json.dumps([
        {"class_path": "lightning.pytorch.loggers.WandbLogger",
         "init_args": {"project": "ortho-lightning-demo", "name": "demo-mlp-tanh-d20-critical",
                       "save_dir": str(out)}},
        {"class_path": "lightning.pytorch.loggers.CSVLogger",
         "init_args": {"save_dir": str(out), "name": "csv", "version": ""}},
    ])


def _spectra(model, x):
    """Squared singular values of d(last hidden layer) / d(first hidden layer's activations)
    (per sample, pooled: the critical stack, as the recipe's monitor measures it) and the
    Fisher's non-zero eigenvalues, on the batch ``x``."""
    from ortho_lightning.spectra import fisher_eigenvalues, layer_jacobian_singular_values

    last = f"layers.{len(model.layers) - 1}"
    sv = layer_jacobian_singular_values(model, x, "layers.1", last)
    eig = fisher_eigenvalues(model, x, likelihood="categorical", method="exact")
    return (sv**2).flatten().numpy(), eig[eig > 1e-12 * eig.max()].numpy()


def _gaussian_twin(model, inputs):
    """A network shaped like ``model``, initialised like the recipe but with Gaussian weights
    (same critical point, same matched input layer, same inputs)."""
    import torch

    from ortho_lightning.init import initialize
    from ortho_lightning.models import MLPClassifier

    keys = ("depth", "width", "activation", "bias", "input_shape", "num_classes")
    twin = MLPClassifier(**{k: model.hparams[k] for k in keys})
    initialize(twin, "gaussian", gain="critical", activation="tanh", q_star=RECIPE_Q_STAR,
               input_q="match", inputs=inputs, generator=torch.Generator().manual_seed(0))
    return twin.eval()


def _plot_spectra(path: Path, init, trained, gaussian, steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, i, title, xlabel in [
        (axes[0], 0, "Jacobian, last / first hidden layer (19 critical layers)",
         "log10 squared singular value"),
        (axes[1], 1, "Fisher information (32 images)", "log10 eigenvalue"),
    ]:
        series = [
            (init[i], "orthogonal at init", "C0"),
            (trained[i], f"orthogonal after {steps} steps", "C1"),
            (gaussian[i], "Gaussian at init (same critical point)", "C3"),
        ]
        logs = [np.log10(np.maximum(v, 1e-30)) for v, _, _ in series]
        low = max(min(v.min() for v in logs), -12.0)
        bins = np.linspace(low, max(v.max() for v in logs) + 1e-9, 60)
        for v, (_, label, colour) in zip(logs, series):
            ax.hist(np.clip(v, low, None), bins=bins, alpha=0.55, label=label, density=True,
                    color=colour)
        if i == 0:
            ax.axvline(0.0, color="k", lw=0.8, ls="--")
        ax.set_title(title)
        ax.set_xlabel(f"{xlabel} (values below 1e{low:.0f} drawn at {low:.0f})")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
    fig.suptitle("depth-20 tanh MLP at the critical point q* = 1/64 with the input layer "
                 "matched to MNIST")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_curves(path: Path, metrics_csv: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float]]] = {}
    with metrics_csv.open() as f:
        for row in csv.DictReader(f):
            for key in ("train/loss_step", "val/acc", "val/loss"):
                if row.get(key):
                    series.setdefault(key, []).append((int(row["step"]), float(row[key])))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, keys, label in [(axes[0], ["train/loss_step", "val/loss"], "cross-entropy"),
                            (axes[1], ["val/acc"], "validation accuracy")]:
        for key in keys:
            if key in series:
                steps, values = zip(*series[key])
                ax.plot(steps, values, marker="o" if key.startswith("val") else None, label=key)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    # One intra-op thread unless the user says otherwise: these models are too small to gain
    # from more, and on a shared machine OpenMP oversubscription slows SVDs down 10-100x.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    from lightning.pytorch import Callback

    from ortho_lightning.callbacks._logging import run_dir
    from ortho_lightning.cli import cli_main, finish_wandb

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    every = max(1, args.steps // 3)
    cli = cli_main([
        "--config", str(RECIPE),
        f"--trainer.max_steps={args.steps}",
        f"--trainer.val_check_interval={every}", "--trainer.limit_val_batches=20",
        "--trainer.log_every_n_steps=10", f"--trainer.default_root_dir={out}",
        f"--trainer.logger={_loggers(out)}",
        f"--jacobian_monitor.init_args.every_n_steps={every}",
        "--jacobian_monitor.init_args.figure=true",
        "--fisher_monitor.init_args.every_n_epochs=null",
        f"--fisher_monitor.init_args.every_n_steps={every}",
        "--fisher_monitor.init_args.figure=true",
        f"--weight_monitor.init_args.every_n_steps={every}",
    ], run=False)

    class KeepInit(Callback):
        """Keeps a copy of the model as it starts training (after ``OrthogonalInit``)."""

        def on_train_start(self, trainer, pl_module):
            self.model = copy.deepcopy(pl_module).cpu().eval()

    keep = KeepInit()
    cli.trainer.callbacks.append(keep)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    test = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    files_dir = Path(run_dir(cli.trainer))
    wandb_dir = files_dir.parent
    finish_wandb(cli.trainer)

    from ortho_lightning.callbacks.init import first_training_inputs

    probe = next(iter(cli.datamodule.val_dataloader()))[0][: args.probe]
    trained = cli.model.cpu().eval()
    init_spectra = _spectra(keep.model, probe)
    gaussian = _spectra(_gaussian_twin(keep.model, first_training_inputs(cli.trainer, 256)), probe)
    _plot_spectra(out / "spectra_init_vs_trained.png", init_spectra,
                  _spectra(trained, probe), gaussian, cli.trainer.global_step)
    for label, (sv2, _) in [("orthogonal", init_spectra), ("gaussian", gaussian)]:
        print(f"at init, {label}: Jacobian squared singular values mean {sv2.mean():.3f}, "
              f"range [{sv2.min():.3g}, {sv2.max():.3g}]")
    _plot_curves(out / "training_curves.png", out / "csv" / "metrics.csv")
    elapsed = time.perf_counter() - start

    print(f"\ntrained {cli.trainer.global_step} steps in {elapsed:.0f} s; "
          f"test accuracy {test['test/acc']:.4f}, test loss {test['test/loss']:.4f}")
    print(f"pictures:  {out / 'spectra_init_vs_trained.png'}")
    print(f"           {out / 'training_curves.png'}")
    for png in sorted((files_dir / "figures").glob("*.png")):
        print(f"           {png}")
    print(f"W&B run (offline; `wandb sync {wandb_dir}` uploads it): {wandb_dir}")
    print(f"CSV metrics: {out / 'csv' / 'metrics.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
