import geotorch
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ortho_lightning.exceptions import ConfigurationError, ShapeError
from ortho_lightning.spectra import weight_singular_values, weight_spectra


def _circular_conv_matrix(kernel: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Dense matrix of x -> circular cross-correlation with kernel, stride 1, built column by
    column from basis inputs."""
    out_c, in_c, *k = kernel.shape
    n = in_c * int(torch.tensor(size).prod())
    basis = torch.eye(n).reshape(n, in_c, *size)
    pad = []
    for kk in reversed(k):
        pad += [0, kk - 1]
    conv = {1: F.conv1d, 2: F.conv2d}[len(size)]
    y = conv(F.pad(basis, pad, mode="circular"), kernel)
    return y.reshape(n, -1).T


@pytest.mark.parametrize(
    "shape,size",
    [((3, 2, 3, 3), (5, 6)), ((2, 4, 2, 3), (4, 4)), ((3, 3, 3), (7,)), ((4, 2, 1, 1), (3, 3))],
    ids=["conv2d-3x3", "conv2d-wide-in", "conv1d", "conv2d-1x1"],
)
def test_fft_spectrum_equals_dense_circular_convolution(shape, size):
    torch.manual_seed(0)
    kernel = torch.randn(shape)
    ref = torch.linalg.svdvals(_circular_conv_matrix(kernel, size))
    got = weight_singular_values(kernel, conv_input_shape=size)
    torch.testing.assert_close(got, ref[: got.numel()])
    assert got.numel() == int(torch.tensor(size).prod()) * min(shape[:2])


def test_delta_orthogonal_kernel_is_an_orthogonal_operator():
    # orthogonal centre tap, zero elsewhere: every frequency block is that orthogonal matrix
    q, _ = torch.linalg.qr(torch.randn(4, 4))
    kernel = torch.zeros(4, 4, 3, 3)
    kernel[:, :, 1, 1] = q
    sv = weight_singular_values(kernel, conv_input_shape=(5, 5))
    torch.testing.assert_close(sv, torch.ones(100))


@pytest.mark.parametrize(
    "module",
    [nn.Linear(5, 3), nn.Conv2d(2, 3, 3), nn.Conv1d(3, 4, 2)],
    ids=["linear", "conv2d", "conv1d"],
)
def test_module_matrix_view(module):
    got = weight_singular_values(module)
    torch.testing.assert_close(got, torch.linalg.svdvals(module.weight.detach().flatten(1)))
    assert weight_spectra(module).keys() == {"weight"}


@pytest.mark.parametrize("cell,gates", [("RNN", ""), ("LSTM", "ifgo"), ("GRU", "rzn")])
def test_recurrent_blocks_per_gate(cell, gates):
    module = getattr(nn, cell)(3, 5, num_layers=2)
    spectra = weight_spectra(module)
    expected = {}
    for name in ("weight_ih_l0", "weight_hh_l0", "weight_ih_l1", "weight_hh_l1"):
        w = getattr(module, name).detach()
        for k, gate in enumerate(gates or [None]):
            label = name if gate is None else f"{name}[{gate}]"
            expected[label] = torch.linalg.svdvals(w[5 * k : 5 * (k + 1)])
    assert spectra.keys() == expected.keys()
    for label, values in expected.items():
        torch.testing.assert_close(spectra[label], values)


def test_lstm_forget_gate_block():
    module = nn.LSTM(3, 5)
    got = weight_singular_values(module, block="weight_hh_l0[f]")
    torch.testing.assert_close(got, torch.linalg.svdvals(module.weight_hh_l0.detach()[5:10]))


def test_geotorch_module_reports_the_constrained_weight():
    layer = nn.Linear(4, 4)
    geotorch.orthogonal(layer, "weight")
    torch.testing.assert_close(weight_singular_values(layer), torch.ones(4))


ERRORS = [
    (lambda: weight_singular_values(torch.ones(3)), ShapeError, ">= 2 dims"),
    (
        lambda: weight_singular_values(torch.ones(3, 3), conv_input_shape=(4,)),
        ShapeError,
        "needs a conv kernel",
    ),
    (
        lambda: weight_singular_values(torch.ones(2, 2, 3, 3), conv_input_shape=(4,)),
        ShapeError,
        "must have 2 spatial sizes",
    ),
    (
        lambda: weight_singular_values(torch.ones(2, 2, 3, 3), conv_input_shape=(2, 5)),
        ShapeError,
        "smaller than the kernel",
    ),
    (
        lambda: weight_singular_values(nn.Linear(2, 2), conv_input_shape=(4,)),
        ConfigurationError,
        "applies to ConvNd",
    ),
    (lambda: weight_singular_values(nn.LSTM(2, 2)), ConfigurationError, "pass block= one of"),
    (
        lambda: weight_singular_values(nn.GRU(2, 2), block="weight_hh_l0[f]"),
        ConfigurationError,
        "block must be one of",
    ),
    (lambda: weight_singular_values(nn.Tanh()), ShapeError, "has no weight matrix"),
    (lambda: weight_singular_values("W"), ConfigurationError,
     "^weight_singular_values: weight_or_module must be a Tensor or an nn.Module, got <class 'str'>$"),
]


@pytest.mark.parametrize("call,error,match", ERRORS, ids=[e[2] for e in ERRORS])
def test_bad_input_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
