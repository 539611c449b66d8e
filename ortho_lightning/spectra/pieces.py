"""A weight matrix seen as a Linear map applied at L positions (pixels, time steps): the unit
of the structured Fisher Gram (:mod:`ortho_lightning.spectra.gram`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Piece:
    """One weight matrix (and its bias) as a Linear map at L positions.

    Attributes:
        a: (N, L, I) detached inputs at each position (unfolded patches for convolutions).
        nodes: the graph tensors holding its outputs.
        layout: how the gradients w.r.t. ``nodes`` (each with a leading cotangent dim C)
            become (N, C, L, O): ``"blo"``: one (N, L..., O) node; ``"conv"``: one
            (N, O, *spatial) node; ``"steps"``: L nodes of shape (N, O).
        bias: whether a bias is added at every position.
        names: the ``named_parameters()`` names the piece covers.
    """

    a: Tensor
    nodes: list[Tensor]
    layout: str
    bias: bool
    names: list[str]

    def output_grads(self, grads: list[Tensor | None]) -> Tensor | None:
        """(N, C, L, O) output gradients from the gradients w.r.t. ``nodes``; ``None`` when
        the output does not reach the measured outputs."""
        if all(g is None for g in grads):
            return None
        if self.layout == "steps":
            ref = next(g for g in grads if g is not None)
            filled = [torch.zeros_like(ref) if g is None else g for g in grads]
            return torch.stack(filled, 2).transpose(0, 1)
        g = grads[0]
        c, n = g.shape[0], g.shape[1]
        if self.layout == "conv":
            return g.reshape(c, n, g.shape[2], -1).permute(1, 0, 3, 2)
        return g.reshape(c, n, -1, g.shape[-1]).transpose(0, 1)
