"""delta_orthogonal_: centre-tap orthogonal convs preserve the norm of every input."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from ortho_lightning.exceptions import ConfigurationError, ShapeError
from ortho_lightning.init import delta_orthogonal, delta_orthogonal_, initialize

CONVS = {
    "1d": (nn.Conv1d, (2, 3, 17)),
    "2d": (nn.Conv2d, (2, 3, 9, 11)),
    "3d": (nn.Conv3d, (2, 3, 5, 6, 7)),
}


@pytest.mark.parametrize("kind", list(CONVS), ids=list(CONVS))
@pytest.mark.parametrize("channels", [(3, 3), (3, 8)], ids=["square", "growing"])
@pytest.mark.parametrize("gain", [1.0, 1.7])
def test_circular_conv_preserves_every_input_norm(kind, channels, gain):
    cls, x_shape = CONVS[kind]
    conv = cls(*channels, kernel_size=3 if kind == "3d" else 5, padding="same", padding_mode="circular", bias=False)
    conv = conv.double()
    delta_orthogonal_(conv.weight, gain)
    # random inputs, and every one-hot input (a basis of the input space) of a small size
    x = torch.randn(x_shape, dtype=torch.float64)
    basis = torch.eye(x[0].numel(), dtype=torch.float64).reshape(-1, *x_shape[1:])[::7]
    for inputs in (x, basis):
        out = conv(inputs)
        torch.testing.assert_close(
            out.flatten(1).norm(dim=1), gain * inputs.flatten(1).norm(dim=1), rtol=1e-12, atol=0
        )


def test_only_the_centre_tap_is_non_zero_and_it_is_orthogonal():
    w = delta_orthogonal_(torch.empty(6, 4, 3, 5, dtype=torch.float64), 2.0)
    centre = w[:, :, 1, 2]
    torch.testing.assert_close(centre.T @ centre, 4.0 * torch.eye(4, dtype=torch.float64))
    w[:, :, 1, 2] = 0
    assert w.abs().max() == 0


@pytest.mark.parametrize(
    "shape,match",
    [
        ((4, 4, 3, 2), r"odd kernel sizes .* got kernel \(3, 2\)"),
        ((3, 8, 3, 3), "out_channels >= in_channels .* got out=3 < in=8"),
        ((4, 4), r"Conv1d/2d/3d weight .* got shape \(4, 4\)"),
    ],
    ids=["even-kernel", "shrinking", "linear"],
)
def test_bad_shapes_say_why(shape, match):
    with pytest.raises(ShapeError, match=match):
        delta_orthogonal_(torch.empty(shape))


@pytest.mark.parametrize(
    "layer,match",
    [
        (nn.Conv2d(4, 4, 2), r"module 'body.conv' \(Conv2d\): scheme 'delta_orthogonal' .* odd kernel"),
        (nn.Conv2d(8, 4, 3), r"module 'body.conv' \(Conv2d\): .*out=4 < in=8"),
        (nn.Linear(4, 4), r"module 'body.conv' \(Linear\): .*fallback="),
    ],
    ids=["even-kernel", "shrinking", "linear"],
)
def test_initialize_names_the_module_that_cannot_take_the_scheme(layer, match):
    model = nn.Sequential()
    model.add_module("body", nn.Sequential())
    model.body.add_module("conv", layer)
    with pytest.raises(ShapeError, match=match):
        initialize(model, scheme="delta_orthogonal")


def test_fallback_initialises_what_delta_orthogonal_cannot():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 10), nn.Conv1d(8, 4, 3))
    report = initialize(model, scheme="delta_orthogonal", fallback="orthogonal")
    used = {r.name: r.scheme for r in report}
    assert used == {
        "0.weight": "delta_orthogonal",
        "0.bias": "zeros",
        "2.weight": "orthogonal",
        "2.bias": "zeros",
        "3.weight": "orthogonal",
        "3.bias": "zeros",
    }
    w = model[2].weight.double()
    torch.testing.assert_close(w.T @ w, torch.eye(8, dtype=torch.float64), atol=1e-6, rtol=0)


@pytest.mark.parametrize("scheme", ["delta_orthogonal", "orthogonal"])
def test_grouped_conv_is_initialised_group_by_group(scheme):
    conv = nn.Conv2d(8, 12, 3, groups=4, padding=1, padding_mode="circular", bias=False).double()
    report = initialize(conv, scheme, gain=1.5)
    assert [r.name for r in report] == [f"weight[group {g}]" for g in range(4)]
    for g in range(4):  # per group: the (3, 2*9) block has orthonormal rows, or the (3, 2)
        # centre tap orthonormal columns
        w = conv.weight[3 * g : 3 * (g + 1)]
        block = w.flatten(1) if scheme == "orthogonal" else w[:, :, 1, 1].T
        gram = block @ block.T
        torch.testing.assert_close(gram, 2.25 * torch.eye(gram.shape[0], dtype=torch.float64))
    if scheme == "delta_orthogonal":  # the whole grouped conv is then an isometry
        x = torch.randn(3, 8, 5, 5, dtype=torch.float64)
        torch.testing.assert_close(conv(x).flatten(1).norm(dim=1), 1.5 * x.flatten(1).norm(dim=1))


@pytest.mark.parametrize("fn", ["delta_orthogonal_", "set_centre_tap_", "check_conv_weight"])
def test_first_argument_is_tensor_and_weight_is_its_deprecated_spelling(fn):
    func = getattr(delta_orthogonal, fn)
    assert next(iter(inspect.signature(func).parameters)) == "tensor"
    extra = {"matrix": torch.eye(4, 3)} if fn == "set_centre_tap_" else {}
    seeded = {"generator": torch.Generator().manual_seed(3)} if fn == "delta_orthogonal_" else {}
    new, old = torch.zeros(4, 3, 3), torch.zeros(4, 3, 3)
    func(tensor=new, **extra, **seeded)
    if seeded:
        seeded["generator"] = torch.Generator().manual_seed(3)
    with pytest.warns(DeprecationWarning, match=rf"{fn}: 'weight' is deprecated, use 'tensor'"):
        func(weight=old, **extra, **seeded)
    assert torch.equal(new, old)  # same draw, same weights
    with pytest.raises(ConfigurationError, match="got both 'weight' and its new name 'tensor'"):
        func(tensor=new, weight=old, **extra)
