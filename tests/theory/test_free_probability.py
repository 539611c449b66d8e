"""Free-probability Jacobian spectra against closed forms (Fuss-Catalan, point masses, the
S-transform of a Bernoulli law, moments by scipy quadrature) and against the measured spectrum
of wide random tanh networks built here from explicit products D_l W_l in float64."""

from __future__ import annotations

import math
import warnings
from math import comb

import pytest
import torch
from scipy import integrate
from scipy.special import ndtr

from ortho_lightning.exceptions import ConfigurationError
from ortho_lightning.init import critical_point
from ortho_lightning.theory import (
    jacobian_moments,
    jacobian_spectrum_density,
    s_transform_derivative,
    s_transform_weights,
    squared_derivative_law,
    wasserstein1,
)
from ortho_lightning.theory.simulate import random_mlp_jacobian_eigenvalues

SIGMA_B = math.sqrt(0.05)


def fuss_catalan(depth: int, k: int) -> float:
    """k-th moment of the squared singular values of a product of ``depth`` square Ginibre
    matrices of variance 1/N: the Fuss-Catalan number C((L+1)k, k) / (Lk + 1)."""
    return comb((depth + 1) * k, k) / (depth * k + 1)


@pytest.mark.parametrize("depth", [1, 2, 8, 32], ids=lambda d: f"L{d}")
def test_linear_gaussian_is_fuss_catalan(depth):
    spec = jacobian_spectrum_density("linear", 1.0, 0.0, depth, "gaussian")
    assert spec.atoms.numel() == 0
    assert spec.continuous_mass == pytest.approx(1.0, abs=1e-6)
    for k in (1, 2, 3):
        assert spec.moment(k) == pytest.approx(fuss_catalan(depth, k), rel=1e-4)
    # upper edge of the Fuss-Catalan support: (L+1)^(L+1) / L^L
    edge = (depth + 1) ** (depth + 1) / depth**depth
    assert float(spec.edges[-1]) == pytest.approx(edge, rel=1e-6)


@pytest.mark.parametrize("sigma_w", [0.8, 1.3], ids=lambda s: f"sw{s}")
def test_linear_gaussian_scales_with_sigma_w(sigma_w):
    depth = 3
    spec = jacobian_spectrum_density("linear", sigma_w, 0.0, depth, "gaussian")
    for k in (1, 2):
        ref = sigma_w ** (2 * depth * k) * fuss_catalan(depth, k)
        assert spec.moment(k) == pytest.approx(ref, rel=1e-4)


@pytest.mark.parametrize(("sigma_w", "depth"), [(1.0, 1), (0.9, 5), (1.1, 20)],
                         ids=["sw1-L1", "sw0.9-L5", "sw1.1-L20"])
def test_linear_orthogonal_is_a_point_mass(sigma_w, depth):
    spec = jacobian_spectrum_density("linear", sigma_w, 0.0, depth, "orthogonal")
    assert spec.atoms.tolist() == pytest.approx([sigma_w ** (2 * depth)], rel=1e-12)
    assert spec.atom_masses.tolist() == pytest.approx([1.0], abs=1e-12)
    assert spec.continuous_mass == 0.0
    assert float(spec.density.abs().max()) == 0.0
    grid, density = spec  # unpacks as the documented pair
    assert grid.shape == density.shape and grid.dtype == torch.float64


def test_relu_orthogonal_has_half_its_mass_at_zero():
    """D^2 is Bernoulli(1/2) for relu: J J^T has an atom of mass 1/2 at zero (the max of the
    factors' masses at zero) and no other atom beyond one layer; the rest is continuous."""
    spec = jacobian_spectrum_density("relu", math.sqrt(2.0), 0.0, 4, "orthogonal", q_star=1.0)
    assert spec.atoms.tolist() == [0.0]
    assert spec.atom_masses.tolist() == pytest.approx([0.5], abs=1e-9)
    assert spec.continuous_mass == pytest.approx(0.5, abs=1e-4)
    # moments: E[lambda] = chi^L = (2 * 1/2)^4 = 1, normalized variance L * s_D = 4 * 1
    assert spec.moment(1) == pytest.approx(1.0, rel=1e-4)
    assert spec.moment(2) == pytest.approx(1.0 + 4 * 1.0, rel=1e-4)


def test_hardtanh_zero_atom_is_the_saturated_mass():
    q = 2.0
    law = squared_derivative_law("hardtanh", q)
    zero = float(law.atom_masses[law.atoms == 0].sum())
    assert zero == pytest.approx(2 * (1 - ndtr(1 / math.sqrt(q))), abs=1e-9)
    one = float(law.atom_masses[law.atoms == 1].sum())
    assert one == pytest.approx(1 - zero, abs=1e-9)
    spec = jacobian_spectrum_density("hardtanh", 1.0, 0.0, 3, "gaussian", q_star=q)
    assert spec.atoms.tolist() == [0.0]
    assert float(spec.atom_masses[0]) == pytest.approx(zero, abs=1e-9)


def test_incomplete_support_warns():
    """leaky_relu: phi'^2 in {0.01^2, 1}, the spectrum has separated bulks that the
    continuation from the top edge does not all reach; the function says so."""
    with pytest.warns(RuntimeWarning, match=r"has mass \d\.\d{7}, not 1 to 1e-06"):
        spec = jacobian_spectrum_density("leaky_relu", math.sqrt(2), 0.0, 3, "orthogonal",
                                         q_star=1.0, grid_size=400)
    # the atoms (none: masses 1/2 + 1/2 do not exceed 1) are still exact
    assert spec.atoms.numel() == 0


def test_erf_has_no_spurious_atom():
    # erf'^2 = (4 / pi) exp(-2 h^2) is tiny but never constant on [-12, 12] sqrt(q)
    law = squared_derivative_law("erf", 1.0)
    assert law.atoms.size == 0


@pytest.mark.parametrize("m", [0.3, 2.0, complex(0.5, -0.7)], ids=["m0.3", "m2", "complex"])
def test_s_transforms_closed_forms(m):
    # Bernoulli(p) law of D^2 (relu): M(z) = p z / (1 - z), so S(m) = (1 + m) / (p + m)
    law = squared_derivative_law("relu", 1.0)
    assert complex(s_transform_derivative(m, law)) == pytest.approx((1 + m) / (0.5 + m))
    assert complex(s_transform_derivative(m, squared_derivative_law("linear", 1.0))) == (
        pytest.approx(1.0)
    )
    assert complex(s_transform_weights(m, 1.5, "orthogonal")) == pytest.approx(1 / 2.25)
    assert complex(s_transform_weights(m, 1.5, "gaussian")) == pytest.approx(1 / (2.25 * (1 + m)))


@pytest.mark.parametrize("weights", ["orthogonal", "gaussian"])
def test_closed_form_moments_against_scipy_quad(weights):
    sigma_w, depth, q = 1.2, 6, 0.7

    def expect(f):
        g = lambda z: f(math.sqrt(q) * z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
        return integrate.quad(g, -30, 30, epsabs=1e-14, limit=200)[0]

    e2 = expect(lambda h: math.cosh(h) ** -4)
    e4 = expect(lambda h: math.cosh(h) ** -8)
    mo = jacobian_moments("tanh", sigma_w, 0.0, depth, weights, q_star=q)
    chi = sigma_w**2 * e2
    s = e4 / e2**2 - 1 + (weights == "gaussian")
    assert mo.mean == pytest.approx(chi**depth, rel=1e-9)
    assert mo.variance == pytest.approx(chi ** (2 * depth) * depth * s, rel=1e-9)


def test_variance_grows_linearly_for_gaussian_not_for_orthogonal_linear():
    for depth in (1, 4, 16):
        g = jacobian_moments("linear", 1.0, 0.0, depth, "gaussian")
        o = jacobian_moments("linear", 1.0, 0.0, depth, "orthogonal")
        assert g.variance == pytest.approx(depth)
        assert o.variance == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------- tanh at a critical point
@pytest.fixture(scope="module")
def critical():
    cp = critical_point("tanh", sigma_b=SIGMA_B)
    return cp.sigma_w, cp.q_star


@pytest.fixture(scope="module")
def spectra(critical):
    sigma_w, q = critical
    return {
        (w, d): jacobian_spectrum_density("tanh", sigma_w, SIGMA_B, d, w, q_star=q)
        for w in ("orthogonal", "gaussian")
        for d in (8, 32)
    }


CASES = [("orthogonal", 8), ("orthogonal", 32), ("gaussian", 8), ("gaussian", 32)]
IDS = [f"{w}-L{d}" for w, d in CASES]


@pytest.mark.parametrize(("weights", "depth"), CASES, ids=IDS)
def test_density_integrates_to_one_and_matches_closed_moments(spectra, critical, weights, depth):
    sigma_w, q = critical
    spec = spectra[(weights, depth)]
    mo = jacobian_moments("tanh", sigma_w, SIGMA_B, depth, weights, q_star=q)
    assert mo.chi == pytest.approx(1.0, abs=1e-9)
    assert spec.continuous_mass + float(spec.atom_masses.sum()) == pytest.approx(1.0, abs=1e-4)
    assert spec.moment(1) == pytest.approx(mo.mean, rel=1e-4)
    assert spec.moment(2) == pytest.approx(mo.second, rel=1e-4)
    assert bool((spec.density >= 0).all())


@pytest.mark.parametrize("weights", ["orthogonal", "gaussian"])
def test_prediction_matches_wide_tanh_network(spectra, critical, weights):
    """Width 1000, depths 8 and 32 (one network per draw, the depth-8 spectrum taken from the
    first 8 layers). Noise floor: W1 between two independent networks. The prediction must
    sit within 3 floors of the pooled pair, and within 5 floors of each draw."""
    sigma_w, q = critical
    gen = torch.Generator().manual_seed(1234)
    draws = [
        random_mlp_jacobian_eigenvalues("tanh", sigma_w, SIGMA_B, q, (8, 32), 1000, weights, gen)
        for _ in range(2)
    ]
    for depth in (8, 32):
        spec = spectra[(weights, depth)]
        e1, e2 = draws[0][depth], draws[1][depth]
        floor = wasserstein1(e1, e2)
        d1, d2 = wasserstein1(e1, spec), wasserstein1(e2, spec)
        pooled = wasserstein1(torch.cat([e1, e2]), spec)
        print(f"{weights} L={depth}: W1 {d1:.4f} {d2:.4f} pooled {pooled:.4f} floor {floor:.4f}")
        assert pooled < 3 * floor
        assert max(d1, d2) < 5 * floor
        # and the prediction beats a wrong law: the other weight law at the same depth
        other = spectra[("gaussian" if weights == "orthogonal" else "orthogonal", depth)]
        assert pooled < wasserstein1(torch.cat([e1, e2]), other)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weights": "haar"}, r"weights must be one of \['orthogonal', 'gaussian'\], got 'haar'"),
        ({"depth": 0}, "depth must be an integer >= 1, got 0"),
        ({"grid_size": 3}, "jacobian_spectrum_density: grid_size must be an integer >= 16, got 3"),
        ({"sigma_w": 0.0}, "sigma_w must be a finite number > 0, got 0.0"),
        ({"q_star": -1.0}, "q_star must be a finite number >= 0 or None, got -1.0"),
        ({"activation": "swish!"}, r"jacobian_spectrum_density: activation must be one of \[.*\] or a callable .*, got 'swish!'"),
    ],
    ids=["weights", "depth", "grid", "sigma_w", "q_star", "activation"],
)
def test_bad_input_messages(kwargs, match):
    args = {"activation": "tanh", "sigma_w": 1.0, "sigma_b": 0.1, "depth": 2, **kwargs}
    with pytest.raises(ConfigurationError, match=match):
        jacobian_spectrum_density(**args)
    if "grid_size" not in kwargs and "q_star" not in kwargs and "activation" not in kwargs:
        with pytest.raises(ConfigurationError, match=match):
            jacobian_moments(**{k: v for k, v in args.items() if k != "grid_size"})


# ---------------------------------------------------------------- the lower tail (issue 14)
def _no_warning_density(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        return jacobian_spectrum_density(*args, **kwargs)


@pytest.mark.parametrize("q_star", [0.0039, 0.0259, 0.25], ids=lambda q: f"q{q}")
@pytest.mark.parametrize("depth", [2, 8, 64], ids=lambda d: f"L{d}")
def test_near_isometric_density_keeps_its_mass(q_star, depth):
    """Orthogonal tanh on the critical line: mass 1, mean chi^L = 1 and variance L s_D (closed
    forms of jacobian_moments) to 1e-6, 1e-6 and 1e-3, with no warning. The quadrature-law
    continuation lost the lower tail here: mass 0.9978 at q* = 0.0259, depth 4; 0.99912 at
    depth 8 with its variance 1.7% high."""
    cp = critical_point("tanh", q_star=q_star)
    spec = _no_warning_density("tanh", cp.sigma_w, cp.sigma_b, depth, "orthogonal",
                               q_star=q_star)
    mo = jacobian_moments("tanh", cp.sigma_w, cp.sigma_b, depth, "orthogonal", q_star=q_star)
    assert spec.atoms.numel() == 0
    assert spec.continuous_mass == pytest.approx(1.0, abs=1e-6)
    assert spec.moment(1) == pytest.approx(mo.mean, rel=1e-6)
    assert mo.variance == pytest.approx(depth * mo.s_d, rel=1e-9)
    assert spec.moment(2) - spec.moment(1) ** 2 == pytest.approx(mo.variance, rel=1e-3)


def test_lower_tail_against_a_width_1000_network():
    """Depth 8 at q* = 0.0259: the smallest of 1000 measured eigenvalues (0.37 here) lies
    where the predicted law has mass (the old continuation stopped at 0.456), the count
    below 0.55 matches the predicted 10 within Poisson noise, and the Kolmogorov distance
    is within the finite-width floor (0.005 measured)."""
    cp = critical_point("tanh", q_star=0.0259)
    spec = _no_warning_density("tanh", cp.sigma_w, cp.sigma_b, 8, "orthogonal",
                               q_star=cp.q_star)
    gen = torch.Generator().manual_seed(0)
    ev = random_mlp_jacobian_eigenvalues("tanh", cp.sigma_w, cp.sigma_b, cp.q_star, (8,),
                                         1000, "orthogonal", gen)[8]
    assert float(ev.min()) < 0.456
    assert float(spec.cdf(float(ev.min()))) > 1e-5
    expected = 1000 * float(spec.cdf(0.55))
    assert abs(int((ev < 0.55).sum()) - expected) < 3 * math.sqrt(expected) + 1
    ks = (spec.cdf(ev) - torch.arange(1, 1001, dtype=torch.float64) / 1000).abs().max()
    assert float(ks) < 0.02


def test_mass_warning_fires_at_one_in_a_million():
    """Saturated tanh (q* = 1.46): the grid under-resolves the density's singularity at 0 by
    ~1e-4, which the old 1e-3 threshold let through silently."""
    cp = critical_point("tanh", sigma_b=math.sqrt(0.3))
    with pytest.warns(RuntimeWarning, match=r"not 1 to 1e-06: the grid under-resolves"):
        spec = jacobian_spectrum_density("tanh", cp.sigma_w, cp.sigma_b, 2, "orthogonal")
    assert 1e-6 < abs(spec.continuous_mass - 1) < 1e-3


def test_depth_one_orthogonal_is_the_law_of_phi_prime_squared():
    """J J^T = sigma_w^2 W^T D^2 W ~ sigma_w^2 D^2: binned from the exact law (the continuation
    had no top-edge minimum there and returned nan)."""
    cp = critical_point("tanh", q_star=0.0259)
    spec = _no_warning_density("tanh", cp.sigma_w, cp.sigma_b, 1, "orthogonal", q_star=0.0259)
    mo = jacobian_moments("tanh", cp.sigma_w, cp.sigma_b, 1, "orthogonal", q_star=0.0259)
    assert spec.continuous_mass == pytest.approx(1.0, abs=1e-9)
    assert spec.moment(1) == pytest.approx(mo.mean, rel=1e-4)
    assert spec.moment(2) - spec.moment(1) ** 2 == pytest.approx(mo.variance, rel=1e-2)
    assert float(spec.edges[-1]) == pytest.approx(cp.sigma_w**2, rel=1e-9)  # phi'(0)^2 = 1
