"""Tests of rnnfast.onnx: exported graphs run in onnxruntime with rnnfast's outputs.

Skipped (with the reason) without onnx or onnxruntime. Every graph passes ``onnx.checker``
(export runs it) and gives, in onnxruntime, the outputs of the rnnfast model in eval mode at 1e-5
(max error relative to the largest output, float32): every built-in task's model with its default
config (small data), and RNN tanh/relu, LSTM, GRU, peephole LSTM and reset-before GRU stacks of 1-3
layers, bidirectional, ragged lengths (including 0), initial states, batch_first, the four
SequenceModel modes.

A second, independent runtime: the float64 graphs run in ``onnx.reference`` (the ONNX project's
NumPy evaluator of the operator specification) and match the float64 rnnfast model at 1e-12.
``onnx.reference`` (1.23) ignores ``sequence_lens``, so it sees full-length batches only; the
ragged cases run in onnxruntime.

The undefined edge case of the ONNX operators, sequence_lens = 0 with a non-zero initial state, is
tested on a bare operator (onnxruntime returns zeros) and on the exported graph (which selects the
initial state, as rnnfast does).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="rnnfast.onnx tests need the onnx package")
ort = pytest.importorskip("onnxruntime", reason="rnnfast.onnx tests need onnxruntime")

from onnx.reference import ReferenceEvaluator  # noqa: E402

import rnnfast.onnx as rx  # noqa: E402
from helpers import assert_close  # noqa: E402
from rnnfast._cells import get_cell  # noqa: E402
from rnnfast.modules import (  # noqa: E402
    GRU,
    LSTM,
    RNN,
    PeepholeLSTM,
    ResetBeforeGRU,
    RNNBase,
    SequenceModel,
    build_model,
)
from rnnfast.tasks import get_task, list_tasks  # noqa: E402

__all__: list[str] = []

RTOL = 1e-5  # float32, relative to the largest output
CELLS = (
    ("rnn", "tanh"),
    ("rnn", "relu"),
    ("lstm", "tanh"),
    ("gru", "tanh"),
    ("gru_reset_before", "tanh"),  # ONNX GRU with linear_before_reset = 0
    ("lstm_peephole", "tanh"),  # ONNX LSTM with its P input
)


def _session(proto: Any) -> Any:
    so = ort.SessionOptions()
    so.log_severity_level = 3  # errors only
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _run(proto: Any, feed: dict[str, Any]) -> dict[str, np.ndarray]:
    sess = _session(proto)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feed)))


def _random_extras(model: Any, rng: np.random.Generator) -> Any:
    """``model`` with its cell's extra parameters (the peepholes) drawn from U(-1, 1): larger than
    the default init, so that a misplaced block changes the outputs well above the tolerance."""
    rnn = model.rnn if isinstance(model, SequenceModel) else model
    for layer in range(rnn.num_layers):
        for d in range(rnn.num_directions):
            for name, value in rnn._param_dict(layer, d).items():
                if name not in ("w_ih", "w_hh", "b_ih", "b_hh"):
                    value[...] = rng.uniform(-1.0, 1.0, value.shape)
    return model


def _hx(cell: str, h0: Any, c0: Any) -> Any:
    """The ``hx`` argument of a stack of ``cell``: (h0, c0) with a cell state, else h0."""
    return (h0, c0) if get_cell(cell).has_cell_state else h0


def _forward(model: Any, x: Any, lengths: Any, hx: Any) -> tuple[Any, Any, Any]:
    """(output, h_n, c_n or None) of a SequenceModel or a bare stack, as the graph returns them."""
    if isinstance(model, RNNBase):
        out, hn = model(x, hx=hx, lengths=lengths)
    else:
        out, hn = model(x, lengths=lengths, hx=hx), model.last_hidden
    return (out, hn[0], hn[1]) if isinstance(hn, tuple) else (out, hn, None)


def _check(model: Any, x: Any, lengths: Any = None, hx: Any = None, where: str = "") -> None:
    """Export ``model`` (lengths / initial-state inputs as given), run it in onnxruntime and
    compare output, h_n (and c_n) with the rnnfast model in eval mode."""
    model.eval()
    expected, h_n, c_n = _forward(model, x, lengths, hx)
    proto = rx.to_model_proto(model, lengths=lengths is not None, initial_state=hx is not None)
    feed: dict[str, Any] = {"x": np.asarray(x)}
    if lengths is not None:
        feed["lengths"] = np.asarray(lengths, dtype=np.int64)
    if hx is not None:
        if isinstance(hx, tuple):
            feed["h0"], feed["c0"] = hx
        else:
            feed["h0"] = hx
    got = _run(proto, feed)
    assert_close(got["output"], expected, RTOL, f"{where} output")
    assert_close(got["h_n"], h_n, RTOL, f"{where} h_n")
    if c_n is not None:
        assert_close(got["c_n"], c_n, RTOL, f"{where} c_n")


# --------------------------------------------------------------------------------------------------
# every built-in task's model
# --------------------------------------------------------------------------------------------------

_SMALL = {"n_train": 48, "n_val": 16}


@pytest.mark.parametrize("name", list_tasks())
def test_task_models_run_in_onnxruntime(name: str, tmp_path: Any) -> None:
    task = get_task(name)
    opts = {k: v for k, v in _SMALL.items() if k in task.data_options}
    train, val = task.make_data(seed=0, **opts)
    model = task.build_model(task.config(), train)
    path = tmp_path / f"{name}.onnx"
    if not isinstance(model, SequenceModel):
        # encoder-decoder models (the dates task's Seq2Seq with attention) decode step by step
        # with a feedback loop: not exported, and said so
        with pytest.raises(TypeError, match="model: expected an rnnfast SequenceModel"):
            rx.export(model, path)
        return
    n = min(16, val.n)
    x = val.x[:, :n]
    lengths = None if val.lengths is None else val.lengths[:n]
    model.eval()
    expected = model(x, lengths=lengths)
    rx.export(model, path)
    onnx.checker.check_model(onnx.load(str(path)))
    feed = {"x": x, "lengths": lengths if lengths is not None else np.full(n, x.shape[0])}
    got = _run(onnx.load(str(path)), feed)
    assert_close(got["output"], expected, RTOL, f"task {name}: output")


# --------------------------------------------------------------------------------------------------
# cells, layers, directions, ragged lengths, initial states
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell,nonlinearity", CELLS)
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_stacks_match(cell: str, nonlinearity: str, num_layers: int, bidirectional: bool) -> None:
    rng = np.random.default_rng(num_layers * 10 + bidirectional)
    kw = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
    T, B, I, H = 7, 5, 4, 6
    lengths = np.array([7, 3, 1, 0, 5])
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    nd = num_layers * (2 if bidirectional else 1)
    h0 = rng.standard_normal((nd, B, H)).astype(np.float32)
    hx = _hx(cell, h0, rng.standard_normal((nd, B, H)).astype(np.float32))
    where = f"{cell}/{nonlinearity} L={num_layers} bi={bidirectional}"
    for mode in ("many_to_one", "many_to_many"):
        m = build_model(
            cell, I, H, 3, mode=mode, num_layers=num_layers, bidirectional=bidirectional,
            seed=1, **kw,
        )  # fmt: skip
        _random_extras(m, rng)
        _check(m, x, lengths, hx, f"{where} {mode} ragged+hx")
        _check(m, x, None, None, f"{where} {mode} full")
        _check(m, x, lengths, None, f"{where} {mode} ragged")


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU, PeepholeLSTM, ResetBeforeGRU])
def test_bare_stack_exports(cls: type) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 3, 4)).astype(np.float32)
    lengths = np.array([6, 2, 4])
    for batch_first in (False, True):
        m = cls(4, 5, num_layers=2, bidirectional=True, batch_first=batch_first, seed=0)
        _random_extras(m, rng)
        xb = x.transpose(1, 0, 2).copy() if batch_first else x
        _check(m, xb, lengths, None, f"{cls.__name__} batch_first={batch_first}")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru", "lstm_peephole"])
def test_batch_first_and_modes(cell: str) -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 6, 4)).astype(np.float32)  # (B, T, I)
    lengths = np.array([6, 2, 5])
    for mode in ("many_to_one", "many_to_many", "one_to_many"):
        m = build_model(cell, 4, 5, 2, mode=mode, batch_first=True, bidirectional=True, seed=2)
        _check(m, x, lengths, None, f"{cell} batch_first {mode}")
    m = build_model(cell, 4, 5, 2, mode="one_to_one", num_layers=2, seed=2)
    _check(m, x[:, 0], None, None, f"{cell} one_to_one")


def test_embedding_and_no_bias() -> None:
    rng = np.random.default_rng(7)
    ids = rng.integers(0, 11, size=(5, 4))
    lengths = np.array([5, 1, 3, 4])
    for cell in ("rnn", "lstm", "gru", "lstm_peephole"):  # no B input: P after an empty slot
        m = build_model(cell, 0, 6, 11, vocab_size=11, embedding_dim=3, bias=False, seed=4)
        _random_extras(m, rng)
        _check(m, ids, lengths, None, f"{cell} embedding, bias=False, many_to_many")
        m = build_model(cell, 0, 6, 2, mode="one_to_one", vocab_size=11, embedding_dim=3, seed=4)
        _check(m, ids[0], None, None, f"{cell} embedding one_to_one")


def test_float64_model_exported_as_float32() -> None:
    rng = np.random.default_rng(8)
    m = build_model("gru", 3, 4, 2, mode="many_to_one", dtype=np.float64, seed=0).eval()
    x = rng.standard_normal((5, 2, 3))
    expected = m(x, lengths=np.array([5, 2]))
    proto = rx.to_model_proto(m, dtype="float32")
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    got = _run(proto, {"x": x.astype(np.float32), "lengths": np.array([5, 2])})
    assert_close(got["output"], expected, RTOL, "float64 model as float32: output")
    # the float64 graph is valid ONNX (checked in to_model_proto), though onnxruntime 1.32 has
    # float32 RNN/LSTM/GRU kernels only
    assert rx.to_model_proto(m).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE


def test_gate_blocks_reordered() -> None:
    """Weight rows labelled by gate land in ONNX's gate order (LSTM i, o, f, c; GRU z, r, h)."""
    for cls, labels, want in ((LSTM, "ifgo", "iofg"), (GRU, "rzn", "zrn")):
        H = 2
        m = cls(1, H, seed=0)
        p = m.parameters()
        for k in ("weight_ih_l0", "weight_hh_l0"):
            p[k][...] = np.repeat(np.arange(len(labels)), H)[:, None]
        for k in ("bias_ih_l0", "bias_hh_l0"):
            p[k][...] = np.repeat(np.arange(len(labels)), H)
        inits = {
            t.name: onnx.numpy_helper.to_array(t) for t in rx.to_model_proto(m).graph.initializer
        }
        order = [labels.index(c) for c in want]
        np.testing.assert_array_equal(inits["W_l0"][0, ::H, 0], order)
        np.testing.assert_array_equal(inits["R_l0"][0, ::H, 0], order)
        np.testing.assert_array_equal(inits["B_l0"][0, ::H], order + order)
    gru = [n for n in rx.to_model_proto(GRU(1, 2)).graph.node if n.op_type == "GRU"][0]
    assert {a.name: a.i for a in gru.attribute}["linear_before_reset"] == 1


def test_peephole_blocks_reordered() -> None:
    """weight_peep [p_i, p_f, p_o] lands in ONNX's P as [p_i, p_o, p_f], the 8th LSTM input, per
    direction (forward, reverse)."""
    H = 2
    m = PeepholeLSTM(1, H, bidirectional=True, seed=0)
    p = m.parameters()
    p["weight_peep_l0"][...] = np.repeat([0.0, 1.0, 2.0], H)  # labels i, f, o
    p["weight_peep_l0_reverse"][...] = np.repeat([10.0, 11.0, 12.0], H)
    proto = rx.to_model_proto(m, initial_state=True)
    node = [n for n in proto.graph.node if n.op_type == "LSTM"][0]
    assert len(node.input) == 8 and node.input[7] == "w_peep_l0"
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    np.testing.assert_array_equal(inits["w_peep_l0"][:, ::H], [[0, 2, 1], [10, 12, 11]])


# --------------------------------------------------------------------------------------------------
# a second runtime: onnx.reference, float64
# --------------------------------------------------------------------------------------------------


# onnx.reference's RNN knows Tanh and Affine only (1.23: "Unknown activation function 'Relu'")
REF_CELLS = tuple(c for c in CELLS if c != ("rnn", "relu"))


@pytest.mark.parametrize("cell,nonlinearity", REF_CELLS)
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_stacks_match_onnx_reference_float64(
    cell: str, nonlinearity: str, num_layers: int, bidirectional: bool
) -> None:
    """The float64 graph (weights, inputs, outputs in double) in onnx.reference against the float64
    rnnfast model, with and without an initial state, at 1e-12: an evaluator written from the
    operator specification, independent of onnxruntime's kernels."""
    rng = np.random.default_rng(20 + num_layers * 2 + bidirectional)
    kw = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
    T, B, I, H = 6, 3, 4, 5
    nd = num_layers * (2 if bidirectional else 1)
    x = rng.standard_normal((T, B, I))
    hx = _hx(cell, rng.standard_normal((nd, B, H)), rng.standard_normal((nd, B, H)))
    where = f"{cell}/{nonlinearity} L={num_layers} bi={bidirectional} onnx.reference"
    m = build_model(
        cell, I, H, 3, mode="many_to_many", num_layers=num_layers, bidirectional=bidirectional,
        dtype=np.float64, seed=3, **kw,
    )  # fmt: skip
    _random_extras(m, rng).eval()
    for initial in (False, True):
        expected, h_n, c_n = _forward(m, x, None, hx if initial else None)
        proto = rx.to_model_proto(m, lengths=True, initial_state=initial)
        assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
        feed: dict[str, Any] = {"x": x, "lengths": np.full(B, T, np.int64)}
        if initial:
            feed["h0"], feed["c0"] = hx if isinstance(hx, tuple) else (hx, None)
            if feed["c0"] is None:
                del feed["c0"]
        sess = ReferenceEvaluator(proto)
        got = dict(zip([o.name for o in proto.graph.output], sess.run(None, feed)))
        tag = f"{where} initial_state={initial}"
        assert_close(got["output"], expected, 1e-12, f"{tag} output")
        assert_close(got["h_n"], h_n, 1e-12, f"{tag} h_n")
        if c_n is not None:
            assert_close(got["c_n"], c_n, 1e-12, f"{tag} c_n")


# --------------------------------------------------------------------------------------------------
# sequence_lens = 0 with a non-zero initial state
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_zero_length_with_initial_state(cell: str) -> None:
    """onnxruntime's bare operator returns 0 for a zero-length row; rnnfast returns the initial
    state, and so does the exported graph (a Where after the operator)."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(9)
    T, B, I, H = 4, 2, 3, 5
    cls = {"rnn": RNN, "lstm": LSTM, "gru": GRU}[cell]
    m = cls(I, H, seed=0).eval()
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    lengths = np.array([0, 4])
    h0 = np.full((1, B, H), 0.5, np.float32)
    c0 = np.full((1, B, H), -0.25, np.float32)
    hx = (h0, c0) if cell == "lstm" else h0
    _, hn = m(x, hx=hx, lengths=lengths)
    h_n = hn[0] if cell == "lstm" else hn
    np.testing.assert_array_equal(h_n[0, 0], h0[0, 0])  # rnnfast: the initial state
    if cell == "lstm":
        np.testing.assert_array_equal(hn[1][0, 0], c0[0, 0])

    # the exported graph agrees with rnnfast
    _check(m, x, lengths, hx, f"{cell} zero length, exported graph")

    # the bare operator (the exported graph's weights, no Where): zeros in onnxruntime
    proto = rx.to_model_proto(m, initial_state=True)
    inits = [t for t in proto.graph.initializer if t.name in ("W_l0", "R_l0", "B_l0")]
    op = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[cell]
    ins = ["x", "W_l0", "R_l0", "B_l0", "seq", "h0"] + (["c0"] if cell == "lstm" else [])
    outs = ["Y", "Y_h"] + (["Y_c"] if cell == "lstm" else [])
    attrs: dict[str, Any] = {"hidden_size": H}
    if cell == "gru":
        attrs["linear_before_reset"] = 1
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node(op, ins, outs, **attrs)],
        "bare",
        [helper.make_tensor_value_info("x", f32, [T, B, I])]
        + [helper.make_tensor_value_info("seq", TensorProto.INT32, [B])]
        + [helper.make_tensor_value_info(n, f32, [1, B, H]) for n in ins[5:]],
        [
            helper.make_tensor_value_info(n, f32, [T, 1, B, H] if n == "Y" else [1, B, H])
            for n in outs
        ],
        initializer=inits,
    )
    bare = helper.make_model(graph, opset_imports=[helper.make_opsetid("", rx.DEFAULT_OPSET)])
    bare.ir_version = 8
    onnx.checker.check_model(bare)
    feed = {"x": x, "seq": lengths.astype(np.int32), "h0": h0}
    if cell == "lstm":
        feed["c0"] = c0
    got = _run(bare, feed)
    np.testing.assert_array_equal(got["Y_h"][0, 0], 0.0)  # onnxruntime: zeros, not h0
    assert_close(got["Y_h"][0, 1], h_n[0, 1], RTOL, f"{cell} bare operator, full-length row")
    if cell == "lstm":
        np.testing.assert_array_equal(got["Y_c"][0, 0], 0.0)


# --------------------------------------------------------------------------------------------------
# argument errors
# --------------------------------------------------------------------------------------------------


def test_errors(tmp_path: Any) -> None:
    with pytest.raises(TypeError, match="model: expected an rnnfast SequenceModel"):
        rx.export(object(), tmp_path / "m.onnx")
    m = GRU(2, 3)
    with pytest.raises(TypeError, match="lengths: expected a bool"):
        rx.to_model_proto(m, lengths=1)
    with pytest.raises(ValueError, match="opset: expected an int >= 14"):
        rx.to_model_proto(m, opset=9)
    with pytest.raises(TypeError, match="dtype: expected float32, float64 or None"):
        rx.to_model_proto(m, dtype=np.int32)


def test_registered_cells_without_an_onnx_operator_are_refused_by_name() -> None:
    """A registered cell that no ONNX operator computes (no ``onnx_op``, or an extra parameter no
    operator input holds) is refused by name: writing it as the nearest operator would be a
    different model. Checked for every such cell in the registry (none among the exported five)."""
    from rnnfast._cells import CELLS

    exported = {"rnn", "lstm", "gru", "lstm_peephole", "gru_reset_before"}
    refused = [
        c.name
        for c in CELLS
        if c.onnx_op is None
        or {n for n, _ in c.extra_params} != {n for n, _ in c.onnx_extra_inputs}
    ]
    assert exported.isdisjoint(refused)
    for name in refused:
        model = build_model(name, 3, 4, 2, mode="many_to_one", seed=0)
        with pytest.raises(ValueError, match=f"'{name}' cell cannot be exported to ONNX"):
            rx.to_model_proto(model)
    for name in exported:  # and the five are written
        assert rx.to_model_proto(build_model(name, 3, 4, 2, seed=0)).graph.node


def test_a_minimal_cell_is_refused_by_name() -> None:
    model = build_model("mingru", 3, 4, 2, mode="many_to_one", seed=0)
    with pytest.raises(ValueError, match="MinGRU cell cannot be exported to ONNX"):
        rx.to_model_proto(model)
