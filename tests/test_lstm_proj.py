"""The LSTM with projection (``torch.nn.LSTM(proj_size=P)``): its fused kernels (rnnfast._proj),
modules (rnnfast.nn.LSTM(proj_size=P), rnnfast.torch.LSTM(proj_size=P)), interop and truncated BPTT.

Oracles, none of them the code under test:
- the float64 reference (rnnfast.reference.lstm_proj_forward / _backward) for the kernels, in float64
  (1e-12) and float32 (1e-5), full and ragged batches (a length-0 sequence included), with and
  without bias and initial states;
- central finite differences of the reference's own forward for the reference;
- torch autograd through torch.nn.LSTM(proj_size=P) (float64 oracle module with the same weights)
  for the module stacks: 1-3 layers, bidirectional, ragged batches as PackedSequences, float64 and
  float32;
- TBPTT: an explicit construction from the reference (re-run each window from the stored state).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import assert_close, central_difference
from rnnfast import _proj, nn
from rnnfast import reference as ref
from rnnfast._gradcheck_proj import reference_tbptt
from rnnfast._loader import core

__all__: list[str] = []

TOL = {np.float64: 1e-12, np.float32: 1e-5}
TOL_GRAD = {np.float64: 1e-10, np.float32: 1e-4}  # module stacks vs torch (deeper chains)
DT_IDS = {np.float64: "f64", np.float32: "f32"}
KEYS = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "dh_all")


def _inputs(
    rng: np.random.Generator, T: int, B: int, I: int, H: int, P: int, bias: bool = True
) -> dict[str, Any]:
    s = 0.5
    return {
        "x": rng.standard_normal((T, B, I)),
        "h0": rng.uniform(-s, s, (B, P)),
        "c0": rng.uniform(-s, s, (B, H)),
        "w_ih": rng.uniform(-s, s, (4 * H, I)),
        "w_hh": rng.uniform(-s, s, (4 * H, P)),
        "b_ih": rng.uniform(-s, s, 4 * H) if bias else None,
        "b_hh": rng.uniform(-s, s, 4 * H) if bias else None,
        "w_hr": rng.uniform(-s, s, (P, H)),
    }


def _args(inp: dict[str, Any], dtype: Any, states: bool = True) -> list[Any]:
    names = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr")
    out = []
    for n in names:
        a = inp[n]
        if n in ("h0", "c0") and not states:
            a = None
        out.append(None if a is None else np.ascontiguousarray(a, dtype=dtype))
    return out


# --------------------------------------------------------------------------------------------------
# kernels vs the float64 reference
# --------------------------------------------------------------------------------------------------

SHAPES = [(7, 5, 4, 13, 6), (3, 1, 2, 9, 1), (12, 3, 16, 32, 8), (1, 2, 3, 17, 16)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=DT_IDS.get)
@pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])
@pytest.mark.parametrize("states", [True, False], ids=["h0c0", "zeros"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_kernel_matches_reference(
    shape: tuple[int, ...], bias: bool, states: bool, ragged: bool, dtype: Any
) -> None:
    T, B, I, H, P = shape
    rng = np.random.default_rng(sum(shape) + 10 * bias + 100 * ragged)
    inp = _inputs(rng, T, B, I, H, P, bias)
    args = _args(inp, dtype, states)
    lengths = rng.integers(0, T + 1, B) if ragged else None
    if ragged:
        lengths[0] = 0  # a length-0 sequence: h_n, c_n = its initial state
    dy = rng.standard_normal((T, B, P))
    dh_n, dc_n = rng.standard_normal((B, P)), rng.standard_normal((B, H))

    y, h_n, c_n, cache = _proj.lstm_proj_forward(*args, lengths=lengths)
    assert y.dtype == dtype and y.shape == (T, B, P) and h_n.shape == (B, P) and c_n.shape == (B, H)
    ey, eh, ec, ecache = ref.lstm_proj_forward(*args, lengths=lengths)
    tag = f"{shape} bias={bias} states={states} ragged={ragged} {DT_IDS[dtype]}"
    assert_close(y, ey, TOL[dtype], f"{tag} y")
    assert_close(h_n, eh, TOL[dtype], f"{tag} h_n")
    assert_close(c_n, ec, TOL[dtype], f"{tag} c_n")

    g = _proj.lstm_proj_backward(cache, dy.astype(dtype), dh_n.astype(dtype), dc_n.astype(dtype))
    eg = ref.lstm_proj_backward(ecache, dy, dh_n, dc_n)
    for k in KEYS:
        if eg[k] is None:
            assert g[k] is None, f"{tag} d{k}: expected None (no bias)"
            continue
        assert g[k].dtype == dtype, f"{tag} d{k}: dtype {g[k].dtype}"
        assert_close(g[k], eg[k], TOL[dtype], f"{tag} d{k}")

    # inference stores nothing and computes the same outputs bitwise; need_dx=False skips dx only
    yi, hi, ci, none = _proj.lstm_proj_forward(*args, lengths=lengths, training=False)
    assert none is None
    assert np.array_equal(yi, y) and np.array_equal(hi, h_n) and np.array_equal(ci, c_n)
    g2 = _proj.lstm_proj_backward(cache, dy.astype(dtype), need_dx=False)
    assert g2["x"] is None
    g3 = _proj.lstm_proj_backward(cache, dy.astype(dtype))
    assert np.array_equal(g2["w_hr"], g3["w_hr"]) and np.array_equal(g2["w_ih"], g3["w_ih"])


def test_ragged_rows_equal_separate_runs_and_nan_isolation() -> None:
    """Each sequence of a ragged batch equals it run alone; NaN in x at padded steps and in the
    state of a length-0 sequence reaches no other value."""
    T, B, I, H, P = 6, 4, 3, 10, 4
    rng = np.random.default_rng(5)
    inp = _inputs(rng, T, B, I, H, P)
    args = _args(inp, np.float64)
    lengths = np.array([6, 0, 3, 1])
    args[0][3:, 2] = np.nan  # padded steps of sequence 2
    args[0][1:, 3] = np.inf
    args[1][1] = np.nan  # h0 of the length-0 sequence
    dy = rng.standard_normal((T, B, P))
    y, h_n, c_n, cache = _proj.lstm_proj_forward(*args, lengths=lengths)
    g = _proj.lstm_proj_backward(cache, dy)
    for k in ("w_ih", "w_hh", "b_ih", "w_hr"):
        assert np.isfinite(g[k]).all(), f"d{k} is not finite: NaN leaked from a padded step"
    for b in (0, 2, 3):
        n = lengths[b]
        one = [args[0][:n, b : b + 1], args[1][b : b + 1], args[2][b : b + 1], *args[3:]]
        yb, hb, cb, cache_b = _proj.lstm_proj_forward(*one)
        assert_close(y[:n, b : b + 1], yb, 1e-13, f"y of sequence {b}")
        assert np.all(y[n:, b] == 0.0), f"y of sequence {b} after its length is not 0"
        assert_close(h_n[b : b + 1], hb, 1e-13, f"h_n of sequence {b}")
        assert_close(c_n[b : b + 1], cb, 1e-13, f"c_n of sequence {b}")
        gb = _proj.lstm_proj_backward(cache_b, np.ascontiguousarray(dy[:n, b : b + 1]))
        assert_close(g["x"][:n, b : b + 1], gb["x"], 1e-12, f"dx of sequence {b}")
        assert_close(g["h0"][b : b + 1], gb["h0"], 1e-12, f"dh0 of sequence {b}")
    assert np.isnan(h_n[1]).all() and np.array_equal(c_n[1], args[2][1])  # carried unchanged


def test_thread_counts_bitwise_equal() -> None:
    T, B, I, H, P = 8, 16, 24, 256, 64
    rng = np.random.default_rng(3)
    args = _args(_inputs(rng, T, B, I, H, P), np.float32)
    dy = rng.standard_normal((T, B, P)).astype(np.float32)
    lengths = rng.integers(1, T + 1, B)
    before = core.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            core.set_num_threads(n)
            core._force_loop_threads(n)  # teams of n even on a busy machine (the testing hook)
            y, _, _, cache = _proj.lstm_proj_forward(*args, lengths=lengths)
            results.append((y, _proj.lstm_proj_backward(cache, dy)))
    finally:
        core._force_loop_threads(0)
        core.set_num_threads(before)
    (y1, g1), (y2, g2) = results
    assert np.array_equal(y1, y2), "y differs between 1 and 2 threads"
    for k in KEYS:
        assert np.array_equal(g1[k], g2[k]), f"d{k} differs between 1 and 2 threads"


def test_reference_matches_finite_differences() -> None:
    T, B, I, H, P = 4, 3, 2, 5, 3
    rng = np.random.default_rng(11)
    inp = _inputs(rng, T, B, I, H, P)
    lengths = np.array([4, 2, 0])
    dy = rng.standard_normal((T, B, P))
    dh_n, dc_n = rng.standard_normal((B, P)), rng.standard_normal((B, H))
    names = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr")

    def loss() -> float:
        y, h, c, _ = ref.lstm_proj_forward(*(inp[n] for n in names), lengths=lengths)
        return float(np.sum(y * dy) + np.sum(h * dh_n) + np.sum(c * dc_n))

    _, _, _, cache = ref.lstm_proj_forward(*(inp[n] for n in names), lengths=lengths)
    g = ref.lstm_proj_backward(cache, dy, dh_n, dc_n)
    for n in names:
        fd = central_difference(loss, inp[n], 1e-6)
        assert np.max(np.abs(fd)) > 1e-3, f"{n}: FD gradient ~0, the check would be vacuous"
        assert_close(g[n], fd, 1e-6, f"reference d{n} vs finite differences")


@given(
    dims=st.tuples(
        st.integers(1, 6), st.integers(1, 4), st.integers(1, 5), st.integers(2, 12)
    ).flatmap(lambda d: st.tuples(st.just(d), st.integers(1, d[3] - 1))),
    seed=st.integers(0, 2**16),
    ragged=st.booleans(),
)
def test_kernel_property_over_shapes(dims: Any, seed: int, ragged: bool) -> None:
    """Kernel vs reference (float64) over random small shapes, P < H, random ragged lengths."""
    (T, B, I, H), P = dims
    rng = np.random.default_rng(seed)
    args = _args(_inputs(rng, T, B, I, H, P), np.float64)
    lengths = rng.integers(0, T + 1, B) if ragged else None
    dy = rng.standard_normal((T, B, P))
    y, h, c, cache = _proj.lstm_proj_forward(*args, lengths=lengths)
    ey, eh, ec, ecache = ref.lstm_proj_forward(*args, lengths=lengths)
    for a, e, n in ((y, ey, "y"), (h, eh, "h_n"), (c, ec, "c_n")):
        assert_close(a, e, 1e-12, f"{n} T={T} B={B} I={I} H={H} P={P}")
    g = _proj.lstm_proj_backward(cache, dy)
    eg = ref.lstm_proj_backward(ecache, dy)
    for k in KEYS:
        assert_close(g[k], eg[k], 1e-12, f"d{k} T={T} B={B} I={I} H={H} P={P} lengths={lengths}")


# --------------------------------------------------------------------------------------------------
# truncated BPTT vs an explicit construction from the reference
# --------------------------------------------------------------------------------------------------


# the oracle: one reference forward stores every state; each update re-runs its window [s, e] from
# the stored state entering s and backprops dy on its own steps [n*k1, e] only (shared with the
# gradcheck rows)
_tbptt_explicit = reference_tbptt


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=DT_IDS.get)
@pytest.mark.parametrize("k1,k2", [(1, 1), (2, 3), (3, 3), (2, 5), (4, 20)])
def test_tbptt_matches_explicit_construction(k1: int, k2: int, dtype: Any) -> None:
    T, B, I, H, P = 9, 3, 4, 6, 3
    rng = np.random.default_rng(10 * k1 + k2)
    inp = _inputs(rng, T, B, I, H, P)
    dy = rng.standard_normal((T, B, P))
    params = {k: inp[k].astype(dtype) for k in ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr")}
    x = inp["x"].astype(dtype)
    state0 = (inp["h0"].astype(dtype), inp["c0"].astype(dtype))
    got = _proj.lstm_proj_tbptt_grads(x, state0, params, dy.astype(dtype), k1, k2)
    exp = _tbptt_explicit(
        {**{k: v.astype(np.float64) for k, v in params.items()}, "x": x, "h0": state0[0],
         "c0": state0[1]},
        dy.astype(dtype).astype(np.float64),
        k1,
        k2,
    )  # fmt: skip
    assert len(got) == len(exp) == -(-T // k1)
    tol = 10 * TOL[dtype]
    for n, (g, e) in enumerate(zip(got, exp)):
        for k in ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr"):
            assert_close(g[k], e[k], tol, f"update {n} d{k} (k1={k1}, k2={k2})")
        for j in range(2):
            assert_close(g["state0"][j], e["state0"][j], tol, f"update {n} dstate0[{j}]")
    if k1 == k2 >= T:  # one window over everything: full BPTT
        _, _, _, c = _proj.lstm_proj_forward(x, *state0, *params.values())
        full = _proj.lstm_proj_backward(c, dy.astype(dtype))
        assert_close(got[0]["w_hr"], full["w_hr"], tol, "TBPTT(T, T) dw_hr vs full BPTT")


@given(
    T=st.integers(1, 8),
    k1=st.integers(1, 4),
    extra=st.integers(0, 4),
    seed=st.integers(0, 2**16),
)
def test_tbptt_property_over_truncation_lengths(T: int, k1: int, extra: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    inp = _inputs(rng, T, 2, 3, 5, 2)
    dy = rng.standard_normal((T, 2, 2))
    params = {k: inp[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr")}
    got = _proj.lstm_proj_tbptt_grads(inp["x"], (inp["h0"], inp["c0"]), params, dy, k1, k1 + extra)
    exp = _tbptt_explicit(inp, dy, k1, k1 + extra)
    assert len(got) == len(exp)
    for n, (g, e) in enumerate(zip(got, exp)):
        for k in params:
            assert_close(g[k], e[k], 1e-12, f"update {n} d{k} (T={T}, k1={k1}, k2={k1 + extra})")


def test_tbptt_argument_errors() -> None:
    rng = np.random.default_rng(0)
    inp = _inputs(rng, 4, 2, 3, 5, 2)
    params = {k: inp[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr")}
    with pytest.raises(ValueError, match="k2: expected k2 >= k1"):
        _proj.lstm_proj_tbptt_grads(inp["x"], None, params, None, 3, 2)
    with pytest.raises(ValueError, match="params: missing key 'w_hr'"):
        _proj.lstm_proj_tbptt_grads(inp["x"], None, {"w_ih": 1, "w_hh": 2}, None, 1, 1)
    with pytest.raises(TypeError, match="state0: expected None or a tuple"):
        _proj.lstm_proj_tbptt_grads(inp["x"], inp["h0"], params, None, 1, 1)
    with pytest.raises(TypeError, match="k1: expected an int"):
        _proj.lstm_proj_tbptt_grads(inp["x"], None, params, None, 1.5, 2)


# --------------------------------------------------------------------------------------------------
# hostile arguments: clear errors naming the argument, never a crash
# --------------------------------------------------------------------------------------------------


def _bad_cases() -> list[tuple[str, dict[str, Any], type, str]]:
    rng = np.random.default_rng(1)
    T, B, I, H, P = 3, 2, 4, 5, 2
    good = dict(
        zip(
            ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr"),
            _args(_inputs(rng, T, B, I, H, P), np.float64),
        )
    )
    f32 = {k: v.astype(np.float32) for k, v in good.items()}
    return [
        ("x 2-D", {**good, "x": good["x"][0]}, ValueError, r"x: expected a 3-D array"),
        ("x int", {**good, "x": good["x"].astype(np.int64)}, TypeError, "x: expected dtype"),
        ("x f16", {**good, "x": good["x"].astype(np.float16)}, TypeError, "x: expected dtype"),
        ("mixed dtype", {**good, "w_hr": f32["w_hr"]}, TypeError, "w_hr: expected dtype float64"),
        (
            "w_hh rows",
            {**good, "w_hh": good["w_hh"][:-1]},
            ValueError,
            r"w_hh: expected shape \(4\*H, P\)",
        ),
        (
            "w_hh cols",
            {**good, "w_hh": good["w_hh"][:, :1]},
            ValueError,
            r"w_hh: expected shape \(20, 2\)",
        ),
        (
            "w_hr H",
            {**good, "w_hr": good["w_hr"][:, :-1]},
            ValueError,
            r"w_hr: expected shape \(P, H\) = \(P, 5\)",
        ),
        (
            "w_ih",
            {**good, "w_ih": good["w_ih"][:, :-1]},
            ValueError,
            r"w_ih: expected shape \(20, 4\), got \(20, 3\)",
        ),
        (
            "h0 H wide",
            {**good, "h0": np.zeros((B, H))},
            ValueError,
            r"h0: expected shape \(2, 2\), got \(2, 5\)",
        ),
        (
            "c0 P wide",
            {**good, "c0": np.zeros((B, P))},
            ValueError,
            r"c0: expected shape \(2, 5\), got \(2, 2\)",
        ),
        ("one bias", {**good, "b_hh": None}, ValueError, "b_ih, b_hh: expected both"),
        (
            "bias len",
            {**good, "b_ih": good["b_ih"][:-1]},
            ValueError,
            r"b_ih: expected shape \(20,\)",
        ),
        ("w_hr None", {**good, "w_hr": None}, TypeError, "w_hr: expected an array, got None"),
        ("x empty", {**good, "x": np.zeros((0, B, I))}, ValueError, "x: expected a 3-D array"),
    ]


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: c[0])
def test_forward_argument_errors(case: tuple[str, dict[str, Any], type, str]) -> None:
    _, kw, exc, msg = case
    names = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr")
    with pytest.raises(exc, match=msg):
        _proj.lstm_proj_forward(*(kw[n] for n in names))


def test_lengths_cache_and_binding_errors() -> None:
    rng = np.random.default_rng(2)
    args = _args(_inputs(rng, 3, 2, 4, 5, 2), np.float64)
    with pytest.raises(ValueError, match=r"lengths: expected 0 <= lengths\[b\] <= T = 3"):
        _proj.lstm_proj_forward(*args, lengths=[4, 1])
    with pytest.raises(TypeError, match="lengths: expected an integer array"):
        _proj.lstm_proj_forward(*args, lengths=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"lengths: expected shape \(2,\)"):
        _proj.lstm_proj_forward(*args, lengths=[1, 2, 3])
    with pytest.raises(TypeError, match="training: expected a bool"):
        _proj.lstm_proj_forward(*args, training=1)
    _, _, _, cache = _proj.lstm_proj_forward(*args)
    with pytest.raises(ValueError, match=r"dy: expected shape \(3, 2, 2\)"):
        _proj.lstm_proj_backward(cache, np.zeros((3, 2, 5)))
    with pytest.raises(ValueError, match=r"dc_n: expected shape \(2, 5\)"):
        _proj.lstm_proj_backward(cache, None, None, np.zeros((2, 2)))
    with pytest.raises(TypeError, match="dh_n: expected dtype float64"):
        _proj.lstm_proj_backward(cache, None, np.zeros((2, 2), np.float32))
    with pytest.raises(TypeError, match="cache: expected a ProjCache"):
        _proj.lstm_proj_backward(object(), None)
    with pytest.raises(ValueError, match="training=False"):
        _proj.lstm_proj_backward(None, None)
    assert "ProjCache(T=3, B=2, I=4, H=5, P=2" in repr(cache) and cache.nbytes > 0
    # the binding's own checks (the safety net under _proj)
    with pytest.raises(ValueError, match=r"w_hr: expected a 2-D array \(P, H\)"):
        core.lstm_proj_forward(*args[:7], np.zeros((2, 5, 1)), None, True)
    with pytest.raises(ValueError, match=r"lengths: expected 0 <= lengths\[b\] <= T"):
        core.lstm_proj_forward(*args, np.array([9, 0]), True)
    with pytest.raises(TypeError, match="lengths: expected dtype"):
        core.lstm_proj_forward(*args, np.array([1, 0], np.int32), True)
    with pytest.raises(ValueError, match="C-contiguous"):
        core.lstm_proj_forward(*args[:7], np.asfortranarray(args[7]), None, True)
    with pytest.raises(TypeError, match="cache: expected a ProjCacheFloat32"):
        core.lstm_proj_backward(object(), *args[:1], *args[3:], None, None, None)
    with pytest.raises(ValueError, match="b_ih: does not match the forward"):
        core.lstm_proj_backward(
            cache._core, args[0], args[3], args[4], None, None, args[7], None, None, None
        )


# --------------------------------------------------------------------------------------------------
# modules: rnnfast.nn.LSTM(proj_size) and rnnfast.torch.LSTM(proj_size) vs torch autograd
# --------------------------------------------------------------------------------------------------

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import rnnfast.torch as rt  # noqa: E402
from rnnfast.interop import from_torch, to_torch  # noqa: E402

T_M, B_M, I_M, H_M, P_M = 5, 3, 4, 6, 3
LENGTHS = np.array([2, 5, 1])  # unsorted; torch cannot pack length 0
TORCH_DT = {np.float64: torch.float64, np.float32: torch.float32}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Any:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _torch_grads(
    mod: Any, x: np.ndarray, hx: Any, lengths: Any, dy: np.ndarray, dh: np.ndarray, dc: np.ndarray
) -> dict[str, Any]:
    """y, h_n, c_n and the gradients of <y,dy> + <h_n,dh> + <c_n,dc> by torch autograd (float64)."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    h0 = c0 = None
    if hx is not None:
        h0 = torch.tensor(hx[0], dtype=torch.float64, requires_grad=True)
        c0 = torch.tensor(hx[1], dtype=torch.float64, requires_grad=True)
    st = None if hx is None else (h0, c0)
    if lengths is not None:
        pk = pack_padded_sequence(
            xt, torch.from_numpy(lengths), batch_first=mod.batch_first, enforce_sorted=False
        )
        yp, (hn, cn) = mod(pk, st)
        y, _ = pad_packed_sequence(yp, batch_first=mod.batch_first, total_length=T_M)
    else:
        y, (hn, cn) = mod(xt, st)
    total = (y * torch.tensor(dy, dtype=torch.float64)).sum()
    total = total + (hn * torch.tensor(dh, dtype=torch.float64)).sum()
    total = total + (cn * torch.tensor(dc, dtype=torch.float64)).sum()
    named = list(mod.named_parameters())
    ins = [xt] + ([h0, c0] if hx is not None else []) + [p for _, p in named]
    gs = torch.autograd.grad(total, ins)
    out = {"y": y.detach().numpy(), "h_n": hn.detach().numpy(), "c_n": cn.detach().numpy()}
    out["x"] = gs[0].numpy()
    k = 1
    if hx is not None:
        out["h0"], out["c0"] = gs[1].numpy(), gs[2].numpy()
        k = 3
    out.update({n: g.numpy() for (n, _), g in zip(named, gs[k:])})
    return out


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=DT_IDS.get)
@pytest.mark.parametrize("ragged", [False, True], ids=["full", "packed"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_module_matches_torch(
    num_layers: int, bidirectional: bool, ragged: bool, dtype: Any
) -> None:
    D = 2 if bidirectional else 1
    torch.manual_seed(7 * num_layers + bidirectional)
    tmod = torch.nn.LSTM(
        I_M, H_M, num_layers, bidirectional=bidirectional, proj_size=P_M, dtype=TORCH_DT[dtype]
    )
    m = from_torch(tmod)
    oracle = copy.deepcopy(tmod).double()
    rng = np.random.default_rng(num_layers)
    L = num_layers * D
    x = rng.standard_normal((T_M, B_M, I_M)).astype(dtype)
    hx = (
        rng.uniform(-0.5, 0.5, (L, B_M, P_M)).astype(dtype),
        rng.uniform(-0.5, 0.5, (L, B_M, H_M)).astype(dtype),
    )
    dy = rng.standard_normal((T_M, B_M, D * P_M)).astype(dtype)
    dh = rng.standard_normal((L, B_M, P_M)).astype(dtype)
    dc = rng.standard_normal((L, B_M, H_M)).astype(dtype)
    lengths = LENGTHS if ragged else None
    exp = _torch_grads(oracle, x, hx, lengths, dy, dh, dc)

    out, (h_n, c_n) = m(x, hx, lengths=lengths)
    m.zero_grad()
    dx = m.backward(dy, (dh, dc))
    tag = f"L={num_layers} bi={bidirectional} ragged={ragged} {DT_IDS[dtype]}"
    assert (
        out.shape == (T_M, B_M, D * P_M)
        and h_n.shape == (L, B_M, P_M)
        and c_n.shape == (L, B_M, H_M)
    )
    tol, tolg = 10 * TOL[dtype], TOL_GRAD[dtype]
    assert_close(out, exp["y"], tol, f"{tag} out")
    assert_close(h_n, exp["h_n"], tol, f"{tag} h_n")
    assert_close(c_n, exp["c_n"], tol, f"{tag} c_n")
    assert_close(dx, exp["x"], tolg, f"{tag} dx")
    assert_close(m.grad_hx[0], exp["h0"], tolg, f"{tag} dh0")
    assert_close(m.grad_hx[1], exp["c0"], tolg, f"{tag} dc0")
    names = [n for n, _ in tmod.named_parameters()]
    assert list(m.grads) == names, f"{tag}: grad names {list(m.grads)} vs torch {names}"
    for n in names:
        assert m.grads[n].dtype == dtype
        assert_close(m.grads[n], exp[n], tolg, f"{tag} d{n}")


@pytest.mark.torch
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("eager", [True, False], ids=["eager", "ops"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_torch_dropin_matches_torch(bidirectional: bool, eager: bool, bias: bool) -> None:
    """rnnfast.torch.LSTM(proj_size): forward + backward (eager Function or the custom ops) against
    torch.nn.LSTM(proj_size) with the same state_dict, packed ragged batch, batch_first."""
    D, L = (2 if bidirectional else 1), 2
    torch.manual_seed(3)
    kw = dict(bias=bias, batch_first=True, bidirectional=bidirectional, proj_size=P_M)
    tmod = torch.nn.LSTM(I_M, H_M, L, dtype=torch.float64, **kw)
    fast = rt.LSTM(I_M, H_M, L, dtype=torch.float64, **kw)
    assert list(fast.state_dict()) == list(tmod.state_dict())
    fast.load_state_dict(tmod.state_dict())
    rng = np.random.default_rng(4)
    x = rng.standard_normal((B_M, T_M, I_M))
    hx = (rng.standard_normal((L * D, B_M, P_M)), rng.standard_normal((L * D, B_M, H_M)))
    dy = rng.standard_normal((B_M, T_M, D * P_M))
    dh, dc = rng.standard_normal((L * D, B_M, P_M)), rng.standard_normal((L * D, B_M, H_M))
    exp = _torch_grads(tmod, x, hx, LENGTHS, dy, dh, dc)
    old = rt.EAGER_FAST_PATH
    rt.EAGER_FAST_PATH = eager
    try:
        got = _torch_grads(fast, x, hx, LENGTHS, dy, dh, dc)
    finally:
        rt.EAGER_FAST_PATH = old
    for k, v in exp.items():
        assert_close(got[k], v, 1e-12, f"rnnfast.torch {k} (eager={eager}, bi={bidirectional})")
    # no grad: the inference path
    with torch.no_grad():
        y, (hn, cn) = fast(torch.tensor(x))
        yt, (hnt, cnt) = tmod(torch.tensor(x))
    assert_close(y.numpy(), yt.numpy(), 1e-12, "rnnfast.torch no_grad y")


@pytest.mark.torch
def test_torch_convert_and_errors() -> None:
    seq = torch.nn.Sequential(torch.nn.LSTM(I_M, H_M, proj_size=P_M, dtype=torch.float64))
    ref_out = seq(torch.zeros(T_M, B_M, I_M, dtype=torch.float64) + 0.3)[0]
    rt.convert(seq)
    assert type(seq[0]) is rt.LSTM and seq[0].proj_size == P_M
    assert "proj_size=3" in repr(seq[0])
    out = seq(torch.zeros(T_M, B_M, I_M, dtype=torch.float64) + 0.3)[0]
    assert_close(out.detach().numpy(), ref_out.detach().numpy(), 1e-12, "converted forward")
    rt.revert(seq)
    assert type(seq[0]) is torch.nn.LSTM and seq[0].proj_size == P_M
    fast = rt.LSTM(I_M, H_M, proj_size=P_M)
    with pytest.raises(RuntimeError, match=r"Expected hidden size \(1, 3, 3\)"):
        fast(torch.zeros(T_M, B_M, I_M), (torch.zeros(1, B_M, H_M), torch.zeros(1, B_M, H_M)))
    with pytest.raises(RuntimeError, match=r"Expected cell size \(1, 3, 6\)"):
        fast(torch.zeros(T_M, B_M, I_M), (torch.zeros(1, B_M, P_M), torch.zeros(1, B_M, P_M)))
    with pytest.raises(ValueError, match="proj_size has to be smaller"):
        rt.LSTM(I_M, H_M, proj_size=H_M)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=DT_IDS.get)
def test_state_dict_round_trip_with_torch(dtype: Any) -> None:
    tmod = torch.nn.LSTM(I_M, H_M, 2, bidirectional=True, proj_size=P_M, dtype=TORCH_DT[dtype])
    m = nn.LSTM(I_M, H_M, 2, bidirectional=True, proj_size=P_M, dtype=dtype, seed=0)
    sd_t = tmod.state_dict()
    sd = m.state_dict()
    assert list(sd) == list(sd_t), "state_dict names or order differ from torch"
    for k, v in sd.items():
        assert tuple(v.shape) == tuple(sd_t[k].shape), (
            f"{k}: shape {v.shape} vs {tuple(sd_t[k].shape)}"
        )
        assert v.dtype == dtype
    m.load_state_dict({k: v.numpy() for k, v in sd_t.items()})
    back = to_torch(m)
    assert back.proj_size == P_M
    for k, v in back.state_dict().items():
        assert torch.equal(v, sd_t[k]), f"{k} changed in the round trip"
    m2 = from_torch(back)
    assert m2.proj_size == P_M and m2.num_layers == 2 and m2.bidirectional
    for k, v in m2.state_dict().items():
        assert np.array_equal(v, sd_t[k].numpy()), f"{k} changed in from_torch"


# --------------------------------------------------------------------------------------------------
# module housekeeping
# --------------------------------------------------------------------------------------------------


def test_module_step_copy_config_and_errors() -> None:
    m = nn.LSTM(I_M, H_M, 2, proj_size=P_M, dtype=np.float64, seed=1)
    m.eval()
    rng = np.random.default_rng(8)
    x = rng.standard_normal((T_M, B_M, I_M))
    y, (h, c) = m(x)
    state = None
    for t in range(T_M):  # step() equals forward
        yt, state = m.step(x[t], state)
        assert_close(yt, y[t], 1e-13, f"step {t} out")
    assert_close(state[0], h, 1e-13, "step h")
    assert_close(state[1], c, 1e-13, "step c")
    m2 = copy.deepcopy(m)
    assert np.array_equal(m2(x)[0], y)
    from rnnfast.nn.config import model_from_config

    m3 = model_from_config(m.config())
    assert m3.proj_size == P_M and m3.output_size == P_M
    assert m.config()["proj_size"] == P_M and "proj_size" not in nn.LSTM(2, 3).config()
    for init in ("orthogonal", "identity"):
        mi = nn.LSTM(I_M, H_M, proj_size=P_M, init=init, dtype=np.float64, seed=0)
        assert mi.state_dict()["weight_hr_l0"].shape == (P_M, H_M)
        assert np.isfinite(mi(x)[0]).all()
    with pytest.raises(ValueError, match=r"proj_size: expected 0 <= proj_size < hidden_size = 6"):
        nn.LSTM(I_M, H_M, proj_size=H_M)
    with pytest.raises(ValueError, match="proj_size: expected an int >= 0"):
        nn.LSTM(I_M, H_M, proj_size=-1)
    with pytest.raises(ValueError, match=r"hx\[0\]: expected shape \(2, 3, 3\), got \(2, 3, 6\)"):
        m(x, (np.zeros((2, B_M, H_M)), np.zeros((2, B_M, H_M))))
    m.train()
    with pytest.raises(ValueError, match="stream_begin: LSTM\\(proj_size > 0\\)"):
        m.stream_begin(B_M, 2, 2)


# --------------------------------------------------------------------------------------------------
# tasks and CLI: cell "lstm_proj" with proj
# --------------------------------------------------------------------------------------------------


def test_task_and_cli_accept_lstm_proj(capsys: Any) -> None:
    from rnnfast.cli import main as cli_main
    from rnnfast.tasks import run_task

    seen: list[Any] = []
    res = run_task(
        "sine", cell="lstm_proj", proj=3, hidden=8, epochs=1, n_train=64, n_val=32,
        on_model=seen.append,
    )  # fmt: skip
    rnn = seen[0].rnn
    assert isinstance(rnn, nn.LSTM) and rnn.proj_size == 3 and rnn.hidden_size == 8
    assert np.isfinite(res.final["val_mse"])
    with pytest.raises(ValueError, match="proj: only the 'lstm_proj' cell takes one"):
        run_task("sine", cell="gru", proj=3, epochs=1, n_train=64, n_val=32)
    rc = cli_main(
        ["train", "--task", "sine", "--cell", "lstm_proj", "--proj", "2", "--hidden", "6",
         "--epochs", "1", "--n-train", "64"]
    )  # fmt: skip
    assert rc == 0 and "cell=lstm_proj" in capsys.readouterr().out


def test_checkpoint_round_trip_and_onnx_refusal(tmp_path: Any) -> None:
    from rnnfast import io
    from rnnfast.modules import build_model
    from rnnfast.nn.config import model_from_config

    m = build_model("lstm", 3, 8, 2, proj_size=4, mode="many_to_one", num_layers=2, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    pred = m(x)
    m.backward(np.ones_like(pred))  # many_to_one: the head's gradient enters h_n (P wide)
    assert (
        m.rnn.grads["weight_hr_l1"].shape == (4, 8)
        and np.abs(m.rnn.grads["weight_hr_l1"]).max() > 0
    )
    m.eval()
    pred = m(x)
    io.save(tmp_path / "m.rnnf", m)
    ck = io.load(tmp_path / "m.rnnf")
    m2 = ck.restore_model(model_from_config(ck.model_config))
    m2.eval()
    assert np.array_equal(m2(x), pred)
    onnx_mod = pytest.importorskip("rnnfast.onnx")
    with pytest.raises(ValueError, match="proj_size=4 cannot be exported to ONNX"):
        onnx_mod.export(m, tmp_path / "m.onnx")


@pytest.mark.torch
@pytest.mark.parametrize("bias,ragged,reverse", [(True, False, False), (False, True, True)])
def test_torch_opcheck_and_no_graph_break(bias: bool, ragged: bool, reverse: bool) -> None:
    """torch.library.opcheck of rnnfast::lstm_proj_forward / _backward (schema, fake kernel,
    autograd registration), and dynamo traces a projected stack without a graph break."""
    g = torch.Generator().manual_seed(0)

    def r(*shape: int) -> Any:
        return torch.randn(shape, generator=g, dtype=torch.float64).requires_grad_()

    H, P = H_M, P_M
    biases = (r(4 * H), r(4 * H)) if bias else (None, None)
    w = (r(4 * H, I_M), r(4 * H, P), *biases, r(P, H))
    lens = torch.from_numpy(LENGTHS) if ragged else None
    args = (r(T_M, B_M, I_M), r(B_M, P), r(B_M, H), *w, lens, reverse, True)
    ops = torch.ops.rnnfast
    result = torch.library.opcheck(ops.lstm_proj_forward, args)
    assert set(result.values()) == {"SUCCESS"}, result
    outs = ops.lstm_proj_forward(*args)
    base = [a.detach() if isinstance(a, torch.Tensor) else a for a in args[:10]]
    grads = [torch.randn_like(o).detach() for o in outs[:3]]
    result = torch.library.opcheck(ops.lstm_proj_backward, (outs[-1], *base, *grads))
    assert set(result.values()) == {"SUCCESS"}, result

    mod = rt.LSTM(I_M, H, num_layers=2, bidirectional=True, batch_first=True, proj_size=P)
    explanation = torch._dynamo.explain(mod)(torch.randn(B_M, T_M, I_M, requires_grad=True))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    torch._dynamo.reset()
