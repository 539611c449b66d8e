"""One table of elementwise activations, shared by the mean-field theory, the init schemes and
the recipe models, so that a name means the same function everywhere."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ortho_lightning.exceptions import ActivationError
from ortho_lightning.validation import fail

Activation = Callable[[Tensor], Tensor]

ACTIVATIONS: dict[str, Activation] = {
    "linear": lambda x: x,
    "tanh": torch.tanh,
    "hardtanh": F.hardtanh,
    "erf": torch.erf,
    "sigmoid": torch.sigmoid,
    "relu": F.relu,
    "leaky_relu": F.leaky_relu,
    "elu": F.elu,
    "selu": F.selu,
    "gelu": F.gelu,
    "silu": F.silu,
    "softplus": F.softplus,
    "sin": torch.sin,
    # erf rescaled to have slope 1 at 0, as in the free-probability papers
    "erf_scaled": lambda x: torch.erf(x * math.sqrt(math.pi) / 2),
}


def get_activation(activation: str | Activation, owner: str = "get_activation",
                   name: str = "activation") -> Activation:
    """Return the elementwise function for ``activation`` (a name in ``ACTIVATIONS``, any case,
    or a callable, returned as it is).

    Raises:
        ActivationError: ``"{owner}: {name} must be one of [...] or a callable ..., got 'x'"``;
            callers that check an argument pass the function or model the user called as
            ``owner`` and the argument as ``name``.
    """
    if callable(activation):
        return activation
    if not isinstance(activation, str) or activation.lower() not in ACTIVATIONS:
        fail(owner, name, f"one of {sorted(ACTIVATIONS)} or a callable mapping a tensor to a "
             "tensor elementwise", activation, ActivationError)
    return ACTIVATIONS[activation.lower()]


def activation_name(activation: str | Activation, owner: str = "activation_name") -> str:
    """A printable name for ``activation`` (``owner``: named in the error for an unknown one)."""
    if isinstance(activation, str):
        get_activation(activation, owner)
        return activation.lower()
    return getattr(activation, "__name__", type(activation).__name__)


class Elementwise(nn.Module):
    """``nn.Module`` wrapper of an activation from the table (so models can name it)."""

    def __init__(self, activation: str | Activation) -> None:
        super().__init__()
        self.name = activation_name(activation)
        self.fn = get_activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name
