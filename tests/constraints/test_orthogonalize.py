"""Hard constraints: orthogonality after training, gain, per-gate blocks, conv view, fused RNN
kernels use the constrained weight, start point, plain state dicts, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from ortho_lightning.constraints import (
    is_orthogonalized,
    orthogonalize,
    remove_orthogonalization,
    split_state_dict,
    update_base,
)
from ortho_lightning.exceptions import ConfigurationError, ShapeError


def _blocks(W, n_blocks):
    M = W.reshape(W.shape[0], -1)
    h = M.shape[0] // n_blocks
    return [M[k * h : (k + 1) * h] for k in range(n_blocks)]


def _max_gram_error(B, gain):
    G = B.T @ B if B.shape[0] >= B.shape[1] else B @ B.T
    return (G / gain**2 - torch.eye(G.shape[0], dtype=G.dtype)).abs().max().item()


# (module factory, tensor name, number of gate blocks)
MODULES = {
    "linear-tall": (lambda: nn.Linear(5, 9), "weight", 1),
    "linear-wide": (lambda: nn.Linear(9, 5), "weight", 1),
    "conv2d": (lambda: nn.Conv2d(2, 6, 3), "weight", 1),
    "rnn-hh": (lambda: nn.RNN(3, 6), "weight_hh_l0", 1),
    "lstm-hh": (lambda: nn.LSTM(3, 5), "weight_hh_l0", 4),
    "gru-ih": (lambda: nn.GRU(3, 5, num_layers=2), "weight_ih_l1", 3),
    "lstmcell-hh": (lambda: nn.LSTMCell(3, 4), "weight_hh", 4),
}


def _forward(module, x):
    if isinstance(module, nn.Linear):
        return module(x[..., : module.in_features])
    if isinstance(module, nn.Conv2d):
        return module(x[:, :2].reshape(-1, 2, 4, 4))
    if isinstance(module, nn.RNNCellBase):  # a non-zero state, so weight_hh gets a gradient
        return module(x[0, :, :3], (x[1, :, :4], x[2, :, :4]))[0]
    return module(x[..., :3])[0]


@pytest.mark.parametrize("name", list(MODULES))
def test_orthogonal_after_hundreds_of_steps(name):
    factory, tensor_name, n_blocks = MODULES[name]
    gain = 1.4 if len(name) % 2 else 1.0
    module = factory().double()
    orthogonalize(module, tensor_name, gain=gain)
    start = getattr(module, tensor_name).detach().clone()
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    x = torch.randn(4, 8, 32, dtype=torch.float64)
    for _ in range(200):
        opt.zero_grad()
        _forward(module, x).square().mean().backward()
        opt.step()
    W = getattr(module, tensor_name).detach()
    for B in _blocks(W, n_blocks):
        assert _max_gram_error(B, gain) < 1e-5
    assert (W - start).abs().max() > 1e-2, "the constrained weight did not move"


def test_relaxed_singular_values_stay_in_band():
    module = nn.Linear(6, 6)
    lam, gain = 0.3, 2.0
    orthogonalize(module, gain=gain, relax=lam)
    opt = torch.optim.SGD(module.parameters(), lr=0.5)
    x = torch.randn(64, 6)
    for _ in range(150):  # the loss pushes the weight towards 0 and out of the band
        opt.zero_grad()
        module(x).square().mean().backward()
        opt.step()
    s = torch.linalg.svdvals(module.weight.detach())
    assert s.min() >= gain * (1 - lam) - 1e-5 and s.max() <= gain * (1 + lam) + 1e-5
    assert s.min() < gain * (1 - lam) + 0.05  # and it did go to the edge of the band


def test_starts_at_projection_of_current_weight():
    module = nn.Linear(7, 4)
    W0 = module.weight.detach().clone()
    U, _, Vh = torch.linalg.svd(W0, full_matrices=False)
    orthogonalize(module, gain=1.5)
    torch.testing.assert_close(module.weight.detach(), 1.5 * U @ Vh, rtol=0, atol=1e-6)


def test_an_orthogonal_init_with_gain_survives_exactly():
    module = nn.RNN(3, 8)
    Q, _ = torch.linalg.qr(torch.randn(8, 8))
    with torch.no_grad():
        module.weight_hh_l0.copy_(1.1 * Q)
    orthogonalize(module, "weight_hh_l0", gain=1.1)
    torch.testing.assert_close(module.weight_hh_l0.detach(), 1.1 * Q, rtol=0, atol=1e-6)


def test_haar_init_draws_from_global_rng_and_is_orthogonal():
    a, b = nn.Linear(6, 6), nn.Linear(6, 6)
    with torch.no_grad():
        b.weight.copy_(a.weight)
    torch.manual_seed(1)
    orthogonalize(a, init="haar")
    torch.manual_seed(2)
    orthogonalize(b, init="haar")
    assert not torch.allclose(a.weight, b.weight)
    assert _max_gram_error(a.weight.detach(), 1.0) < 1e-5


def test_registration_leaves_global_rng_alone():
    module = nn.Linear(3, 8)
    state = torch.get_rng_state()
    orthogonalize(module)  # rectangular: geotorch completes the basis randomly
    assert torch.equal(state, torch.get_rng_state())


def test_conv_constrains_the_flattened_matrix_not_the_kernel_slices():
    conv = nn.Conv2d(2, 5, 3)
    orthogonalize(conv)
    M = conv.weight.detach().flatten(1)  # (5, 18): rows orthonormal
    assert _max_gram_error(M, 1.0) < 1e-5
    slice_ = conv.weight.detach()[0, 0]  # a 3x3 slice is not orthogonal
    assert _max_gram_error(slice_, 1.0) > 0.1


def _hand_recurrence(kind, W_ih, W_hh, b_ih, b_hh, x):
    h = torch.zeros(x.shape[1], W_hh.shape[1], dtype=x.dtype)
    c = torch.zeros_like(h)
    outs = []
    for t in range(x.shape[0]):
        a = x[t] @ W_ih.T + b_ih
        r = h @ W_hh.T + b_hh
        if kind == "rnn":
            h = torch.tanh(a + r)
        elif kind == "lstm":
            i, f, g, o = (a + r).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        else:  # gru
            ar, az, an = a.chunk(3, dim=1)
            rr, rz, rn = r.chunk(3, dim=1)
            reset, update = torch.sigmoid(ar + rr), torch.sigmoid(az + rz)
            n = torch.tanh(an + reset * rn)
            h = (1 - update) * n + update * h
        outs.append(h)
    return torch.stack(outs)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("cached", [False, True], ids=["plain", "cached"])
def test_fused_kernel_uses_the_current_constrained_weight(kind, cached):
    cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind]
    torch.manual_seed(0)
    rnn = cls(3, 5).double()
    orthogonalize(rnn, "weight_hh_l0", gain=1.2)
    opt = torch.optim.Adam(rnn.parameters(), lr=0.05)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    for _ in range(5):  # move the weights so a stale cached copy would be detected
        opt.zero_grad()
        with parametrize.cached() if cached else torch.enable_grad():
            out = rnn(x)[0]
        out.sum().backward()
        opt.step()
    W_hh = rnn.weight_hh_l0.detach()
    assert not parametrize.is_parametrized(rnn, "weight_ih_l0")
    ref = _hand_recurrence(kind, rnn.weight_ih_l0, W_hh, rnn.bias_ih_l0, rnn.bias_hh_l0, x)
    with parametrize.cached() if cached else torch.no_grad():
        out = rnn(x)[0]
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_cached_computes_the_weight_once_per_forward():
    rnn = nn.RNN(3, 6)
    orthogonalize(rnn, "weight_hh_l0")
    param = rnn.parametrizations.weight_hh_l0[0]
    calls = []
    param.register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(20, 2, 3)
    rnn(x)
    uncached = len(calls)
    calls.clear()
    with parametrize.cached():
        rnn(x)
    assert uncached > 1 and len(calls) == 1  # torch 2.13: 4 (hasattr + getattr, twice)


def test_plain_state_dict_round_trip_to_bare_and_constrained_modules():
    src = nn.GRU(3, 4)
    orthogonalize(src, "weight_hh_l0", gain=0.9)
    opt = torch.optim.SGD(src.parameters(), lr=0.1)
    src(torch.randn(5, 2, 3))[0].sum().backward()
    opt.step()
    plain, parametrized = split_state_dict(src.state_dict(), src)
    assert "weight_hh_l0" in plain and not any("parametrizations" in k for k in plain)
    assert set(parametrized) == {
        "parametrizations.weight_hh_l0.original",
        "parametrizations.weight_hh_l0.0.manifold.base",
    }
    bare = nn.GRU(3, 4)
    bare.load_state_dict(plain)  # strict
    torch.testing.assert_close(bare.weight_hh_l0, src.weight_hh_l0.detach())
    constrained = orthogonalize(nn.GRU(3, 4), "weight_hh_l0", gain=0.9)
    constrained.load_state_dict(plain)  # plain weights are projected onto the manifold
    torch.testing.assert_close(constrained.weight_hh_l0, src.weight_hh_l0, rtol=0, atol=1e-6)
    constrained.load_state_dict(parametrized, strict=False)  # exact parametrized state
    for k, v in parametrized.items():
        assert torch.equal(constrained.state_dict()[k], v)
    assert torch.equal(constrained.weight_hh_l0, src.weight_hh_l0)


def test_remove_leaves_the_constrained_value_in_the_same_parameter():
    lin = nn.Linear(4, 4)
    orthogonalize(lin, gain=2.0)
    original = lin.parametrizations.weight.original
    value = lin.weight.detach().clone()
    remove_orthogonalization(lin)
    assert not parametrize.is_parametrized(lin) and type(lin) is nn.Linear
    assert lin.weight is original and torch.equal(lin.weight.detach(), value)
    lin.load_state_dict({"weight": torch.zeros(4, 4), "bias": torch.zeros(4)})  # hook removed
    assert torch.equal(lin.weight.detach(), torch.zeros(4, 4))


def test_update_base_keeps_the_weight_and_resets_the_coordinates():
    lin = nn.Linear(5, 5)
    orthogonalize(lin)
    opt = torch.optim.SGD(lin.parameters(), lr=0.3)
    lin(torch.randn(8, 5)).sum().backward()
    opt.step()
    before = lin.weight.detach().clone()
    assert lin.parametrizations.weight.original.abs().max() > 0
    update_base(lin)
    assert lin.parametrizations.weight.original.abs().max() == 0
    torch.testing.assert_close(lin.weight.detach(), before, rtol=0, atol=1e-6)


def test_bf16_autocast_computes_the_parametrization_in_float32():
    lin = nn.Linear(8, 8)
    orthogonalize(lin)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        W = lin.weight
    assert W.dtype == torch.float32 and _max_gram_error(W.detach(), 1.0) < 1e-5


@pytest.mark.parametrize("triv", ["expm", "cayley"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_module_trivializes_in_float32(triv, dtype):
    """Under bf16-true/16-true the unconstrained tensor and base point are half precision (no
    eigh/lu kernels there): the map runs in float32, the weight is the float32 module's weight
    rounded, and the gradient reaches the unconstrained tensor."""
    lin = nn.Linear(8, 8)
    orthogonalize(lin, gain=1.5, triv=triv)
    with torch.no_grad():  # move off the base point, so the map itself is exercised
        lin.parametrizations.weight.original.copy_(0.3 * torch.randn(8, 8))
    W32 = lin.weight.detach()
    lin = lin.to(dtype)
    W = lin.weight
    assert W.dtype == dtype
    ulp = float(torch.finfo(dtype).eps)
    torch.testing.assert_close(W.detach().float(), W32, rtol=0, atol=8 * ulp)
    assert _max_gram_error(W.detach().float(), 1.5) < 16 * ulp
    lin(torch.randn(4, 8, dtype=dtype)).square().sum().backward()
    grad = lin.parametrizations.weight.original.grad
    assert grad.dtype == dtype and torch.isfinite(grad).all() and grad.abs().max() > 0


@pytest.mark.parametrize(
    "module, kwargs, error, match",
    [
        (nn.Linear(3, 3), {"tensor_name": "bias"}, ShapeError, r"Linear.bias has shape \(3,\)"),
        (nn.Linear(3, 3), {"tensor_name": "weigth"}, ShapeError, "Linear has no tensor 'weigth'; its matrix parameters are \\['weight'\\]"),
        (nn.LSTM(2, 3), {"tensor_name": "weight_hh"}, ShapeError, "LSTM has no tensor 'weight_hh'"),
        (nn.Linear(3, 3), {"gain": -1}, ConfigurationError, "^orthogonalize: gain must be a finite number > 0, got -1$"),
        (nn.Linear(3, 3), {"triv": "qr"}, ConfigurationError, r"^orthogonalize: triv must be one of \['expm', 'cayley'\] or a callable, got 'qr'$"),
        (nn.Linear(3, 3), {"relax": 1.5}, ConfigurationError, r"^orthogonalize: relax must be None or a number in \(0, 1\), got 1.5$"),
        (nn.Linear(3, 3), {"init": "zeros"}, ConfigurationError, r"^orthogonalize: init must be one of \['current', 'haar'\], got 'zeros'$"),
    ],
    ids=["1d", "missing", "missing-rnn", "gain", "triv", "relax", "init"],
)
def test_bad_input(module, kwargs, error, match):
    with pytest.raises(error, match=match):
        orthogonalize(module, **kwargs)


def test_already_parametrized_is_an_error_naming_the_tensor():
    lin = orthogonalize(nn.Linear(3, 3))
    with pytest.raises(ConfigurationError, match="Linear.weight is already parametrized"):
        orthogonalize(lin)
    with pytest.raises(ConfigurationError, match="Linear.bias is not orthogonalized"):
        remove_orthogonalization(lin, "bias")
    assert is_orthogonalized(lin) and not is_orthogonalized(lin, "bias")


def test_relaxed_start_is_clipped_into_the_inner_band_and_update_base_keeps_it():
    lin = nn.Linear(6, 4)
    with torch.no_grad():
        lin.weight.copy_(torch.diag(torch.tensor([0.1, 1.0, 1.05, 3.0]))[:, :4].repeat(1, 2)[:, :6] / 2**0.5)
    s0 = torch.linalg.svdvals(lin.weight.detach())
    lam, gain = 0.2, 1.5
    orthogonalize(lin, gain=gain, relax=lam)
    s = torch.linalg.svdvals(lin.weight.detach())
    # clipped to 1 +- 0.9 * lam (where geotorch's sin map still has a gradient), else unchanged
    expected = torch.clamp(s0 / gain, 1 - 0.9 * lam, 1 + 0.9 * lam) * gain
    torch.testing.assert_close(s, expected, rtol=0, atol=1e-5)
    opt = torch.optim.SGD(lin.parameters(), lr=0.3)
    lin(torch.randn(8, 6)).square().mean().backward()
    opt.step()
    before = lin.weight.detach().clone()
    update_base(lin)
    torch.testing.assert_close(lin.weight.detach(), before, rtol=0, atol=1e-5)
