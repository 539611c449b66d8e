"""The numbers people plot from a spectrum."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ortho_lightning.exceptions import ShapeError
from ortho_lightning.validation import check_choice

KINDS = ("singular", "fisher", "kernel")


def summarize(
    values: Tensor, kind: str = "singular", jacobian_sv: Tensor | None = None
) -> dict[str, float]:
    """Summary statistics of a spectrum (all values pooled, any shape).

    ``kind="singular"`` (singular values s): ``mean_sq`` (mean s^2), ``max``, ``min``,
    ``condition`` (max / min; inf when min is 0), ``std`` (of s), ``frac_within_10pct``
    (fraction with |s - 1| <= 0.1).

    ``kind="fisher"`` (eigenvalues lambda): ``max``, ``trace`` (sum of the given values),
    ``mean`` (over the given values), and with ``jacobian_sv`` (singular values of the
    input-output Jacobian, any shape) ``max_over_jacobian_sq`` = lambda_max / s_max(J)^2
    (Sokol & Park 2019 relate the two).

    ``kind="kernel"`` (eigenvalues of a PSD kernel such as the NTK, all of them): the ``fisher``
    keys plus ``min`` and ``condition`` (max / min; inf when min is 0).
    """
    check_choice("summarize", "kind", kind, KINDS)
    if not isinstance(values, Tensor) or values.numel() == 0:
        raise ShapeError("values must be a non-empty tensor")
    v = values.detach().reshape(-1).to(torch.float64)
    if kind == "singular":
        vmax, vmin = float(v.max()), float(v.min())
        return {
            "mean_sq": float((v**2).mean()),
            "max": vmax,
            "min": vmin,
            "condition": vmax / vmin if vmin > 0 else math.inf,
            "std": float(v.std(unbiased=False)),
            "frac_within_10pct": float(((v - 1).abs() <= 0.1).to(torch.float64).mean()),
        }
    if jacobian_sv is not None and kind == "fisher" and jacobian_sv.numel() == 0:
        raise ShapeError("jacobian_sv must be non-empty")
    out = {"max": float(v.max()), "trace": float(v.sum()), "mean": float(v.mean())}
    if kind == "kernel":
        vmin = float(v.min())
        out["min"] = vmin
        out["condition"] = out["max"] / vmin if vmin > 0 else math.inf
    if jacobian_sv is not None:
        s_max = float(jacobian_sv.detach().abs().max())
        out["max_over_jacobian_sq"] = out["max"] / s_max**2 if s_max > 0 else math.inf
    return out
