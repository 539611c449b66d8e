"""Independent mean-field references for the tests: adaptive scipy quadrature (QUADPACK) of
the Gaussian integrals and a scipy root solve, sharing no code with ``ortho_lightning``."""

from __future__ import annotations

import math

import numpy as np
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
    """(sigma_w, q*) with chi_1 = 1 for tanh, solved as a 2-d root with scipy's hybrid method."""

    def equations(x: np.ndarray) -> list[float]:
        sigma_w, q = x
        chi = sigma_w**2 * expect(lambda h: (1 - math.tanh(h) ** 2) ** 2, q)
        return [chi - 1, sigma_w**2 * expect(lambda h: math.tanh(h) ** 2, q) + sigma_b**2 - q]

    sol = optimize.root(equations, x0=[1.0 + sigma_b, max(sigma_b, 1e-3)], method="hybr", tol=1e-13)
    assert sol.success, sol.message
    return float(sol.x[0]), float(sol.x[1])
