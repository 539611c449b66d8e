"""Matrix exponential of skew-symmetric matrices with a cheap exact gradient.

``torch.linalg.matrix_exp`` differentiates through the exponential of a 2n x 2n block matrix, about
eight times the forward's work; on a 128 x 128 recurrent matrix that backward dominates a
constrained training step. A real skew-symmetric ``X`` is normal: ``i X`` is Hermitian, so one
complex ``eigh``, ``X = V diag(-i mu) V^H``, gives both

- the forward ``exp(X) = V diag(exp(-i mu)) V^H`` (orthogonal to working precision, as ``V`` is
  unitary; in float32 closer to orthogonal than the Padé result), and
- the backward, the adjoint Fréchet derivative ``L(X^T, G) = V (Phi o (V^H G V)) V^H`` with the
  divided differences of ``exp`` at the eigenvalues ``i mu`` of ``X^T = -X``:
  ``Phi_jk = exp(i (mu_j + mu_k) / 2) * sinc((mu_j - mu_k) / 2)``, stable for close eigenvalues.

Used as geotorch's ``triv`` for ``triv="expm"`` (same map, same results to round-off; tests check
value and gradient against ``torch.linalg.matrix_exp``). Batched over leading dimensions.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["skew_expm"]


def _complex(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def _divided_differences(mu: Tensor, sign: float) -> Tensor:
    """``Phi_jk = exp(sign * i (mu_j + mu_k) / 2) * sinc((mu_j - mu_k) / 2)``: the divided
    differences of ``exp`` at ``-sign * i mu`` (sign -1: at the eigenvalues of ``X``; +1: of
    ``X^T``)."""
    half_diff = (mu.unsqueeze(-1) - mu.unsqueeze(-2)) / 2
    half_sum = (mu.unsqueeze(-1) + mu.unsqueeze(-2)) / 2
    return torch.polar(torch.sinc(half_diff / torch.pi), sign * half_sum)


def _frechet(mu: Tensor, V: Tensor, E: Tensor, sign: float, dtype: torch.dtype) -> Tensor:
    Vh = V.mH
    return (V @ (_divided_differences(mu, sign) * (Vh @ E.to(V.dtype) @ V)) @ Vh).real.to(dtype)


class _SkewExpm(torch.autograd.Function):
    # setup_context + generate_vmap_rule make the Function usable under torch.func transforms
    # (vmap/jacrev/jvp), which the spectra monitors apply to constrained models.
    generate_vmap_rule = True

    @staticmethod
    def forward(X: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mu, V = torch.linalg.eigh(1j * X.to(_complex(X.dtype)))
        phase = torch.polar(torch.ones_like(mu), -mu)
        return ((V * phase.unsqueeze(-2)) @ V.mH).real.to(X.dtype), mu, V

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        (X,) = inputs
        _, mu, V = output
        ctx.mark_non_differentiable(mu, V)
        ctx.save_for_backward(mu, V)
        ctx.save_for_forward(mu, V)
        ctx.dtype = X.dtype

    @staticmethod
    @once_differentiable
    def backward(ctx, G: Tensor, _gmu: Tensor, _gV: Tensor) -> Tensor:
        mu, V = ctx.saved_tensors
        return _frechet(mu, V, G, 1.0, ctx.dtype)

    @staticmethod
    def jvp(ctx, dX: Tensor) -> tuple[Tensor, None, None]:
        mu, V = ctx.saved_tensors
        return _frechet(mu, V, dX, -1.0, ctx.dtype), None, None


def skew_expm(X: Tensor) -> Tensor:
    """``exp(X)`` for real skew-symmetric ``X`` (..., n, n); differentiable (once). Returns an
    orthogonal tensor of ``X``'s shape and dtype (float32 or float64)."""
    return _SkewExpm.apply(X)[0]


skew_expm.__name__ = "expm"  # geotorch prints the trivialization's name
