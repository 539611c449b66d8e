"""Small float64 models and dense references shared by the spectra tests.

The references are deliberately naive (Python loops over samples and outputs with
``torch.autograd``), independent of the torch.func code under test."""

from __future__ import annotations

import geotorch
import torch
from torch import nn

ACTS = {"tanh": nn.Tanh, "relu": nn.ReLU, "linear": nn.Identity}


def mlp(act: str = "tanh", widths=(5, 6, 6, 3)) -> nn.Module:
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), ACTS[act]()]
    return nn.Sequential(*layers[:-1])


def cnn(act: str = "tanh") -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        ACTS[act](),
        nn.Conv2d(3, 2, 3, stride=2, dilation=1),
        ACTS[act](),
        nn.Flatten(),
        nn.Linear(2 * 2 * 2, 3),
    )


def cnn1d(act: str = "tanh") -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(2, 3, 3, padding=2, dilation=2),
        ACTS[act](),
        nn.Conv1d(3, 2, 2, stride=2, bias=False),
        nn.Flatten(),
        nn.Linear(2 * 3, 3),
    )


class RNNClassifier(nn.Module):
    def __init__(self, cell: str = "RNN", act: str = "tanh") -> None:
        super().__init__()
        kwargs = {"nonlinearity": act} if cell == "RNN" else {}
        self.rnn = getattr(nn, cell)(3, 4, batch_first=True, **kwargs)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.rnn(x)[0][:, -1])


class DeepRecurrent(nn.Module):
    """A 2-layer time-major recurrent net read out from the last layer's final state."""

    def __init__(self, cell: str = "LSTM", bidirectional: bool = False) -> None:
        super().__init__()
        self.rnn = getattr(nn, cell)(3, 4, num_layers=2, bidirectional=bidirectional)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        _, state = self.rnn(x.transpose(0, 1))
        h = state[0] if isinstance(state, tuple) else state
        return self.fc(h[-1])


class SeqLinear(nn.Module):
    """A Linear applied at every position of a sequence (positions in the structured route)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 4)
        self.fc = nn.Linear(4 * 5, 3)

    def forward(self, x):
        return self.fc(torch.tanh(self.proj(x)).flatten(1))


class TimeMajorLinear(nn.Module):
    """A Linear applied to a time-major (T, N, I) tensor: not batch-first."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 4)
        self.fc = nn.Linear(4 * 5, 3)

    def forward(self, x):
        h = torch.tanh(self.proj(x.transpose(0, 1))).transpose(0, 1)
        return self.fc(h.flatten(1))


class Shared(nn.Module):
    """One Linear called twice (weight sharing: not the structured route)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(5, 4)
        self.mid = nn.Linear(4, 4)
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        return self.out(torch.tanh(self.mid(torch.tanh(self.mid(h)))))


def norm_dropout() -> nn.Module:
    return nn.Sequential(
        nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Dropout(0.5), nn.Linear(6, 3)
    )


def parametrized() -> nn.Module:
    model = mlp("tanh", (5, 5, 5, 3))
    geotorch.orthogonal(model[2], "weight")
    return model


def build(kind: str, act: str = "tanh") -> tuple[nn.Module, torch.Tensor]:
    """A model and an input batch (float64, seeded by the caller)."""
    if kind == "mlp":
        return mlp(act), torch.randn(4, 5)
    if kind == "cnn":
        return cnn(act), torch.randn(3, 2, 6, 6)
    if kind == "cnn1d":
        return cnn1d(act), torch.randn(3, 2, 7)
    if kind in ("RNN", "LSTM", "GRU"):
        return RNNClassifier(kind, act if act in ("tanh", "relu") else "tanh"), torch.randn(3, 5, 3)
    if kind in ("LSTM2", "GRU2", "RNN2"):
        return DeepRecurrent(kind[:-1]), torch.randn(3, 4, 3)
    if kind == "GRU-bidirectional":
        return DeepRecurrent("GRU", bidirectional=True), torch.randn(3, 4, 3)
    if kind == "inplace":
        model = nn.Sequential(
            nn.Linear(5, 6),
            nn.ReLU(inplace=True),
            nn.Linear(6, 6),
            nn.ReLU(inplace=True),
            nn.Linear(6, 3),
        )
        return model, torch.randn(4, 5)
    if kind == "timemajor":
        return TimeMajorLinear(), torch.randn(3, 5, 3)
    if kind == "seqlinear":
        return SeqLinear(), torch.randn(3, 5, 3)
    if kind == "shared":
        return Shared(), torch.randn(4, 5)
    if kind == "norm_dropout":
        model = norm_dropout()
        with torch.no_grad():
            model[1].running_mean.uniform_(-0.5, 0.5)
            model[1].running_var.uniform_(0.5, 2.0)
        return model, torch.randn(4, 5)
    if kind == "parametrized":
        return parametrized(), torch.randn(4, 5)
    raise KeyError(kind)


def dense_fisher(model: nn.Module, x: torch.Tensor, likelihood: str) -> torch.Tensor:
    """The P x P Fisher (1/N) sum_i J_i^T H_i J_i built sample by sample with autograd."""
    params = [p for p in model.parameters() if p.requires_grad]
    was = model.training
    model.eval()
    total = 0.0
    for xi in x:
        f = model(xi[None])[0].reshape(-1)
        rows = []
        for c in range(f.numel()):
            grads = torch.autograd.grad(f[c], params, retain_graph=True, allow_unused=True)
            rows.append(
                torch.cat(
                    [
                        (g if g is not None else torch.zeros_like(p)).reshape(-1)
                        for g, p in zip(grads, params)
                    ]
                )
            )
        jac = torch.stack(rows)
        if likelihood == "categorical":
            p = torch.softmax(f.detach(), -1)
            h = torch.diag(p) - torch.outer(p, p)
        else:
            h = torch.eye(f.numel(), dtype=f.dtype)
        total = total + jac.T @ h @ jac
    model.train(was)
    return total / x.shape[0]


def dense_jacobian_sv(fn, x: torch.Tensor) -> torch.Tensor:
    """Per-sample singular values of d fn(x_i)/d x_i, with fn applied to a 1-sample batch."""
    out = []
    for xi in x:
        size = fn(xi[None])[0].numel()
        jac = torch.autograd.functional.jacobian(lambda v: fn(v[None])[0], xi)
        out.append(torch.linalg.svdvals(jac.reshape(size, -1)))
    return torch.stack(out)


def dense_ntk(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The (N*C, N*C) empirical NTK J J^T in eval mode, from per-sample Jacobians of every
    trainable parameter by ``vmap(jacrev)`` (a loop of ``jacrev`` for fused recurrent modules,
    which vmap cannot enter), formed explicitly."""
    from torch.func import functional_call, jacrev, vmap

    was = model.training
    model.eval()
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}

    def single(p, xi):
        return functional_call(model, p, (xi[None],))[0].reshape(-1)

    if any(isinstance(m, nn.RNNBase) for m in model.modules()):
        per = [jacrev(single)(params, xi) for xi in x]
        jac = {k: torch.stack([j[k] for j in per]) for k in params}
    else:
        jac = vmap(jacrev(single), in_dims=(None, 0))(params, x)
    model.train(was)
    n, c = x.shape[0], next(iter(jac.values())).shape[1]
    j = torch.cat([jac[k].reshape(n * c, -1) for k in params], dim=1)
    return j @ j.T
