import pytest
import torch
from torch import nn

from ortho_lightning.exceptions import ConfigurationError
from ortho_lightning.spectra import (
    empirical_fisher_eigenvalues,
    fisher_eigenvalues,
    fisher_max_bound,
)
from tests.spectra._models import build

KINDS = ["mlp", "cnn", "cnn1d", "RNN", "LSTM", "seqlinear", "shared", "parametrized", "norm_dropout"]
CASES = [(k, lik, s) for k in KINDS for lik in ("categorical", "gaussian") for s in (0, 1)]


@pytest.mark.parametrize("kind,likelihood,seed", CASES, ids=[f"{k}-{lik}-{s}" for k, lik, s in CASES])
def test_bounds_the_measured_largest_eigenvalue_and_is_not_vacuous(kind, likelihood, seed):
    torch.manual_seed(100 + seed)
    model, x = build(kind)
    lam = fisher_eigenvalues(model, x, likelihood)[0]
    b = fisher_max_bound(model, x, likelihood)
    assert b.bound <= b.gershgorin and b.bound <= b.per_sample
    assert b.bound >= lam * (1 - 1e-10)
    assert b.bound <= 4 * lam  # measured bound / lambda_max: 1.02-2.34 over these 36 cases
    with torch.no_grad():
        f = model.eval()(x)
    gen = torch.Generator().manual_seed(seed)
    if likelihood == "categorical":
        y = torch.randint(0, f.shape[1], (x.shape[0],), generator=gen)
    else:
        y = torch.randn(f.shape, generator=gen)
    lam_emp = empirical_fisher_eigenvalues(model, x, y, likelihood)[0]
    b_emp = fisher_max_bound(model, x, likelihood, labels=y)
    assert lam_emp * (1 - 1e-10) <= b_emp.bound <= 4 * lam_emp


def _dense_block_norms(model, x, likelihood, blocks):
    """a_il = ||H_i^{1/2} J_i^l||_2 from explicit per-sample Jacobians (reference)."""
    model.eval()
    out = []
    for xi in x:
        f = model(xi[None])[0]
        rows = [torch.autograd.grad(fc, list(model.parameters()), retain_graph=True) for fc in f]
        if likelihood == "categorical":
            p = torch.softmax(f.detach(), -1)
            h = torch.diag(p) - torch.outer(p, p)
        else:
            h = torch.eye(f.numel())
        norms = []
        for names in blocks:
            idx = [i for i, (n, _) in enumerate(model.named_parameters()) if n in names]
            jac = torch.stack([torch.cat([r[i].reshape(-1) for i in idx]) for r in rows])
            norms.append(torch.linalg.eigvalsh(jac.T @ h @ jac)[-1].clamp_min(0).sqrt())
        out.append(torch.stack(norms))
    return torch.stack(out)


@pytest.mark.parametrize("kind", ["mlp", "cnn", "RNN", "norm_dropout"])
def test_block_norms_are_the_per_sample_layer_block_norms(kind):
    torch.manual_seed(3)
    model, x = build(kind)
    names = [n for n, _ in model.named_parameters()]
    if kind == "norm_dropout":  # two Linear blocks, then the batch-norm parameters (generic)
        blocks = [["0.weight", "0.bias"], ["4.weight", "4.bias"], ["1.weight", "1.bias"]]
    elif kind == "RNN":  # the input and the recurrent matrix are two blocks
        blocks = [["rnn.weight_ih_l0", "rnn.bias_ih_l0"], ["rnn.weight_hh_l0", "rnn.bias_hh_l0"],
                  ["fc.weight", "fc.bias"]]
    else:  # one block per module, in module order
        prefixes = list(dict.fromkeys(n.rsplit(".", 1)[0] for n in names))
        blocks = [[n for n in names if n.rsplit(".", 1)[0] == p] for p in prefixes]
    b = fisher_max_bound(model, x, "categorical")
    ref = _dense_block_norms(model, x, "categorical", blocks)
    torch.testing.assert_close(b.block_norms, ref, rtol=1e-8, atol=1e-12)
    gram = ref.T @ ref / x.shape[0]
    torch.testing.assert_close(b.gershgorin, gram.sum(1).max())


def test_one_linear_layer_one_sample_is_exact():
    # F = J^T J with J = I_C (x) [x^T, 1]: lambda_max = ||x||^2 + 1, and both bounds are tight
    torch.manual_seed(0)
    model, x = nn.Linear(5, 3), torch.randn(1, 5)
    b = fisher_max_bound(model, x, "gaussian")
    expected = (x**2).sum() + 1
    torch.testing.assert_close(b.bound, expected)
    torch.testing.assert_close(b.gershgorin, expected)
    torch.testing.assert_close(fisher_eigenvalues(model, x, "gaussian")[0], expected)


def test_errors():
    model, x = build("mlp")
    with pytest.raises(ConfigurationError, match="likelihood"):
        fisher_max_bound(model, x, "poisson")
    with pytest.raises(ConfigurationError, match="nn.Module"):
        fisher_max_bound(lambda v: v, x)
