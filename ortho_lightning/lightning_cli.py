"""The training entry point: LightningCLI over the recipe models, data modules and callbacks.

:func:`cli_main` is what ``ortho-lightning fit|validate|test|predict`` runs (through
:mod:`ortho_lightning.cli`, the command's dispatcher) and what the grid runner
(:mod:`ortho_lightning.experiments.runner`) calls for each training cell, so it imports
nothing from either.

What this adds to a plain LightningCLI:

- **Named callback slots** ``init``, ``constraint``, ``regularizer``, ``jacobian_monitor``,
  ``fisher_monitor``, ``weight_monitor``, ``ntk_monitor``: each an optional callback (a ``class_path`` +
  ``init_args`` block at the top level of a config), appended to ``trainer.callbacks``. A slot
  can be addressed from the command line, a grid or a ``wandb sweep``
  (``--regularizer.init_args.weight=0.5``), which a position in a list cannot.
- ``data.num_classes`` and ``data.input_shape`` are linked into the model's arguments, so a
  recipe states them once, in the data module.
- **W&B offline by default**: ``WANDB_MODE`` defaults to ``offline`` (set ``WANDB_MODE=online``
  or ``--trainer.logger.offline=false`` with it to sync; ``--trainer.logger`` switches to
  TensorBoard or CSV), except in a ``wandb agent`` run (``WANDB_SWEEP_ID`` set), which logs
  to its sweep. The full resolved config goes into ``wandb.config`` and, as
  ``lightning_config.yaml``, into the run folder (the W&B run's ``files`` folder, or the versioned log
  folder of the other loggers), so two runs never collide. The run is named and tagged from
  the resolved config (:func:`describe_run`) unless the config names it.
- Batch counts: ``--trainer.limit_val_batches=1`` is one batch (:class:`CLITrainer`).
- A ``--ckpt_path`` file that is truncated or corrupt (checked against the zip's CRCs before
  anything loads it) is a :class:`~ortho_lightning.exceptions.DataError` naming the file
  (:func:`check_checkpoint`).
"""

from __future__ import annotations

import os
import zipfile
from argparse import RawDescriptionHelpFormatter
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import DefaultHelpFormatter
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from ortho_lightning.callbacks._logging import run_dir
from ortho_lightning.exceptions import DataError
from ortho_lightning.models.base import ClassificationModule
from ortho_lightning.validation import fail

#: top-level config keys that each hold one optional callback, in the order they are added
CALLBACK_SLOTS: tuple[str, ...] = (
    "init",
    "constraint",
    "regularizer",
    "jacobian_monitor",
    "fisher_monitor",
    "weight_monitor",
    "ntk_monitor",
)
#: our callback for each slot (any Callback may go in any slot; these are what the slots are for)
SLOT_CALLBACKS: dict[str, str] = {
    "init": "OrthogonalInit",
    "constraint": "OrthogonalConstraint",
    "regularizer": "OrthogonalRegularizer",
    "jacobian_monitor": "JacobianSpectrumMonitor",
    "fisher_monitor": "FisherSpectrumMonitor",
    "weight_monitor": "WeightSpectrumMonitor",
    "ntk_monitor": "NTKSpectrumMonitor",
}

#: ``ortho-lightning --help`` text: the experiment commands beside LightningCLI's subcommands
DESCRIPTION = """\
ortho-lightning: LightningCLI over the recipe models, data modules and callbacks.

  ortho-lightning {fit,validate,test,predict} --config recipes/<recipe>.yaml [--key=value ...]
  ortho-lightning experiment recipes/experiments/<grid>.yaml   run a grid (resumable)
  ortho-lightning report runs/experiments/<grid>               tables and figures of a grid

A configuration error prints one line, `error: ...`, and exits with status 2; --debug (or
ORTHO_LIGHTNING_DEBUG=1) shows its traceback.

Callback slots (--<slot>=<class name>, --<slot>.<arg>=value, --<slot>.help <class name>):
""" + "\n".join(f"  --{slot:<18}{name}" for slot, name in SLOT_CALLBACKS.items())

#: name of the resolved config in the run folder (W&B keeps its own ``config.yaml`` there)
CONFIG_FILENAME = "lightning_config.yaml"

DEFAULT_LOGGER = {
    "class_path": "lightning.pytorch.loggers.WandbLogger",
    "init_args": {"project": "ortho-lightning", "save_dir": "runs"},
}


#: type of the Trainer's batch-count arguments, int tried first (see :class:`CLITrainer`)
BatchLimit = int | float | None


class HelpFormatter(RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help (types, defaults, known subclasses) with :data:`DESCRIPTION`'s lines
    kept as written."""


class CLITrainer(Trainer):
    """The ``Trainer`` the CLI builds: Lightning's own, with its ``limit_*_batches`` and
    ``val_check_interval`` arguments declared ``int | float | None`` (int first).

    Lightning annotates them ``Optional[Union[int, float]]``, which ``typing`` may hand back as
    ``Union[float, int, None]`` (unions compare equal whatever their order and are cached), and
    the parser then reads ``limit_val_batches: 1`` as the fraction 1.0 (every batch) instead of
    one batch. Everything else is passed through unchanged.
    """

    def __init__(
        self,
        *,
        limit_train_batches: BatchLimit = None,
        limit_val_batches: BatchLimit = None,
        limit_test_batches: BatchLimit = None,
        limit_predict_batches: BatchLimit = None,
        val_check_interval: BatchLimit = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            limit_train_batches=limit_train_batches,
            limit_val_batches=limit_val_batches,
            limit_test_batches=limit_test_batches,
            limit_predict_batches=limit_predict_batches,
            val_check_interval=val_check_interval,
            **kwargs,
        )


class RunConfigCallback(SaveConfigCallback):
    """Saves the resolved config as :data:`CONFIG_FILENAME` in :func:`~ortho_lightning.callbacks._logging.run_dir` and puts it into
    ``wandb.config`` (on rank zero)."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        text = self.parser.dump(self.config, skip_none=False)
        folder = Path(run_dir(trainer))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / self.config_filename).write_text(text)
        config = yaml.safe_load(text)
        name, tags = describe_run(config)
        loggers = (config.get("trainer") or {}).get("logger")
        # one logger or a list of them (e.g. W&B and CSV side by side)
        entries = loggers if isinstance(loggers, list) else [loggers]
        named = any(isinstance(e, dict) and (e.get("init_args") or {}).get("name") for e in entries)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                run = logger.experiment
                run.config.update(config, allow_val_change=True)
                if not named:  # a name given in the config or a flag wins
                    run.name = name
                run.tags = tuple(dict.fromkeys([*(run.tags or ()), *tags]))


#: per config section, the arguments that tell runs apart and how a run name writes a number
#: (``"d{}"``: depth 20 -> ``d20``) or a True flag (``"permuted"``); text values appear as they are
NAME_ARGS: dict[str, dict[str, str]] = {
    "model": {"cell": "{}", "kind": "{}", "depth": "d{}", "width": "w{}", "hidden_size": "h{}",
              "channels": "c{}", "activation": "{}", "nonlinearity": "{}"},
    "data": {"mode": "{}", "permute": "permuted"},
    "init": {"scheme": "{}", "gain": "g{}"},
    "constraint": {"triv": "{}"},
    "regularizer": {"kind": "{}", "weight": "w{}", "gain": "g{}"},
}


def describe_run(config: dict[str, Any]) -> tuple[str, list[str]]:
    """A W&B run name and tags from a resolved CLI config (the dict of ``lightning_config.yaml``).

    The name joins with ``-`` the model and data classes (without ``Classifier`` /
    ``DataModule``, lower case) and the ``constraint`` / ``regularizer`` slot names, each
    followed by its :data:`NAME_ARGS` values (repeats within a section dropped), and the init's
    scheme and gain: ``mlp-d20-w256-tanh-mnist-orthogonal-critical``. The tags are the class
    names of the model, the data and every slot's callback, and ``<section>.<arg>=<value>`` for
    the same arguments. So a run changed on the command line or by a sweep is named for what it
    ran.
    """
    parts: list[str] = []
    tags: list[str] = []
    for section in ("model", "data", *CALLBACK_SLOTS):
        block = config.get(section)
        if not isinstance(block, dict) or not block.get("class_path"):
            continue
        cls = str(block["class_path"]).rsplit(".", 1)[-1]
        tags.append(cls)
        words = [cls.removesuffix("Classifier").removesuffix("DataModule").lower()]
        if section not in ("model", "data"):  # the init says its scheme; monitors nothing
            words = [section] if section in ("constraint", "regularizer") else []
        args = block.get("init_args") or {}
        for key, form in NAME_ARGS.get(section, {}).items():
            value = args.get(key)
            if value is None or value is False:
                continue
            if value is True:
                word = form
            elif isinstance(value, int | float):
                word = form.format(value)
            else:
                word = str(value)
            if word not in words:
                words.append(word)
            tags.append(f"{section}.{key}={value}")
        parts += words
    return "-".join(parts), tags


def check_checkpoint(ckpt_path: Any, owner: str = "check_checkpoint") -> None:
    """Check that a local ``ckpt_path`` file is a whole torch checkpoint (a zip whose every
    member matches its CRC) before Lightning loads it: ``torch.load`` loads a bit-flipped one
    without complaint and fails on a truncated one with a message that names no file.
    Lightning's special values (``last``, ``best``, ...) and URLs pass through.

    Raises:
        DataError: ``"{owner}: --ckpt_path must be ..., got '<file>'"`` when the file is missing,
            truncated, corrupt or not a checkpoint (the CLI's owner is its subcommand).
    """
    if not isinstance(ckpt_path, str | os.PathLike) or "://" in str(ckpt_path) or str(
            ckpt_path) in ("last", "best", "hpc", "registry"):
        return
    path = Path(ckpt_path)
    if not path.is_file():
        fail(owner, "--ckpt_path", "an existing checkpoint file", str(path), DataError)
    problem = None
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        if bad is not None:
            problem = f"member {bad!r} fails its CRC check (corrupt)"
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        problem = f"not a readable checkpoint: truncated or not a torch.save file ({err})"
    if problem:
        fail(owner, "--ckpt_path", f"a whole torch checkpoint ({problem})", str(path), DataError)


class OrthoLightningCLI(LightningCLI):
    """LightningCLI with the callback slots and data -> model links described in the module
    docstring."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        import ortho_lightning.callbacks as ours

        for name in SLOT_CALLBACKS.values():  # imported, so the parser knows them by short name
            getattr(ours, name)
        for slot in CALLBACK_SLOTS:
            parser.add_argument(
                f"--{slot}",
                type=Callback | None,
                default=None,
                help=f"optional callback in the {slot!r} slot (class_path + init_args), usually "
                f"{SLOT_CALLBACKS[slot]} (ortho_lightning.callbacks: {', '.join(SLOT_CALLBACKS.values())})",
            )
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.input_shape", "model.init_args.input_shape", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse as LightningCLI does, then check the subcommand's ``ckpt_path``
        (:func:`check_checkpoint`) before anything loads it (LightningCLI reads its
        hyper-parameters right after parsing)."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand:
            check_checkpoint(self.config[subcommand].get("ckpt_path"), f"ortho-lightning {subcommand}")

    def slot_callbacks(self) -> list[Callback]:
        """The callbacks instantiated in the named slots (empty slots skipped)."""
        config = self.config_init
        if self.subcommand is not None:
            config = config[self.subcommand]
        return [config[slot] for slot in CALLBACK_SLOTS if config.get(slot) is not None]

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        callbacks = config["trainer"].get("callbacks") or []
        if not isinstance(callbacks, list):
            callbacks = [callbacks]
        kwargs["callbacks"] = [*callbacks, *self.slot_callbacks()]
        return super().instantiate_trainer(**kwargs)


def cli_main(
    args: list[str] | dict[str, Any] | None = None, run: bool = True
) -> OrthoLightningCLI:
    """Build (and with ``run=True`` run) the CLI in-process.

    Args:
        args: command-line arguments as a list (``["fit", "--config", "recipes/x.yaml"]``; the
            subcommand only when ``run=True``) or a config dict; ``None`` reads ``sys.argv``.
        run: run the subcommand (``fit``/``validate``/``test``/``predict``), then finish the
            W&B runs it opened (so the next call starts a new one); ``False`` only parses and
            instantiates, leaving ``cli.model``, ``cli.datamodule``, ``cli.trainer`` (and the
            W&B run, if any, to :func:`finish_wandb`).

    Returns:
        The CLI object (``.model``, ``.datamodule``, ``.trainer``, ``.config``).
    """
    if "WANDB_SWEEP_ID" not in os.environ:  # a `wandb agent` run logs where its sweep lives
        os.environ.setdefault("WANDB_MODE", "offline")
    cli = OrthoLightningCLI(
        model_class=ClassificationModule,
        subclass_mode_model=True,
        datamodule_class=LightningDataModule,
        subclass_mode_data=True,
        trainer_class=CLITrainer,
        save_config_callback=RunConfigCallback,
        save_config_kwargs={"save_to_log_dir": False, "config_filename": CONFIG_FILENAME},
        trainer_defaults={"logger": DEFAULT_LOGGER},
        parser_kwargs={"description": DESCRIPTION, "formatter_class": HelpFormatter},
        args=args,
        run=run,
        auto_configure_optimizers=False,  # one way: the model's optimizer / lr_scheduler args
    )
    if run:
        finish_wandb(cli.trainer)
    return cli


def finish_wandb(trainer: Trainer) -> None:
    """Finish the W&B runs of ``trainer``'s ``WandbLogger``s (rank zero), flushing offline
    files; Lightning leaves them open, and a second run in the same process would reuse them."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and trainer.is_global_zero:
            logger.experiment.finish()
