"""Truncated-BPTT streaming of a recurrent stack: a :class:`TBPTTSession` owns one stream.

``RNNBase.stream_begin`` makes a session (``module._stream``) and the ``stream_*`` methods of the
module delegate to it (they keep the thread guard of the module); the session holds the per-layer
C++ streams and what Python keeps of the window (dropout masks, and for replayable streams the
inputs, entering states and weights of the chunks in it).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._argcheck import check_lengths_dtype, check_shape
from . import _precisionops
from ._util import Array, State, _as_float, _check_int
from .backend import get_backend
from .module import _NO_CACHE_MSG

__all__ = ["TBPTTSession"]

_NAMES = ("w_ih", "w_hh", "b_ih", "b_hh")


def _names(m: Any) -> tuple[str, ...]:
    """Functional names of one layer's parameters: _NAMES, then the cell's extra parameters."""
    return _NAMES + tuple(n for n, _ in m._spec.extra_params)


class _Chunk:
    """One chunk a stream has run (kept while it overlaps a possible backward window).

    start, n: global steps [start, start + n). masks: per layer, the inter-layer dropout mask
    (n, B, H) applied to that layer's input (None for layer 0, without dropout, and in eval mode).
    For replay on checkpoint import (``replayable`` streams) also: x (n, B, I) the stack's input,
    states the state entering the chunk per layer (after resets), params the weights it ran with
    per layer ([w_ih, w_hh, b_ih, b_hh] copies) and resets the (B,) bool rows reset just before it
    (or None).
    """

    __slots__ = ("start", "n", "masks", "x", "states", "params", "resets")

    def __init__(self, start: int, n: int) -> None:
        self.start = start
        self.n = n
        self.masks: list[Array | None] = []
        self.x: Array | None = None
        self.states: list[State] | None = None
        self.params: list[list[Array | None]] | None = None
        self.resets: Array | None = None


class TBPTTSession:
    """Truncated-BPTT streaming state of one recurrent stack (see RNNBase.stream_begin).

    One ``functional.TBPTTStream`` per layer holds the activations of the last k2 steps (C++ buffers
    of 2*k2 steps) and the carried state; Python keeps only what the C++ side does not: the dropout
    masks of the chunks that overlap the current window and, for replayable streams, their inputs,
    entering states and weights (O(k2 + k1) steps: memory independent of the stream length).
    ``module`` is the stack the session streams (its weights are read at every chunk, its
    gradients accumulated by :meth:`backward`).
    """

    def __init__(
        self, module: Any, batch: int, k1: int, k2: int, lengths: Array | None, replayable: bool
    ) -> None:
        self.module = module
        self.batch = batch
        self.k1 = k1
        self.k2 = k2
        self.lengths = lengths  # absolute valid lengths (B,) or None
        self.replayable = replayable
        self.layers: list[Any] = []  # functional.TBPTTStream per layer
        self.origin = 0  # global index of the layers' position 0 (moves when history is dropped)
        self.chunks: list[_Chunk] = []
        self.pending_reset: Array | None = None  # (B,) bool: rows reset since the last chunk
        self.ready = False  # a training forward whose window has not been backpropagated yet

    @property
    def pos(self) -> int:
        """Global index of the next step."""
        return self.origin + int(self.layers[0].position)

    @property
    def window(self) -> int:
        """Length of the current backward window: the last min(k2, pos - origin) steps."""
        start, stop = self.layers[0].window
        return int(stop) - int(start)

    def window_masks(self, layer: int) -> Array | None:
        """Dropout mask (W, B, H) of ``layer``'s input over the current window (None: no dropout
        anywhere in it; steps run without a mask count as ones)."""
        stop = self.pos
        start = stop - self.window
        parts: list[tuple[int, Array | None]] = []
        for c in self.chunks:
            a, b = max(c.start, start), min(c.start + c.n, stop)
            if a < b:
                m = c.masks[layer] if layer < len(c.masks) else None
                parts.append((b - a, None if m is None else m[a - c.start : b - c.start]))
        assert sum(n for n, _ in parts) == stop - start, "stream chunks do not cover the window"
        given = [m for _, m in parts if m is not None]
        if not given:
            return None
        shape, dt = given[0].shape[1:], given[0].dtype
        return np.concatenate(
            [m if m is not None else np.ones((n,) + shape, dt) for n, m in parts], axis=0
        )

    def nbytes(self) -> int:
        """Bytes of NumPy arrays the Python side holds for the stream (tests: flat in T)."""
        total = 0 if self.pending_reset is None else self.pending_reset.nbytes
        for c in self.chunks:
            arrs: list[Any] = list(c.masks) + [c.x, c.resets]
            for s in c.states or []:
                arrs += list(s) if isinstance(s, tuple) else [s]
            for p in c.params or []:
                arrs += p
            total += sum(a.nbytes for a in arrs if a is not None)
        return total

    def start(self, states: list[State], origin: int) -> None:
        """(Re)create the per-layer C++ streams from ``states``; global step ``origin`` = position 0
        (no history before it)."""
        m = self.module
        cls = _tbptt_stream_class()
        self.layers = []
        for layer in range(m.num_layers):
            self.layers.append(
                cls(
                    m._cell,
                    m._param_dict(layer, 0),
                    states[layer],
                    self.k1,
                    self.k2,
                    nonlinearity=m.nonlinearity,
                )
            )
        self.origin = origin
        self.chunks = []
        self.pending_reset = None
        self.ready = False

    def run(self, x: Array, masks: list[Array | None], params: list[list[Array | None]]) -> Array:
        """One chunk through every layer's C++ stream: x (n, B, I) -> top output (n, B, H)."""
        m = self.module
        if m._precision is not None and (p := _precisionops.switch(m)):  # the module's mode
            return _precisionops.run_in(p, self.run, x, masks, params)
        inp = x
        for layer, s in enumerate(self.layers):
            s.set_params(dict(zip(_names(self.module), params[layer])))
            if masks[layer] is not None:
                inp = inp * masks[layer]
            inp = s.forward(inp)
        return inp

    def forward(self, x_chunk: Any) -> Array:
        """The next chunk (n, B, I), 1 <= n <= k1 -> the top layer's outputs (n, B, H) (see
        RNNBase.stream_forward)."""
        m = self.module
        xa = _as_float("x_chunk", x_chunk, m.dtype)
        if xa.ndim != 3 or xa.shape[1] != self.batch or xa.shape[2] != m.input_size:
            raise ValueError(
                f"x_chunk: expected shape (n, {self.batch}, {m.input_size}), got {xa.shape}"
            )
        n = xa.shape[0]
        if not 1 <= n <= self.k1:
            raise ValueError(
                f"x_chunk: expected 1 <= n <= k1 = {self.k1} time steps, got shape {xa.shape}"
            )
        start = self.pos
        valid = None
        if self.lengths is not None:
            valid = (start + np.arange(n))[:, None] < self.lengths[None, :]  # (n, B)
            if valid.all():
                valid = None
            else:  # padding: zero input (NaN padding must not reach the stored activations)
                xa = np.where(valid[:, :, None], xa, 0).astype(m.dtype)
        # chunks that end before the window this forward opens are no longer needed
        lo = start + n - self.k2
        while self.chunks and self.chunks[0].start + self.chunks[0].n <= lo:
            self.chunks.pop(0)
        chunk = _Chunk(start, n)
        chunk.resets, self.pending_reset = self.pending_reset, None
        masks: list[Array | None] = [None] * m.num_layers
        if m.training and m.dropout > 0.0:
            for layer in range(1, m.num_layers):  # inverted dropout, as in forward
                keep = m.rng.random((n, self.batch, m.hidden_size)) >= m.dropout
                masks[layer] = (keep / (1.0 - m.dropout)).astype(m.dtype)
        chunk.masks = masks
        if self.replayable:
            params = [
                [None if w is None else w.copy() for w in m._weights(layer, 0)]
                for layer in range(m.num_layers)
            ]
            chunk.x = xa.copy()
            chunk.states = [s.state for s in self.layers]
            chunk.params = params
        else:
            params = [m._weights(layer, 0) for layer in range(m.num_layers)]
        y = self.run(xa, masks, params)
        self.chunks.append(chunk)
        self.ready = m.training
        m._cache = None
        if valid is not None:
            y = np.where(valid[:, :, None], y, 0).astype(m.dtype)  # not y * 0: NaN * 0 = NaN
        return y

    def backward(self, dy_chunk: Any, need_dx: bool) -> Array | None:
        """Backward for the last chunk (see RNNBase.stream_backward): accumulates the weight
        gradients of the window into the module's grads; returns dL/dx over the window or None."""
        m = self.module
        if m._precision is not None and (p := _precisionops.switch(m)):  # the module's mode
            return _precisionops.run_in(p, self.backward, dy_chunk, need_dx)
        if not self.ready:
            raise ValueError(_NO_CACHE_MSG)
        dya = _as_float("dy_chunk", dy_chunk, m.dtype)
        win = self.window
        n = dya.shape[0] if dya.ndim == 3 else -1
        if dya.ndim != 3 or dya.shape[1:] != (self.batch, m.hidden_size) or not 1 <= n <= win:
            raise ValueError(
                f"dy_chunk: expected shape (n, {self.batch}, {m.hidden_size}) with n the "
                f"chunk length, got {dya.shape}"
            )
        self.ready = False
        dyw = np.zeros((win, self.batch, m.hidden_size), dtype=m.dtype)
        dyw[win - n :] = dya
        if self.lengths is not None:  # dL/dy at padded steps is ignored (packed-sequence semantics)
            steps = self.pos - n + np.arange(n)
            keep = (steps[:, None] < self.lengths[None, :])[:, :, None]
            dyw[win - n :] = np.where(keep, dyw[win - n :], 0)  # selected, not * 0 (NaN * 0 = NaN)
        dx: Array | None = None
        dstate0: list[Any] = [None] * m.num_layers
        for layer in reversed(range(m.num_layers)):
            want = layer > 0 or bool(need_dx)
            g = self.layers[layer].backward(dyw, need_dx=want)
            m._add_grads(layer, 0, g)
            dstate0[layer] = g["state0"]
            dx = g["x"]
            if layer > 0:
                mask = self.window_masks(layer)
                dyw = dx if mask is None else dx * mask  # d(inp * mask)/d inp = mask
        m.last_state_grads = []
        m._grad_hx_list = dstate0
        m.grad_hx = (
            None if any(s is None for s in dstate0) else m._join_states(dstate0)  # type: ignore[arg-type]
        )
        return dx

    @property
    def state(self) -> State:
        """The carried state ((L, B, H); LSTM (h, c))."""
        return self.module._join_states([s.state for s in self.layers])

    def reset(self, rows: Any = None, drop_history: bool = False) -> None:
        """Zero the carried state of ``rows`` (see RNNBase.stream_reset)."""
        mask = _rows_mask(rows, self.batch)
        self.ready = False
        self.module._cache = None
        if drop_history:
            states = []
            for s in self.layers:
                v = s.state
                parts = v if isinstance(v, tuple) else (v,)
                for p in parts:
                    p[mask] = 0
                states.append(v)
            self.start(states, self.pos)
            return
        for s in self.layers:
            s.reset_state(mask)
        self.pending_reset = mask if self.pending_reset is None else (self.pending_reset | mask)

    def export(self) -> dict[str, Any]:
        """The stream as ints and arrays (see RNNBase.stream_export)."""
        if not self.replayable:
            raise ValueError(
                "stream_export: the stream was begun with replayable=False (no stored history to "
                "rebuild it from); use stream_begin(..., replayable=True)"
            )
        out: dict[str, Any] = {
            "format": 2,
            "batch": self.batch,
            "k1": self.k1,
            "k2": self.k2,
            "pos": self.pos,
            "origin": self.origin,
            "n_chunks": len(self.chunks),
            "state": self.state,
        }
        if self.lengths is not None:
            out["lengths"] = self.lengths.copy()
        if self.pending_reset is not None:
            out["pending_reset"] = self.pending_reset.astype(np.uint8)
        for i, c in enumerate(self.chunks):
            assert c.x is not None and c.params is not None and c.states is not None
            out[f"c{i}_start"] = c.start
            out[f"c{i}_x"] = c.x
            if c.resets is not None:
                out[f"c{i}_reset"] = c.resets.astype(np.uint8)
            for layer in range(self.module.num_layers):
                if c.masks[layer] is not None:
                    out[f"c{i}_mask{layer}"] = c.masks[layer]
                for nm, w in zip(_names(self.module), c.params[layer]):
                    if w is not None:
                        out[f"c{i}_p{layer}_{nm}"] = w
                if i == 0:
                    out[f"c0_state{layer}"] = c.states[layer]
        return out

    def replay(self, d: Mapping[str, Any], n_chunks: int) -> None:
        """Run the ``n_chunks`` chunks stored in ``d`` (an export) again with their stored weights,
        masks and resets: rebuilds the C++ history of a session begun at their entering state."""
        m = self.module

        def arr(key: str) -> Array:
            return _as_float(key, d[key], m.dtype)

        for i in range(n_chunks):
            x = arr(f"c{i}_x")
            chunk = _Chunk(int(d[f"c{i}_start"]), x.shape[0])
            if chunk.start != self.pos:
                raise ValueError(
                    f"stream_import: chunk {i} starts at step {chunk.start}, expected {self.pos}"
                )
            if f"c{i}_reset" in d:
                chunk.resets = np.asarray(d[f"c{i}_reset"]).astype(bool)
                if i > 0:
                    for s in self.layers:
                        s.reset_state(chunk.resets)
            chunk.masks = [
                arr(f"c{i}_mask{layer}") if f"c{i}_mask{layer}" in d else None
                for layer in range(m.num_layers)
            ]
            chunk.params = [
                [
                    arr(f"c{i}_p{layer}_{nm}") if f"c{i}_p{layer}_{nm}" in d else None
                    for nm in _names(m)
                ]
                for layer in range(m.num_layers)
            ]
            chunk.x = x
            chunk.states = [s.state for s in self.layers]
            self.run(x, chunk.masks, chunk.params)
            self.chunks.append(chunk)


#: the name of :class:`TBPTTSession` before it became a session object
_Stream = TBPTTSession


def begin_session(
    module: Any,
    batch_size: int,
    k1: int,
    k2: int,
    hx: Any = None,
    lengths: Any = None,
    total_steps: int | None = None,
    replayable: bool = True,
) -> TBPTTSession:
    """Begin a new :class:`TBPTTSession` on ``module`` (its ``_stream``; the checks and semantics
    of RNNBase.stream_begin) and return it."""
    if module.bidirectional:
        raise ValueError(
            "stream_begin: truncated BPTT streams forward in time; a bidirectional "
            "module's backward direction needs the whole sequence (use bptt=None)"
        )
    if getattr(module, "proj_size", 0):
        raise ValueError(
            "stream_begin: LSTM(proj_size > 0) has no TBPTT stream yet; train it on whole "
            "sequences (bptt=None), or use rnnfast._proj.lstm_proj_tbptt_grads"
        )
    batch = _check_int("batch_size", batch_size, 1)
    k1 = _check_int("k1", k1, 1)
    k2 = _check_int("k2", k2, 1)
    if k2 < k1:
        raise ValueError(f"k2: expected k2 >= k1 = {k1}, got {k2}")
    if total_steps is not None:
        _check_int("total_steps", total_steps, 1)
    states = [
        s if s is not None else module._zero_state(batch) for s in module._split_hx(hx, batch)
    ]
    lens = None
    if lengths is not None:
        arr = np.asarray(lengths)
        check_lengths_dtype(arr.dtype, batch)
        check_shape("lengths", arr.shape, (batch,))
        if arr.size and arr.min() < 0:
            raise ValueError(f"lengths: expected lengths >= 0, got min {arr.min()}")
        lens = arr.astype(np.int64)
        empty = lens == 0
        if empty.any():  # a sequence of length 0: its state reaches no output, and a non-finite
            # one would run over its padding into the stored activations (0 * NaN in dW)
            states = [_zero_nonfinite_rows(s, empty) for s in states]  # type: ignore[misc]
    module._cache = None
    module._stream = session = TBPTTSession(module, batch, k1, k2, lens, bool(replayable))
    session.start(states, 0)  # type: ignore[arg-type]
    return session


def import_session(module: Any, d: Mapping[str, Any]) -> None:
    """RNNBase.stream_import: begin a replayable stream on ``module`` (through its
    ``stream_begin``) at the state entering the first stored chunk and replay the chunks."""
    batch, k1, k2 = int(d["batch"]), int(d["k1"]), int(d["k2"])

    def unpack(v: Any) -> Any:  # LSTM (h, c) may come back stacked as one (2, ..., B, H) array
        return (
            (v[0], v[1]) if module._spec.has_cell_state and not isinstance(v, (tuple, list)) else v
        )

    lengths = d.get("lengths")
    n_chunks = int(d.get("n_chunks", 0))
    if "n_chunks" not in d or n_chunks == 0:
        module.stream_begin(batch, k1, k2, hx=unpack(d["state"]), lengths=lengths)
        st = module._require_stream("stream_import")
        st.origin = int(d["pos"])
    else:
        first = [unpack(d[f"c0_state{layer}"]) for layer in range(module.num_layers)]
        hx0 = (
            (np.stack([s[0] for s in first]), np.stack([s[1] for s in first]))
            if module._spec.has_cell_state
            else np.stack(first)
        )
        module.stream_begin(batch, k1, k2, hx=hx0, lengths=lengths)
        st = module._require_stream("stream_import")
        st.origin = int(d["c0_start"])
        st.replay(d, n_chunks)
        if st.pos != int(d["pos"]):
            raise ValueError(
                f"stream_import: the stored chunks end at step {st.pos}, expected {int(d['pos'])}"
            )
        saved = unpack(d["state"])
        now = st.state
        for a, b in zip(
            saved if isinstance(saved, tuple) else (saved,),
            now if isinstance(now, tuple) else (now,),  # type: ignore[arg-type]
        ):
            a = np.asarray(a, dtype=module.dtype)
            if a.shape != b.shape or not np.allclose(a, b, rtol=1e-3, atol=1e-5):
                raise ValueError(
                    "stream_import: replaying the stored chunks does not reproduce the saved "
                    "state (corrupt or mismatched checkpoint)"
                )
    if "pending_reset" in d:
        mask = np.asarray(d["pending_reset"]).astype(bool)
        for s in st.layers:
            s.reset_state(mask)
        st.pending_reset = mask


def _rows_mask(rows: Any, batch: int) -> Array:
    if rows is None:
        return np.ones(batch, dtype=bool)
    arr = np.asarray(rows)
    if arr.dtype == np.bool_:
        if arr.shape != (batch,):
            raise ValueError(f"rows: expected a bool mask of shape ({batch},), got {arr.shape}")
        return arr.copy()
    if arr.dtype.kind not in "iu":
        raise TypeError(f"rows: expected integer indices or a bool mask, got dtype {arr.dtype}")
    idx = arr.reshape(-1).astype(np.int64)
    if idx.size and (idx.min() < -batch or idx.max() >= batch):
        raise ValueError(
            f"rows: expected indices in [-{batch}, {batch}), got min {idx.min()}, max {idx.max()}"
        )
    mask = np.zeros(batch, dtype=bool)
    mask[idx] = True
    return mask


def _zero_nonfinite_rows(state: State, rows: Array) -> State:
    """``state`` (B, H) (LSTM: (h, c)) with the rows selected by ``rows`` (B,) that hold a non-finite
    value set to zero (a copy; ``state`` itself is unchanged)."""
    if isinstance(state, tuple):
        return tuple(_zero_nonfinite_rows(s, rows) for s in state)  # type: ignore[return-value]
    bad = rows & ~np.isfinite(state).all(axis=1)
    if not bad.any():
        return state
    out = state.copy()
    out[bad] = 0
    return out


def _tbptt_stream_class() -> Any:
    """The C++ streaming TBPTT class: the backend's, else rnnfast.functional's (the reference
    backend has none: streaming always runs in the compiled core)."""
    cls = getattr(get_backend(), "TBPTTStream", None)
    if cls is None:
        from .. import functional

        cls = functional.TBPTTStream
    return cls


class _StreamingMethods:
    """The ``stream_*`` API of :class:`RNNBase`: thin wrappers over its :class:`TBPTTSession`
    (``self._stream``) that keep the module's thread guard."""

    _stream: TBPTTSession | None

    def stream_begin(
        self,
        batch_size: int,
        k1: int,
        k2: int,
        hx: Any = None,
        lengths: Any = None,
        total_steps: int | None = None,
        *,
        replayable: bool = True,
    ) -> None:
        """Start a TBPTT(k1, k2) stream of ``batch_size`` sequences (time-major chunks).

        Then call :meth:`stream_forward` with chunks of 1..k1 steps and, in training mode,
        :meth:`stream_backward` after each chunk: its gradient is that of the chunk's loss w.r.t.
        the weights through the window of the last k2 steps (``[e - k2 + 1, e]``, ``e`` = the
        chunk's last step), the state entering the window held constant: Williams & Peng's
        TBPTT(k1, k2), the semantics of ``functional.tbptt_grads``.

        Implementation: one ``functional.TBPTTStream`` per layer (the C++ core keeps the
        activations of the last k2 steps; memory independent of the stream length). Every step
        runs forward once: the k2 - k1 history steps of a window keep the activations computed
        when they were run, with the weights of that time; the backward uses the current weights
        (for k1 == k2 there is no history: exactly the classic detach-every-k-steps loop). The
        layer above's dL/dx over the window is the dL/dy of the layer below; inter-layer dropout
        masks are kept for the window, so a step's mask is the same in its forward and in every
        backward that reaches it. The weights are read from the module at every
        :meth:`stream_forward` (an optimizer step in between is seen by the next chunk and its
        backward).

        Args:
            batch_size: sequences B. k1: steps per chunk (at most). k2 >= k1: window length.
            hx: initial state as for forward ((L, B, H); LSTM (h0, c0)); None = zeros.
            lengths: optional (B,) absolute valid lengths of ragged streams: outputs are zero and
                dL/dy is ignored at steps >= lengths[b]; the input there is taken as zero (the row's
                state keeps running over the padding, which no valid step depends on).
            total_steps: accepted for compatibility (unused: windows never depend on the next
                chunk).
            replayable: keep the inputs, entering states and weights of the chunks in the window so
                that :meth:`stream_export` / :meth:`stream_import` can rebuild the C++ history
                exactly (checkpoints); False saves that memory and makes :meth:`stream_export`
                raise.

        Bidirectional stacks cannot stream (ValueError).
        """
        begin_session(self, batch_size, k1, k2, hx, lengths, total_steps, replayable)

    def _require_stream(self, name: str) -> TBPTTSession:
        if self._stream is None:
            raise ValueError(f"{name}: no stream; call stream_begin first")
        return self._stream

    def stream_forward(self, x_chunk: Any, next_len: int | None = None) -> Array:
        """Forward the next chunk (n, B, input_size), 1 <= n <= k1 (time-major even with
        batch_first); returns the top layer's outputs (n, B, H).

        Runs each layer's C++ stream once over the chunk with the module's current weights (and, in
        training mode, fresh inter-layer dropout masks). In training mode the window of the last k2
        steps can then be backpropagated once with :meth:`stream_backward`. In eval mode the chunk
        only advances the carried state (no dropout; no backward). ``next_len`` is accepted for
        compatibility and ignored. A stream belongs to one thread at a time (RuntimeError otherwise,
        see :meth:`forward`).
        """
        g = self._guard
        g.enter(self, "stream_forward")  # the stream's state is shared even in eval mode
        try:
            st = self._stream
            g.check_forward(self, "stream_forward", st is not None and st.ready)
            y = self._require_stream("stream_forward").forward(x_chunk)
            if self.training:
                g.owner = threading.current_thread()
            return y
        finally:
            g.exit()

    def stream_backward(self, dy_chunk: Any, need_dx: bool = True) -> Array | None:
        """Backward for the last chunk: dy_chunk (n, B, H) = dL/dy of the chunk's outputs.

        Backpropagates through the window of the last min(k2, steps) steps (stored activations,
        current weights), layer by layer from the top, and accumulates the weight gradients into
        :attr:`grads`. Returns dL/dx over the whole window (W, B, input_size) (None when
        ``need_dx`` is False). :attr:`grad_hx` is dL/d(initial state) when the window reaches back
        to the stream start, else None; :attr:`last_state_grads` is not filled by streams ([]).
        """
        g = self._guard
        g.enter(self, "stream_backward")
        try:
            st = self._stream
            g.check_backward(self, "stream_backward", st is not None and st.ready)
            return self._require_stream("stream_backward").backward(dy_chunk, need_dx)
        finally:
            g.exit()

    @property
    def stream_state(self) -> State | None:
        """The carried state of the current stream ((L, B, H); LSTM (h, c)); None without one."""
        if self._stream is None:
            return None
        return self._stream.state

    def stream_reset(self, rows: Any = None, drop_history: bool = False) -> None:
        """Zero the carried state of some sequences (a new sequence starts in those batch rows).

        Args:
            rows: integer indices or a (B,) bool mask; None = all rows.
            drop_history: False (default): per-row reset (``TBPTTStream.reset_state``): later
                windows treat the zero state as a constant, so no gradient of a reset row reaches
                back past the reset, while the other rows keep their k2-step history. True: also
                forget the history of every row (the next windows start at the reset); fit uses it
                after non-finite values, whose stored activations must not enter a later window.
        """
        self._require_stream("stream_reset").reset(rows, drop_history)

    def stream_export(self) -> dict[str, Any]:
        """The stream as ints and arrays (for checkpoints); inverse of :meth:`stream_import`.

        Holds the carried state and, for every chunk still inside a possible backward window, its
        input, dropout masks, resets and weights, plus the state entering the first one: enough for
        :meth:`stream_import` to rebuild the C++ activations by running those chunks again with the
        weights they had (bit for bit: training resumes exactly). Flat keys: "batch", "k1", "k2",
        "pos", "origin", "n_chunks", "state" (LSTM (h, c)), "c{i}_start", "c{i}_x", "c{i}_mask{l}",
        "c{i}_reset", "c{i}_p{l}_{w_ih,w_hh,b_ih,b_hh}", "c0_state{l}" (LSTM: (h, c)), "lengths",
        "pending_reset".
        """
        return self._require_stream("stream_export").export()

    def stream_import(self, d: Mapping[str, Any]) -> None:
        """Restore a stream saved by :meth:`stream_export`: begin a replayable stream at the state
        entering the first stored chunk and run the stored chunks again with their stored weights,
        masks and resets, which rebuilds the C++ history exactly. (A dict without "n_chunks", from
        an older rnnfast, restores the carried state only: the first windows then have no history.)
        """
        import_session(self, d)

    def stream_end(self) -> None:
        """Forget the stream (and any stored window)."""
        self._stream = None
        self._cache = None
