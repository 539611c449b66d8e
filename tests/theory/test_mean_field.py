"""Mean-field maps against a Monte-Carlo wide random network (float64, width 2000) and
against closed forms (arc-cosine kernel of relu, erf kernel, linear length map of relu)."""

from __future__ import annotations

import math

import pytest
import torch

from ortho_lightning.activations import get_activation
from ortho_lightning.exceptions import ActivationError, ConfigurationError
from ortho_lightning.init import critical_point
from ortho_lightning.theory import correlation_map, mean_field
from ortho_lightning.theory.quadrature import length_map

WIDTH, BATCH = 2000, 48


def _layer(gen, sigma_w, sigma_b, width=WIDTH):
    w = sigma_w * torch.randn(width, width, generator=gen, dtype=torch.float64) / math.sqrt(width)
    b = sigma_b * torch.randn(width, 1, generator=gen, dtype=torch.float64)
    return w, b


def _pair(gen, q, c, width=WIDTH, batch=BATCH):
    """Pre-activations of `batch` input pairs with variance q and correlation c per unit."""
    z1 = torch.randn(width, batch, generator=gen, dtype=torch.float64)
    z2 = torch.randn(width, batch, generator=gen, dtype=torch.float64)
    return math.sqrt(q) * z1, math.sqrt(q) * (c * z1 + math.sqrt(1 - c * c) * z2)


CASES = [("tanh", 2.5, 0.3), ("erf", 1.2, 0.1), ("relu", 1.3, 0.2)]
IDS = [f"{a}-sw{w}-sb{b}" for a, w, b in CASES]


@pytest.mark.parametrize(("act", "sigma_w", "sigma_b"), CASES, ids=IDS)
def test_q_star_chi1_and_correlation_map_match_a_wide_network(act, sigma_w, sigma_b):
    """One wide layer (width 2000, 48 inputs), averaged over 4 independent weight draws: the
    length map (q* is fixed, 2 q* maps to length_map(2 q*)), chi_1 (mean squared gain of the
    layer Jacobian D W on random directions, inputs at q*) and the correlation map at q*."""
    gen = torch.Generator().manual_seed(7)
    phi = get_activation(act)
    dphi = torch.func.vmap(torch.func.grad(phi))
    mf = mean_field(act, sigma_w, sigma_b)
    draws = 4

    def average(stat):
        return sum(stat(*_layer(gen, sigma_w, sigma_b)) for _ in range(draws)) / draws

    def randn():
        return torch.randn(WIDTH, BATCH, generator=gen, dtype=torch.float64)

    for q0 in (mf.q_star, 2 * mf.q_star):
        emp = average(lambda w, b, q0=q0: float((w @ phi(math.sqrt(q0) * randn()) + b).pow(2).mean()))
        ref = float(length_map(q0, act, sigma_w, sigma_b))
        assert emp == pytest.approx(ref, rel=0.02)
        if q0 == mf.q_star:
            assert ref == pytest.approx(mf.q_star, rel=1e-9)

    def gain(w, b):
        h = w @ phi(math.sqrt(mf.q_star) * randn()) + b
        d = dphi(h.reshape(-1)).reshape(h.shape)
        v = randn()
        return float(((d * (w @ v)).pow(2).sum(0) / v.pow(2).sum(0)).mean())

    assert average(gain) == pytest.approx(mf.chi_1, rel=0.02)

    for c in (0.3, 0.9):

        def corr(w, b, c=c):
            h1, h2 = _pair(gen, mf.q_star, c)
            o1, o2 = w @ phi(h1) + b, w @ phi(h2) + b
            return float((o1 * o2).sum() / torch.sqrt(o1.pow(2).sum() * o2.pow(2).sum()))

        ref = float(correlation_map(c, act, sigma_w, sigma_b))
        assert average(corr) == pytest.approx(ref, abs=0.01)


def test_c_star_of_a_chaotic_network_is_reached_by_a_wide_network():
    act, sigma_w, sigma_b = "tanh", 2.5, 0.3
    mf = mean_field(act, sigma_w, sigma_b)
    assert mf.phase == "chaotic" and 0 < mf.c_star < 1
    gen = torch.Generator().manual_seed(3)
    h1, h2 = _pair(gen, mf.q_star, 0.99)
    for _ in range(30):
        w, b = _layer(gen, sigma_w, sigma_b)
        h1, h2 = w @ torch.tanh(h1) + b, w @ torch.tanh(h2) + b
    emp = float((h1 * h2).sum() / torch.sqrt(h1.pow(2).sum() * h2.pow(2).sum()))
    assert emp == pytest.approx(mf.c_star, abs=0.02)
    assert mf.xi_c == pytest.approx(-1 / math.log(mf.chi_c))


@pytest.mark.parametrize("c", [-0.5, 0.0, 0.4, 0.9], ids=lambda c: f"c{c}")
def test_correlation_map_closed_forms(c):
    # relu, arc-cosine kernel (Cho & Saul 2009): E[relu(u1) relu(u2)] =
    # q (sin t + (pi - t) cos t) / (2 pi), t = arccos c
    t = math.acos(c)
    ref = 2.0 * (math.sin(t) + (math.pi - t) * c) / (2 * math.pi)
    assert float(correlation_map(c, "relu", math.sqrt(2), 0.0, q_star=1.0)) == pytest.approx(
        ref, abs=1e-5
    )
    # erf: E[erf(u1) erf(u2)] = (2 / pi) asin(2 q c / (1 + 2 q))
    q, sw, sb = 0.8, 1.3, 0.2
    ref = (sw**2 * 2 / math.pi * math.asin(2 * q * c / (1 + 2 * q)) + sb**2) / q
    assert float(correlation_map(c, "erf", sw, sb, q_star=q)) == pytest.approx(ref, abs=1e-8)


def test_relu_depth_scale_and_fixed_point_closed_form():
    # relu: q_{l+1} = sigma_w^2 q / 2 + sigma_b^2, so q* = sigma_b^2 / (1 - sigma_w^2 / 2)
    # and xi_q = -1 / log(sigma_w^2 / 2); chi_1 = sigma_w^2 / 2
    sw, sb = 1.2, 0.5
    mf = mean_field("relu", sw, sb)
    assert mf.q_star == pytest.approx(sb**2 / (1 - sw**2 / 2), rel=1e-9)
    assert mf.xi_q == pytest.approx(-1 / math.log(sw**2 / 2), rel=1e-6)
    assert mf.chi_1 == pytest.approx(sw**2 / 2, rel=1e-9)
    assert mf.phase == "ordered" and mf.c_star == 1.0
    assert mf.xi_c == pytest.approx(-1 / math.log(sw**2 / 2), rel=1e-9)


@pytest.mark.parametrize(("sigma_w", "phase"), [(0.5, "ordered"), (3.0, "chaotic")],
                         ids=["ordered", "chaotic"])
def test_phase(sigma_w, phase):
    assert mean_field("tanh", sigma_w, 0.1).phase == phase


def test_phase_is_critical_at_the_init_critical_point():
    cp = critical_point("tanh", sigma_b=math.sqrt(0.05))
    mf = mean_field("tanh", cp.sigma_w, cp.sigma_b)
    assert mf.phase == "critical" and mf.xi_c == math.inf and mf.c_star == 1.0
    assert mf.q_star == pytest.approx(cp.q_star, rel=1e-9)


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (("tanh", 0.0, 0.1), ConfigurationError, "mean_field: sigma_w must be a finite number > 0, got 0.0"),
        (("tanh", 1.0, -0.1), ConfigurationError, "mean_field: sigma_b must be a finite number >= 0, got -0.1"),
        (("nope", 1.0, 0.1), ActivationError, r"mean_field: activation must be one of \[.*'tanh'.*\] or a callable .*, got 'nope'"),
    ],
    ids=["sigma_w", "sigma_b", "activation"],
)
def test_bad_input_messages(args, error, match):
    with pytest.raises(error, match=match):
        mean_field(*args)
