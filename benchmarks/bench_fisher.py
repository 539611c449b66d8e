"""Fisher spectrum, trace and top-k: ortho_lightning.spectra against the peers, one run, ratios.

Model: 784-256x8-10 tanh MLP (P = 664,074), probe batch N = 64, C = 10, float32, CPU.
Rows (each the best of ``--repeats`` timed runs after one warm-up):

- exact spectrum: ours (structured dual Gram) vs the per-sample-Jacobian Gram route
  (``vmap(jacrev)`` per-sample parameter Jacobians, (N*C, P), then their Gram), vs our own
  generic torch.func fallback, vs nngeometry's ``FIM(..., FMatDense)`` Gram;
- trace: ours (exact, structured diagonal) vs BackPACK ``DiagGGNExact``;
- top-10: ours (Lanczos on the dual operator) vs curvlinops ``GGNLinearOperator`` + scipy
  ``eigsh`` at the same tolerance, at N = 64 and N = 2048 (N*C = 20,480: no dense Gram), in
  interleaved rounds (ours, curvlinops, ours, ...; best of ``--repeats``).

The true Fisher of a softmax output is the GGN of the cross-entropy (H = diag(p) - p p^T does
not depend on the labels), so the peers get random labels and mean reduction.
Peers are optional (``pip install .[bench]``); a missing one is skipped with a note.

Usage: ``python benchmarks/bench_fisher.py [--threads 1] [--repeats 3] [--skip-slow]
[--device cuda]`` (``--device``: every model, input and peer on that device; CUDA times are
wall times with the device synchronized around each call, benchmarks/_device.py)
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import resource
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from _device import add_device_argument, describe, resolve_device, timed_call
from torch import nn
from torch.func import functional_call, jacrev, vmap

from ortho_lightning.spectra import fisher_eigenvalues, fisher_gram, fisher_trace


def mlp(width: int = 256, depth: int = 8, classes: int = 10) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(784, width), nn.Tanh()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.Tanh()]
    layers.append(nn.Linear(width, classes))
    model = nn.Sequential(*layers)
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight, gain=1.1)
            nn.init.normal_(m.bias, std=0.05)
    return model


def cnn(channels: int = 32, depth: int = 6) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(1, channels, 3, padding=1), nn.Tanh()]
    for _ in range(depth - 1):
        layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.Tanh()]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10)]
    return nn.Sequential(*layers)


class RowRNN(nn.Module):
    """128-unit tanh RNN over the 28 rows of an image, read out from the last step."""

    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.rnn = nn.RNN(28, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, 10)

    def forward(self, x):
        return self.fc(self.rnn(x)[0][:, -1])


#: ``time.perf_counter`` (wall) or ``time.process_time`` (CPU of this process: on a shared
#: machine other processes' load barely moves it; with one thread it equals the wall time of a
#: quiet machine). Set by ``--clock``.
CLOCK = {"clock": time.perf_counter}
#: where models, inputs and peers run; set by ``--device`` (benchmarks/_device.py)
DEVICE = {"device": torch.device("cpu")}


def best_of(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t, out = timed_call(fn, DEVICE["device"], CLOCK["clock"])
        times.append(t)
    return min(times), out


def interleaved(fns: list[Callable[[], object]], repeats: int) -> list[tuple[float, object]]:
    """Each of ``fns`` warmed up once, then ``repeats`` rounds timing each in turn (so a load
    change on a shared machine hits both sides alike); (best time, last output) per function."""
    outs = [fn() for fn in fns]
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t, outs[i] = timed_call(fn, DEVICE["device"], CLOCK["clock"])
            times[i].append(t)
    return [(min(ts), out) for ts, out in zip(times, outs)]


def per_sample_jacobian_route(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Reference route: per-sample parameter Jacobians (N, C, P), then the dual Gram."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def single(p, xi):
        return functional_call(model, p, (xi[None],))[0]

    jac = vmap(jacrev(single), in_dims=(None, 0))(params, x)
    j = torch.cat([jac[k].reshape(x.shape[0], 10, -1) for k in params], dim=2)  # (N, C, P)
    with torch.no_grad():
        p = torch.softmax(model(x), -1)
    s = p.sqrt()
    sqrt_h = torch.diag_embed(s) - p[:, :, None] * s[:, None, :]
    g = torch.einsum("ndc,ndp->ncp", sqrt_h, j).reshape(-1, j.shape[2])
    del j, jac
    return torch.linalg.eigvalsh(g @ g.T / x.shape[0]).flip(0)


def nngeometry_route(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    from nngeometry.metrics import FIM
    from nngeometry.object import FMatDense

    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=x.shape[0]
    )
    fmat = FIM(model, loader, FMatDense, variant="classif_logits", device=str(x.device))
    data = fmat.data
    s = data.shape
    return torch.linalg.eigvalsh(data.reshape(s[0] * s[1], s[2] * s[3])).flip(0)


def backpack_trace(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    from backpack import backpack, extend
    from backpack.extensions import DiagGGNExact

    ext_model = extend(model)
    loss_fn = extend(nn.CrossEntropyLoss())
    loss = loss_fn(ext_model(x), y)
    with backpack(DiagGGNExact()):
        loss.backward()
    total = sum(p.diag_ggn_exact.sum() for p in ext_model.parameters())
    for p in ext_model.parameters():
        p.grad = None
    return total


def backpack_sqrt_ggn_eigenvalues(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """BackPACK ``SqrtGGNExact``: the (C, N, *p) factors of the GGN of the mean cross-entropy
    (= the Fisher), stacked into G (N*C, P), then eigvalsh(G G^T), descending."""
    from backpack import backpack, extend
    from backpack.extensions import SqrtGGNExact

    ext_model = extend(model)
    loss = extend(nn.CrossEntropyLoss())(ext_model(x), y)
    with backpack(SqrtGGNExact()):
        loss.backward()
    params = [p for p in ext_model.parameters() if p.requires_grad]
    g = torch.cat([p.sqrt_ggn_exact.flatten(2).flatten(0, 1) for p in params], dim=1)
    for p in params:
        p.grad = None
        del p.sqrt_ggn_exact
    return torch.linalg.eigvalsh(g @ g.T).flip(0)


def backpack_copy(model: nn.Module) -> nn.Module:
    """A deep copy BackPACK can walk: every op a module (the recipe CNN's functional global
    mean becomes ``AvgPool2d`` + ``Flatten``), same weights, eval mode."""
    from ortho_lightning.models import CNNClassifier

    if isinstance(model, CNNClassifier):  # its activations are our Elementwise: built tanh
        assert model.hparams.activation == "tanh"
        size = model.input_shape[-1]
        for m in model.stem:
            if isinstance(m, nn.Conv2d):
                size = (size + 2 * m.padding[0] - m.kernel_size[0]) // m.stride[0] + 1
        convs = [m for m in [*model.stem, *model.body] if isinstance(m, nn.Conv2d)]
        return nn.Sequential(
            *[layer for m in convs for layer in (copy.deepcopy(m), nn.Tanh())],
            nn.AvgPool2d(size),
            nn.Flatten(),
            copy.deepcopy(model.head),
        ).eval()
    layers = [
        nn.AvgPool2d(28) if isinstance(m, nn.AdaptiveAvgPool2d) else copy.deepcopy(m) for m in model
    ]
    return nn.Sequential(*layers).eval()


def curvlinops_topk(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int, tol: float
) -> torch.Tensor:
    from curvlinops import GGNLinearOperator
    from scipy.sparse.linalg import eigsh

    params = [p for p in model.parameters() if p.requires_grad]
    op = GGNLinearOperator(
        model, nn.CrossEntropyLoss(), params, [(x, y)], check_deterministic=False
    ).to_scipy()
    vals = eigsh(op, k=k, which="LA", tol=tol, return_eigenvectors=False)
    return torch.from_numpy(vals.copy()).sort(descending=True).values


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().cpu().double(), b.detach().cpu().double()
    return float(((a - b).abs() / b.abs().clamp_min(1e-30)).max())


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tol", type=float, default=1e-5)
    parser.add_argument("--big-n", type=int, default=2048)
    parser.add_argument("--skip-slow", action="store_true", help="skip the per-sample routes")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: perf_counter; cpu: this process's CPU time (for a shared, loaded machine)",
    )
    parser.add_argument(
        "--sections",
        default="exact,trace,topk,others",
        help="comma list: exact, trace, topk (the 784-256x8-10 MLP against the peers), "
        "cnn (exact spectrum of the 6x32 CNN and the recipe's 32-layer CNN against BackPACK "
        "SqrtGGNExact), others (CNN, RNN, small MLP: structured vs generic routes), memory "
        "(opt-in: peak RSS of each route in a fresh process, widths 128/256/512)",
    )
    add_device_argument(parser)
    parser.add_argument(
        "--memory-child", nargs=2, metavar=("ROUTE", "WIDTH"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child[0], int(args.memory_child[1]), args.threads)
        return
    torch.set_num_threads(args.threads)
    CLOCK["clock"] = time.process_time if args.clock == "cpu" else time.perf_counter
    dev = DEVICE["device"] = resolve_device(args.device)
    if dev.type == "cuda" and args.clock == "cpu":
        raise SystemExit("--clock cpu measures this process's CPU time: use --clock wall on CUDA")
    torch.manual_seed(0)
    model = mlp().to(dev)
    x = torch.randn(64, 784).to(dev)
    y = torch.randint(0, 10, (64,)).to(dev)
    num_params = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}, device {describe(dev)}, threads {args.threads}, "
          f"P = {num_params:,}, N = 64, C = 10")
    rows: list[tuple[str, str, float, float | None, str]] = []

    def add(row: tuple[str, str, float, float | None, str]) -> None:
        rows.append(row)
        print(f"  {row[0]} | {row[1]}: {row[2]:.3f} s {row[4]}", flush=True)  # takes minutes

    sections = set(args.sections.split(","))
    run_mlp_section(model, x, y, args, add, sections)
    if "cnn" in sections:
        run_cnn_peers(args, add)
    if "others" in sections and not args.skip_slow:
        run_other_models(args, add)
    if "memory" in sections:
        run_memory(args)
    print()
    print("| task | method | seconds | other / ours | check |")
    print("|---|---|---|---|---|")
    for task, method, t, ratio, check in rows:
        r = "" if ratio is None else f"{ratio:.1f}x"
        print(f"| {task} | {method} | {t:.3f} | {r} | {check} |")


def run_mlp_section(model, x, y, args, add, sections) -> None:
    # --- exact spectrum
    if "exact" in sections:
        run_exact(model, x, y, args, add)
    if "trace" in sections:
        run_trace(model, x, y, args, add)
    if "topk" in sections:
        run_topk(model, x, y, args, add)


def run_exact(model, x, y, args, add) -> None:
    t_ours, ours = best_of(lambda: fisher_eigenvalues(model, x), args.repeats)
    add(("exact spectrum", "ortho_lightning (structured dual Gram)", t_ours, None, ""))
    if not args.skip_slow:
        t, ref = best_of(lambda: per_sample_jacobian_route(model, x), 1)
        add(
            (
                "exact spectrum",
                "per-sample Jacobian Gram route",
                t,
                t / t_ours,
                f"max rel err top-50 {rel(ours[:50], ref[:50]):.1e}",
            )
        )
        t, gen = best_of(
            lambda: torch.linalg.eigvalsh(fisher_gram(model, x, structured=False)).flip(0), 1
        )
        add(
            (
                "exact spectrum",
                "ortho_lightning generic torch.func route",
                t,
                t / t_ours,
                f"max rel err top-50 {rel(gen[:50], ours[:50]):.1e}",
            )
        )
    if have("nngeometry"):
        # a fresh copy per call, so no peer runs on a model another one has touched (issue 19
        # saw leftover nngeometry hooks slow the next library; this FIM route leaves none here)
        t, ng = best_of(lambda: nngeometry_route(copy.deepcopy(model), x, y), args.repeats)
        ratio = float(ng[0] / ours[0])
        add(
            (
                "exact spectrum",
                "nngeometry FIM FMatDense",
                t,
                t / t_ours,
                f"top eig ratio ng/ours {ratio:.4f}; top-50 rel err after scaling "
                f"{rel(ng[:50] / ratio, ours[:50]):.1e}",
            )
        )
    else:
        print("note: nngeometry not installed; skipped (pip install nngeometry==0.4)")


def run_trace(model, x, y, args, add) -> None:
    t_tr, tr = best_of(lambda: fisher_trace(model, x), args.repeats)
    add(("trace", "ortho_lightning exact (structured diagonal)", t_tr, None, f"{float(tr):.6g}"))
    if have("backpack"):
        bp_model = mlp().to(x.device)
        bp_model.load_state_dict(model.state_dict())
        t, bp = best_of(lambda: backpack_trace(bp_model, x, y), args.repeats)
        add(
            (
                "trace",
                "BackPACK DiagGGNExact",
                t,
                t / t_tr,
                f"rel err {rel(tr.reshape(1), bp.reshape(1)):.1e}",
            )
        )
    else:
        print("note: backpack-for-pytorch not installed; skipped")


def run_topk(model, x, y, args, add) -> None:
    peer = copy.deepcopy(model)  # curvlinops' own copy (see run_exact)
    for n in (64, args.big_n):
        xb = x if n == 64 else torch.randn(n, 784).to(x.device)
        yb = y if n == 64 else torch.randint(0, 10, (n,)).to(x.device)
        fns = [lambda xb=xb: fisher_eigenvalues(model, xb, method="lanczos", k=10, tol=args.tol)]
        if have("curvlinops"):  # interleaved rounds: ours, curvlinops, ours, ...
            fns.append(lambda xb=xb, yb=yb: curvlinops_topk(peer, xb, yb, 10, args.tol))
        timed = interleaved(fns, args.repeats)
        t_l, top = timed[0]
        add((f"top-10 N={n}", f"ortho_lightning Lanczos (dual, tol {args.tol:g})", t_l, None, ""))
        if have("curvlinops"):
            t, cl = timed[1]
            add(
                (
                    f"top-10 N={n}",
                    "curvlinops GGN + scipy eigsh",
                    t,
                    t / t_l,
                    f"max rel diff {rel(top, cl):.1e}",
                )
            )
        else:
            print("note: curvlinops-for-pytorch not installed; skipped")


def run_cnn_peers(args, add) -> None:
    """Exact Fisher spectrum of convolutional nets: ours vs BackPACK SqrtGGNExact + Gram, each
    on its own copy of the model (eval mode, same weights)."""
    from ortho_lightning.init import initialize
    from ortho_lightning.models import CNNClassifier

    dev = DEVICE["device"]
    torch.manual_seed(0)
    recipe = CNNClassifier(depth=32, channels=32, downsample=2).eval()
    # the recipe's init (at PyTorch's default init the 32-layer net's Jacobian vanishes and the
    # Fisher has only the head's C - 1 non-zero eigenvalues)
    initialize(recipe, "delta_orthogonal", "critical", "tanh", 0.0, include=["stem.*", "body.*"])
    cases = [
        ("CNN 6x32 (28x28), N=64", cnn().eval().to(dev), 64),
        ("recipe CNN 32x32 (7x7 after 2 stride-2), N=8", recipe.to(dev), 8),
        ("recipe CNN 32x32 (7x7 after 2 stride-2), N=64", recipe, 64),
    ]
    for name, model, n in cases:
        x = torch.randn(n, 1, 28, 28).to(dev)
        y = torch.randint(0, 10, (n,)).to(dev)
        num_params = sum(p.numel() for p in model.parameters())
        ours_model = copy.deepcopy(model)
        t_ours, ours = best_of(lambda m=ours_model, x=x: fisher_eigenvalues(m, x), args.repeats)
        add((f"exact, {name}", f"ortho_lightning (structured), P={num_params:,}", t_ours, None, ""))
        if not have("backpack"):
            print("note: backpack-for-pytorch not installed; skipped")
            continue
        peer = backpack_copy(model)
        t_bp, bp = best_of(
            lambda m=peer, x=x, y=y: backpack_sqrt_ggn_eigenvalues(m, x, y), args.repeats
        )
        top = ours[:10].double()
        top = top[top > 1e-4 * top[0]]  # compare the eigenvalues float32 resolves
        err = float(((bp[: len(top)].double() - top).abs() / top).max())
        add(
            (
                f"exact, {name}",
                "BackPACK SqrtGGNExact + Gram",
                t_bp,
                t_bp / t_ours,
                f"max rel err top-{len(top)} {err:.1e}",
            )
        )


def run_other_models(args, add) -> None:
    # --- the other recipe-sized models: exact spectrum, structured vs generic routes
    dev = DEVICE["device"]
    others = {
        "CNN 6x32 (28x28)": (cnn().to(dev), torch.randn(64, 1, 28, 28).to(dev)),
        "RNN 128 (28 rows)": (RowRNN().to(dev), torch.randn(64, 28, 28).to(dev)),
        "MLP 784-64x3-10": (mlp(64, 3).to(dev), torch.randn(64, 784).to(dev)),
    }
    for name, (m, xm) in others.items():
        t_s, fast = best_of(lambda m=m, xm=xm: fisher_eigenvalues(m, xm), args.repeats)
        add((f"exact, {name}", "ortho_lightning (structured)", t_s, None, ""))
        t_g, slow = best_of(
            lambda m=m, xm=xm: torch.linalg.eigvalsh(fisher_gram(m, xm, structured=False)).flip(0),
            1,
        )
        check = f"max rel err top-50 {rel(slow[:50], fast[:50]):.1e}"
        add(
            (
                f"exact, {name}",
                "ortho_lightning generic torch.func route",
                t_g,
                t_g / t_s,
                check,
            )
        )
        if not isinstance(m, RowRNN):  # vmap over samples cannot enter the fused nn.RNN
            t_p, ref = best_of(lambda m=m, xm=xm: per_sample_jacobian_route(m, xm), 1)
            check = f"max rel err top-50 {rel(ref[:50], fast[:50]):.1e}"
            add((f"exact, {name}", "per-sample Jacobian Gram route", t_p, t_p / t_s, check))


ROUTES = {
    "exact": lambda m, x: fisher_eigenvalues(m, x),
    "lanczos": lambda m, x: fisher_eigenvalues(m, x, method="lanczos", k=10, tol=1e-5),
    "per-sample": per_sample_jacobian_route,
}


def memory_child(route: str, width: int, threads: int) -> None:
    """In a fresh process: peak RSS growth of one route over a warmed-up forward/backward."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, x = mlp(width), torch.randn(64, 784)
    model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ROUTES[route](model, x)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    params = sum(p.numel() for p in model.parameters())
    print(f"{route},{width},{params},{peak - base:.0f}")


def run_memory(args) -> None:
    print("\n| route | width | P | extra peak RSS (MiB) |\n|---|---|---|---|")
    for route in ROUTES:
        for width in (128, 256, 512) if route != "per-sample" else (128, 256):
            out = (
                subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--threads",
                        str(args.threads),
                        "--memory-child",
                        route,
                        str(width),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            r, w, p, mib = out.split(",")
            print(f"| {r} | {w} | {int(p):,} | {mib} |", flush=True)


if __name__ == "__main__":
    main()
