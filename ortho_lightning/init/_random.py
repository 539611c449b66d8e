"""Standard-normal draws for the init schemes: float64, from the caller's generator (on its
device) or the default one of ``like``'s device, returned on ``like``'s device."""

from __future__ import annotations

import torch
from torch import Tensor


def standard_normal(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """A float64 tensor of ``shape`` with i.i.d. N(0, 1) entries on ``like.device``."""
    device = generator.device if generator is not None else like.device
    out = torch.randn(shape, dtype=torch.float64, device=device, generator=generator)
    return out.to(like.device)
