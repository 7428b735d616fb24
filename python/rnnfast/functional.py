"""The functional API over the compiled core: whole-sequence forward and backward, truncated BPTT.

Dimensions: T = time steps, B = batch, I = input size, H = hidden size, G = gates (1 rnn, 4 lstm,
3 gru). Shapes follow PyTorch: x (T, B, I); h0, c0, h_n, c_n (B, H); y (T, B, H); w_ih (G*H, I);
w_hh (G*H, H); b_ih, b_hh (G*H,) or None. Gate order: LSTM i, f, g, o; GRU r, z, n with
n = tanh(W_in x + b_in + r * (W_hn h + b_hn)) and h_t = (1 - z) * n + z * h_{t-1}.

dtype: every array of one call must have one dtype, float32 or float64 (the dtype of ``x`` sets it);
outputs have that dtype. Anything else (integers, float16, complex, mixing float32 and float64) is a
TypeError naming the argument. Non-C-contiguous arrays are copied to C order; C-contiguous ones are
passed to the kernels without a copy.

Ragged batches: ``lengths`` (B,) integers in [0, T]; for t >= lengths[b] the state of sequence b is
carried unchanged and y[t, b] = 0 (PyTorch packed-sequence semantics), so h_n[b] is the state after
its last valid step (h0[b] when lengths[b] == 0).

All argument checks of the public API live here, in one place (``_Args``); the compiled bindings
re-check dtype, contiguity and shape as a safety net so that the core can never read out of bounds.

The cache returned by a training forward is an opaque :class:`SequenceCache`; backward does not
consume or modify it, so calling backward twice on one cache is allowed and gives the same result.
It keeps references to the forward's ``x`` and weights: do not modify them in place before backward.

Truncated BPTT(k1, k2): :func:`tbptt_grads` (verification entry point, the loop over chunks runs in
C++) and :class:`TBPTTStream` (the streaming object the trainer calls once per chunk).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Union

import numpy as np

from ._cells import CELLS, get_cell
from ._loader import core

__all__ = [
    "SequenceCache",
    "TBPTTStream",
    "gru_backward",
    "gru_forward",
    "lstm_backward",
    "lstm_forward",
    "rnn_backward",
    "rnn_forward",
    "tbptt_grads",
]

Array = np.ndarray
State = Union[Array, tuple[Array, Array]]

_GATES = {c.name: c.gates for c in CELLS}  # gate count per cell, from the registry
_NONLINEARITIES = ("tanh", "relu")
_PARAM_KEYS = ("w_ih", "w_hh", "b_ih", "b_hh")


# --------------------------------------------------------------------------------------------------
# argument checks (the one place for them)
# --------------------------------------------------------------------------------------------------


def _float_array(name: str, a: Any, dtype: np.dtype | None = None) -> Array:
    """``a`` as a C-contiguous float32/float64 array (of ``dtype`` when given), else TypeError.

    The result always carries NumPy's canonical float32/float64 descriptor (byte-swapped input is
    converted, dtype metadata dropped), which is what the compiled core checks for.
    """
    if a is None:
        raise TypeError(f"{name}: expected an array, got None")
    try:
        arr = a if isinstance(a, np.ndarray) else np.asarray(a)
    except (ValueError, TypeError) as exc:  # e.g. ragged nested lists
        raise TypeError(f"{name}: expected an array, got {type(a).__name__} ({exc})") from None
    dt = arr.dtype
    if dt.kind != "f" or dt.itemsize not in (4, 8):
        want = f"dtype {dtype}" if dtype is not None else "dtype float32 or float64"
        raise TypeError(f"{name}: expected {want}, got dtype {dt}")
    if dtype is not None and dt.itemsize != dtype.itemsize:
        raise TypeError(f"{name}: expected dtype {dtype} (the dtype of x), got dtype {dt}")
    canon = np.dtype(np.float32) if dt.itemsize == 4 else np.dtype(np.float64)
    try:
        if not dt.isnative:
            arr = arr.astype(canon)
        elif dt is not canon:
            arr = arr.view(canon)  # same layout; the canonical descriptor (e.g. without metadata)
        # not np.ascontiguousarray alone: it turns a 0-d array into shape (1,), which would then pass
        # a (1,) shape check (a 0-d bias when G*H == 1)
        return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)
    except MemoryError as exc:
        raise MemoryError(
            f"{name}: cannot make a C-contiguous copy of shape {arr.shape} "
            f"({arr.size * canon.itemsize} bytes): {exc}"
        ) from None


def _memory_limit() -> int | None:
    """RAM + swap of this machine in bytes (Linux), or None when unknown."""
    global _MEMORY_LIMIT
    if _MEMORY_LIMIT is None:
        total = 0
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                for line in f:
                    key, _, rest = line.partition(":")
                    if key in ("MemTotal", "SwapTotal"):
                        total += int(rest.split()[0]) * 1024
        except (OSError, ValueError, IndexError):
            total = 0
        _MEMORY_LIMIT = total if total > 0 else -1
    return None if _MEMORY_LIMIT < 0 else _MEMORY_LIMIT


_MEMORY_LIMIT: int | None = None


def _check_memory(what: str, nbytes: int) -> None:
    """MemoryError naming ``what`` when a call would need more than the machine's RAM + swap.

    Checked before anything is allocated: a buffer larger than memory would otherwise either fail
    deep in the core or, worse, be granted by the kernel's overcommit and get the process killed.
    """
    limit = _memory_limit()
    if limit is not None and nbytes > limit:
        raise MemoryError(
            f"{what}: needs {nbytes / 2**30:.1f} GiB of buffers, more than this machine's "
            f"{limit / 2**30:.1f} GiB of RAM + swap"
        )


def _check_shape(name: str, a: Array, shape: tuple[int, ...]) -> None:
    if a.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {a.shape}")


def _check_nonlinearity(nonlinearity: Any) -> str:
    if nonlinearity not in _NONLINEARITIES:
        raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
    return str(nonlinearity)


def _check_bool(name: str, v: Any) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(v).__name__}")
    return bool(v)


def _check_k(name: str, k: Any) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{name}: expected an int >= 1, got {type(k).__name__} {k!r}")
    if k < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {k}")
    return int(k)


class _Args:
    """Validated arguments of one call: sizes, dtype and C-contiguous arrays."""

    def __init__(self, cell: str, x: Any, w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any) -> None:
        gates = _GATES[cell]
        self.x = _float_array("x", x)
        self.dtype = self.x.dtype
        if self.x.ndim != 3:
            raise ValueError(
                f"x: expected a 3-D array of shape (T, B, I), got shape {self.x.shape}"
            )
        self.T, self.B, self.I = (int(n) for n in self.x.shape)
        if self.T < 1 or self.B < 1 or self.I < 1:
            raise ValueError(f"x: expected shape (T, B, I) with T, B, I >= 1, got {self.x.shape}")
        self.w_ih = _float_array("w_ih", w_ih, self.dtype)
        if self.w_ih.ndim != 2 or self.w_ih.shape[0] % gates != 0 or self.w_ih.shape[0] == 0:
            raise ValueError(
                f"w_ih: expected shape ({gates}*H, {self.I}) with H >= 1, got {self.w_ih.shape}"
            )
        self.H = self.w_ih.shape[0] // gates
        self.GH = gates * self.H
        _check_shape("w_ih", self.w_ih, (self.GH, self.I))
        self.w_hh = _float_array("w_hh", w_hh, self.dtype)
        _check_shape("w_hh", self.w_hh, (self.GH, self.H))
        if (b_ih is None) != (b_hh is None):
            raise ValueError("b_ih, b_hh: expected both arrays or both None, got one of each")
        self.b_ih = self.opt("b_ih", b_ih, (self.GH,))
        self.b_hh = self.opt("b_hh", b_hh, (self.GH,))

    def arr(self, name: str, a: Any, shape: tuple[int, ...]) -> Array:
        out = _float_array(name, a, self.dtype)
        _check_shape(name, out, shape)
        return out

    def opt(self, name: str, a: Any, shape: tuple[int, ...]) -> Array | None:
        return None if a is None else self.arr(name, a, shape)

    def state(self, name: str, a: Any) -> Array | None:
        return self.opt(name, a, (self.B, self.H))

    def check_forward_memory(self, cell: str, training: bool) -> None:
        """MemoryError naming x and w_hh when y and the activations cannot fit in memory."""
        t, b, h, g = self.T, self.B, self.H, _GATES[cell]
        n = t * b * h + 2 * b * h  # y, h_n, c_n
        if training:  # act, h, c, aux of the cache (cache_sizes in sequence.hpp)
            n += (
                t * b * g * h
                + (t + 1) * b * h * get_cell(cell).n_states
                + (0 if cell == "rnn" else t * b * h)
            )
        else:  # the input-projection workspace
            n += t * b * g * h
        what = f"x, w_hh: T={t}, B={b}, H={h} ({cell}, training={training})"
        _check_memory(what, n * self.dtype.itemsize)

    def lengths(self, lengths: Any) -> Array | None:
        if lengths is None:
            return None
        arr = np.asarray(lengths)
        if arr.dtype.kind not in "iu":
            raise TypeError(
                f"lengths: expected an integer array of shape ({self.B},), got dtype {arr.dtype}"
            )
        _check_shape("lengths", arr, (self.B,))
        if arr.min() < 0 or arr.max() > self.T:
            raise ValueError(
                f"lengths: expected 0 <= lengths[b] <= T = {self.T}, "
                f"got min {arr.min()}, max {arr.max()}"
            )
        return np.ascontiguousarray(arr, dtype=np.int64)


# --------------------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------------------


class SequenceCache:
    """Opaque record of a training forward, consumed (read only) by the matching backward.

    Holds the compiled core's activation buffers (activated gates (T, B, G*H), states (T+1, B, H),
    LSTM cell states and tanh(c_t) or GRU's W_hn h + b_hn (T, B, H)) and references to the forward's
    x and weights (not copies: changing them in place before backward changes the gradients; the
    modules keep private copies where needed). Backward may be called on it any number of times.
    """

    __slots__ = (
        "_core",
        "b_hh",
        "b_ih",
        "cell",
        "dtype",
        "extra",
        "nonlinearity",
        "shape",
        "w_hh",
        "w_ih",
        "x",
    )

    def __init__(
        self, cell: str, nonlinearity: str, core_cache: Any, a: _Args, extra: tuple = ()
    ) -> None:
        self.cell = cell
        self.extra = extra  # the cell's extra parameters (CellSpec.extra_params order)
        self.nonlinearity = nonlinearity
        self._core = core_cache
        self.x, self.w_ih, self.w_hh, self.b_ih, self.b_hh = a.x, a.w_ih, a.w_hh, a.b_ih, a.b_hh
        self.dtype = a.dtype
        self.shape = (a.T, a.B, a.I, a.H)  # (T, B, I, H)

    @property
    def nbytes(self) -> int:
        """Bytes held by the activation buffers (not counting x and the weights)."""
        return int(self._core.nbytes)

    def __repr__(self) -> str:
        t, b, i, h = self.shape
        return f"SequenceCache(cell={self.cell!r}, T={t}, B={b}, I={i}, H={h}, dtype={self.dtype})"


def _check_cache(cache: Any, cell: str) -> SequenceCache:
    if cache is None:
        raise ValueError(
            "cache: got None; the forward pass was run with training=False, "
            "which stores no activations"
        )
    if not isinstance(cache, SequenceCache):
        raise TypeError(
            f"cache: expected a rnnfast.functional.SequenceCache from {cell}_forward, "
            f"got {type(cache).__name__}"
        )
    if cache.cell != cell:
        raise ValueError(
            f"cache: expected a cache from {cell}_forward, got one from {cache.cell}_forward"
        )
    return cache


def _backward(
    cell: str, cache: Any, dy: Any, dh_n: Any, dc_n: Any, need_dx: Any = True
) -> dict[str, Array | None]:
    c = _check_cache(cache, cell)
    if not isinstance(need_dx, (bool, np.bool_)):
        raise TypeError(f"need_dx: expected a bool, got {type(need_dx).__name__}")
    t, b, _, h = c.shape
    dt = c.dtype

    def grad(name: str, g: Any, shape: tuple[int, ...]) -> Array | None:
        if g is None:
            return None
        arr = _float_array(name, g, dt)
        _check_shape(name, arr, shape)
        return arr

    dy_ = grad("dy", dy, (t, b, h))
    dh_ = grad("dh_n", dh_n, (b, h))
    dc_ = grad("dc_n", dc_n, (b, h)) if get_cell(cell).has_cell_state else None
    return core.sequence_backward(
        cell,
        c._core,
        c.x,
        c.w_ih,
        c.w_hh,
        c.b_ih,
        c.b_hh,
        dy_,
        dh_,
        dc_,
        bool(need_dx),
        c.extra or None,
    )


# --------------------------------------------------------------------------------------------------
# vanilla RNN
# --------------------------------------------------------------------------------------------------


def rnn_forward(
    x: Any,
    h0: Any,
    w_ih: Any,
    w_hh: Any,
    b_ih: Any,
    b_hh: Any,
    *,
    nonlinearity: str = "tanh",
    lengths: Any = None,
    training: bool = True,
) -> tuple[Array, Array, SequenceCache | None]:
    """Vanilla RNN over a whole sequence: h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh).

    Args:
        x: (T, B, I) float32 or float64; sets the dtype of the call.
        h0: (B, H) or None (zeros).
        w_ih: (H, I); w_hh: (H, H); b_ih, b_hh: (H,) or both None (no bias).
        nonlinearity: "tanh" or "relu".
        lengths: (B,) integers in [0, T], or None (all sequences T steps).
        training: when False, nothing is stored and the cache is None.

    Returns:
        y (T, B, H), h_n (B, H), cache (a SequenceCache, or None when training=False).
    """
    nl = _check_nonlinearity(nonlinearity)
    a = _Args("rnn", x, w_ih, w_hh, b_ih, b_hh)
    h0_ = a.state("h0", h0)
    len_ = a.lengths(lengths)
    training = _check_bool("training", training)
    a.check_forward_memory("rnn", training)
    y, h_n, cc = core.sequence_forward(
        "rnn", a.x, h0_, None, a.w_ih, a.w_hh, a.b_ih, a.b_hh, None, len_, nl, training
    )
    return y, h_n, (SequenceCache("rnn", nl, cc, a) if training else None)


def rnn_backward(
    cache: Any, dy: Any, dh_n: Any = None, *, need_dx: bool = True
) -> dict[str, Array | None]:
    """Full BPTT through :func:`rnn_forward`.

    Args:
        cache: the SequenceCache of rnn_forward (training=True).
        dy: (T, B, H) dL/dy, or None (zeros). dh_n: (B, H) dL/dh_n, or None (zeros).
            Same dtype as x.
        need_dx: False skips the product for dL/dx (e.g. a first layer whose input needs no
            gradient); "x" is then None. The same for lstm_backward and gru_backward.

    Returns:
        dict with "x" (T, B, I), "h0" (B, H), "w_ih" (H, I), "w_hh" (H, H), "b_ih", "b_hh" (H,) or
        None without bias, and "dh_all" (T, B, H) = total dL/dh_t of every step (zero rows at
        padded steps).
    """
    return _backward("rnn", cache, dy, dh_n, None, need_dx)


# --------------------------------------------------------------------------------------------------
# LSTM
# --------------------------------------------------------------------------------------------------


def lstm_forward(
    x: Any,
    h0: Any,
    c0: Any,
    w_ih: Any,
    w_hh: Any,
    b_ih: Any,
    b_hh: Any,
    *,
    lengths: Any = None,
    training: bool = True,
) -> tuple[Array, Array, Array, SequenceCache | None]:
    """LSTM over a whole sequence, gates i, f, g, o: c_t = f*c_{t-1} + i*g, h_t = o*tanh(c_t).

    Args:
        x: (T, B, I) float32 or float64. h0, c0: (B, H) or None (zeros).
        w_ih: (4H, I); w_hh: (4H, H); b_ih, b_hh: (4H,) or both None.
        lengths: (B,) integers in [0, T], or None. training: False = inference, cache None.

    Returns:
        y (T, B, H), h_n (B, H), c_n (B, H), cache (SequenceCache or None).
    """
    a = _Args("lstm", x, w_ih, w_hh, b_ih, b_hh)
    h0_ = a.state("h0", h0)
    c0_ = a.state("c0", c0)
    len_ = a.lengths(lengths)
    training = _check_bool("training", training)
    a.check_forward_memory("lstm", training)
    y, h_n, c_n, cc = core.sequence_forward(
        "lstm", a.x, h0_, c0_, a.w_ih, a.w_hh, a.b_ih, a.b_hh, None, len_, "tanh", training
    )
    return y, h_n, c_n, (SequenceCache("lstm", "tanh", cc, a) if training else None)


def lstm_backward(
    cache: Any, dy: Any, dh_n: Any = None, dc_n: Any = None, *, need_dx: bool = True
) -> dict[str, Array | None]:
    """Full BPTT through :func:`lstm_forward`.

    Args:
        cache: SequenceCache of lstm_forward. dy: (T, B, H) or None. dh_n, dc_n: (B, H) or None.

    Returns:
        dict with "x" (T, B, I), "h0", "c0" (B, H), "w_ih" (4H, I), "w_hh" (4H, H), "b_ih", "b_hh"
        (4H,) or None, "dh_all" (T, B, H).
    """
    return _backward("lstm", cache, dy, dh_n, dc_n, need_dx)


# --------------------------------------------------------------------------------------------------
# GRU
# --------------------------------------------------------------------------------------------------


def gru_forward(
    x: Any,
    h0: Any,
    w_ih: Any,
    w_hh: Any,
    b_ih: Any,
    b_hh: Any,
    *,
    lengths: Any = None,
    training: bool = True,
) -> tuple[Array, Array, SequenceCache | None]:
    """GRU over a whole sequence, gates r, z, n: n = tanh(W_in x + b_in + r*(W_hn h + b_hn)),
    h_t = (1 - z)*n + z*h_{t-1}.

    Args:
        x: (T, B, I) float32 or float64. h0: (B, H) or None.
        w_ih: (3H, I); w_hh: (3H, H); b_ih, b_hh: (3H,) or both None.
        lengths: (B,) integers in [0, T], or None. training: False = inference, cache None.

    Returns:
        y (T, B, H), h_n (B, H), cache (SequenceCache or None).
    """
    a = _Args("gru", x, w_ih, w_hh, b_ih, b_hh)
    h0_ = a.state("h0", h0)
    len_ = a.lengths(lengths)
    training = _check_bool("training", training)
    a.check_forward_memory("gru", training)
    y, h_n, cc = core.sequence_forward(
        "gru", a.x, h0_, None, a.w_ih, a.w_hh, a.b_ih, a.b_hh, None, len_, "tanh", training
    )
    return y, h_n, (SequenceCache("gru", "tanh", cc, a) if training else None)


def gru_backward(
    cache: Any, dy: Any, dh_n: Any = None, *, need_dx: bool = True
) -> dict[str, Array | None]:
    """Full BPTT through :func:`gru_forward`.

    Args:
        cache: SequenceCache of gru_forward. dy: (T, B, H) or None. dh_n: (B, H) or None.

    Returns:
        dict with "x" (T, B, I), "h0" (B, H), "w_ih" (3H, I), "w_hh" (3H, H), "b_ih", "b_hh" (3H,)
        or None, "dh_all" (T, B, H).
    """
    return _backward("gru", cache, dy, dh_n, None, need_dx)


# --------------------------------------------------------------------------------------------------
# parameters by name (shared with truncated BPTT, rnnfast/_tbptt_api.py, and the generated cells)
# --------------------------------------------------------------------------------------------------


def _check_params(params: Any, cell: str = "rnn") -> tuple[Any, Any, Any, Any]:
    """(w_ih, w_hh, b_ih, b_hh) of a params dict; the cell's extra parameters are required keys
    too (read them with :func:`_extra_params`)."""
    extra = tuple(name for name, _ in get_cell(cell).extra_params)
    keys = ", ".join(_PARAM_KEYS + extra)
    if not isinstance(params, Mapping):
        raise TypeError(f"params: expected a dict with keys {keys}, got {type(params).__name__}")
    for key in ("w_ih", "w_hh", *extra):
        if key not in params:
            raise ValueError(f"params: missing key {key!r} (expected keys {keys})")
    unknown = set(params) - set(_PARAM_KEYS) - set(extra)
    if unknown:
        raise ValueError(f"params: unexpected keys {sorted(unknown)} (expected {keys})")
    return params["w_ih"], params["w_hh"], params.get("b_ih"), params.get("b_hh")


def _extra_params(cell: str, params: Mapping[str, Any], dtype: Any, hidden: int) -> tuple:
    """The cell's extra parameters from ``params`` (checked: dtype, shape (per_unit*H,))."""
    out = []
    for name, per_unit in get_cell(cell).extra_params:
        arr = _float_array(name, params[name], dtype)
        _check_shape(name, arr, (per_unit * hidden,))
        out.append(arr)
    return tuple(out)


# Truncated BPTT (tbptt_grads, TBPTTStream): rnnfast/_tbptt_api.py.
# The functions of every other registered cell (<cell>_forward / <cell>_backward, generated from its
# CellSpec with the same conventions as the three above): see rnnfast/_cellfn.py.
from ._cellfn import install as _install_cell_functions  # noqa: E402
from ._tbptt_api import TBPTTStream, _split_state, tbptt_grads  # noqa: E402, F401

_install_cell_functions(globals(), __all__)
