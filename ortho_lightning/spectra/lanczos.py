"""Lanczos with full reorthogonalisation on a symmetric PSD operator given by its matvec:
top-k eigenvalues, and the nodes/weights of stochastic Lanczos quadrature (SLQ)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

Matvec = Callable[[Tensor], Tensor]


def _tridiagonal(alpha: list[float], beta: list[float]) -> Tensor:
    m = len(alpha)
    t = torch.diag(torch.tensor(alpha, dtype=torch.float64))
    if m > 1:
        off = torch.tensor(beta[: m - 1], dtype=torch.float64)
        t += torch.diag(off, 1) + torch.diag(off, -1)
    return t


def _orthogonalize(w: Tensor, basis: Tensor) -> Tensor:
    # classical Gram-Schmidt, twice ("twice is enough")
    for _ in range(2):
        w = w - basis.T @ (basis @ w)
    return w


def _random_unit(dim: int, generator: torch.Generator, dtype, device, rademacher: bool) -> Tensor:
    if rademacher:
        v = torch.randint(0, 2, (dim,), generator=generator, device=device).to(dtype) * 2 - 1
    else:
        v = torch.randn(dim, generator=generator, dtype=dtype, device=device)
    return v / v.norm()


def lanczos(
    matvec: Matvec,
    v0: Tensor,
    steps: int,
    *,
    generator: torch.Generator | None = None,
    restart_on_breakdown: bool = False,
    check: Callable[[Tensor, float], bool] | None = None,
) -> tuple[Tensor, int]:
    """Run up to ``steps`` Lanczos steps from ``v0`` with full reorthogonalisation.

    Args:
        matvec: v -> A v for a symmetric A.
        v0: start vector (normalised here).
        steps: maximal number of steps (Krylov dimension).
        generator: random source for restarts.
        restart_on_breakdown: on an invariant subspace, continue from a fresh random vector
            orthogonal to the basis (for eigenvalues), instead of stopping (for quadrature).
        check: called as ``check(T, beta_last)`` after each step; returning True stops.

    Returns:
        (T, m): the (m, m) float64 tridiagonal matrix and the number of steps taken.
    """
    dim = v0.numel()
    steps = min(steps, dim)
    q = v0 / v0.norm()
    basis = q[None]
    alpha: list[float] = []
    beta: list[float] = []
    scale = 0.0
    eps = torch.finfo(v0.dtype).eps
    for j in range(steps):
        w = matvec(q)
        a = float(w @ q)
        alpha.append(a)
        w = _orthogonalize(w, basis)
        b = float(w.norm())
        scale = max(scale, abs(a), b)
        if check is not None and check(_tridiagonal(alpha, beta + [b]), b):
            break
        if j == steps - 1:
            break
        if b <= 100 * eps * max(scale, 1e-300):
            if not restart_on_breakdown:
                break
            gen = generator if generator is not None else torch.Generator(device=v0.device)
            w = _orthogonalize(_random_unit(dim, gen, v0.dtype, v0.device, False), basis)
            q = w / w.norm()
            beta.append(0.0)
        else:
            q = w / b
            beta.append(b)
        basis = torch.cat([basis, q[None]])
    return _tridiagonal(alpha, beta), len(alpha)


def lanczos_topk(
    matvec: Matvec,
    dim: int,
    k: int,
    *,
    tol: float = 1e-6,
    max_iter: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Tensor:
    """The ``k`` largest eigenvalues (descending) of a symmetric PSD operator of size ``dim``.

    Converged when every wanted Ritz value theta_j has residual beta_m |y_{m,j}| <=
    tol * max(theta_j, 1e3 * eps * theta_max) (``eps`` of ``dtype``); warns if ``max_iter``
    steps (default ``min(dim, max(3k, k + 100))``) are not enough.
    Memory: ``max_iter`` vectors of length ``dim``.
    """
    max_iter = min(dim, max(3 * k, k + 100)) if max_iter is None else min(max_iter, dim)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    v0 = _random_unit(dim, gen, dtype, device, False)
    eps = torch.finfo(dtype).eps
    state = {"converged": False}

    def check(t: Tensor, b: float) -> bool:
        m = t.shape[0]
        if m < k:
            return False
        theta, vecs = torch.linalg.eigh(t)
        top = theta[-k:]
        floor = 1e3 * eps * float(theta[-1].abs())
        res = b * vecs[-1, -k:].abs()
        ok = bool((res <= tol * torch.clamp(top.abs(), min=floor)).all())
        state["converged"] = ok
        return ok

    t, m = lanczos(matvec, v0, max_iter, generator=gen, restart_on_breakdown=True, check=check)
    if not state["converged"] and m < dim:
        warnings.warn(
            f"Lanczos did not reach tol={tol} for the top {k} eigenvalues in {m} steps; "
            "raise max_iter or tol",
            RuntimeWarning,
            stacklevel=3,
        )
    theta = torch.linalg.eigvalsh(t).flip(0)
    if theta.numel() < k:
        theta = torch.cat([theta, theta.new_zeros(k - theta.numel())])
    return theta[:k].clamp_min(0).to(dtype=dtype, device=device)


def slq_nodes(
    matvec: Matvec,
    dim: int,
    *,
    num_probes: int,
    steps: int,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> list[tuple[Tensor, Tensor]]:
    """Gauss quadrature nodes and weights of the spectral measure (1/dim) sum delta(lambda_i),
    one (nodes, weights) pair per Rademacher probe; each weights vector sums to 1."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    out = []
    for _ in range(num_probes):
        v = _random_unit(dim, gen, dtype, device, True)
        t, _ = lanczos(matvec, v, steps)
        theta, vecs = torch.linalg.eigh(t)
        out.append((theta, vecs[0] ** 2))
    return out


def gaussian_density(nodes: list[tuple[Tensor, Tensor]], grid: Tensor, sigma: float) -> Tensor:
    """Average over probes of sum_l w_l N(grid; theta_l, sigma^2), float64 on the CPU."""
    g = grid.detach().to("cpu", torch.float64)
    dens = torch.zeros_like(g)
    for theta, w in nodes:
        z = (g[:, None] - theta[None, :]) / sigma
        dens += (w[None, :] * torch.exp(-0.5 * z**2)).sum(1)
    return dens / (len(nodes) * sigma * math.sqrt(2 * math.pi))
