"""State dicts of constrained models: plain weights one way, parametrized state the other.

- :func:`split_state_dict` turns a constrained model's ``state_dict()`` into *plain* weights (a
  bare, unconstrained copy of the model loads them) and the parametrized entries (unconstrained
  tensor and manifold base point), which ``OrthogonalConstraint`` keeps in its own checkpoint
  state so a resume continues exactly.
- :class:`PlainWeightLoader`, the load-state-dict pre-hook :func:`orthogonalize` registers, merges
  the other way: a plain ``weight`` entry loads into a constrained module by projection onto the
  manifold.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ortho_lightning.constraints.parametrization import (
    assign_,
    is_orthogonalized,
    orthogonalized_tensors,
)

__all__ = ["PlainWeightLoader", "split_state_dict"]


def split_state_dict(
    state_dict: dict[str, Tensor], model: nn.Module
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Split a ``model.state_dict()`` into plain weights and parametrized state.

    Returns ``(plain, parametrized)``: ``plain`` is ``state_dict`` with every orthogonalized
    tensor's ``parametrizations.<name>.*`` entries replaced by one ``<name>`` entry holding its
    current value (so a bare, unconstrained copy of the model loads it); ``parametrized`` holds the
    replaced entries (restore them with ``model.load_state_dict(parametrized, strict=False)``).
    """
    plain = dict(state_dict)
    parametrized: dict[str, Tensor] = {}
    for mod_name, module in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        for name in orthogonalized_tensors(module):
            pre = f"{prefix}parametrizations.{name}."
            keys = [k for k in plain if k.startswith(pre)]
            if not keys:
                continue
            for k in keys:
                parametrized[k] = plain.pop(k)
            with torch.no_grad():
                plain[prefix + name] = getattr(module, name).detach().clone()
    return plain, parametrized


class PlainWeightLoader:
    """Load-state-dict pre-hook: a plain ``<prefix><name>`` entry is projected onto the manifold
    and turned into the parametrized entries, so a plain checkpoint loads into a constrained
    module."""

    def __init__(self, tensor_name: str) -> None:
        self.tensor_name = tensor_name

    def __call__(self, module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        plain = prefix + self.tensor_name
        pre = f"{prefix}parametrizations.{self.tensor_name}."
        if plain not in state_dict or any(k.startswith(pre) for k in state_dict):
            return
        if not is_orthogonalized(module, self.tensor_name):
            return
        value = state_dict.pop(plain)
        assign_(module, self.tensor_name, value.to(getattr(module, self.tensor_name)))
        state_dict.update(module.parametrizations[self.tensor_name].state_dict(prefix=pre))
