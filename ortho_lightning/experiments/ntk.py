"""Experiment 4: the neural tangent kernel of orthogonal and Gaussian critical tanh MLPs as width
grows (Wei Huang, Weitao Du, Richard Yi Da Xu, "On the Neural Tangent Kernel of Deep Networks
with Orthogonal Initialization", IJCAI 2021, arXiv 2004.05867).

Their claims checked here: in the NTK parametrization the two inits have the same infinite-width
kernel (so at init the distance between an orthogonal and a Gaussian net's empirical kernels
falls like width^-1/2, as each one's finite-width fluctuation does) and the kernel stays put in
training at any depth when the width is large (relative drift ~ width^-1/2, lazy training);
orthogonal init differs only where that regime breaks down: large learning rate, large depth.

The networks (:func:`ntk_mlp`): the NTK parametrization of a critical tanh MLP 784 -> width x
(depth - 1) -> 10, each layer h -> (sigma_w / sqrt(n_in)) omega h + sigma_b beta with trainable
unit-scale omega, beta (beta ~ N(0, 1)); omega Gaussian N(0, 1), or orthogonal scaled to
unit-variance entries (sqrt(max(n_in, n_out)) times a Haar matrix with orthonormal rows or
columns), so both inits give every unit the same pre-activation variance, the rectangular input
layer included. (sigma_w, sigma_b) on the critical line (chi = 1, ``critical_point``). Each
layer is an ``nn.Linear`` (no bias) fed [sigma_w h / sqrt(n_in), sigma_b], so the kernel of its
parameters is exactly the NTK parametrization's and the package's structured Gram computes it.

- :func:`ntk_at_init`: two orthogonal and two Gaussian nets (independent draws) on one MNIST
  probe: ||Theta_orth - Theta_gauss||_F / ||Theta_gauss||_F, and the same distance within each
  ensemble (the finite-width fluctuation the cross distance is compared against).
- :func:`ntk_training_drift`: SGD on the squared error to one-hot labels; the relative drift
  ||Theta_t - Theta_0||_F / ||Theta_0||_F of the kernel on a fixed probe at log-spaced steps.

Pure torch, no Lightning. Inputs are MNIST pixels standardised by the training mean and std
(:func:`~ortho_lightning.experiments.fisher.mnist_tensors`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ortho_lightning.experiments.fisher import mnist_tensors
from ortho_lightning.experiments.table import ID_COLUMN
from ortho_lightning.init import critical_point, gaussian_, orthogonal_
from ortho_lightning.spectra import kernel_distance, kernel_eigenvalues, ntk_matrix
from ortho_lightning.validation import check_choice, check_int

WEIGHTS = ("orthogonal", "gaussian")


class NTKInput(nn.Module):
    """h -> [scale * h, bias_scale] (one constant column): the input of the next ``Linear``
    in the NTK parametrization, whose last weight column is then the bias beta."""

    def __init__(self, scale: float, bias_scale: float) -> None:
        super().__init__()
        self.scale, self.bias_scale = scale, bias_scale

    def forward(self, h: Tensor) -> Tensor:
        return torch.cat([h * self.scale, h.new_full((h.shape[0], 1), self.bias_scale)], dim=1)


def ntk_mlp(depth: int, width: int, weights: str, sigma_b: float = 0.01, seed: int = 0,
            n_in: int = 784, n_out: int = 10) -> nn.Sequential:
    """A critical tanh MLP with ``depth`` weight layers in the NTK parametrization (module
    docstring); ``weights`` is ``"orthogonal"`` or ``"gaussian"``, drawn from a generator seeded
    by ``seed``."""
    check_choice("ntk_mlp", "weights", weights, WEIGHTS)
    check_int("ntk_mlp", "depth", depth, minimum=1)
    check_int("ntk_mlp", "width", width, minimum=1)
    sigma_w = critical_point("tanh", sigma_b).sigma_w
    sizes = [n_in] + [width] * (depth - 1) + [n_out]
    gen = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(a + 1, b, bias=False)
        with torch.no_grad():
            omega = lin.weight[:, :a]
            if weights == "orthogonal":
                orthogonal_(omega, gain=math.sqrt(max(a, b)), generator=gen)
            else:
                gaussian_(omega, math.sqrt(a), generator=gen)  # N(0, a / a) = N(0, 1)
            lin.weight[:, a] = torch.randn(b, generator=gen, dtype=torch.float64).to(lin.weight)
        layers += [NTKInput(sigma_w / math.sqrt(a), sigma_b), lin]
        if i < depth - 1:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def _over_budget(depth: int, width: int, max_params: float | None) -> bool:
    return max_params is not None and (depth - 1) * width**2 > max_params


def ntk_at_init(depth: int, width: int, n_probe: int = 16, sigma_b: float = 0.01,
                max_params: float | None = None, data_dir: str | None = None,
                seed: int = 0) -> list[dict[str, Any]]:
    """One row: the relative Frobenius distances between the empirical NTKs (on the first
    ``n_probe`` MNIST test images, 10 outputs each) of independently drawn nets:
    ``dist_orth_gauss`` (mean of the 4 orthogonal-Gaussian pairs, Gaussian as reference),
    ``dist_orth_orth`` and ``dist_gauss_gauss`` (within each ensemble); and per init the mean
    ``lam_max_<w>`` (largest eigenvalue / N, the scale of the edge of stability 2 / lam_max of
    full-batch GD on (1/2N) ||f - y||^2) and ``trace_<w>`` / (N*C). No row (a skipped cell)
    when the hidden weights (depth - 1) * width^2 exceed ``max_params``."""
    if _over_budget(depth, width, max_params):
        return []
    _, _, probe = mnist_tensors(1, n_probe, data_dir)
    kernels: dict[str, list[Tensor]] = {}
    for k, w in enumerate(("orthogonal", "orthogonal", "gaussian", "gaussian")):
        model = ntk_mlp(depth, width, w, sigma_b, seed=4 * seed + k)
        kernels.setdefault(w, []).append(ntk_matrix(model, probe).double())
    (o1, o2), (g1, g2) = kernels["orthogonal"], kernels["gaussian"]
    cross = [float(kernel_distance(o, g)) for o in (o1, o2) for g in (g1, g2)]
    row: dict[str, Any] = {
        "step": 0,
        "dist_orth_gauss": sum(cross) / len(cross),
        "dist_orth_orth": float(kernel_distance(o1, o2)),
        "dist_gauss_gauss": float(kernel_distance(g1, g2)),
    }
    for w, short in (("orthogonal", "orth"), ("gaussian", "gauss")):
        ks = kernels[w]
        row[f"lam_max_{short}"] = sum(float(kernel_eigenvalues(t, 1)[0]) for t in ks) / (2 * n_probe)
        row[f"trace_{short}"] = sum(float(t.trace()) for t in ks) / (2 * ks[0].shape[0])
    return [row]


def ntk_training_drift(depth: int, width: int, weights: str, lr: float, steps: int = 64,
                       batch_size: int = 64, n_train: int = 2048, n_probe: int = 16,
                       sigma_b: float = 0.01, max_params: float | None = None,
                       data_dir: str | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """SGD with step ``lr`` on (1/2B) sum_i ||f(x_i) - onehot(y_i)||^2 over random minibatches
    of the first ``n_train`` MNIST training images. Rows at steps 0, 1, 2, 4, ... and ``steps``:
    ``drift`` (relative Frobenius change of the NTK on the first ``n_probe`` test images since
    step 0), ``loss`` (on the first 256 training images), ``weight_change`` (relative, all
    parameters) and ``diverged`` (loss not finite: the run stops there). No rows (a skipped
    cell) when the hidden weights (depth - 1) * width^2 exceed ``max_params``."""
    if _over_budget(depth, width, max_params):
        return []
    x, y, probe = mnist_tensors(n_train, n_probe, data_dir)
    targets = nn.functional.one_hot(y, 10).to(x.dtype)
    model = ntk_mlp(depth, width, weights, sigma_b, seed)
    theta0 = ntk_matrix(model, probe)
    start = [p.detach().clone() for p in model.parameters()]
    norm0 = math.sqrt(sum(float(p.pow(2).sum()) for p in start))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    held = slice(0, min(256, n_train))
    rows = []
    marks = {0, steps} | {2**k for k in range(int(math.log2(max(steps, 1))) + 1)}
    for step in range(steps + 1):
        if step in marks:
            with torch.no_grad():
                loss = 0.5 * (model(x[held]) - targets[held]).pow(2).sum(1).mean().item()
                change = math.sqrt(sum(float((p - p0).pow(2).sum())
                                       for p, p0 in zip(model.parameters(), start)))
            finite = math.isfinite(loss)
            row = {"step": step, "loss": loss, "weight_change": change / norm0,
                   "diverged": not finite}
            if finite:
                row["drift"] = float(kernel_distance(ntk_matrix(model, probe), theta0))
            rows.append(row)
            if not finite:
                break
        if step == steps:
            break
        idx = torch.randint(0, n_train, (batch_size,), generator=gen)
        loss = 0.5 * (model(x[idx]) - targets[idx]).pow(2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return rows


# ------------------------------------------------------------------------------- reports
def _fit(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y on log x (nan with fewer than two points)."""
    if len(xs) < 2:
        return math.nan
    lx, ly = [math.log(v) for v in xs], [math.log(v) for v in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sxx if sxx else math.nan


def loglog_slopes(rows: list[dict[str, Any]], group: list[str], x: str, y: str
                  ) -> list[dict[str, Any]]:
    """Per value of ``group``: the log-log slope of ``y`` against ``x`` fitted to the seed means
    (``slope``), and the mean and standard error of the slopes fitted seed by seed
    (``seed_slope``, ``seed_slope_se``; each seed's cells are independent draws at every x).
    Rows whose ``y`` is missing or <= 0 are left out."""
    data: dict[tuple, dict[int, dict[float, float]]] = {}
    for r in rows:
        v = r.get(y)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            key = tuple(r.get(g) for g in group)
            data.setdefault(key, {}).setdefault(r["seed"], {})[float(r[x])] = float(v)
    out = []
    for key in sorted(data, key=str):
        seeds = data[key]
        xs = sorted({xv for s in seeds.values() for xv in s})
        means = [sum(s[xv] for s in seeds.values() if xv in s)
                 / sum(xv in s for s in seeds.values()) for xv in xs]
        per = [_fit(sorted(s), [s[xv] for xv in sorted(s)]) for s in seeds.values()]
        per = [p for p in per if math.isfinite(p)]
        mean = sum(per) / len(per) if per else math.nan
        se = (math.sqrt(sum((p - mean) ** 2 for p in per) / (len(per) - 1) / len(per))
              if len(per) > 1 else math.nan)
        out.append({**dict(zip(group, key)), "y": y, "slope": _fit(xs, means),
                    "seed_slope": mean, "seed_slope_se": se, "seeds": len(per),
                    "x_range": f"{xs[0]:g}-{xs[-1]:g}"})
    return out


def _slope_table(fits: list[dict[str, Any]], group: list[str]) -> str:
    from ortho_lightning.experiments.report import markdown_table

    return markdown_table(
        [*group, "quantity", "x range", "slope of seed means", "per-seed slope (mean ± s.e.)"],
        [[*(f[g] for g in group), f["y"], f["x_range"], f"{f['slope']:.3f}",
          f"{f['seed_slope']:.3f} ± {f['seed_slope_se']:.3f} (n={f['seeds']})"] for f in fits])


def width_report(columns: list[str], rows: list[dict[str, Any]], figures_dir: Any) -> str:
    """Report hook of ``ntk_width.yaml``: log-log slopes of the three distances against width,
    and the ratio of the orthogonal-Gaussian distance to the within-init fluctuation
    sqrt((d_oo^2 + d_gg^2) / 2), which is ~1 when both inits share the infinite-width kernel
    (the difference of two independent draws then only carries their fluctuations)."""
    from ortho_lightning.experiments.report import markdown_table

    fits = [f for y in ("dist_orth_gauss", "dist_orth_orth", "dist_gauss_gauss")
            for f in loglog_slopes(rows, ["depth"], "width", y)]
    ratios: dict[tuple, list[float]] = {}
    for r in rows:
        if all(isinstance(r.get(k), float) for k in ("dist_orth_gauss", "dist_orth_orth",
                                                     "dist_gauss_gauss")):
            noise = math.sqrt((r["dist_orth_orth"] ** 2 + r["dist_gauss_gauss"] ** 2) / 2)
            ratios.setdefault((r["depth"], r["width"]), []).append(r["dist_orth_gauss"] / noise)
    body = []
    for (depth, width), vs in sorted(ratios.items()):
        m = sum(vs) / len(vs)
        sd = math.sqrt(sum((v - m) ** 2 for v in vs) / (len(vs) - 1)) if len(vs) > 1 else 0.0
        body.append([depth, width, f"{m:.3f} ± {sd:.3f} (n={len(vs)})"])
    return "\n".join([
        "## Log-log slopes against width", "", _slope_table(fits, ["depth"]), "",
        "## Orthogonal-Gaussian distance over the within-init fluctuation", "",
        "d_og / sqrt((d_oo^2 + d_gg^2) / 2): ~1 if the two inits have the same limit kernel.", "",
        markdown_table(["depth", "width", "ratio (mean ± std over seeds)"], body)])


def blown_up(rows: list[dict[str, Any]], factor: float = 10.0) -> set[str]:
    """Cell ids whose run diverged (non-finite loss) or blew up (last loss above ``factor``
    times the loss at step 0: outputs exploding while staying finite)."""
    first: dict[str, float] = {}
    last: dict[str, tuple[int, Any, bool]] = {}
    for r in rows:
        cid = r[ID_COLUMN]
        if r["step"] == 0 and isinstance(r.get("loss"), float):
            first[cid] = r["loss"]
        if cid not in last or r["step"] > last[cid][0]:
            last[cid] = (r["step"], r.get("loss"), bool(r.get("diverged")))
    return {cid for cid, (_, loss, div) in last.items()
            if div or not isinstance(loss, float) or not math.isfinite(loss)
            or (cid in first and loss > factor * first[cid])}


def drift_report(columns: list[str], rows: list[dict[str, Any]], figures_dir: Any) -> str:
    """Report hook of ``ntk_drift.yaml``: log-log slopes of the final drift against width per
    setting and init (diverged or blown-up runs left out, :func:`blown_up`), and those runs
    counted."""
    from ortho_lightning.experiments.report import filter_rows, markdown_table

    bad = blown_up(rows)
    last = filter_rows(rows, {"step": "last"})
    fits = loglog_slopes([r for r in last if r[ID_COLUMN] not in bad], ["setting", "weights"],
                         "width", "drift")
    counts: dict[tuple, list[int]] = {}
    for r in last:
        c = counts.setdefault((r["setting"], r["weights"], r["width"]), [0, 0])
        c[0] += r[ID_COLUMN] in bad
        c[1] += 1
    body = [[*k, f"{d}/{n}"] for k, (d, n) in sorted(counts.items(), key=str) if d]
    parts = ["## Log-log slopes of the final drift against width (stable runs)", "",
             _slope_table(fits, ["setting", "weights"]), "",
             "## Runs that diverged or blew up (final loss > 10 x initial)", ""]
    parts.append(markdown_table(["setting", "weights", "width", "runs"], body) if body
                 else "None.")
    return "\n".join(parts)
