"""``OrthogonalConstraint``: keep selected weights on ``gain`` times the orthogonal/Stiefel
manifold during ``fit`` (geotorch, through :func:`ortho_lightning.constraints.orthogonalize`).

When things happen:

- ``setup("fit")``: the parametrizations are registered, before a checkpoint is restored and
  before the optimizer is created (so the optimizer holds the unconstrained tensors). Other stages
  leave the model alone: a plain checkpoint loads into a plain model.
- every training batch runs inside ``torch.nn.utils.parametrize.cached()`` (``cache=True``): each
  constrained weight is computed once per forward/backward, not once per access or time step. The
  cache is closed in ``on_before_optimizer_step`` (after backward, before the update) or at the
  batch end, whichever comes first; validation epochs run inside one cache too.
- every ``update_base_every_n_steps`` optimizer steps: geotorch's dynamic trivialization
  (:func:`ortho_lightning.constraints.update_base`).
- every ``log_every_n_steps`` steps: ``ortho/defect/<module>.<block>`` per matrix block, with
  ``pl_module.log`` (as the regularizer's penalty, which says why not the monitors' adapter).
- ``on_fit_end`` with ``remove_at_fit_end=True``: the parametrizations are removed, the model keeps
  the constrained values as plain parameters (for inference and export).

Checkpoints keep two things: ``checkpoint["state_dict"]`` holds *plain* weights (``rnn.weight_hh_l0``,
loadable into a bare model), and the callback's own state holds the parametrized tensors
(unconstrained tensor and manifold base point), restored over the projected plain weights on
resume so training continues exactly. (``ModelCheckpoint(save_weights_only=True)`` skips
callbacks' ``on_save_checkpoint``; such files keep the parametrized keys.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn
from torch.nn.utils import parametrize
from torch.optim import Optimizer
from typing_extensions import override

from ortho_lightning.callbacks._logging import log_settings
from ortho_lightning.constraints.config import ConstraintConfig
from ortho_lightning.constraints.orthogonalize import (
    orthogonalize,
    remove_orthogonalization,
    selected_tensors,
    update_base,
)
from ortho_lightning.constraints.parametrization import check_finite, is_orthogonalized
from ortho_lightning.constraints.penalties import block_defects
from ortho_lightning.constraints.state import split_state_dict
from ortho_lightning.exceptions import ConfigurationError, SelectionError
from ortho_lightning.matrices import RECURRENT_CHOICES
from ortho_lightning.selection import ModuleSelector
from ortho_lightning.validation import check_bool, check_choice, check_int, renamed_argument


class CachedParametrizations:
    """An open/close pair around ``torch.nn.utils.parametrize.cached()`` for hooks that start and
    end in different callback methods. Idempotent."""

    def __init__(self) -> None:
        self._ctx = None

    def open(self) -> None:
        if self._ctx is None:
            self._ctx = parametrize.cached()
            self._ctx.__enter__()

    def close(self) -> None:
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            ctx.__exit__(None, None, None)


def log_defects(pl_module: LightningModule, entries, gain: float) -> dict[str, torch.Tensor]:
    """Log ``ortho/defect/<module>.<block>`` for every block of ``entries`` and return them."""
    defects = block_defects(entries, gain)
    for key, value in defects.items():
        pl_module.log(f"ortho/defect/{key}", value, on_step=True, on_epoch=False)
    return defects


class OrthogonalConstraint(Callback):
    """Constrain the selected weights to ``gain * Q`` (``Q`` orthogonal/Stiefel, or with singular
    values in ``[1 - relax, 1 + relax]``) during ``fit``.

    Args:
        include: module name patterns (``fnmatch``) to include; ``None``: every module of
            ``types``. (``targets=`` is its deprecated name, until 0.3.0.)
        exclude: name patterns to leave out.
        types: module classes to consider (default: Linear, ConvNd, RNN/LSTM/GRU and cells).
        gain: the modules see ``gain * Q``.
        triv: ``"expm"`` or ``"cayley"`` (geotorch trivialization) or a callable. ``expm``
            reaches every rotation; ``cayley`` misses those with eigenvalue -1 but is cheaper: on a
            128-unit RNN over 28 rows a step costs about 1.3x / 1.17x an unconstrained one
            (``benchmarks/bench_constraints.py``).
        relax: ``None`` (exact) or ``lam`` in (0, 1): geotorch's almost-orthogonal matrices.
        manifold: a :data:`~ortho_lightning.constraints.MANIFOLDS` name; ``None`` follows
            ``relax`` (``"stiefel"``, or ``"almost_orthogonal"`` with it).
        init: ``"current"`` (project the current weights) or ``"haar"`` (fresh Haar sample).
        recurrent: for RNN/LSTM/GRU, ``"hh"`` constrains the hidden-to-hidden matrices only,
            ``"all"`` also the input matrices. Each gate block on its own.
        update_base_every_n_steps: dynamic trivialization cadence in optimizer steps (``None``:
            never; the base point stays where it started).
        remove_at_fit_end: leave plain parameters holding the constrained values after ``fit``.
        cache: compute each constrained weight once per training batch (``parametrize.cached``).
        log_every_n_steps: per-block defect logging cadence (``None``: off).

    ``gain``, ``triv``, ``relax``, ``manifold`` and ``init`` are keyword-only and checked into one
    :class:`~ortho_lightning.constraints.ConstraintConfig` (:attr:`config`), the object
    :func:`~ortho_lightning.constraints.orthogonalize` takes.
    """

    #: deprecated spellings of arguments (CHANGELOG): accepted, not logged as settings
    deprecated_arguments: ClassVar[tuple[str, ...]] = ("targets",)

    def __init__(
        self,
        include: str | Sequence[str] | None = None,
        exclude: str | Sequence[str] | None = None,
        types: Sequence[type[nn.Module]] | None = None,
        *,
        gain: float = 1.0,
        triv: str | Callable = "expm",
        relax: float | None = None,
        manifold: str | None = None,
        init: str = "current",
        recurrent: str = "hh",
        update_base_every_n_steps: int | None = None,
        remove_at_fit_end: bool = False,
        cache: bool = True,
        log_every_n_steps: int | None = 50,
        targets: str | Sequence[str] | None = None,
    ) -> None:
        owner = type(self).__name__
        include = renamed_argument(owner, "targets", "include", targets, include)
        #: the checked constraint options, passed to every ``orthogonalize`` call
        self.config = ConstraintConfig(
            gain=gain, triv=triv, relax=relax, manifold=manifold, init=init, owner=owner
        )
        check_choice(owner, "recurrent", recurrent, RECURRENT_CHOICES)
        check_int(owner, "update_base_every_n_steps", update_base_every_n_steps, 1, optional=True)
        check_int(owner, "log_every_n_steps", log_every_n_steps, 1, optional=True)
        check_bool(owner, "remove_at_fit_end", remove_at_fit_end)
        check_bool(owner, "cache", cache)
        self.selector = ModuleSelector.build(include, exclude, types, owner=owner)
        self.recurrent = recurrent
        self.update_base_every_n_steps = update_base_every_n_steps
        self.remove_at_fit_end = remove_at_fit_end
        self.cache = cache
        self.log_every_n_steps = log_every_n_steps
        self._entries: list[tuple[str, nn.Module, str]] = []
        self._model: nn.Module | None = None
        self._cached = CachedParametrizations()
        self._last_step = -1
        self._finite_grads: list[torch.Tensor | None] = []

    # the checked options, read back from the config (log_settings records them by these names)
    gain = property(lambda self: self.config.gain)
    triv = property(lambda self: self.config.triv)
    relax = property(lambda self: self.config.relax)
    manifold = property(lambda self: self.config.manifold)
    init = property(lambda self: self.config.init)

    @property
    @override
    def state_key(self) -> str:
        return (
            f"{type(self).__qualname__}{{include={list(self.selector.include)}, "
            f"exclude={list(self.selector.exclude)}, recurrent={self.recurrent!r}}}"
        )

    @property
    def constrained(self) -> list[str]:
        """``"<module>.<tensor>"`` names currently constrained by this callback."""
        return [f"{m}.{t}" if m else t for m, _, t in self._entries]

    # -- registration -----------------------------------------------------------------------
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        log_settings(trainer, self)  # in the logger's config
        self._model = pl_module
        entries = selected_tensors(pl_module, self.selector, self.recurrent)
        if not entries:
            raise SelectionError(
                f"OrthogonalConstraint selected no weight matrix in {type(pl_module).__name__} "
                f"(include={list(self.selector.include)}, exclude={list(self.selector.exclude)}, "
                f"types={[t.__name__ for t in self.selector.types]})"
            )
        mine = [(m, t) for _, m, t in self._entries]  # from an earlier fit of this callback
        for name, module, tensor in entries:
            if is_orthogonalized(module, tensor) and not any(
                m is module and t == tensor for m, t in mine
            ):
                raise ConfigurationError(
                    f"OrthogonalConstraint: '{f'{name}.' if name else ''}{tensor}' is already "
                    "constrained (by another OrthogonalConstraint or by orthogonalize()); a weight "
                    "takes one constraint: make the callbacks' include/exclude select disjoint "
                    "weights, or call remove_orthogonalization first"
                )
        for name, module, tensor in entries:
            if not is_orthogonalized(module, tensor):  # a second fit on the same model keeps them
                orthogonalize(module, tensor, config=self.config,
                              name=f"{name}.{tensor}" if name else tensor)
        self._entries = entries

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._cached.close()
        if self.remove_at_fit_end:
            for _, module, tensor in self._entries:
                remove_orthogonalization(module, tensor)
            self._entries = []

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._cached.close()

    # -- one weight per batch -----------------------------------------------------------------
    @override
    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.cache and self._entries:
            self._cached.open()

    @override
    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer
    ) -> None:
        self._cached.close()  # the update below must not leave stale cached weights
        # whether each unconstrained gradient is finite, kept on the device (no sync here): read
        # only to explain non-finite weights after the step
        self._finite_grads = [
            None if (g := _unconstrained(module, tensor).grad) is None else torch.isfinite(g).all()
            for _, module, tensor in self._entries
        ]

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:
        self._cached.close()
        step = trainer.global_step
        if not self._entries or step == self._last_step:
            return  # no optimizer step since the last call (gradient accumulation)
        self._last_step = step
        self._check_finite()
        n = self.update_base_every_n_steps
        if n is not None and step % n == 0:
            for _, module, tensor in self._entries:
                update_base(module, tensor)
        if self.log_every_n_steps is not None and step % self.log_every_n_steps == 0:
            log_defects(pl_module, self._entries, self.gain)

    def _check_finite(self) -> None:
        """Raise :class:`NonFiniteError` naming the first constrained tensor the last optimizer
        step left inf/NaN, and whether its gradient was finite (one device sync per step)."""
        values = [_unconstrained(module, tensor) for _, module, tensor in self._entries]
        if bool(torch.stack([torch.isfinite(v).all() for v in values]).all()):
            return
        grads = self._finite_grads or [None] * len(values)
        for (name, _, tensor), value, grad_ok in zip(self._entries, values, grads):
            label = f"{name}.{tensor}" if name else tensor
            if grad_ok is not None and not bool(grad_ok):
                label += " (its gradient was not finite)"
            check_finite(value, label)

    @override
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.cache and self._entries:
            self._cached.open()

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._cached.close()

    # -- checkpoints ----------------------------------------------------------------------------
    @override
    def state_dict(self) -> dict[str, Any]:
        if self._model is None or not self._entries:
            return {}
        _, parametrized = split_state_dict(self._model.state_dict(), self._model)
        return {
            "parametrized": {k: v.detach().clone() for k, v in parametrized.items()},
            "constrained": self.constrained,
            "last_step": self._last_step,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._model is None or not self._entries or not state_dict:
            return  # not fitting (validate/test/predict): the plain weights were loaded
        if state_dict["constrained"] != self.constrained:
            raise ConfigurationError(
                f"OrthogonalConstraint: the checkpoint constrained {state_dict['constrained']}, "
                f"this callback constrains {self.constrained}"
            )
        result = self._model.load_state_dict(state_dict["parametrized"], strict=False)
        if result.unexpected_keys:
            raise ConfigurationError(
                "OrthogonalConstraint: the parametrized state in the checkpoint does not fit the "
                "model: unexpected keys "
                f"{result.unexpected_keys}"
            )
        self._last_step = state_dict["last_step"]

    @override
    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._cached.close()
        if self._entries:
            checkpoint["state_dict"], _ = split_state_dict(checkpoint["state_dict"], pl_module)


def _unconstrained(module: nn.Module, tensor: str) -> torch.Tensor:
    """The unconstrained tensor (the optimizer's parameter) behind a constrained weight."""
    return module.parametrizations[tensor].original
