"""Recurrent stacks: :class:`RNN`, :class:`LSTM` and :class:`GRU` over :class:`RNNBase`.

PyTorch's conventions throughout (``torch.nn.RNN`` / ``LSTM`` / ``GRU``): argument names, parameter
names (``weight_ih_l0``, ``bias_hh_l1_reverse``, ...), shapes, gate orders (LSTM i, f, g, o; GRU r,
z, n) and initial-state layout (``(num_layers * num_directions, B, H)``). Every time step runs in
the compiled core (:mod:`rnnfast.functional`): the Python code loops over layers and directions only.
Bidirectional ragged batches reverse each sequence within its own valid length with one vectorised
gather. Truncated-BPTT streaming lives in :mod:`rnnfast.nn.streaming`, the per-layer states
(``hx`` split and joined) and one-step inference (``step``) in :mod:`rnnfast.nn._stateops`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._argcheck import check_bool, check_nonlinearity
from .._cells import CellSpec, get_cell
from . import _precisionops, _regularise
from ._cellops import _cell_backward, _cell_forward, _gather_time, _init_layer, _reverse_index
from ._projops import _init_proj_layer, _proj_backward, _proj_forward
from ._stateops import _StateMethods, _step_ready  # noqa: F401  (_step_ready: rnnfast.modules)
from ._util import (
    INIT_PRESETS,
    Array,
    State,
    _as_float,
    _as_lengths,
    _check_allocatable,
    _check_dtype,
    _check_int,
    _module_name,
)
from .backend import get_backend
from .module import (
    _NO_CACHE_MSG,
    _PUBLIC_MODULE,
    _FlatParams,
    _getstate,
    _Guard,
    _private,
    _rebuild_streaming,
    _setstate,
)
from .streaming import TBPTTSession, _StreamingMethods

__all__ = ["RNNBase", "RNN", "LSTM", "GRU", "PeepholeLSTM", "ResetBeforeGRU"]


class RNNBase(_StateMethods, _StreamingMethods, _FlatParams, _precisionops.PrecisionOption):
    """Shared implementation of :class:`RNN`, :class:`LSTM` and :class:`GRU` (see their docstrings)."""

    __module__ = _PUBLIC_MODULE
    _cell = "rnn"
    #: the registry entry of ``_cell`` (set again for every subclass from its own ``_cell``)
    _spec: CellSpec = get_cell("rnn")
    _pending = ("_cache",)
    #: LSTM's projection size P (h_t = W_hr (o * tanh(c_t)), h is P wide); 0 = none (other cells)
    proj_size = 0

    #: cell name -> the module class that runs it (the first class registered per cell)
    _classes: dict[str, type[RNNBase]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._spec = get_cell(cls._cell)
        RNNBase._classes.setdefault(cls._cell, cls)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        dtype: Any = np.float32,
        seed: int | None = None,
        init: str = "torch",
        *,
        zoneout: Any = 0.0,
        recurrent_dropout: float = 0.0,
        precision: str | None = None,
    ) -> None:
        self.input_size = _check_int("input_size", input_size, 1)
        self.hidden_size = _check_int("hidden_size", hidden_size, 1)
        self.num_layers = _check_int("num_layers", num_layers, 1)
        if self.proj_size >= self.hidden_size:
            raise ValueError(
                f"proj_size: expected 0 <= proj_size < hidden_size = {self.hidden_size}, "
                f"got {self.proj_size}"
            )
        check_nonlinearity(nonlinearity)
        if nonlinearity not in self._spec.nonlinearities:
            raise ValueError(
                f"nonlinearity: only RNN takes a nonlinearity, got {nonlinearity!r} for "
                f"{type(self).__name__}"
            )
        self.nonlinearity = nonlinearity
        self.bias = check_bool("bias", bias)
        self.batch_first = check_bool("batch_first", batch_first)
        self.bidirectional = check_bool("bidirectional", bidirectional)
        if isinstance(dropout, bool) or not isinstance(
            dropout, (int, float, np.floating, np.integer)
        ):
            raise TypeError(f"dropout: expected a float in [0, 1), got {type(dropout).__name__}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout: expected a float in [0, 1), got {dropout}")
        self.dropout = float(dropout)
        _regularise.configure(self, zoneout, recurrent_dropout)  # zoneout, recurrent dropout
        self.dtype = _check_dtype(dtype)
        self.precision = precision  # checked by the setter (nn/_precisionops.py)
        if init not in INIT_PRESETS:
            raise ValueError(f"init: expected one of {INIT_PRESETS}, got {init!r}")
        self.init = init
        if seed is not None:
            seed = _check_int("seed", seed, 0)
        self.seed = seed
        self.num_directions = 2 if self.bidirectional else 1
        self.training = True

        seq = np.random.SeedSequence(seed)
        init_seq, drop_seq = seq.spawn(2)
        init_rng = np.random.default_rng(init_seq)
        #: RNG of the inter-layer dropout masks (seeded from ``seed``; saved in training checkpoints).
        self.rng = np.random.default_rng(drop_seq)
        gh = self._spec.gate_size(self.hidden_size)
        n_out = self.num_directions * self._h_size  # input size of layers >= 1
        n_in_total = self.input_size + (self.num_layers - 1) * n_out
        # per direction: w_ih of every layer, plus w_hh and both biases of every layer
        n_params = (
            self.num_directions
            * gh
            * (n_in_total + self.num_layers * (self._h_size + 2 * self.bias))
        ) + self.num_directions * self.num_layers * self.proj_size * self.hidden_size
        _check_allocatable(
            "input_size, hidden_size, num_layers",
            f"{type(self).__name__}(input_size={self.input_size}, hidden_size={self.hidden_size}, "
            f"num_layers={self.num_layers}, bidirectional={self.bidirectional})",
            n_params,
            self.dtype,
        )
        self._params: dict[str, Array] = OrderedDict()
        for layer in range(self.num_layers):
            n_in = self.input_size if layer == 0 else self._h_size * self.num_directions
            for d in range(self.num_directions):
                if self.proj_size:
                    w = _init_proj_layer(
                        init_rng,
                        init,
                        n_in,
                        self.hidden_size,
                        self.proj_size,
                        self.bias,
                        self.dtype,
                    )
                else:
                    w = _init_layer(
                        init_rng, self._cell, init, n_in, self.hidden_size, self.bias, self.dtype
                    )
                sfx = self._suffix(layer, d)
                self._params[f"weight_ih{sfx}"] = w["w_ih"]  # type: ignore[assignment]
                self._params[f"weight_hh{sfx}"] = w["w_hh"]  # type: ignore[assignment]
                if self.bias:
                    self._params[f"bias_ih{sfx}"] = w["b_ih"]  # type: ignore[assignment]
                    self._params[f"bias_hh{sfx}"] = w["b_hh"]  # type: ignore[assignment]
                for name, _ in self._spec.extra_params:
                    self._params[f"{_module_name(name)}{sfx}"] = w[name]  # type: ignore[assignment]
                if self.proj_size:
                    self._params[f"weight_hr{sfx}"] = w["w_hr"]  # type: ignore[assignment]
        self.grads: dict[str, Array] = OrderedDict()
        self._flatten()
        #: per layer and direction (index layer * num_directions + d): dL/dh_t (T, B, H) of every step
        #: from the most recent backward (time-aligned with the input also for reverse directions).
        self.last_state_grads: list[Array] = []
        #: gradient w.r.t. the initial state hx of the most recent backward (h0, or (h0, c0) for LSTM).
        self.grad_hx: State | None = None
        self._grad_hx_list: list[State | None] = []
        self._cache: dict[str, Any] | None = None
        self._stream: TBPTTSession | None = None
        # step()'s preallocated input buffers, one set per thread: a module in eval mode may be
        # shared by threads, and a shared buffer would let one thread overwrite another's input.
        self._step_local = threading.local()
        self._guard = _Guard()  # one training thread at a time (see _Guard)

    # --- names -------------------------------------------------------------------------------------
    @staticmethod
    def _suffix(layer: int, d: int) -> str:
        return f"_l{layer}" + ("_reverse" if d == 1 else "")

    def _weights(self, layer: int, d: int) -> list[Array | None]:
        sfx = self._suffix(layer, d)
        p = self._params
        return [
            p[f"weight_ih{sfx}"],
            p[f"weight_hh{sfx}"],
            p.get(f"bias_ih{sfx}"),
            p.get(f"bias_hh{sfx}"),
            *(p[f"{_module_name(name)}{sfx}"] for name, _ in self._spec.extra_params),
            *((p[f"weight_hr{sfx}"],) if self.proj_size else ()),
        ]

    def _param_dict(self, layer: int, d: int) -> dict[str, Array | None]:
        """The functional parameters of one layer and direction by name (w_ih, w_hh, b_ih, b_hh,
        then the cell's extra parameters): views of the flat buffer."""
        names = ("w_ih", "w_hh", "b_ih", "b_hh", *(n for n, _ in self._spec.extra_params))
        names += ("w_hr",) if self.proj_size else ()
        return dict(zip(names, self._weights(layer, d)))

    def _add_grads(self, layer: int, d: int, g: Mapping[str, Any]) -> None:
        """grads += the functional gradient dict ``g`` of one layer and direction."""
        sfx = self._suffix(layer, d)
        self.grads[f"weight_ih{sfx}"] += g["w_ih"]
        self.grads[f"weight_hh{sfx}"] += g["w_hh"]
        if self.bias:
            self.grads[f"bias_ih{sfx}"] += g["b_ih"]
            self.grads[f"bias_hh{sfx}"] += g["b_hh"]
        for name, _ in self._spec.extra_params:
            self.grads[f"{_module_name(name)}{sfx}"] += g[name]
        if self.proj_size:
            self.grads[f"weight_hr{sfx}"] += g["w_hr"]

    def stream_begin(self, *args: Any, **kwargs: Any) -> None:
        _regularise.check_streaming(self)  # the streams do not apply zoneout / recurrent dropout
        super().stream_begin(*args, **kwargs)

    stream_begin.__doc__ = _StreamingMethods.stream_begin.__doc__

    # --- PyTorch-like housekeeping (parameters, train/eval, state_dict: Module) -----------------
    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments (``type`` names the class); see :func:`model_from_config`."""
        cfg: dict[str, Any] = {
            "type": type(self).__name__,
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
        }
        if len(self._spec.nonlinearities) > 1:  # the cell takes a choice (RNN: tanh or relu)
            cfg["nonlinearity"] = self.nonlinearity
        cfg.update(
            bias=self.bias,
            batch_first=self.batch_first,
            dropout=self.dropout,
            bidirectional=self.bidirectional,
            dtype=self.dtype.name,
            seed=self.seed,
            init=self.init,
        )
        if self.proj_size:
            cfg["proj_size"] = self.proj_size
        cfg.update(_regularise.config_items(self))
        cfg.update(_precisionops.config_items(self))
        return cfg

    @property
    def output_size(self) -> int:
        """Features of ``out``: hidden_size (proj_size when set) * num_directions."""
        return self._h_size * self.num_directions

    @property
    def _h_size(self) -> int:
        """Width of h and of each direction's output: proj_size when set, else hidden_size."""
        return self.proj_size or self.hidden_size

    def __repr__(self) -> str:
        c = self.config()
        args = ", ".join(f"{k}={v!r}" for k, v in c.items() if k not in ("type",))
        return f"{type(self).__name__}({args})"

    # --- copying and pickling ------------------------------------------------------------------------
    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        """``copy.deepcopy`` / ``pickle``: configuration, parameters, gradients, dropout RNG, mode
        (see :meth:`__getstate__`) and a TBPTT stream: a replayable one is exported and rebuilt on
        the copy (:meth:`stream_export` / :meth:`stream_import`, exact); a stream begun with
        ``replayable=False`` cannot be copied (TypeError)."""
        st = self._stream
        rv = super().__reduce_ex__(protocol)
        if st is None:
            return rv
        if not st.replayable:
            raise TypeError(
                f"cannot copy or pickle a {type(self).__name__} in the middle of a TBPTT stream "
                "begun with replayable=False (its history lives in the compiled core only); call "
                "stream_end() first, or begin the stream with replayable=True"
            )
        return (
            _rebuild_streaming,
            (rv[0], rv[1], rv[2] if len(rv) > 2 else None, self.stream_export()),
        )

    def __getstate__(self) -> dict[str, Any]:
        """The attributes to copy: not the activations of a forward pass awaiting backward (the
        copy's backward needs a forward of its own), the stream (see :meth:`__reduce_ex__`), the
        thread guard or the per-thread ``step`` buffers."""
        d = _getstate(self, RNNBase, ("_cache", "_stream"))
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        _setstate(self, RNNBase, d)
        self._step_local = threading.local()

    # --- forward / backward -------------------------------------------------------------------------
    def __call__(self, x: Any, hx: Any = None, lengths: Any = None) -> tuple[Array, State]:
        return self.forward(x, hx, lengths)

    def freeze(self, precision: Any = None) -> Any:
        """An inference-only snapshot with the weights packed once: a
        :class:`~rnnfast.nn.frozen.FrozenRNN` with this module's ``forward`` (eval mode) and
        ``step``, which skip the per-call packing of W_hh (and, in bf16, the conversion of the
        weights). ``precision``: "fp32", "bf16", or None (the module's precision, else the thread's
        mode now). Later changes to this module's weights are not seen: freeze again after training.
        """
        from .frozen import FrozenRNN

        return FrozenRNN(self, precision)

    def forward(self, x: Any, hx: Any = None, lengths: Any = None) -> tuple[Array, State]:
        """Run the stack over a batch of sequences.

        Args:
            x: (T, B, input_size), or (B, T, input_size) with ``batch_first``; float32/float64.
            hx: initial state, (num_layers * num_directions, B, H) (LSTM: a tuple (h0, c0)); None = 0.
            lengths: optional int array (B,) of valid lengths (ragged batch, padding at the end);
                outputs at padded steps are 0 and h_n is the state after the last valid step.

        Returns:
            out (T, B, num_directions * H) (batch_first: (B, T, D*H)) and h_n
            (num_layers * num_directions, B, H) (LSTM: (h_n, c_n)), in the module dtype.
        """
        return self._forward(x, hx, lengths, private=False)

    def _forward(self, x: Any, hx: Any, lengths: Any, private: bool) -> tuple[Array, State]:
        """forward; ``private``: the caller guarantees that nobody else holds ``x`` (no copy)."""
        xt = self._time_major_input(x)
        lens = _as_lengths(lengths, xt.shape[1], xt.shape[0])
        states = self._split_hx(hx, xt.shape[1])
        if not self.training:  # inference stores nothing: shareable between threads
            y, finals, _ = self._run(xt, states, lens, False, None)
        else:
            if not private:  # backward reads x (dW_ih): keep it safe from in-place changes
                xt = _private(xt, x)
            g = self._guard
            g.enter(self, "forward")
            try:
                g.check_forward(self, "forward", self._cache is not None)
                y, finals, cache = self._run(xt, states, lens, True, None)
                self._cache = cache
                g.owner = threading.current_thread()
            finally:
                g.exit()
        out = np.ascontiguousarray(y.transpose(1, 0, 2)) if self.batch_first else y
        return out, self._join_states(finals)

    def _time_major_input(self, x: Any) -> Array:
        xa = _as_float("x", x, self.dtype)
        if xa.ndim != 3:
            layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
            raise ValueError(f"x: expected a 3-D array {layout}, got shape {xa.shape}")
        if self.batch_first:
            xa = np.ascontiguousarray(xa.transpose(1, 0, 2))
        if xa.shape[2] != self.input_size:
            raise ValueError(
                f"x: expected input size {self.input_size} in the last axis, got shape "
                f"{np.asarray(x).shape}"
            )
        if xa.shape[0] < 1 or xa.shape[1] < 1:
            raise ValueError(f"x: expected T >= 1 and B >= 1, got shape {np.asarray(x).shape}")
        return xa

    def _run(
        self,
        x: Array,
        states: list[State | None],
        lengths: Array | None,
        training: bool,
        masks: list[Array | None] | None,
    ) -> tuple[Array, list[State], dict[str, Any] | None]:
        """Forward through every layer/direction (time-major). ``masks`` overrides the dropout masks.

        Returns (y (T, B, D*H), final states per layer/direction, cache or None).
        """
        if self._precision is not None and (p := _precisionops.switch(self)):  # module's mode
            return _precisionops.run_in(p, self._run, x, states, lengths, training, masks)
        F = get_backend()
        t_steps, batch, _ = x.shape
        D, H = self.num_directions, self._h_size
        rev_idx = _reverse_index(t_steps, batch, lengths) if self.bidirectional else None
        finals: list[State] = []
        layer_caches: list[list[Any]] = []
        used_masks: list[Array | None] = [None]
        # one layer and direction: the masked kernels (zoneout / recurrent dropout, masks drawn per
        # call), the projected LSTM's, or the cell's
        layer_fwd = _regularise.layer_forward(self, training) or (
            _proj_forward if self.proj_size else _cell_forward
        )
        inp = x
        for layer in range(self.num_layers):
            if layer > 0:
                mask = None
                if training and self.dropout > 0.0:
                    if masks is not None and masks[layer] is not None:
                        mask = masks[layer]
                    else:  # inverted dropout: keep with prob 1-p, scale by 1/(1-p)
                        keep = self.rng.random(inp.shape) >= self.dropout
                        mask = (keep / (1.0 - self.dropout)).astype(self.dtype)
                    inp = inp * mask
                used_masks.append(mask)
            ys = []
            dcaches = []
            for d in range(D):
                xin = inp if d == 0 else _gather_time(inp, rev_idx)  # type: ignore[arg-type]
                y, fin, cache = layer_fwd(
                    F,
                    self._cell,
                    self.nonlinearity,
                    xin,
                    states[layer * D + d],
                    self._weights(layer, d),
                    lengths,
                    training,
                )
                y = np.asarray(y, dtype=self.dtype)
                fin = (
                    tuple(np.asarray(s, dtype=self.dtype) for s in fin)
                    if isinstance(fin, tuple)
                    else np.asarray(fin, dtype=self.dtype)
                )
                if d == 1:
                    y = _gather_time(y, rev_idx)  # type: ignore[arg-type]
                ys.append(y)
                finals.append(fin)  # type: ignore[arg-type]
                dcaches.append(cache)
            layer_caches.append(dcaches)
            inp = ys[0] if D == 1 else np.concatenate(ys, axis=2)
        if not training:
            return inp, finals, None
        cache_all = {
            "caches": layer_caches,
            "masks": used_masks,
            "rev_idx": rev_idx,
            "shape": (t_steps, batch),
            "x_dtype": x.dtype,
        }
        assert inp.shape == (t_steps, batch, D * H)
        return inp, finals, cache_all

    def backward(self, grad_output: Any, grad_state: Any = None) -> Array:
        """Backpropagate through the last forward pass; accumulate parameter gradients into :attr:`grads`.

        Args:
            grad_output: dL/dout, the shape of ``out`` (None = zeros).
            grad_state: dL/dh_n (num_layers * num_directions, B, H) (LSTM: (dh_n, dc_n), either may be
                None); None = zeros.

        Returns:
            dL/dx in the layout of x. Also sets :attr:`grad_hx` (dL/dhx) and :attr:`last_state_grads`.
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
        self._cache = None
        self._guard.owner = None
        t_steps, batch = cache["shape"]
        D, H = self.num_directions, self._h_size
        dout: Array | None = None  # None: zeros (the kernels skip it), one direction only
        if grad_output is None:
            if D == 2:
                dout = np.zeros((t_steps, batch, D * H), dtype=self.dtype)
        else:
            dout = _as_float("grad_output", grad_output, self.dtype)
            exp = (batch, t_steps, D * H) if self.batch_first else (t_steps, batch, D * H)
            if dout.shape != exp:
                raise ValueError(f"grad_output: expected shape {exp}, got {dout.shape}")
            if self.batch_first:
                dout = np.ascontiguousarray(dout.transpose(1, 0, 2))
        dstates = self._split_grad_state(grad_state, batch)
        dx = self._backward_time_major(cache, dout, dstates)
        return np.ascontiguousarray(dx.transpose(1, 0, 2)) if self.batch_first else dx

    def _backward_time_major(
        self, cache: dict[str, Any], dout: Array | None, dstates: list[State | None]
    ) -> Array:
        if self._precision is not None and (p := _precisionops.switch(self)):  # module's mode
            return _precisionops.run_in(p, self._backward_time_major, cache, dout, dstates)
        F = get_backend()
        D, H = self.num_directions, self._h_size
        rev_idx = cache["rev_idx"]
        dh_alls: list[Array | None] = [None] * (self.num_layers * D)
        dhx: list[State | None] = [None] * (self.num_layers * D)
        dy = dout
        for layer in reversed(range(self.num_layers)):
            dx_layer: Array | None = None
            for d in range(D):
                dyd = dy if D == 1 else np.ascontiguousarray(dy[:, :, d * H : (d + 1) * H])
                if d == 1:
                    dyd = _gather_time(dyd, rev_idx)
                g = (_proj_backward if self.proj_size else _cell_backward)(
                    F, self._cell, cache["caches"][layer][d], dyd, dstates[layer * D + d]
                )
                self._add_grads(layer, d, g)
                dxd = np.asarray(g["x"], dtype=self.dtype)
                dha = np.asarray(g["dh_all"], dtype=self.dtype)
                if d == 1:
                    dxd = _gather_time(dxd, rev_idx)
                    dha = _gather_time(dha, rev_idx)
                dh_alls[layer * D + d] = dha
                if self._spec.has_cell_state:
                    dhx[layer * D + d] = (
                        np.asarray(g["h0"], dtype=self.dtype),
                        np.asarray(g["c0"], dtype=self.dtype),
                    )
                else:
                    dhx[layer * D + d] = np.asarray(g["h0"], dtype=self.dtype)
                dx_layer = dxd if dx_layer is None else dx_layer + dxd
            assert dx_layer is not None
            mask = cache["masks"][layer]
            if mask is not None:
                dx_layer = dx_layer * mask  # d(inp * mask)/d inp = mask
            dy = dx_layer
        self.last_state_grads = dh_alls  # type: ignore[assignment]
        self._grad_hx_list = dhx
        self.grad_hx = self._join_states(dhx)  # type: ignore[arg-type]
        return dy


class RNN(RNNBase):
    """Elman RNN stack, ``h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``, act = tanh or relu.

    ``RNN(input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, dtype=np.float32, seed=None, init="torch")``.

    Parameters (PyTorch names): weight_ih_l{k} (H, I or D*H), weight_hh_l{k} (H, H), bias_ih_l{k},
    bias_hh_l{k} (H,), and ``..._reverse`` for the backward direction. ``dropout`` (inverted, between
    layers, training only, drawn from :attr:`rng`). ``init``: "torch" (U(-1/sqrt(H), 1/sqrt(H))),
    "orthogonal" (orthogonal recurrent blocks, Xavier-uniform input weights, zero bias; LSTM forget
    bias 1), "identity" (IRNN: identity recurrence, N(0, 1e-3) input weights, zero bias -- use with
    nonlinearity="relu"). ``seed`` fixes the initial weights and the dropout RNG. Keyword-only
    ``zoneout`` (p, or (p_h, p_c) with a cell state) and ``recurrent_dropout`` (p): zoneout (Krueger
    et al. 2017) and variational recurrent dropout (Gal & Ghahramani 2016) in the fused loops,
    training only, masks drawn from :attr:`rng` (:mod:`rnnfast.nn._regularise`). Keyword-only
    ``precision``: None (the thread's mode), "fp32" or "bf16" (float32 modules), the mode of the
    stack's products in forward, backward, streams and ``step`` (:mod:`rnnfast.nn._precisionops`).
    """

    __module__ = _PUBLIC_MODULE
    _cell = "rnn"


def _tanh_only_init(
    self: RNNBase,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bias: bool = True,
    batch_first: bool = False,
    dropout: float = 0.0,
    bidirectional: bool = False,
    dtype: Any = np.float32,
    seed: int | None = None,
    init: str = "torch",
    *,
    zoneout: Any = 0.0,
    recurrent_dropout: float = 0.0,
    precision: str | None = None,
) -> None:
    """The constructor of LSTM and GRU: RNNBase's arguments without ``nonlinearity`` (tanh)."""
    RNNBase.__init__(
        self,
        input_size,
        hidden_size,
        num_layers,
        "tanh",
        bias,
        batch_first,
        dropout,
        bidirectional,
        dtype,
        seed,
        init,
        zoneout=zoneout,
        recurrent_dropout=recurrent_dropout,
        precision=precision,
    )


class LSTM(RNNBase):
    """LSTM stack (gates i, f, g, o): ``c_t = f*c_{t-1} + i*g``, ``h_t = o*tanh(c_t)``.

    Same arguments as :class:`RNN` without ``nonlinearity``, plus keyword ``proj_size``. ``forward``
    returns ``out, (h_n, c_n)`` and takes ``hx=(h0, c0)``. Weight shapes (4H, I) and (4H, H).

    ``proj_size=P`` (0 < P < H; PyTorch's ``nn.LSTM(proj_size=P)``, Sak et al. 2014): h_t =
    W_hr (o*tanh(c_t)) is P wide, c stays H wide; parameters gain ``weight_hr_l{k}`` (P, H),
    weight_hh is (4H, P), layers k > 0 take D*P inputs; out (T, B, D*P), h (L*D, B, P), c
    (L*D, B, H). Runs the fused kernels of :mod:`rnnfast._proj`; :meth:`step` takes the sequence
    path (T = 1), and TBPTT streaming is not available (ValueError).
    """

    __module__ = _PUBLIC_MODULE
    _cell = "lstm"

    def __init__(self, *args: Any, proj_size: int = 0, **kwargs: Any) -> None:
        self.proj_size = _check_int("proj_size", proj_size, 0)
        _tanh_only_init(self, *args, **kwargs)


class GRU(RNNBase):
    """GRU stack (gates r, z, n): ``n = tanh(W_in x + b_in + r*(W_hn h + b_hn))``, ``h_t = (1-z)*n + z*h``.

    Same arguments as :class:`RNN` without ``nonlinearity``. Weight shapes (3H, I) and (3H, H).
    """

    __module__ = _PUBLIC_MODULE
    _cell = "gru"
    __init__ = _tanh_only_init


class PeepholeLSTM(RNNBase):
    """Peephole LSTM stack (Gers & Schmidhuber 2000; ONNX's LSTM with its ``P`` input): the input and
    forget gates see ``c_{t-1}``, the output gate sees ``c_t``, through diagonal weights::

        i = sigmoid(a_i + p_i*c_{t-1}), f = sigmoid(a_f + p_f*c_{t-1}), g = tanh(a_g)
        c_t = f*c_{t-1} + i*g, o = sigmoid(a_o + p_o*c_t), h_t = o*tanh(c_t)

    Same arguments, shapes and state as :class:`LSTM`, plus ``weight_peep_l{k}`` (3H,) =
    [p_i, p_f, p_o] per layer and direction (U(-1/sqrt(H), 1/sqrt(H)) with ``init="torch"``, zeros
    with the other presets, which start it as a plain LSTM). PyTorch has no such module.
    """

    __module__ = _PUBLIC_MODULE
    _cell = "lstm_peephole"
    __init__ = _tanh_only_init


class ResetBeforeGRU(RNNBase):
    """GRU stack with the reset gate before the recurrent product (Cho et al. 2014; Keras's
    ``GRU(reset_after=False)``, ONNX's GRU with ``linear_before_reset=0``)::

        r = sigmoid(a_r), z = sigmoid(a_z), n = tanh(W_in x + b_in + W_hn (r*h_{t-1}) + b_hn)
        h_t = (1 - z)*n + z*h_{t-1}

    Same arguments, parameter names and shapes as :class:`GRU` (gates r, z, n). PyTorch has no such
    module (``torch.nn.GRU`` applies r after the product).
    """

    __module__ = _PUBLIC_MODULE
    _cell = "gru_reset_before"
    __init__ = _tanh_only_init
