"""An upper bound on the Fisher's largest eigenvalue from its layer blocks (block Gershgorin,
in the spirit of Sokol & Park 2019), computed per sample without any P-long object.

Write the per-sample factor A_i = W_i^T J_i (K x P) with J_i = d f_i / d theta and W_i the
(C x K) output weighting: W_i = S_i (H_i = S_i S_i^T) for the true Fisher F = (1/N) sum_i
A_i^T A_i, or W_i = r_i = d loss_i / d f_i (K = 1) for the empirical Fisher. Split theta into
blocks l (one per structured layer, plus one for every other trainable parameter) and
A_i = [A_i^1, ..., A_i^B]. Then F_ll' = (1/N) sum_i A_i^l^T A_i^l' and

    ||F_ll'|| <= b_ll' = (1/N) sum_i a_il a_il',   a_il = ||A_i^l||_2,
    lambda_max(F) <= max_l sum_l' b_ll'            (block Gershgorin, Feingold & Varga 1962)
    lambda_max(F) <= (1/N) sum_i ||A_i||_2^2       (lambda_max is subadditive over samples).

For a Linear layer h_l = W x_{l-1} + b, A_i^l = (W_i^T D_i^l) (x) [x_{l-1,i}^T, 1] with
D_i^l = d f_i / d h_l the layer-to-output Jacobian, so a_il = ||W_i^T D_i^l||_2
sqrt(||x_{l-1,i}||^2 + 1) exactly (norm of a Kronecker product), which is at most
||S_i|| ||D_i^l|| sqrt(||x_{l-1,i}||^2 + 1): the bound is a sum of products of the layer
Jacobians' spectral norms and the activations' norms. For layers applied at several positions
(convolutions, time steps) a_il is computed exactly from the (K x K) Gram of A_i^l.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap

from ortho_lightning.spectra._common import (
    OutputFn,
    as_batch_output,
    check_batch,
    check_model,
    measuring,
)
from ortho_lightning.spectra.empirical import loss_residuals
from ortho_lightning.spectra.gram import BUDGET, structured_factors
from ortho_lightning.spectra.likelihoods import LIKELIHOODS
from ortho_lightning.validation import check_choice


@dataclass(frozen=True)
class FisherBound:
    """Upper bounds on lambda_max of a Fisher (see the module docstring).

    Attributes:
        bound: the smaller of the two bounds below (0-d tensor).
        gershgorin: max_l sum_l' (1/N) sum_i a_il a_il' over the layer blocks (0-d).
        per_sample: (1/N) sum_i ||A_i||^2 (0-d).
        block_norms: (N, B) the a_il = ||A_i^l||_2, one column per structured weight matrix
            (with its bias) in module order (a recurrent layer's input and recurrent matrices
            are two), then, if any, one for all other trainable parameters together.
    """

    bound: Tensor
    gershgorin: Tensor
    per_sample: Tensor
    block_norms: Tensor


def _layer_grams(a: Tensor, dw: Tensor, bias: bool, budget: int) -> Tensor:
    """(N, K, K) Grams A_i^l A_i^l^T of one layer, from its inputs a (N, L, I) and weighted
    output gradients dw (N, K, L, O)."""
    n, length, i_dim = a.shape
    k, o_dim = dw.shape[1], dw.shape[3]
    b = 1.0 if bias else 0.0
    if length == 1:
        d1 = dw[:, :, 0]
        return (d1 @ d1.mT) * ((a[:, 0] ** 2).sum(-1) + b)[:, None, None]
    pair, mat = k * k * length * length + length * length, k * o_dim * i_dim
    step = max(1, budget // max(1, min(pair, mat)))
    out = []
    for lo in range(0, n, step):
        aa, dd = a[lo : lo + step], dw[lo : lo + step]
        if pair <= mat:
            kd = torch.einsum("nklo,njmo->nkjlm", dd, dd)
            ka = torch.einsum("nli,nmi->nlm", aa, aa) + b
            out.append(torch.einsum("nkjlm,nlm->nkj", kd, ka))
        else:
            g = torch.einsum("nklo,nli->nkoi", dd, aa).flatten(2)
            gram = g @ g.mT
            if bias:
                gb = dd.sum(2)
                gram = gram + gb @ gb.mT
            out.append(gram)
    return torch.cat(out)


def _rest_grams(
    model: nn.Module,
    params: dict[str, Tensor],
    rest: list[str],
    x: Tensor,
    weights: Tensor,
    output_fn: OutputFn | None,
) -> Tensor:
    """(N, K, K) Grams of the rows W_i[:, k]^T J_i over the parameters ``rest`` (one batched
    vjp per row: the batch map's vjp with a cotangent supported on sample i)."""
    n, c, k = weights.shape
    fixed = {name: v for name, v in params.items() if name not in rest}
    sub = {name: params[name] for name in rest}

    def batch_out(p: dict[str, Tensor]) -> Tensor:
        out = functional_call(model, {**fixed, **p}, (x,))
        return as_batch_output(out, n, output_fn, "model")

    _, pull = vjp(batch_out, sub)
    eye = torch.eye(n, dtype=weights.dtype, device=weights.device)
    cot = eye[:, None, :, None] * weights.transpose(1, 2)[:, :, None, :]  # (N, K, N, C)
    (grads,) = vmap(pull)(cot.reshape(n * k, n, c))
    g = torch.cat([grads[name].reshape(n, k, -1) for name in rest], dim=2)
    return g @ g.mT


def fisher_max_bound(
    model: nn.Module,
    x: Tensor,
    likelihood: str = "categorical",
    *,
    labels: Tensor | None = None,
    output_fn: OutputFn | None = None,
    eval_mode: bool = True,
    budget: int = BUDGET,
) -> FisherBound:
    """Upper bounds on lambda_max of the Fisher of ``model`` on the batch ``x``.

    Args:
        model, x, likelihood, output_fn, eval_mode: as in
            :func:`~ortho_lightning.spectra.fisher_eigenvalues`.
        labels: ``None``: bound the true Fisher (1/N) sum_i J_i^T H_i J_i; the batch's labels
            ((N,) classes or (N, C) targets): bound the empirical Fisher of
            :func:`~ortho_lightning.spectra.empirical_fisher_eigenvalues`.
        budget: bound, in elements, on intermediate blocks of position-wise layers.

    Returns:
        :class:`FisherBound`; ``bound`` >= lambda_max(F) always (up to rounding).
    """
    owner = "fisher_max_bound"
    check_model(owner, model)
    check_batch(owner, x)
    check_choice(owner, "likelihood", likelihood, tuple(LIKELIHOODS))
    with measuring(model, eval_mode):
        # S = I: d holds the raw layer-to-output Jacobians D_i^l, weighted below
        fac = structured_factors(model, x, "gaussian", output_fn=output_fn)
        f = fac.outputs
        if labels is None:
            weights = LIKELIHOODS[likelihood].sqrt(f)
        else:
            _, r = loss_residuals(model, x, labels, likelihood, output_fn=output_fn)
            weights = r[:, :, None]
        weights = weights.to(f.dtype)
        grams = []
        for a, d, bias in fac.layers:
            dw = torch.einsum("nck,nclo->nklo", weights, d)
            grams.append(_layer_grams(a, dw, bias, budget))
        if fac.rest:
            grams.append(_rest_grams(model, fac.params, fac.rest, x, weights, output_fn))
    stacked = torch.stack(grams, 1)  # (N, B, K, K)
    norms = torch.linalg.eigvalsh(stacked).amax(-1).clamp_min(0).sqrt()  # (N, B)
    n = norms.shape[0]
    gershgorin = (norms.T @ norms / n).sum(1).max()
    per_sample = torch.linalg.eigvalsh(stacked.sum(1)).amax(-1).clamp_min(0).mean()
    return FisherBound(torch.minimum(gershgorin, per_sample), gershgorin, per_sample, norms)


__all__ = ["FisherBound", "fisher_max_bound"]
