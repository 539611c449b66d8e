"""Grid expansion: one YAML (a base recipe and its axes) -> a list of named cells.

An experiment file looks like::

    name: isometry_depth
    kind: function                      # or "recipe"
    function: ortho_lightning.experiments.studies:isometry_at_init   # kind: function
    # recipe: recipes/mlp_mnist.yaml                                   # kind: recipe
    base: {width: 256}                  # parameters every cell shares
    axes:                               # the product of these lists is the grid
      depth: [4, 16, 64]
      weights: [gaussian, orthogonal]
    seed: [0, 1]                        # an axis of its own, always last
    test: false                         # recipe cells: also run trainer.test after fit
    description: ...                    # shown at the top of the report
    report: {figures: [...]}            # read by ``experiments.report``
    resources: {cpus: 1, gpus: 0}       # per cell, for ``--backend ray`` (``ray_backend``)
    wandb: {project: my-project}        # recipe cells also log to W&B: group = name, job type = arm

An axis may also list *variants*: mappings with a ``name`` and the parameters they set, for arms
that differ in several keys at once (the axis column holds the name)::

    axes:
      arm:
        - {name: penalty, regularizer.init_args.weight: 1.0}
        - {name: none, regularizer: null}

For ``kind: recipe`` the keys of ``base`` and ``axes`` are LightningCLI dotted keys
(``model.init_args.depth``) passed as ``--key=value``; for ``kind: function`` they are keyword
arguments of the function, checked against its signature before anything runs.

A cell's id is readable (``depth4-weights_gaussian-seed0``) and ends with a hash of its full
resolved parameters, so the same YAML always gives the same ids and editing ``base`` gives new
ones (a resumed grid never mixes results of two different configs).
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ortho_lightning.experiments.registry import resolve_function
from ortho_lightning.validation import check_choice, fail

__all__ = ["Cell", "Grid", "cell_id", "check_name", "check_wandb", "expand", "grid_owner", "load_grid",
           "resolve_function"]

#: a name that becomes a file or folder name (experiment, figure): no separators, no leading dot
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=+-]*")

KINDS = ("function", "recipe")
TOP_LEVEL_KEYS = ("name", "description", "kind", "function", "recipe", "base", "axes", "seed",
                  "test", "report", "resources", "wandb")


@dataclass(frozen=True)
class Cell:
    """One run of a grid.

    ``params`` holds the base merged with this cell's axis values (dotted keys for recipes,
    keyword names for functions); ``axes`` only the axis values, in the grid's axis order.
    """

    id: str
    kind: str
    target: str
    params: dict[str, Any]
    axes: dict[str, Any]
    seed: int

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "target": self.target, "params": self.params,
                "axes": self.axes, "seed": self.seed}


@dataclass
class Grid:
    """A parsed experiment file: its spec and its expanded cells (in product order)."""

    name: str
    kind: str
    target: str
    base: dict[str, Any]
    axes: dict[str, list[Any]]
    seeds: list[int]
    cells: list[Cell]
    spec: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None
    #: the functions it names may be any importable callable (see ``registry``), not only
    #: the package's registered experiment functions
    allow_import: bool = False

    @property
    def axis_names(self) -> list[str]:
        return list(self.axes)


def _slug(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_") or "x"


def grid_owner(source: Path | None) -> str:
    """How errors name a grid: ``"experiment <file name>"``, or ``"experiment"`` for a spec built
    in Python."""
    return f"experiment {Path(source).name}" if source is not None else "experiment"


def check_name(owner: str, name: str, value: Any) -> str:
    """``value`` if it is a plain file name (letters, digits, ``_ . = + -``, not starting with a
    dot), so that joining it to an output folder stays inside that folder.

    Raises:
        ConfigurationError: ``"{owner}: {name} must be a plain file name ..."`` for ``../x``,
        absolute paths, separators, empty names.
    """
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value) or ".." in value:
        fail(owner, name, "a plain file name (letters, digits, '_.=+-', no '/' or '..', not "
             "starting with '.')", value)
    return value


def check_wandb(owner: str, value: Any) -> Any:
    """``value`` if it is a grid's ``wandb:`` setting: unset/false, ``true``, or a mapping of
    ``WandbLogger`` arguments."""
    if value and value is not True and not isinstance(value, dict):
        fail(owner, "wandb", "true or a mapping of WandbLogger arguments", value)
    return value


def find_recipe(recipe: str, source: Path | None) -> str:
    """The recipe file a grid names. A relative path is looked up beside the grid file, then in
    each folder above it (so ``recipes/x.yaml`` in ``recipes/experiments/g.yaml`` is the
    checkout's ``recipes/x.yaml``), never against the working directory. Without a grid file
    (a spec built in Python) the path is returned as given."""
    path = Path(recipe)
    if source is None or path.is_absolute():
        return recipe
    folder = Path(source).resolve().parent
    for base in (folder, *folder.parents):
        if (base / path).is_file():
            return str(base / path)
    fail(grid_owner(source), "recipe", f"a recipe file relative to the grid file {str(source)!r} "
         f"(looked in {str(folder)!r} and the folders above it)", recipe)


def cell_id(axes: Mapping[str, Any], seed: int, params: Mapping[str, Any], target: str) -> str:
    """Deterministic, filesystem-safe id: readable axis values plus an 8-hex hash of everything
    that defines the run (target, all parameters, seed)."""
    readable = "-".join(
        f"{key.split('.')[-1]}{'' if isinstance(v, (int, float)) and not isinstance(v, bool) else '_'}{_slug(v)}"
        for key, v in axes.items()
    )
    payload = json.dumps({"target": target, "params": params, "seed": seed}, sort_keys=True,
                         default=str)
    digest = hashlib.sha1(payload.encode()).hexdigest()[:8]
    head = f"{readable}-seed{seed}" if readable else f"seed{seed}"
    return f"{head}-{digest}"


def _check_function_params(owner: str, target: str, keys: list[str], allow_import: bool) -> None:
    fn = resolve_function(target, allow_import, owner=owner)
    sig = inspect.signature(fn)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    accepted = [n for n in sig.parameters if n != "seed"]
    unknown = [k for k in keys if k not in accepted]
    if unknown:
        fail(owner, "parameters", f"among the arguments {accepted} of {target!r} (unknown ones "
             "listed)", unknown)
    if "seed" not in sig.parameters:
        fail(owner, "function", f"a function with a 'seed' keyword argument (its signature is "
             f"{sig})", target)


def _check_distinct(owner: str, axis: str, values: list[Any]) -> None:
    """Refuse an axis whose values read the same once written in the table (``1`` and ``'1'``,
    ``True`` and ``'True'``, a value twice): their cells would be indistinguishable rows."""
    seen: dict[str, Any] = {}
    for value in values:
        text = str(value)
        if text in seen:
            fail(owner, f"axis {axis!r}", "values that read differently in the results table "
                 "(quote all or none; the two shown read the same)", (seen[text], value))
        seen[text] = value


def expand(spec: Mapping[str, Any], source: Path | None = None, *,
           allow_import: bool = False) -> Grid:
    """Check an experiment spec (a parsed YAML mapping) and expand its axes into cells.

    Returns a :class:`Grid` whose ``cells`` are the product of the axes (first axis slowest)
    times the seeds. Raises :class:`ConfigurationError` naming the key on an unknown top-level
    key, an unknown kind, an empty or non-list axis, a key both in ``base`` and ``axes``, or
    (``kind: function``) a function that is not registered (unless ``allow_import``, see
    :mod:`ortho_lightning.experiments.registry`) or a parameter it does not accept.
    """
    owner = grid_owner(source)
    if not isinstance(spec, Mapping):
        fail(owner, "its content", "a mapping of keys (kind, axes, ...)", type(spec))
    unknown = [k for k in spec if k not in TOP_LEVEL_KEYS]
    if unknown:
        fail(owner, "keys", f"among {list(TOP_LEVEL_KEYS)} (unknown ones listed)", unknown)
    kind = check_choice(owner, "kind", spec.get("kind", "function"), KINDS)
    target = spec.get(kind)
    if not target:
        fail(owner, kind, f"set for kind {kind!r}", target)
    name = check_name(owner, "name", spec.get("name") or (source.stem if source else "experiment"))
    report = spec.get("report") or {}
    figures = report.get("figures") if isinstance(report, Mapping) else None
    for fig in figures if isinstance(figures, list) else []:
        if isinstance(fig, Mapping) and "name" in fig:
            check_name(owner, "report figure name", fig["name"])  # drawn into OUT/figures/<name>
    check_wandb(owner, spec.get("wandb"))
    run_target = find_recipe(target, source) if kind == "recipe" else target
    base = dict(spec.get("base") or {})
    axes_spec = spec.get("axes") or {}
    if not isinstance(axes_spec, Mapping):
        fail(owner, "axes", "a mapping of names to lists", axes_spec)
    axes: dict[str, list[Any]] = {}
    for key, values in axes_spec.items():
        if not isinstance(values, list) or not values:
            fail(owner, f"axis {key!r}", "a non-empty list of values", values)
        if key in base:
            fail(owner, f"key {key!r}", "in 'base' or in 'axes', not in both",
                 {"base": base[key], "axes": values})
        if key == "seed":
            fail(owner, "seed", "at the top level of the file, not in 'axes'", values)
        variants = [v for v in values if isinstance(v, Mapping)]
        if variants and (len(variants) != len(values)
                         or not all(isinstance(v.get("name"), str) for v in variants)):
            fail(owner, f"axis {key!r}", "variants that are all mappings with a string 'name' "
                 "(and the parameters they set)", values)
        _check_distinct(owner, key, [v["name"] if isinstance(v, Mapping) else v for v in values])
        axes[key] = list(values)
    seeds = spec.get("seed", [0])
    seeds = [seeds] if isinstance(seeds, int) else seeds
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        fail(owner, "seed", "an int or a non-empty list of ints", seeds)
    if kind == "function":
        keys = [k for k, vs in axes.items() if not isinstance(vs[0], Mapping)]
        keys += [p for vs in axes.values() for v in vs if isinstance(v, Mapping) for p in v if p != "name"]
        _check_function_params(owner, target, list(base) + keys, allow_import)

    cells = []
    for combo in itertools.product(*axes.values()):
        params = dict(base)
        axis_values = {}
        for key, value in zip(axes, combo):
            if isinstance(value, Mapping):
                params.update({k: v for k, v in value.items() if k != "name"})
                axis_values[key] = value["name"]
            else:
                params[key] = value
                axis_values[key] = value
        for seed in seeds:
            # the id hashes the recipe path as written, so it does not depend on the checkout
            cells.append(Cell(cell_id(axis_values, seed, params, target), kind, run_target,
                              dict(params), dict(axis_values), seed))
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):
        fail(owner, "cells", "distinct (a seed listed twice?); repeated ids shown",
             sorted({i for i in ids if ids.count(i) > 1}))
    return Grid(name, kind, run_target, base, axes, list(seeds), cells, dict(spec), source,
                allow_import)


def load_grid(path: str | Path, *, allow_import: bool = False) -> Grid:
    """Read an experiment YAML and expand it (see :func:`expand`)."""
    path = Path(path)
    if not path.is_file():
        fail("experiment", "file", "an existing file", str(path))
    with path.open() as fh:
        spec = yaml.safe_load(fh)
    return expand(spec, source=path, allow_import=allow_import)
