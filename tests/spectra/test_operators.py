import pytest
import torch

from ortho_lightning.spectra import FisherOperator, fisher_gram
from ortho_lightning.spectra.operators import DualFisherOperator
from tests.spectra._models import build, dense_fisher

CASES = [
    ("mlp", "categorical"),
    ("cnn", "gaussian"),
    ("GRU", "categorical"),
    ("parametrized", "categorical"),
    ("shared", "gaussian"),
]


@pytest.mark.parametrize("kind,likelihood", CASES, ids=[f"{k}-{lik}" for k, lik in CASES])
def test_fisher_vector_products_match_dense(kind, likelihood):
    torch.manual_seed(11)
    model, x = build(kind)
    dense = dense_fisher(model, x, likelihood)
    op = FisherOperator(model, x, likelihood)
    assert op.shape == dense.shape
    v = torch.randn(op.shape[0], 3)
    torch.testing.assert_close(op.matvec(v[:, 0]), dense @ v[:, 0])
    torch.testing.assert_close(op @ v, dense @ v)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("kind,likelihood", CASES, ids=[f"{k}-{lik}" for k, lik in CASES])
def test_dual_products_match_the_gram(kind, likelihood):
    torch.manual_seed(12)
    model, x = build(kind)
    model.eval()
    gram = fisher_gram(model, x, likelihood)
    op = DualFisherOperator(model, x, likelihood)
    assert op.shape == gram.shape
    assert op.num_params == sum(p.numel() for p in model.parameters())
    u = torch.randn(op.shape[0], 2)
    torch.testing.assert_close(op @ u, gram @ u)
    torch.testing.assert_close(op @ u[:, 0], gram @ u[:, 0])
