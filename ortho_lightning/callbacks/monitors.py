"""Monitors that log the Jacobian, Fisher and weight spectra while a model trains.

Thin glue over :mod:`ortho_lightning.spectra`: the base class
(:class:`~ortho_lightning.callbacks._monitor_base.SpectrumMonitor`) decides when to measure, on
rank zero only, with the model's mode, gradients and RNG left as they were; these classes only
say what to measure. Every key, with what it measures, on which probe and in which units, is
in ``docs/logged_keys.md``. Keys (each a :func:`~ortho_lightning.spectra.summarize` key: ``max``,
``min``, ``mean_sq``, ``condition``, ``std``, ``frac_within_10pct``; for the Fisher ``max``,
``trace``, ``mean``):

- ``spectra/jacobian/<key>`` and the histogram ``spectra/jacobian/singular_values``: the
  Jacobian of the model's ``spectrum_output_fn`` (the recipe models' features) or output with
  respect to the input (with ``theory``: ``spectra/jacobian/theory_w1``);
- ``spectra/fisher/<key>`` and ``spectra/fisher/eigenvalues``, with ``jacobian_ratio`` the
  logits' Jacobian ``spectra/fisher/logits_jacobian_max`` and
  ``spectra/fisher/max_over_logits_jacobian_sq`` (with ``theory``:
  ``spectra/fisher/theory_mean``, ``spectra/fisher/mean_over_theory``);
- ``spectra/weights/<module>.<matrix>/<key>`` and ``.../singular_values`` per matrix block
  (``<matrix>`` from :func:`ortho_lightning.matrices.matrix_blocks`: ``weight``,
  ``weight_hh_l0`` or, per gate, ``weight_hh_l0.f``).

Default cadences (Jacobian on 8 probe samples and weights every 1000 optimizer steps, the
Fisher on 32 once per epoch; all three also at fit start) aim at under 5% of the training
time of the MLP and row-mode RNN recipes; ``benchmarks/bench_monitors.py`` measures it (the
steady-state overhead at the defaults, and ``--recipe`` the MLP recipe's own cadence end to
end), and ``benchmarks/README.md`` keeps the numbers. The Jacobian is the costly one on the
MLP: per probe sample a (256 x 784) Jacobian of the features (256 vmapped reverse passes),
whose singular values come from the float64 Gram of its smaller side
(``ortho_lightning.spectra._common.singular_values``); with ``start``/``end`` a (256 x 256)
layer-to-layer Jacobian (its ``svdvals``). A figure (``figure=True``) adds one matplotlib
render and PNG per measurement.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor, nn
from typing_extensions import override

from ortho_lightning import spectra
from ortho_lightning.callbacks._monitor_base import Spectrum, SpectrumMonitor
from ortho_lightning.exceptions import ConfigurationError
from ortho_lightning.selection import ModuleSelector
from ortho_lightning.theory import (
    FisherMoments,
    SpectralDensity,
    fisher_moments,
    jacobian_spectrum_density,
    wasserstein1,
)
from ortho_lightning.validation import check_bool, check_callable, check_choice, check_int, fail

LIKELIHOODS = ("categorical", "gaussian")
FISHER_METHODS = ("exact", "lanczos", "slq")
#: number of quantiles of the SLQ density logged as its histogram (``method="slq"``)
SLQ_QUANTILES = 512
#: the SLQ density's histogram starts at this many kernel widths above 0, past the broadened
#: atom of the Fisher's null space
SLQ_CUT_SIGMAS = 5.0


class _Through(nn.Module):
    """A module whose forward is ``fn(x)``, with ``owner`` as its only child.

    The spectra differentiate ``model(x)`` through ``functional_call`` with the model's named
    parameters; wrapping lets them measure another function of the same parameters, such as a
    model's ``spectrum_output_fn`` (its features without the readout), with no other change.
    """

    def __init__(self, owner: nn.Module, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.owner = owner
        # not registered: a submodule ``fn`` (``spectrum_output_fn`` returning ``self.layers``)
        # would be a second path to the owner's parameters, and functional_call then left plain
        # tensors in the owner's layers in place of their Parameters (they stopped training)
        object.__setattr__(self, "_fn", fn)

    def forward(self, x: Tensor) -> Tensor:
        return self._fn(x)


def _measured_function(pl_module: LightningModule, use_model_output_fn: bool) -> nn.Module:
    """``pl_module`` itself, or (if it has a ``spectrum_output_fn`` and we may use it) a
    :class:`_Through` module computing ``pl_module.spectrum_output_fn(x)``."""
    fn = getattr(pl_module, "spectrum_output_fn", None) if use_model_output_fn else None
    return pl_module if fn is None else _Through(pl_module, fn)


THEORY_REQUIRED = ("activation", "sigma_w", "sigma_b", "depth")
FISHER_THEORY_REQUIRED = (*THEORY_REQUIRED, "width", "n_outputs")
THEORY_WEIGHTS = ("orthogonal", "gaussian")


def _check_theory(owner: str, value: Any, fn: Callable, required: tuple[str, ...]) -> Any:
    """``value`` unchanged if a bool, else a dict of ``fn``'s arguments with at least
    ``required`` (an error names missing and unknown keys)."""
    if isinstance(value, bool):
        return value
    if not isinstance(value, Mapping):
        fail(owner, "theory", f"True, False or a dict of {fn.__name__} arguments {required}", value)
    accepted = set(inspect.signature(fn).parameters)
    missing = [k for k in required if k not in value]
    unknown = sorted(set(value) - accepted)
    if missing or unknown:
        raise ConfigurationError(
            f"{owner}(theory): missing keys {missing}, unknown keys {unknown}; accepted keys "
            f"are {sorted(accepted)} and {list(required)} are required"
        )
    return dict(value)


def _theory_from_init(owner: str, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
    """The prediction's arguments from the run itself: activation, gain (sigma_w), sigma_b and
    scheme of its one ``OrthogonalInit`` callback, and the model's ``depth`` hyper-parameter."""
    from ortho_lightning.callbacks.init import OrthogonalInit

    inits = [cb for cb in trainer.callbacks if isinstance(cb, OrthogonalInit)]
    depth = getattr(pl_module, "hparams", {}).get("depth")
    scheme = inits[0].config.scheme[0] if len(inits) == 1 else None
    if len(inits) != 1 or scheme not in THEORY_WEIGHTS or not isinstance(depth, int):
        raise ConfigurationError(
            f"{owner}(theory=True) reads the prediction's arguments from the run: it needs "
            f"exactly one OrthogonalInit callback with scheme in {THEORY_WEIGHTS} (found "
            f"{len(inits)}, scheme {scheme!r}) and an int 'depth' hyper-parameter on the model "
            f"(found {depth!r}); otherwise pass theory=dict(activation=..., sigma_w=..., "
            "sigma_b=..., depth=..., weights=...)"
        )
    config = inits[0].config
    return {
        "activation": config.activation,
        "sigma_w": float(config.gain),
        "sigma_b": float(config.sigma_b),
        "depth": depth,
        "weights": scheme,
    }


class JacobianSpectrumMonitor(SpectrumMonitor):
    """Log the singular values of the per-sample input-output Jacobian on a fixed probe batch.

    Args:
        output_fn: ``model output -> tensor to differentiate`` (as in
            :func:`~ortho_lightning.spectra.jacobian_singular_values`). When ``None`` and the
            model has a ``spectrum_output_fn`` attribute (``input -> tensor``, e.g. the recipe
            models' features without the readout, an RNN's last hidden state), the Jacobian of
            ``spectrum_output_fn(x)`` is measured; otherwise that of ``model(x)``.
        chunk_size: samples per vmap chunk (bounds memory); ``None``: all at once.
        theory: hold the measurement beside the free-probability prediction
            (:func:`~ortho_lightning.theory.jacobian_spectrum_density`, the law of the squared
            singular values of a wide network's Jacobian): log their Wasserstein-1 distance as
            ``spectra/jacobian/theory_w1`` and draw the predicted density in the figure.
            ``True`` takes the prediction's arguments from the run (its ``OrthogonalInit``
            callback and the model's ``depth``); a dict gives them (``activation``,
            ``sigma_w``, ``sigma_b``, ``depth``, optionally ``weights`` and the other
            arguments). The prediction is for the deep part of a wide net, so measure the
            features (the recipe models' ``spectrum_output_fn``), not the logits.
        start, end: measure the Jacobian from the output of module ``start`` to the output of
            module ``end`` (``named_modules()`` names, both given or neither;
            :func:`~ortho_lightning.spectra.layer_jacobian_singular_values`) instead of from the
            input. E.g. ``start="layers.1", end="layers.39"`` on a depth-20 ``MLPClassifier`` is
            the map from the first hidden layer's activations to the features: the stack of
            critical layers whose isometry the theory is about, without the input layer (which
            changes units from pixels to q* when it is matched to the data, ``input_q="match"``,
            and so scales every singular value by the same factor). ``output_fn`` is then unused.
        Other arguments (``log_spaced``: steps ``every_n_steps * 2**k``): see
            :class:`~ortho_lightning.callbacks._monitor_base.SpectrumMonitor`.

    Logs ``spectra/jacobian/<summarize key>`` and the histogram ``spectra/jacobian/singular_values``
    (all N x k values pooled); the figure shows the squared singular values.
    """

    kind = "jacobian"

    def __init__(
        self,
        every_n_steps: int | None = 1000,
        every_n_epochs: int | None = None,
        on_fit_start: bool = True,
        probe_size: int = 8,
        probe_source: str = "train",
        output_fn: Callable[..., Tensor] | None = None,
        chunk_size: int | None = None,
        input_fn: Callable[[Any], Tensor] | None = None,
        histogram: bool = True,
        figure: bool = False,
        eval_mode: bool = True,
        theory: bool | Mapping[str, Any] = False,
        log_spaced: bool = False,
        start: str | None = None,
        end: str | None = None,
    ) -> None:
        super().__init__(
            every_n_steps=every_n_steps,
            every_n_epochs=every_n_epochs,
            on_fit_start=on_fit_start,
            probe_size=probe_size,
            probe_source=probe_source,
            input_fn=input_fn,
            histogram=histogram,
            figure=figure,
            eval_mode=eval_mode,
            log_spaced=log_spaced,
        )
        name = type(self).__name__
        self.output_fn = check_callable(name, "output_fn", output_fn, optional=True)
        if (start is None) != (end is None) or not all(
            v is None or (isinstance(v, str) and v) for v in (start, end)
        ):
            raise ConfigurationError(
                f"{name}(start, end): expected two module names or neither, got start={start!r}, "
                f"end={end!r}"
            )
        self.start, self.end = start, end
        self.theory = _check_theory(name, theory, jacobian_spectrum_density, THEORY_REQUIRED)
        self.prediction: SpectralDensity | None = None
        self.chunk_size = check_int(name, "chunk_size", chunk_size, 1, optional=True)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.theory and self.prediction is None and trainer.is_global_zero:
            args = self.theory if isinstance(self.theory, dict) else _theory_from_init(
                type(self).__name__, trainer, pl_module
            )
            self.prediction = jacobian_spectrum_density(**args)
        super().on_train_start(trainer, pl_module)

    @override
    def compute(self, pl_module: LightningModule, probe: Tensor | None) -> list[Spectrum]:
        features = self.output_fn is None and getattr(pl_module, "spectrum_output_fn", None) is not None
        of = f"d {self.end} / d {self.start}" if self.start is not None else (
            "d features / d input" if features else "d output / d input")
        if self.start is not None:
            sv = spectra.layer_jacobian_singular_values(
                pl_module, probe, self.start, self.end,
                chunk_size=self.chunk_size, eval_mode=self.eval_mode,
            )
        else:
            sv = spectra.jacobian_singular_values(
                _measured_function(pl_module, self.output_fn is None),
                probe,
                output_fn=self.output_fn,
                chunk_size=self.chunk_size,
                eval_mode=self.eval_mode,
            )
        measured = Spectrum(
            "spectra/jacobian",
            sv,
            dict(spectra.summarize(sv, kind="singular")),
            histogram="singular_values",
            plot_values=sv**2,
            plot_label=f"squared singular value of the Jacobian {of}",
        )
        if self.prediction is not None:
            p = self.prediction
            measured.extra["theory_w1"] = wasserstein1(sv**2, p)
            measured.theory = (p.grid, p.density, list(zip(p.atoms.tolist(), p.atom_masses.tolist())))
        return [measured]


class FisherSpectrumMonitor(SpectrumMonitor):
    """Log the eigenvalues of the true Fisher information on a fixed probe batch.

    Args:
        likelihood: ``"categorical"`` (softmax over the outputs) or ``"gaussian"``.
        method: ``"exact"`` (all non-zero eigenvalues), ``"lanczos"`` (top ``k``) or ``"slq"``
            (the eigenvalue density by stochastic Lanczos quadrature,
            :func:`~ortho_lightning.spectra.spectral_density`, for probes whose N*C is too large
            for the exact dual Gram: ``max`` from Lanczos, ``trace`` = P * the density's mean,
            and as the histogram / figure :data:`SLQ_QUANTILES` quantiles of the density above
            :data:`SLQ_CUT_SIGMAS` kernel widths, i.e. without the null space's atom at 0;
            the kernel width ``sigma`` defaults to 1% of ``max``).
        k: number of eigenvalues (``None``: all for ``exact``, the core's default for Lanczos;
            not used by ``slq``).
        jacobian_ratio: also measure the Jacobian of the logits (the model's raw output, not
            the features the Jacobian monitor measures) with respect to the input, on the same
            probe: logs its largest singular value ``logits_jacobian_max`` and
            ``max_over_logits_jacobian_sq`` = lambda_max(F) / logits_jacobian_max^2 (Sokol & Park).
        fisher_kwargs: further keyword arguments of
            :func:`~ortho_lightning.spectra.fisher_eigenvalues` (``tol``, ``max_iter``,
            ``chunk_size``, ``generator``) or, for ``slq``, of
            :func:`~ortho_lightning.spectra.spectral_density` (``num_probes``,
            ``lanczos_steps``, ``grid``, ``sigma``, ``generator``); each is passed to the
            functions that take it. An int ``seed`` instead of ``generator`` (what a YAML
            config can hold) becomes ``torch.Generator(device).manual_seed(seed)`` afresh at
            every measurement: the same random start each time, as with no generator (seed 0).
        theory: a dict of :func:`~ortho_lightning.theory.fisher_moments` arguments
            (``activation``, ``sigma_w``, ``sigma_b``, ``depth``, ``width``, ``n_outputs``,
            optionally ``weights``, ``q_star``): log the predicted mean eigenvalue of the
            single-input Fisher (Hayase & Karakida) as ``spectra/fisher/theory_mean`` and the
            measured mean over it as ``spectra/fisher/mean_over_theory``. The prediction is for
            one input and a unit-variance Gaussian likelihood, so it needs ``probe_size=1`` and
            ``likelihood="gaussian"``.
        Other arguments (``log_spaced``: steps ``every_n_steps * 2**k``): see
            :class:`~ortho_lightning.callbacks._monitor_base.SpectrumMonitor`.

    The default cadence is once per epoch (and at fit start).
    """

    kind = "fisher"

    def __init__(
        self,
        every_n_steps: int | None = None,
        every_n_epochs: int | None = 1,
        on_fit_start: bool = True,
        probe_size: int = 32,
        probe_source: str = "train",
        likelihood: str = "categorical",
        method: str = "exact",
        k: int | None = None,
        jacobian_ratio: bool = True,
        fisher_kwargs: dict[str, Any] | None = None,
        input_fn: Callable[[Any], Tensor] | None = None,
        histogram: bool = True,
        figure: bool = False,
        eval_mode: bool = True,
        theory: Mapping[str, Any] | None = None,
        log_spaced: bool = False,
    ) -> None:
        super().__init__(
            every_n_steps=every_n_steps,
            every_n_epochs=every_n_epochs,
            on_fit_start=on_fit_start,
            probe_size=probe_size,
            probe_source=probe_source,
            input_fn=input_fn,
            histogram=histogram,
            figure=figure,
            eval_mode=eval_mode,
            log_spaced=log_spaced,
        )
        name = type(self).__name__
        self.prediction: FisherMoments | None = None
        if theory is not None:
            if isinstance(theory, bool):
                fail(name, "theory", f"None or a dict of fisher_moments arguments {FISHER_THEORY_REQUIRED}", theory)
            args = _check_theory(name, theory, fisher_moments, FISHER_THEORY_REQUIRED)
            if likelihood != "gaussian" or probe_size != 1:
                raise ConfigurationError(
                    f"{name}(theory): the prediction is for the single-input Fisher with a "
                    "unit-variance Gaussian likelihood; it needs likelihood='gaussian' and "
                    f"probe_size=1, got likelihood={likelihood!r}, probe_size={probe_size!r}"
                )
            self.prediction = fisher_moments(**args)
        check_choice(name, "likelihood", likelihood, LIKELIHOODS)
        check_choice(name, "method", method, FISHER_METHODS)
        k = check_int(name, "k", k, 1, optional=True)
        check_bool(name, "jacobian_ratio", jacobian_ratio)
        if fisher_kwargs is not None and not isinstance(fisher_kwargs, dict):
            fail(name, "fisher_kwargs", "a dict or None", fisher_kwargs)
        if fisher_kwargs and "seed" in fisher_kwargs:
            check_int(name, "fisher_kwargs['seed']", fisher_kwargs["seed"], 0)
            if "generator" in fisher_kwargs:
                fail(name, "fisher_kwargs", "a dict with 'seed' or 'generator', not both", fisher_kwargs)
        own = {"likelihood", "method", "k", "eval_mode"}
        clash = sorted(set(fisher_kwargs or {}) & own)
        if clash:
            raise ConfigurationError(
                f"{name}(fisher_kwargs): {clash} are arguments of the monitor itself; pass them "
                "directly, not in fisher_kwargs"
            )
        used = [spectra.fisher_eigenvalues] + ([spectra.spectral_density] if method == "slq" else [])
        accepted = set().union(*(inspect.signature(fn).parameters for fn in used)) - {"model", "x"}
        accepted.add("seed")  # turned into a generator at each measurement (see _kwargs)
        unknown = sorted(set(fisher_kwargs or {}) - accepted)
        if unknown:
            raise ConfigurationError(
                f"{name}(fisher_kwargs): {unknown} are not arguments of "
                f"{' or '.join(fn.__name__ for fn in used)} (method={method!r}); accepted: "
                f"{sorted(accepted - own)}"
            )
        if method == "slq" and self.prediction is not None:
            raise ConfigurationError(
                f"{name}(theory): compares the mean of the exact spectrum's eigenvalues; "
                "use method='exact', not 'slq'"
            )
        self.likelihood = likelihood
        self.method = method
        self.k = k
        self.jacobian_ratio = jacobian_ratio
        self.fisher_kwargs = dict(fisher_kwargs or {})

    @override
    def _state_key_args(self) -> dict[str, Any]:
        return {**super()._state_key_args(), "method": self.method, "k": self.k}

    def _kwargs(self, fn: Callable, device: torch.device) -> dict[str, Any]:
        """The ``fisher_kwargs`` that ``fn`` takes, an int ``seed`` as a fresh generator on
        ``device``."""
        accepted = inspect.signature(fn).parameters
        kwargs = dict(self.fisher_kwargs)
        if "seed" in kwargs:
            kwargs["generator"] = torch.Generator(device).manual_seed(kwargs.pop("seed"))
        return {k: v for k, v in kwargs.items() if k in accepted}

    @override
    def compute(self, pl_module: LightningModule, probe: Tensor | None) -> list[Spectrum]:
        common = {"likelihood": self.likelihood, "eval_mode": self.eval_mode}
        if self.method == "slq":
            eig, summary = self._slq(pl_module, probe, common)
        else:
            eig = spectra.fisher_eigenvalues(
                pl_module, probe, method=self.method, k=self.k, **common,
                **self._kwargs(spectra.fisher_eigenvalues, probe.device),
            )
            summary = dict(spectra.summarize(eig, kind="fisher"))
        if self.jacobian_ratio:
            # the logits' Jacobian (not the features'), on this monitor's probe
            s_max = float(spectra.jacobian_singular_values(pl_module, probe, eval_mode=self.eval_mode).max())
            summary["logits_jacobian_max"] = s_max
            summary["max_over_logits_jacobian_sq"] = summary["max"] / s_max**2 if s_max > 0 else math.inf
        extra = {}
        if self.prediction is not None:
            extra["theory_mean"] = self.prediction.mean
            extra["mean_over_theory"] = summary["mean"] / self.prediction.mean
        return [
            Spectrum(
                "spectra/fisher",
                eig,
                summary,
                histogram="eigenvalues",
                plot_label="eigenvalue of the Fisher information"
                + (" (SLQ density quantiles)" if self.method == "slq" else ""),
                extra=extra,
            )
        ]

    def _slq(self, pl_module: LightningModule, probe: Tensor, common: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        """(quantiles of the SLQ density above the null space's atom, {max, trace})."""
        lanczos = self._kwargs(spectra.fisher_eigenvalues, probe.device)
        top = float(spectra.fisher_eigenvalues(pl_module, probe, method="lanczos", k=1, **common, **lanczos)[0])
        kwargs = self._kwargs(spectra.spectral_density, probe.device)
        kwargs.setdefault("sigma", max(top, 1e-30) / 100)
        grid, density = spectra.spectral_density(pl_module, probe, **common, **kwargs)
        num_params = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        trace = num_params * float(torch.trapezoid(grid * density, grid))
        keep = grid > SLQ_CUT_SIGMAS * kwargs["sigma"]
        if int(keep.sum()) < 2:
            keep = torch.ones_like(keep)
        g, d = grid[keep], density[keep].clamp_min(0)
        cdf = torch.cat([d.new_zeros(1), torch.cumsum((d[1:] + d[:-1]) / 2 * g.diff(), 0)])
        if float(cdf[-1]) <= 0:
            return torch.tensor([top]), {"max": top, "trace": trace}
        levels = (torch.arange(SLQ_QUANTILES, dtype=torch.float64) + 0.5) / SLQ_QUANTILES * cdf[-1]
        index = torch.searchsorted(cdf, levels).clamp(1, len(g) - 1)
        lo, hi = cdf[index - 1], cdf[index]
        frac = ((levels - lo) / (hi - lo).clamp_min(1e-300)).clamp(0, 1)
        quantiles = g[index - 1] + frac * (g[index] - g[index - 1])
        return quantiles, {"max": top, "trace": trace}


def _key_label(label: str) -> str:
    """``weight_hh_l0[f]`` -> ``weight_hh_l0.f`` (brackets are not legal in every logger's keys)."""
    return label.replace("[", ".").replace("]", "")


class WeightSpectrumMonitor(SpectrumMonitor):
    """Log the singular values of every selected weight matrix.

    Args:
        include, exclude, types: which modules (the shared selector,
            :func:`ortho_lightning.selection.select_modules`; default every Linear, Conv and
            recurrent module). The matrix view is :func:`ortho_lightning.matrices.matrix_blocks`
            (Conv flattened to (out, in*k...), recurrent weights per gate).
        Other arguments (``log_spaced``: steps ``every_n_steps * 2**k``): see
            :class:`~ortho_lightning.callbacks._monitor_base.SpectrumMonitor`.

    Needs no probe batch. Logs ``spectra/weights/<module>.<matrix>/<summarize key>`` and a
    histogram ``.../singular_values`` per matrix; the figure shows all matrices pooled.
    """

    kind = "weights"
    needs_probe = False

    def __init__(
        self,
        every_n_steps: int | None = 1000,
        every_n_epochs: int | None = None,
        on_fit_start: bool = True,
        include: str | Sequence[str] | None = None,
        exclude: str | Sequence[str] | None = None,
        types: Sequence[type[nn.Module]] | None = None,
        histogram: bool = True,
        figure: bool = False,
        log_spaced: bool = False,
    ) -> None:
        super().__init__(
            every_n_steps=every_n_steps,
            every_n_epochs=every_n_epochs,
            on_fit_start=on_fit_start,
            probe_size=1,
            probe_source="train",
            input_fn=None,
            histogram=histogram,
            figure=figure,
            eval_mode=False,
            log_spaced=log_spaced,
        )
        self.selector = ModuleSelector.build(include, exclude, types, owner=type(self).__name__)

    @override
    def _state_key_args(self) -> dict[str, Any]:
        return {**super()._state_key_args(), "include": self.selector.include, "exclude": self.selector.exclude}

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit":
            self.selector.select(pl_module)  # a typo in include fails here, not as a warning later

    @override
    def compute(self, pl_module: LightningModule, probe: Tensor | None) -> list[Spectrum]:
        measured = []
        for name, module in self.selector.select(pl_module):
            for label, sv in spectra.weight_spectra(module).items():
                measured.append(
                    Spectrum(
                        f"spectra/weights/{name}.{_key_label(label)}",
                        sv,
                        dict(spectra.summarize(sv, kind="singular")),
                        histogram="singular_values",
                        plot_label="singular value of the weight matrices",
                    )
                )
        if self.figure and measured:
            pooled = torch.cat([s.values.flatten() for s in measured])
            measured[0] = Spectrum(**{**measured[0].__dict__, "plot_values": pooled})
        return measured
