"""Singular values of per-sample Jacobians: input to output, hidden layer to hidden layer, and
recurrent state to state (d h_T / d h_0).

All three evaluate the model ONCE on the whole batch and take the per-sample Jacobians as
the Jacobian of the batch map, vmapped over output cotangents (reverse mode, ``jacrev``-like)
or input tangents (forward mode, ``jacfwd``-like), whichever dimension is smaller. This is
exact when samples do not interact inside the model, which holds in eval mode for the standard
layers (batch norm in train mode breaks it; hence ``eval_mode=True`` by default). Vmapping over
directions instead of samples also works for the fused ``nn.RNN``/``GRU`` kernels, whose
in-place internals cannot be vmapped over samples. Models with recurrent modules always use
reverse mode (forward-mode AD is not implemented in the oneDNN / cuDNN RNN kernels).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vjp, vmap

from ortho_lightning.exceptions import ConfigurationError, SelectionError, ShapeError
from ortho_lightning.spectra._common import (
    OutputFn,
    as_batch_output,
    check_batch,
    has_recurrent,
    measuring,
    singular_values,
)
from ortho_lightning.validation import check_choice, fail

MODES = ("auto", "reverse", "forward")


def batch_jacobian(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    mode: str = "auto",
    chunk_size: int | None = None,
) -> Tensor:
    """Per-sample Jacobians of a batch map ``fn: (N, *in) -> (N, D)`` whose samples do not
    interact.

    Args:
        fn: the batch map.
        x: the batch, floating point.
        mode: ``"reverse"`` (vmap over the D output cotangents), ``"forward"`` (vmap over the
            input tangents) or ``"auto"`` (the one with fewer directions).
        chunk_size: directions per vmap chunk (``None``: all at once); bounds memory.

    Returns:
        (N, D, I) tensor, I = prod(in).
    """
    check_choice("batch_jacobian", "mode", mode, MODES)
    if not x.is_floating_point():
        raise ShapeError(f"Jacobians need a floating-point input, got dtype {x.dtype}")
    n = x.shape[0]
    n_in = x[0].numel()
    if mode == "reverse" or mode == "auto":
        out, pull = vjp(fn, x)
        d = out.shape[1]
        if mode == "auto" and d > n_in:
            mode = "forward"
        else:
            eye = torch.eye(d, dtype=out.dtype, device=out.device)
            cotangents = eye[:, None, :].expand(d, n, d)
            (jac,) = vmap(pull, chunk_size=chunk_size)(cotangents)  # (D, N, *in)
            return jac.reshape(d, n, n_in).permute(1, 0, 2)
    eye = torch.eye(n_in, dtype=x.dtype, device=x.device)
    tangents = eye[:, None, :].expand(n_in, n, n_in).reshape(n_in, *x.shape)

    def push(t: Tensor) -> Tensor:
        return jvp(fn, (x,), (t,))[1]

    jac = vmap(push, chunk_size=chunk_size)(tangents)  # (I, N, D)
    return jac.permute(1, 2, 0)


def _params(model: nn.Module) -> dict[str, Tensor]:
    return {n: p.detach() for n, p in model.named_parameters()}


def jacobian_singular_values(
    model: nn.Module,
    x: Tensor,
    *,
    output_fn: OutputFn | None = None,
    chunk_size: int | None = None,
    eval_mode: bool = True,
    mode: str = "auto",
) -> Tensor:
    """Singular values of the per-sample input-output Jacobian d f(x_i) / d x_i.

    Args:
        model: any module mapping a batch-first ``x`` to a batch-first output.
        x: (N, *in) floating-point batch.
        output_fn: picks the tensor to differentiate from the model's output (e.g.
            ``lambda out: out[1][-1]`` for an RNN's last hidden state); default the output.
        chunk_size: directions per vmap chunk; bounds memory.
        eval_mode: measure in eval mode (dropout off, batch-norm running stats) and restore.
        mode: ``"auto"``, ``"reverse"`` or ``"forward"`` (see :func:`batch_jacobian`).

    Returns:
        (N, min(D, I)) singular values, descending per row, with D = output size and
        I = input size per sample (both flattened).
    """
    check_batch("jacobian_singular_values", x)
    check_choice("jacobian_singular_values", "mode", mode, MODES)
    if has_recurrent(model):
        mode = "reverse"
    params = _params(model)
    n = x.shape[0]

    def fn(inp: Tensor) -> Tensor:
        return as_batch_output(functional_call(model, params, (inp,)), n, output_fn, "model")

    with measuring(model, eval_mode):
        jac = batch_jacobian(fn, x, mode, chunk_size)
    return singular_values(jac)


class _Stop(Exception):
    """Raised by the end-module hook to skip the rest of the forward pass."""


def _module(model: nn.Module, name: str, role: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        names = [k for k in modules if k]
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise SelectionError(
            f"{role}={name!r} is not a module of {type(model).__name__}; named_modules() "
            f"has: {shown}"
        )
    return modules[name]


def _tensor_output(out: object, name: str) -> Tensor:
    if not isinstance(out, Tensor):
        raise ShapeError(
            f"module {name!r} returns {type(out).__name__}; layer Jacobians need modules "
            "whose output is one batch-first Tensor"
        )
    return out


def layer_jacobian_singular_values(
    model: nn.Module,
    x: Tensor,
    start: str,
    end: str,
    *,
    chunk_size: int | None = None,
    eval_mode: bool = True,
    mode: str = "auto",
) -> Tensor:
    """Singular values of the per-sample Jacobian from the output of module ``start`` to the
    output of module ``end`` (hidden layer to hidden layer), both addressed by their
    ``named_modules()`` names, both producing one batch-first tensor.

    Implemented with forward hooks: ``start``'s output is replaced by the differentiated
    variable and the forward pass stops once ``end`` has run.

    Returns:
        (N, min(D_end, D_start)) singular values, descending per row.
    """
    owner = "layer_jacobian_singular_values"
    check_batch(owner, x)
    check_choice(owner, "mode", mode, MODES)
    start_mod = _module(model, start, "start")
    end_mod = _module(model, end, "end")
    if start_mod is end_mod:
        fail(owner, "end", f"a module other than start={start!r}", end)
    if has_recurrent(model):
        mode = "reverse"
    params = _params(model)
    n = x.shape[0]
    state: dict[str, object] = {}

    def start_hook(module: nn.Module, args: tuple, out: object) -> object:
        state["started"] = True
        replacement = state.get("h")
        if replacement is None:
            state["h0"] = _tensor_output(out, start).detach()
            return out
        return replacement.clone()  # downstream in-place ops must not write into the variable

    def end_hook(module: nn.Module, args: tuple, out: object) -> None:
        if not state.get("started"):
            raise ConfigurationError(
                f"module end={end!r} ran before start={start!r}; end must come after start"
            )
        state["out"] = _tensor_output(out, end)
        raise _Stop

    def run(h: Tensor | None) -> Tensor:
        state.clear()
        state["h"] = h
        try:
            functional_call(model, params, (x,))
        except _Stop:
            pass
        if "out" not in state:
            raise ConfigurationError(f"module end={end!r} did not run during model(x)")
        return state["out"]  # type: ignore[return-value]

    handles = [start_mod.register_forward_hook(start_hook), end_mod.register_forward_hook(end_hook)]
    try:
        with measuring(model, eval_mode):
            with torch.no_grad():
                run(None)
            h0 = state["h0"]
            if h0.shape[0] != n:
                raise ShapeError(
                    f"module start={start!r} output has shape {tuple(h0.shape)}; expected "
                    f"batch size {n} first"
                )

            def fn(h: Tensor) -> Tensor:
                return as_batch_output(run(h), n, None, f"module {end!r}")

            jac = batch_jacobian(fn, h0, mode, chunk_size)
    finally:
        for handle in handles:
            handle.remove()
    return singular_values(jac)


def _state_layout(rnn: nn.RNNBase, n: int) -> list[tuple[int, ...]]:
    layers = rnn.num_layers * (2 if rnn.bidirectional else 1)
    h_size = rnn.proj_size if getattr(rnn, "proj_size", 0) else rnn.hidden_size
    shapes = [(layers, n, h_size)]
    if isinstance(rnn, nn.LSTM):
        shapes.append((layers, n, rnn.hidden_size))
    return shapes


def recurrent_state_jacobian_singular_values(
    rnn: nn.Module,
    x: Tensor,
    h0: Tensor | tuple[Tensor, Tensor] | None = None,
    *,
    chunk_size: int | None = None,
    eval_mode: bool = True,
) -> Tensor:
    """Singular values of the per-sample state-to-state Jacobian d h_T / d h_0 of an
    ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` run over the sequence ``x``.

    The state is the final hidden state of every layer and direction, flattened per sample; for
    an LSTM it is the pair (h, c) concatenated (h first), so d [h_T; c_T] / d [h_0; c_0].

    Args:
        rnn: the recurrent module.
        x: batched sequence, (N, T, in) if ``rnn.batch_first`` else (T, N, in).
        h0: initial state as the module takes it (``(h0, c0)`` for an LSTM); zeros by default.

    Returns:
        (N, S) singular values, descending per row, S = state size per sample.
    """
    if not isinstance(rnn, nn.RNNBase):
        fail("recurrent_state_jacobian_singular_values", "rnn", "an nn.RNN, nn.LSTM or nn.GRU",
             type(rnn))
    check_batch("recurrent_state_jacobian_singular_values", x)
    if x.dim() != 3:
        raise ShapeError(
            f"x must be a batched sequence (3-d, {'(N, T, in)' if rnn.batch_first else '(T, N, in)'}),"
            f" got shape {tuple(x.shape)}"
        )
    n = x.shape[0] if rnn.batch_first else x.shape[1]
    shapes = _state_layout(rnn, n)
    if h0 is None:
        parts = [torch.zeros(s, dtype=x.dtype, device=x.device) for s in shapes]
    else:
        parts = list(h0) if isinstance(h0, (tuple, list)) else [h0]
        got = [tuple(p.shape) for p in parts]
        if got != shapes:
            raise ShapeError(
                f"h0 must have shapes {shapes} for this {type(rnn).__name__}, got {got}"
            )
    flat0 = torch.cat([p.transpose(0, 1).reshape(n, -1) for p in parts], dim=1)
    sizes = [s[0] * s[2] for s in shapes]
    params = _params(rnn)

    def fn(flat: Tensor) -> Tensor:
        pieces = torch.split(flat, sizes, dim=1)
        state = [
            p.reshape(n, s[0], s[2]).transpose(0, 1).contiguous() for p, s in zip(pieces, shapes)
        ]
        hx = tuple(state) if len(state) == 2 else state[0]
        _, hn = functional_call(rnn, params, (x, hx))
        outs = list(hn) if isinstance(hn, tuple) else [hn]
        return torch.cat([o.transpose(0, 1).reshape(n, -1) for o in outs], dim=1)

    with measuring(rnn, eval_mode):
        jac = batch_jacobian(fn, flat0, "reverse", chunk_size)
    return singular_values(jac)
