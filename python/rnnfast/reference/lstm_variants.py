"""Float64 oracles of three LSTM variants: peephole, projection, layer-normalised.

Conventions of :mod:`rnnfast.reference` throughout: PyTorch's layout and gate order (i, f, g, o),
float64 outputs whatever the input dtype, one Python loop over time, the derivative beside the line
that computes it, ``lengths`` with packed-sequence semantics (padded steps selected away with
``np.where``, never multiplied by 0), ``training=False`` returns no cache. Each ``*_backward`` is
full BPTT of L = <y, dy> + <h_n, dh_n> + <c_n, dc_n> (None seeds are zeros) and returns the
gradient of every input and parameter by its argument name, plus dh_all (T, B, ·) = total dL/dh_t
(zero rows at padded steps). σ = logistic sigmoid, ⊙ = elementwise; a = W_ih x_t + W_hh h_{t-1} +
b_ih + b_hh (4H wide, blocks a_i, a_f, a_g, a_o) unless stated otherwise.

Peephole LSTM (Gers & Schmidhuber 2000; the ONNX ``LSTM`` operator with its ``P`` input)::

    i = σ(a_i + p_i ⊙ c_{t-1})      f = σ(a_f + p_f ⊙ c_{t-1})      g = tanh(a_g)
    c_t = f ⊙ c_{t-1} + i ⊙ g
    o = σ(a_o + p_o ⊙ c_t)           h_t = o ⊙ tanh(c_t)

  w_peep (3H,) = [p_i, p_f, p_o] (ONNX's ``P`` holds [p_i, p_o, p_f]; its W, R, B gate blocks are
  i, o, f, c).

LSTM with projection (``torch.nn.LSTM(proj_size=P)``, Sak et al. 2014)::

    i, f, g, o from a = W_ih x_t + W_hh h_{t-1} + b_ih + b_hh   (h_{t-1} is (B, P))
    c_t = f ⊙ c_{t-1} + i ⊙ g                                  (c is (B, H))
    h_t = W_hr (o ⊙ tanh(c_t))                                 (h is (B, P))

  w_ih (4H, I), w_hh (4H, P), w_hr (P, H); h0, h_n (B, P), c0, c_n (B, H), y (T, B, P). PyTorch's
  state_dict names: weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0, weight_hr_l0.

Layer-normalised LSTM (haste's ``LayerNormLSTM``, https://github.com/lmnt-com/haste/issues/1), with
LN(v; γ, β) = γ ⊙ (v - mean(v)) / sqrt(var(v) + 1e-5) + β over the row (biased variance; see
:mod:`rnnfast.reference._common`)::

    a = LN(W_ih x_t; gamma_ih, 0) + b_ih + LN(W_hh h_{t-1}; gamma_hh, 0) + b_hh   (LNs over 4H)
    i, f, g, o = σ(a_i), σ(a_f), tanh(a_g), σ(a_o)
    c_t = f ⊙ c_{t-1} + i ⊙ g                       (the state carried is c_t, unnormalised)
    h_t = o ⊙ tanh(LN(c_t; gamma_c, beta_c))         (LN over the H entries of c_t)

  Parameters: w_ih (4H, I), w_hh (4H, H), b_ih, b_hh (4H,) or None (both added after the
  normalisations, where a bias inside an LN would be partly cancelled; only their sum matters, as
  in the LSTM), gamma_ih (4H,), gamma_hh (4H,), gamma_c (H,), beta_c (H,): the LSTM's parameters
  in its order, then the gains and the shift. haste's names: kernel = w_ih.T, recurrent_kernel =
  w_hh.T, bias = b_ih + b_hh (haste has one), gamma[0] = gamma_ih, gamma[1] = gamma_hh, gamma_h =
  gamma_c, beta_h = beta_c, with haste's gate blocks in the order i, g, f, o (LN statistics do not
  depend on the order).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import (
    _as_f64,
    _bias,
    _check_shape,
    _grad_in,
    _mask,
    _params,
    _sigmoid,
    _state,
)
from ._common import (
    VariantCache,
    _layer_norm,
    _layer_norm_backward,
    _lstm_gate_grads,
    _lstm_gates,
    _variant_cache,
    _vector,
    _vsum,
    _x_sizes,
)

__all__ = [
    "lstm_layernorm_backward",
    "lstm_layernorm_forward",
    "lstm_peephole_backward",
    "lstm_peephole_forward",
    "lstm_proj_backward",
    "lstm_proj_forward",
]

Array = np.ndarray


# --------------------------------------------------------------------------------------------------
# peephole LSTM
# --------------------------------------------------------------------------------------------------


def lstm_peephole_forward(
    x: Any,
    h0: Any,
    c0: Any,
    w_ih: Any,
    w_hh: Any,
    b_ih: Any,
    b_hh: Any,
    w_peep: Any,
    *,
    lengths: Any = None,
    training: bool = True,
) -> tuple[Array, Array, Array, VariantCache | None]:
    """Peephole LSTM (module docstring): i, f see c_{t-1}, o sees c_t.

    Args: x (T, B, I); h0, c0 (B, H) or None (zeros); w_ih (4H, I); w_hh (4H, H); b_ih, b_hh (4H,)
    or None; w_peep (3H,) = [p_i, p_f, p_o]; lengths (B,) or None. Returns y (T, B, H), h_n, c_n
    (B, H), cache (extra: w_peep). All float64.
    """
    x, w_ih, w_hh, b_ih, b_hh, t_steps, batch, _, H = _params(x, w_ih, w_hh, b_ih, b_hh, 4)
    w_peep = _vector("w_peep", w_peep, 3 * H)
    p_i, p_f, p_o = w_peep[0:H], w_peep[H : 2 * H], w_peep[2 * H : 3 * H]
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
        a = x[t] @ w_ih.T + h @ w_hh.T + bias  # a_t = W_ih x_t + W_hh h_{t-1} + b (4H wide)
        i = _sigmoid(a[:, 0:H] + p_i * cs)  # i = σ(a_i + p_i c_{t-1})
        f = _sigmoid(a[:, H : 2 * H] + p_f * cs)  # f = σ(a_f + p_f c_{t-1})
        g = np.tanh(a[:, 2 * H : 3 * H])
        c_new = f * cs + i * g  # c_t = f c_{t-1} + i g
        o = _sigmoid(a[:, 3 * H : 4 * H] + p_o * c_new)  # o = σ(a_o + p_o c_t): the new state
        h_new = o * np.tanh(c_new)  # h_t = o tanh(c_t)
        v = mask[t][:, None] > 0.0  # (B, 1): True at valid steps
        cs = np.where(v, c_new, cs)  # padded steps carry (h, c) unchanged
        h = np.where(v, h_new, h)
        y[t] = np.where(v, h, 0.0)
        hs[t + 1], css[t + 1] = h, cs
        acts[t] = np.concatenate([i, f, g, o], axis=1)
    if not training:
        return y, h, cs, None
    cache = VariantCache(
        "lstm_peephole",
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
        extra={"w_peep": w_peep},
    )
    return y, h.copy(), cs.copy(), cache


def lstm_peephole_backward(
    cache: Any, dy: Any, dh_n: Any = None, dc_n: Any = None
) -> dict[str, Array | None]:
    """Full BPTT through lstm_peephole_forward.

    Args: cache; dy (T, B, H) or None; dh_n, dc_n (B, H) or None. Returns dict of float64 arrays:
    x, h0, c0, w_ih, w_hh, b_ih, b_hh (None without bias), w_peep (3H,), dh_all (T, B, H).
    """
    c = _variant_cache(cache, "lstm_peephole")
    t_steps, batch, _ = c.x.shape
    H = c.w_hh.shape[1]
    assert c.c is not None
    w_peep = c.extra["w_peep"]
    p_i, p_f, p_o = w_peep[0:H], w_peep[H : 2 * H], w_peep[2 * H : 3 * H]
    dy = _grad_in("dy", dy, (t_steps, batch, H))
    dh = _grad_in("dh_n", dh_n, (batch, H))
    dc = _grad_in("dc_n", dc_n, (batch, H))

    dx = np.zeros_like(c.x)
    dw_ih = np.zeros_like(c.w_ih)
    dw_hh = np.zeros_like(c.w_hh)
    db = np.zeros(4 * H)
    dp_i, dp_f, dp_o = np.zeros(H), np.zeros(H), np.zeros(H)
    dh_all = np.zeros((t_steps, batch, H))
    for t in reversed(range(t_steps)):
        v = c.mask[t][:, None] > 0.0  # (B, 1): True at valid steps
        i, f, g, o = (c.act[t][:, k * H : (k + 1) * H] for k in range(4))
        c_prev = c.c[t]
        c_t = f * c_prev + i * g  # the step's own (unmasked) c_t
        tc = np.tanh(c_t)
        dh = np.where(v, dh + dy[t], dh)  # dL/dh_t = dL/dy_t + dL/dh_t via step t+1
        dh_all[t] = np.where(v, dh, 0.0)
        dao = dh * tc * o * (1.0 - o)  # dL/da_o = dL/dh_t tanh(c_t) o (1 - o)
        # dL/dc_t = via step t+1 + via h_t (dL/dh_t o (1 - tanh^2 c_t)) + via o's peephole (p_o)
        dct = dc + dh * o * (1.0 - tc**2) + dao * p_o
        da = _lstm_gate_grads(dct, dh * tc, c_prev, i, f, g, o)
        da = np.where(v, da, 0.0)  # padded steps do not pass through the cell
        dai, daf = da[:, 0:H], da[:, H : 2 * H]
        dx[t] = da @ c.w_ih  # dL/dx_t = dL/da_t W_ih
        dw_ih += da.T @ np.where(v, c.x[t], 0.0)  # dL/dW_ih += dL/da_t^T x_t (valid rows only)
        dw_hh += da.T @ np.where(v, c.h[t], 0.0)  # dL/dW_hh += dL/da_t^T h_{t-1} (valid rows only)
        db += da.sum(axis=0)  # dL/db_ih = dL/db_hh += sum_b dL/da_t
        dp_i += _vsum(v, dai * c_prev)  # dL/dp_i += sum_b dL/da_i c_{t-1}
        dp_f += _vsum(v, daf * c_prev)  # dL/dp_f += sum_b dL/da_f c_{t-1}
        dp_o += _vsum(v, dao * c_t)  # dL/dp_o += sum_b dL/da_o c_t
        # dL/dc_{t-1} = dL/dc_t f + dL/da_i p_i + dL/da_f p_f (i's and f's peepholes); padded: carried
        dc = np.where(v, dct * f + dai * p_i + daf * p_f, dc)
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
        "w_peep": np.concatenate([dp_i, dp_f, dp_o]),
        "dh_all": dh_all,
    }


# --------------------------------------------------------------------------------------------------
# LSTM with projection
# --------------------------------------------------------------------------------------------------


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
) -> tuple[Array, Array, Array, VariantCache | None]:
    """LSTM with projection (torch.nn.LSTM(proj_size=P)): h_t = W_hr (o ⊙ tanh(c_t)).

    Args: x (T, B, I); h0 (B, P) or None; c0 (B, H) or None; w_ih (4H, I); w_hh (4H, P); b_ih,
    b_hh (4H,) or None; w_hr (P, H); lengths (B,) or None. Returns y (T, B, P), h_n (B, P), c_n
    (B, H), cache (h (T+1, B, P), c (T+1, B, H); extra: w_hr). All float64.
    """
    x = _as_f64("x", x)
    w_ih = _as_f64("w_ih", w_ih)
    w_hh = _as_f64("w_hh", w_hh)
    w_hr = _as_f64("w_hr", w_hr)
    t_steps, batch, n_in = _x_sizes(x)
    if w_hh.ndim != 2 or w_hh.shape[0] % 4 != 0 or w_hh.shape[0] == 0:
        raise ValueError(f"w_hh: expected shape (4*H, P) with H, P >= 1, got {w_hh.shape}")
    H = w_hh.shape[0] // 4  # hidden size from w_hh's rows, projection size from w_hr's
    if w_hr.ndim != 2 or w_hr.shape[0] == 0 or w_hr.shape[1] != H:
        raise ValueError(f"w_hr: expected shape (P, H) = (P, {H}) with P >= 1, got {w_hr.shape}")
    P = w_hr.shape[0]
    _check_shape("w_hh", w_hh, (4 * H, P))
    _check_shape("w_ih", w_ih, (4 * H, n_in))
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih, b_hh: expected both arrays or both None, got one of each")
    b_ih = _bias("b_ih", b_ih, 4 * H)
    b_hh = _bias("b_hh", b_hh, 4 * H)
    h = _state("h0", h0, batch, P)
    cs = _state("c0", c0, batch, H)
    mask = _mask(lengths, t_steps, batch)
    bias = 0.0 if b_ih is None else b_ih + b_hh  # type: ignore[operator]

    y = np.zeros((t_steps, batch, P))
    hs = np.zeros((t_steps + 1, batch, P))
    css = np.zeros((t_steps + 1, batch, H))
    acts = np.zeros((t_steps, batch, 4 * H))
    hs[0], css[0] = h, cs
    for t in range(t_steps):
        a = x[t] @ w_ih.T + h @ w_hh.T + bias  # a_t = W_ih x_t + W_hh h_{t-1} + b (4H wide)
        i, f, g, o = _lstm_gates(a, H)
        c_new = f * cs + i * g  # c_t = f c_{t-1} + i g
        h_new = (o * np.tanh(c_new)) @ w_hr.T  # h_t = W_hr (o tanh(c_t))   (B, P)
        v = mask[t][:, None] > 0.0  # (B, 1): True at valid steps
        cs = np.where(v, c_new, cs)  # padded steps carry (h, c) unchanged
        h = np.where(v, h_new, h)
        y[t] = np.where(v, h, 0.0)
        hs[t + 1], css[t + 1] = h, cs
        acts[t] = np.concatenate([i, f, g, o], axis=1)
    if not training:
        return y, h, cs, None
    cache = VariantCache(
        "lstm_proj",
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
        extra={"w_hr": w_hr},
    )
    return y, h.copy(), cs.copy(), cache


def lstm_proj_backward(
    cache: Any, dy: Any, dh_n: Any = None, dc_n: Any = None
) -> dict[str, Array | None]:
    """Full BPTT through lstm_proj_forward.

    Args: cache; dy (T, B, P) or None; dh_n (B, P) or None; dc_n (B, H) or None. Returns dict of
    float64 arrays: x, h0 (B, P), c0 (B, H), w_ih, w_hh (4H, P), b_ih, b_hh (None without bias),
    w_hr (P, H), dh_all (T, B, P).
    """
    c = _variant_cache(cache, "lstm_proj")
    t_steps, batch, _ = c.x.shape
    w_hr = c.extra["w_hr"]
    P, H = w_hr.shape
    assert c.c is not None
    dy = _grad_in("dy", dy, (t_steps, batch, P))
    dh = _grad_in("dh_n", dh_n, (batch, P))
    dc = _grad_in("dc_n", dc_n, (batch, H))

    dx = np.zeros_like(c.x)
    dw_ih = np.zeros_like(c.w_ih)
    dw_hh = np.zeros_like(c.w_hh)
    dw_hr = np.zeros_like(w_hr)
    db = np.zeros(4 * H)
    dh_all = np.zeros((t_steps, batch, P))
    for t in reversed(range(t_steps)):
        v = c.mask[t][:, None] > 0.0  # (B, 1): True at valid steps
        i, f, g, o = (c.act[t][:, k * H : (k + 1) * H] for k in range(4))
        c_prev = c.c[t]
        tc = np.tanh(f * c_prev + i * g)  # tanh(c_t) of the step's own (unmasked) c_t
        dh = np.where(v, dh + dy[t], dh)  # dL/dh_t = dL/dy_t + dL/dh_t via step t+1   (B, P)
        dh_all[t] = np.where(v, dh, 0.0)
        # dL/dW_hr += dL/dh_t^T m_t, m_t = o tanh(c_t) (valid rows only)
        dw_hr += dh_all[t].T @ np.where(v, o * tc, 0.0)
        dm = dh @ w_hr  # dL/dm_t = dL/dh_t W_hr   (B, H)
        dct = dc + dm * o * (1.0 - tc**2)  # dL/dc_t = via step t+1 + dL/dm_t o (1 - tanh^2 c_t)
        da = _lstm_gate_grads(dct, dm * tc, c_prev, i, f, g, o)  # dL/do = dL/dm_t tanh(c_t)
        da = np.where(v, da, 0.0)  # padded steps do not pass through the cell
        dx[t] = da @ c.w_ih  # dL/dx_t = dL/da_t W_ih
        dw_ih += da.T @ np.where(v, c.x[t], 0.0)  # dL/dW_ih += dL/da_t^T x_t (valid rows only)
        dw_hh += da.T @ np.where(v, c.h[t], 0.0)  # dL/dW_hh += dL/da_t^T h_{t-1} (valid rows only)
        db += da.sum(axis=0)  # dL/db_ih = dL/db_hh += sum_b dL/da_t
        dc = np.where(v, dct * f, dc)  # dL/dc_{t-1} = dL/dc_t f; padded: carried
        dh = np.where(v, da @ c.w_hh, dh)  # dL/dh_{t-1} = dL/da_t W_hh   (B, P); padded: carried
    has_bias = c.b_ih is not None
    return {
        "x": dx,
        "h0": dh,
        "c0": dc,
        "w_ih": dw_ih,
        "w_hh": dw_hh,
        "b_ih": db.copy() if has_bias else None,
        "b_hh": db.copy() if has_bias else None,
        "w_hr": dw_hr,
        "dh_all": dh_all,
    }


# --------------------------------------------------------------------------------------------------
# layer-normalised LSTM
# --------------------------------------------------------------------------------------------------


def lstm_layernorm_forward(
    x: Any,
    h0: Any,
    c0: Any,
    w_ih: Any,
    w_hh: Any,
    b_ih: Any,
    b_hh: Any,
    gamma_ih: Any,
    gamma_hh: Any,
    gamma_c: Any,
    beta_c: Any,
    *,
    lengths: Any = None,
    training: bool = True,
) -> tuple[Array, Array, Array, VariantCache | None]:
    """Layer-normalised LSTM (haste's LayerNormLSTM; equations in the module docstring).

    Args: x (T, B, I); h0, c0 (B, H) or None; w_ih (4H, I); w_hh (4H, H); b_ih, b_hh (4H,) or None;
    gamma_ih, gamma_hh (4H,); gamma_c, beta_c (H,); lengths (B,) or None. Returns y (T, B, H), h_n,
    c_n (B, H), cache (extra: gamma_ih, gamma_hh, gamma_c, beta_c and, per step, xhat_ih,
    rstd_ih, xhat_hh, rstd_hh, xhat_c, rstd_c: the normalised rows (T, B, width) and their
    1/sqrt(var + eps) (T, B, 1) of W_ih x_t, W_hh h_{t-1} and c_t). All float64.
    """
    x, w_ih, w_hh, b_ih, b_hh, t_steps, batch, _, H = _params(x, w_ih, w_hh, b_ih, b_hh, 4)
    gamma_ih = _vector("gamma_ih", gamma_ih, 4 * H)
    gamma_hh = _vector("gamma_hh", gamma_hh, 4 * H)
    gamma_c = _vector("gamma_c", gamma_c, H)
    beta_c = _vector("beta_c", beta_c, H)
    h = _state("h0", h0, batch, H)
    cs = _state("c0", c0, batch, H)
    mask = _mask(lengths, t_steps, batch)
    bias = 0.0 if b_ih is None else b_ih + b_hh  # type: ignore[operator]

    y = np.zeros((t_steps, batch, H))
    hs = np.zeros((t_steps + 1, batch, H))
    css = np.zeros((t_steps + 1, batch, H))
    acts = np.zeros((t_steps, batch, 4 * H))
    norm = {
        "xhat_ih": np.zeros((t_steps, batch, 4 * H)),
        "rstd_ih": np.zeros((t_steps, batch, 1)),
        "xhat_hh": np.zeros((t_steps, batch, 4 * H)),
        "rstd_hh": np.zeros((t_steps, batch, 1)),
        "xhat_c": np.zeros((t_steps, batch, H)),
        "rstd_c": np.zeros((t_steps, batch, 1)),
    }
    hs[0], css[0] = h, cs
    for t in range(t_steps):
        n_ih, xh_ih, rs_ih = _layer_norm(x[t] @ w_ih.T, gamma_ih)  # LN(W_ih x_t; gamma_ih, 0)
        n_hh, xh_hh, rs_hh = _layer_norm(h @ w_hh.T, gamma_hh)  # LN(W_hh h_{t-1}; gamma_hh, 0)
        a = n_ih + n_hh + bias  # a_t = LN(W_ih x_t) + LN(W_hh h_{t-1}) + b_ih + b_hh (4H wide)
        i, f, g, o = _lstm_gates(a, H)
        c_new = f * cs + i * g  # c_t = f c_{t-1} + i g
        n_c, xh_c, rs_c = _layer_norm(c_new, gamma_c, beta_c)  # LN(c_t; gamma_c, beta_c)
        h_new = o * np.tanh(n_c)  # h_t = o tanh(LN(c_t))
        v = mask[t][:, None] > 0.0  # (B, 1): True at valid steps
        cs = np.where(v, c_new, cs)  # padded steps carry (h, c) unchanged
        h = np.where(v, h_new, h)
        y[t] = np.where(v, h, 0.0)
        hs[t + 1], css[t + 1] = h, cs
        acts[t] = np.concatenate([i, f, g, o], axis=1)
        for key, val in zip(norm, (xh_ih, rs_ih, xh_hh, rs_hh, xh_c, rs_c)):
            norm[key][t] = val
    if not training:
        return y, h, cs, None
    params = {"gamma_ih": gamma_ih, "gamma_hh": gamma_hh, "gamma_c": gamma_c, "beta_c": beta_c}
    cache = VariantCache(
        "lstm_layernorm",
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
        extra={**params, **norm},
    )
    return y, h.copy(), cs.copy(), cache


def lstm_layernorm_backward(
    cache: Any, dy: Any, dh_n: Any = None, dc_n: Any = None
) -> dict[str, Array | None]:
    """Full BPTT through lstm_layernorm_forward.

    Args: cache; dy (T, B, H) or None; dh_n, dc_n (B, H) or None. Returns dict of float64 arrays:
    x, h0, c0, w_ih, w_hh, b_ih, b_hh (4H,) or None without bias (equal: only their sum enters),
    gamma_ih, gamma_hh (4H,), gamma_c, beta_c (H,), dh_all (T, B, H).
    """
    c = _variant_cache(cache, "lstm_layernorm")
    t_steps, batch, _ = c.x.shape
    H = c.w_hh.shape[1]
    assert c.c is not None
    e = c.extra
    dy = _grad_in("dy", dy, (t_steps, batch, H))
    dh = _grad_in("dh_n", dh_n, (batch, H))
    dc = _grad_in("dc_n", dc_n, (batch, H))

    dx = np.zeros_like(c.x)
    dw_ih = np.zeros_like(c.w_ih)
    dw_hh = np.zeros_like(c.w_hh)
    db = np.zeros(4 * H)
    dgamma_ih, dgamma_hh = np.zeros(4 * H), np.zeros(4 * H)
    dgamma_c, dbeta_c = np.zeros(H), np.zeros(H)
    dh_all = np.zeros((t_steps, batch, H))
    for t in reversed(range(t_steps)):
        v = c.mask[t][:, None] > 0.0  # (B, 1): True at valid steps
        i, f, g, o = (c.act[t][:, k * H : (k + 1) * H] for k in range(4))
        c_prev = c.c[t]
        xh_c = e["xhat_c"][t]
        tn = np.tanh(e["gamma_c"] * xh_c + e["beta_c"])  # tanh(LN(c_t))
        dh = np.where(v, dh + dy[t], dh)  # dL/dh_t = dL/dy_t + dL/dh_t via step t+1
        dh_all[t] = np.where(v, dh, 0.0)
        dn_c = dh * o * (1.0 - tn**2)  # dL/dLN(c_t) = dL/dh_t o (1 - tanh^2)
        dgamma_c += _vsum(v, dn_c * xh_c)  # dL/dgamma_c += sum_b dL/dLN(c_t) xhat_c
        dbeta_c += _vsum(v, dn_c)  # dL/dbeta_c += sum_b dL/dLN(c_t)
        # dL/dc_t = via step t+1 + through LN(c_t) (its mean and variance included)
        dct = dc + _layer_norm_backward(dn_c, xh_c, e["rstd_c"][t], e["gamma_c"])
        da = _lstm_gate_grads(dct, dh * tn, c_prev, i, f, g, o)  # dL/do = dL/dh_t tanh(LN(c_t))
        da = np.where(v, da, 0.0)  # padded steps do not pass through the cell
        xh_ih, xh_hh = e["xhat_ih"][t], e["xhat_hh"][t]
        db += da.sum(axis=0)  # dL/db_ih = dL/db_hh += sum_b dL/da_t
        dgamma_ih += _vsum(v, da * xh_ih)  # dL/dgamma_ih += sum_b dL/da_t xhat_ih
        dgamma_hh += _vsum(v, da * xh_hh)  # dL/dgamma_hh += sum_b dL/da_t xhat_hh
        du = _layer_norm_backward(da, xh_ih, e["rstd_ih"][t], e["gamma_ih"])  # dL/d(W_ih x_t)
        dw = _layer_norm_backward(da, xh_hh, e["rstd_hh"][t], e["gamma_hh"])  # dL/d(W_hh h_{t-1})
        # padded rows: dL/da_t = 0 there, but xhat may not be finite (a NaN x_t at a padded step)
        du = np.where(v, du, 0.0)
        dw = np.where(v, dw, 0.0)
        dx[t] = du @ c.w_ih  # dL/dx_t = dL/d(W_ih x_t) W_ih
        dw_ih += du.T @ np.where(v, c.x[t], 0.0)  # dL/dW_ih += dL/d(W_ih x_t)^T x_t
        dw_hh += dw.T @ np.where(v, c.h[t], 0.0)  # dL/dW_hh += dL/d(W_hh h_{t-1})^T h_{t-1}
        dc = np.where(v, dct * f, dc)  # dL/dc_{t-1} = dL/dc_t f; padded: carried
        dh = np.where(v, dw @ c.w_hh, dh)  # dL/dh_{t-1} = dL/d(W_hh h_{t-1}) W_hh; padded: carried
    return {
        "x": dx,
        "h0": dh,
        "c0": dc,
        "w_ih": dw_ih,
        "w_hh": dw_hh,
        "b_ih": db.copy() if c.b_ih is not None else None,
        "b_hh": db.copy() if c.b_ih is not None else None,
        "gamma_ih": dgamma_ih,
        "gamma_hh": dgamma_hh,
        "gamma_c": dgamma_c,
        "beta_c": dbeta_c,
        "dh_all": dh_all,
    }
