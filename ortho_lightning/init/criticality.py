"""Gains for the init functions: a number, or ``"critical"`` for the mean-field critical sigma_w.

The critical point itself (:func:`critical_point`, :class:`CriticalPoint`) is theory and lives
in :mod:`ortho_lightning.theory.criticality`; it is imported here on first use, so importing
:mod:`ortho_lightning.init` loads neither the theory package nor scipy (theory never imports
init, so the two are layered one way: init -> theory).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from ortho_lightning.activations import Activation
from ortho_lightning.exceptions import ConfigurationError

Gain = float | Literal["critical"]

#: names this module re-exports from :mod:`ortho_lightning.theory.criticality` on first access
LAZY = ("CriticalPoint", "critical_point")

def __getattr__(name: str) -> Any:
    """``CriticalPoint`` / ``critical_point`` from theory, imported when first asked for."""
    if name in LAZY:
        from ortho_lightning.theory import criticality

        return getattr(criticality, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve_gain(gain: Gain, activation: str | Activation = "tanh", sigma_b: float = 0.0) -> float:
    """A gain as a float: ``"critical"`` means ``critical_point(activation, sigma_b).sigma_w``.

    Raises:
        ConfigurationError: ``gain`` is neither a finite number nor ``"critical"``.
    """
    if isinstance(gain, str):
        if gain.lower() != "critical":
            raise ConfigurationError(f"gain: expected a number or 'critical', got {gain!r}")
        from ortho_lightning.theory.criticality import critical_point

        return critical_point(activation, sigma_b).sigma_w
    if isinstance(gain, bool) or not isinstance(gain, int | float) or not math.isfinite(gain):
        raise ConfigurationError(f"gain: expected a finite number or 'critical', got {gain!r}")
    return float(gain)
