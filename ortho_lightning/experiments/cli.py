"""``ortho-lightning experiment <yaml> [--out DIR] [--dry-run] [--backend ray [--address A]]
[--emit-sweep [PATH]]`` and ``ortho-lightning report <folder>``: the grid runner (here or on a
Ray cluster), its W&B sweep file and the report from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from ortho_lightning.experiments.grid import load_grid
from ortho_lightning.experiments.report import make_report
from ortho_lightning.experiments.runner import run_grid

DEFAULT_OUT = Path("runs") / "experiments"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ortho-lightning", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("experiment", help="run (or resume) a grid from a YAML file")
    exp.add_argument("config", type=Path, help="recipes/experiments/<name>.yaml")
    exp.add_argument("--out", type=Path, default=None,
                     help=f"output folder (default {DEFAULT_OUT}/<experiment name>)")
    exp.add_argument("--dry-run", action="store_true", help="list the cells and exit")
    exp.add_argument("--no-progress", action="store_true", help="hide the grid progress bar")
    exp.add_argument("--backend", choices=("local", "ray"), default="local",
                     help="local: cells one after another here; ray: each cell a Ray task "
                     "(needs the [ray] extra; the grid's 'resources' per cell)")
    exp.add_argument("--address", default=None,
                     help="--backend ray: the Ray cluster ('auto' = the one `ray start` runs "
                     "here); default: a new local cluster")
    exp.add_argument("--emit-sweep", nargs="?", const=True, default=None, metavar="PATH",
                     help="write the W&B sweep file of the grid's training cells (for `wandb "
                     "agent` on many machines) to PATH (default OUT/sweep.yaml) and exit")
    rep = sub.add_parser("report", help="redraw figures and summary.md from a results folder")
    rep.add_argument("folder", type=Path)
    for p in (exp, rep):
        p.add_argument("--allow-import", action="store_true",
                       help="let the file's 'function' keys import and run any callable, not "
                       "only the package's registered experiment functions (trust the file)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; ``argv`` starts with ``experiment`` or ``report``. Returns 0 on success."""
    args = _parser().parse_args(argv)
    if args.command == "experiment":
        grid = load_grid(args.config, allow_import=args.allow_import)
        out = args.out or DEFAULT_OUT / grid.name
        if args.emit_sweep is not None:
            from ortho_lightning.experiments.sweep import SWEEP_NAME, write_sweep

            path = Path(out) / SWEEP_NAME if args.emit_sweep is True else Path(args.emit_sweep)
            print(f"W&B sweep: {write_sweep(grid, path)}  (start it with: wandb sweep {path})")
            return 0
        if args.backend == "ray" and not args.dry_run:
            from ortho_lightning.experiments.ray_backend import FAILURES_NAME, run_grid_ray

            table, failures = run_grid_ray(grid, out, address=args.address,
                                           progress=not args.no_progress)
            print(f"results table: {table}\nsummary: {Path(out) / 'summary.md'}")
            if failures:
                print(f"{len(failures)} cell(s) failed, see {Path(out) / FAILURES_NAME}; run "
                      "again to retry them")
            return 1 if failures else 0
        table = run_grid(grid, out, dry_run=args.dry_run, progress=not args.no_progress)
        if table is not None:
            print(f"results table: {table}\nsummary: {Path(out) / 'summary.md'}")
    else:
        print(f"summary: {make_report(args.folder, allow_import=args.allow_import)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
