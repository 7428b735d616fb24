"""The sequence model: a recurrent stack plus a head (and optional token embedding)."""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._threads import single_thread_blas, with_single_thread_blas
from ._util import MODES, Array, State, _check_int
from .frozen import decode_step
from .layers import Embedding, Linear
from .minimal import MinimalRNNBase
from .module import _NO_CACHE_MSG, _PUBLIC_MODULE, Module, _getstate, _Guard, _setstate
from .rnn import RNNBase

__all__ = ["SequenceModel"]

#: rows * H of a head product from which forward / backward hold NumPy's BLAS at one thread
_BLAS_LIMIT_MIN = 1 << 16


class SequenceModel(Module):
    """A recurrent stack plus a head (and optional token embedding) for the four sequence shapes.

    ``SequenceModel(rnn, head, mode="many_to_many", embedding=None)``

    * ``many_to_many``: x (T, B, I) (token ids (T, B) with an embedding) -> pred (T, B, O);
      batch-major (B, T, ...) when ``rnn.batch_first``.
    * ``many_to_one``: -> pred (B, O), the head applied to the top layer's final state, i.e. the output
      at the last *valid* step of each (ragged) sequence; bidirectional: [forward final, backward final].
    * ``one_to_many``: trained like many_to_many (teacher forcing); :meth:`generate` feeds each output
      back as the next input.
    * ``one_to_one``: x (B, I) (ids (B,)) -> pred (B, O): one recurrent step from the zero state.

    Parameter names are prefixed: "rnn.weight_ih_l0", "head.weight", "embedding.weight".

    ``rnn`` is a recurrent stack (:class:`RNN`, :class:`LSTM`, :class:`GRU`, :class:`PeepholeLSTM`)
    or a minimal one (:class:`MinGRU`, :class:`MinLSTM`); with a minimal stack ``forward`` /
    ``backward`` / ``predict`` / ``fit`` work on dense batches, and what it lacks raises ValueError
    naming the argument and the cell: ``lengths``, the truncated-BPTT stream (``stream_*``, fit's
    ``bptt`` / ``stateful``) and ``step`` (so ``generate`` and the many_to_many ``forecast``).
    """

    __module__ = _PUBLIC_MODULE

    def __init__(
        self,
        rnn: RNNBase | MinimalRNNBase,
        head: Linear,
        mode: str = "many_to_many",
        embedding: Embedding | None = None,
    ) -> None:
        if not isinstance(rnn, (RNNBase, MinimalRNNBase)):
            raise TypeError(
                "rnn: expected an rnnfast RNN, LSTM, GRU, PeepholeLSTM, MinGRU or MinLSTM, got "
                f"{type(rnn).__name__}"
            )
        if not isinstance(head, Linear):
            raise TypeError(f"head: expected an rnnfast Linear, got {type(head).__name__}")
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        if embedding is not None and not isinstance(embedding, Embedding):
            raise TypeError(
                f"embedding: expected an rnnfast Embedding or None, got {type(embedding).__name__}"
            )
        if head.in_features != rnn.output_size:
            raise ValueError(
                f"head: expected in_features = rnn output size {rnn.output_size}, got "
                f"{head.in_features}"
            )
        if embedding is not None and embedding.embedding_dim != rnn.input_size:
            raise ValueError(
                f"embedding: expected embedding_dim = rnn input_size {rnn.input_size}, got "
                f"{embedding.embedding_dim}"
            )
        for name, m in (("head", head), ("embedding", embedding)):
            if m is not None and m.dtype != rnn.dtype:
                raise TypeError(f"{name}: expected dtype {rnn.dtype} (the rnn's), got {m.dtype}")
        self.rnn = rnn
        self.head = head
        self.mode = mode
        self.embedding = embedding
        self.dtype = rnn.dtype
        self.training = rnn.training
        #: final state of the last forward pass (as the rnn returns it).
        self.last_hidden: State | None = None
        self._fwd: dict[str, Any] | None = None
        self._stream_ids: Array | None = None
        self._guard = _Guard()
        self._join_buffers()

    def _join_buffers(self) -> None:
        """Gather the parts' parameters and gradients into one flat buffer each (in the order of
        :meth:`parameters`): each part's buffers become slices of the model's, its arrays views
        of them. Build optimizers over the parts after this (their arrays move here)."""
        parts = [m for _, m in self._children()]
        n = sum(m._flat_params.size for m in parts)
        fp, fg = np.empty(n, self.dtype), np.zeros(n, self.dtype)
        off = 0
        for m in parts:
            k = m._flat_params.size
            m._rehome(fp[off : off + k], fg[off : off + k])
            off += k
        self._flat_params, self._flat_grads = fp, fg

    # --- housekeeping ------------------------------------------------------------------------------
    def _children(self) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        if self.embedding is not None:
            out.append(("embedding", self.embedding))
        out += [("rnn", self.rnn), ("head", self.head)]
        return out

    def parameters(self) -> dict[str, Array]:
        """Live parameter arrays, prefixed "embedding.", "rnn.", "head." (optimizers update in place)."""
        return OrderedDict(
            (f"{p}.{k}", v) for p, m in self._children() for k, v in m.parameters().items()
        )

    @property
    def grads(self) -> dict[str, Array]:
        """The live gradient arrays, keys as :meth:`parameters`."""
        return OrderedDict((f"{p}.{k}", v) for p, m in self._children() for k, v in m.grads.items())

    def train(self, mode: bool = True) -> SequenceModel:
        """Training mode for every part."""
        self.training = bool(mode)
        for _, m in self._children():
            m.train(mode)
        if not mode:
            self._fwd = None
        return self

    def config(self) -> dict[str, Any]:
        """JSON-able description (rebuild with :func:`model_from_config`)."""
        return {
            "type": "SequenceModel",
            "mode": self.mode,
            "rnn": self.rnn.config(),
            "head": self.head.config(),
            "embedding": None if self.embedding is None else self.embedding.config(),
        }

    def __repr__(self) -> str:
        return (
            f"SequenceModel(mode={self.mode!r}, rnn={self.rnn!r}, head={self.head!r}, "
            f"embedding={self.embedding!r})"
        )

    def __getstate__(self) -> dict[str, Any]:
        """``copy.deepcopy`` / ``pickle`` state: the parts (see RNNBase.__getstate__), mode, last
        hidden state and a replayable stream's window ids; not a pending forward pass."""
        return _getstate(self, SequenceModel, ("_fwd",))

    def __setstate__(self, d: dict[str, Any]) -> None:
        _setstate(self, SequenceModel, d)

    @property
    def num_parameters(self) -> int:
        """Total number of scalar parameters."""
        return int(sum(v.size for v in self.parameters().values()))

    # --- forward / backward -------------------------------------------------------------------------
    def _embed(self, x: Any) -> Array:
        if self.embedding is None:
            return x
        return self.embedding.forward(x)

    def __call__(self, x: Any, lengths: Any = None, hx: Any = None) -> Array:
        return self.forward(x, lengths, hx)

    def _blas_limit(self, a: Any) -> Any:
        """single_thread_blas() for a call whose head product is large enough for NumPy's BLAS to
        wake its pool (rows * H >= 2**16: a user's own eval loop at (T 50, B 64, H 256) ran 1.34x
        slower beside it), else a no-op (holding the limit costs ~10 us a call)."""
        if isinstance(a, np.ndarray):
            shape = a.shape
        else:
            try:
                shape = np.shape(a)
            except Exception:  # noqa: BLE001 - not array-like: forward's own checks say so
                return contextlib.nullcontext()
        rows = (
            int(np.prod(shape[:2]))
            if self.mode != "one_to_one" and len(shape) >= 2
            else (shape[0] if shape else 1)
        )
        if rows * self.head.in_features >= _BLAS_LIMIT_MIN:
            return single_thread_blas()
        return contextlib.nullcontext()

    def forward(self, x: Any, lengths: Any = None, hx: Any = None) -> Array:
        """Predictions for a batch; shapes per mode (see the class docstring)."""
        with self._blas_limit(x):
            if not self.training:  # inference stores nothing: shareable between threads
                return self._forward(x, lengths, hx)
            g = self._guard
            g.enter(self, "forward")
            try:
                g.check_forward(self, "forward", self._fwd is not None)
                pred = self._forward(x, lengths, hx)
                g.owner = threading.current_thread()
                return pred
            finally:
                g.exit()

    def _forward(self, x: Any, lengths: Any, hx: Any) -> Array:
        rnn = self.rnn
        # arrays made here (embeddings, the rnn's outputs) are private: no defensive copies
        own = self.embedding is not None
        if self.mode == "one_to_one":
            if lengths is not None:
                raise ValueError(
                    "lengths: not used in one_to_one mode (a single step), got an array"
                )
            xa = np.asarray(x)
            need = 1 if self.embedding is not None else 2
            if xa.ndim != need:
                raise ValueError(
                    f"x: expected shape {'(B,)' if need == 1 else '(B, I)'} in one_to_one mode, "
                    f"got {xa.shape}"
                )
            e = self._embed(xa)
            e = e[:, None] if rnn.batch_first else e[None]
            out, h_n = rnn._forward(e, hx, None, private=own)
            feat = out[:, 0] if rnn.batch_first else out[0]
            self.last_hidden = h_n
            self._fwd = {"mode": "one_to_one", "shape": out.shape} if self.training else None
            return self.head._forward(feat, private=True)
        e = self._embed(x)
        out, h_n = rnn._forward(e, hx, lengths, private=own)
        self.last_hidden = h_n
        if self.mode == "many_to_one":
            h = h_n[0] if isinstance(h_n, tuple) else h_n
            top = h[-rnn.num_directions :]  # (D, B, H): final states of the top layer
            feat = top[0] if rnn.num_directions == 1 else np.concatenate([top[0], top[1]], axis=1)
            self._fwd = {"mode": "many_to_one", "batch": feat.shape[0]} if self.training else None
            return self.head._forward(feat, private=False)  # a view of last_hidden (public)
        self._fwd = {"mode": "seq"} if self.training else None
        return self.head._forward(out, private=True)

    def backward(self, grad_output: Any) -> Array | None:
        """dL/dpred -> dL/dx (None for token inputs); accumulates every part's gradients."""
        with self._blas_limit(grad_output):
            g = self._guard
            g.enter(self, "backward")
            try:
                g.check_backward(self, "backward", self._fwd is not None)
                return self._backward(grad_output)
            finally:
                g.exit()

    def _backward(self, grad_output: Any) -> Array | None:
        f = self._fwd
        if f is None:
            raise ValueError(_NO_CACHE_MSG)
        self._fwd = None
        rnn = self.rnn
        dfeat = self.head.backward(grad_output)
        if f["mode"] == "one_to_one":
            dout = dfeat[:, None] if rnn.batch_first else dfeat[None]
            dx = rnn.backward(dout)
            dx = dx[:, 0] if rnn.batch_first else dx[0]
        elif f["mode"] == "many_to_one":
            L, D = rnn.num_layers, rnn.num_directions
            H = rnn.output_size // D  # hidden_size, or an LSTM's proj_size
            dh = np.zeros((L * D, f["batch"], H), dtype=self.dtype)
            for d in range(D):
                dh[(L - 1) * D + d] = dfeat[:, d * H : (d + 1) * H]
            cell_state = isinstance(rnn, RNNBase) and rnn._spec.has_cell_state
            gs: Any = (dh, None) if cell_state else dh
            dx = rnn.backward(None, gs)
        else:
            dx = rnn.backward(dfeat)
        if self.embedding is not None:
            self.embedding.backward(dx)
            return None
        return dx

    # --- streaming inference ------------------------------------------------------------------------
    def step(self, x_t: Any, state: Any = None) -> tuple[Array, State]:
        """One time step of streaming inference: the rnn's :meth:`RNNBase.step`, then the head.

        Args:
            x_t: (B, I) floats, or token ids (B,) with an embedding.
            state: the recurrent state, as ``hx`` of the rnn ((num_layers, B, H); LSTM (h, c));
                None = zeros.

        Returns:
            (pred (B, O), new state). Nothing is stored for backward and dropout is off, in any
            mode; equal to ``forward`` run one step at a time in eval mode (to rounding).
        """
        emb = self.embedding
        if emb is not None:
            ids = emb._check_ids(x_t)
            if ids.ndim != 1:
                raise ValueError(f"x_t: expected token ids (B,), got shape {ids.shape}")
            x_t = emb._params["weight"][ids]
        h, state = self.rnn.step(x_t, state)
        head = self.head._params
        pred = h @ head["weight"].T
        if self.head.bias:
            pred += head["bias"]
        return pred, state

    # --- generation ---------------------------------------------------------------------------------
    @with_single_thread_blas  # NumPy's BLAS pool would fight the kernels' threads
    def generate(
        self,
        x0: Any,
        steps: int,
        *,
        temperature: float = 1.0,
        sample: bool = True,
        rng: np.random.Generator | None = None,
        hx: Any = None,
        feedback: str = "auto",
    ) -> Array:
        """Free-running generation (one-to-many): feed each output back as the next input.

        Args:
            x0: first input, (B, I) floats or token ids (B,) with an embedding.
            steps: number of outputs to produce.
            temperature, sample: for token outputs, sample from softmax(logits / temperature)
                (``sample=False``: argmax). ``rng``: a NumPy Generator (default: a fresh unseeded one).
            hx: initial recurrent state (e.g. ``last_hidden`` after a priming forward pass).
            feedback: "token" (feed the chosen id; needs an embedding), "onehot" (feed a one-hot
                vector of the chosen class; needs I == O), "value" (feed the prediction; needs I == O),
                "auto" = token with an embedding, else value.

        Returns: (steps, B) int64 token ids for token/onehot feedback, else (steps, B, O) values.
        The loop over generated steps is inherent (each input depends on the previous output); each
        step runs in the compiled core via ``rnn.step``, or, for an rnn with ``precision="bf16"``,
        via the ``step`` of ``rnn.freeze()`` (the weights are fixed for the call: packed to bf16
        once instead of in every step).
        """
        if isinstance(self.rnn, MinimalRNNBase):
            raise self.rnn._unsupported(
                "generate", "no step(), which generation feeds back through"
            )
        steps = _check_int("steps", steps, 1)
        if feedback == "auto":
            feedback = "token" if self.embedding is not None else "value"
        if feedback not in ("token", "onehot", "value"):
            raise ValueError(
                f"feedback: expected 'auto', 'token', 'onehot' or 'value', got {feedback!r}"
            )
        O, I = self.head.out_features, self.rnn.input_size
        if feedback == "token" and self.embedding is None:
            raise ValueError("feedback: 'token' needs a model with an embedding")
        if feedback in ("onehot", "value") and (self.embedding is not None or O != I):
            raise ValueError(
                f"feedback: {feedback!r} needs output size == input size and no embedding, "
                f"got O={O}, I={I}"
            )
        if (
            isinstance(temperature, (bool, np.bool_))
            or not isinstance(temperature, (int, float, np.integer, np.floating))
            or not temperature > 0
        ):
            raise ValueError(f"temperature: expected a float > 0, got {temperature!r}")
        rng = rng if rng is not None else np.random.default_rng()
        cur: Any = np.asarray(x0)
        if self.embedding is not None:
            if cur.ndim != 1:
                raise ValueError(f"x0: expected token ids (B,), got shape {cur.shape}")
        elif cur.ndim != 2 or cur.shape[1] != I:
            raise ValueError(f"x0: expected shape (B, {I}), got {cur.shape}")
        batch = cur.shape[0]
        state = hx
        tokens = feedback in ("token", "onehot")
        out = (
            np.zeros((steps, batch), dtype=np.int64)
            if tokens
            else np.zeros((steps, batch, O), self.dtype)
        )
        rnn_step = decode_step(self.rnn)  # bf16: one frozen pack, not one per step
        was = self.head.training
        self.head.train(False)
        try:
            for k in range(steps):
                inp = (
                    self.embedding._params["weight"][self.embedding._check_ids(cur)]
                    if self.embedding
                    else cur
                )
                h, state = rnn_step(inp, state)
                pred = self.head.forward(h)
                if not tokens:
                    out[k] = pred
                    cur = pred
                    continue
                logits = pred.astype(np.float64)
                if sample:
                    # softmax(logits / temperature), the max subtracted *before* dividing: a tiny
                    # temperature sends the others to -inf (probability 0), never inf - inf = NaN,
                    # so it tends to greedy decoding (ties share the probability)
                    with np.errstate(over="ignore"):
                        z = (logits - logits.max(axis=1, keepdims=True)) / float(temperature)
                    p = np.exp(z)
                    p /= p.sum(axis=1, keepdims=True)
                    u = rng.random((batch, 1))
                    ids = np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), O - 1)
                else:
                    ids = np.argmax(logits, axis=1)
                out[k] = ids
                cur = ids if feedback == "token" else np.eye(O, dtype=self.dtype)[ids]
        finally:
            self.head.train(was)
        return out

    # --- inference on a data set --------------------------------------------------------------------
    @with_single_thread_blas  # NumPy's BLAS pool would fight the kernels' threads
    def predict(self, x: Any, lengths: Any = None, *, batch_size: int | None = 256) -> Array:
        """Predictions for a whole data set in eval mode, ``batch_size`` sequences at a time.

        Args:
            x: inputs in the model's layout (class docstring): (T, N, I) / ids (T, N), batch-first
                (N, T, ...) when ``rnn.batch_first``; one_to_one (N, I) / (N,).
            lengths: optional int (N,) valid lengths of ragged sequences.
            batch_size: sequences per forward pass (None: all at once).

        Returns:
            pred with the batches joined back: many_to_one / one_to_one (N, O); many_to_many /
            one_to_many (T, N, O) ((N, T, O) batch-first). Dropout is off and nothing is stored for
            backward (eval mode); the model's train/eval mode is restored afterwards. ``last_hidden``
            holds the final state of the last batch only.
        """
        if batch_size is not None:
            batch_size = _check_int("batch_size", batch_size, 1)
        xa = np.asarray(x)
        seq = self.mode != "one_to_one"
        x_axis = 1 if (seq and not self.rnn.batch_first) else 0
        if xa.ndim <= x_axis:
            raise ValueError(f"x: expected a batch of inputs, got shape {xa.shape}")
        n = xa.shape[x_axis]
        lens = None if lengths is None else np.asarray(lengths)
        if lens is not None and lens.shape != (n,):
            raise ValueError(
                f"lengths: expected shape ({n},) (x's batch axis {x_axis}), got {lens.shape}"
            )
        step = n if batch_size is None else batch_size
        seq_out = self.mode in ("many_to_many", "one_to_many")
        out_axis = 1 if (seq_out and not self.rnn.batch_first) else 0
        was = self.training
        self.eval()
        try:
            parts = []
            for i in range(0, max(n, 1), max(step, 1)):
                sl = (slice(None),) * x_axis + (slice(i, i + step),)
                parts.append(self.forward(xa[sl], None if lens is None else lens[i : i + step]))
        finally:
            self.train(was)
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=out_axis)

    @with_single_thread_blas  # NumPy's BLAS pool would fight the kernels' threads
    def forecast(self, x: Any, steps: int) -> Array:
        """Multi-step autoregressive forecast: each prediction becomes the next input.

        Args:
            x: the history, (T, B, I) floats ((B, T, I) batch-first); no embedding.
            steps: how many future steps to produce (>= 1).

        Returns:
            (steps, B, I) ((B, steps, I) batch-first), in eval mode (restored afterwards).

        * many_to_one (a model trained on :func:`rnnfast.data.windows`): the output (B, k * I)
          holds the next k steps (k = 1 for ``horizon=1``); the window slides by k each call and
          always has the last T steps, as in training.
        * many_to_many / one_to_many (trained to predict the next step at every step, O == I): one
          forward pass over the history, then :meth:`generate` from the final state, feeding each
          prediction back (``feedback="value"``).

        Errors compound: a forecast n steps ahead is no better than the model's one-step error
        allows; compare it with a persistence forecast (repeat the last value).
        """
        steps = _check_int("steps", steps, 1)
        if self.embedding is not None:
            raise ValueError("forecast: a model over token ids generates tokens; use generate()")
        if self.mode == "one_to_one":
            raise ValueError("forecast: needs a sequence model, got mode 'one_to_one'")
        xa = np.asarray(x)
        bf = self.rnn.batch_first
        I, O = self.rnn.input_size, self.head.out_features
        if xa.ndim != 3 or xa.shape[2] != I or xa.shape[1 if bf else 0] < 1:
            want = "(B, T, I)" if bf else "(T, B, I)"
            raise ValueError(f"x: expected a history {want} with I = {I}, got shape {xa.shape}")
        hist = np.swapaxes(xa, 0, 1) if bf else xa  # (T, B, I)
        t_len, batch = hist.shape[:2]
        was = self.training
        self.eval()
        try:
            if self.mode == "many_to_one":
                if O % I:
                    raise ValueError(
                        f"forecast: a many_to_one model forecasts k steps of I = {I} values per "
                        f"call, so its output size must be a multiple of {I}, got {O}"
                    )
                k = O // I
                outs: list[Array] = []
                made = 0
                while made < steps:  # one forward pass per k steps (each input depends on them)
                    window = np.ascontiguousarray(np.swapaxes(hist, 0, 1) if bf else hist)
                    nxt = self.forward(window).reshape(batch, k, I).swapaxes(0, 1)  # (k, B, I)
                    outs.append(nxt)
                    hist = np.concatenate([hist, nxt.astype(hist.dtype, copy=False)])[-t_len:]
                    made += k
                out = np.concatenate(outs)[:steps]
            else:
                if O != I:
                    raise ValueError(
                        f"forecast: feeding predictions back needs output size == input size, "
                        f"got O={O}, I={I}"
                    )
                pred = self.forward(xa)
                last = pred[:, -1] if bf else pred[-1]  # (B, O): the first forecast step
                out = last[None]
                if steps > 1:
                    rest = self.generate(last, steps - 1, hx=self.last_hidden, feedback="value")
                    out = np.concatenate([out, rest])
        finally:
            self.train(was)
        return np.ascontiguousarray(np.swapaxes(out, 0, 1)) if bf else out

    # --- truncated BPTT streaming -------------------------------------------------------------------
    def _check_streams(self, what: str) -> None:
        """ValueError for a minimal stack (MinGRU / MinLSTM), which has no TBPTT stream."""
        rnn = self.rnn
        if isinstance(rnn, MinimalRNNBase):
            raise ValueError(
                f"bptt/stateful: {what} needs a truncated-BPTT stream, which "
                f"{type(rnn).__name__} (cell {rnn._cell!r}) lacks; train it with full BPTT "
                "(fit with bptt=None, stateful=False) or use a gru / lstm cell"
            )

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
        """Start a TBPTT(k1, k2) stream (many_to_many / one_to_many only); see RNNBase.stream_begin.

        A training loop over a long batch (time-major x (T, B, I), targets y)::

            model.stream_begin(B, k1, k2)
            for a in range(0, T, k1):
                pred = model.stream_forward(x[a : a + k1])      # (n, B, O), n <= k1
                value, dpred = loss(pred, y[a : a + k1])
                model.stream_backward(dpred)                    # grads of the last k2 steps' window
                optimizer.step(model.grads); model.zero_grad()  # the next chunk sees the new weights
            model.stream_end()
        """
        self._check_streams("stream_begin")
        if self.mode not in ("many_to_many", "one_to_many"):
            raise ValueError(
                f"stream_begin: truncated BPTT needs a per-step output (many_to_many or "
                f"one_to_many), got mode {self.mode!r}"
            )
        self.rnn.stream_begin(batch_size, k1, k2, hx, lengths, total_steps, replayable=replayable)
        self._stream_ids = None

    def stream_forward(self, x_chunk: Any, next_len: int | None = None) -> Array:
        """Chunk (n, B, I) (ids (n, B)), time-major -> predictions (n, B, O); see RNNBase.stream_forward."""
        self._check_streams("stream_forward")
        if self.embedding is not None:
            ids = self.embedding._check_ids(x_chunk)
            e = self.embedding._params["weight"][ids]
        else:
            ids = None
            e = x_chunk
        y = self.rnn.stream_forward(e)
        if ids is not None:  # the ids of the window, for the embedding's gradient
            st = self.rnn._stream
            assert st is not None
            prev = self._stream_ids if self._stream_ids is not None else ids[:0]
            allids = np.concatenate([prev, ids], axis=0)
            self._stream_ids = allids[allids.shape[0] - st.window :]
        return self.head._forward(y, private=True)

    def stream_backward(self, grad_chunk: Any) -> None:
        """Backward for the last chunk's predictions (n, B, O); accumulates gradients of the window."""
        self._check_streams("stream_backward")
        dy = self.head.backward(grad_chunk)
        dxw = self.rnn.stream_backward(dy, need_dx=self.embedding is not None)
        if self.embedding is not None:
            assert self._stream_ids is not None and dxw is not None
            self.embedding.backward_ids(self._stream_ids[-dxw.shape[0] :], dxw)

    @property
    def stream_state(self) -> State | None:
        """Carried recurrent state of the current stream (None without one)."""
        if isinstance(self.rnn, MinimalRNNBase):
            return None
        return self.rnn.stream_state

    def stream_reset(self, rows: Any = None, drop_history: bool = False) -> None:
        """Zero the carried state of ``rows`` (all when None); see RNNBase.stream_reset."""
        self._check_streams("stream_reset")
        self.rnn.stream_reset(rows, drop_history)

    def stream_export(self) -> dict[str, Any]:
        """Stream state for checkpoints (RNNBase.stream_export plus the window's token ids)."""
        self._check_streams("stream_export")
        d = self.rnn.stream_export()
        if self._stream_ids is not None:
            d["ids"] = self._stream_ids.copy()
        return d

    def stream_import(self, d: Mapping[str, Any]) -> None:
        """Restore a stream saved by :meth:`stream_export`."""
        self._check_streams("stream_import")
        self.rnn.stream_import(d)
        self._stream_ids = (
            None if d.get("ids") is None else np.asarray(d["ids"], dtype=np.int64).copy()
        )

    def stream_end(self) -> None:
        """Forget the stream (nothing to forget with a minimal stack, which has none)."""
        if isinstance(self.rnn, MinimalRNNBase):
            self._stream_ids = None
            return
        self.rnn.stream_end()
        self._stream_ids = None
