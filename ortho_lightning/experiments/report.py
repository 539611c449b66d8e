"""Figures (PNG + SVG) and a Markdown summary from a results table, without retraining.

What to draw is read from the ``report`` section of the experiment file saved beside the table::

    report:
      figures:
        - name: var_vs_depth          # file stem under OUT/figures/
          x: depth
          y: [sv2_var, theory_sv2_var]  # one column or several (drawn solid, dashed, ...)
          hue: weights                  # one line per value (a list of columns is joined)
          where: {step: last}           # filters: a value; a list; 'last' = each cell's last
                                        # row; 'final' = each column's last value per cell
          logx: true
          logy: false
          fit: linear                   # least-squares slope of y vs x per line, in the summary
          agg: mean                     # or median (bars: interquartile range), for heavy tails
          scatter: false                # true: every row a dot, no aggregation or lines
      summary:                          # a table of group means +- std over seeds
        group: [depth, weights]
        columns: [sv2_mean, sv2_var]
        where: {step: last}
      function: package.module:fn       # optional: fn(columns, rows, figures_dir) -> extra
                                        # Markdown (it may draw its own figures there); a
                                        # registered experiment function (``registry``)

Seeds (and any other column not named) are averaged over: points are means, bars one standard
deviation.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ortho_lightning.experiments.grid import check_name
from ortho_lightning.experiments.registry import resolve_function
from ortho_lightning.experiments.table import ID_COLUMN, read_table
from ortho_lightning.validation import check_choice, fail

FIGURE_KEYS = ("name", "x", "y", "hue", "where", "logx", "logy", "fit", "title", "xlabel",
               "ylabel", "hline", "agg", "scatter")
AGGREGATES = ("mean", "median")
LINESTYLES = ("-", "--", ":", "-.")


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def filter_rows(rows: Sequence[Mapping[str, Any]], where: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    """Rows matching ``where``: ``{col: value}``, ``{col: [values]}``, ``{step: last}`` for
    each cell's last logged row, or ``{step: final}`` for one row per cell holding each
    column's last logged value (ordered by ``col``; e.g. validation and test metrics logged
    at different steps)."""
    out = list(rows)
    for col, wanted in (where or {}).items():
        if wanted == "final":
            merged: dict[Any, dict[str, Any]] = {}
            for r in sorted((r for r in out if r.get(col) is not None), key=lambda r: r[col]):
                into = merged.setdefault(r[ID_COLUMN], {})
                into.update({k: v for k, v in r.items() if v is not None})
            out = list(merged.values())
        elif wanted == "last":
            last: dict[Any, Any] = {}
            for r in out:
                if r.get(col) is not None:
                    last[r[ID_COLUMN]] = max(last.get(r[ID_COLUMN], r[col]), r[col])
            out = [r for r in out if r.get(col) is not None and r[col] == last[r[ID_COLUMN]]]
        elif isinstance(wanted, list):
            out = [r for r in out if r.get(col) in wanted]
        else:
            out = [r for r in out if r.get(col) == wanted]
    return out


def _median_iqr(values: list[float]) -> tuple[float, float, float]:
    v = sorted(values)

    def q(p: float) -> float:
        pos = p * (len(v) - 1)
        lo = math.floor(pos)
        return v[lo] + (v[min(lo + 1, len(v) - 1)] - v[lo]) * (pos - lo)

    return q(0.5), q(0.25), q(0.75)


def _mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    var = sum((v - m) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return m, math.sqrt(var)


def _key(row: Mapping[str, Any], cols: Sequence[str]) -> tuple[Any, ...]:
    return tuple(row.get(c) for c in cols)


def _values(rows: Iterable[Mapping[str, Any]], group: Sequence[str], column: str) -> dict[tuple, list[float]]:
    buckets: dict[tuple, list[float]] = defaultdict(list)
    for row in rows:
        v = row.get(column)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            buckets[_key(row, group)].append(float(v))
        elif isinstance(v, bool):
            buckets[_key(row, group)].append(float(v))
    return buckets


def aggregate(rows: Iterable[Mapping[str, Any]], group: Sequence[str], column: str) -> dict[tuple, tuple[float, float, int]]:
    """``{group values: (mean, std, count)}`` of ``column`` over rows where it is a number."""
    return {k: (*_mean_std(vs), len(vs)) for k, vs in _values(rows, group, column).items()}


def _sortable(v: Any) -> tuple[int, Any]:
    return (0, v) if isinstance(v, (int, float)) else (1, str(v))


def linear_slope(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``(slope, intercept)`` of ys on xs."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return float("nan"), my
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return slope, my - slope * mx


def draw_figure(spec: Mapping[str, Any], columns: Sequence[str], rows: Sequence[Mapping[str, Any]],
                out_dir: Path) -> tuple[list[Path], list[dict[str, Any]]]:
    """Draw one figure spec; returns the written files (PNG, SVG) and the fitted slopes."""
    owner = "report figure" + (f" {spec['name']!r}" if "name" in spec else "")
    unknown = [k for k in spec if k not in FIGURE_KEYS]
    if unknown:
        fail(owner, "keys", f"among {list(FIGURE_KEYS)} (unknown ones listed)", unknown)
    check_choice(owner, "agg", spec.get("agg", "mean"), AGGREGATES)
    for key in ("name", "x", "y"):
        if key not in spec:
            fail(owner, key, "given (a figure needs 'name', 'x' and 'y')", None)
    check_name(owner, "name", spec["name"])  # a file under out_dir, never outside it
    x, ys, hue = spec["x"], _as_list(spec["y"]), _as_list(spec.get("hue"))
    missing = [c for c in [x, *ys, *hue] if c not in columns]
    if missing:
        fail(owner, "x, y and hue", f"columns of the results table {list(columns)} (missing ones "
             "listed)", missing)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = filter_rows(rows, spec.get("where"))
    fig, ax = plt.subplots(figsize=(8, 4))
    fits = []
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    hue_values = sorted({_key(r, hue) for r in data}, key=lambda k: [_sortable(v) for v in k])
    for hi, hv in enumerate(hue_values):
        sub = [r for r in data if _key(r, hue) == hv]
        label_h = ", ".join(f"{h.split('.')[-1]}={v}" for h, v in zip(hue, hv))
        for yi, y in enumerate(ys):
            if spec.get("scatter"):
                pts_xy = [(r[x], r[y]) for r in sub if isinstance(r.get(x), (int, float))
                          and isinstance(r.get(y), (int, float))]
                ax.scatter([p[0] for p in pts_xy], [p[1] for p in pts_xy], s=10, alpha=0.7,
                           color=colours[hi % len(colours)],
                           marker="os^vD"[yi % 5], label=label_h or y)
                continue
            values = _values(sub, [x], y)
            pts = sorted(((k[0], vs) for k, vs in values.items() if k[0] is not None),
                         key=lambda p: _sortable(p[0]))
            if not pts:
                continue
            xs = [p[0] for p in pts]
            if spec.get("agg") == "median":
                stats = [_median_iqr(vs) for _, vs in pts]
                means = [m for m, _, _ in stats]
                bars = [[m - lo for m, lo, _ in stats], [hi - m for m, _, hi in stats]]
            else:
                stats2 = [_mean_std(vs) for _, vs in pts]
                means = [m for m, _ in stats2]
                # on a log axis a bar below zero would stretch the axis: clip it at 90 % of m
                lower = [min(sd, 0.9 * m) if spec.get("logy") and m > 0 else sd for m, sd in stats2]
                bars = [lower, [sd for _, sd in stats2]]
            has_bars = any(any(b) for b in bars)
            label = ", ".join(s for s in (label_h, y if len(ys) > 1 else "") if s) or y
            ax.errorbar(xs, means, yerr=bars if has_bars else None, marker="o", ms=3,
                        linestyle=LINESTYLES[yi % len(LINESTYLES)], color=colours[hi % len(colours)],
                        label=label, capsize=2)
            if spec.get("fit") == "linear" and len(xs) >= 2 and all(isinstance(v, (int, float)) for v in xs):
                slope, icpt = linear_slope(xs, means)
                fits.append({"figure": spec["name"], "line": label, "y": y, "slope": slope,
                             "agg": spec.get("agg", "mean"),
                             "intercept": icpt})
    if spec.get("hline") is not None:
        ax.axhline(float(spec["hline"]), color="grey", lw=0.8, ls=":")
    if spec.get("logx"):
        ax.set_xscale("log")
        xs_all = sorted({r[x] for r in data if isinstance(r.get(x), (int, float)) and r[x] > 0})
        if 1 < len(xs_all) <= 12:  # label the grid's own x values, not powers of ten
            ax.set_xticks(xs_all, [f"{v:g}" for v in xs_all])
            ax.minorticks_off()
    if spec.get("logy"):
        ax.set_yscale("log")
    ax.set_xlabel(spec.get("xlabel", x))
    ax.set_ylabel(spec.get("ylabel", ys[0] if len(ys) == 1 else "value"))
    ax.set_title(spec.get("title", spec["name"]), fontsize=10)
    if hue_values and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(alpha=0.3)
    return save_figure(fig, out_dir, spec["name"]), fits


def save_figure(fig: Any, out_dir: Path, name: str) -> list[Path]:
    """Save a matplotlib figure as ``out_dir/name.png`` and ``.svg``, close it, return paths."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        path = out_dir / f"{name}.{ext}"
        fig.savefig(path, dpi=120)
        paths.append(path)
    plt.close(fig)
    return paths


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def markdown_table(header: Sequence[str], body: Iterable[Sequence[Any]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in body]
    return "\n".join(lines)


def summary_table(spec: Mapping[str, Any], columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """Group means +- std (n) of the chosen columns, as Markdown."""
    group, cols = _as_list(spec.get("group")), _as_list(spec.get("columns"))
    missing = [c for c in group + cols if c not in columns]
    if missing:
        fail("report summary", "group and columns", f"columns of the results table {list(columns)} "
             "(missing ones listed)", missing)
    data = filter_rows(rows, spec.get("where"))
    aggs = {c: aggregate(data, group, c) for c in cols}
    keys = sorted({k for a in aggs.values() for k in a}, key=lambda k: [_sortable(v) for v in k])
    body = []
    for k in keys:
        cells = []
        for c in cols:
            m = aggs[c].get(k)
            cells.append("" if m is None else (f"{m[0]:.4g} ± {m[1]:.2g} (n={m[2]})" if m[2] > 1 else f"{m[0]:.4g}"))
        body.append([*k, *cells])
    return markdown_table([*group, *cols], body)


def make_report(folder: str | Path, *, allow_import: bool = False) -> Path:
    """Redraw every figure of ``folder/experiment.yaml``'s report section from
    ``folder/results.csv`` and write ``folder/summary.md``; returns the summary's path.

    The folder may come from someone else: its ``report.function`` must be a registered
    experiment function unless ``allow_import`` (see :mod:`ortho_lightning.experiments.registry`).
    """
    folder = Path(folder)
    spec_path = folder / "experiment.yaml"
    if not spec_path.is_file():
        fail("make_report", "folder", "an experiment folder (one with an experiment.yaml)", str(folder))
    spec = yaml.safe_load(spec_path.read_text()) or {}
    columns, rows = read_table(folder / "results.csv")
    report = spec.get("report") or {}
    name = spec.get("name", folder.name)
    n_cells = len({r[ID_COLUMN] for r in rows})
    parts = [f"# {name}", "", str(spec.get("description", "")).strip(), "",
             f"{n_cells} finished cells, {len(rows)} rows in `results.csv`."]
    all_fits = []
    for fig_spec in report.get("figures", []):
        paths, fits = draw_figure(fig_spec, columns, rows, folder / "figures")
        all_fits += fits
        parts += ["", f"## {fig_spec.get('title', fig_spec['name'])}", "",
                  f"![{fig_spec['name']}](figures/{paths[0].name})"]
    if all_fits:
        parts += ["", "## Fitted slopes (least squares on the plotted points)", "",
                  markdown_table(["figure", "line", "points", "slope", "intercept"],
                                 [[f["figure"], f["line"], f["agg"], f["slope"], f["intercept"]]
                                  for f in all_fits])]
    if report.get("summary"):
        parts += ["", "## Summary (mean ± std over seeds)", "",
                  summary_table(report["summary"], columns, rows)]
    if report.get("function"):
        hook = resolve_function(report["function"], allow_import, owner="report")
        parts += ["", hook(columns, rows, folder / "figures")]
    path = folder / "summary.md"
    path.write_text("\n".join(parts).rstrip() + "\n")
    return path
