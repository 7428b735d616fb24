"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): the functional API over the
compiled scan kernels.

Dimensions: T = time steps, B = batch, I = input size, H = hidden size. The gates see x_t only, so
h_t = a_t * h_{t-1} + b_t is linear in h and runs as a parallel scan over time (not T sequential
matrix products): one input-projection GEMM over all T*B rows, then the scan.

The form is the paper's log-space ("stable") one, the only form provided (a deliberate choice: the
log-space accumulation cannot overflow or underflow over long sequences, and it needs every state
positive, which g below guarantees):

* g(u) = u + 1/2 for u >= 0, sigmoid(u) for u < 0 (continuous, but g' jumps from 1/4 to 1 at
  u = 0: the gradient takes g'(0) = 1, and a float32 pre-activation that rounding moves across 0
  gets the other side's derivative);
* minGRU, ``w_ih`` (2H, I) = [W_z; W_h], ``b_ih`` (2H,): z = sigmoid(W_z x + b_z),
  h~ = g(W_h x + b_h), h_t = (1 - z_t) * h_{t-1} + z_t * h~_t;
* minLSTM, ``w_ih`` (3H, I) = [W_f; W_i; W_h], ``b_ih`` (3H,): f = sigmoid(.), i = sigmoid(.),
  h~ = g(.), h_t = f/(f+i) * h_{t-1} + i/(f+i) * h~_t.

The kernels accumulate log h_t = logaddexp(log a_t + log h_{t-1}, log b_t), with log a_t and
log b_t from softplus of the pre-activations; the backward's reverse scan
dL/dh_t = dL/dy_t + a_{t+1} dL/dh_{t+1} runs in linear space (0 < a < 1: a contraction). So h0
must be >= 0 (ValueError otherwise); None means zeros. y (T, B, H) holds h_1..h_T; h_n = y[-1].

The scan is cut into chunks of time steps (a chunked two-pass associative scan, parallel over
chunks and over the B*H scans); ``chunk=None`` picks the length from T, B, H only, so results are
bitwise identical call to call and across thread counts. Another chunk length gives the same
result up to rounding (it is a testing and tuning knob).

dtype: float32 or float64, set by ``x``; every array of one call must share it (TypeError naming
the argument otherwise). No ``lengths`` (ragged batches) and no truncated BPTT here yet.

The cache of a training forward keeps references to ``x``, ``w_ih`` and ``b_ih`` (not copies): do
not modify them in place before backward. Backward may be called on one cache any number of times.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._loader import core
from .functional import _check_bool, _check_memory, _check_shape, _float_array, _opt_array

__all__ = [
    "MinimalCache",
    "mingru_backward",
    "mingru_forward",
    "minlstm_backward",
    "minlstm_forward",
]

Array = np.ndarray

_GATES = {"mingru": 2, "minlstm": 3}


def _check_chunk(chunk: Any) -> int:
    """0 (automatic) for None, else an int >= 1."""
    if chunk is None:
        return 0
    if isinstance(chunk, (bool, np.bool_)) or not isinstance(chunk, (int, np.integer)):
        raise TypeError(
            f"chunk: expected None or an int >= 1, got {type(chunk).__name__} {chunk!r}"
        )
    if chunk < 1:
        raise ValueError(f"chunk: expected None or an int >= 1, got {chunk}")
    return int(chunk)


class MinimalCache:
    """Opaque record of a training forward of :func:`mingru_forward` / :func:`minlstm_forward`.

    Holds the compiled core's buffers (pre-activations (T, B, G*H), states (T, B, H), h0) and
    references to the forward's x, w_ih and b_ih.
    """

    __slots__ = ("_core", "b_ih", "cell", "dtype", "shape", "w_ih", "x")

    def __init__(
        self, cell: str, core_cache: Any, x: Array, w_ih: Array, b_ih: Array | None
    ) -> None:
        self.cell = cell
        self._core = core_cache
        self.x, self.w_ih, self.b_ih = x, w_ih, b_ih
        self.dtype = x.dtype
        t, b, i = x.shape
        self.shape = (t, b, i, w_ih.shape[0] // _GATES[cell])  # (T, B, I, H)

    @property
    def nbytes(self) -> int:
        """Bytes held by the compiled buffers (not counting x and the weights)."""
        return int(self._core.nbytes)

    def __repr__(self) -> str:
        t, b, i, h = self.shape
        return f"MinimalCache(cell={self.cell!r}, T={t}, B={b}, I={i}, H={h}, dtype={self.dtype})"


def _forward(
    cell: str, x: Any, h0: Any, w_ih: Any, b_ih: Any, training: Any, chunk: Any
) -> tuple[Array, Array, MinimalCache | None]:
    G = _GATES[cell]
    xa = _float_array("x", x)
    if xa.ndim != 3 or min(xa.shape) < 1:
        raise ValueError(
            f"x: expected a 3-D array (T, B, I) with T, B, I >= 1, got shape {xa.shape}"
        )
    t, b, i = (int(n) for n in xa.shape)
    w = _float_array("w_ih", w_ih, xa.dtype)
    if w.ndim != 2 or w.shape[0] % G != 0 or w.shape[0] == 0:
        raise ValueError(f"w_ih: expected shape ({G}*H, {i}) with H >= 1, got {w.shape}")
    h = w.shape[0] // G
    _check_shape("w_ih", w, (G * h, i))
    bias = _opt_array("b_ih", b_ih, xa.dtype, (G * h,))
    h0_ = None
    if h0 is not None:
        h0_ = _float_array("h0", h0, xa.dtype)
        _check_shape("h0", h0_, (b, h))
        bad = ~(np.isfinite(h0_) & (h0_ >= 0))
        if bad.any():
            idx = tuple(int(k) for k in np.argwhere(bad)[0])
            raise ValueError(
                "h0: expected finite values >= 0 (the log-space scan takes log h0), "
                f"got h0[{idx[0]}, {idx[1]}] = {h0_[idx]}"
            )
    training = _check_bool("training", training)
    ck = _check_chunk(chunk)
    n = t * b * h * (2 + (G + 1 if training else G)) + 2 * b * h  # y, workspaces, cache, h_n
    _check_memory(
        f"x, w_ih: T={t}, B={b}, H={h} ({cell}, training={training})", n * xa.dtype.itemsize
    )
    fwd = core.mingru_forward if cell == "mingru" else core.minlstm_forward
    y, h_n, cc = fwd(xa, h0_, w, bias, training, ck)
    return y, h_n, (MinimalCache(cell, cc, xa, w, bias) if training else None)


def _backward(
    cell: str, cache: Any, dy: Any, dh_n: Any, need_dx: Any, chunk: Any
) -> dict[str, Array | None]:
    if cache is None:
        raise ValueError(
            "cache: got None; the forward pass was run with training=False, which stores no activations"
        )
    if not isinstance(cache, MinimalCache):
        raise TypeError(
            f"cache: expected a rnnfast.minimal.MinimalCache from {cell}_forward, got {type(cache).__name__}"
        )
    if cache.cell != cell:
        raise ValueError(
            f"cache: expected a cache from {cell}_forward, got one from {cache.cell}_forward"
        )
    need_dx = _check_bool("need_dx", need_dx)
    ck = _check_chunk(chunk)
    t, b, _, h = cache.shape

    dy_ = _opt_array("dy", dy, cache.dtype, (t, b, h))
    dh_ = _opt_array("dh_n", dh_n, cache.dtype, (b, h))
    return core.minimal_backward(
        cell, cache._core, cache.x, cache.w_ih, cache.b_ih, dy_, dh_, need_dx, ck
    )


def mingru_forward(
    x: Any, h0: Any, w_ih: Any, b_ih: Any, *, training: bool = True, chunk: int | None = None
) -> tuple[Array, Array, MinimalCache | None]:
    """minGRU over a whole sequence (log-space parallel scan; see the module docstring).

    Args:
        x: (T, B, I) float32 or float64; sets the dtype of the call.
        h0: (B, H) with values >= 0, or None (zeros).
        w_ih: (2H, I), rows [W_z; W_h]. b_ih: (2H,) or None.
        training: False stores nothing and returns cache None.
        chunk: time steps per scan chunk; None = automatic (from T, B, H).

    Returns:
        y (T, B, H), h_n (B, H), cache (MinimalCache, or None when training=False).
    """
    return _forward("mingru", x, h0, w_ih, b_ih, training, chunk)


def mingru_backward(
    cache: Any, dy: Any, dh_n: Any = None, *, need_dx: bool = True, chunk: int | None = None
) -> dict[str, Array | None]:
    """Backward through :func:`mingru_forward`.

    Args:
        cache: the MinimalCache of mingru_forward (training=True).
        dy: (T, B, H) dL/dy or None (zeros). dh_n: (B, H) dL/dh_n or None (zeros). Same dtype as x.
        need_dx: False skips the dL/dx product ("x" is then None).
        chunk: as in the forward (None = automatic).

    Returns:
        dict with "x" (T, B, I) or None, "h0" (B, H), "w_ih" (2H, I), "b_ih" (2H,) or None (no
        bias), "dh_all" (T, B, H) = total dL/dh_t of every step.
    """
    return _backward("mingru", cache, dy, dh_n, need_dx, chunk)


def minlstm_forward(
    x: Any, h0: Any, w_ih: Any, b_ih: Any, *, training: bool = True, chunk: int | None = None
) -> tuple[Array, Array, MinimalCache | None]:
    """minLSTM over a whole sequence (log-space parallel scan; see the module docstring).

    Args:
        x: (T, B, I) float32 or float64. h0: (B, H) >= 0 or None (zeros).
        w_ih: (3H, I), rows [W_f; W_i; W_h]. b_ih: (3H,) or None.
        training, chunk: as in :func:`mingru_forward`.

    Returns:
        y (T, B, H), h_n (B, H), cache (MinimalCache or None).
    """
    return _forward("minlstm", x, h0, w_ih, b_ih, training, chunk)


def minlstm_backward(
    cache: Any, dy: Any, dh_n: Any = None, *, need_dx: bool = True, chunk: int | None = None
) -> dict[str, Array | None]:
    """Backward through :func:`minlstm_forward`; the keys of :func:`mingru_backward`, with
    "w_ih" (3H, I) and "b_ih" (3H,) or None."""
    return _backward("minlstm", cache, dy, dh_n, need_dx, chunk)
