"""The variant oracles of rnnfast.reference (issue 14), checked against things that do not depend on
them (the external peers -- PyTorch, ONNX, Keras -- are in test_reference_variants_peers.py):

- every gradient (x, states, every parameter) against central finite differences of the oracle's
  own forward pass, in float64, with and without bias, full, ragged (with a length-0 sequence) and
  B = 1: max error <= 1e-6 relative to max |FD gradient|;
- dh_all (total dL/dh_t) against finite differences through the rest of the sequence;
- a ragged batch equals each sequence run alone; NaN/Inf at padded steps and in the state of a
  length-0 sequence reach no other result;
- reductions to the base oracles: no peepholes (w_peep = 0) is the LSTM, W_hr = I the LSTM, masks
  that do nothing give the LSTM/GRU exactly, zoneout 1 freezes the state, W_hn = b_hn = 0 makes the
  reset-before GRU the GRU;
- conventions: None states and seeds are zeros, training=False, float32 input, argument errors;
- a hypothesis property over small shapes: the directional derivative of the loss equals
  <gradient, direction> for the LN-LSTM and the reset-before GRU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import assert_close, central_difference
from rnnfast import reference as ref
from variant_cases import (
    CASE_IDS,
    CASES,
    Case,
    backward,
    case,
    forward,
    grad_keys,
    loss,
    make_inputs,
    time_slice,
)

__all__: list[str] = []

FD_EPS = 1e-6
FD_TOL = 1e-6
T, B, IN, H = 4, 3, 3, 3  # time steps, batch, input size, hidden size
RAGGED = np.array([4, 0, 2])  # full, empty, partial
LAYOUTS = {"full": (B, None), "ragged": (B, RAGGED), "b1": (1, np.array([3]))}


def _run(c: Case, inp: dict[str, Any], lengths: Any) -> tuple[Any, dict[str, Any]]:
    """(forward outputs (y, h_n, c_n), gradient dict) of one call."""
    y, h_n, c_n, cache = forward(c, inp, lengths)
    return (y, h_n, c_n), backward(c, cache, inp)


# ------------------------------------------------------------------------------------------------
# finite differences
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("c", CASES, ids=CASE_IDS)
def test_gradients_match_finite_differences(c: Case, bias: bool, layout: str) -> None:
    batch, lengths = LAYOUTS[layout]
    inp = make_inputs(c, T, batch, IN, H, bias=bias, seed=11)

    def f() -> float:
        y, h_n, c_n, _ = forward(c, inp, lengths, training=False)
        return loss(c, y, h_n, c_n, inp)

    _, grads = _run(c, inp, lengths)
    assert set(grads) == {*grad_keys(c), "dh_all"}
    for key in grad_keys(c):
        if inp[key] is None:
            assert grads[key] is None, f"{key}: expected None without bias, got {type(grads[key])}"
            continue
        fd = central_difference(f, inp[key], FD_EPS)
        assert np.max(np.abs(fd)) > 1e-3, f"{key}: FD gradient is ~0, the check would be vacuous"
        assert_close(grads[key], fd, FD_TOL, f"{c.id} d{key} vs FD ({layout})")
        assert grads[key].dtype == np.float64


@pytest.mark.parametrize("c", CASES, ids=CASE_IDS)
def test_dh_all_matches_finite_differences(c: Case) -> None:
    # dh_all[t] = dL/dh_t = dy_t + d(loss of steps > t, h_n, c_n)/dh_t, c_t held: the sequence is
    # split after step t and the tail restarted from (h_t, c_t).
    inp = make_inputs(c, T, B, IN, H, seed=5)
    _, grads = _run(c, inp, RAGGED)
    for t in range(T):
        head = time_slice(inp, 0, t + 1)
        _, h_t, c_t, _ = forward(c, head, np.minimum(RAGGED, t + 1), training=False)
        tail = dict(time_slice(inp, t + 1, None), h0=h_t, c0=c_t)
        tail_lengths = np.maximum(RAGGED - (t + 1), 0)

        def rest() -> float:
            if t == T - 1:  # nothing after step t: L = <h_n, dh_n> (+ <c_n, dc_n>)
                return loss(c, np.zeros(0), h_t, c_t, dict(inp, dy=np.zeros(0)))
            y, h_n, c_n, _ = forward(c, tail, tail_lengths, training=False)
            return loss(c, y, h_n, c_n, tail)

        expected = inp["dy"][t] + central_difference(rest, h_t, FD_EPS)
        valid = t < RAGGED
        assert_close(grads["dh_all"][t][valid], expected[valid], FD_TOL, f"{c.id} dh_all[{t}]")
        assert np.all(grads["dh_all"][t][~valid] == 0.0), f"dh_all[{t}]: padded rows must be 0"


# ------------------------------------------------------------------------------------------------
# ragged semantics
# ------------------------------------------------------------------------------------------------


def _one_sequence(inp: dict[str, Any], b: int, n: int) -> dict[str, Any]:
    """Sequence b of a batch, its first n steps only, as a batch of one (parameters shared)."""
    out: dict[str, Any] = {}
    for k, v in inp.items():
        if not isinstance(v, np.ndarray) or k.startswith(("w_", "b", "gamma")):
            out[k] = v  # parameters, None, scalar masks
        elif k in ("x", "dy", "zoneout_h", "zoneout_c"):
            out[k] = v[:n, b : b + 1]
        else:  # h0, c0, dh_n, dc_n, dropout_h
            out[k] = v[b : b + 1]
    return out


@pytest.mark.parametrize("c", CASES, ids=CASE_IDS)
def test_ragged_equals_each_sequence_alone(c: Case) -> None:
    lengths = np.array([4, 0, 2, 1])
    inp = make_inputs(c, T, lengths.size, IN, H, seed=8)
    (y, h_n, c_n), grads = _run(c, inp, lengths)
    params = [p for p in c.params if inp[p] is not None]
    summed = {p: np.zeros_like(inp[p]) for p in params}
    for b, n in enumerate(lengths):
        rows = slice(b, b + 1)
        assert np.all(y[n:, b] == 0.0), f"y[{n}:, {b}] must be zero at padded steps"
        assert np.all(grads["x"][n:, b] == 0.0), f"dx[{n}:, {b}] must be zero at padded steps"
        if n == 0:  # nothing runs: the state is h0 (c0), dh_n (dc_n) flows straight to dh0 (dc0)
            for state, seed in (("h0", "dh_n"), ("c0", "dc_n"))[: len(c.states)]:
                final = h_n if state == "h0" else c_n
                assert np.array_equal(final[b], inp[state][b]), f"length 0: {state}[{b}]"
                assert np.array_equal(grads[state][b], inp[seed][b]), f"length 0: d{state}[{b}]"
            continue
        alone = _one_sequence(inp, b, n)
        (y1, h1, c1), g1 = _run(c, alone, None)
        where = f"{c.id} seq {b} (length {n})"
        assert_close(y[:n, rows], y1, 1e-14, f"{where} y")
        assert_close(h_n[rows], h1, 1e-14, f"{where} h_n")
        if c_n is not None:
            assert_close(c_n[rows], c1, 1e-14, f"{where} c_n")
        for key in ("x", "dh_all"):
            assert_close(grads[key][:n, rows], g1[key], 1e-13, f"{where} d{key}")
        for key in c.states:
            assert_close(grads[key][rows], g1[key], 1e-13, f"{where} d{key}")
        for p in params:
            summed[p] += g1[p]
    for p in params:  # the batch's parameter gradient is the sum over its sequences
        assert_close(grads[p], summed[p], 1e-13, f"{c.id} d{p} vs sum over sequences alone")


@pytest.mark.parametrize("poison", ["nan", "inf"])
@pytest.mark.parametrize("c", CASES, ids=CASE_IDS)
def test_padded_steps_and_empty_states_reach_no_result(c: Case, poison: str) -> None:
    """x and dy at padded steps, and the initial state of the length-0 sequence, set to NaN/Inf:
    every result but that sequence's own carried state equals the clean run exactly (padded steps
    are selected away, never multiplied by 0)."""
    padded = np.arange(T)[:, None] >= RAGGED[None, :]  # (T, B): True at padded steps
    b0 = int(np.argmin(RAGGED))
    clean = make_inputs(c, T, B, IN, H, seed=13)
    clean["x"][padded] = 0.0
    clean["dy"][padded] = 0.0
    for s in c.states:
        clean[s][b0] = 0.0
    dirty = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in clean.items()}
    dirty["x"][padded] = float(poison)
    dirty["dy"][padded] = float(poison)
    for s in c.states:
        dirty[s][b0] = float(poison)
    results = []
    for inp in (clean, dirty):
        with np.errstate(invalid="ignore", over="ignore"):  # the discarded padded rows
            (y, h_n, c_n), grads = _run(c, inp, RAGGED)
        results.append({"y": y, "h_n": h_n, "c_n": c_n, **{f"d{k}": v for k, v in grads.items()}})
    want, got = results
    for final, state in (("h_n", "h0"), ("c_n", "c0"))[: len(c.states)]:
        np.testing.assert_array_equal(got[final][b0], dirty[state][b0], err_msg=f"{final}[{b0}]")
        got[final][b0] = want[final][b0] = 0.0
    for k, v in got.items():
        if v is None:
            assert want[k] is None, k
            continue
        assert np.isfinite(v).all(), f"{c.id} {k}: non-finite at {np.argwhere(~np.isfinite(v))[:3]}"
        np.testing.assert_array_equal(v, want[k], err_msg=f"{c.id} {k}: padding changed it")


# ------------------------------------------------------------------------------------------------
# reductions to the base oracles (tested in test_reference.py)
# ------------------------------------------------------------------------------------------------


def _assert_same(got: Any, want: Any, tol: float, where: str, skip: tuple[str, ...] = ()) -> None:
    """Forward outputs and gradient dicts of two runs agree (keys of ``want`` but ``skip``)."""
    (outs_g, grads_g), (outs_w, grads_w) = got, want
    for name, a, e in zip(("y", "h_n", "c_n"), outs_g, outs_w):
        assert_close(a, e, tol, f"{where} {name}")
    for k, e in grads_w.items():
        if k not in skip:
            assert_close(grads_g[k], e, tol, f"{where} d{k}")


def _base(cell: str, inp: dict[str, Any], lengths: Any) -> tuple[Any, dict[str, Any]]:
    w = [inp[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh")]
    if cell == "lstm":
        y, h_n, c_n, cache = ref.lstm_forward(inp["x"], inp["h0"], inp["c0"], *w, lengths=lengths)
        return (y, h_n, c_n), ref.lstm_backward(cache, inp["dy"], inp["dh_n"], inp["dc_n"])
    y, h_n, cache = ref.gru_forward(inp["x"], inp["h0"], *w, lengths=lengths)
    return (y, h_n, None), ref.gru_backward(cache, inp["dy"], inp["dh_n"])


def test_peephole_without_peepholes_is_the_lstm() -> None:
    c = case("lstm_peephole")
    inp = make_inputs(c, T, B, IN, H, seed=3)
    inp["w_peep"] = np.zeros(3 * H)
    _assert_same(_run(c, inp, RAGGED), _base("lstm", inp, RAGGED), 1e-15, "w_peep=0")
    assert np.max(np.abs(_run(c, inp, RAGGED)[1]["w_peep"])) > 1e-3  # its gradient is not 0


def test_projection_by_identity_is_the_lstm() -> None:
    c = case("lstm_proj")
    inp = make_inputs(c, T, B, IN, H, seed=3)
    rng = np.random.default_rng(4)  # P = H: square w_hh, (B, H) h0 and seeds
    inp.update(w_hh=rng.uniform(-0.5, 0.5, (4 * H, H)), w_hr=np.eye(H))
    inp.update(h0=rng.uniform(-0.5, 0.5, (B, H)), dh_n=rng.standard_normal((B, H)))
    inp["dy"] = rng.standard_normal((T, B, H))
    _assert_same(_run(c, inp, RAGGED), _base("lstm", inp, RAGGED), 1e-15, "w_hr=I")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_regularisers_that_do_nothing_give_the_base_cell(cell: str) -> None:
    c = case(f"{cell}_regularised-train")
    inp = make_inputs(c, T, B, IN, H, seed=6)
    want = _base(cell, inp, RAGGED)
    nothing = {"zoneout_h": None, "zoneout_c": None, "dropout_h": None}
    explicit = {  # booleans are 0/1 masks
        "zoneout_h": np.zeros((T, B, H), dtype=bool),
        "zoneout_c": 0.0,
        "dropout_h": np.ones((B, H)),
    }
    for where, masks in (("None", nothing), ("zeros/ones", explicit)):
        got = _run(c, {**inp, **masks}, RAGGED)
        _assert_same(got, want, 0.0, f"{cell} regularised, masks {where}")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_zoneout_one_freezes_the_state(cell: str) -> None:
    c = case(f"{cell}_regularised-train")
    inp = make_inputs(c, T, B, IN, H, seed=7)
    inp.update(zoneout_h=1.0, zoneout_c=1.0)
    (y, h_n, c_n), grads = _run(c, inp, RAGGED)
    valid = np.arange(T)[:, None, None] < RAGGED[None, :, None]
    assert_close(y, np.where(valid, inp["h0"][None], 0.0), 0.0, f"{cell} y")
    assert_close(h_n, inp["h0"], 0.0, f"{cell} h_n")
    if cell == "lstm":
        assert_close(c_n, inp["c0"], 0.0, "lstm c_n")
        assert_close(grads["c0"], inp["dc_n"], 0.0, "lstm dc0")
    dh0 = inp["dh_n"] + np.where(valid, inp["dy"], 0.0).sum(axis=0)  # every y_t and h_n is h0
    assert_close(grads["h0"], dh0, 1e-15, f"{cell} dh0")
    for k in ("x", "w_ih", "w_hh", "b_ih", "b_hh"):
        assert np.all(grads[k] == 0.0), f"{cell} d{k}: nothing passes through the cell"


def test_reset_before_gru_without_w_hn_is_the_gru() -> None:
    # W_hn = b_hn = 0: n = tanh(W_in x + b_in) in both GRUs (the reset gate acts on nothing)
    c = case("gru_reset_before")
    inp = make_inputs(c, T, B, IN, H, seed=9)
    inp["w_hh"][2 * H :] = 0.0
    inp["b_hh"][2 * H :] = 0.0
    got, want = _run(c, inp, RAGGED), _base("gru", inp, RAGGED)
    _assert_same(got, want, 1e-15, "W_hn=0", skip=("w_hh", "b_hh"))
    assert_close(got[1]["w_hh"][: 2 * H], want[1]["w_hh"][: 2 * H], 1e-15, "dW_h{r,z}")
    assert_close(got[1]["b_hh"][: 2 * H], want[1]["b_hh"][: 2 * H], 1e-15, "db_h{r,z}")


# ------------------------------------------------------------------------------------------------
# conventions: None inputs, training=False, dtypes, argument errors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("c", CASES, ids=CASE_IDS)
def test_none_states_and_seeds_are_zeros(c: Case) -> None:
    inp = make_inputs(c, T, B, IN, H, seed=4)
    zeros = dict(inp, **{s: np.zeros_like(inp[s]) for s in c.states})
    nones = dict(inp, **dict.fromkeys(c.states))
    (y0, h0, c0), _ = _run(c, zeros, RAGGED)
    y1, h1, c1, cache = forward(c, nones, RAGGED)
    for name, a, e in (("y", y1, y0), ("h_n", h1, h0), ("c_n", c1, c0)):
        assert_close(a, e, 0.0, f"{c.id} {name} with None states")
    seeds = [None] * (1 + len(c.states))
    g = getattr(ref, f"{c.name}_backward")(cache, *seeds)
    for k, v in g.items():
        assert v is None or np.all(v == 0.0), f"{c.id} d{k}: must be 0 for zero seeds"


@pytest.mark.parametrize("c", CASES, ids=CASE_IDS)
def test_training_false_and_float32_input(c: Case) -> None:
    inp32 = make_inputs(c, T, B, IN, H, dtype=np.float32, seed=6)
    y, h_n, c_n, cache = forward(c, inp32, RAGGED, training=False)
    assert cache is None
    inp64 = {
        k: (v.astype(np.float64) if isinstance(v, np.ndarray) else v) for k, v in inp32.items()
    }
    y64, h64, c64, cache64 = forward(c, inp64, RAGGED)
    assert isinstance(cache64, ref.VariantCache) and cache64.cell == c.name
    for name, a, e in (("y", y, y64), ("h_n", h_n, h64), ("c_n", c_n, c64)):
        if e is not None:
            assert a.dtype == np.float64, f"{c.id} {name}: expected float64, got {a.dtype}"
            assert_close(a, e, 0.0, f"{c.id} {name} (float32 input, training=False)")


def _bad_cases(c: Case) -> list[tuple[str, Any, type, str]]:
    """(argument, bad value, exception, the argument the message must name first)."""
    g = c.gates
    out: list[tuple[str, Any, type, str]] = [
        ("x", np.zeros((2, 3)), ValueError, "x"),
        ("w_ih", np.zeros((g * H, IN + 1)), ValueError, "w_ih"),
        ("h0", np.zeros((B, 7)), ValueError, "h0"),
        ("x", np.zeros((T, B, IN), dtype=np.complex128), TypeError, "x"),
    ]
    for name, shape in c.shapes(IN, H).items():
        if name in ("w_ih", "b_ih", "b_hh"):
            continue
        out.append((name, np.zeros((*shape[:-1], shape[-1] + 1)), ValueError, name))
        if name not in c.biases:
            out.append((name, None, TypeError, name))
    for m in c.masks:
        out.append((m, np.zeros((T + 1, B, H)), ValueError, m))
    if "c0" in c.states:
        out.append(("c0", np.zeros((B, H + 1)), ValueError, "c0"))
    return out


@pytest.mark.parametrize("c", [c for c in CASES if c.mask_mode != "eval"], ids=lambda c: c.id)
def test_bad_arguments(c: Case) -> None:
    base = make_inputs(c, T, B, IN, H)
    for arg, value, exc, name in _bad_cases(c):
        with pytest.raises(exc, match=f"^{name}:"):
            forward(c, dict(base, **{arg: value}))
    with pytest.raises(ValueError, match="^lengths:"):
        forward(c, base, np.array([T + 1, 0, 0]))
    _, _, _, cache = forward(c, base)
    bwd = getattr(ref, f"{c.name}_backward")
    with pytest.raises(ValueError, match="^dy:"):
        bwd(cache, np.zeros((T, B, 9)))
    with pytest.raises(ValueError, match="^cache: got None"):
        bwd(None, None)
    with pytest.raises(TypeError, match="^cache:"):
        bwd({"x": base["x"]}, None)
    other = case("gru_layernorm" if c.name == "lstm_peephole" else "lstm_peephole")
    _, _, _, other_cache = forward(other, make_inputs(other, 2, 1, 1, 2))
    with pytest.raises(ValueError, match=f"^cache: expected a cache from {c.name}_forward"):
        bwd(other_cache, None)


# ------------------------------------------------------------------------------------------------
# property: directional derivatives over small shapes
# ------------------------------------------------------------------------------------------------


@given(
    data=st.data(),
    name=st.sampled_from(["lstm_layernorm", "gru_reset_before"]),
    t_steps=st.integers(1, 4),
    batch=st.integers(1, 3),
    n_in=st.integers(1, 3),
    hidden=st.integers(1, 3),
    bias=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_directional_derivative_property(
    data: Any, name: str, t_steps: int, batch: int, n_in: int, hidden: int, bias: bool, seed: int
) -> None:
    """d/ds L(p + s v) at s = 0 (finite differences) equals the sum over all arrays of <dL/dp, v>."""
    c = case(name)
    lengths = np.array(data.draw(st.lists(st.integers(0, t_steps), min_size=batch, max_size=batch)))
    inp = make_inputs(c, t_steps, batch, n_in, hidden, bias=bias, seed=seed)
    keys = [k for k in grad_keys(c) if inp[k] is not None]
    rng = np.random.default_rng(seed + 1)
    direction = {k: rng.standard_normal(inp[k].shape) for k in keys}
    _, grads = _run(c, inp, lengths)
    predicted = sum(float(np.sum(grads[k] * direction[k])) for k in keys)

    def along(s: float) -> float:
        moved = dict(inp, **{k: inp[k] + s * direction[k] for k in keys})
        y, h_n, c_n, _ = forward(c, moved, lengths, training=False)
        return loss(c, y, h_n, c_n, inp)

    # five-point stencil, O(eps^4) truncation: LN of a row of small variance curves sharply
    eps = 1e-5
    fd = (8.0 * (along(eps) - along(-eps)) - (along(2 * eps) - along(-2 * eps))) / (12.0 * eps)
    scale = max(1.0, abs(fd))
    assert abs(predicted - fd) <= 1e-6 * scale, (
        f"{name} T={t_steps} B={batch} I={n_in} H={hidden} lengths={lengths.tolist()}: "
        f"<grad, v> = {predicted!r}, FD = {fd!r}"
    )
