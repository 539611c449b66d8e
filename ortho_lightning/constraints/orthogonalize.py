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

The parametrization itself (the manifold and trivialization tables, gain, precision, start
point) is :mod:`ortho_lightning.constraints.parametrization`; state dicts (plain weights in,
plain weights out) are :mod:`ortho_lightning.constraints.state`. A parametrized module still
loads a *plain* state dict (``weight`` instead of ``parametrizations.weight.*``): the plain
weight is projected onto the manifold.

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

from dataclasses import fields

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ortho_lightning.constraints.config import INITS, ConstraintConfig
from ortho_lightning.constraints.parametrization import (
    MANIFOLDS,
    TRIVIALIZATIONS,
    OrthogonalMatrix,
    Trivialization,
    assign_,
    check_finite,
    is_orthogonalized,
    orthogonal_parametrization,
    orthogonalized_tensors,
)
from ortho_lightning.constraints.state import PlainWeightLoader, split_state_dict
from ortho_lightning.exceptions import ConfigurationError, ShapeError
from ortho_lightning.matrices import (
    RECURRENT_CHOICES,
    is_recurrent,
    matrix_blocks,
    recurrent_weight_names,
)
from ortho_lightning.selection import ModuleSelector
from ortho_lightning.validation import check_choice, fail

__all__ = [
    "INITS",
    "ConstraintConfig",
    "MANIFOLDS",
    "TRIVIALIZATIONS",
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

#: the old private names, kept for pickles and imports that used them
_PlainWeightLoader = PlainWeightLoader
_parametrization = orthogonal_parametrization


def _n_blocks(module: nn.Module, tensor_name: str) -> int:
    blocks = [b for b in matrix_blocks(module) if b.tensor_name == tensor_name]
    return max(len(blocks), 1)


def _describe(module: nn.Module, tensor_name: str) -> str:
    return f"{type(module).__name__}.{tensor_name}"


def _check(module: nn.Module, tensor_name: str) -> Tensor:
    """The tensor ``orthogonalize`` would constrain; errors name ``<ModuleClass>.<tensor_name>``."""
    if not isinstance(module, nn.Module):
        fail("orthogonalize", "module", "an nn.Module", module)
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
    return tensor


#: the keyword options of :func:`orthogonalize` and their defaults (those of ConstraintConfig)
_OPTIONS = {f.name: f.default for f in fields(ConstraintConfig)}


def orthogonalize(
    module: nn.Module,
    tensor_name: str = "weight",
    *,
    gain: float = 1.0,
    triv: str | Trivialization = "expm",
    relax: float | None = None,
    manifold: str | None = None,
    init: str = "current",
    config: ConstraintConfig | None = None,
    name: str | None = None,
) -> nn.Module:
    """Constrain ``module.<tensor_name>`` to ``gain`` times an orthogonal (Stiefel) matrix, block
    by block (see the module docstring for the matrix view). Options are keyword-only, as in
    ``torch.nn.utils.parametrizations.orthogonal``.

    Args:
        module: the module holding the tensor (``nn.Linear``, ``nn.ConvNd``, ``nn.RNN`` ...).
        tensor_name: e.g. ``"weight"`` or ``"weight_hh_l0"``.
        gain: the module sees ``gain * Q``.
        triv: a :data:`~ortho_lightning.constraints.TRIVIALIZATIONS` name, ``"expm"`` or
            ``"cayley"`` (or a callable mapping skew matrices to orthogonal ones).
        relax: ``None`` for exact orthogonality, or ``lam`` in (0, 1) for geotorch's almost
            orthogonal matrices: singular values in ``gain * [1 - lam, 1 + lam]``.
        manifold: a :data:`~ortho_lightning.constraints.MANIFOLDS` name; ``None``: ``"stiefel"``,
            or ``"almost_orthogonal"`` with ``relax``.
        init: ``"current"`` starts at the projection of the current weight; ``"haar"`` at a
            Haar-random sample (geotorch's ``sample()``, drawn from the global RNG).
        config: the options above as one checked :class:`ConstraintConfig` (then leave them at
            their defaults).
        name: how errors name the tensor, e.g. ``"rnn.weight_hh_l0"`` (default
            ``"<ModuleClass>.<tensor_name>"``).

    Returns:
        ``module``, with a parametrization registered on ``tensor_name``.

    Raises:
        ShapeError: the tensor does not exist, is not >= 2-d, or not floating point.
        ConfigurationError: it is already parametrized, an option is out of range, or options
            were given both in ``config`` and as keywords.

    A forward whose unconstrained tensor is not finite raises :class:`NonFiniteError` naming
    the tensor (``expm`` would fail inside ``eigh`` without saying why).
    """
    options = {"gain": gain, "triv": triv, "relax": relax, "manifold": manifold, "init": init}
    if config is None:
        config = ConstraintConfig(**options, owner="orthogonalize")
    elif not isinstance(config, ConstraintConfig):
        fail("orthogonalize", "config", "a ConstraintConfig or None", config)
    else:
        given = sorted(k for k, v in options.items() if v is not _OPTIONS[k] and v != _OPTIONS[k])
        if given:
            fail("orthogonalize", "config", f"the only source of the options (also got {given})",
                 config)
    tensor = _check(module, tensor_name)
    param = OrthogonalMatrix(
        tensor.shape, _n_blocks(module, tensor_name), config.gain, config.triv, config.relax,
        name or _describe(module, tensor_name), manifold=config.manifold,
    )
    param.to(device=tensor.device, dtype=torch.promote_types(tensor.dtype, torch.float32))
    parametrize.register_parametrization(module, tensor_name, param, unsafe=True)
    if config.init == "haar":
        assign_(module, tensor_name, config.gain * param.manifold.sample().reshape(tensor.shape))
    param._load_hook = module.register_load_state_dict_pre_hook(PlainWeightLoader(tensor_name))
    return module


def remove_orthogonalization(module: nn.Module, tensor_name: str = "weight") -> nn.Module:
    """Undo :func:`orthogonalize`: ``module.<tensor_name>`` becomes a plain parameter holding the
    current constrained value ``gain * Q`` (the same ``Parameter`` object the optimizer knew).

    Returns ``module``. Raises :class:`ConfigurationError` when the tensor is not orthogonalized.
    """
    param = orthogonal_parametrization(module, tensor_name)
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


def matrix_tensor_names(module: nn.Module, recurrent: str = "hh") -> list[str]:
    """The tensors of ``module`` the constraint and regularizer callbacks act on: ``"weight"`` of a
    Linear/ConvNd (any module with a >= 2-d ``weight``), and for recurrent modules the
    hidden-to-hidden ``weight_hh*`` (``recurrent="hh"``) or every ``weight_ih*``/``weight_hh*``
    (``recurrent="all"``)."""
    check_choice("matrix_tensor_names", "recurrent", recurrent, RECURRENT_CHOICES)
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
