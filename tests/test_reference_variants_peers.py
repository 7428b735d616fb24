"""The variant oracles of rnnfast.reference (issue 14) against peers that compute the same cells
without them, all in float64 unless said otherwise:

- every variant (zoneout and recurrent dropout with the same masks included) against a cell written
  out again here in PyTorch ops and differentiated by autograd: y, h_n, c_n and every gradient, on a
  ragged batch with a length-0 sequence, with and without bias;
- LSTM with projection against ``torch.nn.LSTM(proj_size=P)`` (packed sequences, forward and
  backward) and its state_dict names and shapes;
- peephole LSTM against ONNX's ``LSTM`` operator with its ``P`` input: ``onnx.reference``'s
  evaluator in float64 (full lengths: it ignores ``sequence_lens``) and onnxruntime in float32
  (ragged, ``sequence_lens``); forward only, neither has a gradient;
- reset-before GRU against ``keras.layers.GRU(reset_after=False)`` (Keras 3, JAX backend), forward.

torch, onnx, onnxruntime and keras are test dependencies (the ``test`` extra): a missing one fails,
it does not skip; keras only where the extra installs it (Python >= 3.11, with JAX).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from helpers import assert_close
from rnnfast._cells import get_cell
from variant_cases import (
    CASE_IDS,
    CASES,
    P_PROJ,
    Case,
    backward,
    case,
    forward,
    grad_keys,
    make_inputs,
)

__all__: list[str] = []

T, B, IN, H = 4, 3, 3, 4  # time steps, batch, input size, hidden size
RAGGED = np.array([4, 0, 2])
PACKABLE = np.array([4, 1, 3])  # torch cannot pack, nor onnxruntime run, a length-0 sequence
TOL = 1e-12

Tensor = torch.Tensor
Step = Callable[[Tensor, tuple[Tensor, ...], dict[str, Any]], tuple[Tensor, ...]]


def _run(c: Case, inp: dict[str, Any], lengths: Any) -> tuple[Any, dict[str, Any]]:
    y, h_n, c_n, cache = forward(c, inp, lengths)
    return (y, h_n, c_n), backward(c, cache, inp)


# ------------------------------------------------------------------------------------------------
# every variant, written again in PyTorch ops (autograd for the gradients)
# ------------------------------------------------------------------------------------------------


def _lin(v: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
    return v @ w.T if b is None else v @ w.T + b


def _ln(v: Tensor, gamma: Tensor, beta: Tensor | None = None) -> Tensor:
    return F.layer_norm(v, (v.shape[-1],), weight=gamma, bias=beta, eps=1e-5)


def _lstm_cell(a: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """(o, c_t) of the LSTM from its pre-activation a (i, f, g, o)."""
    i, f, g, o = a.chunk(4, dim=1)
    return torch.sigmoid(o), torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)


def _bsum(p: dict[str, Any], k1: str, k2: str) -> Tensor | float:
    return 0.0 if p.get(k1) is None else p[k1] + p[k2]


def _peephole(x: Tensor, s: tuple[Tensor, ...], p: dict[str, Any]) -> tuple[Tensor, ...]:
    h, c = s
    a_i, a_f, a_g, a_o = (_lin(x, p["w_ih"]) + _lin(h, p["w_hh"]) + _bsum(p, "b_ih", "b_hh")).chunk(
        4, dim=1
    )
    p_i, p_f, p_o = p["w_peep"].chunk(3)
    c_t = torch.sigmoid(a_f + p_f * c) * c + torch.sigmoid(a_i + p_i * c) * torch.tanh(a_g)
    return torch.sigmoid(a_o + p_o * c_t) * torch.tanh(c_t), c_t


def _proj(x: Tensor, s: tuple[Tensor, ...], p: dict[str, Any]) -> tuple[Tensor, ...]:
    h, c = s
    o, c_t = _lstm_cell(_lin(x, p["w_ih"]) + _lin(h, p["w_hh"]) + _bsum(p, "b_ih", "b_hh"), c)
    return _lin(o * torch.tanh(c_t), p["w_hr"]), c_t


def _ln_lstm(x: Tensor, s: tuple[Tensor, ...], p: dict[str, Any]) -> tuple[Tensor, ...]:
    h, c = s
    a = _ln(_lin(x, p["w_ih"]), p["gamma_ih"]) + _ln(_lin(h, p["w_hh"]), p["gamma_hh"])
    o, c_t = _lstm_cell(a + _bsum(p, "b_ih", "b_hh"), c)
    return o * torch.tanh(_ln(c_t, p["gamma_c"], p["beta_c"])), c_t


def _gru_out(gi: Tensor, gh: Tensor, h: Tensor, rh_n: Tensor | None = None) -> Tensor:
    """PyTorch's GRU from gi, gh (r, z, n); ``rh_n`` replaces r * gh_n (the reset-before GRU)."""
    gi_r, gi_z, gi_n = gi.chunk(3, dim=1)
    gh_r, gh_z, gh_n = gh.chunk(3, dim=1)
    r, z = torch.sigmoid(gi_r + gh_r), torch.sigmoid(gi_z + gh_z)
    n = torch.tanh(gi_n + (r * gh_n if rh_n is None else rh_n(r)))
    return (1 - z) * n + z * h


def _reset_before(x: Tensor, s: tuple[Tensor, ...], p: dict[str, Any]) -> tuple[Tensor, ...]:
    (h,) = s
    w_hn = p["w_hh"].chunk(3)[2]
    b_hn = 0.0 if p.get("b_hh") is None else p["b_hh"].chunk(3)[2]
    gi = _lin(x, p["w_ih"], p.get("b_ih"))
    gh = _lin(h, p["w_hh"], p.get("b_hh"))  # its n block is not used
    return (_gru_out(gi, gh, h, lambda r: _lin(r * h, w_hn) + b_hn),)


def _ln_gru(x: Tensor, s: tuple[Tensor, ...], p: dict[str, Any]) -> tuple[Tensor, ...]:
    (h,) = s
    gi = _ln(_lin(x, p["w_ih"]), p["gamma_ih"]) + (0.0 if p.get("b_ih") is None else p["b_ih"])
    gh = _ln(_lin(h, p["w_hh"]), p["gamma_hh"]) + (0.0 if p.get("b_hh") is None else p["b_hh"])
    return (_gru_out(gi, gh, h),)


def _mask(p: dict[str, Any], name: str, t: int, default: float) -> Tensor | float:
    """Mask ``name`` at step t: a (B, H) tensor, a scalar, or ``default`` when absent."""
    m = p.get(name)
    if m is None:
        return default
    if isinstance(m, float):
        return m
    return torch.from_numpy(m[t] if m.ndim == 3 else m)


def _reg_lstm(x: Tensor, s: tuple[Tensor, ...], p: dict[str, Any]) -> tuple[Tensor, ...]:
    h, c = s
    d = _mask(p, "dropout_h", 0, 1.0)
    m_h, m_c = _mask(p, "zoneout_h", p["t"], 0.0), _mask(p, "zoneout_c", p["t"], 0.0)
    o, c_cand = _lstm_cell(
        _lin(x, p["w_ih"]) + _lin(d * h, p["w_hh"]) + _bsum(p, "b_ih", "b_hh"), c
    )
    h_cand = o * torch.tanh(c_cand)
    return m_h * h + (1 - m_h) * h_cand, m_c * c + (1 - m_c) * c_cand


def _reg_gru(x: Tensor, s: tuple[Tensor, ...], p: dict[str, Any]) -> tuple[Tensor, ...]:
    (h,) = s
    d = _mask(p, "dropout_h", 0, 1.0)
    m_h = _mask(p, "zoneout_h", p["t"], 0.0)
    h_cand = _gru_out(_lin(x, p["w_ih"], p.get("b_ih")), _lin(d * h, p["w_hh"], p.get("b_hh")), h)
    return (m_h * h + (1 - m_h) * h_cand,)


TORCH_STEPS: dict[str, Step] = {
    "lstm_peephole": _peephole,
    "lstm_proj": _proj,
    "lstm_layernorm": _ln_lstm,
    "gru_reset_before": _reset_before,
    "gru_layernorm": _ln_gru,
    "lstm_regularised": _reg_lstm,
    "gru_regularised": _reg_gru,
}


def _torch_run(
    c: Case, inp: dict[str, Any], lengths: np.ndarray
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Unroll TORCH_STEPS[c.name] over time (padded steps carry the state, y = 0 there); returns
    (y, h_n, c_n) and the autograd gradient of L = <y, dy> + <h_n, dh_n> (+ <c_n, dc_n>)."""
    leaves = {
        k: torch.tensor(inp[k], dtype=torch.float64, requires_grad=True)
        for k in grad_keys(c)
        if inp[k] is not None
    }
    p: dict[str, Any] = {**leaves, **{m: inp[m] for m in c.masks}}
    states = tuple(leaves[s] for s in c.states)
    valid = torch.from_numpy(np.arange(inp["x"].shape[0])[:, None] < lengths[None, :])
    ys = []
    for t in range(inp["x"].shape[0]):
        p["t"] = t
        new = TORCH_STEPS[c.name](leaves["x"][t], states, p)
        v = valid[t][:, None]
        states = tuple(torch.where(v, a, b) for a, b in zip(new, states))
        ys.append(torch.where(v, states[0], torch.zeros_like(states[0])))
    y = torch.stack(ys)
    total = (y * torch.from_numpy(inp["dy"])).sum() + (
        states[0] * torch.from_numpy(inp["dh_n"])
    ).sum()
    if len(states) == 2:
        total = total + (states[1] * torch.from_numpy(inp["dc_n"])).sum()
    total.backward()
    outs = (y, *states, None)[:3]
    return tuple(None if o is None else o.detach().numpy() for o in outs), {
        k: v.grad.numpy() for k, v in leaves.items()
    }


@pytest.mark.torch
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("c", CASES, ids=CASE_IDS)
def test_matches_torch_autograd_construction(c: Case, bias: bool) -> None:
    inp = make_inputs(c, T, B, IN, H, bias=bias, seed=21)
    (y, h_n, c_n), grads = _run(c, inp, RAGGED)
    (ty, th, tc), tgrads = _torch_run(c, inp, RAGGED)
    assert_close(y, ty, TOL, f"{c.id} y vs torch")
    assert_close(h_n, th, TOL, f"{c.id} h_n vs torch")
    assert_close(c_n, tc, TOL, f"{c.id} c_n vs torch")
    for k in grad_keys(c):
        if inp[k] is None:
            assert grads[k] is None, f"{c.id} d{k}: expected None without bias"
            continue
        assert_close(grads[k], tgrads[k], TOL, f"{c.id} d{k} vs torch autograd")


# ------------------------------------------------------------------------------------------------
# LSTM with projection vs torch.nn.LSTM(proj_size=P)
# ------------------------------------------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_lstm_proj_matches_torch_nn_lstm(bias: bool) -> None:
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    c = case("lstm_proj")
    inp = make_inputs(c, T, B, IN, H, bias=bias, seed=22)
    (y, h_n, c_n), grads = _run(c, inp, PACKABLE)

    mod = torch.nn.LSTM(IN, H, proj_size=P_PROJ, bias=bias, dtype=torch.float64)
    names = {"w_ih": "weight_ih_l0", "w_hh": "weight_hh_l0", "w_hr": "weight_hr_l0"}
    if bias:
        names.update(b_ih="bias_ih_l0", b_hh="bias_hh_l0")
    shapes = {torch_name: tuple(v.shape) for torch_name, v in mod.state_dict().items()}
    assert shapes == {names[k]: s for k, s in c.shapes(IN, H).items() if k in names}, shapes
    with torch.no_grad():
        for k, torch_name in names.items():
            getattr(mod, torch_name).copy_(torch.from_numpy(inp[k]))
    xt = torch.tensor(inp["x"], requires_grad=True)
    h0t = torch.tensor(inp["h0"], requires_grad=True)
    c0t = torch.tensor(inp["c0"], requires_grad=True)
    packed = pack_padded_sequence(xt, torch.from_numpy(PACKABLE), enforce_sorted=False)
    out, (hn_t, cn_t) = mod(packed, (h0t[None], c0t[None]))
    yt, _ = pad_packed_sequence(out, total_length=T)
    total = (yt * torch.from_numpy(inp["dy"])).sum() + (
        hn_t[0] * torch.from_numpy(inp["dh_n"])
    ).sum()
    (total + (cn_t[0] * torch.from_numpy(inp["dc_n"])).sum()).backward()

    assert_close(y, yt.detach().numpy(), TOL, "lstm_proj y vs nn.LSTM")
    assert_close(h_n, hn_t[0].detach().numpy(), TOL, "lstm_proj h_n vs nn.LSTM")
    assert_close(c_n, cn_t[0].detach().numpy(), TOL, "lstm_proj c_n vs nn.LSTM")
    for k, t in (("x", xt), ("h0", h0t), ("c0", c0t)):
        assert_close(grads[k], t.grad.numpy(), TOL, f"lstm_proj d{k} vs nn.LSTM")
    for k, torch_name in names.items():
        g = getattr(mod, torch_name).grad.numpy()
        assert_close(grads[k], g, TOL, f"lstm_proj d{k} vs nn.LSTM {torch_name}.grad")


# ------------------------------------------------------------------------------------------------
# peephole LSTM vs ONNX's LSTM with P
# ------------------------------------------------------------------------------------------------


def _onnx_peephole(inp: dict[str, Any], dtype: Any, with_lengths: bool) -> onnx.ModelProto:
    """A one-node ONNX LSTM model with peepholes, inputs X, W, R, [B], [sequence_lens], initial_h,
    initial_c, P (an empty name for an input left out)."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    t_steps, batch, n_in = inp["x"].shape
    names = [
        "X",
        "W",
        "R",
        "B" if inp["b_ih"] is not None else "",
        "sequence_lens" if with_lengths else "",
    ]
    names += ["initial_h", "initial_c", "P"]
    shapes = {
        "X": [t_steps, batch, n_in],
        "W": [1, 4 * H, n_in],
        "R": [1, 4 * H, H],
        "B": [1, 8 * H],
        "initial_h": [1, batch, H],
        "initial_c": [1, batch, H],
        "P": [1, 3 * H],
    }
    inputs = [helper.make_tensor_value_info(n, elem, shapes[n]) for n in names if n in shapes]
    if with_lengths:
        inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [batch]))
    outputs = [
        helper.make_tensor_value_info("Y", elem, [t_steps, 1, batch, H]),
        helper.make_tensor_value_info("Y_h", elem, [1, batch, H]),
        helper.make_tensor_value_info("Y_c", elem, [1, batch, H]),
    ]
    node = helper.make_node("LSTM", names, ["Y", "Y_h", "Y_c"], hidden_size=H)
    graph = helper.make_graph([node], "peephole_lstm", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.checker.check_model(model)
    return model


def _onnx_feeds(inp: dict[str, Any], dtype: Any) -> dict[str, np.ndarray]:
    """ONNX's arrays: gate blocks i, o, f, c (rnnfast's i, f, g, o), P blocks i, o, f."""
    perm = get_cell("lstm").onnx_perm  # ONNX block j is rnnfast block perm[j]

    def blocks(a: np.ndarray, order: list[int]) -> np.ndarray:
        return np.concatenate([a[k * H : (k + 1) * H] for k in order])

    feeds = {
        "X": inp["x"],
        "W": blocks(inp["w_ih"], perm)[None],
        "R": blocks(inp["w_hh"], perm)[None],
        "initial_h": inp["h0"][None],
        "initial_c": inp["c0"][None],
        "P": blocks(inp["w_peep"], [0, 2, 1])[None],  # [p_i, p_f, p_o] -> [p_i, p_o, p_f]
    }
    if inp["b_ih"] is not None:
        feeds["B"] = np.concatenate([blocks(inp["b_ih"], perm), blocks(inp["b_hh"], perm)])[None]
    return {k: np.ascontiguousarray(v, dtype=dtype) for k, v in feeds.items()}


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_peephole_matches_onnx_reference_evaluator(bias: bool) -> None:
    inp = make_inputs(case("lstm_peephole"), T, B, IN, H, bias=bias, seed=23, scale=1.0)
    y, h_n, c_n, _ = forward(case("lstm_peephole"), inp, None, training=False)
    model = _onnx_peephole(inp, np.float64, with_lengths=False)
    oy, oh, oc = ReferenceEvaluator(model).run(None, _onnx_feeds(inp, np.float64))
    assert oy.dtype == np.float64
    assert_close(y, oy[:, 0], TOL, "peephole y vs onnx.reference")
    assert_close(h_n, oh[0], TOL, "peephole h_n vs onnx.reference")
    assert_close(c_n, oc[0], TOL, "peephole c_n vs onnx.reference")


def test_peephole_matches_onnxruntime_ragged_float32() -> None:
    inp = make_inputs(case("lstm_peephole"), T, B, IN, H, seed=24, scale=1.0)
    y, h_n, c_n, _ = forward(case("lstm_peephole"), inp, PACKABLE, training=False)
    model = _onnx_peephole(inp, np.float32, with_lengths=True)
    sess = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    feeds = dict(_onnx_feeds(inp, np.float32), sequence_lens=PACKABLE.astype(np.int32))
    oy, oh, oc = sess.run(None, feeds)
    assert_close(y, oy[:, 0], 1e-5, "peephole y vs onnxruntime (float32)")
    assert_close(h_n, oh[0], 1e-5, "peephole h_n vs onnxruntime (float32)")
    assert_close(c_n, oc[0], 1e-5, "peephole c_n vs onnxruntime (float32)")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_peephole_kernel_matches_onnxruntime_ragged(dtype: Any) -> None:
    """The compiled peephole LSTM (rnnfast.functional.lstm_peephole_forward) against onnxruntime's
    LSTM with its P input: an external peer on the kernel itself, not only on the oracle."""
    import rnnfast.functional as F

    inp = make_inputs(case("lstm_peephole"), T, B, IN, H, seed=25, scale=1.0)
    args = [np.ascontiguousarray(inp[k], dtype=dtype) for k in ("x", "h0", "c0", "w_ih", "w_hh")]
    args += [np.ascontiguousarray(inp[k], dtype=dtype) for k in ("b_ih", "b_hh", "w_peep")]
    y, h_n, c_n, _ = F.lstm_peephole_forward(*args, lengths=PACKABLE, training=False)
    model = _onnx_peephole(inp, np.float32, with_lengths=True)
    sess = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    feeds = dict(_onnx_feeds(inp, np.float32), sequence_lens=PACKABLE.astype(np.int32))
    oy, oh, oc = sess.run(None, feeds)
    assert_close(y, oy[:, 0], 1e-5, "peephole kernel y vs onnxruntime")
    assert_close(h_n, oh[0], 1e-5, "peephole kernel h_n vs onnxruntime")
    assert_close(c_n, oc[0], 1e-5, "peephole kernel c_n vs onnxruntime")


# ------------------------------------------------------------------------------------------------
# reset-before GRU vs keras.layers.GRU(reset_after=False)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_reset_before_gru_matches_keras(bias: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if sys.version_info < (3, 11):
        pytest.skip("keras (JAX backend) is in the test extra for Python >= 3.11 only, like jax")
    monkeypatch.setenv("KERAS_BACKEND", "jax")  # read on keras's first import
    import jax

    c = case("gru_reset_before")
    inp = make_inputs(c, T, B, IN, H, bias=bias, seed=25, scale=1.0)
    y, h_n, _, _ = forward(c, inp, None, training=False)
    keras_blocks = [1, 0, 2]  # Keras's gate blocks z, r, h are rnnfast's blocks 1, 0, 2

    def blocks(a: np.ndarray) -> np.ndarray:
        return np.concatenate([a[k * H : (k + 1) * H] for k in keras_blocks])

    weights = [blocks(inp["w_ih"]).T, blocks(inp["w_hh"]).T]  # kernel (I, 3H), recurrent (H, 3H)
    if bias:
        weights.append(blocks(inp["b_ih"] + inp["b_hh"]))  # reset_after=False: one bias, b_i + b_h
    x_bti = np.swapaxes(inp["x"], 0, 1)  # Keras is batch-first
    results = {}
    with jax.enable_x64(True):
        import keras

        assert keras.backend.backend() == "jax", keras.backend.backend()
        # keras.ops.tanh computes float64 input in float32 on its JAX (and torch) backend
        # (keras-team/keras#23223: backend.result_type demotes 64-bit dtypes), so the layer runs
        # twice: as it is (float32-accurate), and with tanh = jax.numpy.tanh (float64 throughout)
        for act in ("tanh", jax.numpy.tanh):
            layer = keras.layers.GRU(
                H,
                activation=act,
                reset_after=False,
                use_bias=bias,
                return_sequences=True,
                return_state=True,
                dtype="float64",
            )
            layer.build((B, T, IN))
            layer.set_weights(weights)
            ky, kh = layer(x_bti, initial_state=[inp["h0"]])
            results[act] = (np.swapaxes(np.asarray(ky), 0, 1), np.asarray(kh))
    for act, tol in (("tanh", 1e-6), (jax.numpy.tanh, TOL)):
        ky, kh = results[act]
        where = f"keras GRU(reset_after=False, activation={getattr(act, '__name__', act)})"
        assert ky.dtype == np.float64, ky.dtype
        assert_close(y, ky, tol, f"reset-before GRU y vs {where}")
        assert_close(h_n, kh, tol, f"reset-before GRU h_n vs {where}")


def test_reset_before_gru_module_loads_keras_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Keras GRU(reset_after=False) layer's weights, converted by from_keras_weights(...,
    reset_after=False), run by the compiled ResetBeforeGRU module: Keras's outputs (float64, tanh
    from jax.numpy so Keras stays in float64)."""
    if sys.version_info < (3, 11):
        pytest.skip("keras (JAX backend) is in the test extra for Python >= 3.11 only, like jax")
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    import jax

    import rnnfast as rf
    from rnnfast.interop import from_keras_weights

    rng = np.random.default_rng(26)
    x = rng.standard_normal((T, B, IN))
    with jax.enable_x64(True):
        import keras

        layer = keras.layers.GRU(
            H,
            activation=jax.numpy.tanh,
            reset_after=False,
            return_sequences=True,
            return_state=True,
            dtype="float64",
        )
        layer.build((B, T, IN))
        # Keras's shapes: kernel (I, 3H), recurrent kernel (H, 3H), one bias (3H,), gates z, r, h
        kernel = rng.uniform(-0.5, 0.5, (IN, 3 * H))
        rec = rng.uniform(-0.5, 0.5, (H, 3 * H))
        bias = rng.uniform(-0.5, 0.5, 3 * H)
        layer.set_weights([kernel, rec, bias])
        ky, kh = layer(np.swapaxes(x, 0, 1))
        ky, kh = np.swapaxes(np.asarray(ky), 0, 1), np.asarray(kh)
    m = rf.ResetBeforeGRU(IN, H, dtype=np.float64)
    m.load_state_dict(from_keras_weights("GRU", kernel, rec, bias, reset_after=False))
    m.eval()
    y, h_n = m(x)
    assert_close(y, ky, 1e-12, "ResetBeforeGRU y vs keras GRU(reset_after=False)")
    assert_close(h_n[0], kh, 1e-12, "ResetBeforeGRU h_n vs keras GRU(reset_after=False)")
