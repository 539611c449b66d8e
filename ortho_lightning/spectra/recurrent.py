"""An unrolled, differentiable re-computation of ``nn.RNN``/``nn.LSTM``/``nn.GRU`` that
exposes the per-step pre-activations, so the structured Fisher Gram can treat each recurrent
matrix like a Linear layer applied at T positions (the time steps):

    gi_t = W_ih x_t + b_ih,   gh_t = W_hh h_{t-1} + b_hh,

per-sample gradients W_ih: sum_t d f / d gi_t x_t^T and W_hh: sum_t d f / d gh_t h_{t-1}^T.
Used from a forward hook that replaces the fused kernel's output by the unrolled one (same
values); supported: unidirectional, no projection, any number of layers, batch-first or not,
inter-layer dropout only in eval mode. Anything else returns ``None`` (generic route).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ortho_lightning.spectra.pieces import Piece


def supported(module: nn.Module) -> bool:
    return (
        isinstance(module, (nn.RNN, nn.LSTM, nn.GRU))
        and not module.bidirectional
        and not getattr(module, "proj_size", 0)
        and not (module.training and module.dropout > 0)
    )


def _cell(mode: str, gi: Tensor, gh: Tensor, h: Tensor, c: Tensor | None, relu: bool):
    if mode == "LSTM":
        i, f, g, o = (gi + gh).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    if mode == "GRU":
        ir, iz, inn = gi.chunk(3, dim=-1)
        hr, hz, hn = gh.chunk(3, dim=-1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        n = torch.tanh(inn + r * hn)
        return (1 - z) * n + z * h, None
    pre = gi + gh
    return (torch.relu(pre) if relu else torch.tanh(pre)), None


def unrolled(module: nn.Module, args: tuple, prefix: str) -> tuple[object, list[Piece]] | None:
    """Re-run ``module`` on ``args`` step by step; returns (output as the module returns it,
    pieces), or ``None`` when the call is not supported (unbatched or packed input...)."""
    x = args[0]
    hx = args[1] if len(args) > 1 else None
    if not isinstance(x, Tensor) or x.dim() != 3:
        return None
    mode = "LSTM" if isinstance(module, nn.LSTM) else "GRU" if isinstance(module, nn.GRU) else "RNN"
    relu = mode == "RNN" and module.nonlinearity == "relu"
    seq = x if module.batch_first else x.transpose(0, 1)  # (N, T, I)
    n, steps = seq.shape[0], seq.shape[1]
    layers, hidden = module.num_layers, module.hidden_size
    if hx is None:
        h0 = seq.new_zeros(layers, n, hidden)
        c0 = seq.new_zeros(layers, n, hidden) if mode == "LSTM" else None
    else:
        h0, c0 = hx if mode == "LSTM" else (hx, None)
    pieces: list[Piece] = []
    finals_h, finals_c = [], []
    inp = seq
    for layer in range(layers):
        sfx = f"_l{layer}"
        w_ih, w_hh = getattr(module, "weight_ih" + sfx), getattr(module, "weight_hh" + sfx)
        b_ih = getattr(module, "bias_ih" + sfx) if module.bias else None
        b_hh = getattr(module, "bias_hh" + sfx) if module.bias else None
        gi = torch.nn.functional.linear(inp, w_ih, b_ih)  # (N, T, G*H)
        h, c = h0[layer], (c0[layer] if c0 is not None else None)
        prev, ghs, outs = [], [], []
        for t in range(steps):
            prev.append(h.detach())
            gh = torch.nn.functional.linear(h, w_hh, b_hh)
            ghs.append(gh)
            h, c = _cell(mode, gi[:, t], gh, h, c, relu)
            outs.append(h)
        names_ih = [f"{prefix}weight_ih{sfx}"] + ([f"{prefix}bias_ih{sfx}"] if module.bias else [])
        names_hh = [f"{prefix}weight_hh{sfx}"] + ([f"{prefix}bias_hh{sfx}"] if module.bias else [])
        pieces.append(Piece(inp.detach(), [gi], "blo", bool(module.bias), names_ih))
        pieces.append(Piece(torch.stack(prev, 1), ghs, "steps", bool(module.bias), names_hh))
        inp = torch.stack(outs, 1)
        finals_h.append(h)
        finals_c.append(c)
    output = inp if module.batch_first else inp.transpose(0, 1)
    h_n = torch.stack(finals_h)
    if mode == "LSTM":
        return (output, (h_n, torch.stack(finals_c))), pieces
    return (output, h_n), pieces
