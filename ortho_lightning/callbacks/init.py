"""``OrthogonalInit``: :func:`ortho_lightning.init.initialize` once, at the start of ``fit``.

When things happen:

- ``__init__``: every argument is checked (and ``gain="critical"`` solved), so a bad config fails
  when the callback is made.
- ``setup("fit")``, before the checkpoint restore and before the optimizers exist: the scheme is
  applied once per callback (a second ``fit`` with the same callback, ``validate``, ``test`` and
  ``predict`` leave the weights alone). Put it before ``OrthogonalConstraint`` in the callbacks,
  whose ``setup`` parametrizes the weights.
- Resuming (``fit(ckpt_path=...)``): the restored weights win. Lightning 2.6 makes the checkpoint
  path public (``trainer.ckpt_path``) only once the restore begins, which is after ``setup``; a
  path set by the user beforehand (``trainer.ckpt_path = ...``) is seen in ``setup`` and nothing
  is drawn. Otherwise the init runs in ``setup`` and the restore that follows overwrites every
  tensor it wrote (it draws from its own generator, so the global RNG is untouched);
  ``on_fit_start`` then sees ``trainer.ckpt_path``, drops the report and logs nothing.
- ``input_q="match"``: in ``setup``, the first ``input_batch_size`` samples of the training set
  (``trainer.datamodule.train_dataloader()``'s dataset, in order: no draw from any RNG, the same
  batch on every rank) give the input second moment the first layer is matched to; the report
  then holds every layer's q measured on that batch beside q*.
- ``on_fit_start``: the report is logged with the one log adapter (a W&B table with
  ``WandbLogger``, Markdown text on TensorBoard and in the Python log otherwise), rank zero only.

DDP: every rank draws from a ``torch.Generator`` seeded with ``seed``, or when ``seed`` is None
with rank zero's ``torch.initial_seed()`` broadcast to all ranks (a collective every rank joins
in ``setup``), so all ranks start from identical weights without relying on DDP's own broadcast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from typing_extensions import override

from ortho_lightning.activations import Activation
from ortho_lightning.callbacks._logging import log_settings, log_table
from ortho_lightning.exceptions import ConfigurationError
from ortho_lightning.init.criticality import Gain
from ortho_lightning.init.initialize import InitConfig, InitReport, SchemeFn, apply_config
from ortho_lightning.validation import check_int, fail


def first_training_inputs(trainer: Trainer, n: int) -> torch.Tensor:
    """The inputs of the first ``n`` samples of the training set, stacked (N, *in).

    Read from ``trainer.datamodule``'s train loader's dataset by index (the sampler is not
    touched, so no RNG moves); a loader without a map-style dataset gives its first batch under
    ``torch.random.fork_rng``.

    Raises:
        ConfigurationError: the trainer has no datamodule (``fit(model, train_dataloaders=...)``).
    """
    datamodule = trainer.datamodule
    if datamodule is None:
        raise ConfigurationError(
            "OrthogonalInit: input_q='match' reads a batch of the training data from the "
            "datamodule: pass one to fit(model, datamodule=...), or initialise with "
            "ortho_lightning.init.initialize(model, ..., input_q='match', inputs=<batch>)"
        )
    loader = datamodule.train_dataloader()
    dataset = getattr(loader, "dataset", None)
    if dataset is not None and hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        samples = [dataset[i] for i in range(min(n, len(dataset)))]
        batch = torch.utils.data.default_collate(samples)
    else:
        with torch.random.fork_rng(devices=[]):
            batch = next(iter(loader))
    x = batch[0] if isinstance(batch, list | tuple) else batch
    return x[:n]


class OrthogonalInit(Callback):
    """Initialise the LightningModule's Linear / ConvNd / recurrent modules at the start of fit.

    Args:
        scheme, gain, activation, sigma_b, include, exclude, fallback, recurrent, q_star,
            input_q, rest: as in :func:`ortho_lightning.init.initialize`. With
            ``input_q="match"`` the inputs are the first ``input_batch_size`` training samples.
        input_batch_size: samples whose second moment the first layer is matched to.
        seed: seed of the init's own generator (same seed, same weights); ``None`` uses rank
            zero's ``torch.initial_seed()`` (set by ``seed_everything``).
        log_key: key of the logged report table.

    Attributes:
        applied: whether this callback has initialised the model (kept in its checkpoint state).
        report: the :class:`~ortho_lightning.init.InitReport` of this run, ``None`` before
            ``fit`` and after a resume.
    """

    def __init__(
        self,
        scheme: str | SchemeFn = "orthogonal",
        gain: Gain = 1.0,
        activation: str | Activation = "tanh",
        sigma_b: float | None = None,
        include: str | Sequence[str] | None = None,
        exclude: str | Sequence[str] | None = None,
        fallback: str | SchemeFn | None = None,
        recurrent: str | None = None,
        seed: int | None = None,
        log_key: str = "init/report",
        q_star: float | None = None,
        input_q: str | None = None,
        input_batch_size: int = 256,
        rest: str = "keep",
    ) -> None:
        self.config = InitConfig.build(
            scheme, gain, activation, sigma_b, include, exclude, fallback, recurrent,
            q_star=q_star, input_q=input_q, rest=rest, owner=type(self).__name__,
        )
        owner = type(self).__name__
        self.input_batch_size = check_int(owner, "input_batch_size", input_batch_size, minimum=1)
        seed = check_int(owner, "seed", seed, minimum=0, optional=True)
        if not isinstance(log_key, str) or not log_key:
            fail(owner, "log_key", "a non-empty string", log_key)
        self.seed = seed
        self.log_key = log_key
        self.applied = False
        self.seed_used: int | None = None
        self.report: InitReport | None = None
        self._report_logged = False

    # the checked arguments, read back from the config (log_settings records them by these names)
    scheme = property(lambda self: self.config.scheme[0])
    gain = property(lambda self: self.config.gain)
    activation = property(lambda self: self.config.activation)
    sigma_b = property(lambda self: self.config.sigma_b)
    fallback = property(lambda self: None if self.config.fallback is None else self.config.fallback[0])
    recurrent = property(lambda self: self.config.recurrent)
    q_star = property(lambda self: None if self.config.critical is None else self.config.critical.q_star)
    input_q = property(lambda self: self.config.input_q)
    rest = property(lambda self: self.config.rest)
    selector = property(lambda self: self.config.selector)

    @property
    @override
    def state_key(self) -> str:
        selector = self.config.selector
        return (
            f"{type(self).__qualname__}{{scheme={self.config.scheme[0]!r}, "
            f"include={list(selector.include)!r}, exclude={list(selector.exclude)!r}}}"
        )

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        log_settings(trainer, self)  # how this run was initialised, in the logger's config
        if self.applied or trainer.ckpt_path is not None:
            return
        seed = self.seed
        if seed is None:
            seed = int(trainer.strategy.broadcast(int(torch.initial_seed()), src=0))
        generator = torch.Generator().manual_seed(seed)
        inputs = None
        if self.config.input_q is not None:
            inputs = first_training_inputs(trainer, self.input_batch_size)
        self.report = apply_config(pl_module, self.config, generator, inputs)
        self.seed_used = seed
        self.applied = True

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.report is None or self._report_logged:
            return
        if trainer.ckpt_path is not None:
            # resumed: the restore (after setup) replaced every tensor setup() wrote
            self.report = None
            return
        log_table(trainer, self.log_key, self.report.columns, self.report.rows())
        self._report_logged = True

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "seed": self.seed_used}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.applied = bool(state_dict.get("applied", False))
        self.seed_used = state_dict.get("seed")
