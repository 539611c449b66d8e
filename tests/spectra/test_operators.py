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


@pytest.mark.parametrize("cls", [FisherOperator, DualFisherOperator])
def test_operators_share_the_linear_operator_checks(cls):
    # issue 18: one interface (shape, dtype, device, @) with operands checked by name and shape
    from ortho_lightning.exceptions import ShapeError
    from ortho_lightning.spectra import LinearOperator

    model, x = build("mlp")
    op = cls(model, x)
    size = op.shape[0]
    assert isinstance(op, LinearOperator) and op.shape == (size, size)
    assert op.dtype == torch.float64 and op.device == torch.device("cpu")
    with pytest.raises(ShapeError, match=rf"^{cls.__name__}: the operand must be a tensor of shape "
                       rf"\({size},\) or \({size}, m\), got torch.Size\(\[{size + 1}\]\)$"):
        op @ torch.zeros(size + 1)
    with pytest.raises(ShapeError, match=rf"^{cls.__name__}: the operand must be a tensor of shape "
                       rf"\({size}, m\), got torch.Size\(\[{size}\]\)$"):
        op.matmat(torch.zeros(size))
    with pytest.raises(ShapeError, match="must be torch.float64 on cpu, got 'torch.float32 on cpu'"):
        op.matvec(torch.zeros(size, dtype=torch.float32))
