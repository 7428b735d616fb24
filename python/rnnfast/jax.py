"""rnnfast inside JAX: ``gru``, ``lstm``, ``rnn`` with a ``jax.custom_vjp`` over the compiled kernels,
Flax linen modules ``GRU``, ``LSTM``, ``RNN`` and Flax nnx modules ``nnx.GRU``, ``nnx.LSTM``,
``nnx.RNN``.

Dimensions: T = time steps, B = batch, I = input size, H = hidden size, G = gates (1 rnn, 4 lstm,
3 gru). Shapes and gate orders are those of :mod:`rnnfast.functional` (and PyTorch): x (T, B, I)
(``batch_first``: (B, T, I)); h0, c0 (B, H); w_ih (G*H, I); w_hh (G*H, H); b_ih, b_hh (G*H,) or
both None; LSTM gates i, f, g, o; GRU r, z, n with n = tanh(W_in x + b_in + r*(W_hn h + b_hn)).
``lengths`` (B,) integers in [0, T] make a ragged batch: steps past a sequence's length give
y = 0 and carry the state, so h_n is the state after the last valid step (h0 when the length is 0).

How it runs: each function is a ``jax.custom_vjp`` whose forward and backward are host calls into
rnnfast's kernels (the GIL is released inside them). Under ``jit`` a host call is one opaque op
in the XLA program; ``grad`` runs the kernels' forward in training mode, keeps its activations on
the host under an int32 token that travels as a residual, and the backward call picks them up by
that token (recomputing the forward if they are gone, e.g. after ``jax.checkpoint``
rematerialisation or a second call of a vjp function, so results never depend on the store).
Activations whose backward never runs (``jax.vjp`` without calling the vjp function) stay in a
host store bounded by :data:`CACHE_LIMIT_BYTES` (oldest dropped first); :func:`clear_cache`
empties it.

The host call: XLA's CPU host-callback custom call, the one ``jax.pure_callback`` lowers to, but
reached through a small primitive of this module that passes XLA's buffers to the kernels as NumPy
arrays; ``jax.pure_callback`` itself first re-wraps every argument into a jax Array, which costs
~5x more per call (benchmarks/RESULTS.md). The primitive needs the private
``jax._src.callback.emit_python_callback``; without it (another jax version) or with
``RNNFAST_JAX_CALLBACK=pure`` in the environment, ``jax.pure_callback`` with
``vmap_method="expand_dims"`` is used, with the same results (:data:`CALLBACK_KIND` says which).
Not ``jax.ffi``: an FFI target is a C++ handler compiled against XLA's FFI headers (shipped in
jaxlib); rnnfast's extension is built without jaxlib, and a second one built against a jaxlib
release would tie rnnfast's wheels to jaxlib versions. On a non-CPU default backend the arrays are
copied to the host and back (pure_callback path).

``vmap``: the host callbacks take any number of leading vmapped axes (size 1 where an argument is
not vmapped, as pure_callback's ``vmap_method="expand_dims"``) and handle them themselves.
The inference forward folds the vmapped axes into B when the weights are not vmapped (one kernel
call); otherwise, and for every call made under ``grad`` (whose weight gradients must be per
vmapped instance), the callback loops over the vmapped instances, one kernel call each. For speed
put independent sequences in B, not in a vmapped axis.

dtypes: float32, or float64 with ``jax_enable_x64``; every float argument must have x's dtype.

Forward-mode differentiation (``jax.jvp``, ``jax.jacfwd``) is not defined (a custom_vjp).

The LSTM with projection (PyTorch's ``proj_size``) is ``lstm(..., w_hr=W_hr)``: the same
custom_vjp and host calls over the kernels of :mod:`rnnfast._proj` (no Flax module yet).
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Sequence
from functools import cache, partial
from typing import Any

import numpy as np

try:
    import jax
    import jax.numpy as jnp
except ImportError as exc:  # pragma: no cover - exercised only without jax
    raise ImportError("rnnfast.jax needs JAX: pip install 'rnnfast[jax]'") from exc

from . import _proj
from . import functional as F
from ._argcheck import (
    check_bias_pair,
    check_bool,
    check_lengths_dtype,
    check_nonlinearity,
    check_shape,
    sequence_sizes,
)
from ._cells import CELLS, get_cell
from ._jax_primitive import _make_host_primitive

__all__ = [
    "CACHE_LIMIT_BYTES",
    "CALLBACK_KIND",
    "GRU",  # noqa: F822 - Flax modules, built on first access (module __getattr__)
    "LSTM",  # noqa: F822
    "RNN",  # noqa: F822
    "cache_info",
    "clear_cache",
    "nnx",  # noqa: F822 - namespace of the Flax nnx modules GRU, LSTM, RNN (first access)
    "gru",
    "lstm",
    "rnn",
]

#: Largest total size in bytes of forward activations kept for a backward that has not run yet.
CACHE_LIMIT_BYTES = 1 << 30

_GATES = {c.name: c.gates for c in CELLS}  # gate count per cell, from the registry
# The LSTM with projection (``lstm(..., w_hr=)``): its kernels live beside the registry
# (rnnfast._proj); the callbacks and the custom_vjp below take it as one more cell name.
_PROJ = "lstm_proj"

# --------------------------------------------------------------------------------------------------
# host store: forward activations by token, for the backward callback
# --------------------------------------------------------------------------------------------------

_store: OrderedDict[int, Any] = OrderedDict()  # SequenceCache or ProjCache
_store_bytes = 0
_store_lock = threading.Lock()
_token_counter = itertools.count(1)


def _put(cache: F.SequenceCache | _proj.ProjCache) -> int:
    global _store_bytes
    # the cache keeps references to the callback's input buffers, which belong to XLA: drop them
    # (the backward callback supplies the same values as residuals)
    if isinstance(cache, _proj.ProjCache):
        cache.x, cache.weights = None, ()  # type: ignore[assignment]
    else:
        cache.x = cache.w_ih = cache.w_hh = cache.b_ih = cache.b_hh = None  # type: ignore[assignment]
    token = next(_token_counter) % (2**31 - 1) + 1
    n = cache.nbytes
    with _store_lock:
        _store[token] = cache
        _store_bytes += n
        while _store_bytes > CACHE_LIMIT_BYTES and len(_store) > 1:
            _, old = _store.popitem(last=False)
            _store_bytes -= old.nbytes
    return token


def _pop(token: int) -> Any:
    global _store_bytes
    with _store_lock:
        cache = _store.pop(token, None)
        if cache is not None:
            _store_bytes -= cache.nbytes
    return cache


def clear_cache() -> None:
    """Drop every stored forward activation (their backward, if it ever runs, recomputes them)."""
    global _store_bytes
    with _store_lock:
        _store.clear()
        _store_bytes = 0


def cache_info() -> dict[str, int]:
    """``{"entries": n, "bytes": b}`` of the host store of forward activations awaiting backward."""
    with _store_lock:
        return {"entries": len(_store), "bytes": _store_bytes}


# --------------------------------------------------------------------------------------------------
# the callbacks (host side): plain NumPy, vmapped axes leading (vmap_method="expand_dims")
# --------------------------------------------------------------------------------------------------

# argument order of every callback: x, h0, [c0], w_ih, w_hh, [b_ih, b_hh], [w_hr], [lengths]
_BASE_NDIM = {
    "x": 3, "h0": 2, "c0": 2, "w_ih": 2, "w_hh": 2, "b_ih": 1, "b_hh": 1, "w_hr": 2, "lengths": 1,
}  # fmt: skip


def _has_c(cell: str) -> bool:
    return cell == _PROJ or get_cell(cell).has_cell_state


def _names(cell: str, bias: bool, ragged: bool) -> list[str]:
    states = ("h0", "c0") if cell == _PROJ else get_cell(cell).state_names
    names = ["x", *states, "w_ih", "w_hh"] + (["b_ih", "b_hh"] if bias else [])
    return names + (["w_hr"] if cell == _PROJ else []) + (["lengths"] if ragged else [])


def _lead_shape(arrs: Sequence[np.ndarray], bases: Sequence[int]) -> tuple[int, ...]:
    return np.broadcast_shapes(*(a.shape[: a.ndim - b] for a, b in zip(arrs, bases)))


def _instance(a: np.ndarray, base: int, idx: tuple[int, ...]) -> np.ndarray:
    """The slice of ``a`` for vmapped instance ``idx`` (size-1 leading axes broadcast)."""
    k = a.ndim - base
    sub = tuple(0 if a.shape[j] == 1 else i for j, i in enumerate(idx[len(idx) - k :]))
    v = np.asarray(a[sub])  # not np.ascontiguousarray: it turns a 0-d token into shape (1,)
    return v if v.flags.c_contiguous else v.copy()


def _kernel_forward(
    cell: str, nl: str, a: dict[str, np.ndarray | None], training: bool
) -> tuple[list[np.ndarray], Any]:
    """One call of the functional forward; returns ([y, h_n(, c_n)], cache or None)."""
    if cell == _PROJ:
        y, h, c, pcache = _proj.lstm_proj_forward(
            a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a.get("b_ih"), a.get("b_hh"),
            a["w_hr"], lengths=a.get("lengths"), training=training,
        )  # fmt: skip
        return [y, h, c], pcache
    if cell == "lstm":
        y, h, c, cache = F.lstm_forward(
            a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a.get("b_ih"), a.get("b_hh"),
            lengths=a.get("lengths"), training=training,
        )  # fmt: skip
        return [y, h, c], cache
    if cell == "gru":
        y, h, cache = F.gru_forward(
            a["x"], a["h0"], a["w_ih"], a["w_hh"], a.get("b_ih"), a.get("b_hh"),
            lengths=a.get("lengths"), training=training,
        )  # fmt: skip
        return [y, h], cache
    y, h, cache = F.rnn_forward(
        a["x"], a["h0"], a["w_ih"], a["w_hh"], a.get("b_ih"), a.get("b_hh"),
        nonlinearity=nl, lengths=a.get("lengths"), training=training,
    )  # fmt: skip
    return [y, h], cache


def _forward_callback(cell: str, nl: str, names: list[str], store: bool) -> Any:
    """The host function of the forward: inference (``store=False``: y, h_n(, c_n)) or training
    with the activations kept under a token (``store=True``: ..., token)."""
    bases = [_BASE_NDIM[n] for n in names]

    def cb(*args: Any) -> tuple[np.ndarray, ...]:
        arrs = [np.asarray(a) for a in args]  # eager calls pass jax Arrays (on the CPU)
        lead = _lead_shape(arrs, bases)
        if not lead:
            outs, cache = _kernel_forward(cell, nl, dict(zip(names, arrs)), store)
            return (*outs, np.int32(_put(cache))) if store else tuple(outs)  # type: ignore[arg-type]
        shared = all(
            all(d == 1 for d in arr.shape[: arr.ndim - b])
            for n, arr, b in zip(names, arrs, bases)
            if n.startswith(("w_", "b_"))
        )
        if shared and not store:  # fold the vmapped axes into B: one kernel call
            return _folded_forward(cell, nl, names, arrs, bases, lead)
        outs_all: list[list[np.ndarray]] = []
        tokens = np.empty(lead, np.int32)
        for idx in np.ndindex(*lead):
            a = {n: _instance(arr, b, idx) for n, arr, b in zip(names, arrs, bases)}
            outs, cache = _kernel_forward(cell, nl, a, store)
            outs_all.append(outs)
            if store:
                tokens[idx] = _put(cache)  # type: ignore[arg-type]
        res = [np.stack(o).reshape(lead + o[0].shape) for o in zip(*outs_all)]
        return (*res, tokens) if store else tuple(res)

    return cb


def _folded_forward(
    cell: str,
    nl: str,
    names: list[str],
    arrs: Sequence[np.ndarray],
    bases: Sequence[int],
    lead: tuple[int, ...],
) -> tuple[np.ndarray, ...]:
    """Inference forward of N = prod(lead) vmapped instances as one batch of N*B sequences."""
    k = len(lead)
    n = int(np.prod(lead))
    a: dict[str, np.ndarray | None] = {}
    for name, arr, b in zip(names, arrs, bases):
        if name.startswith(("w_", "b_")):
            a[name] = np.ascontiguousarray(arr.reshape(arr.shape[arr.ndim - b :]))
            continue
        full = np.broadcast_to(arr, lead + arr.shape[arr.ndim - b :])
        if name == "x":  # (*lead, T, B, I) -> (T, N*B, I)
            t, bsz, i = full.shape[k:]
            a[name] = np.ascontiguousarray(np.moveaxis(full, k, 0)).reshape(t, n * bsz, i)
        else:  # (*lead, B, ...) -> (N*B, ...)
            a[name] = np.ascontiguousarray(full).reshape((-1,) + full.shape[k + 1 :])
    outs, _ = _kernel_forward(cell, nl, a, False)
    y = outs[0]  # (T, N*B, H) -> (*lead, T, B, H)
    t, nb, h = y.shape
    y = np.moveaxis(y.reshape(t, *lead, nb // n, h), 0, k)
    states = [s.reshape(*lead, nb // n, s.shape[-1]) for s in outs[1:]]  # (N*B, .) -> (*lead, B, .)
    return (np.ascontiguousarray(y), *states)


def _backward_callback(cell: str, nl: str, names: list[str]) -> Any:
    """The host function of the backward: (token, inputs..., dy, dh_n(, dc_n)) -> gradients of
    x, h0(, c0), w_ih, w_hh(, b_ih, b_hh)(, w_hr)."""
    has_c = _has_c(cell)
    all_names = ["token", *names, "dy", "dh_n"] + (["dc_n"] if has_c else [])
    bases = [0] + [_BASE_NDIM[n] for n in names] + [3, 2] + ([2] if has_c else [])
    grad_names = [n for n in names if n != "lengths"]

    def grads(a: dict[str, np.ndarray], cache: Any) -> list[np.ndarray]:
        if cache is None:  # dropped, rematerialised or already used: recompute the forward
            _, cache = _kernel_forward(cell, nl, a, True)
            assert cache is not None
        if cell == _PROJ:  # a ProjCache over the same buffers, pointed at this call's inputs
            w = tuple(a.get(k) for k in ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr"))
            pc = _proj.ProjCache(cache._core, a["x"], w)
            gp = _proj.lstm_proj_backward(pc, a["dy"], a["dh_n"], a["dc_n"])
            return [gp[n] for n in grad_names]  # type: ignore[misc]
        # a shallow copy pointed at this call's inputs (the same values the forward saw)
        c = F.SequenceCache.__new__(F.SequenceCache)
        for slot in F.SequenceCache.__slots__:
            setattr(c, slot, getattr(cache, slot))
        c.x, c.w_ih, c.w_hh = a["x"], a["w_ih"], a["w_hh"]
        c.b_ih, c.b_hh = a.get("b_ih"), a.get("b_hh")
        if cell == "lstm":
            g = F.lstm_backward(c, a["dy"], a["dh_n"], a["dc_n"])
        elif cell == "gru":
            g = F.gru_backward(c, a["dy"], a["dh_n"])
        else:
            g = F.rnn_backward(c, a["dy"], a["dh_n"])
        return [g[n] for n in grad_names]  # type: ignore[misc]

    def cb(*args: Any) -> tuple[np.ndarray, ...]:
        arrs = [np.asarray(a) for a in args]  # eager calls pass jax Arrays (on the CPU)
        lead = _lead_shape(arrs, bases)
        if not lead:
            a = dict(zip(all_names, arrs))
            return tuple(grads(a, _pop(int(a["token"]))))
        # one backward per vmapped instance (weight gradients are per instance); a token shared
        # by several instances (vmap over the cotangents only) serves each of them
        caches = {int(t): _pop(int(t)) for t in np.unique(arrs[0])}
        outs_all = []
        for idx in np.ndindex(*lead):
            a = {n: _instance(arr, b, idx) for n, arr, b in zip(all_names, arrs, bases)}
            tok = int(a["token"])
            if caches[tok] is None:
                _, caches[tok] = _kernel_forward(cell, nl, a, True)
            outs_all.append(grads(a, caches[tok]))
        return tuple(np.stack(o).reshape(lead + o[0].shape) for o in zip(*outs_all))

    return cb


@cache
def _forward_cb(cell: str, nl: str, names: tuple[str, ...], store: bool) -> Any:
    # one function object per configuration: eager calls dispatch the callback primitive with the
    # callback as a parameter, and a new closure per call would compile a new executable each time
    return _forward_callback(cell, nl, list(names), store)


@cache
def _backward_cb(cell: str, nl: str, names: tuple[str, ...]) -> Any:
    return _backward_callback(cell, nl, list(names))


# --------------------------------------------------------------------------------------------------
# the host call: a primitive lowered to XLA's Python callback, or jax.pure_callback
# --------------------------------------------------------------------------------------------------


_HOST_PRIMITIVE = _make_host_primitive()
#: How the kernels are called: "primitive" (XLA's host callback, direct) or "pure_callback".
CALLBACK_KIND = "primitive" if _HOST_PRIMITIVE is not None else "pure_callback"


def _host_call(callback: Any, shapes: Sequence[Any], bases: Sequence[int], *args: Any) -> Any:
    """``callback(*args)`` on the host (NumPy in, NumPy out; shapes: its unbatched results)."""
    if _HOST_PRIMITIVE is None or jax.default_backend() != "cpu":
        return jax.pure_callback(callback, list(shapes), *args, vmap_method="expand_dims")
    results = tuple((tuple(s.shape), np.dtype(s.dtype).str) for s in shapes)
    return _HOST_PRIMITIVE.bind(*args, callback=callback, bases=tuple(bases), results=results)


# --------------------------------------------------------------------------------------------------
# the custom_vjp (JAX side)
# --------------------------------------------------------------------------------------------------

_ARGS = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "lengths")


def _present(cell: str, args: tuple[Any, ...]) -> tuple[str, ...]:
    a = dict(zip(_ARGS, args))
    return tuple(_names(cell, a["b_ih"] is not None, a["lengths"] is not None))


def _out_shapes(cell: str, x: Any, w_hh: Any) -> list[Any]:
    t, b, _ = x.shape
    h = w_hh.shape[1]  # the hidden state's width: H, or P with a projection (w_hh (4H, P))
    shapes = [jax.ShapeDtypeStruct((t, b, h), x.dtype), jax.ShapeDtypeStruct((b, h), x.dtype)]
    if _has_c(cell):  # c_n (B, H)
        shapes.append(jax.ShapeDtypeStruct((b, w_hh.shape[0] // 4), x.dtype))
    return shapes


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _sequence(cell: str, nl: str, *args: Any) -> tuple[Any, ...]:
    names = _present(cell, args)
    a = dict(zip(_ARGS, args))
    return tuple(
        _host_call(
            _forward_cb(cell, nl, names, False),
            _out_shapes(cell, a["x"], a["w_hh"]),
            [_BASE_NDIM[n] for n in names],
            *(a[n] for n in names),
        )
    )


def _sequence_fwd(cell: str, nl: str, *args: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    names = _present(cell, args)
    a = dict(zip(_ARGS, args))
    shapes = [*_out_shapes(cell, a["x"], a["w_hh"]), jax.ShapeDtypeStruct((), jnp.int32)]
    *outs, token = _host_call(
        _forward_cb(cell, nl, names, True),
        shapes,
        [_BASE_NDIM[n] for n in names],
        *(a[n] for n in names),
    )
    return tuple(outs), (token, args)


def _sequence_bwd(
    cell: str, nl: str, res: tuple[Any, tuple[Any, ...]], cot: tuple[Any, ...]
) -> tuple[Any, ...]:
    token, args = res
    names = _present(cell, args)
    a = dict(zip(_ARGS, args))
    grad_names = [n for n in names if n != "lengths"]
    shapes = [jax.ShapeDtypeStruct(a[n].shape, a[n].dtype) for n in grad_names]
    bases = [0] + [_BASE_NDIM[n] for n in names] + [3] + [2] * (len(cot) - 1)
    grads = _host_call(
        _backward_cb(cell, nl, names), shapes, bases, token, *(a[n] for n in names), *cot
    )
    g = dict(zip(grad_names, grads))
    return tuple(g.get(n) for n in _ARGS)


_sequence.defvjp(_sequence_fwd, _sequence_bwd)


# --------------------------------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------------------------------


def _prepare(
    cell: str,
    x: Any,
    h0: Any,
    c0: Any,
    w_ih: Any,
    w_hh: Any,
    b_ih: Any,
    b_hh: Any,
    lengths: Any,
    batch_first: bool,
    w_hr: Any = None,
) -> tuple[Any, ...]:
    """Checked arguments in the order of _ARGS (time-major x, zero states for None). ``w_hr``: the
    projection (P, H) of cell _PROJ (w_hh is then (4H, P), h0 (B, P))."""
    batch_first = check_bool("batch_first", batch_first)
    x = jnp.asarray(x)
    if x.dtype not in (jnp.float32, jnp.float64):
        raise TypeError(f"x: expected dtype float32 or float64, got dtype {x.dtype}")
    if x.ndim != 3:
        layout = "(B, T, I)" if batch_first else "(T, B, I)"
        raise ValueError(f"x: expected a 3-D array {layout}, got shape {x.shape}")
    if batch_first:
        x = jnp.swapaxes(x, 0, 1)

    def arr(name: str, v: Any, shape: tuple[int, ...] | None) -> Any:
        v = jnp.asarray(v)
        if v.dtype != x.dtype:
            raise TypeError(f"{name}: expected dtype {x.dtype} (the dtype of x), got {v.dtype}")
        if shape is not None:
            check_shape(name, v.shape, shape)
        return v

    w_ih, w_hh = arr("w_ih", w_ih, None), arr("w_hh", w_hh, None)
    if cell == _PROJ:
        w_hr = arr("w_hr", w_hr, None)
        _, b, _, h, p = _proj_sizes(x.shape, w_ih.shape, w_hh.shape, w_hr.shape)
    else:
        _, b, _, h = sequence_sizes(_GATES[cell], x.shape, w_ih.shape, w_hh.shape)
        p = h  # the hidden state's width
    check_bias_pair(b_ih, b_hh)
    if b_ih is not None:
        b_ih = arr("b_ih", b_ih, (w_ih.shape[0],))
        b_hh = arr("b_hh", b_hh, (w_ih.shape[0],))
    h0 = jnp.zeros((b, p), x.dtype) if h0 is None else arr("h0", h0, (b, p))
    if _has_c(cell):
        c0 = jnp.zeros((b, h), x.dtype) if c0 is None else arr("c0", c0, (b, h))
    if lengths is not None:
        lengths = jnp.asarray(lengths)
        check_lengths_dtype(lengths.dtype, b)
        check_shape("lengths", lengths.shape, (b,))
    return x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths


def _proj_sizes(
    x_shape: Sequence[int], w_ih_shape: Sequence[int], w_hh_shape: Sequence[int], w_hr_shape: Any
) -> tuple[int, int, int, int, int]:
    """(T, B, I, H, P) of the LSTM with projection: H, P from w_hr (P, H), each shape checked."""
    w_hr_shape = tuple(w_hr_shape)
    if len(w_hr_shape) != 2 or min(w_hr_shape) < 1:
        raise ValueError(f"w_hr: expected shape (P, H) with P, H >= 1, got {w_hr_shape}")
    p, h = (int(n) for n in w_hr_shape)
    if len(x_shape) != 3 or min(x_shape) < 1:
        raise ValueError(f"x: expected shape (T, B, I) with T, B, I >= 1, got {tuple(x_shape)}")
    t, b, i = (int(n) for n in x_shape)
    check_shape("w_ih", w_ih_shape, (4 * h, i))
    check_shape("w_hh", w_hh_shape, (4 * h, p))
    return t, b, i, h, p


def _out(y: Any, batch_first: bool) -> Any:
    return jnp.swapaxes(y, 0, 1) if batch_first else y


def rnn(
    x: Any,
    h0: Any,
    w_ih: Any,
    w_hh: Any,
    b_ih: Any = None,
    b_hh: Any = None,
    *,
    nonlinearity: str = "tanh",
    lengths: Any = None,
    batch_first: bool = False,
) -> tuple[Any, Any]:
    """Elman RNN over a whole sequence, h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh).

    Args:
        x: (T, B, I) float32 or float64 ((B, T, I) with ``batch_first``).
        h0: (B, H) or None (zeros). w_ih: (H, I); w_hh: (H, H); b_ih, b_hh: (H,) or both None.
        nonlinearity: "tanh" or "relu" (static).
        lengths: (B,) integers in [0, T] or None (every sequence T steps).

    Returns:
        y (T, B, H) ((B, T, H) with ``batch_first``) and h_n (B, H), in x's dtype.
        Differentiable in x, h0 and the weights (``jax.grad``, ``jax.vjp``; not ``jax.jvp``).
    """
    check_nonlinearity(nonlinearity)
    args = _prepare("rnn", x, h0, None, w_ih, w_hh, b_ih, b_hh, lengths, batch_first)
    y, h_n = _sequence("rnn", nonlinearity, *args)
    return _out(y, batch_first), h_n


def gru(
    x: Any,
    h0: Any,
    w_ih: Any,
    w_hh: Any,
    b_ih: Any = None,
    b_hh: Any = None,
    *,
    lengths: Any = None,
    batch_first: bool = False,
) -> tuple[Any, Any]:
    """GRU over a whole sequence (gates r, z, n; PyTorch's formulas).

    Args:
        x: (T, B, I) float32 or float64 ((B, T, I) with ``batch_first``).
        h0: (B, H) or None (zeros). w_ih: (3H, I); w_hh: (3H, H); b_ih, b_hh: (3H,) or both None.
        lengths: (B,) integers in [0, T] or None.

    Returns:
        y (T, B, H) ((B, T, H) with ``batch_first``) and h_n (B, H).
    """
    args = _prepare("gru", x, h0, None, w_ih, w_hh, b_ih, b_hh, lengths, batch_first)
    y, h_n = _sequence("gru", "tanh", *args)
    return _out(y, batch_first), h_n


def lstm(
    x: Any,
    state: Any,
    w_ih: Any,
    w_hh: Any,
    b_ih: Any = None,
    b_hh: Any = None,
    *,
    w_hr: Any = None,
    lengths: Any = None,
    batch_first: bool = False,
) -> tuple[Any, tuple[Any, Any]]:
    """LSTM over a whole sequence (gates i, f, g, o; PyTorch's formulas), optionally with a
    projection (``torch.nn.LSTM(..., proj_size=P)``): with ``w_hr`` (P, H), h_t = W_hr (o_t *
    tanh(c_t)) is P wide, and so are y, h0 and h_n (the kernels of :mod:`rnnfast._proj`).

    Args:
        x: (T, B, I) float32 or float64 ((B, T, I) with ``batch_first``).
        state: (h0, c0), h0 (B, H) ((B, P) with ``w_hr``) and c0 (B, H), each or None, or None
            (zeros).
        w_ih: (4H, I); w_hh: (4H, H) ((4H, P) with ``w_hr``); b_ih, b_hh: (4H,) or both None.
        w_hr: (P, H) or None (no projection).
        lengths: (B,) integers in [0, T] or None.

    Returns:
        y (T, B, H) ((B, T, H) with ``batch_first``) and (h_n (B, H), c_n (B, H)); with ``w_hr``
        y (T, B, P) and h_n (B, P). Differentiable in x, the states and every weight, w_hr
        included.
    """
    if state is None:
        h0 = c0 = None
    elif isinstance(state, (tuple, list)) and len(state) == 2:
        h0, c0 = state
    else:
        raise TypeError(f"state: expected (h0, c0) or None, got {type(state).__name__}")
    cell = "lstm" if w_hr is None else _PROJ
    args = _prepare(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, batch_first, w_hr)
    y, h_n, c_n = _sequence(cell, "tanh", *args)
    return _out(y, batch_first), (h_n, c_n)


_flax: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    if name in ("RNN", "LSTM", "GRU"):
        if name not in _flax:
            from ._jax_flax import _build_linen

            _flax.update(_build_linen())
        return _flax[name]
    if name == "nnx":  # rnnfast.jax.nnx.GRU / LSTM / RNN
        if name not in _flax:
            from ._jax_flax import _build_nnx

            _flax.update(_build_nnx())
        return _flax[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
