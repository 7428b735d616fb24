"""Tests of rnnfast.interop: Keras weight layouts (no TensorFlow) and PyTorch module conversion.

Keras part: the Keras cells are written out in NumPy below from Keras' documented formulas (kernel
(I, G*H) with inputs on rows; LSTM gates i, f, c, o; GRU gates z, r, h with reset_after=True and a
(2, 3H) bias), independently of the converter, and compared with rnnfast's kernels on the converted
weights. The gate permutation is also checked on weights whose blocks are labelled by gate.

PyTorch part (skipped without torch): from_torch / to_torch round trips, the ImportError without
torch, zero-copy state_dict conversion, and load_state_dict of a torch state_dict.
Numeric parity with torch autograd lives in tests/test_torch_parity.py.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

from helpers import assert_close
from rnnfast import interop
from rnnfast._cells import CELLS

__all__: list[str] = []

# the registered cells that have a Keras layer: ("SimpleRNN", "LSTM", "GRU")
KINDS = tuple(c.keras_name for c in CELLS if c.keras_name is not None)
GATES = {c.keras_name: c.gates for c in CELLS if c.keras_name is not None}
RTOL = {np.float64: 1e-12, np.float32: 2e-6}


# --------------------------------------------------------------------------------------------------
# Keras cells written out in NumPy (the formulas of keras.layers.SimpleRNNCell / LSTMCell / GRUCell
# with default activations: tanh, recurrent_activation sigmoid, GRU reset_after=True)
# --------------------------------------------------------------------------------------------------


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a))


def keras_run(
    kind: str,
    x: np.ndarray,
    h0: np.ndarray,
    c0: np.ndarray | None,
    kernel: np.ndarray,
    recurrent: np.ndarray,
    bias: np.ndarray | None,
    activation: str = "tanh",
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Run a Keras cell over x (T, B, I) time-major in float64; returns (y (T, B, H), h_T, c_T)."""
    x, kernel, recurrent = (np.asarray(a, np.float64) for a in (x, kernel, recurrent))
    h = np.asarray(h0, np.float64)
    c = None if c0 is None else np.asarray(c0, np.float64)
    hidden = recurrent.shape[0]
    ys = []
    for t in range(x.shape[0]):
        if kind == "SimpleRNN":
            a = x[t] @ kernel + h @ recurrent + (0.0 if bias is None else bias)
            h = np.tanh(a) if activation == "tanh" else np.maximum(a, 0.0)
        elif kind == "LSTM":
            z = x[t] @ kernel + h @ recurrent + (0.0 if bias is None else bias)
            i = _sigmoid(z[:, :hidden])
            f = _sigmoid(z[:, hidden : 2 * hidden])
            cc = np.tanh(z[:, 2 * hidden : 3 * hidden])
            o = _sigmoid(z[:, 3 * hidden :])
            assert c is not None
            c = f * c + i * cc
            h = o * np.tanh(c)
        else:  # GRU, reset_after=True
            mx = x[t] @ kernel + (0.0 if bias is None else bias[0])
            mi = h @ recurrent + (0.0 if bias is None else bias[1])
            x_z, x_r, x_h = mx[:, :hidden], mx[:, hidden : 2 * hidden], mx[:, 2 * hidden :]
            r_z, r_r, r_h = mi[:, :hidden], mi[:, hidden : 2 * hidden], mi[:, 2 * hidden :]
            z = _sigmoid(x_z + r_z)
            r = _sigmoid(x_r + r_r)
            hh = np.tanh(x_h + r * r_h)
            h = z * h + (1.0 - z) * hh
        ys.append(h)
    return np.stack(ys), h, c


def keras_arrays(
    kind: str, n_in: int, hidden: int, *, bias: bool, dtype: Any, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    rng = np.random.default_rng(seed)
    g = GATES[kind]
    kernel = rng.uniform(-0.6, 0.6, (n_in, g * hidden)).astype(dtype)
    rec = rng.uniform(-0.6, 0.6, (hidden, g * hidden)).astype(dtype)
    b = None
    if bias:
        shape = (2, 3 * hidden) if kind == "GRU" else (g * hidden,)
        b = rng.uniform(-0.5, 0.5, shape).astype(dtype)
    return kernel, rec, b


def rnnfast_run(
    kind: str,
    x: np.ndarray,
    h0: np.ndarray,
    c0: np.ndarray | None,
    w: dict[str, np.ndarray],
    nonlinearity: str = "tanh",
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """rnnfast.functional on PyTorch-layout weights (keys ..._l0)."""
    from rnnfast import functional as F

    args = (w["weight_ih_l0"], w["weight_hh_l0"], w.get("bias_ih_l0"), w.get("bias_hh_l0"))
    if kind == "SimpleRNN":
        y, h_n, _ = F.rnn_forward(x, h0, *args, nonlinearity=nonlinearity, training=False)
        return y, h_n, None
    if kind == "LSTM":
        y, h_n, c_n, _ = F.lstm_forward(x, h0, c0, *args, training=False)
        return y, h_n, c_n
    y, h_n, _ = F.gru_forward(x, h0, *args, training=False)
    return y, h_n, None


# --------------------------------------------------------------------------------------------------
# Keras: layout and round trips
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_keras_round_trip_exact(kind: str, bias: bool, dtype: Any) -> None:
    kernel, rec, b = keras_arrays(kind, 3, 5, bias=bias, dtype=dtype)
    w = interop.from_keras_weights(kind, kernel, rec, b)
    expected_keys = {"weight_ih_l0", "weight_hh_l0"} | (
        {"bias_ih_l0", "bias_hh_l0"} if bias else set()
    )
    assert set(w) == expected_keys
    g = GATES[kind]
    assert w["weight_ih_l0"].shape == (g * 5, 3)
    assert w["weight_hh_l0"].shape == (g * 5, 5)
    for v in w.values():
        assert v.dtype == dtype and v.flags.c_contiguous
    kernel2, rec2, b2 = interop.to_keras_weights(kind, w)
    np.testing.assert_array_equal(kernel2, kernel)
    np.testing.assert_array_equal(rec2, rec)
    if bias:
        assert b is not None and b2 is not None
        np.testing.assert_array_equal(b2, b)
    else:
        assert b2 is None


@pytest.mark.parametrize("kind", KINDS)
def test_torch_layout_to_keras_round_trip(kind: str) -> None:
    """PyTorch layout -> Keras -> PyTorch: weights, GRU biases exact; RNN/LSTM biases summed."""
    rng = np.random.default_rng(1)
    g, hidden, n_in = GATES[kind], 4, 3
    w = {
        "weight_ih_l0": rng.standard_normal((g * hidden, n_in)),
        "weight_hh_l0": rng.standard_normal((g * hidden, hidden)),
        "bias_ih_l0": rng.standard_normal(g * hidden),
        "bias_hh_l0": rng.standard_normal(g * hidden),
    }
    kernel, rec, b = interop.to_keras_weights(kind, w)
    assert kernel.shape == (n_in, g * hidden) and rec.shape == (hidden, g * hidden)
    back = interop.from_keras_weights(kind, kernel, rec, b)
    np.testing.assert_array_equal(back["weight_ih_l0"], w["weight_ih_l0"])
    np.testing.assert_array_equal(back["weight_hh_l0"], w["weight_hh_l0"])
    if kind == "GRU":
        assert b is not None and b.shape == (2, 3 * hidden)
        np.testing.assert_array_equal(back["bias_ih_l0"], w["bias_ih_l0"])
        np.testing.assert_array_equal(back["bias_hh_l0"], w["bias_hh_l0"])
    else:
        assert b is not None and b.shape == (g * hidden,)
        np.testing.assert_array_equal(back["bias_ih_l0"], w["bias_ih_l0"] + w["bias_hh_l0"])
        np.testing.assert_array_equal(back["bias_hh_l0"], np.zeros(g * hidden))


@pytest.mark.parametrize("kind", KINDS)
def test_keras_gate_blocks_land_in_torch_order(kind: str) -> None:
    """Label every Keras gate block by its gate and check where it lands in PyTorch's layout."""
    keras_order = {"SimpleRNN": ["h"], "LSTM": ["i", "f", "c", "o"], "GRU": ["z", "r", "h"]}[kind]
    torch_order = {"SimpleRNN": ["h"], "LSTM": ["i", "f", "c", "o"], "GRU": ["r", "z", "h"]}[kind]
    label = {name: float(10 * (k + 1)) for k, name in enumerate("ifcozrh")}
    hidden, n_in = 2, 3
    kernel = np.concatenate([np.full((n_in, hidden), label[g]) for g in keras_order], axis=1)
    kernel += (
        np.arange(n_in)[:, None] * 0.1
        + np.tile(np.arange(hidden), len(keras_order))[None, :] * 0.01
    )
    rec = np.concatenate([np.full((hidden, hidden), -label[g]) for g in keras_order], axis=1)
    if kind == "GRU":
        bias = np.stack(
            [
                np.concatenate([np.full(hidden, label[g]) for g in keras_order]),
                np.concatenate([np.full(hidden, -label[g]) for g in keras_order]),
            ]
        )
    else:
        bias = np.concatenate([np.full(hidden, label[g]) for g in keras_order])
    w = interop.from_keras_weights(kind, kernel, rec, bias)
    for k, gate in enumerate(torch_order):
        rows = slice(k * hidden, (k + 1) * hidden)
        kcol = keras_order.index(gate)
        # weight_ih block of gate = (Keras kernel block of the same gate)^T
        np.testing.assert_array_equal(
            w["weight_ih_l0"][rows], kernel[:, kcol * hidden : (kcol + 1) * hidden].T
        )
        np.testing.assert_array_equal(
            w["weight_hh_l0"][rows], np.full((hidden, hidden), -label[gate])
        )
        np.testing.assert_array_equal(w["bias_ih_l0"][rows], np.full(hidden, label[gate]))
        expected_bhh = np.full(hidden, -label[gate]) if kind == "GRU" else np.zeros(hidden)
        np.testing.assert_array_equal(w["bias_hh_l0"][rows], expected_bhh)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_keras_cell_equals_rnnfast_after_conversion(kind: str, bias: bool, dtype: Any) -> None:
    t_steps, batch, n_in, hidden = 5, 3, 4, 6
    kernel, rec, b = keras_arrays(kind, n_in, hidden, bias=bias, dtype=dtype, seed=2)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((t_steps, batch, n_in)).astype(dtype)
    h0 = rng.uniform(-0.5, 0.5, (batch, hidden)).astype(dtype)
    c0 = rng.uniform(-0.5, 0.5, (batch, hidden)).astype(dtype) if kind == "LSTM" else None
    y_k, h_k, c_k = keras_run(kind, x, h0, c0, kernel, rec, b)
    w = interop.from_keras_weights(kind, kernel, rec, b)
    y, h_n, c_n = rnnfast_run(kind, x, h0, c0, w)
    assert y.dtype == dtype
    tol = RTOL[dtype]
    assert_close(y, y_k, tol, f"{kind} y")
    assert_close(h_n, h_k, tol, f"{kind} h_n")
    if kind == "LSTM":
        assert_close(c_n, c_k, tol, f"{kind} c_n")


def test_keras_simplernn_relu() -> None:
    kernel, rec, b = keras_arrays("SimpleRNN", 3, 4, bias=True, dtype=np.float64, seed=4)
    x = np.random.default_rng(5).standard_normal((6, 2, 3))
    h0 = np.zeros((2, 4))
    y_k, h_k, _ = keras_run("SimpleRNN", x, h0, None, kernel, rec, b, activation="relu")
    y, h_n, _ = rnnfast_run(
        "SimpleRNN",
        x,
        h0,
        None,
        interop.from_keras_weights("SimpleRNN", kernel, rec, b),
        nonlinearity="relu",
    )
    assert_close(y, y_k, 1e-12, "relu y")
    assert_close(h_n, h_k, 1e-12, "relu h_n")


def test_keras_layer_and_reverse_names() -> None:
    kernel, rec, b = keras_arrays("LSTM", 3, 2, bias=True, dtype=np.float32)
    w = interop.from_keras_weights("lstm", kernel, rec, b, layer=2, reverse=True)
    assert set(w) == {
        "weight_ih_l2_reverse",
        "weight_hh_l2_reverse",
        "bias_ih_l2_reverse",
        "bias_hh_l2_reverse",
    }
    k2, r2, b2 = interop.to_keras_weights("lstm", w, layer=2, reverse=True)
    np.testing.assert_array_equal(k2, kernel)
    np.testing.assert_array_equal(r2, rec)
    np.testing.assert_array_equal(b2, b)
    with pytest.raises(ValueError, match="weight_ih_l0"):
        interop.to_keras_weights("lstm", w)


def test_keras_dtype_argument() -> None:
    kernel, rec, b = keras_arrays("GRU", 3, 2, bias=True, dtype=np.float32)
    w = interop.from_keras_weights("GRU", kernel, rec, b, dtype=np.float64)
    assert all(v.dtype == np.float64 for v in w.values())
    w16 = interop.from_keras_weights("GRU", kernel.astype(np.float16), rec.astype(np.float16), b)
    assert all(v.dtype == np.float32 for v in w16.values())
    with pytest.raises(TypeError, match="dtype"):
        interop.from_keras_weights("GRU", kernel, rec, b, dtype=np.int32)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"kind": "Conv1D"}, ValueError, "kind"),
        ({"kind": "GRU", "reset_after": "no"}, TypeError, "reset_after"),
        ({"kind": "LSTM", "kernel": np.zeros((3, 10))}, ValueError, "kernel"),
        ({"kind": "LSTM", "recurrent_kernel": np.zeros((2, 8))}, ValueError, "recurrent_kernel"),
        ({"kind": "LSTM", "bias": np.zeros(7)}, ValueError, "bias"),
        (
            {
                "kind": "GRU",
                "kernel": np.zeros((3, 9)),
                "recurrent_kernel": np.zeros((3, 9)),
                "bias": np.zeros(9),
            },
            ValueError,
            "bias",
        ),
        ({"kind": "LSTM", "kernel": np.zeros((3, 8), dtype=np.int64)}, TypeError, "kernel"),
        ({"kind": "LSTM", "kernel": np.zeros(8)}, ValueError, "kernel"),
    ],
)
def test_from_keras_weights_bad_input(kwargs: dict[str, Any], exc: type, match: str) -> None:
    args: dict[str, Any] = {
        "kernel": np.zeros((3, 12)),
        "recurrent_kernel": np.zeros((3, 12)),
        "bias": None,
    }
    if kwargs.get("kind") == "LSTM":
        args = {
            "kernel": np.zeros((3, 8)),
            "recurrent_kernel": np.zeros((2, 8)),
            "bias": np.zeros(8),
        }
    args.update(kwargs)
    if kwargs.get("kind") == "LSTM" and "recurrent_kernel" in kwargs and "kernel" not in kwargs:
        args["kernel"] = np.zeros((3, 8))
        args["recurrent_kernel"] = np.zeros((3, 8))  # H = 2 from the kernel, so (3, 8) is wrong
    kind = args.pop("kind")
    with pytest.raises(exc, match=match):
        interop.from_keras_weights(kind, **args)


def test_to_keras_weights_bad_input() -> None:
    w = {
        "weight_ih_l0": np.zeros((8, 3)),
        "weight_hh_l0": np.zeros((8, 2)),
        "bias_ih_l0": np.zeros(8),
    }
    with pytest.raises(ValueError, match="bias_hh_l0"):
        interop.to_keras_weights("LSTM", w)
    with pytest.raises(ValueError, match="weight_hh_l0"):
        interop.to_keras_weights(
            "LSTM", {"weight_ih_l0": np.zeros((8, 3)), "weight_hh_l0": np.zeros((8, 3))}
        )
    with pytest.raises(ValueError, match="weight_ih_l0"):
        interop.to_keras_weights(
            "GRU", {"weight_ih_l0": np.zeros((8, 3)), "weight_hh_l0": np.zeros((8, 2))}
        )
    with pytest.raises(TypeError, match="weights"):
        interop.to_keras_weights("GRU", [np.zeros((6, 3))])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="layer"):
        interop.to_keras_weights("GRU", w, layer=-1)


# --------------------------------------------------------------------------------------------------
# PyTorch: optional dependency
# --------------------------------------------------------------------------------------------------


def test_missing_torch_error_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(ImportError, match=r"pip install torch==2\.13\.0"):
        interop.from_torch(object())
    with pytest.raises(ImportError, match=r"pip install torch==2\.13\.0"):
        interop.to_torch(object())


def test_interop_import_does_not_import_torch() -> None:
    import subprocess

    code = "import sys, rnnfast.interop; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------------------------------
# PyTorch: module conversion (numeric parity is in tests/test_torch_parity.py)
# --------------------------------------------------------------------------------------------------


def _torch() -> Any:
    return pytest.importorskip("torch")


def test_state_dict_to_numpy_is_zero_copy() -> None:
    torch = _torch()
    lstm = torch.nn.LSTM(3, 4, num_layers=2, dtype=torch.float64)
    sd = lstm.state_dict()
    arrays = interop.state_dict_to_numpy(sd)
    assert list(arrays) == list(sd)
    for k, t in sd.items():
        a = arrays[k]
        assert isinstance(a, np.ndarray) and a.dtype == np.float64 and a.shape == tuple(t.shape)
        assert a.ctypes.data == t.data_ptr(), f"{k}: copied"
    # parameters with requires_grad (not only state_dict's detached tensors) convert without a copy
    p = dict(lstm.named_parameters())["weight_hh_l1"]
    assert interop.state_dict_to_numpy({"w": p})["w"].ctypes.data == p.data_ptr()
    with pytest.raises(TypeError, match="state_dict"):
        interop.state_dict_to_numpy([p])  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_load_state_dict_accepts_a_torch_state_dict(kind: str) -> None:
    """rnnfast modules load a torch state_dict directly; the values are then held by rnnfast."""
    torch = _torch()
    from rnnfast import modules

    tmod = getattr(torch.nn, kind)(3, 4, num_layers=2, bidirectional=True, dtype=torch.float32)
    m = getattr(modules, kind)(3, 4, num_layers=2, bidirectional=True, dtype=np.float32, seed=0)
    sd = tmod.state_dict()
    m.load_state_dict(sd)
    params = m.parameters()
    assert sorted(params) == sorted(sd)
    for k, t in sd.items():
        np.testing.assert_array_equal(params[k], t.numpy(), err_msg=k)
        assert params[k].dtype == np.float32
    # rnnfast's parameters must not alias torch's: a torch update must not change the rnnfast module
    before = params["weight_ih_l0"].copy()
    with torch.no_grad():
        tmod.weight_ih_l0.add_(1.0)
    np.testing.assert_array_equal(m.parameters()["weight_ih_l0"], before)


def test_from_torch_linear_and_modes() -> None:
    torch = _torch()
    lin = torch.nn.Linear(3, 2, dtype=torch.float64)
    m = interop.from_torch(lin)
    x = np.random.default_rng(0).standard_normal((4, 3))
    with torch.no_grad():
        expected = lin(torch.from_numpy(x)).numpy()
    assert_close(m(x), expected, 1e-14, "Linear")
    back = interop.to_torch(m)
    assert isinstance(back, torch.nn.Linear) and back.weight.dtype == torch.float64
    assert torch.equal(back.weight, lin.weight) and torch.equal(back.bias, lin.bias)
    gru = torch.nn.GRU(3, 2).eval()
    fm = interop.from_torch(gru)
    assert fm.training is False
    assert interop.to_torch(fm).training is False


def test_from_torch_rejects_unsupported() -> None:
    torch = _torch()
    with pytest.raises(TypeError, match="module"):
        interop.from_torch(torch.nn.Conv1d(3, 4, 2))
    with pytest.raises(TypeError, match="float16"):
        interop.from_torch(torch.nn.GRU(3, 4, dtype=torch.float16))
    with pytest.raises(TypeError, match="model"):
        interop.to_torch(object())


@pytest.mark.parametrize("kind", KINDS)
def test_keras_stack_loads_into_rnnfast_module(kind: str) -> None:
    """Two stacked Keras layers -> from_keras_weights(layer=0/1) -> rnnfast load_state_dict."""
    from rnnfast import modules

    n_in, hidden, t_steps, batch = 3, 4, 5, 2
    layers = [
        keras_arrays(kind, n, hidden, bias=True, dtype=np.float64, seed=10 + n)
        for n in (n_in, hidden)
    ]
    state: dict[str, np.ndarray] = {}
    for k, (kernel, rec, b) in enumerate(layers):
        state.update(interop.from_keras_weights(kind, kernel, rec, b, layer=k))
    cls = {"SimpleRNN": modules.RNN, "LSTM": modules.LSTM, "GRU": modules.GRU}[kind]
    m = cls(n_in, hidden, num_layers=2, dtype=np.float64, seed=0)
    m.load_state_dict(state)
    x = np.random.default_rng(6).standard_normal((t_steps, batch, n_in))
    zeros = np.zeros((batch, hidden))
    inp = x
    finals = []
    for kernel, rec, b in layers:
        inp, h_k, c_k = keras_run(
            kind, inp, zeros, zeros if kind == "LSTM" else None, kernel, rec, b
        )
        finals.append(h_k)
    out, state_out = m(x)
    h_n = state_out[0] if kind == "LSTM" else state_out
    assert_close(out, inp, 1e-12, f"{kind} stacked output")
    assert_close(h_n, np.stack(finals), 1e-12, f"{kind} stacked h_n")
