"""The baselines the orthogonal schemes are compared with: critical Gaussian weights, and the
identity (IRNN-style recurrent matrices; the centre-tap identity for convolutions)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ortho_lightning.activations import Activation
from ortho_lightning.exceptions import ShapeError
from ortho_lightning.init._random import standard_normal
from ortho_lightning.init.criticality import Gain, resolve_gain
from ortho_lightning.init.delta_orthogonal import set_centre_tap_
from ortho_lightning.validation import renamed_kwargs


@renamed_kwargs(sigma_w="gain")
def gaussian_(
    tensor: Tensor,
    gain: Gain = 1.0,
    generator: torch.Generator | None = None,
    *,
    activation: str | Activation = "tanh",
    sigma_b: float = 0.0,
) -> Tensor:
    """Fill ``tensor`` in place with i.i.d. N(0, gain^2 / fan_in), fan_in = prod(shape[1:])
    (the mean-field convention: ``gain`` is the theory's ``sigma_w``, as for every other scheme).
    ``gain="critical"`` uses ``critical_point(activation, sigma_b).sigma_w``. ``sigma_w=`` is a
    deprecated alias of ``gain`` (removed in 0.3.0). Returns ``tensor``."""
    if tensor.dim() < 2:
        raise ShapeError(f"gaussian_: tensor must have >= 2 dims, got shape {tuple(tensor.shape)}")
    s = resolve_gain(gain, activation, sigma_b, owner="gaussian_")
    fan_in = math.prod(tensor.shape[1:])
    with torch.no_grad():
        tensor.copy_(standard_normal(tuple(tensor.shape), tensor, generator) * (s / math.sqrt(fan_in)))
    return tensor


def identity_(
    tensor: Tensor,
    gain: Gain = 1.0,
    generator: torch.Generator | None = None,
    *,
    activation: str | Activation = "tanh",
    sigma_b: float = 0.0,
) -> Tensor:
    """gain times the identity, in place: a 2-d (rows, cols) tensor gets ``gain * eye(rows,
    cols)``; a conv weight (out, in, *kernel) gets it at the centre tap (odd kernels). Used for
    IRNN-style recurrent matrices (Le et al. 2015). ``generator`` is accepted for a uniform
    scheme signature and unused. Returns ``tensor``."""
    del generator
    g = resolve_gain(gain, activation, sigma_b, owner="identity_")
    if tensor.dim() == 2:
        eye = torch.eye(*tensor.shape, dtype=tensor.dtype, device=tensor.device) * g
        with torch.no_grad():
            tensor.copy_(eye)
        return tensor
    eye = torch.eye(tensor.shape[0], tensor.shape[1], dtype=tensor.dtype, device=tensor.device)
    return set_centre_tap_(tensor, eye * g, owner="identity_")
