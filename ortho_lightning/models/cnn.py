"""Vanilla deep CNNs without batch norm or skip connections (Xiao et al. 2018 style), for
images ("2d") and, causal and dilated, for pixel sequences ("1d")."""

from __future__ import annotations

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
from ortho_lightning.validation import check_choice, check_int

KINDS = ("2d", "1d")
PADDING_MODES = ("zeros", "circular", "reflect", "replicate")


class CNNClassifier(ClassificationModule):
    """A deep convolutional classifier without batch norm or skips.

    ``kind="2d"`` (images, ``input_shape`` (C, H, W)): a stem of ``downsample`` stride-2 convs
    (``stem.0``, ``stem.2``, ...), then ``depth`` same-size convs ``channels -> channels``
    (``body.0``, ``body.2``, ...), each followed by the activation, a global average pool and
    a linear ``head``; Xiao et al. (2018) trained such nets thousands of layers deep from a
    delta-orthogonal init.

    ``kind="1d"`` (sequences, ``input_shape`` (T, F)): ``depth`` causal convs (``body.1``,
    ``body.4``, ..., each a plain ``nn.Conv1d`` after a left-only ``nn.ConstantPad1d``, so
    output step t sees inputs up to t) with dilation ``2**i``, so the receptive field is
    ``1 + (kernel_size - 1) * (2**depth - 1)`` steps (>= 784 for depth 9 and kernel 3); the
    ``head`` reads the last step, which has seen the whole sequence.

    Odd ``kernel_size`` keeps a centre tap, which the delta-orthogonal init needs.

    Args:
        kind: ``"2d"`` or ``"1d"``.
        depth: number of body conv layers (>= 1).
        channels: channels of every conv layer.
        kernel_size: kernel size (each spatial dim).
        activation: a name from ``ortho_lightning.activations.ACTIVATIONS`` or a callable.
        downsample: number of stride-2 stem convs (2d only).
        padding_mode: padding of the same-size 2d convs (``"circular"`` is the one the
            theory's exact norm preservation assumes).
        bias: whether the convs and head have biases.
        input_shape: shape of one sample (the CLI links the datamodule's ``input_shape``).
        num_classes, optimizer, lr_scheduler: see :class:`ClassificationModule`.
    """

    def __init__(
        self,
        kind: str = "2d",
        depth: int = 16,
        channels: int = 32,
        kernel_size: int = 3,
        activation: str | Activation = "tanh",
        downsample: int = 2,
        padding_mode: str = "zeros",
        bias: bool = True,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(num_classes, optimizer, lr_scheduler)
        self.save_hyperparameters()
        owner = type(self).__name__
        self.kind = check_choice(owner, "kind", kind, KINDS)
        check_int(owner, "depth", depth, minimum=1)
        check_int(owner, "channels", channels, minimum=1)
        check_int(owner, "kernel_size", kernel_size, minimum=1)
        check_int(owner, "downsample", downsample, minimum=0)
        check_choice(owner, "padding_mode", padding_mode, PADDING_MODES)
        self.input_shape = check_shape(owner, "input_shape", input_shape,
                                       ndim=(3,) if kind == "2d" else (2,))

        def act() -> nn.Module:
            return make_activation(owner, "activation", activation)

        body: list[nn.Module] = []
        if kind == "2d":
            stem: list[nn.Module] = []
            in_ch = self.input_shape[0]
            for _ in range(downsample):
                stem += [nn.Conv2d(in_ch, channels, kernel_size, stride=2,
                                   padding=kernel_size // 2, bias=bias), act()]
                in_ch = channels
            self.stem = nn.Sequential(*stem)
            for _ in range(depth):
                body += [nn.Conv2d(in_ch, channels, kernel_size, padding=kernel_size // 2,
                                   padding_mode=padding_mode, bias=bias), act()]
                in_ch = channels
        else:
            self.stem = nn.Sequential()
            in_ch = self.input_shape[1]
            for i in range(depth):
                pad = nn.ConstantPad1d(((kernel_size - 1) * 2**i, 0), 0.0)  # causal: left only
                body += [pad, nn.Conv1d(in_ch, channels, kernel_size, dilation=2**i, bias=bias),
                         act()]
                in_ch = channels
        self.body = nn.Sequential(*body)
        self.head = nn.Linear(channels, num_classes, bias=bias)

    def features(self, x: Tensor) -> Tensor:
        """Pooled features, shape (N, channels): the global average over positions (2d) or
        the last time step (1d)."""
        x = x.reshape(x.shape[0], *self.input_shape)
        if self.kind == "2d":
            return self.body(self.stem(x)).mean(dim=(-2, -1))
        return self.body(x.transpose(1, 2))[..., -1]
