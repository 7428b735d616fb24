"""Plain NumPy float64 oracle of minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?").

The sequential form, written to be read: one loop over time, the derivative beside each line. The
compiled scan kernels (:mod:`rnnfast.minimal`) are tested against it, and it against central finite
differences (tests/test_minimal.py).

T = time steps, B = batch, I = input size, H = hidden size, G = gate blocks (2 mingru, 3 minlstm).

The cells are the paper's log-space ("stable") versions, evaluated here in linear space (the same
function; the kernels accumulate it in log space). Pre-activations P = x W_ih^T + b_ih, gate blocks
in the rows of ``w_ih``:

* g(u) = u + 1/2 for u >= 0, sigmoid(u) for u < 0 (positive, so every state is positive;
  continuous, not differentiable at 0: g'(0) = 1 is used, as in the kernels);
* minGRU, w_ih (2H, I) = [W_z; W_h]: z = sigmoid(k), h~ = g(u),
  h_t = (1 - z_t) * h_{t-1} + z_t * h~_t;
* minLSTM, w_ih (3H, I) = [W_f; W_i; W_h]: f = sigmoid(k_f), i = sigmoid(k_i), h~ = g(u),
  f' = f / (f + i), i' = i / (f + i), h_t = f'_t * h_{t-1} + i'_t * h~_t.

h0 (B, H) must be >= 0 (the log-space form takes its log); None means zeros. Outputs y = h_1..h_T.
All inputs are converted to float64 and all outputs are float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "MinimalReferenceCache",
    "mingru_backward",
    "mingru_forward",
    "minlstm_backward",
    "minlstm_forward",
]

Array = np.ndarray

_GATES = {"mingru": 2, "minlstm": 3}


def _f64(name: str, a: Any) -> Array:
    if a is None:
        raise TypeError(f"{name}: expected an array, got None")
    arr = np.asarray(a)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected a real floating-point array, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=True)


def _shape(name: str, a: Array, shape: tuple[int, ...]) -> Array:
    if a.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {a.shape}")
    return a


def _sigmoid(a: Array) -> Array:
    return 0.5 * (1.0 + np.tanh(0.5 * a))  # exact identity, no overflow for large |a|


@dataclass
class MinimalReferenceCache:
    """Everything the reference backward needs (float64)."""

    cell: str
    x: Array  # (T, B, I)
    h0: Array  # (B, H) (zeros when not given)
    w_ih: Array  # (G*H, I)
    has_bias: bool
    pre: Array  # (T, B, G*H) pre-activations
    y: Array  # (T, B, H) states h_1..h_T


def _forward(cell: str, x: Any, h0: Any, w_ih: Any, b_ih: Any) -> tuple[Array, Array, Any]:
    G = _GATES[cell]
    xa = _f64("x", x)
    if xa.ndim != 3 or min(xa.shape) < 1:
        raise ValueError(f"x: expected shape (T, B, I) with T, B, I >= 1, got {xa.shape}")
    t_steps, batch, n_in = xa.shape
    w = _f64("w_ih", w_ih)
    if w.ndim != 2 or w.shape[0] % G != 0 or w.shape[0] == 0:
        raise ValueError(f"w_ih: expected shape ({G}*H, {n_in}) with H >= 1, got {w.shape}")
    H = w.shape[0] // G
    _shape("w_ih", w, (G * H, n_in))
    b = None if b_ih is None else _shape("b_ih", _f64("b_ih", b_ih), (G * H,))
    h = np.zeros((batch, H)) if h0 is None else _shape("h0", _f64("h0", h0), (batch, H))
    if not np.all(np.isfinite(h) & (h >= 0)):
        raise ValueError("h0: expected finite values >= 0 (the log-space form takes log h0)")
    h0_ = h.copy()
    pre = xa @ w.T + (0.0 if b is None else b)  # (T, B, G*H)
    u = pre[..., (G - 1) * H :]
    g_ = np.where(u >= 0, u + 0.5, _sigmoid(u))  # h~ = g(u)
    if cell == "mingru":
        z = _sigmoid(pre[..., :H])
        a, bcoef = 1.0 - z, z * g_  # h_t = (1 - z) h_{t-1} + z h~
    else:
        f, i = _sigmoid(pre[..., :H]), _sigmoid(pre[..., H : 2 * H])
        a, bcoef = f / (f + i), i / (f + i) * g_  # h_t = f' h_{t-1} + i' h~
    y = np.empty((t_steps, batch, H))
    for t in range(t_steps):
        h = a[t] * h + bcoef[t]
        y[t] = h
    cache = MinimalReferenceCache(cell, xa, h0_, w, b is not None, pre, y)
    return y, y[-1].copy(), cache


def _backward(cell: str, cache: Any, dy: Any, dh_n: Any) -> dict[str, Array | None]:
    if not isinstance(cache, MinimalReferenceCache) or cache.cell != cell:
        raise TypeError(f"cache: expected a MinimalReferenceCache from {cell}_forward")
    G = _GATES[cell]
    pre, y = cache.pre, cache.y
    t_steps, batch, H = y.shape
    gy = np.zeros_like(y) if dy is None else _shape("dy", _f64("dy", dy), y.shape)
    dh = np.zeros((batch, H)) if dh_n is None else _shape("dh_n", _f64("dh_n", dh_n), (batch, H))
    u = pre[..., (G - 1) * H :]
    s_u = _sigmoid(u)
    g_ = np.where(u >= 0, u + 0.5, s_u)
    dg = np.where(u >= 0, 1.0, s_u * (1.0 - s_u))  # g'(u)
    hp = np.concatenate([cache.h0[None], y[:-1]])  # h_{t-1}
    dpre = np.empty_like(pre)
    dh_all = np.empty_like(y)
    if cell == "mingru":
        z = _sigmoid(pre[..., :H])
        a = 1.0 - z
    else:
        f, i = _sigmoid(pre[..., :H]), _sigmoid(pre[..., H : 2 * H])
        fp, ip = f / (f + i), i / (f + i)
        a = fp
    for t in reversed(range(t_steps)):
        d = gy[t] + dh  # dL/dh_t = dL/dy_t + dL/dh_t via h_{t+1}
        dh_all[t] = d
        if cell == "mingru":
            # h_t = (1 - z) h_{t-1} + z g(u), dz/dk = z (1 - z)
            dpre[t, :, :H] = d * z[t] * a[t] * (g_[t] - hp[t])  # dL/dk = d z (1 - z) (g - h_{t-1})
            dpre[t, :, H:] = d * z[t] * dg[t]  # dL/du = d z g'(u)
        else:
            # f' = sigmoid(s), s = log f - log i: df'/ds = f' i', ds/dk_f = 1 - f, ds/dk_i = -(1 - i)
            ds = d * fp[t] * ip[t] * (hp[t] - g_[t])  # dL/ds = d f' i' (h_{t-1} - g)
            dpre[t, :, :H] = ds * (1.0 - f[t])  # dL/dk_f
            dpre[t, :, H : 2 * H] = -ds * (1.0 - i[t])  # dL/dk_i
            dpre[t, :, 2 * H :] = d * ip[t] * dg[t]  # dL/du = d i' g'(u)
        dh = a[t] * d  # dL/dh_{t-1} = a_t dL/dh_t
    dp2 = dpre.reshape(-1, G * H)
    return {
        "x": (dp2 @ cache.w_ih).reshape(cache.x.shape),  # dL/dx = dP W_ih
        "h0": dh,
        "w_ih": dp2.T @ cache.x.reshape(-1, cache.x.shape[2]),  # dL/dW_ih = sum dP^T x
        "b_ih": dp2.sum(axis=0) if cache.has_bias else None,  # dL/db_ih = sum dP
        "dh_all": dh_all,
    }


def mingru_forward(x: Any, h0: Any, w_ih: Any, b_ih: Any) -> tuple[Array, Array, Any]:
    """minGRU over a sequence. x (T, B, I); h0 (B, H) >= 0 or None; w_ih (2H, I) = [W_z; W_h];
    b_ih (2H,) or None. Returns y (T, B, H), h_n (B, H), cache (float64)."""
    return _forward("mingru", x, h0, w_ih, b_ih)


def mingru_backward(cache: Any, dy: Any, dh_n: Any = None) -> dict[str, Array | None]:
    """Backward of :func:`mingru_forward`: dy (T, B, H) or None, dh_n (B, H) or None. Returns
    "x" (T, B, I), "h0" (B, H), "w_ih" (2H, I), "b_ih" (2H,) or None, "dh_all" (T, B, H)."""
    return _backward("mingru", cache, dy, dh_n)


def minlstm_forward(x: Any, h0: Any, w_ih: Any, b_ih: Any) -> tuple[Array, Array, Any]:
    """minLSTM over a sequence. x (T, B, I); h0 (B, H) >= 0 or None; w_ih (3H, I) = [W_f; W_i; W_h];
    b_ih (3H,) or None. Returns y (T, B, H), h_n (B, H), cache (float64)."""
    return _forward("minlstm", x, h0, w_ih, b_ih)


def minlstm_backward(cache: Any, dy: Any, dh_n: Any = None) -> dict[str, Array | None]:
    """Backward of :func:`minlstm_forward`; same keys as :func:`mingru_backward` (w_ih (3H, I))."""
    return _backward("minlstm", cache, dy, dh_n)
