"""Lanczos with full reorthogonalisation on a symmetric PSD
:class:`~ortho_lightning.spectra.linear_operator.LinearOperator`: top-k eigenvalues, and the
nodes/weights of stochastic Lanczos quadrature (SLQ).

Randomness (start vectors, probes, restarts) comes from ``generator``, as in ``torch.nn.init``;
``None`` is a private generator seeded with 0 on the operator's device, so repeated calls agree
and the global RNG is never touched. ``seed=`` (an int, the generator's seed) is the deprecated
spelling, accepted until 0.3.0.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from ortho_lightning.spectra.linear_operator import LinearOperator, check_operator
from ortho_lightning.validation import check_int, check_number, fail, renamed_argument


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


def make_generator(
    owner: str, generator: torch.Generator | int | None, device: torch.device | str
) -> torch.Generator:
    """The generator a spectra function draws from, given its ``generator`` argument after
    :func:`~ortho_lightning.validation.renamed_argument` (which the public function calls, so
    the deprecation warning points at the user's line): a ``torch.Generator`` as is; an int
    (the deprecated ``seed=``) as ``torch.Generator(device).manual_seed(seed)``, as before the
    rename (same seed, bit-identical results); ``None`` as a private generator seeded with 0
    (the old default seed)."""
    if generator is None:
        return torch.Generator(device=device).manual_seed(0)
    if isinstance(generator, torch.Generator):
        if generator.device.type != torch.device(device).type:
            fail(owner, "generator", f"a generator on {torch.device(device).type}",
                 generator.device)
        return generator
    if isinstance(generator, bool) or not isinstance(generator, int):
        fail(owner, "generator", "a torch.Generator or None (or the deprecated seed=, an int)",
             generator)
    return torch.Generator(device=device).manual_seed(generator)


def lanczos(
    op: LinearOperator,
    v0: Tensor,
    steps: int,
    *,
    generator: torch.Generator | None = None,
    restart_on_breakdown: bool = False,
    check: Callable[[Tensor, float], bool] | None = None,
) -> tuple[Tensor, int]:
    """Run up to ``steps`` Lanczos steps from ``v0`` with full reorthogonalisation.

    Args:
        op: a symmetric operator A.
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
        w = op.matvec(q)
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
    op: LinearOperator,
    k: int,
    *,
    tol: float = 1e-6,
    max_iter: int | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> Tensor:
    """The ``k`` largest eigenvalues (descending) of a symmetric PSD operator ``op``.

    Converged when every wanted Ritz value theta_j has residual beta_m |y_{m,j}| <=
    tol * max(theta_j, 1e3 * eps * theta_max) (``eps`` of ``op.dtype``); warns if ``max_iter``
    steps (default ``min(size, max(3k, k + 100))``) are not enough. The start vector (and any
    restart after an invariant subspace) is drawn from ``generator`` (see the module
    docstring; ``seed`` is its deprecated spelling).
    Memory: ``max_iter`` vectors of length ``size``.

    Returns:
        (k,) tensor in ``op.dtype`` on ``op.device``, >= 0.
    """
    op = check_operator("lanczos_topk", op)
    dim = op.shape[0]
    k = check_int("lanczos_topk", "k", k, minimum=1)
    if k > dim:
        fail("lanczos_topk", "k", f"at most the operator's size {dim}", k)
    check_number("lanczos_topk", "tol", tol, positive=True)
    check_int("lanczos_topk", "max_iter", max_iter, minimum=1, optional=True)
    gen = make_generator(
        "lanczos_topk", renamed_argument("lanczos_topk", "seed", "generator", seed, generator),
        op.device,
    )
    dtype, device = op.dtype, op.device
    max_iter = min(dim, max(3 * k, k + 100)) if max_iter is None else min(max_iter, dim)
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

    t, m = lanczos(op, v0, max_iter, generator=gen, restart_on_breakdown=True, check=check)
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
    op: LinearOperator,
    *,
    num_probes: int,
    steps: int,
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> list[tuple[Tensor, Tensor]]:
    """Gauss quadrature nodes and weights of the spectral measure (1/size) sum delta(lambda_i)
    of ``op``, one (nodes, weights) pair per Rademacher probe drawn from ``generator`` (see the
    module docstring; ``seed`` is its deprecated spelling); each weights vector sums to 1.

    Returns:
        ``num_probes`` pairs of float64 CPU tensors (nodes (m,), weights (m,)), m <= ``steps``.
    """
    op = check_operator("slq_nodes", op)
    num_probes = check_int("slq_nodes", "num_probes", num_probes, minimum=1)
    steps = check_int("slq_nodes", "steps", steps, minimum=1)
    gen = make_generator(
        "slq_nodes", renamed_argument("slq_nodes", "seed", "generator", seed, generator),
        op.device,
    )
    out = []
    for _ in range(num_probes):
        v = _random_unit(op.shape[0], gen, op.dtype, op.device, True)
        t, _ = lanczos(op, v, steps)
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
