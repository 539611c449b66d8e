"""Hard projection (retraction) of a weight onto ``gain`` times the Stiefel manifold, in place.

The target is the nearest matrix with orthonormal columns (or rows, when wide) in Frobenius norm,
the orthogonal polar factor ``U V^T`` of ``W = U S V^T``, times ``gain``:

- ``"polar"``: from one SVD; exact, any ``W`` of full rank.
- ``"bjorck"``: Björck-Bowie iteration ``Q <- Q (3 I - Q^T Q) / 2``, matmuls only; converges to
  the same polar factor when the singular values of the start lie in ``(0, sqrt(3))``
  (guaranteed here by scaling with ``sqrt(||Q||_1 ||Q||_inf) >= sigma_max``) and fast when ``W``
  is already near-orthogonal, the periodic-projection case.

Computation runs in at least float32 and is written back in the tensor's own dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ortho_lightning.exceptions import ShapeError
from ortho_lightning.validation import check_choice, check_number, renamed_kwargs

__all__ = ["PROJECTIONS", "polar_factor", "bjorck_factor", "project_orthogonal_"]


def polar_factor(M: Tensor) -> Tensor:
    """Orthogonal polar factor ``U V^T`` of a (batch of) matrix ``M`` (..., rows, cols)."""
    U, _, Vh = torch.linalg.svd(M, full_matrices=False)
    return U @ Vh


def bjorck_factor(M: Tensor, n_iter: int = 50, tol: float | None = None) -> Tensor:
    """Orthogonal polar factor of ``M`` (..., rows, cols) by Björck-Bowie iteration.

    Stops after ``n_iter`` iterations or once ``max |Q^T Q - I| <= tol`` (default: 10 * eps of the
    dtype)."""
    wide = M.shape[-2] < M.shape[-1]
    Q = M.mT if wide else M
    tol = 10 * torch.finfo(Q.dtype).eps if tol is None else tol
    # sqrt(||Q||_1 ||Q||_inf) bounds sigma_max, so the scaled start has singular values <= 1
    norm_1 = Q.abs().sum(-2).amax(-1)
    norm_inf = Q.abs().sum(-1).amax(-1)
    scale = (norm_1 * norm_inf).sqrt().clamp_min(1.0)[..., None, None]
    Q = Q / scale
    eye = torch.eye(Q.shape[-1], dtype=Q.dtype, device=Q.device)
    for _ in range(n_iter):
        E = Q.mT @ Q - eye
        if E.abs().max() <= tol:
            break
        Q = Q - 0.5 * (Q @ E)
    return Q.mT if wide else Q


#: name -> ``f(M) -> polar factor``
PROJECTIONS: dict[str, Callable[[Tensor], Tensor]] = {"polar": polar_factor, "bjorck": bjorck_factor}


@renamed_kwargs(W="tensor")
@torch.no_grad()
def project_orthogonal_(tensor: Tensor, gain: float = 1.0, method: str = "polar") -> Tensor:
    """Replace ``tensor`` (viewed as ``tensor.flatten(1)``) in place by ``gain`` times its
    orthogonal polar factor, the nearest point of the scaled Stiefel manifold.

    Args:
        tensor: a >= 2-d tensor (a parameter, or a view of one such as a gate block); ``W=`` is
            its deprecated name (until 0.3.0).
        gain: the scale: afterwards ``W^T W = gain^2 I`` on the smaller side.
        method: ``"polar"`` (SVD) or ``"bjorck"`` (iterative, matmuls only).

    Returns:
        ``tensor`` itself.
    """
    if not isinstance(tensor, Tensor) or tensor.dim() < 2:
        got = f"shape {tuple(tensor.shape)}" if isinstance(tensor, Tensor) else type(tensor).__name__
        raise ShapeError(f"project_orthogonal_: tensor must be a >= 2-d tensor, got {got}")
    check_choice("project_orthogonal_", "method", method, sorted(PROJECTIONS))
    gain = check_number("project_orthogonal_", "gain", gain, positive=True)
    M = tensor.flatten(1)
    work = M.to(torch.promote_types(M.dtype, torch.float32))
    tensor.copy_((gain * PROJECTIONS[method](work)).to(tensor.dtype).view_as(tensor))
    return tensor
