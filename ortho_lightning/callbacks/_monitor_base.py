"""What every spectrum monitor shares: cadence, the fixed probe batch, rank zero, errors, logging.

A monitor measures at fit start (the init on record), every ``every_n_steps`` optimizer steps
(or, with ``log_spaced=True``, at ``every_n_steps`` times 1, 2, 4, 8, ...: dense early, where
spectra move, sparse later) and/or every ``every_n_epochs`` epochs. The subclass only says
*what* to measure (:meth:`SpectrumMonitor.compute`); this base decides *when*, on *which rank*,
and *where to log*.

Guarantees (each tested in ``tests/callbacks/test_monitors.py``):

- Measured on global rank zero only, with no collective inside: other ranks skip the work, so a
  DDP run neither hangs nor pays for the measurement on every rank.
- The model's train/eval mode (module by module) is restored, no ``.grad`` is touched, and the
  training RNG is left alone (``torch.random.fork_rng``): a run with a monitor ends at the same
  weights as a run without.
- The probe batch is taken once (first ``probe_size`` samples the train or val loader yields) and
  kept in the callback's ``state_dict`` (a plain tensor, ``weights_only``-safe), so a resumed run
  continues the same series.
- A failure inside a measurement (non-finite spectrum from NaN weights, out of memory, ...) is a
  warning naming the cause; training goes on and the next cadence tries again.

Where values go: scalars to every logger's ``log_metrics`` at ``trainer.global_step`` and into
``trainer.callback_metrics`` (so ``EarlyStopping``/``ModelCheckpoint`` can watch e.g.
``spectra/jacobian/max``), and onto the callback as ``last_summary``. Under DDP these keys exist
on rank zero only (sharing them would be a collective), so there do not let ``EarlyStopping`` or
``ModelCheckpoint`` watch them.
Everything a monitor logs (scalars, histograms, figures) goes through the one adapter,
:func:`ortho_lightning.callbacks._logging.log_measurement`; ``pl_module.log`` is not used on
purpose: the init measurement cannot be logged at its step with it (Lightning rejects
``self.log`` in ``on_fit_start`` and allows only an epoch-level value in ``on_train_start``), it
only reaches the loggers every ``log_every_n_steps`` batches (so a measurement at another step
would be silently dropped), and under DDP a rank-zero-only ``self.log`` is the documented
deadlock trap. (The constraint and the regularizer, which log at every training step on every
rank, do use ``pl_module.log``.)
"""

from __future__ import annotations

import contextlib
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from typing_extensions import override

from ortho_lightning.callbacks._logging import log_measurement, log_settings
from ortho_lightning.exceptions import ConfigurationError
from ortho_lightning.spectra._common import measuring as restore_modes
from ortho_lightning.validation import check_bool, check_callable, check_choice, check_int

PROBE_SOURCES = ("train", "val")


@dataclass
class Spectrum:
    """One measured spectrum and what is logged about it.

    Attributes:
        prefix: key prefix of its scalars, e.g. ``"spectra/jacobian"``.
        values: the spectrum, any shape (flattened for the histogram).
        summary: ``{name: number}`` logged as ``<prefix>/<name>``.
        histogram: name of the histogram key under ``prefix`` (``None``: no histogram).
        plot_values: what the figure shows (default ``values``), e.g. squared singular values.
        plot_label: x-axis label of the figure.
        theory: optional ``(grid, density, atoms)`` predicted density drawn over the histogram;
            ``atoms`` is a list of ``(location, mass)`` point masses.
    """

    prefix: str
    values: Tensor
    summary: dict[str, float]
    histogram: str | None = "values"
    plot_values: Tensor | None = None
    plot_label: str = "value"
    theory: tuple[Tensor, Tensor, list[tuple[float, float]]] | None = None
    extra: dict[str, float] = field(default_factory=dict)


def default_input(batch: Any) -> Tensor:
    """The model input in a batch: the batch itself if it is a tensor, else its first element
    (``(x, y)`` tuples and lists), else ``batch["x"]`` / ``batch["input"]`` of a mapping."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, Sequence) and len(batch) > 0 and isinstance(batch[0], Tensor):
        return batch[0]
    if isinstance(batch, Mapping):
        for key in ("x", "input", "inputs"):
            if isinstance(batch.get(key), Tensor):
                return batch[key]
    raise ConfigurationError(
        f"cannot find the model input in a batch of type {type(batch).__name__}: expected a "
        "tensor, a (x, ...) sequence or a mapping with key 'x'/'input'/'inputs'; pass "
        "input_fn=lambda batch: ... to the monitor"
    )


def _first_loader(loaders: Any) -> Any:
    if isinstance(loaders, Mapping):
        return next(iter(loaders.values()), None)
    if isinstance(loaders, Sequence):
        return loaders[0] if len(loaders) else None
    return loaders


@contextlib.contextmanager
def measuring(model: nn.Module, eval_mode: bool) -> Iterator[None]:
    """Fork the RNG (CPU and the model's CUDA device) and put ``model`` in eval mode (if asked)
    for the block; restore the RNG and every submodule's own mode afterwards."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), restore_modes(model, eval_mode):
        yield


class SpectrumMonitor(Callback):
    """Base of the spectrum monitors (see module docstring). Subclasses set :attr:`kind` and
    :attr:`needs_probe` and implement :meth:`compute`.

    Args:
        every_n_steps: measure every this many optimizer steps (``trainer.global_step``, so with
            ``accumulate_grad_batches=k`` every ``k * every_n_steps`` batches); ``None``: never.
        log_spaced: measure at steps ``every_n_steps * 2**k`` (k = 0, 1, 2, ...) instead of every
            ``every_n_steps``: a run of S steps costs ``log2(S / every_n_steps) + 1``
            measurements instead of ``S / every_n_steps``, evenly spread on a log step axis
            (the 2580 steps of the 6-epoch MLP recipe at ``every_n_steps=100``: 5 instead of 25).
            Combine with ``every_n_epochs`` for a regular check late in long runs.
        every_n_epochs: measure at the end of every this many training epochs; ``None``: never.
        on_fit_start: measure once before the first step (the init on record; skipped on
            resume). Kept as :attr:`measure_at_fit_start`.
        probe_size: number of samples in the fixed probe batch.
        probe_source: ``"train"`` or ``"val"``: the loader the probe is taken from.
        input_fn: ``batch -> input tensor``; default :func:`default_input`.
        histogram: also log the whole spectrum as a histogram (W&B, TensorBoard).
        figure: also log a matplotlib figure of the spectrum over training (W&B image,
            TensorBoard image, PNG under ``<run dir>/figures``).
        eval_mode: measure with the model in eval mode (dropout off, batch-norm running stats).
    """

    kind: ClassVar[str] = ""
    needs_probe: ClassVar[bool] = True
    #: ``__init__`` argument -> the attribute that keeps it, where the names differ (read by
    #: :func:`ortho_lightning.callbacks._logging.log_settings`)
    setting_attributes: ClassVar[dict[str, str]] = {"on_fit_start": "measure_at_fit_start"}
    history_length: ClassVar[int] = 6

    def __init__(
        self,
        *,
        every_n_steps: int | None = 1000,
        every_n_epochs: int | None = None,
        on_fit_start: bool = True,
        probe_size: int = 8,
        probe_source: str = "train",
        input_fn: Callable[[Any], Tensor] | None = None,
        histogram: bool = True,
        figure: bool = False,
        eval_mode: bool = True,
        log_spaced: bool = False,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.every_n_steps = check_int(name, "every_n_steps", every_n_steps, 1, optional=True)
        self.log_spaced = check_bool(name, "log_spaced", log_spaced)
        if self.log_spaced and self.every_n_steps is None:
            raise ConfigurationError(
                f"{name}: log_spaced=True spaces the every_n_steps cadence, but every_n_steps "
                "is None; set every_n_steps (the first measured step)"
            )
        self.every_n_epochs = check_int(name, "every_n_epochs", every_n_epochs, 1, optional=True)
        # not ``self.on_fit_start``: that is Lightning's hook of the same name, and an instance
        # attribute holding a bool would shadow it (Lightning silently skips non-callables)
        self.measure_at_fit_start = check_bool(name, "on_fit_start", on_fit_start)
        if (self.every_n_steps is None and self.every_n_epochs is None
                and not self.measure_at_fit_start):
            raise ConfigurationError(
                f"{name}: every_n_steps=None, every_n_epochs=None and on_fit_start=False would "
                "never measure; set at least one of them"
            )
        self.probe_size = check_int(name, "probe_size", probe_size, 1)
        self.probe_source = check_choice(name, "probe_source", probe_source, PROBE_SOURCES)
        self.input_fn = check_callable(name, "input_fn", input_fn, optional=True)
        self.histogram = check_bool(name, "histogram", histogram)
        self.figure = check_bool(name, "figure", figure)
        self.eval_mode = check_bool(name, "eval_mode", eval_mode)

        self.probe: Tensor | None = None
        self.last_summary: dict[str, float] = {}
        self.last_step: int | None = None
        self.measured_steps: list[int] = []
        self.failures: int = 0
        self._history: deque[tuple[int, Tensor]] = deque(maxlen=self.history_length)

    # ----------------------------------------------------------------- what subclasses provide
    def compute(self, pl_module: LightningModule, probe: Tensor | None) -> list[Spectrum]:
        """Measure and return the spectra to log (called on rank zero, inside :func:`measuring`)."""
        raise NotImplementedError

    def _state_key_args(self) -> dict[str, Any]:
        return {"every_n_steps": self.every_n_steps, "every_n_epochs": self.every_n_epochs}

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(**self._state_key_args())

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            log_settings(trainer, self)  # how this run is measured, in the logger's config

    # ------------------------------------------------------------------------------- cadence
    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.needs_probe and self.probe is None and trainer.is_global_zero:
            self.probe = self._take_probe(trainer)
        if self.measure_at_fit_start and trainer.global_step == 0 and self.last_step != 0:
            self._measure(trainer, pl_module)

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.is_cadence_step(trainer.global_step) and trainer.global_step != self.last_step:
            self._measure(trainer, pl_module)

    def is_cadence_step(self, step: int) -> bool:
        """Whether optimizer step ``step`` (> 0) is on the step cadence: a multiple of
        ``every_n_steps``, and with ``log_spaced`` a power-of-two multiple."""
        if not self.every_n_steps or step <= 0 or step % self.every_n_steps:
            return False
        multiple = step // self.every_n_steps
        return not self.log_spaced or multiple & (multiple - 1) == 0

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if (
            self.every_n_epochs
            and (trainer.current_epoch + 1) % self.every_n_epochs == 0
            and trainer.global_step != self.last_step
        ):
            self._measure(trainer, pl_module)

    # ------------------------------------------------------------------------------- probe
    def _take_probe(self, trainer: Trainer) -> Tensor:
        name = type(self).__name__
        loaders = trainer.train_dataloader if self.probe_source == "train" else trainer.val_dataloaders
        loader = _first_loader(loaders)
        if loader is None:
            raise ConfigurationError(
                f"{name}(probe_source={self.probe_source!r}): the trainer has no "
                f"{self.probe_source} dataloader to take the probe batch from"
            )
        get_input = self.input_fn or default_input
        chunks, count = [], 0
        # Iterating a shuffled loader draws seeds from the global generator: fork it.
        with torch.random.fork_rng(devices=[]):
            for batch in loader:
                x = get_input(batch).detach().cpu()
                chunks.append(x)
                count += len(x)
                if count >= self.probe_size:
                    break
        if not chunks:
            raise ConfigurationError(f"{name}: the {self.probe_source} dataloader yielded no batch")
        probe = torch.cat(chunks)[: self.probe_size].clone()
        if len(probe) < self.probe_size:
            warnings.warn(
                f"{name}: probe_size={self.probe_size} but the {self.probe_source} dataloader "
                f"yielded only {len(probe)} samples; measuring on those",
                stacklevel=2,
            )
        return probe

    # ------------------------------------------------------------------------------- measure
    def _measure(self, trainer: Trainer, pl_module: LightningModule) -> None:
        step = trainer.global_step
        self.last_step = step  # on every rank, so the cadence stays in step across ranks
        if not trainer.is_global_zero:
            return
        probe = None
        if self.needs_probe:
            param = next(pl_module.parameters(), None)
            probe = self.probe
            if param is not None:  # follow the model's device, and its dtype for float inputs
                dtype = param.dtype if probe.is_floating_point() else probe.dtype
                probe = probe.to(device=param.device, dtype=dtype)
        try:
            with measuring(pl_module, self.eval_mode):
                spectra = self.compute(pl_module, probe)
            for s in spectra:
                if not bool(torch.isfinite(s.values).all()):
                    raise FloatingPointError(
                        f"non-finite values in the {s.prefix} spectrum (NaN or inf in the "
                        "weights or activations?)"
                    )
            self._publish(trainer, spectra, step)
        except Exception as err:  # a monitor never stops training
            self.failures += 1
            if isinstance(err, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()
            warnings.warn(
                f"{type(self).__name__}: measurement at step {step} failed "
                f"({type(err).__name__}: {err}); training goes on, the next cadence tries again",
                RuntimeWarning,
                stacklevel=2,
            )

    def _publish(self, trainer: Trainer, spectra: list[Spectrum], step: int) -> None:
        scalars: dict[str, float] = {}
        for s in spectra:
            for key, value in {**s.summary, **s.extra}.items():
                scalars[f"{s.prefix}/{key}"] = float(value)
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in scalars.items()})
        self.last_summary = scalars
        self.measured_steps.append(step)
        histograms = {}
        if self.histogram:
            histograms = {f"{s.prefix}/{s.histogram}": s.values for s in spectra if s.histogram is not None}
        figures = {}
        if self.figure and spectra:
            main = spectra[0]
            shown = (main.plot_values if main.plot_values is not None else main.values).flatten()
            self._history.append((step, shown.detach().float().cpu()))
            probe = f", probe of {len(self.probe)} inputs" if self.needs_probe and self.probe is not None else ""
            title = f"spectra/{self.kind} at step {step}{probe}"
            figures[f"spectra/{self.kind}/figure"] = spectrum_figure(
                self._history, main.plot_label, main.theory, title=title
            )
        # one record per logger: one W&B step for the whole measurement
        log_measurement(trainer, step, scalars, histograms, figures)

    # ------------------------------------------------------------------------------- state
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            "last_step": self.last_step,
            "measured_steps": list(self.measured_steps),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.probe = state_dict.get("probe")
        self.last_step = state_dict.get("last_step")
        self.measured_steps = list(state_dict.get("measured_steps", []))


def spectrum_figure(
    history: Sequence[tuple[int, Tensor]],
    xlabel: str,
    theory: tuple[Tensor, Tensor, list[tuple[float, float]]] | None = None,
    title: str = "",
) -> Any:
    """A matplotlib figure: density histograms of the spectrum at the last measured steps
    (older ones fainter), and the predicted density (curve, point masses as dashed vertical
    lines) if given.

    Built to be rendered once, cheaply (it is drawn at every measurement): a
    ``matplotlib.figure.Figure`` outside pyplot's registry with a fixed layout (no
    ``tight_layout``, which renders the figure an extra time to measure it), histograms as
    ``stairs`` of ``numpy.histogram`` counts, and on a log axis plain tick labels (``0.01``,
    ``1``; mathtext ``10^{-2}`` is parsed anew every figure) and minor ticks at 2 and 5 only
    (timings in ``benchmarks/README.md``).
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator

    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.add_axes((0.125, 0.14, 0.845, 0.78))
    lo = min(float(v.min()) for _, v in history)
    hi = max(float(v.max()) for _, v in history)
    if theory is not None:  # the axis spans the prediction too, or it may fall outside
        grid, density, atoms = theory
        support = grid[density > 1e-3 * float(density.max())] if len(grid) else grid
        marks = [float(a) for a, _ in atoms] + ([float(support.min()), float(support.max())] if len(support) else [])
        lo, hi = min([lo, *marks]), max([hi, *marks])
    if hi - lo <= 1e-6 * max(1.0, abs(hi)):  # a point mass (e.g. an orthogonal linear net)
        pad = 0.05 * max(1.0, abs(hi))
        lo, hi = lo - pad, hi + pad
    # Spectra spread over many decades (deep nets, Fisher) are unreadable on a linear axis:
    # there, log-spaced bins on a log axis, each bar the fraction of values in its bin.
    log_axis = lo > 0 and hi / lo > 100
    bins = np.geomspace(lo, hi, 41) if log_axis else np.linspace(lo, hi, 41)
    n = len(history)
    for i, (step, values) in enumerate(history):
        current = i == n - 1
        v = values.numpy()
        counts = np.histogram(v, bins=bins)[0] / v.size  # fraction per bin
        ax.stairs(
            counts if log_axis else counts / np.diff(bins),  # else a density
            bins,
            fill=current,
            alpha=0.45 if current else 0.25 + 0.5 * i / max(n, 1),
            label=f"step {step}",
        )
    if theory is not None:
        grid, density, atoms = theory
        if len(grid):
            x, y = grid.cpu().numpy(), density.cpu().numpy()
            if log_axis:  # density per unit x -> mass per log-spaced bin
                y = y * x * np.log(bins[1] / bins[0])
            ax.plot(x, y, "k-", lw=1.5, label="theory")
        for location, mass in atoms:
            ax.axvline(location, color="k", ls="--", lw=1.2, label=f"theory atom ({mass:.2f})")
    if log_axis:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction per bin" if log_axis else "density")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return fig
