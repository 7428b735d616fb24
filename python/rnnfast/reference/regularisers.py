"""Float64 oracles of the LSTM and GRU with zoneout and variational recurrent dropout.

The random masks are arguments (explicit arrays), so each oracle is a deterministic function; the
kernels are checked against it with the same masks. Conventions of :mod:`rnnfast.reference`
throughout (PyTorch's layout and gate orders, float64 outputs, one Python loop over time,
derivatives beside the lines, ``lengths`` with packed-sequence semantics selected away with
``np.where``: a padded step carries the state whatever its masks hold, ``training=False`` returns no
cache). Masks receive no gradient. With every mask None both oracles are exactly
:func:`rnnfast.reference.lstm_forward` / :func:`rnnfast.reference.gru_forward`.

Variational recurrent dropout (Gal & Ghahramani 2016): one mask ``dropout_h`` (B, H) per sequence,
the same at every step, multiplies h_{t-1} where it enters W_hh, and only there (the state carried,
the GRU's z ⊙ h_{t-1} and the zoneout blend use the undropped h_{t-1}). Its values are used as
given: a dropout of rate p is a sample of {0, 1/(1-p)} (the 1/(1-p) scale included by the caller);
None (or ones) at evaluation. One mask serves every gate block (Keras's ``recurrent_dropout`` draws
one per block).

Zoneout (Krueger et al. 2017): each unit keeps its previous value where the mask is 1::

    h_t = m^h_t ⊙ h_{t-1} + (1 - m^h_t) ⊙ h~_t
    c_t = m^c_t ⊙ c_{t-1} + (1 - m^c_t) ⊙ c~_t      (the LSTM)

with h~_t, c~_t the cell's ordinary update from (h_{t-1}, c_{t-1}) (for the LSTM h~_t = o ⊙
tanh(c~_t), of the cell state before zoneout, as in the paper) and its own mask for c.
``zoneout_h``, ``zoneout_c`` are arrays broadcastable to (T, B, H): in training a sample of
Bernoulli(p) (1 = zone out, keep the old value); at evaluation the expectation, the scalar p. y_t is
the zoned-out h_t. (haste's ``zoneout_mask`` is 1 - m: a Bernoulli(1 - p) sample of units that
update.)

LSTM (a = W_ih x_t + W_hh (d ⊙ h_{t-1}) + b_ih + b_hh, d = dropout_h)::

    i, f, g, o = σ(a_i), σ(a_f), tanh(a_g), σ(a_o)
    c~_t = f ⊙ c_{t-1} + i ⊙ g        h~_t = o ⊙ tanh(c~_t)
    c_t = m^c_t ⊙ c_{t-1} + (1 - m^c_t) ⊙ c~_t
    h_t = m^h_t ⊙ h_{t-1} + (1 - m^h_t) ⊙ h~_t

GRU (PyTorch's, reset after; gi = W_ih x_t + b_ih, gh = W_hh (d ⊙ h_{t-1}) + b_hh)::

    r = σ(gi_r + gh_r)    z = σ(gi_z + gh_z)    n = tanh(gi_n + r ⊙ gh_n)
    h~_t = (1 - z) ⊙ n + z ⊙ h_{t-1}            h_t = m^h_t ⊙ h_{t-1} + (1 - m^h_t) ⊙ h~_t
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _grad_in, _mask, _params, _sigmoid, _state
from ._common import VariantCache, _broadcast, _lstm_gate_grads, _lstm_gates, _variant_cache

__all__ = [
    "gru_regularised_backward",
    "gru_regularised_forward",
    "lstm_regularised_backward",
    "lstm_regularised_forward",
]

Array = np.ndarray


# --------------------------------------------------------------------------------------------------
# LSTM
# --------------------------------------------------------------------------------------------------


def lstm_regularised_forward(
    x: Any,
    h0: Any,
    c0: Any,
    w_ih: Any,
    w_hh: Any,
    b_ih: Any,
    b_hh: Any,
    *,
    zoneout_h: Any = None,
    zoneout_c: Any = None,
    dropout_h: Any = None,
    lengths: Any = None,
    training: bool = True,
) -> tuple[Array, Array, Array, VariantCache | None]:
    """LSTM with zoneout on h and c and recurrent dropout on h_{t-1} (module docstring).

    Args: x (T, B, I); h0, c0 (B, H) or None; w_ih (4H, I); w_hh (4H, H); b_ih, b_hh (4H,) or None;
    zoneout_h, zoneout_c broadcastable to (T, B, H) or None (zeros: no zoneout); dropout_h
    broadcastable to (B, H) or None (ones: no dropout); lengths (B,) or None. Returns y (T, B, H),
    h_n, c_n (B, H), cache (extra: zoneout_h, zoneout_c (T, B, H), dropout_h (B, H), broadcast).
    All float64.
    """
    x, w_ih, w_hh, b_ih, b_hh, t_steps, batch, _, H = _params(x, w_ih, w_hh, b_ih, b_hh, 4)
    m_h = _broadcast("zoneout_h", zoneout_h, (t_steps, batch, H), 0.0)
    m_c = _broadcast("zoneout_c", zoneout_c, (t_steps, batch, H), 0.0)
    d = _broadcast("dropout_h", dropout_h, (batch, H), 1.0)
    h = _state("h0", h0, batch, H)
    cs = _state("c0", c0, batch, H)
    mask = _mask(lengths, t_steps, batch)
    bias = 0.0 if b_ih is None else b_ih + b_hh  # type: ignore[operator]

    y = np.zeros((t_steps, batch, H))
    hs = np.zeros((t_steps + 1, batch, H))
    css = np.zeros((t_steps + 1, batch, H))
    acts = np.zeros((t_steps, batch, 4 * H))
    hs[0], css[0] = h, cs
    for t in range(t_steps):
        a = x[t] @ w_ih.T + (d * h) @ w_hh.T + bias  # a_t = W_ih x_t + W_hh (d h_{t-1}) + b
        i, f, g, o = _lstm_gates(a, H)
        c_cand = f * cs + i * g  # c~_t = f c_{t-1} + i g
        h_cand = o * np.tanh(c_cand)  # h~_t = o tanh(c~_t)
        c_new = m_c[t] * cs + (1.0 - m_c[t]) * c_cand  # c_t = m^c c_{t-1} + (1 - m^c) c~_t
        h_new = m_h[t] * h + (1.0 - m_h[t]) * h_cand  # h_t = m^h h_{t-1} + (1 - m^h) h~_t
        v = mask[t][:, None] > 0.0  # (B, 1): True at valid steps
        cs = np.where(v, c_new, cs)  # padded steps carry (h, c) unchanged
        h = np.where(v, h_new, h)
        y[t] = np.where(v, h, 0.0)
        hs[t + 1], css[t + 1] = h, cs
        acts[t] = np.concatenate([i, f, g, o], axis=1)
    if not training:
        return y, h, cs, None
    cache = VariantCache(
        "lstm_regularised",
        "",
        x,
        w_ih,
        w_hh,
        b_ih,
        b_hh,
        mask,
        hs,
        css,
        acts,
        None,
        extra={"zoneout_h": m_h, "zoneout_c": m_c, "dropout_h": d},
    )
    return y, h.copy(), cs.copy(), cache


def lstm_regularised_backward(
    cache: Any, dy: Any, dh_n: Any = None, dc_n: Any = None
) -> dict[str, Array | None]:
    """Full BPTT through lstm_regularised_forward (the masks held fixed).

    Args: cache; dy (T, B, H) or None; dh_n, dc_n (B, H) or None. Returns dict of float64 arrays:
    x, h0, c0, w_ih, w_hh, b_ih, b_hh (None without bias), dh_all (T, B, H).
    """
    c = _variant_cache(cache, "lstm_regularised")
    t_steps, batch, _ = c.x.shape
    H = c.w_hh.shape[1]
    assert c.c is not None
    m_h, m_c, d = c.extra["zoneout_h"], c.extra["zoneout_c"], c.extra["dropout_h"]
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
        tc = np.tanh(f * c_prev + i * g)  # tanh(c~_t)
        dh = np.where(v, dh + dy[t], dh)  # dL/dh_t = dL/dy_t + dL/dh_t via step t+1
        dh_all[t] = np.where(v, dh, 0.0)
        dh_cand = dh * (1.0 - m_h[t])  # dL/dh~_t = dL/dh_t (1 - m^h)
        # dL/dc~_t = dL/dc_t (1 - m^c) + dL/dh~_t o (1 - tanh^2 c~_t)
        dc_cand = dc * (1.0 - m_c[t]) + dh_cand * o * (1.0 - tc**2)
        da = _lstm_gate_grads(dc_cand, dh_cand * tc, c_prev, i, f, g, o)  # dL/do = dL/dh~ tanh c~
        da = np.where(v, da, 0.0)  # padded steps do not pass through the cell
        dx[t] = da @ c.w_ih  # dL/dx_t = dL/da_t W_ih
        dw_ih += da.T @ np.where(v, c.x[t], 0.0)  # dL/dW_ih += dL/da_t^T x_t (valid rows only)
        # dL/dW_hh += dL/da_t^T (d h_{t-1}) (valid rows only)
        dw_hh += da.T @ np.where(v, d * c.h[t], 0.0)
        db += da.sum(axis=0)  # dL/db_ih = dL/db_hh += sum_b dL/da_t
        # dL/dc_{t-1} = dL/dc_t m^c + dL/dc~_t f; padded: carried
        dc = np.where(v, dc * m_c[t] + dc_cand * f, dc)
        # dL/dh_{t-1} = dL/dh_t m^h + (dL/da_t W_hh) d; padded: carried
        dh = np.where(v, dh * m_h[t] + (da @ c.w_hh) * d, dh)
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


def gru_regularised_forward(
    x: Any,
    h0: Any,
    w_ih: Any,
    w_hh: Any,
    b_ih: Any,
    b_hh: Any,
    *,
    zoneout_h: Any = None,
    dropout_h: Any = None,
    lengths: Any = None,
    training: bool = True,
) -> tuple[Array, Array, VariantCache | None]:
    """GRU with zoneout on h and recurrent dropout on h_{t-1} (module docstring).

    Args: x (T, B, I); h0 (B, H) or None; w_ih (3H, I); w_hh (3H, H); b_ih, b_hh (3H,) or None;
    zoneout_h broadcastable to (T, B, H) or None (zeros); dropout_h broadcastable to (B, H) or
    None (ones); lengths (B,) or None. Returns y (T, B, H), h_n (B, H), cache (ghn = gh_n =
    W_hn (d h_{t-1}) + b_hn; extra: zoneout_h (T, B, H), dropout_h (B, H)). All float64.
    """
    x, w_ih, w_hh, b_ih, b_hh, t_steps, batch, _, H = _params(x, w_ih, w_hh, b_ih, b_hh, 3)
    m_h = _broadcast("zoneout_h", zoneout_h, (t_steps, batch, H), 0.0)
    d = _broadcast("dropout_h", dropout_h, (batch, H), 1.0)
    h = _state("h0", h0, batch, H)
    mask = _mask(lengths, t_steps, batch)
    bi = 0.0 if b_ih is None else b_ih
    bh = 0.0 if b_hh is None else b_hh

    y = np.zeros((t_steps, batch, H))
    hs = np.zeros((t_steps + 1, batch, H))
    acts = np.zeros((t_steps, batch, 3 * H))
    ghns = np.zeros((t_steps, batch, H))
    hs[0] = h
    for t in range(t_steps):
        gi = x[t] @ w_ih.T + bi  # W_ih x_t + b_ih (3H wide: r, z, n)
        gh = (d * h) @ w_hh.T + bh  # W_hh (d h_{t-1}) + b_hh (3H wide: r, z, n)
        r = _sigmoid(gi[:, 0:H] + gh[:, 0:H])
        z = _sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
        ghn = gh[:, 2 * H : 3 * H]
        n = np.tanh(gi[:, 2 * H : 3 * H] + r * ghn)  # n = tanh(gi_n + r gh_n)
        h_cand = (1.0 - z) * n + z * h  # h~_t = (1 - z) n + z h_{t-1} (undropped h_{t-1})
        h_new = m_h[t] * h + (1.0 - m_h[t]) * h_cand  # h_t = m^h h_{t-1} + (1 - m^h) h~_t
        v = mask[t][:, None] > 0.0  # (B, 1): True at valid steps
        h = np.where(v, h_new, h)  # padded steps carry the state unchanged
        y[t] = np.where(v, h, 0.0)
        hs[t + 1] = h
        acts[t] = np.concatenate([r, z, n], axis=1)
        ghns[t] = ghn
    if not training:
        return y, h, None
    cache = VariantCache(
        "gru_regularised",
        "",
        x,
        w_ih,
        w_hh,
        b_ih,
        b_hh,
        mask,
        hs,
        None,
        acts,
        ghns,
        extra={"zoneout_h": m_h, "dropout_h": d},
    )
    return y, h.copy(), cache


def gru_regularised_backward(cache: Any, dy: Any, dh_n: Any = None) -> dict[str, Array | None]:
    """Full BPTT through gru_regularised_forward (the masks held fixed).

    Args: cache; dy (T, B, H) or None; dh_n (B, H) or None. Returns dict of float64 arrays: x, h0,
    w_ih (3H, I), w_hh (3H, H), b_ih, b_hh (3H,) or None, dh_all (T, B, H).
    """
    c = _variant_cache(cache, "gru_regularised")
    t_steps, batch, _ = c.x.shape
    H = c.w_hh.shape[1]
    assert c.ghn is not None
    m_h, d = c.extra["zoneout_h"], c.extra["dropout_h"]
    dy = _grad_in("dy", dy, (t_steps, batch, H))
    dh = _grad_in("dh_n", dh_n, (batch, H))

    dx = np.zeros_like(c.x)
    dw_ih = np.zeros_like(c.w_ih)
    dw_hh = np.zeros_like(c.w_hh)
    db_ih, db_hh = np.zeros(3 * H), np.zeros(3 * H)
    dh_all = np.zeros((t_steps, batch, H))
    for t in reversed(range(t_steps)):
        v = c.mask[t][:, None] > 0.0  # (B, 1): True at valid steps
        r, z, n = (c.act[t][:, k * H : (k + 1) * H] for k in range(3))
        h_prev = c.h[t]
        dh = np.where(v, dh + dy[t], dh)  # dL/dh_t = dL/dy_t + dL/dh_t via step t+1
        dh_all[t] = np.where(v, dh, 0.0)
        dh_cand = dh * (1.0 - m_h[t])  # dL/dh~_t = dL/dh_t (1 - m^h)
        dan = dh_cand * (1.0 - z) * (1.0 - n**2)  # dL/da_n = dL/dh~_t (1 - z) (1 - n^2)
        dar = dan * c.ghn[t] * r * (1.0 - r)  # dL/da_r = dL/da_n gh_n r (1 - r)
        daz = dh_cand * (h_prev - n) * z * (1.0 - z)  # dL/da_z = dL/dh~_t (h_{t-1} - n) z (1 - z)
        dgi = np.where(v, np.concatenate([dar, daz, dan], axis=1), 0.0)  # dL/dgi (valid rows)
        dgh = np.where(v, np.concatenate([dar, daz, dan * r], axis=1), 0.0)  # dL/dgh; n-part * r
        dx[t] = dgi @ c.w_ih  # dL/dx_t = dL/dgi W_ih
        dw_ih += dgi.T @ np.where(v, c.x[t], 0.0)  # dL/dW_ih += dL/dgi^T x_t (valid rows only)
        dw_hh += dgh.T @ np.where(v, d * h_prev, 0.0)  # dL/dW_hh += dL/dgh^T (d h_{t-1})
        db_ih += dgi.sum(axis=0)  # dL/db_ih += sum_b dL/dgi
        db_hh += dgh.sum(axis=0)  # dL/db_hh += sum_b dL/dgh
        # dL/dh_{t-1} = dL/dh_t m^h + dL/dh~_t z + (dL/dgh W_hh) d; padded: carried
        dh = np.where(v, dh * m_h[t] + dh_cand * z + (dgh @ c.w_hh) * d, dh)
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
