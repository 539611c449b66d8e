"""The ``ortho-lightning`` command: training runs through LightningCLI, grids and reports
through :mod:`ortho_lightning.experiments`.

::

    ortho-lightning fit --config recipes/mnist_mlp_critical.yaml
    ortho-lightning fit --config recipes/mnist_mlp_critical.yaml --init.init_args.scheme=gaussian
    ortho-lightning fit --config recipes/mnist_mlp_critical.yaml --print_config
    ortho-lightning test --config recipes/mnist_mlp_critical.yaml --ckpt_path runs/.../last.ckpt
    ortho-lightning experiment recipes/experiments/<grid>.yaml     (ortho_lightning.experiments)
    ortho-lightning report runs/experiments/<grid>                 (ortho_lightning.experiments)

``fit``/``validate``/``test``/``predict`` run :func:`~ortho_lightning.lightning_cli.cli_main`
(LightningCLI with the callback slots, data -> model links, offline W&B and checked
checkpoints described in :mod:`ortho_lightning.lightning_cli`, whose public names this module
re-exports). The grid runner calls that same entry point and imports only it, so the imports
go one way: this module -> ``experiments`` -> ``lightning_cli``.

**Errors in one line**: a configuration or data error (ours, or Lightning's
``MisconfigurationException``) prints ``error: <what>`` and exits with status 2, however deep
in the instantiation it was raised; ``--debug`` (or ``ORTHO_LIGHTNING_DEBUG=1``) shows the
traceback instead.
"""

from __future__ import annotations

import os
import sys
import traceback

from ortho_lightning.exceptions import OrthoLightningError
from ortho_lightning.lightning_cli import (
    CALLBACK_SLOTS,
    CONFIG_FILENAME,
    DEFAULT_LOGGER,
    DESCRIPTION,
    NAME_ARGS,
    SLOT_CALLBACKS,
    CLITrainer,
    OrthoLightningCLI,
    RunConfigCallback,
    check_checkpoint,
    cli_main,
    describe_run,
    finish_wandb,
)

__all__ = [
    "CALLBACK_SLOTS", "CONFIG_FILENAME", "DEFAULT_LOGGER", "DESCRIPTION", "EXPERIMENT_COMMANDS",
    "NAME_ARGS", "SLOT_CALLBACKS", "USAGE_ERROR", "CLITrainer", "OrthoLightningCLI",
    "RunConfigCallback", "check_checkpoint", "cli_main", "describe_run", "finish_wandb", "main",
    "user_error",
]

#: subcommands handed to ``ortho_lightning.experiments.cli``
EXPERIMENT_COMMANDS = ("experiment", "report")

#: ``--debug`` anywhere on the command line, or this variable set to 1: tracebacks, not one line
DEBUG_FLAG, DEBUG_ENV = "--debug", "ORTHO_LIGHTNING_DEBUG"
#: exit status of a configuration or data error (argparse's, for a bad command line)
USAGE_ERROR = 2


def user_error(err: BaseException) -> BaseException | None:
    """The configuration or data error behind ``err`` (ours, or Lightning's
    ``MisconfigurationException``), following ``raise ... from`` and ``during handling`` links
    (jsonargparse wraps errors raised while it instantiates a class); ``None`` if there is none."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OrthoLightningError | MisconfigurationException):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``ortho-lightning``. ``experiment`` and ``report`` go to
    :mod:`ortho_lightning.experiments.cli`; everything else to LightningCLI.

    Returns 0 on success and :data:`USAGE_ERROR` (2) after printing ``error: <message>`` for a
    configuration or data error (a traceback with ``--debug`` or ``ORTHO_LIGHTNING_DEBUG=1``).
    """
    words = sys.argv[1:] if argv is None else list(argv)
    debug = DEBUG_FLAG in words or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    words = [w for w in words if w != DEBUG_FLAG]
    if argv is None:  # LightningCLI reads sys.argv itself
        sys.argv[1:] = words
    try:
        if words and words[0] in EXPERIMENT_COMMANDS:
            from ortho_lightning.experiments.cli import main as experiments_main

            return experiments_main(words)
        cli_main(None if argv is None else words)
        return 0
    except Exception as err:
        cause = user_error(err)
        if cause is None:
            raise
        if debug:
            traceback.print_exception(err)
        print(f"error: {cause}", file=sys.stderr)
        return USAGE_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
