"""Inference snapshots of the recurrent stacks with their weights packed once: :class:`FrozenRNN`.

``frozen = module.freeze()`` (or ``module.freeze(precision="bf16")``) copies the module's weights into
the operands the compiled kernels read: W_hh in the per-step product's packed layout, W_ih packed the
same way for :meth:`FrozenRNN.step`, and W_ih as the input projection's GEMM operand. An ordinary
module call packs W_hh (and in bf16 rounds W_ih and converts W_hh) on every call, because the
module's weights may have changed since the last one; a frozen stack never does, as an onnxruntime
session packs its weights once when it is created. A bf16 stack holds W_hh and the step's W_ih only
as bf16 (half the bytes each step streams) and its ``step`` runs the bf16 kernels, where a bf16
module's ``step`` goes through a one-step sequence call.

The results are bitwise those of the module in eval mode at the same precision (``forward``), and
those of ``forward`` one step at a time to rounding (``step``: the input product sums in another
order). The snapshot does not follow the module: train, then freeze (again), while no optimizer
step writes the weights (the copy is read without the module's thread guard).
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np

from .. import _precision
from .._loader import core
from ._cellops import _gather_time, _reverse_index
from ._stateops import _StateMethods
from ._util import Array, State, _as_lengths

__all__ = ["FrozenRNN", "decode_step"]


class FrozenRNN(_StateMethods):
    """An inference-only, immutable snapshot of a recurrent stack (made by ``module.freeze()``).

    ``forward(x, hx=None, lengths=None)`` (also ``frozen(x, ...)``) and ``step(x_t, state=None)``
    take and return what the module's do in eval mode (``batch_first`` included). Attributes:
    ``precision`` ("fp32" or "bf16"), ``nbytes`` (bytes of weights held), and the module's sizes
    (``input_size``, ``hidden_size``, ``num_layers``, ``bidirectional``, ``batch_first``, ``dtype``).
    Calls from several threads at once are safe (nothing is written).
    """

    def __init__(self, module: Any, precision: Any = None) -> None:
        from .rnn import RNNBase

        if not isinstance(module, RNNBase):
            raise TypeError(
                f"module: expected a recurrent stack (rnnfast.nn.RNNBase), got {type(module).__name__}"
            )
        name = type(module).__name__
        if module.proj_size:
            raise ValueError(
                f"freeze: the projected LSTM (proj_size={module.proj_size}) has no prepacked kernel; "
                "call the module itself"
            )
        if precision is None:
            precision = module.precision or core._get_precision()
        precision = _precision.check_precision(precision, "precision")
        if precision == "bf16" and np.dtype(module.dtype) != np.float32:
            raise ValueError(
                f"precision: 'bf16' needs a float32 module, got a {module.dtype} {name}"
            )
        if precision == "bf16":
            _precision._notice()
        self._module_name = name
        self._spec = module._spec
        self._cell = module._cell
        self.nonlinearity = module.nonlinearity
        self._precision = precision
        self.proj_size = 0
        self.num_layers = module.num_layers
        self.num_directions = module.num_directions
        self.hidden_size = module.hidden_size
        self.input_size = module.input_size
        self.bidirectional = module.bidirectional
        self.batch_first = module.batch_first
        self.dtype = np.dtype(module.dtype)
        layers = [
            tuple(module._weights(layer, d))
            for layer in range(module.num_layers)
            for d in range(module.num_directions)
        ]
        self._stack = core.frozen_stack(
            self._cell,
            self.nonlinearity,
            self.dtype.name,
            precision,
            self.input_size,
            self.hidden_size,
            self.num_directions,
            layers,
        )
        self._plan = types.SimpleNamespace(forward=self._stack.step)

    # --- what _StateMethods reads ---------------------------------------------------------------------
    @property
    def _h_size(self) -> int:
        return self.hidden_size

    def _step_plan(self) -> Any:
        if self.bidirectional:
            raise ValueError("step: a bidirectional module needs the whole sequence; use forward")
        return self._plan

    # --- public -----------------------------------------------------------------------------------------
    @property
    def precision(self) -> str:
        """The precision the weights were packed in and every call runs: "fp32" or "bf16"."""
        return self._precision  # type: ignore[return-value]

    @property
    def nbytes(self) -> int:
        """Bytes of weights (packed copies, biases, the cell's extra parameters) the stack holds."""
        return int(self._stack.nbytes)

    @property
    def output_size(self) -> int:
        return self.hidden_size * self.num_directions

    def __repr__(self) -> str:
        return (
            f"FrozenRNN({self._module_name}(input_size={self.input_size}, hidden_size="
            f"{self.hidden_size}, num_layers={self.num_layers}, bidirectional={self.bidirectional}), "
            f"precision={self._precision!r}, dtype={self.dtype.name}, nbytes={self.nbytes})"
        )

    def __reduce__(self) -> Any:
        raise TypeError(
            "FrozenRNN: cannot be pickled (its packing depends on this machine's SIMD width); "
            "save the module and call freeze() after loading it"
        )

    def __call__(self, x: Any, hx: Any = None, lengths: Any = None) -> tuple[Array, State]:
        return self.forward(x, hx, lengths)

    def forward(self, x: Any, hx: Any = None, lengths: Any = None) -> tuple[Array, State]:
        """The module's ``forward`` in eval mode, on the packed weights: x (T, B, input_size) (or
        (B, T, input_size) with ``batch_first``), hx as the module's, lengths (B,) or None ->
        (out, h_n)."""
        from .rnn import RNNBase

        xt = RNNBase._time_major_input(self, x)  # type: ignore[arg-type]
        t_steps, batch, _ = xt.shape
        lens = _as_lengths(lengths, batch, t_steps)
        states = self._split_hx(hx, batch)
        D = self.num_directions
        rev_idx = _reverse_index(t_steps, batch, lens) if self.bidirectional else None
        has_c = self._spec.has_cell_state
        finals: list[State] = []
        inp = xt
        for layer in range(self.num_layers):
            ys = []
            for d in range(D):
                xin = inp if d == 0 else _gather_time(inp, rev_idx)  # type: ignore[arg-type]
                s = states[layer * D + d]
                h0 = c0 = None
                if s is not None:
                    h0, c0 = s if has_c else (s, None)  # type: ignore[misc]
                    h0 = np.ascontiguousarray(h0)
                    c0 = None if c0 is None else np.ascontiguousarray(c0)
                y, h_n, c_n = self._stack.forward(
                    layer * D + d, np.ascontiguousarray(xin), h0, c0, lens
                )
                if d == 1:
                    y = _gather_time(y, rev_idx)  # type: ignore[arg-type]
                ys.append(y)
                finals.append((h_n, c_n) if has_c else h_n)
            inp = ys[0] if D == 1 else np.concatenate(ys, axis=2)
        out = np.ascontiguousarray(inp.transpose(1, 0, 2)) if self.batch_first else inp
        return out, self._join_states(finals)

    def step(self, x_t: Any, state: Any = None) -> tuple[Array, State]:
        """One time step (streaming inference) on the packed weights, in the stack's precision:
        x_t (B, input_size), state as ``hx`` of forward (None = zeros) -> (out_t (B, H), new state).
        One call into the compiled core per step; unidirectional stacks only. A large step (from
        ~2 MFLOP, e.g. LSTM H >= 384 at B = 1) splits over the threads ``rnnfast.set_num_threads``
        allows and the machine has free, bitwise as on one thread."""
        return _StateMethods.step(self, x_t, state)


def decode_step(rnn: Any) -> Any:
    """The one-step function a decoding loop (generation, greedy / beam decoding, captioning) should
    call on ``rnn`` for the duration of one call, in which its weights do not change: ``rnn.step``,
    or for a recurrent stack with ``precision="bf16"`` the ``step`` of ``rnn.freeze("bf16")`` (one
    bf16 pack for the whole loop: a bf16 module's own ``step`` converts the weights in every step).
    The compiled core only: a test backend keeps ``rnn.step``."""
    from . import backend as _backend_mod
    from .rnn import RNNBase

    if (
        isinstance(rnn, RNNBase)
        and rnn.precision == "bf16"
        and _backend_mod._backend is None
        and not rnn.proj_size
    ):
        return rnn.freeze("bf16").step
    return rnn.step
