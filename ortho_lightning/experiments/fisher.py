"""Experiment 3: the Fisher against the input-output Jacobian (Sokol & Park 2019; Hayase &
Karakida 2020), on critical tanh MLP classifiers of MNIST (784 -> width x (depth - 1) -> 10).

- :func:`fisher_vs_jacobian`: plain SGD on a fixed MNIST subset; every ``measure_every`` steps
  the top eigenvalue of the true Fisher of a fixed probe batch (exact, from the N*C dual Gram)
  and the largest squared singular value of the logits' input-output Jacobian on that batch.
- :func:`fisher_at_init`: the single-input Fisher spectrum at init (batch size 1, C = 10 non-zero
  eigenvalues at most) as depth grows, divided by depth; and the largest stable SGD step size on
  a grid beside 2 / lambda_max of the batch Fisher.
- :func:`conditional_fisher_vs_depth` (3b): the single-input NTK (M x M dual of the conditional
  Fisher of one input, Hayase & Karakida's object) predicted by
  ``theory.conditional_fisher_spectrum`` beside one explicit network: lambda_max / L and the
  mass near lambda_max. :func:`online_sgd_lr_vs_depth` (3b): best online (batch-1) SGD rate.

Pure torch, no Lightning. Inputs are pixels in [0, 1] standardised by the training mean and std.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ortho_lightning.data.mnist import load_mnist_split, locate_mnist, resolve_data_dir

# ConfigurationError is unused here; tests/adversarial/test_config_trust.py names
# fisher:ConfigurationError as an imported class that a grid must not call
from ortho_lightning.exceptions import ConfigurationError, DataError  # noqa: F401
from ortho_lightning.init import critical_point, initialize
from ortho_lightning.spectra import fisher_eigenvalues, jacobian_singular_values
from ortho_lightning.validation import check_choice

#: where :func:`fisher_at_init` draws its inputs from
INPUTS = ("mnist", "fixed_point")


def mnist_tensors(n_train: int, n_probe: int, data_dir: str | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train, y_train, x_probe)``: the first ``n_train`` training images flattened and
    standardised, their labels, and the first ``n_probe`` test images (same scaling).

    Raises:
        DataError: files missing, corrupt, or not MNIST's split sizes (60,000 / 10,000 images;
            :func:`~ortho_lightning.data.mnist.check_split_size`).
    """
    folder = resolve_data_dir(data_dir)
    found, missing = locate_mnist(folder)
    if missing:
        raise DataError(f"MNIST files {missing} not found in {str(folder)!r}; set "
                        "ORTHO_LIGHTNING_DATA or pass data_dir")
    x, y = load_mnist_split(found, "training")
    xt, _ = load_mnist_split(found, "test")
    x = x[:n_train].reshape(n_train, -1).float() / 255
    mean, std = x.mean(), x.std()
    probe = (xt[:n_probe].reshape(n_probe, -1).float() / 255 - mean) / std
    return (x - mean) / std, y[:n_train], probe


def critical_mlp(depth: int, width: int, weights: str, sigma_b: float, seed: int,
                 n_in: int = 784, n_out: int = 10) -> nn.Sequential:
    """A tanh MLP with ``depth`` weight layers at the critical point of ``sigma_b``."""
    sizes = [n_in] + [width] * (depth - 1) + [n_out]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < depth - 1:
            layers.append(nn.Tanh())
    model = nn.Sequential(*layers)
    cp = critical_point("tanh", sigma_b)
    initialize(model, scheme=weights, gain=cp.sigma_w, activation="tanh", sigma_b=sigma_b,
               generator=torch.Generator().manual_seed(seed))
    return model


def sgd_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
             n_train: int, batch_size: int, generator: torch.Generator) -> float:
    """One optimizer step on the cross-entropy of a random minibatch of ``batch_size`` of the
    first ``n_train`` rows of ``(x, y)`` (indices drawn from ``generator``); returns its loss."""
    idx = torch.randint(0, n_train, (batch_size,), generator=generator)
    loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def _measure(model: nn.Module, probe: torch.Tensor) -> dict[str, float]:
    lam = fisher_eigenvalues(model, probe)
    sv = jacobian_singular_values(model, probe)
    jac_sq = float(sv.max()) ** 2
    return {"fisher_max": float(lam[0]), "fisher_trace": float(lam.sum()),
            "jac_sv_max_sq": jac_sq, "jac_sv2_mean": float((sv.double() ** 2).mean()),
            "fisher_max_over_jac_sq": float(lam[0]) / jac_sq if jac_sq > 0 else math.nan}


def fisher_vs_jacobian(depth: int, weights: str, width: int = 128, sigma_b: float = 0.01,
                       steps: int = 200, lr: float = 0.01, batch_size: int = 64,
                       n_train: int = 4096, n_probe: int = 16, measure_every: int = 20,
                       data_dir: str | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Rows every ``measure_every`` SGD steps: ``train_loss`` (mean over the steps since the
    last row), ``fisher_max``, ``fisher_trace`` (probe batch), ``jac_sv_max_sq``,
    ``jac_sv2_mean`` and their ratio ``fisher_max_over_jac_sq``."""
    x, y, probe = mnist_tensors(n_train, n_probe, data_dir)
    model = critical_mlp(depth, width, weights, sigma_b, seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    rows, losses = [], []
    for step in range(steps + 1):
        if step % measure_every == 0:
            row = {"step": step, **_measure(model, probe)}
            if losses:
                row["train_loss"] = sum(losses) / len(losses)
            rows.append(row)
            losses = []
        if step == steps:
            break
        losses.append(sgd_step(model, opt, x, y, n_train, batch_size, gen))
        if not math.isfinite(losses[-1]):
            rows.append({"step": step + 1, "train_loss": losses[-1]})
            break
    return rows


def largest_stable_lr(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lrs: list[float],
                      steps: int, loss_fn=nn.functional.cross_entropy) -> float:
    """The largest step size of ``lrs`` for which ``steps`` full-batch GD steps on
    ``loss_fn(model(x), y)`` end below the initial loss (the model is restored after each
    try); 0 if none."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    best = 0.0
    for lr in sorted(lrs):
        model.load_state_dict(state)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        with torch.no_grad():
            loss0 = loss_fn(model(x), y).item()
        for _ in range(steps):
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            final = loss_fn(model(x), y).item()
        if math.isfinite(final) and final < loss0:
            best = lr
    model.load_state_dict(state)
    return best


def fixed_point_tensors(width: int, sigma_b: float, n_batch: int, n_single: int, seed: int
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Synthetic ``(x, y, probe)`` of dimension ``width`` whose first pre-activations sit at the
    fixed point q* (as in Hayase & Karakida's wide-network setting), random labels."""
    from ortho_lightning.experiments.isometry import critical_inputs

    cp = critical_point("tanh", sigma_b)
    gen = torch.Generator().manual_seed(10_000 + seed)
    x = critical_inputs(n_batch + n_single, width, cp.sigma_w, sigma_b, cp.q_star, gen).float()
    y = torch.randint(0, 10, (n_batch,), generator=gen)
    return x[:n_batch], y, x[n_batch:]


def fisher_at_init(depth: int, weights: str, width: int = 128, sigma_b: float = 0.01,
                   n_single: int = 8, n_batch: int = 32, lr_grid: tuple[float, ...] = (),
                   lr_steps: int = 20, inputs: str = "mnist", data_dir: str | None = None,
                   seed: int = 0) -> dict[str, Any]:
    """One row at init: the single-input Fisher's eigenvalues (top 9 of C = 10: the 10th is 0)
    averaged over ``n_single`` probe images, divided by depth (``single_max_over_L``,
    ``single_mean_over_L``, ``single_min_over_L``, ``single_max_over_mean``); ``fisher_max``
    of a batch of ``n_batch`` training images; and, with ``lr_grid``, ``stable_lr`` (largest
    step of the grid for which ``lr_steps`` full-batch GD steps on that batch lower the loss)
    beside ``two_over_fisher_max``. ``inputs="mnist"``: MNIST images (784 inputs, the probe from
    the test set); ``"fixed_point"``: Gaussian inputs of dimension ``width`` at the fixed point
    q*, random labels."""
    check_choice("fisher_at_init", "inputs", inputs, INPUTS)
    if inputs == "mnist":
        x, y, probe = mnist_tensors(max(n_batch, 1), n_single, data_dir)
    else:
        x, y, probe = fixed_point_tensors(width, sigma_b, n_batch, n_single, seed)
    model = critical_mlp(depth, width, weights, sigma_b, seed, n_in=x.shape[1])
    singles = torch.stack([fisher_eigenvalues(model, probe[i:i + 1])[:9] for i in range(n_single)])
    mean_single = singles.mean(0)
    lam_batch = float(fisher_eigenvalues(model, x, k=1)[0])
    row = {"single_max_over_L": float(mean_single[0]) / depth,
           "single_mean_over_L": float(mean_single.mean()) / depth,
           "single_min_over_L": float(mean_single[-1]) / depth,
           "single_max_over_mean": float((singles[:, 0] / singles.mean(1)).mean()),
           "fisher_max": lam_batch, "two_over_fisher_max": 2 / lam_batch}
    if lr_grid:
        row["stable_lr"] = largest_stable_lr(model, x, y, list(lr_grid), lr_steps)
    return row


def log_correlation(columns: list[str], rows: list[dict[str, Any]], figures_dir: Any,
                    x: str = "jac_sv_max_sq", y: str = "fisher_max") -> str:
    """Report hook: Pearson correlation of log ``y`` against log ``x`` over all measured rows
    of each (depth, weights) group and over all groups pooled, as Markdown."""
    from ortho_lightning.experiments.report import markdown_table

    def corr(pairs: list[tuple[float, float]]) -> float:
        if len(pairs) < 3:
            return math.nan
        lx = [math.log(a) for a, _ in pairs]
        ly = [math.log(b) for _, b in pairs]
        mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
        sxy = sum((a - mx) * (b - my) for a, b in zip(lx, ly))
        sxx = sum((a - mx) ** 2 for a in lx)
        syy = sum((b - my) ** 2 for b in ly)
        return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan

    def ok(r: dict[str, Any]) -> bool:
        return all(isinstance(r.get(c), (int, float)) and r[c] > 0 for c in (x, y))

    groups: dict[tuple, list[tuple[float, float]]] = {}
    for r in rows:
        if ok(r):
            groups.setdefault((r.get("depth"), r.get("weights")), []).append((r[x], r[y]))
    body = [[d, w, len(p), corr(p)] for (d, w), p in sorted(groups.items(), key=str)]
    pooled = [p for ps in groups.values() for p in ps]
    body.append(["all", "all", len(pooled), corr(pooled)])
    return (f"## Correlation of log {y} with log {x} (all measurements, all seeds)\n\n"
            + markdown_table(["depth", "weights", "points", "Pearson r"], body))


# ---------------------------------------------------------------- 3b: Hayase & Karakida
def conditional_fisher_vs_depth(depth: int, width: int = 256, q_star: float = 0.0259,
                                seed: int = 0, grid_size: int = 200, near: float = 0.1
                                ) -> dict[str, float]:
    """One row: the single-input NTK ``Theta`` (M x M dual of the conditional Fisher, M =
    ``width`` outputs) of an orthogonal critical tanh net at ``q_star``, predicted
    (:func:`ortho_lightning.theory.conditional_fisher_spectrum`) and measured on one random
    network (:func:`ortho_lightning.theory.simulate.random_mlp_ntk_eigenvalues`): lambda_max /
    depth (also over ``q* depth``, the mean: 1 for exactly linear growth), mean / depth and the
    fraction of eigenvalues above ``(1 - near) lambda_max``."""
    from ortho_lightning.theory import conditional_fisher_spectrum
    from ortho_lightning.theory.simulate import random_mlp_ntk_eigenvalues

    cp = critical_point("tanh", q_star=q_star)
    spec = conditional_fisher_spectrum("tanh", cp.sigma_w, cp.sigma_b, depth, "orthogonal",
                                       grid_size, q_star=q_star)
    ev = random_mlp_ntk_eigenvalues("tanh", cp.sigma_w, cp.sigma_b, q_star, depth, width,
                                    "orthogonal", torch.Generator().manual_seed(seed))
    top = float(ev.max())
    return {"theory_max_over_qL": spec.lambda_max / (q_star * depth),
            "measured_max_over_qL": top / (q_star * depth),
            "theory_max_over_L": spec.lambda_max / depth,
            "measured_max_over_L": top / depth, "theory_mean_over_L": spec.mean / depth,
            "measured_mean_over_L": float(ev.mean()) / depth,
            "theory_mass_near_max": spec.mass_above((1 - near) * spec.lambda_max),
            "measured_mass_near_max": float((ev > (1 - near) * top).double().mean()),
            "theory_max_over_mean": spec.lambda_max / spec.mean,
            "measured_max_over_mean": top / float(ev.mean())}


def online_sgd_lr_vs_depth(depth: int, lrs: tuple[float, ...], steps: int = 2000,
                           width: int = 128, q_star: float = 0.0259, n_eval: int = 1000,
                           seed: int = 0, data_dir: str | None = None) -> dict[str, Any]:
    """Online SGD (batch 1, cross-entropy) of an orthogonal critical tanh MLP (784 -> width x
    (depth - 1) -> 10, at ``q_star``) on the first ``steps`` MNIST training images, once per
    learning rate from the same init. The standardised images are scaled by
    ``((q* - sigma_b^2) / sigma_w^2)^(1/2)`` so the first pre-activations enter at ``q*``
    (every layer at the fixed point, as in the theory). Returns each rate's test loss on
    ``n_eval`` test images
    (``inf`` when it diverged), the best rate and ``max_ok_lr``, the largest rate whose loss
    ended below the loss at init (the edge of stability on the grid)."""
    x, y, probe = mnist_tensors(steps, n_eval, data_dir)
    folder = resolve_data_dir(data_dir)
    found, _ = locate_mnist(folder)
    _, yt = load_mnist_split(found, "test")
    probe_y = yt[:n_eval].long()
    cp = critical_point("tanh", q_star=q_star)
    scale = math.sqrt((q_star - cp.sigma_b**2) / cp.sigma_w**2)
    x, probe = x * scale, probe * scale
    with torch.no_grad():
        init_loss = float(nn.functional.cross_entropy(
            critical_mlp(depth, width, "orthogonal", cp.sigma_b, seed)(probe), probe_y))
    row: dict[str, Any] = {"init_loss": init_loss, "max_ok_lr": math.nan}
    best, best_loss = math.nan, math.inf
    for lr in sorted(lrs):
        model = critical_mlp(depth, width, "orthogonal", cp.sigma_b, seed)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        for i in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1].long()).backward()
            opt.step()
        with torch.no_grad():
            loss = float(nn.functional.cross_entropy(model(probe), probe_y))
        loss = loss if math.isfinite(loss) else math.inf
        row[f"loss_lr{lr:g}"] = loss
        if loss < best_loss:
            best, best_loss = lr, loss
        if loss < init_loss:
            row["max_ok_lr"] = lr
    row["best_lr"], row["best_loss"] = best, best_loss
    return row
