"""``ortho-lightning experiment GRID.yaml --backend ray [--address auto]``: a grid's cells as Ray
tasks on a local or remote Ray cluster.

Each unfinished cell becomes one task running the local runner's own per-cell function
(:func:`~ortho_lightning.experiments.runner.run_cell`), so the cell ids, the folder layout, the
``DONE`` markers, ``results.csv`` and the report are the local backend's, and a grid started on
one backend can be finished on the other. What differs:

- cells run concurrently, as many as the cluster's resources allow; a cell asks for the grid
  file's ``resources: {cpus: 1, gpus: 0}`` (the defaults), e.g. ``{cpus: 2, gpus: 1}`` for
  training cells on GPU nodes;
- a cell that raises does not stop the grid: its error goes to ``OUT/failures.csv`` (``cell_id``,
  the axes, ``seed``, ``error``) and its traceback to ``OUT/cells/<id>/ERROR``; the cell stays
  unmarked, so the next run (either backend) retries it and only it;
- a worker that dies (killed, out of memory, node lost) is retried by Ray itself
  (``max_retries``), the cell starting again from an empty folder.

Each task takes the cell's lock as the local runner does (``OUT/cells/<id>.lock``), so a Ray run
and local runners may share one folder: a cell held by another runner is left to it.

On a multi-node cluster ``OUT`` must be a folder every node sees at the same path (a shared file
system); each node needs this package, the data (``ORTHO_LIGHTNING_DATA``) and, for recipe
cells, the recipe files at the grid's path. Ray is an optional extra:
``pip install 'ortho-lightning[ray]'``.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ortho_lightning.exceptions import ConfigurationError, DataError
from ortho_lightning.experiments.grid import Cell, Grid
from ortho_lightning.experiments.locks import LOCK_SUFFIX, atomic_write_text, locked
from ortho_lightning.experiments.runner import (
    DONE_MARKER,
    SPEC_NAME,
    TABLE_NAME,
    cell_dir,
    cell_lock,
    collect_table,
    is_done,
    run_cell,
)
from ortho_lightning.experiments.table import ID_COLUMN, SEED_COLUMN, write_table
from ortho_lightning.validation import check_number, fail

INSTALL_HINT = "pip install 'ortho-lightning[ray]'  (or: pip install 'ray>=2.40,<3')"
FAILURES_NAME = "failures.csv"
#: what a task returns when another runner holds the cell's lock (it is left to that runner)
HELD = "held by another runner"
ERROR_NAME = "ERROR"
#: the grid file's ``resources`` keys and the Ray task options they set
RESOURCE_OPTIONS = {"cpus": "num_cpus", "gpus": "num_gpus"}
DEFAULT_RESOURCES = {"cpus": 1, "gpus": 0}


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`ConfigurationError` saying how to install it."""
    try:
        import ray
    except ImportError as err:
        raise ConfigurationError(
            f"--backend ray needs Ray, which is not installed: {INSTALL_HINT}") from err
    return ray


def cell_resources(spec: Mapping[str, Any]) -> dict[str, float]:
    """Ray task options (``num_cpus``, ``num_gpus``) from the grid file's ``resources`` mapping
    (``cpus`` > 0 and ``gpus`` >= 0, fractions allowed; defaults :data:`DEFAULT_RESOURCES`)."""
    given = spec.get("resources") or {}
    if not isinstance(given, Mapping) or any(k not in RESOURCE_OPTIONS for k in given):
        fail("experiment", "resources",
             f"a mapping like {{cpus: 1, gpus: 0}} (keys among {list(RESOURCE_OPTIONS)})", given)
    out = {}
    for key, option in RESOURCE_OPTIONS.items():
        value = given.get(key, DEFAULT_RESOURCES[key])
        if key == "gpus":
            check_number("experiment", "resources.gpus", value, minimum=0)
        else:
            check_number("experiment", f"resources.{key}", value, positive=True)
        out[option] = value
    return out


def run_cell_task(cell: Cell, out_dir: str, spec: dict[str, Any], allow_import: bool,
                  cwd: str) -> str | None:
    """The body of one Ray task: :func:`run_cell` under the cell's lock (as the local runner),
    in the driver's working directory (when this node has it). Returns ``None``, :data:`HELD`
    when another runner holds the cell, or ``"<Error>: <message>"`` after writing the traceback
    to the cell's ``ERROR`` file (the cell stays unmarked)."""
    if os.path.isdir(cwd):
        os.chdir(cwd)
        if cwd not in sys.path:  # the driver's own modules (``module:function`` of its grid)
            sys.path.insert(0, cwd)
    with locked(cell_lock(out_dir, cell)) as mine:
        if not mine:  # another runner is on it: never wipe its folder
            return HELD
        if is_done(out_dir, cell):  # finished since the driver listed it
            return None
        try:
            run_cell(cell, out_dir, spec, allow_import)
        except Exception as err:  # any cell error is recorded, the grid goes on
            folder = cell_dir(out_dir, cell)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / ERROR_NAME).write_text(traceback.format_exc())
            return f"{type(err).__name__}: {err}"
    return None


def run_grid_ray(grid: Grid, out_dir: str | Path, *, address: str | None = None,
                 progress: bool = True, report: bool = True, max_retries: int = 2,
                 echo: Callable[[str], Any] = print) -> tuple[Path, list[dict[str, Any]]]:
    """Run every unfinished cell of ``grid`` as a Ray task, then write the table and the report.

    Connects to the Ray cluster at ``address`` (``"auto"``: the one ``ray start`` runs here;
    ``None``: the running one, else a new local cluster). Returns ``(table path, failures)``,
    each failure a row of ``OUT/failures.csv`` (``cell_id``, axes, ``seed``, ``error``; the file
    is removed when nothing failed). Raises :class:`DataError` when a task finished but its
    ``DONE`` marker is not visible here (``OUT`` not shared with the worker's node).
    """
    ray = import_ray()
    options = cell_resources(grid.spec)
    out_dir = Path(out_dir).resolve()
    todo = [c for c in grid.cells if not is_done(out_dir, c)]
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / SPEC_NAME, yaml.safe_dump(grid.spec, sort_keys=False))
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=progress)
    task = ray.remote(run_cell_task).options(max_retries=max_retries, retry_exceptions=False,
                                             **options)
    pending = {task.remote(c, str(out_dir), grid.spec, grid.allow_import, os.getcwd()): c
               for c in todo}
    from tqdm.auto import tqdm

    failures: list[dict[str, Any]] = []
    with tqdm(total=len(grid.cells), initial=len(grid.cells) - len(todo), desc=grid.name,
              unit="cell", disable=not progress, file=sys.stderr) as bar:
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(ref)
            try:
                error = ray.get(ref)
            except ray.exceptions.RayError as err:  # the worker died more than max_retries times
                error = f"{type(err).__name__}: {err}".splitlines()[0]
            if error == HELD:
                echo(f"cell {cell.id} is held by another runner; its rows join {TABLE_NAME} "
                     "when it finishes")
            elif error is None and not (cell_dir(out_dir, cell) / DONE_MARKER).is_file():
                raise DataError(
                    f"cell {cell.id!r} finished on a Ray worker but {str(cell_dir(out_dir, cell))!r} "
                    "has no DONE marker here: the output folder must be on a file system that "
                    "every Ray node shares (same path)")
            elif error is not None:
                failures.append({ID_COLUMN: cell.id, **cell.axes, SEED_COLUMN: cell.seed,
                                 "error": error})
                echo(f"cell {cell.id} failed: {error}")
            bar.update(1)
    failed = out_dir / FAILURES_NAME
    order = {c.id: i for i, c in enumerate(grid.cells)}
    failures.sort(key=lambda row: order[row[ID_COLUMN]])
    if failures:
        write_table(failed, [ID_COLUMN, *grid.axis_names, SEED_COLUMN, "error"], failures)
    else:
        failed.unlink(missing_ok=True)
    with locked(out_dir / f"{TABLE_NAME}{LOCK_SUFFIX}", blocking=True):
        table = collect_table(grid, out_dir)  # one runner at a time writes table and report
        if report:
            from ortho_lightning.experiments.report import make_report

            make_report(out_dir, allow_import=grid.allow_import)
    return table, failures
