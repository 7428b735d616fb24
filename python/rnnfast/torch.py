"""rnnfast inside PyTorch: drop-in ``GRU``, ``LSTM`` and ``RNN`` modules over the rnnfast kernels.

``rnnfast.torch.GRU(...)`` takes ``torch.nn.GRU``'s constructor arguments, forward signature
(``input``, ``hx`` / ``(h0, c0)``; ``batch_first``; unbatched 2-D input; ``PackedSequence`` in and
out), returns the same outputs and has the same parameters (``nn.Parameter``s named ``weight_ih_l0``,
``bias_hh_l1_reverse``, ...; identical state_dict and, for one seed, identical initial values), so
torch optimizers, ``clip_grad_norm_``, LR schedulers and checkpoints work unchanged.
:func:`convert` swaps every ``nn.GRU``/``nn.LSTM``/``nn.RNN`` of a module tree for these modules,
keeping the very same Parameter objects (an optimizer built before keeps working); :func:`revert`
swaps them back.

How it runs: each layer and direction is one call of a ``torch.library.custom_op``
(``rnnfast::gru_forward``, ``rnnfast::lstm_forward``, ``rnnfast::rnn_forward``, and the matching
``*_backward``) with ``register_autograd`` and ``register_fake``, so autograd, ``torch.compile``
(``fullgraph=True``: no graph break; a PackedSequence output, whose size depends on the lengths, is
the one exception) and ``torch.export`` see one opaque op per layer and direction.
Tensors reach the kernels without a copy (``tensor.numpy()`` on C-contiguous CPU tensors; results come
back with ``torch.from_numpy``), and the kernels release the GIL. The forward's activation cache is
owned by a one-byte uint8 "handle" tensor that the forward op returns and autograd saves for the
backward op; should the handle ever not lead back to its cache, the backward op recomputes the forward
(same result, one extra forward). In eager mode (outside torch.compile, torch.export and
torch.jit.trace) the modules call the very same implementation through a plain
``torch.autograd.Function`` instead (the cache on its ctx): the dispatcher and custom_op's generic
autograd wrapper cost ~0.3 ms per layer and direction of a training step (set
``EAGER_FAST_PATH = False`` to use the ops everywhere). Dropout between layers is ``torch.nn.functional.dropout`` on the
layer outputs (training mode only), as in ``nn.GRU``.

Scope: float32 and float64 CPU tensors. A CUDA (or any non-CPU) tensor, float16/bfloat16, or LSTM
``proj_size > 0`` raise a clear error (no silent fallback: use ``revert(model)`` to get torch's own
modules back). Double backward (``create_graph=True`` then a second backward through the RNN) is not
supported. Threads: the kernels use rnnfast's thread pool (``rnnfast.set_num_threads``), not
``torch.set_num_threads``.

Shapes (T = time steps, B = batch, I = input size, H = hidden size, L = num_layers, D = 1 or 2
directions): input (T, B, I) ((B, T, I) with ``batch_first``), h0/c0 (L*D, B, H); output (T, B, D*H),
h_n/c_n (L*D, B, H).

``torch`` is imported by this module only: ``import rnnfast`` never needs it.
"""

from __future__ import annotations

import math
import numbers
import warnings
import weakref
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from . import functional as _F
from ._cells import CELLS

__all__ = ["EAGER_FAST_PATH", "GRU", "LSTM", "RNN", "convert", "revert"]

Tensor = torch.Tensor

_GATES = {c.name: c.gates for c in CELLS}  # gate count per cell, from the registry

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


def _lookup(handle: Tensor, cell: str, shape: tuple[int, ...], dtype: np.dtype) -> Any:
    """The SequenceCache behind ``handle``, or None when it cannot be found or does not match."""
    ref = _CACHES.get(handle.data_ptr())
    arr = ref() if ref is not None else None
    cache = getattr(arr, "cache", None)
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
    xa = _np(x)
    lens = None if lengths is None else lengths.numpy()
    idx = None
    if reverse:
        if lens is not None:
            idx = _reverse_index(xa.shape[0], xa.shape[1], lens)
        xa = _flip(xa, idx)
    w = (_np(w_ih), _np(w_hh), _np(b_ih), _np(b_hh))
    if cell == "lstm":
        y, h_n, c_n, cache = _F.lstm_forward(
            xa, _np(h0), _np(c0), *w, lengths=lens, training=training
        )
        finals = [h_n, c_n]
    elif cell == "gru":
        y, h_n, cache = _F.gru_forward(xa, _np(h0), *w, lengths=lens, training=training)
        finals = [h_n]
    else:
        y, h_n, cache = _F.rnn_forward(
            xa, _np(h0), *w, nonlinearity=nonlinearity, lengths=lens, training=training
        )
        finals = [h_n]
    if reverse:
        y = _flip(y, idx)
    return y, finals, cache, idx


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
    if reverse and dy is not None:
        dy = _flip(dy, idx)
    if cell == "lstm":
        g = _F.lstm_backward(cache, dy, dh_n, dc_n, need_dx=need_dx)
    elif cell == "gru":
        g = _F.gru_backward(cache, dy, dh_n, need_dx=need_dx)
    else:
        g = _F.rnn_backward(cache, dy, dh_n, need_dx=need_dx)
    dx = g["x"]
    return (_flip(dx, idx) if reverse and dx is not None else dx), g


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
_N_STATES = {"gru": 1, "lstm": 2, "rnn": 1}


def _setup_context(cell: str):  # type: ignore[no-untyped-def]
    ns = _N_STATES[cell]

    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        tensors = inputs[: 1 + ns + 4]  # x, states, w_ih, w_hh, b_ih, b_hh
        ctx.has = tuple(t is not None for t in tensors)
        ctx.save_for_backward(output[-1], *(t for t in tensors if t is not None), inputs[ns + 5])
        ctx.reverse = inputs[ns + 6]
        ctx.nonlinearity = inputs[ns + 8] if cell == "rnn" else "tanh"
        ctx.out_like = [(output[k].shape, output[k].dtype) for k in range(1 + ns)]

    return setup_context


def _backward(cell: str):  # type: ignore[no-untyped-def]
    ns = _N_STATES[cell]
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
# bitwise equal (tested).

# False: always use the custom ops (tests compare both paths)
EAGER_FAST_PATH = True


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
# --------------------------------------------------------------------------------------------------


def _check_device_dtype(name: str, t: Tensor) -> None:
    if t.device.type != "cpu":
        raise RuntimeError(
            f"rnnfast.torch: {name} is on {t.device}; rnnfast runs on the CPU only "
            "(move the tensors to the CPU, or use torch's own module: rnnfast.torch.revert(model))"
        )
    if t.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"rnnfast.torch: {name}: expected float32 or float64, got {t.dtype}")


class _RNNBase(nn.Module):
    """Shared body of GRU/LSTM/RNN: nn.RNNBase's constructor, parameters and checks.

    Deliberately not a subclass of torch.nn.RNNBase: Dynamo graph-breaks on every instance of
    nn.RNN/GRU/LSTM, which is exactly what these modules avoid.
    """

    _cell: str = "gru"

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        num_directions = 2 if bidirectional else 1
        # the checks and messages of torch.nn.RNNBase
        if (
            not isinstance(dropout, numbers.Number)
            or isinstance(dropout, bool)
            or not 0 <= dropout <= 1
        ):
            raise ValueError(
                "dropout should be a number in range [0, 1] representing the probability of an "
                "element being zeroed"
            )
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero "
                "dropout expects num_layers greater than 1, but got "
                f"dropout={dropout} and num_layers={num_layers}",
                stacklevel=3,
            )
        if not isinstance(bias, bool):
            raise TypeError(f"bias should be of type bool, got: {type(bias).__name__}")
        if not isinstance(batch_first, bool):
            raise TypeError(
                f"batch_first should be of type bool, got: {type(batch_first).__name__}"
            )
        if not isinstance(input_size, int):
            raise TypeError(f"input_size should be of type int, got: {type(input_size).__name__}")
        if input_size <= 0:
            raise ValueError("input_size must be greater than zero")
        if not isinstance(hidden_size, int):
            raise TypeError(f"hidden_size should be of type int, got: {type(hidden_size).__name__}")
        if hidden_size <= 0:
            raise ValueError("hidden_size must be greater than zero")
        if num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if proj_size < 0:
            raise ValueError(
                "proj_size should be a positive integer or zero to disable projections"
            )
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        if proj_size > 0:
            raise NotImplementedError(
                "rnnfast.torch.LSTM: proj_size > 0 is not supported (the rnnfast kernels have no "
                "projection); use torch.nn.LSTM for projected LSTMs"
            )
        if dtype is not None and dtype not in (torch.float32, torch.float64):
            raise TypeError(f"rnnfast.torch: dtype: expected float32 or float64, got {dtype}")
        if device is not None and torch.device(device).type not in ("cpu", "meta"):
            raise RuntimeError(
                f"rnnfast.torch: device {device}: rnnfast runs on the CPU only "
                "(use torch.nn's own module on other devices)"
            )

        gate_size = _GATES[self._cell] * hidden_size
        self._flat_weights_names: list[str] = []
        self._all_weights: list[list[str]] = []
        for layer in range(num_layers):
            for direction in range(num_directions):
                layer_input_size = input_size if layer == 0 else hidden_size * num_directions
                params = [
                    torch.empty((gate_size, layer_input_size), **factory_kwargs),
                    torch.empty((gate_size, hidden_size), **factory_kwargs),
                ]
                names = ["weight_ih_l{}{}", "weight_hh_l{}{}"]
                if bias:
                    params += [
                        torch.empty(gate_size, **factory_kwargs),
                        torch.empty(gate_size, **factory_kwargs),
                    ]
                    names += ["bias_ih_l{}{}", "bias_hh_l{}{}"]
                suffix = "_reverse" if direction == 1 else ""
                names = [n.format(layer, suffix) for n in names]
                for name, p in zip(names, params):
                    setattr(self, name, nn.Parameter(p))
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        self.reset_parameters()

    # ---- nn.RNNBase's public surface ----

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) for every parameter, in nn.RNNBase's order (same seed, same
        values)."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    def flatten_parameters(self) -> None:
        """No-op (cuDNN only in torch); here for code that calls it."""

    @property
    def _flat_weights(self) -> list[Tensor]:
        return [getattr(self, n) for n in self._flat_weights_names]

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        return [[getattr(self, w) for w in weights] for weights in self._all_weights]

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if self.num_layers != 1:
            s += ", num_layers={num_layers}"
        if self.bias is not True:
            s += ", bias={bias}"
        if self.batch_first is not False:
            s += ", batch_first={batch_first}"
        if self.dropout != 0:
            s += ", dropout={dropout}"
        if self.bidirectional is not False:
            s += ", bidirectional={bidirectional}"
        return s.format(**self.__dict__)

    # ---- forward ----

    def _weights(self, layer: int, direction: int) -> list[Tensor | None]:
        names = self._all_weights[layer * (2 if self.bidirectional else 1) + direction]
        w = [getattr(self, n) for n in names]
        return w if self.bias else [*w, None, None]

    def _run(
        self, x: Tensor, states: list[Tensor | None], lengths: Tensor | None
    ) -> tuple[Tensor, list[Tensor]]:
        """x (T, B, I); states: [h0 (L*D, B, H)] (+ [c0] for lstm) or Nones.

        Returns (y (T, B, D*H), [h_n (L*D, B, H)(, c_n)]).
        """
        D = 2 if self.bidirectional else 1
        training = torch.is_grad_enabled() and (
            x.requires_grad
            or any(p.requires_grad for p in self._flat_weights)
            or any(s is not None and s.requires_grad for s in states)
        )
        eager = EAGER_FAST_PATH and not (torch.compiler.is_compiling() or torch.jit.is_tracing())
        nl = getattr(self, "nonlinearity", "tanh")
        pad = [None] if self._cell != "lstm" else []  # c0 slot of gru/rnn in the eager calls
        ns = len(states)
        finals: list[list[Tensor]] = [[] for _ in range(ns)]
        inp = x
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0 and self.training:
                inp = nn.functional.dropout(inp, self.dropout, True)
            ys = []
            for d in range(D):
                k = layer * D + d
                s0 = [s[k] if s is not None else None for s in states]
                w = self._weights(layer, d)
                if eager:
                    if training:
                        y, *outs = _EagerRNN.apply(
                            self._cell, nl, inp, *s0, *pad, *w, lengths, d == 1
                        )
                    else:
                        y_, fin, _, _ = _run_forward(
                            self._cell, nl, inp, *s0, *pad, *w, lengths, d == 1, False
                        )
                        y, outs = torch.from_numpy(y_), [torch.from_numpy(f) for f in fin]
                elif self._cell == "gru":
                    y, h_n, _ = gru_forward_op(inp, *s0, *w, lengths, d == 1, training)
                    outs = [h_n]
                elif self._cell == "lstm":
                    y, h_n, c_n, _ = lstm_forward_op(inp, *s0, *w, lengths, d == 1, training)
                    outs = [h_n, c_n]
                else:
                    y, h_n, _ = rnn_forward_op(inp, *s0, *w, lengths, d == 1, training, nl)
                    outs = [h_n]
                ys.append(y)
                for j in range(ns):
                    finals[j].append(outs[j])
            inp = ys[0] if D == 1 else torch.cat(ys, dim=2)
        return inp, [torch.stack(f) for f in finals]

    def _forward(self, input: Any, hx: Any) -> tuple[Any, Any]:
        D = 2 if self.bidirectional else 1
        is_lstm = self._cell == "lstm"
        packed = isinstance(input, PackedSequence)
        lengths = None
        if packed:
            sorted_indices = input.sorted_indices
            x, lengths = pad_packed_sequence(input)  # (T, B, I) in the caller's batch order
            is_batched = True
        else:
            if input.dim() not in (2, 3):
                raise ValueError(
                    f"{type(self).__name__}: Expected input to be 2D or 3D, "
                    f"got {input.dim()}D tensor instead"
                )
            is_batched = input.dim() == 3
            x = input if is_batched else input.unsqueeze(1)
            if is_batched and self.batch_first:
                x = x.transpose(0, 1)
        _check_device_dtype("input", x)
        w0 = getattr(self, self._flat_weights_names[0])
        _check_device_dtype("weights", w0)
        if x.dtype != w0.dtype:
            raise ValueError(
                f"RNN input dtype ({x.dtype}) does not match weight dtype ({w0.dtype}). "
                f"Convert input: input.to({w0.dtype}), or convert model: model.to({x.dtype})"
            )
        if x.size(-1) != self.input_size:
            raise RuntimeError(
                "input.size(-1) must be equal to input_size. "
                f"Expected {self.input_size}, got {x.size(-1)}"
            )
        expected = (self.num_layers * D, x.size(1), self.hidden_size)
        states: list[Tensor | None]
        if hx is None:
            states = [None, None] if is_lstm else [None]
        else:
            states = list(hx) if is_lstm else [hx]
            if is_lstm and len(states) != 2:
                raise RuntimeError("LSTM: hx must be a tuple (h_0, c_0)")
            want = 3 if is_batched else 2
            for name, s in zip(("hx", "cx"), states):
                if s.dim() != want:
                    raise RuntimeError(
                        f"For {'batched 3-D' if is_batched else 'unbatched 2-D'} input, {name} "
                        f"should also be {want}-D but got {s.dim()}-D tensor"
                    )
            if not is_batched:
                states = [s.unsqueeze(1) for s in states]
            for j, s in enumerate(states):
                _check_device_dtype("hx", s)
                if s.dtype != x.dtype:
                    raise RuntimeError(
                        f"rnnfast.torch: hx dtype {s.dtype} does not match input dtype {x.dtype}"
                    )
                if tuple(s.shape) != expected:
                    kind = "cell" if j == 1 else "hidden"
                    raise RuntimeError(f"Expected {kind} size {expected}, got {list(s.shape)}")
        y, finals = self._run(x, states, lengths)
        if packed:
            # pack in the input's order: sorted by length, time-major (the rows valid at each step)
            lens_sorted = lengths.index_select(0, sorted_indices)
            mask = torch.arange(y.size(0))[:, None] < lens_sorted[None, :]
            data = y.index_select(1, sorted_indices)[mask]
            output: Any = PackedSequence(
                data, input.batch_sizes, input.sorted_indices, input.unsorted_indices
            )
        else:
            output = y
            if not is_batched:
                output = y.squeeze(1)
                finals = [f.squeeze(1) for f in finals]
            elif self.batch_first:
                output = y.transpose(0, 1)
        return output, (tuple(finals) if is_lstm else finals[0])


class GRU(_RNNBase):
    """torch.nn.GRU over the rnnfast kernels (same arguments, outputs, parameters and state_dict).

    Args:
        input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
        bidirectional=False, device=None (CPU only), dtype=None (float32 or float64).

    forward(input, hx=None): input (T, B, I) ((B, T, I) with batch_first), (T, I) unbatched, or a
    PackedSequence; hx (L*D, B, H) or None (zeros). Returns (output (T, B, D*H) or a
    PackedSequence, h_n (L*D, B, H)).
    """

    _cell = "gru"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, **kwargs)

    def forward(self, input: Any, hx: Tensor | None = None) -> tuple[Any, Tensor]:
        return self._forward(input, hx)


class LSTM(_RNNBase):
    """torch.nn.LSTM over the rnnfast kernels (same arguments, outputs, parameters and state_dict).

    Args: as :class:`GRU`, plus proj_size=0 (only 0: a projected LSTM raises NotImplementedError).

    forward(input, hx=None): hx = (h_0, c_0), each (L*D, B, H), or None. Returns (output,
    (h_n, c_n)).
    """

    _cell = "lstm"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__("LSTM", *args, **kwargs)

    def forward(
        self, input: Any, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Any, tuple[Tensor, Tensor]]:
        return self._forward(input, hx)


class RNN(_RNNBase):
    """torch.nn.RNN (Elman, tanh or relu) over the rnnfast kernels.

    Args: input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, device=None, dtype=None (nn.RNN's positional order).
    """

    _cell = "rnn"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if len(args) > 3:
            self.nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            self.nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if self.nonlinearity == "tanh":
            mode = "RNN_TANH"
        elif self.nonlinearity == "relu":
            mode = "RNN_RELU"
        else:
            raise ValueError(
                f"Unknown nonlinearity '{self.nonlinearity}'. Select from 'tanh' or 'relu'."
            )
        super().__init__(mode, *args, **kwargs)

    def forward(self, input: Any, hx: Tensor | None = None) -> tuple[Any, Tensor]:
        return self._forward(input, hx)


# --------------------------------------------------------------------------------------------------
# convert / revert
# --------------------------------------------------------------------------------------------------

_TO_FAST = {nn.GRU: GRU, nn.LSTM: LSTM, nn.RNN: RNN}
_TO_TORCH = {GRU: nn.GRU, LSTM: nn.LSTM, RNN: nn.RNN}


def _swap(mod: nn.Module, cls: type) -> nn.Module:
    """A ``cls`` with ``mod``'s configuration holding ``mod``'s very Parameter objects."""
    kwargs: dict[str, Any] = dict(
        num_layers=mod.num_layers,
        bias=mod.bias,
        batch_first=mod.batch_first,
        dropout=mod.dropout,
        bidirectional=mod.bidirectional,
    )
    if isinstance(mod, (nn.RNN, RNN)):
        kwargs["nonlinearity"] = mod.nonlinearity
    w0 = getattr(mod, mod._flat_weights_names[0])
    with warnings.catch_warnings():  # the dropout-with-one-layer warning was given once already
        warnings.simplefilter("ignore", UserWarning)
        new = cls(mod.input_size, mod.hidden_size, device="meta", dtype=w0.dtype, **kwargs)
    for name in mod._flat_weights_names:
        setattr(new, name, getattr(mod, name))
    new.train(mod.training)
    return new


def _convert(module: nn.Module, table: dict[type, type], what: str) -> nn.Module:
    def swap(mod: nn.Module, path: str) -> nn.Module:
        cls = table.get(type(mod))
        if cls is None:
            return mod
        if getattr(mod, "proj_size", 0) > 0:
            raise NotImplementedError(
                f"{what}: {path or 'the module'} is an LSTM with proj_size={mod.proj_size}; "
                "rnnfast.torch has no projected LSTM"
            )
        return _swap(mod, cls)

    root = swap(module, "")
    if root is not module:
        return root
    for name, child in list(module.named_modules()):
        for cname, sub in list(child.named_children()):
            new = swap(sub, f"{name}.{cname}" if name else cname)
            if new is not sub:
                setattr(child, cname, new)
    return module


def convert(module: nn.Module) -> nn.Module:
    """Replace every torch.nn.GRU/LSTM/RNN in ``module``'s tree with rnnfast.torch's (in place).

    The new modules hold the very same Parameter objects (an optimizer made before keeps working)
    and the same configuration and train/eval mode. Returns ``module`` (or, when ``module`` itself
    is an nn.GRU/LSTM/RNN, its replacement). An LSTM with proj_size > 0 raises NotImplementedError
    (nothing is replaced then: the check runs as the tree is walked, so earlier swaps are kept).
    Only exact nn.GRU/LSTM/RNN instances are replaced, not subclasses of them.
    """
    return _convert(module, _TO_FAST, "rnnfast.torch.convert")


def revert(module: nn.Module) -> nn.Module:
    """The inverse of :func:`convert`: every rnnfast.torch GRU/LSTM/RNN back to torch.nn's."""
    return _convert(module, _TO_TORCH, "rnnfast.torch.revert")
