"""rnnfast.functional (the compiled core) against rnnfast.reference (the float64 oracle).

Error measure (helpers.rel_max_error): max |functional - reference| / max |reference|, i.e. the max
absolute error relative to the largest magnitude in the reference array. Tolerances: float64
1e-10, float32 1e-4, on outputs (y, h_n, c_n) and on ALL gradients (x, h0, c0, w_ih, w_hh, b_ih,
b_hh, dh_all).
For float32 the reference runs in float64 on the very same (float32-valued) inputs.

Also: output dtype preserved, training=False, None arguments, argument errors naming the argument,
non-contiguous input, and a parity subset under every SIMD variant this machine can run (one
subprocess per variant with RNNFAST_SIMD set, compared to the reference and to each other).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import (
    CELL_NAMES,
    CELLS,
    assert_close,
    backward,
    bad_forward_cases,
    call_forward_kw,
    forward,
    grad_keys,
    make_inputs,
)
from rnnfast import _loader, functional
from rnnfast import reference as ref
from rnnfast._cells import get_cell

__all__: list[str] = []

TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}
DTYPES = [np.float64, np.float32]
DTYPE_IDS = ["f64", "f32"]
CELL_IDS = [c if c != "rnn" else f"rnn-{n}" for c, n in CELLS]

#: (T, B, I, H): T=1, B=1, H=1, I != H, I = 1, H not a multiple of any SIMD width, a longer T.
SHAPES = [
    (1, 1, 1, 1),
    (1, 3, 2, 4),
    (5, 1, 3, 3),
    (4, 2, 1, 5),
    (6, 3, 5, 2),
    (3, 4, 7, 8),
    (7, 3, 5, 17),
    (12, 2, 3, 4),
    (4, 2, 33, 35),
]
SHAPE_IDS = ["T{}-B{}-I{}-H{}".format(*s) for s in SHAPES]

#: (bias, ragged lengths, h0/c0 None)
OPTIONS = {
    "plain": (True, False, False),
    "nobias": (False, False, False),
    "ragged": (True, True, False),
    "ragged-nobias-h0none": (False, True, True),
}


def _lengths(t_steps: int, batch: int, seed: int) -> np.ndarray:
    """Ragged lengths in [0, T], including 0 and T when the batch is large enough."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(0, t_steps + 1, size=batch)
    if batch >= 2:
        lens[0], lens[1] = t_steps, 0
    elif t_steps > 1:
        lens[0] = t_steps - 1
    return lens.astype(np.int64)


def check_parity(
    cell: str, nonlinearity: str, inp: dict[str, Any], lengths: np.ndarray | None, tag: str
) -> dict[str, float]:
    """Forward and backward of functional vs reference; returns the errors per array."""
    dtype = inp["x"].dtype
    tol = TOL[dtype]
    errors: dict[str, float] = {}

    y, h_n, c_n, cache = forward(functional, cell, nonlinearity, inp, lengths)
    ry, rh, rc, rcache = forward(ref, cell, nonlinearity, inp, lengths)
    outs = [("y", y, ry), ("h_n", h_n, rh)] + (
        [("c_n", c_n, rc)] if get_cell(cell).has_cell_state else []
    )
    for name, got, want in outs:
        assert isinstance(got, np.ndarray) and got.dtype == dtype, (
            f"{tag} {name}: expected a {dtype} ndarray, got {getattr(got, 'dtype', type(got))}"
        )
        errors[name] = assert_close(got, want, tol, f"{tag} {name}")

    grads = backward(functional, cell, cache, inp["dy"], inp["dh_n"], inp["dc_n"])
    rgrads = backward(ref, cell, rcache, inp["dy"], inp["dh_n"], inp["dc_n"])
    expected_keys = set(grad_keys(cell)) | {"dh_all"}
    assert expected_keys <= set(grads), (
        f"{tag}: gradient dict lacks {sorted(expected_keys - set(grads))}"
    )
    for key in sorted(expected_keys):
        if rgrads[key] is None:
            assert grads[key] is None, (
                f"{tag} d{key}: expected None without bias, got {type(grads[key])}"
            )
            continue
        got = grads[key]
        assert isinstance(got, np.ndarray) and got.dtype == dtype, (
            f"{tag} d{key}: expected a {dtype} ndarray, got {getattr(got, 'dtype', type(got))}"
        )
        errors[key] = assert_close(
            got, rgrads[key], _grad_tol(cell, key, inp, tol), f"{tag} d{key}"
        )
    return errors


def _grad_tol(cell: str, key: str, inp: dict[str, Any], tol: float) -> float:
    """tol, except dx of a cell that layer-normalises W_ih x_t (gain ``gamma_ih``) when I = 1 in
    float32: that row is then x_t times a fixed vector, its LN does not depend on x_t but through
    eps, and dL/dx_t is what is left of a cancellation (float32 meets 1e-3 there, not 1e-4)."""
    spec = get_cell(cell)
    ln_input = any(name == "gamma_ih" for name, _ in spec.extra_params)
    if key == "x" and ln_input and inp["x"].shape[2] == 1 and inp["x"].dtype == np.float32:
        return 10 * tol
    return tol


def _inputs(
    cell: str, shape: tuple[int, int, int, int], dtype: Any, option: str, seed: int
) -> tuple[dict[str, Any], np.ndarray | None]:
    bias, ragged, none_state = OPTIONS[option]
    t_steps, batch, n_in, hidden = shape
    inp = make_inputs(cell, t_steps, batch, n_in, hidden, dtype=dtype, bias=bias, seed=seed)
    if none_state:
        inp["h0"] = None
        inp["c0"] = None
    return inp, (_lengths(t_steps, batch, seed) if ragged else None)


# ------------------------------------------------------------------------------------------------
# parity on a grid of shapes and options
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
def test_parity(
    cell: str, nonlinearity: str, dtype: Any, shape: tuple[int, int, int, int], option: str
) -> None:
    inp, lengths = _inputs(cell, shape, dtype, option, seed=sum(shape))
    check_parity(
        cell,
        nonlinearity,
        inp,
        lengths,
        f"{cell}/{nonlinearity} {np.dtype(dtype)} {shape} {option}",
    )


@given(
    t_steps=st.integers(1, 8),
    batch=st.integers(1, 4),
    n_in=st.integers(1, 6),
    hidden=st.integers(1, 9),
    which=st.sampled_from(range(len(CELLS))),
    f32=st.booleans(),
    option=st.sampled_from(list(OPTIONS)),
    seed=st.integers(0, 2**16),
)
def test_property_parity(
    t_steps: int, batch: int, n_in: int, hidden: int, which: int, f32: bool, option: str, seed: int
) -> None:
    cell, nonlinearity = CELLS[which]
    dtype = np.float32 if f32 else np.float64
    shape = (t_steps, batch, n_in, hidden)
    inp, lengths = _inputs(cell, shape, dtype, option, seed)
    check_parity(
        cell,
        nonlinearity,
        inp,
        lengths,
        f"{cell}/{nonlinearity} {np.dtype(dtype)} {shape} {option} seed={seed} lengths={lengths}",
    )


# ------------------------------------------------------------------------------------------------
# conventions
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
def test_training_false(cell: str, nonlinearity: str, dtype: Any) -> None:
    inp = make_inputs(cell, 5, 3, 4, 6, dtype=dtype, seed=1)
    lengths = np.array([5, 0, 3])
    y, h_n, c_n, cache = forward(functional, cell, nonlinearity, inp, lengths, training=False)
    assert cache is None, f"training=False must return cache None, got {type(cache).__name__}"
    ry, rh, rc, _ = forward(ref, cell, nonlinearity, inp, lengths)
    tol = TOL[np.dtype(dtype)]
    assert y.dtype == dtype and h_n.dtype == dtype
    assert_close(y, ry, tol, "y (training=False)")
    assert_close(h_n, rh, tol, "h_n (training=False)")
    if get_cell(cell).has_cell_state:
        assert c_n.dtype == dtype
        assert_close(c_n, rc, tol, "c_n (training=False)")


@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
def test_none_upstream_gradients_are_zeros(cell: str, nonlinearity: str) -> None:
    inp = make_inputs(cell, 4, 2, 3, 5, seed=2)
    _, _, _, cache = forward(functional, cell, nonlinearity, inp)
    _, _, _, rcache = forward(ref, cell, nonlinearity, inp)
    # dy given, dh_n/dc_n None
    got = backward(functional, cell, cache, inp["dy"])
    want = backward(ref, cell, rcache, inp["dy"])
    for k in grad_keys(cell) + ("dh_all",):
        assert_close(got[k], want[k], 1e-10, f"{cell} d{k} (dh_n=None)")
    # dy None, dh_n given
    got = backward(functional, cell, cache, None, inp["dh_n"], inp["dc_n"])
    want = backward(ref, cell, rcache, None, inp["dh_n"], inp["dc_n"])
    for k in grad_keys(cell) + ("dh_all",):
        assert_close(got[k], want[k], 1e-10, f"{cell} d{k} (dy=None)")


@pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
def test_need_dx_false_skips_dx_only(
    cell: str, nonlinearity: str, dtype: Any, ragged: bool
) -> None:
    # need_dx=False drops the dx product and nothing else: every other gradient is bitwise the
    # need_dx=True result, which test_parity checks against the reference.
    inp = make_inputs(cell, 6, 3, 4, 5, dtype=dtype, seed=21)
    lengths = _lengths(6, 3, 21) if ragged else None
    _, _, _, cache = forward(functional, cell, nonlinearity, inp, lengths)
    fn = getattr(functional, f"{cell}_backward")
    extra = (inp["dc_n"],) if get_cell(cell).has_cell_state else ()
    full = fn(cache, inp["dy"], inp["dh_n"], *extra)
    part = fn(cache, inp["dy"], inp["dh_n"], *extra, need_dx=False)
    assert full["x"] is not None and part["x"] is None
    for k in grad_keys(cell) + ("dh_all",):
        if k == "x":
            continue
        np.testing.assert_array_equal(part[k], full[k], err_msg=f"{cell} d{k} with need_dx=False")
    with pytest.raises(TypeError, match="need_dx: expected a bool, got int"):
        fn(cache, inp["dy"], inp["dh_n"], *extra, need_dx=1)


@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
def test_backward_twice_from_one_cache(cell: str, nonlinearity: str) -> None:
    # A cache must not be consumed or modified by backward. Not asserted bitwise: multithreaded
    # reductions may sum in another order from one call to the next (seen: 2e-17 relative).
    inp = make_inputs(cell, 4, 2, 3, 5, seed=12)
    _, _, _, cache = forward(functional, cell, nonlinearity, inp)
    first = backward(functional, cell, cache, inp["dy"], inp["dh_n"], inp["dc_n"])
    second = backward(functional, cell, cache, inp["dy"], inp["dh_n"], inp["dc_n"])
    for k in grad_keys(cell) + ("dh_all",):
        assert_close(second[k], first[k], 1e-12, f"{cell} d{k} on the second backward")


@pytest.mark.parametrize("layout", ["x-strided", "w-fortran", "x-fortran"])
@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
def test_non_contiguous_inputs(cell: str, nonlinearity: str, layout: str) -> None:
    # Non-C-contiguous arrays: the right answer or a clear error, never a silent wrong answer.
    inp = make_inputs(cell, 4, 3, 6, 5, seed=13)
    if layout == "x-strided":
        inp["x"] = make_inputs(cell, 4, 3, 12, 5, seed=13)["x"][:, :, ::2]
        arg = "x"
    elif layout == "x-fortran":
        inp["x"] = np.asfortranarray(inp["x"])
        arg = "x"
    else:
        inp["w_hh"] = np.asfortranarray(inp["w_hh"])
        arg = "w_hh"
    assert not inp[arg].flags.c_contiguous
    try:
        forward(functional, cell, nonlinearity, inp)
    except (TypeError, ValueError) as exc:
        assert arg in str(exc), f"error for non-contiguous {arg} does not name it: {exc}"
        return
    check_parity(cell, nonlinearity, inp, None, f"{cell}/{nonlinearity} non-contiguous {layout}")


# ------------------------------------------------------------------------------------------------
# argument errors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELL_NAMES)
def test_bad_forward_arguments(cell: str, dtype: Any) -> None:
    base = make_inputs(cell, 3, 2, 3, 4, dtype=dtype)
    for case_id, arg, value, exc, match in bad_forward_cases(cell):
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            value = value.astype(dtype)
        if case_id == "w_ih-rows":  # H may be read from w_ih or w_hh: either one may be named
            match = "w_ih|w_hh"
        if case_id == "lengths-float":
            exc = (TypeError, ValueError)
        with pytest.raises(exc, match=match):
            call_forward_kw(functional, cell, dict(base, **{arg: value}))


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_mixed_or_bad_dtypes(cell: str) -> None:
    base = make_inputs(cell, 3, 2, 3, 4, dtype=np.float32)
    with pytest.raises((TypeError, ValueError), match="w_ih"):  # no silent up- or down-cast
        call_forward_kw(functional, cell, dict(base, w_ih=base["w_ih"].astype(np.float64)))
    with pytest.raises((TypeError, ValueError), match="h0"):
        call_forward_kw(functional, cell, dict(base, h0=base["h0"].astype(np.float64)))
    with pytest.raises((TypeError, ValueError), match="x"):
        call_forward_kw(functional, cell, dict(base, x=base["x"].astype(np.int64)))
    with pytest.raises((TypeError, ValueError), match="x"):
        call_forward_kw(functional, cell, dict(base, x=base["x"].astype(np.float16)))


@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
def test_bad_backward_arguments(cell: str, nonlinearity: str) -> None:
    inp = make_inputs(cell, 3, 2, 3, 4)
    _, _, _, cache = forward(functional, cell, nonlinearity, inp)
    with pytest.raises((TypeError, ValueError), match="dy"):
        backward(functional, cell, cache, inp["dy"][:, :, :3])
    with pytest.raises((TypeError, ValueError), match="dy"):
        backward(functional, cell, cache, inp["dy"].astype(np.float32))
    with pytest.raises((TypeError, ValueError), match="dh_n"):
        backward(functional, cell, cache, inp["dy"], inp["dh_n"][:1])
    if get_cell(cell).has_cell_state:
        with pytest.raises((TypeError, ValueError), match="dc_n"):
            backward(functional, cell, cache, inp["dy"], inp["dh_n"], inp["dc_n"][:, :2])
    with pytest.raises((TypeError, ValueError), match="cache"):
        backward(functional, cell, None, inp["dy"])
    with pytest.raises((TypeError, ValueError), match="cache"):
        backward(functional, cell, {"not": "a cache"}, inp["dy"])


def test_bad_nonlinearity() -> None:
    inp = make_inputs("rnn", 3, 2, 3, 4)
    with pytest.raises(ValueError, match="nonlinearity"):
        call_forward_kw(functional, "rnn", inp, nonlinearity="sigmoid")


def test_one_bias_none() -> None:
    inp = make_inputs("gru", 3, 2, 3, 4)
    with pytest.raises((TypeError, ValueError), match="b_ih|b_hh"):
        call_forward_kw(functional, "gru", dict(inp, b_ih=None))


def test_zero_dim_bias_rejected() -> None:
    # H = 1, rnn: G*H = 1, so a 0-d bias must not slip through as shape (1,)
    inp = make_inputs("rnn", 3, 2, 3, 1)
    with pytest.raises(ValueError, match="b_ih"):
        call_forward_kw(functional, "rnn", dict(inp, b_ih=np.float64(0.5) * np.ones(())))


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e300])
@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
def test_non_finite_padding_reaches_no_result(cell: str, nonlinearity: str, bad: float) -> None:
    # Values on padded steps of x and dy are never read: the same results, exactly, as zeros there.
    # (dW_ih sums dgates^T x over all rows; dgates is 0 on padded rows and 0 * NaN would be NaN.)
    inp = make_inputs(cell, 6, 4, 5, 7, seed=21)
    lengths = np.array([6, 0, 3, 5])
    pad = np.arange(6)[:, None] >= lengths[None, :]  # (T, B)
    zeroed = dict(
        inp, x=np.where(pad[..., None], 0.0, inp["x"]), dy=np.where(pad[..., None], 0.0, inp["dy"])
    )
    dirty = dict(
        inp, x=np.where(pad[..., None], bad, inp["x"]), dy=np.where(pad[..., None], bad, inp["dy"])
    )
    results = []
    for case in (zeroed, dirty):
        y, h_n, c_n, cache = forward(functional, cell, nonlinearity, case, lengths)
        grads = backward(functional, cell, cache, case["dy"], case["dh_n"], case["dc_n"])
        results.append({"y": y, "h_n": h_n, **{k: v for k, v in grads.items() if v is not None}})
    for key, want in results[0].items():
        got = results[1][key]
        assert np.isfinite(got).all(), f"{cell} {key}: non-finite after {bad} on padded steps"
        np.testing.assert_array_equal(got, want, err_msg=f"{cell} {key} with {bad} on padded steps")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
def test_non_finite_state_of_empty_sequence_reaches_no_other_result(
    cell: str, nonlinearity: str, dtype: Any, bad: float
) -> None:
    # The h0 (and c0) of a sequence of length 0 reaches no output: it is carried over every padded
    # step to h_n. dW_hh sums dgates^T h_{t-1} over all rows, where dgates is 0 on padded rows and
    # 0 * NaN would be NaN: every other result must be exactly that of a zero state there.
    inp = make_inputs(cell, 6, 4, 5, 7, dtype=dtype, seed=23)
    lengths = np.array([6, 0, 3, 5])
    clean = dict(inp)
    dirty = dict(inp)
    for key in ("h0", "c0") if get_cell(cell).has_cell_state else ("h0",):
        clean[key] = inp[key].copy()
        clean[key][1] = 0.0
        dirty[key] = inp[key].copy()
        dirty[key][1] = bad
    results = []
    for case in (clean, dirty):
        y, h_n, c_n, cache = forward(functional, cell, nonlinearity, case, lengths)
        grads = backward(functional, cell, cache, case["dy"], case["dh_n"], case["dc_n"])
        results.append({"y": y, "h_n": h_n, "c_n": c_n, **grads})
    want, got = results
    for final in (
        ("h_n", "c_n") if get_cell(cell).has_cell_state else ("h_n",)
    ):  # the empty sequence's own state
        np.testing.assert_array_equal(
            got[final][1], np.full(7, bad), err_msg=f"{cell} {final}[1] should carry {bad}"
        )
        got[final][1] = want[final][1] = 0.0
    for key, w in want.items():
        if w is None:
            assert got[key] is None, key
            continue
        assert np.isfinite(got[key]).all(), (
            f"{cell} {key}: non-finite at {np.argwhere(~np.isfinite(got[key]))[:3].tolist()} "
            f"after {bad} in the initial state of a sequence of length 0"
        )
        np.testing.assert_array_equal(got[key], w, err_msg=f"{cell} {key} with h0[1] = {bad}")
    # and the dirty run agrees with the reference (which selects the padded rows away too)
    with np.errstate(invalid="ignore", over="ignore"):
        _, _, _, rcache = forward(ref, cell, nonlinearity, dirty, lengths)
        rgrads = backward(ref, cell, rcache, dirty["dy"], dirty["dh_n"], dirty["dc_n"])
    for key in ("w_ih", "w_hh", "b_ih", "b_hh", "x", "h0"):
        assert_close(got[key], rgrads[key], TOL[np.dtype(dtype)], f"{cell} d{key} vs reference")


@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
def test_results_are_not_shared_between_calls(cell: str, nonlinearity: str) -> None:
    # Large results live in reused memory blocks (cpp/include/rnnfast/memory.hpp): a block goes back
    # to the pool only when Python drops every array (and view) on it, never under a live result.
    inp = make_inputs(cell, 64, 16, 32, 64, dtype=np.float32, seed=22)
    y1, _, _, cache = forward(functional, cell, nonlinearity, inp)
    assert y1.nbytes >= 256 * 1024, "the test needs a result large enough for the block pool"
    g1 = backward(functional, cell, cache, inp["dy"])
    view = y1[5:]
    dx_copy, view_copy = g1["x"].copy(), view.copy()
    del y1  # the view alone keeps the block alive
    other = dict(inp, x=inp["x"] * 2 + 1, dy=inp["dy"] * -3)
    for _ in range(3):
        y2, _, _, cache2 = forward(functional, cell, nonlinearity, other)
        backward(functional, cell, cache2, other["dy"])
        del y2, cache2
    np.testing.assert_array_equal(view, view_copy)
    np.testing.assert_array_equal(g1["x"], dx_copy)
    view[...] = 7.0  # results are ordinary writable arrays
    assert view.flags.writeable and float(view.sum()) == 7.0 * view.size


# ------------------------------------------------------------------------------------------------
# every SIMD variant this machine supports
# ------------------------------------------------------------------------------------------------

_SIMD_SCRIPT = r"""
import json, sys
import numpy as np
import rnnfast
from rnnfast import functional as F
from rnnfast._cells import get_cell

src, dst, variant = sys.argv[1], sys.argv[2], sys.argv[3]
info = rnnfast.build_info()
assert info["variant"] == variant, f"asked for {variant!r}, build_info says {info['variant']!r}"
out = {}
with np.load(src, allow_pickle=False) as data:
    cases = json.loads(str(data["cases"]))
    for case in cases:
        name, cell, nl = case["name"], case["cell"], case["nonlinearity"]
        g = lambda k: data[f"{name}/{k}"] if f"{name}/{k}" in data else None
        lengths = g("lengths")
        spec = get_cell(cell)
        extra = [n for n, _ in spec.extra_params]
        w = (g("w_ih"), g("w_hh"), g("b_ih"), g("b_hh"), *(g(n) for n in extra))
        kw = {"nonlinearity": nl} if len(spec.nonlinearities) > 1 else {}
        fwd, bwd = getattr(F, f"{cell}_forward"), getattr(F, f"{cell}_backward")
        if spec.has_cell_state:
            y, h, c, cache = fwd(g("x"), g("h0"), g("c0"), *w, lengths=lengths, **kw)
            grads = bwd(cache, g("dy"), g("dh_n"), g("dc_n"))
            out[f"{name}/c_n"] = c
        else:
            y, h, cache = fwd(g("x"), g("h0"), *w, lengths=lengths, **kw)
            grads = bwd(cache, g("dy"), g("dh_n"))
        out[f"{name}/y"], out[f"{name}/h_n"] = y, h
        for k, v in grads.items():
            if v is not None:
                out[f"{name}/d{k}"] = v
        state0 = (g("h0"), g("c0")) if get_cell(cell).has_cell_state else g("h0")
        params = dict(zip(("w_ih", "w_hh", "b_ih", "b_hh", *extra), w))
        updates = F.tbptt_grads(cell, g("x"), state0, params, g("dy"), 2, 3, nonlinearity=nl)
        for n, upd in enumerate(updates):
            for k in ("w_ih", "w_hh", "b_ih", "b_hh", *extra):
                if upd[k] is not None:
                    out[f"{name}/tbptt{n}/{k}"] = upd[k]
np.savez(dst, **out)
print(json.dumps({"variant": info["variant"], "arrays": len(out)}))
"""


def _simd_cases() -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    cases: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    for cell, nonlinearity in CELLS:
        for dtype in DTYPES:
            for shape, bias, ragged in (
                ((7, 3, 5, 17), True, True),
                ((5, 2, 33, 35), False, False),
            ):
                name = f"{cell}-{nonlinearity}-{np.dtype(dtype).name}-H{shape[3]}"
                inp = make_inputs(cell, *shape, dtype=dtype, bias=bias, seed=shape[3])
                if ragged:
                    arrays[f"{name}/lengths"] = np.array([7, 0, 4])
                for k, v in inp.items():
                    if v is not None:
                        arrays[f"{name}/{k}"] = v
                cases.append({"name": name, "cell": cell, "nonlinearity": nonlinearity})
    return cases, arrays


def test_simd_variants_agree(tmp_path: Path) -> None:
    variants = _loader.available_variants()
    assert "baseline" in variants, f"the baseline variant must always be available, got {variants}"
    cases, arrays = _simd_cases()
    src = tmp_path / "inputs.npz"
    np.savez(src, cases=np.array(json.dumps(cases)), **arrays)

    results: dict[str, dict[str, np.ndarray]] = {}
    for variant in variants:
        dst = tmp_path / f"out-{variant}.npz"
        env = dict(os.environ, RNNFAST_SIMD=variant)
        proc = subprocess.run(
            [sys.executable, "-c", _SIMD_SCRIPT, str(src), str(dst), variant],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert proc.returncode == 0, (
            f"variant {variant}: parity script failed\n{proc.stdout}\n{proc.stderr}"
        )
        with np.load(dst, allow_pickle=False) as data:
            results[variant] = {k: data[k] for k in data.files}

    # Each variant against the reference (same tolerances as everywhere), ...
    for case in cases:
        name, cell, nonlinearity = case["name"], case["cell"], case["nonlinearity"]
        extra = tuple(n for n, _ in get_cell(cell).extra_params)
        keys = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "dy", "dh_n", "dc_n", *extra)
        inp = {k: arrays.get(f"{name}/{k}") for k in keys}
        tol = TOL[inp["x"].dtype]
        lengths = arrays.get(f"{name}/lengths")
        ry, rh, rc, rcache = forward(ref, cell, nonlinearity, inp, lengths)
        rgrads = backward(ref, cell, rcache, inp["dy"], inp["dh_n"], inp["dc_n"])
        want = {"y": ry, "h_n": rh, **{f"d{k}": v for k, v in rgrads.items() if v is not None}}
        if get_cell(cell).has_cell_state:
            want["c_n"] = rc
        state0 = (inp["h0"], inp["c0"]) if get_cell(cell).has_cell_state else inp["h0"]
        params = {k: inp[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh", *extra)}
        for n, upd in enumerate(
            ref.tbptt_grads(
                cell, inp["x"], state0, params, inp["dy"], 2, 3, nonlinearity=nonlinearity
            )
        ):
            want.update(
                {f"tbptt{n}/{k}": v for k, v in upd.items() if k != "state0" and v is not None}
            )
        for variant, res in results.items():
            for key, expected in want.items():
                full = f"{name}/{key}"
                assert full in res, f"variant {variant}: {full} missing from its output"
                assert res[full].dtype == inp["x"].dtype, (
                    f"variant {variant}: {full} has dtype {res[full].dtype}"
                )
                assert_close(res[full], expected, tol, f"variant {variant} {full} vs reference")
    # ... and the variants against each other (float32 tolerance).
    base = results["baseline"]
    for variant, res in results.items():
        assert set(res) == set(base), f"variant {variant} returns other arrays than baseline"
        for key, arr in res.items():
            assert_close(arr, base[key], 1e-4, f"variant {variant} vs baseline: {key}")
