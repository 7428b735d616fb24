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
# truncated BPTT
# --------------------------------------------------------------------------------------------------


def _check_cell(cell: Any) -> str:
    if cell not in _GATES:
        get_cell(cell)  # raises the ValueError that lists the registered cells
    return str(cell)


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


def _split_state(cell: str, state: Any, name: str = "state0") -> tuple[Any, Any]:
    """(h, c) from state: h, or (h, c) for a cell with a cell state (entries may be None); None =
    zeros."""
    if state is None:
        return None, None
    if get_cell(cell).has_cell_state:
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError(
                f"{name}: expected a tuple (h0, c0) for cell {cell!r}, got {type(state).__name__}"
            )
        return state[0], state[1]
    if isinstance(state, (tuple, list)):
        raise TypeError(
            f"{name}: expected an array (B, H) for cell {cell!r}, got {type(state).__name__}"
        )
    return state, None


def tbptt_grads(
    cell: str,
    x: Any,
    state0: Any,
    params: Mapping[str, Any],
    dy: Any,
    k1: int,
    k2: int,
    *,
    nonlinearity: str = "tanh",
) -> list[dict[str, Any]]:
    """Per-update weight gradients of truncated BPTT(k1, k2) over a stream of T steps.

    Update n covers output steps [n*k1, e], e = min((n+1)*k1, T) - 1; its gradient is the exact
    gradient of sum_{t=n*k1..e} <y_t, dy_t> w.r.t. the weights with the state entering step
    s = max(0, e - k2 + 1) held constant (weights fixed). Requires k2 >= k1 >= 1. The loop over
    chunks runs in C++ on the same streaming machinery as :class:`TBPTTStream` (memory O(k2),
    independent of T).

    Args:
        cell: "rnn", "lstm" or "gru". x: (T, B, I) float32/float64.
        state0: h0 (B, H), or (h0, c0) for lstm; None (or None entries) = zeros.
        params: dict with w_ih (G*H, I), w_hh (G*H, H), b_ih, b_hh (G*H,) (biases None or
            absent = no bias).
        dy: (T, B, H) upstream gradient of every step's output, or None (zeros).
        k1, k2: ints with k2 >= k1 >= 1. nonlinearity: "tanh" or "relu" (rnn only).

    Returns:
        ceil(T / k1) dicts with w_ih, w_hh, b_ih, b_hh (None without bias) and state0 = dL/dh0
        (or (dL/dh0, dL/dc0) for lstm), zero for updates whose window starts after step 0.
    """
    cell = _check_cell(cell)
    nl = _check_nonlinearity(nonlinearity)
    w_ih, w_hh, b_ih, b_hh = _check_params(params, cell)
    k1 = _check_k("k1", k1)
    k2 = _check_k("k2", k2)
    if k2 < k1:
        raise ValueError(f"k2: expected k2 >= k1 = {k1}, got {k2}")
    a = _Args(cell, x, w_ih, w_hh, b_ih, b_hh)
    h0, c0 = _split_state(cell, state0)
    h0_ = a.state("h0", h0)
    c0_ = a.state("c0", c0) if get_cell(cell).has_cell_state else None
    dy_ = np.zeros((a.T, a.B, a.H), a.dtype) if dy is None else a.arr("dy", dy, (a.T, a.B, a.H))
    # Windows and chunks never exceed T steps, so k1, k2 > T give the same updates as T: clamping
    # keeps the stream's buffers (2*k2 steps) bounded by the data instead of by k2.
    k1, k2 = min(k1, a.T), min(k2, a.T)
    extra = _extra_params(cell, params, a.dtype, a.H)
    return core.tbptt_grads(
        cell, a.x, h0_, c0_, a.w_ih, a.w_hh, a.b_ih, a.b_hh, dy_, k1, k2, nl, extra or None
    )


class TBPTTStream:
    """Streaming truncated BPTT(k1, k2) for a trainer that calls it once per chunk.

    The stream keeps the activations of the last k2 steps only (contiguous buffers of 2*k2 steps;
    memory independent of the stream length) and carries the state across chunks. A TBPTT(k1, k2)
    training loop over one layer::

        stream = TBPTTStream("lstm", params, (h0, c0), k1, k2)
        for chunk in chunks_of_k1_steps:            # x_chunk (L, B, I), L <= k1
            y = stream.forward(x_chunk)             # (L, B, H)
            start, stop = stream.window             # backward window, global steps [start, stop)
            dy = np.zeros((stop - start, B, H), y.dtype)
            dy[-len(y):] = dloss_dy(y)              # zero on the history steps before the chunk
            grads = stream.backward(dy)             # w_ih, w_hh, b_ih, b_hh, x, state0
            params = optimizer_step(params, grads)
            stream.set_params(params)

    For a stacked model, call each layer's forward in turn, then each backward from the top: the
    "x" gradient of layer l+1 over the window is the dy_window of layer l (nonzero on history
    steps).
    After set_params the history activations stay as computed with the old weights (standard
    TBPTT(k1, k2)); backward uses the current weights.

    Args:
        cell: "rnn", "lstm" or "gru".
        params: dict with w_ih (G*H, I), w_hh (G*H, H), b_ih, b_hh (G*H,) or None; their dtype
            (float32/float64) is the stream's dtype.
        state0: h0 (B, H) or (h0, c0) for lstm, or None (zeros; B then comes from the first chunk).
        k1: steps per chunk (forward takes 1..k1 steps). k2: window length, k2 >= k1.
        nonlinearity: "tanh" or "relu" (rnn only).

    Not thread-safe to share between trainers (calls are serialised by a lock, but the order of
    forward/backward across threads would be arbitrary).
    """

    def __init__(
        self,
        cell: str,
        params: Mapping[str, Any],
        state0: Any,
        k1: int,
        k2: int,
        *,
        nonlinearity: str = "tanh",
    ) -> None:
        self.cell = _check_cell(cell)
        self.nonlinearity = _check_nonlinearity(nonlinearity)
        self.k1 = _check_k("k1", k1)
        self.k2 = _check_k("k2", k2)
        if self.k2 < self.k1:
            raise ValueError(f"k2: expected k2 >= k1 = {self.k1}, got {self.k2}")
        self._params = self._check_stream_params(params)
        self.dtype: np.dtype = self._params[0].dtype
        gates = _GATES[self.cell]
        self.hidden_size: int = self._params[0].shape[0] // gates
        self.input_size: int = self._params[0].shape[1]
        self.has_bias: bool = self._params[2] is not None
        self._stream: Any = None
        self.batch_size: int | None = None
        h0, c0 = _split_state(self.cell, state0)
        if h0 is not None or c0 is not None:
            ref = h0 if h0 is not None else c0
            shape = np.shape(ref)
            if len(shape) != 2:
                raise ValueError(f"state0: expected shape (B, {self.hidden_size}), got {shape}")
            self._create(int(shape[0]))
            self.state = (h0, c0) if get_cell(self.cell).has_cell_state else h0

    # ---- helpers ----

    def _check_stream_params(self, params: Any) -> tuple[Any, ...]:
        w_ih, w_hh, b_ih, b_hh = _check_params(params, self.cell)
        gates = _GATES[self.cell]
        w_ih_ = _float_array("w_ih", w_ih, getattr(self, "dtype", None))
        if (
            w_ih_.ndim != 2
            or w_ih_.shape[0] % gates != 0
            or w_ih_.shape[0] == 0
            or w_ih_.shape[1] == 0
        ):
            raise ValueError(
                f"w_ih: expected shape ({gates}*H, I) with H, I >= 1, got {w_ih_.shape}"
            )
        if hasattr(self, "hidden_size"):
            _check_shape("w_ih", w_ih_, (gates * self.hidden_size, self.input_size))
        h = w_ih_.shape[0] // gates
        w_hh_ = _float_array("w_hh", w_hh, w_ih_.dtype)
        _check_shape("w_hh", w_hh_, (gates * h, h))
        if (b_ih is None) != (b_hh is None):
            raise ValueError("b_ih, b_hh: expected both arrays or both None, got one of each")
        if hasattr(self, "has_bias") and (b_ih is not None) != self.has_bias:
            raise ValueError(
                f"b_ih, b_hh: the stream was made {'with' if self.has_bias else 'without'} biases"
            )
        b_ih_ = b_hh_ = None
        if b_ih is not None:
            b_ih_ = _float_array("b_ih", b_ih, w_ih_.dtype)
            _check_shape("b_ih", b_ih_, (gates * h,))
            b_hh_ = _float_array("b_hh", b_hh, w_ih_.dtype)
            _check_shape("b_hh", b_hh_, (gates * h,))
        extra = _extra_params(self.cell, params, w_ih_.dtype, h)
        return (w_ih_, w_hh_, b_ih_, b_hh_, extra or None)

    def _create(self, batch: int) -> None:
        if batch < 1:
            raise ValueError(f"state0: expected a batch size >= 1, got {batch}")
        # The stream keeps 2*k2 steps of x, gates, states and aux (tbptt.hpp): check before the core
        # sizes its buffers (whose element counts would overflow int64 for absurd k2).
        gates, h, i = _GATES[self.cell], self.hidden_size, self.input_size
        steps = 2 * self.k2 + 1
        nbytes = steps * batch * (i + (gates + 3) * h) * self.dtype.itemsize
        _check_memory(f"k2: a stream with k2={self.k2}, batch={batch}, H={h}, I={i}", nbytes)
        cls = core.TBPTTStreamFloat32 if self.dtype == np.float32 else core.TBPTTStreamFloat64
        self._stream = cls(
            self.cell,
            self.nonlinearity,
            batch,
            self.input_size,
            self.hidden_size,
            self.k1,
            self.k2,
            self.has_bias,
        )
        self._stream.set_params(*self._params)
        self.batch_size = batch

    def _state_arr(self, name: str, a: Any) -> Array | None:
        if a is None:
            return None
        arr = _float_array(name, a, self.dtype)
        _check_shape(name, arr, (self.batch_size, self.hidden_size))
        return arr

    # ---- public ----

    @property
    def position(self) -> int:
        """Steps consumed so far (the global index of the next step)."""
        return 0 if self._stream is None else int(self._stream.position)

    @property
    def window(self) -> tuple[int, int]:
        """(start, stop): the current backward window, global steps [start, stop), half-open.

        stop = position, start = max(0, position - k2); backward's dy_window has stop - start steps.
        """
        if self._stream is None:
            return (0, 0)
        start, stop = self._stream.window
        return int(start), int(stop)

    @property
    def state(self) -> State | None:
        """The current state: h (B, H), or (h, c) for lstm (copies). None before the first chunk
        when the stream was made with state0=None.

        Setting it before the first forward sets the initial state (its gradient is backward's
        "state0"); setting it later replaces the state as a constant: no gradient of later windows
        flows into the steps before it (like :meth:`reset_state`).
        """
        if self._stream is None:
            return None
        return self._stream.get_state()

    @state.setter
    def state(self, value: Any) -> None:
        h, c = _split_state(self.cell, value, "state")
        if self._stream is None:
            ref = h if h is not None else c
            if ref is None:
                return
            self._create(int(np.shape(ref)[0]))
        self._stream.set_state(self._state_arr("h", h), self._state_arr("c", c))

    def reset_state(self, mask_or_indices: Any) -> None:
        """Zero the state of some sequences (stateful training: a new sequence starts in that row).

        mask_or_indices: bool array (B,) or integer indices into the batch. Their gradient is cut:
        later windows treat the zero state as a constant.
        """
        if self._stream is None:
            return
        B = self.batch_size
        arr = np.asarray(mask_or_indices)
        if arr.dtype == np.bool_:
            _check_shape("mask_or_indices", arr, (B,))
            mask = arr.astype(np.uint8)
        elif arr.dtype.kind in "iu":
            idx = arr.reshape(-1)
            if idx.size and (idx.min() < -B or idx.max() >= B):
                raise ValueError(
                    f"mask_or_indices: expected indices in [-{B}, {B}), "
                    f"got min {idx.min()}, max {idx.max()}"
                )
            mask = np.zeros(B, np.uint8)
            mask[idx] = 1
        else:
            raise TypeError(
                f"mask_or_indices: expected a bool mask ({B},) or integer indices, "
                f"got dtype {arr.dtype}"
            )
        self._stream.reset_rows(np.ascontiguousarray(mask))

    def set_params(self, params: Mapping[str, Any]) -> None:
        """Replace the weights (same shapes, dtype, bias presence), e.g. after an optimizer step."""
        self._params = self._check_stream_params(params)
        if self._stream is not None:
            self._stream.set_params(*self._params)

    def forward(self, x: Any) -> Array:
        """Advance by L = x.shape[0] steps (1 <= L <= k1): x (L, B, I) -> y (L, B, H)."""
        x_ = _float_array("x", x, self.dtype)
        if x_.ndim != 3:
            raise ValueError(
                f"x: expected a 3-D array (L, B, {self.input_size}), got shape {x_.shape}"
            )
        if self._stream is None:
            self._create(int(x_.shape[1]))
        L = x_.shape[0]
        if not 1 <= L <= self.k1:
            raise ValueError(f"x: expected 1 <= L <= k1 = {self.k1} steps, got shape {x_.shape}")
        _check_shape("x", x_, (L, self.batch_size, self.input_size))
        return self._stream.forward(x_)

    def backward(self, dy_window: Any, *, need_dx: bool = True) -> dict[str, Any]:
        """Gradients over the current window [start, stop) (see :attr:`window`).

        Args:
            dy_window: (stop - start, B, H) dL/dy over the WHOLE window (zeros on history steps
                for a single layer; the layer above's dx for a stacked model).
            need_dx: False skips the dx GEMM ("x" is then None).

        Returns:
            dict with w_ih, w_hh, b_ih, b_hh (None without bias); "x" = dL/dx over the window
            (W, B, I); "state0" = dL/dh0 (or (dL/dh0, dL/dc0) for lstm) when start == 0, else None.
        """
        if self._stream is None or self.position == 0:
            raise ValueError("backward: the stream has no steps yet (call forward first)")
        start, stop = self.window
        dy_ = _float_array("dy_window", dy_window, self.dtype)
        _check_shape("dy_window", dy_, (stop - start, self.batch_size, self.hidden_size))
        return self._stream.backward(dy_, _check_bool("need_dx", need_dx))

    def __repr__(self) -> str:
        return (
            f"TBPTTStream(cell={self.cell!r}, k1={self.k1}, k2={self.k2}, "
            f"position={self.position}, dtype={self.dtype})"
        )


# The functions of every other registered cell (<cell>_forward / <cell>_backward, generated from its
# CellSpec with the same conventions as the three above): see rnnfast/_cellfn.py.
from ._cellfn import install as _install_cell_functions  # noqa: E402

_install_cell_functions(globals(), __all__)
