"""Lightning callbacks: thin glue that decides *when* to apply the cores and *where to log*.

Imported lazily (PEP 562) so that ``import ortho_lightning.callbacks`` stays cheap and each
callback module can be used on its own.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "OrthogonalInit": "init",
    "OrthogonalConstraint": "constraint",
    "OrthogonalRegularizer": "regularizer",
    "JacobianSpectrumMonitor": "monitors",
    "FisherSpectrumMonitor": "monitors",
    "WeightSpectrumMonitor": "monitors",
    "NTKSpectrumMonitor": "ntk_monitor",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
