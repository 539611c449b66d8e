"""Wasserstein-1 distance between measured eigenvalues and a predicted law (point masses
included), or between two samples (the noise floor of a measurement).

``W1(P, Q) = integral |F_P(x) - F_Q(x)| dx``. The empirical distribution function is a step
function; a predicted :class:`~ortho_lightning.theory.free_probability.SpectralDensity` has a
piecewise-linear continuous part (each grid cell's mass spread over the cell) plus jumps at its
atoms. Between consecutive break points both are linear, so the integral is exact.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ortho_lightning.exceptions import ShapeError
from ortho_lightning.theory.free_probability import SpectralDensity
from ortho_lightning.validation import fail

Reference = SpectralDensity | Tensor | tuple[Tensor, Tensor]


def _as_samples(samples: Tensor | np.ndarray, name: str) -> np.ndarray:
    a = torch.as_tensor(samples).detach().to("cpu", torch.float64).reshape(-1).numpy()
    if a.size == 0:
        fail("wasserstein1", name, "at least 1 value", tuple(np.shape(samples)), ShapeError)
    if not np.isfinite(a).all():
        bad = int((~np.isfinite(a)).sum())
        fail("wasserstein1", name, "finite values (count of non-finite ones shown)", bad, ShapeError)
    return np.sort(a)


def _integral_abs_linear(d0: np.ndarray, d1: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Integral over intervals of ``|d|`` for ``d`` linear from ``d0`` to ``d1``."""
    a0, a1 = np.abs(d0), np.abs(d1)
    same = (d0 * d1) >= 0
    mixed = (d0 * d0 + d1 * d1) / (2 * np.maximum(a0 + a1, 1e-300))
    return width * np.where(same, 0.5 * (a0 + a1), mixed)


def _from_grid(grid: Tensor, density: Tensor) -> SpectralDensity:
    """A spectrum from a bare (grid, density) pair: cells between midpoints, renormalized."""
    g = torch.as_tensor(grid, dtype=torch.float64).reshape(-1)
    d = torch.as_tensor(density, dtype=torch.float64).reshape(-1)
    if g.shape != d.shape or g.numel() < 2:
        fail("wasserstein1", "reference (grid, density)", "two 1-d tensors of the same size >= 2 "
             "(their shapes shown)", (tuple(g.shape), tuple(d.shape)), ShapeError)
    mid = 0.5 * (g[1:] + g[:-1])
    edges = torch.cat([g[:1] - (mid[0] - g[0]), mid, g[-1:] + (g[-1] - mid[-1])])
    w = edges.diff()
    d = d / (d * w).sum()
    empty = g.new_zeros(0)
    return SpectralDensity(g, d, w, edges, empty, empty)


def wasserstein1(samples: Tensor | np.ndarray, reference: Reference) -> float:
    """Wasserstein-1 distance between the empirical law of ``samples`` (any shape, flattened)
    and ``reference``: a :class:`SpectralDensity` (atoms included), a bare ``(grid, density)``
    pair of 1-d tensors (the density is renormalized to mass 1 on cells between grid
    midpoints), or another set of samples (then the exact W1 between two empirical laws,
    e.g. two independent draws of a network as a noise floor). Returns a float in the units of
    the samples (eigenvalues)."""
    s = _as_samples(samples, "samples")
    if isinstance(reference, tuple):
        reference = _from_grid(*reference)
    if not isinstance(reference, SpectralDensity):
        r = _as_samples(reference, "reference")
        pts = np.union1d(s, r)
        fs = np.searchsorted(s, pts[:-1], side="right") / s.size
        fr = np.searchsorted(r, pts[:-1], side="right") / r.size
        return float(np.sum(np.abs(fs - fr) * np.diff(pts)))
    kx, kf = reference.continuous_cdf_knots()
    atoms = reference.atoms.numpy()
    masses = reference.atom_masses.numpy()
    pts = np.unique(np.concatenate([s, kx, atoms]))
    left, right = pts[:-1], pts[1:]
    fs = np.searchsorted(s, left, side="right") / s.size
    # atom part is constant on each open interval: the atoms at or left of its left end
    jumps = np.concatenate([[0.0], np.cumsum(masses[np.argsort(atoms)])])
    fa = jumps[np.searchsorted(np.sort(atoms), left, side="right")]
    f0 = np.interp(left, kx, kf) + fa
    f1 = np.interp(right, kx, kf) + fa
    return float(np.sum(_integral_abs_linear(f0 - fs, f1 - fs, right - left)))
