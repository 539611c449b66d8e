"""Which functions a grid or a results folder may name: configs are data, not code.

A grid's ``function:`` and a report's ``function:`` are ``"package.module:function"`` strings
read from YAML files, and a results folder's ``experiment.yaml`` may come from someone else.
Importing and calling whatever such a string names would let a config run any code
(``logging:basicConfig`` with ``filename``/``filemode: w`` truncates a file). So a name is
accepted only when it is

- a public function (no leading ``_``) *defined* in one of the experiment modules: every module
  of the ``ortho_lightning.experiments`` package except the machinery of
  :data:`INFRASTRUCTURE` (so a new ``experiments/<study>.py`` works without registering
  anything, and ``table:write_table`` or a re-exported ``torch`` function does not);
- registered by code with :func:`register_experiment` (a plugin, a test helper);
- registered by an installed package under the entry-point group :data:`ENTRY_POINT_GROUP`
  (``[project.entry-points."ortho_lightning.experiments"] name = "pkg.mod:fn"``);
- or anything importable, only when the caller passes ``allow_import=True`` (the CLI's
  ``--allow-import``), which says "I trust this file to run code".
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from importlib import metadata
from typing import Any, TypeVar

from ortho_lightning.validation import check_callable, fail

PACKAGE = "ortho_lightning.experiments"
#: modules of :data:`PACKAGE` that run grids rather than measure: never callable from a config
INFRASTRUCTURE = frozenset({"cli", "grid", "locks", "ray_backend", "registry", "report", "runner",
                            "sweep", "table"})
#: entry-point group through which installed packages register experiment functions
ENTRY_POINT_GROUP = "ortho_lightning.experiments"

_REGISTERED: dict[str, Callable[..., Any]] = {}
F = TypeVar("F", bound=Callable[..., Any])


def function_name(fn: Callable[..., Any]) -> str:
    """The ``"module:qualname"`` a config uses to name ``fn``."""
    return f"{fn.__module__}:{fn.__qualname__}"


def register_experiment(fn: F) -> F:
    """Allow configs to name ``fn`` as ``"module:qualname"``; returns ``fn`` (a decorator)."""
    check_callable("register_experiment", "fn", fn)
    _REGISTERED[function_name(fn)] = fn
    return fn


def experiment_modules() -> list[str]:
    """The dotted names of the experiment modules (found on disk, not imported)."""
    package = importlib.import_module(PACKAGE)
    return sorted(f"{PACKAGE}.{m.name}" for m in pkgutil.iter_modules(package.__path__)
                  if not m.name.startswith("_") and m.name not in INFRASTRUCTURE)


def _entry_point(target: str) -> Callable[..., Any] | None:
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.value.replace(" ", "") == target:
            return ep.load()
    return None


def _import(target: str, owner: str, name: str) -> Callable[..., Any]:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        fail(owner, name, f"a function of an importable module (importing {module_name!r}: "
             f"{err})", target)
    fn = getattr(module, attr, None)
    if not callable(fn):
        fail(owner, name, f"a callable of {module_name!r} (it has no callable {attr!r})", target)
    return fn


def resolve_function(target: str, allow_import: bool = False, *, owner: str = "experiment",
                     name: str = "function") -> Callable[..., Any]:
    """The function a config names as ``"package.module:function"``, if it is allowed.

    Returns the function when it is registered (see the module docstring) or, with
    ``allow_import=True``, whatever callable the string imports.

    Raises:
        ConfigurationError: ``"{owner}: {name} must be ..."`` (the grid file or report and its
            key) when ``target`` is not a ``module:function`` string, cannot be imported, or is
            not an allowed function (naming the allowed modules and the flag).
    """
    if not isinstance(target, str) or ":" not in target:
        fail(owner, name, "a 'module:function' string", target)
    if target in _REGISTERED:
        return _REGISTERED[target]
    if allow_import:
        return _import(target, owner, name)
    module_name, _, attr = target.partition(":")
    modules = experiment_modules()
    if module_name in modules:
        fn = _import(target, owner, name)
        if (attr.startswith("_") or not inspect.isfunction(fn) or fn.__module__ != module_name):
            fail(owner, name, f"a public function defined in {module_name!r} (a config may not "
                 "call this one)", target)
        return fn
    found = _entry_point(target)
    if found is not None:
        return found
    fail(owner, name, f"a function of the package's experiment modules "
         f"({', '.join(m.rsplit('.', 1)[-1] for m in modules)} in {PACKAGE}), one registered "
         f"with register_experiment or the {ENTRY_POINT_GROUP!r} entry-point group (configs are "
         "data: pass --allow-import / allow_import=True to let this file import and run any "
         "code)", target)
