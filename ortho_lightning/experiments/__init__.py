"""Experiment grids: expand a YAML into cells, run them resumably, tabulate and report.

``ortho-lightning experiment recipes/experiments/<name>.yaml`` then ``ortho-lightning report
<folder>``; in Python :func:`load_grid`, :func:`run_grid`, :func:`make_report`.
"""

from ortho_lightning.experiments.grid import Cell, Grid, expand, load_grid
from ortho_lightning.experiments.report import make_report
from ortho_lightning.experiments.runner import run_grid
from ortho_lightning.experiments.table import read_table, write_table

__all__ = ["Cell", "Grid", "expand", "load_grid", "make_report", "read_table", "run_grid",
           "write_table"]
