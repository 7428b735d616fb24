"""The minimal recurrent layers :class:`MinGRU` and :class:`MinLSTM` (Feng et al. 2024, "Were
RNNs All We Needed?"), on the log-space parallel scan of :mod:`rnnfast.minimal`.

Equations (the paper's log-space form, the only one here): g(u) = u + 1/2 (u >= 0), sigmoid(u)
(u < 0);

* MinGRU: z = sigmoid(W_z x_t + b_z), h~ = g(W_h x_t + b_h), h_t = (1 - z) * h_{t-1} + z * h~;
* MinLSTM: f = sigmoid(W_f x_t + b_f), i = sigmoid(W_i x_t + b_i), h~ = g(W_h x_t + b_h),
  h_t = f / (f + i) * h_{t-1} + i / (f + i) * h~.

Parameters per layer k, PyTorch's naming of an input-to-hidden weight: ``weight_ih_l{k}``
(G*H, input size of layer k) with the gate blocks in rows ([W_z; W_h], G = 2; [W_f; W_i; W_h],
G = 3) and ``bias_ih_l{k}`` (G*H,) when ``bias``. There is no hidden-to-hidden weight: the gates
see x_t only. Layer k > 0 takes layer k-1's outputs. Every state is positive; an initial state
``hx`` (num_layers, B, H) must be >= 0 (None: zeros).

What the recurrent stacks of :mod:`rnnfast.nn.rnn` have and these do not: ragged batches
(``lengths``), truncated-BPTT streams, a backward direction, dropout between layers, the ``init``
presets (the gates have no recurrent block to make orthogonal; the weights start as PyTorch's
U(-1/sqrt(H), 1/sqrt(H))) and a compiled ``step()``. Each raises a ValueError naming the argument
and the cell (here, in :class:`~rnnfast.nn.SequenceModel` and in :func:`~rnnfast.nn.build_model`)
instead of running another computation. They run in a SequenceModel, ``fit`` (full BPTT) and the
built-in tasks that need none of these (``rnnfast train --task adding --cell mingru``).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from .. import minimal as F
from . import _precisionops
from ._util import Array, _as_float, _as_hx, _check_allocatable, _check_dtype, _check_int
from .module import (
    _NO_CACHE_MSG,
    _PUBLIC_MODULE,
    _FlatParams,
    _getstate,
    _Guard,
    _private,
    _setstate,
)

__all__ = ["MINIMAL_CELLS", "MinGRU", "MinLSTM", "MinimalRNNBase"]


class MinimalRNNBase(_FlatParams, _precisionops.PrecisionOption):
    """Shared implementation of :class:`MinGRU` and :class:`MinLSTM` (see their docstrings)."""

    _cell = "mingru"
    _gates = 2
    _pending = ("_cache",)
    #: what the callers written for :class:`~rnnfast.nn.RNNBase` ask of a stack (SequenceModel,
    #: fit): one direction, no dropout, never a truncated-BPTT stream
    bidirectional = False
    num_directions = 1
    dropout = 0.0
    _stream = None
    #: the scan kernels have no bf16 path: ``precision`` takes None or "fp32" (nn/_precisionops.py)
    _bf16_kernel = False

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dtype: Any = np.float32,
        seed: int | None = None,
        *,
        precision: str | None = None,
    ) -> None:
        self.input_size = _check_int("input_size", input_size, 1)
        self.hidden_size = _check_int("hidden_size", hidden_size, 1)
        self.num_layers = _check_int("num_layers", num_layers, 1)
        for name, flag in (("bias", bias), ("batch_first", batch_first)):
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"{name}: expected a bool, got {type(flag).__name__}")
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dtype = _check_dtype(dtype)
        self.precision = precision  # None or "fp32": the kernels run float32 (bf16: ValueError)
        if seed is not None:
            seed = _check_int("seed", seed, 0)
        self.seed = seed
        gh = self._gates * self.hidden_size
        n_in_total = self.input_size + (self.num_layers - 1) * self.hidden_size
        _check_allocatable(
            "input_size, hidden_size, num_layers",
            f"{type(self).__name__}(input_size={self.input_size}, hidden_size={self.hidden_size}, "
            f"num_layers={self.num_layers})",
            gh * (n_in_total + self.num_layers * self.bias),
            self.dtype,
        )
        rng = np.random.default_rng(seed)
        k = 1.0 / math.sqrt(self.hidden_size)  # PyTorch's RNN init: U(-1/sqrt(H), 1/sqrt(H))
        self._params: dict[str, Array] = OrderedDict()
        for layer in range(self.num_layers):
            n_in = self.input_size if layer == 0 else self.hidden_size
            self._params[f"weight_ih_l{layer}"] = rng.uniform(-k, k, (gh, n_in)).astype(self.dtype)
            if self.bias:
                self._params[f"bias_ih_l{layer}"] = rng.uniform(-k, k, gh).astype(self.dtype)
        self.grads: dict[str, Array] = OrderedDict()
        self._flatten()
        self.training = True
        #: per layer: dL/dh_t (T, B, H) of every step, from the most recent backward
        self.last_state_grads: list[Array] = []
        #: dL/dhx (num_layers, B, H) of the most recent backward
        self.grad_hx: Array | None = None
        self._cache: dict[str, Any] | None = None
        #: never drawn from (no dropout); here because ``fit`` seeds and checkpoints ``model.rnn.rng``
        #: of every stack
        self.rng = np.random.default_rng(seed)
        self._guard = _Guard()

    # --- housekeeping ---------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments (``type`` names the class)."""
        return {
            "type": type(self).__name__,
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "bias": self.bias,
            "batch_first": self.batch_first,
            "dtype": self.dtype.name,
            "seed": self.seed,
        } | _precisionops.config_items(self)

    @property
    def output_size(self) -> int:
        """Features of ``out``: hidden_size."""
        return self.hidden_size

    def __repr__(self) -> str:
        c = self.config()
        return (
            f"{type(self).__name__}("
            + ", ".join(f"{k}={v!r}" for k, v in c.items() if k != "type")
            + ")"
        )

    def __getstate__(self) -> dict[str, Any]:
        """``copy.deepcopy`` / ``pickle`` state (not a forward pass awaiting backward)."""
        return _getstate(self, MinimalRNNBase, ("_cache",))

    def __setstate__(self, d: dict[str, Any]) -> None:
        _setstate(self, MinimalRNNBase, d)

    # --- forward / backward ---------------------------------------------------------------------
    def _layer(self, layer: int) -> tuple[Array, Array | None]:
        return self._params[f"weight_ih_l{layer}"], self._params.get(f"bias_ih_l{layer}")

    def _split_hx(self, hx: Any, batch: int) -> list[Array | None]:
        shape = (self.num_layers, batch, self.hidden_size)
        if hx is None:
            return [None] * self.num_layers
        h0 = _as_hx(hx, self.dtype, shape, type(self).__name__)
        if not np.all(np.isfinite(h0) & (h0 >= 0)):
            raise ValueError("hx: expected finite values >= 0 (the log-space scan takes log hx)")
        return [h0[k] for k in range(self.num_layers)]

    def _unsupported(self, arg: str, what: str) -> ValueError:
        """The error for a feature of the recurrent stacks that this cell lacks."""
        return ValueError(
            f"{arg}: {type(self).__name__} (cell {self._cell!r}) has {what}; "
            "use rnnfast.GRU / LSTM (cells gru, lstm) for it"
        )

    def __call__(self, x: Any, hx: Any = None) -> tuple[Array, Array]:
        return self.forward(x, hx)

    def step(self, x_t: Any, state: Any = None) -> tuple[Array, Array]:
        """Not provided: raises ValueError (run :meth:`forward` over the whole sequence; with
        ``hx`` = the previous ``h_n`` a sequence can be continued chunk by chunk in eval mode)."""
        raise self._unsupported("step", "no step() (one-step streaming inference)")

    def forward(self, x: Any, hx: Any = None) -> tuple[Array, Array]:
        """Run the stack over a batch of sequences.

        Args:
            x: (T, B, input_size), or (B, T, input_size) with ``batch_first``; float32/float64
                (converted to the module dtype).
            hx: initial state (num_layers, B, H) with values >= 0, or None (zeros).

        Returns:
            out (T, B, H) (batch_first: (B, T, H)) and h_n (num_layers, B, H), module dtype.
        """
        return self._forward(x, hx, None, private=False)

    def _forward(self, x: Any, hx: Any, lengths: Any, private: bool) -> tuple[Array, Array]:
        """forward, called as :class:`~rnnfast.nn.SequenceModel` calls every stack: ``lengths``
        must be None (ValueError otherwise); ``private``: nobody else holds ``x`` (no copy)."""
        if lengths is not None:
            raise self._unsupported(
                "lengths",
                "no ragged batches (its scan runs every sequence over all T steps); "
                "pass lengths=None with sequences of equal length",
            )
        xa = _as_float("x", x, self.dtype)
        layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
        if xa.ndim != 3:
            raise ValueError(f"x: expected a 3-D array {layout}, got shape {xa.shape}")
        if self.batch_first:
            xa = np.ascontiguousarray(xa.transpose(1, 0, 2))
        if xa.shape[2] != self.input_size:
            raise ValueError(
                f"x: expected input size {self.input_size} in the last axis, got shape {np.shape(x)}"
            )
        if xa.shape[0] < 1 or xa.shape[1] < 1:
            raise ValueError(f"x: expected T >= 1 and B >= 1, got shape {np.shape(x)}")
        states = self._split_hx(hx, xa.shape[1])
        if not self.training:  # inference stores nothing: shareable between threads
            y, finals, _ = self._run(xa, states, False)
        else:
            if not private:  # backward reads x (dW_ih): keep it safe from in-place changes
                xa = _private(xa, x)
            g = self._guard
            g.enter(self, "forward")
            try:
                g.check_forward(self, "forward", self._cache is not None)
                y, finals, caches = self._run(xa, states, True)
                self._cache = {"caches": caches, "shape": xa.shape[:2]}
                g.owner = threading.current_thread()
            finally:
                g.exit()
        out = np.ascontiguousarray(y.transpose(1, 0, 2)) if self.batch_first else y
        return out, np.stack(finals)

    def _run(
        self, x: Array, states: list[Array | None], training: bool
    ) -> tuple[Array, list[Array], list[Any]]:
        fwd = F.mingru_forward if self._cell == "mingru" else F.minlstm_forward
        finals, caches = [], []
        inp = x
        for layer in range(self.num_layers):
            w, b = self._layer(layer)
            inp, h_n, cache = fwd(inp, states[layer], w, b, training=training)
            finals.append(h_n)
            caches.append(cache)
        return inp, finals, caches

    def backward(self, grad_output: Any, grad_state: Any = None) -> Array:
        """Backpropagate through the last forward pass; accumulate into :attr:`grads`.

        Args:
            grad_output: dL/dout, the shape of ``out`` (None = zeros).
            grad_state: dL/dh_n (num_layers, B, H) or None (zeros).

        Returns:
            dL/dx in the layout of x. Also sets :attr:`grad_hx` and :attr:`last_state_grads`.
            The stored activations are released: a second backward raises ValueError.
        """
        g = self._guard
        g.enter(self, "backward")
        try:
            g.check_backward(self, "backward", self._cache is not None)
            return self._backward(grad_output, grad_state)
        finally:
            g.exit()

    def _backward(self, grad_output: Any, grad_state: Any) -> Array:
        cache = self._cache
        if cache is None:
            raise ValueError(_NO_CACHE_MSG)
        t_steps, batch = cache["shape"]
        H = self.hidden_size
        dy: Array | None = None
        if grad_output is not None:
            dy = _as_float("grad_output", grad_output, self.dtype)
            exp = (batch, t_steps, H) if self.batch_first else (t_steps, batch, H)
            if dy.shape != exp:
                raise ValueError(f"grad_output: expected shape {exp}, got {dy.shape}")
            if self.batch_first:
                dy = np.ascontiguousarray(dy.transpose(1, 0, 2))
        dstates: list[Array | None] = [None] * self.num_layers
        if grad_state is not None:
            ds = _as_float("grad_state", grad_state, self.dtype)
            if ds.shape != (self.num_layers, batch, H):
                raise ValueError(
                    f"grad_state: expected shape {(self.num_layers, batch, H)}, got {ds.shape}"
                )
            dstates = [ds[k] for k in range(self.num_layers)]
        self._cache = None
        self._guard.owner = None
        bwd = F.mingru_backward if self._cell == "mingru" else F.minlstm_backward
        dh_alls: list[Array] = [np.empty(0)] * self.num_layers
        dhx: list[Array] = [np.empty(0)] * self.num_layers
        for layer in reversed(range(self.num_layers)):
            gr = bwd(cache["caches"][layer], dy, dstates[layer])
            self.grads[f"weight_ih_l{layer}"] += gr["w_ih"]
            if self.bias:
                self.grads[f"bias_ih_l{layer}"] += gr["b_ih"]
            dh_alls[layer] = gr["dh_all"]
            dhx[layer] = gr["h0"]
            dy = gr["x"]
        assert dy is not None
        self.last_state_grads = dh_alls
        self.grad_hx = np.stack(dhx)
        return np.ascontiguousarray(dy.transpose(1, 0, 2)) if self.batch_first else dy


class MinGRU(MinimalRNNBase):
    """minGRU stack (Feng et al. 2024), log-space form: z = sigmoid(W_z x_t + b_z),
    h_t = (1 - z) * h_{t-1} + z * g(W_h x_t + b_h), g(u) = u + 1/2 (u >= 0), sigmoid(u) (u < 0).

    ``weight_ih_l{k}`` (2H, in) = [W_z; W_h], ``bias_ih_l{k}`` (2H,). Trains with a parallel scan
    over time (:func:`rnnfast.minimal.mingru_forward`); forward(x, hx) -> (out, h_n),
    backward(grad_output, grad_state) -> dL/dx, like :class:`rnnfast.nn.GRU`.
    """

    __module__ = _PUBLIC_MODULE
    _cell = "mingru"
    _gates = 2


class MinLSTM(MinimalRNNBase):
    """minLSTM stack (Feng et al. 2024), log-space form: f, i = sigmoid(W_f x + b_f), sigmoid(W_i x + b_i),
    h_t = f/(f+i) * h_{t-1} + i/(f+i) * g(W_h x_t + b_h) (g as in :class:`MinGRU`); no cell state.

    ``weight_ih_l{k}`` (3H, in) = [W_f; W_i; W_h], ``bias_ih_l{k}`` (3H,); the rest as :class:`MinGRU`.
    """

    __module__ = _PUBLIC_MODULE
    _cell = "minlstm"
    _gates = 3


#: cell name (``build_model``, ``--cell``) -> module class of the minimal cells
MINIMAL_CELLS: dict[str, type[MinimalRNNBase]] = {"mingru": MinGRU, "minlstm": MinLSTM}
