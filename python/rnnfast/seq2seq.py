"""Encoder-decoder (sequence-to-sequence) models: the many-to-many application of machine
translation, built from rnnfast's modules.

:class:`Seq2Seq` = source :class:`~rnnfast.modules.Embedding` -> encoder stack (RNN/LSTM/GRU) ->
its final state starts the decoder stack (same cell and layers) fed the target embedding ->
optional :class:`Attention` over the encoder outputs -> :class:`~rnnfast.modules.Linear` head.
Training is teacher-forced: the decoder reads the true previous target token, so encoder and
decoder each run as one call of the compiled core over the whole sequence (no Python time loop);
decoding (:meth:`Seq2Seq.greedy`, :meth:`Seq2Seq.beam_search`) feeds back its own choices one step
at a time (each step through ``decoder.step``; the loop is inherent).

Layout: time-major, as the rest of rnnfast. ``src`` (S, B) int64 token ids (padding after
``src_lengths``), ``tgt_in`` (T, B) int64 (``bos`` then the target shifted right), logits
(T, B, V_tgt). Target id conventions: ``pad`` (0 by default, ignored by the loss via
``CrossEntropyLoss(ignore_index=pad)``), ``bos`` (1), ``eos`` (2).

:class:`Attention` is Luong et al. (2015)'s global attention as a separate layer with its own
NumPy forward/backward (derivatives beside the code; checked against central finite differences
in float64 by tests/test_apps.py): scores ``dot`` (h_t . h_s) or ``general`` (h_t . W_a h_s),
a softmax over the valid source steps, the context c_t = sum_s a_ts h_s, and the attentional
state h~_t = tanh(W_c [c_t; h_t]) that feeds the head.

:func:`train_seq2seq` is a small training loop (Adam, gradient clipping, shuffled batches,
per-epoch records like :class:`rnnfast.History`); :func:`plot_attention` draws the weights.
Checkpoints: ``rnnfast.io.save(path, model)`` / ``rnnfast.io.load(path).build_model()``
(Seq2Seq is one of rnnfast's own classes).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._threads import with_single_thread_blas
from .modules import Embedding, Linear, RNNBase
from .nn.frozen import decode_step

__all__ = ["Attention", "Seq2Seq", "plot_attention", "train_seq2seq"]

_CELLS = RNNBase._classes  # cell name -> module class, for every registered cell (registry)
SCORES = ("dot", "general")


def _check_int(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int >= {lo}, got {type(value).__name__} {value!r}")
    if value < lo:
        raise ValueError(f"{name}: expected an int >= {lo}, got {value}")
    return int(value)


def _src_mask(lengths: np.ndarray | None, s_steps: int, batch: int) -> np.ndarray:
    """(B, S) bool: True at valid source steps."""
    if lengths is None:
        return np.ones((batch, s_steps), dtype=bool)
    return np.arange(s_steps)[None, :] < np.asarray(lengths)[:, None]


class Attention:
    """Luong global attention (``score="dot"`` or ``"general"``) with a tanh combination layer.

    Shapes (time-major, H = hidden size): ``forward(dec (T, B, H), enc (S, B, H),
    src_lengths (B,) | None) -> out (T, B, H)``; :attr:`last_weights` (T, B, S) holds the
    attention weights of the last forward. ``backward(d_out) -> (d_dec, d_enc)`` accumulates the
    parameter gradients into :attr:`grads`. Parameters: ``weight_a`` (H, H) (general only) and
    ``weight_c`` (H, 2H), initialised U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    """

    def __init__(
        self, hidden_size: int, score: str = "general", dtype: Any = np.float32, seed: int = 0
    ) -> None:
        self.hidden_size = _check_int("hidden_size", hidden_size, 1)
        if score not in SCORES:
            raise ValueError(f"score: expected one of {SCORES}, got {score!r}")
        self.score = score
        self.dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        h = self.hidden_size
        self._params: dict[str, np.ndarray] = OrderedDict()
        if score == "general":
            k = 1.0 / math.sqrt(h)
            self._params["weight_a"] = rng.uniform(-k, k, (h, h)).astype(self.dtype)
        k = 1.0 / math.sqrt(2 * h)
        self._params["weight_c"] = rng.uniform(-k, k, (h, 2 * h)).astype(self.dtype)
        self.grads: dict[str, np.ndarray] = OrderedDict(
            (n, np.zeros_like(p)) for n, p in self._params.items()
        )
        self.training = True
        self.last_weights: np.ndarray | None = None
        self._cache: dict[str, np.ndarray] | None = None

    def parameters(self) -> dict[str, np.ndarray]:
        """Live parameter arrays (``weight_a`` for general, ``weight_c``)."""
        return self._params

    def train(self, mode: bool = True) -> Attention:
        self.training = bool(mode)
        if not mode:
            self._cache = None
        return self

    def eval(self) -> Attention:
        return self.train(False)

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g.fill(0)

    def __call__(self, dec: Any, enc: Any, src_lengths: Any = None) -> np.ndarray:
        return self.forward(dec, enc, src_lengths)

    def keys(self, enc: Any) -> np.ndarray:
        """The keys K_s = W_a h_s (general) or h_s (dot), (B, S, H), of encoder outputs ``enc``
        (S, B, H): a decoding loop computes them once and passes them to every step's forward."""
        e = np.asarray(enc, dtype=self.dtype).transpose(1, 0, 2)  # (B, S, H)
        return e @ self._params["weight_a"].T if self.score == "general" else e

    def forward(
        self, dec: Any, enc: Any, src_lengths: Any = None, keys: np.ndarray | None = None
    ) -> np.ndarray:
        """h~ (T, B, H) from decoder states ``dec`` (T, B, H) and encoder outputs ``enc``
        (S, B, H); source steps at or past ``src_lengths`` get weight 0. ``keys``: those of
        :meth:`keys` for this ``enc`` (computed here when None; the same values either way)."""
        d = np.asarray(dec, dtype=self.dtype).transpose(1, 0, 2)  # (B, T, H)
        e = np.asarray(enc, dtype=self.dtype).transpose(1, 0, 2)  # (B, S, H)
        if d.ndim != 3 or e.ndim != 3 or d.shape[0] != e.shape[0] or d.shape[2] != e.shape[2]:
            raise ValueError(
                f"dec, enc: expected (T, B, H) and (S, B, H), got {dec.shape}, {enc.shape}"
            )
        if d.shape[2] != self.hidden_size:
            raise ValueError(f"dec: expected hidden size {self.hidden_size}, got {d.shape[2]}")
        mask = _src_mask(src_lengths, e.shape[1], e.shape[0])  # (B, S)
        k = self.keys(enc) if keys is None else keys  # K_s = W_a h_s (general) or h_s (dot)
        if k.shape != e.shape:
            raise ValueError(f"keys: expected shape {e.shape}, got {k.shape}")
        s = d @ k.transpose(0, 2, 1)  # scores S_ts = h_t . K_s  (B, T, S)
        s = np.where(mask[:, None, :], s, -np.inf)
        s = s - s.max(axis=2, keepdims=True)
        a = np.exp(s)
        a /= a.sum(axis=2, keepdims=True)  # a_ts = softmax_s(S_ts) over valid s
        c = a @ e  # context c_t = sum_s a_ts h_s  (B, T, H)
        z = np.concatenate([c, d], axis=2)  # [c_t; h_t]  (B, T, 2H)
        o = np.tanh(z @ self._params["weight_c"].T)  # h~_t = tanh(W_c [c_t; h_t])
        self.last_weights = np.ascontiguousarray(a.transpose(1, 0, 2))
        if self.training:
            self._cache = {"d": d, "e": e, "k": k, "a": a, "z": z, "o": o}
        return np.ascontiguousarray(o.transpose(1, 0, 2))

    def backward(self, grad_output: Any) -> tuple[np.ndarray, np.ndarray]:
        """dL/dh~ (T, B, H) -> (dL/ddec (T, B, H), dL/denc (S, B, H)); accumulates ``grads``."""
        cache = self._cache
        if cache is None:
            raise ValueError("backward: no forward pass in training mode to backpropagate")
        self._cache = None
        d, e, k, a, z, o = (cache[n] for n in ("d", "e", "k", "a", "z", "o"))
        h = self.hidden_size
        do = np.asarray(grad_output, dtype=self.dtype).transpose(1, 0, 2)  # (B, T, H)
        if do.shape != o.shape:
            raise ValueError(
                f"grad_output: expected shape {o.transpose(1, 0, 2).shape}, "
                f"got {np.shape(grad_output)}"
            )
        dpre = do * (1.0 - o * o)  # dL/d(W_c z) = dL/dh~ * (1 - tanh^2)
        self.grads["weight_c"] += np.einsum("bti,btj->ij", dpre, z)  # dL/dW_c = sum dpre z^T
        dz = dpre @ self._params["weight_c"]  # dL/dz = W_c^T dpre
        dc, dd = dz[:, :, :h], dz[:, :, h:]  # z = [c; h_t]: split the gradient
        da = dc @ e.transpose(0, 2, 1)  # dL/da_ts = dL/dc_t . h_s  (B, T, S)
        de = a.transpose(0, 2, 1) @ dc  # dL/dh_s += sum_t a_ts dL/dc_t  (B, S, H)
        # softmax: dL/dS_ts = a_ts (dL/da_ts - sum_s' a_ts' dL/da_ts'); masked steps have a = 0
        ds = a * (da - (a * da).sum(axis=2, keepdims=True))
        dd = dd + ds @ k  # dL/dh_t += sum_s dL/dS_ts K_s
        dk = ds.transpose(0, 2, 1) @ d  # dL/dK_s = sum_t dL/dS_ts h_t  (B, S, H)
        if self.score == "general":
            w_a = self._params["weight_a"]
            de = de + dk @ w_a  # K_s = W_a h_s: dL/dh_s += W_a^T dL/dK_s
            self.grads["weight_a"] += np.einsum("bsi,bsj->ij", dk, e)  # dL/dW_a = sum dK h_s^T
        else:
            de = de + dk  # K_s = h_s
        return (
            np.ascontiguousarray(dd.transpose(1, 0, 2)),
            np.ascontiguousarray(de.transpose(1, 0, 2)),
        )


class Seq2Seq:
    """Encoder-decoder with optional Luong attention; see the module docstring.

    Args:
        src_vocab, tgt_vocab: vocabulary sizes of source and target tokens.
        embedding_dim: size of both embeddings; hidden_size: H of encoder and decoder.
        cell: ``"rnn"`` (tanh), ``"lstm"``, ``"gru"`` or another registered cell with a module
            class (``"lstm_peephole"``); num_layers: layers of each stack.
        attention: None, ``"dot"`` or ``"general"``.
        pad, bos, eos: target ids of padding, start and end tokens.
        dtype: float32 or float64; seed: initialisation seed (each part gets its own stream).

    Parameter names: ``encoder_embedding.weight``, ``encoder.weight_ih_l0``, ...,
    ``decoder_embedding.weight``, ``decoder.*``, ``attention.weight_a`` / ``weight_c``,
    ``head.weight``, ``head.bias``.
    """

    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        embedding_dim: int = 32,
        hidden_size: int = 128,
        cell: str = "gru",
        num_layers: int = 1,
        attention: str | None = "general",
        pad: int = 0,
        bos: int = 1,
        eos: int = 2,
        dtype: Any = np.float32,
        seed: int = 0,
    ) -> None:
        if cell not in _CELLS:
            raise ValueError(f"cell: expected one of {', '.join(_CELLS)}, got {cell!r}")
        if attention is not None and attention not in SCORES:
            raise ValueError(f"attention: expected None or one of {SCORES}, got {attention!r}")
        self.src_vocab = _check_int("src_vocab", src_vocab, 1)
        self.tgt_vocab = _check_int("tgt_vocab", tgt_vocab, 3)
        self.embedding_dim = _check_int("embedding_dim", embedding_dim, 1)
        self.hidden_size = _check_int("hidden_size", hidden_size, 1)
        self.num_layers = _check_int("num_layers", num_layers, 1)
        for name, v in (("pad", pad), ("bos", bos), ("eos", eos)):
            if not 0 <= _check_int(name, v, 0) < self.tgt_vocab:
                raise ValueError(f"{name}: expected a target id < {self.tgt_vocab}, got {v}")
        self.pad, self.bos, self.eos = int(pad), int(bos), int(eos)
        self.cell = cell
        self.attention_score = attention
        self.dtype = np.dtype(dtype)
        self.seed = _check_int("seed", seed, 0)
        seeds = np.random.SeedSequence(self.seed).generate_state(5)
        e, h, kind = self.embedding_dim, self.hidden_size, _CELLS[cell]
        self.encoder_embedding = Embedding(src_vocab, e, dtype=dtype, seed=int(seeds[0]))
        self.encoder = kind(e, h, num_layers, dtype=dtype, seed=int(seeds[1]))
        self.decoder_embedding = Embedding(tgt_vocab, e, dtype=dtype, seed=int(seeds[2]))
        self.decoder = kind(e, h, num_layers, dtype=dtype, seed=int(seeds[3]))
        self.attention = (
            None
            if attention is None
            else Attention(h, attention, dtype=dtype, seed=int(seeds[4]) % 2**31)
        )
        self.head = Linear(h, tgt_vocab, dtype=dtype, seed=int(seeds[4]))
        self.training = True
        self._pending = False  # a training forward awaits its backward

    # --- parameters, modes, checkpoints -----------------------------------------------------------
    def _children(self) -> list[tuple[str, Any]]:
        parts = [
            ("encoder_embedding", self.encoder_embedding),
            ("encoder", self.encoder),
            ("decoder_embedding", self.decoder_embedding),
            ("decoder", self.decoder),
        ]
        if self.attention is not None:
            parts.append(("attention", self.attention))
        return [*parts, ("head", self.head)]

    def parameters(self) -> dict[str, np.ndarray]:
        """Live parameter arrays with prefixed names (optimizers update them in place)."""
        return OrderedDict(
            (f"{p}.{k}", v) for p, m in self._children() for k, v in m.parameters().items()
        )

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """Live gradient arrays, keys as :meth:`parameters`."""
        return OrderedDict((f"{p}.{k}", v) for p, m in self._children() for k, v in m.grads.items())

    def zero_grad(self) -> None:
        for _, m in self._children():
            m.zero_grad()

    @property
    def num_parameters(self) -> int:
        return int(sum(v.size for v in self.parameters().values()))

    def train(self, mode: bool = True) -> Seq2Seq:
        self.training = bool(mode)
        for _, m in self._children():
            m.train(mode)
        if not mode:
            self._pending = False
        return self

    def eval(self) -> Seq2Seq:
        return self.train(False)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter, keys as :meth:`parameters`."""
        return OrderedDict((k, v.copy()) for k, v in self.parameters().items())

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Copy arrays into the parameters (strict: the keys must match exactly; shapes always)."""
        params = self.parameters()
        missing = [k for k in params if k not in state_dict]
        extra = [k for k in state_dict if k not in params]
        if strict and (missing or extra):
            raise ValueError(f"state_dict: missing keys {missing}, unexpected keys {extra}")
        for k, p in params.items():
            if k not in state_dict:
                continue
            v = np.asarray(state_dict[k])
            if v.shape != p.shape:
                raise ValueError(f"state_dict[{k!r}]: expected shape {p.shape}, got {v.shape}")
            p[...] = v

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments (``Seq2Seq.from_config`` rebuilds the model)."""
        return {
            "type": "Seq2Seq",
            "src_vocab": self.src_vocab,
            "tgt_vocab": self.tgt_vocab,
            "embedding_dim": self.embedding_dim,
            "hidden_size": self.hidden_size,
            "cell": self.cell,
            "num_layers": self.num_layers,
            "attention": self.attention_score,
            "pad": self.pad,
            "bos": self.bos,
            "eos": self.eos,
            "dtype": self.dtype.name,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Seq2Seq:
        """Rebuild from :meth:`config` (used by ``rnnfast.io.Checkpoint.build_model``)."""
        kw = dict(cfg)
        if kw.pop("type", "Seq2Seq") != "Seq2Seq":
            raise ValueError(f"config: expected type 'Seq2Seq', got {cfg.get('type')!r}")
        return cls(**kw)

    def __repr__(self) -> str:
        return (
            f"Seq2Seq(src_vocab={self.src_vocab}, tgt_vocab={self.tgt_vocab}, "
            f"cell={self.cell!r}, hidden_size={self.hidden_size}, num_layers={self.num_layers}, "
            f"attention={self.attention_score!r})"
        )

    # --- teacher-forced forward / backward --------------------------------------------------------
    def _check_ids(self, name: str, ids: Any) -> np.ndarray:
        a = np.asarray(ids)
        if a.ndim != 2 or a.dtype.kind not in "iu":
            raise ValueError(f"{name}: expected a (T, B) integer array, got {a.dtype} {a.shape}")
        return a.astype(np.int64, copy=False)

    def encode(self, src: Any, src_lengths: Any = None) -> tuple[np.ndarray, Any]:
        """Encoder outputs (S, B, H) and final state (the decoder's initial state)."""
        s = self._check_ids("src", src)
        return self.encoder(self.encoder_embedding(s), None, src_lengths)

    def __call__(self, src: Any, tgt_in: Any, src_lengths: Any = None) -> np.ndarray:
        return self.forward(src, tgt_in, src_lengths)

    def forward(self, src: Any, tgt_in: Any, src_lengths: Any = None) -> np.ndarray:
        """Teacher-forced logits (T, B, V_tgt) for ``src`` (S, B) and ``tgt_in`` (T, B)."""
        t = self._check_ids("tgt_in", tgt_in)
        s = self._check_ids("src", src)
        if t.shape[1] != s.shape[1]:
            raise ValueError(f"tgt_in: expected batch {s.shape[1]} (src's), got {t.shape[1]}")
        lens = None if src_lengths is None else np.asarray(src_lengths, dtype=np.int64)
        enc, h_n = self.encode(s, lens)
        dec, _ = self.decoder(self.decoder_embedding(t), h_n)
        feat = dec if self.attention is None else self.attention(dec, enc, lens)
        if self.training:
            self._pending = True
        return self.head(feat)

    def backward(self, grad_output: Any) -> None:
        """dL/dlogits (T, B, V) -> accumulate every parameter's gradient (token inputs: no dx)."""
        if not self._pending:
            raise ValueError("backward: no forward pass in training mode to backpropagate")
        self._pending = False
        dfeat = self.head.backward(grad_output)
        if self.attention is None:
            ddec, denc = dfeat, None
        else:
            ddec, denc = self.attention.backward(dfeat)
        self.decoder_embedding.backward(self.decoder.backward(ddec))
        # the decoder started from the encoder's final state: dL/dh_n(encoder) = dL/dh_0(decoder)
        self.encoder_embedding.backward(self.encoder.backward(denc, self.decoder.grad_hx))

    # --- decoding ----------------------------------------------------------------------------------
    def _step_logits(
        self,
        step: Any,
        tokens: np.ndarray,
        state: Any,
        enc: np.ndarray,
        lens: np.ndarray | None,
        keys: np.ndarray | None,
    ) -> tuple[np.ndarray, Any, np.ndarray | None]:
        """One decoding step; ``step`` is the decoder's one-step function for this call
        (:func:`rnnfast.nn.frozen.decode_step`), ``keys`` the attention's keys of ``enc``."""
        emb = self.decoder_embedding.parameters()["weight"][tokens]
        h, state = step(emb, state)
        weights = None
        if self.attention is not None:
            h = self.attention.forward(h[None], enc, lens, keys)[0]
            weights = self.attention.last_weights[0]  # type: ignore[index]
        return np.asarray(self.head(h), dtype=np.float64), state, weights

    @with_single_thread_blas  # NumPy's BLAS pool would fight the kernels' threads
    def greedy(
        self, src: Any, src_lengths: Any = None, max_len: int = 32, return_attention: bool = False
    ) -> Any:
        """Greedy decoding: (T, B) int64 ids, each sequence ending with ``eos`` then ``pad``
        (T <= max_len; a sequence that never emits eos runs to max_len). With
        ``return_attention``: also the weights (T, B, S) (None without attention)."""
        max_len = _check_int("max_len", max_len, 1)
        was = self.training
        self.eval()
        try:
            lens = None if src_lengths is None else np.asarray(src_lengths, dtype=np.int64)
            enc, state = self.encode(src, lens)
            step = decode_step(self.decoder)
            keys = (
                None if self.attention is None else self.attention.keys(enc)
            )  # once, not per step
            batch = enc.shape[1]
            cur = np.full(batch, self.bos, dtype=np.int64)
            done = np.zeros(batch, dtype=bool)
            out, att = [], []
            for _ in range(max_len):
                logits, state, w = self._step_logits(step, cur, state, enc, lens, keys)
                cur = np.where(done, self.pad, np.argmax(logits, axis=1))
                out.append(cur)
                att.append(w)
                done |= cur == self.eos
                if done.all():
                    break
        finally:
            self.train(was)
        ids = np.stack(out)
        if not return_attention:
            return ids
        return ids, (None if self.attention is None else np.stack(att))

    @with_single_thread_blas  # NumPy's BLAS pool would fight the kernels' threads
    def beam_search(
        self, src: Any, src_lengths: Any = None, beam: int = 4, max_len: int = 32
    ) -> np.ndarray:
        """Beam search: the (T, B) int64 ids of the most probable hypothesis of each source (sum of
        log-probabilities; every beam of the batch advanced together, B * beam rows per step).
        A finished hypothesis (it emitted ``eos``) keeps its score and is padded."""
        beam = _check_int("beam", beam, 1)
        max_len = _check_int("max_len", max_len, 1)
        was = self.training
        self.eval()
        try:
            lens = None if src_lengths is None else np.asarray(src_lengths, dtype=np.int64)
            enc, state = self.encode(src, lens)
            step = decode_step(self.decoder)
            batch, v = enc.shape[1], self.tgt_vocab
            rep = np.repeat(np.arange(batch), beam)  # row b * beam + k is beam k of source b
            enc = np.ascontiguousarray(enc[:, rep])
            lens = None if lens is None else lens[rep]
            state = tuple(s[:, rep] for s in state) if isinstance(state, tuple) else state[:, rep]
            keys = (
                None if self.attention is None else self.attention.keys(enc)
            )  # once, not per step
            scores = np.full((batch, beam), -np.inf)
            scores[:, 0] = 0.0  # only the first beam is live at the start
            hist = np.zeros((0, batch, beam), dtype=np.int64)
            done = np.zeros((batch, beam), dtype=bool)
            cur = np.full(batch * beam, self.bos, dtype=np.int64)
            for _ in range(max_len):
                logits, state, _ = self._step_logits(step, cur, state, enc, lens, keys)
                logp = logits - logits.max(axis=1, keepdims=True)
                logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))  # log softmax
                logp = logp.reshape(batch, beam, v)
                # a finished hypothesis continues only with pad, at no cost
                logp[done] = -np.inf
                logp[done, self.pad] = 0.0
                total = (scores[:, :, None] + logp).reshape(batch, beam * v)
                top = np.argsort(-total, axis=1, kind="stable")[:, :beam]  # (B, beam)
                scores = np.take_along_axis(total, top, axis=1)
                src_beam, tok = top // v, top % v
                rows = np.arange(batch)[:, None]
                hist = np.concatenate([hist[:, rows, src_beam], tok[None]], axis=0)
                done = done[rows, src_beam] | (tok == self.eos)
                flat = (rows * beam + src_beam).reshape(-1)
                state = (
                    tuple(s[:, flat] for s in state) if isinstance(state, tuple) else state[:, flat]
                )
                cur = tok.reshape(-1)
                if done[:, 0].all():  # the best hypotheses are all finished
                    break
        finally:
            self.train(was)
        return np.ascontiguousarray(hist[:, :, 0])


def _teacher_forced_batch(
    model: Seq2Seq,
    src: np.ndarray,
    src_lengths: np.ndarray | None,
    tgt: np.ndarray,
    cols: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """The columns ``cols`` (indices or a slice) of a batch: (src (S, B), decoder input (T, B) =
    ``bos`` + tgt[:-1], src_lengths (B,) or None, tgt (T, B))."""
    y = tgt[:, cols]
    y_in = np.concatenate([np.full((1, y.shape[1]), model.bos), y[:-1]])
    lens = None if src_lengths is None else src_lengths[cols]
    return src[:, cols], y_in, lens, y


@with_single_thread_blas  # NumPy's BLAS pool would fight the kernels' threads
def train_seq2seq(
    model: Seq2Seq,
    src: np.ndarray,
    src_lengths: np.ndarray | None,
    tgt: np.ndarray,
    *,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 0.005,
    clip_norm: float | None = 1.0,
    seed: int = 0,
    val: tuple[np.ndarray, np.ndarray | None, np.ndarray] | None = None,
    callbacks: Sequence[Any] = (),
) -> list[dict[str, Any]]:
    """Train ``model`` with teacher forcing: Adam, cross-entropy ignoring ``pad``, clipping.

    ``src`` (S, N) ids, ``src_lengths`` (N,) or None, ``tgt`` (T, N) ids ending with ``eos``
    and padded with ``pad`` (the decoder input is ``bos`` + ``tgt[:-1]``). ``val``: an optional
    (src, src_lengths, tgt) triple scored each epoch. ``callbacks``: ``f(epoch, logs)`` functions
    or objects with ``on_epoch_end(epoch, logs)``. Returns one dict per epoch ("epoch", "loss",
    "val_loss", "time_s").
    """
    from .losses import CrossEntropyLoss
    from .optim import Adam, clip_grad_norm_

    loss_fn = CrossEntropyLoss(ignore_index=model.pad)
    opt = Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    n = src.shape[1]
    history: list[dict[str, Any]] = []
    model.train()
    for epoch in range(_check_int("epochs", epochs, 1)):
        t0 = time.perf_counter()
        order = rng.permutation(n)
        total, count = 0.0, 0
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            x, y_in, lens, y = _teacher_forced_batch(model, src, src_lengths, tgt, idx)
            model.zero_grad()
            logits = model(x, y_in, lens)
            value, dlogits = loss_fn(logits, y)
            model.backward(dlogits)
            grads = model.grads
            if clip_norm is not None:
                clip_grad_norm_(grads, clip_norm)
            opt.step(grads)
            total += float(value) * len(idx)
            count += len(idx)
        logs: dict[str, Any] = {"epoch": epoch + 1, "loss": total / count, "val_loss": None}
        if val is not None:
            logs["val_loss"] = seq2seq_loss(model, *val)
        logs["time_s"] = time.perf_counter() - t0
        history.append(logs)
        for cb in callbacks:
            (cb.on_epoch_end if hasattr(cb, "on_epoch_end") else cb)(epoch, logs)
    return history


def seq2seq_loss(
    model: Seq2Seq,
    src: np.ndarray,
    src_lengths: np.ndarray | None,
    tgt: np.ndarray,
    batch_size: int = 512,
) -> float:
    """Teacher-forced mean cross-entropy per target token (pad excluded), in eval mode."""
    from .losses import CrossEntropyLoss

    loss_fn = CrossEntropyLoss(ignore_index=model.pad, reduction="sum")
    was = model.training
    model.eval()
    try:
        total = 0.0
        for i in range(0, src.shape[1], batch_size):
            sl = slice(i, i + batch_size)
            x, y_in, lens, y = _teacher_forced_batch(model, src, src_lengths, tgt, sl)
            total += float(loss_fn.forward(model(x, y_in, lens), y))
    finally:
        model.train(was)
    return total / max(int((tgt != model.pad).sum()), 1)


def plot_attention(
    weights: Any,
    src_tokens: Sequence[str],
    tgt_tokens: Sequence[str],
    path: str | None = None,
    title: str | None = None,
) -> Any:
    """Draw attention weights (T, S) of one example as a heat map: target tokens down, source
    tokens across. Writes ``path`` if given; returns the matplotlib Figure (needs rnnfast[plot])."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape != (len(tgt_tokens), len(src_tokens)):
        raise ValueError(
            f"weights: expected shape ({len(tgt_tokens)}, {len(src_tokens)}) (targets, sources), "
            f"got {w.shape}"
        )
    fig, ax = plt.subplots(
        figsize=(max(4.0, 0.28 * len(src_tokens) + 1.5), 0.3 * len(tgt_tokens) + 1.5)
    )
    ax.imshow(w, cmap="viridis", aspect="auto", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(src_tokens)), [("␣" if t == " " else t) for t in src_tokens])
    ax.set_yticks(range(len(tgt_tokens)), list(tgt_tokens))
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig
