"""The one log adapter: histograms, figures, tables and text to whatever loggers the trainer has.

Scalars go through ``pl_module.log`` in the callbacks themselves; this adapter handles the rich
media that Lightning has no common API for. It knows ``WandbLogger`` and ``TensorBoardLogger``
through their public ``experiment`` objects; every other logger gets the summary scalars only,
and figures are also saved as PNG in the run folder so a person can always look at them.
Call these on rank zero only (they are no-ops elsewhere).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

log = logging.getLogger(__name__)


def run_dir(trainer: Trainer) -> str:
    """The folder of this run's own files: the W&B run's ``files`` folder when the first logger
    is a ``WandbLogger`` (its ``save_dir`` is shared by every run), else the trainer's
    ``log_dir`` (versioned for TensorBoard / CSV), else its ``default_root_dir``."""
    if trainer.loggers and isinstance(trainer.loggers[0], WandbLogger):
        return str(trainer.loggers[0].experiment.dir)
    return str(trainer.log_dir or trainer.default_root_dir)


def log_histogram(trainer: Trainer, key: str, values: torch.Tensor, step: int) -> None:
    """Log the 1-d ``values`` as a histogram under ``key`` at ``step`` on every logger that can."""
    if trainer.global_rank != 0:
        return
    flat = values.detach().float().flatten().cpu()
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            histogram = wandb.Histogram(np_histogram=_np_histogram(flat))
            logger.experiment.log({key: histogram, "trainer/global_step": step})
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_histogram(key, flat, global_step=step)


def _np_histogram(flat: torch.Tensor, bins: int = 64) -> tuple:
    """``numpy.histogram`` of the finite values, with the range widened when they are (nearly)
    all equal, as an orthogonal matrix's singular values are (numpy cannot make 64 bins there)."""
    import numpy as np

    values = flat[torch.isfinite(flat)].double().numpy()
    if values.size == 0:
        values = np.zeros(1)
    lo, hi = float(values.min()), float(values.max())
    pad = 1e-3 * max(1.0, abs(lo), abs(hi))
    if hi - lo < pad:
        lo, hi = lo - pad, hi + pad
    return np.histogram(values, bins=bins, range=(lo, hi))


def log_figure(trainer: Trainer, key: str, figure: Any, step: int, close: bool = True) -> str | None:
    """Log a matplotlib ``figure`` under ``key``; also save it as ``<run_dir>/figures/<key>.png``.

    Returns the PNG path (overwritten at each call, so it shows the latest state).
    """
    if trainer.global_rank != 0:
        return None
    import matplotlib.pyplot as plt

    folder = os.path.join(run_dir(trainer), "figures")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, key.replace("/", "_") + ".png")
    figure.savefig(path, dpi=110, bbox_inches="tight")
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            logger.experiment.log({key: wandb.Image(path), "trainer/global_step": step})
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(key, figure, global_step=step, close=False)
    if close:
        plt.close(figure)
    return path


def log_table(
    trainer: Trainer, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Log a table: a W&B table when that logger is present, a Markdown text elsewhere
    (TensorBoard text, and the Python log)."""
    if trainer.global_rank != 0:
        return
    text = markdown_table(columns, rows)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(key=key, columns=list(columns), data=[list(map(_plain, r)) for r in rows])
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_text(key, text, global_step=trainer.global_step)
    log.info("%s\n%s", key, text)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table of ``rows`` under ``columns``."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(_plain(v)) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Size | tuple | list):
        return "x".join(str(v) for v in value)
    if isinstance(value, float):
        return round(value, 6)
    return value
