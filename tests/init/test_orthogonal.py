"""orthogonal_: exact orthogonality for every shape, and the Haar distribution."""

from __future__ import annotations

import math

import pytest
import torch

from ortho_lightning.exceptions import ConfigurationError, ShapeError
from ortho_lightning.init import critical_point, orthogonal_

SHAPES = {
    "square": (6, 6),
    "wide": (3, 7),
    "tall": (7, 3),
    "conv1d": (8, 3, 5),
    "conv2d-wide": (4, 16, 3, 3),
    "conv2d-tall": (64, 4, 3, 3),
    "conv3d": (5, 2, 3, 3, 3),
}


def gram(w: torch.Tensor) -> torch.Tensor:
    """W W^T if W has no more rows than columns, else W^T W, of the flattened matrix."""
    m = w.reshape(w.shape[0], -1).double()
    return m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
@pytest.mark.parametrize("gain", [1.0, 0.5, 2.3])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)], ids=["f64", "f32"])
def test_gram_is_gain_squared_identity(shape, gain, dtype, tol):
    w = torch.empty(shape, dtype=dtype)
    out = orthogonal_(w, gain)
    assert out is w and w.dtype == dtype
    g = gram(w)
    torch.testing.assert_close(g, gain**2 * torch.eye(g.shape[0], dtype=torch.float64), atol=tol * gain**2, rtol=0)


def test_critical_gain_uses_the_critical_point():
    w = orthogonal_(torch.empty(5, 5, dtype=torch.float64), "critical", activation="tanh", sigma_b=0.2)
    s = critical_point("tanh", 0.2).sigma_w
    torch.testing.assert_close(gram(w), s**2 * torch.eye(5, dtype=torch.float64))


def _draws(shape, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([orthogonal_(torch.empty(shape, dtype=torch.float64), generator=g) for _ in range(n)])


@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (5, 3)], ids=["square", "wide", "tall"])
def test_entries_have_haar_mean_and_variance(shape):
    n_draws = 800
    draws = _draws(shape, n_draws)
    # for Haar rows (wide) / columns (tall) uniform on the sphere in R^d, d = max(shape):
    # every entry has mean 0 and variance 1/d
    d = max(shape)
    se = math.sqrt(1 / d / n_draws)
    assert draws.mean(0).abs().max() < 5 * se
    var = draws.pow(2).mean(0)
    # Var(W_ij^2) = 3/(d(d+2)) - 1/d^2 for a coordinate of a uniform unit vector
    se_var = math.sqrt((3 / (d * (d + 2)) - 1 / d**2) / n_draws)
    assert (var - 1 / d).abs().max() < 5 * se_var


def test_plain_qr_would_fail_the_mean_test():
    # the reason for the sign correction: LAPACK's QR makes Q[0, 0] = -|a_00| / |a_0| < 0
    q = torch.stack([torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))[0] for _ in range(200)])
    assert (q[:, 0, 0] < 0).all()
    draws = _draws((4, 4), 200)
    assert 0.35 < (draws[:, 0, 0] < 0).double().mean() < 0.65


def test_trace_and_determinant_follow_haar_on_o_n():
    # Diaconis-Shahshahani: for Haar O(n), n >= 2: E[tr Q] = 0, E[(tr Q)^2] = 1, E[(tr Q)^4] = 3
    # (the moments of N(0, 1) up to order n); det = +-1 with probability 1/2 each
    n_draws = 1500
    draws = _draws((6, 6), n_draws, seed=1)
    tr = torch.diagonal(draws, dim1=1, dim2=2).sum(-1)
    assert abs(tr.mean()) < 5 / math.sqrt(n_draws)
    assert abs(tr.pow(2).mean() - 1) < 5 * math.sqrt(2 / n_draws)
    assert abs(tr.pow(4).mean() - 3) < 5 * math.sqrt(96 / n_draws)
    pos = (torch.linalg.det(draws) > 0).double().mean()
    assert abs(pos - 0.5) < 5 * math.sqrt(0.25 / n_draws)


def test_generator_makes_draws_reproducible():
    a = orthogonal_(torch.empty(5, 4), generator=torch.Generator().manual_seed(7))
    b = orthogonal_(torch.empty(5, 4), generator=torch.Generator().manual_seed(7))
    c = orthogonal_(torch.empty(5, 4), generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_works_on_a_parameter_without_grad_tracking():
    p = torch.nn.Parameter(torch.empty(4, 4))
    orthogonal_(p)
    assert p.grad_fn is None and p.requires_grad


@pytest.mark.parametrize(
    "tensor,gain,error,match",
    [
        (torch.empty(5), 1.0, ShapeError, r"orthogonal_: tensor must have >= 2 dims, got shape \(5,\)"),
        (torch.empty(3, 3), "crit", ConfigurationError, "orthogonal_: gain must be a finite number or 'critical', got 'crit'"),
        (torch.empty(3, 3), math.nan, ConfigurationError, "orthogonal_: gain must be a finite number or 'critical', got nan"),
    ],
    ids=["1d", "bad-string", "nan"],
)
def test_bad_inputs(tensor, gain, error, match):
    with pytest.raises(error, match=match):
        orthogonal_(tensor, gain)
