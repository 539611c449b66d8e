"""Penalties and defect against hand-written formulas, finite differences and eigvalsh."""

from __future__ import annotations

import pytest
import torch

from ortho_lightning.constraints import orthogonality_defect, orthogonality_penalty
from ortho_lightning.exceptions import ConfigurationError, ShapeError

SHAPES = [(6, 6), (9, 4), (4, 9), (3, 2, 3, 3)]


def _hand_gram(W, gain):
    M = W.reshape(W.shape[0], -1)
    G = M.T @ M if M.shape[0] >= M.shape[1] else M @ M.T
    return G / gain**2


def _hand(W, gain, kind, reduction):
    G = _hand_gram(W, gain)
    n = G.shape[0]
    target = torch.eye(n, dtype=W.dtype) if kind == "frobenius" else torch.ones(n, n, dtype=W.dtype)
    E = 0.0
    for i in range(n):  # written entry by entry on purpose: an independent reference
        for j in range(n):
            E = E + (G[i, j] - target[i, j]) ** 2
    return E / n**2 if reduction == "mean" else E


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", ["frobenius", "all_ones"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("gain", [1.0, 1.7])
def test_value_and_gradient_match_hand_formula(shape, kind, reduction, gain):
    W = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    value = orthogonality_penalty(W, gain, kind, reduction)
    ref = _hand(W, gain, kind, reduction)
    torch.testing.assert_close(value, ref, rtol=1e-12, atol=1e-12)
    (g,) = torch.autograd.grad(value, W)
    (g_ref,) = torch.autograd.grad(ref, W)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["frobenius", "all_ones", "srip"])
def test_gradcheck_finite_differences(kind):
    W = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    n_iter = 200  # converged power iteration: the fixed-vector gradient is the exact one
    assert torch.autograd.gradcheck(
        lambda w: orthogonality_penalty(w, 1.3, kind, "sum", n_iter=n_iter), (W,)
    )


def test_frobenius_gradient_closed_form():
    # d/dW ||W^T W - I||_F^2 = 4 W (W^T W - I)
    W = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(orthogonality_penalty(W, kind="frobenius", reduction="sum"), W)
    torch.testing.assert_close(g, 4 * W.detach() @ (W.detach().T @ W.detach() - torch.eye(5, dtype=W.dtype)))


def test_all_ones_differs_from_frobenius_on_a_concrete_matrix():
    # W = I (3x3): perfectly orthogonal. Frobenius: 0. The notebook's form subtracts 1 from every
    # entry: the 6 off-diagonal zeros each contribute (0 - 1)^2 = 1 -> mean 6/9.
    W = torch.eye(3, dtype=torch.float64)
    assert orthogonality_penalty(W, kind="frobenius").item() == 0.0
    assert orthogonality_penalty(W, kind="all_ones").item() == pytest.approx(6 / 9)
    # and the all-ones matrix / sqrt(3) is zero under all_ones but not orthogonal
    J = torch.ones(3, 3, dtype=torch.float64) / 3**0.5
    assert orthogonality_penalty(J, kind="all_ones").item() == pytest.approx(0.0, abs=1e-15)
    assert orthogonality_penalty(J, kind="frobenius", reduction="sum").item() == pytest.approx(6.0)


@pytest.mark.parametrize("shape", [(10, 10), (12, 5), (5, 12)], ids=str)
def test_srip_matches_eigvalsh(shape):
    W = torch.randn(*shape, dtype=torch.float64)
    gain = 0.8
    G = _hand_gram(W, gain)
    ref = torch.linalg.eigvalsh(G - torch.eye(G.shape[0], dtype=W.dtype)).abs().max() ** 2
    value = orthogonality_penalty(W, gain, "srip", n_iter=500)
    torch.testing.assert_close(value, ref, rtol=1e-8, atol=0)


def test_srip_leaves_global_rng_alone():
    state = torch.get_rng_state()
    orthogonality_penalty(torch.randn(4, 4), kind="srip")
    torch.set_rng_state(state)
    a = torch.rand(3)
    torch.set_rng_state(state)
    orthogonality_penalty(torch.randn(4, 4), kind="srip")
    torch.set_rng_state(state)
    assert torch.equal(a, torch.rand(3))


def test_penalty_zero_at_scaled_orthogonal():
    Q, _ = torch.linalg.qr(torch.randn(9, 4, dtype=torch.float64))
    for kind in ("frobenius", "srip"):
        assert orthogonality_penalty(2.5 * Q, 2.5, kind).item() == pytest.approx(0.0, abs=1e-20)
    assert orthogonality_defect(2.5 * Q, 2.5).item() == pytest.approx(0.0, abs=1e-14)


def test_defect_closed_form():
    # W = diag(s) (n = 4): defect = sqrt(sum (s^2/g^2 - 1)^2 / n)
    s = torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64)
    g = 1.2
    ref = ((s**2 / g**2 - 1) ** 2).sum().div(4).sqrt()
    torch.testing.assert_close(orthogonality_defect(torch.diag(s), g), ref)


def test_callable_kind_is_used():
    W = torch.randn(3, 3)
    assert orthogonality_penalty(W, 2.0, kind=lambda w, g: w.sum() * g) == pytest.approx(W.sum() * 2)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"tensor": torch.randn(5)}, ShapeError, r"^gram: tensor must be a matrix \(>= 2-d tensor\), got shape \(5,\)$"),
        ({"tensor": torch.randn(3, 3), "kind": "spectral"}, ConfigurationError, r"^orthogonality_penalty: kind must be one of \['all_ones', 'frobenius', 'srip'\] or a callable f\(tensor, gain\), got 'spectral'$"),
        ({"tensor": torch.randn(3, 3), "reduction": "max"}, ConfigurationError, r"^orthogonality_penalty: reduction must be one of \['mean', 'sum'\], got 'max'$"),
        ({"tensor": torch.randn(3, 3), "gain": 0.0}, ConfigurationError, "^orthogonality_penalty: gain must be a finite number > 0, got 0.0$"),
    ],
    ids=["vector", "kind", "reduction", "gain"],
)
def test_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        orthogonality_penalty(**kwargs)
