"""The latency grid's inputs and implementations (``benchmarks/bench_latency.py``, issue 17).

One row's float32 inputs (I = H, PyTorch's init), and a no-argument call per implementation on
them: rnnfast's inference forward, the float64 reference, onnxruntime running one ONNX
RNN/LSTM/GRU node built here, and ``torch.nn.<Cell>``; each returns (y (T, B, H), h_n (B, H)
[, c_n (B, H)]), compared by :func:`max_error`. rnnfast, onnx, onnxruntime and torch are passed in
or imported inside the functions: the ``--before-core`` worker loads its own core before rnnfast.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .common import GATES

__all__ = [
    "build_onnx_model",
    "make_inputs",
    "max_error",
    "named_outputs",
    "ort_call",
    "reference_outputs",
    "rnnfast_call",
    "frozen_call",
    "torch_call",
]


def make_inputs(cell: str, t: int, b: int, h: int, seed: int) -> dict[str, Any]:
    """float32 inputs of one row, PyTorch's init U(-1/sqrt(H), 1/sqrt(H)); I = H.

    x (T, B, H), h0 (B, H), c0 (B, H) for the LSTM, w_ih / w_hh (G*H, H), b_ih / b_hh (G*H,).
    """
    rng = np.random.default_rng(seed)
    k = 1.0 / np.sqrt(h)
    g = GATES[cell] * h

    def u(*shape: int) -> np.ndarray:
        return rng.uniform(-k, k, size=shape).astype(np.float32)

    inp = {
        "x": rng.standard_normal((t, b, h)).astype(np.float32),
        "h0": u(b, h),
        "w_ih": u(g, h),
        "w_hh": u(g, h),
        "b_ih": u(g),
        "b_hh": u(g),
    }
    if cell == "lstm":
        inp["c0"] = u(b, h)
    return inp


def named_outputs(cell: str, out: tuple[Any, ...]) -> dict[str, np.ndarray]:
    """A call's (y, h_n[, c_n]) by name, as arrays."""
    names = ("y", "h_n", "c_n") if cell == "lstm" else ("y", "h_n")
    return {n: np.asarray(a) for n, a in zip(names, out, strict=False)}


def rnnfast_call(functional: Any, cell: str, inp: Mapping[str, Any]) -> Callable[[], Any]:
    """A no-argument call of rnnfast's inference forward on inp; returns (y, h_n[, c_n])."""
    fwd = getattr(functional, f"{cell}_forward")
    states = [inp["h0"], inp["c0"]] if cell == "lstm" else [inp["h0"]]
    args = (inp["x"], *states, inp["w_ih"], inp["w_hh"], inp["b_ih"], inp["b_hh"])

    def call() -> Any:
        return fwd(*args, training=False)[:-1]

    return call


def frozen_call(rnnfast: Any, cell: str, inp: Mapping[str, Any]) -> Callable[[], Any]:
    """rnnfast's prepacked inference (``module.freeze()``, float32) on inp's weights: the stack
    packs W_hh once, as an onnxruntime session does at creation; returns (y, h_n[, c_n])."""
    h = inp["w_hh"].shape[1]
    mod = {"rnn": rnnfast.nn.RNN, "lstm": rnnfast.nn.LSTM, "gru": rnnfast.nn.GRU}[cell]
    m = mod(inp["w_ih"].shape[1], h)
    m.load_state_dict(
        {
            "weight_ih_l0": inp["w_ih"],
            "weight_hh_l0": inp["w_hh"],
            "bias_ih_l0": inp["b_ih"],
            "bias_hh_l0": inp["b_hh"],
        }
    )
    frozen = m.eval().freeze("fp32")
    hx = (inp["h0"][None], inp["c0"][None]) if cell == "lstm" else inp["h0"][None]
    x = inp["x"]

    def call() -> Any:
        y, s = frozen(x, hx)
        return (y, *(t[0] for t in s)) if cell == "lstm" else (y, s[0])

    return call


def reference_outputs(reference: Any, cell: str, inp: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The float64 reference's y, h_n (c_n) on inp."""
    d64 = {k: np.asarray(v, dtype=np.float64) for k, v in inp.items()}
    return named_outputs(cell, rnnfast_call(reference, cell, d64)())


def build_onnx_model(cell: str, inp: Mapping[str, Any]) -> bytes:
    """One ONNX RNN/LSTM/GRU node equal to rnnfast's cell on inp's weights, serialised.

    Graph inputs X (T, B, I), initial_h (1, B, H) [, initial_c (1, B, H)]; W (1, G*H, I),
    R (1, G*H, H), B (1, 2*G*H) are initializers with the gate blocks in ONNX's order (LSTM i, o,
    f, c; GRU z, r, h). Outputs Y (T, 1, B, H), Y_h (1, B, H) [, Y_c (1, B, H)].
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from rnnfast._cells import get_cell

    spec = get_cell(cell)
    h = inp["w_hh"].shape[1]
    t, b, i = inp["x"].shape
    perm = spec.onnx_perm

    def reorder(a: np.ndarray) -> np.ndarray:
        blocks = np.split(np.asarray(a, dtype=np.float32), spec.gates, axis=0)
        return np.concatenate([blocks[j] for j in perm], axis=0)

    w = reorder(inp["w_ih"])[None]
    r = reorder(inp["w_hh"])[None]
    bias = np.concatenate([reorder(inp["b_ih"]), reorder(inp["b_hh"])])[None]
    inits = [
        numpy_helper.from_array(np.ascontiguousarray(w), "W"),
        numpy_helper.from_array(np.ascontiguousarray(r), "R"),
        numpy_helper.from_array(np.ascontiguousarray(bias), "B"),
    ]
    node_in = ["X", "W", "R", "B", "", "initial_h"]
    graph_in = [
        helper.make_tensor_value_info("X", TensorProto.FLOAT, [t, b, i]),
        helper.make_tensor_value_info("initial_h", TensorProto.FLOAT, [1, b, h]),
    ]
    outs = ["Y", "Y_h"]
    if cell == "lstm":
        node_in.append("initial_c")
        graph_in.append(helper.make_tensor_value_info("initial_c", TensorProto.FLOAT, [1, b, h]))
        outs.append("Y_c")
    attrs: dict[str, Any] = {"hidden_size": h}
    if cell == "gru":
        attrs["linear_before_reset"] = 1
    if cell == "rnn":
        attrs["activations"] = ["Tanh"]
    node = helper.make_node(spec.onnx_op, node_in, outs, **attrs)
    graph_out = [
        helper.make_tensor_value_info("Y", TensorProto.FLOAT, [t, 1, b, h]),
        helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, b, h]),
    ]
    if cell == "lstm":
        graph_out.append(helper.make_tensor_value_info("Y_c", TensorProto.FLOAT, [1, b, h]))
    graph = helper.make_graph([node], f"{cell}_latency", graph_in, graph_out, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def ort_call(
    ort: Any, model: bytes, cell: str, inp: Mapping[str, Any], threads: int, spin: bool
) -> Callable[[], Any]:
    """A no-argument onnxruntime run of model on inp; returns (y (T, B, H), h_n[, c_n])."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    feeds = {"X": inp["x"], "initial_h": inp["h0"][None]}
    if cell == "lstm":
        feeds["initial_c"] = inp["c0"][None]

    def call() -> Any:
        res = sess.run(None, feeds)
        return (res[0][:, 0], *(r[0] for r in res[1:]))

    return call


def torch_call(torch: Any, cell: str, inp: Mapping[str, Any]) -> Callable[[], Any]:
    """A no-argument torch.nn.<Cell> forward under inference_mode; returns (y, h_n[, c_n])."""
    h = inp["w_hh"].shape[1]
    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    mod = cls(h, h)
    with torch.no_grad():
        for name, key in (
            ("weight_ih_l0", "w_ih"),
            ("weight_hh_l0", "w_hh"),
            ("bias_ih_l0", "b_ih"),
            ("bias_hh_l0", "b_hh"),
        ):
            getattr(mod, name).copy_(torch.from_numpy(inp[key]))
    mod.eval()
    x = torch.from_numpy(inp["x"])
    state: Any = torch.from_numpy(inp["h0"])[None]
    if cell == "lstm":
        state = (state, torch.from_numpy(inp["c0"])[None])

    def call() -> Any:
        with torch.inference_mode():
            y, s = mod(x, state)
        if cell == "lstm":
            return y.numpy(), s[0][0].numpy(), s[1][0].numpy()
        return y.numpy(), s[0].numpy()

    return call


def max_error(actual: Mapping[str, Any], expected: Mapping[str, np.ndarray]) -> tuple[float, str]:
    """The largest max|a - e| / max|e| over the outputs, and which output it is."""
    worst, where = 0.0, ""
    for name, e in expected.items():
        a = np.asarray(actual[name], dtype=np.float64)
        if a.shape != e.shape:
            return float("inf"), f"{name}: shape {a.shape} != {e.shape}"
        if not np.all(np.isfinite(a)):
            return float("inf"), f"{name}: non-finite"
        err = float(np.max(np.abs(a - e)) / max(float(np.max(np.abs(e))), 1e-30))
        if err > worst:
            worst, where = err, name
    return worst, where
