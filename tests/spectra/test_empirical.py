import pytest
import torch
from torch import nn

from ortho_lightning.exceptions import ConfigurationError, ShapeError
from ortho_lightning.spectra import empirical_fisher_eigenvalues
from tests.spectra._models import build

KINDS = ["mlp", "cnn", "RNN", "LSTM2", "seqlinear", "shared", "norm_dropout", "parametrized"]


def _labels(model, x, likelihood, gen):
    with torch.no_grad():
        f = model.eval()(x)
    if likelihood == "categorical":
        return torch.randint(0, f.shape[1], (x.shape[0],), generator=gen)
    return torch.randn(f.shape, generator=gen)


def _dense_empirical(model, x, y, likelihood):
    """(1/N) sum_i g_i g_i^T from per-sample losses, one autograd.grad each (reference)."""
    params = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    rows = []
    for i in range(x.shape[0]):
        f = model(x[i : i + 1])
        if likelihood == "categorical":
            loss = nn.functional.cross_entropy(f, y[i : i + 1])
        else:
            loss = 0.5 * ((f - y[i : i + 1]) ** 2).sum()
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    g = torch.stack(rows)
    return g.T @ g / x.shape[0]


CASES = [(k, lik) for k in KINDS for lik in ("categorical", "gaussian")]


@pytest.mark.parametrize("kind,likelihood", CASES, ids=["-".join(c) for c in CASES])
def test_matches_dense_empirical_fisher(kind, likelihood):
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(11)
    model, x = build(kind)
    y = _labels(model, x, likelihood, gen)
    ref = torch.linalg.eigvalsh(_dense_empirical(model, x, y, likelihood)).flip(0)
    got = empirical_fisher_eigenvalues(model, x, y, likelihood)
    assert got.shape == (x.shape[0],)
    torch.testing.assert_close(got, ref[: x.shape[0]].clamp_min(0), rtol=1e-8, atol=1e-12)


def test_one_sample_is_the_squared_gradient_norm_and_differs_from_the_true_fisher():
    torch.manual_seed(0)
    model, x = build("mlp")
    y = torch.tensor([1])
    f = model(x[:1])
    loss = nn.functional.cross_entropy(f, y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    norm2 = sum((g**2).sum() for g in grads)
    got = empirical_fisher_eigenvalues(model, x[:1], y, k=3)
    torch.testing.assert_close(got, torch.stack([norm2, norm2 * 0, norm2 * 0]))


def test_top_k_and_errors():
    torch.manual_seed(0)
    model, x = build("mlp")
    y = torch.tensor([0, 1, 2, 0])
    full = empirical_fisher_eigenvalues(model, x, y)
    torch.testing.assert_close(empirical_fisher_eigenvalues(model, x, y, k=6)[:4], full)
    with pytest.raises(ShapeError, match="class indices must lie in"):
        empirical_fisher_eigenvalues(model, x, torch.tensor([0, 1, 3, 0]))
    with pytest.raises(ShapeError, match="integer class indices"):
        empirical_fisher_eigenvalues(model, x, y.double())
    with pytest.raises(ShapeError, match="expected 4 labels"):
        empirical_fisher_eigenvalues(model, x, y[:3])
    with pytest.raises(ShapeError, match="floating-point targets"):
        empirical_fisher_eigenvalues(model, x, y, "gaussian")
    with pytest.raises(ConfigurationError, match="likelihood"):
        empirical_fisher_eigenvalues(model, x, y, "poisson")
    with pytest.raises(ConfigurationError, match="k must be"):
        empirical_fisher_eigenvalues(model, x, y, k=0)
