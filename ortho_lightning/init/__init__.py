"""Initialisation at the edge of chaos (pure torch; no Lightning).

``orthogonal_``, ``delta_orthogonal_``, ``gaussian_``, ``identity_`` follow ``torch.nn.init``:
in place, return the tensor, accept a ``torch.Generator``, and take ``gain="critical"`` for the
mean-field critical sigma_w of ``critical_point(activation, sigma_b)`` (or of
``critical_point(activation, q_star=...)``). ``initialize`` applies a
scheme to a whole model and returns an :class:`InitReport`.

``critical_point`` and ``CriticalPoint`` are mean-field theory
(:mod:`ortho_lightning.theory.criticality`), re-exported here and imported on first use, so
``import ortho_lightning.init`` loads neither the theory package nor scipy.
"""

from typing import TYPE_CHECKING, Any

from ortho_lightning.init.delta_orthogonal import delta_orthogonal_
from ortho_lightning.init.gaussian import gaussian_, identity_
from ortho_lightning.init.glorot import glorot_normal_, glorot_uniform_
from ortho_lightning.init.initialize import SCHEMES, InitRecord, InitReport, initialize
from ortho_lightning.init.input_matching import preactivation_q
from ortho_lightning.init.orthogonal import orthogonal_

if TYPE_CHECKING:
    from ortho_lightning.theory.criticality import CriticalPoint, critical_point

__all__ = [
    "SCHEMES",
    "CriticalPoint",
    "InitRecord",
    "InitReport",
    "critical_point",
    "delta_orthogonal_",
    "gaussian_",
    "glorot_normal_",
    "glorot_uniform_",
    "identity_",
    "initialize",
    "orthogonal_",
    "preactivation_q",
]


def __getattr__(name: str) -> Any:
    """``CriticalPoint`` / ``critical_point``, imported from theory when first asked for."""
    from ortho_lightning.init import criticality

    if name in criticality.LAZY:
        return getattr(criticality, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
