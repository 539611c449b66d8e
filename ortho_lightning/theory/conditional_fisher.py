"""Spectrum of the conditional Fisher of one input (Hayase & Karakida 2020) in the wide limit.

Network of width ``M`` throughout, output ``f = h_L`` (the last pre-activation, M outputs),
``h_l = sigma_w W_l x_{l-1} / sqrt(M) + sigma_b b_l`` with ``x_l = phi(h_l)`` (NTK
parametrization: the parameters are ``W_l`` and ``b_l``). For a Gaussian likelihood the Fisher
of one input is ``J_theta^T J_theta``; its non-zero spectrum is that of the M x M dual
``Theta = J_theta J_theta^T`` (the NTK of that input), and

    Theta = sum_l (sigma_w^2 |x_{l-1}|^2 / M + sigma_b^2) B_l B_l^T = q* sum_l B_l B_l^T

at the fixed point (every ``h_l`` has variance q*, the input matched to it), with
``B_l = df / dh_l``. Written forward, ``T_l = Theta_l / q*`` (the NTK of ``h_l``) obeys

    T_1 = I,        T_{l+1} = I + W_{l+1} D_l T_l D_l W_{l+1}^T,        Theta = q* T_L.

Assuming ``D_l``, ``T_l`` and ``W_{l+1}`` asymptotically free (as for the Jacobian), the law
``nu_l`` of ``T_l`` obeys ``nu_{l+1} = 1 + nu_l [x] mu`` with ``mu`` the law of
``sigma_w^2 D^2`` (orthogonal ``W``) or of ``sigma_w^2 D^2 [x] MP`` (Gaussian ``W``). The mean
follows ``t_{l+1} = 1 + chi t_l`` (= L at criticality). Moments come from S-transform power
series; the density from a chain of subordination equations (see
:func:`conditional_fisher_spectrum` and ``docs/theory.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ortho_lightning.activations import Activation, activation_name
from ortho_lightning.theory.free_probability import (
    SpectralDensity,
    _LogX,
    _m_of_zeta,
    _q_star,
    _sine_grid,
    binned_derivative_law,
    check_network,
    contour_law,
    squared_derivative_law,
)

_ORDER = 6  # moments computed (power series order)


# ---------------------------------------------------------------------------- moments
def _compose_inverse(f: np.ndarray) -> np.ndarray:
    """Coefficients ``g[0..K]`` (``g[0] = 0``) of the compositional inverse of the series
    ``f[0..K]`` (``f[0] = 0``, ``f[1] != 0``), truncated at order K."""
    k = len(f) - 1
    g = np.zeros(k + 1)
    g[1] = 1.0 / f[1]
    for _ in range(k + 1):
        comp = _compose(f, g)
        comp[1] -= 1.0
        g = g - comp / f[1]
    return g


def _compose(f: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``f(g(m))`` truncated at the order of ``f`` (``g[0] = 0``)."""
    k = len(f) - 1
    out = np.zeros(k + 1)
    power = np.zeros(k + 1)
    power[0] = 1.0
    for j in range(1, k + 1):
        power = np.convolve(power, g)[: k + 1]
        out += f[j] * power
    return out


def _s_series(moments: np.ndarray) -> np.ndarray:
    """S-transform series ``S(m)`` (order K - 1) from moments ``[1, m_1, ..., m_K]``:
    ``chi = psi^{-1}``, ``S(m) = chi(m) (1 + m) / m``."""
    chi = _compose_inverse(np.concatenate([[0.0], moments[1:]]))
    s = np.convolve(chi, [1.0, 1.0])[1 : len(moments)]  # (1 + m) chi(m) / m
    return s


def _moments_from_s(s: np.ndarray) -> np.ndarray:
    """Moments ``[1, m_1, ..., m_K]`` from the series ``S(m)`` of order K - 1."""
    k = len(s)
    # chi(m) = m S(m) / (1 + m)
    inv = np.array([(-1.0) ** j for j in range(k)])
    chi = np.concatenate([[0.0], np.convolve(s, inv)[:k]])
    psi = _compose_inverse(chi)
    return np.concatenate([[1.0], psi[1:]])


def free_product_moments(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Moments ``[1, m_1, ..., m_K]`` of the free multiplicative convolution of two laws on
    ``[0, inf)`` with positive means, given theirs (same form): ``S_{a b} = S_a S_b``."""
    k = len(a) - 1
    return _moments_from_s(np.convolve(_s_series(a), _s_series(b))[:k])


def _shift_moments(a: np.ndarray, c: float = 1.0) -> np.ndarray:
    """Moments of ``X + c`` from those of ``X``."""
    k = len(a) - 1
    return np.array([sum(math.comb(n, j) * c ** (n - j) * a[j] for j in range(n + 1))
                     for n in range(k + 1)])


# ---------------------------------------------------------------------------- result
@dataclass(frozen=True)
class ConditionalFisherSpectrum:
    """Predicted spectrum of ``Theta = J_theta J_theta^T`` of one input (M x M).

    ``moments``: ``(E[lambda], E[lambda^2], ...)`` (6 of them) of the eigenvalue law;
    ``mean = moments[0] = q* sum_l chi^(l-1)`` (``q* L`` at criticality); ``lambda_max``: upper
    edge of the support; ``density``: :class:`SpectralDensity` (``grid, density =
    spectrum.density``; atoms apart, e.g. at ``q*`` of mass ``P(D^2 = 0)`` for hard-tanh);
    ``q_star``, ``depth``."""

    moments: tuple[float, ...]
    mean: float
    lambda_max: float
    density: SpectralDensity
    q_star: float
    depth: int

    def mass_above(self, x: float) -> float:
        """``P(lambda > x)`` (atoms included)."""
        return 1.0 - float(self.density.cdf(x))


# ---------------------------------------------------------------------------- the chain
class _Chain(_LogX):
    """``log w_L`` as a function of ``omega_1 = 1 / w_1`` (the point where ``nu_1 = delta_1``
    is evaluated), through the subordination chain of ``nu_{k+1} = 1 + nu_k [x] mu``:

        m = M_{nu_k}(omega_k);  zeta = chi_{D^2}(m);  S = (1 + m) / m * zeta * s_W(m) / sw^2
        z = omega_k S   (= chi_{rho_k}(m), M_{rho_k}(z) = m);  w_{k+1} = 1 + 1 / z
        M_{nu_{k+1}}(1 / w_{k+1}) = (1 + z)(1 + m) - 1.

    Derivatives by the chain rule; the inversions ``chi_{D^2}`` by Newton, warm-started at
    the previous call's roots (continuation)."""

    def __init__(self, values, probs, sigma_w, depth, weights, mode):
        super().__init__(values, probs, sigma_w, depth, weights, mode)
        self.sw2 = sigma_w**2
        self.mean_d = float(np.real(np.sum(probs * values)))
        self.warm = [None] * depth
        nz = np.real(values) != 0
        # phi'^2 in {0, a} (hard-tanh): chi_{D^2} in closed form
        self.bernoulli = ((float(np.real(probs[nz].sum())), float(np.real(values[nz][0])))
                          if mode == "atoms" and np.unique(np.real(values[nz])).size == 1
                          else None)

    def _invert(self, m: complex, k: int) -> complex | None:
        if self.bernoulli is not None:  # M(zeta) = p a zeta / (1 - a zeta): Moebius, exact
            p, a = self.bernoulli
            return m / (a * (p + m)) if p + m != 0 else None
        zeta = self.warm[k]
        if zeta is None or not np.isfinite(zeta):
            zeta = m / self.mean_d
        for _ in range(60):
            f, df = _m_of_zeta(self.values, self.probs, np.array([zeta]))
            if not (np.isfinite(df[0]) and df[0] != 0):
                return None
            step = complex(f[0] - m) / complex(df[0])
            if abs(step) > 0.5 * abs(zeta) + 1e-300:
                step *= 0.5 * abs(zeta) / abs(step)
            zeta -= step
            if abs(step) <= 1e-14 * abs(zeta):
                return zeta
        return zeta if abs(step) <= 1e-9 * abs(zeta) else None

    def chain(self, omega: complex):
        """``(w_L, dw_L / d omega_1, M_{nu_L}(1 / w_L))`` or None when an inversion fails."""
        w = 1.0 / omega
        m = omega / (1.0 - omega)
        dom, dm = 1.0 + 0j, 1.0 / (1.0 - omega) ** 2
        dw = -dom / omega**2
        for k in range(1, self.depth):
            zeta = self._invert(m, k)
            if zeta is None:
                return None
            self.warm[k] = zeta
            dmd = complex(_m_of_zeta(self.values, self.probs, np.array([zeta]))[1][0])
            dzeta = dm / dmd
            s = (1 + m) / m * zeta / self.sw2
            ds = s * (dm / (1 + m) - dm / m + dzeta / zeta)
            if self.gauss:
                s, ds = s / (1 + m), ds / (1 + m) - s / (1 + m) ** 2 * dm
            z, dz = omega * s, dom * s + omega * ds
            w, dw = 1 + 1 / z, -dz / z**2
            m, dm = (1 + z) * (1 + m) - 1, dz * (1 + m) + (1 + z) * dm
            omega, dom = 1 / w, -dw / w**2
        return w, dw, m

    def __call__(self, zeta):
        zeta = np.atleast_1d(zeta)
        f = np.full(zeta.shape, np.nan + 0j)
        df, m = f.copy(), f.copy()
        for i, om in enumerate(zeta):
            out = self.chain(complex(om))
            if out is not None and np.isfinite(out[0]) and out[0] != 0:
                w, dw, mm = out
                f[i], df[i], m[i] = np.log(w), dw / w, mm
        return f, df, m

    def top_edge(self, a_max: float) -> tuple[float, float]:
        """Upper edge of the continuous part: the first minimum of the real ``w_L(omega_1)``,
        ``omega_1`` scanned up from 0 (the physical branch, continued root by root). For a
        {0, a} law of ``phi'^2`` the branch first runs down to the top atom (at
        ``omega_1 = 1``, the atom of ``nu_1 = delta_1``) and continues past it."""
        self.warm = [None] * self.depth
        best, arg = math.inf, None
        scan = [np.logspace(-6, -1, 60), np.linspace(0.1, 0.999, 600)]
        if self.bernoulli is not None:
            scan.append(1 + np.logspace(-4, 5, 900))
        for om in np.concatenate(scan):
            out = self.chain(complex(om))
            if out is None or not np.isfinite(out[0]) or abs(out[0].imag) > 1e-8 * abs(out[0]):
                if self.bernoulli is not None:
                    continue
                break
            w = out[0].real
            if w < best:
                best, arg, warm = w, om, list(self.warm)
            elif w > best * (1 + 1e-3):
                break
        if arg is None:
            raise RuntimeError("theory.conditional_fisher: no real branch found")
        lo, hi = max(arg * 0.9, 1e-12), arg * 1.1 if arg > 1 else min(arg * 1.1, 0.9999)
        self.warm = list(warm)
        for _ in range(80):  # golden section on the real branch
            a = hi - 0.618 * (hi - lo)
            b = lo + 0.618 * (hi - lo)
            fa, fb = self.chain(complex(a)), self.chain(complex(b))
            if fa is None or fb is None:
                break
            if fa[0].real < fb[0].real:
                hi = b
            else:
                lo = a
        edge = 0.5 * (lo + hi)
        out = self.chain(complex(edge))
        return float(out[0].real), edge

    def _m(self, zeta):
        if zeta is None:
            return None
        out = self.chain(complex(zeta))
        return None if out is None else complex(out[2])

    def _newton(self, zeta0, logw, iters: int = 60):
        saved = list(self.warm)
        root = super()._newton(zeta0, logw, iters)
        if root is None:
            self.warm = saved
        return root


def _atoms(law, sigma_w: float, depth: int, weights: str) -> dict[float, float]:
    """Point masses of ``nu_L`` (of ``T_L``): ``rho_k = nu_k [x] mu`` has an atom at 0 of mass
    ``mu({0})`` and at ``a b`` of mass ``nu_k({a}) + mu({b}) - 1`` when positive (Bercovici
    & Voiculescu); ``nu_{k+1} = 1 + rho_k``."""
    mu: dict[float, float] = {}
    for a, p in zip(law.atoms.tolist(), law.atom_masses.tolist()):
        if weights == "orthogonal" or a == 0:  # MP [x] atom: no atom unless at 0
            mu[a * sigma_w**2] = mu.get(a * sigma_w**2, 0.0) + p
    nu = {1.0: 1.0}
    for _ in range(depth - 1):
        rho: dict[float, float] = {}
        if mu.get(0.0, 0.0) > 0:
            rho[0.0] = mu[0.0]
        for a, pa in nu.items():
            for b, pb in mu.items():
                if b != 0 and pa + pb - 1 > 1e-12:
                    rho[a * b] = rho.get(a * b, 0.0) + pa + pb - 1
        nu = {1.0 + a: p for a, p in rho.items()}
    return nu


def conditional_fisher_moments(
    activation: str | Activation,
    sigma_w: float,
    sigma_b: float,
    depth: int,
    weights: str = "orthogonal",
    *,
    q_star: float | None = None,
) -> tuple[float, ...]:
    """``(E[lambda], ..., E[lambda^6])`` of the eigenvalues of the single-input NTK ``Theta``
    (wide limit, NTK parametrization, fixed point ``q_star``): ``Theta = q* T_L`` with
    ``nu_1 = delta_1``, ``nu_{k+1} = 1 + nu_k [x] mu`` solved on S-transform power series
    (``S_{a [x] b} = S_a S_b``), exact up to the Gauss-Hermite moments of ``phi'^2``."""
    check_network("conditional_fisher_moments", sigma_w, depth, weights, q_star,
                  activation=activation)
    q = _q_star(activation, sigma_w, sigma_b) if q_star is None else float(q_star)
    law = squared_derivative_law(activation, q)
    # moments of mu (law of sigma_w^2 D^2, times MP for Gaussian W) and the recursion
    mu = np.array([sigma_w ** (2 * k) * law.moment(k) for k in range(_ORDER + 1)])
    if weights == "gaussian":  # MP(1): its moments are the Catalan numbers
        mp = np.array([math.comb(2 * k, k) / (k + 1) for k in range(_ORDER + 1)])
        mu = free_product_moments(mu, mp)
    nu = np.ones(_ORDER + 1)  # delta_1
    for _ in range(depth - 1):
        nu = _shift_moments(free_product_moments(nu, mu), 1.0)
    return tuple(float(q**k * nu[k]) for k in range(1, _ORDER + 1))


def conditional_fisher_spectrum(
    activation: str | Activation,
    sigma_w: float,
    sigma_b: float,
    depth: int,
    weights: str = "orthogonal",
    grid_size: int = 800,
    *,
    q_star: float | None = None,
    eps: float = 1e-9,
) -> ConditionalFisherSpectrum:
    """Wide-limit spectrum of the conditional Fisher of one input (its M x M dual, the NTK
    ``Theta = J_theta J_theta^T`` of the M outputs ``f = h_L``) of a depth-``depth`` network at
    the variance fixed point, NTK parametrization, input matched to ``q*`` (module docstring).

    Args:
        activation: a name of ``ortho_lightning.activations.ACTIVATIONS`` (smooth ones with
            unimodal ``phi'^2``, e.g. tanh, or ones whose ``phi'^2`` is purely atomic, e.g.
            hardtanh, linear) or a callable.
        sigma_w, sigma_b: weight and bias scales.
        depth: number of weight layers ``L`` (>= 1).
        weights: ``"orthogonal"`` or ``"gaussian"``.
        grid_size: points of the eigenvalue grid (dense at both ends of ``[0, lambda_max]``).
        q_star: pre-activation variance; defaults to the fixed point of the length map.
        eps: relative imaginary part at which the Stieltjes transform is inverted.

    Returns:
        :class:`ConditionalFisherSpectrum`: exact moments (S-transform series), the upper edge
        ``lambda_max`` and the density (float64 tensors) of the eigenvalues of ``Theta``.
    """
    check_network("conditional_fisher_spectrum", sigma_w, depth, weights, q_star,
                  activation=activation)
    moments = conditional_fisher_moments(activation, sigma_w, sigma_b, depth, weights,
                                         q_star=q_star)
    q = _q_star(activation, sigma_w, sigma_b) if q_star is None else float(q_star)
    law = squared_derivative_law(activation, q)
    atoms_t = _atoms(law, sigma_w, depth, weights)
    loc = np.array(sorted(atoms_t), dtype=float)
    mass = np.array([atoms_t[a] for a in sorted(atoms_t)], dtype=float)
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    if mass.sum() >= 1 - 1e-9:  # purely atomic (depth 1; hardtanh at depth 2)
        top = float(loc.max()) * q
        e = np.linspace(0.0, 1.5 * top, grid_size + 1)
        g = 0.5 * (e[1:] + e[:-1])
        dens = SpectralDensity(t(g), t(np.zeros(grid_size)), t(np.diff(e)), t(e),
                               t(loc * q), t(mass))
        return ConditionalFisherSpectrum(moments, moments[0], top, dens, q, depth)
    if depth == 2 and weights == "orthogonal":  # T_2 = I + sigma_w^2 W D^2 W^T ~ 1 + sw^2 D^2
        dens = binned_derivative_law(activation, q, q * sigma_w**2, q, grid_size, loc * q, mass)
        return ConditionalFisherSpectrum(moments, moments[0], float(dens.edges[-1]), dens, q, 2)
    contour = contour_law(activation, q) if law.atoms.size == 0 else None
    if contour is not None:
        values, probs, mode = contour[0], contour[1], "contour"
    else:
        values, probs = law.all_nodes()
        mode = "atoms" if law.values.size == 0 else "nodes"
    chain = _Chain(values, probs, sigma_w, depth, weights, mode)
    top, om_top = chain.top_edge(1.0)
    grid, quad_w, edges = _sine_grid(1.0, top, 2.0, grid_size)  # T_L >= I
    chain.warm = [None] * depth
    chain.top_edge(1.0)  # warm roots at the edge
    density = chain.continue_density(grid, om_top, eps, loc, mass)
    inside = np.flatnonzero(density > 0)
    if mode == "contour" and density[0] == 0 and 0 < inside.size < grid_size // 2:
        lo = float(grid[inside[0]])
        grid, quad_w, edges = _sine_grid(max(1.0, lo - 0.5 * (top - lo)), top, 2.0, grid_size)
        chain.top_edge(1.0)
        density = chain.continue_density(grid, om_top, eps, loc, mass)
    # Theta = q* T_L: rescale eigenvalues by q*
    dens = SpectralDensity(t(grid * q), t(density / q), t(quad_w * q), t(edges * q),
                           t(loc * q), t(mass))
    total = dens.continuous_mass + float(mass.sum())
    if abs(total - 1) > 1e-3:
        import warnings

        warnings.warn(
            f"theory.conditional_fisher_spectrum: the predicted law of "
            f"{activation_name(activation)} ({weights}, depth {depth}) has mass {total:.5f}, "
            "not 1: the continuation "
            + ("missed part of the support (separated bulks)" if total < 1 else
               "took spurious roots (the grid is too coarse)")
            + "; moments, atoms and lambda_max are still exact",
            RuntimeWarning,
            stacklevel=2,
        )
    lam_max = max(top, float(loc.max()) if loc.size else 0.0) * q  # an atom may sit above
    return ConditionalFisherSpectrum(moments, moments[0], lam_max, dens, q, depth)
