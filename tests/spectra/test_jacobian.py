import pytest
import torch
from torch import nn

from ortho_lightning.exceptions import ConfigurationError, SelectionError, ShapeError
from ortho_lightning.spectra import (
    fisher_eigenvalues,
    jacobian_singular_values,
    layer_jacobian_singular_values,
    recurrent_state_jacobian_singular_values,
)
from tests.spectra._models import build, dense_jacobian_sv

CASES = [
    ("mlp", "tanh", "auto"),
    ("mlp", "tanh", "forward"),
    ("mlp", "relu", "forward"),
    ("mlp", "linear", "reverse"),
    ("cnn", "tanh", "auto"),
    ("cnn1d", "relu", "auto"),
    ("RNN", "tanh", "auto"),
    ("LSTM", "tanh", "auto"),
    ("GRU", "tanh", "auto"),
    ("norm_dropout", "tanh", "auto"),
    ("inplace", "relu", "auto"),
    ("parametrized", "tanh", "auto"),
]


@pytest.mark.parametrize("kind,act,mode", CASES, ids=["-".join(c) for c in CASES])
@pytest.mark.parametrize("seed", [0])
def test_matches_dense_jacobian(kind, act, mode, seed):
    torch.manual_seed(seed)
    model, x = build(kind, act)
    sv = jacobian_singular_values(model, x, mode=mode)
    model.eval()
    ref = dense_jacobian_sv(model, x)
    assert sv.shape == ref.shape
    torch.testing.assert_close(sv, ref, rtol=1e-9, atol=1e-12)


def test_forward_and_reverse_agree_with_chunks():
    torch.manual_seed(0)
    model, x = build("cnn")
    a = jacobian_singular_values(model, x, mode="forward", chunk_size=7)
    b = jacobian_singular_values(model, x, mode="reverse", chunk_size=2)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("gain,depth", [(1.0, 6), (1.3, 4), (0.7, 5)])
def test_orthogonal_deep_linear_net_gives_gain_to_the_depth(gain, depth):
    torch.manual_seed(depth)
    layers = [nn.Linear(8, 8, bias=False) for _ in range(depth)]
    for layer in layers:
        nn.init.orthogonal_(layer.weight, gain=gain)
    sv = jacobian_singular_values(nn.Sequential(*layers), torch.randn(5, 8))
    torch.testing.assert_close(sv, torch.full((5, 8), gain**depth), rtol=1e-10, atol=0)


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_output_fn_selects_last_hidden_state(cell):
    torch.manual_seed(0)
    rnn = getattr(nn, cell)(3, 4, batch_first=True)
    x = torch.randn(3, 5, 3)

    def last(out):
        return out[0][:, -1]

    sv = jacobian_singular_values(rnn, x, output_fn=last)
    ref = dense_jacobian_sv(lambda v: last(rnn(v)), x)
    torch.testing.assert_close(sv, ref)


def test_layer_to_layer_matches_the_sub_network():
    torch.manual_seed(0)
    model, x = build("mlp")  # 0 Linear, 1 Tanh, 2 Linear, 3 Tanh, 4 Linear
    sv = layer_jacobian_singular_values(model, x, "1", "4")
    hidden = model[:2](x)
    ref = dense_jacobian_sv(model[2:5], hidden)
    torch.testing.assert_close(sv, ref)


def test_layer_to_layer_with_inplace_activation_after_start():
    torch.manual_seed(2)
    model, x = build("inplace")  # 0 Linear, 1 ReLU(inplace), 2 Linear, 3 ReLU(inplace), 4 Linear
    sv = layer_jacobian_singular_values(model, x, "0", "3")
    with torch.no_grad():
        hidden = model[:1](x)
    ref = dense_jacobian_sv(lambda h: model[1:4](h.clone()), hidden)
    torch.testing.assert_close(sv, ref)


def test_layer_to_layer_in_cnn():
    torch.manual_seed(1)
    model, x = build("cnn")
    sv = layer_jacobian_singular_values(model, x, "0", "3", mode="forward")
    ref = dense_jacobian_sv(model[1:4], model[:1](x))
    torch.testing.assert_close(sv, ref)


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("layers", [1, 2])
def test_recurrent_state_jacobian(cell, layers):
    torch.manual_seed(layers)
    rnn = getattr(nn, cell)(3, 4, num_layers=layers, batch_first=True)
    x = torch.randn(3, 6, 3)
    sv = recurrent_state_jacobian_singular_values(rnn, x)
    n_states = 2 if cell == "LSTM" else 1
    size = layers * 4

    def step(flat, xi):  # one sample: state vector -> final state vector
        parts = flat.split(size)
        state = [p.reshape(layers, 1, 4) for p in parts]
        _, hn = rnn(xi[None], tuple(state) if n_states == 2 else state[0])
        outs = hn if isinstance(hn, tuple) else (hn,)
        return torch.cat([o.reshape(-1) for o in outs])

    refs = []
    for xi in x:
        jac = torch.autograd.functional.jacobian(
            lambda s, xi=xi: step(s, xi), torch.zeros(n_states * size)
        )
        refs.append(torch.linalg.svdvals(jac))
    torch.testing.assert_close(sv, torch.stack(refs))


def test_recurrent_state_time_major_with_given_h0():
    torch.manual_seed(0)
    rnn = nn.GRU(3, 4)
    x = torch.randn(6, 2, 3)
    h0 = torch.randn(1, 2, 4)
    sv = recurrent_state_jacobian_singular_values(rnn, x, h0)
    refs = []
    for i in range(2):
        jac = torch.autograd.functional.jacobian(
            lambda h, i=i: rnn(x[:, i : i + 1], h.reshape(1, 1, 4))[1].reshape(-1), h0[0, i]
        )
        refs.append(torch.linalg.svdvals(jac))
    torch.testing.assert_close(sv, torch.stack(refs))


def test_eval_mode_restored_and_no_grad_left():
    torch.manual_seed(0)
    model, x = build("norm_dropout")
    model.train()
    model[3].eval()  # a submodule in its own mode stays so
    first = jacobian_singular_values(model, x)
    second = jacobian_singular_values(model, x)
    torch.testing.assert_close(first, second)  # dropout off: deterministic
    assert model.training and model[0].training and not model[3].training
    assert all(p.grad is None for p in model.parameters())


ERRORS = [
    (lambda m, x: jacobian_singular_values(m, [1, 2]), ShapeError, "must be a torch.Tensor"),
    (lambda m, x: jacobian_singular_values(m, x[:0]), ShapeError,
     r"^jacobian_singular_values: x must be a torch.Tensor batch \(N, ...\) with N >= 1, got "
     r"torch.Size\(\[0, "),
    (
        lambda m, x: jacobian_singular_values(m, x, mode="sideways"),
        ConfigurationError,
        "mode must be one of",
    ),
    (lambda m, x: jacobian_singular_values(m, x.long()), ShapeError, "floating-point input"),
    (
        lambda m, x: jacobian_singular_values(m, x, output_fn=lambda o: (o, o)),
        ShapeError,
        "pass output_fn",
    ),
    (
        lambda m, x: jacobian_singular_values(m, x, output_fn=lambda o: o[:2]),
        ShapeError,
        "expected batch size 4",
    ),
    (
        lambda m, x: layer_jacobian_singular_values(m, x, "nope", "2"),
        SelectionError,
        "start='nope' is not a module",
    ),
    (
        lambda m, x: layer_jacobian_singular_values(m, x, "3", "1"),
        ConfigurationError,
        "ran before start",
    ),
    (
        lambda m, x: layer_jacobian_singular_values(m, x, "1", "1"),
        ConfigurationError,
        "^layer_jacobian_singular_values: end must be a module other than start='1', got '1'$",
    ),
    (
        lambda m, x: recurrent_state_jacobian_singular_values(m, x),
        ConfigurationError,
        "must be an nn.RNN",
    ),
]


@pytest.mark.parametrize("call,error,match", ERRORS, ids=[e[2] for e in ERRORS])
def test_bad_input_errors(call, error, match):
    model, x = build("mlp")
    with pytest.raises(error, match=match):
        call(model, x)


def test_recurrent_state_bad_shapes():
    rnn = nn.LSTM(3, 4, batch_first=True)
    with pytest.raises(ShapeError, match="batched sequence"):
        recurrent_state_jacobian_singular_values(rnn, torch.randn(5, 3))
    with pytest.raises(ShapeError, match="h0 must have shapes"):
        recurrent_state_jacobian_singular_values(rnn, torch.randn(2, 5, 3), torch.zeros(1, 2, 4))


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x: jacobian_singular_values(m, x, eval_mode=False),
        lambda m, x: fisher_eigenvalues(m, x, eval_mode=False),
    ],
    ids=["jacobian", "fisher"],
)
def test_train_mode_batch_norm_is_refused(call):
    model, x = build("norm_dropout")
    with pytest.raises(
        ConfigurationError, match=r"batch-norm modules \['1'\] are in training mode"
    ):
        call(model.train(), x)
    assert model.training


def test_half_precision_model_gives_float32_values():
    torch.manual_seed(0)
    model, x = build("mlp")
    ref = jacobian_singular_values(model, x)
    got = jacobian_singular_values(model.to(torch.bfloat16), x.to(torch.bfloat16))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("shape", [(3, 8, 20), (20, 8), (5, 6)], ids=["wide-batch", "tall", "square"])
def test_singular_values_of_float32_matrices_match_float64_svd(shape):
    """The float64-Gram route for wide/tall float32 matrices is as accurate as float32 svdvals
    (relative to the largest value), on spectra spanning five decades."""
    from ortho_lightning.spectra._common import singular_values

    g = torch.Generator().manual_seed(0)
    m, n = shape[-2:]
    k = min(m, n)
    u = torch.linalg.qr(torch.randn(*shape[:-2], m, k, generator=g))[0]
    v = torch.linalg.qr(torch.randn(*shape[:-2], n, k, generator=g))[0]
    s = torch.logspace(0, -5, k)
    a = ((u * s) @ v.mT).float()
    ref = torch.linalg.svdvals(a.double())
    got = singular_values(a)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    err = ((got.double() - ref).abs() / ref[..., :1]).max()
    assert err < 1e-6
    assert bool((got[..., :-1] >= got[..., 1:]).all())  # descending
