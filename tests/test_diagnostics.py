"""Tests of rnnfast.diagnostics: per-step gradient norms against a direct computation through the
functional API's dh_all, the vanishing (tanh RNN) vs preserved (LSTM with open forget gates) and
exploding properties, the plots, and the optional-matplotlib error."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import rnnfast.functional as F
from helpers import CELL_NAMES, assert_close
from rnnfast._cells import get_cell
from rnnfast.diagnostics import (
    GradientFlow,
    exploding_case,
    gradient_flow,
    plot_gradient_flow,
    plot_history,
    state_grad_norms,
)
from rnnfast.losses import MSELoss
from rnnfast.modules import build_model
from rnnfast.nn._util import _module_name

__all__: list[str] = []


def test_state_grad_norms_matches_a_loop_over_steps_and_rows() -> None:
    rng = np.random.default_rng(0)
    d = rng.standard_normal((6, 4, 3))
    lengths = np.array([6, 2, 0, 4])
    got = state_grad_norms(d, lengths)
    for t in range(6):
        rows = [np.sqrt(sum(d[t, b, k] ** 2 for k in range(3))) for b in range(4) if t < lengths[b]]
        expected = sum(rows) / len(rows) if rows else 0.0
        assert abs(got[t] - expected) < 1e-12, f"step {t}: {got[t]} vs {expected}"
    assert_close(state_grad_norms(d), np.linalg.norm(d, axis=2).mean(axis=1), 1e-14, "unmasked")
    with pytest.raises(ValueError, match="dh_all"):
        state_grad_norms(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="lengths"):
        state_grad_norms(d, np.array([1, 2]))


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_gradient_flow_equals_dh_all_of_the_functional_backward(cell: str) -> None:
    """Two-layer many-to-one model: rebuild dL/dh_t per layer by hand from the functional API."""
    t_steps, batch, n_in, hidden = 7, 5, 3, 4
    model = build_model(
        cell, n_in, hidden, 2, mode="many_to_one", num_layers=2, dtype=np.float64, seed=1
    )
    rng = np.random.default_rng(2)
    x = rng.standard_normal((t_steps, batch, n_in))
    y = rng.standard_normal((batch, 2))
    lengths = np.array([7, 3, 5, 1, 7])
    flow = gradient_flow(model, x, y, MSELoss(), lengths=lengths, label=cell)
    assert flow.norms.shape == (2, t_steps) and flow.names == ["layer 0", "layer 1"]

    p = model.parameters()
    fwd = getattr(F, f"{cell}_forward")
    bwd = getattr(F, f"{cell}_backward")

    # the module's names of w_ih, w_hh, b_ih, b_hh and the cell's extra parameters
    names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    names += [_module_name(n) for n, _ in get_cell(cell).extra_params]

    def w(layer: int) -> tuple[np.ndarray, ...]:
        return tuple(p[f"rnn.{k}_l{layer}"] for k in names)

    state0 = (None, None) if get_cell(cell).has_cell_state else (None,)
    outs0 = fwd(x, *state0, *w(0), lengths=lengths)
    outs1 = fwd(outs0[0], *state0, *w(1), lengths=lengths)
    h_top = outs1[1]  # (B, H): final state of the top layer = last valid output
    pred = h_top @ p["head.weight"].T + p["head.bias"]
    dpred = (pred - y) / pred.size  # MSELoss: mean of 1/2 (pred - y)^2
    dh_n = dpred @ p["head.weight"]
    g1 = bwd(outs1[-1], None, dh_n)
    g0 = bwd(outs0[-1], g1["x"], None)
    for layer, g in ((0, g0), (1, g1)):
        valid = np.arange(t_steps)[:, None] < lengths[None, :]
        per = np.linalg.norm(g["dh_all"], axis=2)
        expected = (per * valid).sum(axis=1) / valid.sum(axis=1)
        assert_close(flow.norms[layer], expected, 1e-10, f"{cell} layer {layer} norms")
    assert abs(flow.loss - 0.5 * float(np.mean((pred - y) ** 2))) < 1e-12
    # gradients were cleared: a later training step starts from zero
    assert all(not np.any(g) for g in model.grads.values())


def _flow_at_init(cell: str, t_steps: int, forget_bias: float | None = None) -> GradientFlow:
    model = build_model(cell, 2, 32, 1, mode="many_to_one", dtype=np.float64, seed=0)
    if forget_bias is not None:
        b = model.parameters()["rnn.bias_ih_l0"]
        b[32:64] = forget_bias  # LSTM gate order i, f, g, o: an open forget gate, f ~ sigmoid(5)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (t_steps, 16, 2))
    y = rng.uniform(0, 2, (16, 1))
    return gradient_flow(model, x, y, MSELoss(), label=cell)


def test_tanh_rnn_gradient_vanishes_while_an_open_lstm_carries_it() -> None:
    rnn = _flow_at_init("rnn", 40)
    lstm = _flow_at_init("lstm", 40, forget_bias=5.0)
    decay_rnn = rnn.ratio(39)
    decay_lstm = lstm.ratio(39)
    assert decay_rnn < 1e-6, (
        f"tanh RNN: ||dL/dh_0|| / ||dL/dh_39|| = {decay_rnn:.3e}, expected < 1e-6"
    )
    assert decay_lstm > 1e-2, f"LSTM (forget bias 5): ratio {decay_lstm:.3e}, expected > 1e-2"
    # the RNN's decay is roughly geometric: each 10 steps lose a similar factor
    d = rnn.by_distance()
    factors = d[[10, 20, 30]] / d[[0, 10, 20]]
    assert np.all(factors < 0.1), factors


def test_large_recurrent_weights_explode_and_clipping_keeps_training_finite() -> None:
    ex = exploding_case(30, steps=5, hidden=32, gain=2.0)
    assert ex["ratio"] > 1e2, f"||dL/dh_0|| / ||dL/dh_29|| = {ex['ratio']:.3e}, expected > 1e2"
    d = ex["flow"].by_distance()
    growth = d[[10, 20, 29]] / d[[0, 10, 20]]
    assert np.all(growth > 1.5), f"gradient should grow with distance, block factors {growth}"
    clipped = ex["runs"]["clip_norm=1"]
    assert clipped["finite"]
    assert clipped["grad_norm_first"] > 10.0, clipped["grad_norm_first"]


def test_ratio_rejects_out_of_range_distances() -> None:
    flow = GradientFlow(np.array([[1.0, 2.0, 4.0]]), ["layer 0"])
    assert flow.ratio(2) == 0.25 and flow.ratio(0) == 1.0
    with pytest.raises(ValueError, match="distance"):
        flow.ratio(3)


def test_gradient_flow_rejects_a_model_without_state_grads() -> None:
    class NoGrads:
        def zero_grad(self) -> None:
            pass

        def __call__(self, x, lengths=None):
            return np.zeros((2, 1))

        def backward(self, d):
            return None

    with pytest.raises(TypeError, match="last_state_grads"):
        gradient_flow(NoGrads(), np.zeros((3, 2, 1)), np.zeros((2, 1)), MSELoss())


def test_plots_write_png_files(tmp_path) -> None:
    flows = [
        GradientFlow(np.array([[1e-8, 1e-4, 1.0]]), ["layer 0"], label="a"),
        GradientFlow(np.array([[0.5, 0.8, 1.0]]), ["layer 0"], label="b"),
    ]
    out = tmp_path / "flow.png"
    plot_gradient_flow(flows, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    hist = [{"epoch": 1, "loss": 1.0, "val_loss": 1.1}, {"epoch": 2, "loss": 0.5, "val_loss": 0.6}]
    out2 = tmp_path / "loss.png"
    plot_history({"lstm": hist}, out2, baseline=0.08)
    assert out2.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plotting_without_matplotlib_names_the_extra(monkeypatch) -> None:
    for mod in list(sys.modules):
        if mod == "matplotlib" or mod.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib...` fail
    with pytest.raises(ImportError, match=r"rnnfast\[plot\]"):
        plot_gradient_flow(GradientFlow(np.ones((1, 3)), ["layer 0"]))
