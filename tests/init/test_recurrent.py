"""Recurrent modules: every gate block of the input and recurrent matrices on its own."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from ortho_lightning.init import initialize
from ortho_lightning.init.recurrent import gate_blocks

MODULES = {
    "rnn": (lambda: nn.RNN(5, 7, num_layers=2), 1),
    "lstm": (lambda: nn.LSTM(5, 7, bidirectional=True), 4),
    "gru": (lambda: nn.GRU(9, 7), 3),
    "rnn-cell": (lambda: nn.RNNCell(5, 7), 1),
    "lstm-cell": (lambda: nn.LSTMCell(5, 7), 4),
    "gru-cell": (lambda: nn.GRUCell(5, 7), 3),
}


def _is_scaled_isometry(m: torch.Tensor, gain: float) -> bool:
    m = m.double()
    g = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    return torch.allclose(g, gain**2 * torch.eye(g.shape[0], dtype=torch.float64), atol=1e-5)


@pytest.mark.parametrize("kind", list(MODULES), ids=list(MODULES))
def test_every_gate_block_is_orthogonal(kind):
    make, n_gates = MODULES[kind]
    module = make()
    report = initialize(module, "orthogonal", gain=1.3, recurrent="all")
    blocks = gate_blocks(module)
    assert blocks and all(_is_scaled_isometry(view, 1.3) for _, view in blocks)
    for name, p in module.named_parameters():
        if name.startswith("weight_hh"):
            # stacked gate blocks: W^T W = sum_k B_k^T B_k = n_gates gain^2 I (one orthogonal
            # matrix for the whole stack would give gain^2 I instead)
            torch.testing.assert_close(
                p.T.double() @ p.double(), n_gates * 1.69 * torch.eye(7, dtype=torch.float64), atol=1e-5, rtol=0
            )
        if name.startswith("bias"):
            assert p.abs().max() == 0
    assert len([r for r in report if "weight" in r.name]) == len(blocks)


def test_gate_blocks_are_independent_draws():
    module = nn.LSTM(4, 4)
    initialize(module, recurrent="all")
    blocks = [v for label, v in gate_blocks(module) if label.startswith("weight_hh")]
    assert not any(torch.allclose(blocks[i], blocks[j]) for i in range(4) for j in range(i + 1, 4))


def test_identity_gives_irnn_recurrent_matrices():
    rnn = nn.RNN(3, 6, nonlinearity="relu")
    initialize(rnn, "identity", include=[""], recurrent="all")
    assert torch.equal(rnn.weight_hh_l0, torch.eye(6))


def test_lstm_projection_is_its_own_block():
    lstm = nn.LSTM(5, 8, proj_size=3)
    labels = [label for label, _ in gate_blocks(lstm)]
    assert "weight_hr_l0" in labels and "weight_hh_l0[o]" in labels
    initialize(lstm, gain=0.7, recurrent="all")
    assert _is_scaled_isometry(lstm.weight_hr_l0, 0.7)


def test_gate_blocks_rejects_other_modules():
    with pytest.raises(TypeError, match="Linear is not a recurrent module or cell"):
        gate_blocks(nn.Linear(2, 2))


DEFAULT_CHANGES = r"initialize: the default recurrent='all' becomes 'hh' in 0.3.0; pass recurrent= explicitly"


@pytest.mark.parametrize("kind", ["rnn", "lstm-cell"])
def test_recurrent_default_warns_and_still_means_all(kind):
    make, _ = MODULES[kind]
    default, explicit = make(), make()
    with pytest.warns(FutureWarning, match=DEFAULT_CHANGES):
        report = initialize(default, gain=1.3, generator=torch.Generator().manual_seed(5))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        expected = initialize(explicit, gain=1.3, recurrent="all", generator=torch.Generator().manual_seed(5))
    # unchanged behaviour: every tensor (input matrices and biases too) as recurrent="all" sets it
    assert [r.name for r in report] == [r.name for r in expected]
    assert any(r.name.startswith("weight_ih") for r in report)
    for (name, a), b in zip(default.named_parameters(), explicit.parameters()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    "make,kwargs",
    [
        (lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)), {}),  # nothing recurrent
        (lambda: nn.ModuleDict({"rnn": nn.RNN(3, 4), "head": nn.Linear(4, 2)}), {"include": "head"}),
        (lambda: nn.RNN(3, 4), {"recurrent": "all"}),
        (lambda: nn.RNN(3, 4), {"recurrent": "hh"}),
    ],
    ids=["no-recurrent-module", "recurrent-not-selected", "explicit-all", "explicit-hh"],
)
def test_recurrent_default_is_silent_where_it_changes_nothing(make, kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        initialize(make(), **kwargs)
