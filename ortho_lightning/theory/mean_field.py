"""Mean-field signal propagation in a wide random network (Poole et al. 2016; Schoenholz et
al. 2017): the length map and its fixed point q*, the correlation map and its fixed point c*,
chi_1, the depth scales xi_q and xi_c, and the phase.

Pre-activations ``h_{l+1} = W_{l+1} phi(h_l) + b_{l+1}``, ``W_ij ~ N(0, sigma_w^2 / N)``,
``b_i ~ N(0, sigma_b^2)``. Single-input expectations come from
:mod:`ortho_lightning.theory.quadrature`; the two-input ones (correlation map) from a
tensor-product Gauss-Hermite rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ortho_lightning.activations import Activation, activation_name, get_activation
from ortho_lightning.theory.quadrature import (
    activation_kinks,
    chi1,
    derivative,
    gaussian_expectation,
    length_map_slope,
    variance_fixed_point,
)
from ortho_lightning.validation import check_number

PHASES = ("ordered", "critical", "chaotic")
_CONV_POINTS = 2401


@dataclass(frozen=True)
class MeanField:
    """Mean-field summary of a network with ``activation`` at (``sigma_w``, ``sigma_b``).

    ``q_star``: fixed point of the length map; ``c_star``: stable fixed point of the
    correlation map (1 in the ordered phase); ``chi_1 = sigma_w^2 E[phi'(h)^2]`` at q*;
    ``chi_c``: slope of the correlation map at c*; ``xi_q = -1 / log(dq_{l+1}/dq_l at q*)``
    and ``xi_c = -1 / log(chi_c)`` (``inf`` at criticality); ``phase``: ``"ordered"``
    (chi_1 < 1), ``"chaotic"`` (chi_1 > 1) or ``"critical"`` (|chi_1 - 1| <= tol)."""

    activation: str
    sigma_w: float
    sigma_b: float
    q_star: float
    c_star: float
    chi_1: float
    chi_c: float
    xi_q: float
    xi_c: float
    phase: str


def _depth_scale(slope: float) -> float:
    if slope <= 0:
        return 0.0
    if slope >= 1:
        return math.inf
    return -1.0 / math.log(slope)


def _with_kinks(fn, kinks):
    def wrapped(x: Tensor) -> Tensor:
        return fn(x)

    wrapped.kinks = tuple(kinks)  # type: ignore[attr-defined]
    return wrapped


def _kinks(fn) -> tuple[float, ...]:
    return tuple(getattr(fn, "kinks", ()))


def _smoothed(g, a: Tensor, s: float) -> Tensor:
    """``E[g(a + s z)]``, ``z ~ N(0, 1)``, for every entry of ``a``: a Gaussian convolution by
    the trapezoid rule on a uniform grid (second order even at a kink of ``g``)."""
    if s < 1e-12:
        return g(a)
    z = torch.linspace(-12.0, 12.0, _CONV_POINTS, dtype=torch.float64)
    w = torch.exp(-z * z / 2) * (z[1] - z[0]) / math.sqrt(2 * math.pi)
    flat = a.reshape(-1, 1)
    return (g(flat + s * z) * w).sum(-1).reshape(a.shape)


def _bivariate(f, g, q: float, c: Tensor) -> Tensor:
    """``E[f(u1) g(u2)]`` for ``(u1, u2)`` Gaussian with variances ``q`` and correlation ``c``
    (a tensor of any shape), as ``E_{u1}[f(u1) E[g(c u1 + sqrt(q (1 - c^2)) z)]]``: the outer
    expectation by :func:`gaussian_expectation` (panels at ``f``'s kinks), the inner by
    :func:`_smoothed`. Float64 tensor of ``c``'s shape."""
    c = torch.as_tensor(c, dtype=torch.float64)
    out = torch.empty_like(c.reshape(-1))
    for i, ci in enumerate(c.reshape(-1).clamp(-1.0, 1.0).tolist()):
        s = math.sqrt(max(q * (1 - ci * ci), 0.0))
        out[i] = gaussian_expectation(
            lambda h, ci=ci, s=s: f(h) * _smoothed(g, ci * h, s), q, kinks=_kinks(f)
        )
    return out.reshape(c.shape)


def correlation_map(
    c: float | Tensor,
    activation: str | Activation,
    sigma_w: float,
    sigma_b: float = 0.0,
    q_star: float | None = None,
) -> Tensor:
    """``c_{l+1} = (sigma_w^2 E[phi(u1) phi(u2)] + sigma_b^2) / q*`` with ``u1, u2`` of
    variance ``q*`` and correlation ``c`` (Poole 2016, eq. 5); float64 tensor of ``c``'s shape.
    ``q_star`` defaults to the fixed point of the length map."""
    phi = _with_kinks(get_activation(activation), activation_kinks(activation))
    q = variance_fixed_point(activation, sigma_w, sigma_b) if q_star is None else q_star
    if q <= 0:
        return torch.ones_like(torch.as_tensor(c, dtype=torch.float64))
    return (sigma_w**2 * _bivariate(phi, phi, q, c) + sigma_b**2) / q


def correlation_slope(
    c: float | Tensor, activation: str | Activation, sigma_w: float, q_star: float
) -> Tensor:
    """``d c_{l+1} / d c_l = sigma_w^2 E[phi'(u1) phi'(u2)]``; equals chi_1 at c = 1."""
    dphi = derivative(activation)
    return sigma_w**2 * _bivariate(dphi, dphi, q_star, c)


def _correlation_fixed_point(activation, sigma_w, sigma_b, q, chi_1) -> float:
    """c* = 1 in the ordered phase; else the root of ``C(c) - c`` below 1 (Brent)."""
    if chi_1 <= 1.0 or q <= 0:
        return 1.0
    from scipy.optimize import brentq

    def g(c: float) -> float:
        return float(correlation_map(c, activation, sigma_w, sigma_b, q_star=q)) - c

    hi = 1.0 - 1e-4
    g0 = g(0.0)
    if abs(g0) < 1e-13:
        return 0.0
    lo = 0.0 if g0 > 0 else -1.0 + 1e-9
    if (g(lo) > 0) == (g(hi) > 0):
        return 1.0  # chi_1 barely above 1: c* is within 1e-4 of 1
    return float(brentq(g, lo, hi, xtol=1e-12))


def mean_field(
    activation: str | Activation,
    sigma_w: float,
    sigma_b: float = 0.0,
    *,
    critical_tol: float = 1e-6,
) -> MeanField:
    """The mean-field record (:class:`MeanField`) of ``activation`` at (``sigma_w``,
    ``sigma_b``).

    Raises:
        ConfigurationError: ``sigma_w <= 0`` or ``sigma_b < 0``.
        NoCriticalPointError: the length map has no finite fixed point (e.g. relu with
            ``sigma_w^2 > 2``).
    """
    check_number("mean_field", "sigma_w", sigma_w, positive=True)
    check_number("mean_field", "sigma_b", sigma_b, minimum=0)
    get_activation(activation, "mean_field")
    q = variance_fixed_point(activation, sigma_w, sigma_b)
    c1 = float(chi1(q, activation, sigma_w))
    c_star = _correlation_fixed_point(activation, sigma_w, sigma_b, q, c1)
    chi_c = c1 if c_star >= 1.0 else float(correlation_slope(c_star, activation, sigma_w, q))
    slope_q = float(length_map_slope(q, activation, sigma_w))
    if abs(c1 - 1.0) <= critical_tol:
        phase = "critical"
    else:
        phase = "ordered" if c1 < 1.0 else "chaotic"
    return MeanField(
        activation=activation_name(activation),
        sigma_w=float(sigma_w),
        sigma_b=float(sigma_b),
        q_star=float(q),
        c_star=float(c_star),
        chi_1=c1,
        chi_c=chi_c,
        xi_q=_depth_scale(slope_q),
        xi_c=math.inf if phase == "critical" else _depth_scale(chi_c),
        phase=phase,
    )
