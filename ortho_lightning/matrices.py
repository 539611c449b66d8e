"""Which matrix view of a module's weights is meant when we say "orthogonal".

- ``nn.Linear``: the (out, in) weight.
- ``nn.ConvNd``: the flattened (out, in * prod(kernel)) matrix (``weight.flatten(1)``); a grouped
  conv (``groups = g > 1``) is g such matrices, (out/g, in/g * prod(kernel)) each, one per group
  (the layer is block diagonal over groups: it is orthogonal iff every group's block is). The same
  holds for ``nn.ConvTransposeNd``, whose weight (in, out/g, *kernel) is grouped along dim 0 too.
- ``nn.RNN/LSTM/GRU`` and their cells: every ``weight_ih*`` / ``weight_hh*`` tensor, split into
  its stacked gate blocks (LSTM: 4 blocks i, f, g, o; GRU: 3 blocks r, z, n; RNN: 1), each block
  (hidden, in) or (hidden, hidden) on its own.

Shared by ``init``, ``constraints`` and ``spectra`` so all three agree on the view.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ortho_lightning.validation import check_choice

#: which matrices of a recurrent module an operation treats: hidden-to-hidden only, or all
RECURRENT_CHOICES: tuple[str, ...] = ("hh", "all")


def check_recurrent(recurrent: str, owner: str = "check_recurrent") -> str:
    """Return ``recurrent`` if it is one of :data:`RECURRENT_CHOICES`, else raise
    ``ConfigurationError`` (``"{owner}: recurrent must be one of ['hh', 'all'], got 'ih'"``).

    The package's own callers use ``validation.check_choice(owner, "recurrent", recurrent,
    RECURRENT_CHOICES)`` directly; this stays for outside code (issue 18)."""
    return check_choice(owner, "recurrent", recurrent, RECURRENT_CHOICES)

GATES: dict[str, tuple[str, ...]] = {
    "RNN_TANH": ("h",),
    "RNN_RELU": ("h",),
    "LSTM": ("i", "f", "g", "o"),
    "GRU": ("r", "z", "n"),
}


def recurrent_gates(module: nn.Module) -> tuple[str, ...]:
    """Gate names of a recurrent module or cell, in the order PyTorch stacks them."""
    if isinstance(module, nn.RNNBase):
        return GATES[module.mode]
    if isinstance(module, nn.LSTMCell):
        return GATES["LSTM"]
    if isinstance(module, nn.GRUCell):
        return GATES["GRU"]
    if isinstance(module, nn.RNNCell):
        return GATES["RNN_TANH"]
    raise TypeError(f"{type(module).__name__} is not a recurrent module or cell")


def is_recurrent(module: nn.Module) -> bool:
    return isinstance(module, (nn.RNNBase, nn.RNNCellBase))


def recurrent_weight_names(module: nn.Module) -> list[str]:
    """``weight_ih*`` / ``weight_hh*`` names of a recurrent module or cell (parametrized or not),
    layer by layer, input matrix first."""
    if isinstance(module, nn.RNNCellBase):
        return ["weight_ih", "weight_hh"]
    suffixes = ["", "_reverse"] if module.bidirectional else [""]
    return [
        f"weight_{kind}_l{layer}{suffix}"
        for layer in range(module.num_layers)
        for suffix in suffixes
        for kind in ("ih", "hh")
    ]


@dataclass(frozen=True)
class MatrixBlock:
    """One matrix that is made (or measured for being) orthogonal.

    Attributes:
        tensor_name: the parameter's name on the module (``"weight"``, ``"weight_hh_l0"``).
        rows: ``slice`` of the parameter's first dimension the block occupies.
        label: a readable name (``"weight_hh_l0[f]"``).
        recurrent: whether this is a hidden-to-hidden matrix.
    """

    tensor_name: str
    rows: slice
    label: str
    recurrent: bool = False

    def view(self, module: nn.Module) -> Tensor:
        """The block's rows of the module's current tensor, unflattened (e.g. (out/g, in/g, *k)
        for a conv group): a view, so writing into it writes the parameter."""
        return getattr(module, self.tensor_name)[self.rows]

    def matrix(self, module: nn.Module) -> Tensor:
        """The block as a 2-d (rows, cols) view of the module's current tensor."""
        return self.view(module).flatten(1)


def matrix_blocks(module: nn.Module) -> list[MatrixBlock]:
    """The matrix blocks of ``module`` (see module docstring); empty for modules without any."""
    if is_recurrent(module):
        gates = recurrent_gates(module)
        blocks = []
        for name in recurrent_weight_names(module):
            hidden = getattr(module, name).shape[0] // len(gates)
            for k, gate in enumerate(gates):
                label = name if len(gates) == 1 else f"{name}[{gate}]"
                blocks.append(
                    MatrixBlock(
                        name, slice(k * hidden, (k + 1) * hidden), label, name.startswith("weight_hh")
                    )
                )
        return blocks
    weight = getattr(module, "weight", None)
    if not (isinstance(weight, Tensor) and weight.dim() >= 2):
        return []
    groups = conv_groups(module)
    if groups == 1:
        return [MatrixBlock("weight", slice(None), "weight")]
    size = weight.shape[0] // groups
    return [
        MatrixBlock("weight", slice(g * size, (g + 1) * size), f"weight[group {g}]")
        for g in range(groups)
    ]


def conv_groups(module: nn.Module) -> int:
    """``module.groups`` of a (transposed) ConvNd, 1 for every other module."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return int(module.groups)
    return 1


def matrix_views(module: nn.Module) -> list[tuple[str, Tensor]]:
    """``(label, view)`` of every matrix block of ``module`` (:func:`matrix_blocks`), unflattened
    views into its parameters: what an init scheme is applied to, block by block."""
    return [(block.label, block.view(module)) for block in matrix_blocks(module)]
