"""Empirical NTK spectrum: ortho_lightning.spectra.ntk_eigenvalues against the torch.func route,
one run, ratios.

Model: 784-256x8-10 tanh MLP (P = 664,074; ``bench_fisher.mlp``), probe batch N = 64, C = 10,
float32, CPU. Rows (each the best of ``--repeats`` timed runs after one warm-up; the reference
route one run):

- exact spectrum: ``ntk_eigenvalues(model, x)`` (the structured dual Gram of the Gaussian
  likelihood, times N) vs the ``vmap(jacrev)`` route of the torch.func NTK tutorial
  (per-sample parameter Jacobians (N, C, P), their Gram J J^T, then ``eigvalsh``);
- the kernel alone (``ntk_matrix`` vs the Jacobian Gram, no eigensolver), ``ntk_trace`` and the
  Lanczos top-10 (``method="lanczos"``) for scale.

Usage: ``python benchmarks/bench_ntk.py [--threads 1] [--repeats 3] [--device cuda]``
"""

from __future__ import annotations

import argparse

import bench_fisher
import torch
from _device import add_device_argument, describe, resolve_device
from bench_fisher import best_of, mlp, rel
from torch import nn
from torch.func import functional_call, jacrev, vmap

from ortho_lightning.spectra import ntk_eigenvalues, ntk_matrix, ntk_trace


def jacrev_ntk(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Reference kernel: per-sample parameter Jacobians by vmap(jacrev), then J J^T."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def single(p, xi):
        return functional_call(model, p, (xi[None],))[0]

    jac = vmap(jacrev(single), in_dims=(None, 0))(params, x)
    n, c = x.shape[0], 10
    j = torch.cat([jac[k].reshape(n * c, -1) for k in params], dim=1)  # (N*C, P)
    del jac
    return j @ j.T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    add_device_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dev = bench_fisher.DEVICE["device"] = resolve_device(args.device)  # best_of synchronizes
    torch.manual_seed(0)
    model = mlp().eval().to(dev)
    x = torch.randn(64, 784).to(dev)
    num_params = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}, device {describe(dev)}, threads {args.threads}, "
          f"P = {num_params:,}, N = 64, C = 10")
    rows: list[tuple[str, str, float, float | None, str]] = []

    def add(task: str, method: str, t: float, ratio: float | None, check: str = "") -> None:
        rows.append((task, method, t, ratio, check))
        print(f"  {task} | {method}: {t:.3f} s {check}", flush=True)

    t_ours, ours = best_of(lambda: ntk_eigenvalues(model, x), args.repeats)
    add("exact spectrum", "ortho_lightning ntk_eigenvalues", t_ours, None)
    t_ref, ref = best_of(lambda: torch.linalg.eigvalsh(jacrev_ntk(model, x)).flip(0), 1)
    add("exact spectrum", "vmap(jacrev) J J^T + eigvalsh", t_ref, t_ref / t_ours,
        f"max rel err top-50 {rel(ours[:50], ref[:50]):.1e}")

    t_k, kernel = best_of(lambda: ntk_matrix(model, x), args.repeats)
    add("kernel only", "ortho_lightning ntk_matrix", t_k, None)
    t_kr, kernel_ref = best_of(lambda: jacrev_ntk(model, x), 1)
    err = float(torch.linalg.matrix_norm(kernel - kernel_ref) / torch.linalg.matrix_norm(kernel_ref))
    add("kernel only", "vmap(jacrev) J J^T", t_kr, t_kr / t_k, f"rel Frobenius err {err:.1e}")

    t_tr, tr = best_of(lambda: ntk_trace(model, x), args.repeats)
    add("trace", "ortho_lightning ntk_trace (diagonal)", t_tr, t_kr / t_tr,
        f"rel err vs tr(J J^T) {abs(float(tr) / float(kernel_ref.trace()) - 1):.1e}")
    t_l, top = best_of(lambda: ntk_eigenvalues(model, x, "lanczos", k=10, tol=1e-5), args.repeats)
    add("top-10", "ortho_lightning Lanczos (tol 1e-5)", t_l, t_ref / t_l,
        f"max rel err vs reference {rel(top, ref[:10]):.1e}")

    print()
    print("| task | method | seconds | vmap(jacrev) route / ours | check |")
    print("|---|---|---|---|---|")
    for task, method, t, ratio, check in rows:
        r = "" if ratio is None else f"{ratio:.1f}x"
        print(f"| {task} | {method} | {t:.3f} | {r} | {check} |")


if __name__ == "__main__":
    main()
