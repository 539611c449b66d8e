"""Keras' default initialisers and ``rest="keras"`` against Keras' formulas, written out here."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ortho_lightning.init import initialize
from ortho_lightning.init.glorot import glorot_normal_, glorot_uniform_


@pytest.mark.parametrize(
    "shape,fan_in,fan_out",
    [((300, 200), 200, 300), ((64, 16, 3, 3), 16 * 9, 64 * 9), ((40, 7, 5), 35, 200)],
    ids=["dense", "conv2d", "conv1d"],
)
def test_glorot_uniform_is_uniform_on_keras_limit(shape, fan_in, fan_out):
    limit = math.sqrt(6 / (fan_in + fan_out))
    w = glorot_uniform_(torch.empty(shape), generator=torch.Generator().manual_seed(0))
    assert float(w.abs().max()) <= limit
    assert float(w.abs().max()) > 0.99 * limit  # the bound is reached, not a smaller one
    n = w.numel()
    assert float(w.var()) == pytest.approx(limit**2 / 3, rel=6 / math.sqrt(n))


def test_glorot_normal_is_keras_truncated_normal():
    fan_in, fan_out = 256, 256
    w = glorot_normal_(torch.empty(fan_out, fan_in), generator=torch.Generator().manual_seed(0))
    std = math.sqrt(2 / (fan_in + fan_out))
    cut = 2 * std / 0.87962566103423978  # Keras truncates its stddev / 0.8796 normal at 2 stddev
    assert float(w.abs().max()) <= cut
    assert float(w.abs().max()) > 0.98 * cut
    assert float(w.std()) == pytest.approx(std, rel=0.01)


class _KerasRNN(nn.Module):
    def __init__(self, cell: type[nn.RNNBase]) -> None:
        super().__init__()
        self.rnn = cell(28, 32, batch_first=True)
        self.head = nn.Linear(32, 10)


@pytest.mark.parametrize("cell,gates", [(nn.RNN, 1), (nn.LSTM, 4), (nn.GRU, 3)])
def test_rest_keras_gives_the_study_its_keras_defaults(cell, gates):
    model = _KerasRNN(cell)
    report = initialize(
        model, "orthogonal", gain=1.025, include="rnn", recurrent="hh", rest="keras",
        generator=torch.Generator().manual_seed(0),
    )
    rnn, head = model.rnn, model.head
    # the scheme's part: every W_hh gate block orthogonal with gain 1.025
    for k in range(gates):
        block = rnn.weight_hh_l0[k * 32 : (k + 1) * 32].detach().double()
        assert torch.allclose(block.T @ block, 1.025**2 * torch.eye(32, dtype=torch.float64), atol=1e-5)
    # Keras' part: the whole stacked input kernel (28, gates * 32) Glorot-uniform, zero biases
    limit_ih = math.sqrt(6 / (28 + gates * 32))
    assert float(rnn.weight_ih_l0.abs().max()) <= limit_ih
    assert float(rnn.weight_ih_l0.abs().max()) > 0.95 * limit_ih
    assert float(head.weight.abs().max()) <= math.sqrt(6 / (32 + 10))
    for bias in (rnn.bias_ih_l0, rnn.bias_hh_l0, head.bias):
        assert torch.count_nonzero(bias) == 0
    kinds = {r.name: r.scheme for r in report}
    assert kinds["rnn.weight_ih_l0"] == "keras glorot_uniform"
    assert kinds["head.bias"] == "keras zeros"


def test_rest_keep_leaves_the_other_tensors_bit_for_bit():
    model = _KerasRNN(nn.RNN)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    initialize(model, "orthogonal", gain=1.0, include="rnn", recurrent="hh",
               generator=torch.Generator().manual_seed(0))
    for name, value in model.named_parameters():
        if name != "rnn.weight_hh_l0":
            assert torch.equal(value, before[name]), name
