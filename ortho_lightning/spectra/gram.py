"""The (N*C x N*C) dual Gram matrix of the Fisher, M = (1/N) G G^T with
G[(i, c)] = J_i^T S_i[:, c] (J_i = d f_i / d theta, H_i = S_i S_i^T), so that F = (1/N) G^T G
and M share their non-zero eigenvalues. Never forms anything P long per row where it can avoid
it.

Structured route (``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d`` with plain, trainable, unshared
weights, ``groups=1``, zero padding, called once on a batch-first input; unidirectional ``nn.RNN``/``LSTM``/``GRU`` without
projection, re-run unrolled so each recurrent matrix is a Linear map over the time steps, see
:mod:`ortho_lightning.spectra.recurrent`): the row of G for one such layer is the outer product
(summed over positions l) of the back-propagated output gradient delta_{i,c,l} and the layer
input a_{i,l} (unfolded patches for convolutions), so the layer's share of G G^T is
sum_{l,m} (delta_{icl} . delta_{jdm}) (a_{il} . a_{jm}) (+ the bias term without the a factor):
products of small Gram matrices. All N*C deltas come from one batched backward pass
(``is_grads_batched``) with cotangents S_i[:, c]; layer inputs and outputs are captured by
forward hooks. With positions (convolutions, Linear on sequences) the cheaper of the pairwise
form and the per-row weight-gradient form is used, under a memory budget.

Generic route (every other trainable parameter: parametrized (geotorch) weights, shared
modules, bidirectional recurrent modules, norms, embeddings...): rows of G restricted to groups of parameters, by ``torch.func``
(per-sample ``vmap`` of ``vjp``; for models with fused ``nn.RNN``/``LSTM``/``GRU``, whose
kernels cannot be vmapped over samples, ``vmap`` over per-sample cotangents of the batch map),
and the Gram accumulated group by group so memory stays bounded by ``budget`` elements.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap
from torch.nn.utils import parametrize

from ortho_lightning.spectra import recurrent
from ortho_lightning.spectra._common import (
    OutputFn,
    as_batch_output,
    has_recurrent,
    variables,
)
from ortho_lightning.spectra.likelihoods import get_likelihood
from ortho_lightning.spectra.pieces import Piece

#: Default bound (in tensor elements) on the intermediate blocks of the Gram computation.
BUDGET = 2**25

STRUCTURED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.RNN, nn.LSTM, nn.GRU)


@dataclass
class _Capture:
    module: nn.Module
    prefix: str
    calls: int = 0
    failed: bool = False
    pieces: list[Piece] = field(default_factory=list)


def _prefixed(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _eligible(module: nn.Module) -> bool:
    if parametrize.is_parametrized(module):
        return False
    if isinstance(module, nn.Linear):
        return True
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return (
            module.groups == 1
            and module.padding_mode == "zeros"
            and not isinstance(module.padding, str)
        )
    return recurrent.supported(module)


def _structured(model: nn.Module, params: dict[str, Tensor]) -> dict[str, _Capture]:
    found: dict[str, _Capture] = {}
    for name, module in model.named_modules():
        if not isinstance(module, STRUCTURED) or not _eligible(module):
            continue
        own = [_prefixed(name, k) for k, _ in module.named_parameters(recurse=False)]
        if own and all(k in params for k in own):
            found[name] = _Capture(module, f"{name}." if name else "")
    return found


def _linear_or_conv_piece(cap: _Capture, a: Tensor, out: Tensor) -> Piece:
    m = cap.module
    names = [cap.prefix + k for k, _ in m.named_parameters(recurse=False)]
    if isinstance(m, nn.Linear):
        # a copy: a later in-place op on the layer's input (h += ...) must not reach it
        a = a.reshape(a.shape[0], -1, a.shape[-1]).clone()
        return Piece(a, [out], "blo", m.bias is not None, names)
    if isinstance(m, nn.Conv1d):
        a = a.unsqueeze(2)
        kernel, dil = (1, *m.kernel_size), (1, *m.dilation)
        pad, stride = (0, *m.padding), (1, *m.stride)
    else:
        kernel, dil, pad, stride = m.kernel_size, m.dilation, m.padding, m.stride
    unf = F.unfold(a, kernel, dilation=dil, padding=pad, stride=stride)  # (N, I, L)
    return Piece(unf.transpose(1, 2), [out], "conv", m.bias is not None, names)


def row_gram(g: Tensor, out: Tensor | None = None, blocks: int = 4) -> Tensor:
    """``g @ g.T`` (added to ``out`` if given), computing only the upper triangle of row blocks
    and mirroring it: 3/5 of the products for ``blocks=4`` (640 rows of 9216: 52 vs 77 ms on one
    CPU thread)."""
    rows = g.shape[0]
    if out is None:
        out = g.new_zeros(rows, rows)
    if rows < 64 * blocks:
        return out.add_(g @ g.T)
    size = -(-rows // blocks)
    for lo in range(0, rows, size):
        hi = lo + size
        block = g[lo:hi] @ g[lo:].T  # rows lo:hi against rows lo:
        out[lo:hi, lo:] += block
        out[hi:, lo:hi] += block[:, size:].T
    return out


def _outer_gram(a: Tensor, d: Tensor, bias: bool, diagonal: bool, budget: int) -> Tensor:
    """Gram (or its diagonal) of the rows g_{ic} = sum_l d_{icl} a_{il}^T (+ sum_l d_{icl})."""
    n, length, i_dim = a.shape
    c, o_dim = d.shape[1], d.shape[3]
    b = 1.0 if bias else 0.0
    if length == 1:
        a1, d1 = a[:, 0], d[:, :, 0]
        if diagonal:
            return ((d1**2).sum(-1) * ((a1**2).sum(-1) + b)[:, None]).reshape(-1)
        kd = row_gram(d1.reshape(n * c, o_dim)).view(n, c, n, c)
        ka = a1 @ a1.T + b
        return (kd * ka[:, None, :, None]).reshape(n * c, n * c)
    rows = n * c
    if diagonal:
        pair_cost, pair_mem = rows * length**2 * o_dim + n * length**2 * i_dim, rows * length**2
    else:
        pair_cost = (rows * length) ** 2 * o_dim + (n * length) ** 2 * i_dim
        pair_mem = (rows * length) ** 2
    mat_cost = rows * length * o_dim * i_dim + (0 if diagonal else rows**2 * o_dim * i_dim)
    if pair_cost < mat_cost and pair_mem <= budget:
        if diagonal:
            kd = torch.einsum("nclo,ncmo->nclm", d, d)
            ka = torch.einsum("nli,nmi->nlm", a, a) + b
            return torch.einsum("nclm,nlm->nc", kd, ka).reshape(-1)
        kd = (d.reshape(-1, o_dim) @ d.reshape(-1, o_dim).T).view(n, c, length, n, c, length)
        ka = (a.reshape(-1, i_dim) @ a.reshape(-1, i_dim).T).view(n, length, n, length) + b
        return torch.einsum("ialjbm,iljm->iajb", kd, ka).reshape(rows, rows)
    out = torch.zeros((rows,) if diagonal else (rows, rows), dtype=a.dtype, device=a.device)
    step = max(1, budget // max(1, rows * i_dim))
    for lo in range(0, o_dim, step):
        g = torch.einsum("nclo,nli->ncoi", d[..., lo : lo + step], a).reshape(rows, -1)
        out = out.add_((g**2).sum(1)) if diagonal else row_gram(g, out)
    if bias:
        gb = d.sum(2).reshape(rows, o_dim)
        out = out.add_((gb**2).sum(1)) if diagonal else row_gram(gb, out)
    return out


def _groups(params: dict[str, Tensor], names: list[str], rows: int, budget: int) -> list[list[str]]:
    groups: list[list[str]] = []
    size = 0
    for name in names:
        numel = params[name].numel()
        if groups and (size + numel) * rows <= budget:
            groups[-1].append(name)
            size += numel
        else:
            groups.append([name])
            size = numel
    return groups


def _generic_rows(
    model: nn.Module,
    params: dict[str, Tensor],
    group: list[str],
    x: Tensor,
    sqrt_h: Tensor,
    output_fn: OutputFn | None,
    require_2d: bool,
    chunk_size: int | None,
) -> Tensor:
    """Rows of G restricted to the parameters in ``group``: (N*C, numel(group))."""
    n, c = sqrt_h.shape[0], sqrt_h.shape[1]
    fixed = {k: v for k, v in params.items() if k not in group}
    sub = {k: params[k] for k in group}
    if has_recurrent(model):

        def batch_out(p: dict[str, Tensor]) -> Tensor:
            out = functional_call(model, {**fixed, **p}, (x,))
            return as_batch_output(out, n, output_fn, "model", require_2d)

        _, pull = vjp(batch_out, sub)
        eye = torch.eye(n, dtype=sqrt_h.dtype, device=sqrt_h.device)
        # cot[i, c, j, :] = delta_ij S_i[:, c]
        cot = eye[:, None, :, None] * sqrt_h.transpose(1, 2)[:, :, None, :]
        (grads,) = vmap(pull, chunk_size=chunk_size)(cot.reshape(n * c, n, c))
    else:

        def one(p: dict[str, Tensor], xi: Tensor, si: Tensor) -> dict[str, Tensor]:
            def single(q: dict[str, Tensor]) -> Tensor:
                out = functional_call(model, {**fixed, **q}, (xi[None],))
                return as_batch_output(out, 1, output_fn, "model", require_2d)[0]

            _, pull_one = vjp(single, p)
            return vmap(pull_one)(si.T)[0]

        grads = vmap(one, in_dims=(None, 0, 0), chunk_size=chunk_size)(sub, x, sqrt_h)
    return torch.cat([grads[k].reshape(n * c, -1) for k in group], dim=1)


@dataclass
class Factors:
    """What the structured route captures from one forward and one batched backward pass.

    Attributes:
        layers: per structured layer, (a (N, L, I), d (N, C, L, O), has_bias): its rows of G
            are g_{ic} = sum_l d_{icl} a_{il}^T (+ sum_l d_{icl} for the bias).
        rest: names of the trainable parameters left to the generic route.
        params: all trainable parameters (detached), by name.
        outputs: (N, C) model outputs (detached); sqrt_h: (N, C, C) factors S_i.
    """

    layers: list[tuple[Tensor, Tensor, bool]]
    rest: list[str]
    params: dict[str, Tensor]
    outputs: Tensor
    sqrt_h: Tensor


def structured_factors(
    model: nn.Module,
    x: Tensor,
    likelihood: str = "categorical",
    *,
    output_fn: OutputFn | None = None,
    structured: bool = True,
) -> Factors:
    """Capture layer inputs and the back-propagated S-weighted output gradients of every
    structured layer (see module docstring), in the model's current mode."""
    lik = get_likelihood(likelihood, "structured_factors")
    params = variables(model)
    n = x.shape[0]
    caps = _structured(model, params) if structured else {}
    leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}

    def hook(cap: _Capture):
        def fn(module: nn.Module, args: tuple, out: object) -> object:
            cap.calls += 1
            if cap.calls > 1 or cap.failed:
                cap.failed = True
                return None
            if isinstance(module, nn.RNNBase):
                result = recurrent.unrolled(module, args, cap.prefix)
                if result is None:
                    cap.failed = True
                    return None
                new_out, cap.pieces = result
                return new_out
            if not (isinstance(out, Tensor) and out.dim() >= 2 and out.shape[0] == n):
                cap.failed = True  # not batch-first (or unbatched): the generic route decides
                return None
            cap.pieces = [_linear_or_conv_piece(cap, args[0].detach(), out)]
            # hand the rest of the model a copy: an in-place op downstream (ReLU(inplace=True))
            # would otherwise overwrite the captured node and silently change its gradient
            return out.clone()

        return fn

    handles = [cap.module.register_forward_hook(hook(cap)) for cap in caps.values()]
    try:
        with torch.enable_grad():
            out = functional_call(model, leaves if caps else params, (x,))
    finally:
        for h in handles:
            h.remove()
    f = as_batch_output(out, n, output_fn, "model", lik.matrix_output)
    sqrt_h = lik.sqrt(f.detach())
    pieces = [
        piece
        for cap in caps.values()
        if cap.calls == 1 and not cap.failed
        for piece in cap.pieces
        if all(node.requires_grad for node in piece.nodes)
    ]
    layers = []
    if pieces:
        nodes = [node for piece in pieces for node in piece.nodes]
        cot = sqrt_h.permute(2, 0, 1)  # cot[c, i, :] = S_i[:, c]
        grads = list(torch.autograd.grad(f, nodes, cot, is_grads_batched=True, allow_unused=True))
        for piece in pieces:
            d = piece.output_grads(grads[: len(piece.nodes)])
            grads = grads[len(piece.nodes) :]
            if d is not None:
                layers.append((piece.a, d, piece.bias))
    covered = {name for piece in pieces for name in piece.names}
    rest = [k for k in params if k not in covered]
    return Factors(layers, rest, params, f.detach(), sqrt_h)


def fisher_gram(
    model: nn.Module,
    x: Tensor,
    likelihood: str = "categorical",
    *,
    output_fn: OutputFn | None = None,
    chunk_size: int | None = None,
    diagonal: bool = False,
    structured: bool = True,
    budget: int = BUDGET,
) -> Tensor:
    """The dual Gram matrix M = (1/N) G G^T of the Fisher (see module docstring), in the
    model's current mode (callers wrap it in :func:`~ortho_lightning.spectra._common.measuring`).

    Args:
        model, x, likelihood, output_fn: as in :func:`fisher_eigenvalues`.
        chunk_size: samples (or per-sample cotangents) per vmap chunk of the generic route.
        diagonal: return only diag(M), shape (N*C,) (its sum is tr F).
        structured: use the structured route for Linear/Conv layers (``False``: generic only).
        budget: bound, in elements, on intermediate blocks.

    Returns:
        (N*C, N*C) symmetric PSD matrix, rows ordered sample-major ((i, c) -> i*C + c); or its
        diagonal.
    """
    require_2d = get_likelihood(likelihood, "fisher_gram").matrix_output
    fac = structured_factors(model, x, likelihood, output_fn=output_fn, structured=structured)
    n, c = fac.outputs.shape
    rows = n * c
    shape = (rows,) if diagonal else (rows, rows)
    gram = torch.zeros(shape, dtype=fac.outputs.dtype, device=fac.outputs.device)
    for a, d, bias in fac.layers:
        gram += _outer_gram(a, d, bias, diagonal, budget)
    for group in _groups(fac.params, fac.rest, rows, budget):
        g = _generic_rows(
            model, fac.params, group, x, fac.sqrt_h, output_fn, require_2d, chunk_size
        )
        gram = gram.add_((g**2).sum(1)) if diagonal else row_gram(g, gram)
    return gram / n
