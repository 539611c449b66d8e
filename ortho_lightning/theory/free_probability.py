"""Free-probability spectrum of the input-output Jacobian of a wide deep network.

For ``J = D_L W_L ... D_1 W_1`` with ``D_l = diag(phi'(h_l))``, ``h_l ~ N(0, q*)`` and ``W_l``
either ``sigma_w`` times a Haar orthogonal matrix or Gaussian with variance ``sigma_w^2 / N``,
the eigenvalues of ``J J^T`` have (as the width grows) the law whose S-transform is

    S_{JJ^T}(m) = prod_l S_{D_l^2}(m) S_{W_l^T W_l}(m)                (Pennington et al. 2017, 2018)

with ``S_{W^T W} = 1 / sigma_w^2`` (orthogonal) or ``1 / (sigma_w^2 (1 + m))`` (Gaussian).
Conventions: ``M(z) = E[x z / (1 - x z)]``, ``chi`` its functional inverse,
``S(m) = (1 + m) / m * chi(m)``, Stieltjes ``G(w) = E[1 / (w - x)] = (1 + M(1/w)) / w`` and
density ``-Im G(x + i0) / pi``.

The density is found by parametrizing with ``zeta = chi_{D^2}(m)``: then ``m = M_{D^2}(zeta)``
is explicit (a quadrature over the law of ``D^2``) and so is ``x(zeta) = 1 / chi_{JJ^T}(m)``;
``x(zeta) = x + i eps`` is solved by complex Newton steps continued along the grid from the
top edge of the support down to zero. For a smooth activation (no atoms in the law of
``D^2``) ``M_{D^2}`` is a Gaussian integral over ``h`` taken on a contour pushed off the real
axis (:func:`contour_law`), which continues it analytically across the support of ``D^2``:
a discrete quadrature of ``D^2`` would instead carry spurious poles there and lose the lower
tail of the spectrum (issue 14: 0.2% of the mass at depth 4 in the near-isometric regime).
Point masses follow the free multiplicative convolution
rules (Bercovici and Voiculescu): ``mu [x] nu ({0}) = max(mu({0}), nu({0}))`` and a non-zero
atom at ``ab`` of mass ``mu({a}) + nu({b}) - 1`` when positive. They are reported apart from
the continuous part, never as a spike on the grid.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from numpy.polynomial.hermite_e import hermegauss
from scipy.special import ndtr
from torch import Tensor

from ortho_lightning.activations import Activation, activation_name, get_activation
from ortho_lightning.theory.quadrature import (
    activation_kinks,
    derivative,
    gaussian_expectation,
    variance_fixed_point,
)
from ortho_lightning.validation import check_choice, check_int, check_number

WEIGHT_LAWS = ("orthogonal", "gaussian")
_ATOM_TOL = 1e-12  # relative tolerance under which phi'(h)^2 counts as constant
_TAU = 0.5  # scale of the cubic node map at the maximum of phi'^2 (contour_law)
_MASS_TOL = 1e-6  # a predicted law whose total mass is further from 1 than this warns


def check_network(owner: str, sigma_w: float, depth: int, weights: str,
                  q_star: float | None = None, *, activation: str | Activation) -> None:
    """The arguments every wide-network theory function shares, checked in the package's one
    format (:mod:`ortho_lightning.validation`) under ``owner``, the public function's name."""
    get_activation(activation, owner)
    check_choice(owner, "weights", weights, WEIGHT_LAWS)
    check_int(owner, "depth", depth, minimum=1)
    check_number(owner, "sigma_w", sigma_w, positive=True)
    check_number(owner, "q_star", q_star, minimum=0, optional=True)


def _derivative(fn: Activation, h: np.ndarray) -> np.ndarray:
    """phi'(h) in float64 via :func:`ortho_lightning.theory.quadrature.derivative`."""
    return derivative(fn)(torch.as_tensor(h, dtype=torch.float64)).detach().numpy()


@dataclass(frozen=True)
class SquaredDerivativeLaw:
    """The law of ``D^2 = phi'(h)^2`` with ``h ~ N(0, q)``: a quadrature of its continuous part
    (``values``, ``probs``) and its exact point masses (``atoms``, ``atom_masses``), all 1-d
    numpy arrays; ``probs.sum() + atom_masses.sum() == 1``."""

    values: np.ndarray
    probs: np.ndarray
    atoms: np.ndarray
    atom_masses: np.ndarray

    def moment(self, k: int) -> float:
        """``E[(D^2)^k]``."""
        return float(np.sum(self.probs * self.values**k) + np.sum(self.atom_masses * self.atoms**k))

    def all_nodes(self) -> tuple[np.ndarray, np.ndarray]:
        """Continuous quadrature nodes and atoms together, as (values, probabilities)."""
        return (np.concatenate([self.values, self.atoms]),
                np.concatenate([self.probs, self.atom_masses]))


def squared_derivative_law(
    activation: str | Activation, q_star: float, nodes: int = 240
) -> SquaredDerivativeLaw:
    """Law of ``phi'(h)^2`` for ``h ~ N(0, q_star)``.

    Intervals of ``h`` on which ``phi'`` is constant (all of it for ``"linear"``, a half-line for
    ``"relu"``, the saturated tails for ``"hardtanh"``) become atoms whose masses are Gaussian
    probabilities of those intervals (edges found by bisection); the rest is a ``nodes``-point
    Gauss-Hermite quadrature, renormalized to the remaining mass.
    """
    fn = get_activation(activation)
    check_number("squared_derivative_law", "q_star", q_star, minimum=0)
    if q_star == 0:  # h = 0: D^2 = phi'(0)^2 surely
        d0 = float(_derivative(fn, np.zeros(1))[0] ** 2)
        return SquaredDerivativeLaw(np.zeros(0), np.zeros(0), np.array([d0]), np.ones(1))
    s = math.sqrt(q_star)
    # 1) atoms: runs of a fine uniform grid on which phi'^2 is constant
    u = np.linspace(-12.0, 12.0, 24001)
    d2 = _derivative(fn, s * u) ** 2
    same = np.abs(np.diff(d2)) <= _ATOM_TOL * np.abs(d2[:-1])  # relative: 0 only equals 0
    atoms: dict[float, float] = {}
    intervals: list[tuple[float, float]] = []
    j = 0
    while j < len(same):
        if not same[j]:
            j += 1
            continue
        k = j
        while k < len(same) and same[k]:
            k += 1
        # run u[j..k] has constant value; need >= 4 points to call it an interval
        if k - j >= 3:
            value = float(d2[j])
            lo = -np.inf if j == 0 else _edge(fn, s, value, u[j - 1], u[j])
            hi = np.inf if k == len(u) - 1 else _edge(fn, s, value, u[k + 1], u[k])
            mass = float(ndtr(hi) - ndtr(lo))
            key = round(value, 12)
            atoms[key] = atoms.get(key, 0.0) + mass
            intervals.append((lo, hi))
        j = k
    # 2) continuous part: Gauss-Hermite nodes outside the atom intervals
    x, w = hermegauss(nodes)
    w = w / math.sqrt(2 * math.pi)
    keep = np.ones_like(x, dtype=bool)
    for lo, hi in intervals:
        keep &= ~((x >= lo) & (x <= hi))
    atom_mass = sum(atoms.values())
    values = _derivative(fn, s * x[keep]) ** 2
    probs = w[keep]
    if probs.sum() > 0 and atom_mass < 1.0:
        probs = probs * (1.0 - atom_mass) / probs.sum()
    else:
        values, probs = values[:0], probs[:0]
    atoms = {a: p for a, p in atoms.items() if p > 1e-12}  # e.g. phi' underflowing to 0
    loc = np.array(sorted(atoms), dtype=float)
    mass = np.array([atoms[a] for a in sorted(atoms)], dtype=float)
    mass = mass / (mass.sum() + probs.sum())  # exact total 1
    return SquaredDerivativeLaw(values, probs, loc, mass)


def _edge(fn: Activation, s: float, value: float, outside: float, inside: float) -> float:
    """Bisect between a grid point where ``phi'(s u)^2 != value`` and one where it equals it."""
    for _ in range(60):
        mid = 0.5 * (outside + inside)
        d = _derivative(fn, np.array([s * mid]))[0] ** 2
        if abs(d - value) <= _ATOM_TOL * abs(value):
            inside = mid
        else:
            outside = mid
    return 0.5 * (outside + inside)


def contour_law(
    activation: str | Activation, q_star: float, shift: float = 0.5
) -> tuple[np.ndarray, np.ndarray] | None:
    """Complex nodes ``v`` and weights ``w`` (1-d numpy complex arrays) such that
    ``sum(w * f(v)) = E[f(phi'(h)^2)]``, ``h ~ N(0, q_star)``, for every ``f`` analytic on the
    range of ``phi'^2``: the trapezoid rule on the contour ``h = sqrt(q*) (z + i a(z))``,
    ``z in [-10, 10]``, with ``a(z) = -c tanh(g'(z) / delta)`` (``g(z) = phi'(sqrt(q*) z)^2``,
    ``delta = E[g'(z)^2]^(1/2)``, so the shift is O(c) over the Gaussian bulk).

    Along it ``Im phi'(h)^2 ~ g'(z) a(z) <= 0``: the contour passes below every pole
    ``u = 1 / zeta`` with ``Im zeta < 0`` (the physical side, ``Im w > 0``), so the sum is the
    Cauchy-type integral ``M_{D^2}(zeta)`` there and its analytic continuation a little across
    the real axis, with no spurious pole at each quadrature node. ``c = min(shift, 0.25 /
    sqrt(q*))`` keeps ``h`` clear of the complex singularities of ``phi'`` (tanh's at
    ``i pi / 2``), and the spacing ``min(c, 1 / sqrt(q*)) / 8`` makes the rule exact to ~1e-12
    (321 nodes at q* = 0.026, 2025 at q* = 10).

    Returns ``None`` when it does not apply: the activation has kinks (its law has atoms),
    ``phi'(h)^2`` is not unimodal in ``h`` (rises, then falls: tanh, sigmoid, erf),
    ``phi'`` cannot be evaluated at complex points, or the rule fails its self-check (total
    weight 1 and ``E[phi'^2]`` equal to the real Gauss-Legendre quadrature's to 1e-10)."""
    if activation_kinks(activation) or not q_star > 0:
        return None
    s = math.sqrt(q_star)
    c = min(shift, 0.25 / s)
    n = int(math.ceil(20.0 * 8.0 / min(c, 1.0 / s, _TAU))) | 1  # spacing min(c, 1/s, tau)/8
    d1 = derivative(activation)
    d2, d3 = derivative(d1), derivative(derivative(d1))
    # nodes z = z_m + u^3 / (u^2 + tau^2) for equal steps of u: cubic at the maximum z_m of
    # phi'^2, where the contour cannot leave the real axis and M_{D^2} has its square-root
    # branch point (poles at distance y from z_m are y^(1/3) tau^(2/3) away in u)
    zf = torch.linspace(-10.0, 10.0, 20001, dtype=torch.float64)
    try:
        with torch.no_grad():
            z_m = float(zf[int(torch.argmax(d1(s * zf) ** 2))])
            u = torch.linspace(-10.0 - z_m, 10.0 - z_m, n, dtype=torch.float64)
            z = z_m + u**3 / (u**2 + _TAU**2)
            dz = (u**4 + 3 * _TAU**2 * u**2) / (u**2 + _TAU**2) ** 2
            p1, p2, p3 = d1(s * z), d2(s * z), d3(s * z)
            gp = 2 * p1 * p2 * s  # g'(z)
            gpp = 2 * (p2**2 + p1 * p3) * s * s  # g''(z)
            gauss = torch.exp(-z * z / 2) * dz
            delta = float(((gp**2 * gauss).sum() / gauss.sum()).sqrt())  # rms of g'
            sign = torch.sign(gp)[gp.abs() > 1e-9 * float(gp.abs().max())]
            if not delta > 0 or bool((sign[1:] > sign[:-1]).any()):
                return None  # phi'^2 not unimodal (sin, silu): one shift cannot avoid its poles
            th = torch.tanh(gp / delta)
            a, da = -c * th, -c * (1 - th**2) * gpp / delta
            zc = torch.complex(z, a)
            values = d1(s * zc) ** 2
            weights = torch.exp(-zc * zc / 2) * torch.complex(torch.ones_like(z), da) * dz
            weights = weights * float(u[1] - u[0]) / math.sqrt(2 * math.pi)
    except (RuntimeError, TypeError, NotImplementedError):  # no complex support (erf)
        return None
    v, w = values.numpy(), weights.numpy()
    if not (np.isfinite(v).all() and np.isfinite(w).all()):
        return None
    e2 = gaussian_expectation(lambda h: d1(h) ** 2, q_star)
    if abs(w.sum() - 1) > 1e-10 or abs(np.sum(w * v) - float(e2)) > 1e-10 * float(e2):
        return None
    return v, w


def _q_star(activation, sigma_w: float, sigma_b: float) -> float:
    """Fixed point of the length map; any value for linear nets (D = I whatever q is)."""
    if isinstance(activation, str) and activation_name(activation) == "linear":
        return 1.0
    return variance_fixed_point(activation, sigma_w, sigma_b)


# ---------------------------------------------------------------------------- S-transforms
def s_transform_weights(m: complex | np.ndarray, sigma_w: float, weights: str = "orthogonal"):
    """S-transform of ``W^T W`` for a wide square ``W``: ``1 / sigma_w^2`` for ``sigma_w``
    times an orthogonal matrix, ``1 / (sigma_w^2 (1 + m))`` for i.i.d. Gaussian entries of
    variance ``sigma_w^2 / N`` (Marchenko-Pastur with ratio 1)."""
    check_choice("s_transform_weights", "weights", weights, WEIGHT_LAWS)
    m = np.asarray(m)
    if weights == "orthogonal":
        return np.ones_like(m) / sigma_w**2
    return 1.0 / (sigma_w**2 * (1.0 + m))


def _m_of_zeta(values: np.ndarray, probs: np.ndarray, zeta):
    """``M_{D^2}(zeta)`` and its derivative for a discrete law (vectorized over ``zeta``)."""
    zeta = np.asarray(zeta)[..., None]
    r = 1.0 / (1.0 - values * zeta)
    m = np.sum(probs * values * zeta * r, axis=-1)
    dm = np.sum(probs * values * r * r, axis=-1)
    return m, dm


def s_transform_derivative(m: complex, law: SquaredDerivativeLaw) -> complex:
    """S-transform of ``D^2`` at ``m``: ``(1 + m) / m * zeta`` with ``M_{D^2}(zeta) = m``,
    found by Newton steps continued along ``t m`` for ``t`` from 0 to 1 (``zeta ~ t m / E[D^2]``
    near 0 picks the branch through the origin)."""
    values, probs = law.all_nodes()
    mean = float(np.sum(values * probs))
    m = complex(m)
    zeta = 0j
    for t in np.linspace(0.0, 1.0, 41)[1:]:
        target = t * m
        if zeta == 0:
            zeta = target / mean
        for _ in range(50):
            f, df = _m_of_zeta(values, probs, zeta)
            step = complex(f - target) / complex(df)
            zeta -= step
            if abs(step) <= 1e-15 * max(abs(zeta), 1e-300):
                break
    return (1 + m) / m * zeta


def jacobian_s_transform(
    m: complex, law: SquaredDerivativeLaw, sigma_w: float, depth: int, weights: str = "orthogonal"
) -> complex:
    """``S_{JJ^T}(m) = (S_{D^2}(m) S_{W^T W}(m))^depth`` (all layers at the fixed point)."""
    return complex(
        (s_transform_derivative(m, law) * s_transform_weights(m, sigma_w, weights)) ** depth
    )


# ---------------------------------------------------------------------------- moments
@dataclass(frozen=True)
class JacobianMoments:
    """Closed-form moments of the eigenvalues ``lambda`` of ``J J^T``.

    ``mean = chi^L`` with ``chi = sigma_w^2 E[D^2]``; ``second = mean^2 (1 + L (s_D + s_W))``
    where ``s_D = E[D^4] / E[D^2]^2 - 1`` and ``s_W = 0`` (orthogonal) or ``1`` (Gaussian):
    normalized variances add under free multiplication (first-order expansion of the
    S-transform, ``S(m) = (1 - s m + ...) / mean``). At criticality (chi = 1) the variance is
    ``L (s_D + 1)`` for Gaussian weights, growing linearly in depth even for linear nets, and
    ``L s_D`` for orthogonal ones, which stays bounded when ``q*`` (hence ``s_D``) shrinks like
    ``1 / L``, and is exactly 0 for linear nets."""

    mean: float
    second: float
    variance: float
    chi: float
    s_d: float
    s_w: float


def jacobian_moments(
    activation: str | Activation,
    sigma_w: float,
    sigma_b: float,
    depth: int,
    weights: str = "orthogonal",
    *,
    q_star: float | None = None,
) -> JacobianMoments:
    """First two moments of the squared singular values of the Jacobian (see
    :class:`JacobianMoments`); ``q_star`` defaults to the mean-field fixed point."""
    check_network("jacobian_moments", sigma_w, depth, weights, q_star, activation=activation)
    q = _q_star(activation, sigma_w, sigma_b) if q_star is None else q_star
    law = squared_derivative_law(activation, q)
    e2, e4 = law.moment(1), law.moment(2)
    chi = sigma_w**2 * e2
    s_d = e4 / e2**2 - 1.0
    s_w = 0.0 if weights == "orthogonal" else 1.0
    mean = chi**depth
    second = mean**2 * (1.0 + depth * (s_d + s_w))
    return JacobianMoments(mean, second, second - mean**2, chi, s_d, s_w)


# ---------------------------------------------------------------------------- atoms
def jacobian_atoms(
    law: SquaredDerivativeLaw, sigma_w: float, depth: int, weights: str
) -> tuple[np.ndarray, np.ndarray]:
    """Point masses of the law of ``J J^T`` as (locations, masses)."""
    zero = float(law.atom_masses[law.atoms == 0].sum())
    found: dict[float, float] = {}
    if weights == "orthogonal":
        nz = law.atoms != 0
        base = dict(zip(law.atoms[nz].tolist(), law.atom_masses[nz].tolist()))
        cur = dict(base)
        for _ in range(depth - 1):
            nxt: dict[float, float] = {}
            for a, pa in cur.items():
                for b, pb in base.items():
                    w = pa + pb - 1.0
                    if w > 1e-12:
                        nxt[a * b] = nxt.get(a * b, 0.0) + w
            cur = nxt
        found = {a * sigma_w ** (2 * depth): p for a, p in cur.items()}
    if zero > 1e-12:
        found[0.0] = zero
    loc = np.array(sorted(found), dtype=float)
    return loc, np.array([found[a] for a in sorted(found)], dtype=float)


# ---------------------------------------------------------------------------- density
@dataclass(frozen=True)
class SpectralDensity:
    """A predicted spectrum: continuous part on a grid plus point masses.

    ``grid`` (G,) increasing eigenvalues, ``density`` (G,) the continuous density there,
    ``weights`` (G,) quadrature weights so that ``(density * weights).sum()`` is the continuous
    mass and ``(grid**k * density * weights).sum()`` its k-th moment, ``edges`` (G + 1,) the
    cell boundaries (cell i, of width ``weights[i]`` in the mapped variable, holds
    ``grid[i]``); ``atoms`` (K,) and ``atom_masses`` (K,) the point masses. Continuous mass
    plus atom masses is 1. All float64 tensors. Unpacks as the pair
    ``grid, density = spectrum``."""

    grid: Tensor
    density: Tensor
    weights: Tensor
    edges: Tensor
    atoms: Tensor
    atom_masses: Tensor

    def __iter__(self) -> Iterator[Tensor]:
        return iter((self.grid, self.density))

    @property
    def continuous_mass(self) -> float:
        """Mass of the continuous part (1 minus the atoms' masses, up to quadrature error)."""
        return float((self.density * self.weights).sum())

    def moment(self, k: int) -> float:
        """``E[lambda^k]`` over the continuous part and the atoms."""
        cont = (self.grid**k * self.density * self.weights).sum()
        return float(cont + (self.atoms**k * self.atom_masses).sum())

    def continuous_cdf_knots(self) -> tuple[np.ndarray, np.ndarray]:
        """Knots ``(x, F)`` of the piecewise-linear distribution function of the continuous
        part (cell masses spread uniformly over each cell); numpy arrays of size G + 1."""
        cum = np.concatenate([[0.0], np.cumsum((self.density * self.weights).numpy())])
        return self.edges.numpy(), cum

    def cdf(self, x: Tensor | float) -> Tensor:
        """The distribution function ``P(lambda <= x)`` at the points ``x`` (any shape), atoms
        included; a float64 tensor of ``x``'s shape."""
        xs = torch.as_tensor(x, dtype=torch.float64)
        kx, kf = self.continuous_cdf_knots()
        out = torch.as_tensor(np.interp(xs.numpy(), kx, kf), dtype=torch.float64)
        for a, p in zip(self.atoms.tolist(), self.atom_masses.tolist()):
            out = out + p * (xs >= a).to(out.dtype)
        return out


def binned_derivative_law(
    activation: str | Activation,
    q_star: float,
    scale: float,
    shift: float,
    grid_size: int,
    atoms: np.ndarray,
    atom_masses: np.ndarray,
) -> SpectralDensity:
    """The law of ``shift + scale phi'(h)^2``, ``h ~ N(0, q_star)``, as a
    :class:`SpectralDensity`: its continuous part binned on ``grid_size`` equal cells from a
    400001-point trapezoid rule in ``h`` (edge singularities of the law stay integrable), the
    given ``atoms`` (final coordinates) apart. This is the exact law of a one-layer orthogonal
    Jacobian (``shift = 0``) and of a depth-2 single-input NTK (``shift = 1``)."""
    z = np.linspace(-12.0, 12.0, 400001)
    u = shift + scale * _derivative(get_activation(activation), math.sqrt(q_star) * z) ** 2
    p = np.exp(-z * z / 2) * (z[1] - z[0]) / math.sqrt(2 * math.pi)
    cont = np.ones_like(u, dtype=bool)
    for a in np.asarray(atoms, dtype=float):
        cont &= np.abs(u - a) > 1e-12 * max(abs(a), 1.0)
    lo, top = float(u[cont].min()), float(u[cont].max())
    edges = np.linspace(lo, top, grid_size + 1)
    cell, _ = np.histogram(u[cont], bins=edges, weights=p[cont])
    width = np.diff(edges)
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    return SpectralDensity(t(0.5 * (edges[1:] + edges[:-1])), t(cell / width), t(width),
                           t(edges), t(atoms), t(atom_masses))


def _uniform(lo: float, hi: float, n: int, atoms: np.ndarray, masses: np.ndarray):
    """A spectrum with zero continuous part on a uniform grid (purely atomic laws)."""
    e = np.linspace(lo, hi, n + 1)
    g = 0.5 * (e[1:] + e[:-1])
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    return SpectralDensity(t(g), t(np.zeros(n)), t(np.diff(e)), t(e), t(atoms), t(masses))


def jacobian_spectrum_density(
    activation: str | Activation,
    sigma_w: float,
    sigma_b: float,
    depth: int,
    weights: str = "orthogonal",
    grid_size: int = 2000,
    *,
    q_star: float | None = None,
    nodes: int = 240,
    grid_power: float | None = None,
    eps: float = 1e-9,
) -> SpectralDensity:
    """Limiting law of the eigenvalues of ``J J^T`` (squared singular values of the
    input-output Jacobian) of a wide depth-``depth`` network at the mean-field fixed point.

    Args:
        activation: a name in ``ortho_lightning.activations.ACTIVATIONS`` (``"linear"``
            included) or an elementwise callable.
        sigma_w, sigma_b: weight and bias scales (weights ``sigma_w / sqrt(N)`` per entry,
            or ``sigma_w`` times an orthogonal matrix).
        depth: number of layers ``L``.
        weights: ``"orthogonal"`` or ``"gaussian"``.
        grid_size: points of the eigenvalue grid.
        q_star: pre-activation variance; defaults to the fixed point of the length map.
        nodes: Gauss-Hermite nodes for the law of ``phi'(h)^2``.
        grid_power: the grid is ``top * sin(pi u / 2)**p`` at the midpoints ``u`` of
            ``grid_size`` equal cells of [0, 1] (``top`` the upper edge of the support): dense
            at zero, which resolves the ``x^{-L/(L+1)}`` divergence of Gaussian nets, and at the
            square-root upper edge; default ``p = min(2 (L + 1), 90)`` for Gaussian and
            ``L + 1`` for orthogonal weights (nonlinear orthogonal nets also pile mass up
            near zero as depth grows). ``weights`` are the matching midpoint-rule weights.
            When the default finds a smooth law's single bulk away from 0 on fewer than half
            the points (orthogonal nets near isometry), the grid is redone as
            ``a + (top - a) sin(pi u / 2)**2`` from ``a`` half a bulk width below it.
        eps: relative imaginary part of ``x + i eps x`` where the Stieltjes transform is taken.

    Returns:
        A :class:`SpectralDensity`; ``grid, density = jacobian_spectrum_density(...)`` gives
        the grid (G,) and continuous density (G,) as float64 tensors, and ``.atoms`` /
        ``.atom_masses`` the point masses (e.g. a single atom at ``sigma_w^(2L)`` of mass 1 for
        orthogonal linear nets, whose continuous density is then 0 everywhere).
    """
    check_network("jacobian_spectrum_density", sigma_w, depth, weights, q_star,
                  activation=activation)
    check_int("jacobian_spectrum_density", "grid_size", grid_size, minimum=16)
    q = _q_star(activation, sigma_w, sigma_b) if q_star is None else q_star
    law = squared_derivative_law(activation, q, nodes=nodes)
    atoms, atom_masses = jacobian_atoms(law, sigma_w, depth, weights)
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    values, probs = law.all_nodes()
    pos = probs > 0
    values, probs = values[pos], probs[pos]
    a_max = float(values.max())
    if a_max <= 0:  # phi' = 0 almost surely: J = 0
        return _uniform(0.0, 1.0, grid_size, np.zeros(1), np.ones(1))
    contour = contour_law(activation, q) if law.atoms.size == 0 else None
    if contour is not None:  # smooth law: analytic M_{D^2}, sup of phi'^2 over a fine grid
        h = math.sqrt(q) * np.linspace(-12.0, 12.0, 24001)
        a_max = max(a_max, float((_derivative(get_activation(activation), h) ** 2).max()))
        values, probs = contour
    mode = "contour" if contour is not None else "atoms" if law.values.size == 0 else "nodes"
    logx = _LogX(values, probs, sigma_w, depth, weights, mode)
    top, zeta_top = logx.top_edge(a_max)
    if atom_masses.sum() >= 1 - 1e-9:  # purely atomic law
        return _uniform(0.0, 1.5 * max(float(atoms.max()), 1e-12), grid_size, atoms, atom_masses)
    if depth == 1 and weights == "orthogonal":  # J J^T ~ sigma_w^2 D^2 itself
        return binned_derivative_law(activation, q, sigma_w**2, 0.0, grid_size, atoms,
                                     atom_masses)
    refine = grid_power is None and logx.mode == "contour"
    if grid_power is None:
        grid_power = float(min((2 if weights == "gaussian" else 1) * (depth + 1), 90))
    grid, quad_w, edges = _sine_grid(0.0, top, grid_power, grid_size)
    density = logx.continue_density(grid, zeta_top, eps, atoms, atom_masses)
    inside = np.flatnonzero(density > 0)
    if refine and density[0] == 0 and 0 < inside.size < grid_size // 2:
        # one bulk away from 0 (near-isometric orthogonal nets) that the first grid barely
        # resolves: again on [lo - (top - lo) / 2, top], dense at both edges
        lo = float(grid[inside[0]])
        grid, quad_w, edges = _sine_grid(max(0.0, lo - 0.5 * (top - lo)), top, 2.0, grid_size)
        density = logx.continue_density(grid, zeta_top, eps, atoms, atom_masses)
    spec = SpectralDensity(t(grid), t(density), t(quad_w), t(edges), t(atoms), t(atom_masses))
    total = spec.continuous_mass + float(atom_masses.sum())
    if abs(total - 1.0) > _MASS_TOL:
        why = (
            "the Newton continuation missed part of the support (e.g. several separated "
            "bulks, as when phi'^2 takes a few distinct values like leaky_relu's)"
            if total < 1
            else "the grid under-resolves a density singular at 0 (raise grid_size or "
            "grid_power)"
        )
        warnings.warn(
            f"theory.jacobian_spectrum_density: the predicted law of {activation_name(activation)}"
            f" ({weights}, depth {depth}) has mass {total:.7f}, not 1 to {_MASS_TOL:g}: {why}; "
            "moments and atoms are still exact, the density is not",
            RuntimeWarning,
            stacklevel=2,
        )
    return spec


def _sine_grid(lo: float, top: float, power: float, n: int):
    """``x = lo + (top - lo) sin(pi u / 2)^power`` at the midpoints ``u`` of ``n`` equal cells
    of [0, 1]: (grid, midpoint-rule weights, cell edges) as numpy arrays."""
    uu = (np.arange(n) + 0.5) / n * (math.pi / 2)
    span = top - lo
    grid = lo + span * np.sin(uu) ** power
    quad_w = span * power * np.sin(uu) ** (power - 1) * np.cos(uu) * (math.pi / 2) / n
    edges = lo + span * np.sin(np.arange(n + 1) / n * (math.pi / 2)) ** power
    return grid, quad_w, edges


class _LogX:
    """``log x(zeta)`` where ``x = 1 / chi_{JJ^T}(M_{D^2}(zeta))``, and its derivative."""

    def __init__(self, values, probs, sigma_w, depth, weights, mode):
        self.values, self.probs = values, probs
        # "atoms": the law of D^2 is exact (atoms only); "contour": an analytic continuation
        # (contour_law); "nodes": a real quadrature, whose poles carry spurious roots
        self.mode = mode
        self.depth, self.gauss = depth, weights == "gaussian"
        self.log_s2l = depth * math.log(sigma_w**2)

    def __call__(self, zeta):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return self._eval(zeta)

    def _eval(self, zeta):
        m, dm = _m_of_zeta(self.values, self.probs, zeta)
        L = self.depth
        lm, l1m = np.log(m + 0j), np.log(1 + m + 0j)
        if self.gauss:
            f = l1m - lm + L * (lm - np.log(zeta + 0j))
            df = dm / (1 + m) - dm / m + L * (dm / m - 1 / zeta)
        else:
            f = l1m - lm + L * (lm - l1m - np.log(zeta + 0j))
            df = dm / (1 + m) - dm / m + L * (dm / m - dm / (1 + m) - 1 / zeta)
        return f + self.log_s2l, df, m

    def top_edge(self, a_max: float) -> tuple[float, float]:
        """Top of the support: the minimum of the real ``x(zeta)`` on ``(0, 1/a_max)``."""
        zmax = 1.0 / a_max
        tt = np.concatenate([np.logspace(-14, -1, 400), np.linspace(0.1, 1 - 1e-6, 2000)])
        zeta = zmax * (1 - tt)  # includes zeta near the pole and near 0
        zeta = np.concatenate([zeta, zmax * np.logspace(-8, -1, 200)])
        f, _, _ = self(zeta)
        f = np.where(np.isfinite(f), f.real, np.inf)
        i = int(np.argmin(f))
        # refine by golden-section search around the minimum
        lo = zeta[zeta < zeta[i]].max(initial=0.0)
        hi = zeta[zeta > zeta[i]].min(initial=zmax)
        for _ in range(100):
            a = hi - 0.618 * (hi - lo)
            b = lo + 0.618 * (hi - lo)
            if self(np.array([a]))[0].real[0] < self(np.array([b]))[0].real[0]:
                hi = b
            else:
                lo = a
        zeta_e = 0.5 * (lo + hi)
        return float(np.exp(self(np.array([zeta_e]))[0].real[0])), zeta_e

    def _newton(self, zeta0: complex, logw: complex, iters: int = 60) -> complex | None:
        zeta = zeta0
        for _ in range(iters):
            f, df, _ = self(np.array([zeta]))
            r = f[0] - logw
            r = complex(r.real, (r.imag + math.pi) % (2 * math.pi) - math.pi)
            if not (df[0] != 0 and np.isfinite(df[0]) and np.isfinite(r)):
                return None
            step = r / df[0]
            # damp huge steps
            if abs(step) > 0.5 * abs(zeta):
                step *= 0.5 * abs(zeta) / abs(step)
            zeta = zeta - step
            if abs(r) < 1e-13:
                return zeta
        return zeta if abs(r) < 1e-9 else None

    def continue_density(self, grid, zeta_top, eps, atoms, atom_masses) -> np.ndarray:
        """Density on ``grid`` (increasing) by Newton continuation from the top edge down.

        At each point Newton starts from the previous root; when that lands on a real root
        (no density) or fails, it restarts from kicks into both half-planes and keeps the
        root in the physical half-plane (Im m < 0 for Im w > 0) closest to the previous one."""
        out = np.zeros_like(grid)
        zeta = complex(zeta_top) * (1 - 1e-6)
        entered = left = False
        for i in range(len(grid) - 1, -1, -1):
            w = grid[i] * complex(1.0, eps)
            logw = np.log(w)
            z = self._newton(zeta, logw)
            m = self._m(z)
            inside = z is not None and self._inside(m, eps)
            if left and self.mode == "contour":
                # below the bulk of a smooth unimodal law only its far tail is left: follow
                # it until the density drops under the inside threshold, then stop
                if not inside:
                    break
                zeta = z
                out[i] = self._density(m, w, atoms, atom_masses)
                continue
            if left and self.mode == "nodes":
                # below the support of a quadrature law of D^2 only the real branch is
                # physical (its many poles carry spurious complex roots)
                if z is not None and not inside:
                    zeta = z
                continue
            if not inside:
                cands = [] if z is None else [(z, m)]
                for kick in (1e-3, 3e-2, 0.3):
                    for sgn in (1, -1):
                        zk = self._newton(zeta + sgn * 1j * kick * abs(zeta), logw)
                        if zk is not None and np.isfinite(zk):
                            mk = self._m(zk)
                            if self._inside(mk, eps):
                                cands.append((zk, mk))
                    if len(cands) > (z is not None):
                        break
                if not cands:
                    continue
                z, m = min(cands, key=lambda c: (not self._inside(c[1], eps), abs(c[0] - zeta)))
                inside = self._inside(m, eps)
            left |= entered and not inside
            entered |= inside
            zeta = z
            out[i] = self._density(m, w, atoms, atom_masses)
        return out

    @staticmethod
    def _density(m, w, atoms, atom_masses) -> float:
        """``-Im G(w) / pi`` of the continuous part, ``G = (1 + m) / w`` less the atoms."""
        g = (1 + m) / w - np.sum(atom_masses / (w - atoms))
        return max(-g.imag / math.pi, 0.0)

    def _m(self, zeta):
        if zeta is None:
            return None
        return complex(_m_of_zeta(self.values, self.probs, np.array([zeta]))[0][0])

    @staticmethod
    def _inside(m, eps) -> bool:
        """Inside the bulk: Im m clearly below the O(eps) leak of a real root."""
        return m is not None and -m.imag > 100 * eps * abs(1 + m)
