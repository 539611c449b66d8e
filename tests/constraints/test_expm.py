"""skew_expm against torch.linalg.matrix_exp (value, gradient) and finite differences."""

from __future__ import annotations

import pytest
import torch

from ortho_lightning.constraints.expm import skew_expm


def _skew(shape, scale, dtype=torch.float64):
    A = scale * torch.randn(*shape, dtype=dtype)
    return A - A.mT


@pytest.mark.parametrize("scale", [0.0, 1e-6, 0.3, 4.0], ids=lambda s: f"norm{s}")
@pytest.mark.parametrize("shape", [(7, 7), (3, 10, 10)], ids=["single", "batched"])
def test_value_and_gradient_match_matrix_exp(scale, shape):
    X = _skew(shape, scale).requires_grad_()
    G = torch.randn(shape, dtype=torch.float64)
    ref = torch.linalg.matrix_exp(X)
    out = skew_expm(X)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-13)
    (g_ref,) = torch.autograd.grad((ref * G).sum(), X)
    (g,) = torch.autograd.grad((out * G).sum(), X)
    torch.testing.assert_close(g, g_ref, rtol=0, atol=1e-12)


def test_gradcheck_through_a_skew_frame():
    A = torch.randn(6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: skew_expm(a.tril(-1) - a.tril(-1).mT), (A,))


def test_float32_result_is_orthogonal():
    Q = skew_expm(_skew((128, 128), 2.0, torch.float32))
    assert Q.dtype == torch.float32
    assert (Q.T @ Q - torch.eye(128)).abs().max() < 5e-6
