"""Per-gate views of recurrent weights (nn.RNN/LSTM/GRU and their cells).

PyTorch stacks the gates of a layer in one tensor (LSTM: 4H rows i, f, g, o; GRU: 3H rows r, z,
n). Each gate is its own linear map, so each (H, in) input block and each (H, H) recurrent block
is initialised on its own (:func:`ortho_lightning.matrices.matrix_blocks` defines the blocks);
an LSTM's projection ``weight_hr`` (proj_size > 0) is one more block.
"""

from __future__ import annotations

from torch import Tensor, nn

from ortho_lightning.matrices import is_recurrent, matrix_blocks


def gate_blocks(module: nn.Module) -> list[tuple[str, Tensor]]:
    """``(label, view)`` for every gate block of a recurrent ``module``: views into the
    parameters (writing into a view writes the parameter), input matrices before recurrent
    ones, layer by layer; labels like ``"weight_hh_l0[f]"``."""
    if not is_recurrent(module):
        raise TypeError(f"{type(module).__name__} is not a recurrent module or cell")
    blocks = [(b.label, getattr(module, b.tensor_name)[b.rows]) for b in matrix_blocks(module)]
    blocks += [(n, p) for n, p in module.named_parameters(recurse=False) if n.startswith("weight_hr")]
    return blocks
