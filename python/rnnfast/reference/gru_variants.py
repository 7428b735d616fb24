"""Float64 oracles of two GRU variants: reset-before (Cho et al. 2014) and layer-normalised.

Conventions of :mod:`rnnfast.reference` throughout (PyTorch's layout, gate order r, z, n, float64
outputs, one Python loop over time, derivatives beside the lines, ``lengths`` with packed-sequence
semantics selected away with ``np.where``, ``training=False`` returns no cache). Each
``*_backward`` is full BPTT of L = <y, dy> + <h_n, dh_n> and returns the gradient of every input
and parameter by its argument name, plus dh_all (T, B, H). σ = logistic sigmoid, ⊙ = elementwise;
gi = W_ih x_t + b_ih and gh = W_hh h_{t-1} + b_hh (3H wide, blocks r, z, n) unless stated otherwise.

GRU, reset gate before the recurrent product (Cho et al. 2014, arXiv:1406.1078v3; Keras
``GRU(reset_after=False)``)::

    r = σ(gi_r + gh_r)      z = σ(gi_z + gh_z)
    n = tanh(W_in x_t + b_in + W_hn (r ⊙ h_{t-1}) + b_hn)
    h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

  Same parameters and shapes as the GRU: w_ih (3H, I), w_hh (3H, H), b_ih, b_hh (3H,) or None.
  Keras's weights: kernel = w_ih.T and recurrent_kernel = w_hh.T with the gate blocks reordered to
  z, r, h, bias (3H,) = b_ih + b_hh (also z, r, h): Keras has one bias here, so b_hn and b_in are
  not separately identifiable (they only enter as b_in + b_hn).

Layer-normalised GRU (haste's ``LayerNormGRU``; the PyTorch/reset-after GRU with both
pre-activations normalised), LN(v; γ) = γ ⊙ (v - mean(v)) / sqrt(var(v) + 1e-5) over the row
(biased variance, no shift: the biases play that part; see :mod:`rnnfast.reference._common`)::

    gi = LN(W_ih x_t; gamma_ih) + b_ih      gh = LN(W_hh h_{t-1}; gamma_hh) + b_hh   (each over 3H)
    r = σ(gi_r + gh_r)      z = σ(gi_z + gh_z)      n = tanh(gi_n + r ⊙ gh_n)
    h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

  Parameters: w_ih (3H, I), w_hh (3H, H), b_ih, b_hh (3H,) or None, gamma_ih, gamma_hh (3H,).
  haste's names: kernel = w_ih.T, recurrent_kernel = w_hh.T, bias = b_ih, recurrent_bias = b_hh,
  gamma[0] = gamma_ih, gamma[1] = gamma_hh, with haste's gate blocks in the order z, r, n (LN
  statistics do not depend on the order).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _grad_in, _mask, _params, _sigmoid, _state
from ._common import (
    VariantCache,
    _layer_norm,
    _layer_norm_backward,
    _variant_cache,
    _vector,
    _vsum,
)

__all__ = [
    "gru_layernorm_backward",
    "gru_layernorm_forward",
    "gru_reset_before_backward",
    "gru_reset_before_forward",
]

Array = np.ndarray


# --------------------------------------------------------------------------------------------------
# GRU, reset before the recurrent product
# --------------------------------------------------------------------------------------------------


def gru_reset_before_forward(
    x: Any,
    h0: Any,
    w_ih: Any,
    w_hh: Any,
    b_ih: Any,
    b_hh: Any,
    *,
    lengths: Any = None,
    training: bool = True,
) -> tuple[Array, Array, VariantCache | None]:
    """GRU with n = tanh(W_in x + b_in + W_hn (r ⊙ h_{t-1}) + b_hn) (module docstring).

    Args: x (T, B, I); h0 (B, H) or None; w_ih (3H, I); w_hh (3H, H); b_ih, b_hh (3H,) or None;
    lengths (B,) or None. Returns y (T, B, H), h_n (B, H), cache (act r, z, n; ghn None; no
    extra). All float64.
    """
    x, w_ih, w_hh, b_ih, b_hh, t_steps, batch, _, H = _params(x, w_ih, w_hh, b_ih, b_hh, 3)
    h = _state("h0", h0, batch, H)
    mask = _mask(lengths, t_steps, batch)
    bi = 0.0 if b_ih is None else b_ih
    bh = np.zeros(3 * H) if b_hh is None else b_hh
    w_hrz, w_hn = w_hh[0 : 2 * H], w_hh[2 * H : 3 * H]

    y = np.zeros((t_steps, batch, H))
    hs = np.zeros((t_steps + 1, batch, H))
    acts = np.zeros((t_steps, batch, 3 * H))
    hs[0] = h
    for t in range(t_steps):
        gi = x[t] @ w_ih.T + bi  # W_ih x_t + b_ih (3H wide: r, z, n)
        grz = h @ w_hrz.T + bh[0 : 2 * H]  # W_h{r,z} h_{t-1} + b_h{r,z} (2H wide)
        r = _sigmoid(gi[:, 0:H] + grz[:, 0:H])
        z = _sigmoid(gi[:, H : 2 * H] + grz[:, H : 2 * H])
        # n = tanh(W_in x + b_in + W_hn (r h_{t-1}) + b_hn): the reset gate scales h before W_hn
        n = np.tanh(gi[:, 2 * H : 3 * H] + (r * h) @ w_hn.T + bh[2 * H : 3 * H])
        h_new = (1.0 - z) * n + z * h  # h_t = (1 - z) n + z h_{t-1}
        v = mask[t][:, None] > 0.0  # (B, 1): True at valid steps
        h = np.where(v, h_new, h)  # padded steps carry the state unchanged
        y[t] = np.where(v, h, 0.0)
        hs[t + 1] = h
        acts[t] = np.concatenate([r, z, n], axis=1)
    if not training:
        return y, h, None
    cache = VariantCache(
        "gru_reset_before", "", x, w_ih, w_hh, b_ih, b_hh, mask, hs, None, acts, None
    )
    return y, h.copy(), cache


def gru_reset_before_backward(cache: Any, dy: Any, dh_n: Any = None) -> dict[str, Array | None]:
    """Full BPTT through gru_reset_before_forward.

    Args: cache; dy (T, B, H) or None; dh_n (B, H) or None. Returns dict of float64 arrays: x, h0,
    w_ih (3H, I), w_hh (3H, H), b_ih, b_hh (3H,) or None (equal: both biases enter every gate as
    a sum), dh_all (T, B, H).
    """
    c = _variant_cache(cache, "gru_reset_before")
    t_steps, batch, _ = c.x.shape
    H = c.w_hh.shape[1]
    dy = _grad_in("dy", dy, (t_steps, batch, H))
    dh = _grad_in("dh_n", dh_n, (batch, H))
    w_hrz, w_hn = c.w_hh[0 : 2 * H], c.w_hh[2 * H : 3 * H]

    dx = np.zeros_like(c.x)
    dw_ih = np.zeros_like(c.w_ih)
    dw_hh = np.zeros_like(c.w_hh)
    db = np.zeros(3 * H)
    dh_all = np.zeros((t_steps, batch, H))
    for t in reversed(range(t_steps)):
        v = c.mask[t][:, None] > 0.0  # (B, 1): True at valid steps
        r, z, n = (c.act[t][:, k * H : (k + 1) * H] for k in range(3))
        h_prev = c.h[t]
        q = r * h_prev  # q = r h_{t-1}, the input of W_hn
        dh = np.where(v, dh + dy[t], dh)  # dL/dh_t = dL/dy_t + dL/dh_t via step t+1
        dh_all[t] = np.where(v, dh, 0.0)
        dan = dh * (1.0 - z) * (1.0 - n**2)  # dL/da_n = dL/dh_t (1 - z) (1 - n^2)
        dq = dan @ w_hn  # dL/dq = dL/da_n W_hn
        dar = dq * h_prev * r * (1.0 - r)  # dL/da_r = dL/dq h_{t-1} r (1 - r)
        daz = dh * (h_prev - n) * z * (1.0 - z)  # dL/da_z = dL/dh_t (h_{t-1} - n) z (1 - z)
        da = np.concatenate([dar, daz, dan], axis=1)  # dL/d(gate pre-activations), r, z, n
        da = np.where(v, da, 0.0)  # padded steps do not pass through the cell
        dx[t] = da @ c.w_ih  # dL/dx_t = dL/da W_ih
        dw_ih += da.T @ np.where(v, c.x[t], 0.0)  # dL/dW_ih += dL/da^T x_t (valid rows only)
        # dL/dW_h{r,z} += dL/da_{r,z}^T h_{t-1};  dL/dW_hn += dL/da_n^T (r h_{t-1})  (valid rows)
        dw_hh[0 : 2 * H] += da[:, 0 : 2 * H].T @ np.where(v, h_prev, 0.0)
        dw_hh[2 * H : 3 * H] += da[:, 2 * H : 3 * H].T @ np.where(v, q, 0.0)
        db += da.sum(axis=0)  # dL/db_ih = dL/db_hh += sum_b dL/da
        # dL/dh_{t-1} = dL/dh_t z + dL/da_{r,z} W_h{r,z} + dL/dq r; padded: carried
        dh = np.where(v, dh * z + da[:, 0 : 2 * H] @ w_hrz + dq * r, dh)
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
# layer-normalised GRU
# --------------------------------------------------------------------------------------------------


def gru_layernorm_forward(
    x: Any,
    h0: Any,
    w_ih: Any,
    w_hh: Any,
    b_ih: Any,
    b_hh: Any,
    gamma_ih: Any,
    gamma_hh: Any,
    *,
    lengths: Any = None,
    training: bool = True,
) -> tuple[Array, Array, VariantCache | None]:
    """Layer-normalised GRU (haste's LayerNormGRU; equations in the module docstring).

    Args: x (T, B, I); h0 (B, H) or None; w_ih (3H, I); w_hh (3H, H); b_ih, b_hh (3H,) or None;
    gamma_ih, gamma_hh (3H,); lengths (B,) or None. Returns y (T, B, H), h_n (B, H), cache (act r,
    z, n; ghn = gh_n = LN(W_hh h_{t-1})_n + b_hn; extra: gamma_ih, gamma_hh and, per step,
    xhat_ih, rstd_ih, xhat_hh, rstd_hh: the normalised rows (T, B, 3H) and their 1/sqrt(var + eps)
    (T, B, 1) of W_ih x_t and W_hh h_{t-1}). All float64.
    """
    x, w_ih, w_hh, b_ih, b_hh, t_steps, batch, _, H = _params(x, w_ih, w_hh, b_ih, b_hh, 3)
    gamma_ih = _vector("gamma_ih", gamma_ih, 3 * H)
    gamma_hh = _vector("gamma_hh", gamma_hh, 3 * H)
    h = _state("h0", h0, batch, H)
    mask = _mask(lengths, t_steps, batch)
    bi = 0.0 if b_ih is None else b_ih
    bh = 0.0 if b_hh is None else b_hh

    y = np.zeros((t_steps, batch, H))
    hs = np.zeros((t_steps + 1, batch, H))
    acts = np.zeros((t_steps, batch, 3 * H))
    ghns = np.zeros((t_steps, batch, H))
    norm = {
        "xhat_ih": np.zeros((t_steps, batch, 3 * H)),
        "rstd_ih": np.zeros((t_steps, batch, 1)),
        "xhat_hh": np.zeros((t_steps, batch, 3 * H)),
        "rstd_hh": np.zeros((t_steps, batch, 1)),
    }
    hs[0] = h
    for t in range(t_steps):
        n_ih, xh_ih, rs_ih = _layer_norm(x[t] @ w_ih.T, gamma_ih)  # LN(W_ih x_t; gamma_ih)
        n_hh, xh_hh, rs_hh = _layer_norm(h @ w_hh.T, gamma_hh)  # LN(W_hh h_{t-1}; gamma_hh)
        gi = n_ih + bi  # gi = LN(W_ih x_t) + b_ih (3H wide: r, z, n)
        gh = n_hh + bh  # gh = LN(W_hh h_{t-1}) + b_hh (3H wide: r, z, n)
        r = _sigmoid(gi[:, 0:H] + gh[:, 0:H])
        z = _sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
        ghn = gh[:, 2 * H : 3 * H]
        n = np.tanh(gi[:, 2 * H : 3 * H] + r * ghn)  # n = tanh(gi_n + r gh_n)
        h_new = (1.0 - z) * n + z * h  # h_t = (1 - z) n + z h_{t-1}
        v = mask[t][:, None] > 0.0  # (B, 1): True at valid steps
        h = np.where(v, h_new, h)  # padded steps carry the state unchanged
        y[t] = np.where(v, h, 0.0)
        hs[t + 1] = h
        acts[t] = np.concatenate([r, z, n], axis=1)
        ghns[t] = ghn
        for key, val in zip(norm, (xh_ih, rs_ih, xh_hh, rs_hh)):
            norm[key][t] = val
    if not training:
        return y, h, None
    cache = VariantCache(
        "gru_layernorm",
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
        extra={"gamma_ih": gamma_ih, "gamma_hh": gamma_hh, **norm},
    )
    return y, h.copy(), cache


def gru_layernorm_backward(cache: Any, dy: Any, dh_n: Any = None) -> dict[str, Array | None]:
    """Full BPTT through gru_layernorm_forward.

    Args: cache; dy (T, B, H) or None; dh_n (B, H) or None. Returns dict of float64 arrays: x, h0,
    w_ih (3H, I), w_hh (3H, H), b_ih, b_hh (3H,) or None, gamma_ih, gamma_hh (3H,), dh_all
    (T, B, H).
    """
    c = _variant_cache(cache, "gru_layernorm")
    t_steps, batch, _ = c.x.shape
    H = c.w_hh.shape[1]
    assert c.ghn is not None
    e = c.extra
    dy = _grad_in("dy", dy, (t_steps, batch, H))
    dh = _grad_in("dh_n", dh_n, (batch, H))

    dx = np.zeros_like(c.x)
    dw_ih = np.zeros_like(c.w_ih)
    dw_hh = np.zeros_like(c.w_hh)
    db_ih, db_hh = np.zeros(3 * H), np.zeros(3 * H)
    dgamma_ih, dgamma_hh = np.zeros(3 * H), np.zeros(3 * H)
    dh_all = np.zeros((t_steps, batch, H))
    for t in reversed(range(t_steps)):
        v = c.mask[t][:, None] > 0.0  # (B, 1): True at valid steps
        r, z, n = (c.act[t][:, k * H : (k + 1) * H] for k in range(3))
        h_prev = c.h[t]
        dh = np.where(v, dh + dy[t], dh)  # dL/dh_t = dL/dy_t + dL/dh_t via step t+1
        dh_all[t] = np.where(v, dh, 0.0)
        dan = dh * (1.0 - z) * (1.0 - n**2)  # dL/da_n = dL/dh_t (1 - z) (1 - n^2)
        dar = dan * c.ghn[t] * r * (1.0 - r)  # dL/da_r = dL/da_n gh_n r (1 - r)
        daz = dh * (h_prev - n) * z * (1.0 - z)  # dL/da_z = dL/dh_t (h_{t-1} - n) z (1 - z)
        dgi = np.where(v, np.concatenate([dar, daz, dan], axis=1), 0.0)  # dL/dgi (valid rows)
        dgh = np.where(v, np.concatenate([dar, daz, dan * r], axis=1), 0.0)  # dL/dgh; n-part * r
        xh_ih, xh_hh = e["xhat_ih"][t], e["xhat_hh"][t]
        db_ih += dgi.sum(axis=0)  # dL/db_ih += sum_b dL/dgi
        db_hh += dgh.sum(axis=0)  # dL/db_hh += sum_b dL/dgh
        dgamma_ih += _vsum(v, dgi * xh_ih)  # dL/dgamma_ih += sum_b dL/dgi xhat_ih
        dgamma_hh += _vsum(v, dgh * xh_hh)  # dL/dgamma_hh += sum_b dL/dgh xhat_hh
        # through the normalisations (padded rows selected away: their xhat may not be finite)
        du = np.where(v, _layer_norm_backward(dgi, xh_ih, e["rstd_ih"][t], e["gamma_ih"]), 0.0)
        dw = np.where(v, _layer_norm_backward(dgh, xh_hh, e["rstd_hh"][t], e["gamma_hh"]), 0.0)
        dx[t] = du @ c.w_ih  # dL/dx_t = dL/d(W_ih x_t) W_ih
        dw_ih += du.T @ np.where(v, c.x[t], 0.0)  # dL/dW_ih += dL/d(W_ih x_t)^T x_t
        dw_hh += dw.T @ np.where(v, h_prev, 0.0)  # dL/dW_hh += dL/d(W_hh h_{t-1})^T h_{t-1}
        # dL/dh_{t-1} = dL/dh_t z + dL/d(W_hh h_{t-1}) W_hh; padded: carried
        dh = np.where(v, dh * z + dw @ c.w_hh, dh)
    has_bias = c.b_ih is not None
    return {
        "x": dx,
        "h0": dh,
        "w_ih": dw_ih,
        "w_hh": dw_hh,
        "b_ih": db_ih if has_bias else None,
        "b_hh": db_hh if has_bias else None,
        "gamma_ih": dgamma_ih,
        "gamma_hh": dgamma_hh,
        "dh_all": dh_all,
    }
