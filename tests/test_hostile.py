"""Hostile inputs to every public entry point (issue 6).

Each case passes one bad argument to an otherwise valid call and requires ValueError, TypeError or
MemoryError (CheckpointError is a documented ValueError subclass) whose message names the argument.
Layout cases (Fortran order, negative strides, strided views, read-only, byte-swapped) must instead
give exactly the result of the C-contiguous input. NaN/Inf inputs must propagate (documented in
docs/RELIABILITY.md). Allocation cases run in a child process under an address-space limit, so a
missing size check shows up as a failure there and can never exhaust the machine.

The number of cases is the number of collected tests: ``pytest tests/test_hostile.py --co -q``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnnfast as rf
from helpers import GATES
from rnnfast import functional as F
from rnnfast import reference as R
from rnnfast._cells import CELLS as SPECS
from rnnfast._cells import get_cell
from rnnfast.modules import RNNBase
from rnnfast.testing import call_forward

__all__: list[str] = []

ACCEPTED = (ValueError, TypeError, MemoryError)
T, B, I, H = 4, 3, 5, 6  # noqa: E741 - the dimension names of the API
# every registered cell: make_args / forward / the per-argument cases below are built from its
# CellSpec (states, gate count, extra parameters), so a cell added to the registry is covered here
CELLS = tuple(c.name for c in SPECS)
#: the registered cells that have their own parameters (peepholes, layer-norm gains)
EXTRA_CELLS = tuple(c.name for c in SPECS if c.extra_params)


def expect_error(fn: Callable[[], Any], *names: str, types: tuple[type, ...] = ACCEPTED) -> str:
    """Calls fn; it must raise one of ``types`` with a message mentioning one of ``names``."""
    try:
        fn()
    except types as exc:
        msg = str(exc)
        assert any(n in msg for n in names), (
            f"{type(exc).__name__} message does not name any of {names}: {msg!r}"
        )
        return msg
    except BaseException as exc:  # noqa: BLE001 - the wrong exception type is the failure
        pytest.fail(f"expected one of {[t.__name__ for t in types]} naming {names}, got {exc!r}")
    pytest.fail(f"no error raised (expected one naming {names})")


def _rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def make_args(cell: str, dtype: Any = np.float32, bias: bool = True) -> dict[str, Any]:
    """Valid keyword arguments of <cell>_forward (x, h0, [c0], w_ih, w_hh, b_ih, b_hh, then the
    cell's extra parameters by name, each (per_unit*H,))."""
    spec = get_cell(cell)
    g = GATES[cell]
    r = _rng()
    a: dict[str, Any] = {
        "x": r.standard_normal((T, B, I)).astype(dtype),
        "h0": r.standard_normal((B, H)).astype(dtype) * 0.5,
        "w_ih": r.standard_normal((g * H, I)).astype(dtype) * 0.3,
        "w_hh": r.standard_normal((g * H, H)).astype(dtype) * 0.3,
        "b_ih": r.standard_normal(g * H).astype(dtype) * 0.1 if bias else None,
        "b_hh": r.standard_normal(g * H).astype(dtype) * 0.1 if bias else None,
    }
    if spec.has_cell_state:
        a["c0"] = r.standard_normal((B, H)).astype(dtype) * 0.5
    for name, per_unit in spec.extra_params:
        a[name] = r.uniform(-0.5, 0.5, per_unit * H).astype(dtype)
    return a


def forward(cell: str, a: dict[str, Any], **kw: Any) -> Any:
    """<cell>_forward(x, <states>, w_ih, w_hh, b_ih, b_hh, <extra parameters>, **kw), as returned."""
    spec = get_cell(cell)
    states = [a[n] for n in spec.state_names]
    extra = [a[n] for n, _ in spec.extra_params]
    fn = getattr(F, f"{cell}_forward")
    return fn(a["x"], *states, a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], *extra, **kw)


def extra_names(cell: str) -> list[str]:
    return [n for n, _ in get_cell(cell).extra_params]


def array_args(cell: str) -> list[str]:
    c0 = ["c0"] if get_cell(cell).has_cell_state else []
    return ["x", "h0", "w_ih", "w_hh", "b_ih", "b_hh", *c0, *extra_names(cell)]


CELL_ARG = [(c, n) for c in CELLS for n in array_args(c)]

# ==================================================================================================
# functional API: dtypes
# ==================================================================================================

BAD_DTYPES = {
    "int32": np.int32,
    "int64": np.int64,
    "uint8": np.uint8,
    "bool": np.bool_,
    "float16": np.float16,
    "longdouble": np.longdouble,
    "complex64": np.complex64,
    "object": object,
}


@pytest.mark.parametrize("dtype", list(BAD_DTYPES))
@pytest.mark.parametrize(("cell", "arg"), CELL_ARG)
def test_functional_bad_dtype(cell: str, arg: str, dtype: str) -> None:
    a = make_args(cell)
    a[arg] = a[arg].astype(BAD_DTYPES[dtype])
    if dtype == "longdouble" and np.dtype(np.longdouble).itemsize == 8:
        pytest.skip("longdouble is float64 on this platform")
    # x sets the call's dtype: a bad x is named as x; otherwise the bad argument is named.
    expect_error(lambda: forward(cell, a), arg, types=(TypeError,))


@pytest.mark.parametrize(("cell", "arg"), CELL_ARG)
def test_functional_mixed_float_dtypes(cell: str, arg: str) -> None:
    a = make_args(cell)
    a[arg] = a[arg].astype(np.float64)
    # float64 x with float32 weights names the first float32 argument checked against x's dtype.
    names = (arg,) if arg != "x" else ("w_ih", "h0")
    expect_error(lambda: forward(cell, a), *names, types=(TypeError,))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("what", ["str", "nested_ragged_list", "dict", "scalar"])
def test_functional_non_array_x(cell: str, what: str) -> None:
    a = make_args(cell)
    a["x"] = {
        "str": "abc",
        "nested_ragged_list": [[1.0], [1.0, 2.0]],
        "dict": {"a": 1},
        "scalar": 1.5,
    }[what]
    expect_error(lambda: forward(cell, a), "x")


# ==================================================================================================
# functional API: shapes
# ==================================================================================================


def _bad_shapes(cell: str) -> list[tuple[str, str, tuple[int, ...]]]:
    g = GATES[cell]
    cases = [
        ("x", "ndim2", (T, B)),
        ("x", "ndim4", (T, B, I, 1)),
        ("x", "T0", (0, B, I)),
        ("x", "B0", (T, 0, I)),
        ("x", "I0", (T, B, 0)),
        ("x", "I_mismatch", (T, B, I + 1)),
        ("h0", "B_mismatch", (B + 1, H)),
        ("h0", "H_mismatch", (B, H + 1)),
        ("h0", "ndim3", (1, B, H)),
        ("w_ih", "gate_multiple", (g * H + 1, I) if g > 1 else (H, I + 1)),
        ("w_ih", "H0", (0, I)),
        ("w_ih", "ndim1", (g * H * I,)),
        ("w_hh", "H_mismatch", (g * H, H + 1)),
        ("w_hh", "gates_mismatch", ((g + 1) * H, H)),
        ("w_hh", "ndim3", (1, g * H, H)),
        ("b_ih", "length", (g * H + 1,)),
        ("b_ih", "ndim2", (1, g * H)),
        ("b_hh", "length", (g * H - 1,)),
    ]
    if get_cell(cell).has_cell_state:
        cases += [("c0", "B_mismatch", (B + 1, H)), ("c0", "H_mismatch", (B, H - 1))]
    for name, per_unit in get_cell(cell).extra_params:
        cases += [
            (name, "length", (per_unit * H + 1,)),
            (name, "per_unit_mismatch", ((per_unit + 1) * H,)),
            (name, "empty", (0,)),
            (name, "ndim2", (per_unit, H)),
        ]
    return cases


SHAPE_CASES = [(c, *s) for c in CELLS for s in _bad_shapes(c)]


@pytest.mark.parametrize(("cell", "arg", "what", "shape"), SHAPE_CASES)
def test_functional_bad_shape(cell: str, arg: str, what: str, shape: tuple[int, ...]) -> None:
    a = make_args(cell)
    a[arg] = np.zeros(shape, np.float32)
    # a wrong x size shows up as a mismatch with w_ih (I) or as x itself.
    names = {"x": ("x", "w_ih"), "w_ih": ("w_ih",), "w_hh": ("w_hh", "w_ih")}.get(arg, (arg,))
    expect_error(lambda: forward(cell, a), *names, types=(ValueError,))


@pytest.mark.parametrize("cell", CELLS)
def test_functional_one_bias_missing(cell: str) -> None:
    a = make_args(cell)
    a["b_hh"] = None
    expect_error(lambda: forward(cell, a), "b_ih, b_hh", types=(ValueError,))


EXTRA_ARG = [(c, n) for c in EXTRA_CELLS for n in extra_names(c)]


@pytest.mark.parametrize("value", [None, "w", 1.5, [[0.5]]], ids=["None", "str", "scalar", "list"])
@pytest.mark.parametrize(("cell", "arg"), EXTRA_ARG)
def test_functional_extra_param_not_an_array(cell: str, arg: str, value: Any) -> None:
    """An extra parameter (no bias-like None allowed) that is not an array of the right shape."""
    a = make_args(cell)
    a[arg] = value
    expect_error(lambda: forward(cell, a), arg)


# ==================================================================================================
# functional API: lengths, flags
# ==================================================================================================

BAD_LENGTHS: dict[str, tuple[Any, tuple[type, ...]]] = {
    "negative": (np.array([1, -1, 2]), (ValueError,)),
    "greater_than_T": (np.array([1, T + 1, 2]), (ValueError,)),
    "huge_uint64": (np.array([1, 2**64 - 1, 2], dtype=np.uint64), (ValueError,)),
    "too_few": (np.array([1, 2]), (ValueError,)),
    "too_many": (np.array([1, 2, 3, 4]), (ValueError,)),
    "scalar": (np.int64(2), (ValueError,)),
    "2d": (np.array([[1, 2, 3]]), (ValueError,)),
    "float": (np.array([1.0, 2.0, 3.0]), (TypeError,)),
    "bool": (np.array([True, False, True]), (TypeError,)),
    "object": (np.array([1, 2, None], dtype=object), (TypeError,)),
    "str": ("123", (TypeError, ValueError)),
}


@pytest.mark.parametrize("case", list(BAD_LENGTHS))
@pytest.mark.parametrize("cell", CELLS)
def test_functional_bad_lengths(cell: str, case: str) -> None:
    value, types = BAD_LENGTHS[case]
    expect_error(lambda: forward(cell, make_args(cell), lengths=value), "lengths", types=types)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("value", [1, "yes", None, np.array([True])])
def test_functional_training_flag_not_bool(cell: str, value: Any) -> None:
    expect_error(
        lambda: forward(cell, make_args(cell), training=value), "training", types=(TypeError,)
    )


@pytest.mark.parametrize("value", ["sigmoid", "", None, ["tanh"], 1])
def test_functional_bad_nonlinearity(value: Any) -> None:
    expect_error(lambda: forward("rnn", make_args("rnn"), nonlinearity=value), "nonlinearity")


# ==================================================================================================
# functional API: layouts must give the contiguous result
# ==================================================================================================


def _relayout(a: np.ndarray, how: str) -> np.ndarray:
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "negative_stride":
        return np.ascontiguousarray(a[::-1])[::-1]
    if how == "strided_view":
        big = np.zeros(tuple(2 * n for n in a.shape), a.dtype)
        view = big[tuple(slice(None, None, 2) for _ in a.shape)]
        view[...] = a
        return view
    if how == "read_only":
        b = a.copy()
        b.flags.writeable = False
        return b
    if how == "byte_swapped":
        return a.astype(a.dtype.newbyteorder(">" if sys.byteorder == "little" else "<"))
    if how == "dtype_metadata":
        return a.astype(np.dtype(a.dtype.type, metadata={"unit": "volt"}))
    raise AssertionError(how)


LAYOUTS = [
    "fortran",
    "negative_stride",
    "strided_view",
    "read_only",
    "byte_swapped",
    "dtype_metadata",
]


@pytest.mark.parametrize("how", LAYOUTS)
@pytest.mark.parametrize(("cell", "arg"), CELL_ARG)
def test_functional_layouts_match_contiguous(cell: str, arg: str, how: str) -> None:
    a = make_args(cell)
    lengths = np.array([T, 1, 3])
    want = forward(cell, a, lengths=lengths)
    b = dict(a)
    b[arg] = _relayout(a[arg], how)
    got = forward(cell, b, lengths=lengths)
    for k, (w, g) in enumerate(zip(want[:-1], got[:-1])):
        assert g.dtype == np.float32 and g.flags.c_contiguous
        assert np.array_equal(w, g), (
            f"output {k} differs for {arg} {how}: max err {np.max(np.abs(w - g))}"
        )
    dy = _relayout(_rng().standard_normal(want[0].shape).astype(np.float32), how)
    back = getattr(F, f"{cell}_backward")
    gw, gg = back(want[-1], np.ascontiguousarray(dy)), back(got[-1], dy)
    for key, w in gw.items():
        if w is not None:
            assert np.array_equal(w, gg[key]), f"grad {key} differs for {arg} {how} (dy {how})"


def test_functional_does_not_write_inputs() -> None:
    a = make_args("lstm")
    frozen = {k: v.copy() for k, v in a.items() if v is not None}
    for v in a.values():
        if v is not None:
            v.flags.writeable = False
    y, h_n, c_n, cache = forward("lstm", a)
    F.lstm_backward(cache, np.ones_like(y), np.ones_like(h_n), np.ones_like(c_n))
    for k, v in frozen.items():
        assert np.array_equal(v, a[k]), f"{k} was modified"


# ==================================================================================================
# functional API: backward misuse
# ==================================================================================================


@pytest.mark.parametrize("cell", CELLS)
def test_backward_without_training_cache(cell: str) -> None:
    out = forward(cell, make_args(cell), training=False)
    assert out[-1] is None
    expect_error(
        lambda: getattr(F, f"{cell}_backward")(out[-1], None), "cache", types=(ValueError,)
    )


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("cache", [object(), "cache", 3, {"x": 1}])
def test_backward_foreign_cache(cell: str, cache: Any) -> None:
    expect_error(lambda: getattr(F, f"{cell}_backward")(cache, None), "cache", types=(TypeError,))


# each cell with the next one in the registry (and rnn/lstm/gru among themselves): the LSTM-like
# and GRU-like caches have the same arrays, only the cell name tells them apart
OTHER_CELL = sorted(
    {("rnn", "gru"), ("lstm", "rnn"), ("gru", "lstm")}
    | {(c, CELLS[(k + 1) % len(CELLS)]) for k, c in enumerate(CELLS)}
    | {(c, "lstm" if get_cell(c).has_cell_state else "gru") for c in CELLS[3:]}
)


@pytest.mark.parametrize(("cell", "other"), OTHER_CELL)
def test_backward_cache_of_other_cell(cell: str, other: str) -> None:
    cache = forward(cell, make_args(cell))[-1]
    expect_error(lambda: getattr(F, f"{other}_backward")(cache, None), "cache", types=(ValueError,))


def _grad_cases(cell: str) -> list[tuple[str, str, Any]]:
    out = []
    names = ["dy", "dh_n"] + (["dc_n"] if get_cell(cell).has_cell_state else [])
    for name in names:
        shape = (T, B, H) if name == "dy" else (B, H)
        out += [
            (name, "shape", np.zeros(shape[:-1] + (H + 1,), np.float32)),
            (name, "ndim", np.zeros((1,) + shape, np.float32)),
            (name, "float64", np.zeros(shape, np.float64)),
            (name, "int", np.zeros(shape, np.int64)),
            (name, "complex", np.zeros(shape, np.complex64)),
        ]
    return out


GRAD_CASES = [(c, *g) for c in CELLS for g in _grad_cases(c)]


@pytest.mark.parametrize(("cell", "name", "what", "value"), GRAD_CASES)
def test_backward_bad_gradients(cell: str, name: str, what: str, value: Any) -> None:
    cache = forward(cell, make_args(cell))[-1]
    kw = {"dy": None, "dh_n": None}
    if get_cell(cell).has_cell_state:
        kw["dc_n"] = None
    kw[name] = value
    expect_error(lambda: getattr(F, f"{cell}_backward")(cache, **kw), name)


@pytest.mark.parametrize("cell", CELLS)
def test_backward_twice_is_defined_and_identical(cell: str) -> None:
    out = forward(cell, make_args(cell))
    dy = np.ones_like(out[0])
    back = getattr(F, f"{cell}_backward")
    g1, g2 = back(out[-1], dy), back(out[-1], dy)
    for k, v in g1.items():
        if v is not None:
            assert np.array_equal(v, g2[k]), f"second backward differs in {k}"


# ==================================================================================================
# truncated BPTT
# ==================================================================================================


def _params(cell: str) -> dict[str, Any]:
    a = make_args(cell)
    return {k: a[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh", *extra_names(cell))}


BAD_K: dict[str, tuple[Any, Any, str, tuple[type, ...]]] = {
    "k1_gt_k2": (3, 2, "k2", (ValueError,)),
    "k1_zero": (0, 2, "k1", (ValueError,)),
    "k1_negative": (-1, 2, "k1", (ValueError,)),
    "k2_zero": (1, 0, "k2", (ValueError,)),
    "k1_float": (1.0, 2, "k1", (TypeError,)),
    "k2_float": (1, 2.5, "k2", (TypeError,)),
    "k1_bool": (True, 2, "k1", (TypeError,)),
    "k2_str": (1, "2", "k2", (TypeError,)),
    "k1_none": (None, 2, "k1", (TypeError,)),
}


@pytest.mark.parametrize("case", list(BAD_K))
@pytest.mark.parametrize("cell", CELLS)
def test_tbptt_grads_bad_k(cell: str, case: str) -> None:
    k1, k2, name, types = BAD_K[case]
    a = make_args(cell)
    expect_error(
        lambda: F.tbptt_grads(cell, a["x"], None, _params(cell), None, k1, k2), name, types=types
    )


@pytest.mark.parametrize("case", list(BAD_K))
def test_tbptt_stream_bad_k(case: str) -> None:
    k1, k2, name, types = BAD_K[case]
    expect_error(lambda: F.TBPTTStream("gru", _params("gru"), None, k1, k2), name, types=types)


@pytest.mark.parametrize("cell", CELLS)
def test_tbptt_grads_huge_k_equals_k_T(cell: str) -> None:
    """k1, k2 beyond T (even beyond any buffer size) are the same as T: one full-BPTT update."""
    a = make_args(cell)
    dy = _rng().standard_normal((T, B, H)).astype(np.float32)
    want = F.tbptt_grads(cell, a["x"], None, _params(cell), dy, T, T)
    got = F.tbptt_grads(cell, a["x"], None, _params(cell), dy, 2**40, 2**62 + 8)
    assert len(got) == len(want) == 1
    for k in ("w_ih", "w_hh", "b_ih", "b_hh", *extra_names(cell)):
        assert np.array_equal(want[0][k], got[0][k]), k


def _bad_extra_params(cell: str) -> dict[str, tuple[dict[str, Any], str]]:
    """params dicts of ``cell`` with one extra parameter missing, misshaped, float64, int or NaN-free
    but not an array; each names the parameter (or ``params`` for the missing one)."""
    out: dict[str, tuple[dict[str, Any], str]] = {}
    for name, per_unit in get_cell(cell).extra_params:
        p = _params(cell)
        out[f"{name}_missing"] = ({k: v for k, v in p.items() if k != name}, name)
        out[f"{name}_shape"] = ({**p, name: np.zeros(per_unit * H + 1, np.float32)}, name)
        out[f"{name}_float64"] = ({**p, name: p[name].astype(np.float64)}, name)
        out[f"{name}_int"] = ({**p, name: np.zeros(per_unit * H, np.int32)}, name)
        out[f"{name}_none"] = ({**p, name: None}, name)
    return out


EXTRA_PARAM_CASES = [(c, k) for c in EXTRA_CELLS for k in _bad_extra_params(c)]


@pytest.mark.parametrize(("cell", "case"), EXTRA_PARAM_CASES)
def test_tbptt_bad_extra_params(cell: str, case: str) -> None:
    """tbptt_grads, TBPTTStream and TBPTTStream.set_params refuse a bad extra parameter by name."""
    params, name = _bad_extra_params(cell)[case]
    x = make_args(cell)["x"]
    names = (name, "params")
    expect_error(lambda: F.tbptt_grads(cell, x, None, params, None, 2, 2), *names)
    expect_error(lambda: F.TBPTTStream(cell, params, None, 2, 2), *names)
    stream = F.TBPTTStream(cell, _params(cell), None, 2, 2)
    expect_error(lambda: stream.set_params(params), *names)


BAD_TBPTT_ARGS: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "cell": (lambda a: F.tbptt_grads("cnn", a["x"], None, _params("gru"), None, 1, 1), "cell"),
    "params_list": (lambda a: F.tbptt_grads("gru", a["x"], None, [1, 2], None, 1, 1), "params"),
    "params_missing": (
        lambda a: F.tbptt_grads("gru", a["x"], None, {"w_ih": a["w_ih"]}, None, 1, 1),
        "params",
    ),
    "params_extra": (
        lambda a: F.tbptt_grads("gru", a["x"], None, {**_params("gru"), "w_x": 1}, None, 1, 1),
        "params",
    ),
    "state_tuple_for_gru": (
        lambda a: F.tbptt_grads("gru", a["x"], (a["h0"], a["h0"]), _params("gru"), None, 1, 1),
        "state0",
    ),
    "state_array_for_lstm": (
        lambda a: F.tbptt_grads("lstm", a["x"], a["h0"], _params("lstm"), None, 1, 1),
        "state0",
    ),
    "dy_shape": (
        lambda a: F.tbptt_grads(
            "gru", a["x"], None, _params("gru"), np.zeros((T, B, 1), np.float32), 1, 1
        ),
        "dy",
    ),
    "nonlinearity": (
        lambda a: F.tbptt_grads(
            "rnn", a["x"], None, _params("rnn"), None, 1, 1, nonlinearity="elu"
        ),
        "nonlinearity",
    ),
}


@pytest.mark.parametrize("case", list(BAD_TBPTT_ARGS))
def test_tbptt_grads_bad_arguments(case: str) -> None:
    fn, name = BAD_TBPTT_ARGS[case]
    a = make_args("gru")
    expect_error(lambda: fn(a), name)


def _stream(cell: str = "gru", k1: int = 2, k2: int = 3) -> F.TBPTTStream:
    return F.TBPTTStream(cell, _params(cell), None, k1, k2)


BAD_STREAM_CALLS: dict[str, tuple[Callable[[F.TBPTTStream], Any], str]] = {
    "backward_before_forward": (lambda s: s.backward(np.zeros((1, B, H), np.float32)), "backward"),
    "chunk_too_long": (lambda s: s.forward(np.zeros((3, B, I), np.float32)), "x"),
    "chunk_empty": (lambda s: s.forward(np.zeros((0, B, I), np.float32)), "x"),
    "chunk_2d": (lambda s: s.forward(np.zeros((B, I), np.float32)), "x"),
    "chunk_wrong_I": (lambda s: s.forward(np.zeros((1, B, I + 1), np.float32)), "x"),
    "chunk_float64": (lambda s: s.forward(np.zeros((1, B, I), np.float64)), "x"),
    "chunk_int": (lambda s: s.forward(np.zeros((1, B, I), np.int32)), "x"),
    "chunk_B_changes": (
        lambda s: (
            s.forward(np.zeros((1, B, I), np.float32)),
            s.forward(np.zeros((1, B + 1, I), np.float32)),
        ),
        "x",
    ),
    "dy_window_shape": (
        lambda s: (
            s.forward(np.zeros((2, B, I), np.float32)),
            s.backward(np.zeros((1, B, H), np.float32)),
        ),
        "dy_window",
    ),
    "dy_window_dtype": (
        lambda s: (
            s.forward(np.zeros((2, B, I), np.float32)),
            s.backward(np.zeros((2, B, H), np.float64)),
        ),
        "dy_window",
    ),
    "set_params_shape": (
        lambda s: s.set_params({**_params("gru"), "w_hh": np.zeros((3 * H, H + 1), np.float32)}),
        "w_hh",
    ),
    "set_params_drop_bias": (
        lambda s: s.set_params({**_params("gru"), "b_ih": None, "b_hh": None}),
        "b_ih",
    ),
    "set_params_dtype": (
        lambda s: s.set_params({k: v.astype(np.float64) for k, v in _params("gru").items()}),
        "w_ih",
    ),
    # the setter names the component of the state that is wrong ("h" / "c")
    "state_shape": (lambda s: setattr(s, "state", np.zeros((B, H + 1), np.float32)), "h"),
    "state_tuple_for_gru": (
        lambda s: setattr(s, "state", (np.zeros((B, H), np.float32),) * 2),
        "state",
    ),
    "reset_mask_shape": (
        lambda s: (s.forward(np.zeros((1, B, I), np.float32)), s.reset_state(np.ones(B + 1, bool))),
        "mask_or_indices",
    ),
    "reset_index_out_of_range": (
        lambda s: (s.forward(np.zeros((1, B, I), np.float32)), s.reset_state(np.array([B]))),
        "mask_or_indices",
    ),
    "reset_float": (
        lambda s: (s.forward(np.zeros((1, B, I), np.float32)), s.reset_state(np.array([0.5]))),
        "mask_or_indices",
    ),
}


@pytest.mark.parametrize("case", list(BAD_STREAM_CALLS))
def test_tbptt_stream_misuse(case: str) -> None:
    fn, name = BAD_STREAM_CALLS[case]
    expect_error(lambda: fn(_stream()), name)


def test_tbptt_stream_absurd_k2_is_memory_error_not_overflow() -> None:
    # 2*k2*B elements wrap around int64 to a small positive number in the core's buffer sizing; the
    # stream then writes past its buffers (found by this suite: segfault). Must be refused up front.
    s = F.TBPTTStream("rnn", _params("rnn"), None, 1, 2**62 + 8)
    expect_error(lambda: s.forward(np.zeros((1, 2, I), np.float32)), "k2", types=(MemoryError,))


# ==================================================================================================
# NaN / Inf: propagate, per sequence (documented in docs/RELIABILITY.md)
# ==================================================================================================


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("cell", CELLS)
def test_nonfinite_input_propagates_like_reference(cell: str, value: float) -> None:
    a = make_args(cell, np.float64)
    a["x"][1, 1, 0] = value
    got = forward(cell, a)
    ref = forward_reference(cell, a)
    for k, (w, g) in enumerate(zip(ref, got[: len(ref)])):
        assert np.array_equal(np.isnan(w), np.isnan(g)), (
            f"NaN pattern of output {k} differs from reference"
        )
        fin = np.isfinite(w)
        assert np.array_equal(fin, np.isfinite(g)), f"finite pattern of output {k} differs"
        assert np.allclose(w[fin], g[fin], rtol=1e-10, atol=1e-12), f"output {k}"
    # sequences 0 and 2 never see the bad value
    assert np.all(np.isfinite(got[0][:, [0, 2]])), "a non-finite input leaked into another sequence"


def forward_reference(cell: str, a: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """The float64 oracle's (y, h_n[, c_n]) on the same arguments. NumPy's warnings are silenced:
    with Inf in the input the oracle computes Inf - Inf (a layer norm's mean) on purpose."""
    with np.errstate(invalid="ignore", over="ignore"):
        out = call_forward(R, cell, a, training=False)
    return tuple(o for o in out if isinstance(o, np.ndarray))


@pytest.mark.parametrize("cell", CELLS)
def test_nan_weight_poisons_everything(cell: str) -> None:
    a = make_args(cell)
    a["w_hh"][0, 0] = np.nan
    y = forward(cell, a)[0]
    assert np.isnan(y[1:]).any() and not np.isinf(y).any()


@pytest.mark.parametrize(("cell", "arg"), EXTRA_ARG)
def test_nan_extra_param_propagates_like_reference(cell: str, arg: str) -> None:
    """A NaN in an extra parameter (like one in a weight: documented as propagating) gives the
    float64 oracle's NaN pattern, finite values equal, and no Inf from nowhere; backward runs."""
    a = make_args(cell, np.float64)
    a[arg][1] = np.nan
    got = forward(cell, a)
    ref = forward_reference(cell, a)
    assert np.isnan(got[0]).any(), f"a NaN in {arg} did not reach y"
    for k, (w, g) in enumerate(zip(ref, got[: len(ref)])):
        assert np.array_equal(np.isnan(w), np.isnan(g)), f"NaN pattern of output {k} ({arg})"
        fin = np.isfinite(w)
        assert np.allclose(w[fin], g[fin], rtol=1e-10, atol=1e-12), f"output {k} ({arg})"
    grads = getattr(F, f"{cell}_backward")(got[-1], np.ones_like(got[0]))
    assert np.isnan(grads[arg]).any() and not np.isinf(grads[arg]).any()


# ==================================================================================================
# modules
# ==================================================================================================

# the module class of every registered cell that has one (RNN, LSTM, GRU, PeepholeLSTM, ...)
MODULES = {
    RNNBase._classes[c].__name__: RNNBase._classes[c] for c in CELLS if c in RNNBase._classes
}


def _has_c(kind: str) -> bool:
    return MODULES[kind]._spec.has_cell_state


BAD_CTOR: dict[str, tuple[dict[str, Any], str]] = {
    "hidden_zero": ({"hidden_size": 0}, "hidden_size"),
    "hidden_negative": ({"hidden_size": -3}, "hidden_size"),
    "hidden_float": ({"hidden_size": 3.5}, "hidden_size"),
    "hidden_bool": ({"hidden_size": True}, "hidden_size"),
    "hidden_str": ({"hidden_size": "4"}, "hidden_size"),
    "input_zero": ({"input_size": 0}, "input_size"),
    "layers_zero": ({"num_layers": 0}, "num_layers"),
    "layers_float": ({"num_layers": 1.0}, "num_layers"),
    "dropout_one": ({"dropout": 1.0}, "dropout"),
    "dropout_negative": ({"dropout": -0.1}, "dropout"),
    "dropout_nan": ({"dropout": float("nan")}, "dropout"),
    "dtype_float16": ({"dtype": np.float16}, "dtype"),
    "dtype_int": ({"dtype": np.int32}, "dtype"),
    "dtype_complex": ({"dtype": np.complex64}, "dtype"),
    "init": ({"init": "xavier-ish"}, "init"),
    "bias_str": ({"bias": "no"}, "bias"),
    "bidirectional_int": ({"bidirectional": 2}, "bidirectional"),
}


@pytest.mark.parametrize("case", list(BAD_CTOR))
@pytest.mark.parametrize("kind", list(MODULES))
def test_module_constructor(kind: str, case: str) -> None:
    kw = {"input_size": I, "hidden_size": H}
    over, name = BAD_CTOR[case]
    kw.update(over)
    expect_error(lambda: MODULES[kind](**kw), name)


def test_rnn_bad_nonlinearity() -> None:
    expect_error(lambda: rf.RNN(I, H, nonlinearity="gelu"), "nonlinearity")


def _module(kind: str, **kw: Any) -> Any:
    return MODULES[kind](I, H, num_layers=2, seed=0, **kw)


def _x(dtype: Any = np.float32) -> np.ndarray:
    return _rng().standard_normal((T, B, I)).astype(dtype)


BAD_MODULE_X: dict[str, tuple[Any, str, tuple[type, ...]]] = {
    "ndim2": (np.zeros((T, I), np.float32), "x", (ValueError,)),
    "ndim4": (np.zeros((T, B, I, 1), np.float32), "x", (ValueError,)),
    "input_size": (np.zeros((T, B, I + 1), np.float32), "x", (ValueError,)),
    "T0": (np.zeros((0, B, I), np.float32), "x", (ValueError,)),
    "B0": (np.zeros((T, 0, I), np.float32), "x", (ValueError,)),
    "int": (np.zeros((T, B, I), np.int64), "x", (TypeError,)),
    "bool": (np.zeros((T, B, I), np.bool_), "x", (TypeError,)),
    "complex": (np.zeros((T, B, I), np.complex64), "x", (TypeError,)),
    "object": (np.zeros((T, B, I), object), "x", (TypeError,)),
    "str": ("x", "x", (TypeError, ValueError)),
}


@pytest.mark.parametrize("case", list(BAD_MODULE_X))
@pytest.mark.parametrize("kind", list(MODULES))
def test_module_bad_input(kind: str, case: str) -> None:
    value, name, types = BAD_MODULE_X[case]
    expect_error(lambda: _module(kind)(value), name, types=types)


@pytest.mark.parametrize("case", ["negative", "greater_than_T", "too_few", "float", "bool", "2d"])
@pytest.mark.parametrize("kind", list(MODULES))
def test_module_bad_lengths(kind: str, case: str) -> None:
    value, types = BAD_LENGTHS[case]
    expect_error(lambda: _module(kind)(_x(), lengths=value), "lengths", types=types)


def _bad_hx(kind: str) -> dict[str, Any]:
    z = np.zeros((2, B, H), np.float32)
    c = _has_c(kind)
    cases: dict[str, Any] = {
        "layers_mismatch": np.zeros((1, B, H), np.float32) if not c else (z[:1], z[:1]),
        "batch_mismatch": np.zeros((2, B + 1, H), np.float32) if not c else (z[:, :1], z[:, :1]),
        "hidden_mismatch": np.zeros((2, B, H + 1), np.float32) if not c else (z[..., :1], z),
        "int": np.zeros((2, B, H), np.int64) if not c else (z.astype(int), z),
        "wrong_container": (z, z) if not c else z,
        "str": "hx",
    }
    return cases


HX_CASES = [(k, c) for k in MODULES for c in _bad_hx(k)]


@pytest.mark.parametrize(("kind", "case"), HX_CASES)
def test_module_bad_hx(kind: str, case: str) -> None:
    hx = _bad_hx(kind)[case]
    expect_error(lambda: _module(kind)(_x(), hx=hx), "hx")


@pytest.mark.parametrize(
    "how", ["fortran", "negative_stride", "strided_view", "read_only", "byte_swapped"]
)
@pytest.mark.parametrize("kind", list(MODULES))
def test_module_layouts_match_contiguous(kind: str, how: str) -> None:
    x = _x()
    m1, m2 = _module(kind), _module(kind)
    y1, _ = m1(x)
    if how == "byte_swapped":  # rejecting a non-native byte order is allowed; a wrong result is not
        try:
            y2, _ = m2(_relayout(x, how))
        except TypeError as exc:
            assert "x" in str(exc)
            return
    else:
        y2, _ = m2(_relayout(x, how))
    assert np.array_equal(y1, y2), f"{how}: max err {np.max(np.abs(y1 - y2))}"
    g = _rng().standard_normal(y1.shape).astype(np.float32)
    dx1, dx2 = m1.backward(g), m2.backward(_relayout(g, how))
    assert np.array_equal(dx1, dx2)
    for k, v in m1.grads.items():
        assert np.array_equal(v, m2.grads[k]), k


MODULE_MISUSE: dict[str, Callable[[Any], Any]] = {
    "backward_before_forward": lambda m: m.backward(np.zeros((T, B, H), np.float32)),
    "backward_twice": lambda m: (
        m(_x()),
        m.backward(np.zeros((T, B, H), np.float32)),
        m.backward(np.zeros((T, B, H), np.float32)),
    ),
    "backward_after_eval_forward": lambda m: (
        m.eval(),
        m(_x()),
        m.backward(np.zeros((T, B, H), np.float32)),
    ),
    "grad_shape": lambda m: (m(_x()), m.backward(np.zeros((T, B, H + 1), np.float32))),
    "grad_int": lambda m: (m(_x()), m.backward(np.zeros((T, B, H), np.int64))),
    "grad_complex": lambda m: (m(_x()), m.backward(np.zeros((T, B, H), np.complex64))),
    "grad_state_shape": lambda m: (
        m(_x()),
        m.backward(np.zeros((T, B, H), np.float32), np.zeros((3, B, H), np.float32)),
    ),
    "step_3d": lambda m: m.step(_x()),
    "step_wrong_I": lambda m: m.step(np.zeros((B, I + 1), np.float32)),
}

MISUSE_NAMES = {
    "backward_before_forward": ("backward",),
    "backward_twice": ("backward",),
    "backward_after_eval_forward": ("backward",),
    "grad_shape": ("grad_output",),
    "grad_int": ("grad_output",),
    "grad_complex": ("grad_output",),
    "grad_state_shape": ("grad_state",),
    "step_3d": ("x_t",),
    "step_wrong_I": ("x_t",),
}


@pytest.mark.parametrize("case", list(MODULE_MISUSE))
@pytest.mark.parametrize("kind", list(MODULES))
def test_module_misuse(kind: str, case: str) -> None:
    expect_error(lambda: MODULE_MISUSE[case](_module(kind)), *MISUSE_NAMES[case])


def _bad_state_dicts(m: Any) -> dict[str, tuple[Any, str, tuple[type, ...]]]:
    sd = m.state_dict()
    first = next(iter(sd))
    return {
        "missing_key": ({k: v for k, v in sd.items() if k != first}, first, (ValueError,)),
        "extra_key": ({**sd, "weight_ih_l9": sd[first]}, "weight_ih_l9", (ValueError,)),
        "misshaped": ({**sd, first: sd[first][:-1]}, first, (ValueError,)),
        "transposed": ({**sd, first: sd[first].T.copy()}, first, (ValueError,)),
        "complex": ({**sd, first: sd[first].astype(np.complex64)}, first, (TypeError,)),
        "object": ({**sd, first: sd[first].astype(object)}, first, (TypeError,)),
        "string_value": ({**sd, first: "weights"}, first, (TypeError, ValueError)),
        "not_a_dict": ([1, 2, 3], "state_dict", (TypeError,)),
        "none": (None, "state_dict", (TypeError,)),
    }


SD_CASES = [
    "missing_key",
    "extra_key",
    "misshaped",
    "transposed",
    "complex",
    "object",
    "string_value",
    "not_a_dict",
    "none",
]


def _bad_extra_state_dicts(m: Any) -> dict[str, tuple[Any, str, tuple[type, ...]]]:
    """state_dicts with the first extra parameter (weight_peep_l0, ...) missing, misshaped, complex."""
    sd = m.state_dict()
    key = next(k for k in sd if not k.startswith(("weight_ih", "weight_hh", "bias_")))
    return {
        "extra_missing": ({k: v for k, v in sd.items() if k != key}, key, (ValueError,)),
        "extra_misshaped": ({**sd, key: sd[key][:-1]}, key, (ValueError,)),
        "extra_2d": ({**sd, key: sd[key][None]}, key, (ValueError,)),
        "extra_complex": ({**sd, key: sd[key].astype(np.complex64)}, key, (TypeError,)),
    }


EXTRA_SD_CASES = [
    (kind, case)
    for kind in MODULES
    if MODULES[kind]._spec.extra_params
    for case in ("extra_missing", "extra_misshaped", "extra_2d", "extra_complex")
]


@pytest.mark.parametrize(("kind", "case"), EXTRA_SD_CASES)
def test_load_state_dict_hostile_extra_params(kind: str, case: str) -> None:
    m = _module(kind)
    before = {k: v.copy() for k, v in m.state_dict().items()}
    sd, name, types = _bad_extra_state_dicts(m)[case]
    expect_error(lambda: m.load_state_dict(sd), name, types=types)
    for k, v in before.items():
        assert np.array_equal(v, m.state_dict()[k]), f"a rejected load_state_dict modified {k}"


@pytest.mark.parametrize("case", SD_CASES)
@pytest.mark.parametrize("kind", [*MODULES, "SequenceModel", "Linear"])
def test_load_state_dict_hostile(kind: str, case: str) -> None:
    if kind == "SequenceModel":
        m = rf.build_model("lstm", I, H, 2, mode="many_to_one", seed=0)
    elif kind == "Linear":
        m = rf.Linear(I, H, seed=0)
    else:
        m = _module(kind)
    before = {k: v.copy() for k, v in m.state_dict().items()}
    sd, name, types = _bad_state_dicts(m)[case]
    expect_error(lambda: m.load_state_dict(sd), name, types=types)
    after = m.state_dict()
    for k, v in before.items():
        assert np.array_equal(v, after[k]), f"a rejected load_state_dict modified {k}"


BAD_LINEAR: dict[str, tuple[Callable[[Any], Any], str]] = {
    "in_features": (lambda lin: lin(np.zeros((2, I + 1), np.float32)), "x"),
    "int": (lambda lin: lin(np.zeros((2, I), np.int64)), "x"),
    "complex": (lambda lin: lin(np.zeros((2, I), np.complex64)), "x"),
    "backward_before_forward": (lambda lin: lin.backward(np.zeros((2, H), np.float32)), "backward"),
    "grad_shape": (
        lambda lin: (lin(np.zeros((2, I), np.float32)), lin.backward(np.zeros((2, H + 1)))),
        "grad",
    ),
    "ctor_zero": (lambda lin: rf.Linear(0, 3), "in_features"),
    "ctor_float": (lambda lin: rf.Linear(I, 2.5), "out_features"),
}


@pytest.mark.parametrize("case", list(BAD_LINEAR))
def test_linear_hostile(case: str) -> None:
    fn, name = BAD_LINEAR[case]
    expect_error(lambda: fn(rf.Linear(I, H, seed=0)), name)


@pytest.mark.parametrize(
    ("ids", "types"),
    [
        (np.array([[10]]), (ValueError,)),
        (np.array([[-1]]), (ValueError,)),
        (np.array([[1.0]]), (TypeError,)),
        (np.array([[True]]), (TypeError,)),
        (np.array([[2**40]]), (ValueError,)),
        (np.array([["a"]]), (TypeError,)),
    ],
    ids=["too_big", "negative", "float", "bool", "huge", "str"],
)
def test_embedding_hostile_ids(ids: Any, types: tuple[type, ...]) -> None:
    expect_error(lambda: rf.Embedding(10, 3, seed=0)(ids), "ids", types=types)


BAD_SEQMODEL: dict[str, tuple[Callable[[], Any], str]] = {
    "mode": (lambda: rf.build_model("lstm", I, H, 2, mode="many_to_few"), "mode"),
    "cell": (lambda: rf.build_model("transformer", I, H, 2, mode="many_to_one"), "cell"),
    "output_size": (lambda: rf.build_model("gru", I, H, 0, mode="many_to_one"), "output_size"),
    "backward_before_forward": (
        lambda: rf.build_model("gru", I, H, 2, mode="many_to_one", seed=0).backward(
            np.zeros((B, 2), np.float32)
        ),
        "backward",
    ),
    "dpred_shape": (
        lambda: _fwd_bwd(
            rf.build_model("gru", I, H, 2, mode="many_to_one", seed=0), np.zeros((B, 3), np.float32)
        ),
        "grad",
    ),
    "generate_steps": (
        lambda: rf.build_model("gru", I, H, I, mode="one_to_many", seed=0).generate(
            np.zeros((B, I), np.float32), -1
        ),
        "steps",
    ),
    "generate_temperature": (
        lambda: rf.build_model("gru", I, H, I, mode="one_to_many", seed=0).generate(
            np.zeros((B, I), np.float32), 3, temperature=0.0
        ),
        "temperature",
    ),
    "stream_k1_gt_k2": (
        lambda: rf.build_model("gru", I, H, 2, mode="many_to_many", seed=0).stream_begin(B, 3, 2),
        "k2",
    ),
    "stream_forward_without_begin": (
        lambda: rf.build_model("gru", I, H, 2, mode="many_to_many", seed=0).stream_forward(_x()),
        "stream",
    ),
}


def _fwd_bwd(m: Any, g: Any) -> Any:
    m(_x())
    return m.backward(g)


@pytest.mark.parametrize("case", list(BAD_SEQMODEL))
def test_sequence_model_hostile(case: str) -> None:
    fn, name = BAD_SEQMODEL[case]
    expect_error(fn, name)


# ==================================================================================================
# losses
# ==================================================================================================

LOSSES = {"MSELoss": rf.MSELoss, "BCEWithLogitsLoss": rf.BCEWithLogitsLoss}
_P = np.zeros((3, 4), np.float32)

BAD_LOSS: dict[str, tuple[Any, Any, Any, str, tuple[type, ...]]] = {
    "target_shape": (_P, _P[:, :3], None, "target", (ValueError,)),
    "pred_int": (_P.astype(np.int64), _P, None, "pred", (TypeError,)),
    "pred_complex": (_P.astype(np.complex64), _P, None, "pred", (TypeError,)),
    "pred_object": (_P.astype(object), _P, None, "pred", (TypeError,)),
    "pred_float16": (_P.astype(np.float16), _P, None, "pred", (TypeError,)),
    "target_complex": (_P, _P.astype(np.complex64), None, "target", (TypeError,)),
    "mask_shape": (_P, _P, np.ones(5, bool), "mask", (ValueError,)),
    "mask_complex": (_P, _P, np.ones(3, np.complex64), "mask", (TypeError, ValueError)),
}


@pytest.mark.parametrize("case", list(BAD_LOSS))
@pytest.mark.parametrize("loss", list(LOSSES))
def test_elementwise_loss_hostile(loss: str, case: str) -> None:
    pred, target, mask, name, types = BAD_LOSS[case]
    expect_error(lambda: LOSSES[loss]()(pred, target, mask), name, types=types)


@pytest.mark.parametrize(
    ("target", "types"),
    [
        (np.array([0, 1, 4]), (ValueError,)),
        (np.array([0, 1, -2]), (ValueError,)),
        (np.array([0.0, 1.0, 2.0]), (TypeError,)),
        (np.array([0, 1]), (ValueError,)),
        (np.array([[0, 1, 2]]), (ValueError,)),
        (np.array([0, 1, 2], dtype=object), (TypeError,)),
    ],
    ids=["out_of_range", "negative", "float", "count", "ndim", "object"],
)
def test_cross_entropy_hostile_target(target: Any, types: tuple[type, ...]) -> None:
    expect_error(lambda: rf.CrossEntropyLoss()(_P, target), "target", types=types)


@pytest.mark.parametrize(
    "ctor", [lambda: rf.MSELoss(reduction="avg"), lambda: rf.CrossEntropyLoss(reduction=1)]
)
def test_loss_bad_reduction(ctor: Callable[[], Any]) -> None:
    expect_error(ctor, "reduction")


@pytest.mark.parametrize("loss", [rf.MSELoss(), rf.BCEWithLogitsLoss()])
def test_loss_nan_propagates(loss: Any) -> None:
    p = _P.copy()
    p[0, 0] = np.nan
    value, grad = loss(p, _P)
    assert np.isnan(value) and np.isnan(grad[0, 0]) and np.isfinite(grad[1:]).all()


# ==================================================================================================
# optimizers, clipping, schedulers
# ==================================================================================================

OPTIMIZERS = {"SGD": rf.SGD, "Adam": rf.Adam, "AdamW": rf.AdamW, "RMSprop": rf.RMSprop}


def _p() -> dict[str, np.ndarray]:
    return {"w": np.zeros((3, 3), np.float32), "b": np.zeros(3, np.float32)}


BAD_OPT_CTOR: dict[str, tuple[Callable[[Any], Any], str]] = {
    "lr_negative": (lambda opt_cls: opt_cls(_p(), lr=-1.0), "lr"),
    "lr_nan": (lambda opt_cls: opt_cls(_p(), lr=float("nan")), "lr"),
    "lr_inf": (lambda opt_cls: opt_cls(_p(), lr=float("inf")), "lr"),
    "lr_str": (lambda opt_cls: opt_cls(_p(), lr="0.1"), "lr"),
    "params_list": (lambda opt_cls: opt_cls([np.zeros(3)], lr=0.1), "params"),
    "params_int_array": (lambda opt_cls: opt_cls({"w": np.zeros(3, np.int64)}, lr=0.1), "params"),
    "params_read_only": (
        lambda opt_cls: opt_cls({"w": np.broadcast_to(np.zeros(1, np.float32), (3,))}, lr=0.1),
        "params",
    ),
    "params_not_array": (lambda opt_cls: opt_cls({"w": [1.0, 2.0]}, lr=0.1), "params"),
}


@pytest.mark.parametrize("case", list(BAD_OPT_CTOR))
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_optimizer_constructor(opt: str, case: str) -> None:
    fn, name = BAD_OPT_CTOR[case]
    expect_error(lambda: fn(OPTIMIZERS[opt]), name)


BAD_STEP: dict[str, tuple[Any, str]] = {
    "unknown_name": ({"v": np.zeros(3, np.float32)}, "grads"),
    "shape": ({"w": np.zeros((3, 4), np.float32)}, "grads"),
    "dtype_float64": ({"w": np.zeros((3, 3), np.float64)}, "grads"),
    "dtype_int": ({"w": np.zeros((3, 3), np.int64)}, "grads"),
    "complex": ({"w": np.zeros((3, 3), np.complex64)}, "grads"),
    "not_a_dict": ([np.zeros((3, 3), np.float32)], "grads"),
}


@pytest.mark.parametrize("case", list(BAD_STEP))
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_optimizer_step_hostile(opt: str, case: str) -> None:
    params = _p()
    o = OPTIMIZERS[opt](params, lr=0.1)
    grads, name = BAD_STEP[case]
    expect_error(lambda: o.step(grads), name)
    assert not params["w"].any(), "a rejected step modified the parameters"


@pytest.mark.parametrize("case", ["missing_type", "wrong_type", "list", "bad_state_shape"])
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_optimizer_load_state_dict_hostile(opt: str, case: str) -> None:
    o = OPTIMIZERS[opt](_p(), lr=0.1)
    o.step({"w": np.ones((3, 3), np.float32), "b": np.ones(3, np.float32)})
    sd = o.state_dict()
    other = "Adam" if opt != "Adam" else "SGD"
    bad: Any = {
        "missing_type": {k: v for k, v in sd.items() if k != "type"},
        "wrong_type": {**sd, "type": other},
        "list": [sd],
        "bad_state_shape": _misshape_state(sd),
    }[case]
    expect_error(lambda: o.load_state_dict(bad), "state_dict", "type", "state")


def _misshape_state(sd: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps({k: v for k, v in sd.items() if k != "state"}))
    state = {}
    for name, entries in sd["state"].items():
        state[name] = {
            k: (np.zeros((7, 7), np.float32) if isinstance(v, np.ndarray) else v)
            for k, v in entries.items()
        }
    out["state"] = state
    if not any(isinstance(v, np.ndarray) for e in sd["state"].values() for v in e.values()):
        out["state"] = {"w": {"momentum_buffer": np.zeros((7, 7), np.float32)}}
    return out


CLIP: dict[str, tuple[Callable[[], Any], str]] = {
    "norm_negative": (lambda: rf.clip_grad_norm_({"w": np.ones(3)}, -1.0), "max_norm"),
    "norm_nan": (lambda: rf.clip_grad_norm_({"w": np.ones(3)}, float("nan")), "max_norm"),
    "norm_type_str": (
        lambda: rf.clip_grad_norm_({"w": np.ones(3)}, 1.0, norm_type="l2"),
        "norm_type",
    ),
    "value_negative": (lambda: rf.clip_grad_value_({"w": np.ones(3)}, -1.0), "clip_value"),
    "grads_int": (lambda: rf.clip_grad_norm_({"w": np.ones(3, np.int64)}, 1.0), "grads"),
    "grads_read_only": (
        lambda: rf.clip_grad_norm_({"w": np.broadcast_to(np.ones(1), (3,))}, 0.1),
        "grads",
    ),
    "grads_list": (lambda: rf.clip_grad_norm_([np.ones(3)], 1.0), "grads"),
}


@pytest.mark.parametrize("case", list(CLIP))
def test_clipping_hostile(case: str) -> None:
    fn, name = CLIP[case]
    expect_error(fn, name)


SCHED: dict[str, tuple[Callable[[Any], Any], str]] = {
    "steplr_zero": (lambda o: rf.StepLR(o, 0), "step_size"),
    "steplr_float": (lambda o: rf.StepLR(o, 1.5), "step_size"),
    "exp_negative": (lambda o: rf.ExponentialLR(o, -1.0), "gamma"),
    "cosine_zero": (lambda o: rf.CosineAnnealingLR(o, 0), "T_max"),
    "warmup_negative": (lambda o: rf.LinearWarmup(o, -1), "warmup"),
    "plateau_mode": (lambda o: rf.ReduceLROnPlateau(o, mode="sideways"), "mode"),
    "not_an_optimizer": (lambda o: rf.StepLR(object(), 1), "optimizer"),
}


@pytest.mark.parametrize("case", list(SCHED))
def test_scheduler_hostile(case: str) -> None:
    fn, name = SCHED[case]
    expect_error(lambda: fn(rf.SGD(_p(), lr=0.1)), name)


# ==================================================================================================
# fit / evaluate
# ==================================================================================================


def _fit_setup(mode: str = "many_to_one") -> tuple[Any, Any, np.ndarray, np.ndarray]:
    r = _rng()
    x = r.standard_normal((6, 8, 3)).astype(np.float32)
    y = r.standard_normal((8, 2) if mode == "many_to_one" else (6, 8, 2)).astype(np.float32)
    m = rf.build_model("gru", 3, 4, 2, mode=mode, seed=0)
    return m, rf.SGD(m.parameters(), lr=0.01), x, y


def _fit(mode: str = "many_to_one", data: Any = None, **kw: Any) -> Any:
    m, o, x, y = _fit_setup(mode)
    args = {"epochs": 1, "batch_size": 4, "progress": False, **kw}
    return rf.fit(m, (x, y) if data is None else data(x, y), rf.MSELoss(), o, **args)


BAD_FIT: dict[str, tuple[dict[str, Any], str, tuple[type, ...]]] = {
    "epochs_negative": ({"epochs": -1}, "epochs", ACCEPTED),
    "epochs_float": ({"epochs": 1.5}, "epochs", ACCEPTED),
    "batch_size_zero": ({"batch_size": 0}, "batch_size", ACCEPTED),
    "batch_size_str": ({"batch_size": "4"}, "batch_size", ACCEPTED),
    "bptt_k1_gt_k2": ({"bptt": (3, 2), "mode": "many_to_many"}, "bptt", ACCEPTED),
    "bptt_zero": ({"bptt": (0, 2), "mode": "many_to_many"}, "bptt", ACCEPTED),
    "bptt_negative": ({"bptt": (-1, 2), "mode": "many_to_many"}, "bptt", ACCEPTED),
    "bptt_float": ({"bptt": (1.0, 2), "mode": "many_to_many"}, "bptt", ACCEPTED),
    "bptt_triple": ({"bptt": (1, 2, 3), "mode": "many_to_many"}, "bptt", ACCEPTED),
    "bptt_int": ({"bptt": 3, "mode": "many_to_many"}, "bptt", ACCEPTED),
    "clip_norm_negative": ({"clip_norm": -1.0}, "clip_norm", ACCEPTED),
    "clip_value_nan": ({"clip_value": float("nan")}, "clip_value", ACCEPTED),
    "on_nonfinite": ({"on_nonfinite": "ignore"}, "on_nonfinite", ACCEPTED),
    "checkpoint_every_zero": (
        {"checkpoint_every": 0, "checkpoint": "unused.npz"},
        "checkpoint_every",
        ACCEPTED,
    ),
    "resume_without_checkpoint": ({"resume": True}, "resume", ACCEPTED),
    "seed_str": ({"seed": "abc"}, "seed", ACCEPTED),
    "metrics_unknown": ({"metrics": ("f1-ish",)}, "metrics", ACCEPTED),
    # an int early_stopping is the patience; naming either is fine
    "early_stopping_negative": ({"early_stopping": -1}, "patience", ACCEPTED),
    "x_y_count": ({"data": lambda x, y: (x, y[:5])}, "y", ACCEPTED),
    "x_int": ({"data": lambda x, y: (x.astype(np.int64), y)}, "x", ACCEPTED),
    "y_shape": ({"data": lambda x, y: (x, y[:, :1])}, "target", ACCEPTED),
    "lengths_negative": ({"data": lambda x, y: (x, y, np.full(8, -1))}, "lengths", ACCEPTED),
    "lengths_gt_T": ({"data": lambda x, y: (x, y, np.full(8, 7))}, "lengths", ACCEPTED),
    "lengths_float": ({"data": lambda x, y: (x, y, np.full(8, 2.0))}, "lengths", ACCEPTED),
    "lengths_count": ({"data": lambda x, y: (x, y, np.full(7, 2))}, "lengths", ACCEPTED),
    "zero_sequences": ({"data": lambda x, y: (x[:, :0], y[:0])}, "train_data", ACCEPTED),
    "data_not_tuple": ({"data": lambda x, y: [x]}, "train_data", ACCEPTED),
}


@pytest.mark.parametrize("case", list(BAD_FIT))
def test_fit_hostile(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    kw, name, types = BAD_FIT[case]
    kw = dict(kw)
    mode = kw.pop("mode", "many_to_one")
    expect_error(lambda: _fit(mode, **kw), name, types=types)


class _Recorder(rf.Callback):
    """Records the hooks fit calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        self.calls.append("on_train_begin")

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any]) -> None:
        self.calls.append("on_epoch_begin")

    def on_batch_end(self, step: int, logs: dict[str, Any]) -> None:
        self.calls.append("on_batch_end")


@pytest.mark.parametrize("stateful", [False, True], ids=["bptt", "stateful"])
@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_fit_refuses_streams_of_minimal_cells_before_any_work(
    cell: str, stateful: bool, tmp_path: Path
) -> None:
    """A minimal stack has no truncated-BPTT stream: fit(bptt=...) / fit(stateful=True) refuses it
    with its argument checks, before training starts (no callback, no checkpoint file, weights and
    optimizer untouched), not when the first epoch opens its first stream."""
    m = rf.build_model(cell, I, H, 2, mode="many_to_many", seed=0)
    opt = rf.SGD(m.parameters(), lr=0.1)
    before = {k: v.copy() for k, v in m.state_dict().items()}
    rec = _Recorder()
    ckpt = tmp_path / "run.npz"
    x = _rng().standard_normal((T, 8, I)).astype(np.float32)
    y = np.zeros((T, 8, 2), np.float32)
    msg = expect_error(
        lambda: rf.fit(
            m, (x, y), rf.MSELoss(), opt, epochs=2, batch_size=4, progress=False,
            bptt=None if stateful else (2, 4), stateful=stateful, callbacks=[rec], checkpoint=ckpt,
        ),
        "bptt/stateful",
        types=(ValueError,),
    )  # fmt: skip
    assert "fit needs a truncated-BPTT stream" in msg and f"cell {cell!r}" in msg, msg
    assert rec.calls == [], f"fit started training before refusing the cell: {rec.calls}"
    assert not ckpt.exists()
    assert opt.state_dict() == rf.SGD(m.parameters(), lr=0.1).state_dict()
    for k, v in before.items():
        assert np.array_equal(v, m.state_dict()[k]), f"a refused fit modified {k}"


@pytest.mark.parametrize(
    ("case", "name"),
    [
        ("batch_size_zero", "batch_size"),
        ("data_mismatch", "y"),
        ("model", "model"),
        ("loss", "loss"),
    ],
)
def test_evaluate_hostile(case: str, name: str) -> None:
    m, _, x, y = _fit_setup()
    call = {
        "batch_size_zero": lambda: rf.evaluate(m, (x, y), rf.MSELoss(), batch_size=0),
        "data_mismatch": lambda: rf.evaluate(m, (x, y[:3]), rf.MSELoss(), batch_size=4),
        "model": lambda: rf.evaluate(object(), (x, y), rf.MSELoss(), batch_size=4),
        "loss": lambda: rf.evaluate(m, (x, y), object(), batch_size=4),
    }[case]
    expect_error(call, name)


def test_fit_with_optimizer_of_another_model_is_rejected() -> None:
    """An optimizer built over a different model's parameters would train nothing silently."""
    m, _, x, y = _fit_setup()
    other = rf.build_model("gru", 3, 4, 2, mode="many_to_one", seed=0)
    opt = rf.SGD(other.parameters(), lr=0.1)
    expect_error(
        lambda: rf.fit(m, (x, y), rf.MSELoss(), opt, epochs=1, batch_size=4, progress=False),
        "optimizer",
    )


@pytest.mark.parametrize("where", ["x", "y"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_fit_nonfinite_data_raises_naming_step(where: str, value: float) -> None:
    def data(x: np.ndarray, y: np.ndarray) -> Any:
        (x if where == "x" else y)[..., 0] = value
        return x, y

    m, _, _, _ = _fit_setup()
    with pytest.raises(rf.NonFiniteError, match=r"step 0") as info:
        _fit(data=data)
    # +Inf in x can saturate tanh/sigmoid to a finite loss; then the gradient (0 * Inf) is NaN and
    # the error names the parameter instead of the loss.
    assert info.value.step == 0
    assert info.value.name == "loss" or info.value.name in m.parameters(), info.value.name
    assert info.value.name in str(info.value)


# ==================================================================================================
# save / load: hostile checkpoint files
# ==================================================================================================


@pytest.fixture(scope="module")
def good_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "good.npz"
    m = rf.build_model("lstm", 3, 4, 2, mode="many_to_one", seed=0)
    rf.save(path, m, rf.Adam(m.parameters(), lr=0.01), meta={"epoch": 1})
    return path


def _rewrite(
    src: Path,
    dst: Path,
    edit: Callable[[dict[str, bytes]], None],
    compression: int = zipfile.ZIP_STORED,
) -> Path:
    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    edit(members)
    with zipfile.ZipFile(dst, "w", compression=compression) as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    return dst


def _npy_bytes(a: np.ndarray) -> bytes:
    import io as _io

    buf = _io.BytesIO()
    np.save(buf, a, allow_pickle=True)
    return buf.getvalue()


def _edit_meta(fn: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, bytes]], None]:
    def edit(members: dict[str, bytes]) -> None:
        import io as _io

        raw = np.load(_io.BytesIO(members["__metadata__.npy"]))
        meta = json.loads(raw.tobytes().decode())
        fn(meta)
        members["__metadata__.npy"] = _npy_bytes(np.frombuffer(json.dumps(meta).encode(), np.uint8))

    return edit


def _first_model_key(members: dict[str, bytes]) -> str:
    return next(n for n in members if n.startswith("model/"))


def _set_version(v: Any) -> Callable[[dict[str, Any]], None]:
    return lambda m: m.__setitem__("version", v)


HOSTILE_FILES: dict[str, Callable[[Path, Path], Path]] = {
    "empty": lambda g, d: (d.write_bytes(b""), d)[1],
    "garbage": lambda g, d: (d.write_bytes(os.urandom(4096)), d)[1],
    "truncated_10": lambda g, d: (d.write_bytes(g.read_bytes()[:10]), d)[1],
    "truncated_half": lambda g, d: (d.write_bytes(g.read_bytes()[: len(g.read_bytes()) // 2]), d)[
        1
    ],
    "truncated_last_byte": lambda g, d: (d.write_bytes(g.read_bytes()[:-1]), d)[1],
    "flipped_bytes": lambda g, d: (d.write_bytes(_flip(g.read_bytes())), d)[1],
    "plain_npz": lambda g, d: (np.savez(d, a=np.zeros(3)), d)[1],
    "pickled_object_array": lambda g, d: _rewrite(
        g,
        d,
        lambda m: m.__setitem__(
            _first_model_key(m), _npy_bytes(np.array([{"evil": 1}], dtype=object))
        ),
    ),
    "newer_version": lambda g, d: _rewrite(g, d, _edit_meta(_set_version(99))),
    "version_zero": lambda g, d: _rewrite(g, d, _edit_meta(_set_version(0))),
    "version_string": lambda g, d: _rewrite(g, d, _edit_meta(_set_version("1"))),
    "wrong_format": lambda g, d: _rewrite(
        g, d, _edit_meta(lambda m: m.__setitem__("format", "torch"))
    ),
    "metadata_not_json": lambda g, d: _rewrite(
        g,
        d,
        lambda m: m.__setitem__(
            "__metadata__.npy", _npy_bytes(np.frombuffer(b"{not json", np.uint8))
        ),
    ),
    "metadata_float_array": lambda g, d: _rewrite(
        g, d, lambda m: m.__setitem__("__metadata__.npy", _npy_bytes(np.zeros(3)))
    ),
    "metadata_extra_key": lambda g, d: _rewrite(
        g, d, _edit_meta(lambda m: m.__setitem__("exec", "rm -rf /"))
    ),
    "array_missing": lambda g, d: _rewrite(g, d, lambda m: m.pop(_first_model_key(m))),
    "array_misshaped": lambda g, d: _rewrite(
        g, d, lambda m: m.__setitem__(_first_model_key(m), _npy_bytes(np.zeros((2, 2), np.float32)))
    ),
    "array_wrong_dtype": lambda g, d: _rewrite(
        g,
        d,
        lambda m: m.__setitem__(_first_model_key(m), _npy_bytes(np.zeros((16, 3), np.complex64))),
    ),
    "model_class_outside_rnnfast": lambda g, d: _rewrite(
        g, d, _edit_meta(lambda m: m["model"].__setitem__("class", "os:system"))
    ),
    # attribute chains under rnnfast reached subprocess.Popen / zipfile.ZipFile (code execution,
    # truncating any file): only registered model classes are ever constructed
    "model_class_popen_chain": lambda g, d: _rewrite(
        g,
        d,
        _edit_meta(
            lambda m: m["model"].update(
                {
                    "class": "rnnfast.io:np.f2py.subprocess.Popen",
                    "config": {"args": ["sh", "-c", "echo pwned > /dev/null"]},
                }
            )
        ),
    ),
    "model_class_zipfile": lambda g, d: _rewrite(
        g,
        d,
        _edit_meta(
            lambda m: m["model"].update(
                {"class": "rnnfast.io:zipfile.ZipFile", "config": {"file": str(d), "mode": "w"}}
            )
        ),
    ),
    "deflated_members": lambda g, d: _rewrite(g, d, lambda m: None, zipfile.ZIP_DEFLATED),
    "metadata_nested_700": lambda g, d: _rewrite(
        g, d, _edit_meta(lambda m: m["meta"].__setitem__("deep", json.loads("[" * 700 + "]" * 700)))
    ),
}


def _flip(data: bytes) -> bytes:
    b = bytearray(data)
    for k in range(len(b) // 3, len(b) // 3 + 64):
        b[k] ^= 0xFF
    return bytes(b)


@pytest.mark.parametrize("case", list(HOSTILE_FILES))
def test_load_hostile_checkpoint(case: str, good_ckpt: Path, tmp_path: Path) -> None:
    path = HOSTILE_FILES[case](good_ckpt, tmp_path / f"{case}.npz")

    def load_and_build() -> Any:
        ck = rf.load(path)
        return ck.build_model()

    msg = expect_error(load_and_build, str(path), "class", types=(ValueError,))
    assert "Traceback" not in msg


@pytest.mark.parametrize(
    "spec", ["rnnfast.no_such_module:RNN", "rnnfast.modules:NoSuchClass", "rnnfast:__version__"]
)
def test_checkpoint_model_class_that_does_not_resolve(
    spec: str, good_ckpt: Path, tmp_path: Path
) -> None:
    path = _rewrite(
        good_ckpt, tmp_path / "c.npz", _edit_meta(lambda m: m["model"].__setitem__("class", spec))
    )
    expect_error(lambda: rf.load(path).build_model(), "class", spec, types=(ValueError,))


SAVE_BAD: dict[str, tuple[Callable[[Path], Any], str, tuple[type, ...]]] = {
    "model_object": (lambda d: rf.save(d / "a.npz", object()), "model", ACCEPTED),
    "meta_not_json": (
        lambda d: rf.save(d / "a.npz", _small_model(), meta={"x": object()}),
        "meta",
        ACCEPTED,
    ),
    "state_object_array": (
        lambda d: rf.save(d / "a.npz", {"w": np.array([None], dtype=object)}),
        "w",
        ACCEPTED,
    ),
    "state_bad_name": (lambda d: rf.save(d / "a.npz", {"../evil": np.zeros(3)}), "evil", ACCEPTED),
    "path_int": (lambda d: rf.save(3, _small_model()), "path", (TypeError,)),
    "missing_directory": (
        lambda d: rf.save(d / "nope" / "a.npz", _small_model()),
        "nope",
        (OSError, ValueError),
    ),
}


def _small_model() -> Any:
    return rf.build_model("gru", 2, 3, 1, mode="many_to_one", seed=0)


@pytest.mark.parametrize("case", list(SAVE_BAD))
def test_save_hostile(case: str, tmp_path: Path) -> None:
    fn, name, types = SAVE_BAD[case]
    expect_error(lambda: fn(tmp_path), name, types=types)
    leftovers = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    assert not leftovers, f"a failed save left files behind: {leftovers}"


def test_resume_from_hostile_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "ck.npz"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    expect_error(lambda: _fit(checkpoint=str(path), resume=True), str(path), types=(ValueError,))


# ==================================================================================================
# allocation limits (child process under RLIMIT_AS, so nothing here can exhaust the machine)
# ==================================================================================================

MEMORY_CASES: dict[str, tuple[str, str]] = {
    # T*B*H outputs far beyond memory from small inputs (x 64 MiB, w_hh 16 MiB): checked before
    # allocating
    "forward_outputs": (
        "x = np.zeros((2**22, 4, 1), np.float32); w = np.zeros((4096, 1), np.float32)\n"
        "F.lstm_forward(x, None, None, w, np.zeros((4096, 1024), np.float32), None, None)",
        "x",
    ),
    "inference_workspace": (
        "x = np.zeros((2**22, 4, 1), np.float32); w = np.zeros((3072, 1), np.float32)\n"
        "F.gru_forward(x, None, w, np.zeros((3072, 1024), np.float32), None, None, training=False)",
        "x",
    ),
    # a zero-stride view of 2**40 elements: copying it to C order is impossible
    "broadcast_view_x": (
        "x = np.broadcast_to(np.float32(1), (2**20, 2**20, 1)); w = np.zeros((3, 1), np.float32)\n"
        "F.rnn_forward(x, None, w, np.zeros((3, 3), np.float32), None, None)",
        "x",
    ),
    "stream_k2": (
        "p = {'w_ih': np.zeros((8, 2), np.float32), 'w_hh': np.zeros((8, 2), np.float32)}\n"
        "F.TBPTTStream('lstm', p, None, 1, 2**50).forward(np.zeros((1, 4, 2), np.float32))",
        "k2",
    ),
    # the compiled stream directly (its own checks are the safety net under functional.py): 2*k2*B
    # overflows int64 in its buffer sizing and it writes past the buffers (heap corruption)
    "raw_core_stream_k2": (
        "from rnnfast._loader import core\n"
        "s = core.TBPTTStreamFloat64('rnn', 'tanh', 2, 2, 3, 1, 2**62 + 8, False)\n"
        "s.set_params(np.zeros((3, 2)), np.zeros((3, 3)), None, None)\n"
        "for _ in range(5000):\n"
        "    s.forward(np.ones((1, 2, 2)))",
        "k2",
    ),
    "module_hidden_size": ("rf.LSTM(3, 2**40)", "hidden_size"),
    "module_num_layers": ("rf.GRU(3, 3, num_layers=2**40)", "num_layers"),
    "malicious_config_in_checkpoint": (
        "import json, zipfile, io\n"
        "m = rf.build_model('gru', 2, 3, 1, mode='many_to_one', seed=0)\n"
        "cfg = m.config(); cfg['rnn']['hidden_size'] = 2**40\n"
        "rf.model_from_config(cfg)",
        "hidden_size",
    ),
}

_CHILD = """
import resource, sys
lim = {limit}
resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
import numpy as np
import rnnfast as rf
from rnnfast import functional as F
try:
{body}
except (MemoryError, ValueError, TypeError) as exc:
    print("RAISED", type(exc).__name__, str(exc).replace("\\n", " "))
    sys.exit(0)
print("NO_ERROR")
"""


@pytest.mark.parametrize("case", list(MEMORY_CASES))
def test_allocation_failures_are_memory_errors(case: str) -> None:
    body, name = MEMORY_CASES[case]
    code = _CHILD.format(limit=1 << 30, body=textwrap.indent(body, "    "))
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{case}: no size check, still allocating after 20 s (would exhaust memory)")
    out = proc.stdout.strip().splitlines()
    assert proc.returncode == 0, (
        f"{case}: child crashed with exit code {proc.returncode}\n{proc.stdout[-2000:]}\n"
        f"{proc.stderr[-3000:]}"
    )
    assert out and out[-1].startswith("RAISED"), f"{case}: no error raised: {proc.stdout[-1000:]}"
    assert name in out[-1], f"{case}: error does not name {name!r}: {out[-1]}"


# ==================================================================================================
# thread counts: absurd counts are refused, threads that cannot be created never end the process
# ==================================================================================================


@pytest.mark.parametrize("n", [0, -1, "max+1", 2**31, 2**63, 2**100, -(2**70)])
def test_set_num_threads_out_of_range(n: Any) -> None:
    from rnnfast._loader import core

    n = rf.max_threads() + 1 if n == "max+1" else n
    before = rf.get_num_threads()
    for setter in (rf.set_num_threads, core.set_num_threads):
        msg = expect_error(lambda: setter(n), f"1..{rf.max_threads()}", types=(ValueError,))
        assert str(n) in msg, msg
    assert rf.get_num_threads() == before


_THREADS_CHILD = """
import resource, sys
import numpy as np
import rnnfast as rf
from rnnfast import functional as F
with open("/proc/self/status") as f:
    vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + (48 << 20), vm + (48 << 20)))  # ~5 thread stacks
try:
    rf.set_num_threads(rf.max_threads())
    print("SET", rf.get_num_threads())
except RuntimeError as exc:
    print("REFUSED", rf.get_num_threads(), str(exc).replace("\\n", " "))
rng = np.random.default_rng(0)
x = rng.standard_normal((20, 32, 128), dtype=np.float32)
w = rng.standard_normal((512, 128), dtype=np.float32) * 0.1
for _ in range(20):  # steps of 4 MFLOP: worth a team of threads on idle cores
    y = F.lstm_forward(x, None, None, w, w, None, None, training=False)[0]
print("OK", float(np.abs(y).sum()) > 0)
"""


def test_threads_under_address_space_limit() -> None:
    # GNU OpenMP exits the process when it cannot create a team's thread; rnnfast checks first.
    env = dict(os.environ, RNNFAST_NUM_THREADS=str(rf.max_threads()))
    proc = subprocess.run(
        [sys.executable, "-c", _THREADS_CHILD], capture_output=True, text=True, timeout=120, env=env
    )
    out = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and out and out[-1] == "OK True", (
        f"child exit code {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    )
    first = out[0].split()
    assert first[0] == "REFUSED", f"{rf.max_threads()} threads fit in 48 MiB? {out[0]}"
    assert "cannot start" in out[0], out[0]


# ==================================================================================================
# CLI: user errors exit 2 with a one-line message naming the option, never a traceback
# ==================================================================================================

CLI_CASES: dict[str, tuple[list[str], str]] = {
    "hidden_zero": (["train", "--task", "sine", "--hidden", "0"], "--hidden"),
    "hidden_huge": (
        ["train", "--task", "sine", "--hidden", "99999999999", "--epochs", "1"],
        "hidden",
    ),
    "bptt_k1_gt_k2": (["train", "--task", "sine", "--bptt", "3,2"], "--bptt"),
    "bptt_garbage": (["train", "--task", "sine", "--bptt", "abc"], "--bptt"),
    "epochs_negative": (["train", "--task", "sine", "--epochs", "-1"], "--epochs"),
    "lr_nan": (["train", "--task", "sine", "--lr", "nan"], "--lr"),
    "threads_zero": (["train", "--task", "sine", "--threads", "0"], "--threads"),
    "seq_len_zero": (["train", "--task", "sine", "--seq-len", "0"], "--seq-len"),
    "batch_size_zero": (["train", "--task", "sine", "--batch-size", "0"], "--batch-size"),
    "unknown_task": (["train", "--task", "chess"], "--task"),
    "text_missing": (
        ["train", "--task", "charlm", "--text", "/nonexistent/t.txt", "--epochs", "1"],
        "text",
    ),
    "save_dir_missing": (["train", "--task", "sine", "--save", "/nonexistent/x.npz"], "--save"),
    "sample_missing_checkpoint": (["sample", "/nonexistent/ck.npz"], "/nonexistent/ck.npz"),
    "threads_huge": (["train", "--task", "sine", "--threads", "99999999999"], "--threads"),
    "threads_huge_gradcheck": (["gradcheck", "--threads", "2147483648"], "--threads"),
    "diagnose_seq_len_1": (["diagnose", "--seq-len", "1", "--train-steps", "0"], "--seq-len"),
    "diagnose_plot_unknown_ext": (
        ["diagnose", "--seq-len", "4", "--train-steps", "0", "--plot", "x.unknownext"],
        "--plot",
    ),
    "save_is_directory": (["train", "--task", "sine", "--save", "{dir}"], "--save"),
    "json_is_directory": (["train", "--task", "sine", "--json", "{dir}"], "--json"),
    "plot_unknown_ext": (["train", "--task", "sine", "--plot", "{dir}/loss.xyz"], "--plot"),
    "sample_garbage_checkpoint": (["sample", "{garbage}"], "garbage"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_user_errors(case: str, tmp_path: Path) -> None:
    from rnnfast import cli

    argv, name = CLI_CASES[case]
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00" * 100)
    argv = [a.replace("{garbage}", str(garbage)).replace("{dir}", str(tmp_path)) for a in argv]
    import contextlib
    import io as _io

    err = _io.StringIO()
    code: Any = None
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(_io.StringIO()):
        try:
            code = cli.main(argv)
        except SystemExit as exc:
            code = exc.code
        except BaseException as exc:  # noqa: BLE001 - an escaping exception is the failure
            pytest.fail(
                f"rnnfast {' '.join(argv)}: uncaught {exc!r} (the user would see a traceback)"
            )
    assert code == 2, (
        f"rnnfast {' '.join(argv)}: exit status {code}, expected 2; stderr: {err.getvalue()}"
    )
    assert name in err.getvalue(), f"message does not name {name!r}: {err.getvalue()!r}"
    assert "Traceback" not in err.getvalue()


def test_ragged_nested_list_input_names_the_argument() -> None:
    """A ragged nested list (NumPy cannot make an array of it) is a ValueError naming x / x_t."""
    m = rf.build_model("gru", 3, 8, 2, mode="many_to_many", seed=0)
    with pytest.raises(ValueError, match=r"^x: expected a rectangular float array"):
        m([[[1.0, 2.0, 3.0]], [[1.0]]])
    with pytest.raises(ValueError, match=r"^x_t: expected a rectangular float array"):
        rf.GRU(3, 8).step([[1.0, 2.0, 3.0], [1.0]])
