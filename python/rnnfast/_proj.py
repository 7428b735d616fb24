"""The LSTM with projection (``torch.nn.LSTM(..., proj_size=P)``, Sak et al. 2014): the functional API
over its fused C++ kernels (``cpp/src/lstm_proj.cpp``), and its truncated BPTT.

Dimensions: T = time steps, B = batch, I = input size, H = hidden size (the cell state), P =
projection size (the hidden state and the output)::

    a   = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh     (B, 4H); gates i, f, g, o (PyTorch's order)
    c_t = f * c_{t-1} + i * g                      (B, H)
    h_t = W_hr (o * tanh(c_t))                     (B, P);  y_t = h_t

Shapes: x (T, B, I); h0, h_n (B, P); c0, c_n (B, H); y (T, B, P); w_ih (4H, I); w_hh (4H, P);
b_ih, b_hh (4H,) or None; w_hr (P, H). H comes from w_hh's rows, P from w_hr's. dtype float32 or
float64, set by ``x``; every array of one call must share it (TypeError naming the argument).
``lengths`` (B,) integers in [0, T]: packed-sequence semantics as in :mod:`rnnfast.functional`
(steps t >= lengths[b] carry (h, c) unchanged and write y = 0). Its float64 oracle is
:func:`rnnfast.reference.lstm_proj_forward` / ``lstm_proj_backward`` (same argument order).

The cache of a training forward keeps references to ``x`` and the weights (not copies): do not
modify them in place before backward. Backward may be called on one cache any number of times.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._fcheck import (
    Array,
    _Args,
    _check_bool,
    _check_k,
    _check_memory,
    _check_shape,
    _float_array,
    _opt_array,
)
from ._loader import core

__all__ = [
    "ProjCache",
    "lstm_proj_backward",
    "lstm_proj_forward",
    "lstm_proj_tbptt_grads",
]

_PARAM_KEYS = ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr")


class ProjCache:
    """Opaque record of a training forward of :func:`lstm_proj_forward`.

    Holds the compiled core's buffers (gates (T, B, 4H), states, tanh(c_t) and m_t) and references
    to the forward's x and weights. ``shape`` is (T, B, I, H, P).
    """

    __slots__ = ("_core", "dtype", "shape", "weights", "x")

    def __init__(self, core_cache: Any, x: Array, weights: tuple[Array | None, ...]) -> None:
        self._core = core_cache
        self.x = x
        self.weights = weights  # w_ih, w_hh, b_ih, b_hh, w_hr
        self.dtype = x.dtype
        self.shape: tuple[int, int, int, int, int] = tuple(int(n) for n in core_cache.shape)  # type: ignore[assignment]

    @property
    def nbytes(self) -> int:
        """Bytes held by the compiled buffers (not counting x and the weights)."""
        return int(self._core.nbytes)

    def __repr__(self) -> str:
        t, b, i, h, p = self.shape
        return f"ProjCache(T={t}, B={b}, I={i}, H={h}, P={p}, dtype={self.dtype})"


class _ProjArgs:
    """Validated arguments of one call: sizes, dtype and C-contiguous arrays."""

    def __init__(self, x: Any, w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any, w_hr: Any) -> None:
        self.x = _float_array("x", x)
        dt = self.dtype = self.x.dtype
        if self.x.ndim != 3 or min(self.x.shape) < 1:
            raise ValueError(
                f"x: expected a 3-D array (T, B, I) with T, B, I >= 1, got shape {self.x.shape}"
            )
        self.T, self.B, self.I = (int(n) for n in self.x.shape)
        self.w_hh = _float_array("w_hh", w_hh, dt)
        if self.w_hh.ndim != 2 or self.w_hh.shape[0] % 4 != 0 or 0 in self.w_hh.shape:
            raise ValueError(f"w_hh: expected shape (4*H, P) with H, P >= 1, got {self.w_hh.shape}")
        self.H = self.w_hh.shape[0] // 4
        self.w_hr = _float_array("w_hr", w_hr, dt)
        if self.w_hr.ndim != 2 or self.w_hr.shape[0] < 1 or self.w_hr.shape[1] != self.H:
            raise ValueError(
                f"w_hr: expected shape (P, H) = (P, {self.H}) with P >= 1, got {self.w_hr.shape}"
            )
        self.P = self.w_hr.shape[0]
        _check_shape("w_hh", self.w_hh, (4 * self.H, self.P))
        self.w_ih = self.arr("w_ih", w_ih, (4 * self.H, self.I))
        if (b_ih is None) != (b_hh is None):
            raise ValueError("b_ih, b_hh: expected both arrays or both None, got one of each")
        self.b_ih = None if b_ih is None else self.arr("b_ih", b_ih, (4 * self.H,))
        self.b_hh = None if b_hh is None else self.arr("b_hh", b_hh, (4 * self.H,))

    # the same checks as the registry cells' (they read self.dtype, self.B, self.T only)
    arr = _Args.arr
    opt = _Args.opt
    lengths = _Args.lengths

    @property
    def weights(self) -> tuple[Array | None, ...]:
        return (self.w_ih, self.w_hh, self.b_ih, self.b_hh, self.w_hr)

    def check_memory(self, training: bool) -> None:
        t, b, h, p = self.T, self.B, self.H, self.P
        n = t * b * p + 2 * b * (h + p) + t * b * 4 * h  # y, states, the gates (cache or workspace)
        if training:  # states, tanh(c_t) and m_t of the cache
            n += (t + 1) * b * (h + p) + 2 * t * b * h
        what = f"x, w_hh: T={t}, B={b}, H={h}, P={p} (lstm_proj, training={training})"
        _check_memory(what, n * self.dtype.itemsize)


def lstm_proj_forward(
    x: Any,
    h0: Any,
    c0: Any,
    w_ih: Any,
    w_hh: Any,
    b_ih: Any,
    b_hh: Any,
    w_hr: Any,
    *,
    lengths: Any = None,
    training: bool = True,
) -> tuple[Array, Array, Array, ProjCache | None]:
    """LSTM with projection over a whole sequence (fused C++ kernel; see the module docstring).

    Args:
        x: (T, B, I) float32 or float64; sets the dtype of the call.
        h0: (B, P) or None (zeros). c0: (B, H) or None (zeros).
        w_ih: (4H, I). w_hh: (4H, P). b_ih, b_hh: (4H,) or both None. w_hr: (P, H).
        lengths: (B,) integers in [0, T], or None (every sequence has T steps).
        training: False stores nothing and returns cache None.

    Returns:
        y (T, B, P), h_n (B, P), c_n (B, H), cache (:class:`ProjCache`, or None).
    """
    a = _ProjArgs(x, w_ih, w_hh, b_ih, b_hh, w_hr)
    h0_ = a.opt("h0", h0, (a.B, a.P))
    c0_ = a.opt("c0", c0, (a.B, a.H))
    lens = a.lengths(lengths)
    training = _check_bool("training", training)
    a.check_memory(training)
    y, h_n, c_n, cc = core.lstm_proj_forward(a.x, h0_, c0_, *a.weights, lens, training)
    return y, h_n, c_n, (ProjCache(cc, a.x, a.weights) if training else None)


def lstm_proj_backward(
    cache: Any, dy: Any, dh_n: Any = None, dc_n: Any = None, *, need_dx: bool = True
) -> dict[str, Array | None]:
    """Full BPTT through :func:`lstm_proj_forward`.

    Args:
        cache: the ProjCache of a forward with training=True.
        dy: (T, B, P) dL/dy or None (zeros). dh_n: (B, P) or None. dc_n: (B, H) or None. Same dtype
            as x.
        need_dx: False skips the dL/dx product ("x" is then None).

    Returns:
        dict with "x" (T, B, I) or None, "h0" (B, P), "c0" (B, H), "w_ih" (4H, I), "w_hh" (4H, P),
        "b_ih", "b_hh" (4H,) or None (no bias), "w_hr" (P, H), "dh_all" (T, B, P) = total dL/dh_t
        of every step (zero rows at padded steps).
    """
    if cache is None:
        raise ValueError(
            "cache: got None; the forward pass was run with training=False, which stores no activations"
        )
    if not isinstance(cache, ProjCache):
        raise TypeError(
            f"cache: expected a ProjCache from lstm_proj_forward, got {type(cache).__name__}"
        )
    need_dx = _check_bool("need_dx", need_dx)
    t, b, _, h, p = cache.shape

    dy_ = _opt_array("dy", dy, cache.dtype, (t, b, p))
    dh_ = _opt_array("dh_n", dh_n, cache.dtype, (b, p))
    dc_ = _opt_array("dc_n", dc_n, cache.dtype, (b, h))
    return dict(
        core.lstm_proj_backward(cache._core, cache.x, *cache.weights, dy_, dh_, dc_, need_dx)
    )


def _proj_params(params: Any) -> tuple[Any, ...]:
    keys = ", ".join(_PARAM_KEYS)
    if not isinstance(params, Mapping):
        raise TypeError(f"params: expected a dict with keys {keys}, got {type(params).__name__}")
    for key in ("w_ih", "w_hh", "w_hr"):
        if key not in params:
            raise ValueError(f"params: missing key {key!r} (expected keys {keys})")
    unknown = set(params) - set(_PARAM_KEYS)
    if unknown:
        raise ValueError(f"params: unexpected keys {sorted(unknown)} (expected {keys})")
    return tuple(params.get(k) for k in _PARAM_KEYS)


def lstm_proj_tbptt_grads(
    x: Any, state0: Any, params: Mapping[str, Any], dy: Any, k1: int, k2: int
) -> list[dict[str, Any]]:
    """Per-update weight gradients of truncated BPTT(k1, k2) of the LSTM with projection.

    The definition of :func:`rnnfast.functional.tbptt_grads`: update n covers output steps
    [n*k1, e], e = min((n+1)*k1, T) - 1, and is the exact gradient of sum_{t=n*k1..e} <y_t, dy_t>
    with the state entering step s = max(0, e - k2 + 1) held constant. Built on the fused kernels:
    one inference pass over the stream, cut at every window start and update start, records the
    states entering them; each update then runs a training forward over its window [s, e] from that
    state and one backward (dy zero on the history steps [s, n*k1)). Requires k2 >= k1 >= 1.

    Args:
        x: (T, B, I) float32/float64. state0: (h0 (B, P), c0 (B, H)) (entries may be None) or None.
        params: dict with w_ih (4H, I), w_hh (4H, P), w_hr (P, H), b_ih, b_hh (4H,) (biases None or
            absent = no bias). dy: (T, B, P) or None (zeros). k1, k2: ints, k2 >= k1 >= 1.

    Returns:
        ceil(T / k1) dicts with w_ih, w_hh, b_ih, b_hh (None without bias), w_hr and state0 =
        (dL/dh0, dL/dc0), zero for updates whose window starts after step 0.
    """
    w_ih, w_hh, b_ih, b_hh, w_hr = _proj_params(params)
    a = _ProjArgs(x, w_ih, w_hh, b_ih, b_hh, w_hr)
    k1 = _check_k("k1", k1)
    k2 = _check_k("k2", k2)
    if k2 < k1:
        raise ValueError(f"k2: expected k2 >= k1 = {k1}, got {k2}")
    if state0 is None:
        h0, c0 = None, None
    elif isinstance(state0, (tuple, list)) and len(state0) == 2:
        h0, c0 = state0
    else:
        raise TypeError(
            f"state0: expected None or a tuple (h0, c0) for the LSTM with projection, "
            f"got {type(state0).__name__}"
        )
    h = a.opt("h0", h0, (a.B, a.P))
    c = a.opt("c0", c0, (a.B, a.H))
    h = np.zeros((a.B, a.P), a.dtype) if h is None else h
    c = np.zeros((a.B, a.H), a.dtype) if c is None else c
    dy_ = np.zeros((a.T, a.B, a.P), a.dtype) if dy is None else a.arr("dy", dy, (a.T, a.B, a.P))
    T = a.T
    windows = []
    for start in range(0, T, k1):
        e = min(start + k1, T) - 1
        windows.append((start, e, max(0, e - k2 + 1)))
    # states entering every window start: one inference pass cut at those steps
    cuts = sorted({0, T} | {s for _, _, s in windows})
    entering: dict[int, tuple[Array, Array]] = {0: (h, c)}
    for s0, s1 in zip(cuts[:-1], cuts[1:]):
        _, h, c, _ = core.lstm_proj_forward(a.x[s0:s1], h, c, *a.weights, None, False)
        entering[s1] = (h, c)
    updates: list[dict[str, Any]] = []
    for start, e, s in windows:
        hs, cs = entering[s]
        dyw = np.zeros((e + 1 - s, a.B, a.P), a.dtype)
        dyw[start - s :] = dy_[start : e + 1]  # only the update's own output steps carry dy
        _, _, _, cache = lstm_proj_forward(a.x[s : e + 1], hs, cs, *a.weights)
        g = lstm_proj_backward(cache, dyw, need_dx=False)
        zero = s > 0  # the entering state is a constant: no gradient reaches state0
        dstate = tuple(np.zeros_like(g[k]) if zero else g[k] for k in ("h0", "c0"))
        update = {k: g[k] for k in _PARAM_KEYS}
        update["state0"] = dstate
        updates.append(update)
    return updates
