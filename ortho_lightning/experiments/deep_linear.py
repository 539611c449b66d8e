"""Experiment 2: deep linear networks trained by full-batch gradient descent (Hu, Xiao &
Pennington 2020, "Provable benefit of orthogonal initialization in optimizing deep linear
networks").

The network is the paper's ``f(x) = W_L ... W_1 x / sqrt(m^(L-1) d_y)`` (width m, depth L) with
either i.i.d. N(0, 1) entries or scaled orthogonal blocks (``W_1^T W_1 = m I``,
``W_l^T W_l = m I``, ``W_L W_L^T = m I``), trained on ``1/2 ||f(X) - Y||_F^2`` for a linear
teacher ``Y = W* X`` with the step size ``eta = lr_scale * d_y / (L ||X||^2)`` (spectral norm).
The paper proves that with orthogonal init the width needed for fast convergence does not depend
on depth, while with Gaussian init it must grow with depth. Pure torch, no Lightning.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ortho_lightning.validation import check_choice, check_int, fail

WEIGHTS = ("gaussian", "orthogonal")


def _init_weights(shapes: list[tuple[int, int]], weights: str, width: int,
                  generator: torch.Generator) -> list[torch.Tensor]:
    from ortho_lightning.init import orthogonal_

    out = []
    for rows, cols in shapes:
        w = torch.empty(rows, cols, dtype=torch.float64)
        if weights == "gaussian":
            w.normal_(generator=generator)
        else:  # semi-orthogonal (orthonormal rows or columns), scaled so W W^T or W^T W = m I
            orthogonal_(w, gain=math.sqrt(width), generator=generator)
        out.append(w.requires_grad_(True))
    return out


def teacher_data(d_in: int, d_out: int, n: int, data_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X, Y)``: X is (d_in, n) standard Gaussian, Y = W* X with W* (d_out, d_in) Gaussian of
    unit-variance outputs; the same for every cell with the same ``data_seed``."""
    g = torch.Generator().manual_seed(data_seed)
    x = torch.randn(d_in, n, generator=g, dtype=torch.float64)
    w_star = torch.randn(d_out, d_in, generator=g, dtype=torch.float64) / math.sqrt(d_in)
    return x, w_star @ x


def deep_linear_regression(depth: int, width: int, weights: str, d_in: int = 16, d_out: int = 16,
                           n: int = 128, steps: int = 1000, lr_scale: float = 1.0,
                           target: float = 1e-3, log_every: int = 50, data_seed: int = 0,
                           seed: int = 0) -> list[dict[str, Any]]:
    """Train one deep linear net by full-batch GD; rows every ``log_every`` steps.

    Training stops at the first step with rel_loss <= ``target`` (or at ``steps``, or when the
    loss overflows). Returns rows with ``step``, ``loss``, ``rel_loss`` (loss / initial loss);
    the last row also
    holds ``steps_to_target`` (first step with rel_loss <= ``target``; absent when not reached),
    ``converged`` (bool), ``diverged`` (the loss overflowed) and ``lr`` (the step size used).
    """
    owner = "deep_linear_regression"
    check_choice(owner, "weights", weights, WEIGHTS)
    check_int(owner, "depth", depth, minimum=2)
    if check_int(owner, "width", width) < max(d_in, d_out):
        fail(owner, "width", f"an integer >= max(d_in, d_out) = {max(d_in, d_out)}", width)
    x, y = teacher_data(d_in, d_out, n, data_seed)
    shapes = [(width, d_in)] + [(width, width)] * (depth - 2) + [(d_out, width)]
    ws = _init_weights(shapes, weights, width, torch.Generator().manual_seed(seed))
    alpha = 1.0 / math.sqrt(width ** (depth - 1) * d_out)
    lr = lr_scale * d_out / (depth * torch.linalg.matrix_norm(x, ord=2).item() ** 2)

    def loss_fn() -> torch.Tensor:
        h = x
        for w in ws:
            h = w @ h
        return 0.5 * (alpha * h - y).pow(2).sum()

    rows, first_hit, loss0 = [], None, None
    for step in range(steps + 1):
        loss = loss_fn()
        value = loss.item()
        loss0 = value if loss0 is None else loss0
        rel = value / loss0
        if first_hit is None and rel <= target:
            first_hit = step
        stop = step == steps or first_hit is not None or not math.isfinite(value)
        if step % log_every == 0 or stop:
            rows.append({"step": step, "loss": value, "rel_loss": rel})
        if stop:
            break
        grads = torch.autograd.grad(loss, ws)
        with torch.no_grad():
            for w, g in zip(ws, grads):
                w.sub_(lr * g)
    rows[-1].update({"converged": first_hit is not None, "lr": lr,
                     "diverged": not math.isfinite(rows[-1]["loss"])})
    if first_hit is not None:
        rows[-1]["steps_to_target"] = first_hit
    return rows


def width_needed(columns: list[str], rows: list[dict[str, Any]], figures_dir: Path) -> str:
    """Report hook: per (weights, depth), the smallest width of the grid from which every
    seed of every larger width reached the target, and the median steps to target at each
    width; as Markdown, plus the figure ``width_needed_vs_depth`` in ``figures_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ortho_lightning.experiments.report import filter_rows, markdown_table, save_figure

    last = filter_rows(rows, {"step": "last"})
    groups: dict[tuple, dict[int, list[dict]]] = {}
    for r in last:
        groups.setdefault((r["weights"], r["depth"]), {}).setdefault(r["width"], []).append(r)
    widths = sorted({r["width"] for r in last})
    body, needed = [], {}
    for (w, d), by_width in sorted(groups.items()):
        ok = [all(r.get("converged") for r in by_width[m]) for m in sorted(by_width)]
        first = next((i for i in range(len(ok)) if all(ok[i:])), None)
        needed[(w, d)] = sorted(by_width)[first] if first is not None else None
        cells = []
        for m in widths:
            runs = by_width.get(m, [])
            hits = sorted(r["steps_to_target"] for r in runs if r.get("steps_to_target") is not None)
            cells.append("" if not runs else (f"{hits[len(hits) // 2]} ({len(hits)}/{len(runs)})" if hits else f"— (0/{len(runs)})"))
        body.append([w, d, needed[(w, d)] or f"> {widths[-1]}", *cells])
    fig, ax = plt.subplots(figsize=(6, 4))
    for w in WEIGHTS:
        pts = sorted((d, m) for (ww, d), m in needed.items() if ww == w)
        if pts:
            ax.plot([d for d, _ in pts], [m if m else float("nan") for _, m in pts], "o-", label=w)
            over = [d for d, m in pts if m is None]
            ax.plot(over, [widths[-1] * 1.5] * len(over), "^", color=ax.lines[-1].get_color())
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("depth L")
    ax.set_ylabel("width needed (triangles: none in grid)")
    ax.set_title("Smallest width reaching the target loss, all seeds", fontsize=10)
    ax.legend()
    ax.grid(alpha=0.3)
    save_figure(fig, figures_dir, "width_needed_vs_depth")
    header = ["weights", "depth", "width needed", *[f"steps @ m={m} (seeds hit)" for m in widths]]
    return ("## Width needed to reach the target loss\n\n![width_needed_vs_depth]"
            "(figures/width_needed_vs_depth.png)\n\n" + markdown_table(header, body))
