"""The empirical neural tangent kernel Theta = J J^T of a model's outputs on a batch
(J = d f / d theta, (N*C, P)): the (N*C x N*C) matrix Theta[(i, c), (j, d)] =
<d f_ic / d theta, d f_jd / d theta>, rows ordered sample-major ((i, c) -> i*C + c).

It is N times the dual Gram of the unit-variance Gaussian-likelihood Fisher (H = I, so
S_i = I and G = J): :func:`~ortho_lightning.spectra.fisher_gram` builds it (structured per
Linear/Conv/RNN layer, torch.func elsewhere), :func:`~ortho_lightning.spectra.fisher_trace` its
trace and :func:`~ortho_lightning.spectra.fisher_eigenvalues` its Lanczos top-k; this module only
rescales them. Parameters, modes and outputs follow the Fisher's conventions (trainable
``named_parameters()``, eval mode by default and restored, outputs flattened per sample or
picked by ``output_fn``).

The laziness measure of training is the relative drift ||Theta_t - Theta_0||_F / ||Theta_0||_F
against a kernel stored at init (:func:`ntk_drift`, :func:`kernel_distance`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ortho_lightning.exceptions import ShapeError
from ortho_lightning.spectra._common import (
    OutputFn,
    as_batch_output,
    check_batch,
    check_model,
    linalg_ready,
    measuring,
)
from ortho_lightning.spectra.fisher import (
    EIGEN_METHODS,
    TRACE_METHODS,
    fisher_eigenvalues,
    fisher_trace,
)
from ortho_lightning.spectra.gram import fisher_gram
from ortho_lightning.spectra.linear_operator import LinearOperator
from ortho_lightning.spectra.operators import DualFisherOperator
from ortho_lightning.validation import check_choice, check_int, fail, renamed_argument


def _check(owner: str, model: object, x: object) -> None:
    check_model(owner, model)
    check_batch(owner, x)


class NTKOperator(LinearOperator):
    """The empirical NTK Theta = J J^T of ``model`` on the batch ``x`` as an (N*C, N*C)
    operator on flat output-space vectors (sample-major, as :func:`ntk_matrix`), never formed:
    N times the Gaussian-likelihood :class:`~ortho_lightning.spectra.operators.DualFisherOperator`
    (structured per Linear/Conv layer, jvp/vjp elsewhere). For kernel solves or Lanczos when
    N*C is too large for :func:`ntk_matrix`.

    Attributes:
        shape: (N*C, N*C); num_params: P; dtype, device: the outputs'.
    """

    def __init__(
        self,
        model: nn.Module,
        x: Tensor,
        *,
        output_fn: OutputFn | None = None,
        eval_mode: bool = True,
    ) -> None:
        _check("NTKOperator", model, x)
        self._dual = DualFisherOperator(
            model, x, "gaussian", output_fn=output_fn, eval_mode=eval_mode
        )
        self.n = x.shape[0]
        self.shape, self.num_params = self._dual.shape, self._dual.num_params
        self.dtype, self.device = self._dual.dtype, self._dual.device

    def _matvec(self, u: Tensor) -> Tensor:
        return self._dual._matvec(u) * self.n

    def _matmat(self, u: Tensor) -> Tensor:
        return self._dual._matmat(u) * self.n


def ntk_matrix(
    model: nn.Module,
    x: Tensor,
    *,
    output_fn: OutputFn | None = None,
    chunk_size: int | None = None,
    eval_mode: bool = True,
) -> Tensor:
    """The empirical NTK Theta = J J^T of ``model``'s outputs on the batch ``x``.

    Args:
        model: any module; its output on ``x`` is flattened per sample to (N, C), or
            ``output_fn`` picks the tensor.
        x: (N, ...) batch.
        output_fn: selects the output tensor from the model's output.
        chunk_size: vmap chunk of the generic (non-structured) route.
        eval_mode: measure in eval mode and restore every submodule's mode after.

    Returns:
        (N*C, N*C) symmetric PSD matrix in the parameters' dtype, rows sample-major.
    """
    _check("ntk_matrix", model, x)
    with measuring(model, eval_mode):
        gram = fisher_gram(model, x, "gaussian", output_fn=output_fn, chunk_size=chunk_size)
    theta = gram * x.shape[0]
    return (theta + theta.T) / 2


def kernel_eigenvalues(theta: Tensor, k: int | None = None) -> Tensor:
    """Eigenvalues of a symmetric PSD kernel matrix (e.g. :func:`ntk_matrix`), descending,
    clamped at 0; the top ``k`` if given (``k`` at most the matrix size)."""
    owner = "kernel_eigenvalues"
    if not isinstance(theta, Tensor) or theta.dim() != 2 or theta.shape[0] != theta.shape[1]:
        got = theta.shape if isinstance(theta, Tensor) else type(theta)
        fail(owner, "theta", "a square matrix", got, ShapeError)
    check_int(owner, "k", k, minimum=1, optional=True)
    if k is not None and k > theta.shape[0]:
        fail(owner, "k", f"at most the kernel size N*C={theta.shape[0]}", k)
    values = torch.linalg.eigvalsh(linalg_ready(theta)).flip(0).clamp_min(0)
    return values if k is None else values[:k]


def ntk_eigenvalues(
    model: nn.Module,
    x: Tensor,
    method: str = "exact",
    k: int | None = None,
    *,
    tol: float = 1e-6,
    generator: torch.Generator | None = None,
    max_iter: int | None = None,
    output_fn: OutputFn | None = None,
    chunk_size: int | None = None,
    eval_mode: bool = True,
    seed: int | None = None,
) -> Tensor:
    """Eigenvalues of the empirical NTK, descending.

    Args:
        model, x, output_fn, chunk_size, eval_mode: as in :func:`ntk_matrix`.
        method: ``"exact"``: all N*C eigenvalues of :func:`ntk_matrix` (its ``eigvalsh``);
            ``"lanczos"``: the top ``k`` by Lanczos on matrix-free products (the Gaussian
            Fisher's operator, in output space or parameter space whichever is smaller), for
            when N*C is too large for a dense kernel.
        k: number of eigenvalues (required for lanczos; for exact, keeps the top ``k``); at
            most N*C.
        tol, generator, max_iter: Lanczos relative residual tolerance, the start vector's
            random source (``None``: a private generator seeded with 0), step bound.
        seed: deprecated spelling of ``generator`` (an int seed, until 0.3.0).

    Returns:
        1-d tensor, >= 0: N*C values (exact), or ``k``. Past the rank min(N*C, P) they are 0.
    """
    owner = "ntk_eigenvalues"
    generator = renamed_argument(owner, "seed", "generator", seed, generator)
    _check(owner, model, x)
    check_choice(owner, "method", method, EIGEN_METHODS)
    if method == "lanczos" and k is None:
        fail(owner, "k", "the number of top eigenvalues (an integer >= 1) for method='lanczos'", k)
    check_int(owner, "k", k, minimum=1, optional=True)
    if method == "exact":
        return kernel_eigenvalues(
            ntk_matrix(model, x, output_fn=output_fn, chunk_size=chunk_size, eval_mode=eval_mode), k
        )
    with torch.no_grad(), measuring(model, eval_mode):
        size = as_batch_output(model(x), x.shape[0], output_fn, "model").numel()
    if k > size:
        fail(owner, "k", f"at most the kernel size N*C={size}", k)
    num_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # Theta = N * (dual of the Gaussian Fisher): the same non-zero eigenvalues, times N
    top = fisher_eigenvalues(
        model, x, "gaussian", "lanczos", min(k, max(num_params, 1)), tol=tol,
        generator=generator,  # an int here is the deprecated seed, resolved as fisher's
        max_iter=max_iter, chunk_size=chunk_size, output_fn=output_fn, eval_mode=eval_mode,
    ) * x.shape[0]
    return torch.cat([top, top.new_zeros(k - top.numel())])


def ntk_trace(
    model: nn.Module,
    x: Tensor,
    method: str = "exact",
    *,
    num_probes: int = 64,
    generator: torch.Generator | None = None,
    output_fn: OutputFn | None = None,
    chunk_size: int | None = None,
    eval_mode: bool = True,
    seed: int | None = None,
) -> Tensor:
    """tr Theta = sum_{i,c} ||d f_ic / d theta||^2, a 0-d tensor: ``exact`` from the kernel's
    diagonal only (structured per layer, no N*C x N*C matrix), ``hutchinson`` an unbiased
    estimate from ``num_probes`` Rademacher probes drawn from ``generator`` (``None``: a private
    generator seeded with 0; ``seed``: its deprecated spelling, an int)."""
    owner = "ntk_trace"
    generator = renamed_argument(owner, "seed", "generator", seed, generator)
    _check(owner, model, x)
    check_choice(owner, "method", method, TRACE_METHODS)
    tr = fisher_trace(
        model, x, "gaussian", method, num_probes=num_probes, chunk_size=chunk_size,
        generator=generator,  # an int here is the deprecated seed, resolved as fisher's
        output_fn=output_fn, eval_mode=eval_mode,
    )
    return tr * x.shape[0]


def kernel_distance(theta: Tensor, reference: Tensor) -> Tensor:
    """||theta - reference||_F / ||reference||_F in float64, a 0-d tensor (on ``theta``'s
    device); both matrices of the same shape."""
    for name, t in (("theta", theta), ("reference", reference)):
        if not isinstance(t, Tensor) or t.dim() != 2:
            got = t.shape if isinstance(t, Tensor) else type(t)
            fail("kernel_distance", name, "a 2-d kernel matrix", got, ShapeError)
    if theta.shape != reference.shape:
        raise ShapeError(
            f"reference has shape {tuple(reference.shape)} but the kernel is "
            f"{tuple(theta.shape)}: it must come from the same probe batch (N*C rows)"
        )
    ref = reference.to(device=theta.device, dtype=torch.float64)
    norm = torch.linalg.matrix_norm(ref)
    if not norm > 0:
        raise ShapeError("reference is the zero matrix: the relative distance is undefined")
    return torch.linalg.matrix_norm(theta.to(torch.float64) - ref) / norm


def ntk_drift(
    model: nn.Module,
    x: Tensor,
    reference: Tensor,
    *,
    output_fn: OutputFn | None = None,
    chunk_size: int | None = None,
    eval_mode: bool = True,
) -> Tensor:
    """Relative drift ||Theta_t - Theta_0||_F / ||Theta_0||_F of the model's NTK on ``x``
    against ``reference`` = Theta_0, a :func:`ntk_matrix` of the same batch stored earlier
    (e.g. at init). A float64 0-d tensor; 0 when the kernel has not moved."""
    _check("ntk_drift", model, x)
    theta = ntk_matrix(model, x, output_fn=output_fn, chunk_size=chunk_size, eval_mode=eval_mode)
    return kernel_distance(theta, reference)


__all__ = [
    "NTKOperator",
    "kernel_distance",
    "kernel_eigenvalues",
    "ntk_drift",
    "ntk_eigenvalues",
    "ntk_matrix",
    "ntk_trace",
]
