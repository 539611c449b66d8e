"""A deep fully-connected classifier: the network of the dynamical-isometry papers."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from ortho_lightning.activations import Activation
from ortho_lightning.models.base import (
    ClassificationModule,
    check_shape,
    make_activation,
)
from ortho_lightning.validation import check_int


class MLPClassifier(ClassificationModule):
    """``depth`` hidden layers ``Linear(width) -> activation``, then a linear head.

    The input is flattened, so the same model runs on images (N, 1, 28, 28) and on sequences
    (N, T, F). Modules are named ``layers.0`` (first Linear), ``layers.1`` (its
    activation), ``layers.2`` ... and ``head``; an init or constraint on the hidden layers
    only is ``include="layers.*"``. Weights keep PyTorch's default init: recipes put the
    network at its critical point with the ``OrthogonalInit`` callback.

    Args:
        depth: number of hidden layers (>= 1).
        width: units per hidden layer.
        activation: a name from ``ortho_lightning.activations.ACTIVATIONS`` or a callable.
        bias: whether the Linear layers have biases.
        input_shape: shape of one sample (the CLI links the datamodule's ``input_shape``).
        num_classes, optimizer, lr_scheduler: see :class:`ClassificationModule`.
    """

    def __init__(
        self,
        depth: int = 20,
        width: int = 256,
        activation: str | Activation = "tanh",
        bias: bool = True,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(num_classes, optimizer, lr_scheduler)
        self.save_hyperparameters()
        owner = type(self).__name__
        check_int(owner, "depth", depth, minimum=1)
        check_int(owner, "width", width, minimum=1)
        shape = check_shape(owner, "input_shape", input_shape, ndim=(1, 2, 3))
        layers: list[nn.Module] = []
        fan_in = math.prod(shape)
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width, bias=bias), make_activation(owner, "activation", activation)]
            fan_in = width
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes, bias=bias)

    def features(self, x: Tensor) -> Tensor:
        """The last hidden layer's activations, shape (N, width)."""
        return self.layers(x.flatten(1))
