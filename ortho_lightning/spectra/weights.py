"""Singular values of weight matrices, in the matrix view of :mod:`ortho_lightning.matrices`
(Linear weight, ConvNd flattened (out, in * prod(kernel)), recurrent matrices per gate), and
the exact spectrum of a convolution as a linear operator on a given input size with circular
boundary (stride 1), by FFT (Sedghi, Gupta & Long 2019)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ortho_lightning.exceptions import ConfigurationError, ShapeError
from ortho_lightning.matrices import matrix_blocks
from ortho_lightning.spectra._common import linalg_ready, singular_values
from ortho_lightning.validation import check_choice, fail


def conv_operator_singular_values(kernel: Tensor, input_shape: Sequence[int]) -> Tensor:
    """Singular values of the circular convolution with ``kernel`` (out, in, *k) on inputs of
    spatial size ``input_shape`` (len = kernel.dim() - 2, each >= the kernel size).

    The operator is block-diagonalised by the Fourier transform: at each frequency the
    (out x in) matrix sum_taps kernel[..., tap] exp(-2 pi i tap . omega / n). Returns
    prod(input_shape) * min(out, in) values, descending.
    """
    spatial = kernel.dim() - 2
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != spatial:
        raise ShapeError(
            f"conv_input_shape must have {spatial} spatial sizes for a kernel of shape "
            f"{tuple(kernel.shape)}, got {shape}"
        )
    if any(n < k for n, k in zip(shape, kernel.shape[2:])):
        raise ShapeError(
            f"conv_input_shape {shape} is smaller than the kernel {tuple(kernel.shape[2:])}"
        )
    dims = tuple(range(2, 2 + spatial))
    freq = torch.fft.fftn(linalg_ready(kernel.detach()), s=shape, dim=dims)  # (out, in, *shape)
    blocks = freq.permute(*range(2, 2 + spatial), 0, 1).reshape(-1, *kernel.shape[:2])
    return torch.linalg.svdvals(blocks).reshape(-1).sort(descending=True).values


@torch.no_grad()
def weight_spectra(
    module: nn.Module, *, conv_input_shape: Sequence[int] | None = None
) -> dict[str, Tensor]:
    """Singular values (descending) of each matrix block of ``module``, keyed by the block's
    label (``"weight"``, ``"weight[group 0]"`` of a grouped conv, ``"weight_hh_l0[f]"``...). For
    ConvNd with ``conv_input_shape`` each entry is the circular-convolution operator spectrum of
    that (group's) kernel instead of the flattened matrix's. Empty for modules without weight matrices."""
    out = {}
    for block in matrix_blocks(module):
        if conv_input_shape is not None and isinstance(module, nn.modules.conv._ConvNd):
            out[block.label] = conv_operator_singular_values(block.view(module), conv_input_shape)
        else:
            out[block.label] = singular_values(block.matrix(module).detach())
    return out


def weight_singular_values(
    weight_or_module: Tensor | nn.Module,
    *,
    block: str | None = None,
    conv_input_shape: Sequence[int] | None = None,
) -> Tensor:
    """Singular values (descending, 1-d) of one weight matrix.

    Args:
        weight_or_module: a tensor (2-d: itself; >2-d: a conv kernel, flattened to
            (out, rest)) or a module (Linear, ConvNd, RNN/LSTM/GRU or cell, geotorch
            parametrized or not: the current, constrained weight).
        block: for modules with several blocks (recurrent: one per weight and gate), the
            block label, e.g. ``"weight_hh_l0[f]"``; see :func:`weight_spectra` for all.
        conv_input_shape: spatial input size: return the circular-convolution operator
            spectrum (kernels / ConvNd only).
    """
    if isinstance(weight_or_module, Tensor):
        w = weight_or_module.detach()
        if w.dim() < 2:
            raise ShapeError(f"weight must have >= 2 dims, got shape {tuple(w.shape)}")
        if conv_input_shape is not None:
            if w.dim() < 3:
                raise ShapeError(
                    f"conv_input_shape needs a conv kernel (out, in, *k), got shape {tuple(w.shape)}"
                )
            return conv_operator_singular_values(w, conv_input_shape)
        return singular_values(w.flatten(1))
    if not isinstance(weight_or_module, nn.Module):
        fail("weight_singular_values", "weight_or_module", "a Tensor or an nn.Module",
             type(weight_or_module))
    if conv_input_shape is not None and not isinstance(weight_or_module, nn.modules.conv._ConvNd):
        raise ConfigurationError(
            f"conv_input_shape applies to ConvNd modules, got {type(weight_or_module).__name__}"
        )
    spectra = weight_spectra(weight_or_module, conv_input_shape=conv_input_shape)
    if not spectra:
        raise ShapeError(f"{type(weight_or_module).__name__} has no weight matrix")
    if block is None:
        if len(spectra) > 1:
            raise ConfigurationError(
                f"{type(weight_or_module).__name__} has {len(spectra)} matrix blocks "
                f"{list(spectra)}; pass block= one of them or use weight_spectra()"
            )
        return next(iter(spectra.values()))
    if block not in spectra:
        check_choice("weight_singular_values", "block", block, list(spectra))
    return spectra[block]
