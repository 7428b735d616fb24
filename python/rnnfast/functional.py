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

Precision: the whole-sequence calls (``<cell>_forward`` / ``<cell>_backward``) take keyword
``precision``: None (default) runs the thread's mode (fp32, or bf16 inside ``rnnfast.precision``),
``"fp32"`` or ``"bf16"`` runs that call in that mode (bf16 products, fp32 accumulation:
:mod:`rnnfast._precision`), whatever the thread's mode; ``"bf16"`` needs float32 arrays
(ValueError for float64, as ``fit`` refuses bf16 for a float64 model). A backward runs in its own
call's mode, not the forward's: pass the same ``precision`` to both for bf16 gradients.

Truncated BPTT(k1, k2): :func:`tbptt_grads` (verification entry point, the loop over chunks runs in
C++) and :class:`TBPTTStream` (the streaming object the trainer calls once per chunk).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _precision
from ._cells import get_cell
from ._loader import core

__all__ = [
    "SequenceCache",
    "TBPTTStream",
    "gru_backward",
    "gru_forward",
    "gru_regularised_forward",
    "lstm_backward",
    "lstm_forward",
    "lstm_proj_backward",
    "lstm_proj_forward",
    "lstm_proj_tbptt_grads",
    "lstm_regularised_forward",
    "rnn_backward",
    "rnn_forward",
    "tbptt_grads",
]

# The argument checks (one place for them): rnnfast/_fcheck.py.
from ._fcheck import (  # noqa: F401  (re-exported for rnnfast.minimal and the generated cells)
    _GATES,
    _NONLINEARITIES,
    _PARAM_KEYS,
    Array,
    State,
    _Args,
    _check_bool,
    _check_k,
    _check_memory,
    _check_nonlinearity,
    _check_params,
    _check_shape,
    _extra_params,
    _float_array,
    _opt_array,
)

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


def _bind(precision: Any, dtype: np.dtype, forward: bool) -> Any:
    """The core's sequence_forward (or _backward) run under a call's ``precision=`` (not None:
    the default path takes the core's function directly, at no cost)."""
    fn = core.sequence_forward if forward else core.sequence_backward
    return _precision.bind(precision, dtype, fn)


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
    cell: str,
    cache: Any,
    dy: Any,
    dh_n: Any,
    dc_n: Any,
    need_dx: Any = True,
    precision: str | None = None,
) -> dict[str, Array | None]:
    c = _check_cache(cache, cell)
    if not isinstance(need_dx, (bool, np.bool_)):
        raise TypeError(f"need_dx: expected a bool, got {type(need_dx).__name__}")
    t, b, _, h = c.shape
    dt = c.dtype
    bwd = core.sequence_backward if precision is None else _bind(precision, dt, False)

    dy_ = _opt_array("dy", dy, dt, (t, b, h))
    dh_ = _opt_array("dh_n", dh_n, dt, (b, h))
    dc_ = _opt_array("dc_n", dc_n, dt, (b, h)) if get_cell(cell).has_cell_state else None
    return bwd(
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
    precision: str | None = None,
) -> tuple[Array, Array, SequenceCache | None]:
    """Vanilla RNN over a whole sequence: h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh).

    Args:
        x: (T, B, I) float32 or float64; sets the dtype of the call.
        h0: (B, H) or None (zeros).
        w_ih: (H, I); w_hh: (H, H); b_ih, b_hh: (H,) or both None (no bias).
        nonlinearity: "tanh" or "relu".
        lengths: (B,) integers in [0, T], or None (all sequences T steps).
        training: when False, nothing is stored and the cache is None.
        precision: None (the thread's mode), "fp32" or "bf16" (float32 only): the mode of this
            call's products (module docstring). The same for every forward and backward here.

    Returns:
        y (T, B, H), h_n (B, H), cache (a SequenceCache, or None when training=False).
    """
    nl = _check_nonlinearity(nonlinearity)
    a = _Args("rnn", x, w_ih, w_hh, b_ih, b_hh)
    h0_ = a.state("h0", h0)
    len_ = a.lengths(lengths)
    training = _check_bool("training", training)
    a.check_forward_memory("rnn", training)
    fwd = core.sequence_forward if precision is None else _bind(precision, a.dtype, True)
    y, h_n, cc = fwd(
        "rnn", a.x, h0_, None, a.w_ih, a.w_hh, a.b_ih, a.b_hh, None, len_, nl, training
    )
    return y, h_n, (SequenceCache("rnn", nl, cc, a) if training else None)


def rnn_backward(
    cache: Any,
    dy: Any,
    dh_n: Any = None,
    *,
    need_dx: bool = True,
    precision: str | None = None,
) -> dict[str, Array | None]:
    """Full BPTT through :func:`rnn_forward`.

    Args:
        cache: the SequenceCache of rnn_forward (training=True).
        dy: (T, B, H) dL/dy, or None (zeros). dh_n: (B, H) dL/dh_n, or None (zeros).
            Same dtype as x.
        need_dx: False skips the product for dL/dx (e.g. a first layer whose input needs no
            gradient); "x" is then None. The same for lstm_backward and gru_backward.
        precision: None (the thread's mode), "fp32" or "bf16": this backward's mode.

    Returns:
        dict with "x" (T, B, I), "h0" (B, H), "w_ih" (H, I), "w_hh" (H, H), "b_ih", "b_hh" (H,) or
        None without bias, and "dh_all" (T, B, H) = total dL/dh_t of every step (zero rows at
        padded steps).
    """
    return _backward("rnn", cache, dy, dh_n, None, need_dx, precision)


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
    precision: str | None = None,
) -> tuple[Array, Array, Array, SequenceCache | None]:
    """LSTM over a whole sequence, gates i, f, g, o: c_t = f*c_{t-1} + i*g, h_t = o*tanh(c_t).

    Args:
        x: (T, B, I) float32 or float64. h0, c0: (B, H) or None (zeros).
        w_ih: (4H, I); w_hh: (4H, H); b_ih, b_hh: (4H,) or both None.
        lengths: (B,) integers in [0, T], or None. training: False = inference, cache None.
        precision: None (the thread's mode), "fp32" or "bf16" (float32 only); see rnn_forward.

    Returns:
        y (T, B, H), h_n (B, H), c_n (B, H), cache (SequenceCache or None).
    """
    a = _Args("lstm", x, w_ih, w_hh, b_ih, b_hh)
    h0_ = a.state("h0", h0)
    c0_ = a.state("c0", c0)
    len_ = a.lengths(lengths)
    training = _check_bool("training", training)
    a.check_forward_memory("lstm", training)
    fwd = core.sequence_forward if precision is None else _bind(precision, a.dtype, True)
    y, h_n, c_n, cc = fwd(
        "lstm", a.x, h0_, c0_, a.w_ih, a.w_hh, a.b_ih, a.b_hh, None, len_, "tanh", training
    )
    return y, h_n, c_n, (SequenceCache("lstm", "tanh", cc, a) if training else None)


def lstm_backward(
    cache: Any,
    dy: Any,
    dh_n: Any = None,
    dc_n: Any = None,
    *,
    need_dx: bool = True,
    precision: str | None = None,
) -> dict[str, Array | None]:
    """Full BPTT through :func:`lstm_forward`.

    Args:
        cache: SequenceCache of lstm_forward. dy: (T, B, H) or None. dh_n, dc_n: (B, H) or None.
        precision: None (the thread's mode), "fp32" or "bf16": this backward's mode.

    Returns:
        dict with "x" (T, B, I), "h0", "c0" (B, H), "w_ih" (4H, I), "w_hh" (4H, H), "b_ih", "b_hh"
        (4H,) or None, "dh_all" (T, B, H).
    """
    return _backward("lstm", cache, dy, dh_n, dc_n, need_dx, precision)


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
    precision: str | None = None,
) -> tuple[Array, Array, SequenceCache | None]:
    """GRU over a whole sequence, gates r, z, n: n = tanh(W_in x + b_in + r*(W_hn h + b_hn)),
    h_t = (1 - z)*n + z*h_{t-1}.

    Args:
        x: (T, B, I) float32 or float64. h0: (B, H) or None.
        w_ih: (3H, I); w_hh: (3H, H); b_ih, b_hh: (3H,) or both None.
        lengths: (B,) integers in [0, T], or None. training: False = inference, cache None.
        precision: None (the thread's mode), "fp32" or "bf16" (float32 only); see rnn_forward.

    Returns:
        y (T, B, H), h_n (B, H), cache (SequenceCache or None).
    """
    a = _Args("gru", x, w_ih, w_hh, b_ih, b_hh)
    h0_ = a.state("h0", h0)
    len_ = a.lengths(lengths)
    training = _check_bool("training", training)
    a.check_forward_memory("gru", training)
    fwd = core.sequence_forward if precision is None else _bind(precision, a.dtype, True)
    y, h_n, cc = fwd(
        "gru", a.x, h0_, None, a.w_ih, a.w_hh, a.b_ih, a.b_hh, None, len_, "tanh", training
    )
    return y, h_n, (SequenceCache("gru", "tanh", cc, a) if training else None)


def gru_backward(
    cache: Any,
    dy: Any,
    dh_n: Any = None,
    *,
    need_dx: bool = True,
    precision: str | None = None,
) -> dict[str, Array | None]:
    """Full BPTT through :func:`gru_forward`.

    Args:
        cache: SequenceCache of gru_forward. dy: (T, B, H) or None. dh_n: (B, H) or None.
        precision: None (the thread's mode), "fp32" or "bf16": this backward's mode.

    Returns:
        dict with "x" (T, B, I), "h0" (B, H), "w_ih" (3H, I), "w_hh" (3H, H), "b_ih", "b_hh" (3H,)
        or None, "dh_all" (T, B, H).
    """
    return _backward("gru", cache, dy, dh_n, None, need_dx, precision)


# Truncated BPTT (tbptt_grads, TBPTTStream): rnnfast/_tbptt_api.py. The LSTM with projection (its
# kernel runs beside the registry: the state is P wide): rnnfast/_proj.py. Zoneout and recurrent
# dropout masks in the fused loops (backward: the cell's <cell>_backward): rnnfast/_regularise.py.
# The functions of every other registered cell (<cell>_forward / <cell>_backward, generated from its
# CellSpec with the same conventions as the three above): see rnnfast/_cellfn.py.
from ._cellfn import install as _install_cell_functions  # noqa: E402
from ._proj import lstm_proj_backward, lstm_proj_forward, lstm_proj_tbptt_grads  # noqa: E402, F401
from ._regularise import gru_regularised_forward, lstm_regularised_forward  # noqa: E402, F401
from ._tbptt_api import TBPTTStream, _split_state, tbptt_grads  # noqa: E402, F401

_install_cell_functions(globals(), __all__)
