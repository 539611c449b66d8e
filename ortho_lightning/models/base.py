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

import contextlib
import functools
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from ortho_lightning.activations import Activation, Elementwise, get_activation
from ortho_lightning.exceptions import ConfigurationError
from ortho_lightning.validation import check_int, fail

STAGES = ("train", "val", "test")


def check_shape(owner: str, key: str, value: Any, ndim: Sequence[int]) -> tuple[int, ...]:
    """Return ``value`` as a tuple of positive ints with a length in ``ndim`` (a ConfigurationError
    in :mod:`ortho_lightning.validation`'s format otherwise)."""
    try:
        shape = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) not in ndim or any(s < 1 for s in shape):
        fail(owner, key, f"{' or '.join(str(n) for n in ndim)} positive integers "
             "(the shape of one sample)", value)
    return shape


def make_activation(owner: str, key: str, activation: str | Activation) -> Elementwise:
    """The activation module for ``activation``; an ActivationError names ``owner`` and ``key``."""
    get_activation(activation, owner, key)
    return Elementwise(activation)


class ClassificationModule(LightningModule):
    """Base class: a classifier ``head(features(x))`` trained with cross-entropy.

    Args:
        num_classes: number of classes (the datamodule's ``num_classes``; the CLI links it).
        optimizer: a callable ``params -> Optimizer`` (default Adam, lr 1e-3), or its
            ``{"class_path", "init_args"}`` dict (what checkpoints store, so
            ``load_from_checkpoint`` rebuilds it from a plain-Trainer or a CLI checkpoint).
        lr_scheduler: a callable ``optimizer -> LRScheduler`` (or its dict), or ``None`` for a
            constant rate.
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
        optimizer = from_class_config(owner, "optimizer", optimizer)
        lr_scheduler = from_class_config(owner, "lr_scheduler", lr_scheduler)
        if not callable(optimizer):
            raise ConfigurationError(
                f"{owner}: optimizer must be a callable params -> Optimizer (a torch.optim "
                f"class or a partial of one, or its {{'class_path', 'init_args'}} dict), got "
                f"{optimizer!r}{_UNNAMED_HINT if isinstance(optimizer, str) else ''}"
            )
        if lr_scheduler is not None and not callable(lr_scheduler):
            raise ConfigurationError(
                f"{owner}: lr_scheduler must be None or a callable optimizer -> LRScheduler "
                f"(or its {{'class_path', 'init_args'}} dict), got {lr_scheduler!r}"
                f"{_UNNAMED_HINT if isinstance(lr_scheduler, str) else ''}"
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
        """Keep the checkpoint ``weights_only``-safe and reloadable: optimizer / scheduler
        callables given in Python (a class or a partial of one) are stored as the
        ``{"class_path", "init_args"}`` dict LightningCLI writes, which ``__init__`` (and so
        ``load_from_checkpoint``) turns back into the callable."""
        hparams = checkpoint.get("hyper_parameters")
        if isinstance(hparams, dict):
            for key in ("optimizer", "lr_scheduler"):
                if key in hparams and callable(hparams[key]):
                    hparams[key] = to_class_config(hparams[key])


#: appended to the error when a checkpoint holds a callable it could only describe
_UNNAMED_HINT = (
    " (a checkpoint stores a callable that is not a class or a keyword partial of one as this "
    "description only; pass it again: load_from_checkpoint(path, optimizer=...))"
)


def to_class_config(fn: Callable) -> dict[str, Any] | str:
    """``{"class_path": "torch.optim.sgd.SGD", "init_args": {"lr": 0.1}}`` for an importable
    class or function, or a keyword-only ``functools.partial`` of one (the form LightningCLI
    saves and :func:`from_class_config` reads); any other callable becomes a readable
    description string, which cannot be turned back into the callable."""
    func = getattr(fn, "func", fn)
    args = getattr(fn, "args", ())
    module, qualname = getattr(func, "__module__", None), getattr(func, "__qualname__", None)
    name = f"{module}.{qualname}" if module and qualname else repr(func)
    kwargs = dict(getattr(fn, "keywords", None) or {})
    if not args and qualname and "." not in qualname and "<" not in qualname:
        with contextlib.suppress(ImportError):
            if getattr(importlib.import_module(module), qualname, None) is func:
                return {"class_path": name, "init_args": kwargs}
    if kwargs:
        name += "(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"
    return name


def from_class_config(owner: str, key: str, value: Any) -> Any:
    """``functools.partial(cls, **init_args)`` for a ``{"class_path", "init_args"}`` mapping
    (as checkpoints and configs store it); any other ``value`` unchanged."""
    if not (isinstance(value, Mapping) and "class_path" in value):
        return value
    path = str(value["class_path"])
    module_name, _, attr = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        fail(owner, f"{key}.class_path", f"an importable 'module.Class' path ({err})", path)
    return functools.partial(cls, **dict(value.get("init_args") or {}))
