"""Gains for the init functions: a number, or ``"critical"`` for the mean-field critical sigma_w.

The critical point itself (:func:`critical_point`, :class:`CriticalPoint`) is theory and lives
in :mod:`ortho_lightning.theory.criticality`; it is imported here on first use, so importing
:mod:`ortho_lightning.init` loads neither the theory package nor scipy (theory never imports
init, so the two are layered one way: init -> theory).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Literal

from ortho_lightning.activations import Activation
from ortho_lightning.validation import fail

Gain = float | Literal["critical"]

#: names this module re-exports from :mod:`ortho_lightning.theory.criticality` on first access
LAZY = ("CriticalPoint", "critical_point")


def __getattr__(name: str) -> Any:
    """``CriticalPoint`` / ``critical_point`` from theory, imported when first asked for."""
    if name in LAZY:
        from ortho_lightning.theory import criticality

        return getattr(criticality, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve_gain(gain: Gain, activation: str | Activation = "tanh", sigma_b: float = 0.0, *,
                 owner: str = "resolve_gain", name: str = "gain") -> float:
    """A gain as a float: ``"critical"`` means ``critical_point(activation, sigma_b).sigma_w``.

    ``owner`` and ``name`` are the function and argument named in the error.

    Raises:
        ConfigurationError: ``gain`` is neither a finite number nor ``"critical"``.
    """
    if isinstance(gain, str) and gain.lower() == "critical":
        from ortho_lightning.theory.criticality import critical_point

        return critical_point(activation, sigma_b).sigma_w
    if isinstance(gain, str | bool) or not isinstance(gain, numbers.Real) or not math.isfinite(gain):
        fail(owner, name, "a finite number or 'critical'", gain)
    return float(gain)
