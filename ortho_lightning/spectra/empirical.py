"""The empirical Fisher of a labelled batch, F_emp = (1/N) sum_i g_i g_i^T with
g_i = d loss(f(x_i), y_i) / d theta the per-sample gradient of the negative log-likelihood at
the TRUE labels (as Sokol & Park 2019 measure it), not the model's own predictive expectation
(that is the true Fisher of :func:`~ortho_lightning.spectra.fisher_eigenvalues`).

With r_i = d loss / d f_i (softmax(f_i) - onehot(y_i) for ``"categorical"`` logits,
f_i - y_i for ``"gaussian"`` means) the gradient is g_i = J_i^T r_i, so the (N x N) Gram
(1/N) [g_i . g_j] = R^T K R / N, with K = J J^T the (N*C x N*C) kernel of the outputs and R the
block-diagonal (N*C x N) matrix of the r_i. K / N is the dual Gram of the Gaussian-likelihood
Fisher (:func:`~ortho_lightning.spectra.fisher_gram`, structured per layer), so nothing P long
is ever formed and the non-zero eigenvalues of F_emp are those of an N x N matrix.
"""

from __future__ import annotations

from collections.abc import Callable

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
from ortho_lightning.spectra.gram import fisher_gram
from ortho_lightning.validation import check_choice, check_int, fail


def _categorical_residual(f: Tensor, labels: Tensor) -> Tensor:
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.shape != f.shape[:1]:
        raise ShapeError(
            f"labels: the categorical likelihood needs integer class indices of shape "
            f"({f.shape[0]},), got dtype {labels.dtype} and shape {tuple(labels.shape)}"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= f.shape[1]):
        raise ShapeError(
            f"labels: class indices must lie in [0, {f.shape[1]}) for {f.shape[1]} logits, got "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
    r = torch.softmax(f, dim=-1)
    return r - nn.functional.one_hot(labels.long(), f.shape[1]).to(r.dtype)


def _gaussian_residual(f: Tensor, labels: Tensor) -> Tensor:
    if not labels.dtype.is_floating_point or labels.numel() != f.numel():
        raise ShapeError(
            f"labels: the gaussian likelihood needs floating-point targets with {f.shape[1]} "
            f"values per sample ({f.numel()} in all), got dtype {labels.dtype} and shape "
            f"{tuple(labels.shape)}"
        )
    return f - labels.reshape(f.shape).to(f.dtype)


#: d loss / d f per likelihood: ``fn(outputs (N, C), labels) -> (N, C)``, loss the negative
#: log-likelihood (cross-entropy of logits; 0.5 ||f - y||^2 for unit-variance Gaussian means).
RESIDUALS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "categorical": _categorical_residual,
    "gaussian": _gaussian_residual,
}


def loss_residuals(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    likelihood: str = "categorical",
    *,
    output_fn: OutputFn | None = None,
) -> tuple[Tensor, Tensor]:
    """``(outputs, residuals)``, both (N, C): the model's outputs on ``x`` (one no-grad forward
    in the model's current mode) and r_i = d loss(f_i, y_i) / d f_i."""
    check_choice("loss_residuals", "likelihood", likelihood, tuple(RESIDUALS))
    if not isinstance(labels, Tensor):
        fail("loss_residuals", "labels", "a torch.Tensor", type(labels), ShapeError)
    with torch.no_grad():
        f = as_batch_output(model(x), x.shape[0], output_fn, "model", likelihood == "categorical")
    if labels.shape[:1] != f.shape[:1]:
        raise ShapeError(
            f"labels: expected {f.shape[0]} labels (the batch of x) first, got shape "
            f"{tuple(labels.shape)}"
        )
    return f, RESIDUALS[likelihood](f, labels)


def empirical_fisher_gram(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    likelihood: str = "categorical",
    *,
    output_fn: OutputFn | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """The (N x N) Gram (1/N) [g_i . g_j] of the per-sample loss gradients, in the model's
    current mode (wrap in :func:`~ortho_lightning.spectra._common.measuring`); its eigenvalues
    are the non-zero ones of the empirical Fisher."""
    _, r = loss_residuals(model, x, labels, likelihood, output_fn=output_fn)
    n, c = r.shape
    kernel = fisher_gram(model, x, "gaussian", output_fn=output_fn, chunk_size=chunk_size)
    k = kernel.view(n, c, n, c).to(r.dtype)
    return torch.einsum("ic,icjd,jd->ij", r, k, r)


def empirical_fisher_eigenvalues(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    likelihood: str = "categorical",
    k: int | None = None,
    *,
    output_fn: OutputFn | None = None,
    chunk_size: int | None = None,
    eval_mode: bool = True,
) -> Tensor:
    """Eigenvalues of the empirical Fisher (1/N) sum_i g_i g_i^T, descending.

    Args:
        model: any module whose raw output on ``x`` is (N, C) logits (categorical) or means
            (gaussian), or ``output_fn`` picks it.
        x: (N, ...) batch.
        labels: (N,) integer classes (categorical) or (N, C) float targets (gaussian).
        likelihood: ``"categorical"`` (cross-entropy) or ``"gaussian"`` (0.5 squared error).
        k: keep the top ``k`` (zero-padded past the rank bound min(N, P)).
        output_fn, chunk_size: as in :func:`~ortho_lightning.spectra.fisher_eigenvalues`.
        eval_mode: measure in eval mode and restore the modes after.

    Returns:
        1-d tensor of min(N, P) values (or ``k``), descending, >= 0; the largest is the
        empirical Fisher's lambda_max.
    """
    owner = "empirical_fisher_eigenvalues"
    check_model(owner, model)
    check_batch(owner, x)
    check_choice(owner, "likelihood", likelihood, tuple(RESIDUALS))
    check_int(owner, "k", k, minimum=1, optional=True)
    if not isinstance(labels, Tensor):
        fail(owner, "labels", "a torch.Tensor", type(labels), ShapeError)
    num_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    with measuring(model, eval_mode):
        gram = empirical_fisher_gram(
            model, x, labels, likelihood, output_fn=output_fn, chunk_size=chunk_size
        )
    values = torch.linalg.eigvalsh(linalg_ready((gram + gram.T) / 2)).flip(0).clamp_min(0)
    values = values[: min(values.numel(), num_params)]
    if k is None:
        return values
    return torch.cat([values[:k], values.new_zeros(max(0, k - values.numel()))])


__all__ = [
    "RESIDUALS",
    "empirical_fisher_eigenvalues",
    "empirical_fisher_gram",
    "loss_residuals",
]
