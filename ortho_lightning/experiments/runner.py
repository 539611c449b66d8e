"""Run a grid's cells one after the other, resumably, and gather their rows into one table.

Output folder layout::

    OUT/experiment.yaml          the spec as run (so ``report OUT`` needs nothing else)
    OUT/cells/<cell id>/cell.json    the cell's resolved parameters and seed
    OUT/cells/<cell id>/rows.csv     its metric rows (one per logged step)
    OUT/cells/<cell id>/DONE         written atomically *after* rows.csv: the cell is finished
    OUT/results.csv              the tidy table over every finished cell (see ``table``)

A cell without ``DONE`` (never started, crashed, interrupted) is wiped and run again; a cell with
it is never rerun. Several runners may share one folder (``experiment`` started twice, on one
machine or on several over a shared file system): each takes a cell's lock
(``OUT/cells/<cell id>.lock``, see :mod:`~ortho_lightning.experiments.locks`) before wiping and
running it and skips the cells others hold, so every cell is computed once and no folder is
wiped under its owner; whoever finishes last writes the full table and report. Spreading a grid over many machines is ``wandb sweep``'s job, not this one's.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from ortho_lightning.exceptions import DataError
from ortho_lightning.experiments.grid import Cell, Grid, check_wandb
from ortho_lightning.experiments.locks import LOCK_SUFFIX, atomic_write_text, lock_owner, locked
from ortho_lightning.experiments.registry import resolve_function
from ortho_lightning.experiments.table import (
    cell_table_rows,
    read_lightning_metrics,
    read_table_loose,
    table_columns,
    write_table,
)

DONE_MARKER = "DONE"
TABLE_NAME = "results.csv"
SPEC_NAME = "experiment.yaml"


def cell_dir(out_dir: str | Path, cell: Cell) -> Path:
    """The folder of one cell's outputs."""
    return Path(out_dir) / "cells" / cell.id


def cell_lock(out_dir: str | Path, cell: Cell) -> Path:
    """The lock file a runner holds while it wipes and runs ``cell`` (beside its folder)."""
    return Path(out_dir) / "cells" / f"{cell.id}{LOCK_SUFFIX}"


def is_done(out_dir: str | Path, cell: Cell) -> bool:
    """Whether the cell finished (its ``DONE`` marker exists)."""
    return (cell_dir(out_dir, cell) / DONE_MARKER).is_file()


def flag_value(value: Any) -> str:
    """A parameter value as the text of a ``--key=value`` flag: strings as they are, anything
    else as one-line-ish flow YAML (``[4, 8]``, ``null``, ``{class_path: ..., init_args: ...}``)."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


#: what a training cell sets before the grid's own keys (which override it): no Lightning
#: default checkpoint per cell (one is ~100 MB for a depth-200 MLP); see :func:`default_flags`
CELL_DEFAULTS = {"trainer.enable_checkpointing": False}


def _names_checkpoint(callbacks: Any) -> bool:
    """Whether a ``trainer.callbacks`` config (one ``class_path`` mapping or a list of them)
    names a checkpoint callback (a class whose name ends in ``Checkpoint``)."""
    entries = callbacks if isinstance(callbacks, list) else [callbacks]
    return any(isinstance(e, Mapping) and str(e.get("class_path", "")).endswith("Checkpoint")
               for e in entries)


def default_flags(recipe: str, params: Iterable[Mapping[str, Any]]) -> list[str]:
    """The :data:`CELL_DEFAULTS` flags of training cells of ``recipe`` whose grid parameters are
    ``params`` (one mapping per cell). They go right after ``--config``, so a grid key
    (``trainer.enable_checkpointing: true`` in ``base``, an axis or a variant) overrides them.

    None when the recipe or a cell configures a checkpoint callback in ``trainer.callbacks``
    (it asked for checkpoints, and Lightning refuses one with ``enable_checkpointing=False``).
    """
    try:
        config = yaml.safe_load(Path(recipe).read_text()) or {}
    except (OSError, yaml.YAMLError):  # the CLI reports an unreadable recipe itself
        config = {}
    trainer = config.get("trainer") if isinstance(config, Mapping) else None
    if isinstance(trainer, Mapping) and _names_checkpoint(trainer.get("callbacks")):
        return []
    for cell_params in params:
        for key, value in cell_params.items():
            if key == "trainer" and isinstance(value, Mapping):
                value = value.get("callbacks")
            elif key.removesuffix("+") != "trainer.callbacks":  # jsonargparse's append form
                continue
            if _names_checkpoint(value):
                return []
    return [f"--{key}={flag_value(value)}" for key, value in CELL_DEFAULTS.items()]


def recipe_argv(cell: Cell, folder: Path, wandb: Any = None, experiment: str = "experiment") -> list[str]:
    """The LightningCLI arguments of a recipe cell: its config, :func:`default_flags` (no
    default checkpoints unless the grid or recipe asks for them), each parameter as
    ``--key=value`` (YAML-encoded), its seed, and a CSVLogger into the cell folder (so a grid
    never needs W&B).

    With the grid's ``wandb:`` set (``true``, or a mapping of ``WandbLogger`` arguments such as
    ``project``), a ``WandbLogger`` is added beside the CSV one: its run is named by the cell id,
    grouped by the experiment's name and typed (``job_type``) by the cell's axis values without
    the seed, so one arm's seeds share a job type and the whole grid is one W&B view. Its files
    go into the cell folder; ``WANDB_MODE`` decides offline or online, as for any CLI run.
    """
    argv = ["fit", "--config", cell.target, *default_flags(cell.target, [cell.params])]
    argv += [f"--{key}={flag_value(value)}" for key, value in cell.params.items()]
    loggers: list[dict[str, Any]] = [
        {"class_path": "lightning.pytorch.loggers.CSVLogger",
         "init_args": {"save_dir": str(folder), "name": "csv", "version": "run"}}
    ]
    # expand() already refused a bad wandb naming the grid file; this covers direct callers
    if check_wandb(f"experiment {experiment}", wandb):
        arm = "-".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in cell.axes.items()) or "all"
        init_args = {"project": f"ortho-lightning-{experiment}", **(wandb if isinstance(wandb, dict) else {}),
                     "save_dir": str(folder), "name": cell.id, "group": experiment,
                     "job_type": arm[:64]}
        loggers.append({"class_path": "lightning.pytorch.loggers.WandbLogger", "init_args": init_args})
    logger = loggers[0] if len(loggers) == 1 else loggers
    argv += [f"--seed_everything={cell.seed}", f"--trainer.logger={json.dumps(logger)}",
             f"--trainer.default_root_dir={folder}"]
    return argv


def run_recipe_cell(cell: Cell, folder: Path, test: bool = False, wandb: Any = None,
                    experiment: str = "experiment") -> list[dict[str, Any]]:
    """Train one recipe cell in-process through the training entry point
    :func:`ortho_lightning.lightning_cli.cli_main` (what ``ortho-lightning fit`` runs) and return the
    rows of its ``metrics.csv`` (merged per step). With ``test=True`` the trained model is also
    evaluated on the test split and the ``test/*`` values land in the last row. ``wandb`` and
    ``experiment``: see :func:`recipe_argv`."""
    # not ortho_lightning.cli, which imports this package; imported here as it loads Lightning
    from ortho_lightning.lightning_cli import cli_main, finish_wandb

    cli = cli_main(recipe_argv(cell, folder, wandb, experiment))
    if test:
        cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
        for logger in cli.trainer.loggers:
            logger.save()
    finish_wandb(cli.trainer)
    found = sorted(folder.rglob("metrics.csv"))
    if not found:
        raise DataError(f"cell {cell.id!r}: the run wrote no metrics.csv under {str(folder)!r}")
    return read_lightning_metrics(found[-1])


def run_function_cell(cell: Cell, allow_import: bool = False) -> list[dict[str, Any]]:
    """Call a measurement function ``fn(**params, seed=seed)`` with torch's global RNG seeded
    too, and return its rows (a dict is one row). The function must be a registered one
    unless ``allow_import`` (see :mod:`ortho_lightning.experiments.registry`)."""
    fn = resolve_function(cell.target, allow_import)
    torch.manual_seed(cell.seed)
    rows = fn(**cell.params, seed=cell.seed)
    if isinstance(rows, dict):
        rows = [rows]
    return list(rows)


def run_cell(cell: Cell, out_dir: str | Path, spec: dict[str, Any] | None = None,
             allow_import: bool = False) -> list[dict[str, Any]]:
    """Run one cell from scratch into its folder and mark it done; returns its table rows.
    The caller holds the cell's lock (:func:`cell_lock`) when other runners may share
    ``out_dir``: this wipes the folder."""
    folder = cell_dir(out_dir, cell)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    atomic_write_text(folder / "cell.json", json.dumps(cell.to_json(), indent=2, default=str))
    start = time.perf_counter()
    if cell.kind == "function":
        rows = run_function_cell(cell, allow_import)
    else:
        spec = spec or {}
        rows = run_recipe_cell(cell, folder, test=bool(spec.get("test", False)),
                               wandb=spec.get("wandb"), experiment=str(spec.get("name") or "experiment"))
    wall = time.perf_counter() - start
    stamped = cell_table_rows(cell.id, cell.axes, cell.seed, rows)
    write_table(folder / "rows.csv", table_columns(list(cell.axes), stamped), stamped)
    atomic_write_text(folder / DONE_MARKER, json.dumps({"rows": len(stamped), "wall_s": wall}))
    return stamped


def collect_table(grid: Grid, out_dir: str | Path) -> Path:
    """Concatenate the rows of every finished cell of the grid into ``OUT/results.csv``."""
    rows: list[dict[str, Any]] = []
    for cell in grid.cells:
        if is_done(out_dir, cell):
            rows += read_table_loose(cell_dir(out_dir, cell) / "rows.csv")[1]
    return write_table(Path(out_dir) / TABLE_NAME, table_columns(grid.axis_names, rows), rows)


def run_grid(grid: Grid, out_dir: str | Path, *, dry_run: bool = False, progress: bool = True,
             report: bool = True, echo: Callable[[str], Any] = print) -> Path | None:
    """Run every unfinished cell of ``grid`` in order, then write the table and the report.

    Returns the table's path, or ``None`` for a dry run (which only lists the cells, marks the
    finished ones, and for recipe cells shows the command line). An exception in a cell
    propagates after leaving that cell unmarked, so the next call reruns only it and the rest.
    """
    out_dir = Path(out_dir)
    todo = [c for c in grid.cells if not is_done(out_dir, c)]
    if dry_run:
        echo(f"experiment {grid.name!r}: {len(grid.cells)} cells, {len(todo)} to run, out {out_dir}")
        for cell in grid.cells:
            state = "done" if cell not in todo else "todo"
            line = f"  [{state}] {cell.id}"
            if cell.kind == "recipe":
                line += "  ortho-lightning " + shlex.join(recipe_argv(cell, cell_dir(out_dir, cell)))
            echo(line)
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / SPEC_NAME, yaml.safe_dump(grid.spec, sort_keys=False))
    from tqdm.auto import tqdm

    bar = tqdm(total=len(grid.cells), initial=len(grid.cells) - len(todo), desc=grid.name,
               unit="cell", disable=not progress, file=sys.stderr, position=0)
    elsewhere = []
    try:
        for cell in todo:
            bar.set_postfix_str(cell.id)
            with locked(cell_lock(out_dir, cell)) as mine:
                if not mine:  # another runner is on it: never wipe its folder
                    elsewhere.append(cell)
                    continue
                if not is_done(out_dir, cell):  # it may have finished since we listed it
                    run_cell(cell, out_dir, grid.spec, grid.allow_import)
            bar.update(1)
    finally:
        bar.close()
    if elsewhere:
        owners = sorted({f"pid {o.get('pid')} on {o.get('host')}" for o in
                         (lock_owner(cell_lock(out_dir, c)) for c in elsewhere) if o})
        echo(f"experiment {grid.name!r}: {len(elsewhere)} cell(s) left to the runner(s) holding "
             f"them ({', '.join(owners) or 'finished since'}); their rows join {TABLE_NAME} when "
             "they finish")
    with locked(Path(out_dir) / f"{TABLE_NAME}{LOCK_SUFFIX}", blocking=True):
        table = collect_table(grid, out_dir)  # one runner at a time writes table and report
        if report:
            from ortho_lightning.experiments.report import make_report

            make_report(out_dir, allow_import=grid.allow_import)
    return table
