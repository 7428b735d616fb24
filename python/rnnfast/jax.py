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
"""

from __future__ import annotations

import inspect
import itertools
import os
import threading
import types
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

from . import functional as F
from ._cells import CELLS, get_cell

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

# --------------------------------------------------------------------------------------------------
# host store: forward activations by token, for the backward callback
# --------------------------------------------------------------------------------------------------

_store: OrderedDict[int, F.SequenceCache] = OrderedDict()
_store_bytes = 0
_store_lock = threading.Lock()
_token_counter = itertools.count(1)


def _put(cache: F.SequenceCache) -> int:
    global _store_bytes
    # the cache keeps references to the callback's input buffers, which belong to XLA: drop them
    # (the backward callback supplies the same values as residuals)
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


def _pop(token: int) -> F.SequenceCache | None:
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

# argument order of every callback: x, h0, [c0], w_ih, w_hh, [b_ih, b_hh], [lengths]
_BASE_NDIM = {"x": 3, "h0": 2, "c0": 2, "w_ih": 2, "w_hh": 2, "b_ih": 1, "b_hh": 1, "lengths": 1}


def _names(cell: str, bias: bool, ragged: bool) -> list[str]:
    names = ["x", *get_cell(cell).state_names, "w_ih", "w_hh"]
    return names + (["b_ih", "b_hh"] if bias else []) + (["lengths"] if ragged else [])


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
) -> tuple[list[np.ndarray], F.SequenceCache | None]:
    """One call of the functional forward; returns ([y, h_n(, c_n)], cache)."""
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
    states = [s.reshape(*lead, nb // n, h) for s in outs[1:]]
    return (np.ascontiguousarray(y), *states)


def _backward_callback(cell: str, nl: str, names: list[str]) -> Any:
    """The host function of the backward: (token, inputs..., dy, dh_n(, dc_n)) -> gradients of
    x, h0(, c0), w_ih, w_hh(, b_ih, b_hh)."""
    has_c = get_cell(cell).has_cell_state
    all_names = ["token", *names, "dy", "dh_n"] + (["dc_n"] if has_c else [])
    bases = [0] + [_BASE_NDIM[n] for n in names] + [3, 2] + ([2] if has_c else [])
    grad_names = [n for n in names if n != "lengths"]

    def grads(a: dict[str, np.ndarray], cache: F.SequenceCache | None) -> list[np.ndarray]:
        if cache is None:  # dropped, rematerialised or already used: recompute the forward
            _, cache = _kernel_forward(cell, nl, a, True)
            assert cache is not None
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


def _make_host_primitive() -> Any:
    """A primitive whose lowering hands XLA's host buffers to the callback as NumPy arrays.

    ``jax.pure_callback`` (jax 0.10) first wraps every argument into a jax Array with
    ``device_put`` and checks the results, ~0.3 ms of CPU per call measured here; this primitive
    calls the same XLA host-callback custom call without that wrapping (~0.06 ms). It uses
    ``jax._src.callback.emit_python_callback``, a private function: when it is missing or its
    signature changed, None is returned and ``jax.pure_callback`` is used instead (same results;
    ``RNNFAST_JAX_CALLBACK=pure`` forces that).
    """
    if os.environ.get("RNNFAST_JAX_CALLBACK", "") == "pure":
        return None
    try:
        from jax._src.callback import emit_python_callback
        from jax.extend.core import Primitive
        from jax.interpreters import batching, mlir

        params = inspect.signature(emit_python_callback).parameters
        if not {"has_side_effect", "returns_token"} <= set(params):
            return None
    except (ImportError, AttributeError, TypeError, ValueError):
        return None

    prim = Primitive("rnnfast_host_call")
    prim.multiple_results = True

    def out_avals(avals: Sequence[Any], bases: tuple[int, ...], results: Any) -> list[Any]:
        lead = np.broadcast_shapes(*(a.shape[: len(a.shape) - b] for a, b in zip(avals, bases)))
        return [jax.core.ShapedArray(lead + shape, np.dtype(dt)) for shape, dt in results]

    def impl(*args: Any, callback: Any, bases: Any, results: Any) -> list[Any]:
        outs = callback(*(np.asarray(a) for a in args))
        return [jnp.asarray(o) for o in outs]

    def abstract_eval(*avals: Any, callback: Any, bases: Any, results: Any) -> list[Any]:
        return out_avals(avals, bases, results)

    def lowering(ctx: Any, *args: Any, callback: Any, bases: Any, results: Any) -> Any:
        def cb(*arrs: Any) -> tuple[Any, ...]:
            return tuple(callback(*arrs))

        out, _, _ = emit_python_callback(
            ctx, cb, None, list(args), ctx.avals_in, ctx.avals_out,
            has_side_effect=False, returns_token=False,
        )  # fmt: skip
        return out

    def batch_rule(args: Any, dims: Any, *, callback: Any, bases: Any, results: Any) -> Any:
        # the callbacks take any number of leading vmapped axes (size 1 = not vmapped), as with
        # pure_callback's vmap_method="expand_dims"
        moved = [
            jnp.expand_dims(a, 0) if d is None else jnp.moveaxis(a, d, 0)
            for a, d in zip(args, dims)
        ]
        outs = prim.bind(*moved, callback=callback, bases=bases, results=results)
        return outs, [0] * len(outs)

    prim.def_impl(impl)
    prim.def_abstract_eval(abstract_eval)
    mlir.register_lowering(prim, lowering, platform="cpu", cacheable=False)
    batching.primitive_batchers[prim] = batch_rule
    return prim


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

_ARGS = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "lengths")


def _present(cell: str, args: tuple[Any, ...]) -> tuple[str, ...]:
    a = dict(zip(_ARGS, args))
    return tuple(_names(cell, a["b_ih"] is not None, a["lengths"] is not None))


def _out_shapes(cell: str, x: Any, w_hh: Any) -> list[Any]:
    t, b, _ = x.shape
    h = w_hh.shape[1]
    shapes = [jax.ShapeDtypeStruct((t, b, h), x.dtype), jax.ShapeDtypeStruct((b, h), x.dtype)]
    if cell == "lstm":
        shapes.append(jax.ShapeDtypeStruct((b, h), x.dtype))
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
) -> tuple[Any, ...]:
    """Checked arguments in the order of _ARGS (time-major x, zero states for None)."""
    if not isinstance(batch_first, (bool, np.bool_)):
        raise TypeError(f"batch_first: expected a bool, got {type(batch_first).__name__}")
    x = jnp.asarray(x)
    if x.dtype not in (jnp.float32, jnp.float64):
        raise TypeError(f"x: expected dtype float32 or float64, got dtype {x.dtype}")
    if x.ndim != 3:
        layout = "(B, T, I)" if batch_first else "(T, B, I)"
        raise ValueError(f"x: expected a 3-D array {layout}, got shape {x.shape}")
    if batch_first:
        x = jnp.swapaxes(x, 0, 1)
    t, b, i = x.shape
    if t < 1 or b < 1 or i < 1:
        raise ValueError(f"x: expected T, B, I >= 1, got shape {x.shape}")
    gates = _GATES[cell]

    def arr(name: str, v: Any, shape: tuple[int, ...] | None) -> Any:
        v = jnp.asarray(v)
        if v.dtype != x.dtype:
            raise TypeError(f"{name}: expected dtype {x.dtype} (the dtype of x), got {v.dtype}")
        if shape is not None and v.shape != shape:
            raise ValueError(f"{name}: expected shape {shape}, got {v.shape}")
        return v

    w_ih = arr("w_ih", w_ih, None)
    if w_ih.ndim != 2 or w_ih.shape[0] % gates or w_ih.shape[0] == 0 or w_ih.shape[1] != i:
        raise ValueError(f"w_ih: expected shape ({gates}*H, {i}) with H >= 1, got {w_ih.shape}")
    h = w_ih.shape[0] // gates
    w_hh = arr("w_hh", w_hh, (gates * h, h))
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih, b_hh: expected both arrays or both None, got one of each")
    if b_ih is not None:
        b_ih = arr("b_ih", b_ih, (gates * h,))
        b_hh = arr("b_hh", b_hh, (gates * h,))
    h0 = jnp.zeros((b, h), x.dtype) if h0 is None else arr("h0", h0, (b, h))
    if cell == "lstm":
        c0 = jnp.zeros((b, h), x.dtype) if c0 is None else arr("c0", c0, (b, h))
    if lengths is not None:
        lengths = jnp.asarray(lengths)
        if not jnp.issubdtype(lengths.dtype, jnp.integer):
            raise TypeError(f"lengths: expected an integer array ({b},), got dtype {lengths.dtype}")
        if lengths.shape != (b,):
            raise ValueError(f"lengths: expected shape ({b},), got {lengths.shape}")
    return x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths


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
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
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
    lengths: Any = None,
    batch_first: bool = False,
) -> tuple[Any, tuple[Any, Any]]:
    """LSTM over a whole sequence (gates i, f, g, o; PyTorch's formulas).

    Args:
        x: (T, B, I) float32 or float64 ((B, T, I) with ``batch_first``).
        state: (h0, c0), each (B, H) or None, or None (zeros).
        w_ih: (4H, I); w_hh: (4H, H); b_ih, b_hh: (4H,) or both None.
        lengths: (B,) integers in [0, T] or None.

    Returns:
        y (T, B, H) ((B, T, H) with ``batch_first``) and (h_n, c_n), each (B, H).
    """
    if state is None:
        h0 = c0 = None
    elif isinstance(state, (tuple, list)) and len(state) == 2:
        h0, c0 = state
    else:
        raise TypeError(f"state: expected (h0, c0) or None, got {type(state).__name__}")
    args = _prepare("lstm", x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, batch_first)
    y, h_n, c_n = _sequence("lstm", "tanh", *args)
    return _out(y, batch_first), (h_n, c_n)


# --------------------------------------------------------------------------------------------------
# Flax linen and nnx modules (built on first access: flax is optional even with jax installed)
# --------------------------------------------------------------------------------------------------


def _reverse_index(t_steps: int, lengths: Any, batch: int) -> Any:
    """(T, B) time index that reverses each sequence within its valid length (an involution)."""
    t = jnp.arange(t_steps)[:, None]
    if lengths is None:
        return jnp.broadcast_to(t_steps - 1 - t, (t_steps, batch))
    n = jnp.asarray(lengths)[None, :]
    return jnp.where(t < n, n - 1 - t, t)


def _run_stack(
    cell: str,
    nonlinearity: str,
    get: Any,
    x: Any,
    hx: Any,
    lengths: Any,
    hidden_size: int,
    num_layers: int,
    bidirectional: bool,
    bias: bool,
    batch_first: bool,
) -> tuple[Any, Any]:
    """A stack of layers and directions on rnnfast.jax's functions, ``get(name, shape)`` giving the
    parameter of that PyTorch name (shared by the linen and nnx modules)."""
    H, L, D, G = hidden_size, num_layers, 2 if bidirectional else 1, _GATES[cell]
    if x.ndim != 3:
        raise ValueError(f"x: expected a 3-D array, got shape {x.shape}")
    if batch_first:
        x = jnp.swapaxes(x, 0, 1)
    T, B, _ = x.shape
    if cell == "lstm":
        h0, c0 = (None, None) if hx is None else hx
    else:
        h0, c0 = hx, None
    for name, st in (("hx[0]" if cell == "lstm" else "hx", h0), ("hx[1]", c0)):
        if st is not None and st.shape != (L * D, B, H):
            raise ValueError(f"{name}: expected shape {(L * D, B, H)}, got {st.shape}")
    rev = _reverse_index(T, lengths, B) if D == 2 else None
    inp = x
    hs, cs = [], []
    for layer in range(L):
        ys = []
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w_ih = get(f"weight_ih{sfx}", (G * H, inp.shape[2]))
            w_hh = get(f"weight_hh{sfx}", (G * H, H))
            b_ih = get(f"bias_ih{sfx}", (G * H,)) if bias else None
            b_hh = get(f"bias_hh{sfx}", (G * H,)) if bias else None
            xin = inp if d == 0 else jnp.take_along_axis(inp, rev[:, :, None], axis=0)
            k = layer * D + d
            hk = None if h0 is None else h0[k]
            if cell == "lstm":
                ck = None if c0 is None else c0[k]
                y, (h, c) = lstm(xin, (hk, ck), w_ih, w_hh, b_ih, b_hh, lengths=lengths)
                cs.append(c)
            elif cell == "gru":
                y, h = gru(xin, hk, w_ih, w_hh, b_ih, b_hh, lengths=lengths)
            else:
                y, h = rnn(
                    xin, hk, w_ih, w_hh, b_ih, b_hh, nonlinearity=nonlinearity, lengths=lengths
                )
            if d == 1:
                y = jnp.take_along_axis(y, rev[:, :, None], axis=0)
            ys.append(y)
            hs.append(h)
        inp = ys[0] if D == 1 else jnp.concatenate(ys, axis=2)
    out = jnp.swapaxes(inp, 0, 1) if batch_first else inp
    h_n = jnp.stack(hs)
    return out, ((h_n, jnp.stack(cs)) if cell == "lstm" else h_n)


def _uniform_init(hidden_size: int, dtype: Any) -> Any:
    bound = 1.0 / np.sqrt(hidden_size)  # PyTorch's init: U(-1/sqrt(H), 1/sqrt(H))

    def init(key: Any, shape: tuple[int, ...], dtype: Any = dtype) -> Any:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


_DOC = """Flax {kind} {Cell} stack on rnnfast's kernels, with PyTorch's ``nn.{Cell}`` conventions{extra}.

    {args}Parameters are named as PyTorch's state_dict (``weight_ih_l0``, ``bias_hh_l1_reverse``,
    ...) with its shapes and init U(-1/sqrt(H), 1/sqrt(H)). ``__call__(x, hx=None, lengths=None)``:
    x (T, B, I) ((B, T, I) with batch_first), hx (num_layers * num_directions, B, H) (LSTM: a tuple
    (h0, c0)) or None, lengths (B,) or None -> (out (T, B, D*H), h_n (L*D, B, H)) (LSTM:
    ``(out, (h_n, c_n))``). No inter-layer dropout.
    """


def _build_linen() -> dict[str, Any]:
    try:
        import flax.linen as nn
    except ImportError as exc:
        raise ImportError(
            "rnnfast.jax.GRU/LSTM/RNN are Flax modules: pip install 'rnnfast[jax]' (flax)"
        ) from exc

    class _Stack(nn.Module):
        hidden_size: int
        num_layers: int = 1
        bias: bool = True
        batch_first: bool = False
        bidirectional: bool = False
        nonlinearity: str = "tanh"
        param_dtype: Any = jnp.float32
        _cell = "rnn"

        @nn.compact
        def __call__(self, x: Any, hx: Any = None, lengths: Any = None) -> tuple[Any, Any]:
            init = _uniform_init(self.hidden_size, self.param_dtype)
            return _run_stack(
                self._cell, self.nonlinearity,
                lambda name, shape: self.param(name, init, shape),
                jnp.asarray(x, self.param_dtype), hx, lengths, self.hidden_size,
                self.num_layers, self.bidirectional, self.bias, self.batch_first,
            )  # fmt: skip

    args = (
        "Attributes: hidden_size, num_layers=1, bias=True, batch_first=False, bidirectional=False,"
        "\n    {nl}param_dtype=float32 (the input size comes from x at init). "
    )
    out = {}
    for cell, name in (("rnn", "RNN"), ("lstm", "LSTM"), ("gru", "GRU")):
        nl = 'nonlinearity="tanh" | "relu", ' if cell == "rnn" else ""
        doc = _DOC.format(kind="linen", Cell=name, extra="", args=args.format(nl=nl))
        cls = type(name, (_Stack,), {"_cell": cell, "__doc__": doc, "__module__": __name__})
        out[name] = cls
    return out


def _build_nnx() -> dict[str, Any]:
    try:
        from flax import nnx
    except ImportError as exc:
        raise ImportError(
            "rnnfast.jax.nnx.GRU/LSTM/RNN are Flax nnx modules: pip install 'rnnfast[jax]' (flax)"
        ) from exc

    class _Stack(nnx.Module):
        _cell = "rnn"

        def __init__(
            self,
            input_size: int,
            hidden_size: int,
            num_layers: int = 1,
            *,
            bias: bool = True,
            batch_first: bool = False,
            bidirectional: bool = False,
            nonlinearity: str = "tanh",
            param_dtype: Any = jnp.float32,
            rngs: Any,
        ) -> None:
            if nonlinearity not in ("tanh", "relu") or (
                self._cell != "rnn" and nonlinearity != "tanh"
            ):
                raise ValueError(
                    f"nonlinearity: expected 'tanh' (or 'relu' for RNN), got {nonlinearity!r}"
                )
            self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
            self.bias, self.batch_first, self.bidirectional = bias, batch_first, bidirectional
            self.nonlinearity, self.param_dtype = nonlinearity, param_dtype
            init = _uniform_init(hidden_size, param_dtype)
            G, D = _GATES[self._cell], 2 if bidirectional else 1
            for layer in range(num_layers):
                n_in = input_size if layer == 0 else D * hidden_size
                for d in range(D):
                    sfx = f"_l{layer}" + ("_reverse" if d else "")
                    shapes = {
                        "weight_ih": (G * hidden_size, n_in),
                        "weight_hh": (G * hidden_size, hidden_size),
                    }
                    if bias:
                        shapes.update(bias_ih=(G * hidden_size,), bias_hh=(G * hidden_size,))
                    for k, shape in shapes.items():
                        setattr(self, k + sfx, nnx.Param(init(rngs.params(), shape)))

        def __call__(self, x: Any, hx: Any = None, lengths: Any = None) -> tuple[Any, Any]:
            return _run_stack(
                self._cell, self.nonlinearity, lambda name, shape: getattr(self, name)[...],
                jnp.asarray(x, self.param_dtype), hx, lengths, self.hidden_size,
                self.num_layers, self.bidirectional, self.bias, self.batch_first,
            )  # fmt: skip

    args = (
        "``{name}(input_size, hidden_size, num_layers=1, *, bias=True, batch_first=False,"
        "\n    bidirectional=False, {nl}param_dtype=float32, rngs)``. "
    )
    out = {}
    for cell, name in (("rnn", "RNN"), ("lstm", "LSTM"), ("gru", "GRU")):
        nl = 'nonlinearity="tanh" | "relu", ' if cell == "rnn" else ""
        doc = _DOC.format(
            kind="nnx", Cell=name, extra="", args=args.format(name=f"nnx.{name}", nl=nl)
        )
        cls = type(name, (_Stack,), {"_cell": cell, "__doc__": doc, "__module__": __name__})
        cls.__qualname__ = f"nnx.{name}"
        out[name] = cls
    return {"nnx": types.SimpleNamespace(**out)}


_flax: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    if name in ("RNN", "LSTM", "GRU"):
        if name not in _flax:
            _flax.update(_build_linen())
        return _flax[name]
    if name == "nnx":  # rnnfast.jax.nnx.GRU / LSTM / RNN
        if name not in _flax:
            _flax.update(_build_nnx())
        return _flax[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
