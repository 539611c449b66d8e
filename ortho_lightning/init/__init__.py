"""Initialisation at the edge of chaos (pure torch; no Lightning).

``orthogonal_``, ``delta_orthogonal_``, ``gaussian_``, ``identity_`` follow ``torch.nn.init``:
in place, return the tensor, accept a ``torch.Generator``, and take ``gain="critical"`` for the
mean-field critical sigma_w of ``critical_point(activation, sigma_b)`` (or of
``critical_point(activation, q_star=...)``). ``initialize`` applies a
scheme to a whole model and returns an :class:`InitReport`.
"""

from ortho_lightning.init.criticality import CriticalPoint, critical_point
from ortho_lightning.init.delta_orthogonal import delta_orthogonal_
from ortho_lightning.init.gaussian import gaussian_, identity_
from ortho_lightning.init.glorot import glorot_normal_, glorot_uniform_
from ortho_lightning.init.initialize import SCHEMES, InitRecord, InitReport, initialize
from ortho_lightning.init.input_matching import preactivation_q
from ortho_lightning.init.orthogonal import orthogonal_

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
