"""Plain NumPy float64 oracle for every rnnfast kernel.

Same names and signatures as :mod:`rnnfast.functional`; written to be read, not to be fast.
Each function steps through time one step at a time (the only Python loop is over time) and
writes the derivative beside the line that computes it. Every kernel in the compiled core is
tested against this module, and this module is tested against central finite differences
(tests/test_reference.py).

T = time steps, B = batch, I = input size, H = hidden size, G = gates (1 rnn, 4 lstm, 3 gru).

Shapes (PyTorch's layout): x (T, B, I); h0, c0, h_n, c_n (B, H); y (T, B, H); w_ih (G*H, I);
w_hh (G*H, H); b_ih, b_hh (G*H,) or None. Gate order: LSTM i, f, g, o; GRU r, z, n with
n = tanh(W_in x + b_in + r * (W_hn h + b_hn)) and h_t = (1 - z) * n + z * h_{t-1}.

All inputs are converted to float64 and all outputs are float64, whatever the input dtype.

Ragged batches (``lengths``, PyTorch packed-sequence semantics): for t >= lengths[b] the state of
sequence b is carried unchanged and y[t, b] = 0, so h_n[b] is the state after its last valid step
(h0[b] when lengths[b] == 0). Padded steps are selected away (``np.where`` on the mask), never
multiplied by 0: no value at a padded step (of x, of dy, of the state carried over it, e.g. the h0
/ c0 of a sequence of length 0, or computed from them; Inf and NaN included) reaches any output or
gradient of another sequence. For simplicity the cell is evaluated on every row and
its padded rows are discarded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._cells import CELLS, get_cell
from .._fcheck import _check_params

__all__ = [
    "ReferenceCache",
    "gru_backward",
    "gru_forward",
    "lstm_backward",
    "lstm_forward",
    "rnn_backward",
    "rnn_forward",
    "tbptt_grads",
]

_GATES = {c.name: c.gates for c in CELLS}  # gate count per cell, from the registry
_NONLINEARITIES = ("tanh", "relu")

Array = np.ndarray


# --------------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------------


def _as_f64(name: str, a: Any) -> Array:
    """Convert ``a`` to a float64 array; TypeError naming ``name`` for non-real input."""
    if a is None:
        raise TypeError(f"{name}: expected an array, got None")
    arr = np.asarray(a)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected a real floating-point array, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=True)


def _check_shape(name: str, a: Array, shape: tuple[int, ...]) -> None:
    if a.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {a.shape}")


def _sizes(x: Array, w_ih: Array, w_hh: Array, gates: int) -> tuple[int, int, int, int]:
    """(T, B, I, H) from x (T, B, I) and w_hh (G*H, H); then checks w_ih (G*H, I) and w_hh."""
    if x.ndim != 3:
        raise ValueError(f"x: expected a 3-D array of shape (T, B, I), got shape {x.shape}")
    t_steps, batch, n_in = x.shape
    if t_steps < 1 or batch < 1 or n_in < 1:
        raise ValueError(f"x: expected shape (T, B, I) with T, B, I >= 1, got {x.shape}")
    if w_hh.ndim != 2 or w_hh.shape[0] % gates != 0 or w_hh.shape[0] == 0:
        raise ValueError(f"w_hh: expected shape ({gates}*H, H) with H >= 1, got {w_hh.shape}")
    hidden = w_hh.shape[0] // gates
    _check_shape("w_hh", w_hh, (gates * hidden, hidden))
    _check_shape("w_ih", w_ih, (gates * hidden, n_in))
    return t_steps, batch, n_in, hidden


def _state(name: str, s: Any, batch: int, hidden: int) -> Array:
    if s is None:
        return np.zeros((batch, hidden))
    arr = _as_f64(name, s)
    _check_shape(name, arr, (batch, hidden))
    return arr


def _bias(name: str, b: Any, gh: int) -> Array | None:
    if b is None:
        return None
    arr = _as_f64(name, b)
    _check_shape(name, arr, (gh,))
    return arr


def _mask(lengths: Any, t_steps: int, batch: int) -> Array:
    """(T, B) float mask: 1.0 where t < lengths[b] (a valid step), 0.0 at padded steps."""
    if lengths is None:
        return np.ones((t_steps, batch))
    arr = np.asarray(lengths)
    if arr.dtype.kind not in "iu":
        raise TypeError(
            f"lengths: expected an integer array of shape ({batch},), got dtype {arr.dtype}"
        )
    _check_shape("lengths", arr, (batch,))
    if arr.size and (arr.min() < 0 or arr.max() > t_steps):
        raise ValueError(
            f"lengths: expected 0 <= lengths[b] <= T = {t_steps}, "
            f"got min {arr.min()}, max {arr.max()}"
        )
    return (np.arange(t_steps)[:, None] < arr[None, :]).astype(np.float64)


def _params(
    x: Any, w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any, gates: int
) -> tuple[Array, Array, Array, Array | None, Array | None, int, int, int, int]:
    x = _as_f64("x", x)
    w_ih = _as_f64("w_ih", w_ih)
    w_hh = _as_f64("w_hh", w_hh)
    t_steps, batch, n_in, hidden = _sizes(x, w_ih, w_hh, gates)
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih, b_hh: expected both arrays or both None, got one of each")
    b_ih_ = _bias("b_ih", b_ih, gates * hidden)
    b_hh_ = _bias("b_hh", b_hh, gates * hidden)
    return x, w_ih, w_hh, b_ih_, b_hh_, t_steps, batch, n_in, hidden


def _grad_in(name: str, g: Any, shape: tuple[int, ...]) -> Array:
    """Upstream gradient: zeros when None, else a float64 copy of the expected shape."""
    if g is None:
        return np.zeros(shape)
    arr = _as_f64(name, g)
    _check_shape(name, arr, shape)
    return arr


def _check_cache(cache: Any, cell: str) -> ReferenceCache:
    if cache is None:
        raise ValueError(
            "cache: got None; the forward pass was run with training=False, "
            "which stores no activations"
        )
    if not isinstance(cache, ReferenceCache):
        raise TypeError(
            f"cache: expected a rnnfast.reference.ReferenceCache from {cell}_forward, "
            f"got {type(cache).__name__}"
        )
    if cache.cell != cell:
        raise ValueError(
            f"cache: expected a cache from {cell}_forward, got one from {cache.cell}_forward"
        )
    return cache


def _sigmoid(a: Array) -> Array:
    # Two branches so neither exp overflows; exact in float64.
    out = np.empty_like(a)
    pos = a >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-a[pos]))
    e = np.exp(a[~pos])
    out[~pos] = e / (1.0 + e)
    return out


# --------------------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceCache:
    """What a reference backward needs from its forward (float64 arrays).

    mask (T, B): 1.0 at valid steps; h (T+1, B, H): h[0] = h0, h[t+1] = state after step t;
    c (T+1, B, H) likewise for LSTM (else None); act (T, B, G*H): activated gates of every step
    (rnn: act(a_t); lstm: i, f, g, o; gru: r, z, n); ghn (T, B, H): GRU's W_hn h_{t-1} + b_hn.
    """

    cell: str
    nonlinearity: str
    x: Array
    w_ih: Array
    w_hh: Array
    b_ih: Array | None
    b_hh: Array | None
    mask: Array
    h: Array
    c: Array | None
    act: Array
    ghn: Array | None


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
) -> tuple[Array, Array, ReferenceCache | None]:
    """h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), act = tanh or relu.

    Args: x (T, B, I); h0 (B, H) or None (zeros); w_ih (H, I); w_hh (H, H); b_ih, b_hh (H,) or None;
    lengths (B,) ints in [0, T] or None. Returns y (T, B, H), h_n (B, H), cache (None when
    training=False). All float64.
    """
    if nonlinearity not in _NONLINEARITIES:
        raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
    x, w_ih, w_hh, b_ih, b_hh, t_steps, batch, _, hidden = _params(x, w_ih, w_hh, b_ih, b_hh, 1)
    h = _state("h0", h0, batch, hidden)
    mask = _mask(lengths, t_steps, batch)
    bias = 0.0 if b_ih is None else b_ih + b_hh  # type: ignore[operator]

    y = np.zeros((t_steps, batch, hidden))
    hs = np.zeros((t_steps + 1, batch, hidden))
    acts = np.zeros((t_steps, batch, hidden))
    hs[0] = h
    for t in range(t_steps):
        a = x[t] @ w_ih.T + h @ w_hh.T + bias  # a_t = W_ih x_t + W_hh h_{t-1} + b_ih + b_hh
        h_new = np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0.0)
        v = mask[t][:, None] > 0.0  # (B, 1): True at valid steps
        h = np.where(v, h_new, h)  # padded steps carry the state unchanged
        y[t] = np.where(v, h, 0.0)  # y_t = h_t at valid steps, 0 at padded steps
        hs[t + 1] = h
        acts[t] = h_new
    if not training:
        return y, h, None
    cache = ReferenceCache(
        "rnn", nonlinearity, x, w_ih, w_hh, b_ih, b_hh, mask, hs, None, acts, None
    )
    return y, h.copy(), cache


def rnn_backward(cache: Any, dy: Any, dh_n: Any = None) -> dict[str, Array | None]:
    """Full BPTT through rnn_forward.

    Args: cache from rnn_forward; dy (T, B, H) = dL/dy or None (zeros); dh_n (B, H) = dL/dh_n
    or None. Returns dict of float64 arrays: x (T, B, I), h0 (B, H), w_ih, w_hh, b_ih, b_hh (None
    without bias), dh_all (T, B, H) = total dL/dh_t (zero rows at padded steps).
    """
    c = _check_cache(cache, "rnn")
    t_steps, batch, _ = c.x.shape
    hidden = c.w_hh.shape[1]
    dy = _grad_in("dy", dy, (t_steps, batch, hidden))
    dh = _grad_in("dh_n", dh_n, (batch, hidden))

    dx = np.zeros_like(c.x)
    dw_ih = np.zeros_like(c.w_ih)
    dw_hh = np.zeros_like(c.w_hh)
    db = np.zeros(hidden)
    dh_all = np.zeros((t_steps, batch, hidden))
    for t in reversed(range(t_steps)):
        v = c.mask[t][:, None] > 0.0  # (B, 1): True at valid steps
        dh = np.where(v, dh + dy[t], dh)  # dL/dh_t = dL/dy_t (valid steps) + dL/dh_t via step t+1
        dh_all[t] = np.where(v, dh, 0.0)
        h_new = c.act[t]
        if c.nonlinearity == "tanh":
            da = dh * (1.0 - h_new**2)  # dL/da_t = dL/dh_t * (1 - tanh(a_t)^2)
        else:
            da = dh * (h_new > 0.0)  # dL/da_t = dL/dh_t * [a_t > 0]
        da = np.where(v, da, 0.0)  # padded steps do not pass through the cell
        dx[t] = da @ c.w_ih  # dL/dx_t = dL/da_t W_ih
        dw_ih += da.T @ np.where(v, c.x[t], 0.0)  # dL/dW_ih += dL/da_t^T x_t (valid x_t only)
        dw_hh += da.T @ np.where(v, c.h[t], 0.0)  # dL/dW_hh += dL/da_t^T h_{t-1} (valid rows only)
        db += da.sum(axis=0)  # dL/db_ih = dL/db_hh += sum_b dL/da_t
        dh = np.where(v, da @ c.w_hh, dh)  # dL/dh_{t-1} = dL/da_t W_hh; padded: dL/dh_t (carried)
    has_bias = c.b_ih is not None
    return {
        "x": dx,
        "h0": dh,
        "w_ih": dw_ih,
        "w_hh": dw_hh,
        "b_ih": db.copy() if has_bias else None,
        "b_hh": db.copy() if has_bias else None,
        "dh_all": dh_all,
    }


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
) -> tuple[Array, Array, Array, ReferenceCache | None]:
    """LSTM, gates i, f, g, o: c_t = f*c_{t-1} + i*g, h_t = o*tanh(c_t).

    Args: x (T, B, I); h0, c0 (B, H) or None (zeros); w_ih (4H, I); w_hh (4H, H); b_ih, b_hh (4H,)
    or None; lengths (B,) or None. Returns y (T, B, H), h_n (B, H), c_n (B, H), cache. All float64.
    """
    x, w_ih, w_hh, b_ih, b_hh, t_steps, batch, _, hidden = _params(x, w_ih, w_hh, b_ih, b_hh, 4)
    h = _state("h0", h0, batch, hidden)
    cs = _state("c0", c0, batch, hidden)
    mask = _mask(lengths, t_steps, batch)
    bias = 0.0 if b_ih is None else b_ih + b_hh  # type: ignore[operator]
    H = hidden

    y = np.zeros((t_steps, batch, H))
    hs = np.zeros((t_steps + 1, batch, H))
    css = np.zeros((t_steps + 1, batch, H))
    acts = np.zeros((t_steps, batch, 4 * H))
    hs[0], css[0] = h, cs
    for t in range(t_steps):
        a = x[t] @ w_ih.T + h @ w_hh.T + bias  # a_t = W_ih x_t + W_hh h_{t-1} + b (4H wide)
        i = _sigmoid(a[:, 0:H])
        f = _sigmoid(a[:, H : 2 * H])
        g = np.tanh(a[:, 2 * H : 3 * H])
        o = _sigmoid(a[:, 3 * H : 4 * H])
        c_new = f * cs + i * g  # c_t = f * c_{t-1} + i * g
        h_new = o * np.tanh(c_new)  # h_t = o * tanh(c_t)
        v = mask[t][:, None] > 0.0  # (B, 1): True at valid steps
        cs = np.where(v, c_new, cs)  # padded steps carry (h, c) unchanged
        h = np.where(v, h_new, h)
        y[t] = np.where(v, h, 0.0)
        hs[t + 1], css[t + 1] = h, cs
        acts[t] = np.concatenate([i, f, g, o], axis=1)
    if not training:
        return y, h, cs, None
    cache = ReferenceCache("lstm", "", x, w_ih, w_hh, b_ih, b_hh, mask, hs, css, acts, None)
    return y, h.copy(), cs.copy(), cache


def lstm_backward(
    cache: Any, dy: Any, dh_n: Any = None, dc_n: Any = None
) -> dict[str, Array | None]:
    """Full BPTT through lstm_forward.

    Args: cache; dy (T, B, H) or None; dh_n, dc_n (B, H) or None. Returns dict of float64
    arrays: x (T, B, I), h0, c0 (B, H), w_ih (4H, I), w_hh (4H, H), b_ih, b_hh (4H,) or None,
    dh_all (T, B, H).
    """
    c = _check_cache(cache, "lstm")
    t_steps, batch, _ = c.x.shape
    H = c.w_hh.shape[1]
    assert c.c is not None
    dy = _grad_in("dy", dy, (t_steps, batch, H))
    dh = _grad_in("dh_n", dh_n, (batch, H))
    dc = _grad_in("dc_n", dc_n, (batch, H))

    dx = np.zeros_like(c.x)
    dw_ih = np.zeros_like(c.w_ih)
    dw_hh = np.zeros_like(c.w_hh)
    db = np.zeros(4 * H)
    dh_all = np.zeros((t_steps, batch, H))
    for t in reversed(range(t_steps)):
        v = c.mask[t][:, None] > 0.0  # (B, 1): True at valid steps
        i, f, g, o = (c.act[t][:, k * H : (k + 1) * H] for k in range(4))
        c_prev = c.c[t]
        tc = np.tanh(f * c_prev + i * g)  # tanh(c_t) of the step's own (unmasked) cell state
        dh = np.where(v, dh + dy[t], dh)  # dL/dh_t = dL/dy_t + dL/dh_t via step t+1
        dh_all[t] = np.where(v, dh, 0.0)
        # dL/dc_t = dL/dc_t (via step t+1) + dL/dh_t * o * (1 - tanh(c_t)^2)
        dct = dc + dh * o * (1.0 - tc**2)
        do = dh * tc  # dL/do = dL/dh_t * tanh(c_t)
        di = dct * g  # dL/di = dL/dc_t * g
        dg = dct * i  # dL/dg = dL/dc_t * i
        df = dct * c_prev  # dL/df = dL/dc_t * c_{t-1}
        da = np.concatenate(
            [
                di * i * (1.0 - i),  # dL/da_i = dL/di * i (1 - i)
                df * f * (1.0 - f),  # dL/da_f = dL/df * f (1 - f)
                dg * (1.0 - g**2),  # dL/da_g = dL/dg * (1 - g^2)
                do * o * (1.0 - o),  # dL/da_o = dL/do * o (1 - o)
            ],
            axis=1,
        )
        da = np.where(v, da, 0.0)  # padded steps do not pass through the cell
        dx[t] = da @ c.w_ih  # dL/dx_t = dL/da_t W_ih
        dw_ih += da.T @ np.where(v, c.x[t], 0.0)  # dL/dW_ih += dL/da_t^T x_t (valid x_t only)
        dw_hh += da.T @ np.where(v, c.h[t], 0.0)  # dL/dW_hh += dL/da_t^T h_{t-1} (valid rows only)
        db += da.sum(axis=0)  # dL/db += sum_b dL/da_t
        dc = np.where(v, dct * f, dc)  # dL/dc_{t-1} = dL/dc_t * f_t; padded: carried
        dh = np.where(v, da @ c.w_hh, dh)  # dL/dh_{t-1} = dL/da_t W_hh; padded: carried
    has_bias = c.b_ih is not None
    return {
        "x": dx,
        "h0": dh,
        "c0": dc,
        "w_ih": dw_ih,
        "w_hh": dw_hh,
        "b_ih": db.copy() if has_bias else None,
        "b_hh": db.copy() if has_bias else None,
        "dh_all": dh_all,
    }


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
) -> tuple[Array, Array, ReferenceCache | None]:
    """GRU, gates r, z, n: n = tanh(W_in x + b_in + r*(W_hn h + b_hn)), h_t = (1-z)*n + z*h_{t-1}.

    Args: x (T, B, I); h0 (B, H) or None; w_ih (3H, I); w_hh (3H, H); b_ih, b_hh (3H,) or None;
    lengths (B,) or None. Returns y (T, B, H), h_n (B, H), cache. All float64.
    """
    x, w_ih, w_hh, b_ih, b_hh, t_steps, batch, _, hidden = _params(x, w_ih, w_hh, b_ih, b_hh, 3)
    h = _state("h0", h0, batch, hidden)
    mask = _mask(lengths, t_steps, batch)
    bi = 0.0 if b_ih is None else b_ih
    bh = 0.0 if b_hh is None else b_hh
    H = hidden

    y = np.zeros((t_steps, batch, H))
    hs = np.zeros((t_steps + 1, batch, H))
    acts = np.zeros((t_steps, batch, 3 * H))
    ghns = np.zeros((t_steps, batch, H))
    hs[0] = h
    for t in range(t_steps):
        gi = x[t] @ w_ih.T + bi  # input part   W_ih x_t + b_ih      (3H wide: r, z, n)
        gh = h @ w_hh.T + bh  # recurrent part W_hh h_{t-1} + b_hh (3H wide: r, z, n)
        r = _sigmoid(gi[:, 0:H] + gh[:, 0:H])
        z = _sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
        ghn = gh[:, 2 * H : 3 * H]
        n = np.tanh(gi[:, 2 * H : 3 * H] + r * ghn)  # n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h_new = (1.0 - z) * n + z * h  # h_t = (1 - z) * n + z * h_{t-1}
        v = mask[t][:, None] > 0.0  # (B, 1): True at valid steps
        h = np.where(v, h_new, h)  # padded steps carry the state unchanged
        y[t] = np.where(v, h, 0.0)
        hs[t + 1] = h
        acts[t] = np.concatenate([r, z, n], axis=1)
        ghns[t] = ghn
    if not training:
        return y, h, None
    cache = ReferenceCache("gru", "", x, w_ih, w_hh, b_ih, b_hh, mask, hs, None, acts, ghns)
    return y, h.copy(), cache


def gru_backward(cache: Any, dy: Any, dh_n: Any = None) -> dict[str, Array | None]:
    """Full BPTT through gru_forward.

    Args: cache; dy (T, B, H) or None; dh_n (B, H) or None. Returns dict of float64 arrays:
    x (T, B, I), h0 (B, H), w_ih (3H, I), w_hh (3H, H), b_ih, b_hh (3H,) or None, dh_all (T, B, H).
    """
    c = _check_cache(cache, "gru")
    t_steps, batch, _ = c.x.shape
    H = c.w_hh.shape[1]
    assert c.ghn is not None
    dy = _grad_in("dy", dy, (t_steps, batch, H))
    dh = _grad_in("dh_n", dh_n, (batch, H))

    dx = np.zeros_like(c.x)
    dw_ih = np.zeros_like(c.w_ih)
    dw_hh = np.zeros_like(c.w_hh)
    db_ih = np.zeros(3 * H)
    db_hh = np.zeros(3 * H)
    dh_all = np.zeros((t_steps, batch, H))
    for t in reversed(range(t_steps)):
        v = c.mask[t][:, None] > 0.0  # (B, 1): True at valid steps
        r, z, n = (c.act[t][:, k * H : (k + 1) * H] for k in range(3))
        h_prev = c.h[t]
        ghn = c.ghn[t]
        dh = np.where(v, dh + dy[t], dh)  # dL/dh_t = dL/dy_t + dL/dh_t via step t+1
        dh_all[t] = np.where(v, dh, 0.0)
        dn = dh * (1.0 - z)  # dL/dn = dL/dh_t * (1 - z)
        dz = dh * (h_prev - n)  # dL/dz = dL/dh_t * (h_{t-1} - n)
        dan = dn * (1.0 - n**2)  # dL/da_n = dL/dn * (1 - n^2),  a_n = W_in x + b_in + r * ghn
        dr = dan * ghn  # dL/dr = dL/da_n * (W_hn h_{t-1} + b_hn)
        dar = dr * r * (1.0 - r)  # dL/da_r = dL/dr * r (1 - r)
        daz = dz * z * (1.0 - z)  # dL/da_z = dL/dz * z (1 - z)
        dgi = np.concatenate([dar, daz, dan], axis=1)  # dL/d(W_ih x_t + b_ih)
        dgh = np.concatenate([dar, daz, dan * r], axis=1)  # dL/d(W_hh h_{t-1} + b_hh); n-part * r
        dgi = np.where(v, dgi, 0.0)  # padded steps do not pass through the cell
        dgh = np.where(v, dgh, 0.0)
        dx[t] = dgi @ c.w_ih  # dL/dx_t = dL/dgi W_ih
        dw_ih += dgi.T @ np.where(v, c.x[t], 0.0)  # dL/dW_ih += dL/dgi^T x_t (valid x_t only)
        dw_hh += dgh.T @ np.where(v, h_prev, 0.0)  # dL/dW_hh += dL/dgh^T h_{t-1} (valid rows only)
        db_ih += dgi.sum(axis=0)  # dL/db_ih += sum_b dL/dgi
        db_hh += dgh.sum(axis=0)  # dL/db_hh += sum_b dL/dgh
        # dL/dh_{t-1} = dL/dh_t * z + dL/dgh W_hh (valid); = dL/dh_t (padded: carried)
        dh = np.where(v, dh * z + dgh @ c.w_hh, dh)
    has_bias = c.b_ih is not None
    return {
        "x": dx,
        "h0": dh,
        "w_ih": dw_ih,
        "w_hh": dw_hh,
        "b_ih": db_ih if has_bias else None,
        "b_hh": db_hh if has_bias else None,
        "dh_all": dh_all,
    }


# --------------------------------------------------------------------------------------------------
# truncated BPTT
# --------------------------------------------------------------------------------------------------


def _check_k(name: str, k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{name}: expected a positive int, got {type(k).__name__} {k!r}")
    if k < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {k}")
    return int(k)


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
    s = max(0, e - k2 + 1) held constant (its value from the forward pass). Requires k2 >= k1 >= 1.

    Straightforward construction: one forward pass over the whole stream stores every state; for
    each update, re-run the window [s, e] from the stored state entering s and backprop dy on
    [n*k1, e] only (dy = 0 on [s, n*k1)).

    Args: cell "rnn" | "lstm" | "gru"; x (T, B, I); state0 h0 (B, H) or (h0, c0) for lstm
    (entries may be None); params dict with w_ih, w_hh, b_ih, b_hh (biases may be None or
    absent); dy (T, B, H). Returns a list of ceil(T / k1) dicts with float64 w_ih, w_hh, b_ih,
    b_hh (None without bias) and state0 = dL/dh0 (or (dL/dh0, dL/dc0) for lstm), nonzero only
    for updates whose window starts at step 0.
    """
    spec = get_cell(cell)  # raises the ValueError that lists the registered cells
    extra = tuple(name for name, _ in spec.extra_params)
    _check_params(params, cell)  # the keys, as the functional API checks them (NumPy only)
    k1 = _check_k("k1", k1)
    k2 = _check_k("k2", k2)
    if k2 < k1:
        raise ValueError(f"k2: expected k2 >= k1 = {k1}, got {k2}")
    w = (params["w_ih"], params["w_hh"], params.get("b_ih"), params.get("b_hh"))
    w += tuple(params[name] for name in extra)
    # the cell's oracle (this package's <cell>_forward / <cell>_backward), by name
    fwd, bwd = globals()[f"{cell}_forward"], globals()[f"{cell}_backward"]
    kw = {"nonlinearity": nonlinearity} if len(spec.nonlinearities) > 1 else {}

    if spec.has_cell_state:
        if not isinstance(state0, (tuple, list)) or len(state0) != 2:
            raise TypeError(
                f"state0: expected a tuple (h0, c0) for cell {cell!r}, got {type(state0).__name__}"
            )
        states0: tuple[Any, ...] = tuple(state0)
    else:
        if isinstance(state0, (tuple, list)):
            raise TypeError(
                f"state0: expected an array h0 (B, H) for cell {cell!r}, "
                f"got {type(state0).__name__}"
            )
        states0 = (state0,)
    out = fwd(x, *states0, *w, **kw)
    y, full = out[0], out[-1]
    assert full is not None
    t_steps = full.x.shape[0]
    dy = _grad_in("dy", dy, y.shape)

    updates: list[dict[str, Any]] = []
    for start in range(0, t_steps, k1):  # update n: start = n*k1
        e = min(start + k1, t_steps) - 1
        s = max(0, e - k2 + 1)
        xw = full.x[s : e + 1]
        dyw = np.zeros_like(dy[s : e + 1])
        dyw[start - s :] = dy[start : e + 1]  # only the update's own output steps carry dy
        # re-run the window from the stored state entering s (a constant when s > 0)
        entering = (full.h[s], full.c[s]) if spec.has_cell_state else (full.h[s],)
        g = bwd(fwd(xw, *entering, *w, **kw)[-1], dyw)
        zero = s > 0  # the entering state is a constant: no gradient reaches state0
        if spec.has_cell_state:
            dstate: Any = tuple(np.zeros_like(g[k]) if zero else g[k] for k in ("h0", "c0"))
        else:
            dstate = np.zeros_like(g["h0"]) if zero else g["h0"]
        update = {k: g[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh", *extra)}
        update["state0"] = dstate
        updates.append(update)
    return updates


# --------------------------------------------------------------------------------------------------
# variant cells and regularisers (issue 14): oracles in the modules beside this one
# --------------------------------------------------------------------------------------------------

from ._common import LN_EPS, VariantCache  # noqa: E402
from .gru_variants import (  # noqa: E402
    gru_layernorm_backward,
    gru_layernorm_forward,
    gru_reset_before_backward,
    gru_reset_before_forward,
)
from .lstm_variants import (  # noqa: E402
    lstm_layernorm_backward,
    lstm_layernorm_forward,
    lstm_peephole_backward,
    lstm_peephole_forward,
    lstm_proj_backward,
    lstm_proj_forward,
)
from .regularisers import (  # noqa: E402
    gru_regularised_backward,
    gru_regularised_forward,
    lstm_regularised_backward,
    lstm_regularised_forward,
)

__all__ += [
    "LN_EPS",
    "VariantCache",
    "gru_layernorm_backward",
    "gru_layernorm_forward",
    "gru_regularised_backward",
    "gru_regularised_forward",
    "gru_reset_before_backward",
    "gru_reset_before_forward",
    "lstm_layernorm_backward",
    "lstm_layernorm_forward",
    "lstm_peephole_backward",
    "lstm_peephole_forward",
    "lstm_proj_backward",
    "lstm_proj_forward",
    "lstm_regularised_backward",
    "lstm_regularised_forward",
]

# minGRU / minLSTM (issue 14): the sequential float64 oracle in reference/minimal.py
from .minimal import (  # noqa: E402
    MinimalReferenceCache,
    mingru_backward,
    mingru_forward,
    minlstm_backward,
    minlstm_forward,
)

__all__ += [
    "MinimalReferenceCache",
    "mingru_backward",
    "mingru_forward",
    "minlstm_backward",
    "minlstm_forward",
]
