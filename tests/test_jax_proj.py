"""Tests of rnnfast.jax's LSTM with projection: ``rnnfast.jax.lstm(..., w_hr=W_hr)``, the custom_vjp
over the kernels of rnnfast._proj.

Skipped (with the reason) without jax. Oracles: a ``lax.scan`` construction of the projected LSTM
written below from PyTorch's formulas (h_t = W_hr (o_t * tanh(c_t)); ragged lengths as packed
sequences: (h, c) carried and y = 0 past a sequence's length), differentiated by JAX; and the
float64 reference (:func:`rnnfast.reference.lstm_proj_forward`) for the outputs. Checked: outputs
and the gradients of x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr in float32 and float64 under ``jit``
and ``grad``, with and without biases, full and ragged; ``vmap`` (shared weights folded into B,
vmapped weights, vmap of grad); eager calls, ``batch_first``, default states; the store's recompute
(``jax.checkpoint``); argument errors naming the argument.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="rnnfast.jax tests need jax")

import jax.numpy as jnp  # noqa: E402

import rnnfast.jax as rj  # noqa: E402
import test_jax  # noqa: E402
from helpers import assert_close  # noqa: E402
from rnnfast import reference as ref  # noqa: E402

__all__: list[str] = []

RTOL = {"float32": 2e-5, "float64": 1e-10}
T, B, I, H, P = 5, 3, 4, 6, 3
LENGTHS = np.array([5, 2, 0])
_CASES = ((LENGTHS, True), (None, False))  # (lengths, bias)
_W = ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr")

# from test_jax: the dtype fixture (float32, or float64 with jax_enable_x64 on) and the tree compare
dtype = test_jax.dtype
_compare = test_jax._compare


def scan_lstm_proj(x: Any, h0: Any, c0: Any, w: dict[str, Any], lengths: Any) -> tuple[Any, ...]:
    """(y (T, B, P), h_n (B, P), c_n (B, H)) of the LSTM with projection over time-major x, by
    lax.scan: a = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh (gates i, f, g, o), c_t = f c_{t-1} + i g,
    h_t = W_hr (o tanh(c_t)); steps t >= lengths[b] keep (h, c) and give y = 0."""
    hs = w["w_hr"].shape[1]
    b_i = 0.0 if w["b_ih"] is None else w["b_ih"]
    b_h = 0.0 if w["b_hh"] is None else w["b_hh"]
    lens = jnp.full((x.shape[1],), x.shape[0]) if lengths is None else jnp.asarray(lengths)

    def step(carry: Any, inp: Any) -> tuple[Any, Any]:
        h, c = carry
        xt, t = inp
        a = xt @ w["w_ih"].T + b_i + h @ w["w_hh"].T + b_h
        i_, f_, g_, o_ = (a[:, k * hs : (k + 1) * hs] for k in range(4))
        c_new = jax.nn.sigmoid(f_) * c + jax.nn.sigmoid(i_) * jnp.tanh(g_)
        h_new = (jax.nn.sigmoid(o_) * jnp.tanh(c_new)) @ w["w_hr"].T
        valid = (t < lens)[:, None]
        h_out, c_out = jnp.where(valid, h_new, h), jnp.where(valid, c_new, c)
        return (h_out, c_out), jnp.where(valid, h_new, 0.0)

    (h_n, c_n), y = jax.lax.scan(step, (h0, c0), (x, jnp.arange(x.shape[0])))
    return y, h_n, c_n


def _inputs(dtype: str, bias: bool = True, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)

    def u(*shape: int) -> Any:
        return jnp.asarray(rng.uniform(-0.5, 0.5, shape), dtype)

    p = {
        "x": jnp.asarray(rng.standard_normal((T, B, I)), dtype),
        "h0": u(B, P),
        "c0": u(B, H),
        "w_ih": u(4 * H, I),
        "w_hh": u(4 * H, P),
        "w_hr": u(P, H),
        "b_ih": u(4 * H),
        "b_hh": u(4 * H),
    }
    if not bias:
        del p["b_ih"], p["b_hh"]
    return p


def _call(fn: str, p: dict[str, Any], lengths: Any) -> tuple[Any, ...]:
    w = {k: p.get(k) for k in _W}
    if fn == "scan":
        return scan_lstm_proj(p["x"], p["h0"], p["c0"], w, lengths)
    y, (h, c) = rj.lstm(
        p["x"], (p["h0"], p["c0"]), w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"], w_hr=w["w_hr"],
        lengths=lengths,
    )  # fmt: skip
    return y, h, c


def _loss(fn: str, lengths: Any) -> Any:
    """p -> <y, dy> + <h_n, dh_n> + <c_n, dc_n> with fixed seeds (cos of an index ramp)."""

    def loss(p: dict[str, Any]) -> Any:
        total = 0.0
        for k, o in enumerate(_call(fn, p, lengths)):
            seed = jnp.cos(jnp.arange(o.size, dtype=o.dtype) * (0.7 + k)).reshape(o.shape)
            total = total + jnp.sum(o * seed)
        return total

    return loss


def _both_cases(fn: str) -> Any:
    """One jit'd function for both cases: [(outputs, loss, grads)] (one compile per side)."""

    def f(ps: list[dict[str, Any]]) -> Any:
        return [
            (_call(fn, p, ln), *jax.value_and_grad(_loss(fn, ln))(p))
            for p, (ln, _) in zip(ps, _CASES)
        ]

    return jax.jit(f)


def test_parity_outputs_and_grads(dtype: str) -> None:
    """Outputs and every gradient against the lax.scan oracle; outputs against the float64
    reference too; every stored forward is consumed by its backward."""
    rtol = RTOL[dtype]
    ps = [_inputs(dtype, bias=bias) for _, bias in _CASES]
    got = _both_cases("rj")(ps)
    want = _both_cases("scan")(ps)
    for (lengths, bias), p, (out, v, g), (out_ref, v_ref, g_ref) in zip(_CASES, ps, got, want):
        where = f"lstm_proj {dtype} lengths={lengths is not None} bias={bias}: "
        assert set(g) == set(p)
        assert out[0].shape == (T, B, P) and out[1].shape == (B, P) and out[2].shape == (B, H)
        _compare(out, out_ref, rtol, where)
        assert_close(v, v_ref, rtol, where + "loss")
        _compare(g, g_ref, rtol, where + "grad ")
        w = [None if p.get(k) is None else np.asarray(p[k], np.float64) for k in _W]
        x, h0, c0 = (np.asarray(p[k], np.float64) for k in ("x", "h0", "c0"))
        r = ref.lstm_proj_forward(x, h0, c0, *w, lengths=lengths, training=False)
        for name, o, e in zip(("y", "h_n", "c_n"), out, r[:3]):
            assert_close(np.asarray(o, np.float64), e, 10 * rtol, where + f"{name} vs reference")
    assert rj.cache_info()["entries"] == 0


def test_eager_batch_first_and_default_state() -> None:
    """Without jit (the callbacks then get jax Arrays): grad; batch_first; zero default states."""
    p = _inputs("float32")
    g = jax.grad(_loss("rj", LENGTHS))(p)
    g_ref = jax.jit(jax.grad(_loss("scan", LENGTHS)))(p)
    _compare(g, g_ref, RTOL["float32"], "eager grad ")
    w = [p.get(k) for k in _W]
    y, (h, c) = rj.lstm(jnp.swapaxes(p["x"], 0, 1), None, *w[:4], w_hr=w[4], batch_first=True)
    zeros = {k: jnp.zeros_like(p[k]) for k in ("h0", "c0")}
    want = scan_lstm_proj(p["x"], zeros["h0"], zeros["c0"], dict(zip(_W, w)), None)
    _compare((jnp.swapaxes(y, 0, 1), h, c), want, RTOL["float32"], "batch_first, no state ")


def test_vmap() -> None:
    """vmap against a Python loop over the instances: forward with shared weights (folded into B:
    one kernel call, whose c_n is H wide and h_n P wide) and with vmapped weights, vmap of grad."""
    rtol = RTOL["float32"]
    p = _inputs("float32")
    V = 2
    xs = jnp.stack([p["x"], 0.5 * p["x"]])  # (V, T, B, I)
    w_hrs = jnp.stack([p["w_hr"], -p["w_hr"]])

    def run(x: Any, w_hr: Any) -> Any:
        return _call("rj", {**p, "x": x, "w_hr": w_hr}, LENGTHS)

    def stack(trees: list[Any]) -> Any:
        return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)

    got = jax.jit(jax.vmap(run, in_axes=(0, None)))(xs, p["w_hr"])
    _compare(got, stack([run(xs[v], p["w_hr"]) for v in range(V)]), rtol, "vmap shared w ")
    got = jax.jit(jax.vmap(run, in_axes=(0, 0)))(xs, w_hrs)
    _compare(got, stack([run(xs[v], w_hrs[v]) for v in range(V)]), rtol, "vmap batched w ")
    loss = _loss("rj", LENGTHS)
    grad = jax.grad(lambda q, x: loss({**q, "x": x}))
    got = jax.jit(jax.vmap(grad, in_axes=(None, 0)))(p, xs)
    assert got["w_hr"].shape == (V, P, H)
    _compare(got, stack([grad(p, xs[v]) for v in range(V)]), rtol, "vmap(grad) ")
    assert rj.cache_info()["entries"] == 0


def test_recomputes_under_checkpoint() -> None:
    """jax.checkpoint rematerialises the forward in the backward pass (the store is bypassed)."""
    p = _inputs("float32")
    f = _loss("rj", LENGTHS)
    gc = jax.jit(jax.grad(jax.checkpoint(f)))(p)
    g_ref = jax.jit(jax.grad(_loss("scan", LENGTHS)))(p)
    _compare(gc, g_ref, RTOL["float32"], "checkpoint ")
    rj.clear_cache()


def test_errors_name_the_argument() -> None:
    p = _inputs("float32")
    x, st = p["x"], (p["h0"], p["c0"])
    w = [p[k] for k in _W]
    with pytest.raises(ValueError, match=r"w_hr: expected shape \(P, H\)"):
        rj.lstm(x, st, *w[:4], w_hr=p["w_hr"][0])
    with pytest.raises(ValueError, match=r"w_hh: expected shape \(24, 3\)"):
        rj.lstm(x, st, p["w_ih"], jnp.zeros((4 * H, H)), *w[2:4], w_hr=p["w_hr"])
    with pytest.raises(ValueError, match=r"w_ih: expected shape \(24, 4\)"):
        rj.lstm(x, st, p["w_ih"][:, :3], *w[1:4], w_hr=p["w_hr"])
    with pytest.raises(ValueError, match=r"h0: expected shape \(3, 3\)"):
        rj.lstm(x, (jnp.zeros((B, H)), p["c0"]), *w[:4], w_hr=p["w_hr"])
    with pytest.raises(ValueError, match=r"c0: expected shape \(3, 6\)"):
        rj.lstm(x, (p["h0"], jnp.zeros((B, P))), *w[:4], w_hr=p["w_hr"])
    with pytest.raises(TypeError, match="w_hr: expected dtype float32"):
        rj.lstm(x, st, *w[:4], w_hr=p["w_hr"].astype(jnp.int32))
