"""Tests of rnnfast.jax: the custom_vjp functions and the Flax linen modules.

Skipped (with the reason) without jax (and the Flax tests without flax/optax). The oracle is a
``lax.scan`` implementation of each cell written below from PyTorch's formulas (ragged lengths as
packed sequences: the state is carried and y = 0 past a sequence's length), differentiated by JAX.
Checked: outputs and gradients of every input (x, h0, c0, w_ih, w_hh, b_ih, b_hh) in float32 and
float64 (x64 switched on for those tests only, with ``jax.enable_x64``), under ``jit``, ``grad``
and ``vmap`` (forward, grad of vmap, vmap of grad), the Flax linen and nnx modules against
rnnfast's modules, and a Flax + optax training step that matches the same step with the lax.scan
model and lowers the loss.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="rnnfast.jax tests need jax")

import jax.numpy as jnp  # noqa: E402

import rnnfast.jax as rj  # noqa: E402
from helpers import GATES, assert_close  # noqa: E402
from rnnfast._cells import get_cell  # noqa: E402

__all__: list[str] = []

RTOL = {"float32": 2e-5, "float64": 1e-10}
CELLS = (("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh"))
T, B, I, H = 5, 3, 4, 6
LENGTHS = np.array([5, 2, 0])


@pytest.fixture(params=["float32", "float64"])
def dtype(request: Any) -> Iterator[str]:
    """The float dtype of a test; float64 runs with jax_enable_x64 on, restored afterwards."""
    if request.param == "float64":
        with jax.enable_x64(True):
            yield "float64"
    else:
        yield "float32"


# --------------------------------------------------------------------------------------------------
# lax.scan oracle
# --------------------------------------------------------------------------------------------------


def scan_cell(
    cell: str, nl: str, x: Any, state: Any, w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any, lengths: Any
) -> tuple[Any, Any]:
    """(y (T, B, H), final state) of one layer over time-major x, by lax.scan."""
    h_size = w_hh.shape[1]
    b_i = 0.0 if b_ih is None else b_ih
    b_h = 0.0 if b_hh is None else b_hh
    lens = jnp.full((x.shape[1],), x.shape[0]) if lengths is None else jnp.asarray(lengths)

    def step(carry: Any, inp: Any) -> tuple[Any, Any]:
        xt, t = inp
        h = carry[0] if get_cell(cell).has_cell_state else carry
        gi = xt @ w_ih.T + b_i
        gh = h @ w_hh.T + b_h
        if cell == "rnn":
            a = gi + gh
            new = jnp.tanh(a) if nl == "tanh" else jax.nn.relu(a)
            h_new = new
        elif cell == "gru":
            r = jax.nn.sigmoid(gi[:, :h_size] + gh[:, :h_size])
            z = jax.nn.sigmoid(gi[:, h_size : 2 * h_size] + gh[:, h_size : 2 * h_size])
            n = jnp.tanh(gi[:, 2 * h_size :] + r * gh[:, 2 * h_size :])
            h_new = new = (1 - z) * n + z * h
        else:
            g = gi + gh
            i_, f_, g_, o_ = (g[:, k * h_size : (k + 1) * h_size] for k in range(4))
            c = jax.nn.sigmoid(f_) * carry[1] + jax.nn.sigmoid(i_) * jnp.tanh(g_)
            h_new = jax.nn.sigmoid(o_) * jnp.tanh(c)
            new = (h_new, c)
        m = (t < lens)[:, None]
        y = jnp.where(m, h_new, 0.0)
        if get_cell(cell).has_cell_state:
            return (jnp.where(m, new[0], carry[0]), jnp.where(m, new[1], carry[1])), y
        return jnp.where(m, new, carry), y

    final, y = jax.lax.scan(step, state, (x, jnp.arange(x.shape[0])))
    return y, final


def _inputs(cell: str, dtype: str, seed: int = 0, bias: bool = True) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    g = GATES[cell]

    def a(*shape: int, scale: float = 1.0) -> Any:
        return jnp.asarray(rng.standard_normal(shape) * scale, dtype=dtype)

    d = {"x": a(T, B, I), "h0": a(B, H, scale=0.5)}
    if get_cell(cell).has_cell_state:
        d["c0"] = a(B, H, scale=0.5)
    d["w_ih"] = a(g * H, I, scale=0.4)
    d["w_hh"] = a(g * H, H, scale=0.4)
    if bias:
        d["b_ih"] = a(g * H, scale=0.2)
        d["b_hh"] = a(g * H, scale=0.2)
    return d


def _call(fn: str, cell: str, nl: str, p: dict[str, Any], lengths: Any) -> tuple[Any, Any]:
    """(y, final state) of rnnfast.jax (fn="rj") or the oracle (fn="scan")."""
    b_ih, b_hh = p.get("b_ih"), p.get("b_hh")
    state = (p["h0"], p["c0"]) if get_cell(cell).has_cell_state else p["h0"]
    if fn == "scan":
        return scan_cell(cell, nl, p["x"], state, p["w_ih"], p["w_hh"], b_ih, b_hh, lengths)
    args = (p["x"], state, p["w_ih"], p["w_hh"], b_ih, b_hh)
    if cell == "rnn":
        return rj.rnn(*args, nonlinearity=nl, lengths=lengths)
    return getattr(rj, cell)(*args, lengths=lengths)


def _loss(fn: str, cell: str, nl: str, lengths: Any) -> Any:
    """A scalar of every output, with different weights so that no cotangent is trivial."""

    def f(p: dict[str, Any]) -> Any:
        y, final = _call(fn, cell, nl, p, lengths)
        w = jnp.arange(1, y.size + 1, dtype=y.dtype).reshape(y.shape) / y.size
        total = jnp.sum(jnp.sin(y) * w)
        for s in final if isinstance(final, tuple) else (final,):
            total = total + jnp.sum(s**2)
        return total

    return f


def _compare(a: Any, b: Any, rtol: float, where: str) -> None:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb), f"{where}: {len(la)} leaves vs {len(lb)}"
    paths = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_leaves_with_path(a)]
    for path, x, y in zip(paths, la, lb):
        assert x.dtype == y.dtype, f"{where}{path}: dtype {x.dtype} vs {y.dtype}"
        assert_close(x, y, rtol, f"{where}{path}")


# --------------------------------------------------------------------------------------------------
# parity: outputs and gradients of every input
# --------------------------------------------------------------------------------------------------


def _outputs_and_grads(fn: str, cell: str, nl: str, lengths: Any) -> Any:
    """jit'd p -> (outputs, loss, gradients of every input)."""
    loss = _loss(fn, cell, nl, lengths)
    return jax.jit(lambda p: (_call(fn, cell, nl, p, lengths), *jax.value_and_grad(loss)(p)))


_CASES = ((LENGTHS, True), (None, False))  # (lengths, bias)


def _both_cases(fn: str, cell: str, nl: str) -> Any:
    """One jit'd function for both cases (one compile per side: JAX compile time dominates)."""

    def f(ps: list[dict[str, Any]]) -> Any:
        return [
            (_call(fn, cell, nl, p, ln), *jax.value_and_grad(_loss(fn, cell, nl, ln))(p))
            for p, (ln, _) in zip(ps, _CASES)
        ]

    return jax.jit(f)


@pytest.mark.parametrize("cell,nl", CELLS)
def test_parity_outputs_and_grads(cell: str, nl: str, dtype: str) -> None:
    rtol = RTOL[dtype]
    ps = [_inputs(cell, dtype, bias=bias) for _, bias in _CASES]
    got = _both_cases("rj", cell, nl)(ps)
    want = _both_cases("scan", cell, nl)(ps)
    for (lengths, bias), p, (out, v, g), (out_ref, v_ref, g_ref) in zip(_CASES, ps, got, want):
        where = f"{cell}/{nl} {dtype} lengths={lengths is not None} bias={bias}: "
        assert set(g) == set(p)
        _compare(out, out_ref, rtol, where)
        assert_close(v, v_ref, rtol, where + "loss")
        _compare(g, g_ref, rtol, where + "grad ")
    assert rj.cache_info()["entries"] == 0  # every stored forward was consumed by its backward


def test_eager_grad() -> None:
    """Without jit (the callbacks then get jax Arrays): forward and grad."""
    p = _inputs("lstm", "float32")
    g = jax.grad(_loss("rj", "lstm", "tanh", LENGTHS))(p)
    _, _, g_ref = _outputs_and_grads("scan", "lstm", "tanh", LENGTHS)(p)
    _compare(g, g_ref, RTOL["float32"], "eager grad ")


def test_batch_first_and_default_state() -> None:
    p = _inputs("gru", "float32")
    y, h = rj.gru(jnp.swapaxes(p["x"], 0, 1), None, p["w_ih"], p["w_hh"], batch_first=True)
    y_ref, h_ref = scan_cell("gru", "tanh", p["x"], jnp.zeros((B, H)), p["w_ih"], p["w_hh"],
                             None, None, None)  # fmt: skip
    assert_close(jnp.swapaxes(y, 0, 1), y_ref, RTOL["float32"], "batch_first y")
    assert_close(h, h_ref, RTOL["float32"], "batch_first h_n")
    y, (h, c) = rj.lstm(p["x"], None, *(_inputs("lstm", "float32")[k] for k in ("w_ih", "w_hh")))
    assert y.shape == (T, B, H) and h.shape == c.shape == (B, H)


# --------------------------------------------------------------------------------------------------
# vmap
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell,nl", [("lstm", "tanh"), ("gru", "tanh")])
def test_vmap(cell: str, nl: str) -> None:
    """vmap against a Python loop over the instances of the unbatched function (itself checked
    against lax.scan above): forward with shared and with vmapped weights, grad of vmap, vmap of
    grad (per-instance weight gradients), and jacrev (vmap over the cotangents only)."""
    rtol = RTOL["float32"]
    p = _inputs(cell, "float32")
    V = 2
    xs = jnp.stack([p["x"], 0.5 * p["x"]])  # (V, T, B, I)
    w_hhs = jnp.stack([p["w_hh"], -p["w_hh"]])

    def run(x: Any, w_hh: Any) -> Any:
        return _call("rj", cell, nl, {**p, "x": x, "w_hh": w_hh}, LENGTHS)

    def stack(trees: list[Any]) -> Any:
        return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)

    # forward, shared weights (folded into B: one kernel call) and vmapped weights (one each)
    got = jax.jit(jax.vmap(run, in_axes=(0, None)))(xs, p["w_hh"])
    _compare(got, stack([run(xs[v], p["w_hh"]) for v in range(V)]), rtol, "vmap shared w ")
    got = jax.jit(jax.vmap(run, in_axes=(0, 0)))(xs, w_hhs)
    _compare(got, stack([run(xs[v], w_hhs[v]) for v in range(V)]), rtol, "vmap batched w ")
    assert rj.cache_info()["entries"] == 0  # inference stores nothing

    loss = _loss("rj", cell, nl, LENGTHS)
    grad = jax.grad(lambda q, x: loss({**q, "x": x}))
    per_instance = [grad(p, xs[v]) for v in range(V)]

    # grad of vmap: weight gradients summed over the vmapped instances
    def total(q: dict[str, Any]) -> Any:
        return jnp.sum(jax.vmap(lambda x: loss({**q, "x": x}))(xs))

    want = jax.tree_util.tree_map(lambda *a: sum(a), *per_instance)
    want["x"] = jnp.zeros_like(p["x"])  # x is replaced by xs inside total
    got = jax.jit(jax.grad(total))(p)
    got["x"] = want["x"]
    _compare(got, want, rtol, f"{cell} grad(vmap) ")

    # vmap of grad: per-instance gradients
    got = jax.jit(jax.vmap(grad, in_axes=(None, 0)))(p, xs)
    assert got["w_ih"].shape == (V, *p["w_ih"].shape)
    _compare(got, stack(per_instance), rtol, f"{cell} vmap(grad) ")
    assert rj.cache_info()["entries"] == 0
    if get_cell(cell).has_cell_state:
        return  # the rest exercises nothing cell-specific

    # jacrev: the vjp function vmapped over the cotangents only (one stored forward serves all)
    def last(w: Any) -> Any:
        return _call("rj", cell, nl, {**p, "w_hh": w}, LENGTHS)[0][-1, 0]  # (H,)

    jac = jax.jit(jax.jacrev(last))(p["w_hh"])
    _, vjp = jax.vjp(last, p["w_hh"])
    rows = [vjp(jnp.eye(H, dtype=jnp.float32)[k])[0] for k in range(H)]  # recomputes after one
    assert_close(jac, jnp.stack(rows), rtol, f"{cell} jacrev")
    assert rj.cache_info()["entries"] == 0


def test_pure_callback_fallback(monkeypatch: Any) -> None:
    """Without the host-call primitive (another jax version, RNNFAST_JAX_CALLBACK=pure) the same
    functions run on jax.pure_callback with the same results, vmap included."""
    p = _inputs("gru", "float32")
    want = _both_cases("rj", "gru", "tanh")([p, _inputs("gru", "float32", bias=False)])
    xs = jnp.stack([p["x"], 0.5 * p["x"]])
    grad = jax.grad(lambda q, x: _loss("rj", "gru", "tanh", LENGTHS)({**q, "x": x}))
    vg = jax.jit(jax.vmap(grad, in_axes=(None, 0)))(p, xs)
    monkeypatch.setattr(rj, "_HOST_PRIMITIVE", None)
    got = _both_cases("rj", "gru", "tanh")([p, _inputs("gru", "float32", bias=False)])
    _compare(got, want, 0.0, "pure_callback ")
    _compare(jax.jit(jax.vmap(grad, in_axes=(None, 0)))(p, xs), vg, 0.0, "pure_callback vmap ")
    assert rj.cache_info()["entries"] == 0


# --------------------------------------------------------------------------------------------------
# the host store of forward activations
# --------------------------------------------------------------------------------------------------


def test_store_recomputes_when_dropped() -> None:
    p = _inputs("gru", "float32")
    f = _loss("rj", "gru", "tanh", LENGTHS)
    y, vjp = jax.vjp(f, p)
    assert rj.cache_info()["entries"] == 1
    rj.clear_cache()
    assert rj.cache_info() == {"entries": 0, "bytes": 0}
    (g1,) = vjp(jnp.ones_like(y))  # recomputes the forward
    (g2,) = vjp(jnp.ones_like(y))  # again (the first call would have consumed a stored one)
    _, _, g_ref = _outputs_and_grads("scan", "gru", "tanh", LENGTHS)(p)
    _compare(g1, g_ref, RTOL["float32"], "recomputed ")
    _compare(g2, g_ref, RTOL["float32"], "second vjp call ")
    assert rj.cache_info()["entries"] == 0
    # jax.checkpoint: the forward is rematerialised in the backward pass
    gc = jax.jit(jax.grad(jax.checkpoint(f)))(p)
    _compare(gc, g_ref, RTOL["float32"], "checkpoint ")
    rj.clear_cache()


def test_errors() -> None:
    p = _inputs("gru", "float32")
    with pytest.raises(TypeError, match="w_hh: expected dtype float32"):
        rj.gru(p["x"], None, p["w_ih"], p["w_hh"].astype(jnp.int32))
    with pytest.raises(ValueError, match=r"w_ih: expected shape \(3\*H, 4\)"):
        rj.gru(p["x"], None, p["w_ih"][:, :3], p["w_hh"])
    with pytest.raises(ValueError, match=r"h0: expected shape \(3, 6\)"):
        rj.gru(p["x"], p["h0"][:2], p["w_ih"], p["w_hh"])
    with pytest.raises(ValueError, match="b_ih, b_hh: expected both"):
        rj.gru(p["x"], None, p["w_ih"], p["w_hh"], p["b_ih"])
    with pytest.raises(TypeError, match="lengths: expected an integer array"):
        rj.gru(p["x"], None, p["w_ih"], p["w_hh"], lengths=jnp.ones(3))
    with pytest.raises(ValueError, match="nonlinearity"):
        rj.rnn(p["x"], None, p["w_ih"][:H], p["w_hh"][:H, :], nonlinearity="gelu")
    with pytest.raises(TypeError, match=r"state: expected \(h0, c0\)"):
        rj.lstm(p["x"], p["h0"], *(_inputs("lstm", "float32")[k] for k in ("w_ih", "w_hh")))


# --------------------------------------------------------------------------------------------------
# Flax linen modules and an optax training step
# --------------------------------------------------------------------------------------------------


def test_linen_modules_match_rnnfast_modules() -> None:
    pytest.importorskip("flax", reason="the Flax modules need flax")
    from rnnfast.modules import GRU, LSTM, RNN

    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 3, 4)).astype(np.float32)
    lengths = np.array([6, 2, 0])
    for mod, ref_cls, kw in (
        (rj.RNN, RNN, {"nonlinearity": "relu"}),
        (rj.LSTM, LSTM, {"bidirectional": True}),
        (rj.GRU, GRU, {"num_layers": 2, "bidirectional": True}),
    ):
        m = mod(hidden_size=5, **kw)
        (out, hn), v = m.init_with_output(jax.random.PRNGKey(0), x, lengths=lengths)
        ref = ref_cls(4, 5, **kw).eval()
        assert set(v["params"]) == set(ref.state_dict())  # PyTorch's names
        ref.load_state_dict({k: np.asarray(a) for k, a in v["params"].items()})
        o_ref, h_ref = ref(x, lengths=lengths)
        assert_close(out, o_ref, RTOL["float32"], f"{mod.__name__} out")
        _compare(hn, jax.tree_util.tree_map(jnp.asarray, h_ref), RTOL["float32"], "h_n ")


def test_nnx_modules_match_rnnfast_modules() -> None:
    pytest.importorskip("flax", reason="the Flax modules need flax")
    from flax import nnx

    from rnnfast.modules import GRU, LSTM

    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 3, 4)).astype(np.float32)
    lengths = np.array([5, 1, 0])
    for mod, ref_cls, kw in (
        (rj.nnx.LSTM, LSTM, {"num_layers": 2, "bidirectional": True}),
        (rj.nnx.GRU, GRU, {}),
    ):
        m = mod(4, 5, rngs=nnx.Rngs(0), **kw)
        out, hn = m(x, lengths=lengths)
        ref = ref_cls(4, 5, **kw).eval()
        params = {k: np.asarray(v[...]) for k, v in nnx.state(m, nnx.Param).items()}
        assert set(params) == set(ref.state_dict())  # PyTorch's names
        ref.load_state_dict(params)
        o_ref, h_ref = ref(x, lengths=lengths)
        assert_close(out, o_ref, RTOL["float32"], f"nnx {mod.__name__} out")
        _compare(hn, jax.tree_util.tree_map(jnp.asarray, h_ref), RTOL["float32"], "nnx h_n ")
    g = nnx.grad(lambda m: jnp.sum(m(x, lengths=lengths)[0] ** 2))(m)
    assert np.all(np.isfinite(np.asarray(g["weight_hh_l0"][...])))


def test_flax_optax_training_step() -> None:
    """One optax step on a linen GRU + Dense head equals the same step computed with the lax.scan
    cell (loss, gradients, updated parameters), and a few steps lower the loss."""
    pytest.importorskip("flax", reason="the Flax training test needs flax")
    optax = pytest.importorskip("optax", reason="the Flax training test needs optax")
    import flax.linen as nn

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x: Any, lengths: Any) -> Any:
            _, h_n = rj.GRU(hidden_size=8)(x, lengths=lengths)
            return nn.Dense(1)(h_n[-1])

    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((7, 16, 3)), jnp.float32)
    lengths = jnp.asarray(rng.integers(1, 8, size=16))
    target = jnp.sum(x[0], axis=1, keepdims=True)  # remember the first step
    model = Model()
    params = model.init(jax.random.PRNGKey(0), x, lengths)
    opt = optax.adam(1e-2)

    @jax.jit
    def loss_rj(params: Any) -> Any:
        return jnp.mean((model.apply(params, x, lengths) - target) ** 2)

    def loss_scan(params: Any) -> Any:
        q = params["params"]["GRU_0"]
        _, h = scan_cell("gru", "tanh", x, jnp.zeros((16, 8)), q["weight_ih_l0"],
                         q["weight_hh_l0"], q["bias_ih_l0"], q["bias_hh_l0"], lengths)  # fmt: skip
        d = params["params"]["Dense_0"]
        return jnp.mean((h @ d["kernel"] + d["bias"] - target) ** 2)

    def make_step(loss: Any) -> Any:
        @jax.jit
        def step(params: Any, state: Any) -> Any:
            value, grads = jax.value_and_grad(loss)(params)
            updates, state = opt.update(grads, state, params)
            return optax.apply_updates(params, updates), state, value, grads

        return step

    step_rj, step_scan = make_step(loss_rj), make_step(loss_scan)
    p1, _, v1, g1 = step_rj(params, opt.init(params))
    p2, _, v2, g2 = step_scan(params, opt.init(params))
    assert_close(v1, v2, RTOL["float32"], "loss")
    _compare(g1, g2, RTOL["float32"], "grads ")
    _compare(p1, p2, RTOL["float32"], "updated params ")
    state = opt.init(params)
    first = None
    for _ in range(15):
        params, state, value, _ = step_rj(params, state)
        first = value if first is None else first
    assert float(loss_rj(params)) < 0.9 * float(first), (float(first), float(loss_rj(params)))
