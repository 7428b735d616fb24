"""Zoneout and variational recurrent dropout in the fused kernels (issue 14): the forward of any
registered cell with the masks of :mod:`rnnfast.reference.regularisers` as arrays.

The compiled time loops (cpp/include/rnnfast/sequence.hpp, ``Weights::zoneout_h`` ...) apply them:

* zoneout (Krueger et al. 2017): ``h_t = m^h_t * h_{t-1} + (1 - m^h_t) * h~_t`` and, for cells with a
  cell state, ``c_t = m^c_t * c_{t-1} + (1 - m^c_t) * c~_t`` (h~_t, c~_t the cell's own update;
  for the LSTM h~_t = o * tanh(c~_t)); masks (T, B, H), 1 = keep the previous value (a training
  draw is Bernoulli(p); the expectation p itself gives the deterministic evaluation form);
* variational recurrent dropout (Gal & Ghahramani 2016): W_hh multiplies ``d * h_{t-1}``, one mask
  d (B, H) per sequence, its values used as given (a draw of rate p is {0, 1/(1-p)}); the cell
  still sees the undropped h_{t-1} (the GRU's z * h_{t-1}, the zoneout blend), except
  ``gru_reset_before``, whose second product takes r * (d * h_{t-1}) (Keras's
  ``GRU(reset_after=False, recurrent_dropout=p)``).

Backward is the cell's ordinary ``functional.<cell>_backward`` on the returned cache (the masks are
kept in it). Masks receive no gradient. Masks may be any array broadcastable to their shape (a
scalar p included); they are converted to the input's dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._cells import get_cell
from ._fcheck import _Args, _check_bool, _check_nonlinearity, _extra_params
from ._loader import core

__all__ = [
    "gru_regularised_forward",
    "lstm_regularised_forward",
    "regularised_forward",
]

Array = np.ndarray


def _mask(name: str, m: Any, shape: tuple[int, ...], dtype: np.dtype) -> Array | None:
    if m is None:
        return None
    try:
        arr = np.asarray(m, dtype=dtype)
        arr = np.broadcast_to(arr, shape)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"{name}: expected an array broadcastable to {shape}, got "
            f"{getattr(m, 'shape', type(m).__name__)} ({e})"
        ) from None
    return np.ascontiguousarray(arr)


def regularised_forward(
    cell: str,
    x: Any,
    state: Any,
    weights: Sequence[Any],
    *,
    zoneout_h: Any = None,
    zoneout_c: Any = None,
    dropout_h: Any = None,
    lengths: Any = None,
    training: bool = True,
    nonlinearity: str = "tanh",
) -> tuple[Array, Any, Any]:
    """Any registered cell over a whole sequence with zoneout / recurrent-dropout masks.

    Args:
        cell: a registered cell name. x: (T, B, I) float32 or float64. state: h0 (B, H), (h0, c0)
            for cells with a cell state, or None (zeros).
        weights: w_ih, w_hh, b_ih, b_hh and the cell's extra parameters (``CellSpec`` order).
        zoneout_h, zoneout_c: broadcastable to (T, B, H) or None (zoneout_c: cells with a cell
            state only). dropout_h: broadcastable to (B, H) or None. lengths: (B,) or None.

    Returns:
        y (T, B, H), the final state (h_n, or (h_n, c_n)), cache (functional.SequenceCache for
        ``functional.<cell>_backward``, or None when not training).
    """
    from . import functional as F  # the cache type of the functional API

    spec = get_cell(cell)
    nl = _check_nonlinearity(nonlinearity)
    if nl not in spec.nonlinearities:
        raise ValueError(f"nonlinearity: the {cell} cell takes {spec.nonlinearities}, got {nl!r}")
    w = list(weights)
    n_w = 4 + len(spec.extra_params)
    if len(w) != n_w:
        raise ValueError(f"weights: the {cell} cell takes {n_w} arrays, got {len(w)}")
    a = _Args(cell, x, w[0], w[1], w[2], w[3])
    names = [n for n, _ in spec.extra_params]
    extra = _extra_params(cell, dict(zip(names, w[4:])), a.dtype, a.H)
    if spec.has_cell_state:
        h0, c0 = state if state is not None else (None, None)
        c0_ = a.state("c0", c0)
    else:
        h0, c0_ = state, None
        if zoneout_c is not None:
            raise ValueError(f"zoneout_c: the {cell} cell has no cell state, expected None")
    h0_ = a.state("h0", h0)
    len_ = a.lengths(lengths)
    training = _check_bool("training", training)
    a.check_forward_memory(cell, training)
    full = (a.T, a.B, a.H)
    out = core.sequence_forward(
        cell,
        a.x,
        h0_,
        c0_,
        a.w_ih,
        a.w_hh,
        a.b_ih,
        a.b_hh,
        extra or None,
        len_,
        nl,
        training,
        zoneout_h=_mask("zoneout_h", zoneout_h, full, a.dtype),
        zoneout_c=_mask("zoneout_c", zoneout_c, full, a.dtype),
        dropout_h=_mask("dropout_h", dropout_h, (a.B, a.H), a.dtype),
    )
    cache = F.SequenceCache(cell, nl, out[-1], a, extra) if training else None
    final = (out[1], out[2]) if spec.has_cell_state else out[1]
    return out[0], final, cache


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
) -> tuple[Array, Array, Array, Any]:
    """The fused LSTM with zoneout and recurrent dropout: reference.lstm_regularised_forward's
    arguments and results (y, h_n, c_n, cache); backward: ``functional.lstm_backward(cache, ...)``."""
    y, (h_n, c_n), cache = regularised_forward(
        "lstm",
        x,
        (h0, c0),
        (w_ih, w_hh, b_ih, b_hh),
        zoneout_h=zoneout_h,
        zoneout_c=zoneout_c,
        dropout_h=dropout_h,
        lengths=lengths,
        training=training,
    )
    return y, h_n, c_n, cache


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
) -> tuple[Array, Array, Any]:
    """The fused GRU with zoneout and recurrent dropout: reference.gru_regularised_forward's
    arguments and results (y, h_n, cache); backward: ``functional.gru_backward(cache, ...)``."""
    y, h_n, cache = regularised_forward(
        "gru",
        x,
        h0,
        (w_ih, w_hh, b_ih, b_hh),
        zoneout_h=zoneout_h,
        dropout_h=dropout_h,
        lengths=lengths,
        training=training,
    )
    return y, h_n, cache
