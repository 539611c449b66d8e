"""Projections against the SVD polar factor."""

from __future__ import annotations

import pytest
import torch

from ortho_lightning.constraints import project_orthogonal_
from ortho_lightning.exceptions import ConfigurationError, ShapeError


def _svd_reference(W, gain):
    M = W.reshape(W.shape[0], -1)
    U, _, Vh = torch.linalg.svd(M, full_matrices=False)
    return (gain * U @ Vh).reshape(W.shape)


def _near_orthogonal(shape, eps, dtype=torch.float64):
    M = torch.randn(shape[0], int(torch.tensor(shape[1:]).prod()), dtype=dtype)
    U, _, Vh = torch.linalg.svd(M, full_matrices=False)
    return ((U @ Vh) + eps * torch.randn_like(M)).reshape(shape)


CASES = [(8, 8), (10, 4), (4, 10), (6, 2, 3)]


@pytest.mark.parametrize("method", ["polar", "bjorck"])
@pytest.mark.parametrize("shape", CASES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("gain", [1.0, 0.6])
def test_matches_svd_polar_factor(method, shape, gain):
    W = 3.0 * _near_orthogonal(shape, 0.2)  # the scale is removed by the projection
    ref = _svd_reference(W, gain)
    out = project_orthogonal_(W, gain, method)
    assert out is W
    torch.testing.assert_close(W, ref, rtol=0, atol=1e-9)


def test_bjorck_far_from_orthogonal_still_converges_to_polar():
    W = torch.randn(12, 7, dtype=torch.float64)
    ref = _svd_reference(W, 1.0)
    torch.testing.assert_close(project_orthogonal_(W.clone(), method="bjorck"), ref, rtol=0, atol=1e-9)


def test_low_precision_is_computed_in_float32():
    W = _near_orthogonal((16, 16), 0.1, torch.float32).to(torch.bfloat16)
    ref = _svd_reference(W.float(), 1.0).to(torch.bfloat16)
    project_orthogonal_(W)
    assert W.dtype == torch.bfloat16
    torch.testing.assert_close(W, ref, rtol=0, atol=0)


def test_in_place_on_a_gate_block_view():
    P = torch.randn(12, 4, dtype=torch.float64)
    before = P.clone()
    project_orthogonal_(P[4:8], 2.0)
    block = P[4:8]
    torch.testing.assert_close(block.T @ block, 4 * torch.eye(4, dtype=P.dtype))
    assert torch.equal(P[:4], before[:4]) and torch.equal(P[8:], before[8:])


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((torch.randn(4),), ShapeError, r"^project_orthogonal_: tensor must be a >= 2-d tensor, got shape \(4,\)$"),
        ((torch.randn(3, 3), 1.0, "qr"), ConfigurationError, r"^project_orthogonal_: method must be one of \['bjorck', 'polar'\], got 'qr'$"),
        ((torch.randn(3, 3), -1.0), ConfigurationError, "^project_orthogonal_: gain must be a finite number > 0, got -1.0$"),
    ],
    ids=["vector", "method", "gain"],
)
def test_bad_input(args, error, match):
    with pytest.raises(error, match=match):
        project_orthogonal_(*args)
