"""Soft orthogonality: differentiable penalties and a scale-free defect for logging.

All functions act on the matrix view ``W = tensor.flatten(1)`` of shape ``(rows, cols)`` and use the Gram
matrix on its *smaller* side, ``G = W^T W`` when ``rows >= cols`` (columns orthonormal), else
``W W^T`` (rows orthonormal), so a rectangular matrix is measured against the Stiefel manifold it
can actually reach. With ``n = min(rows, cols)`` and ``D = G / gain^2 - I_n``:

========== ==================================================== ==========================
kind       value                                                reference
========== ==================================================== ==========================
frobenius  ``sum(D**2)`` (``reduction="sum"``) or ``mean(D**2)``  gain-adjusted soft
           (``"mean"``, over the ``n*n`` entries)                 orthogonality regulariser
srip       ``sigma_max(D)**2`` by power iteration                Bansal et al. 2018
all_ones   ``sum/mean((G / gain^2 - 1)**2)``: subtracts 1 from     the public notebook form,
           *every* entry, not the identity (so off-diagonal      kept to reproduce its
           entries are pushed to 1, not 0)                       numbers; not orthogonality
========== ==================================================== ==========================

``kind`` may also be a callable ``f(tensor, gain) -> scalar`` (escape hatch).

The tensor argument is ``tensor`` (as in ``torch.nn.init``); ``W=`` is its deprecated name
(until 0.3.0).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from ortho_lightning.exceptions import ShapeError
from ortho_lightning.matrices import matrix_blocks
from ortho_lightning.validation import check_choice, check_number, fail, renamed_kwargs

__all__ = [
    "PENALTIES",
    "block_defects",
    "gram",
    "orthogonality_defect",
    "orthogonality_penalty",
    "total_penalty",
]

REDUCTIONS = ("mean", "sum")
#: power iterations of ``srip`` when not given
SRIP_ITERATIONS = 10


def _matrix(tensor: Tensor, owner: str) -> Tensor:
    if not isinstance(tensor, Tensor) or tensor.dim() < 2:
        got = f"shape {tuple(tensor.shape)}" if isinstance(tensor, Tensor) else type(tensor).__name__
        raise ShapeError(f"{owner}: tensor must be a matrix (>= 2-d tensor), got {got}")
    return tensor.flatten(1)


@renamed_kwargs(W="tensor")
def gram(tensor: Tensor, gain: float = 1.0) -> Tensor:
    """``W^T W / gain^2`` on the smaller side of ``W = tensor.flatten(1)``: an ``(n, n)`` tensor,
    ``n = min(rows, cols)``."""
    M = _matrix(tensor, "gram")
    gain = check_number("gram", "gain", gain, positive=True)
    G = M.mT @ M if M.shape[0] >= M.shape[1] else M @ M.mT
    return G / gain**2


def _reduce(E: Tensor, reduction: str) -> Tensor:
    return E.mean() if reduction == "mean" else E.sum()


def _frobenius(W: Tensor, gain: float, reduction: str, n_iter: int) -> Tensor:
    G = gram(W, gain)
    D = G - torch.eye(G.shape[0], dtype=G.dtype, device=G.device)
    return _reduce(D.square(), reduction)


def _all_ones(W: Tensor, gain: float, reduction: str, n_iter: int) -> Tensor:
    return _reduce((gram(W, gain) - 1.0).square(), reduction)


_SRIP_STARTS: dict[tuple[int, torch.dtype, torch.device], Tensor] = {}


def _srip_start(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The power iteration's (n, 1) start vector, drawn once per (n, dtype, device) from a
    private, fixed-seed CPU generator: the training RNG is left alone, every DDP rank computes
    the same number, and so does every device (a CUDA generator draws other numbers, and 10
    iterations from another start gave a penalty 0.14% off on an H200). Cached so a training
    step on a GPU does not copy it from the host each time."""
    key = (n, dtype, device)
    if key not in _SRIP_STARTS:
        gen = torch.Generator().manual_seed(0)
        # a normal tensor even if first drawn under inference mode (it is saved for backward)
        with torch.inference_mode(False):
            _SRIP_STARTS[key] = torch.randn(n, 1, generator=gen, dtype=dtype).to(device)
    return _SRIP_STARTS[key]


def _srip(W: Tensor, gain: float, reduction: str, n_iter: int) -> Tensor:
    G = gram(W, gain)
    D = G - torch.eye(G.shape[0], dtype=G.dtype, device=G.device)
    # Power iteration on the symmetric D for its largest |eigenvalue| = sigma_max(D).
    v = _srip_start(D.shape[0], D.dtype, D.device)
    with torch.no_grad():
        Dd = D.detach()
        for _ in range(n_iter):
            v = Dd @ v
            v = v / v.norm().clamp_min(torch.finfo(v.dtype).tiny)
    # sigma^2 = ||D v||^2 for the (fixed) top singular vector v: differentiable in W, and its
    # gradient is the exact gradient of sigma_max^2 once v has converged (as in spectral_norm).
    return (D @ v).square().sum()


#: name -> ``f(W, gain, reduction, n_iter) -> scalar``
PENALTIES: dict[str, Callable[[Tensor, float, str, int], Tensor]] = {
    "frobenius": _frobenius,
    "srip": _srip,
    "all_ones": _all_ones,
}


def check_penalty_kind(
    kind: str | Callable, reduction: str, owner: str = "orthogonality_penalty"
) -> None:
    """Raise :class:`ConfigurationError` naming ``owner`` unless ``kind`` (a :data:`PENALTIES`
    name or a callable) and ``reduction`` are accepted."""
    if not callable(kind) and not (isinstance(kind, str) and kind in PENALTIES):
        fail(owner, "kind", f"one of {sorted(PENALTIES)} or a callable f(tensor, gain)", kind)
    check_choice(owner, "reduction", reduction, REDUCTIONS)


@renamed_kwargs(W="tensor")
def orthogonality_penalty(
    tensor: Tensor,
    gain: float = 1.0,
    kind: str | Callable[[Tensor, float], Tensor] = "frobenius",
    reduction: str = "mean",
    n_iter: int = SRIP_ITERATIONS,
) -> Tensor:
    """Soft orthogonality penalty of ``W = tensor.flatten(1)`` at scale ``gain`` (see the module
    table).

    Args:
        tensor: a matrix, or a tensor viewed as ``tensor.flatten(1)`` (conv kernels:
            (out, in*k*k)).
        gain: the scale the weights should sit at: zero penalty iff ``W^T W = gain^2 I`` (on
            the smaller side).
        kind: ``"frobenius"``, ``"srip"``, ``"all_ones"`` or a callable
            ``f(tensor, gain)``.
        reduction: ``"mean"`` over the Gram entries or ``"sum"`` (ignored by ``srip``, which is
            one number).
        n_iter: power iterations for ``srip``.

    Returns:
        A 0-d tensor, differentiable in ``tensor``, of its dtype and device.
    """
    check_penalty_kind(kind, reduction)
    if callable(kind):
        return kind(tensor, gain)
    gain = check_number("orthogonality_penalty", "gain", gain, positive=True)
    return PENALTIES[kind](tensor, gain, reduction, int(n_iter))


@renamed_kwargs(W="tensor")
def orthogonality_defect(tensor: Tensor, gain: float = 1.0) -> Tensor:
    """Scale-free distance from ``gain`` times a Stiefel matrix:
    ``||W^T W / gain^2 - I||_F / sqrt(n)``, ``n = min(rows, cols)``.

    0 for ``gain * Q`` with orthonormal ``Q``; 1 when every singular value is ``sqrt(2) * gain``
    or 0. Returns a 0-d tensor.
    """
    G = gram(tensor, gain)
    D = G - torch.eye(G.shape[0], dtype=G.dtype, device=G.device)
    return torch.linalg.matrix_norm(D) / G.shape[0] ** 0.5


def _blocks_of(entries):
    for name, module, tensor in entries:
        for block in matrix_blocks(module):
            if block.tensor_name == tensor:
                yield f"{name}.{block.label}" if name else block.label, block.matrix(module)


def total_penalty(
    entries: Iterable[tuple[str, nn.Module, str]],
    gain: float = 1.0,
    kind: str | Callable[[Tensor, float], Tensor] = "frobenius",
    reduction: str = "mean",
) -> Tensor:
    """Sum of :func:`orthogonality_penalty` over every matrix block (gate blocks of recurrent
    weights on their own) of the ``(module name, module, tensor name)`` entries, e.g. from
    :func:`ortho_lightning.constraints.selected_tensors`. Returns a 0-d tensor."""
    terms = [orthogonality_penalty(M, gain, kind, reduction) for _, M in _blocks_of(entries)]
    if not terms:
        raise ShapeError("total_penalty: the entries hold no matrix block")
    return torch.stack(terms).sum()


@torch.no_grad()
def block_defects(entries: Iterable[tuple[str, nn.Module, str]], gain: float = 1.0) -> dict[str, Tensor]:
    """:func:`orthogonality_defect` of every matrix block of the entries, keyed
    ``"<module name>.<block label>"`` (e.g. ``"rnn.weight_hh_l0[f]"``)."""
    return {key: orthogonality_defect(M.float(), gain) for key, M in _blocks_of(entries)}
