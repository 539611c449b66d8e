"""Gaussian expectations of activations, and the mean-field maps built on them (float64).

``gaussian_expectation(fn, q)`` is E_{z ~ N(0, 1)}[fn(sqrt(q) z)]. Plain Gauss-Hermite converges
slowly here: for tanh at q = 10 it is off by 1e-5 with 200 nodes, and at a kink (relu,
hardtanh) the error decays only like a power of the node count. So the integral over
z in [-12, 12] (the Gaussian mass outside is 2e-33) is split into panels, each integrated by
Gauss-Legendre against the Gaussian density:

- fixed panels in z (the bulk of the Gaussian),
- panel edges at h = sqrt(q) z = +-1/4 ... +-16, where activations change shape, so large q
  (a narrow transition in z) stays resolved,
- panel edges at the activation's kinks (:data:`KINKS`; ``kinks=`` for other callables), so a
  kinked integrand is smooth on every panel and the rule converges exponentially there too.

The result matches closed forms to ~1e-15 (ReLU: E[relu(sqrt q z)^2] = q / 2, E[relu'^2] = 1/2;
erf: E[erf(sqrt q z)^2] = (2/pi) asin(2q / (1 + 2q)); see ``tests/theory/test_quadrature.py``).

Pure torch; never imports Lightning.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from ortho_lightning.activations import ACTIVATIONS, Activation, activation_name, get_activation
from ortho_lightning.exceptions import NoCriticalPointError
from ortho_lightning.validation import check_int, fail

#: Points (in pre-activation units h) where an activation of the table is not smooth.
KINKS: dict[str, tuple[float, ...]] = {
    "relu": (0.0,),
    "leaky_relu": (0.0,),
    "hardtanh": (-1.0, 1.0),
    "elu": (0.0,),
    "selu": (0.0,),
}

#: Default Gauss-Legendre order per panel.
DEFAULT_POINTS = 24

_Z_MAX = 12.0
_Z_PANELS = 8
_H_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)

QLike = float | Tensor | np.ndarray


def activation_kinks(activation: str | Activation) -> tuple[float, ...]:
    """Kinks of ``activation``: from :data:`KINKS` for a name or a function of the table,
    else the callable's ``kinks`` attribute (set by :func:`derivative`), else none."""
    if isinstance(activation, str):
        return KINKS.get(activation_name(activation), ())
    for name, fn in ACTIVATIONS.items():
        if fn is activation:
            return KINKS.get(name, ())
    return tuple(getattr(activation, "kinks", ()))


@lru_cache(maxsize=16)
def _legendre(n_points: int, device: torch.device) -> tuple[Tensor, Tensor]:
    x, w = np.polynomial.legendre.leggauss(n_points)
    return (
        torch.as_tensor(x, dtype=torch.float64, device=device),
        torch.as_tensor(w, dtype=torch.float64, device=device),
    )


def gaussian_expectation(
    fn: Callable[[Tensor], Tensor],
    q: QLike,
    n_points: int = DEFAULT_POINTS,
    kinks: tuple[float, ...] | None = None,
) -> Tensor:
    """E_{z ~ N(0,1)}[fn(sqrt(q) z)] for every entry of ``q``.

    Args:
        fn: an elementwise function of a float64 tensor (any shape).
        q: variance(s) >= 0; a float or a tensor of any shape.
        n_points: Gauss-Legendre order per panel (see module docstring).
        kinks: points h where ``fn`` is not smooth; default :func:`activation_kinks` of ``fn``.

    Returns:
        float64 tensor of ``q``'s shape (0-d for a float), on ``q``'s device.
    """
    check_int("gaussian_expectation", "n_points", n_points, minimum=2)
    q_t = torch.as_tensor(q, dtype=torch.float64)
    if torch.isnan(q_t).any() or (q_t < 0).any():
        fail("gaussian_expectation", "q", "variances >= 0", q)
    kinks = activation_kinks(fn) if kinks is None else tuple(kinks)
    device = q_t.device
    s = q_t.reshape(-1).sqrt()[:, None]  # (Q, 1)

    h_edges = sorted({*kinks, *_H_SCALES, *(-h for h in _H_SCALES)})
    h_edges_t = torch.tensor(h_edges, dtype=torch.float64, device=device)
    # edge h sits at z = h / sqrt(q); for q = 0 every edge is at +-inf (or 0/0 := 0)
    z_from_h = torch.nan_to_num(h_edges_t / s, nan=0.0).clamp(-_Z_MAX, _Z_MAX)
    z_fixed = torch.linspace(-_Z_MAX, _Z_MAX, _Z_PANELS + 1, dtype=torch.float64, device=device)
    edges = torch.cat([z_fixed.expand(s.shape[0], -1), z_from_h], dim=1).sort(dim=1).values
    lo, hi = edges[:, :-1, None], edges[:, 1:, None]  # (Q, P, 1)

    x, w = _legendre(n_points, device)
    half, mid = (hi - lo) / 2, (hi + lo) / 2
    z = mid + half * x  # (Q, P, n)
    weight = half * w * torch.exp(-z * z / 2 - _LOG_SQRT_2PI)
    values = fn(s[:, :, None] * z)
    return (weight * values.to(torch.float64)).sum(dim=(1, 2)).reshape(q_t.shape)


def derivative(fn: str | Activation) -> Callable[[Tensor], Tensor]:
    """The elementwise derivative phi' of an activation (a name or an elementwise callable),
    by forward-mode autodiff (``torch.func.jvp`` with a tangent of ones). The returned function
    carries the activation's ``kinks``, so :func:`gaussian_expectation` splits there."""
    phi = get_activation(fn)

    def phi_prime(x: Tensor) -> Tensor:
        x = torch.as_tensor(x)
        return torch.func.jvp(phi, (x,), (torch.ones_like(x),))[1]

    phi_prime.kinks = activation_kinks(fn)  # type: ignore[attr-defined]
    phi_prime.__name__ = f"d_{activation_name(fn)}"
    return phi_prime


def length_map(
    q: QLike, activation: str | Activation, sigma_w: float, sigma_b: float = 0.0
) -> Tensor:
    """The variance map q_{l+1} = sigma_w^2 E[phi(sqrt(q_l) z)^2] + sigma_b^2 (Poole 2016),
    a float64 tensor of ``q``'s shape."""
    phi = get_activation(activation)
    kinks = activation_kinks(activation)
    return sigma_w**2 * gaussian_expectation(lambda h: phi(h) ** 2, q, kinks=kinks) + sigma_b**2


def chi1(q: QLike, activation: str | Activation, sigma_w: float) -> Tensor:
    """chi_1 = sigma_w^2 E[phi'(sqrt(q) z)^2]: the slope of the correlation map at c = 1 and the
    mean squared singular value of one layer's Jacobian; a float64 tensor of ``q``'s shape."""
    dphi = derivative(activation)
    return sigma_w**2 * gaussian_expectation(lambda h: dphi(h) ** 2, q, kinks=dphi.kinks)


def length_map_slope(q: QLike, activation: str | Activation, sigma_w: float) -> Tensor:
    """d q_{l+1} / d q_l of :func:`length_map`, = sigma_w^2 E[phi(h) phi'(h) h] / q (Gaussian
    integration by parts; needs only phi', so kinks are fine); sigma_w^2 phi'(0)^2 at q = 0 when
    phi(0) = 0. Not chi_1 in general: it equals chi_1 + sigma_w^2 E[phi phi'']."""
    phi, dphi = get_activation(activation), derivative(activation)
    q_t = torch.as_tensor(q, dtype=torch.float64)
    expect = gaussian_expectation(lambda h: phi(h) * dphi(h) * h, q_t, kinks=dphi.kinks)
    zero = torch.zeros((), dtype=torch.float64, device=q_t.device)
    at_zero = sigma_w**2 * dphi(zero) ** 2
    if phi(zero).abs() > 0:
        at_zero = torch.full_like(at_zero, math.inf)
    return torch.where(q_t > 0, sigma_w**2 * expect / q_t.clamp_min(1e-300), at_zero)


def variance_fixed_point(
    activation: str | Activation,
    sigma_w: float,
    sigma_b: float = 0.0,
    q0: float = 1.0,
    q_max: float = 1e12,
) -> float:
    """The fixed point q* of :func:`length_map` that iterating the map from ``q0`` reaches.

    Found by scanning the residual g(q) = L(q) - q on a geometric grid from ``q0`` in the
    direction the map moves (up if g(q0) > 0, down otherwise) and refining the first sign
    change with Brent's method. When the map is the identity at ``q0`` (e.g. relu with
    sigma_w = sqrt 2, sigma_b = 0: every q is fixed) ``q0`` is returned. Returns 0.0 when the
    variance decays to zero (e.g. tanh with sigma_w <= 1, sigma_b = 0).

    Raises:
        NoCriticalPointError: q* diverges (the map keeps growing past ``q_max``), e.g. relu with
            sigma_w >= sqrt 2 and sigma_b > 0.
    """
    from scipy.optimize import brentq

    def g(q: float) -> float:
        return float(length_map(q, activation, sigma_w, sigma_b)) - q

    g0 = g(q0)
    if abs(g0) <= 1e-12 * max(1.0, q0):
        return float(q0)
    if g0 > 0:
        grid = q0 * 2.0 ** np.arange(1, int(math.log2(q_max / q0)) + 2)
    else:
        grid = np.append(q0 * 2.0 ** -np.arange(1, 61), 0.0)
    residual = (length_map(torch.as_tensor(grid), activation, sigma_w, sigma_b) - torch.as_tensor(grid)).numpy()
    previous = q0
    for q, r in zip(grid, residual):
        if r == 0.0:
            return float(q)
        if (r < 0) == (g0 > 0):
            return float(brentq(g, min(previous, q), max(previous, q), xtol=1e-14, rtol=1e-13))
        previous = q
    if g0 > 0:
        raise NoCriticalPointError(
            f"the variance fixed point q* of {activation_name(activation)} with "
            f"sigma_w={sigma_w}, sigma_b={sigma_b} diverges: q_(l+1) > q_l for every q up to "
            f"{q_max:g}"
        )
    return 0.0
