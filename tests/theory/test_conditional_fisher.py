"""Conditional Fisher of one input (Hayase & Karakida 2020): S-transform moment series against
closed forms, and the predicted spectrum of Theta = J_theta J_theta^T against explicit NTK
matrices of random networks (backward Jacobians by torch.func.jacrev, float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ortho_lightning.exceptions import ConfigurationError
from ortho_lightning.init import critical_point
from ortho_lightning.theory import (
    conditional_fisher_moments,
    conditional_fisher_spectrum,
    jacobian_moments,
    wasserstein1,
)
from ortho_lightning.theory.conditional_fisher import free_product_moments
from ortho_lightning.theory.simulate import random_mlp_ntk_eigenvalues

Q_TANH = 0.0259  # the near-isometric q* of issue 14 (sigma_b^2 = 2.0e-5)


def test_free_product_moments_are_fuss_catalan():
    """Marchenko-Pastur(1) [x] MP(1): squared singular values of a product of two square
    Ginibre matrices, moments C(3k, k) / (2k + 1) = 1, 3, 12, 55, 273."""
    mp = np.array([math.comb(2 * k, k) / (k + 1) for k in range(6)])
    out = free_product_moments(mp, mp)
    assert out.tolist() == pytest.approx([1, 1, 3, 12, 55, 273], rel=1e-12)


def test_linear_orthogonal_theta_is_a_multiple_of_the_identity():
    """Linear orthogonal net: B_l are orthogonal, Theta = q* L I exactly (atom of mass 1)."""
    spec = conditional_fisher_spectrum("linear", 1.0, 0.0, 5, "orthogonal", q_star=1.0)
    assert spec.moments[:3] == pytest.approx((5.0, 25.0, 125.0), rel=1e-12)
    assert spec.lambda_max == pytest.approx(5.0)
    assert spec.density.atoms.tolist() == pytest.approx([5.0])


def test_mean_is_q_star_times_depth_at_criticality():
    """t_{l+1} = 1 + chi t_l: the mean eigenvalue of Theta is q* L at chi = 1, and q* (1 - chi^L)
    / (1 - chi) off it (sigma_w 10% above critical)."""
    cp = critical_point("tanh", q_star=Q_TANH)
    for depth in (2, 7, 64):
        mo = conditional_fisher_moments("tanh", cp.sigma_w, cp.sigma_b, depth, q_star=Q_TANH)
        assert mo[0] == pytest.approx(Q_TANH * depth, rel=1e-9)
    sw = 1.1 * cp.sigma_w
    chi = jacobian_moments("tanh", sw, cp.sigma_b, 1, q_star=Q_TANH).chi
    mo = conditional_fisher_moments("tanh", sw, cp.sigma_b, 9, "gaussian", q_star=Q_TANH)
    assert mo[0] == pytest.approx(Q_TANH * (1 - chi**9) / (1 - chi), rel=1e-9)


@pytest.mark.parametrize("weights", ["orthogonal", "gaussian"])
def test_variance_closed_form(weights):
    """With chi = 1, Var(nu_{l+1}) = Var(nu_l) + l^2 s (normalized variances add under free
    multiplication; s = s_D, or s_D + 1 for Gaussian W), so Var(Theta) = q*^2 s (L - 1) L
    (2L - 1) / 6: relative spread ~ (s L / 3)^(1/2), small only while s_D L << 1."""
    cp = critical_point("tanh", q_star=Q_TANH)
    jm = jacobian_moments("tanh", cp.sigma_w, cp.sigma_b, 1, weights, q_star=Q_TANH)
    for depth in (3, 20, 64):
        mo = conditional_fisher_moments("tanh", cp.sigma_w, cp.sigma_b, depth, weights,
                                        q_star=Q_TANH)
        ref = Q_TANH**2 * (jm.s_d + jm.s_w) * (depth - 1) * depth * (2 * depth - 1) / 6
        assert mo[1] - mo[0] ** 2 == pytest.approx(ref, rel=1e-8)


# (activation, q*, depth, width, grid): tolerances from finite-M fluctuations of one network:
# normalized trace moments fluctuate O(1/M) (0.2-0.6% measured for tanh at M = 256), the top
# eigenvalue O(M^(-2/3)); hard-tanh's per-layer |x_l|^2 fluctuates more (2-4% measured). Hard-
# tanh's top eigenvalue is an atom of mass 1 - (L - 1) P(|h| > 1) (0.91 at L = 3, 0.68 at L = 8).
CASES = [
    ("tanh", Q_TANH, 4, 256, 200, 0.015, 0.02),
    ("tanh", Q_TANH, 16, 384, 200, 0.015, 0.02),
    ("hardtanh", 0.25, 3, 256, 200, 0.03, 0.03),
    ("hardtanh", 0.25, 8, 256, 0, 0.06, 0.03),
]


@pytest.mark.parametrize(("act", "q", "depth", "width", "grid", "tol", "tol_max"), CASES,
                         ids=[f"{c[0]}-L{c[2]}-M{c[3]}" for c in CASES])
def test_against_explicit_ntk_matrices(act, q, depth, width, grid, tol, tol_max):
    cp = critical_point(act, q_star=q)
    ev = random_mlp_ntk_eigenvalues(act, cp.sigma_w, cp.sigma_b, q, depth, width, "orthogonal",
                                    torch.Generator().manual_seed(0))
    if act == "hardtanh":  # separated bulks: part of the continuous mass is missed, and said
        with pytest.warns(RuntimeWarning, match="missed part of the support"):
            spec = conditional_fisher_spectrum(act, cp.sigma_w, cp.sigma_b, depth, "orthogonal",
                                               grid or 64, q_star=q)
    else:
        spec = conditional_fisher_spectrum(act, cp.sigma_w, cp.sigma_b, depth, "orthogonal",
                                           grid, q_star=q)
    if grid:
        # the density (atoms included) is complete to 1e-3 for tanh, to 1e-2 for hard-tanh at
        # L = 3 (0.9934: its two small bulks), and close to the measured eigenvalues (W1 within
        # 1 % of the mean)
        total = spec.density.continuous_mass + float(spec.density.atom_masses.sum())
        assert total == pytest.approx(1.0, abs=1e-2 if act == "hardtanh" else 1e-3)
        assert wasserstein1(ev, spec.density) < 0.01 * spec.mean
        assert spec.density.moment(1) == pytest.approx(spec.mean, rel=1e-2)
    for k in (1, 2, 3):
        assert float((ev**k).mean()) == pytest.approx(spec.moments[k - 1], rel=k * tol)
    assert float(ev.max()) == pytest.approx(spec.lambda_max, rel=tol_max)


@pytest.mark.slow
def test_depth_64_moments_against_explicit_matrix():
    """Moments need no density: depth 64, M = 256 (the mean is q* L, the spread grows)."""
    cp = critical_point("tanh", q_star=Q_TANH)
    ev = random_mlp_ntk_eigenvalues("tanh", cp.sigma_w, cp.sigma_b, Q_TANH, 64, 256,
                                    "orthogonal", torch.Generator().manual_seed(1))
    mo = conditional_fisher_moments("tanh", cp.sigma_w, cp.sigma_b, 64, "orthogonal", q_star=Q_TANH)
    assert mo[0] == pytest.approx(64 * Q_TANH, rel=1e-9)
    for k in (1, 2, 3):
        assert float((ev**k).mean()) == pytest.approx(mo[k - 1], rel=0.02 * k)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"weights": "haar"}, r"conditional_fisher_spectrum: weights must be one of \['orthogonal', 'gaussian'\], got 'haar'"),
     ({"depth": 0}, "conditional_fisher_spectrum: depth must be an integer >= 1, got 0"),
     ({"sigma_w": -1.0}, "conditional_fisher_spectrum: sigma_w must be a finite number > 0, got -1.0")],
    ids=["weights", "depth", "sigma_w"],
)
def test_bad_input(kwargs, match):
    args = {"activation": "tanh", "sigma_w": 1.0, "sigma_b": 0.01, "depth": 3, **kwargs}
    with pytest.raises(ConfigurationError, match=match):
        conditional_fisher_spectrum(**args)
