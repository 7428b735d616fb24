"""minGRU / minLSTM: the float64 oracle against central finite differences, the scan kernels against
the oracle (float32, float64), the chunked scan against the one-chunk sequential form, bitwise
reproducibility, long sequences, bad input, and the modules."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import rnnfast
from helpers import assert_close, central_difference
from rnnfast import minimal as K
from rnnfast._loader import core
from rnnfast.nn.minimal import MinGRU, MinLSTM
from rnnfast.reference import minimal as R

CELLS = ("mingru", "minlstm")
GATES = {"mingru": 2, "minlstm": 3}
KEYS = ("x", "h0", "w_ih", "b_ih", "dh_all")


def _inputs(
    cell: str,
    t: int,
    b: int,
    i: int,
    h: int,
    *,
    dtype: Any = np.float64,
    bias: bool = True,
    h0: bool = True,
    seed: int = 0,
    scale: float = 1.0,
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    g = GATES[cell]
    return {
        "x": rng.standard_normal((t, b, i)).astype(dtype),
        "h0": rng.uniform(0.1, 1.0, (b, h)).astype(dtype) if h0 else None,
        "w_ih": (scale * rng.standard_normal((g * h, i)) / np.sqrt(i)).astype(dtype),
        "b_ih": (0.5 * rng.standard_normal(g * h)).astype(dtype) if bias else None,
        "dy": rng.standard_normal((t, b, h)).astype(dtype),
        "dh_n": rng.standard_normal((b, h)).astype(dtype),
    }


def _ref(cell: str, a: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    fwd = R.mingru_forward if cell == "mingru" else R.minlstm_forward
    bwd = R.mingru_backward if cell == "mingru" else R.minlstm_backward
    y, h_n, c = fwd(a["x"], a["h0"], a["w_ih"], a["b_ih"])
    return y, h_n, bwd(c, a["dy"], a["dh_n"])


def _kernel(
    cell: str, a: dict[str, Any], chunk: int | None = None
) -> tuple[Any, Any, dict[str, Any]]:
    fwd = K.mingru_forward if cell == "mingru" else K.minlstm_forward
    bwd = K.mingru_backward if cell == "mingru" else K.minlstm_backward
    y, h_n, c = fwd(a["x"], a["h0"], a["w_ih"], a["b_ih"], chunk=chunk)
    return y, h_n, bwd(c, a["dy"], a["dh_n"], chunk=chunk)


# --------------------------------------------------------------------------------------------------
# the oracle against central finite differences (float64)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_reference_matches_finite_differences(cell: str) -> None:
    a = _inputs(cell, 6, 2, 3, 4, scale=1.5)
    fwd = R.mingru_forward if cell == "mingru" else R.minlstm_forward

    def loss() -> float:  # L = sum(dy * y) + sum(dh_n * h_n)
        y, h_n, _ = fwd(a["x"], a["h0"], a["w_ih"], a["b_ih"])
        return float(np.sum(a["dy"] * y) + np.sum(a["dh_n"] * h_n))

    _, _, g = _ref(cell, a)
    for name, key in (("x", "x"), ("h0", "h0"), ("w_ih", "w_ih"), ("b_ih", "b_ih")):
        fd = central_difference(loss, a[key], 1e-6)
        assert_close(g[name], fd, 1e-6, f"{cell} d{name}")
    # pre-activations of h~ on both sides of g's kink at 0 (both branches of g were exercised)
    u = (a["x"] @ a["w_ih"].T + a["b_ih"])[..., (GATES[cell] - 1) * 4 :]
    assert (u > 0).any() and (u < 0).any()


@pytest.mark.parametrize("cell", CELLS)
def test_reference_dh_all_is_total_state_gradient(cell: str) -> None:
    """dh_all[t] = dL/dh_t: perturbing h_t means perturbing the state entering step t+1 (h0 of the
    tail sequence)."""
    a = _inputs(cell, 5, 2, 3, 3)
    y, _, g = _ref(cell, a)
    t = 2
    tail = {**a, "x": a["x"][t + 1 :], "h0": y[t].copy(), "dy": a["dy"][t + 1 :]}
    _, _, gt = _ref(cell, tail)
    assert_close(g["dh_all"][t], a["dy"][t] + gt["h0"], 1e-12, f"{cell} dh_all[{t}]")


# --------------------------------------------------------------------------------------------------
# kernels against the oracle
# --------------------------------------------------------------------------------------------------

SHAPES = [  # (T, B, I, H, chunk)
    (1, 1, 1, 1, None),
    (9, 3, 4, 5, None),
    (9, 3, 4, 5, 4),
    (130, 1, 3, 70, 64),  # T not a multiple of the chunk, H not a multiple of the unit (64)
    (257, 2, 5, 9, None),
    (300, 1, 2, 3, 7),
]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("shape", SHAPES)
def test_kernels_match_reference(cell: str, dtype: Any, tol: float, shape: tuple[Any, ...]) -> None:
    t, b, i, h, chunk = shape
    a = _inputs(cell, t, b, i, h, dtype=dtype, seed=t + h)
    y, h_n, g = _kernel(cell, a, chunk)
    yr, hr, gr = _ref(cell, a)
    assert y.dtype == dtype and g["w_ih"].dtype == dtype
    assert_close(y, yr, tol, f"{cell} y")
    assert_close(h_n, hr, tol, f"{cell} h_n")
    for k in KEYS:
        assert_close(g[k], gr[k], tol, f"{cell} d{k}")


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_optional_arguments(cell: str, dtype: Any) -> None:
    """No bias, no h0, no dy / dh_n, need_dx=False: the oracle's zeros and Nones."""
    a = _inputs(cell, 20, 2, 3, 5, dtype=dtype, bias=False, h0=False)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    fwd = K.mingru_forward if cell == "mingru" else K.minlstm_forward
    bwd = K.mingru_backward if cell == "mingru" else K.minlstm_backward
    rf = R.mingru_forward if cell == "mingru" else R.minlstm_forward
    rb = R.mingru_backward if cell == "mingru" else R.minlstm_backward
    y, _, c = fwd(a["x"], None, a["w_ih"], None)
    yr, _, cr = rf(a["x"], None, a["w_ih"], None)
    assert_close(y, yr, tol, "y")
    g = bwd(c, None, a["dh_n"], need_dx=False)
    gr = rb(cr, None, a["dh_n"])
    assert g["x"] is None and g["b_ih"] is None
    for k in ("h0", "w_ih", "dh_all"):
        assert_close(g[k], gr[k], tol, f"d{k}")
    g2 = bwd(c, a["dy"], None)  # a second backward on one cache is allowed
    gr2 = rb(cr, a["dy"], None)
    for k in ("x", "h0", "w_ih", "dh_all"):
        assert_close(g2[k], gr2[k], tol, f"d{k} (second backward)")
    y_inf, h_inf, c_inf = fwd(a["x"], None, a["w_ih"], None, training=False)
    assert c_inf is None
    assert np.array_equal(y_inf, y) and np.array_equal(h_inf, y[-1])


# --------------------------------------------------------------------------------------------------
# the chunked scan against the sequential (one-chunk) form; reproducibility
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_chunked_scan_matches_sequential_form(cell: str) -> None:
    """chunk = T is the plain sequential log-space recurrence; every other chunking (1 step,
    uneven, automatic) must agree with it to rounding, forward and backward."""
    t = 203
    a = _inputs(cell, t, 2, 3, 6, seed=3)
    y1, h1, g1 = _kernel(cell, a, chunk=t)
    for chunk in (1, 7, 64, 100, None):
        y, h_n, g = _kernel(cell, a, chunk=chunk)
        assert_close(y, y1, 1e-13, f"{cell} y chunk={chunk}")
        assert_close(h_n, h1, 1e-13, f"{cell} h_n chunk={chunk}")
        for k in KEYS:
            assert_close(g[k], g1[k], 1e-13, f"{cell} d{k} chunk={chunk}")


@given(
    cell=st.sampled_from(CELLS),
    t=st.integers(1, 90),
    b=st.integers(1, 3),
    h=st.integers(1, 70),
    chunk_frac=st.floats(0.0, 1.0),
    bias=st.booleans(),
    h0=st.booleans(),
)
def test_scan_matches_reference_over_shapes_and_chunks(
    cell: str, t: int, b: int, h: int, chunk_frac: float, bias: bool, h0: bool
) -> None:
    chunk = max(1, round(chunk_frac * t))
    a = _inputs(cell, t, b, 2, h, bias=bias, h0=h0, seed=t * 7 + h)
    y, h_n, g = _kernel(cell, a, chunk)
    yr, hr, gr = _ref(cell, a)
    assert_close(y, yr, 1e-12, f"{cell} y T={t} chunk={chunk}")
    assert_close(h_n, hr, 1e-12, f"{cell} h_n")
    for k in KEYS:
        assert_close(g[k], gr[k], 1e-12, f"{cell} d{k} T={t} chunk={chunk}")


def test_automatic_chunk_length() -> None:
    assert core.scan_chunk_length(10_000, 16, 256) == 10_000  # 64 units: no time chunks
    assert core.scan_chunk_length(10_000, 1, 8) == 625  # 1 unit: 16 chunks
    assert core.scan_chunk_length(100, 1, 8) == 64  # chunks of at least 64 steps
    assert core.scan_chunk_length(30, 1, 8) == 30


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bitwise_reproducible_across_calls_and_threads(cell: str, dtype: Any) -> None:
    a = _inputs(cell, 700, 2, 8, 70, dtype=dtype, seed=5)  # large enough for 2 threads
    old = rnnfast.get_num_threads()
    try:
        runs = []
        for n in (1, 2, 2, 1):
            rnnfast.set_num_threads(n)
            runs.append(_kernel(cell, a))
    finally:
        rnnfast.set_num_threads(old)
    y0, h0, g0 = runs[0]
    for y, h_n, g in runs[1:]:
        assert np.array_equal(y, y0) and np.array_equal(h_n, h0)
        for k in KEYS:
            assert np.array_equal(g[k], g0[k]), k


# --------------------------------------------------------------------------------------------------
# long sequences
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_long_sequence_stays_finite_and_accurate(cell: str) -> None:
    """T = 10,000 in float32 with saturating gates (a_t near 0 and near 1): no NaN/inf, and the
    float64 oracle's values."""
    t, h = 10_000, 6
    a = _inputs(cell, t, 2, 3, h, dtype=np.float32, seed=7, scale=6.0)
    a["b_ih"][:h] = np.array([-30, -10, 0, 10, 30, 60], np.float32)  # z (f) from ~0 to ~1
    y, h_n, g = _kernel(cell, a)
    for name, v in [("y", y), ("h_n", h_n)] + [(k, g[k]) for k in KEYS]:
        assert np.all(np.isfinite(v)), f"{cell} {name} not finite"
    yr, hr, gr = _ref(cell, a)
    assert_close(y, yr, 1e-4, f"{cell} y")
    for k in KEYS:
        assert_close(g[k], gr[k], 1e-4, f"{cell} d{k}")


# --------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_bad_input_errors_name_the_argument(cell: str) -> None:
    a = _inputs(cell, 4, 2, 3, 5, dtype=np.float32)
    fwd = K.mingru_forward if cell == "mingru" else K.minlstm_forward
    bwd = K.mingru_backward if cell == "mingru" else K.minlstm_backward
    x, h0, w, b = a["x"], a["h0"], a["w_ih"], a["b_ih"]
    g = GATES[cell]
    cases: list[tuple[tuple[Any, ...], dict[str, Any], type, str]] = [
        ((x.astype(np.int32), h0, w, b), {}, TypeError, "x: expected dtype"),
        ((x[0], h0, w, b), {}, ValueError, "x: expected a 3-D array"),
        ((x, h0, w.astype(np.float64), b), {}, TypeError, "w_ih: expected dtype float32"),
        ((x, h0, w[:-1], b), {}, ValueError, f"w_ih: expected shape ({g}*H, 3)"),
        ((x, h0, w, b[:-1]), {}, ValueError, f"b_ih: expected shape ({g * 5},)"),
        ((x, h0[:1], w, b), {}, ValueError, "h0: expected shape (2, 5)"),
        ((x, -h0, w, b), {}, ValueError, "h0: expected finite values >= 0"),
        ((x, np.full_like(h0, np.nan), w, b), {}, ValueError, "h0: expected finite values >= 0"),
        ((x, h0, w, b), {"chunk": 0}, ValueError, "chunk: expected None or an int >= 1"),
        ((x, h0, w, b), {"chunk": 2.5}, TypeError, "chunk: expected None or an int >= 1"),
        ((x, h0, w, b), {"training": 1}, TypeError, "training: expected a bool"),
    ]
    for args, kw, exc, msg in cases:
        with pytest.raises(
            exc, match=msg.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")
        ):
            fwd(*args, **kw)
    _, _, c = fwd(x, h0, w, b)
    with pytest.raises(ValueError, match=r"dy: expected shape \(4, 2, 5\)"):
        bwd(c, a["dy"][1:])
    with pytest.raises(TypeError, match="dh_n: expected dtype float32"):
        bwd(c, None, a["dh_n"].astype(np.float64))
    with pytest.raises(ValueError, match="cache: got None"):
        bwd(None, a["dy"])
    with pytest.raises(TypeError, match="cache: expected a rnnfast.minimal.MinimalCache"):
        bwd(object(), a["dy"])
    other = K.minlstm_backward if cell == "mingru" else K.mingru_backward
    with pytest.raises(ValueError, match=f"cache: expected a cache from .*, got one from {cell}"):
        other(c, None)


def test_bindings_check_every_array() -> None:
    """The compiled layer's own checks (the safety net under rnnfast.minimal)."""
    a = _inputs("mingru", 4, 2, 3, 5)
    x, h0, w, b = a["x"], a["h0"], a["w_ih"], a["b_ih"]
    with pytest.raises(ValueError, match="x: expected a C-contiguous array"):
        core.mingru_forward(np.asfortranarray(x), h0, w, b, True, 0)
    with pytest.raises(TypeError, match="b_ih: expected dtype float64, got float32"):
        core.mingru_forward(x, h0, w, b.astype(np.float32), True, 0)
    with pytest.raises(ValueError, match=r"h0: expected shape \(2, 5\), got \(5, 2\)"):
        core.mingru_forward(x, np.ascontiguousarray(h0.T), w, b, True, 0)
    with pytest.raises(ValueError, match="h0: expected finite values >= 0"):
        core.mingru_forward(x, -h0, w, b, True, 0)
    with pytest.raises(ValueError, match="chunk: expected an int >= 0"):
        core.mingru_forward(x, h0, w, b, True, -1)
    with pytest.raises(TypeError, match="x: expected a numpy array"):
        core.minlstm_forward([[[1.0]]], None, w, b, True, 0)
    _, _, c = core.mingru_forward(x, h0, w, b, True, 0)
    with pytest.raises(ValueError, match="cell: expected 'mingru' or 'minlstm'"):
        core.minimal_backward("gru", c, x, w, b, None, None)
    with pytest.raises(ValueError, match="b_ih: does not match the forward call"):
        core.minimal_backward("mingru", c, x, w, None, None, None)
    with pytest.raises(ValueError, match=r"x: expected shape \(4, 2, 3\)"):
        core.minimal_backward("mingru", c, x[:2], w, b, None, None)
    with pytest.raises(TypeError, match="cache: expected a ScanCacheFloat32 or ScanCacheFloat64"):
        core.minimal_backward("mingru", None, x, w, b, None, None)


# --------------------------------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [MinGRU, MinLSTM])
def test_module_matches_chained_reference(cls: type) -> None:
    """A 2-layer module (batch_first, hx given) against the oracle chained by hand, in float64."""
    cell = cls._cell
    m = cls(3, 4, num_layers=2, batch_first=True, dtype=np.float64, seed=2)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 7, 3))  # (B, T, I)
    hx = rng.uniform(0, 1, (2, 2, 4))
    dout = rng.standard_normal((2, 7, 4))
    dhn = rng.standard_normal((2, 2, 4))
    out, h_n = m(x, hx)
    dx = m.backward(dout, dhn)
    fwd = R.mingru_forward if cell == "mingru" else R.minlstm_forward
    bwd = R.mingru_backward if cell == "mingru" else R.minlstm_backward
    p = m.state_dict()
    y0, h0n, c0 = fwd(x.transpose(1, 0, 2), hx[0], p["weight_ih_l0"], p["bias_ih_l0"])
    y1, h1n, c1 = fwd(y0, hx[1], p["weight_ih_l1"], p["bias_ih_l1"])
    g1 = bwd(c1, dout.transpose(1, 0, 2), dhn[1])
    g0 = bwd(c0, g1["x"], dhn[0])
    assert_close(out, y1.transpose(1, 0, 2), 1e-12, "out")
    assert_close(h_n, np.stack([h0n, h1n]), 1e-12, "h_n")
    assert_close(dx, g0["x"].transpose(1, 0, 2), 1e-12, "dx")
    assert_close(m.grad_hx, np.stack([g0["h0"], g1["h0"]]), 1e-12, "grad_hx")
    for layer, g in ((0, g0), (1, g1)):
        assert_close(m.grads[f"weight_ih_l{layer}"], g["w_ih"], 1e-12, f"weight_ih_l{layer}")
        assert_close(m.grads[f"bias_ih_l{layer}"], g["b_ih"], 1e-12, f"bias_ih_l{layer}")
    m.zero_grad()
    assert not m.flat_grads.any()


@pytest.mark.parametrize("cls", [MinGRU, MinLSTM])
def test_module_state_dict_round_trip(cls: type) -> None:
    g = GATES[cls._cell]
    a = cls(5, 6, num_layers=2, seed=0)
    sd = a.state_dict()
    assert list(sd) == ["weight_ih_l0", "bias_ih_l0", "weight_ih_l1", "bias_ih_l1"]
    assert sd["weight_ih_l0"].shape == (g * 6, 5) and sd["weight_ih_l1"].shape == (g * 6, 6)
    assert sd["bias_ih_l1"].shape == (g * 6,) and sd["bias_ih_l0"].dtype == np.float32
    b = cls(5, 6, num_layers=2, seed=1)
    x = np.random.default_rng(0).standard_normal((4, 3, 5)).astype(np.float32)
    assert not np.array_equal(a.eval()(x)[0], b.eval()(x)[0])
    b.load_state_dict(sd)
    assert np.array_equal(a(x)[0], b(x)[0])
    sd["weight_ih_l0"][...] = 0  # a copy: the module is unchanged
    assert not np.array_equal(a.state_dict()["weight_ih_l0"], sd["weight_ih_l0"])
    with pytest.raises(ValueError, match="bias_ih_l1"):
        b.load_state_dict({k: v for k, v in a.state_dict().items() if k != "bias_ih_l1"})
    for c in (copy.deepcopy(a), pickle.loads(pickle.dumps(a))):
        assert np.array_equal(c(x)[0], a(x)[0])
    nb = cls(5, 6, bias=False)
    assert list(nb.state_dict()) == ["weight_ih_l0"]


@pytest.mark.parametrize("cls", [MinGRU, MinLSTM])
def test_module_modes_and_errors(cls: type) -> None:
    m = cls(3, 4)
    x = np.zeros((5, 2, 3), np.float32)
    m.eval()
    m(x)
    with pytest.raises(ValueError, match="no stored forward pass"):
        m.backward(np.zeros((5, 2, 4), np.float32))
    m.train()
    out, _ = m(x)
    with pytest.raises(ValueError, match=r"grad_output: expected shape \(5, 2, 4\)"):
        m.backward(np.zeros((2, 5, 4), np.float32))
    with pytest.raises(ValueError, match="hx: expected finite values >= 0"):
        m(x, -np.ones((1, 2, 4), np.float32))
    with pytest.raises(ValueError, match=r"hx: expected shape \(1, 2, 4\)"):
        m(x, np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="x: expected input size 3"):
        m(np.zeros((5, 2, 4), np.float32))
    with pytest.raises(ValueError, match="hidden_size: expected an int >= 1"):
        cls(3, 0)
    with pytest.raises(TypeError, match="batch_first: expected a bool"):
        cls(3, 4, batch_first=1)
    assert m.config()["type"] == cls.__name__
