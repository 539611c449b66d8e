"""Keras' default initialisers, so a Keras experiment can be reproduced in PyTorch.

Keras (``tf.keras.initializers``) computes fans from the kernel as Keras stores it, which for a
PyTorch weight of shape (out, in, *kernel) is fan_in = in * prod(kernel) and
fan_out = out * prod(kernel), the same as ``torch.nn.init._calculate_fan_in_and_fan_out``:

- ``GlorotUniform`` (the default kernel initialiser of ``Dense``, ``Conv*`` and the input kernel of
  ``SimpleRNN``/``LSTM``/``GRU``): U(-limit, limit), limit = sqrt(6 / (fan_in + fan_out)).
- ``GlorotNormal``: a normal of stddev sqrt(2 / (fan_in + fan_out)) / 0.87962566103423978,
  truncated at two standard deviations (the divisor makes the truncated draw's std
  sqrt(2 / (fan_in + fan_out)); Keras' ``TruncatedNormal`` redraws values outside 2 stddev).
- Biases: zeros.

A recurrent Keras layer keeps all gates in one kernel, so its fans are those of the whole
stacked ``weight_ih`` (``initialize(..., rest="keras")`` applies these to whole tensors, not
gate by gate).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ortho_lightning.exceptions import ShapeError

#: Keras' TruncatedNormal std correction: the std of a standard normal truncated to [-2, 2].
TRUNCATED_STD = 0.87962566103423978


def glorot_fans(tensor: Tensor, owner: str = "glorot_fans") -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a (out, in, *kernel) weight as Keras counts them."""
    if tensor.dim() < 2:
        raise ShapeError(f"{owner}: tensor must have >= 2 dims, got shape {tuple(tensor.shape)}")
    receptive = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def glorot_uniform_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Keras ``GlorotUniform`` times ``gain``, in place: U(-a, a), a = gain sqrt(6 / (fan_in +
    fan_out)). Returns ``tensor``."""
    fan_in, fan_out = glorot_fans(tensor, "glorot_uniform_")
    limit = gain * math.sqrt(6.0 / (fan_in + fan_out))
    device = generator.device if generator is not None else tensor.device
    draw = torch.rand(tuple(tensor.shape), dtype=torch.float64, device=device, generator=generator)
    with torch.no_grad():
        tensor.copy_(((2 * draw - 1) * limit).to(tensor.device))
    return tensor


def glorot_normal_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Keras ``GlorotNormal`` times ``gain``, in place: N(0, s^2) truncated to [-2 s, 2 s] with
    s = gain sqrt(2 / (fan_in + fan_out)) / 0.8796..., so the entries' std is
    gain sqrt(2 / (fan_in + fan_out)). Returns ``tensor``."""
    fan_in, fan_out = glorot_fans(tensor, "glorot_normal_")
    std = gain * math.sqrt(2.0 / (fan_in + fan_out)) / TRUNCATED_STD
    device = generator.device if generator is not None else tensor.device
    z = torch.empty(tuple(tensor.shape), dtype=torch.float64, device=device)
    torch.nn.init.trunc_normal_(z, 0.0, 1.0, -2.0, 2.0, generator=generator)
    with torch.no_grad():
        tensor.copy_((z * std).to(tensor.device))
    return tensor
