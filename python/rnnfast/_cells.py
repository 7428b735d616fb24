"""The cell registry: one :class:`CellSpec` per recurrent cell, the one place that knows a cell's table.

A spec holds what is a lookup about a cell (gate count, whether it carries a cell state, its
parameter names and shapes, its init rule, its names and gate orders in PyTorch, Keras and ONNX,
the nonlinearities it accepts). The per-cell math lives in the C++ kernels and in
:mod:`rnnfast.reference`; everything that only needs to know *which* cell iterates over
:data:`CELLS` or calls :func:`get_cell`.

Shapes use I = input size of the layer, H = hidden size, G = gates (1, 4, 3).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["CELLS", "CELL_NAMES", "CellSpec", "get_cell"]


@dataclass(frozen=True)
class CellSpec:
    """Everything about one cell that is a table lookup, not math.

    Attributes:
        name: the functional name ("rnn", "lstm", "gru"); ``<name>_forward`` / ``<name>_backward``.
        gates: G, the number of gate blocks stacked in the weight rows (1, 4, 3).
        has_cell_state: True when the state is (h, c) (LSTM), False when it is h alone.
        gate_order: rnnfast's (= PyTorch's) gate blocks in row order, e.g. "i,f,g,o".
        nonlinearities: the ``nonlinearity`` values accepted (the first is the default).
        torch_name: the ``torch.nn`` module class name (None: PyTorch has no such module).
        keras_name: the Keras layer class name (None: Keras has no such layer).
        keras_gate_order: Keras's gate blocks in column order (same letters as PyTorch's).
        onnx_op: the ONNX operator type (None: no ONNX operator computes the cell).
        onnx_gate_order: ONNX's gate blocks in row order.
        init: the default initialisation rule (PyTorch's), for documentation; see
            :meth:`init_bound`.
        onnx_attrs: attributes of the ONNX operator that select this cell, as (name, value) pairs
            (the GRU's ``linear_before_reset``).
        extra_params: the cell's own parameters besides w_ih, w_hh, b_ih, b_hh, in the order
            of its C++ traits (``Cell::extra`` in cpp/include/rnnfast/cells/<cell>.hpp):
            (name, per_unit) pairs, each a vector of per_unit*H values.
        onnx_extra_inputs: the extra parameters the ONNX operator takes as inputs after the
            initial states (the LSTM's ``P``), as (name, blocks) pairs: block j of the ONNX input
            is block ``blocks[j]`` (H values each) of the parameter. A cell is exported only when
            every extra parameter is listed here.
        extra_init: extra parameters with a constant initial value under every ``init`` preset,
            as (name, value) pairs (layer-norm gains 1, shifts 0); the others follow the preset.
    """

    name: str
    gates: int
    has_cell_state: bool
    gate_order: str
    nonlinearities: tuple[str, ...]
    torch_name: str | None
    keras_name: str | None
    keras_gate_order: str | None
    onnx_op: str | None
    onnx_gate_order: str | None
    init: str = "U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias"
    extra_params: tuple[tuple[str, int], ...] = ()
    onnx_attrs: tuple[tuple[str, int], ...] = ()
    onnx_extra_inputs: tuple[tuple[str, tuple[int, ...]], ...] = ()
    extra_init: tuple[tuple[str, float], ...] = ()

    @property
    def n_states(self) -> int:
        """Number of state arrays: 2 for (h, c), else 1."""
        return 2 if self.has_cell_state else 1

    @property
    def state_names(self) -> tuple[str, ...]:
        """Initial-state argument names of the functional API: ("h0", "c0") or ("h0",)."""
        return ("h0", "c0") if self.has_cell_state else ("h0",)

    def gate_size(self, hidden: int) -> int:
        """G*H, the number of rows of w_ih / w_hh."""
        return self.gates * hidden

    def param_shapes(self, input_size: int, hidden: int, bias: bool = True) -> dict[str, tuple]:
        """Functional parameter names and shapes of one layer and direction (I = input_size)."""
        gh = self.gates * hidden
        shapes: dict[str, tuple] = {"w_ih": (gh, input_size), "w_hh": (gh, hidden)}
        if bias:
            shapes.update({"b_ih": (gh,), "b_hh": (gh,)})
        shapes.update({name: (per_unit * hidden,) for name, per_unit in self.extra_params})
        return shapes

    def torch_param_shapes(
        self, input_size: int, hidden: int, layer: int = 0, reverse: bool = False, bias: bool = True
    ) -> dict[str, tuple]:
        """PyTorch state_dict names and shapes of one layer and direction (``weight_ih_l0`` ...)."""
        sfx = f"_l{layer}" + ("_reverse" if reverse else "")
        torch_of = {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh"}
        return {
            f"{torch_of[k]}{sfx}": s for k, s in self.param_shapes(input_size, hidden, bias).items()
        }

    def init_bound(self, hidden: int) -> float:
        """k of the default init U(-k, k): 1/sqrt(H)."""
        return 1.0 / math.sqrt(hidden)

    def _perm(self, order: str | None) -> list[int]:
        if order is None:
            raise ValueError(f"cell {self.name!r}: no gate order is known for this peer")
        mine = self.gate_order.split(",")
        return [mine.index(g) for g in order.split(",")]

    @property
    def onnx_perm(self) -> list[int]:
        """Block indices: ONNX's gate block j is rnnfast's block ``onnx_perm[j]``."""
        return self._perm(self.onnx_gate_order)

    @property
    def keras_perm(self) -> list[int]:
        """Block indices: rnnfast's gate block j is Keras's block ``keras_perm[j]``."""
        if self.keras_gate_order is None:
            raise ValueError(f"cell {self.name!r}: Keras has no such layer")
        theirs = self.keras_gate_order.split(",")
        return [theirs.index(g) for g in self.gate_order.split(",")]


#: The registered cells, in the order tests and reports list them.
CELLS: tuple[CellSpec, ...] = (
    CellSpec(
        name="rnn",
        gates=1,
        has_cell_state=False,
        gate_order="h",
        nonlinearities=("tanh", "relu"),
        torch_name="RNN",
        keras_name="SimpleRNN",
        keras_gate_order="h",
        onnx_op="RNN",
        onnx_gate_order="h",
    ),
    CellSpec(
        name="lstm",
        gates=4,
        has_cell_state=True,
        gate_order="i,f,g,o",
        nonlinearities=("tanh",),
        torch_name="LSTM",
        keras_name="LSTM",
        keras_gate_order="i,f,g,o",  # Keras calls g "c"
        onnx_op="LSTM",
        onnx_gate_order="i,o,f,g",  # ONNX: i, o, f, c
    ),
    CellSpec(
        name="gru",
        gates=3,
        has_cell_state=False,
        gate_order="r,z,n",
        nonlinearities=("tanh",),
        torch_name="GRU",
        keras_name="GRU",
        keras_gate_order="z,r,n",  # Keras: z, r, h
        onnx_op="GRU",
        onnx_gate_order="z,r,n",  # ONNX: z, r, h
        onnx_attrs=(("linear_before_reset", 1),),  # r multiplies (R_h h + Rb_h), as PyTorch
    ),
    CellSpec(
        name="lstm_peephole",
        gates=4,
        has_cell_state=True,
        gate_order="i,f,g,o",
        nonlinearities=("tanh",),
        torch_name=None,  # PyTorch's peephole PR was never merged
        keras_name=None,
        keras_gate_order=None,
        onnx_op="LSTM",  # with its P input: [p_i, p_o, p_f]
        onnx_gate_order="i,o,f,g",
        extra_params=(("w_peep", 3),),  # [p_i, p_f, p_o]: i, f see c_{t-1}, o sees c_t
        onnx_extra_inputs=(("w_peep", (0, 2, 1)),),  # ONNX's P = [p_i, p_o, p_f]
    ),
    CellSpec(
        name="gru_reset_before",
        gates=3,
        has_cell_state=False,
        gate_order="r,z,n",
        nonlinearities=("tanh",),
        torch_name=None,  # torch.nn.GRU applies r after the product
        keras_name=None,  # Keras GRU(reset_after=False): weights not converted yet
        keras_gate_order=None,
        onnx_op="GRU",
        onnx_gate_order="z,r,n",  # ONNX: z, r, h
        onnx_attrs=(("linear_before_reset", 0),),  # r multiplies h before R_h (ONNX's default)
    ),
    CellSpec(
        name="lstm_layernorm",
        gates=4,
        has_cell_state=True,
        gate_order="i,f,g,o",
        nonlinearities=("tanh",),
        torch_name=None,  # no torch.nn module (haste's LayerNormLSTM computes it)
        keras_name=None,
        keras_gate_order=None,
        onnx_op=None,
        onnx_gate_order=None,
        init="U(-1/sqrt(H), 1/sqrt(H)) for the weights and biases; gains 1, beta_c 0",
        # LN(W_ih x) and LN(W_hh h) gains (4H each), LN(c_t) gain and shift (H each)
        extra_params=(("gamma_ih", 4), ("gamma_hh", 4), ("gamma_c", 1), ("beta_c", 1)),
        extra_init=(("gamma_ih", 1.0), ("gamma_hh", 1.0), ("gamma_c", 1.0), ("beta_c", 0.0)),
    ),
    CellSpec(
        name="gru_layernorm",
        gates=3,
        has_cell_state=False,
        gate_order="r,z,n",
        nonlinearities=("tanh",),
        torch_name=None,  # no torch.nn module (haste's LayerNormGRU computes it)
        keras_name=None,
        keras_gate_order=None,
        onnx_op=None,
        onnx_gate_order=None,
        init="U(-1/sqrt(H), 1/sqrt(H)) for the weights and biases; gains 1",
        extra_params=(("gamma_ih", 3), ("gamma_hh", 3)),  # LN(W_ih x), LN(W_hh h) gains
        extra_init=(("gamma_ih", 1.0), ("gamma_hh", 1.0)),
    ),
)

#: name -> spec (read-only).
CELL_NAMES: Mapping[str, CellSpec] = MappingProxyType({c.name: c for c in CELLS})


def get_cell(name: str) -> CellSpec:
    """The spec of cell ``name``; ValueError listing the registered names otherwise."""
    try:
        return CELL_NAMES[name]
    except (KeyError, TypeError):
        names = ", ".join(repr(c.name) for c in CELLS)
        raise ValueError(f"cell: expected one of {names}, got {name!r}") from None
