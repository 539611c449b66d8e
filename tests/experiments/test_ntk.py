"""Experiment 4 (NTK): the NTK-parametrized critical MLP against its definition, the cells on
synthetic data (no MNIST), and the log-log slope fit on a known power law."""

import math

import pytest
import torch

import ortho_lightning.experiments.ntk as ntk
from ortho_lightning.exceptions import ConfigurationError
from ortho_lightning.init import critical_point
from ortho_lightning.spectra import ntk_matrix


@pytest.mark.parametrize("weights", ["orthogonal", "gaussian"])
def test_ntk_mlp_computes_the_ntk_parametrization(weights):
    torch.manual_seed(0)
    model = ntk.ntk_mlp(3, 16, weights, sigma_b=0.1, seed=2, n_in=8, n_out=4)
    sigma_w = critical_point("tanh", 0.1).sigma_w
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    x = torch.randn(5, 8)
    h = x
    for i, lin in enumerate(linears):
        omega, beta = lin.weight[:, :-1], lin.weight[:, -1]
        h = (sigma_w / math.sqrt(omega.shape[1])) * h @ omega.T + 0.1 * beta
        if i < len(linears) - 1:
            h = torch.tanh(h)
    torch.testing.assert_close(model(x), h)
    # the same seed draws the same net
    again = ntk.ntk_mlp(3, 16, weights, sigma_b=0.1, seed=2, n_in=8, n_out=4)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))


def test_orthogonal_layers_have_unit_variance_entries_and_exact_norms():
    model = ntk.ntk_mlp(3, 16, "orthogonal", seed=1, n_in=8, n_out=4)
    shapes = []
    for lin in (m for m in model if isinstance(m, torch.nn.Linear)):
        omega = lin.weight[:, :-1].detach().double()
        b, a = omega.shape
        shapes.append((b, a))
        gram = omega.T @ omega if b > a else omega @ omega.T
        torch.testing.assert_close(gram, max(a, b) * torch.eye(min(a, b), dtype=torch.float64),
                                   rtol=0, atol=1e-4)
    assert shapes == [(16, 8), (16, 16), (4, 16)]
    # tall input layer: every unit gets sigma_w^2 ||x||^2 / n_in on average, as with Gaussian
    x = torch.randn(3, 8)
    lin = model[1]
    pre = (x / math.sqrt(8)) @ lin.weight[:, :-1].T
    torch.testing.assert_close(pre.pow(2).mean(1), x.pow(2).sum(1) / 8)


def _fake_mnist(monkeypatch):
    def fake(n_train, n_probe, data_dir=None):
        g = torch.Generator().manual_seed(0)
        return (torch.randn(n_train, 12, generator=g), torch.randint(0, 10, (n_train,), generator=g),
                torch.randn(n_probe, 12, generator=g))

    monkeypatch.setattr(ntk, "mnist_tensors", fake)
    real = ntk.ntk_mlp
    monkeypatch.setattr(ntk, "ntk_mlp", lambda *a, **k: real(*a, **k, n_in=12))


def test_init_cell_distances_match_the_kernels(monkeypatch):
    _fake_mnist(monkeypatch)
    (row,) = ntk.ntk_at_init(depth=3, width=16, n_probe=4, seed=1)
    _, _, probe = ntk.mnist_tensors(1, 4)
    kernels = [ntk_matrix(ntk.ntk_mlp(3, 16, w, 0.01, seed=4 + k), probe).double()
               for k, w in enumerate(["orthogonal", "orthogonal", "gaussian", "gaussian"])]
    o1, o2, g1, g2 = kernels
    rel = [float(torch.linalg.matrix_norm(o - g) / torch.linalg.matrix_norm(g))
           for o in (o1, o2) for g in (g1, g2)]
    assert row["dist_orth_gauss"] == pytest.approx(sum(rel) / 4, rel=1e-9)
    assert row["dist_orth_orth"] == pytest.approx(
        float(torch.linalg.matrix_norm(o1 - o2) / torch.linalg.matrix_norm(o2)), rel=1e-9)
    assert row["lam_max_orth"] == pytest.approx(
        float(torch.linalg.eigvalsh(o1)[-1] + torch.linalg.eigvalsh(o2)[-1]) / 8, rel=1e-9)
    assert ntk.ntk_at_init(depth=3, width=16, max_params=100) == []  # 2 * 16^2 > 100: skipped


def test_training_cell_drift_starts_at_zero_and_grows(monkeypatch):
    _fake_mnist(monkeypatch)
    rows = ntk.ntk_training_drift(depth=3, width=16, weights="orthogonal", lr=0.5, steps=8,
                                  batch_size=8, n_train=32, n_probe=4)
    assert [r["step"] for r in rows] == [0, 1, 2, 4, 8]
    assert rows[0]["drift"] == 0.0 and rows[0]["weight_change"] == 0.0
    assert rows[-1]["drift"] > rows[1]["drift"] > 0
    assert rows[-1]["loss"] < rows[0]["loss"] and not any(r["diverged"] for r in rows)
    blown = ntk.ntk_training_drift(depth=3, width=16, weights="gaussian", lr=1e6, steps=8,
                                   batch_size=8, n_train=32, n_probe=4)
    assert blown[-1]["diverged"] and "drift" not in blown[-1]


def test_loglog_slopes_recover_a_power_law():
    rows = [{"seed": s, "depth": 8, "width": w, "d": (1 + 0.1 * s) * w**-0.5}
            for s in range(3) for w in (64, 256, 1024)]
    (fit,) = ntk.loglog_slopes(rows, ["depth"], "width", "d")
    assert fit["slope"] == pytest.approx(-0.5) and fit["seed_slope"] == pytest.approx(-0.5)
    assert fit["seed_slope_se"] == pytest.approx(0, abs=1e-12) and fit["seeds"] == 3


def test_unknown_weights_is_named():
    with pytest.raises(ConfigurationError, match="weights must be one of"):
        ntk.ntk_mlp(2, 4, "uniform")


def test_blown_up_flags_non_finite_and_exploded_runs():
    rows = [{"cell_id": c, "step": s, "loss": v, "diverged": d}
            for c, s, v, d in [("ok", 0, 1.0, False), ("ok", 32, 0.5, False),
                               ("nan", 0, 1.0, False), ("nan", 4, float("nan"), True),
                               ("big", 0, 1.0, False), ("big", 32, 3e20, False)]]
    assert ntk.blown_up(rows) == {"nan", "big"}
