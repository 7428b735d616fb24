"""Fuzz harness for the compiled bindings and the functional API (issue 6).

Hypothesis draws random cells, sizes (including 0), dtypes (float32/float64 and hostile ones),
per-argument shape perturbations, memory layouts (Fortran order, negative strides, strided and
zero-stride views, read-only) and lengths, and calls either ``rnnfast.functional`` or the raw
compiled module (``rnnfast._loader.core``, whose own checks are the last line of defence), then
backward and by random truncated-BPTT stream call sequences. Every call must either raise
ValueError, TypeError or MemoryError, or return outputs of the right shape and dtype that equal the
result for the same data in C-contiguous float64 within tolerance (checked against
rnnfast.reference).

A crash (segfault, abort, sanitizer report) kills this process; run it in a subprocess (as
tests/test_fuzz.py does) so that the crash fails a test instead of the test runner. Before every
example its description is appended to ``--log`` (flushed), so the last line of the log is the input
that crashed.

    python tests/fuzz/fuzz_bindings.py --examples 20000         # the long run (docs/RELIABILITY.md)
    python tests/fuzz/fuzz_bindings.py --examples 250 --seed 1  # the bounded run of the suite
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import rnnfast
from rnnfast import functional as F
from rnnfast import reference as R
from rnnfast._cells import get_cell
from rnnfast._loader import core

__all__ = ["main"]

# the cells whose argument lists this fuzzer writes; their gate counts from the registry
GATES = {c: get_cell(c).gates for c in ("rnn", "lstm", "gru")}
ACCEPTED = (ValueError, TypeError, MemoryError)
HOSTILE_DTYPES = [np.float16, np.int32, np.int64, np.bool_, np.complex64, np.uint8, object]

_LOG: Any = None
_COUNTS = {"examples": 0, "rejected": 0, "checked": 0, "stream_calls": 0}


def log(msg: str) -> None:
    if _LOG is not None:
        _LOG.write(msg + "\n")
        _LOG.flush()


def layout(a: np.ndarray, how: str) -> np.ndarray:
    """The same values as ``a`` in another memory layout."""
    if a.ndim == 0 or how == "c":
        return a
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "reversed":
        return np.ascontiguousarray(a[::-1])[::-1]
    if how == "strided":
        big = np.zeros(tuple(2 * n + 1 for n in a.shape), a.dtype)
        view = big[tuple(slice(1, None, 2) for _ in a.shape)]
        view[...] = a
        return view
    if how == "readonly":
        b = a.copy()
        b.flags.writeable = False
        return b
    if how == "broadcast" and a.size and np.all(a == a.flat[0]):
        return np.broadcast_to(a.flat[0], a.shape)
    return a


LAYOUTS = ["c", "fortran", "reversed", "strided", "readonly", "broadcast"]


@st.composite
def calls(draw: Any) -> dict[str, Any]:
    cell = draw(st.sampled_from(["rnn", "lstm", "gru"]))
    g = GATES[cell]
    size = st.sampled_from([0, 1, 1, 2, 2, 3, 3, 4, 5, 7])
    T, B, I, H = draw(size), draw(size), draw(size), draw(size)  # noqa: E741 - the dimension names
    # valid calls (only layouts vary), one bad argument, or several
    mode = draw(st.sampled_from(["valid", "valid", "one_bad", "chaos"]))
    bad_one = draw(st.sampled_from(["x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh"]))
    no_bias = draw(st.booleans())
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shapes = {
        "x": (T, B, I),
        "h0": (B, H),
        "c0": (B, H),
        "w_ih": (g * H, I),
        "w_hh": (g * H, H),
        "b_ih": (g * H,),
        "b_hh": (g * H,),
    }
    args: dict[str, Any] = {}
    desc: list[str] = []
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    for name, shape in shapes.items():
        bad = ["shape", "ndim", "dtype", "hostile_dtype"]
        if mode == "chaos":
            choice = draw(st.sampled_from(["ok"] * 6 + ["none"] + bad))
        elif mode == "one_bad" and name == bad_one:
            choice = draw(st.sampled_from(bad))
        elif name in ("h0", "c0"):
            choice = draw(st.sampled_from(["ok", "none"]))
        elif name in ("b_ih", "b_hh") and no_bias:
            choice = "none"
        else:
            choice = "ok"
        if name in ("x", "w_ih", "w_hh") and choice == "none":
            choice = "ok"
        if choice == "none":
            args[name] = None
            desc.append(f"{name}=None")
            continue
        shp = shape
        dt: Any = dtype
        if choice == "shape" and shape:
            axis = draw(st.integers(0, len(shape) - 1))
            shp = tuple(
                n + draw(st.sampled_from([-1, 1, 2])) if k == axis else n
                for k, n in enumerate(shape)
            )
            shp = tuple(max(n, 0) for n in shp)
        elif choice == "ndim":
            shp = shape + (1,) if draw(st.booleans()) else shape[1:]
        elif choice == "dtype":
            dt = np.float64 if dtype == np.float32 else np.float32
        elif choice == "hostile_dtype":
            dt = draw(st.sampled_from(HOSTILE_DTYPES))
        scale = 0.5 if name != "x" else 1.0
        vals = rng.standard_normal(shp) * scale
        if draw(st.integers(0, 15)) == 0 and vals.size:
            vals.flat[draw(st.integers(0, vals.size - 1))] = draw(
                st.sampled_from([np.nan, np.inf, -np.inf, 1e30])
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # casting NaN/Inf to integer dtypes
            arr = vals.astype(dt) if dt is not object else vals.astype(object)
        how = draw(st.sampled_from(LAYOUTS))
        args[name] = layout(arr, how)
        desc.append(
            f"{name}:{choice},{np.dtype(dt).name if dt is not object else 'object'},{shp},{how}"
        )
    if (args["b_ih"] is None) != (args["b_hh"] is None) and draw(st.booleans()):
        args["b_hh"] = None
        args["b_ih"] = None
    lengths_kinds = (
        ["none", "valid"]
        if mode == "valid"
        else ["none"] * 3 + ["valid", "negative", "too_big", "count", "float"]
    )
    lengths_kind = draw(st.sampled_from(lengths_kinds))
    lengths: Any = None
    if lengths_kind == "valid":
        lengths = rng.integers(0, T + 1, size=B)
    elif lengths_kind == "negative":
        lengths = np.full(B, -1)
    elif lengths_kind == "too_big":
        lengths = np.full(B, T + 1)
    elif lengths_kind == "count":
        lengths = rng.integers(0, T + 1, size=B + 1)
    elif lengths_kind == "float":
        lengths = np.full(B, 1.0)
    if lengths is not None:
        lengths = layout(np.asarray(lengths), draw(st.sampled_from(LAYOUTS)))
    return {
        "cell": cell,
        "args": args,
        "lengths": lengths,
        "training": draw(st.booleans()),
        "raw": draw(st.booleans()),
        "nonlinearity": draw(
            st.sampled_from(["tanh", "relu"] if mode == "valid" else ["tanh", "relu", "bogus"])
        ),
        "desc": f"{mode} {cell} T={T} B={B} I={I} H={H} {np.dtype(dtype).name} "
        f"lengths={lengths_kind} " + " ".join(desc),
    }


def call_forward(c: dict[str, Any]) -> Any:
    a, cell, nl = c["args"], c["cell"], c["nonlinearity"]
    if c["raw"]:  # the compiled module directly: its own checks must hold
        return core.sequence_forward(
            cell,
            a["x"],
            a["h0"],
            a["c0"] if cell == "lstm" else None,
            a["w_ih"],
            a["w_hh"],
            a["b_ih"],
            a["b_hh"],
            None,
            c["lengths"],
            nl,
            c["training"],
        )
    kw = {"lengths": c["lengths"], "training": c["training"]}
    if cell == "rnn":
        return F.rnn_forward(
            a["x"], a["h0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], nonlinearity=nl, **kw
        )
    if cell == "lstm":
        return F.lstm_forward(
            a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], **kw
        )
    return F.gru_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], **kw)


def check_against_reference(c: dict[str, Any], out: Any) -> None:
    """A call that was accepted must equal the float64 reference on the same values."""
    a, cell = c["args"], c["cell"]
    x = np.asarray(a["x"])
    T, B, _ = x.shape
    dt = x.dtype
    H = np.asarray(a["w_hh"]).shape[1]
    y = out[0]
    assert y.shape == (T, B, H) and y.dtype == dt, f"y: shape {y.shape} dtype {y.dtype}"
    assert out[1].shape == (B, H) and out[1].dtype == dt
    if not c["raw"] and not c["training"]:
        assert out[-1] is None, "training=False must give cache None"

    def f64(v: Any) -> Any:
        return None if v is None else np.array(v, dtype=np.float64)

    if T == 0 or B == 0 or H == 0:  # the raw core accepts empty sizes: empty y, h_n = h0
        if T == 0 and B * H:
            h0 = np.zeros((B, H), dt) if a["h0"] is None else np.asarray(a["h0"])
            np.testing.assert_array_equal(out[1], h0, err_msg="T=0: h_n must be h0")
        _COUNTS["checked"] += 1
        return
    xx, w_ih = f64(a["x"]), f64(a["w_ih"])
    if xx.shape[2] == 0:  # I = 0: same as one input that is always 0 (reference.py needs I >= 1)
        xx, w_ih = np.zeros((T, B, 1)), np.zeros((w_ih.shape[0], 1))
    ref_args = [xx, f64(a["h0"])]
    if cell == "lstm":
        ref_args.append(f64(a["c0"]))
    ref_args += [w_ih, f64(a["w_hh"]), f64(a["b_ih"]), f64(a["b_hh"])]
    kw: dict[str, Any] = {"lengths": None if c["lengths"] is None else np.array(c["lengths"])}
    if cell == "rnn":
        kw["nonlinearity"] = c["nonlinearity"]
    with np.errstate(all="ignore"):
        ref = getattr(R, f"{cell}_forward")(*ref_args, **kw)
        tol = 1e-4 if dt == np.float32 else 1e-10
        lengths = kw["lengths"]
        if lengths is not None:
            # padded steps: y exactly 0; h_n = state after the last valid step (h0 if none)
            valid = np.arange(T)[:, None] < lengths[None, :]
            assert np.all(y[~valid] == 0), "y is not 0 at padded steps"
            h0 = np.zeros((B, H)) if ref_args[1] is None else ref_args[1]
            for b in range(B):
                want = h0[b] if lengths[b] == 0 else y[lengths[b] - 1, b]
                np.testing.assert_array_equal(
                    out[1][b], np.asarray(want, dtype=dt), err_msg=f"h_n[{b}]"
                )
        # Inf/NaN inputs included: the reference selects padded steps away as the kernels skip them,
        # so a NaN must appear exactly where the reference has one, padded steps and h_n included.
        for k, (w, g) in enumerate(zip(ref[:2], out[:2])):
            w = np.asarray(w)
            g = g.astype(np.float64)
            same_nan = np.isnan(w) == np.isnan(g)
            assert same_nan.all(), (
                f"output {k}: NaN pattern differs from the reference at "
                f"{np.argwhere(~same_nan)[:4].tolist()} (reference NaN: "
                f"{np.isnan(w)[~same_nan][:4].tolist()})"
            )
            fin = np.isfinite(w) & np.isfinite(g)
            err = np.abs(w[fin] - g[fin]) - tol * (1 + np.abs(w[fin]))
            assert err.size == 0 or err.max() <= 0, (
                f"output {k}: max error {np.max(np.abs(w[fin] - g[fin]))}"
            )
    _COUNTS["checked"] += 1


def maybe_backward(c: dict[str, Any], out: Any, draw_dy: Any) -> None:
    if not c["training"] or c["raw"]:
        return
    cache = out[-1]
    y = out[0]
    back = getattr(F, f"{c['cell']}_backward")
    dy = draw_dy(y)
    try:
        grads = back(cache, dy)
    except ACCEPTED:
        _COUNTS["rejected"] += 1
        return
    assert grads["x"].shape == np.asarray(c["args"]["x"]).shape
    assert grads["w_hh"].shape == np.asarray(c["args"]["w_hh"]).shape


def run_stream(data: Any) -> None:
    """A random sequence of TBPTTStream calls, valid and invalid."""
    cell = data.draw(st.sampled_from(["rnn", "lstm", "gru"]))
    g, I, H, B = (  # noqa: E741
        GATES[cell],
        data.draw(st.integers(1, 3)),
        data.draw(st.integers(1, 3)),
        data.draw(st.integers(1, 3)),
    )
    k1 = data.draw(st.integers(1, 3))
    k2 = data.draw(st.integers(k1, 6))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    p = {
        "w_ih": rng.standard_normal((g * H, I)),
        "w_hh": rng.standard_normal((g * H, H)),
        "b_ih": None,
        "b_hh": None,
    }
    log(f"  stream {cell} B={B} I={I} H={H} k1={k1} k2={k2}")
    s = F.TBPTTStream(cell, p, None, k1, k2)
    for _ in range(data.draw(st.integers(1, 12))):
        op = data.draw(
            st.sampled_from(
                ["forward"] * 4
                + ["backward"] * 2
                + ["bad_forward", "bad_backward", "reset", "state", "params"]
            )
        )
        _COUNTS["stream_calls"] += 1
        log(f"    {op} at position {s.position}")
        try:
            if op == "forward":
                L = data.draw(st.integers(1, k1))
                y = s.forward(
                    layout(rng.standard_normal((L, B, I)), data.draw(st.sampled_from(LAYOUTS)))
                )
                assert y.shape == (L, B, H)
            elif op == "backward":
                start, stop = s.window
                out = s.backward(rng.standard_normal((stop - start, B, H)))
                assert out["w_hh"].shape == (g * H, H)
            elif op == "bad_forward":
                L = data.draw(st.integers(0, k1 + 2))
                s.forward(rng.standard_normal((L, data.draw(st.integers(0, B + 1)), I)))
            elif op == "bad_backward":
                start, stop = s.window
                s.backward(
                    rng.standard_normal((stop - start + data.draw(st.sampled_from([-1, 1])), B, H))
                )
            elif op == "reset":
                s.reset_state(rng.integers(-B, B, size=data.draw(st.integers(0, 3))))
            elif op == "state":
                h = rng.standard_normal((B, H + data.draw(st.sampled_from([0, 0, 1]))))
                s.state = (h, h) if cell == "lstm" else h
            else:
                s.set_params({k: (None if v is None else v + 0.01) for k, v in p.items()})
        except ACCEPTED:
            _COUNTS["rejected"] += 1


def make_test(examples: int, seed_value: int) -> Any:
    @seed(seed_value)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(c=calls(), data=st.data())
    def fuzz(c: dict[str, Any], data: Any) -> None:
        _COUNTS["examples"] += 1
        log(
            f"[{_COUNTS['examples']}] {'core' if c['raw'] else 'functional'} "
            f"training={c['training']} "
            f"nl={c['nonlinearity']} {c['desc']}"
        )
        try:
            out = call_forward(c)
        except ACCEPTED:
            _COUNTS["rejected"] += 1
        else:
            check_against_reference(c, out)
            maybe_backward(
                c, out, lambda y: layout(np.ones_like(y), data.draw(st.sampled_from(LAYOUTS)))
            )
        if data.draw(st.integers(0, 3)) == 0:
            run_stream(data)

    return fuzz


def main(argv: list[str] | None = None) -> int:
    global _LOG
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--examples", type=int, default=300, help="hypothesis examples (default 300)")
    ap.add_argument("--seed", type=int, default=0, help="hypothesis seed (default 0)")
    ap.add_argument("--log", default=None, help="append every example here before running it")
    ap.add_argument("--threads", type=int, default=None, help="rnnfast.set_num_threads")
    args = ap.parse_args(argv)
    if args.threads:
        rnnfast.set_num_threads(args.threads)
    if args.log:
        _LOG = open(args.log, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the whole run
    make_test(args.examples, args.seed)()
    print(
        f"fuzz_bindings: {_COUNTS['examples']} examples ({_COUNTS['rejected']} rejected with "
        f"ValueError/TypeError/MemoryError, {_COUNTS['checked']} checked against the reference, "
        f"{_COUNTS['stream_calls']} stream calls), variant {core.variant}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
