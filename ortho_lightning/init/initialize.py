"""``initialize``: apply one init scheme to every selected Linear / ConvNd / recurrent module.

Which matrix is initialised: a Linear's (out, in) weight; a conv's (out, in/groups, *kernel)
weight, group by group (so a grouped conv is orthogonal as a whole); a recurrent module's input
and recurrent matrices gate block by gate block (:mod:`ortho_lightning.init.recurrent`).
Biases get N(0, sigma_b^2) (zeros when sigma_b = 0). Modules are chosen by the one shared
:class:`~ortho_lightning.selection.ModuleSelector`.

Two options make the init reproduce a setting rather than a formula: ``input_q="match"`` rescales
the first layer so the data enter at q* (:mod:`ortho_lightning.init.input_matching`), and
``rest="keras"`` gives every weight the scheme leaves alone Keras' defaults
(:mod:`ortho_lightning.init.glorot`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ortho_lightning.activations import Activation, get_activation
from ortho_lightning.exceptions import ConfigurationError, ShapeError
from ortho_lightning.init._random import standard_normal
from ortho_lightning.init.criticality import Gain, resolve_gain
from ortho_lightning.init.delta_orthogonal import delta_orthogonal_
from ortho_lightning.init.gaussian import gaussian_, identity_
from ortho_lightning.init.glorot import glorot_normal_, glorot_uniform_
from ortho_lightning.init.input_matching import (
    input_second_moment,
    match_input_layer_,
    preactivation_q,
)
from ortho_lightning.init.orthogonal import orthogonal_
from ortho_lightning.init.recurrent import gate_blocks
from ortho_lightning.matrices import RECURRENT_CHOICES, is_recurrent, matrix_views
from ortho_lightning.selection import ModuleSelector
from ortho_lightning.validation import check_choice, check_number, fail

if TYPE_CHECKING:  # theory is imported on first use (gain="critical"), not with init
    from ortho_lightning.theory.criticality import CriticalPoint

#: A scheme: ``fn(tensor, gain, generator=generator) -> tensor`` in place (``torch.nn.init``
#: functions such as ``xavier_uniform_`` fit this too).
SchemeFn = Callable[..., Tensor]

#: Named schemes; a callable with the :data:`SchemeFn` signature is accepted as well.
SCHEMES: dict[str, SchemeFn] = {
    "orthogonal": orthogonal_,
    "delta_orthogonal": delta_orthogonal_,
    "gaussian": gaussian_,
    "identity": identity_,
    "glorot_uniform": glorot_uniform_,
    "glorot_normal": glorot_normal_,
}

#: What happens to the weights and biases of Linear / ConvNd / recurrent modules that the scheme
#: does not set (modules not selected; with ``recurrent="hh"`` the input matrices and biases).
REST_CHOICES: tuple[str, ...] = ("keep", "keras")

#: module types ``rest="keras"`` initialises (besides recurrent ones): Keras' Dense and Conv
KERAS_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

#: ``input_q`` values: ``None`` (the first layer is initialised like the others) or ``"match"``.
INPUT_Q_CHOICES: tuple[str | None, ...] = (None, "match")

#: what ``recurrent=None`` (the default) means in this release; it becomes ``"hh"`` in 0.3.0
#: (Keras and the literature: W_hh orthogonal, W_ih Glorot), as the constraint's default already is
RECURRENT_DEFAULT = "all"


@dataclass(frozen=True)
class InitRecord:
    """What was done to one matrix (or gate block, or conv group) or bias."""

    name: str
    shape: tuple[int, ...]
    scheme: str
    gain: float
    q: float | None = None


@dataclass(frozen=True)
class InitReport:
    """The records of one :func:`initialize` call; ``str(report)`` is an aligned text table.

    Attributes:
        records: one :class:`InitRecord` per initialised tensor block, in module order. With
            ``inputs`` given as a batch, each Linear / ConvNd weight's record carries ``q``, the
            second moment of that layer's pre-activations measured on the batch (to hold
            beside q*).
        critical: the critical point used when ``gain="critical"``, else ``None``.
        input_second_moment: m2 = mean(x^2) of the inputs the first layer was matched to
            (``input_q="match"``), else ``None``.
    """

    records: tuple[InitRecord, ...]
    critical: CriticalPoint | None = None
    input_second_moment: float | None = None

    columns: ClassVar[tuple[str, ...]] = ("name", "shape", "scheme", "gain", "q")

    def rows(self) -> list[list[Any]]:
        """The records as rows under :attr:`columns` (shape as ``"64x32"``, gain and q rounded,
        q ``None`` where not measured)."""
        return [
            [r.name, "x".join(map(str, r.shape)), r.scheme, round(r.gain, 6),
             None if r.q is None else round(r.q, 6)]
            for r in self.records
        ]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[InitRecord]:
        return iter(self.records)

    def __str__(self) -> str:
        cells = [list(self.columns)] + [
            ["" if v is None else str(v) for v in row] for row in self.rows()
        ]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        if self.critical is not None:
            c = self.critical
            lines.append(
                f"critical point: sigma_w={c.sigma_w:.6g} sigma_b={c.sigma_b:.6g} "
                f"q*={c.q_star:.6g} chi={c.chi:.6g} depth_scale={c.depth_scale:.6g}"
            )
        if self.input_second_moment is not None:
            lines.append(f"input second moment mean(x^2) = {self.input_second_moment:.6g}")
        return "\n".join(lines)


def resolve_scheme(scheme: str | SchemeFn, argument: str = "scheme",
                   owner: str = "initialize") -> tuple[str, SchemeFn]:
    """``(name, function)`` for a scheme name from :data:`SCHEMES` or a callable."""
    if callable(scheme):
        return getattr(scheme, "__name__", type(scheme).__name__), scheme
    if isinstance(scheme, str) and scheme in SCHEMES:
        return scheme, SCHEMES[scheme]
    fail(owner, argument,
         f"one of {sorted(SCHEMES)} or a callable fn(tensor, gain, generator=...)", scheme)


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
    recurrent: str = RECURRENT_DEFAULT
    input_q: str | None = None
    rest: str = "keep"
    #: the function or callback named in errors and warnings
    owner: str = "initialize"
    #: ``recurrent`` was not passed: initialising a recurrent module warns that the default
    #: changes in 0.3.0
    recurrent_defaulted: bool = False

    @classmethod
    def build(
        cls,
        scheme: str | SchemeFn = "orthogonal",
        gain: Gain = 1.0,
        activation: str | Activation = "tanh",
        sigma_b: float | None = None,
        include: str | Sequence[str] | None = None,
        exclude: str | Sequence[str] | None = None,
        fallback: str | SchemeFn | None = None,
        recurrent: str | None = None,
        *,
        q_star: float | None = None,
        input_q: str | None = None,
        rest: str = "keep",
        owner: str = "initialize",
    ) -> InitConfig:
        """Check every argument (``owner``: the function or callback named in errors and
        warnings); ``recurrent=None`` is :data:`RECURRENT_DEFAULT`, remembered as not passed."""
        get_activation(activation, owner)
        defaulted = recurrent is None
        recurrent = RECURRENT_DEFAULT if recurrent is None else recurrent
        check_choice(owner, "recurrent", recurrent, RECURRENT_CHOICES)
        check_choice(owner, "input_q", input_q, INPUT_Q_CHOICES)
        check_choice(owner, "rest", rest, REST_CHOICES)
        critical = None
        if isinstance(gain, str) and gain.lower() == "critical":
            from ortho_lightning.theory.criticality import critical_point

            critical = critical_point(activation, sigma_b, q_star=q_star)
            sigma_b = critical.sigma_b
        sigma_b = check_number(owner, "sigma_b", 0.0 if sigma_b is None else sigma_b, minimum=0)
        value = critical.sigma_w if critical else resolve_gain(gain, activation, sigma_b, owner=owner)
        if not value > 0:
            fail(owner, "gain", "a number > 0 or 'critical' (0 makes every weight zero, a "
                 "negative gain flips their sign)", gain)
        if critical is None and q_star is not None:
            raise ConfigurationError(
                f"{owner}: q_star is only used with gain='critical' (it picks the critical "
                f"point), got q_star={q_star!r} with gain={gain!r}"
            )
        if input_q == "match" and critical is None:
            raise ConfigurationError(
                f"{owner}: input_q='match' puts the first layer's pre-activations at the fixed "
                f"point q*: it needs gain='critical' (which defines q*), got gain={gain!r}"
            )
        return cls(
            scheme=resolve_scheme(scheme, owner=owner),
            gain=value,
            activation=activation,
            sigma_b=float(sigma_b),
            selector=ModuleSelector.build(include, exclude),
            fallback=None if fallback is None else resolve_scheme(fallback, "fallback", owner),
            critical=critical,
            recurrent=recurrent,
            input_q=input_q,
            rest=rest,
            owner=owner,
            recurrent_defaulted=defaulted,
        )


def weight_views(module: nn.Module) -> list[tuple[str, Tensor]]:
    """``(label, view)`` of the matrices of ``module`` that a scheme is applied to, one by one:
    the shared :func:`~ortho_lightning.matrices.matrix_views` (gate blocks of recurrent
    modules, groups of a grouped conv, else the whole weight), plus an LSTM's projection
    ``weight_hr`` (:func:`~ortho_lightning.init.recurrent.gate_blocks`)."""
    return gate_blocks(module) if is_recurrent(module) else matrix_views(module)


def initialize(
    model: nn.Module,
    scheme: str | SchemeFn = "orthogonal",
    gain: Gain = 1.0,
    activation: str | Activation = "tanh",
    sigma_b: float | None = None,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    fallback: str | SchemeFn | None = None,
    recurrent: str | None = None,
    generator: torch.Generator | None = None,
    *,
    q_star: float | None = None,
    input_q: str | None = None,
    inputs: Tensor | float | None = None,
    rest: str = "keep",
) -> InitReport:
    """Initialise every selected Linear / ConvNd / recurrent module of ``model`` in place.

    Args:
        model: any ``nn.Module``.
        scheme: ``"orthogonal"``, ``"delta_orthogonal"``, ``"gaussian"``, ``"identity"``,
            ``"glorot_uniform"``, ``"glorot_normal"`` (Keras' initialisers) or a callable
            ``fn(tensor, gain, generator=...)`` (e.g. ``torch.nn.init.xavier_normal_``).
        gain: a float > 0, or ``"critical"``: sigma_w of ``critical_point(activation, sigma_b)``
            (or of ``critical_point(activation, q_star=q_star)``). For orthogonal schemes
            W^T W = gain^2 I; for ``"gaussian"`` the weights are N(0, gain^2 / fan_in).
        activation: the network's activation (only used by ``gain="critical"``).
        sigma_b: biases are drawn from N(0, sigma_b^2) (zeros when 0; default 0, or the critical
            point's sigma_b when ``q_star`` is given).
        include, exclude: module-name patterns (``fnmatch``) for the shared selector.
        fallback: scheme used where ``scheme`` cannot apply (e.g. ``"orthogonal"`` for the
            Linear layers of a CNN under ``"delta_orthogonal"``); ``None`` makes that an error.
        recurrent: ``"all"``: every matrix and bias of a recurrent module; ``"hh"``: only its
            hidden-to-hidden matrices (input matrices and biases keep their values), as in
            recipes that set the recurrent matrix alone (e.g. an orthogonal ``W_hh`` with a
            gain). Other modules are treated the same either way. Not passing it means
            ``"all"`` in this release, with a ``FutureWarning`` when a selected module is
            recurrent: the default becomes ``"hh"`` in 0.3.0 (as the constraint's).
        generator: random source for every draw (same generator state -> same weights).
        q_star: with ``gain="critical"``, the fixed point to sit at instead of ``sigma_b``.
        input_q: ``"match"``: rescale the first selected module's input matrix so that its
            pre-activations have second moment q* on ``inputs``
            (:mod:`ortho_lightning.init.input_matching`); ``None``: leave it at ``gain``.
        inputs: a batch of the model's inputs, or their second moment mean(x^2) (a number).
            Needed by ``input_q="match"``; a batch also fills the report's measured ``q`` of
            every Linear / ConvNd layer.
        rest: what the weights the scheme does not set get (modules not selected; with
            ``recurrent="hh"`` the input matrices and biases): ``"keep"`` leaves them, ``"keras"``
            gives them Keras' defaults (Glorot-uniform kernels, orthogonal recurrent kernels,
            zero biases; whole stacked tensors, as Keras stores them), so a Keras experiment can
            be reproduced.

    Returns:
        :class:`InitReport`, one record per initialised matrix block and bias.

    Raises:
        ShapeError: the scheme cannot apply to a module and no fallback was given (the message
            names the module).
        ConfigurationError: a bad argument, ``input_q="match"`` without ``inputs``, or a weight
            already parametrized (initialise before adding constraints).
        SelectionError: an include pattern matched no module.
    """
    config = InitConfig.build(
        scheme, gain, activation, sigma_b, include, exclude, fallback, recurrent,
        q_star=q_star, input_q=input_q, rest=rest,
    )
    return apply_config(model, config, generator, inputs)


def apply_config(
    model: nn.Module,
    config: InitConfig,
    generator: torch.Generator | None = None,
    inputs: Tensor | float | None = None,
) -> InitReport:
    """:func:`initialize` with arguments already checked into an :class:`InitConfig`."""
    if config.input_q == "match" and inputs is None:
        raise ConfigurationError(
            f"{config.owner}: input_q='match' needs the data's scale: pass inputs= a batch of the model's inputs "
            "or their second moment mean(x^2) (OrthogonalInit reads a batch of the training data)"
        )
    m2 = None if inputs is None else input_second_moment(inputs, config.owner)
    records: list[InitRecord] = []
    touched: set[tuple[str, str]] = set()
    scheme_name, scheme_fn = config.scheme
    selected = config.selector.select(model)
    if config.recurrent_defaulted and any(is_recurrent(m) for _, m in selected):
        warnings.warn(
            f"{config.owner}: the default recurrent='all' becomes 'hh' in 0.3.0; "
            "pass recurrent= explicitly",
            FutureWarning, stacklevel=3,
        )
    for module_name, module in selected:
        prefix = f"{module_name}." if module_name else ""
        for tensor_name in {n.split("[")[0] for n, _ in weight_views(module)}:
            _check_not_parametrized(module_name, module, tensor_name)
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
            touched.add((module_name, label.split("[")[0]))
        for name, bias in module.named_parameters(recurse=False):
            if not name.startswith("bias") or hidden_only:
                continue
            with torch.no_grad():
                if config.sigma_b > 0:
                    bias.copy_(standard_normal(tuple(bias.shape), bias, generator) * config.sigma_b)
                else:
                    bias.zero_()
            touched.add((module_name, name))
            kind = "normal" if config.sigma_b > 0 else "zeros"
            records.append(InitRecord(prefix + name, tuple(bias.shape), kind, config.sigma_b))
    if config.rest == "keras":
        records += _keras_rest(model, touched, generator)
    if config.input_q == "match":
        records = _match_first_layer(selected, config, m2, records)
    if isinstance(inputs, Tensor):
        records = _with_measured_q(model, inputs, records)
    return InitReport(tuple(records), config.critical, m2 if config.input_q else None)


def _check_not_parametrized(module_name: str, module: nn.Module, tensor_name: str) -> None:
    if parametrize.is_parametrized(module, tensor_name):
        raise ConfigurationError(
            f"module '{module_name}' ({type(module).__name__}): '{tensor_name}' is "
            "parametrized (e.g. by orthogonalize); initialise before adding constraints "
            "(put OrthogonalInit before OrthogonalConstraint in the callbacks)"
        )


def _keras_rest(
    model: nn.Module, touched: set[tuple[str, str]], generator: torch.Generator | None
) -> list[InitRecord]:
    """Keras' defaults for every weight and bias of a Linear / ConvNd / recurrent module that is
    not in ``touched``: Glorot-uniform kernels, orthogonal recurrent kernels (gain 1, the whole
    stacked tensor, as Keras' ``recurrent_initializer="orthogonal"``), zero biases."""
    records = []
    for module_name, module in model.named_modules():
        if not (is_recurrent(module) or isinstance(module, KERAS_MODULES)):
            continue
        prefix = f"{module_name}." if module_name else ""
        for name, tensor in module.named_parameters(recurse=False):
            if (module_name, name) in touched or not name.startswith(("weight", "bias")):
                continue
            _check_not_parametrized(module_name, module, name)
            if name.startswith("bias"):
                with torch.no_grad():
                    tensor.zero_()
                kind = "zeros"
            elif name.startswith(("weight_hh", "weight_hr")):
                orthogonal_(tensor, 1.0, generator=generator)
                kind = "orthogonal"
            else:
                glorot_uniform_(tensor, 1.0, generator=generator)
                kind = "glorot_uniform"
            records.append(InitRecord(f"{prefix}{name}", tuple(tensor.shape), f"keras {kind}", 1.0))
    return records


def _match_first_layer(
    selected: list[tuple[str, nn.Module]], config: InitConfig, m2: float | None,
    records: list[InitRecord],
) -> list[InitRecord]:
    """Rescale the first selected module's input matrix to q* (``input_q="match"``) and its
    records' gains with it."""
    assert config.critical is not None and m2 is not None
    name, module = selected[0]
    if config.recurrent == "hh" and is_recurrent(module):
        raise ConfigurationError(
            f"input_q='match' rescales the input matrix of module '{name}', which "
            "recurrent='hh' leaves alone; use recurrent='all'"
        )
    factor = match_input_layer_(module, config.critical.q_star, m2)
    prefix = f"{name}." if name else ""
    return [
        InitRecord(r.name, r.shape, f"{r.scheme} (input matched)", r.gain * factor, r.q)
        if r.name.startswith(prefix + "weight") and not r.name.startswith(prefix + "weight_hh")
        else r
        for r in records
    ]


def _with_measured_q(model: nn.Module, x: Tensor, records: list[InitRecord]) -> list[InitRecord]:
    """``records`` with ``q`` filled in for every Linear / ConvNd weight, measured on ``x``."""
    device = next((p.device for p in model.parameters()), x.device)
    measured = preactivation_q(model, x.to(device))
    return [
        InitRecord(r.name, r.shape, r.scheme, r.gain, measured.get(_owner(r.name), r.q))
        if r.name.split("[")[0].endswith(".weight") or r.name.split("[")[0] == "weight"
        else r
        for r in records
    ]


def _owner(record_name: str) -> str:
    """The module name of a record named ``<module>.weight[...]``."""
    return record_name.split("[")[0].rpartition(".")[0]
