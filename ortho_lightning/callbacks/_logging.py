"""The one log adapter: a measurement (scalars, histograms, figures), a callback's settings and
tables to whatever loggers the trainer has.

:func:`log_measurement` writes a measurement at one step, as one W&B ``log`` call. It knows
``WandbLogger`` and ``TensorBoardLogger`` through their public ``experiment`` objects; every
other logger gets the scalars only, and figures are also saved as PNG in the run folder so a
person can always look at them. :func:`log_settings` puts a callback's arguments into every
logger's config. Call these on rank zero only (they are no-ops elsewhere). Every logged key is
listed in ``docs/logged_keys.md``.

Who uses what: the spectrum monitors send everything they measure (scalars included) through
:func:`log_measurement`, bypassing ``pl_module.log`` (see
:mod:`ortho_lightning.callbacks._monitor_base` for why). The constraint and the regularizer log
their per-step training scalars (``ortho/penalty``, ``ortho/defect/*``) with ``pl_module.log``
from training-batch hooks, where Lightning allows it on every rank and honours
``log_every_n_steps``; only their settings go through this module.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping, Sequence
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


def log_measurement(
    trainer: Trainer,
    step: int,
    scalars: Mapping[str, float],
    histograms: Mapping[str, torch.Tensor] | None = None,
    figures: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Write one measurement to every logger at ``step``, as one record per logger.

    W&B gets ONE ``log`` call (scalars, ``wandb.Histogram``s, ``wandb.Image``s and
    ``trainer/global_step``, through ``WandbLogger.log_metrics`` as its ``log_image`` does, so
    its ``prefix`` applies), so a measurement is one W&B step however many spectra it has;
    TensorBoard gets the scalars, ``add_histogram`` and ``add_image`` at ``step``; any other
    logger (CSV, ...) its scalars through ``log_metrics``. Each matplotlib figure is saved as
    ``<run_dir>/figures/<key with / as _>.png`` (overwritten, so it shows the latest state;
    one render, at the figure's own layout) and closed; TensorBoard gets that PNG's pixels
    (``add_image``). Rank zero only (a no-op elsewhere).

    Args:
        scalars: ``{key: number}``.
        histograms: ``{key: values}``, any shape (flattened; non-finite values dropped).
        figures: ``{key: matplotlib figure}``.

    Returns:
        ``{figure key: PNG path}``.
    """
    if trainer.global_rank != 0:
        return {}
    histograms, figures = dict(histograms or {}), dict(figures or {})
    flat = {key: values.detach().float().flatten().cpu() for key, values in histograms.items()}
    paths = {key: _save_png(trainer, key, fig) for key, fig in figures.items()}
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            record: dict[str, Any] = dict(scalars)
            record.update({k: wandb.Histogram(np_histogram=_np_histogram(v)) for k, v in flat.items()})
            record.update({k: wandb.Image(path) for k, path in paths.items()})
            logger.log_metrics(record, step=step)  # one experiment.log, with trainer/global_step
            continue
        if scalars:
            logger.log_metrics(dict(scalars), step=step)
        if isinstance(logger, TensorBoardLogger):
            for key, values in flat.items():
                logger.experiment.add_histogram(key, values, global_step=step)
            for key, path in paths.items():  # the saved PNG's pixels: no second render
                logger.experiment.add_image(key, _png_rgb(path), global_step=step, dataformats="HWC")
    if figures:
        import matplotlib.pyplot as plt

        for fig in figures.values():
            plt.close(fig)
    return paths


def _save_png(trainer: Trainer, key: str, figure: Any) -> str:
    folder = os.path.join(run_dir(trainer), "figures")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, key.replace("/", "_") + ".png")
    # as laid out by its maker: bbox_inches="tight" would render it twice (once to measure)
    figure.savefig(path, dpi=110)
    return path


def _png_rgb(path: str) -> Any:
    """The RGB pixels of a PNG as an (H, W, 3) float array in [0, 1]."""
    from matplotlib.image import imread

    return imread(path)[..., :3]


def log_settings(trainer: Trainer, callback: Any) -> dict[str, Any]:
    """Record ``callback``'s settings in every logger's config (``wandb.config``, TensorBoard
    and CSV hyper-parameters) under ``callbacks/<class name>``, so a plain-Trainer run states
    how it was measured or constrained, not only the model's and data's hyper-parameters.

    The settings are the callback's ``__init__`` arguments read back from the attributes of
    the same name, or of the name the callback's ``setting_attributes`` maps the argument to
    (plain values as they are, anything else as its ``repr``); arguments it does not keep are
    left out, and so is a method (a hook that shares an argument's name is not a setting).
    Returns them.
    """
    settings: dict[str, Any] = {}
    selector = getattr(callback, "selector", None)  # the shared module selector keeps these
    renamed = getattr(callback, "setting_attributes", {})
    deprecated = set(getattr(callback, "deprecated_arguments", ()))
    for name in inspect.signature(type(callback).__init__).parameters:
        if name in deprecated:
            continue
        attr = renamed.get(name, name)
        if hasattr(callback, attr) and not inspect.ismethod(getattr(callback, attr)):
            settings[name] = _setting(getattr(callback, attr))
        elif selector is not None and name in _SELECTOR_ARGS:
            settings[name] = _setting(getattr(selector, _SELECTOR_ARGS[name]))
    if trainer.global_rank == 0:
        for logger in trainer.loggers:
            logger.log_hyperparams({f"callbacks/{type(callback).__name__}": settings})
    return settings


#: callback argument -> attribute of its ``ModuleSelector``
_SELECTOR_ARGS = {"targets": "include", "include": "include", "exclude": "exclude", "types": "types"}


def _setting(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple) and all(_setting(v) == v for v in value):
        return list(value)
    if isinstance(value, Mapping):
        return {str(k): _setting(v) for k, v in value.items()}
    return getattr(value, "__name__", None) or repr(value)


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
