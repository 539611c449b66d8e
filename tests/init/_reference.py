"""Independent mean-field references for the tests: adaptive scipy quadrature (QUADPACK) of
the Gaussian integrals and a scipy root solve, sharing no code with ``ortho_lightning``."""

from __future__ import annotations

import math

from scipy import integrate, optimize


def expect(f, q: float, breaks: tuple[float, ...] = ()) -> float:
    """E_{z~N(0,1)}[f(sqrt(q) z)] by QUADPACK over z in [-40, 40], split at ``breaks`` (in h)."""
    s = math.sqrt(q)
    points = sorted({b / s for b in breaks if s > 0 and abs(b / s) < 40})
    edges = [-40.0, *points, 40.0]
    total = 0.0
    for a, b in zip(edges[:-1], edges[1:]):
        total += integrate.quad(
            lambda z: f(s * z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi),
            a,
            b,
            epsabs=1e-14,
            epsrel=1e-13,
            limit=400,
        )[0]
    return total


def tanh_fixed_point(sigma_w: float, sigma_b: float) -> float:
    """q* of the tanh variance map, by brentq on q -> sigma_w^2 E[tanh^2] + sigma_b^2 - q."""
    return optimize.brentq(
        lambda q: sigma_w**2 * expect(lambda h: math.tanh(h) ** 2, q) + sigma_b**2 - q,
        1e-12,
        1e3,
        xtol=1e-14,
    )


def tanh_critical_point(sigma_b: float) -> tuple[float, float]:
    """(sigma_w, q*) with chi_1 = 1 for tanh: brentq over sigma_w of chi_1(q*(sigma_w)) - 1,
    with q*(sigma_w) from :func:`tanh_fixed_point` (nested, unlike the package's 1-d
    elimination)."""

    def chi_minus_one(sigma_w: float) -> float:
        q = tanh_fixed_point(sigma_w, sigma_b)
        return sigma_w**2 * expect(lambda h: (1 - math.tanh(h) ** 2) ** 2, q) - 1

    sigma_w = optimize.brentq(chi_minus_one, 1.0, 4.0, xtol=1e-13)
    return sigma_w, tanh_fixed_point(sigma_w, sigma_b)
