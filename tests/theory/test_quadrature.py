"""Gaussian expectations and mean-field maps against closed forms and QUADPACK."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm

from ortho_lightning.activations import ACTIVATIONS
from ortho_lightning.exceptions import ConfigurationError, NoCriticalPointError
from ortho_lightning.theory.quadrature import (
    chi1,
    derivative,
    gaussian_expectation,
    length_map,
    length_map_slope,
    variance_fixed_point,
)
from tests.init._reference import expect, tanh_fixed_point

Q = torch.tensor([0.0, 1e-6, 1e-2, 0.5, 1.0, 3.0, 10.0, 100.0, 1e4], dtype=torch.float64)


def _hardtanh_sq(q: torch.Tensor) -> torch.Tensor:
    # E[min(q z^2, 1)] = q E[z^2; |z| < a] + P(|z| > a), a = 1/sqrt(q)
    out = []
    for qi in q.tolist():
        if qi == 0:
            out.append(0.0)
            continue
        a = 1 / math.sqrt(qi)
        inner = (2 * norm.cdf(a) - 1) - 2 * a * norm.pdf(a)
        out.append(qi * inner + 2 * norm.sf(a))
    return torch.tensor(out, dtype=torch.float64)


CLOSED_FORMS = {
    "relu_sq": (lambda h: torch.relu(h) ** 2, lambda q: q / 2),
    "relu_prime_sq": (lambda h: derivative("relu")(h) ** 2, lambda q: (q > 0).double() * 0.5),
    "linear_4th": (lambda h: h**4, lambda q: 3 * q**2),
    "erf_sq": (
        lambda h: torch.erf(h) ** 2,
        lambda q: 2 / math.pi * torch.asin(2 * q / (1 + 2 * q)),
    ),
    "hardtanh_sq": (lambda h: torch.nn.functional.hardtanh(h) ** 2, _hardtanh_sq),
    "hardtanh_prime_sq": (
        lambda h: derivative("hardtanh")(h) ** 2,
        lambda q: torch.where(q > 0, torch.erf(1 / torch.sqrt(2 * q)), torch.ones_like(q)),
    ),
}


@pytest.mark.parametrize("case", list(CLOSED_FORMS), ids=list(CLOSED_FORMS))
def test_gaussian_expectation_matches_closed_forms(case):
    fn, exact = CLOSED_FORMS[case]
    got = gaussian_expectation(fn, Q)
    want = exact(Q)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS), ids=sorted(ACTIVATIONS))
def test_maps_match_quadpack_for_every_activation(name):
    phi = ACTIVATIONS[name]
    dphi = derivative(name)
    breaks = {"relu": (0,), "leaky_relu": (0,), "elu": (0,), "selu": (0,), "hardtanh": (-1, 1)}
    b = breaks.get(name, ())

    def f64(fn):
        return lambda h: float(fn(torch.tensor(h, dtype=torch.float64)))

    for q in (0.3, 2.0, 40.0):
        want_len = 1.7**2 * expect(lambda h: f64(phi)(h) ** 2, q, b) + 0.2**2
        want_chi = 1.7**2 * expect(lambda h: f64(dphi)(h) ** 2, q, b)
        assert float(length_map(q, name, 1.7, 0.2)) == pytest.approx(want_len, rel=1e-10, abs=1e-13)
        assert float(chi1(q, name, 1.7)) == pytest.approx(want_chi, rel=1e-10, abs=1e-13)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS), ids=sorted(ACTIVATIONS))
def test_derivative_matches_finite_differences(name):
    x = torch.linspace(-3.03, 2.97, 61, dtype=torch.float64)  # avoids the kinks at 0, +-1
    eps = 1e-6
    fd = (ACTIVATIONS[name](x + eps) - ACTIVATIONS[name](x - eps)) / (2 * eps)
    torch.testing.assert_close(derivative(name)(x), fd, rtol=1e-6, atol=1e-8)


def test_derivative_accepts_a_callable_and_keeps_shape():
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(derivative(torch.tanh)(x), 1 - torch.tanh(x) ** 2)
    assert derivative(torch.relu).kinks == ()  # torch.relu is not the table's F.relu
    assert derivative("relu").kinks == (0.0,)


@pytest.mark.parametrize("name", ["tanh", "erf", "hardtanh", "relu", "sigmoid", "selu"])
def test_length_map_slope_is_the_derivative_of_the_length_map(name):
    q = torch.tensor([0.2, 1.0, 4.0], dtype=torch.float64)
    eps = 1e-5
    fd = (length_map(q + eps, name, 1.3, 0.1) - length_map(q - eps, name, 1.3, 0.1)) / (2 * eps)
    torch.testing.assert_close(length_map_slope(q, name, 1.3), fd, rtol=1e-7, atol=1e-9)


def test_chi1_closed_forms():
    torch.testing.assert_close(chi1(Q[1:], "relu", math.sqrt(2)), torch.ones(len(Q) - 1, dtype=torch.float64))
    # tanh at q = 0: sigma_w^2 tanh'(0)^2
    assert float(chi1(0.0, "tanh", 1.4)) == pytest.approx(1.96, rel=1e-14)


def test_q_shape_and_float32_input_are_kept_as_float64_shape():
    q = torch.rand(2, 3)
    out = length_map(q, "tanh", 1.1)
    assert out.shape == (2, 3) and out.dtype == torch.float64


@pytest.mark.parametrize(
    "activation,sigma_w,sigma_b,want",
    [
        ("relu", 1.2, 0.3, 0.3**2 / (1 - 1.2**2 / 2)),
        ("linear", 0.8, 0.5, 0.5**2 / (1 - 0.8**2)),
        ("tanh", 0.9, 0.0, 0.0),
        ("relu", math.sqrt(2), 0.0, 1.0),  # every q is fixed: q0 is returned
    ],
    ids=["relu", "linear", "tanh-ordered", "relu-critical"],
)
def test_variance_fixed_point_closed_forms(activation, sigma_w, sigma_b, want):
    assert variance_fixed_point(activation, sigma_w, sigma_b) == pytest.approx(want, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("sigma_w,sigma_b", [(1.5, 0.1), (2.5, 0.5), (1.05, 0.02), (0.7, 0.3)])
def test_variance_fixed_point_tanh_matches_scipy(sigma_w, sigma_b):
    q_star = variance_fixed_point("tanh", sigma_w, sigma_b)
    assert q_star == pytest.approx(tanh_fixed_point(sigma_w, sigma_b), rel=1e-9)


def test_variance_fixed_point_divergence_is_an_error():
    with pytest.raises(NoCriticalPointError, match=r"q\* of relu .*sigma_b=0.1 diverges"):
        variance_fixed_point("relu", math.sqrt(2), 0.1)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"q": -1.0}, "gaussian_expectation: q must be variances >= 0, got -1.0"),
     ({"q": 1.0, "n_points": 1}, "gaussian_expectation: n_points must be an integer >= 2, got 1")],
    ids=["negative-q", "n_points"],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        gaussian_expectation(torch.tanh, **kwargs)
