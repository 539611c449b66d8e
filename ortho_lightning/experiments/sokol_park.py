"""Experiment 3a: Sokol & Park (ICLR 2020, arXiv 1810.03785), the q* sweep at init.

For a critical tanh MLP classifier of MNIST (784 -> width x (depth - 1) -> 10) at the fixed
point q* (``critical_point("tanh", q_star=q)``, the first layer matched so the data enter at q*),
on one batch of training images: lambda_max of the empirical Fisher (per-sample gradients of
the cross-entropy at the true labels, as in the paper) and of the true Fisher, the squared
spectral radius of the input-to-logits Jacobian, and the layer-block bound of
:func:`~ortho_lightning.spectra.fisher_max_bound` on both Fishers.

Pure torch, no Lightning. Inputs are pixels in [0, 1] standardised by the training mean and std.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ortho_lightning.experiments.fisher import mnist_tensors
from ortho_lightning.init import initialize
from ortho_lightning.spectra import (
    empirical_fisher_eigenvalues,
    fisher_eigenvalues,
    fisher_max_bound,
    jacobian_singular_values,
)


def tanh_classifier(depth: int, width: int, n_in: int = 784, n_out: int = 10,
                    dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """``depth`` Linear layers n_in -> width x (depth - 1) -> n_out, tanh between (uninitialised)."""
    sizes = [n_in] + [width] * (depth - 1) + [n_out]
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b, dtype=dtype), nn.Tanh()]
    return nn.Sequential(*layers[:-1])


def fisher_at_q_star(q_star: float, weights: str, depth: int = 32, width: int = 256,
                     n_batch: int = 64, data_dir: str | None = None, seed: int = 0
                     ) -> dict[str, Any]:
    """One row at init for the network of ``seed``, on the first ``n_batch`` MNIST training
    images (float64): ``fisher_emp_max`` and ``fisher_max`` (lambda_max of the empirical and the
    true Fisher), ``jac_sv_max_sq`` (largest squared singular value of d logits / d x over the
    batch) and ``jac_sv_max_sq_mean`` (its mean over the samples), ``jac_hidden_sv_max_sq``
    (the same from the first pre-activation h_1 to the logits: the critical stack without the
    input layer that ``input_q="match"`` scales by sqrt(q* / mean(x^2))), ``bound`` /
    ``bound_emp`` (:func:`fisher_max_bound` for the true / empirical Fisher) and their ratios to
    lambda_max, ``q_first`` / ``q_last`` (the measured q of the first and last hidden layer) and
    ``loss`` (cross-entropy at init)."""
    x, y, _ = mnist_tensors(n_batch, 1, data_dir)
    x = x.double()
    model = tanh_classifier(depth, width)
    report = initialize(model, scheme=weights, gain="critical", activation="tanh",
                        q_star=q_star, input_q="match", inputs=x,
                        generator=torch.Generator().manual_seed(seed))
    qs = [r.q for r in report if r.q is not None]
    lam = float(fisher_eigenvalues(model, x, k=1)[0])
    lam_emp = float(empirical_fisher_eigenvalues(model, x, y, k=1)[0])
    sv = jacobian_singular_values(model, x)[:, 0]
    with torch.no_grad():
        h1 = model[0](x)
    sv_hidden = jacobian_singular_values(model[1:], h1)[:, 0]
    bound = float(fisher_max_bound(model, x).bound)
    bound_emp = float(fisher_max_bound(model, x, labels=y).bound)
    with torch.no_grad():
        loss = float(nn.functional.cross_entropy(model(x), y))
    return {"fisher_emp_max": lam_emp, "fisher_max": lam,
            "jac_sv_max_sq": float(sv.max()) ** 2, "jac_sv_max_sq_mean": float((sv**2).mean()),
            "jac_hidden_sv_max_sq": float(sv_hidden.max()) ** 2,
            "bound": bound, "bound_emp": bound_emp, "bound_over_lambda": bound / lam,
            "bound_emp_over_lambda": bound_emp / lam_emp, "q_first": qs[0], "q_last": qs[-2],
            "loss": loss}


def pearson(xs: list[float], ys: list[float]) -> float:
    """Pearson correlation of two equally long samples (NaN for fewer than 3 or no spread)."""
    if len(xs) < 3 or len(xs) != len(ys):
        return math.nan
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxy = sum((a - mx) * (b - my) for a, b in zip(xs, ys))
    sxx = sum((a - mx) ** 2 for a in xs)
    syy = sum((b - my) ** 2 for b in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def q_star_correlation(columns: list[str], rows: list[dict[str, Any]], figures_dir: Any,
                       xs: tuple[str, ...] = ("jac_sv_max_sq", "jac_hidden_sv_max_sq"),
                       ys: tuple[str, ...] = ("fisher_emp_max", "fisher_max")) -> str:
    """Report hook: Pearson rho of each of ``ys`` with each of ``xs`` over all networks, per
    init and pooled, on the values and on their logs; and the medians per q* (whether they
    rise with q*)."""
    from ortho_lightning.experiments.report import markdown_table

    def pts(sub: list[dict[str, Any]], x: str, y: str) -> list[tuple[float, float]]:
        return [(r[x], r[y]) for r in sub if isinstance(r.get(x), (int, float))
                and isinstance(r.get(y), (int, float)) and r[x] > 0 and r[y] > 0]

    inits = sorted({r.get("weights") for r in rows}, key=str)
    body = []
    for x in xs:
        for y in ys:
            for w in [*inits, "pooled"]:
                p = pts([r for r in rows if w == "pooled" or r.get("weights") == w], x, y)
                body.append([y, x, w, len(p), pearson([a for a, _ in p], [b for _, b in p]),
                             pearson([math.log(a) for a, _ in p], [math.log(b) for _, b in p])])
    text = ("## Pearson correlation of lambda_max with the squared Jacobian spectral radius\n\n"
            + markdown_table(["lambda_max of", "against", "init", "networks", "rho",
                              "rho of logs"], body))
    medians = []
    for w in inits:
        for q in sorted({r.get("q_star") for r in rows if r.get("weights") == w}):
            sub = [r for r in rows if r.get("weights") == w and r.get("q_star") == q]
            medians.append([w, q, *(_median([r[c] for r in sub if isinstance(r.get(c), (int, float))])
                                    for c in (*xs, *ys))])
    return text + ("\n\n## Medians per q*\n\n"
                   + markdown_table(["init", "q*", *xs, *ys], medians))


def _median(values: list[float]) -> float:
    s = sorted(values)
    if not s:
        return math.nan
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
