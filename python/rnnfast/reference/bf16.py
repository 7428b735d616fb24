"""bf16 semantics in float64 terms: the oracle of the ``precision="bf16"`` kernels (issue 18).

bf16 keeps float32's sign and 8 exponent bits and the top 7 of its 23 mantissa bits (8 significant
bits, unit roundoff 2**-8). :func:`round_bf16` rounds float32 to the nearest bf16 value, ties to even,
bit for bit like the C++ core (``cpp/include/rnnfast/bf16.hpp``): NaN stays NaN, +-Inf stays +-Inf,
and finite values from the midpoint above bf16's largest finite value (``0x7f7f``) round to Inf.

What a bf16 kernel computes, here in float64 as the error-free ideal:

* every operand of a product is rounded to bf16 first: x, h_{t-1} (the recurrent product's left
  operand), W_ih, W_hh, and in backward dL/dgates, x and h_{t-1} of the weight GEMMs;
* each product of two bf16 values is exact (also in float32: 8 + 8 significant bits), and sums are
  exact here (float64; the kernels accumulate in float32, an error of at most ~K * 2**-24 relative
  to sum |terms| for K terms);
* everything else (biases, the cells' pointwise math, c_t, the gradients' direct paths) is ordinary
  float64 here, float32 in the kernels.

So the kernels differ from this oracle by float32 rounding only (plus, rarely, an operand that lands
on the other side of a bf16 rounding boundary because its float32 value differs from the float64
one in the last bits); they differ from the float32 kernels by the bf16 rounding of the operands.

T = time steps, B = batch, I = input size, H = hidden size, G = gates (1 rnn, 4 lstm, 3 gru).
Cells: ``rnn`` (tanh / relu), ``lstm`` (i, f, g, o), ``gru`` (r, z, n; PyTorch's, b_hn inside r *
(...)). Full-length batches (no ``lengths``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "bf16_bits",
    "from_bf16_bits",
    "matmul_bf16",
    "round_bf16",
    "sequence_backward_bf16",
    "sequence_forward_bf16",
]

Array = np.ndarray
_GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def bf16_bits(x: Any) -> Array:
    """float32 -> bf16 bit patterns (uint16, same shape), round to nearest even.

    x is converted to float32 first (a float64 input is rounded to float32, then to bf16).
    ``bits += 0x7fff + ((bits >> 16) & 1)`` then the upper half, NaN kept NaN (quieted, sign kept).
    """
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    out = np.where(nan, (u >> 16) | 0x0040, rounded)
    return out.astype(np.uint16)


def from_bf16_bits(b: Any) -> Array:
    """bf16 bit patterns (uint16) -> their float32 values, exactly (same shape)."""
    b = np.ascontiguousarray(b, dtype=np.uint16)
    return (b.astype(np.uint32) << 16).view(np.float32)


def round_bf16(x: Any) -> Array:
    """x (any shape) rounded to the nearest bf16 value, ties to even, as float32 (same shape)."""
    return from_bf16_bits(bf16_bits(x))


def _r(x: Array) -> Array:
    """float64 view of the bf16 rounding of x (through float32, as the kernels see their operands)."""
    return round_bf16(x).astype(np.float64)


def matmul_bf16(a: Any, b: Any) -> Array:
    """a @ b on bf16-rounded operands, exact products and float64 sums. a (M, K), b (K, N) -> (M, N)."""
    return _r(np.asarray(a)) @ _r(np.asarray(b))


def _sigmoid(a: Array) -> Array:
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def _unpack(cell: str, w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any) -> tuple[Array, ...]:
    if cell not in _GATES:
        raise ValueError(f"cell: expected one of {sorted(_GATES)}, got {cell!r}")
    w_ih = np.asarray(w_ih, dtype=np.float64)
    w_hh = np.asarray(w_hh, dtype=np.float64)
    gh = w_hh.shape[0]
    bi = np.zeros(gh) if b_ih is None else np.asarray(b_ih, dtype=np.float64)
    bh = np.zeros(gh) if b_hh is None else np.asarray(b_hh, dtype=np.float64)
    return w_ih, w_hh, bi, bh


def sequence_forward_bf16(
    cell: str,
    x: Any,
    h0: Any,
    c0: Any,
    w_ih: Any,
    w_hh: Any,
    b_ih: Any = None,
    b_hh: Any = None,
    nonlinearity: str = "tanh",
) -> tuple[Array, Array, Array | None, dict[str, Any]]:
    """Forward with bf16 products: returns y (T, B, H), h_n, c_n (B, H; c_n None but for lstm), cache.

    x (T, B, I); h0, c0 (B, H) or None (zeros); w_ih (G*H, I); w_hh (G*H, H); b_ih, b_hh (G*H,) or
    None. All results float64. The cache holds what :func:`sequence_backward_bf16` needs.
    """
    w_ih, w_hh, bi, bh = _unpack(cell, w_ih, w_hh, b_ih, b_hh)
    x = np.asarray(x, dtype=np.float64)
    t_steps, batch, _ = x.shape
    hidden = w_hh.shape[1]
    h = np.zeros((batch, hidden)) if h0 is None else np.asarray(h0, dtype=np.float64).copy()
    c = np.zeros((batch, hidden)) if c0 is None else np.asarray(c0, dtype=np.float64).copy()
    gx_all = _r(x.reshape(t_steps * batch, -1)) @ _r(w_ih).T  # bf16(x) bf16(W_ih)^T, exact sums
    gx_all = gx_all.reshape(t_steps, batch, -1)
    ys, hs, cs, acts = [], [h], [c], []
    for t in range(t_steps):
        gh = _r(h) @ _r(w_hh).T  # bf16(h_{t-1}) bf16(W_hh)^T
        if cell == "rnn":
            a = gx_all[t] + bi + gh + bh
            h = np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0.0)
            act: Any = h
        elif cell == "lstm":
            a = gx_all[t] + bi + gh + bh
            i, f, g, o = np.split(a, 4, axis=1)
            i, f, g, o = _sigmoid(i), _sigmoid(f), np.tanh(g), _sigmoid(o)
            c = f * c + i * g  # c_t = f c_{t-1} + i g
            h = o * np.tanh(c)  # h_t = o tanh(c_t)
            act = (i, f, g, o)
        else:
            gi = gx_all[t] + bi
            ghb = gh + bh
            r = _sigmoid(gi[:, :hidden] + ghb[:, :hidden])
            z = _sigmoid(gi[:, hidden : 2 * hidden] + ghb[:, hidden : 2 * hidden])
            n = np.tanh(gi[:, 2 * hidden :] + r * ghb[:, 2 * hidden :])
            act = (r, z, n, ghb[:, 2 * hidden :])
            h = (1.0 - z) * n + z * h  # h_t = (1 - z) n + z h_{t-1}
        ys.append(h)
        hs.append(h)
        cs.append(c)
        acts.append(act)
    cache = {
        "cell": cell,
        "nl": nonlinearity,
        "x": x,
        "w_ih": w_ih,
        "w_hh": w_hh,
        "hs": hs,
        "cs": cs,
    }
    cache["acts"] = acts
    y = np.stack(ys) if ys else np.zeros((0, batch, hidden))
    return y, h, (c if cell == "lstm" else None), cache


def sequence_backward_bf16(
    cache: dict[str, Any], dy: Any, dh_n: Any = None, dc_n: Any = None
) -> dict[str, Array | None]:
    """Backward of :func:`sequence_forward_bf16`: float64 gradients x, h0, c0, w_ih, w_hh, b_ih, b_hh.

    dy (T, B, H); dh_n, dc_n (B, H) or None. bf16 operands in every product: dh_{t-1} gets
    bf16(dgates) bf16(W_hh); dW_hh = bf16(dgates)^T bf16(h_{t-1}); dW_ih = bf16(dgates_in)^T bf16(x);
    dx = bf16(dgates_in) bf16(W_ih). The pointwise backward and the bias sums are exact float64.
    """
    cell, x, w_ih, w_hh = cache["cell"], cache["x"], cache["w_ih"], cache["w_hh"]
    hs, cs, acts = cache["hs"], cache["cs"], cache["acts"]
    dy = np.asarray(dy, dtype=np.float64)
    t_steps, batch, _ = x.shape
    hidden = w_hh.shape[1]
    dh = np.zeros((batch, hidden)) if dh_n is None else np.asarray(dh_n, dtype=np.float64).copy()
    dc = np.zeros((batch, hidden)) if dc_n is None else np.asarray(dc_n, dtype=np.float64).copy()
    dgh_all = np.zeros((t_steps, batch, w_hh.shape[0]))  # dL/d(W_hh h_{t-1} + b_hh)
    dgi_all = np.zeros_like(dgh_all)  # dL/d(W_ih x_t + b_ih)
    for t in reversed(range(t_steps)):
        dh = dh + dy[t]  # dL/dh_t = dL/dy_t + dL/dh_t via step t+1
        h_prev = hs[t]
        direct = np.zeros_like(dh)
        if cell == "rnn":
            y = acts[t]
            da = dh * ((1.0 - y * y) if cache["nl"] == "tanh" else (y > 0.0))
            dgh = dgi = da
        elif cell == "lstm":
            i, f, g, o = acts[t]
            tc = np.tanh(cs[t + 1])
            dct = dc + dh * o * (1.0 - tc * tc)  # dL/dc_t, both paths
            da = np.concatenate(
                [
                    dct * g * i * (1 - i),
                    dct * cs[t] * f * (1 - f),
                    dct * i * (1 - g * g),
                    dh * tc * o * (1 - o),
                ],
                axis=1,
            )
            dc = dct * f  # dL/dc_{t-1} = dL/dc_t f
            dgh = dgi = da
        else:
            r, z, n, ghn = acts[t]
            dn = dh * (1.0 - z) * (1.0 - n * n)  # dL/d(pre-activation of n)
            dz = dh * (h_prev - n) * z * (1.0 - z)
            dr = dn * ghn * r * (1.0 - r)
            direct = dh * z  # the z h_{t-1} path
            dgi = np.concatenate([dr, dz, dn], axis=1)
            dgh = np.concatenate([dr, dz, dn * r], axis=1)
        dh = direct + _r(dgh) @ _r(w_hh)  # dL/dh_{t-1} = direct + bf16(dgates) bf16(W_hh)
        dgh_all[t] = dgh
        dgi_all[t] = dgi
    rows = t_steps * batch
    dgh2, dgi2 = dgh_all.reshape(rows, -1), dgi_all.reshape(rows, -1)
    h_prev_all = np.stack(hs[:-1]).reshape(rows, hidden) if t_steps else np.zeros((0, hidden))
    x2 = x.reshape(rows, -1)
    return {
        "x": (_r(dgi2) @ _r(w_ih)).reshape(x.shape),  # dL/dx_t = bf16(dgates) bf16(W_ih)
        "h0": dh,
        "c0": dc if cell == "lstm" else None,
        "w_ih": _r(dgi2).T @ _r(x2),  # dL/dW_ih = sum_t bf16(dgates)^T bf16(x_t)
        "w_hh": _r(dgh2).T @ _r(h_prev_all),  # dL/dW_hh = sum_t bf16(dgates)^T bf16(h_{t-1})
        "b_ih": dgi2.sum(axis=0),
        "b_hh": dgh2.sum(axis=0),
    }
