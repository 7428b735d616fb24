"""Zoneout and variational recurrent dropout in the fused kernels (issue 14).

* the compiled LSTM / GRU with masks against the float64 oracles of
  :mod:`rnnfast.reference.regularisers` (float64 1e-12, float32 1e-5; every output and gradient),
  full and ragged batches, each regulariser alone and together, the expectation form (scalar p);
* the other cells (no oracle with masks): the kernel's own backward against central finite
  differences of its float64 forward;
* masks of zeros (zoneout) and ones (dropout): the plain kernels (outputs bitwise); 1 vs 2 threads
  bitwise;
* the module options: masks drawn from the module's rng in the documented order, identity at
  evaluation, exact resume (a deep copy draws the same masks), config round trip, clear errors.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

import rnnfast
from rnnfast import functional as F
from rnnfast import reference as R
from rnnfast._cells import get_cell
from rnnfast._loader import core
from rnnfast._regularise import (
    gru_regularised_forward,
    lstm_regularised_forward,
    regularised_forward,
)
from rnnfast.testing import assert_close

__all__: list[str] = []

TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}
WHICH = ["zoneout", "dropout", "both"]


def _inputs(cell: str, T: int, B: int, I: int, H: int, seed: int, bias: bool = True) -> dict:  # noqa: E741
    rng = np.random.default_rng(seed)
    spec = get_cell(cell)
    G = spec.gates

    def u(*s: int) -> np.ndarray:
        return rng.uniform(-0.5, 0.5, s)

    inp: dict[str, Any] = {
        "x": rng.standard_normal((T, B, I)),
        "h0": u(B, H),
        "c0": u(B, H) if spec.has_cell_state else None,
        "w_ih": u(G * H, I),
        "w_hh": u(G * H, H),
        "b_ih": u(G * H) if bias else None,
        "b_hh": u(G * H) if bias else None,
        "dy": rng.standard_normal((T, B, H)),
        "dh_n": rng.standard_normal((B, H)),
        "dc_n": rng.standard_normal((B, H)) if spec.has_cell_state else None,
    }
    for name, per_unit in spec.extra_params:
        inp[name] = (0.0 if name.startswith("beta") else 1.0) + 0.3 * u(per_unit * H)
    p_z, p_d = 0.3, 0.4
    inp["zoneout_h"] = (rng.random((T, B, H)) < p_z).astype(float)
    inp["zoneout_c"] = (rng.random((T, B, H)) < p_z).astype(float) if spec.has_cell_state else None
    inp["dropout_h"] = (rng.random((B, H)) >= p_d) / (1.0 - p_d)
    return inp


def _masks(inp: dict, which: str, dtype: Any = np.float64) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if which in ("zoneout", "both"):
        out["zoneout_h"] = inp["zoneout_h"].astype(dtype)
        if inp["zoneout_c"] is not None:
            out["zoneout_c"] = inp["zoneout_c"].astype(dtype)
    if which in ("dropout", "both"):
        out["dropout_h"] = inp["dropout_h"].astype(dtype)
    return out


def _results(outs: tuple, grads: dict, has_c: bool) -> dict[str, np.ndarray]:
    res = {"y": outs[0], "h_n": outs[1]}
    if has_c:
        res["c_n"] = outs[2]
    res.update({f"d{k}": v for k, v in grads.items() if v is not None})
    return res


def _as(a: Any, dtype: Any) -> Any:
    return None if a is None else np.asarray(a).astype(dtype)


# --------------------------------------------------------------------------------------------------
# kernels vs the float64 oracles
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("which", WHICH)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_kernels_match_the_oracle(cell: str, which: str, dtype: Any, ragged: bool) -> None:
    T, B, I, H = 6, 4, 3, 5  # noqa: E741
    inp = _inputs(cell, T, B, I, H, seed=len(which) + 7 * ragged)
    for k in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh"):  # the oracle sees the same values
        inp[k] = _as(_as(inp[k], dtype), np.float64)
    lengths = np.array([T, 0, 3, 1], np.int64) if ragged else None
    m = _masks(inp, which)
    has_c = cell == "lstm"
    states = [inp["h0"], inp["c0"]] if has_c else [inp["h0"]]
    w = [inp[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh")]
    seeds = [inp["dy"], inp["dh_n"]] + ([inp["dc_n"]] if has_c else [])
    ref_f = R.lstm_regularised_forward if has_c else R.gru_regularised_forward
    ref_b = R.lstm_regularised_backward if has_c else R.gru_regularised_backward
    ro = ref_f(inp["x"], *states, *w, lengths=lengths, **m)
    want = _results(ro, ref_b(ro[-1], *seeds), has_c)
    fwd = lstm_regularised_forward if has_c else gru_regularised_forward
    bwd = F.lstm_backward if has_c else F.gru_backward
    cast = [_as(a, dtype) for a in [inp["x"], *states, *w]]
    mc = {k: v.astype(dtype) for k, v in m.items()}
    fo = fwd(*cast, lengths=lengths, **mc)
    got = _results(fo, bwd(fo[-1], *[s.astype(dtype) for s in seeds]), has_c)
    assert set(got) == set(want), (sorted(got), sorted(want))
    for k, v in want.items():
        assert got[k].dtype == dtype, k
        assert_close(got[k], v, TOL[np.dtype(dtype)], f"{cell} {which} {np.dtype(dtype)} {k}")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_expectation_form_scalar_p(cell: str) -> None:
    """zoneout_h = p (a scalar, broadcast): the deterministic evaluation form of the paper."""
    T, B, I, H = 5, 3, 2, 4  # noqa: E741
    inp = _inputs(cell, T, B, I, H, seed=3)
    has_c = cell == "lstm"
    states = [inp["h0"], inp["c0"]] if has_c else [inp["h0"]]
    w = [inp[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh")]
    m = {"zoneout_h": 0.25, **({"zoneout_c": 0.5} if has_c else {})}
    ref_f = R.lstm_regularised_forward if has_c else R.gru_regularised_forward
    fwd = lstm_regularised_forward if has_c else gru_regularised_forward
    want = ref_f(inp["x"], *states, *w, training=False, **m)
    got = fwd(inp["x"], *states, *w, training=False, **m)
    for k, (g, r) in enumerate(zip(got[:-1], want[:-1])):
        assert_close(g, r, 1e-12, f"{cell} expectation output {k}")


# --------------------------------------------------------------------------------------------------
# every other cell: the kernel's backward vs finite differences of its forward
# --------------------------------------------------------------------------------------------------


def _loss(cell: str, inp: dict, m: dict, lengths: Any) -> tuple[float, Any]:
    spec = get_cell(cell)
    state = (inp["h0"], inp["c0"]) if spec.has_cell_state else inp["h0"]
    w = [inp[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh", *dict(spec.extra_params))]
    y, fin, cache = regularised_forward(cell, inp["x"], state, w, lengths=lengths, **m)
    h_n = fin[0] if spec.has_cell_state else fin
    return float(np.sum(y * inp["dy"]) + np.sum(h_n * inp["dh_n"])), cache


@pytest.mark.parametrize(
    "cell", ["rnn", "lstm_peephole", "gru_reset_before", "lstm_layernorm", "gru_layernorm"]
)
def test_other_cells_match_finite_differences(cell: str) -> None:
    T, B, I, H = 5, 3, 2, 4  # noqa: E741
    inp = _inputs(cell, T, B, I, H, seed=13)
    lengths = np.array([5, 2, 4], np.int64)
    m = _masks(inp, "both")
    _, cache = _loss(cell, inp, m, lengths)
    bwd = getattr(F, f"{cell}_backward")
    g = bwd(cache, inp["dy"], inp["dh_n"])
    rng = np.random.default_rng(0)
    eps = 1e-6
    for key in ("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh", *dict(get_cell(cell).extra_params)):
        arr = inp[key]
        for _ in range(4):
            idx = tuple(int(rng.integers(0, n)) for n in arr.shape)
            old = arr[idx]
            arr[idx] = old + eps
            lp, _ = _loss(cell, inp, m, lengths)
            arr[idx] = old - eps
            lm, _ = _loss(cell, inp, m, lengths)
            arr[idx] = old
            fd = (lp - lm) / (2 * eps)
            assert abs(g[key][idx] - fd) <= 1e-6 * max(1.0, abs(fd)), (
                f"{cell} d{key}{idx}: kernel {g[key][idx]!r}, finite difference {fd!r}"
            )


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "lstm_layernorm"])
def test_neutral_masks_give_the_plain_kernels(cell: str, dtype: Any) -> None:
    T, B, I, H = 6, 3, 4, 9  # noqa: E741
    inp = _inputs(cell, T, B, I, H, seed=5)
    spec = get_cell(cell)
    state = (inp["h0"].astype(dtype), inp["c0"].astype(dtype)) if spec.has_cell_state else None
    if state is None:
        state = inp["h0"].astype(dtype)
    w = [_as(inp[k], dtype) for k in ("w_ih", "w_hh", "b_ih", "b_hh", *dict(spec.extra_params))]
    x = inp["x"].astype(dtype)
    zeros = np.zeros((T, B, H))
    m = {"zoneout_h": zeros, "dropout_h": np.ones((B, H))}
    if spec.has_cell_state:
        m["zoneout_c"] = zeros
    y1, f1, c1 = regularised_forward(cell, x, state, w, **m)
    y0, f0, c0 = regularised_forward(cell, x, state, w)
    assert y1.tobytes() == y0.tobytes()
    bwd = getattr(F, f"{cell}_backward")
    g1, g0 = bwd(c1, inp["dy"].astype(dtype)), bwd(c0, inp["dy"].astype(dtype))
    for k, v in g0.items():  # the dropout path adds d * (dgates W_hh) to dh: rounding may differ
        if v is not None:
            assert_close(g1[k], v, 10 * TOL[np.dtype(dtype)], f"{cell} neutral masks d{k}")


@pytest.mark.parametrize("cell", ["lstm", "gru_layernorm"])
def test_bitwise_identical_with_one_and_two_threads(cell: str) -> None:
    T, B, I, H = 5, 32, 16, 96  # noqa: E741
    inp = _inputs(cell, T, B, I, H, seed=9)
    spec = get_cell(cell)
    state = (inp["h0"], inp["c0"]) if spec.has_cell_state else inp["h0"]
    w = [inp[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh", *dict(spec.extra_params))]
    lengths = np.array([T - b % 3 for b in range(B)], np.int64)
    runs = []
    try:
        for n in (1, 2):
            core._force_loop_threads(n)
            y, fin, cache = regularised_forward(
                cell, inp["x"], state, w, lengths=lengths, **_masks(inp, "both")
            )
            g = getattr(F, f"{cell}_backward")(cache, inp["dy"])
            runs.append([y] + [v for v in g.values() if v is not None])
    finally:
        core._force_loop_threads(0)
    for a, b in zip(*runs):
        assert a.tobytes() == b.tobytes()


def test_bad_masks_are_clear_errors() -> None:
    inp = _inputs("gru", 3, 2, 2, 3, seed=1)
    w = [inp[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh")]
    with pytest.raises(ValueError, match="zoneout_h"):
        regularised_forward("gru", inp["x"], None, w, zoneout_h=np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="zoneout_c"):
        regularised_forward("gru", inp["x"], None, w, zoneout_c=0.5)
    with pytest.raises(ValueError, match="dropout_h"):
        regularised_forward("gru", inp["x"], None, w, dropout_h=np.ones((3, 2)))


# --------------------------------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN", "LayerNormLSTM", "ResetBeforeGRU"])
def test_module_draws_its_masks_from_its_rng(cls: str) -> None:
    """Training forward/backward = the functional calls with masks drawn from a copy of the module's
    rng in the documented order (per layer and direction: dropout (B, H), zoneout h, zoneout c)."""
    m = getattr(rnnfast, cls)(3, 4, num_layers=2, dtype=np.float64, seed=0,
                              zoneout=0.2, recurrent_dropout=0.3)  # fmt: skip
    spec = m._spec
    rng = copy.deepcopy(m.rng)
    x = np.random.default_rng(1).standard_normal((5, 2, 3))
    out = m(x)[0]
    inp = x
    for layer in range(2):
        B, H = 2, 4
        masks = {"dropout_h": (rng.random((B, H)) >= 0.3) / 0.7}
        masks["zoneout_h"] = (rng.random((5, B, H)) < 0.2).astype(float)
        if spec.has_cell_state:
            masks["zoneout_c"] = (rng.random((5, B, H)) < 0.2).astype(float)
        names = ("w_ih", "w_hh", "b_ih", "b_hh", *dict(spec.extra_params))
        w = [m._param_dict(layer, 0)[n] for n in names]
        inp, _, _ = regularised_forward(
            spec.name, inp, None, w, nonlinearity=m.nonlinearity, **masks
        )
    np.testing.assert_array_equal(out, inp)
    m.eval()  # identity at evaluation: the plain stack
    plain = getattr(rnnfast, cls)(3, 4, num_layers=2, dtype=np.float64, seed=0)
    np.testing.assert_array_equal(m(x)[0], plain.eval()(x)[0])


def test_module_exact_resume_and_config() -> None:
    m = rnnfast.LSTM(3, 4, seed=2, zoneout=(0.1, 0.4), recurrent_dropout=0.25)
    x = np.random.default_rng(3).standard_normal((4, 2, 3)).astype(np.float32)
    m(x)
    twin = copy.deepcopy(m)  # rng state included: the next masks are the same
    a, b = m(x)[0], twin(x)[0]
    np.testing.assert_array_equal(a, b)
    m.backward(np.ones_like(a))
    assert m.grads["weight_hh_l0"].any()
    cfg = m.config()
    assert cfg["zoneout"] == [0.1, 0.4] and cfg["recurrent_dropout"] == 0.25
    again = rnnfast.model_from_config(cfg)
    assert again.zoneout == (0.1, 0.4) and again.recurrent_dropout == 0.25
    assert "zoneout" not in rnnfast.LSTM(3, 4).config()


def test_module_option_errors() -> None:
    with pytest.raises(ValueError, match="zoneout"):
        rnnfast.GRU(3, 4, zoneout=1.0)
    with pytest.raises(ValueError, match="zoneout"):
        rnnfast.GRU(3, 4, zoneout=(0.1, 0.2))  # no cell state
    with pytest.raises(TypeError, match="recurrent_dropout"):
        rnnfast.LSTM(3, 4, recurrent_dropout="0.1")
    rnnfast.ResetBeforeGRU(3, 4, recurrent_dropout=0.1)  # m_t = r * (d * h_{t-1})
    with pytest.raises(ValueError, match="proj_size"):
        rnnfast.LSTM(3, 4, proj_size=2, zoneout=0.1)
    m = rnnfast.LSTM(3, 4, zoneout=0.1)
    with pytest.raises(ValueError, match="streaming"):
        m.stream_begin(2, 2, 2)
    m.eval()
    m.stream_begin(2, 2, 2)  # evaluation: nothing to apply
