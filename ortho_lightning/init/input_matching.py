"""Critical on the data: put the first layer's pre-activations at the fixed point q*.

Mean-field criticality (chi_1 = 1 at q*) makes every layer after the first keep the
pre-activation variance at q*, but the first layer sees the data, not q*: MNIST pixels
standardised to unit variance enter at q ~ sigma_w^2, far from a small q* such as 1/64, and the
first layers then spend their depth relaxing towards q* with chi != 1 (Pennington et al. 2017
feed inputs whose first pre-activations already sit at q*). Here the first layer's weights are
rescaled instead, so the data need not change:

    q_1 = E[(w_i . x)^2] + E[b_i^2] = m2 * mean_i ||w_i||^2 + mean_i b_i^2,

for inputs whose second moment E[x x^T] = m2 I is isotropic (m2 = mean of x^2 over a batch's
entries); the rows w_i of the first matrix are scaled by one factor so that q_1 = q*. The same
formula holds for any scheme (an orthogonal (out, in) matrix with gain g has ||w_i||^2 = g^2 when
out <= in and g^2 in / out when out > in; a critical Gaussian one g^2 on average), for a conv
(rows of the flattened (out, in k^d) matrix) and for the input matrix of a recurrent layer (its
first step's pre-activation, h_0 = 0). :func:`preactivation_q` measures every layer's q on a
real batch, so the report shows how close the data comes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ortho_lightning.exceptions import ConfigurationError, ShapeError
from ortho_lightning.matrices import is_recurrent

#: the modules whose output is a pre-activation (what q measures)
PREACTIVATION_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def input_second_moment(inputs: Tensor | float, owner: str = "input_second_moment") -> float:
    """m2 = mean(x^2) over every entry of a batch ``inputs``, or ``inputs`` itself if a number
    (``owner``: the function or callback named in errors).

    Raises:
        ConfigurationError: a number that is not finite and > 0, an empty or non-float batch, or
            a batch whose second moment is 0 or not finite.
    """
    if isinstance(inputs, Tensor):
        if inputs.numel() == 0 or not inputs.is_floating_point():
            raise ConfigurationError(
                f"{owner}: inputs must be a non-empty floating-point batch, got dtype "
                f"{inputs.dtype} and shape {tuple(inputs.shape)}"
            )
        m2 = float(inputs.detach().double().square().mean())
    elif isinstance(inputs, int | float) and not isinstance(inputs, bool):
        m2 = float(inputs)
    else:
        raise ConfigurationError(
            f"{owner}: inputs must be a batch (Tensor) or its second moment mean(x^2) (a "
            f"number), got {type(inputs).__name__}"
        )
    if not m2 > 0 or m2 == float("inf"):
        raise ConfigurationError(
            f"{owner}: the second moment of inputs must be finite and > 0, got {m2!r}"
        )
    return m2


def input_matrices(module: nn.Module) -> list[tuple[str, Tensor]]:
    """``(name, tensor)`` of the matrices that map the data into ``module``'s first
    pre-activation: a Linear's or conv's ``weight``; a recurrent module's first-layer input
    matrix (``weight_ih_l0`` and, if bidirectional, ``weight_ih_l0_reverse``; a cell's
    ``weight_ih``)."""
    if is_recurrent(module):
        names = [n for n, _ in module.named_parameters(recurse=False) if n.startswith("weight_ih")]
        names = [n for n in names if n in ("weight_ih", "weight_ih_l0", "weight_ih_l0_reverse")]
        return [(n, getattr(module, n)) for n in names]
    if isinstance(module, PREACTIVATION_MODULES):
        return [("weight", module.weight)]
    raise ShapeError(
        f"{type(module).__name__} is not a Linear, ConvNd or recurrent module; input_q='match' "
        "rescales the first such module of the model"
    )


def _bias_square(module: nn.Module, weight_name: str) -> float:
    """mean_i b_i^2 of the bias (sum of biases, for a recurrent module) added to the
    pre-activation that ``weight_name`` feeds."""
    if is_recurrent(module):
        suffix = weight_name.removeprefix("weight_ih")
        biases = [getattr(module, f"bias_{k}{suffix}", None) for k in ("ih", "hh")]
    else:
        biases = [getattr(module, "bias", None)]
    biases = [b for b in biases if isinstance(b, Tensor)]
    if not biases:
        return 0.0
    return float(sum(b.detach().double() for b in biases).square().mean())


def match_input_layer_(module: nn.Module, q_star: float, m2: float) -> float:
    """Rescale the input matrices of ``module`` in place so its first pre-activations have
    second moment ``q_star`` for inputs of second moment ``m2`` (see the module docstring).

    Returns:
        The factor the weights were multiplied by.

    Raises:
        ConfigurationError: the biases alone already exceed ``q_star`` or the weights are zero.
    """
    factors = []
    for name, weight in input_matrices(module):
        rows = weight.detach().double().flatten(1)
        row_sq = float(rows.square().sum(1).mean())
        bias_sq = _bias_square(module, name)
        if row_sq == 0 or q_star <= bias_sq:
            raise ConfigurationError(
                f"input_q='match': cannot put {type(module).__name__}.{name} at q*={q_star:.4g}: "
                f"mean squared row norm {row_sq:.4g}, bias second moment {bias_sq:.4g} (the bias "
                "alone must stay below q*)"
            )
        factor = ((q_star - bias_sq) / (m2 * row_sq)) ** 0.5
        with torch.no_grad():
            weight.mul_(factor)
        factors.append(factor)
    return factors[0]


def preactivation_q(model: nn.Module, x: Tensor, names: list[str] | None = None) -> dict[str, float]:
    """The measured q of every Linear / ConvNd module on the batch ``x``: mean over the batch
    and the units (and positions) of its output squared, the pre-activation's second moment.

    Args:
        model: any module; ``model(x)`` runs once in eval mode without gradients.
        x: a batch of inputs.
        names: restrict to these ``named_modules()`` names (default: every Linear / ConvNd).

    Returns:
        ``{module name: q}`` in the order the modules ran.
    """
    from ortho_lightning.spectra._common import measuring  # eval mode, flags restored after

    measured: dict[str, float] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, PREACTIVATION_MODULES) and (names is None or name in names):

            def hook(mod: nn.Module, args: tuple, out: Tensor, name: str = name) -> None:
                measured[name] = float(out.detach().double().square().mean())

            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad(), measuring(model):
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return measured
