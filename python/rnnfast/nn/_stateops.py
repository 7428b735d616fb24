"""The states of the recurrent stacks (:class:`~rnnfast.nn.rnn.RNNBase`) and their one-step call.

:class:`_StateMethods` is a mixin of ``RNNBase``: ``hx`` and ``grad_state`` split into one state
per layer and direction (each (B, H), or (h (B, H), c (B, H)) with a cell state; PyTorch's layout
``(num_layers * num_directions, B, H)`` outside), the per-layer finals joined back, zero states,
and :meth:`~_StateMethods.step`, streaming inference one time step at a time through the compiled
core's step plan (the sequence path, T = 1, where there is none).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from .._cells import CellSpec
from . import backend as _backend_mod
from ._util import Array, State, _as_float, _as_hx

__all__: list[str] = []


def _step_ready(a: Any, dtype: np.dtype, shape: tuple[int, ...]) -> bool:
    """True when ``a`` can go to the compiled step as it is (no conversion or copy)."""
    return type(a) is np.ndarray and a.dtype == dtype and a.shape == shape and a.flags.c_contiguous


class _StateMethods:
    """State handling and :meth:`step` of :class:`~rnnfast.nn.rnn.RNNBase` (a mixin: it reads the
    stack's sizes, dtype, cell spec and weights, and runs ``step`` through the stack's ``_run``
    where no compiled step plan applies)."""

    _spec: CellSpec
    _cell: str
    nonlinearity: str
    _step_local: threading.local
    _precision: str | None
    proj_size: int
    num_layers: int
    num_directions: int
    hidden_size: int
    input_size: int
    bidirectional: bool
    dtype: np.dtype

    # --- state helpers ------------------------------------------------------------------------------
    def _split_hx(self, hx: Any, batch: int) -> list[State | None]:
        """Per layer/direction initial states from hx ((L*D, B, H), or a (h0, c0) pair for LSTM)."""
        n = self.num_layers * self.num_directions
        shape = (n, batch, self._h_size)
        if hx is None:
            return [None] * n
        if self._spec.has_cell_state:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(
                    f"hx: expected a tuple (h0, c0) of arrays {shape} for LSTM, got "
                    f"{type(hx).__name__}"
                )
            h0 = _as_float("hx[0]", hx[0], self.dtype)
            c0 = _as_float("hx[1]", hx[1], self.dtype)
            c_shape = (n, batch, self.hidden_size)
            for name, a, want in (("hx[0]", h0, shape), ("hx[1]", c0, c_shape)):
                if a.shape != want:
                    raise ValueError(f"{name}: expected shape {want}, got {a.shape}")
            return [(h0[i], c0[i]) for i in range(n)]
        h0 = _as_hx(hx, self.dtype, shape, type(self).__name__)
        return [h0[i] for i in range(n)]

    def _join_states(self, states: list[State]) -> State:
        """(num_layers * D, B, ·) from the per-layer/direction finals. One final (a one-layer,
        one-direction stack, the streaming case) becomes a view with a leading axis: np.stack's
        copy was a quarter of a small model's call."""
        if len(states) == 1:
            s = states[0]
            return (s[0][None], s[1][None]) if self._spec.has_cell_state else s[None]  # type: ignore[index, return-value]
        if self._spec.has_cell_state:
            return (np.stack([s[0] for s in states]), np.stack([s[1] for s in states]))  # type: ignore[index]
        return np.stack(states)  # type: ignore[arg-type]

    def _zero_state(self, batch: int) -> State:
        z = np.zeros((batch, self._h_size), dtype=self.dtype)
        if self._spec.has_cell_state:
            return (z, np.zeros((batch, self.hidden_size), dtype=self.dtype))
        return z

    def _split_grad_state(self, grad_state: Any, batch: int) -> list[State | None]:
        if grad_state is None:
            return [None] * (self.num_layers * self.num_directions)
        if self._spec.has_cell_state:
            if not isinstance(grad_state, (tuple, list)) or len(grad_state) != 2:
                raise TypeError(
                    "grad_state: expected a tuple (dh_n, dc_n) for LSTM, got "
                    f"{type(grad_state).__name__}"
                )
            n = self.num_layers * self.num_directions
            parts = []
            for j, g in enumerate(grad_state):
                shape = (n, batch, self._h_size if j == 0 else self.hidden_size)
                if g is None:
                    parts.append(np.zeros(shape, dtype=self.dtype))
                else:
                    a = _as_float(f"grad_state[{j}]", g, self.dtype)
                    if a.shape != shape:
                        raise ValueError(f"grad_state[{j}]: expected shape {shape}, got {a.shape}")
                    parts.append(a)
            return [(parts[0][i], parts[1][i]) for i in range(n)]
        try:
            return self._split_hx(grad_state, batch)
        except (TypeError, ValueError) as exc:
            raise type(exc)(str(exc).replace("hx", "grad_state")) from None

    # --- streaming inference ------------------------------------------------------------------------
    def step(self, x_t: Any, state: Any = None) -> tuple[Array, State]:
        """One time step for streaming inference (no dropout, nothing stored for backward).

        Args: x_t (B, input_size); state as ``hx`` of forward (None = zeros). Returns (out_t (B, H),
        new state (num_layers, B, H) (LSTM: (h, c))), new arrays. Equal to ``forward`` run one step
        at a time in eval mode (to rounding: the products sum in another order). Unidirectional
        stacks only. The step kernel is fp32: a module with ``precision="bf16"`` steps through the
        sequence kernels (T = 1) in bf16; a module without its own precision steps in fp32 also
        inside a bf16 block.

        One call into the compiled core (``_core.step_plan``: the weights are checked once, then
        each step checks x_t and the state only); a C-contiguous x_t and state of the module dtype
        are used as they are, anything else is converted first. Thread-safe (nothing shared is
        written).
        """
        plan = self._step_plan()
        dt, L, H = self.dtype, self.num_layers, self.hidden_size
        x = x_t
        if not (
            type(x) is np.ndarray
            and x.dtype == dt
            and x.ndim == 2
            and x.shape[1] == self.input_size
            and x.flags.c_contiguous
        ):
            x = _as_float("x_t", x_t, dt)
            if x.ndim != 2 or x.shape[1] != self.input_size:
                raise ValueError(f"x_t: expected shape (B, {self.input_size}), got {x.shape}")
        shape = (L, x.shape[0], H)
        if self._spec.has_cell_state:
            h0 = c0 = None
            if state is not None:
                if not (
                    type(state) is tuple
                    and len(state) == 2
                    and _step_ready(state[0], dt, shape)
                    and _step_ready(state[1], dt, shape)
                ):
                    state = self._join_states(self._split_hx(state, x.shape[0]))  # type: ignore[arg-type]
                h0, c0 = state
            if plan is None:
                return self._step_run(x, None if state is None else (h0, c0))
            y, h_n, c_n = plan.forward(x, h0, c0)
            return y, (h_n, c_n)
        if state is not None and not _step_ready(state, dt, shape):
            state = self._join_states(self._split_hx(state, x.shape[0]))  # type: ignore[arg-type]
        if plan is None:
            return self._step_run(x, state)
        y, h_n, _ = plan.forward(x, state, None)
        return y, h_n

    def _step_plan(self) -> Any:
        """This thread's compiled step plan over the current weights (None with a test backend)."""
        if self.bidirectional:
            raise ValueError("step: a bidirectional module needs the whole sequence; use forward")
        if self._precision == "bf16":  # the compiled step has no bf16 kernel: the T = 1 sequence
            return None
        loc = self._step_local
        plan = getattr(loc, "plan", None)
        if plan is not None and loc.plan_key is self._flat_params:
            return plan
        if (
            _backend_mod._backend is not None or self.proj_size
        ):  # rnnfast.reference or another test backend, or a projection: the sequence path
            return None
        from .._loader import core

        layers = [tuple(self._weights(layer, 0)) for layer in range(self.num_layers)]
        plan = core.step_plan(
            self._cell,
            self.nonlinearity,
            self.dtype.name,
            self.input_size,
            self.hidden_size,
            layers,
        )
        # the weights are views of the flat buffer: valid until the buffer is replaced
        loc.plan, loc.plan_key = plan, self._flat_params
        return plan

    def _step_run(self, x: Array, state: State | None) -> tuple[Array, State]:
        """step through the sequence path (a T = 1 forward), for a test backend."""
        states = self._split_hx(state, x.shape[0])
        y, finals, _ = self._run(x[None], states, None, False, None)
        return y[0], self._join_states(finals)
