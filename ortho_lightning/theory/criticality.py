"""The mean-field critical point of a deep network with elementwise activation phi.

Poole et al. 2016, Schoenholz et al. 2017: with weights of variance sigma_w^2 / fan_in and
biases of variance sigma_b^2, the pre-activation variance follows the length map
q_{l+1} = sigma_w^2 E[phi(sqrt(q_l) z)^2] + sigma_b^2 to a fixed point q*, and
chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2] is the slope of the correlation map at c = 1 (and the mean
squared singular value of a layer's Jacobian). The critical point solves both at once:
q* = L(q*) and chi_1 = 1. Eliminating sigma_w^2 = 1 / E[phi'^2] leaves one equation in q,

    r(q) = E[phi(sqrt(q) z)^2] / E[phi'(sqrt(q) z)^2] + sigma_b^2 - q = 0,

solved here by scanning a geometric grid of q and refining the first sign change with Brent's
method (Gaussian integrals from :mod:`ortho_lightning.theory.quadrature`).

Re-exported by :mod:`ortho_lightning.init` (``gain="critical"``), which imports it lazily:
theory never imports init.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch

from ortho_lightning.activations import Activation, activation_name, get_activation
from ortho_lightning.exceptions import ConfigurationError, NoCriticalPointError
from ortho_lightning.theory.quadrature import (
    activation_kinks,
    derivative,
    gaussian_expectation,
    length_map_slope,
)
from ortho_lightning.validation import check_number

_GRID = np.logspace(-10, 8, 91)


class CriticalPoint(NamedTuple):
    """A point on the mean-field critical line.

    Attributes:
        sigma_w: weight scale (weights of variance sigma_w^2 / fan_in, or an orthogonal matrix
            times sigma_w).
        sigma_b: bias standard deviation (as requested).
        q_star: the pre-activation variance fixed point q*. For positively homogeneous
            activations (relu, linear, leaky_relu) at sigma_b = 0 every q is a fixed point;
            1.0 (the variance of a standardised input) is returned.
        chi: chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2] as computed (1 up to rounding).
        depth_scale: xi_q = -1 / log(dq_{l+1}/dq_l at q*), the number of layers over which the
            pre-activation variance relaxes to q* (``math.inf`` when the slope is 1, e.g. tanh
            at sigma_b = 0 or relu). The correlation depth scale xi_c = -1 / log(chi_1) is
            infinite at every critical point by definition, so it is not reported.
    """

    sigma_w: float
    sigma_b: float
    q_star: float
    chi: float
    depth_scale: float


def _moments(
    phi: Activation, dphi: Activation, q: np.ndarray | float, kinks: tuple[float, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(E[phi(sqrt(q) z)^2], E[phi'(sqrt(q) z)^2]), float64 tensors of ``q``'s shape."""
    q_t = torch.as_tensor(q, dtype=torch.float64)
    e_phi2 = gaussian_expectation(lambda h: phi(h) ** 2, q_t, kinks=kinks)
    e_dphi2 = gaussian_expectation(lambda h: dphi(h) ** 2, q_t, kinks=kinks)
    return e_phi2, e_dphi2


def critical_point(
    activation: str | Activation, sigma_b: float | None = None, *, q_star: float | None = None
) -> CriticalPoint:
    """The point of the critical line (chi_1 = 1) for ``activation``, given either the bias
    scale ``sigma_b`` or the fixed point ``q_star`` it should have.

    Along the critical line sigma_w^2 = 1 / E[phi'(sqrt(q*) z)^2] and
    sigma_b^2 = q* - E[phi(sqrt(q*) z)^2] / E[phi'(sqrt(q*) z)^2], so a q* fixes the point
    directly (the papers index their settings by q*: Pennington et al. 2017, Sokol & Park 2020).

    Args:
        activation: a name from :data:`ortho_lightning.activations.ACTIVATIONS` or an
            elementwise callable.
        sigma_b: bias standard deviation >= 0 (default 0 when ``q_star`` is not given).
        q_star: the pre-activation variance fixed point wanted, > 0 (keyword only; give
            ``sigma_b`` or ``q_star``, not both). For positively homogeneous activations every q
            is a fixed point at sigma_b = 0, and ``q_star`` is returned as given.

    Returns:
        :class:`CriticalPoint` (floats). ``critical_point("tanh")`` is sigma_w = 1, q* = 0 (the
        limit of the critical line); ``critical_point("relu")`` is sigma_w = sqrt 2;
        ``critical_point("tanh", q_star=1/64)`` has sigma_b = 0.00201.

    Raises:
        NoCriticalPointError: no q with chi_1 = 1 is a fixed point, e.g. relu with sigma_b > 0
            (on chi_1 = 1 its length map is q -> q + sigma_b^2, so q* diverges), or phi' = 0;
            or no sigma_b >= 0 puts the fixed point at ``q_star`` (the message names the
            reachable range, e.g. sigmoid needs q* above about 3.8).
        ConfigurationError: negative or non-finite ``sigma_b`` or ``q_star``, or both given.
    """
    if q_star is not None:
        if sigma_b is not None:
            raise ConfigurationError(
                f"critical_point: give sigma_b or q_star, not both (got sigma_b={sigma_b!r}, "
                f"q_star={q_star!r})"
            )
        q = check_number("critical_point", "q_star", q_star, positive=True)
        if isinstance(activation, str):
            return _critical_point_at_q_by_name(activation_name(activation, "critical_point"), q)
        return _solve_at_q(activation, q)
    sigma_b = 0.0 if sigma_b is None else check_number("critical_point", "sigma_b", sigma_b, minimum=0)
    if isinstance(activation, str):
        return _critical_point_by_name(activation_name(activation, "critical_point"), sigma_b)
    return _solve(activation, sigma_b)


@lru_cache(maxsize=64)
def _critical_point_at_q_by_name(name: str, q_star: float) -> CriticalPoint:
    return _solve_at_q(name, q_star)


def _functions(activation: str | Activation) -> tuple[str, Activation, Activation, tuple[float, ...]]:
    """``(name, phi, phi', kinks)`` of an activation, as the solvers need them."""
    return (
        activation_name(activation),
        get_activation(activation),
        derivative(activation),
        activation_kinks(activation),
    )


def _point(
    activation: str | Activation, q_star: float, sigma_w: float, sigma_b: float
) -> CriticalPoint:
    """The :class:`CriticalPoint` at ``(q_star, sigma_w, sigma_b)``: chi and the depth scale
    recomputed there."""
    _, phi, dphi, kinks = _functions(activation)
    chi = sigma_w**2 * float(_moments(phi, dphi, q_star, kinks)[1])
    slope = float(length_map_slope(q_star, activation, sigma_w))
    depth = -1.0 / math.log(slope) if 0 < slope < 1 - 1e-12 else math.inf
    return CriticalPoint(sigma_w, sigma_b, q_star, chi, depth)


def _solve_at_q(activation: str | Activation, q_star: float) -> CriticalPoint:
    name, phi, dphi, kinks = _functions(activation)
    e_phi2, e_dphi2 = (float(v) for v in _moments(phi, dphi, q_star, kinks))
    if e_dphi2 <= 0:
        raise NoCriticalPointError(
            f"{name} has no critical point at q_star={q_star:g}: E[phi'(h)^2] = 0 there, so "
            "chi_1 = 1 cannot be reached by any sigma_w"
        )
    sigma_w = 1.0 / math.sqrt(e_dphi2)
    sigma_b2 = q_star - e_phi2 / e_dphi2
    # relative round-off of the quadrature: a homogeneous phi gives sigma_b^2 = 0 up to ~1e-16 q
    if sigma_b2 < -1e-12 * q_star:
        raise NoCriticalPointError(
            f"{name} has no critical point with q_star={q_star:g}: on the critical line "
            f"sigma_b^2 = q* - E[phi^2]/E[phi'^2] = {sigma_b2:.4g} < 0 there; "
            f"{_reachable(phi, dphi, kinks)}"
        )
    return _point(activation, q_star, sigma_w, math.sqrt(sigma_b2) if sigma_b2 > 1e-12 * q_star else 0.0)


def _reachable(phi: Activation, dphi: Activation, kinks: tuple[float, ...]) -> str:
    """Words naming the q* that some sigma_b >= 0 reaches: the intervals of the scan grid where
    sigma_b^2(q) = q - E[phi^2]/E[phi'^2] >= 0, edges refined by Brent's method."""
    from scipy.optimize import brentq

    def sigma_b2(q: float) -> float:
        a, b = _moments(phi, dphi, q, kinks)
        return q - float(a / b)

    e_phi2, e_dphi2 = _moments(phi, dphi, _GRID, kinks)
    ok = (e_dphi2 > 0).numpy() & ((_GRID - (e_phi2 / e_dphi2).numpy()) >= 0)
    if not ok.any():
        return f"no q* in [{_GRID[0]:g}, {_GRID[-1]:g}] is reachable"

    def edge(i: int) -> float:  # the sign change of sigma_b2 between grid points i and i + 1
        return float(brentq(sigma_b2, _GRID[i], _GRID[i + 1], xtol=1e-12, rtol=1e-10))

    runs = []
    for start in np.nonzero(ok & ~np.r_[False, ok[:-1]])[0]:
        stop = start
        while stop + 1 < len(ok) and ok[stop + 1]:
            stop += 1
        low = _GRID[0] if start == 0 else edge(start - 1)
        high = _GRID[-1] if stop == len(ok) - 1 else edge(stop)
        runs.append(f"[{low:.4g}, {high:.4g}]")
    return f"reachable q* (searched from {_GRID[0]:g} to {_GRID[-1]:g}): {' and '.join(runs)}"


@lru_cache(maxsize=64)
def _critical_point_by_name(name: str, sigma_b: float) -> CriticalPoint:
    return _solve(name, sigma_b)


def _solve(activation: str | Activation, sigma_b: float) -> CriticalPoint:
    from scipy.optimize import brentq

    name, phi, dphi, kinks = _functions(activation)
    e_phi2, e_dphi2 = _moments(phi, dphi, _GRID, kinks)
    if (e_dphi2 <= 0).any():
        raise NoCriticalPointError(
            f"{name} has no critical point: E[phi'(h)^2] = 0 for some variance, so chi_1 = 1 "
            "cannot be reached by any sigma_w"
        )
    grid = torch.as_tensor(_GRID, dtype=torch.float64)
    ratio = e_phi2 / e_dphi2
    residual = (ratio + sigma_b**2 - grid).numpy()

    def finish(q_star: float, sigma_w: float) -> CriticalPoint:
        return _point(activation, q_star, sigma_w, sigma_b)

    # positively homogeneous phi (relu, linear, leaky_relu): ratio == q for every q
    if np.allclose(ratio.numpy(), _GRID, rtol=1e-9, atol=0.0):
        if sigma_b > 0:
            raise NoCriticalPointError(
                f"{name} has no critical point for sigma_b={sigma_b}: on the line chi_1 = 1 its "
                f"length map is q -> q + sigma_b^2, so the variance fixed point q* diverges "
                "(use sigma_b = 0)"
            )
        return finish(1.0, float(1 / _moments(phi, dphi, 1.0, kinks)[1].sqrt()))

    zero = torch.zeros((), dtype=torch.float64)
    if sigma_b == 0 and float(phi(zero)) == 0.0 and residual[0] < 0:
        # r(q) < 0 from q = 0+ on: the critical line ends at q* = 0, sigma_w = 1 / |phi'(0)|
        return finish(0.0, float(1 / dphi(zero).abs()))
    crossing = np.nonzero((residual[:-1] > 0) & (residual[1:] <= 0))[0]
    if len(crossing) == 0:
        raise NoCriticalPointError(
            f"{name} has no critical point for sigma_b={sigma_b}: with sigma_w set by "
            f"chi_1 = 1 the length map stays above q for every q up to {_GRID[-1]:g}, so the "
            "variance fixed point q* diverges"
        )
    i = int(crossing[0])

    def r(q: float) -> float:
        a, b = _moments(phi, dphi, q, kinks)
        return float(a / b) + sigma_b**2 - q

    q_star = float(brentq(r, _GRID[i], _GRID[i + 1], xtol=1e-15, rtol=1e-14))
    return finish(q_star, float(1 / _moments(phi, dphi, q_star, kinks)[1].sqrt()))
