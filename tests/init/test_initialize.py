"""initialize(): whole models at dynamical isometry, the report, selection and errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from ortho_lightning.exceptions import ActivationError, ConfigurationError, SelectionError
from ortho_lightning.init import InitReport, critical_point, initialize
from ortho_lightning.theory.quadrature import chi1, variance_fixed_point


@pytest.mark.parametrize("gain", [1.0, 1.05, 0.9])
def test_deep_linear_net_jacobian_singular_values_are_gain_to_the_depth(gain):
    depth, width = 12, 10
    layers = [nn.Linear(width + 3, width)] + [nn.Linear(width, width) for _ in range(depth - 2)]
    model = nn.Sequential(*layers, nn.Linear(width, width + 4)).double()
    initialize(model, "orthogonal", gain=gain, generator=torch.Generator().manual_seed(0))
    x = torch.randn(width + 3, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(model, x)  # (width + 4, width + 3)
    sv = torch.linalg.svdvals(jac)
    # the narrowest layer (width) bounds the rank; those singular values are exactly gain^depth
    torch.testing.assert_close(sv[:width], torch.full((width,), gain**depth, dtype=torch.float64), rtol=1e-10, atol=0)
    assert sv[width:].abs().max() < 1e-10


def test_gaussian_deep_linear_net_is_not_isometric():
    # the same test would fail for critical Gaussian weights: their singular values spread
    model = nn.Sequential(*[nn.Linear(10, 10) for _ in range(12)]).double()
    initialize(model, "gaussian", gain=1.0, generator=torch.Generator().manual_seed(0))
    sv = torch.linalg.svdvals(torch.autograd.functional.jacobian(model, torch.randn(10, dtype=torch.float64)))
    assert sv.max() / sv.min() > 10


def _tanh_mlp_stats(sigma_w: float, sigma_b: float, width: int = 256, depth: int = 100):
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)]).double()
    initialize(model, "orthogonal", gain=sigma_w, sigma_b=sigma_b, generator=torch.Generator().manual_seed(1))

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h, pre = x, []
        for i, layer in enumerate(model):
            h = layer(h if i == 0 else torch.tanh(h))
            pre.append(h)
        return h, pre

    x = torch.randn(16, width, dtype=torch.float64)
    _, pre = forward(x)
    q = torch.stack([p.pow(2).mean() for p in pre])  # per-layer pre-activation variance
    u = torch.randn_like(x)
    _, ju = torch.func.jvp(lambda v: forward(v)[0], (x,), (u,))
    return q.detach(), float((ju.detach().norm(dim=1) / u.norm(dim=1)).mean())


# one_thread (tests/conftest.py): 256-wide layers gain nothing from intra-op threads; on a
# shared 2-core runner they only contend (measured: 9 s with one thread, minutes with two).
def test_depth_100_tanh_mlp_at_its_critical_point(one_thread):
    sigma_b = 0.3
    cp = critical_point("tanh", sigma_b)
    q, gain = _tanh_mlp_stats(cp.sigma_w, sigma_b)
    # measured: after a few depth scales the variance sits at q* in every layer to the last
    settled = q[10:]
    assert ((settled / cp.q_star - 1).abs() < 0.12).all(), settled
    assert abs(settled.mean() / cp.q_star - 1) < 0.04
    # and a perturbation keeps its size through 100 layers (chi_1 = 1)
    assert 0.3 < gain < 3
    # off the critical line the forward variance settles elsewhere (tanh is bounded) while a
    # perturbation shrinks or grows like chi_1^(depth/2), as the mean-field theory predicts
    for factor, check in ((0.8, lambda g: g < 1e-3), (1.25, lambda g: g > 1e3)):
        sigma_w = factor * cp.sigma_w
        q_off, gain_off = _tanh_mlp_stats(sigma_w, sigma_b)
        q_theory = variance_fixed_point("tanh", sigma_w, sigma_b)
        assert abs(q_off[10:].mean() / q_theory - 1) < 0.04
        assert check(gain_off), (factor, gain_off)
        predicted = 99 / 2 * math.log(float(chi1(q_theory, "tanh", sigma_w)))
        assert math.log(gain_off) == pytest.approx(predicted, rel=0.25)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.Conv2d(4, 4, 3))
        self.rnn = nn.GRU(4, 6)
        self.head = nn.Linear(6, 3)
        self.norm = nn.LayerNorm(3)


def test_report_has_one_record_per_block_and_prints_a_table():
    model = _Net()
    report = initialize(model, gain="critical", activation="tanh", sigma_b=0.1, recurrent="all")
    assert isinstance(report, InitReport)
    names = [r.name for r in report]
    assert names[:4] == ["features.0.weight", "features.0.bias", "features.2.weight", "features.2.bias"]
    assert "rnn.weight_hh_l0[z]" in names and "head.bias" in names
    assert not any(n.startswith("norm") for n in names)  # LayerNorm is not a selected type
    text = str(report)
    lines = text.splitlines()
    assert lines[0].split() == ["name", "shape", "scheme", "gain", "q"]
    assert "rnn.weight_ih_l0[n]  6x4" in text
    assert f"{critical_point('tanh', 0.1).sigma_w:.6g}" in lines[-1]
    assert len(report.rows()) == len(report)


def test_biases_are_normal_with_sigma_b():
    model = nn.Sequential(nn.Linear(3, 20000))
    initialize(model, sigma_b=0.2, generator=torch.Generator().manual_seed(0))
    b = model[0].bias.double()
    assert abs(b.std() / 0.2 - 1) < 5 * math.sqrt(0.5 / b.numel())
    initialize(model, sigma_b=0.0)
    assert model[0].bias.abs().max() == 0


def test_include_and_exclude_select_modules():
    model = _Net()
    before = {n: p.clone() for n, p in model.named_parameters()}
    report = initialize(model, include="features.*", exclude="features.2")
    assert {r.name.split(".weight")[0].split(".bias")[0] for r in report} == {"features.0"}
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"features.0.weight", "features.0.bias"}


def test_same_generator_seed_gives_the_same_model_and_keeps_dtype():
    a, b = _Net(), _Net().double()
    initialize(a, recurrent="all", generator=torch.Generator().manual_seed(3))
    initialize(b, recurrent="all", generator=torch.Generator().manual_seed(3))
    assert b.head.weight.dtype == torch.float64
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa.double(), pb, rtol=0, atol=1e-7)


def test_callable_scheme_is_the_escape_hatch():
    model = nn.Sequential(nn.Linear(4, 4))
    report = initialize(model, scheme=nn.init.xavier_uniform_, gain=0.5)
    assert report.records[0].scheme == "xavier_uniform_"
    assert model[0].weight.abs().max() <= 0.5 * math.sqrt(6 / 8)


class _Scale(nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return 2 * w


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"scheme": "kaiming"}, ConfigurationError, r"initialize: scheme must be one of \['delta_orthogonal', 'gaussian', 'glorot_normal', 'glorot_uniform', 'identity', 'orthogonal'\] or a callable .* got 'kaiming'"),
        ({"fallback": "zeros"}, ConfigurationError, "initialize: fallback must be one of .* got 'zeros'"),
        ({"sigma_b": -1.0}, ConfigurationError, "initialize: sigma_b must be a finite number >= 0, got -1.0"),
        ({"sigma_b": math.inf}, ConfigurationError, "initialize: sigma_b must be a finite number >= 0, got inf"),
        ({"activation": "swish", "gain": "critical"}, ActivationError, r"initialize: activation must be one of \[.*\] or a callable .*, got 'swish'"),
        ({"include": "encoder.*"}, SelectionError, r"include pattern\(s\) \['encoder.\*'\] match no module"),
        ({"recurrent": "ih"}, ConfigurationError, r"initialize: recurrent must be one of \['hh', 'all'\], got 'ih'"),
    ],
    ids=["scheme", "fallback", "sigma_b", "sigma_b-inf", "activation", "include", "recurrent"],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        initialize(_Net(), **kwargs)


def test_parametrized_weight_is_an_error_naming_the_module():
    model = nn.Sequential(nn.Linear(3, 3))
    parametrize.register_parametrization(model[0], "weight", _Scale())
    with pytest.raises(ConfigurationError, match=r"module '0' \(ParametrizedLinear\): 'weight' is parametrized"):
        initialize(model)


@pytest.mark.parametrize("cell", [nn.RNN, nn.LSTM, nn.GRU], ids=["rnn", "lstm", "gru"])
def test_recurrent_hh_sets_only_the_hidden_matrices(cell):
    """recurrent="hh": each gate block of W_hh becomes gain * orthogonal; the input matrix and
    the biases of the recurrent module are left bit for bit, the Linear head is initialised."""
    torch.manual_seed(1)
    model = nn.ModuleDict({"rnn": cell(5, 6, num_layers=2), "head": nn.Linear(6, 3)})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = initialize(model, gain=1.025, recurrent="hh", sigma_b=0.1)
    after = model.state_dict()
    for name, value in after.items():
        if name.startswith("rnn.weight_hh"):
            for block in value.split(6):
                torch.testing.assert_close(block.T @ block, 1.025**2 * torch.eye(6))
        elif name.startswith("rnn."):
            assert torch.equal(value, before[name]), name
        else:
            assert not torch.equal(value, before[name]), name
    assert {r.name.split("[")[0] for r in report.records if r.name.startswith("rnn.")} == {
        "rnn.weight_hh_l0",
        "rnn.weight_hh_l1",
    }
