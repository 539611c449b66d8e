"""Matrix exponential of skew-symmetric matrices with a cheap exact gradient.

``torch.linalg.matrix_exp`` differentiates through the exponential of a 2n x 2n block matrix, about
eight times the forward's work; on a 128 x 128 recurrent matrix that backward dominates a
constrained training step. For a real skew-symmetric ``X`` the Gram matrix ``S = X^T X = -X^2`` is
symmetric positive semi-definite, and the even and odd parts of the exponential series are
functions of it::

    exp(X) = cos(sqrt S) + X sinc(sqrt S),          sinc(t) = sin(t) / t

so one *real* symmetric ``eigh``, ``S = U diag(theta^2) U^T`` (a third of the cost of the complex
``eigh`` of the Hermitian ``i X``), gives

- the forward ``exp(X) = U (diag(cos theta) + B diag(sinc theta)) U^T`` with ``B = U^T X U``;
- the backward and the forward-mode derivative by the Daleckii-Krein formula for functions of the
  symmetric ``S``: Hadamard products with the divided differences of ``cos(sqrt .)`` and
  ``sinc(sqrt .)`` at the ``theta^2``, written in closed forms that stay exact for equal and close
  eigenvalues (every ``theta`` of a skew matrix is a double eigenvalue of ``S``).

``theta_i`` is taken as ``||X u_i||`` (the Rayleigh quotient) rather than ``sqrt(lambda_i)``: it is
accurate to ``eps * theta_i`` instead of ``eps * max(lambda)``, which keeps the float32 result as
orthogonal as ``torch.linalg.matrix_exp``'s (tests compare both).

The map is ``exp`` on skew-symmetric matrices, differentiated as ``exp(skew(X))``: only skew
directions are tangent to the domain, so the gradient returned is the skew-symmetric part of
``matrix_exp``'s and a tangent is projected onto the skew matrices first. Through any skew
parametrization (geotorch's ``tril - tril^T``) the derivatives equal ``matrix_exp``'s.

Used as geotorch's ``triv`` for ``triv="expm"`` (same map, same results to round-off; tests check
value and derivatives against ``torch.linalg.matrix_exp``). Batched over leading dimensions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["skew_expm"]

#: below this ``theta^2`` the divided difference of ``sinc(sqrt .)`` is taken from its Taylor
#: series (its closed form divides by ``theta^2``); 7 terms are exact to 1e-16 there
_SERIES_BELOW = 0.25
_SERIES_TERMS = 7
#: ``_HANKEL[k][l]``: coefficient of ``a^k b^l`` in the divided difference of
#: ``sinc(sqrt x) = sum_j (-x)^j / (2j + 1)!`` between ``a`` and ``b``
_HANKEL = [
    [(-1) ** (i + j + 1) / math.factorial(2 * (i + j) + 3) if i + j < _SERIES_TERMS else 0.0
     for j in range(_SERIES_TERMS)]
    for i in range(_SERIES_TERMS)
]


def _sinc(t: Tensor) -> Tensor:
    """``sin(t) / t`` for ``t >= 0`` (1 at 0). Twice as fast as ``torch.sinc`` on CPU; the
    ``tiny`` offset is absorbed by any normal ``t`` and makes ``0 / 0`` read ``tiny / tiny``."""
    t = t + torch.finfo(t.dtype).tiny
    return torch.sin(t) / t


def _skew(M: Tensor) -> Tensor:
    return (M - M.mT) / 2


_HANKEL_TENSORS: dict[tuple[torch.dtype, torch.device], Tensor] = {}


def _series_coefficients(lam: Tensor) -> Tensor:
    """``_HANKEL`` as a tensor of ``lam``'s dtype and device, cached rather than rebuilt per call."""
    key = (lam.dtype, lam.device)
    if key not in _HANKEL_TENSORS:
        _HANKEL_TENSORS[key] = torch.tensor(_HANKEL, dtype=lam.dtype, device=lam.device)
    return _HANKEL_TENSORS[key]


def _divided_differences(theta: Tensor) -> tuple[Tensor, Tensor]:
    """Divided differences of ``cos(sqrt x)`` and ``sinc(sqrt x)`` between ``theta_i^2`` and
    ``theta_j^2`` (the derivative where they are equal), each (..., n, n), for ``theta >= 0``.

    With ``p, m = (theta_i +- theta_j) / 2``:

    - ``(cos theta_i - cos theta_j) / (theta_i^2 - theta_j^2) = -sinc(p) sinc(m) / 2``;
    - ``(sinc theta_i - sinc theta_j) / (theta_i^2 - theta_j^2)
      = (cos(p) sinc(m) - sinc(theta_j)) / (2 theta_i p)``, used where ``theta_i >= theta_j`` (its
      transpose elsewhere) and ``theta_i^2 >= _SERIES_BELOW``; the Taylor series where both are
      below.

    ``sin p`` and ``cos p`` come from the half angles by the addition formulas (outer products,
    no cancellation that matters: their errors are absolute); ``sin m`` is taken directly, as its
    relative accuracy matters for close ``theta``.
    """
    half = theta / 2
    sin_h, cos_h = torch.sin(half), torch.cos(half)
    hi, hj = half.unsqueeze(-1), half.unsqueeze(-2)
    si, sj, ci, cj = sin_h.unsqueeze(-1), sin_h.unsqueeze(-2), cos_h.unsqueeze(-1), cos_h.unsqueeze(-2)
    p = hi + hj
    tiny = torch.finfo(theta.dtype).tiny
    sinc_p = (si * cj + ci * sj + tiny) / (p + tiny)
    sinc_m = _sinc((hi - hj).abs())
    d_cos = sinc_p.mul_(sinc_m).mul_(-0.5)
    cos_p = ci * cj - si * sj
    # the clamps only guard entries that the where()s below discard
    big = (cos_p.mul_(sinc_m) - _sinc(theta).unsqueeze(-2)).div_(
        p.clamp_min(0.25).mul_(theta.clamp_min(0.5).unsqueeze(-1)).mul_(2)
    )
    d_sinc = torch.where(theta.unsqueeze(-1) >= theta.unsqueeze(-2), big, big.mT)
    lam = theta * theta
    powers = lam.unsqueeze(-1) ** torch.arange(_SERIES_TERMS, dtype=lam.dtype, device=lam.device)
    series = powers @ _series_coefficients(lam) @ powers.mT
    small = torch.maximum(lam.unsqueeze(-1), lam.unsqueeze(-2)) < _SERIES_BELOW
    return d_cos, torch.where(small, series, d_sinc)


class _SkewExpm(torch.autograd.Function):
    # setup_context + generate_vmap_rule make the Function usable under torch.func transforms
    # (vmap/jacrev/jvp), which the spectra monitors apply to constrained models.
    generate_vmap_rule = True

    @staticmethod
    def forward(X: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        _, U = torch.linalg.eigh(X.mT @ X)
        XU = X @ U
        theta = (XU * XU).sum(-2).sqrt()
        E = torch.addcmul(U * torch.cos(theta).unsqueeze(-2), XU, _sinc(theta).unsqueeze(-2)) @ U.mT
        return E, theta, U, XU

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        _, theta, U, XU = output
        ctx.mark_non_differentiable(theta, U, XU)
        ctx.save_for_backward(theta, U, XU)
        ctx.save_for_forward(theta, U, XU)

    @staticmethod
    @once_differentiable
    def backward(ctx, G: Tensor, *_unused: Tensor) -> Tensor:
        theta, U, XU = ctx.saved_tensors
        d_cos, d_sinc = _divided_differences(theta)
        B = U.mT @ XU
        W = U.mT @ G @ U
        # adjoint of S -> (cos(sqrt S), sinc(sqrt S)) at (G, X^T G), in the eigenbasis
        K = d_cos * W + d_sinc * (B.mT @ W)
        # grad = G sinc(sqrt S) + X (dL/dS + dL/dS^T), projected on the skew matrices
        Z = W * _sinc(theta).unsqueeze(-2) + B @ (K + K.mT)
        return U @ _skew(Z) @ U.mT

    @staticmethod
    def jvp(ctx, dX: Tensor) -> tuple[Tensor, None, None, None]:
        theta, U, XU = ctx.saved_tensors
        d_cos, d_sinc = _divided_differences(theta)
        B = U.mT @ XU
        Y = U.mT @ _skew(dX) @ U
        dS = Y.mT @ B + B.mT @ Y  # U^T (dX^T X + X^T dX) U
        dE = d_cos * dS + Y * _sinc(theta).unsqueeze(-2) + B @ (d_sinc * dS)
        return U @ dE @ U.mT, None, None, None


def skew_expm(X: Tensor) -> Tensor:
    """``exp(X)`` for real skew-symmetric ``X`` (..., n, n); differentiable (once) as
    ``exp(skew(X))``. Returns an orthogonal tensor of ``X``'s shape and dtype (float32 or float64;
    :func:`ortho_lightning.constraints.orthogonalize` evaluates half precision in float32)."""
    return _SkewExpm.apply(X)[0]


skew_expm.__name__ = "expm"  # geotorch prints the trivialization's name
