"""The LSTM with projection behind :class:`rnnfast.torch.LSTM` (``proj_size > 0``): the NumPy-side
forward and backward of one layer and direction over :mod:`rnnfast._proj`, the custom ops
``rnnfast::lstm_proj_forward`` / ``rnnfast::lstm_proj_backward`` (autograd and fake kernels), and
the eager-mode ``autograd.Function``, built like the other cells' in :mod:`rnnfast._torch_ops`
(same cache handles). Private.

Shapes: T = time steps, B = batch, I = input size, H = hidden size, P = projection size: x (T, B,
I), h0 / h_n (B, P), c0 / c_n (B, H), y (T, B, P), w_ih (4H, I), w_hh (4H, P), w_hr (P, H).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from . import _proj
from ._torch_ops import (
    _cache_of,
    _forward_in_time_order,
    _grads_in_time_order,
    _make_handle,
    _np,
    _reverse_index,
)

__all__ = ["lstm_proj_backward_op", "lstm_proj_forward_op"]

Tensor = torch.Tensor


def _lookup(handle: Tensor, shape: tuple[int, ...], dtype: np.dtype) -> Any:
    """The ProjCache behind ``handle``, or None when it cannot be found or does not match."""
    cache = _cache_of(handle)
    if not isinstance(cache, _proj.ProjCache) or cache.shape != shape or cache.dtype != dtype:
        return None
    return cache


def _run_forward(
    x: Tensor,
    h0: Tensor | None,
    c0: Tensor | None,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    w_hr: Tensor,
    lengths: Tensor | None,
    reverse: bool,
    training: bool,
) -> tuple[np.ndarray, list[np.ndarray], Any, np.ndarray | None]:
    """(y (T, B, P) in input time order, [h_n, c_n], cache or None, reverse index or None)."""
    w = (_np(w_ih), _np(w_hh), _np(b_ih), _np(b_hh), _np(w_hr))

    def run(xa: np.ndarray, lens: np.ndarray | None) -> tuple[np.ndarray, list[np.ndarray], Any]:
        y, h_n, c_n, cache = _proj.lstm_proj_forward(
            xa, _np(h0), _np(c0), *w, lengths=lens, training=training
        )
        return y, [h_n, c_n], cache

    return _forward_in_time_order(run, x, lengths, reverse)


def _grads(
    cache: Any,
    dy: np.ndarray | None,
    dh_n: np.ndarray | None,
    dc_n: np.ndarray | None,
    reverse: bool,
    idx: np.ndarray | None,
    need_dx: bool = True,
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """(dx in input time order or None, the functional backward's dict)."""

    def run(dy_: np.ndarray | None) -> dict[str, Any]:
        return _proj.lstm_proj_backward(cache, dy_, dh_n, dc_n, need_dx=need_dx)

    return _grads_in_time_order(run, dy, reverse, idx)


# --------------------------------------------------------------------------------------------------
# custom ops
# --------------------------------------------------------------------------------------------------

_WP = (
    "Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor w_hr, Tensor? lengths, "
    "bool reverse"
)


@torch.library.custom_op(
    "rnnfast::lstm_proj_forward",
    mutates_args=(),
    schema=(
        f"(Tensor x, Tensor? h0, Tensor? c0, {_WP}, bool training) "
        "-> (Tensor, Tensor, Tensor, Tensor)"
    ),
)
def lstm_proj_forward_op(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, reverse, training):  # type: ignore[no-untyped-def]
    """Projected LSTM layer/direction -> y (T, B, P), h_n (B, P), c_n (B, H), handle."""
    y, finals, cache, _ = _run_forward(
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, reverse, training
    )
    return (torch.from_numpy(y), *(torch.from_numpy(s) for s in finals), _make_handle(cache))


@torch.library.custom_op(
    "rnnfast::lstm_proj_backward",
    mutates_args=(),
    schema=(
        f"(Tensor handle, Tensor x, Tensor? h0, Tensor? c0, {_WP}, Tensor dy, Tensor dh_n, "
        "Tensor dc_n) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
    ),
)
def lstm_proj_backward_op(  # type: ignore[no-untyped-def]
    handle, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, reverse, dy, dh_n, dc_n
):
    """-> dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh ((0,) without bias), dw_hr."""
    T, B, I = x.shape
    H, P = w_hr.shape[1], w_hr.shape[0]
    dtype = np.dtype(np.float32) if x.dtype == torch.float32 else np.dtype(np.float64)
    cache = _lookup(handle, (T, B, I, H, P), dtype)
    idx = None
    if reverse and lengths is not None:
        idx = _reverse_index(T, B, lengths.numpy())
    if cache is None:  # the handle lost its cache (never seen in practice): recompute the forward
        _, _, cache, idx = _run_forward(
            x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, reverse, True
        )
    dx, g = _grads(cache, _np(dy), _np(dh_n), _np(dc_n), reverse, idx)
    out = [torch.from_numpy(g[k]) for k in ("h0", "c0", "w_ih", "w_hh")]
    for key in ("b_ih", "b_hh"):
        out.append(torch.from_numpy(g[key]) if g[key] is not None else x.new_empty((0,)))
    return (torch.from_numpy(dx), *out, torch.from_numpy(g["w_hr"]))


@lstm_proj_forward_op.register_fake
def _(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, reverse, training):  # type: ignore[no-untyped-def]
    T, B, _ = x.shape
    P, H = w_hr.shape
    return (
        x.new_empty((T, B, P)),
        x.new_empty((B, P)),
        x.new_empty((B, H)),
        x.new_empty((1,), dtype=torch.uint8),
    )


@lstm_proj_backward_op.register_fake
def _(handle, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, reverse, dy, dh_n, dc_n):  # type: ignore[no-untyped-def]
    B = x.shape[1]
    P, H = w_hr.shape
    nb = (w_ih.shape[0],) if b_ih is not None else (0,)
    return (
        x.new_empty(x.shape),
        x.new_empty((B, P)),
        x.new_empty((B, H)),
        x.new_empty(w_ih.shape),
        x.new_empty(w_hh.shape),
        x.new_empty(nb),
        x.new_empty(nb),
        x.new_empty(w_hr.shape),
    )


# forward-op argument positions: x 0, h0 1, c0 2, w_ih 3, w_hh 4, b_ih 5, b_hh 6, w_hr 7,
# lengths 8, reverse 9, training 10


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
    tensors = inputs[:8]
    ctx.has = tuple(t is not None for t in tensors)
    ctx.save_for_backward(output[-1], *(t for t in tensors if t is not None), inputs[8])
    ctx.reverse = inputs[9]
    ctx.out_like = [(output[k].shape, output[k].dtype) for k in range(3)]


def _backward(ctx: Any, *grads: Any) -> tuple[Any, ...]:
    saved = list(ctx.saved_tensors)
    handle, lengths = saved[0], saved[-1]
    it = iter(saved[1:-1])
    t = [next(it) if has else None for has in ctx.has]  # x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr
    douts = [
        g if g is not None else torch.zeros(shape, dtype=dtype)
        for g, (shape, dtype) in zip(grads[:3], ctx.out_like)
    ]
    res = lstm_proj_backward_op(handle, *t, lengths, ctx.reverse, *douts)
    need = ctx.needs_input_grad
    out = [r if need[k] and t[k] is not None else None for k, r in enumerate(res)]
    return (*out, None, None, None)  # lengths, reverse, training


lstm_proj_forward_op.register_autograd(_backward, setup_context=_setup_context)


# --------------------------------------------------------------------------------------------------
# the eager path (see rnnfast._torch_ops._EagerRNN: the same implementation without the dispatcher)
# --------------------------------------------------------------------------------------------------


class _EagerProj(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        h0: Tensor | None,
        c0: Tensor | None,
        w_ih: Tensor,
        w_hh: Tensor,
        b_ih: Tensor | None,
        b_hh: Tensor | None,
        w_hr: Tensor,
        lengths: Tensor | None,
        reverse: bool,
    ) -> tuple[Tensor, ...]:
        y, finals, cache, idx = _run_forward(
            x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, reverse, True
        )
        # saved for autograd's in-place-modification check only (the cache views x and the weights)
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
        ctx.cache, ctx.reverse, ctx.idx = cache, reverse, idx
        ctx.set_materialize_grads(False)
        return (torch.from_numpy(y), *(torch.from_numpy(s) for s in finals))

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, dy: Tensor | None, dh_n: Tensor | None, dc_n: Tensor | None
    ) -> tuple[Any, ...]:  # type: ignore[override]
        ctx.saved_tensors  # noqa: B018  (raises if an input was modified in place)
        need = ctx.needs_input_grad
        dx, g = _grads(
            ctx.cache, _np(dy), _np(dh_n), _np(dc_n), ctx.reverse, ctx.idx, bool(need[0])
        )
        arrays = (dx, g["h0"], g["c0"], g["w_ih"], g["w_hh"], g["b_ih"], g["b_hh"], g["w_hr"])
        out = [torch.from_numpy(a) if a is not None and n else None for a, n in zip(arrays, need)]
        return (*out, None, None)


def run_layer(
    x: Tensor,
    h0: Tensor | None,
    c0: Tensor | None,
    w: list[Tensor | None],
    lengths: Tensor | None,
    reverse: bool,
    training: bool,
    eager: bool,
) -> tuple[Tensor, list[Tensor]]:
    """One layer and direction: (y (T, B, P), [h_n, c_n]). ``w``: w_ih, w_hh, b_ih, b_hh, w_hr."""
    if eager:
        if training:
            y, h_n, c_n = _EagerProj.apply(x, h0, c0, *w, lengths, reverse)
            return y, [h_n, c_n]
        y_, fin, _, _ = _run_forward(x, h0, c0, *w, lengths, reverse, False)  # type: ignore[arg-type]
        return torch.from_numpy(y_), [torch.from_numpy(f) for f in fin]
    y, h_n, c_n, _ = lstm_proj_forward_op(x, h0, c0, *w, lengths, reverse, training)
    return y, [h_n, c_n]
