"""Eigenvalues, trace and spectral density of the true Fisher of a model's predictive
distribution on a batch, F = (1/N) sum_i J_i^T H_i J_i (J_i = d outputs_i / d theta; H_i =
diag(p_i) - p_i p_i^T for ``"categorical"`` logits, I for ``"gaussian"`` means): the exact
expectation over the model's own predictions, no label sampling.

``theta`` are the trainable ``named_parameters()`` (through any parametrization: see
:mod:`ortho_lightning.spectra._common`). The model is measured in eval mode by default and its
modes restored; no ``.grad`` is written.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ortho_lightning.exceptions import ShapeError
from ortho_lightning.spectra._common import (
    OutputFn,
    check_batch,
    check_model,
    linalg_ready,
    measuring,
)
from ortho_lightning.spectra.gram import BUDGET, fisher_gram
from ortho_lightning.spectra.lanczos import (
    gaussian_density,
    lanczos_topk,
    make_generator,
    slq_nodes,
)
from ortho_lightning.spectra.likelihoods import LIKELIHOODS
from ortho_lightning.spectra.operators import DualFisherOperator, FisherOperator
from ortho_lightning.validation import (
    check_choice,
    check_int,
    check_number,
    fail,
    renamed_argument,
)

EIGEN_METHODS = ("exact", "lanczos")
#: ``exact`` builds the P x P Fisher instead of the N*C x N*C dual when P < N*C and P is at
#: most this (a tiny model on a large batch); otherwise always the dual.
PRIMAL_MAX = 4096
TRACE_METHODS = ("exact", "hutchinson")


def _check(owner: str, model: object, x: object, likelihood: object) -> None:
    """The arguments every public Fisher function shares, in the package's message format."""
    check_model(owner, model)
    check_batch(owner, x)
    check_choice(owner, "likelihood", likelihood, tuple(LIKELIHOODS))


def fisher_eigenvalues(
    model: nn.Module,
    x: Tensor,
    likelihood: str = "categorical",
    method: str = "exact",
    k: int | None = None,
    *,
    tol: float = 1e-6,
    generator: torch.Generator | None = None,
    max_iter: int | None = None,
    chunk_size: int | None = None,
    output_fn: OutputFn | None = None,
    eval_mode: bool = True,
    seed: int | None = None,
) -> Tensor:
    """Eigenvalues of the Fisher, descending.

    Args:
        model: any module; its raw output on ``x`` is (N, C) logits (categorical) or means
            (gaussian, flattened per sample), or ``output_fn`` picks it.
        x: (N, ...) batch.
        likelihood: ``"categorical"`` or ``"gaussian"``.
        method: ``"exact"``: every eigenvalue of F that can be non-zero, from the
            (N*C x N*C) dual Gram matrix (structured per-layer Gram for Linear/Conv/RNN,
            bounded-memory torch.func fallback elsewhere; the P x P Fisher only when it is the
            smaller one and P <= ``PRIMAL_MAX``, from P Fisher-vector products); ``"lanczos"``: the
            top ``k`` by Lanczos on matrix-free Fisher-vector products (jvp + vjp, linear in P),
            for when N*C is too large for a dense Gram.
        k: number of eigenvalues (required for lanczos; for exact, keeps the top k).
        tol: Lanczos relative residual tolerance.
        generator: draws Lanczos' start vector (``None``: a private generator seeded with 0,
            so repeated calls agree; the global RNG is never used).
        max_iter: Lanczos steps bound (default ``min(P, max(3k, k + 100))``).
        chunk_size: vmap chunk of the generic Gram route.
        output_fn: selects the output tensor from the model's output.
        eval_mode: measure in eval mode and restore the modes after.
        seed: deprecated spelling of ``generator`` (an int seed, until 0.3.0).

    Returns:
        1-d tensor, descending, >= 0. ``exact``: ``min(N*C, P)`` values, or the top ``k``
        (zero-padded past N*C: the other P - N*C eigenvalues of F are zero); for categorical,
        N of the N*C are zero up to rounding (each H_i has the null vector 1). ``lanczos``:
        ``k`` values (zero-padded past the operator's size).
    """
    owner = "fisher_eigenvalues"
    generator = renamed_argument(owner, "seed", "generator", seed, generator)
    _check(owner, model, x, likelihood)
    check_choice(owner, "method", method, EIGEN_METHODS)
    if method == "lanczos" and k is None:
        fail(owner, "k", "the number of top eigenvalues (an integer >= 1) for method='lanczos'", k)
    check_int(owner, "k", k, minimum=1, optional=True)
    check_number(owner, "tol", tol, positive=True)
    check_int(owner, "max_iter", max_iter, minimum=1, optional=True)
    num_params = sum(q.numel() for q in model.parameters() if q.requires_grad)
    if k is not None and k > num_params:
        fail(owner, "k", f"at most the number of parameters P={num_params}", k)
    with measuring(model, eval_mode):
        if method == "exact":
            if num_params <= PRIMAL_MAX and _primal_is_smaller(model, x, output_fn):
                op = FisherOperator(model, x, likelihood, output_fn=output_fn, eval_mode=False)
                gram = _dense_primal(op)
            else:
                gram = fisher_gram(model, x, likelihood, output_fn=output_fn, chunk_size=chunk_size)
            values = torch.linalg.eigvalsh(linalg_ready(gram)).flip(0).clamp_min(0)
            values = values[: min(gram.shape[0], num_params)]
            if k is None:
                return values
            return torch.cat([values[:k], values.new_zeros(max(0, k - values.numel()))])
        op = _operator(model, x, likelihood, output_fn, eval_mode)
        gen = make_generator(owner, generator, op.device)
        top = lanczos_topk(op, min(k, op.shape[0]), tol=tol, max_iter=max_iter, generator=gen)
        return torch.cat([top, top.new_zeros(k - top.numel())])


def _primal_is_smaller(model: nn.Module, x: Tensor, output_fn: OutputFn | None) -> bool:
    """Whether P < N*C (one no-grad forward to count the outputs)."""
    with torch.no_grad():
        out = output_fn(model(x)) if output_fn is not None else model(x)
    rows = out.numel() if isinstance(out, Tensor) else 0
    return 0 < sum(p.numel() for p in model.parameters() if p.requires_grad) < rows


def _dense_primal(op: FisherOperator, block: int = 256) -> Tensor:
    """The P x P Fisher from P Fisher-vector products (only used when P < N*C and small)."""
    size = op.shape[0]
    eye = torch.eye(size, dtype=op.dtype, device=op.device)
    dense = torch.cat([op.matmat(eye[:, i : i + block]) for i in range(0, size, block)], dim=1)
    return (dense + dense.T) / 2


def _operator(
    model: nn.Module, x: Tensor, likelihood: str, output_fn: OutputFn | None, eval_mode: bool
) -> FisherOperator | DualFisherOperator:
    """The smaller of the Fisher (P x P) and its dual (N*C x N*C) as an operator."""
    if not _primal_is_smaller(model, x, output_fn):
        return DualFisherOperator(model, x, likelihood, output_fn=output_fn, eval_mode=eval_mode)
    return FisherOperator(model, x, likelihood, output_fn=output_fn, eval_mode=eval_mode)


def fisher_trace(
    model: nn.Module,
    x: Tensor,
    likelihood: str = "categorical",
    method: str = "exact",
    *,
    num_probes: int = 64,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    output_fn: OutputFn | None = None,
    eval_mode: bool = True,
    seed: int | None = None,
) -> Tensor:
    """tr F, a 0-d tensor.

    ``exact``: the trace of the dual Gram (1/N) sum_{i,c} ||J_i^T S_i[:, c]||^2 from its
    diagonal only (structured for Linear/Conv/RNN layers). ``hutchinson``: the unbiased estimate
    (1/N) mean_u ||J^T S u||^2 over ``num_probes`` Rademacher vectors u in output space, one
    vjp each (vmapped in chunks of ``chunk_size``), drawn from ``generator`` (``None``: a
    private generator seeded with 0; ``seed``: its deprecated spelling, an int).
    """
    owner = "fisher_trace"
    generator = renamed_argument(owner, "seed", "generator", seed, generator)
    _check(owner, model, x, likelihood)
    check_choice(owner, "method", method, TRACE_METHODS)
    with measuring(model, eval_mode):
        if method == "exact":
            diag = fisher_gram(
                model, x, likelihood, output_fn=output_fn, chunk_size=chunk_size, diagonal=True
            )
            return diag.sum()
        check_int(owner, "num_probes", num_probes, minimum=1)
        op = FisherOperator(model, x, likelihood, output_fn=output_fn, eval_mode=False)
        f = op.outputs
        gen = make_generator(owner, generator, f.device)
        u = torch.randint(0, 2, (num_probes, *f.shape), generator=gen, device=f.device)
        u = u.to(f.dtype) * 2 - 1
        sqrt_h = LIKELIHOODS[likelihood].sqrt(f)
        w = torch.einsum("ncd,knd->knc", sqrt_h, u)  # S_i u_i per probe
        g = torch.func.vmap(op.vjp, chunk_size=chunk_size)(w)
        return (g**2).sum(1).mean() / op.n


def spectral_density(
    model: nn.Module,
    x: Tensor,
    likelihood: str = "categorical",
    *,
    num_probes: int = 8,
    lanczos_steps: int = 40,
    grid: Tensor | int = 512,
    sigma: float | None = None,
    generator: torch.Generator | None = None,
    output_fn: OutputFn | None = None,
    eval_mode: bool = True,
    seed: int | None = None,
) -> tuple[Tensor, Tensor]:
    """The Fisher's eigenvalue density (1/P) sum_j delta(lambda_j), broadened by a Gaussian of
    width ``sigma``, by stochastic Lanczos quadrature (``num_probes`` Rademacher probes,
    ``lanczos_steps`` steps each) on matrix-free Fisher-vector products. Includes the mass at 0
    of the P - rank null directions.

    Args:
        grid: evaluation points (1-d tensor), or their number, spread over
            [min node - 5 sigma, max node + 5 sigma] so the density integrates to 1.
        sigma: kernel width; default 1% of the spread of the quadrature nodes.
        generator: draws the probes (``None``: a private generator seeded with 0; ``seed``:
            its deprecated spelling, an int).

    Returns:
        (grid, density): two 1-d float64 CPU tensors of equal length; density >= 0 and
        integrates (trapezoid) to ~1 over the default grid.
    """
    owner = "spectral_density"
    generator = renamed_argument(owner, "seed", "generator", seed, generator)
    _check(owner, model, x, likelihood)
    check_int(owner, "num_probes", num_probes, minimum=1)
    check_int(owner, "lanczos_steps", lanczos_steps, minimum=1)
    if isinstance(grid, Tensor):
        if grid.dim() != 1 or grid.numel() < 2:
            fail(owner, "grid", "a 1-d tensor of >= 2 points", grid.shape, ShapeError)
    elif isinstance(grid, bool) or not isinstance(grid, int) or grid < 2:
        fail(owner, "grid", "a 1-d tensor or an int >= 2", grid)
    check_number(owner, "sigma", sigma, positive=True, optional=True)
    with measuring(model, eval_mode):
        op = _operator(model, x, likelihood, output_fn, False)
        gen = make_generator(owner, generator, op.device)
        nodes = slq_nodes(op, num_probes=num_probes, steps=lanczos_steps, generator=gen)
    if isinstance(op, DualFisherOperator):
        # F's spectrum = M's N*C eigenvalues + (P - N*C) zeros
        frac = op.shape[0] / op.num_params
        zero = torch.zeros(1, dtype=torch.float64)
        nodes = [(torch.cat([t, zero]), torch.cat([w * frac, zero + (1 - frac)])) for t, w in nodes]
    lo = min(float(t.min()) for t, _ in nodes)
    hi = max(float(t.max()) for t, _ in nodes)
    if sigma is None:
        sigma = max(hi - lo, 1e-12 * max(abs(hi), 1.0)) / 100
    if not isinstance(grid, Tensor):
        grid = torch.linspace(lo - 5 * sigma, hi + 5 * sigma, grid, dtype=torch.float64)
    return grid.detach().to("cpu", torch.float64), gaussian_density(nodes, grid, sigma)


__all__ = ["BUDGET", "fisher_eigenvalues", "fisher_trace", "spectral_density"]
