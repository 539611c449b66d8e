"""Report hook for the seed study's sequential-MNIST figures (Hlav 2019, Figs. 7 and 8), from the
table of ``recipes/experiments/softortho_notebook.yaml``.

Fig. 8 of the study plots validation accuracy per epoch for six arms (one seed, no error bars);
Fig. 7 the singular values of the recurrent matrix W_hh per epoch (mean ± std band, min, max).
:func:`hlav_report` puts our per-arm numbers (mean ± std over seeds) beside the values read off
Fig. 8 (:data:`FIG8`) and redraws both figures from the logged ``WeightSpectrumMonitor`` summaries:
the monitor logs ``max``, ``min``, ``mean_sq`` and the population ``std`` of the singular values,
so their mean is ``sqrt(mean_sq - std^2)`` exactly.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: Validation accuracy read off the study's Fig. 8 (after epoch 1, after epoch 15), by our arm
#: name; text, since some are ranges. Our Frobenius arm is not in the figure.
FIG8: dict[str, tuple[str, str]] = {
    "adj_g1.025_l1": ("0.773", "0.958"),
    "orthogonal_noreg": ("0.78", "0.958-0.959"),
    "adj_g1.025_l0.5": ("0.749", "0.955"),
    "single_l0.5": ("0.771", "0.954"),
    "glorot_normal": ("0.67", "0.951"),
    "single_l1": ("0.753", "0.948"),
}

#: the recurrent matrix's prefix in the WeightSpectrumMonitor's keys
WHH = "spectra/weights/rnn.weight_hh_l0"


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def per_epoch(rows: Sequence[Mapping[str, Any]], column: str) -> list[float]:
    """One cell's values of ``column`` in step order (the rows where it is a number).

    For ``val/acc`` (logged at each epoch's end) entry ``k`` is after epoch ``k + 1``; for the
    weight monitor's keys (logged at fit start and each epoch's end) entry ``k`` is after epoch
    ``k`` (entry 0 is the init)."""
    pairs = [(r["step"], v) for r in rows if (v := _number(r.get(column))) is not None]
    return [v for _, v in sorted(pairs, key=lambda p: p[0])]


def recurrent_sv_stats(rows: Sequence[Mapping[str, Any]], prefix: str = WHH) -> dict[str, list[float]]:
    """One cell's W_hh singular-value statistics per measurement (init first): ``mean``, ``std``,
    ``min``, ``max``; ``mean = sqrt(mean_sq - std^2)`` (``std`` is the population std)."""
    mean_sq, std = per_epoch(rows, f"{prefix}/mean_sq"), per_epoch(rows, f"{prefix}/std")
    return {
        "mean": [math.sqrt(max(m - s * s, 0.0)) for m, s in zip(mean_sq, std)],
        "std": std,
        "min": per_epoch(rows, f"{prefix}/min"),
        "max": per_epoch(rows, f"{prefix}/max"),
    }


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    var = sum((v - m) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return m, math.sqrt(var)


def _fmt(values: Sequence[float], digits: int = 3) -> str:
    if not values:
        return "—"
    m, s = _mean_std(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}" if len(values) > 1 else f"{m:.{digits}f}"


def _seed_mean(curves: Sequence[Sequence[float]]) -> list[float]:
    n = min(len(c) for c in curves)
    return [sum(c[i] for c in curves) / len(curves) for i in range(n)]


def hlav_report(columns: list[str], rows: list[dict[str, Any]], figures_dir: Any) -> str:
    """Report hook: per arm (the ``arm`` axis) the validation accuracy after epoch 1 and at the
    end, the test accuracy and the final W_hh singular values, mean ± std over seeds, beside
    Fig. 8's values, as Markdown; and the figures ``fig8_val_acc`` (validation accuracy per epoch,
    seed mean ± std band, Fig. 8's two read-off points as crosses) and ``fig7_recurrent_sv`` (one
    panel per arm: mean ± std band, min and max of W_hh's singular values per epoch, seed means)
    in ``figures_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ortho_lightning.experiments.report import markdown_table, save_figure
    from ortho_lightning.experiments.table import ID_COLUMN

    cells: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        cells[r[ID_COLUMN]].append(r)
    arms: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
    for cell_rows in cells.values():
        arms[str(cell_rows[0]["arm"])].append(cell_rows)
    order = [a for a in FIG8 if a in arms] + sorted(a for a in arms if a not in FIG8)

    body = []
    accs, svs = {}, {}
    for arm in order:
        runs = arms[arm]
        val = [per_epoch(c, "val/acc") for c in runs]
        accs[arm] = [v for v in val if v]
        svs[arm] = [s for c in runs if (s := recurrent_sv_stats(c))["mean"]]
        test = [t[-1] for c in runs if (t := per_epoch(c, "test/acc"))]
        first, last = [v[0] for v in val if v], [v[-1] for v in val if v]
        fig = FIG8.get(arm, ("—", "—"))
        epochs = {len(v) for v in val}
        final_sv = [[s[k][-1] for s in svs[arm]] for k in ("mean", "min", "max")]
        body.append([arm, len(runs), "/".join(map(str, sorted(epochs))), _fmt(first), fig[0],
                     _fmt(last), fig[1], _fmt(test), ", ".join(f"{v:.4f}" for v in last),
                     " / ".join(_fmt(v, 2) for v in final_sv)])
    header = ["arm", "seeds", "epochs", "val acc, epoch 1", "Fig. 8", "val acc, final", "Fig. 8",
              "test acc", "final val acc per seed", "W_hh s mean / min / max, final"]
    parts = ["## The seed study's Fig. 8 and Fig. 7 (mean ± std over seeds; Fig. 8: one seed)", "",
             markdown_table(header, body), "",
             "![fig8_val_acc](figures/fig8_val_acc.png)", "",
             "![fig7_recurrent_sv](figures/fig7_recurrent_sv.png)"]

    figures_dir = Path(figures_dir)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, arm in enumerate(order):
        if not accs[arm]:
            continue
        n = min(len(v) for v in accs[arm])
        xs = list(range(1, n + 1))
        stats = [_mean_std([v[k] for v in accs[arm]]) for k in range(n)]
        colour = colours[i % len(colours)]
        ax.plot(xs, [m for m, _ in stats], color=colour, label=f"{arm} (n={len(accs[arm])})")
        ax.fill_between(xs, [m - s for m, s in stats], [m + s for m, s in stats], color=colour, alpha=0.2)
        if arm in FIG8:
            read = [float(FIG8[arm][0]), float(FIG8[arm][1].split("-")[0])]
            ax.plot([1, 15], read, "x", color=colour, markersize=8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (last 12,000 training images)")
    ax.set_title("Validation accuracy per epoch (lines: ours, seed mean ± std; x: read off Fig. 8)")
    ax.legend(fontsize=8)
    save_figure(fig, figures_dir, "fig8_val_acc")

    shown = [a for a in order if svs[a]]
    cols = min(4, max(len(shown), 1))
    rows_n = max(math.ceil(len(shown) / cols), 1)
    fig, panels = plt.subplots(rows_n, cols, figsize=(4 * cols, 3.2 * rows_n), squeeze=False,
                               sharey=True)
    for ax, arm in zip(panels.flat, shown):
        stats = {k: _seed_mean([s[k] for s in svs[arm]]) for k in ("mean", "std", "min", "max")}
        xs = list(range(len(stats["mean"])))
        ax.plot(xs, stats["mean"], color="tab:blue", label="mean")
        ax.fill_between(xs, [m - s for m, s in zip(stats["mean"], stats["std"])],
                        [m + s for m, s in zip(stats["mean"], stats["std"])], color="tab:orange",
                        alpha=0.6, label="± std")
        ax.plot(xs, stats["max"], color="tab:red", label="max")
        ax.plot(xs, stats["min"], color="tab:green", label="min")
        ax.set_title(f"{arm} (n={len(svs[arm])})", fontsize=9)
        ax.set_xlabel("epoch (0 = init)")
    for ax in list(panels.flat)[len(shown):]:
        ax.axis("off")
    panels[0][0].set_ylabel("singular values of W_hh")
    panels[0][0].legend(fontsize=7, loc="upper left")
    save_figure(fig, figures_dir, "fig7_recurrent_sv")
    return "\n".join(parts)
