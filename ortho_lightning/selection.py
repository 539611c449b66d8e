"""The one module selector used by ``initialize``, the constraint callbacks and the monitors.

A selection is "modules of these types whose ``named_modules()`` name matches an include
pattern and no exclude pattern". Patterns are shell-style (``fnmatch``): ``"layers.*"``,
``"rnn"``, ``"*.conv2"``. An include pattern that matches no module is an error, so a typo in
a config never silently selects nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from torch import nn

from ortho_lightning.exceptions import SelectionError
from ortho_lightning.validation import fail

#: Module types that carry a weight matrix the package knows how to treat.
DEFAULT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.RNNBase,
    nn.RNNCellBase,
)


def _as_tuple(patterns: str | Sequence[str] | None) -> tuple[str, ...]:
    if patterns is None:
        return ()
    if isinstance(patterns, str):
        return (patterns,)
    return tuple(patterns)


@dataclass(frozen=True)
class ModuleSelector:
    """Which modules of a model an operation applies to.

    Args:
        include: name patterns; empty means every module of a selected type.
        exclude: name patterns removed from the selection.
        types: module classes to consider (default :data:`DEFAULT_TYPES`).
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    types: tuple[type[nn.Module], ...] = DEFAULT_TYPES

    @classmethod
    def build(
        cls,
        include: str | Sequence[str] | None = None,
        exclude: str | Sequence[str] | None = None,
        types: Sequence[type[nn.Module]] | None = None,
        *,
        owner: str = "ModuleSelector",
    ) -> ModuleSelector:
        """Normalise user arguments (a string or a list of patterns) into a selector.

        Raises:
            SelectionError: ``"{owner}: types must be nn.Module subclasses, got 'Linear'"``
                for a ``types`` entry that is not a module class (``owner``: the caller).
        """
        type_tuple = DEFAULT_TYPES if types is None else tuple(types)
        for t in type_tuple:
            if not (isinstance(t, type) and issubclass(t, nn.Module)):
                fail(owner, "types", "nn.Module subclasses", t, SelectionError)
        return cls(_as_tuple(include), _as_tuple(exclude), type_tuple)

    def select(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        """Return ``(name, module)`` pairs, in ``named_modules()`` order.

        Raises:
            SelectionError: an include pattern matched no module of a selected type.
        """
        candidates = [(n, m) for n, m in model.named_modules() if isinstance(m, self.types)]
        if self.include:
            unmatched = [p for p in self.include if not any(fnmatchcase(n, p) for n, _ in candidates)]
            if unmatched:
                names = [n for n, _ in candidates] or ["<none>"]
                raise SelectionError(
                    f"include pattern(s) {unmatched} match no module of types "
                    f"{[t.__name__ for t in self.types]} in {type(model).__name__}; "
                    f"candidate names: {names}"
                )
            candidates = [(n, m) for n, m in candidates if any(fnmatchcase(n, p) for p in self.include)]
        return [(n, m) for n, m in candidates if not any(fnmatchcase(n, p) for p in self.exclude)]


def select_modules(
    model: nn.Module,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    types: Sequence[type[nn.Module]] | None = None,
) -> list[tuple[str, nn.Module]]:
    """Shorthand for ``ModuleSelector.build(include, exclude, types).select(model)``."""
    return ModuleSelector.build(include, exclude, types).select(model)
