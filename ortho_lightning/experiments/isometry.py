"""Experiment 1: dynamical isometry vs depth at initialisation (Pennington, Schoenholz & Ganguli
2017, "Resurrecting the sigmoid in deep learning through dynamical isometry").

A depth-L, width-N tanh MLP (``Linear -> tanh`` repeated, biases N(0, sigma_b^2)) is put at the
mean-field critical point ``critical_point("tanh", sigma_b)`` with Gaussian or orthogonal
weights; inputs are drawn so the first pre-activations already sit at the fixed point q*. The
squared singular values of the input-output Jacobian are measured per input, pooled, and their
mean and variance are set beside the free-probability moments of
``ortho_lightning.theory`` (mean chi^L = 1; variance L (s_D + s_W) with s_W = 1 for Gaussian, 0
for orthogonal weights). Pure torch, no Lightning.

The training half (steps to a target loss or accuracy on MNIST against depth) runs through the
recipe grid ``recipes/experiments/isometry_training_mnist.yaml``; :func:`steps_to_target_report`
is its report hook.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ortho_lightning.exceptions import ConfigurationError
from ortho_lightning.init import critical_point, initialize
from ortho_lightning.spectra import jacobian_singular_values, summarize
from ortho_lightning.theory.free_probability import jacobian_moments
from ortho_lightning.validation import check_int


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


def trailing_means(values: Sequence[float], window: int = 1) -> list[float]:
    """The mean of the last ``window`` values (fewer at the start) at each position; a NaN or
    infinity in the window makes that mean non-finite."""
    check_int("trailing_means", "window", window, minimum=1)
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1):i + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def first_crossing(steps: Sequence[int], values: Sequence[float], target: float, *,
                   above: bool = False, window: int = 1) -> int | None:
    """The first step at which the :func:`trailing_means` of the logged values is
    ``<= target`` (``>= target`` with ``above=True``); ``None`` if never.

    ``steps`` and ``values`` are one run's logged points in step order; a non-finite mean never
    counts as reaching the target.
    """
    if len(steps) != len(values):
        raise ConfigurationError(
            f"first_crossing: steps and values differ in length ({len(steps)} vs {len(values)})")
    for step, mean in zip(steps, trailing_means(values, window)):
        if math.isfinite(mean) and (mean >= target if above else mean <= target):
            return step
    return None


def runs_by_group(columns: Sequence[str], rows: Sequence[Mapping[str, Any]],
                  column: str) -> dict[tuple, list[tuple[list[int], list[float]]]]:
    """Per group of axis values (the table's columns between the cell id and the seed), the
    ``(steps, values)`` of ``column`` of each of the group's cells, in seed order and step
    order. Rows without a number in ``column`` are skipped (e.g. validation-only rows)."""
    from ortho_lightning.experiments.table import ID_COLUMN, SEED_COLUMN, STEP_COLUMN

    axes = list(columns[1:list(columns).index(SEED_COLUMN)])
    cells: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        if isinstance(r.get(column), (int, float)):
            cells.setdefault(r[ID_COLUMN], []).append(r)
    out: dict[tuple, list[tuple[list[int], list[float]]]] = {}
    for cell_rows in sorted(cells.values(), key=lambda rs: rs[0][SEED_COLUMN]):
        cell_rows = sorted(cell_rows, key=lambda r: r[STEP_COLUMN])
        out.setdefault(tuple(cell_rows[0][a] for a in axes), []).append(
            ([r[STEP_COLUMN] for r in cell_rows], [float(r[column]) for r in cell_rows]))
    return out


def steps_to_targets(columns: Sequence[str], rows: Sequence[Mapping[str, Any]], column: str,
                     targets: Sequence[float], *, above: bool = False,
                     window: int = 1) -> dict[tuple, dict[float, list[int | None]]]:
    """Per group of axis values (see :func:`runs_by_group`), per target, the list over the
    group's cells (seed order) of :func:`first_crossing` of ``column``."""
    return {group: {t: [first_crossing(steps, values, t, above=above, window=window)
                        for steps, values in runs] for t in targets}
            for group, runs in runs_by_group(columns, rows, column).items()}


def _group_order(group: tuple) -> list[tuple[int, Any]]:
    """Sort key of a group of axis values: numbers by value, then everything else as text."""
    return [(0, v) if isinstance(v, (int, float)) else (1, str(v)) for v in group]


def median_steps(hits: Sequence[int | None]) -> int | None:
    """The median over seeds of steps to a target, a seed that never reached it counting as
    infinitely slow (so the median is ``None`` when half the seeds or more never got there;
    with an even count the later of the two middle seeds)."""
    ordered = sorted(hits, key=lambda h: math.inf if h is None else h)
    return ordered[len(ordered) // 2] if ordered else None


#: what :func:`steps_to_target_report` tabulates: (column, targets, above, title)
REPORT_TARGETS = (
    ("train/loss_step", (1.0, 0.5, 0.3), False, "training loss"),
    ("train/acc_step", (0.8, 0.9), True, "training accuracy"),
)
#: trailing window (logged points) over which mini-batch values are averaged before a crossing
REPORT_WINDOW = 5


def steps_to_target_report(columns: list[str], rows: list[dict[str, Any]],
                           figures_dir: Any) -> str:
    """Report hook for the training half of experiment 1: steps to each target of
    :data:`REPORT_TARGETS` (mini-batch values averaged over the last :data:`REPORT_WINDOW`
    logged points), median over seeds with seeds reached / seeds, as Markdown tables; and the
    figure ``steps_to_target_vs_depth`` in ``figures_dir`` (one panel per metric, x = the
    first axis, one colour per value of the second; every seed a dot, the median a line,
    seeds that never got there a triangle at the budget)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ortho_lightning.experiments.report import LINESTYLES, markdown_table, save_figure
    from ortho_lightning.experiments.table import SEED_COLUMN, STEP_COLUMN

    axes = list(columns[1:columns.index(SEED_COLUMN)])
    budget = max((r[STEP_COLUMN] for r in rows), default=0)
    wanted = [spec for spec in REPORT_TARGETS if spec[0] in columns]
    if not wanted:
        return f"(none of {[s[0] for s in REPORT_TARGETS]} in the table: steps to target not computed)"
    parts = [f"## Steps to a target (mini-batch values averaged over the last {REPORT_WINDOW} "
             f"logged points; median over seeds, seeds reached / seeds; budget {budget + 1} steps)",
             "", "![steps_to_target_vs_depth](figures/steps_to_target_vs_depth.png)"]
    fig, panels = plt.subplots(1, len(wanted), figsize=(5 * len(wanted), 4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (column, targets, above, title), ax in zip(wanted, panels[0]):
        table = steps_to_targets(columns, rows, column, targets, above=above, window=REPORT_WINDOW)
        body = []
        for group in sorted(table, key=_group_order):
            cells = []
            for t in targets:
                hits = table[group][t]
                med = median_steps(hits)
                got = sum(h is not None for h in hits)
                cells.append(f"{'—' if med is None else med} ({got}/{len(hits)})")
            body.append([*group, *cells])
        sign = ">=" if above else "<="
        header = [*(a.split(".")[-1] for a in axes), *(f"{title} {sign} {t}" for t in targets)]
        parts += ["", f"### {title}", "", markdown_table(header, body)]
        if not above:  # a loss: did it stay down? (lowest and final trailing mean, per seed)
            runs = runs_by_group(columns, rows, column)
            ends = []
            for group in sorted(runs, key=_group_order):
                means = [trailing_means(values, REPORT_WINDOW) for _, values in runs[group]]
                ends.append([*group, ", ".join(f"{min(m):.2f}" for m in means),
                             ", ".join(f"{m[-1]:.2f}" for m in means)])
            parts += ["", f"{title}, lowest and final trailing mean, per seed:", "",
                      markdown_table([*(a.split(".")[-1] for a in axes), "lowest", "final"], ends)]
        hues = sorted({g[1:] for g in table}, key=str)
        for hi, hue in enumerate(hues):
            colour = colours[hi % len(colours)]
            for ti, t in enumerate(targets):
                groups = sorted((g for g in table if g[1:] == hue), key=lambda g: g[0])
                xs = [g[0] for g in groups]
                meds = [median_steps(table[g][t]) for g in groups]
                ax.plot(xs, [math.nan if m is None else m for m in meds], marker="o",
                        color=colour, linestyle=LINESTYLES[ti % len(LINESTYLES)],
                        label=f"{', '.join(map(str, hue))} {sign} {t}")
                for x, g in zip(xs, groups):
                    for h in table[g][t]:
                        ax.plot([x], [budget * 1.15 if h is None else h],
                                "^" if h is None else ".", color=colour, alpha=0.6)
        ax.axhline(budget, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        xs_all = sorted({g[0] for g in table})
        ax.set_xticks(xs_all, [str(x) for x in xs_all])
        ax.minorticks_off()
        ax.set_xlabel(axes[0].split(".")[-1])
        ax.set_ylabel(f"steps to {title} target (triangles: never)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    save_figure(fig, figures_dir, "steps_to_target_vs_depth")
    return "\n".join(parts)
