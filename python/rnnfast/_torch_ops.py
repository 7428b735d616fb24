"""The kernels behind :mod:`rnnfast.torch`: the activation-cache handles, the NumPy-side forward and
backward of one layer and direction, the ``rnnfast::*`` custom ops (with autograd and fake
kernels), and the eager-mode ``autograd.Function``. Private; :mod:`rnnfast.torch` holds the
modules.

Shapes: T = time steps, B = batch, I = input size, H = hidden size (one layer, one direction).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from . import functional as _F
from ._cells import get_cell

__all__ = [
    "gru_backward_op",
    "gru_forward_op",
    "lstm_backward_op",
    "lstm_forward_op",
    "rnn_backward_op",
    "rnn_forward_op",
]

Tensor = torch.Tensor


# --------------------------------------------------------------------------------------------------
# the activation cache behind a handle tensor
# --------------------------------------------------------------------------------------------------


class _Handle(np.ndarray):
    """One-byte array owning a forward's SequenceCache; torch.from_numpy(handle) keeps it alive."""

    cache: Any


# data pointer of a live handle -> weak reference to it. A pointer is unique while its handle lives,
# and the entry is removed when the handle dies (before its memory can be reused).
_CACHES: dict[int, weakref.ReferenceType[_Handle]] = {}


def _forget(ptr: int, ref: weakref.ReferenceType[_Handle]) -> None:
    if _CACHES.get(ptr) is ref:
        del _CACHES[ptr]


def _make_handle(cache: Any) -> Tensor:
    """A fresh (1,) uint8 tensor owning ``cache`` (None: a handle without a cache)."""
    h = np.zeros(1, np.uint8).view(_Handle)
    if cache is not None:
        h.cache = cache
        ptr = int(h.ctypes.data)
        ref = weakref.ref(h, lambda r, p=ptr: _forget(p, r))
        _CACHES[ptr] = ref
    return torch.from_numpy(h)


def _cache_of(handle: Tensor) -> Any:
    """The cache object behind ``handle`` (any kind: also rnnfast._torch_proj's), or None."""
    ref = _CACHES.get(handle.data_ptr())
    arr = ref() if ref is not None else None
    return getattr(arr, "cache", None)


def _lookup(handle: Tensor, cell: str, shape: tuple[int, ...], dtype: np.dtype) -> Any:
    """The SequenceCache behind ``handle``, or None when it cannot be found or does not match."""
    cache = _cache_of(handle)
    if cache is None or cache.cell != cell or cache.shape != shape or cache.dtype != dtype:
        return None
    return cache


# --------------------------------------------------------------------------------------------------
# the op implementations (NumPy side)
# --------------------------------------------------------------------------------------------------


def _np(t: Tensor | None) -> np.ndarray | None:
    """Zero-copy NumPy view of a CPU tensor (the functional API copies non-C-contiguous ones)."""
    return None if t is None else t.detach().numpy()


def _reverse_index(t_steps: int, batch: int, lengths: np.ndarray) -> np.ndarray:
    """(T, B) time index reversing each sequence within its valid length (an involution)."""
    t = np.arange(t_steps)[:, None]
    lens = lengths[None, :]
    return np.where(t < lens, lens - 1 - t, t)


def _flip(a: np.ndarray, idx: np.ndarray | None) -> np.ndarray:
    """a (T, B, ...) reversed in time (per sequence when ``idx`` is given); C-contiguous copy."""
    if idx is None:
        return np.ascontiguousarray(a[::-1])
    return np.ascontiguousarray(a[idx, np.arange(a.shape[1])[None, :]])


def _forward_in_time_order(
    run: Callable[[np.ndarray, np.ndarray | None], tuple[np.ndarray, list[np.ndarray], Any]],
    x: Tensor,
    lengths: Tensor | None,
    reverse: bool,
) -> tuple[np.ndarray, list[np.ndarray], Any, np.ndarray | None]:
    """``run(x (T, B, I), lengths)`` -> (y, finals, cache) of one direction, with x reversed in time
    (per sequence when ragged) for ``reverse`` and y put back in input time order: (y, finals,
    cache, reverse index or None). Shared with rnnfast._torch_proj."""
    xa = _np(x)
    lens = None if lengths is None else lengths.numpy()
    idx = None
    if reverse:
        if lens is not None:
            idx = _reverse_index(xa.shape[0], xa.shape[1], lens)
        xa = _flip(xa, idx)
    y, finals, cache = run(xa, lens)
    if reverse:
        y = _flip(y, idx)
    return y, finals, cache, idx


def _grads_in_time_order(
    run: Callable[[np.ndarray | None], dict[str, Any]],
    dy: np.ndarray | None,
    reverse: bool,
    idx: np.ndarray | None,
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """``run(dy)`` -> the functional backward's dict, with dy in the forward's time order for
    ``reverse``: (dx in input time order or None, the dict). Shared with rnnfast._torch_proj."""
    if reverse and dy is not None:
        dy = _flip(dy, idx)
    g = run(dy)
    dx = g["x"]
    return (_flip(dx, idx) if reverse and dx is not None else dx), g


def _run_forward(
    cell: str,
    nonlinearity: str,
    x: Tensor,
    h0: Tensor | None,
    c0: Tensor | None,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    lengths: Tensor | None,
    reverse: bool,
    training: bool,
) -> tuple[np.ndarray, list[np.ndarray], Any, np.ndarray | None]:
    """(y (T, B, H) in input time order, [h_n(, c_n)], cache or None, reverse index or None)."""
    w = (_np(w_ih), _np(w_hh), _np(b_ih), _np(b_hh))

    def run(xa: np.ndarray, lens: np.ndarray | None) -> tuple[np.ndarray, list[np.ndarray], Any]:
        if cell == "lstm":
            y, h_n, c_n, cache = _F.lstm_forward(
                xa, _np(h0), _np(c0), *w, lengths=lens, training=training
            )
            return y, [h_n, c_n], cache
        if cell == "gru":
            y, h_n, cache = _F.gru_forward(xa, _np(h0), *w, lengths=lens, training=training)
            return y, [h_n], cache
        y, h_n, cache = _F.rnn_forward(
            xa, _np(h0), *w, nonlinearity=nonlinearity, lengths=lens, training=training
        )
        return y, [h_n], cache

    return _forward_in_time_order(run, x, lengths, reverse)


def _forward_impl(cell: str, nonlinearity: str, *args: Any) -> tuple[Tensor, ...]:
    y, finals, cache, _ = _run_forward(cell, nonlinearity, *args)
    return (torch.from_numpy(y), *(torch.from_numpy(s) for s in finals), _make_handle(cache))


def _grads(
    cell: str,
    cache: Any,
    dy: np.ndarray | None,
    dh_n: np.ndarray | None,
    dc_n: np.ndarray | None,
    reverse: bool,
    idx: np.ndarray | None,
    need_dx: bool = True,
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """(dx in input time order, the functional backward's dict); None gradients are zeros.
    ``need_dx=False`` skips the dx product (an input that needs no gradient): dx is None."""

    def run(dy_: np.ndarray | None) -> dict[str, Any]:
        if cell == "lstm":
            return _F.lstm_backward(cache, dy_, dh_n, dc_n, need_dx=need_dx)
        if cell == "gru":
            return _F.gru_backward(cache, dy_, dh_n, need_dx=need_dx)
        return _F.rnn_backward(cache, dy_, dh_n, need_dx=need_dx)

    return _grads_in_time_order(run, dy, reverse, idx)


def _backward_impl(
    cell: str,
    nonlinearity: str,
    handle: Tensor,
    x: Tensor,
    h0: Tensor | None,
    c0: Tensor | None,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    lengths: Tensor | None,
    reverse: bool,
    dy: Tensor,
    dh_n: Tensor,
    dc_n: Tensor | None,
) -> tuple[Tensor, ...]:
    T, B, I = x.shape
    H = w_hh.shape[1]
    dtype = np.dtype(np.float32) if x.dtype == torch.float32 else np.dtype(np.float64)
    cache = _lookup(handle, cell, (T, B, I, H), dtype)
    idx = None
    if reverse and lengths is not None:
        idx = _reverse_index(T, B, lengths.numpy())
    if cache is None:  # the handle lost its cache (never seen in practice): recompute the forward
        _, _, cache, idx = _run_forward(
            cell, nonlinearity, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, True
        )
    dx, g = _grads(cell, cache, _np(dy), _np(dh_n), _np(dc_n), reverse, idx)
    out = [torch.from_numpy(dx), torch.from_numpy(g["h0"])]
    if cell == "lstm":
        out.append(torch.from_numpy(g["c0"]))
    out += [torch.from_numpy(g["w_ih"]), torch.from_numpy(g["w_hh"])]
    for key in ("b_ih", "b_hh"):
        out.append(torch.from_numpy(g[key]) if g[key] is not None else x.new_empty((0,)))
    return tuple(out)


# --------------------------------------------------------------------------------------------------
# custom ops: rnnfast::{rnn,lstm,gru}_{forward,backward}
# --------------------------------------------------------------------------------------------------

_W = "Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? lengths, bool reverse"


@torch.library.custom_op(
    "rnnfast::gru_forward",
    mutates_args=(),
    schema=f"(Tensor x, Tensor? h0, {_W}, bool training) -> (Tensor, Tensor, Tensor)",
)
def gru_forward_op(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, training):  # type: ignore[no-untyped-def]
    """GRU layer/direction: x (T, B, I), h0 (B, H) | None -> y (T, B, H), h_n (B, H), handle."""
    return _forward_impl(
        "gru", "tanh", x, h0, None, w_ih, w_hh, b_ih, b_hh, lengths, reverse, training
    )


@torch.library.custom_op(
    "rnnfast::lstm_forward",
    mutates_args=(),
    schema=(
        f"(Tensor x, Tensor? h0, Tensor? c0, {_W}, bool training) "
        "-> (Tensor, Tensor, Tensor, Tensor)"
    ),
)
def lstm_forward_op(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, training):  # type: ignore[no-untyped-def]
    """LSTM layer/direction -> y (T, B, H), h_n (B, H), c_n (B, H), handle."""
    return _forward_impl(
        "lstm", "tanh", x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, training
    )


@torch.library.custom_op(
    "rnnfast::rnn_forward",
    mutates_args=(),
    schema=(
        f"(Tensor x, Tensor? h0, {_W}, bool training, str nonlinearity) -> (Tensor, Tensor, Tensor)"
    ),
)
def rnn_forward_op(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, training, nonlinearity):  # type: ignore[no-untyped-def]
    """Vanilla RNN layer/direction (tanh or relu) -> y (T, B, H), h_n (B, H), handle."""
    return _forward_impl(
        "rnn", nonlinearity, x, h0, None, w_ih, w_hh, b_ih, b_hh, lengths, reverse, training
    )


_GRADS3 = "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"


@torch.library.custom_op(
    "rnnfast::gru_backward",
    mutates_args=(),
    schema=f"(Tensor handle, Tensor x, Tensor? h0, {_W}, Tensor dy, Tensor dh_n) -> {_GRADS3}",
)
def gru_backward_op(handle, x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, dy, dh_n):  # type: ignore[no-untyped-def]
    """-> dx, dh0, dw_ih, dw_hh, db_ih, db_hh ((0,) without bias)."""
    return _backward_impl(
        "gru", "tanh", handle, x, h0, None, w_ih, w_hh, b_ih, b_hh, lengths, reverse, dy, dh_n, None
    )


@torch.library.custom_op(
    "rnnfast::lstm_backward",
    mutates_args=(),
    schema=(
        f"(Tensor handle, Tensor x, Tensor? h0, Tensor? c0, {_W}, Tensor dy, Tensor dh_n, "
        "Tensor dc_n) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
    ),
)
def lstm_backward_op(handle, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, dy, dh_n, dc_n):  # type: ignore[no-untyped-def]
    """-> dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh ((0,) without bias)."""
    return _backward_impl(
        "lstm", "tanh", handle, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, dy, dh_n, dc_n
    )


@torch.library.custom_op(
    "rnnfast::rnn_backward",
    mutates_args=(),
    schema=(
        f"(Tensor handle, Tensor x, Tensor? h0, {_W}, Tensor dy, Tensor dh_n, "
        f"str nonlinearity) -> {_GRADS3}"
    ),
)
def rnn_backward_op(  # type: ignore[no-untyped-def]
    handle, x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, dy, dh_n, nonlinearity
):
    """-> dx, dh0, dw_ih, dw_hh, db_ih, db_hh ((0,) without bias)."""
    return _backward_impl(
        "rnn", nonlinearity, handle, x, h0, None, w_ih, w_hh, b_ih, b_hh, lengths, reverse, dy,
        dh_n, None,
    )  # fmt: skip


# ---- fake (meta) implementations: shapes and dtypes only ----


def _fake_forward(x: Tensor, w_hh: Tensor, n_states: int) -> tuple[Tensor, ...]:
    T, B, _ = x.shape
    H = w_hh.shape[1]
    states = tuple(x.new_empty((B, H)) for _ in range(n_states))
    return (x.new_empty((T, B, H)), *states, x.new_empty((1,), dtype=torch.uint8))


def _fake_backward(
    x: Tensor, h0: Tensor | None, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, n_states: int
) -> tuple[Tensor, ...]:
    B, H = x.shape[1], w_hh.shape[1]
    states = tuple(x.new_empty((B, H)) for _ in range(n_states))
    nb = (w_ih.shape[0],) if b_ih is not None else (0,)
    return (
        x.new_empty(x.shape),
        *states,
        x.new_empty(w_ih.shape),
        x.new_empty(w_hh.shape),
        x.new_empty(nb),
        x.new_empty(nb),
    )


@gru_forward_op.register_fake
def _(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, training):  # type: ignore[no-untyped-def]
    return _fake_forward(x, w_hh, 1)


@lstm_forward_op.register_fake
def _(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, training):  # type: ignore[no-untyped-def]
    return _fake_forward(x, w_hh, 2)


@rnn_forward_op.register_fake
def _(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, training, nonlinearity):  # type: ignore[no-untyped-def]
    return _fake_forward(x, w_hh, 1)


@gru_backward_op.register_fake
def _(handle, x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, dy, dh_n):  # type: ignore[no-untyped-def]
    return _fake_backward(x, h0, w_ih, w_hh, b_ih, 1)


@lstm_backward_op.register_fake
def _(handle, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, dy, dh_n, dc_n):  # type: ignore[no-untyped-def]
    return _fake_backward(x, h0, w_ih, w_hh, b_ih, 2)


@rnn_backward_op.register_fake
def _(handle, x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, dy, dh_n, nonlinearity):  # type: ignore[no-untyped-def]
    return _fake_backward(x, h0, w_ih, w_hh, b_ih, 1)


# ---- autograd ----

# forward-op argument positions: x, h0, (c0,) w_ih, w_hh, b_ih, b_hh, lengths, reverse, training


def _setup_context(cell: str):  # type: ignore[no-untyped-def]
    ns = get_cell(cell).n_states

    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        tensors = inputs[: 1 + ns + 4]  # x, states, w_ih, w_hh, b_ih, b_hh
        ctx.has = tuple(t is not None for t in tensors)
        ctx.save_for_backward(output[-1], *(t for t in tensors if t is not None), inputs[ns + 5])
        ctx.reverse = inputs[ns + 6]
        ctx.nonlinearity = inputs[ns + 8] if cell == "rnn" else "tanh"
        ctx.out_like = [(output[k].shape, output[k].dtype) for k in range(1 + ns)]

    return setup_context


def _backward(cell: str):  # type: ignore[no-untyped-def]
    ns = get_cell(cell).n_states
    op = {"gru": gru_backward_op, "lstm": lstm_backward_op, "rnn": rnn_backward_op}[cell]

    def backward(ctx: Any, *grads: Any) -> tuple[Any, ...]:
        saved = list(ctx.saved_tensors)
        handle, lengths = saved[0], saved[-1]
        it = iter(saved[1:-1])
        tensors = [next(it) if has else None for has in ctx.has]
        x, states, (w_ih, w_hh, b_ih, b_hh) = tensors[0], tensors[1 : 1 + ns], tensors[1 + ns :]
        douts = [
            g if g is not None else torch.zeros(shape, dtype=dtype)
            for g, (shape, dtype) in zip(grads[: 1 + ns], ctx.out_like)
        ]
        extra = (ctx.nonlinearity,) if cell == "rnn" else ()
        res = op(handle, x, *states, w_ih, w_hh, b_ih, b_hh, lengths, ctx.reverse, *douts, *extra)
        need = ctx.needs_input_grad
        dx, dstates, (dw_ih, dw_hh, db_ih, db_hh) = res[0], res[1 : 1 + ns], res[1 + ns :]
        out: list[Any] = [dx if need[0] else None]
        out += [d if need[1 + k] and states[k] is not None else None for k, d in enumerate(dstates)]
        out += [dw_ih if need[1 + ns] else None, dw_hh if need[2 + ns] else None]
        out += [db_ih if b_ih is not None and need[3 + ns] else None]
        out += [db_hh if b_hh is not None and need[4 + ns] else None]
        n_rest = len(need) - len(out)  # lengths, reverse, training (, nonlinearity)
        return (*out, *([None] * n_rest))

    return backward


for _cell, _op in (("gru", gru_forward_op), ("lstm", lstm_forward_op), ("rnn", rnn_forward_op)):
    _op.register_autograd(_backward(_cell), setup_context=_setup_context(_cell))


# ---- the eager path ----
#
# Outside torch.compile / torch.export / torch.jit.trace the modules call the same NumPy-side
# implementation through this plain autograd.Function instead of the custom ops: the dispatcher and
# custom_op's generic autograd wrapper cost several hundred microseconds per layer and direction of a
# training step (see benchmarks/RESULTS.md), more than the whole kernel at small sizes. The forward
# keeps the cache on ctx (no handle). Both paths run _run_forward and _grads: the results are


class _EagerRNN(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        cell: str,
        nonlinearity: str,
        x: Tensor,
        h0: Tensor | None,
        c0: Tensor | None,
        w_ih: Tensor,
        w_hh: Tensor,
        b_ih: Tensor | None,
        b_hh: Tensor | None,
        lengths: Tensor | None,
        reverse: bool,
    ) -> tuple[Tensor, ...]:
        y, finals, cache, idx = _run_forward(
            cell, nonlinearity, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, True
        )
        # saved for autograd's in-place-modification check only: the cache holds NumPy views of x
        # and the weights, which must not change before backward
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
        ctx.cell, ctx.cache, ctx.reverse, ctx.idx = cell, cache, reverse, idx
        ctx.set_materialize_grads(False)
        return (torch.from_numpy(y), *(torch.from_numpy(s) for s in finals))

    @staticmethod
    @once_differentiable  # the kernels' backward is not itself differentiable: a clear error
    def backward(ctx: Any, dy: Tensor | None, *dstates: Tensor | None) -> tuple[Any, ...]:  # type: ignore[override]
        ctx.saved_tensors  # noqa: B018  (raises if an input was modified in place)
        dh_n, dc_n = (*dstates, None)[:2]
        need = ctx.needs_input_grad
        dx, g = _grads(
            ctx.cell, ctx.cache, _np(dy), _np(dh_n), _np(dc_n), ctx.reverse, ctx.idx, bool(need[2])
        )
        wrap = [
            (dx, need[2]),
            (g["h0"], need[3]),
            (g.get("c0"), need[4]),
            (g["w_ih"], need[5]),
            (g["w_hh"], need[6]),
            (g["b_ih"], need[7]),
            (g["b_hh"], need[8]),
        ]
        out = [torch.from_numpy(a) if a is not None and n else None for a, n in wrap]
        return (None, None, *out, None, None)


# --------------------------------------------------------------------------------------------------
# modules
