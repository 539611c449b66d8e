"""Delta-orthogonal init of convolutions (Xiao et al. 2018): every kernel tap is zero except the
spatial centre, which is gain times an orthogonal (out, in) matrix with orthonormal columns. The
convolution then acts as that matrix at each position, so with 'same'-size padding (circular
or zeros) it preserves the norm of every input exactly, times gain."""

from __future__ import annotations

import torch
from torch import Tensor

from ortho_lightning.activations import Activation
from ortho_lightning.exceptions import ShapeError
from ortho_lightning.init.criticality import Gain, resolve_gain
from ortho_lightning.init.orthogonal import haar_orthogonal
from ortho_lightning.validation import renamed_kwargs


@renamed_kwargs(weight="tensor")
def check_conv_weight(tensor: Tensor, owner: str = "check_conv_weight") -> None:
    """Raise :class:`ShapeError` (naming ``owner``) unless ``tensor`` is a conv weight (out, in,
    *kernel), 1-3 spatial dims, all kernel sizes odd (else there is no centre tap)."""
    if tensor.dim() not in (3, 4, 5):
        raise ShapeError(
            f"{owner}: tensor must be a Conv1d/2d/3d weight (out, in, *kernel) with 3-5 dims, "
            f"got shape {tuple(tensor.shape)}"
        )
    kernel = tuple(tensor.shape[2:])
    if any(k % 2 == 0 for k in kernel):
        raise ShapeError(
            f"{owner}: tensor must have odd kernel sizes (to have a centre tap), got kernel {kernel}"
        )


@renamed_kwargs(weight="tensor")
def set_centre_tap_(tensor: Tensor, matrix: Tensor, owner: str = "set_centre_tap_") -> Tensor:
    """Zero the conv weight ``tensor`` (out, in, *kernel) and put ``matrix`` (out, in) at the
    spatial centre, in place (see :func:`check_conv_weight`). Returns ``tensor``."""
    check_conv_weight(tensor, owner)
    kernel = tuple(tensor.shape[2:])
    with torch.no_grad():
        tensor.zero_()
        tensor[(slice(None), slice(None), *(k // 2 for k in kernel))] = matrix.to(tensor.dtype)
    return tensor


@renamed_kwargs(weight="tensor")
def delta_orthogonal_(
    tensor: Tensor,
    gain: Gain = 1.0,
    generator: torch.Generator | None = None,
    *,
    activation: str | Activation = "tanh",
    sigma_b: float = 0.0,
) -> Tensor:
    """Delta-orthogonal init of a conv weight ``tensor`` of shape (out, in, *kernel), in place.

    Args:
        tensor: Conv1d/2d/3d weight with odd kernel sizes and out >= in (``weight=`` is its
            deprecated spelling, accepted until 0.3.0).
        gain: a float or ``"critical"`` (see :func:`orthogonal_`).
        generator: random source.

    Returns:
        ``tensor``; the centre tap C satisfies C^T C = gain^2 I (in x in).

    Raises:
        ShapeError: not a 3-5 dim weight, an even kernel size, or out < in (channels shrink, so
            no (out, in) matrix can have orthonormal columns).
    """
    check_conv_weight(tensor, "delta_orthogonal_")
    if tensor.shape[0] < tensor.shape[1]:
        raise ShapeError(
            f"delta_orthogonal_: tensor must have out_channels >= in_channels (an isometry), got "
            f"out={tensor.shape[0]} < in={tensor.shape[1]} for shape {tuple(tensor.shape)}"
        )
    g = resolve_gain(gain, activation, sigma_b, owner="delta_orthogonal_")
    centre = haar_orthogonal(tensor.shape[0], tensor.shape[1], tensor, generator) * g
    return set_centre_tap_(tensor, centre, "delta_orthogonal_")
