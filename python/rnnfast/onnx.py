"""ONNX export of rnnfast models: ``rnnfast.onnx.export(model, path)``.

Writes a standard ONNX graph with the ``onnx`` package (no torch, nothing compiled): the recurrent
stack as ONNX ``RNN`` / ``LSTM`` / ``GRU`` operators (one per layer, both directions in one node),
the embedding as ``Gather`` and the head as ``Gemm`` (one output per sequence) or ``MatMul`` +
``Add`` (one per step). Any runtime with the standard operators runs it; tested with onnxruntime.

Mapping (rnnfast / PyTorch -> ONNX):

* gate order: LSTM i, f, g, o -> i, o, f, c; GRU r, z, n -> z, r, h (weight and bias blocks are
  reordered); GRU ``linear_before_reset=1`` (PyTorch's n = tanh(W_in x + b_in + r*(W_hn h + b_hn)));
  the reset-before GRU (:class:`~rnnfast.modules.ResetBeforeGRU`) is ONNX's GRU with
  ``linear_before_reset=0``;
* the peephole LSTM (:class:`~rnnfast.modules.PeepholeLSTM`) is ONNX's LSTM with its ``P`` input:
  ``weight_peep_l{k}`` [p_i, p_f, p_o] -> P (D, 3*H) = [p_i, p_o, p_f];
* weights per layer: W (D, G*H, I), R (D, G*H, H), B (D, 2*G*H) = [b_ih, b_hh] (D = directions);
* ONNX's Y is (T, D, B, H): Transpose + Reshape give rnnfast's (T, B, D*H) between layers;
* ragged batches: ``lengths`` goes to ``sequence_lens`` (steps past a sequence's length give 0, the
  reverse direction starts at each sequence's last valid step, Y_h is the state after it);
* ``many_to_one`` (the top layer's final state, [forward, backward] for a bidirectional stack),
  ``many_to_many`` / ``one_to_many`` (every step), ``one_to_one`` (one step); ``batch_first``.

Graph inputs and outputs:

* ``x``: (T, B, I) float, or (T, B) int64 token ids with an embedding; (B, T, ...) with
  ``batch_first``; (B, I) / (B,) in ``one_to_one`` mode. T and B are symbolic.
* ``lengths``: (B,) int64 (``lengths=True``, not in ``one_to_one`` mode).
* ``h0`` (and ``c0`` for the LSTMs): (num_layers * num_directions, B, H) (``initial_state=True``).
* ``output``: the model's prediction, as ``model(x, lengths, hx)`` returns it in eval mode.
* ``h_n`` (and ``c_n``): (num_layers * num_directions, B, H), as ``model.last_hidden``.

A length of 0 with a non-zero initial state: the ONNX operators leave it undefined and onnxruntime
returns zeros for Y_h / Y_c, where rnnfast (like PyTorch's packed sequences and Keras) returns the
initial state. With ``initial_state=True`` and ``lengths=True`` the exported graph therefore
selects the initial state for such rows (a ``Where`` after each recurrent node), so every runtime
gives rnnfast's answer; without an initial-state input the state starts at 0 and both agree.

A bare :class:`~rnnfast.modules.RNN` / ``LSTM`` / ``GRU`` / ``PeepholeLSTM`` / ``ResetBeforeGRU``
exports too: its outputs are ``output``
(T, B, D*H) and ``h_n`` (``c_n``), as its ``forward`` returns them.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ._cells import CELLS, get_cell

__all__ = ["export", "to_model_proto", "DEFAULT_OPSET"]

#: ONNX default-domain opset the graphs are written for (ONNX 1.12+, onnxruntime 1.12+).
DEFAULT_OPSET = 17

# The cells this exporter writes: an ONNX operator computes them from W, R, B and the operator
# inputs that hold the cell's extra parameters (CellSpec.onnx_extra_inputs: the LSTM's P); a cell
# with an extra parameter no ONNX input holds is not exported. Per cell (from the registry): the
# rnnfast gate block of each ONNX gate block, and the ONNX operator.
_EXPORTABLE = [
    c
    for c in CELLS
    if c.onnx_op is not None
    and {n for n, _ in c.extra_params} == {n for n, _ in c.onnx_extra_inputs}
]
_ONNX_GATE_ORDER = {c.name: c.onnx_perm for c in _EXPORTABLE}
_OP_TYPE = {c.name: c.onnx_op for c in _EXPORTABLE}


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - exercised only without onnx
        raise ImportError(
            "rnnfast.onnx needs the 'onnx' package: pip install 'rnnfast[onnx]'"
        ) from exc
    return onnx


def _reorder(a: np.ndarray, cell: str, hidden: int) -> np.ndarray:
    """Gate blocks of ``a`` (G*H, ...) from rnnfast's order to ONNX's."""
    blocks = [a[g * hidden : (g + 1) * hidden] for g in _ONNX_GATE_ORDER[cell]]
    return np.concatenate(blocks, axis=0)


class _Graph:
    """Collects nodes, initializers and value infos; names are unique by construction."""

    def __init__(self, onnx: Any, dtype: np.dtype) -> None:
        self.onnx = onnx
        self.helper = onnx.helper
        self.dtype = dtype
        self.elem = onnx.helper.np_dtype_to_tensor_dtype(dtype)
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, base: str, value: Any, dtype: Any = None) -> str:
        arr = np.asarray(value, dtype=dtype if dtype is not None else self.dtype)
        name = self.name(base)
        self.inits.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def weight(self, name: str, value: np.ndarray) -> str:
        """An initializer with a readable fixed name (the model's parameter, transformed)."""
        arr = np.ascontiguousarray(np.asarray(value, dtype=self.dtype))
        self.inits.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def node(self, op: str, inputs: list[str], n_out: int = 1, **attrs: Any) -> list[str]:
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(
            self.helper.make_node(op, inputs, outs, name=self.name(f"{op}_node"), **attrs)
        )
        return outs

    def one(self, op: str, inputs: list[str], **attrs: Any) -> str:
        return self.node(op, inputs, 1, **attrs)[0]

    def rename(self, src: str, dst: str) -> None:
        """Make graph output ``dst`` an Identity of ``src``."""
        self.nodes.append(self.helper.make_node("Identity", [src], [dst], name=self.name("out")))


def _extra_inputs(g: _Graph, rnn: Any, layer: int, prefix: str) -> list[str]:
    """The initializers of the cell's extra parameters that its ONNX operator takes as inputs after
    the initial states (the peephole LSTM's P (D, 3*H) = [p_i, p_o, p_f]), for one layer."""
    H, D = rnn.hidden_size, rnn.num_directions
    names: list[str] = []
    for name, blocks in get_cell(rnn._cell).onnx_extra_inputs:
        per_dir = []
        for d in range(D):
            v = rnn._param_dict(layer, d)[name]
            per_dir.append(np.concatenate([v[k * H : (k + 1) * H] for k in blocks]))
        names.append(g.weight(f"{prefix}{name}_l{layer}", np.stack(per_dir)))  # w_peep_l0
    return names


def _rnn_stack(
    g: _Graph,
    rnn: Any,
    x: str,
    lengths: str | None,
    h0: str | None,
    c0: str | None,
    prefix: str,
) -> tuple[str, list[str], list[str]]:
    """The recurrent stack on time-major ``x`` (T, B, I). Returns (Y (T, B, D*H), [Y_h per layer],
    [Y_c per layer]) with Y_h / Y_c (D, B, H)."""
    cell, H, D, L = rnn._cell, rnn.hidden_size, rnn.num_directions, rnn.num_layers
    params = rnn.parameters()
    seq_lens = g.one("Cast", [lengths], to=g.onnx.TensorProto.INT32) if lengths else ""
    zero_len = None
    if lengths and (h0 is not None or c0 is not None):
        # (1, B, 1) bool: rows whose length is 0 keep the initial state (see the module docstring)
        zl = g.one("Equal", [lengths, g.const("zero", np.array(0, np.int64), np.int64)])
        zero_len = g.one("Unsqueeze", [zl, g.const("axes", [0, 2], np.int64)])
    inp = x
    hs: list[str] = []
    cs: list[str] = []
    for layer in range(L):
        W, R, B = [], [], []
        for d in range(D):
            sfx = rnn._suffix(layer, d)
            W.append(_reorder(params[f"weight_ih{sfx}"], cell, H))
            R.append(_reorder(params[f"weight_hh{sfx}"], cell, H))
            if rnn.bias:
                B.append(
                    np.concatenate(
                        [
                            _reorder(params[f"bias_ih{sfx}"], cell, H),
                            _reorder(params[f"bias_hh{sfx}"], cell, H),
                        ]
                    )
                )
        w = g.weight(f"{prefix}W_l{layer}", np.stack(W))
        r = g.weight(f"{prefix}R_l{layer}", np.stack(R))
        b = g.weight(f"{prefix}B_l{layer}", np.stack(B)) if rnn.bias else ""
        ins = [inp, w, r, b, seq_lens]
        sl = (
            [
                g.const("starts", [layer * D], np.int64),
                g.const("ends", [(layer + 1) * D], np.int64),
                g.const("axes", [0], np.int64),
            ]
            if h0 is not None or c0 is not None
            else []
        )
        init_h = g.one("Slice", [h0, *sl]) if h0 is not None else ""
        ins.append(init_h)
        init_c = ""
        if get_cell(cell).has_cell_state:
            init_c = g.one("Slice", [c0, *sl]) if c0 is not None else ""
            ins.append(init_c)
        ins += _extra_inputs(g, rnn, layer, prefix)  # the peephole LSTM's P
        attrs: dict[str, Any] = {
            "hidden_size": H,
            "direction": "bidirectional" if D == 2 else "forward",
        }
        if cell == "rnn":
            act = "Tanh" if rnn.nonlinearity == "tanh" else "Relu"
            attrs["activations"] = [act] * D
        attrs.update(dict(get_cell(cell).onnx_attrs))  # e.g. the GRU's linear_before_reset
        while ins and ins[-1] == "":
            ins.pop()
        has_c = get_cell(cell).has_cell_state
        outs = g.node(_OP_TYPE[cell], ins, 3 if has_c else 2, **attrs)
        y, y_h = outs[0], outs[1]
        y_c = outs[2] if has_c else None
        if zero_len is not None:
            if init_h:
                y_h = g.one("Where", [zero_len, init_h, y_h])
            if y_c is not None and init_c:
                y_c = g.one("Where", [zero_len, init_c, y_c])
        hs.append(y_h)
        if y_c is not None:
            cs.append(y_c)
        # (T, D, B, H) -> (T, B, D, H) -> (T, B, D*H): [forward, backward] features, as rnnfast
        yt = g.one("Transpose", [y], perm=[0, 2, 1, 3])
        inp = g.one("Reshape", [yt, g.const("shape", [0, 0, -1], np.int64)])
    return inp, hs, cs


def to_model_proto(
    model: Any,
    *,
    lengths: bool = True,
    initial_state: bool = False,
    opset: int = DEFAULT_OPSET,
    dtype: Any = None,
    graph_name: str | None = None,
) -> Any:
    """The ``onnx.ModelProto`` that :func:`export` writes (same arguments, without ``path``)."""
    onnx = _require_onnx()
    rnn, head, emb, mode = _unpack_model(model)
    for name, flag in (("lengths", lengths), ("initial_state", initial_state)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name}: expected a bool, got {type(flag).__name__}")
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) or opset < 14:
        raise ValueError(f"opset: expected an int >= 14, got {opset!r}")
    if mode == "one_to_one":
        lengths = False  # one step: nothing to be ragged
    g = _Graph(onnx, _export_dtype(rnn, dtype))
    helper, TP = onnx.helper, onnx.TensorProto
    H, D, L = rnn.hidden_size, rnn.num_directions, rnn.num_layers
    bf = rnn.batch_first

    # ---- inputs
    if mode == "one_to_one":
        x_shape: list[Any] = ["B"] if emb is not None else ["B", rnn.input_size]
    else:
        x_shape = ["B", "T"] if bf else ["T", "B"]
        if emb is None:
            x_shape.append(rnn.input_size)
    inputs = [helper.make_tensor_value_info("x", TP.INT64 if emb is not None else g.elem, x_shape)]
    len_name = None
    if lengths:
        inputs.append(helper.make_tensor_value_info("lengths", TP.INT64, ["B"]))
        len_name = "lengths"
    h0 = c0 = None
    if initial_state:
        inputs.append(helper.make_tensor_value_info("h0", g.elem, [L * D, "B", H]))
        h0 = "h0"
        if rnn._spec.has_cell_state:
            inputs.append(helper.make_tensor_value_info("c0", g.elem, [L * D, "B", H]))
            c0 = "c0"

    # ---- embedding, time-major
    x = "x"
    if emb is not None:
        x = g.one("Gather", [g.weight("embedding.weight", emb.parameters()["weight"]), x], axis=0)
    if mode == "one_to_one":
        x = g.one("Unsqueeze", [x, g.const("axes", [0], np.int64)])  # (1, B, I)
    elif bf:
        x = g.one("Transpose", [x], perm=[1, 0, 2])

    y, hs, cs = _rnn_stack(g, rnn, x, len_name, h0, c0, "rnn." if head is not None else "")

    out, out_shape = _head_output(g, head, y, hs, mode, bf, D * H)
    g.rename(out, "output")
    outputs = [helper.make_tensor_value_info("output", g.elem, out_shape)]
    g.rename(g.one("Concat", hs, axis=0) if L > 1 else hs[0], "h_n")
    outputs.append(helper.make_tensor_value_info("h_n", g.elem, [L * D, "B", H]))
    if cs:
        g.rename(g.one("Concat", cs, axis=0) if L > 1 else cs[0], "c_n")
        outputs.append(helper.make_tensor_value_info("c_n", g.elem, [L * D, "B", H]))

    graph = helper.make_graph(
        g.nodes,
        graph_name or f"rnnfast_{type(model).__name__}_{rnn._cell}",
        inputs,
        outputs,
        initializer=g.inits,
    )
    proto = helper.make_model(
        graph,
        producer_name="rnnfast",
        opset_imports=[helper.make_opsetid("", int(opset))],
    )
    proto.ir_version = min(proto.ir_version, 8)  # readable by onnxruntime >= 1.12
    onnx.checker.check_model(proto)
    return proto


def _unpack_model(model: Any) -> tuple[Any, Any, Any, str]:
    """(recurrent stack, head or None, embedding or None, mode) of an exportable model."""
    from .modules import Linear, RNNBase, SequenceModel

    if isinstance(model, SequenceModel):
        rnn, head, emb, mode = model.rnn, model.head, model.embedding, model.mode
    elif isinstance(model, RNNBase):
        rnn, head, emb, mode = model, None, None, "many_to_many"
    else:
        raise TypeError(
            f"model: expected an rnnfast SequenceModel, RNN, LSTM or GRU, got "
            f"{type(model).__name__} (encoder-decoder models such as Seq2Seq decode step by step "
            "and are not exported)"
        )
    cell = getattr(rnn, "_cell", None) if isinstance(rnn, RNNBase) else None
    if cell not in _OP_TYPE:
        what = repr(cell) if cell is not None else type(rnn).__name__
        raise ValueError(
            f"model: its {what} cell cannot be exported to ONNX (exported cells: "
            f"{', '.join(_OP_TYPE)})"
        )
    if getattr(rnn, "proj_size", 0):
        raise ValueError(
            f"model: an LSTM with proj_size={rnn.proj_size} cannot be exported to ONNX (the ONNX "
            "LSTM operator has no projection)"
        )
    if head is not None and not isinstance(head, Linear):  # pragma: no cover - SequenceModel checks
        raise TypeError(f"model.head: expected an rnnfast Linear, got {type(head).__name__}")
    return rnn, head, emb, mode


def _export_dtype(rnn: Any, dtype: Any) -> np.dtype:
    """The graph's float dtype: ``dtype`` (float32 or float64), or the model's when None."""
    if dtype is None:
        dtype = rnn.dtype
    try:
        dtype = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype: expected float32, float64 or None, got {dtype!r}") from exc
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype: expected float32, float64 or None, got {dtype}")
    return dtype


def _head_output(
    g: _Graph, head: Any, y: str, hs: list[str], mode: str, bf: bool, features: int
) -> tuple[str, list[Any]]:
    """The output node and its shape: the stack's output y (T, B, D*H) (``features`` = D*H), or
    the head applied to it (many-to-many, one-to-many) or to the final states hs (many-to-one)."""
    if head is None:
        out = g.one("Transpose", [y], perm=[1, 0, 2]) if bf else y
        return out, (["B", "T", features] if bf else ["T", "B", features])
    hp = head.parameters()
    b = g.weight("head.bias", hp["bias"]) if head.bias else None
    n_out = head.out_features
    if mode in ("many_to_one", "one_to_one"):
        if mode == "many_to_one":  # top layer's final states (D, B, H) -> (B, D*H)
            ht = g.one("Transpose", [hs[-1]], perm=[1, 0, 2])
            feat = g.one("Reshape", [ht, g.const("shape", [0, -1], np.int64)])
        else:  # the single step's output (1, B, D*H) -> (B, D*H)
            feat = g.one("Squeeze", [y, g.const("axes", [0], np.int64)])
        w = g.weight("head.weight", hp["weight"])
        gemm_in = [feat, w] + ([b] if b is not None else [])
        out = g.one("Gemm", gemm_in, transB=1)
        out_shape = ["B", n_out]
    else:
        wt = g.weight("head.weight_t", np.ascontiguousarray(hp["weight"].T))  # (D*H, O)
        out = g.one("MatMul", [y, wt])
        if b is not None:
            out = g.one("Add", [out, b])
        if bf:
            out = g.one("Transpose", [out], perm=[1, 0, 2])
        out_shape = ["B", "T", n_out] if bf else ["T", "B", n_out]
    return out, out_shape


def export(
    model: Any,
    path: str | os.PathLike[str],
    *,
    lengths: bool = True,
    initial_state: bool = False,
    opset: int = DEFAULT_OPSET,
    dtype: Any = None,
    graph_name: str | None = None,
) -> Any:
    """Write ``model`` (a :class:`~rnnfast.modules.SequenceModel`, or a bare RNN/LSTM/GRU stack)
    as an ONNX file at ``path`` and return the ``onnx.ModelProto``.

    Args:
        model: the model, in its current weights and dtype (float32 or float64); dropout is an
            inference no-op and is not exported.
        path: the file to write (``.onnx``).
        lengths: add the int64 input ``lengths`` (B,) (ragged batches; pass T for full
            sequences). Ignored in ``one_to_one`` mode.
        initial_state: add the inputs ``h0`` (and ``c0``), (num_layers * num_directions, B, H),
            as the ``hx`` of ``model.forward``; without them the state starts at 0.
        opset: ONNX opset of the default domain (>= 14).
        dtype: float type of the graph (weights, float inputs and outputs); None = the model's.
            onnxruntime's CPU RNN/LSTM/GRU kernels exist in float32 only (1.32: "does not
            support double yet"), so export a float64 model with ``dtype="float32"`` to run it
            there.
        graph_name: the graph's name (default ``rnnfast_<Class>_<cell>``).

    Returns:
        The ``onnx.ModelProto`` written (checked with ``onnx.checker``).

    Example::

        model = rnnfast.build_model("gru", 8, 32, 4, mode="many_to_one")
        rnnfast.onnx.export(model, "model.onnx")
        sess = onnxruntime.InferenceSession("model.onnx")
        pred, h_n = sess.run(None, {"x": x, "lengths": lengths})   # x (T, B, 8) float32
    """
    onnx = _require_onnx()
    proto = to_model_proto(
        model,
        lengths=lengths,
        initial_state=initial_state,
        opset=opset,
        dtype=dtype,
        graph_name=graph_name,
    )
    onnx.save_model(proto, os.fspath(path))
    return proto
