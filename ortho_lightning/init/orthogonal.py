"""Haar-random orthogonal init: the flattened (rows, rest) matrix gets orthonormal rows or
columns (whichever the shape allows), times ``gain``."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ortho_lightning.activations import Activation
from ortho_lightning.exceptions import ShapeError
from ortho_lightning.init._random import standard_normal
from ortho_lightning.init.criticality import Gain, resolve_gain


def haar_orthogonal(
    rows: int, cols: int, like: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """A Haar-distributed (rows, cols) float64 matrix on ``like.device``: W W^T = I when
    rows <= cols, W^T W = I otherwise.

    QR of a Gaussian matrix with the sign correction Q <- Q diag(sign(diag R)) (Mezzadri 2007):
    plain QR fixes the signs of R's diagonal by the algorithm's convention, which biases Q.
    """
    tall = standard_normal((max(rows, cols), min(rows, cols)), like, generator)
    q, r = torch.linalg.qr(tall)
    q = q * torch.sgn(torch.diagonal(r)).unsqueeze(0)
    return q if rows >= cols else q.T


def orthogonal_(
    tensor: Tensor,
    gain: Gain = 1.0,
    generator: torch.Generator | None = None,
    *,
    activation: str | Activation = "tanh",
    sigma_b: float = 0.0,
) -> Tensor:
    """Fill ``tensor`` (>= 2 dims, trailing dims flattened) in place with gain times a Haar
    orthogonal matrix: for the (rows, cols) view W, W W^T = gain^2 I if rows <= cols, else
    W^T W = gain^2 I.

    Args:
        tensor: the weight, e.g. (out, in) or (out, in, *kernel).
        gain: a float or ``"critical"`` (sigma_w of ``critical_point(activation, sigma_b)``).
        generator: random source (default: the global one of ``tensor``'s device).
        activation, sigma_b: only used for ``gain="critical"``.

    Returns:
        ``tensor``.
    """
    if tensor.dim() < 2:
        raise ShapeError(f"orthogonal_: tensor must have >= 2 dims, got shape {tuple(tensor.shape)}")
    g = resolve_gain(gain, activation, sigma_b, owner="orthogonal_")
    rows, cols = tensor.shape[0], math.prod(tensor.shape[1:])
    with torch.no_grad():
        w = haar_orthogonal(rows, cols, tensor, generator) * g
        tensor.copy_(w.reshape(tensor.shape))
    return tensor
