"""critical_point against closed forms, an independent scipy solver, and the correlation map."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ortho_lightning.exceptions import ActivationError, ConfigurationError, NoCriticalPointError
from ortho_lightning.theory.criticality import CriticalPoint, critical_point
from tests.init._reference import expect, tanh_critical_point

CLOSED_FORMS = {
    # (activation, sigma_b): (sigma_w, q*)
    "tanh": (("tanh", 0.0), (1.0, 0.0)),
    "hardtanh": (("hardtanh", 0.0), (1.0, 0.0)),
    "erf": (("erf", 0.0), (math.sqrt(math.pi) / 2, 0.0)),  # 1 / erf'(0)
    "relu": (("relu", 0.0), (math.sqrt(2), 1.0)),  # every q is fixed; 1.0 is returned
    "linear": (("linear", 0.0), (1.0, 1.0)),
}


@pytest.mark.parametrize("case", list(CLOSED_FORMS), ids=list(CLOSED_FORMS))
def test_closed_forms(case):
    (activation, sigma_b), (sigma_w, q_star) = CLOSED_FORMS[case]
    cp = critical_point(activation, sigma_b)
    assert isinstance(cp, CriticalPoint)
    assert cp.sigma_w == pytest.approx(sigma_w, rel=1e-12)
    assert cp.q_star == pytest.approx(q_star, abs=1e-12)
    assert cp.chi == pytest.approx(1.0, abs=1e-12)
    assert cp.depth_scale == math.inf  # the variance map has slope 1 at these q*


def _tanh_correlation_map(c: float, q: float, sigma_w: float, sigma_b: float) -> float:
    """c_{l+1} = (sigma_w^2 E[tanh(u1) tanh(u2)] + sigma_b^2) / q* by 2-d Gauss-Hermite (numpy)."""
    z, w = np.polynomial.hermite_e.hermegauss(200)
    w = w / w.sum()
    z1, z2 = np.meshgrid(z, z, indexing="ij")
    u1 = math.sqrt(q) * z1
    u2 = math.sqrt(q) * (c * z1 + math.sqrt(max(1 - c * c, 0.0)) * z2)
    e = float((np.outer(w, w) * np.tanh(u1) * np.tanh(u2)).sum())
    return (sigma_w**2 * e + sigma_b**2) / q


@pytest.mark.parametrize("sigma_b", [0.05, 0.3, 1.0])
def test_tanh_with_bias_matches_an_independent_solver_and_is_critical(sigma_b):
    cp = critical_point("tanh", sigma_b)
    sigma_w_ref, q_ref = tanh_critical_point(sigma_b)
    assert cp.sigma_w == pytest.approx(sigma_w_ref, rel=1e-9)
    assert cp.q_star == pytest.approx(q_ref, rel=1e-9)
    # criticality: the correlation map has slope chi_1 = 1 at c = 1 (finite differences)
    eps = 1e-5
    c1 = _tanh_correlation_map(1.0, cp.q_star, cp.sigma_w, sigma_b)
    assert c1 == pytest.approx(1.0, abs=1e-8)  # q* is a fixed point
    slope = (c1 - _tanh_correlation_map(1 - eps, cp.q_star, cp.sigma_w, sigma_b)) / eps
    assert slope == pytest.approx(1.0, abs=1e-3)
    # the variance map's own slope at q* is NOT 1 (it is chi_1 + sigma_w^2 E[phi phi''] < 1);
    # depth_scale = -1/log(that slope), checked by finite differences with QUADPACK
    h = 1e-4

    def length(q: float) -> float:
        return cp.sigma_w**2 * expect(lambda x: math.tanh(x) ** 2, q) + sigma_b**2

    var_slope = (length(cp.q_star + h) - length(cp.q_star - h)) / (2 * h)
    assert var_slope < 0.95
    assert cp.depth_scale == pytest.approx(-1 / math.log(var_slope), rel=1e-6)


def test_relu_correlation_map_slope_is_one():
    # arc-cosine kernel: E[relu(u1) relu(u2)] = q/(2 pi) (sin t + (pi - t) cos t), c = cos t
    cp = critical_point("relu")

    def cmap(c: float) -> float:
        t = math.acos(c)
        return cp.sigma_w**2 / (2 * math.pi) * (math.sin(t) + (math.pi - t) * math.cos(t))

    eps = 1e-6
    assert (cmap(1.0) - cmap(1 - eps)) / eps == pytest.approx(1.0, abs=1e-3)


def test_callable_activation_gives_the_same_point():
    a = critical_point(lambda x: torch.tanh(x), 0.2)
    b = critical_point("tanh", 0.2)
    assert a.sigma_w == pytest.approx(b.sigma_w, rel=1e-12) and a.q_star == pytest.approx(b.q_star, rel=1e-12)


@pytest.mark.parametrize(
    "activation,sigma_b,match",
    [
        ("relu", 0.1, r"relu has no critical point for sigma_b=0.1: .* q\* diverges"),
        ("linear", 0.5, r"linear has no critical point .* q\* diverges"),
        ("softplus", 0.0, r"softplus has no critical point .* q\* diverges"),
        (lambda x: torch.zeros_like(x) + 1.0, 0.0, r"E\[phi'\(h\)\^2\] = 0"),
    ],
    ids=["relu-bias", "linear-bias", "softplus", "constant"],
)
def test_no_critical_point_says_why(activation, sigma_b, match):
    with pytest.raises(NoCriticalPointError, match=match):
        critical_point(activation, sigma_b)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: critical_point("tanh", -0.1), ConfigurationError, "critical_point: sigma_b must be a finite number >= 0, got -0.1"),
        (lambda: critical_point("swish", 0.0), ActivationError, r"critical_point: activation must be one of \[.*\] or a callable .*, got 'swish'"),
    ],
    ids=["negative-sigma_b", "unknown-activation"],
)
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


# hardtanh is linear on [-1, 1]: below q* ~ 0.2 its sigma_b is of order exp(-1 / (2 q*)) and no
# longer pins q* down in float64, so its round trip is checked where it is well conditioned
ROUND_TRIPS = [(a, q) for a in ("tanh", "erf") for q in (1e-4, 1 / 64, 0.0259, 0.5, 8.0)] + [
    ("hardtanh", 0.5), ("hardtanh", 8.0)
]


@pytest.mark.parametrize("activation,q_star", ROUND_TRIPS)
def test_q_star_form_round_trips_through_the_sigma_b_form(activation, q_star):
    by_q = critical_point(activation, q_star=q_star)
    by_b = critical_point(activation, by_q.sigma_b)
    assert by_q.q_star == q_star
    assert by_b.q_star == pytest.approx(q_star, rel=1e-8)
    assert by_b.sigma_w == pytest.approx(by_q.sigma_w, rel=1e-8)
    assert by_q.chi == pytest.approx(1.0, abs=1e-12)


def test_q_star_form_matches_the_independent_tanh_solver():
    # the Sokol & Park / Hayase & Karakida setting: q* = 0.0259 <-> sigma_b^2 ~ 2e-5
    cp = critical_point("tanh", q_star=0.0259)
    ref = tanh_critical_point(cp.sigma_b)
    assert cp.sigma_w == pytest.approx(ref[0], rel=1e-7)
    assert ref[1] == pytest.approx(0.0259, rel=1e-6)


def test_homogeneous_activation_takes_any_q_star_at_zero_bias():
    cp = critical_point("relu", q_star=3.0)
    assert (cp.sigma_w, cp.sigma_b, cp.q_star) == (pytest.approx(math.sqrt(2)), 0.0, 3.0)


def test_unreachable_q_star_names_the_reachable_range():
    # sigmoid's critical line starts at q* ~ 45.6: below it sigma_b^2 would be negative
    with pytest.raises(NoCriticalPointError, match=r"q_star=0.1.*reachable q\*.*\[45\.6\d*, 1e\+08\]"):
        critical_point("sigmoid", q_star=0.1)
    edge = critical_point("sigmoid", q_star=46.0)
    assert 0 < edge.sigma_b < 1


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"sigma_b": 0.1, "q_star": 0.5}, "give sigma_b or q_star, not both"),
        ({"q_star": 0.0}, "critical_point: q_star must be a finite number > 0, got 0.0"),
        ({"q_star": -1.0}, "critical_point: q_star must be a finite number > 0, got -1.0"),
        ({"q_star": float("nan")}, "critical_point: q_star must be a finite number > 0, got nan"),
    ],
    ids=["both", "zero", "negative", "nan"],
)
def test_bad_q_star(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        critical_point("tanh", **kwargs)
