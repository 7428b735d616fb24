"""Truncated BPTT(k1, k2): rnnfast.functional.tbptt_grads and rnnfast.reference.tbptt_grads.

The expected value of every update is built here, independently of both tbptt_grads functions, from
the reference's whole-sequence forward/backward: update n covers output steps [n*k1, e],
e = min((n+1)*k1, T) - 1; the state entering s = max(0, e - k2 + 1) is obtained by running the
reference forward over x[:s] (a different route from the stored-state one the implementations use),
the window x[s:e+1] is run from it, and backward gets dy on [n*k1, e] and zero on [s, n*k1).
That construction is itself checked against central finite differences of the window loss.

Tolerances (helpers.rel_max_error, relative to max |expected|): float64 1e-10 (reference vs
construction 1e-12), float32 1e-4.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from helpers import (
    CELLS,
    assert_close,
    assert_grads_close,
    backward,
    central_difference,
    forward,
    make_inputs,
)
from rnnfast import reference as ref
from rnnfast._cells import CELLS as CELL_SPECS
from rnnfast._cells import get_cell

__all__: list[str] = []

TOL = {np.float64: 1e-10, np.float32: 1e-4}
B, IN, H = 2, 3, 4  # batch, input size, hidden size
WEIGHTS = ("w_ih", "w_hh", "b_ih", "b_hh")

#: (T, k1, k2): full BPTT, T not a multiple of k1, k1 < k2, k1 = 1, k2 > T, k1 > T, T = 1.
CONFIGS = [
    (6, 6, 6),
    (7, 3, 3),
    (6, 2, 2),
    (7, 2, 5),
    (7, 1, 1),
    (7, 1, 3),
    (5, 2, 9),
    (6, 3, 6),
    (4, 8, 8),
    (4, 3, 9),
    (1, 1, 1),
]
CONFIG_IDS = [f"T{t}-k1_{a}-k2_{b}" for t, a, b in CONFIGS]
CELL_IDS = [c if c != "rnn" else f"rnn-{n}" for c, n in CELLS]


def _impl(name: str) -> ModuleType:
    # Imported when a test needs it: a missing compiled core fails those tests only.
    return importlib.import_module(f"rnnfast.{name}")


def _state0(cell: str, inp: dict[str, Any]) -> Any:
    return (inp["h0"], inp["c0"]) if get_cell(cell).has_cell_state else inp["h0"]


_EXTRA = {name for spec in CELL_SPECS for name, _ in spec.extra_params}


def _wkeys(cell: str) -> tuple[str, ...]:
    """The gradient keys of a cell's weights: WEIGHTS, then its extra parameters."""
    return WEIGHTS + tuple(name for name, _ in get_cell(cell).extra_params)


def _params(inp: dict[str, Any]) -> dict[str, Any]:
    """w_ih, w_hh, b_ih, b_hh and the cell's extra parameters (make_inputs draws only its own)."""
    return {k: inp[k] for k in (*WEIGHTS, *sorted(_EXTRA & set(inp)))}


def _call(
    mod: ModuleType, cell: str, nonlinearity: str, inp: dict[str, Any], k1: Any, k2: Any
) -> list[dict[str, Any]]:
    return list(
        mod.tbptt_grads(
            cell,
            inp["x"],
            _state0(cell, inp),
            _params(inp),
            inp["dy"],
            k1,
            k2,
            nonlinearity=nonlinearity,
        )
    )


def _windows(t_steps: int, k1: int, k2: int) -> list[tuple[int, int, int]]:
    """(s, start, e) of every update, straight from the definition in TEAM.md / issue 2."""
    out = []
    n = 0
    while n * k1 < t_steps:
        start = n * k1
        e = min((n + 1) * k1, t_steps) - 1
        out.append((max(0, e - k2 + 1), start, e))
        n += 1
    return out


def _state_entering(cell: str, nonlinearity: str, inp: dict[str, Any], s: int) -> tuple[Any, Any]:
    """(h, c) entering step s: state0 if s == 0, else the reference forward over x[:s].

    c is None unless the cell is lstm.
    """
    x64 = {k: (None if v is None else np.asarray(v, dtype=np.float64)) for k, v in inp.items()}
    if s == 0:
        return x64["h0"], x64["c0"]
    _, h, c, _ = forward(ref, cell, nonlinearity, dict(x64, x=x64["x"][:s]), training=False)
    return h, c


def _window_inputs(
    cell: str, nonlinearity: str, inp: dict[str, Any], s: int, start: int, e: int
) -> dict[str, Any]:
    h, c = _state_entering(cell, nonlinearity, inp, s)
    x64 = {k: (None if v is None else np.asarray(v, dtype=np.float64)) for k, v in inp.items()}
    dyw = np.zeros_like(x64["dy"][s : e + 1])
    dyw[start - s :] = x64["dy"][start : e + 1]  # dy only on the update's own output steps
    return dict(x64, x=x64["x"][s : e + 1], h0=h, c0=c, dy=dyw)


def construction(
    cell: str, nonlinearity: str, inp: dict[str, Any], k1: int, k2: int
) -> list[dict[str, Any]]:
    """Expected per-update gradients, from reference.<cell>_forward/_backward only.

    (Not from reference.tbptt_grads, which this construction checks.)
    """
    out = []
    for s, start, e in _windows(inp["x"].shape[0], k1, k2):
        win = _window_inputs(cell, nonlinearity, inp, s, start, e)
        _, _, _, cache = forward(ref, cell, nonlinearity, win)
        # dh_n, dc_n = 0: the update's loss is only <y, dy> on the window.
        g = backward(ref, cell, cache, win["dy"])
        if s == 0:
            state0: Any = (g["h0"], g["c0"]) if get_cell(cell).has_cell_state else g["h0"]
        else:  # the entering state is a constant: nothing reaches state0
            zero = np.zeros_like(g["h0"])
            state0 = (zero, zero) if get_cell(cell).has_cell_state else zero
        out.append({**{k: g[k] for k in _wkeys(cell)}, "state0": state0})
    return out


def _check_updates(
    got: list[dict[str, Any]],
    want: list[dict[str, Any]],
    tol: float,
    tag: str,
    dtype: type | None = None,
) -> None:
    assert len(got) == len(want), f"{tag}: expected {len(want)} updates, got {len(got)}"
    for n, (g, w) in enumerate(zip(got, want)):
        assert_grads_close(g, w, tol, where=f"{tag} update {n}: ")
        if dtype is not None:
            for k in WEIGHTS:
                if g[k] is not None:
                    assert g[k].dtype == dtype, (
                        f"{tag} update {n} {k}: dtype {g[k].dtype}, expected {dtype}"
                    )


# ------------------------------------------------------------------------------------------------
# the construction itself, against finite differences of the window loss
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
def test_construction_matches_finite_differences(cell: str, nonlinearity: str) -> None:
    t_steps, k1, k2 = 5, 2, 3
    inp = make_inputs(cell, t_steps, B, IN, H, seed=31)
    want = construction(cell, nonlinearity, inp, k1, k2)
    for n, (s, start, e) in enumerate(_windows(t_steps, k1, k2)):
        win = _window_inputs(cell, nonlinearity, inp, s, start, e)  # entering state fixed here

        def window_loss(win: dict[str, Any] = win, own: int = start - s) -> float:
            # <y, dy> over the update's own output steps, the entering state held constant
            y, _, _, _ = forward(ref, cell, nonlinearity, win, training=False)
            return float(np.sum(y[own:] * win["dy"][own:]))

        for k in _wkeys(cell):
            fd = central_difference(window_loss, win[k], 1e-6)
            assert_close(want[n][k], fd, 1e-6, f"{cell}/{nonlinearity} update {n} d{k} vs FD")


# ------------------------------------------------------------------------------------------------
# k1 = k2 = T is full BPTT
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("impl", ["reference", "functional"])
def test_full_window_is_full_bptt(impl: str, cell: str, nonlinearity: str, dtype: type) -> None:
    mod = _impl(impl)
    t_steps = 6
    inp = make_inputs(cell, t_steps, B, IN, H, dtype=dtype, seed=41)
    got = _call(mod, cell, nonlinearity, inp, t_steps, t_steps)
    assert len(got) == 1, f"k1 = k2 = T: expected one update, got {len(got)}"
    tol = TOL[np.float64] if impl == "reference" else TOL[dtype]
    out_dtype = np.float64 if impl == "reference" else dtype

    # Against the same module's full backward (dh_n = 0: the TBPTT loss is only <y, dy>).
    _, _, _, cache = forward(mod, cell, nonlinearity, inp)
    full = backward(mod, cell, cache, inp["dy"])
    state0 = (full["h0"], full["c0"]) if get_cell(cell).has_cell_state else full["h0"]
    _check_updates(
        got,
        [{**{k: full[k] for k in _wkeys(cell)}, "state0": state0}],
        tol,
        f"{impl} vs own BPTT",
        out_dtype,
    )
    # Against the reference's full backward.
    _, _, _, rcache = forward(ref, cell, nonlinearity, inp)
    rfull = backward(ref, cell, rcache, inp["dy"])
    rstate0 = (rfull["h0"], rfull["c0"]) if get_cell(cell).has_cell_state else rfull["h0"]
    _check_updates(
        got,
        [{**{k: rfull[k] for k in _wkeys(cell)}, "state0": rstate0}],
        tol,
        f"{impl} vs reference BPTT",
    )


# ------------------------------------------------------------------------------------------------
# truncated windows against the construction
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("t_steps,k1,k2", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
def test_reference_matches_construction(
    cell: str, nonlinearity: str, t_steps: int, k1: int, k2: int
) -> None:
    inp = make_inputs(cell, t_steps, B, IN, H, seed=t_steps * 100 + k1 * 10 + k2)
    want = construction(cell, nonlinearity, inp, k1, k2)
    _check_updates(
        _call(ref, cell, nonlinearity, inp, k1, k2), want, 1e-12, "reference", np.float64
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("t_steps,k1,k2", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
def test_functional_matches_construction(
    cell: str, nonlinearity: str, t_steps: int, k1: int, k2: int, dtype: type
) -> None:
    fn = _impl("functional")
    inp = make_inputs(cell, t_steps, B, IN, H, dtype=dtype, seed=t_steps * 100 + k1 * 10 + k2)
    want = construction(cell, nonlinearity, inp, k1, k2)
    _check_updates(
        _call(fn, cell, nonlinearity, inp, k1, k2),
        want,
        TOL[dtype],
        f"functional {dtype.__name__}",
        dtype,
    )


@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
def test_no_bias(cell: str, nonlinearity: str) -> None:
    inp = make_inputs(cell, 5, B, IN, H, bias=False, seed=9)
    want = construction(cell, nonlinearity, inp, 2, 3)
    for impl in ("reference", "functional"):
        got = _call(_impl(impl), cell, nonlinearity, inp, 2, 3)
        for n, g in enumerate(got):
            for k in ("b_ih", "b_hh"):
                assert g.get(k) is None, (
                    f"{impl} update {n}: {k} must be None without bias, got {type(g.get(k))}"
                )
        _check_updates(got, want, TOL[np.float64], impl)


@st.composite
def _tbptt_case(draw: Any) -> tuple[int, int, int, int, int, int, int]:
    t_steps = draw(st.integers(1, 9))
    k1 = draw(st.integers(1, t_steps + 2))
    k2 = draw(st.integers(k1, k1 + 6))
    batch = draw(st.integers(1, 3))
    n_in = draw(st.integers(1, 4))
    hidden = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**16))
    return t_steps, k1, k2, batch, n_in, hidden, seed


@given(case=_tbptt_case(), which=st.sampled_from(range(len(CELLS))), f32=st.booleans())
def test_property_tbptt_matches_construction(case: tuple[int, ...], which: int, f32: bool) -> None:
    t_steps, k1, k2, batch, n_in, hidden, seed = case
    cell, nonlinearity = CELLS[which]
    if f32 and any(name == "gamma_ih" for name, _ in get_cell(cell).extra_params):
        # degenerate layer norms: of a rank-1 row (W_ih x_t with I = 1, W_hh h_{t-1} with H = 1), or
        # of H <= 2 units (LN(c_t) is then +-1 up to eps), which depend on x_t / h_{t-1} / c_t only
        # through eps: those gradients are eps-sized cancellations that float32 cannot resolve to
        # 1e-4 (float64 still checks these shapes)
        assume(n_in > 1 and hidden > 2)
    dtype = np.float32 if f32 else np.float64
    inp = make_inputs(cell, t_steps, batch, n_in, hidden, dtype=dtype, seed=seed)
    want = construction(cell, nonlinearity, inp, k1, k2)
    _check_updates(_call(ref, cell, nonlinearity, inp, k1, k2), want, 1e-12, f"reference {case}")
    _check_updates(
        _call(_impl("functional"), cell, nonlinearity, inp, k1, k2),
        want,
        TOL[dtype],
        f"functional {dtype.__name__} {cell}/{nonlinearity} (T, k1, k2, B, I, H, seed) = {case}",
        dtype,
    )


# ------------------------------------------------------------------------------------------------
# bad arguments
# ------------------------------------------------------------------------------------------------

BAD_K = [
    (3, 2, ValueError, "k2"),  # k1 > k2
    (0, 2, ValueError, "k1"),
    (-1, 2, ValueError, "k1"),
    (2, 0, ValueError, "k"),  # k2 < k1 and k2 <= 0: either name is right
    (1.5, 2, (TypeError, ValueError), "k1"),
    (2, 2.0, (TypeError, ValueError), "k2"),
    ("2", 2, (TypeError, ValueError), "k1"),
    (True, 2, (TypeError, ValueError), "k1"),
]


@pytest.mark.parametrize(
    "k1,k2,exc,match", BAD_K, ids=[f"k1={a!r}-k2={b!r}" for a, b, _, _ in BAD_K]
)
@pytest.mark.parametrize("impl", ["reference", "functional"])
def test_bad_k(impl: str, k1: Any, k2: Any, exc: Any, match: str) -> None:
    mod = _impl(impl)
    inp = make_inputs("gru", 4, B, IN, H)
    with pytest.raises(exc, match=match):
        _call(mod, "gru", "tanh", inp, k1, k2)


@pytest.mark.parametrize("impl", ["reference", "functional"])
def test_bad_cell_state_params(impl: str) -> None:
    mod = _impl(impl)
    inp = make_inputs("lstm", 4, B, IN, H)
    with pytest.raises(ValueError, match="cell"):
        _call(mod, "conv", "tanh", inp, 2, 2)
    with pytest.raises((TypeError, ValueError), match="state0"):  # lstm needs (h0, c0)
        mod.tbptt_grads("lstm", inp["x"], inp["h0"], _params(inp), inp["dy"], 2, 2)
    with pytest.raises((TypeError, ValueError), match="dy"):
        mod.tbptt_grads(
            "lstm", inp["x"], _state0("lstm", inp), _params(inp), inp["dy"][:, :, :2], 2, 2
        )
    with pytest.raises((TypeError, ValueError), match="w_hh"):
        mod.tbptt_grads(
            "lstm",
            inp["x"],
            _state0("lstm", inp),
            dict(_params(inp), w_hh=inp["w_hh"][:, :2]),
            inp["dy"],
            2,
            2,
        )
