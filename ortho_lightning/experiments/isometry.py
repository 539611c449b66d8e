"""Experiment 1: dynamical isometry vs depth at initialisation (Pennington, Schoenholz & Ganguli
2017, "Resurrecting the sigmoid in deep learning through dynamical isometry").

A depth-L, width-N tanh MLP (``Linear -> tanh`` repeated, biases N(0, sigma_b^2)) is put at the
mean-field critical point ``critical_point("tanh", sigma_b)`` with Gaussian or orthogonal
weights; inputs are drawn so the first pre-activations already sit at the fixed point q*. The
squared singular values of the input-output Jacobian are measured per input, pooled, and their
mean and variance are set beside the free-probability moments of
``ortho_lightning.theory`` (mean chi^L = 1; variance L (s_D + s_W) with s_W = 1 for Gaussian, 0
for orthogonal weights). Pure torch, no Lightning.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ortho_lightning.init import critical_point, initialize
from ortho_lightning.spectra import jacobian_singular_values, summarize
from ortho_lightning.theory.free_probability import jacobian_moments


def tanh_mlp(depth: int, width: int) -> nn.Sequential:
    """``depth`` blocks of ``Linear(width, width) -> Tanh`` (float64, uninitialised)."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width, dtype=torch.float64), nn.Tanh()]
    return nn.Sequential(*layers)


def critical_inputs(n: int, width: int, sigma_w: float, sigma_b: float, q_star: float,
                    generator: torch.Generator) -> torch.Tensor:
    """(n, width) Gaussian inputs whose first-layer pre-activations have variance q*:
    per-coordinate variance (q* - sigma_b^2) / sigma_w^2."""
    var = max(q_star - sigma_b**2, 0.0) / sigma_w**2
    return torch.randn(n, width, generator=generator, dtype=torch.float64) * math.sqrt(var)


def isometry_at_init(depth: int, weights: str, width: int = 256, sigma_b: float = 0.3,
                     n_inputs: int = 4, seed: int = 0) -> dict[str, Any]:
    """One network, one measurement row.

    Returns ``sv2_mean``, ``sv2_var`` (mean and variance of the pooled squared singular values
    of J over ``n_inputs`` inputs), ``sv2_var_normalized`` (``sv2_var / sv2_mean^2``: the
    spread with this network's overall scale divided out; at finite width the scale chi^L of
    one Gaussian network fluctuates with log-variance ~ L / N), ``sv_max``, ``sv_min``, ``frac_within_10pct``, and theory's
    ``theory_sv2_mean`` / ``theory_sv2_var``, with ``sigma_w``, ``q_star``.
    """
    cp = critical_point("tanh", sigma_b)
    gen = torch.Generator().manual_seed(seed)
    model = tanh_mlp(depth, width)
    initialize(model, scheme=weights, gain=cp.sigma_w, activation="tanh", sigma_b=sigma_b,
               generator=gen)
    x = critical_inputs(n_inputs, width, cp.sigma_w, sigma_b, cp.q_star, gen)
    sv = jacobian_singular_values(model, x)
    sv2 = sv.double() ** 2
    summary = summarize(sv)
    theory = jacobian_moments("tanh", cp.sigma_w, sigma_b, depth, weights, q_star=cp.q_star)
    return {
        "sv2_mean": float(sv2.mean()),
        "sv2_var": float(sv2.var(unbiased=False)),
        "sv2_var_normalized": float(sv2.var(unbiased=False) / sv2.mean() ** 2),
        "sv_max": summary["max"],
        "sv_min": summary["min"],
        "frac_within_10pct": summary["frac_within_10pct"],
        "theory_sv2_mean": float(theory.mean),
        "theory_sv2_var": float(theory.variance),
        "sigma_w": cp.sigma_w,
        "q_star": cp.q_star,
    }


def steps_to_loss(columns: list[str], rows: list[dict[str, Any]], figures_dir: Any,
                  column: str = "train/loss_step", targets: tuple[float, ...] = (1.0, 0.5, 0.3)) -> str:
    """Report hook for the training half of experiment 1: per cell, the first logged step at
    which ``column`` fell to each target, then the median over seeds per (axes) group; as
    Markdown. Cells that never reach a target within the budget show ``—``."""
    from ortho_lightning.experiments.report import markdown_table
    from ortho_lightning.experiments.table import ID_COLUMN, SEED_COLUMN, STEP_COLUMN

    if column not in columns:
        return f"(no column {column!r} in the table: steps to target loss not computed)"
    axes = columns[1:columns.index(SEED_COLUMN)]
    first: dict[str, dict[float, int | None]] = {}
    group_of: dict[str, tuple] = {}
    for r in sorted((r for r in rows if r.get(column) is not None), key=lambda r: r[STEP_COLUMN]):
        hits = first.setdefault(r[ID_COLUMN], dict.fromkeys(targets))
        group_of[r[ID_COLUMN]] = tuple(r[a] for a in axes)
        for t in targets:
            if hits[t] is None and r[column] <= t:
                hits[t] = r[STEP_COLUMN]
    body = []
    for group in sorted(set(group_of.values()), key=str):
        cells = [c for c, g in group_of.items() if g == group]
        line = list(group)
        for t in targets:
            got = sorted(first[c][t] for c in cells if first[c][t] is not None)
            line.append(f"{got[len(got) // 2]} ({len(got)}/{len(cells)})" if got else f"— (0/{len(cells)})")
        body.append(line)
    header = [*(a.split(".")[-1] for a in axes), *(f"steps to {column} <= {t} (seeds hit)" for t in targets)]
    return "## Steps to a target training loss (median over seeds)\n\n" + markdown_table(header, body)
