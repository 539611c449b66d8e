"""Recurrent classifiers for sequential MNIST: the fused ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``,
classifying from the last hidden state."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from ortho_lightning.models.base import (
    ClassificationModule,
    check_shape,
)
from ortho_lightning.validation import check_choice, check_int

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
NONLINEARITIES = ("tanh", "relu")  # what the fused nn.RNN kernel offers


class RNNClassifier(ClassificationModule):
    """A recurrent layer named ``rnn`` and a linear ``head`` on its last hidden state.

    Input (N, T, F) batch-first sequences (images (N, 1, 28, 28) are reshaped to
    ``input_shape``). The recurrent module is ``rnn``, so ``include="rnn"`` selects it for the
    init, constraint and regulariser callbacks (which act on ``weight_hh_l*``, per gate block,
    see ``ortho_lightning.matrices``); :attr:`recurrent_targets` lists it for code.

    Args:
        cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
        hidden_size: units of the recurrent state.
        nonlinearity: ``"tanh"`` or ``"relu"`` (``cell="rnn"`` only; LSTM and GRU have fixed
            gates and only accept ``"tanh"``).
        num_layers: stacked recurrent layers.
        input_shape: (T, F) of one sample (the CLI links the datamodule's ``input_shape``).
        num_classes, optimizer, lr_scheduler: see :class:`ClassificationModule`.
    """

    #: module names holding recurrent matrices (patterns for the shared selector)
    recurrent_targets: tuple[str, ...] = ("rnn",)

    def __init__(
        self,
        cell: str = "rnn",
        hidden_size: int = 128,
        nonlinearity: str = "tanh",
        num_layers: int = 1,
        input_shape: Sequence[int] = (28, 28),
        num_classes: int = 10,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(num_classes, optimizer, lr_scheduler)
        self.save_hyperparameters()
        owner = type(self).__name__
        check_choice(owner, "cell", cell, tuple(CELLS))
        check_int(owner, "hidden_size", hidden_size, minimum=1)
        check_int(owner, "num_layers", num_layers, minimum=1)
        check_choice(owner, "nonlinearity", nonlinearity,
                     NONLINEARITIES if cell == "rnn" else ("tanh",))
        self.input_shape = check_shape(owner, "input_shape", input_shape, ndim=(2,))
        kwargs = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
        self.rnn = CELLS[cell](self.input_shape[1], hidden_size, num_layers=num_layers,
                               batch_first=True, **kwargs)
        self.head = nn.Linear(hidden_size, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """The last layer's hidden state after the last step, shape (N, hidden_size)."""
        out, _ = self.rnn(x.reshape(x.shape[0], *self.input_shape))
        return out[:, -1]
