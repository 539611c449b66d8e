"""One interface for the matrix-free operators of this package (the Fisher, its dual, the
NTK) and for what consumes them (Lanczos, stochastic Lanczos quadrature).

A :class:`LinearOperator` is a square matrix known only through its products: ``shape``,
``dtype`` and ``device`` describe it, ``A @ v`` / ``A.matvec(v)`` apply it to a vector (size,)
and ``A @ V`` / ``A.matmat(V)`` to the columns of a (size, m) matrix. Inputs are checked once,
here, with an error naming the operator and the shape, dtype and device it expects. Subclasses
implement :meth:`LinearOperator._matvec` (and :meth:`LinearOperator._matmat` when a block
product is cheaper than its columns one by one). :class:`MatvecOperator` wraps a plain function.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.func import vmap

from ortho_lightning.exceptions import ShapeError
from ortho_lightning.validation import check_int, fail


class LinearOperator:
    """A square linear map on vectors of length ``shape[0]``, known through its products.

    Attributes:
        shape: ``(size, size)``.
        dtype, device: of the vectors it takes and returns.
    """

    shape: tuple[int, int]
    dtype: torch.dtype
    device: torch.device

    def _matvec(self, v: Tensor) -> Tensor:
        """A v for a checked (size,) vector."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _matvec")

    def _matmat(self, v: Tensor) -> Tensor:
        """A V for a checked (size, m) matrix; default: :meth:`_matvec` vmapped over columns."""
        return vmap(self._matvec, in_dims=1, out_dims=1)(v)

    def _check(self, v: object, dims: tuple[int, ...]) -> Tensor:
        size = self.shape[1]
        expected = {1: f"({size},)", 2: f"({size}, m)"}
        want = " or ".join(expected[d] for d in dims)
        owner = type(self).__name__
        if not isinstance(v, Tensor):
            fail(owner, "the operand", f"a tensor of shape {want}", type(v), ShapeError)
        if v.dim() not in dims or v.shape[0] != size:
            fail(owner, "the operand", f"a tensor of shape {want}", v.shape, ShapeError)
        device = torch.device(self.device)
        if v.dtype != self.dtype or v.device.type != device.type or (
            device.index is not None and v.device.index != device.index
        ):
            fail(owner, "the operand", f"{self.dtype} on {self.device}",
                 f"{v.dtype} on {v.device}", ShapeError)
        return v

    def matvec(self, v: Tensor) -> Tensor:
        """A v: (size,) -> (size,)."""
        return self._matvec(self._check(v, (1,)))

    def matmat(self, v: Tensor) -> Tensor:
        """A V: (size, m) -> (size, m)."""
        return self._matmat(self._check(v, (2,)))

    def __matmul__(self, v: Tensor) -> Tensor:
        v = self._check(v, (1, 2))
        return self._matvec(v) if v.dim() == 1 else self._matmat(v)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype}, device={self.device})"


class MatvecOperator(LinearOperator):
    """A :class:`LinearOperator` from a function ``v -> A v`` on (size,) vectors, e.g.
    ``MatvecOperator(lambda v: a @ v, a.shape[0], dtype=a.dtype)`` for a dense symmetric ``a``."""

    def __init__(
        self,
        matvec: Callable[[Tensor], Tensor],
        size: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        if not callable(matvec):
            fail("MatvecOperator", "matvec", "callable", matvec)
        size = check_int("MatvecOperator", "size", size, minimum=1)
        self._fn = matvec
        self.shape = (size, size)
        self.dtype, self.device = dtype, torch.device(device)

    def _matvec(self, v: Tensor) -> Tensor:
        return self._fn(v)

    def _matmat(self, v: Tensor) -> Tensor:
        # a plain function may not be vmappable (.item(), in-place ops): columns one by one
        return torch.stack([self._fn(col) for col in v.unbind(1)], 1)


def check_operator(owner: str, op: object) -> LinearOperator:
    """``op`` if it is a :class:`LinearOperator`; else a ConfigurationError naming ``owner``."""
    if not isinstance(op, LinearOperator):
        fail(owner, "op", "a LinearOperator (wrap a function in MatvecOperator)", type(op))
    return op


__all__ = ["LinearOperator", "MatvecOperator", "check_operator"]
