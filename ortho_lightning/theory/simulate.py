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


def random_mlp_ntk_eigenvalues(
    activation: str | Activation,
    sigma_w: float,
    sigma_b: float,
    q_star: float,
    depth: int,
    width: int = 256,
    weights: str = "orthogonal",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Eigenvalues (ascending, float64, shape (width,)) of the single-input NTK
    ``Theta = J_theta J_theta^T`` of the ``width`` outputs ``f = h_L`` of one random network in
    NTK parametrization (``h_l = sigma_w W_l x_{l-1} / sqrt(width) + sigma_b b_l``, parameters
    ``W_l, b_l`` standard), input scaled so that ``h_1`` has variance ``q_star``. Built layer by
    layer as ``sum_l (sigma_w^2 |x_{l-1}|^2 / width + sigma_b^2) B_l B_l^T`` with the backward
    Jacobians ``B_l = df / dh_l`` from ``torch.func.jacrev`` (the parameter gradients of layer
    ``l`` are ``B_l`` times ``x_{l-1}`` and ``1``)."""
    phi = get_activation(activation)
    kw = {"generator": generator, "dtype": torch.float64}
    x = torch.randn(width, **kw)
    x = x / x.norm() * math.sqrt(width * max(q_star - sigma_b**2, 0.0) / sigma_w**2)
    mats, biases = [], []
    for _ in range(depth):
        a = torch.randn(width, width, **kw)
        if weights == "orthogonal":
            qm, r = torch.linalg.qr(a)
            a = qm * torch.sign(torch.diagonal(r)) * math.sqrt(width)
        mats.append(sigma_w * a / math.sqrt(width))
        biases.append(sigma_b * torch.randn(width, **kw))

    def head(h: Tensor, start: int) -> Tensor:  # f as a function of h_start (0-based layer)
        for w, b in zip(mats[start + 1 :], biases[start + 1 :]):
            h = w @ phi(h) + b
        return h

    theta = torch.zeros(width, width, dtype=torch.float64)
    inp = x
    for layer in range(depth):
        h = mats[layer] @ inp + biases[layer]
        jac = torch.func.jacrev(head)(h, layer)
        theta += (sigma_w**2 * float(inp @ inp) / width + sigma_b**2) * (jac @ jac.T)
        inp = phi(h)
    return torch.linalg.eigvalsh(theta)
