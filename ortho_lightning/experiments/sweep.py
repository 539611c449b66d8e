"""``ortho-lightning experiment GRID.yaml --emit-sweep [PATH]``: a grid's training cells as a
W&B sweep file, so ``wandb agent`` can run them on as many machines as there are.

The sweep is ``method: grid`` over the same values as the grid, and each agent run is::

    ortho-lightning fit --config <recipe> <default flags> --<base key>=<value> ... \\
        --<axis key>=<value> ... --seed_everything=<seed>

the same flags as the local runner's cell (:func:`~ortho_lightning.experiments.runner.recipe_argv`)
except its CSV logger: agent runs log to the sweep through the recipe's W&B logger.

- ``base`` keys are fixed words of ``command``; each plain axis is a parameter with the axis'
  values; the seeds are the ``seed_everything`` parameter.
- Axes of *variants* (several keys set at once) have no W&B equivalent (a grid sweep is a
  product of independent values), so every combination of variants becomes one value of the
  parameter ``config``: a YAML config string (``{regularizer: null, init: {init_args: {gain:
  1.0}}}``) that LightningCLI layers on the recipe as ``--config=<text>`` after the base flags.
  The file's header lists which value is which variant.
- A value that W&B would not hand back as the same YAML (``None`` -> ``None``) is written as
  its YAML text (``"null"``).

The product of the parameters is exactly the grid's cells (checked when written). A grid's
``test: true`` is not carried over (agent runs only ``fit``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ortho_lightning.experiments.grid import Grid, grid_owner
from ortho_lightning.experiments.runner import default_flags, flag_value
from ortho_lightning.validation import fail

SWEEP_NAME = "sweep.yaml"
#: the parameter that carries the combinations of variant axes (``--config=<yaml text>``)
VARIANTS_PARAMETER = "config"
SEED_PARAMETER = "seed_everything"
#: W&B project when the recipe's logger names none (the CLI's default logger)
DEFAULT_PROJECT = "ortho-lightning"


def _nest(params: Mapping[str, Any], owner: str, where: str) -> dict[str, Any]:
    """Dotted keys -> a nested config mapping (``a.b: 1`` -> ``{a: {b: 1}}``), later keys merged
    into earlier mappings; a key set both to a value and below (``a: 1`` and ``a.b: 2``) is a
    ConfigurationError naming ``owner`` and ``where``."""
    tree: dict[str, Any] = {}
    for key, value in params.items():
        *parents, leaf = key.split(".")
        node = tree
        for i, part in enumerate(parents):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                prefix = ".".join(parents[:i + 1])
                fail(owner, f"the keys of {where}", f"either a key or keys below it, not both "
                     f"({prefix!r} is {child!r})", [prefix, key])
            node = child
        if isinstance(value, Mapping) and isinstance(node.get(leaf), dict):
            node[leaf] = {**node[leaf], **value}
        else:
            node[leaf] = value
    return tree


def _wandb_value(value: Any) -> Any:
    """``value`` as a sweep value: W&B writes ``--key={value}`` with Python's ``str``, so keep it
    when that reads back as the same YAML, else hand over its YAML text."""
    if isinstance(value, str):
        return value
    try:
        same = yaml.safe_load(str(value)) == value
    except yaml.YAMLError:
        same = False
    return value if same else flag_value(value)


def _project(grid: Grid) -> str:
    """The W&B project the recipe's runs log to (its logger's ``project``), so the sweep and its
    runs live in one project."""
    if "trainer.logger.init_args.project" in grid.base:
        return str(grid.base["trainer.logger.init_args.project"])
    try:
        recipe = yaml.safe_load(Path(grid.target).read_text()) or {}
    except OSError:
        return DEFAULT_PROJECT
    logger = (recipe.get("trainer") or {}).get("logger")
    if isinstance(logger, Mapping):
        project = (logger.get("init_args") or {}).get("project")
        if project:
            return str(project)
    return DEFAULT_PROJECT


def sweep_config(grid: Grid) -> tuple[dict[str, Any], list[str]]:
    """The W&B sweep config of a recipe grid, and header comment lines (which ``config`` value
    is which variant).

    Returns ``(config, notes)``; ``config`` has ``name``, ``description``, ``project``,
    ``program``, ``method: grid``, ``parameters`` and ``command``. Raises
    :class:`ConfigurationError` for a function grid (no training cells), a variant that sets a
    key and a key below it, or variants that W&B could not tell apart.
    """
    owner = f"{grid_owner(grid.source)} (--emit-sweep)"
    if grid.kind != "recipe":
        fail(owner, "kind", "'recipe' (a W&B sweep runs training recipes; run function grids "
             "with `ortho-lightning experiment`, --backend ray to spread them over a Ray "
             "cluster)", grid.kind)
    plain = {k: vs for k, vs in grid.axes.items() if not isinstance(vs[0], Mapping)}
    variant_axes = {k: vs for k, vs in grid.axes.items() if isinstance(vs[0], Mapping)}
    parameters: dict[str, Any] = {}
    notes: list[str] = []
    for key, values in grid.axes.items():
        if key in plain:
            parameters[key] = {"values": [_wandb_value(v) for v in values]}
        elif VARIANTS_PARAMETER not in parameters:
            texts, names = [], []
            for combo in itertools.product(*variant_axes.values()):
                merged: dict[str, Any] = {}
                for variant in combo:
                    merged.update({k: v for k, v in variant.items() if k != "name"})
                name = " x ".join(v["name"] for v in combo)
                tree = _nest(merged, owner, f"variant {name!r}")
                texts.append(yaml.safe_dump(tree, default_flow_style=True, width=10**6).strip())
                names.append(name)
            parameters[VARIANTS_PARAMETER] = {"values": texts}
            notes.append(f"'{VARIANTS_PARAMETER}' values, in order ({' x '.join(variant_axes)}):")
            notes += [f"  {i}: {n}" for i, n in enumerate(names)]
    parameters[SEED_PARAMETER] = {"values": list(grid.seeds)}
    fixed = [*default_flags(grid.target, [c.params for c in grid.cells]),
             *(f"--{key}={flag_value(value)}" for key, value in grid.base.items())]
    recipe = Path(grid.target)
    if recipe.is_absolute() and recipe.is_relative_to(Path.cwd()):  # agents start in the checkout
        recipe = recipe.relative_to(Path.cwd())
    config: dict[str, Any] = {
        "name": grid.name,
        "description": " ".join(str(grid.spec.get("description") or grid.name).split()),
        "project": _project(grid),
        "program": "ortho-lightning",
        "method": "grid",
        "parameters": parameters,
        "command": ["${env}", "ortho-lightning", "fit", "--config", str(recipe), *fixed, "${args}"],
    }
    for key, p in parameters.items():  # W&B's grid runs each distinct (YAML) value once
        if len({yaml.safe_dump(v) for v in p["values"]}) != len(p["values"]):
            fail(owner, f"parameter {key!r}", "distinct values (a W&B grid runs a repeated value "
                 "once; variants that set identical parameters?)", p["values"])
    return config, notes


def write_sweep(grid: Grid, path: str | Path) -> Path:
    """Write :func:`sweep_config` as YAML to ``path`` (folders made) with a header saying how to
    start it; returns the path."""
    config, notes = sweep_config(grid)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    source = str(grid.source) if grid.source else grid.name
    header = [
        f"W&B sweep of the training cells of {source} ({len(grid.cells)} runs), written by",
        f"  ortho-lightning experiment {source} --emit-sweep",
        "Start it, then run agents from the repository root on as many machines as you like:",
        f"  wandb sweep {path}",
        f"  wandb agent <entity>/{config['project']}/<sweep id>",
        "Each run is the grid's cell: ortho-lightning fit --config <recipe> <base flags> "
        "--<key>=<value> ...",
        *notes,
    ]
    text = "".join(f"# {line}\n" for line in header)
    text += yaml.safe_dump(config, sort_keys=False, width=10**6)
    path.write_text(text)
    return path
