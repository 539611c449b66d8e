"""``OrthogonalRegularizer``: the soft half. Adds ``coefficient * penalty`` to the training objective
(:func:`ortho_lightning.constraints.total_penalty` over the selected matrix blocks, gate blocks of
recurrent weights on their own), and optionally projects the weights back onto ``gain`` times the
Stiefel manifold every so many steps.

Mechanism, and why it equals adding ``coefficient * penalty`` to every training loss by hand: a
callback cannot change the loss, so the penalty's gradient is added to ``.grad`` in
``on_before_optimizer_step``. That hook runs once per optimizer step, after the closure, so by then

- gradient accumulation is complete: Lightning divides each micro-batch loss by
  ``accumulate_grad_batches``, so ``k`` micro-batches of ``loss_i / k + coefficient * penalty / k`` sum
  to the data gradient plus exactly one ``coefficient * grad(penalty)`` (the weights do not change
  between micro-batches) -- which is what we add, once. When an epoch ends inside an
  accumulation window of ``m < k`` micro-batches, Lightning steps with ``m`` losses each still
  divided by ``k``; the by-hand penalty is then ``m / k`` of itself, and so is ours (the
  micro-batches are counted in ``on_after_backward``);
- DDP has all-reduced (averaged) the data gradients; the weights, hence the penalty gradient,
  are identical on every rank, so the by-hand average over ranks of ``coefficient * grad(penalty)`` is
  that same value, added locally on each rank, and never averaged twice;
- with ``16-mixed`` the GradScaler has already unscaled the gradients (Lightning unscales before
  this hook), so the penalty gradient is added at its true scale and is not unscaled again; with
  ``bf16-mixed`` there is no scaler. The penalty itself is computed with autocast off
  (in the parameters' dtype, float32 under mixed precision; a by-hand penalty under autocast
  would be computed in low precision);
- gradient clipping runs after this hook, so it sees the penalty's gradient, as it would by hand.

Why not ``on_after_backward``: it runs once per micro-batch, on gradients that are still scaled by
the GradScaler under ``16-mixed``, and under DDP it comes after the all-reduce on the last
micro-batch only; a penalty added there would need ``1/k`` and scaler factors and is easy to
average twice. (The tests compare with the by-hand penalty under float64, ``bf16-mixed``,
float16 autocast with a GradScaler -- Lightning's 16-mixed plugin run on the CPU, since Lightning
turns CPU ``16-mixed`` into bf16 -- accumulation, clipping and DDP; CUDA itself is not tested.)

Logged with ``pl_module.log``: ``ortho/penalty`` (the unweighted penalty) at every optimizer
step, and ``ortho/defect/<module>.<block>`` every ``log_every_n_steps`` steps; both reach the
loggers at the trainer's own ``log_every_n_steps`` cadence, as any ``self.log`` value does.
Not through :func:`ortho_lightning.callbacks._logging.log_measurement` (the monitors' adapter):
``self.log`` keeps the per-step value on the device until the trainer's cadence reads it (the
adapter takes Python floats, one device sync per step), and puts it in
``trainer.callback_metrics`` on every rank.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.optim import Optimizer
from typing_extensions import override

from ortho_lightning.callbacks._logging import log_settings
from ortho_lightning.callbacks.constraint import log_defects
from ortho_lightning.constraints.orthogonalize import selected_tensors
from ortho_lightning.constraints.parametrization import is_orthogonalized
from ortho_lightning.constraints.penalties import check_penalty_kind, total_penalty
from ortho_lightning.constraints.projection import PROJECTIONS, project_orthogonal_
from ortho_lightning.exceptions import ConfigurationError, SelectionError
from ortho_lightning.matrices import RECURRENT_CHOICES, matrix_blocks
from ortho_lightning.selection import ModuleSelector
from ortho_lightning.validation import check_choice, check_int, check_number, fail, renamed_argument


class OrthogonalRegularizer(Callback):
    """Soft orthogonality: ``coefficient * penalty`` added to the objective (see the module
    docstring).

    Args:
        coefficient: ``lam >= 0``; 0 with ``project_every_n_steps`` gives pure periodic
            projection. (``weight=`` is its deprecated name, until 0.3.0.)
        gain: the scale the weights are pulled to: ``W^T W = gain^2 I``.
        kind: ``"frobenius"``, ``"srip"``, ``"all_ones"`` or a callable ``f(W, gain)``
            (:func:`ortho_lightning.constraints.orthogonality_penalty`).
        reduction: ``"mean"`` or ``"sum"`` over Gram entries, per block; blocks are summed.
        include, exclude, types: the module selection (:mod:`ortho_lightning.selection`);
            ``include``: name patterns (``fnmatch``), ``None`` every module of ``types``.
            (``targets=`` is the deprecated name of ``include``, until 0.3.0.)
        recurrent: ``"hh"`` (hidden-to-hidden matrices of RNN/LSTM/GRU only) or ``"all"``.
        project_every_n_steps: project the selected blocks onto ``gain`` times the Stiefel
            manifold after every n-th optimizer step (``None``: never).
        project_method: ``"polar"`` (SVD) or ``"bjorck"``.
        log_every_n_steps: per-block defect logging cadence (``None``: off).
    """

    #: deprecated spellings of arguments (CHANGELOG): accepted, not logged as settings
    deprecated_arguments: ClassVar[tuple[str, ...]] = ("targets", "weight")

    def __init__(
        self,
        coefficient: float | None = None,
        gain: float = 1.0,
        kind: str | Callable[[Tensor, float], Tensor] = "frobenius",
        reduction: str = "mean",
        include: str | Sequence[str] | None = None,
        exclude: str | Sequence[str] | None = None,
        types: Sequence[type[nn.Module]] | None = None,
        recurrent: str = "hh",
        project_every_n_steps: int | None = None,
        project_method: str = "polar",
        log_every_n_steps: int | None = 50,
        *,
        weight: float | None = None,
        targets: str | Sequence[str] | None = None,
    ) -> None:
        owner = type(self).__name__
        coefficient = renamed_argument(owner, "weight", "coefficient", weight, coefficient)
        include = renamed_argument(owner, "targets", "include", targets, include)
        if coefficient is None:
            fail(owner, "coefficient", "a finite number >= 0", coefficient)
        coefficient = check_number(owner, "coefficient", coefficient, minimum=0)
        gain = check_number(owner, "gain", gain, positive=True)
        check_penalty_kind(kind, reduction, owner)
        check_choice(owner, "recurrent", recurrent, RECURRENT_CHOICES)
        check_int(owner, "project_every_n_steps", project_every_n_steps, 1, optional=True)
        check_choice(owner, "project_method", project_method, sorted(PROJECTIONS))
        check_int(owner, "log_every_n_steps", log_every_n_steps, 1, optional=True)
        if coefficient == 0 and project_every_n_steps is None:
            raise ConfigurationError(
                f"{owner}: coefficient=0 without project_every_n_steps does nothing; give "
                "coefficient > 0 or a projection cadence"
            )
        self.coefficient = coefficient
        self.gain = gain
        self.kind = kind
        self.reduction = reduction
        self.selector = ModuleSelector.build(include, exclude, types, owner=owner)
        self.recurrent = recurrent
        self.project_every_n_steps = project_every_n_steps
        self.project_method = project_method
        self.log_every_n_steps = log_every_n_steps
        self._entries: list[tuple[str, nn.Module, str]] = []
        self._last_step = -1
        self._backwards = 0  # micro-batches since the last optimizer step
        self._leaves: list[torch.nn.Parameter] = []
        #: the last unweighted penalty (0-d tensor), ``None`` before the first step
        self.last_penalty: Tensor | None = None

    @property
    def weight(self) -> float:
        """Deprecated name of :attr:`coefficient` (read-only, until 0.3.0)."""
        return self.coefficient

    @property
    @override
    def state_key(self) -> str:
        return (
            f"{type(self).__qualname__}{{include={list(self.selector.include)}, "
            f"exclude={list(self.selector.exclude)}, kind={getattr(self.kind, '__name__', self.kind)!r}}}"
        )

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        log_settings(trainer, self)  # in the logger's config
        entries = selected_tensors(pl_module, self.selector, self.recurrent)
        if not entries:
            raise SelectionError(
                f"OrthogonalRegularizer selected no weight matrix in {type(pl_module).__name__} "
                f"(include={list(self.selector.include)}, exclude={list(self.selector.exclude)})"
            )
        if self.project_every_n_steps is not None:
            constrained = [f"{m}.{t}" for m, mod, t in entries if is_orthogonalized(mod, t)]
            if constrained:
                raise ConfigurationError(
                    f"OrthogonalRegularizer: project_every_n_steps: {constrained} are hard-constrained "
                    "(OrthogonalConstraint); projecting them is meaningless, exclude them"
                )
        self._entries = entries
        self._leaves = _leaf_parameters(entries)

    def penalty(self) -> Tensor:
        """The current (unweighted) penalty of the selected blocks, in the parameters' dtype with
        autocast off. A 0-d tensor with a graph to the weights."""
        with torch.autocast(_device_type(self._entries), enabled=False):
            return total_penalty(self._entries, self.gain, self.kind, self.reduction)

    @override
    def on_after_backward(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._backwards += 1

    @override
    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer
    ) -> None:
        micro_batches, self._backwards = self._backwards, 0
        if not self._entries or self.coefficient == 0:
            return
        # fraction of a full accumulation window this step saw (1 except at an epoch's end)
        scale = min(micro_batches, trainer.accumulate_grad_batches) / trainer.accumulate_grad_batches
        in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
        params = [p for p in self._leaves if p.requires_grad and id(p) in in_optimizer]
        if not params:
            return
        with torch.enable_grad():
            value = self.penalty()
            grads = torch.autograd.grad(self.coefficient * scale * value, params, allow_unused=True)
        for p, g in zip(params, grads):
            if g is None:
                continue
            if p.grad is None:
                p.grad = g.to(p.dtype)
            else:
                p.grad.add_(g.to(p.grad.dtype))
        self.last_penalty = value.detach()  # no .item(): no device sync per step
        pl_module.log("ortho/penalty", value.detach(), on_step=True, on_epoch=False)

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        if not self._entries or step == self._last_step:
            return  # no optimizer step since the last call (gradient accumulation)
        self._last_step = step
        n = self.project_every_n_steps
        if n is not None and step % n == 0:
            self.project()
        if self.log_every_n_steps is not None and step % self.log_every_n_steps == 0:
            log_defects(pl_module, self._entries, self.gain)

    @torch.no_grad()
    def project(self) -> None:
        """Project every selected block onto ``gain`` times the Stiefel manifold, in place."""
        for _, module, tensor in self._entries:
            for block in matrix_blocks(module):
                if block.tensor_name == tensor:
                    project_orthogonal_(getattr(module, tensor)[block.rows], self.gain, self.project_method)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self._last_step}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._last_step = state_dict.get("last_step", -1)


def _device_type(entries) -> str:
    _, module, tensor = entries[0]
    return getattr(module, tensor).device.type


def _leaf_parameters(entries) -> list[nn.Parameter]:
    """The parameters the selected tensors are computed from: the tensor itself, or the
    unconstrained tensor(s) of a parametrized one."""
    leaves: dict[int, nn.Parameter] = {}
    for _, module, tensor in entries:
        if parametrize.is_parametrized(module, tensor):
            found = module.parametrizations[tensor].parameters()
        else:
            found = [getattr(module, tensor)]
        leaves.update((id(p), p) for p in found if isinstance(p, nn.Parameter))
    return list(leaves.values())
