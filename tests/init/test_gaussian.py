"""gaussian_ (critical-Gaussian baseline) and identity_."""

from __future__ import annotations

import math

import pytest
import torch

from ortho_lightning.exceptions import ConfigurationError, ShapeError
from ortho_lightning.init import critical_point, gaussian_, identity_


@pytest.mark.parametrize(
    "shape,fan_in", [((400, 300), 300), ((64, 16, 3, 3), 144), ((50, 20, 7), 140)], ids=["linear", "conv2d", "conv1d"]
)
@pytest.mark.parametrize("sigma_w", [1.0, 2.5])
def test_entries_are_normal_with_variance_sigma_w_squared_over_fan_in(shape, fan_in, sigma_w):
    w = gaussian_(torch.empty(shape, dtype=torch.float64), sigma_w, generator=torch.Generator().manual_seed(0))
    n = w.numel()
    var = sigma_w**2 / fan_in
    assert abs(w.mean()) < 5 * math.sqrt(var / n)
    assert abs(w.var() / var - 1) < 5 * math.sqrt(2 / n)
    # Gaussian, not uniform: the fourth moment is 3 var^2 (a uniform law gives 1.8 var^2)
    assert abs(w.pow(4).mean() / var**2 - 3) < 0.3


def test_sigma_w_is_a_deprecated_alias_of_gain():
    new = gaussian_(torch.empty(30, 20), gain=1.7, generator=torch.Generator().manual_seed(3))
    with pytest.warns(DeprecationWarning, match=r"gaussian_: 'sigma_w' is deprecated, use 'gain' "
                      r"\(removed in 0\.3\.0\)"):
        old = gaussian_(torch.empty(30, 20), sigma_w=1.7, generator=torch.Generator().manual_seed(3))
    assert torch.equal(old, new)
    # and the gain is really used: 1.7 times the unit-gain draw of the same generator state
    unit = gaussian_(torch.empty(30, 20), gain=1.0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(new, 1.7 * unit)
    with pytest.raises(ConfigurationError, match="gaussian_: got both 'sigma_w' and its new name 'gain'"):
        gaussian_(torch.empty(3, 2), gain=1.0, sigma_w=1.0)
    with pytest.raises(ConfigurationError, match=r"^gaussian_: gain must be a finite number or "
                       r"'critical', got nan$"):
        gaussian_(torch.empty(3, 2), float("nan"))


def test_critical_sigma_w():
    w = gaussian_(torch.empty(500, 400, dtype=torch.float64), "critical", activation="tanh", sigma_b=0.3)
    s = critical_point("tanh", 0.3).sigma_w
    assert abs(w.var() * 400 / s**2 - 1) < 5 * math.sqrt(2 / w.numel())


@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (5, 3)], ids=["square", "wide", "tall"])
def test_identity_matrix(shape):
    w = identity_(torch.empty(shape), 0.9)
    assert torch.equal(w, 0.9 * torch.eye(*shape))


def test_identity_conv_is_the_centre_tap_identity():
    conv = torch.nn.Conv2d(3, 3, 3, padding=1, bias=False)
    identity_(conv.weight)
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(conv(x), x)


def test_bad_shapes():
    with pytest.raises(ShapeError, match=r"gaussian_: tensor must have >= 2 dims, got shape \(3,\)"):
        gaussian_(torch.empty(3))
    with pytest.raises(ShapeError, match="odd kernel sizes"):
        identity_(torch.empty(3, 3, 2, 2))
