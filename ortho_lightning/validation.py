"""Argument checks and deprecated spellings, in one message format for the whole package.

Every check raises ``"{owner}: {name} must be {expected}, got {value!r}"``, where ``owner`` is
what the user called or configured (``"OrthogonalConstraint"``, ``"fisher_eigenvalues"``,
``"MNISTDataModule"``) and ``name`` is the argument or config key. Errors are the package's
own (``ortho_lightning.exceptions``), so a user's ``except ValueError`` catches them.

Renamed arguments go through :func:`renamed_argument` (a value) or :func:`renamed_kwargs`
(a decorator), which accept the old spelling for one release with a ``DeprecationWarning``
naming the new one (CHANGELOG.md lists them).
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

from ortho_lightning.exceptions import ConfigurationError

F = TypeVar("F", bound=Callable[..., Any])

#: the release in which deprecated spellings stop being accepted
REMOVED_IN = "0.3.0"


def fail(owner: str, name: str, expected: str, value: object,
         error: type[Exception] = ConfigurationError) -> NoReturn:
    """Raise ``error`` with the package's one message format."""
    raise error(f"{owner}: {name} must be {expected}, got {value!r}")


def check_choice(owner: str, name: str, value: object, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices``; else a ConfigurationError listing them."""
    try:
        ok = value in choices
    except TypeError:  # unhashable value against a set/dict of choices
        ok = False
    if not ok:
        fail(owner, name, f"one of {list(choices)}", value)
    return value


def check_int(owner: str, name: str, value: object, minimum: int | None = None,
              optional: bool = False) -> int | None:
    """``value`` if it is an integer (not a bool) >= ``minimum``; ``None`` passes when
    ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (
        minimum is not None and value < minimum
    ):
        expected = "an integer" + (f" >= {minimum}" if minimum is not None else "")
        fail(owner, name, expected + (" or None" if optional else ""), value)
    return int(value)


def check_number(owner: str, name: str, value: object, *, positive: bool = False,
                 minimum: float | None = None, maximum: float | None = None,
                 optional: bool = False) -> float | None:
    """``value`` as a float if it is a finite real number (not a bool) inside the bounds
    (``positive``: > 0; ``minimum``/``maximum``: inclusive); ``None`` passes when ``optional``."""
    if value is None and optional:
        return None
    parts = ["a finite number"]
    if positive:
        parts.append("> 0")
    if minimum is not None:
        parts.append(f">= {minimum}")
    if maximum is not None:
        parts.append(f"<= {maximum}")
    expected = " ".join(parts) + (" or None" if optional else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail(owner, name, expected, value)
    x = float(value)
    if (not math.isfinite(x) or (positive and x <= 0) or (minimum is not None and x < minimum)
            or (maximum is not None and x > maximum)):
        fail(owner, name, expected, value)
    return x


def check_bool(owner: str, name: str, value: object) -> bool:
    """``value`` if it is a bool (not 0/1 or a string)."""
    if not isinstance(value, bool):
        fail(owner, name, "True or False", value)
    return value


def check_callable(owner: str, name: str, value: object, optional: bool = False) -> Any:
    """``value`` if it is callable; ``None`` passes when ``optional``."""
    if value is None and optional:
        return None
    if not callable(value):
        fail(owner, name, "callable" + (" or None" if optional else ""), value)
    return value


_UNSET: Any = object()


def renamed_argument(owner: str, old: str, new: str, old_value: Any = _UNSET,
                     new_value: Any = _UNSET, default: Any = None) -> Any:
    """The value of a renamed argument: ``new_value`` unless the caller used the old spelling.

    Pass the old spelling's value as ``old_value`` (its default must be ``default``, usually
    ``None``). Using it warns (``DeprecationWarning`` naming ``new``); using both is an error.
    """
    if old_value is _UNSET or old_value is default:
        return new_value
    if new_value is not _UNSET and new_value is not default:
        raise ConfigurationError(
            f"{owner}: got both {old!r} and its new name {new!r}; pass only {new!r}"
        )
    warnings.warn(
        f"{owner}: {old!r} is deprecated, use {new!r} (removed in {REMOVED_IN})",
        DeprecationWarning, stacklevel=3,
    )
    return old_value


def renamed_kwargs(**old_to_new: str) -> Callable[[F], F]:
    """Decorator: keyword arguments under an old name reach the function under the new one.

    ``@renamed_kwargs(W="tensor")`` lets ``f(W=x)`` call ``f(tensor=x)`` with a
    ``DeprecationWarning``; passing both is a ConfigurationError naming the function.
    """
    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in old_to_new.items():
                if old in kwargs:
                    if new in kwargs:
                        raise ConfigurationError(
                            f"{fn.__name__}: got both {old!r} and its new name {new!r}; "
                            f"pass only {new!r}"
                        )
                    warnings.warn(
                        f"{fn.__name__}: {old!r} is deprecated, use {new!r} "
                        f"(removed in {REMOVED_IN})",
                        DeprecationWarning, stacklevel=2,
                    )
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)
        return wrapper  # type: ignore[return-value]
    return decorate
