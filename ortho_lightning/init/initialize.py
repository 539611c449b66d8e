"""``initialize``: apply one init scheme to every selected Linear / ConvNd / recurrent module.

Which matrix is initialised: a Linear's (out, in) weight; a conv's (out, in/groups, *kernel)
weight, group by group (so a grouped conv is orthogonal as a whole); a recurrent module's input
and recurrent matrices gate block by gate block (:mod:`ortho_lightning.init.recurrent`).
Biases get N(0, sigma_b^2) (zeros when sigma_b = 0). Modules are chosen by the one shared
:class:`~ortho_lightning.selection.ModuleSelector`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ortho_lightning.activations import Activation, get_activation
from ortho_lightning.exceptions import ConfigurationError, ShapeError
from ortho_lightning.init._random import standard_normal
from ortho_lightning.init.criticality import CriticalPoint, Gain, critical_point, resolve_gain
from ortho_lightning.init.delta_orthogonal import delta_orthogonal_
from ortho_lightning.init.gaussian import gaussian_, identity_
from ortho_lightning.init.orthogonal import orthogonal_
from ortho_lightning.init.recurrent import gate_blocks
from ortho_lightning.matrices import check_recurrent, is_recurrent
from ortho_lightning.selection import ModuleSelector

#: A scheme: ``fn(tensor, gain, generator=generator) -> tensor`` in place (``torch.nn.init``
#: functions such as ``xavier_uniform_`` fit this too).
SchemeFn = Callable[..., Tensor]

#: Named schemes; a callable with the :data:`SchemeFn` signature is accepted as well.
SCHEMES: dict[str, SchemeFn] = {
    "orthogonal": orthogonal_,
    "delta_orthogonal": delta_orthogonal_,
    "gaussian": gaussian_,
    "identity": identity_,
}


@dataclass(frozen=True)
class InitRecord:
    """What was done to one matrix (or gate block, or conv group) or bias."""

    name: str
    shape: tuple[int, ...]
    scheme: str
    gain: float


@dataclass(frozen=True)
class InitReport:
    """The records of one :func:`initialize` call; ``str(report)`` is an aligned text table.

    Attributes:
        records: one :class:`InitRecord` per initialised tensor block, in module order.
        critical: the critical point used when ``gain="critical"``, else ``None``.
    """

    records: tuple[InitRecord, ...]
    critical: CriticalPoint | None = None

    columns: ClassVar[tuple[str, ...]] = ("name", "shape", "scheme", "gain")

    def rows(self) -> list[list[Any]]:
        """The records as rows under :attr:`columns` (shape as ``"64x32"``, gain rounded)."""
        return [
            [r.name, "x".join(map(str, r.shape)), r.scheme, round(r.gain, 6)] for r in self.records
        ]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[InitRecord]:
        return iter(self.records)

    def __str__(self) -> str:
        cells = [list(self.columns)] + [[str(v) for v in row] for row in self.rows()]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        if self.critical is not None:
            c = self.critical
            lines.append(
                f"critical point: sigma_w={c.sigma_w:.6g} sigma_b={c.sigma_b:.6g} "
                f"q*={c.q_star:.6g} chi={c.chi:.6g} depth_scale={c.depth_scale:.6g}"
            )
        return "\n".join(lines)


def resolve_scheme(scheme: str | SchemeFn, argument: str = "scheme") -> tuple[str, SchemeFn]:
    """``(name, function)`` for a scheme name from :data:`SCHEMES` or a callable."""
    if callable(scheme):
        return getattr(scheme, "__name__", type(scheme).__name__), scheme
    if isinstance(scheme, str) and scheme in SCHEMES:
        return scheme, SCHEMES[scheme]
    raise ConfigurationError(
        f"{argument}: expected one of {sorted(SCHEMES)} or a callable fn(tensor, gain, "
        f"generator=...), got {scheme!r}"
    )


@dataclass(frozen=True)
class InitConfig:
    """The checked arguments of :func:`initialize` (also built by ``OrthogonalInit.__init__``,
    so a bad argument fails when the callback is made)."""

    scheme: tuple[str, SchemeFn]
    gain: float
    activation: str | Activation
    sigma_b: float
    selector: ModuleSelector
    fallback: tuple[str, SchemeFn] | None
    critical: CriticalPoint | None
    recurrent: str = "all"

    @classmethod
    def build(
        cls,
        scheme: str | SchemeFn = "orthogonal",
        gain: Gain = 1.0,
        activation: str | Activation = "tanh",
        sigma_b: float = 0.0,
        include: str | Sequence[str] | None = None,
        exclude: str | Sequence[str] | None = None,
        fallback: str | SchemeFn | None = None,
        recurrent: str = "all",
    ) -> InitConfig:
        get_activation(activation)
        check_recurrent(recurrent)
        if (
            isinstance(sigma_b, bool)
            or not isinstance(sigma_b, int | float)
            or not 0 <= sigma_b < math.inf
        ):
            raise ConfigurationError(f"sigma_b: expected a finite number >= 0, got {sigma_b!r}")
        critical = None
        if isinstance(gain, str) and gain.lower() == "critical":
            critical = critical_point(activation, float(sigma_b))
        return cls(
            scheme=resolve_scheme(scheme),
            gain=critical.sigma_w if critical else resolve_gain(gain, activation, float(sigma_b)),
            activation=activation,
            sigma_b=float(sigma_b),
            selector=ModuleSelector.build(include, exclude),
            fallback=None if fallback is None else resolve_scheme(fallback, "fallback"),
            critical=critical,
            recurrent=recurrent,
        )


def weight_views(module: nn.Module) -> list[tuple[str, Tensor]]:
    """``(label, view)`` of the matrices of ``module`` that a scheme is applied to, one by one:
    gate blocks of recurrent modules, groups of a grouped conv, else the whole weight."""
    if is_recurrent(module):
        return gate_blocks(module)
    weight = module.weight
    groups = getattr(module, "groups", 1)
    if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d) and groups > 1:
        size = weight.shape[0] // groups
        return [(f"weight[group {g}]", weight[g * size : (g + 1) * size]) for g in range(groups)]
    return [("weight", weight)]


def initialize(
    model: nn.Module,
    scheme: str | SchemeFn = "orthogonal",
    gain: Gain = 1.0,
    activation: str | Activation = "tanh",
    sigma_b: float = 0.0,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    fallback: str | SchemeFn | None = None,
    recurrent: str = "all",
    generator: torch.Generator | None = None,
) -> InitReport:
    """Initialise every selected Linear / ConvNd / recurrent module of ``model`` in place.

    Args:
        model: any ``nn.Module``.
        scheme: ``"orthogonal"``, ``"delta_orthogonal"``, ``"gaussian"``, ``"identity"`` or a
            callable ``fn(tensor, gain, generator=...)`` (e.g. ``torch.nn.init.xavier_normal_``).
        gain: float, or ``"critical"``: sigma_w of ``critical_point(activation, sigma_b)``.
            For orthogonal schemes W^T W = gain^2 I; for ``"gaussian"`` the weights are
            N(0, gain^2 / fan_in).
        activation: the network's activation (only used by ``gain="critical"``).
        sigma_b: biases are drawn from N(0, sigma_b^2) (zeros when 0).
        include, exclude: module-name patterns (``fnmatch``) for the shared selector.
        fallback: scheme used where ``scheme`` cannot apply (e.g. ``"orthogonal"`` for the
            Linear layers of a CNN under ``"delta_orthogonal"``); ``None`` makes that an error.
        recurrent: ``"all"``: every matrix and bias of a recurrent module; ``"hh"``: only its
            hidden-to-hidden matrices (input matrices and biases keep their values), as in
            recipes that set the recurrent matrix alone (e.g. an orthogonal ``W_hh`` with a
            gain). Other modules are treated the same either way.
        generator: random source for every draw (same generator state -> same weights).

    Returns:
        :class:`InitReport`, one record per initialised matrix block and bias.

    Raises:
        ShapeError: the scheme cannot apply to a module and no fallback was given (the message
            names the module).
        ConfigurationError: a bad argument, or a weight already parametrized (initialise
            before adding constraints).
        SelectionError: an include pattern matched no module.
    """
    config = InitConfig.build(
        scheme, gain, activation, sigma_b, include, exclude, fallback, recurrent
    )
    return apply_config(model, config, generator)


def apply_config(
    model: nn.Module, config: InitConfig, generator: torch.Generator | None = None
) -> InitReport:
    """:func:`initialize` with arguments already checked into an :class:`InitConfig`."""
    records: list[InitRecord] = []
    scheme_name, scheme_fn = config.scheme
    for module_name, module in config.selector.select(model):
        prefix = f"{module_name}." if module_name else ""
        for tensor_name in {n.split("[")[0] for n, _ in weight_views(module)}:
            if parametrize.is_parametrized(module, tensor_name):
                raise ConfigurationError(
                    f"module '{module_name}' ({type(module).__name__}): '{tensor_name}' is "
                    "parametrized (e.g. by orthogonalize); initialise before adding constraints "
                    "(put OrthogonalInit before OrthogonalConstraint in the callbacks)"
                )
        hidden_only = config.recurrent == "hh" and is_recurrent(module)
        views = weight_views(module)
        if hidden_only:
            views = [(label, v) for label, v in views if label.startswith(("weight_hh", "weight_hr"))]
        for label, view in views:
            used = scheme_name
            try:
                scheme_fn(view, config.gain, generator=generator)
            except ShapeError as err:
                if config.fallback is None:
                    raise ShapeError(
                        f"module '{module_name}' ({type(module).__name__}): scheme "
                        f"'{scheme_name}' cannot initialise {label} of shape "
                        f"{tuple(view.shape)}: {err}. Pass fallback='orthogonal' (or another "
                        "scheme) to use it where this one cannot apply."
                    ) from err
                used, fallback_fn = config.fallback
                fallback_fn(view, config.gain, generator=generator)
            records.append(InitRecord(prefix + label, tuple(view.shape), used, config.gain))
        for name, bias in module.named_parameters(recurse=False):
            if not name.startswith("bias") or hidden_only:
                continue
            with torch.no_grad():
                if config.sigma_b > 0:
                    bias.copy_(standard_normal(tuple(bias.shape), bias, generator) * config.sigma_b)
                else:
                    bias.zero_()
            kind = "normal" if config.sigma_b > 0 else "zeros"
            records.append(InitRecord(prefix + name, tuple(bias.shape), kind, config.sigma_b))
    return InitReport(tuple(records), config.critical)

