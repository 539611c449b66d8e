"""The Fisher as a matrix-free linear operator: F v = (1/N) J^T H (J v), one ``jvp`` (forward
mode) and one ``vjp`` (reverse mode, its graph built once) per product, linear in P."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vjp, vmap

from ortho_lightning.spectra._common import (
    OutputFn,
    ad_friendly_backends,
    as_batch_output,
    measuring,
    variables,
)
from ortho_lightning.spectra.likelihoods import LIKELIHOODS


class FisherOperator:
    """F = (1/N) sum_i J_i^T H_i J_i of ``model`` on the batch ``x`` as a (P, P) operator over
    the flattened trainable parameters (``named_parameters()`` order).

    Attributes:
        shape: (P, P).
        dtype, device: those of the parameters.
        names, shapes: the parameter names and shapes the flat vectors are split into.

    The model is evaluated in eval mode when ``eval_mode`` (restored after every product).
    """

    def __init__(
        self,
        model: nn.Module,
        x: Tensor,
        likelihood: str = "categorical",
        *,
        output_fn: OutputFn | None = None,
        eval_mode: bool = True,
    ) -> None:
        self.model, self.x, self.eval_mode = model, x, eval_mode
        self.likelihood = LIKELIHOODS[likelihood]
        self.params = variables(model)
        self.names = list(self.params)
        self.shapes = [p.shape for p in self.params.values()]
        self.numels = [p.numel() for p in self.params.values()]
        first = next(iter(self.params.values()))
        self.dtype, self.device = first.dtype, first.device
        size = sum(self.numels)
        self.shape = (size, size)
        self.n = x.shape[0]
        self._output_fn = output_fn
        with measuring(model, eval_mode):
            self.outputs, self._pull = vjp(self._forward, self.params)
        self.outputs = self.outputs.detach()

    def _forward(self, params: dict[str, Tensor]) -> Tensor:
        out = functional_call(self.model, params, (self.x,))
        return as_batch_output(out, self.n, self._output_fn, "model", self.likelihood.matrix_output)

    def unflatten(self, v: Tensor) -> dict[str, Tensor]:
        """Split a flat (P,) vector into a dict of parameter-shaped tensors."""
        pieces = torch.split(v, self.numels)
        return {k: p.view(s) for k, p, s in zip(self.names, pieces, self.shapes)}

    def flatten(self, tensors: dict[str, Tensor]) -> Tensor:
        return torch.cat([tensors[k].reshape(-1) for k in self.names])

    def jvp(self, v: Tensor) -> Tensor:
        """J v: (P,) -> (N, C)."""
        with measuring(self.model, self.eval_mode), ad_friendly_backends(self.model):
            return jvp(self._forward, (self.params,), (self.unflatten(v),))[1]

    def vjp(self, u: Tensor) -> Tensor:
        """J^T u: (N, C) -> (P,)."""
        return self.flatten(self._pull(u)[0])

    def matvec(self, v: Tensor) -> Tensor:
        """F v for a flat (P,) vector."""
        ju = self.jvp(v)
        return self.vjp(self.likelihood.hvp(self.outputs, ju)) / self.n

    def matmat(self, v: Tensor) -> Tensor:
        """F V for a (P, m) matrix (columns vmapped)."""
        return vmap(self.matvec, in_dims=1, out_dims=1)(v)

    def __matmul__(self, v: Tensor) -> Tensor:
        return self.matvec(v) if v.dim() == 1 else self.matmat(v)
