"""The Fisher as matrix-free :class:`~ortho_lightning.spectra.linear_operator.LinearOperator`
objects (``.shape``, ``.dtype``, ``.device``, ``matvec``, ``matmat``, ``@``, inputs checked).

- :class:`FisherOperator`: F = (1/N) J^T H J on flat parameter vectors (P,), one ``jvp``
  (forward mode) and one ``vjp`` (reverse mode, graph built once) per product, linear in P.
- :class:`DualFisherOperator`: M = (1/N) G G^T on output-space vectors (N*C,), G's rows
  J_i^T S_i[:, c] (H_i = S_i S_i^T). Same non-zero eigenvalues as F; vectors N*C long, so a
  Lanczos basis costs nothing next to P-long ones. Structured Linear/Conv layers apply G and
  G^T as two small matrix products per layer from the captured layer inputs and output
  gradients (no autograd per product); every other parameter goes through jvp/vjp.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vjp

from ortho_lightning.spectra._common import (
    OutputFn,
    as_batch_output,
    measuring,
    variables,
)
from ortho_lightning.spectra.gram import structured_factors
from ortho_lightning.spectra.likelihoods import get_likelihood
from ortho_lightning.spectra.linear_operator import LinearOperator


class _Autodiff:
    """J restricted to the parameters ``names``: ``jvp`` (dict -> (N, C)) and ``vjp``
    ((N, C) -> dict), the vjp graph built once."""

    def __init__(self, model, x, params, names, output_fn, require_2d, eval_mode):
        self.model, self.x, self.eval_mode = model, x, eval_mode
        self.fixed = {k: v for k, v in params.items() if k not in names}
        self.sub = {k: params[k] for k in names}
        self.output_fn, self.require_2d = output_fn, require_2d
        with measuring(model, eval_mode):
            outputs, self._pull = vjp(self._forward, self.sub)
        self.outputs = outputs.detach()

    def _forward(self, sub: dict[str, Tensor]) -> Tensor:
        out = functional_call(self.model, {**self.fixed, **sub}, (self.x,))
        return as_batch_output(out, self.x.shape[0], self.output_fn, "model", self.require_2d)

    def jvp(self, tangents: dict[str, Tensor]) -> Tensor:
        with measuring(self.model, self.eval_mode):
            return jvp(self._forward, (self.sub,), (tangents,))[1]

    def vjp(self, u: Tensor) -> dict[str, Tensor]:
        return self._pull(u)[0]


class FisherOperator(LinearOperator):
    """F = (1/N) sum_i J_i^T H_i J_i of ``model`` on the batch ``x`` as a (P, P) operator on
    the flattened trainable parameters (``named_parameters()`` order).

    Attributes:
        shape: (P, P); dtype, device: the parameters'; n: batch size; outputs: (N, C).
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
        self.likelihood = get_likelihood(likelihood, "FisherOperator")
        params = variables(model)
        self.names = list(params)
        self.shapes = [p.shape for p in params.values()]
        self.numels = [p.numel() for p in params.values()]
        first = next(iter(params.values()))
        self.dtype, self.device = first.dtype, first.device
        self.shape = (sum(self.numels), sum(self.numels))
        self.n = x.shape[0]
        self._ad = _Autodiff(
            model, x, params, self.names, output_fn, self.likelihood.matrix_output, eval_mode
        )
        self.outputs = self._ad.outputs

    def unflatten(self, v: Tensor) -> dict[str, Tensor]:
        """Split a flat (P,) vector into a dict of parameter-shaped tensors."""
        pieces = torch.split(v, self.numels)
        return {k: p.view(s) for k, p, s in zip(self.names, pieces, self.shapes)}

    def flatten(self, tensors: dict[str, Tensor]) -> Tensor:
        """Concatenate a dict of parameter-shaped tensors into a flat (P,) vector."""
        return torch.cat([tensors[k].reshape(-1) for k in self.names])

    def jvp(self, v: Tensor) -> Tensor:
        """J v: (P,) -> (N, C)."""
        return self._ad.jvp(self.unflatten(v))

    def vjp(self, u: Tensor) -> Tensor:
        """J^T u: (N, C) -> (P,)."""
        return self.flatten(self._ad.vjp(u))

    def _matvec(self, v: Tensor) -> Tensor:
        """F v for a flat (P,) vector (``matmat``: columns vmapped)."""
        return self.vjp(self.likelihood.hvp(self.outputs, self.jvp(v))) / self.n


class DualFisherOperator(LinearOperator):
    """M = (1/N) G G^T, the (N*C, N*C) dual of the Fisher (same non-zero eigenvalues), as an
    operator on flat output-space vectors ordered sample-major ((i, c) -> i*C + c).

    Attributes:
        shape: (N*C, N*C); num_params: P; dtype, device: the outputs'.
    """

    def __init__(
        self,
        model: nn.Module,
        x: Tensor,
        likelihood: str = "categorical",
        *,
        output_fn: OutputFn | None = None,
        eval_mode: bool = True,
        structured: bool = True,
    ) -> None:
        lik = get_likelihood(likelihood, "DualFisherOperator")
        with measuring(model, eval_mode):
            fac = structured_factors(
                model, x, likelihood, output_fn=output_fn, structured=structured
            )
        self.sqrt_h = fac.sqrt_h
        # Linear layers on flat inputs (L = 1) kept class-major, (C, N, O): the per-class
        # passes of matvec then stream contiguous (N, O) slices (10% faster products at N=2048)
        self.layers = [
            (a[:, 0], d[:, :, 0].permute(1, 0, 2).contiguous(), bias) if d.shape[2] == 1
            else (a, d, bias)
            for a, d, bias in fac.layers
        ]
        self.n, self.c = fac.outputs.shape
        self.shape = (self.n * self.c, self.n * self.c)
        self.num_params = sum(p.numel() for p in fac.params.values())
        self.dtype, self.device = fac.outputs.dtype, fac.outputs.device
        self._rest = None
        if fac.rest:
            self._rest = _Autodiff(
                model, x, fac.params, fac.rest, output_fn, lik.matrix_output, eval_mode
            )

    def _matvec(self, u: Tensor) -> Tensor:
        """M u for a flat (N*C,) vector (``matmat``: columns vmapped)."""
        u = u.view(self.n, self.c)
        out = torch.zeros_like(u)
        for a, d, bias in self.layers:
            if a.dim() == 2:  # L = 1: a (N, I), d (C, N, O)
                e = d[0] * u[:, :1]  # sum_c u_ic d_ic
                for k in range(1, self.c):
                    e = torch.addcmul(e, d[k], u[:, k : k + 1])
                y = a @ (e.T @ a).T
                if bias:
                    y = y + e.sum(0)
                out += torch.stack([(d[k] * y).sum(-1) for k in range(self.c)], 1)
                continue
            e = torch.einsum("nc,nclo->nlo", u, d)  # sum_c u_ic d_icl
            gw = torch.einsum("nlo,nli->oi", e, a)  # G^T u, weight block
            y = torch.einsum("nli,oi->nlo", a, gw)
            if bias:
                y = y + e.sum((0, 1))
            # sum_{l,o} d_iclo y_ilo; vecdot streams d once (einsum would batch tiny matmuls)
            out += torch.linalg.vecdot(d.flatten(2), y.flatten(1)[:, None, :])
        if self._rest is not None:
            w = torch.einsum("ndc,nc->nd", self.sqrt_h, u)  # S_i u_i
            jv = self._rest.jvp(self._rest.vjp(w))
            out += torch.einsum("ndc,nd->nc", self.sqrt_h, jv)  # S_i^T (J J^T w)_i
        return out.reshape(-1) / self.n
