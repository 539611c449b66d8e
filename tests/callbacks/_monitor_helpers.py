"""A tiny model, its data, and readers of the CSV and TensorBoard loggers' files, shared by the
monitor tests (the offline W&B run is read by tests/_wandb.py)."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.plugins import MixedPrecision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

IN, WIDTH, CLASSES = 6, 8, 3


class TinyNet(LightningModule):
    """6 -> 8 -> 8 -> 3 tanh MLP with optional dropout (so training consumes the RNG)."""

    def __init__(self, lr: float = 0.1, dropout: float = 0.0) -> None:
        super().__init__()
        self.lr = lr
        self.layers = nn.Sequential(
            nn.Linear(IN, WIDTH), nn.Tanh(), nn.Dropout(dropout), nn.Linear(WIDTH, WIDTH), nn.Tanh()
        )
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", F.cross_entropy(self(x), y))

    def predict_step(self, batch, batch_idx):
        return self(batch[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class TinyNetWithFeatures(TinyNet):
    """Like the recipe models: ``spectrum_output_fn`` is the deep part without the readout."""

    @property
    def spectrum_output_fn(self):
        return self.layers


class DeepLinear(TinyNetWithFeatures):
    """``depth`` WIDTH x WIDTH Linear layers (features), then the head; lr = 0."""

    def __init__(self, depth: int = 2, bias: bool = False) -> None:
        super().__init__(lr=0.0)
        self.save_hyperparameters()
        self.layers = nn.Sequential(*[nn.Linear(WIDTH, WIDTH, bias=bias) for _ in range(depth)])


def loader(
    n: int = 64, batch_size: int = 8, seed: int = 0, shuffle: bool = False, features: int = IN
) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    data = TensorDataset(x, torch.randint(0, CLASSES, (n,), generator=g))
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle)


#: GradScaler start for float16 runs: a power of two far from 1 (a gradient added before or after
#: unscaling then differs by 256x), small enough that these tiny models never overflow
FP16_INIT_SCALE = 2.0**8


def trainer(root: Path, callbacks, logger=False, **kwargs) -> Trainer:
    """A CPU Trainer for tests. ``precision="16-mixed"`` means float16 autocast with a GradScaler,
    Lightning's CUDA 16-mixed code path run on the CPU: Lightning itself swaps CPU 16-mixed for
    bf16-mixed, so the ``MixedPrecision`` plugin is passed directly."""
    if kwargs.get("precision") == "16-mixed":
        del kwargs["precision"]
        scaler = torch.amp.GradScaler("cpu", init_scale=FP16_INIT_SCALE)
        kwargs["plugins"] = [MixedPrecision("16-mixed", "cpu", scaler=scaler)]
    options = dict(
        accelerator="cpu",
        devices=1,
        default_root_dir=str(root),
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1,
    )
    options.update(kwargs)
    return Trainer(**options)


def dense_jacobian_svals(fn, x: torch.Tensor) -> torch.Tensor:
    """Reference: per-sample Jacobians by torch.autograd.functional.jacobian, then SVD; (N, k)."""
    rows = []
    for xi in x:
        jac = torch.autograd.functional.jacobian(lambda v: fn(v[None])[0], xi)
        rows.append(torch.linalg.svdvals(jac.reshape(jac.shape[0], -1)))
    return torch.stack(rows)


# ------------------------------------------------------------------ reading loggers' files
def csv_metrics(path: str | Path) -> dict[str, dict[int, float]]:
    """``{key: {step: value}}`` from a CSVLogger ``metrics.csv``."""
    out: dict[str, dict[int, float]] = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key != "step" and value not in ("", None):
                    out.setdefault(key, {})[int(row["step"])] = float(value)
    return out


def tensorboard_events(log_dir: str | Path):
    """An EventAccumulator loaded with every scalar, histogram and image of ``log_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    acc.Reload()
    return acc
