"""``ConstraintConfig``: the checked options of a hard constraint, built once and shared by
:func:`~ortho_lightning.constraints.orthogonalize` and the ``OrthogonalConstraint`` callback (as
``InitConfig`` is shared by ``initialize`` and ``OrthogonalInit``), so a bad option fails when
the callback is made, with one message."""

from __future__ import annotations

import numbers
from dataclasses import InitVar, dataclass

from ortho_lightning.constraints.parametrization import (
    MANIFOLDS,
    Trivialization,
    default_manifold,
    resolve_triv,
)
from ortho_lightning.validation import check_choice, check_number, fail

__all__ = ["INITS", "ConstraintConfig"]

#: where the constrained point starts: the projection of the current weight, or a Haar sample
INITS: tuple[str, ...] = ("current", "haar")


@dataclass(frozen=True, kw_only=True)
class ConstraintConfig:
    """Options of an orthogonality constraint, keyword-only and checked on construction.

    Args:
        gain: the module sees ``gain * Q``; a finite number > 0.
        triv: a :data:`~ortho_lightning.constraints.TRIVIALIZATIONS` name (``"expm"``,
            ``"cayley"``) or a callable mapping skew matrices to orthogonal ones.
        relax: ``None`` for exact orthogonality, or ``lam`` in (0, 1): singular values of ``Q`` in
            ``[1 - lam, 1 + lam]``.
        manifold: a :data:`~ortho_lightning.constraints.MANIFOLDS` name; ``None`` picks
            ``"stiefel"`` without ``relax`` and ``"almost_orthogonal"`` with it (stored resolved).
        init: ``"current"`` (project the current weight) or ``"haar"`` (geotorch's sample).
        owner: who errors name (``"orthogonalize"``, ``"OrthogonalConstraint"``); not stored.

    Raises:
        ConfigurationError: an option is outside its accepted values, or ``relax`` does not fit
            the manifold.
    """

    gain: float = 1.0
    triv: str | Trivialization = "expm"
    relax: float | None = None
    manifold: str | None = None
    init: str = "current"
    owner: InitVar[str] = "ConstraintConfig"

    def __post_init__(self, owner: str) -> None:
        object.__setattr__(self, "gain", check_number(owner, "gain", self.gain, positive=True))
        resolve_triv(self.triv, owner)
        relax = self.relax
        if relax is not None:
            if isinstance(relax, bool) or not isinstance(relax, numbers.Real) or not 0 < relax < 1:
                fail(owner, "relax", "None or a number in (0, 1)", relax)
            object.__setattr__(self, "relax", float(relax))
        manifold = default_manifold(relax) if self.manifold is None else self.manifold
        check_choice(owner, "manifold", manifold, list(MANIFOLDS))
        if MANIFOLDS[manifold].relaxed and relax is None:
            fail(owner, "relax", f"a number in (0, 1) with manifold={manifold!r}", relax)
        if not MANIFOLDS[manifold].relaxed and relax is not None:
            fail(owner, "relax", f"None with manifold={manifold!r}", relax)
        object.__setattr__(self, "manifold", manifold)
        check_choice(owner, "init", self.init, INITS)
