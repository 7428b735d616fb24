"""Truncated BPTT(k1, k2) in the functional API: :func:`tbptt_grads` (the verification entry point,
its loop over chunks in C++) and :class:`TBPTTStream` (the streaming object a trainer calls once per
chunk). Both are re-exported by :mod:`rnnfast.functional`, whose argument checks they use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._cells import get_cell
from ._fcheck import (
    _GATES,
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
)
from ._loader import core

__all__ = ["TBPTTStream", "tbptt_grads"]


# --------------------------------------------------------------------------------------------------
# truncated BPTT
# --------------------------------------------------------------------------------------------------


def _check_cell(cell: Any) -> str:
    if cell not in _GATES:
        get_cell(cell)  # raises the ValueError that lists the registered cells
    return str(cell)


def _split_state(cell: str, state: Any, name: str = "state0") -> tuple[Any, Any]:
    """(h, c) from state: h, or (h, c) for a cell with a cell state (entries may be None); None =
    zeros."""
    if state is None:
        return None, None
    if get_cell(cell).has_cell_state:
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError(
                f"{name}: expected a tuple (h0, c0) for cell {cell!r}, got {type(state).__name__}"
            )
        return state[0], state[1]
    if isinstance(state, (tuple, list)):
        raise TypeError(
            f"{name}: expected an array (B, H) for cell {cell!r}, got {type(state).__name__}"
        )
    return state, None


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
    s = max(0, e - k2 + 1) held constant (weights fixed). Requires k2 >= k1 >= 1. The loop over
    chunks runs in C++ on the same streaming machinery as :class:`TBPTTStream` (memory O(k2),
    independent of T).

    Args:
        cell: "rnn", "lstm" or "gru". x: (T, B, I) float32/float64.
        state0: h0 (B, H), or (h0, c0) for lstm; None (or None entries) = zeros.
        params: dict with w_ih (G*H, I), w_hh (G*H, H), b_ih, b_hh (G*H,) (biases None or
            absent = no bias).
        dy: (T, B, H) upstream gradient of every step's output, or None (zeros).
        k1, k2: ints with k2 >= k1 >= 1. nonlinearity: "tanh" or "relu" (rnn only).

    Returns:
        ceil(T / k1) dicts with w_ih, w_hh, b_ih, b_hh (None without bias) and state0 = dL/dh0
        (or (dL/dh0, dL/dc0) for lstm), zero for updates whose window starts after step 0.
    """
    cell = _check_cell(cell)
    nl = _check_nonlinearity(nonlinearity)
    w_ih, w_hh, b_ih, b_hh = _check_params(params, cell)
    k1 = _check_k("k1", k1)
    k2 = _check_k("k2", k2)
    if k2 < k1:
        raise ValueError(f"k2: expected k2 >= k1 = {k1}, got {k2}")
    a = _Args(cell, x, w_ih, w_hh, b_ih, b_hh)
    h0, c0 = _split_state(cell, state0)
    h0_ = a.state("h0", h0)
    c0_ = a.state("c0", c0) if get_cell(cell).has_cell_state else None
    dy_ = np.zeros((a.T, a.B, a.H), a.dtype) if dy is None else a.arr("dy", dy, (a.T, a.B, a.H))
    # Windows and chunks never exceed T steps, so k1, k2 > T give the same updates as T: clamping
    # keeps the stream's buffers (2*k2 steps) bounded by the data instead of by k2.
    k1, k2 = min(k1, a.T), min(k2, a.T)
    extra = _extra_params(cell, params, a.dtype, a.H)
    return core.tbptt_grads(
        cell, a.x, h0_, c0_, a.w_ih, a.w_hh, a.b_ih, a.b_hh, dy_, k1, k2, nl, extra or None
    )


class TBPTTStream:
    """Streaming truncated BPTT(k1, k2) for a trainer that calls it once per chunk.

    The stream keeps the activations of the last k2 steps only (contiguous buffers of 2*k2 steps;
    memory independent of the stream length) and carries the state across chunks. A TBPTT(k1, k2)
    training loop over one layer::

        stream = TBPTTStream("lstm", params, (h0, c0), k1, k2)
        for chunk in chunks_of_k1_steps:            # x_chunk (L, B, I), L <= k1
            y = stream.forward(x_chunk)             # (L, B, H)
            start, stop = stream.window             # backward window, global steps [start, stop)
            dy = np.zeros((stop - start, B, H), y.dtype)
            dy[-len(y):] = dloss_dy(y)              # zero on the history steps before the chunk
            grads = stream.backward(dy)             # w_ih, w_hh, b_ih, b_hh, x, state0
            params = optimizer_step(params, grads)
            stream.set_params(params)

    For a stacked model, call each layer's forward in turn, then each backward from the top: the
    "x" gradient of layer l+1 over the window is the dy_window of layer l (nonzero on history
    steps).
    After set_params the history activations stay as computed with the old weights (standard
    TBPTT(k1, k2)); backward uses the current weights.

    Args:
        cell: "rnn", "lstm" or "gru".
        params: dict with w_ih (G*H, I), w_hh (G*H, H), b_ih, b_hh (G*H,) or None; their dtype
            (float32/float64) is the stream's dtype.
        state0: h0 (B, H) or (h0, c0) for lstm, or None (zeros; B then comes from the first chunk).
        k1: steps per chunk (forward takes 1..k1 steps). k2: window length, k2 >= k1.
        nonlinearity: "tanh" or "relu" (rnn only).

    Not thread-safe to share between trainers (calls are serialised by a lock, but the order of
    forward/backward across threads would be arbitrary).
    """

    def __init__(
        self,
        cell: str,
        params: Mapping[str, Any],
        state0: Any,
        k1: int,
        k2: int,
        *,
        nonlinearity: str = "tanh",
    ) -> None:
        self.cell = _check_cell(cell)
        self.nonlinearity = _check_nonlinearity(nonlinearity)
        self.k1 = _check_k("k1", k1)
        self.k2 = _check_k("k2", k2)
        if self.k2 < self.k1:
            raise ValueError(f"k2: expected k2 >= k1 = {self.k1}, got {self.k2}")
        self._params = self._check_stream_params(params)
        self.dtype: np.dtype = self._params[0].dtype
        gates = _GATES[self.cell]
        self.hidden_size: int = self._params[0].shape[0] // gates
        self.input_size: int = self._params[0].shape[1]
        self.has_bias: bool = self._params[2] is not None
        self._stream: Any = None
        self.batch_size: int | None = None
        h0, c0 = _split_state(self.cell, state0)
        if h0 is not None or c0 is not None:
            ref = h0 if h0 is not None else c0
            shape = np.shape(ref)
            if len(shape) != 2:
                raise ValueError(f"state0: expected shape (B, {self.hidden_size}), got {shape}")
            self._create(int(shape[0]))
            self.state = (h0, c0) if get_cell(self.cell).has_cell_state else h0

    # ---- helpers ----

    def _check_stream_params(self, params: Any) -> tuple[Any, ...]:
        w_ih, w_hh, b_ih, b_hh = _check_params(params, self.cell)
        gates = _GATES[self.cell]
        w_ih_ = _float_array("w_ih", w_ih, getattr(self, "dtype", None))
        if (
            w_ih_.ndim != 2
            or w_ih_.shape[0] % gates != 0
            or w_ih_.shape[0] == 0
            or w_ih_.shape[1] == 0
        ):
            raise ValueError(
                f"w_ih: expected shape ({gates}*H, I) with H, I >= 1, got {w_ih_.shape}"
            )
        if hasattr(self, "hidden_size"):
            _check_shape("w_ih", w_ih_, (gates * self.hidden_size, self.input_size))
        h = w_ih_.shape[0] // gates
        w_hh_ = _float_array("w_hh", w_hh, w_ih_.dtype)
        _check_shape("w_hh", w_hh_, (gates * h, h))
        if (b_ih is None) != (b_hh is None):
            raise ValueError("b_ih, b_hh: expected both arrays or both None, got one of each")
        if hasattr(self, "has_bias") and (b_ih is not None) != self.has_bias:
            raise ValueError(
                f"b_ih, b_hh: the stream was made {'with' if self.has_bias else 'without'} biases"
            )
        b_ih_ = b_hh_ = None
        if b_ih is not None:
            b_ih_ = _float_array("b_ih", b_ih, w_ih_.dtype)
            _check_shape("b_ih", b_ih_, (gates * h,))
            b_hh_ = _float_array("b_hh", b_hh, w_ih_.dtype)
            _check_shape("b_hh", b_hh_, (gates * h,))
        extra = _extra_params(self.cell, params, w_ih_.dtype, h)
        return (w_ih_, w_hh_, b_ih_, b_hh_, extra or None)

    def _create(self, batch: int) -> None:
        if batch < 1:
            raise ValueError(f"state0: expected a batch size >= 1, got {batch}")
        # The stream keeps 2*k2 steps of x, gates, states and aux (tbptt.hpp): check before the core
        # sizes its buffers (whose element counts would overflow int64 for absurd k2).
        gates, h, i = _GATES[self.cell], self.hidden_size, self.input_size
        steps = 2 * self.k2 + 1
        nbytes = steps * batch * (i + (gates + 3) * h) * self.dtype.itemsize
        _check_memory(f"k2: a stream with k2={self.k2}, batch={batch}, H={h}, I={i}", nbytes)
        cls = core.TBPTTStreamFloat32 if self.dtype == np.float32 else core.TBPTTStreamFloat64
        self._stream = cls(
            self.cell,
            self.nonlinearity,
            batch,
            self.input_size,
            self.hidden_size,
            self.k1,
            self.k2,
            self.has_bias,
        )
        self._stream.set_params(*self._params)
        self.batch_size = batch

    def _state_arr(self, name: str, a: Any) -> Array | None:
        if a is None:
            return None
        arr = _float_array(name, a, self.dtype)
        _check_shape(name, arr, (self.batch_size, self.hidden_size))
        return arr

    # ---- public ----

    @property
    def position(self) -> int:
        """Steps consumed so far (the global index of the next step)."""
        return 0 if self._stream is None else int(self._stream.position)

    @property
    def window(self) -> tuple[int, int]:
        """(start, stop): the current backward window, global steps [start, stop), half-open.

        stop = position, start = max(0, position - k2); backward's dy_window has stop - start steps.
        """
        if self._stream is None:
            return (0, 0)
        start, stop = self._stream.window
        return int(start), int(stop)

    @property
    def state(self) -> State | None:
        """The current state: h (B, H), or (h, c) for lstm (copies). None before the first chunk
        when the stream was made with state0=None.

        Setting it before the first forward sets the initial state (its gradient is backward's
        "state0"); setting it later replaces the state as a constant: no gradient of later windows
        flows into the steps before it (like :meth:`reset_state`).
        """
        if self._stream is None:
            return None
        return self._stream.get_state()

    @state.setter
    def state(self, value: Any) -> None:
        h, c = _split_state(self.cell, value, "state")
        if self._stream is None:
            ref = h if h is not None else c
            if ref is None:
                return
            self._create(int(np.shape(ref)[0]))
        self._stream.set_state(self._state_arr("h", h), self._state_arr("c", c))

    def reset_state(self, mask_or_indices: Any) -> None:
        """Zero the state of some sequences (stateful training: a new sequence starts in that row).

        mask_or_indices: bool array (B,) or integer indices into the batch. Their gradient is cut:
        later windows treat the zero state as a constant.
        """
        if self._stream is None:
            return
        B = self.batch_size
        arr = np.asarray(mask_or_indices)
        if arr.dtype == np.bool_:
            _check_shape("mask_or_indices", arr, (B,))
            mask = arr.astype(np.uint8)
        elif arr.dtype.kind in "iu":
            idx = arr.reshape(-1)
            if idx.size and (idx.min() < -B or idx.max() >= B):
                raise ValueError(
                    f"mask_or_indices: expected indices in [-{B}, {B}), "
                    f"got min {idx.min()}, max {idx.max()}"
                )
            mask = np.zeros(B, np.uint8)
            mask[idx] = 1
        else:
            raise TypeError(
                f"mask_or_indices: expected a bool mask ({B},) or integer indices, "
                f"got dtype {arr.dtype}"
            )
        self._stream.reset_rows(np.ascontiguousarray(mask))

    def set_params(self, params: Mapping[str, Any]) -> None:
        """Replace the weights (same shapes, dtype, bias presence), e.g. after an optimizer step."""
        self._params = self._check_stream_params(params)
        if self._stream is not None:
            self._stream.set_params(*self._params)

    def forward(self, x: Any) -> Array:
        """Advance by L = x.shape[0] steps (1 <= L <= k1): x (L, B, I) -> y (L, B, H)."""
        x_ = _float_array("x", x, self.dtype)
        if x_.ndim != 3:
            raise ValueError(
                f"x: expected a 3-D array (L, B, {self.input_size}), got shape {x_.shape}"
            )
        if self._stream is None:
            self._create(int(x_.shape[1]))
        L = x_.shape[0]
        if not 1 <= L <= self.k1:
            raise ValueError(f"x: expected 1 <= L <= k1 = {self.k1} steps, got shape {x_.shape}")
        _check_shape("x", x_, (L, self.batch_size, self.input_size))
        return self._stream.forward(x_)

    def backward(self, dy_window: Any, *, need_dx: bool = True) -> dict[str, Any]:
        """Gradients over the current window [start, stop) (see :attr:`window`).

        Args:
            dy_window: (stop - start, B, H) dL/dy over the WHOLE window (zeros on history steps
                for a single layer; the layer above's dx for a stacked model).
            need_dx: False skips the dx GEMM ("x" is then None).

        Returns:
            dict with w_ih, w_hh, b_ih, b_hh (None without bias); "x" = dL/dx over the window
            (W, B, I); "state0" = dL/dh0 (or (dL/dh0, dL/dc0) for lstm) when start == 0, else None.
        """
        if self._stream is None or self.position == 0:
            raise ValueError("backward: the stream has no steps yet (call forward first)")
        start, stop = self.window
        dy_ = _float_array("dy_window", dy_window, self.dtype)
        _check_shape("dy_window", dy_, (stop - start, self.batch_size, self.hidden_size))
        return self._stream.backward(dy_, _check_bool("need_dx", need_dx))

    def __repr__(self) -> str:
        return (
            f"TBPTTStream(cell={self.cell!r}, k1={self.k1}, k2={self.k2}, "
            f"position={self.position}, dtype={self.dtype})"
        )


TBPTTStream.__module__ = "rnnfast.functional"
tbptt_grads.__module__ = "rnnfast.functional"
