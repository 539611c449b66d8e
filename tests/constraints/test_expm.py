"""skew_expm against torch.linalg.matrix_exp (value, gradient) and finite differences.

skew_expm is exp on the skew-symmetric matrices, differentiated as exp(skew(X)): its gradient is
the skew part of matrix_exp's (the part any skew parametrization sees), its tangent map that of
matrix_exp on skew tangents."""

from __future__ import annotations

import pytest
import torch

from ortho_lightning.constraints.expm import skew_expm


def _skew(shape, scale, dtype=torch.float64):
    A = scale * torch.randn(*shape, dtype=dtype)
    return A - A.mT


def _skew_part(M):
    return (M - M.mT) / 2


def _paired_rotation(n: int, angle: float) -> torch.Tensor:
    """A skew matrix whose n/2 rotation angles all equal ``angle``, in a random basis: every
    eigenvalue of X^T X is n-fold repeated (the divided differences' limit cases)."""
    R = torch.zeros(n, n, dtype=torch.float64)
    for i in range(0, n, 2):
        R[i, i + 1], R[i + 1, i] = angle, -angle
    Q = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))[0]
    return Q @ R @ Q.T


@pytest.mark.parametrize("scale", [0.0, 1e-6, 0.03, 0.3, 4.0], ids=lambda s: f"norm{s}")
@pytest.mark.parametrize("shape", [(7, 7), (3, 10, 10)], ids=["single", "batched"])
def test_value_and_gradient_match_matrix_exp(scale, shape):
    X = _skew(shape, scale).requires_grad_()
    G = torch.randn(shape, dtype=torch.float64)
    ref = torch.linalg.matrix_exp(X)
    out = skew_expm(X)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-13)
    (g_ref,) = torch.autograd.grad((ref * G).sum(), X)
    (g,) = torch.autograd.grad((out * G).sum(), X)
    torch.testing.assert_close(g, _skew_part(g_ref), rtol=0, atol=1e-12)


@pytest.mark.parametrize("angle", [0.0, 1e-4, 0.4, 0.5, 2.0], ids=lambda a: f"angle{a}")
def test_repeated_rotation_angles(angle):
    """Equal angles (and angles either side of the Taylor-series switch at theta = 0.5)."""
    X = _paired_rotation(8, angle).requires_grad_()
    G = torch.randn(8, 8, dtype=torch.float64)
    ref = torch.linalg.matrix_exp(X)
    torch.testing.assert_close(skew_expm(X), ref, rtol=0, atol=1e-13)
    (g_ref,) = torch.autograd.grad((ref * G).sum(), X)
    (g,) = torch.autograd.grad((skew_expm(X) * G).sum(), X)
    torch.testing.assert_close(g, _skew_part(g_ref), rtol=0, atol=1e-12)


def test_gradcheck_through_a_skew_frame():
    A = torch.randn(6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: skew_expm(a.tril(-1) - a.tril(-1).mT), (A,))


@pytest.mark.parametrize("scale", [0.01, 0.1, 1.0], ids=lambda s: f"scale{s}")
def test_float32_result_is_as_orthogonal_as_matrix_exp(scale):
    """In float32 the defect grows like eps * ||X||; at each norm it stays within
    torch.linalg.matrix_exp's (geotorch's and torch's map), and within 3e-6 up to ||X|| ~ 3."""
    torch.manual_seed(0)
    X = _skew((128, 128), scale, torch.float32)
    eye = torch.eye(128)
    Q = skew_expm(X)
    assert Q.dtype == torch.float32
    defect = (Q.T @ Q - eye).abs().max()
    Q_ref = torch.linalg.matrix_exp(X)
    assert defect <= (Q_ref.T @ Q_ref - eye).abs().max()
    if scale <= 0.1:
        assert defect < 3e-6


@pytest.mark.parametrize("shape", [(7, 7), (3, 10, 10)], ids=["single", "batched"])
def test_torch_func_jvp_vjp_and_vmap_match_matrix_exp(shape):
    X, E, G = _skew(shape, 1.0), _skew(shape, 1.0), torch.randn(shape, dtype=torch.float64)
    _, tangent = torch.func.jvp(skew_expm, (X,), (E,))
    _, tangent_ref = torch.func.jvp(torch.linalg.matrix_exp, (X,), (E,))
    torch.testing.assert_close(tangent, tangent_ref, rtol=0, atol=1e-12)
    (cotangent,) = torch.func.vjp(skew_expm, X)[1](G)
    (cotangent_ref,) = torch.func.vjp(torch.linalg.matrix_exp, X)[1](G)
    torch.testing.assert_close(cotangent, _skew_part(cotangent_ref), rtol=0, atol=1e-12)
    stacked = torch.stack([X, 2 * X])
    torch.testing.assert_close(torch.vmap(skew_expm)(stacked), torch.linalg.matrix_exp(stacked))


def test_spectra_differentiate_through_an_expm_constrained_rnn():
    """The monitors apply torch.func to constrained models: the Jacobian through a
    triv="expm" RNN equals the dense autograd Jacobian."""
    from torch import nn

    from ortho_lightning.constraints import orthogonalize
    from ortho_lightning.spectra import jacobian_singular_values

    rnn = nn.RNN(3, 6, batch_first=True).double()
    orthogonalize(rnn, "weight_hh_l0", triv="expm")
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    last_state = lambda inp: rnn(inp)[0][:, -1]  # noqa: E731
    measured = jacobian_singular_values(rnn, x, output_fn=lambda out: out[0][:, -1])
    for i in range(2):
        dense = torch.autograd.functional.jacobian(lambda v: last_state(v[None])[0], x[i])
        reference = torch.linalg.svdvals(dense.reshape(6, -1))
        torch.testing.assert_close(measured[i], reference, rtol=1e-10, atol=1e-12)
