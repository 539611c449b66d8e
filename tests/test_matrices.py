"""ortho_lightning.matrices: the matrix view of each layer, checked against what the layer
computes (gate blocks reproduce PyTorch's LSTM/GRU cell by hand, conv groups reproduce the
convolution as one matrix product per group)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ortho_lightning.exceptions import ConfigurationError
from ortho_lightning.matrices import (
    check_recurrent,
    matrix_blocks,
    matrix_views,
    recurrent_gates,
    recurrent_weight_names,
)


def _gate_matrices(cell: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """gate -> (W_x, b_x, W_h, b_h), each taken through the block of that gate's label."""
    out = {}
    for block in matrix_blocks(cell):
        gate = block.label.split("[")[1].rstrip("]")
        kind = "ih" if block.tensor_name == "weight_ih" else "hh"
        out.setdefault(gate, {})[kind] = (block.matrix(cell), getattr(cell, f"bias_{kind}")[block.rows])
    return {g: (*d["ih"], *d["hh"]) for g, d in out.items()}


def test_lstm_cell_gate_blocks_compute_the_cell_by_hand():
    torch.manual_seed(0)
    cell = nn.LSTMCell(3, 5).double()
    x, h, c = torch.randn(4, 3).double(), torch.randn(4, 5).double(), torch.randn(4, 5).double()
    g = {k: v[0] @ x.T + v[1][:, None] + v[2] @ h.T + v[3][:, None]
         for k, v in _gate_matrices(cell).items()}
    assert list(g) == ["i", "f", "g", "o"]
    c_new = torch.sigmoid(g["f"]).T * c + torch.sigmoid(g["i"]).T * torch.tanh(g["g"]).T
    h_new = torch.sigmoid(g["o"]).T * torch.tanh(c_new)
    ref_h, ref_c = cell(x, (h, c))
    torch.testing.assert_close(h_new, ref_h, rtol=0, atol=1e-12)
    torch.testing.assert_close(c_new, ref_c, rtol=0, atol=1e-12)


def test_gru_cell_gate_blocks_compute_the_cell_by_hand():
    torch.manual_seed(1)
    cell = nn.GRUCell(3, 5).double()
    x, h = torch.randn(4, 3).double(), torch.randn(4, 5).double()
    m = _gate_matrices(cell)
    assert list(m) == ["r", "z", "n"]

    def lin(gate, inp, kind):
        w, b = (m[gate][0], m[gate][1]) if kind == "x" else (m[gate][2], m[gate][3])
        return inp @ w.T + b

    r = torch.sigmoid(lin("r", x, "x") + lin("r", h, "h"))
    z = torch.sigmoid(lin("z", x, "x") + lin("z", h, "h"))
    n = torch.tanh(lin("n", x, "x") + r * lin("n", h, "h"))
    torch.testing.assert_close((1 - z) * n + z * h, cell(x, h), rtol=0, atol=1e-12)


def test_stacked_bidirectional_lstm_blocks_tile_every_weight():
    lstm = nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    names = recurrent_weight_names(lstm)
    assert names == ["weight_ih_l0", "weight_hh_l0", "weight_ih_l0_reverse", "weight_hh_l0_reverse",
                     "weight_ih_l1", "weight_hh_l1", "weight_ih_l1_reverse", "weight_hh_l1_reverse"]
    blocks = matrix_blocks(lstm)
    assert len(blocks) == 8 * 4
    for name in names:
        mine = [b for b in blocks if b.tensor_name == name]
        assert [b.label for b in mine] == [f"{name}[{g}]" for g in "ifgo"]
        assert [(b.rows.start, b.rows.stop) for b in mine] == [(0, 4), (4, 8), (8, 12), (12, 16)]
        assert all(b.recurrent == name.startswith("weight_hh") for b in mine)
        cols = {"weight_ih_l0": 3, "weight_ih_l0_reverse": 3}.get(name, 8 if "ih" in name else 4)
        assert all(b.matrix(lstm).shape == (4, cols) for b in mine)


def test_plain_rnn_is_one_block_per_tensor():
    rnn = nn.RNN(3, 6, nonlinearity="relu")
    assert recurrent_gates(rnn) == ("h",)
    assert [(b.label, b.recurrent) for b in matrix_blocks(rnn)] == [("weight_ih_l0", False),
                                                                    ("weight_hh_l0", True)]


@pytest.mark.parametrize("groups", [1, 2, 3])
def test_conv_group_blocks_compute_the_convolution(groups):
    torch.manual_seed(groups)
    conv = nn.Conv2d(6, 12, 3, groups=groups, bias=False).double()
    x = torch.randn(2, 6, 5, 5, dtype=torch.float64)
    blocks = matrix_blocks(conv)
    assert len(blocks) == groups
    assert all(b.matrix(conv).shape == (12 // groups, 6 // groups * 9) for b in blocks)
    per_group = 6 // groups
    outs = [b.matrix(conv) @ F.unfold(x[:, g * per_group:(g + 1) * per_group], 3)
            for g, b in enumerate(blocks)]
    torch.testing.assert_close(torch.cat(outs, 1).reshape(2, 12, 3, 3), conv(x), rtol=0, atol=1e-12)


def test_grouped_transposed_conv_is_grouped_along_its_first_dim():
    conv = nn.ConvTranspose1d(4, 6, 3, groups=2)  # weight (in=4, out/g=3, 3)
    blocks = matrix_blocks(conv)
    assert [b.label for b in blocks] == ["weight[group 0]", "weight[group 1]"]
    assert [b.matrix(conv).shape for b in blocks] == [(2, 9), (2, 9)]
    torch.testing.assert_close(torch.cat([b.view(conv) for b in blocks]), conv.weight)


def test_linear_and_modules_without_a_matrix():
    lin = nn.Linear(3, 2)
    (block,) = matrix_blocks(lin)
    assert block.label == "weight"
    assert torch.equal(block.matrix(lin), lin.weight)
    assert matrix_blocks(nn.Tanh()) == [] and matrix_blocks(nn.LayerNorm(4)) == []


def test_views_write_through_to_the_parameter():
    gru = nn.GRU(2, 3)
    with torch.no_grad():
        for label, view in matrix_views(gru):
            if label == "weight_hh_l0[z]":
                view.zero_()
    assert torch.count_nonzero(gru.weight_hh_l0[3:6]) == 0
    assert torch.count_nonzero(gru.weight_hh_l0[:3]) == 9


def test_recurrent_choices_and_non_recurrent_gates():
    assert check_recurrent("hh") == "hh" and check_recurrent("all") == "all"
    with pytest.raises(ConfigurationError, match=r"^check_recurrent: recurrent must be one of \['hh', 'all'\], "
                       r"got 'ih'$"):
        check_recurrent("ih")
    with pytest.raises(ConfigurationError, match=r"^MyOp: recurrent must be one of .*, got None$"):
        check_recurrent(None, "MyOp")
    with pytest.raises(TypeError, match="Linear is not a recurrent module"):
        recurrent_gates(nn.Linear(2, 2))
