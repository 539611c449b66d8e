"""Hard orthogonality constraints: geotorch manifolds behind ``torch.nn.utils.parametrize``.

``orthogonalize(module, "weight", gain=g)`` makes the module see ``g * Q`` where, for each block
of :func:`ortho_lightning.matrices.matrix_blocks`,

- ``Q`` has orthonormal columns (rows when wide): geotorch's ``Stiefel`` (the orthogonal group
  when square), trivialized by ``expm`` or ``cayley``;
- or, with ``relax=lam``, ``Q`` has its singular values in ``[1 - lam, 1 + lam]``: geotorch's
  ``AlmostOrthogonal``.

Which matrix is made orthogonal (the view of :mod:`ortho_lightning.matrices`):

- ``nn.Linear``: the (out, in) weight.
- ``nn.ConvNd``: the flattened (out, in * prod(kernel)) matrix, one per group of a grouped conv
  (the groups share one batched manifold, like gate blocks). geotorch and torch's
  ``parametrizations.orthogonal`` instead constrain each k x k kernel slice; the flattened view is
  the one for which ``W^T W = g^2 I`` means the layer preserves norms of patches.
- ``nn.RNN/LSTM/GRU`` (and cells): each stacked gate block of ``weight_hh_l*`` / ``weight_ih_l*``
  on its own. The blocks share one geotorch manifold with a batch dimension (geotorch treats
  leading dimensions as a batch of matrices), so all gates cost one batched ``expm``.

Differences from geotorch's own ``geotorch.orthogonal``:

- the constrained point starts at the projection of the current weight (its orthogonal polar
  factor, or, with ``relax``, its singular values clipped into the inner 90% of the band, where
  geotorch's ``sin`` map still has a gradient) instead of a fresh Haar sample, so an orthogonal
  init survives; ``init="haar"`` asks for geotorch's sample instead;
- the gain is kept (geotorch and torch return unit-scale matrices);
- the parametrization is computed in float32 or wider with autocast off (under bf16/16-mixed the
  module then casts ``g * Q`` like any other weight); under bf16-true/16-true, where the
  unconstrained tensor and the base point are half precision, the trivialization (expm, cayley or
  a callable) is evaluated in float32 and rounded;
- a parametrized module still loads a *plain* state dict (``weight`` instead of
  ``parametrizations.weight.*``): the plain weight is projected onto the manifold.

Dynamic trivialization (Lezcano-Casado 2019), as geotorch 0.4 supports it: call
:func:`update_base` every so many optimizer steps; it moves the manifold base point to the current
weight and zeroes the unconstrained tensor (the optimizer keeps its state). geotorch's own
``geotorch.utils.update_base`` assigns through ``setattr``, i.e. ``Tensor.set_``, which breaks
DDP's gradient hooks; ours copies in place (:func:`assign_`).

Speed: the parametrized tensor is recomputed at every access. A fused ``nn.RNN/LSTM/GRU`` reads
its weights once for all time steps, but through ``hasattr`` + ``getattr`` both when checking
whether its cached ``_flat_weights`` are stale and when refreshing them: measured on torch 2.13,
4 computations of the first parametrized weight and 2 of each other one per forward (the fused
kernel then does use the fresh values; tests compare with a hand-written recurrence). Inside ``torch.nn.utils.parametrize.cached()`` every
weight is computed once per context; ``OrthogonalConstraint`` opens one around every training
batch. Outside Lightning::

    with torch.nn.utils.parametrize.cached():
        loss = loss_fn(model(x), y)
    loss.backward(); optimizer.step()
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import geotorch
import torch
from geotorch.so import cayley_map
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ortho_lightning.constraints.expm import skew_expm
from ortho_lightning.constraints.projection import polar_factor
from ortho_lightning.exceptions import ConfigurationError, NonFiniteError, ShapeError
from ortho_lightning.matrices import (
    check_recurrent,
    is_recurrent,
    matrix_blocks,
    recurrent_weight_names,
)
from ortho_lightning.selection import ModuleSelector

__all__ = [
    "OrthogonalMatrix",
    "orthogonalize",
    "remove_orthogonalization",
    "is_orthogonalized",
    "orthogonalized_tensors",
    "update_base",
    "assign_",
    "check_finite",
    "split_state_dict",
    "matrix_tensor_names",
    "selected_tensors",
]

TRIVIALIZATIONS = ("expm", "cayley")
INITS = ("current", "haar")
#: projected singular values are clipped into ``1 +- (1 - _BAND_MARGIN) * relax``: geotorch maps
#: them through ``1 + relax * sin(s)``, whose derivative vanishes on the band's edges, so a start
#: exactly on an edge could never move off it
_BAND_MARGIN = 0.1


class OrthogonalMatrix(nn.Module):
    """Parametrization ``X -> gain * Q(X)`` of a tensor of shape ``shape`` whose matrix view is
    ``n_blocks`` stacked row blocks, each on a geotorch manifold (``triv="expm"`` uses
    :func:`ortho_lightning.constraints.expm.skew_expm`: the same map, a cheaper exact gradient).

    The unconstrained tensor has the weight's own shape; ``forward`` views it as
    ``(n_blocks, rows // n_blocks, cols)``, applies the (batched) manifold and reshapes back.

    Attributes:
        manifold: the geotorch ``Stiefel`` or ``AlmostOrthogonal`` module (holds the base point).
        gain, relax, n_blocks, shape.
        name: how errors name the tensor (``"rnn.weight_hh_l0"``).
    """

    def __init__(
        self,
        shape: torch.Size,
        n_blocks: int = 1,
        gain: float = 1.0,
        triv: str | Callable = "expm",
        relax: float | None = None,
        name: str = "weight",
    ) -> None:
        super().__init__()
        self.name = name
        self.shape = torch.Size(shape)
        rows, cols = self.shape[0], self.shape[1:].numel()
        self.n_blocks = n_blocks
        self.gain = float(gain)
        self.relax = relax
        size = (n_blocks, rows // n_blocks, cols)
        if triv == "expm":
            triv = skew_expm  # same map as geotorch's, ~4.5x cheaper forward + backward
        elif triv == "cayley":
            triv = cayley_map
        triv = _in_float32(triv)
        with _private_rng(torch.device("cpu")):  # geotorch fills its base with a random sample
            if relax is None:
                self.manifold = geotorch.Stiefel(size, triv=triv)
            else:
                self.manifold = geotorch.AlmostOrthogonal(size, lam=relax, triv=triv)

    def _blocks(self, X: Tensor) -> Tensor:
        return X.reshape(self.n_blocks, self.shape[0] // self.n_blocks, -1)

    def forward(self, X: Tensor) -> Tensor:
        with torch.autocast(X.device.type, enabled=False):
            try:
                Q = self.manifold(self._blocks(X))
            except RuntimeError:  # eigh/solve fail on inf or NaN (linalg.LinAlgError)
                check_finite(X, self.name)
                raise
            return (self.gain * Q).reshape(self.shape)

    @torch.no_grad()
    def project(self, W: Tensor, band_margin: float = _BAND_MARGIN) -> Tensor:
        """The nearest point of the manifold to ``W / gain``, as ``(n_blocks, r, c)`` blocks
        (relaxed: singular values clipped into ``1 +- (1 - band_margin) * relax``)."""
        M = self._blocks(W) / self.gain
        if self.relax is None:
            return polar_factor(M)
        U, S, Vh = torch.linalg.svd(M, full_matrices=False)
        band = self.relax * (1 - band_margin)
        return (U * S.clamp(1 - band, 1 + band).unsqueeze(-2)) @ Vh

    @torch.no_grad()
    def right_inverse(self, W: Tensor, band_margin: float = _BAND_MARGIN) -> Tensor:
        """Unconstrained tensor whose image is the projection of ``W``: sets the manifold's base
        point there and returns zeros (orthogonal case) or the SVD coordinates (relaxed case).

        Random completions geotorch needs for rectangular matrices come from a fixed seed, so the
        global RNG is untouched and every process gets the same base point."""
        P = self.project(W, band_margin)
        with _private_rng(W.device):
            X = self.manifold.right_inverse(P, check_in_manifold=False)
        return X.reshape(self.shape).to(W.dtype)

    def extra_repr(self) -> str:
        relax = "" if self.relax is None else f", relax={self.relax}"
        return f"n_blocks={self.n_blocks}, gain={self.gain}{relax}"


def check_finite(X: Tensor, name: str) -> None:
    """Raise :class:`NonFiniteError` naming ``name`` when the unconstrained tensor ``X`` holds inf
    or NaN (what an optimizer step with a non-finite gradient, e.g. from an infinite loss, leaves
    behind; the orthogonal map of such a tensor is undefined)."""
    bad = ~torch.isfinite(X)
    if bad.any():
        raise NonFiniteError(
            f"{name}: the unconstrained tensor of the orthogonality constraint holds "
            f"{int(bad.sum())} non-finite values (inf/NaN) of {X.numel()}, so its orthogonal "
            "weight is undefined. An optimizer step that applies a non-finite gradient (from an "
            "infinite or NaN loss, or an overflow) leaves this behind; lower the learning rate, "
            "clip gradients, or find where the loss stops being finite"
        )


def _in_float32(triv: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``triv`` evaluated in float32 for float16/bfloat16 tensors and rounded back (``eigh`` and
    ``lu`` have no half-precision CPU kernels; under ``bf16-true``/``16-true`` the model's
    unconstrained tensors and base points are half precision)."""

    def trivialization(X: Tensor) -> Tensor:
        return triv(X.to(torch.promote_types(X.dtype, torch.float32))).to(X.dtype)

    trivialization.__name__ = getattr(triv, "__name__", "triv")  # geotorch prints it
    return trivialization


@contextmanager
def _private_rng(device: torch.device) -> Iterator[None]:
    """A fixed-seed RNG for geotorch's internal draws; the global RNG state is restored after."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        torch.manual_seed(0)
        yield


def _parametrization(module: nn.Module, tensor_name: str) -> OrthogonalMatrix | None:
    if not parametrize.is_parametrized(module, tensor_name):
        return None
    for p in module.parametrizations[tensor_name]:
        if isinstance(p, OrthogonalMatrix):
            return p
    return None


def is_orthogonalized(module: nn.Module, tensor_name: str = "weight") -> bool:
    """Whether ``module.<tensor_name>`` carries an :class:`OrthogonalMatrix` parametrization."""
    return _parametrization(module, tensor_name) is not None


def orthogonalized_tensors(module: nn.Module) -> list[str]:
    """Names of the tensors of ``module`` (not its children) that :func:`orthogonalize` made
    orthogonal."""
    if not parametrize.is_parametrized(module):
        return []
    return [n for n in module.parametrizations if is_orthogonalized(module, n)]


def _n_blocks(module: nn.Module, tensor_name: str) -> int:
    blocks = [b for b in matrix_blocks(module) if b.tensor_name == tensor_name]
    return max(len(blocks), 1)


def _describe(module: nn.Module, tensor_name: str) -> str:
    return f"{type(module).__name__}.{tensor_name}"


def _check(module: nn.Module, tensor_name: str, gain: float, triv, relax, init) -> Tensor:
    if not isinstance(module, nn.Module):
        raise ConfigurationError(f"orthogonalize: expected an nn.Module, got {type(module).__name__}")
    if parametrize.is_parametrized(module, tensor_name):
        raise ConfigurationError(
            f"{_describe(module, tensor_name)} is already parametrized "
            f"({[type(p).__name__ for p in module.parametrizations[tensor_name]]}); "
            "remove that parametrization first"
        )
    tensor = getattr(module, tensor_name, None)
    if not isinstance(tensor, Tensor):
        names = [n for n, p in module.named_parameters(recurse=False) if p.dim() >= 2]
        raise ShapeError(
            f"{type(module).__name__} has no tensor {tensor_name!r}; its matrix parameters are "
            f"{names or '<none>'}"
        )
    if tensor.dim() < 2:
        raise ShapeError(
            f"{_describe(module, tensor_name)} has shape {tuple(tensor.shape)}: only tensors with "
            ">= 2 dimensions (a matrix view) can be made orthogonal"
        )
    if not tensor.is_floating_point():
        raise ShapeError(f"{_describe(module, tensor_name)} has dtype {tensor.dtype}, not floating")
    if not (float(gain) > 0 and float(gain) < float("inf")):
        raise ConfigurationError(f"gain: expected a positive finite number, got {gain!r}")
    if not callable(triv) and triv not in TRIVIALIZATIONS:
        raise ConfigurationError(f"triv: expected one of {TRIVIALIZATIONS} or a callable, got {triv!r}")
    if relax is not None and not (0 < float(relax) < 1):
        raise ConfigurationError(f"relax: expected None or a number in (0, 1), got {relax!r}")
    if init not in INITS:
        raise ConfigurationError(f"init: expected one of {INITS}, got {init!r}")
    return tensor


def orthogonalize(
    module: nn.Module,
    tensor_name: str = "weight",
    gain: float = 1.0,
    triv: str | Callable = "expm",
    relax: float | None = None,
    init: str = "current",
    *,
    name: str | None = None,
) -> nn.Module:
    """Constrain ``module.<tensor_name>`` to ``gain`` times an orthogonal (Stiefel) matrix, block
    by block (see the module docstring for the matrix view).

    Args:
        module: the module holding the tensor (``nn.Linear``, ``nn.ConvNd``, ``nn.RNN`` ...).
        tensor_name: e.g. ``"weight"`` or ``"weight_hh_l0"``.
        gain: the module sees ``gain * Q``.
        triv: geotorch trivialization, ``"expm"`` or ``"cayley"`` (or a callable mapping skew
            matrices to orthogonal ones).
        relax: ``None`` for exact orthogonality, or ``lam`` in (0, 1) for geotorch's almost
            orthogonal matrices: singular values in ``gain * [1 - lam, 1 + lam]``.
        init: ``"current"`` starts at the projection of the current weight; ``"haar"`` at a
            Haar-random sample (geotorch's ``sample()``, drawn from the global RNG).
        name: how errors name the tensor, e.g. ``"rnn.weight_hh_l0"`` (default
            ``"<ModuleClass>.<tensor_name>"``).

    Returns:
        ``module``, with a parametrization registered on ``tensor_name``.

    Raises:
        ShapeError: the tensor does not exist, is not >= 2-d, or not floating point.
        ConfigurationError: it is already parametrized, or an argument is out of range.

    A forward whose unconstrained tensor is not finite raises :class:`NonFiniteError` naming
    the tensor (``expm`` would fail inside ``eigh`` without saying why).
    """
    tensor = _check(module, tensor_name, gain, triv, relax, init)
    param = OrthogonalMatrix(
        tensor.shape, _n_blocks(module, tensor_name), gain, triv, relax,
        name or _describe(module, tensor_name),
    )
    param.to(device=tensor.device, dtype=torch.promote_types(tensor.dtype, torch.float32))
    parametrize.register_parametrization(module, tensor_name, param, unsafe=True)
    if init == "haar":
        assign_(module, tensor_name, gain * param.manifold.sample().reshape(tensor.shape))
    param._load_hook = module.register_load_state_dict_pre_hook(_PlainWeightLoader(tensor_name))
    return module


class _PlainWeightLoader:
    """Load-state-dict pre-hook: a plain ``<prefix><name>`` entry is projected onto the manifold
    and turned into the parametrized entries, so a plain checkpoint loads into a constrained
    module."""

    def __init__(self, tensor_name: str) -> None:
        self.tensor_name = tensor_name

    def __call__(self, module, state_dict, prefix, *args) -> None:
        plain = prefix + self.tensor_name
        pre = f"{prefix}parametrizations.{self.tensor_name}."
        if plain not in state_dict or any(k.startswith(pre) for k in state_dict):
            return
        if not is_orthogonalized(module, self.tensor_name):
            return
        value = state_dict.pop(plain)
        assign_(module, self.tensor_name, value.to(getattr(module, self.tensor_name)))
        state_dict.update(module.parametrizations[self.tensor_name].state_dict(prefix=pre))


def remove_orthogonalization(module: nn.Module, tensor_name: str = "weight") -> nn.Module:
    """Undo :func:`orthogonalize`: ``module.<tensor_name>`` becomes a plain parameter holding the
    current constrained value ``gain * Q`` (the same ``Parameter`` object the optimizer knew).

    Returns ``module``. Raises :class:`ConfigurationError` when the tensor is not orthogonalized.
    """
    param = _parametrization(module, tensor_name)
    if param is None:
        raise ConfigurationError(f"{_describe(module, tensor_name)} is not orthogonalized")
    param._load_hook.remove()
    parametrize.remove_parametrizations(module, tensor_name, leave_parametrized=True)
    return module


@torch.no_grad()
def update_base(module: nn.Module, tensor_name: str = "weight") -> None:
    """Dynamic trivialization step: move the manifold base point to the current (re-projected)
    value and reset the unconstrained tensor, leaving ``module.<tensor_name>`` unchanged (up to
    round-off)."""
    if not is_orthogonalized(module, tensor_name):
        raise ConfigurationError(f"{_describe(module, tensor_name)} is not orthogonalized")
    # a tiny band margin: the relaxed weight stays where it is (a point on the band's edge stays
    # there, as it would under geotorch's sin map)
    assign_(module, tensor_name, getattr(module, tensor_name).detach(), band_margin=1e-6)


@torch.no_grad()
def assign_(
    module: nn.Module, tensor_name: str, value: Tensor, band_margin: float = _BAND_MARGIN
) -> None:
    """Set the parametrized ``module.<tensor_name>`` to (the projection of) ``value`` by running
    the parametrizations' ``right_inverse`` and copying into the unconstrained tensor *in place*.

    ``setattr(module, name, value)`` would do the same through ``Tensor.set_``, which gives the
    parameter a new gradient accumulator and silently detaches DDP's gradient hooks from it (DDP
    then reports the parameter as unused); ``copy_`` keeps parameter, storage and hooks."""
    plist = module.parametrizations[tensor_name]
    for p in reversed(plist):
        if isinstance(p, OrthogonalMatrix):
            value = p.right_inverse(value, band_margin)
        else:
            value = p.right_inverse(value)
    plist.original.copy_(value)


def split_state_dict(
    state_dict: dict[str, Tensor], model: nn.Module
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Split a ``model.state_dict()`` into plain weights and parametrized state.

    Returns ``(plain, parametrized)``: ``plain`` is ``state_dict`` with every orthogonalized
    tensor's ``parametrizations.<name>.*`` entries replaced by one ``<name>`` entry holding its
    current value (so a bare, unconstrained copy of the model loads it); ``parametrized`` holds the
    replaced entries (restore them with ``model.load_state_dict(parametrized, strict=False)``).
    """
    plain = dict(state_dict)
    parametrized: dict[str, Tensor] = {}
    for mod_name, module in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        for name in orthogonalized_tensors(module):
            pre = f"{prefix}parametrizations.{name}."
            keys = [k for k in plain if k.startswith(pre)]
            if not keys:
                continue
            for k in keys:
                parametrized[k] = plain.pop(k)
            with torch.no_grad():
                plain[prefix + name] = getattr(module, name).detach().clone()
    return plain, parametrized


def matrix_tensor_names(module: nn.Module, recurrent: str = "hh") -> list[str]:
    """The tensors of ``module`` the constraint and regularizer callbacks act on: ``"weight"`` of a
    Linear/ConvNd (any module with a >= 2-d ``weight``), and for recurrent modules the
    hidden-to-hidden ``weight_hh*`` (``recurrent="hh"``) or every ``weight_ih*``/``weight_hh*``
    (``recurrent="all"``)."""
    check_recurrent(recurrent)
    if is_recurrent(module):
        names = recurrent_weight_names(module)
        return names if recurrent == "all" else [n for n in names if n.startswith("weight_hh")]
    return sorted({b.tensor_name for b in matrix_blocks(module)})


def selected_tensors(
    model: nn.Module, selector: ModuleSelector, recurrent: str = "hh"
) -> list[tuple[str, nn.Module, str]]:
    """``(module name, module, tensor name)`` for every matrix tensor of the modules ``selector``
    picks in ``model`` (see :func:`matrix_tensor_names`), in ``named_modules()`` order."""
    return [
        (name, module, tensor)
        for name, module in selector.select(model)
        for tensor in matrix_tensor_names(module, recurrent)
    ]
