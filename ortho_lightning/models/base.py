"""The classification base every recipe model shares: loss, accuracy, logging, optimizers.

A subclass builds its layers and implements :meth:`ClassificationModule.features` (input ->
the representation the linear ``head`` reads); the base does the rest:

- cross-entropy loss and torchmetrics accuracy, logged as ``train/loss``, ``train/acc``,
  ``val/loss``, ``val/acc``, ``test/loss``, ``test/acc`` (epoch means for val and test);
- the optimizer and learning-rate scheduler from config, as LightningCLI's
  ``OptimizerCallable`` / ``LRSchedulerCallable`` (in YAML a ``class_path`` + ``init_args``;
  in Python e.g. ``functools.partial(torch.optim.SGD, lr=0.1)``);
- ``spectrum_output_fn``: what the Jacobian monitor treats as "the output" (the features, i.e.
  the deep part without the linear readout), so a user writes no glue.

Argument checks run in ``__init__``, so a bad config fails before training starts, with an
error naming the key, the accepted values and the value received.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from ortho_lightning.activations import Activation, Elementwise
from ortho_lightning.exceptions import ActivationError, ConfigurationError

STAGES = ("train", "val", "test")


def check_int(owner: str, key: str, value: Any, minimum: int = 1) -> int:
    """Return ``value`` if it is an integer >= ``minimum``, else raise a ConfigurationError
    naming ``owner.key``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(
            f"{owner}: {key} must be an integer >= {minimum}, got {value!r}"
        )
    return value


def check_choice(owner: str, key: str, value: Any, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a ConfigurationError naming
    ``owner.key``, the accepted values and the value received."""
    if value not in choices:
        raise ConfigurationError(
            f"{owner}: {key} must be one of {list(choices)}, got {value!r}"
        )
    return value


def check_shape(owner: str, key: str, value: Any, ndim: Sequence[int]) -> tuple[int, ...]:
    """Return ``value`` as a tuple of positive ints with a length in ``ndim``."""
    try:
        shape = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) not in ndim or any(s < 1 for s in shape):
        raise ConfigurationError(
            f"{owner}: {key} must be {' or '.join(str(n) for n in ndim)} positive integers "
            f"(the shape of one sample), got {value!r}"
        )
    return shape


def make_activation(owner: str, key: str, activation: str | Activation) -> Elementwise:
    """The activation module for ``activation``, with an error naming ``owner.key``."""
    try:
        return Elementwise(activation)
    except ActivationError as err:
        raise ActivationError(f"{owner}: {key}: {err}") from None


class ClassificationModule(LightningModule):
    """Base class: a classifier ``head(features(x))`` trained with cross-entropy.

    Args:
        num_classes: number of classes (the datamodule's ``num_classes``; the CLI links it).
        optimizer: a callable ``params -> Optimizer`` (default Adam, lr 1e-3).
        lr_scheduler: a callable ``optimizer -> LRScheduler``, or ``None`` for a constant rate.
    """

    def __init__(
        self,
        num_classes: int = 10,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.num_classes = check_int(owner, "num_classes", num_classes, minimum=2)
        if not callable(optimizer):
            raise ConfigurationError(
                f"{owner}: optimizer must be a callable params -> Optimizer "
                f"(a torch.optim class or a partial of one), got {optimizer!r}"
            )
        if lr_scheduler is not None and not callable(lr_scheduler):
            raise ConfigurationError(
                f"{owner}: lr_scheduler must be None or a callable optimizer -> LRScheduler, "
                f"got {lr_scheduler!r}"
            )
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.metrics = torch.nn.ModuleDict(
            {f"{stage}_acc": MulticlassAccuracy(num_classes, average="micro") for stage in STAGES}
        )

    # -- the model ------------------------------------------------------------------------
    def features(self, x: Tensor) -> Tensor:
        """The representation the linear head reads, shape (N, features). Subclasses implement."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Logits, shape (N, num_classes)."""
        return self.head(self.features(x))

    @property
    def spectrum_output_fn(self) -> Callable[[Tensor], Tensor]:
        """What the Jacobian monitor measures as "the output": :meth:`features` (the deep
        part, without the linear readout whose rank is only ``num_classes``)."""
        return self.features

    # -- training -------------------------------------------------------------------------
    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        metric = self.metrics[f"{stage}_acc"]
        metric(logits.detach(), y)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True,
                 batch_size=y.shape[0])
        self.log(f"{stage}/acc", metric, on_step=on_step, on_epoch=True, prog_bar=True,
                 batch_size=y.shape[0])
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return self(x).argmax(-1)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        config: dict[str, Any] = {"scheduler": scheduler}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = "val/loss"
        return {"optimizer": optimizer, "lr_scheduler": config}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the checkpoint ``weights_only``-safe: optimizer / scheduler callables given in
        Python (a class or a partial) are stored by their dotted name."""
        hparams = checkpoint.get("hyper_parameters")
        if isinstance(hparams, dict):
            for key in ("optimizer", "lr_scheduler"):
                if key in hparams and callable(hparams[key]):
                    hparams[key] = _describe(hparams[key])


def _describe(fn: Callable) -> str:
    """A readable, plain-string description of a class or a partial of one."""
    func = getattr(fn, "func", fn)
    name = f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', repr(func))}"
    kwargs = getattr(fn, "keywords", None)
    if kwargs:
        name += "(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"
    return name
