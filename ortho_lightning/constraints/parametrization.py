"""The parametrization behind a hard constraint: ``X -> gain * Q(X)``, ``Q`` on a geotorch
manifold, one batched manifold over a weight's matrix blocks.

Two tables name the choices, as :data:`~ortho_lightning.constraints.PENALTIES` and
:data:`~ortho_lightning.constraints.PROJECTIONS` do:

- :data:`MANIFOLDS`: where ``Q`` lives. ``"stiefel"``: orthonormal columns (rows when wide;
  geotorch's ``Stiefel``, the orthogonal group when square); ``"almost_orthogonal"``: singular
  values in ``[1 - relax, 1 + relax]`` (geotorch's ``AlmostOrthogonal``). Each entry is a
  :class:`Manifold`: how to build geotorch's module and how to project a matrix onto it.
- :data:`TRIVIALIZATIONS`: the map from the unconstrained tensor to the manifold. ``"expm"``:
  :func:`ortho_lightning.constraints.expm.skew_expm` (geotorch's map, a cheaper exact gradient);
  ``"cayley"``: geotorch's ``cayley_map``. A callable mapping skew matrices to orthogonal ones is
  accepted too.

Adding a manifold or a map is one entry here and its function(s).

Differences from geotorch's own ``geotorch.orthogonal``:

- the constrained point starts at the projection of the current weight (its orthogonal polar
  factor, or, relaxed, its singular values clipped into the inner 90% of the band, where
  geotorch's ``sin`` map still has a gradient) instead of a fresh Haar sample;
- the gain is kept (geotorch and torch return unit-scale matrices);
- the parametrization is computed in float32 or wider with autocast off (under bf16/16-mixed the
  module then casts ``g * Q`` like any other weight); under bf16-true/16-true, where the
  unconstrained tensor and the base point are half precision, the trivialization is evaluated in
  float32 and rounded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import geotorch
import torch
from geotorch.so import cayley_map
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ortho_lightning.constraints.expm import skew_expm
from ortho_lightning.constraints.projection import polar_factor
from ortho_lightning.exceptions import NonFiniteError
from ortho_lightning.validation import fail

__all__ = [
    "MANIFOLDS",
    "TRIVIALIZATIONS",
    "Manifold",
    "OrthogonalMatrix",
    "assign_",
    "check_finite",
    "is_orthogonalized",
    "orthogonal_parametrization",
    "orthogonalized_tensors",
    "resolve_triv",
]

#: A trivialization: skew-symmetric ``(..., n, n)`` -> orthogonal ``(..., n, n)``.
Trivialization = Callable[[Tensor], Tensor]

#: name -> trivialization (geotorch's ``triv``)
TRIVIALIZATIONS: dict[str, Trivialization] = {
    "expm": skew_expm,  # same map as geotorch's "expm", ~4.5x cheaper forward + backward
    "cayley": cayley_map,
}

#: projected singular values are clipped into ``1 +- (1 - _BAND_MARGIN) * relax``: geotorch maps
#: them through ``1 + relax * sin(s)``, whose derivative vanishes on the band's edges, so a start
#: exactly on an edge could never move off it
_BAND_MARGIN = 0.1


@dataclass(frozen=True)
class Manifold:
    """One entry of :data:`MANIFOLDS`.

    Attributes:
        build: ``build(size, triv, relax) -> geotorch module`` for a batch ``size = (blocks, r,
            c)`` of matrices (holds the base point; ``right_inverse`` and ``sample`` as geotorch's).
        project: ``project(M, relax, band_margin) -> nearest point`` of the manifold to the
            ``(blocks, r, c)`` tensor ``M``.
        relaxed: whether the manifold takes ``relax`` (a number in (0, 1)) or refuses it.
    """

    build: Callable[[tuple[int, int, int], Trivialization, float | None], nn.Module]
    project: Callable[[Tensor, float | None, float], Tensor]
    relaxed: bool = False


def _stiefel(size: tuple[int, int, int], triv: Trivialization, relax: float | None) -> nn.Module:
    return geotorch.Stiefel(size, triv=triv)


def _project_stiefel(M: Tensor, relax: float | None, band_margin: float) -> Tensor:
    return polar_factor(M)


def _almost_orthogonal(
    size: tuple[int, int, int], triv: Trivialization, relax: float | None
) -> nn.Module:
    return geotorch.AlmostOrthogonal(size, lam=relax, triv=triv)


def _project_band(M: Tensor, relax: float | None, band_margin: float) -> Tensor:
    """Singular values clipped into ``1 +- (1 - band_margin) * relax``."""
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    band = relax * (1 - band_margin)
    return (U * S.clamp(1 - band, 1 + band).unsqueeze(-2)) @ Vh


#: name -> :class:`Manifold`
MANIFOLDS: dict[str, Manifold] = {
    "stiefel": Manifold(_stiefel, _project_stiefel),
    "almost_orthogonal": Manifold(_almost_orthogonal, _project_band, relaxed=True),
}


def resolve_triv(triv: str | Trivialization, owner: str = "OrthogonalMatrix") -> Trivialization:
    """The function behind ``triv``: a :data:`TRIVIALIZATIONS` name or a callable."""
    if callable(triv):
        return triv
    if isinstance(triv, str) and triv in TRIVIALIZATIONS:
        return TRIVIALIZATIONS[triv]
    fail(owner, "triv", f"one of {list(TRIVIALIZATIONS)} or a callable", triv)


def default_manifold(relax: float | None) -> str:
    """The manifold a ``relax`` asks for when none is named: exact or almost orthogonal."""
    return "stiefel" if relax is None else "almost_orthogonal"


class OrthogonalMatrix(nn.Module):
    """Parametrization ``X -> gain * Q(X)`` of a tensor of shape ``shape`` whose matrix view is
    ``n_blocks`` stacked row blocks, each on a :data:`MANIFOLDS` manifold.

    The unconstrained tensor has the weight's own shape; ``forward`` views it as
    ``(n_blocks, rows // n_blocks, cols)``, applies the (batched) manifold and reshapes back.

    Attributes:
        manifold: the geotorch ``Stiefel`` or ``AlmostOrthogonal`` module (holds the base point).
        manifold_name: its :data:`MANIFOLDS` key.
        gain, relax, n_blocks, shape.
        name: how errors name the tensor (``"rnn.weight_hh_l0"``).
    """

    def __init__(
        self,
        shape: torch.Size,
        n_blocks: int = 1,
        gain: float = 1.0,
        triv: str | Trivialization = "expm",
        relax: float | None = None,
        name: str = "weight",
        manifold: str | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.shape = torch.Size(shape)
        rows, cols = self.shape[0], self.shape[1:].numel()
        self.n_blocks = n_blocks
        self.gain = float(gain)
        self.relax = relax
        self.manifold_name = default_manifold(relax) if manifold is None else manifold
        if self.manifold_name not in MANIFOLDS:
            fail("OrthogonalMatrix", "manifold", f"one of {list(MANIFOLDS)}", manifold)
        size = (n_blocks, rows // n_blocks, cols)
        triv = _in_float32(resolve_triv(triv))
        with _private_rng(torch.device("cpu")):  # geotorch fills its base with a random sample
            self.manifold = MANIFOLDS[self.manifold_name].build(size, triv, relax)

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
        return MANIFOLDS[self.manifold_name].project(self._blocks(W) / self.gain, self.relax, band_margin)

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
            f"{name}: the unconstrained tensor of the orthogonality constraint must be finite, "
            f"got {int(bad.sum())} non-finite values (inf/NaN) of {X.numel()}, so its orthogonal "
            "weight is undefined. An optimizer step that applies a non-finite gradient (from an "
            "infinite or NaN loss, or an overflow) leaves this behind; lower the learning rate, "
            "clip gradients, or find where the loss stops being finite"
        )


def _in_float32(triv: Trivialization) -> Trivialization:
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


def orthogonal_parametrization(module: nn.Module, tensor_name: str) -> OrthogonalMatrix | None:
    """The :class:`OrthogonalMatrix` registered on ``module.<tensor_name>``, else ``None``."""
    if not parametrize.is_parametrized(module, tensor_name):
        return None
    for p in module.parametrizations[tensor_name]:
        if isinstance(p, OrthogonalMatrix):
            return p
    return None


def is_orthogonalized(module: nn.Module, tensor_name: str = "weight") -> bool:
    """Whether ``module.<tensor_name>`` carries an :class:`OrthogonalMatrix` parametrization."""
    return orthogonal_parametrization(module, tensor_name) is not None


def orthogonalized_tensors(module: nn.Module) -> list[str]:
    """Names of the tensors of ``module`` (not its children) that carry an
    :class:`OrthogonalMatrix` parametrization."""
    if not parametrize.is_parametrized(module):
        return []
    return [n for n in module.parametrizations if is_orthogonalized(module, n)]


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
