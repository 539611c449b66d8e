"""Monte-Carlo reference for the Jacobian spectrum theory: a wide random MLP built by explicit
float64 products ``J = D_L W_L ... D_1 W_1`` at one input on the variance fixed point, with
eigenvalues of ``J J^T`` by ``eigvalsh`` (nothing from :mod:`ortho_lightning.spectra`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ortho_lightning.activations import Activation, get_activation
from ortho_lightning.theory.quadrature import derivative


def random_mlp_jacobian_eigenvalues(
    activation: str | Activation,
    sigma_w: float,
    sigma_b: float,
    q_star: float,
    depths: tuple[int, ...],
    width: int = 1000,
    weights: str = "orthogonal",
    generator: torch.Generator | None = None,
) -> dict[int, Tensor]:
    """Eigenvalues (ascending, float64, shape (width,)) of ``J J^T`` of one random network,
    recorded after each depth in ``depths`` (one network: shallower spectra are prefixes).
    Weights are ``sigma_w`` times Haar orthogonal (QR with sign fix) or Gaussian of variance
    ``sigma_w^2 / width``; biases N(0, sigma_b^2); the input has ``||x||^2 / width`` such that
    the first pre-activations have variance ``q_star``."""
    phi, dphi = get_activation(activation), derivative(activation)
    kw = {"generator": generator, "dtype": torch.float64}
    x = torch.randn(width, **kw)
    x = x / x.norm() * math.sqrt(width * max(q_star - sigma_b**2, 0.0) / sigma_w**2)
    jac = torch.eye(width, dtype=torch.float64)
    out = {}
    for layer in range(1, max(depths) + 1):
        a = torch.randn(width, width, **kw)
        if weights == "orthogonal":
            qm, r = torch.linalg.qr(a)
            w = sigma_w * qm * torch.sign(torch.diagonal(r))
        else:
            w = sigma_w * a / math.sqrt(width)
        h = w @ x + sigma_b * torch.randn(width, **kw)
        jac = dphi(h)[:, None] * (w @ jac)
        x = phi(h)
        if layer in depths:
            out[layer] = torch.linalg.eigvalsh(jac @ jac.T)
    return out
