"""The output-space curvature H of each likelihood, as a table (name -> object).

The Fisher of a model with outputs f (N, C) is F = (1/N) sum_i J_i^T H_i J_i. Each likelihood
gives H_i applied to vectors (for Fisher-vector products) and a factor S_i with
H_i = S_i S_i^T (for the dual Gram matrix). Outputs are taken as the model's raw outputs:
logits for ``"categorical"`` (softmax inside), means of a unit-variance Gaussian for
``"gaussian"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ortho_lightning.validation import check_choice


def _categorical_sqrt(f: Tensor) -> Tensor:
    # H = diag(p) - p p^T = S S^T with S = diag(sqrt p) - p sqrt(p)^T
    p = torch.softmax(f, dim=-1)
    s = p.sqrt()
    return torch.diag_embed(s) - p[:, :, None] * s[:, None, :]


def _categorical_hvp(f: Tensor, u: Tensor) -> Tensor:
    p = torch.softmax(f, dim=-1)
    return p * u - p * (p * u).sum(-1, keepdim=True)


def _gaussian_sqrt(f: Tensor) -> Tensor:
    eye = torch.eye(f.shape[1], dtype=f.dtype, device=f.device)
    return eye.expand(f.shape[0], -1, -1)


def _gaussian_hvp(f: Tensor, u: Tensor) -> Tensor:
    return u


@dataclass(frozen=True)
class Likelihood:
    """``sqrt(f)`` -> (N, C, C) factor S with H = S S^T; ``hvp(f, u)`` -> H u, both (N, C).
    ``matrix_output``: whether the raw model output must be exactly (N, C)."""

    sqrt: Callable[[Tensor], Tensor]
    hvp: Callable[[Tensor, Tensor], Tensor]
    matrix_output: bool


LIKELIHOODS: dict[str, Likelihood] = {
    "categorical": Likelihood(_categorical_sqrt, _categorical_hvp, True),
    "gaussian": Likelihood(_gaussian_sqrt, _gaussian_hvp, False),
}


def get_likelihood(name: str, owner: str = "get_likelihood") -> Likelihood:
    """The :data:`LIKELIHOODS` entry ``name``; otherwise a ``ConfigurationError``
    ``"{owner}: likelihood must be one of [...], got ..."`` (``owner``: the public function or
    class the user called)."""
    return LIKELIHOODS[check_choice(owner, "likelihood", name, tuple(LIKELIHOODS))]
