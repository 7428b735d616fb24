"""Drop-in benchmark for JAX: a jit'd training step with a lax.scan GRU/LSTM vs the same step with
rnnfast.jax.

One training step = forward of a one-layer recurrent model and a linear head on every step, MSE
loss, ``jax.value_and_grad``, ``optax.adam`` update (float32), all inside one ``jax.jit``. The two
steps differ only in the recurrent layer: a ``lax.scan`` over PyTorch's cell formulas (what a JAX
user writes, and what flax.linen.RNN compiles to) or ``rnnfast.jax.gru`` / ``lstm`` (two
``pure_callback``s into rnnfast's kernels). Same initial parameters.

Grid: cell {gru, lstm} x shape (H, T, I) {(64, 100, 64), (128, 64, 128)} x B {1, 16, 64}, at one
thread count for both (``--threads``, default 1: XLA's CPU client with
``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`` and
``rnnfast.set_num_threads(1)``; with N > 1, XLA's default thread pool and N rnnfast threads).

Correctness before timing: the first step of both (same parameters, same batch) must give the same
loss (relative difference <= 1e-4) and the same gradients (max|a - e| / max|e| <= 1e-4); a row that
fails is reported as FAILED and not timed.

Timing: compile first (not timed), then the two steps are alternated sample by sample; a sample is
the mean step time over as many steps as fill ``--min-sample`` seconds; reported: the median of
``--repeats`` samples, wall clock and process CPU time. The load average is recorded per row.

Per-call overhead of the callback (T = 1, B = 1, I = H = 8, GRU, one thread): the functional API
on NumPy arrays (gru_forward + gru_backward; gru_forward with training=False) vs the same under
``jax.jit`` through rnnfast.jax (value_and_grad of sum(y): two callbacks; the forward alone: one);
the differences are the cost of the callbacks, XLA's dispatch and the host store.

Examples
  python benchmarks/bench_dropin_jax.py                 # grid + overhead (several minutes)
  python benchmarks/bench_dropin_jax.py --quick         # gru, H 64, B 1 and 16
Outputs (``--out``, default benchmarks/out/dropin_jax): dropin_jax.json and dropin_jax.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cells", nargs="+", default=["gru", "lstm"], choices=["gru", "lstm"])
    p.add_argument("--shapes", nargs="+", default=["64,100,64", "128,64,128"], help="H,T,I")
    p.add_argument("--batch", nargs="+", type=int, default=[1, 16, 64])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--min-sample", type=float, default=0.2)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-overhead", action="store_true")
    p.add_argument("--out", default="benchmarks/out/dropin_jax")
    a = p.parse_args()
    if a.quick:
        a.cells, a.shapes, a.batch, a.repeats = ["gru"], ["64,100,64"], [1, 16], 5
    return a


ARGS = _parse()
if ARGS.threads == 1:  # before jax is imported
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    )

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import rnnfast  # noqa: E402
import rnnfast.functional as F  # noqa: E402
import rnnfast.jax as rj  # noqa: E402

TOL = 1e-4


# --------------------------------------------------------------------------------------------------
# the two models
# --------------------------------------------------------------------------------------------------


def scan_layer(cell: str, x: Any, p: dict[str, Any]) -> Any:
    """y (T, B, H) of one layer from the zero state, by lax.scan (PyTorch's formulas)."""
    H = p["w_hh"].shape[1]
    B = x.shape[1]
    xw = x @ p["w_ih"].T + p["b_ih"]  # the input projection of every step in one GEMM

    def step(carry: Any, gi: Any) -> tuple[Any, Any]:
        h = carry[0] if cell == "lstm" else carry
        gh = h @ p["w_hh"].T + p["b_hh"]
        if cell == "gru":
            r = jax.nn.sigmoid(gi[:, :H] + gh[:, :H])
            z = jax.nn.sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
            n = jnp.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
            h = (1 - z) * n + z * h
            return h, h
        g = gi + gh
        i, f, gg, o = (g[:, k * H : (k + 1) * H] for k in range(4))
        c = jax.nn.sigmoid(f) * carry[1] + jax.nn.sigmoid(i) * jnp.tanh(gg)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    z = jnp.zeros((B, H), x.dtype)
    _, y = jax.lax.scan(step, (z, z) if cell == "lstm" else z, xw)
    return y


def rnnfast_layer(cell: str, x: Any, p: dict[str, Any]) -> Any:
    w = (p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"])
    if cell == "gru":
        return rj.gru(x, None, *w)[0]
    return rj.lstm(x, None, *w)[0]


def make_step(cell: str, layer: Callable[..., Any], opt: Any) -> Callable[..., Any]:
    def loss(params: dict[str, Any], x: Any, target: Any) -> Any:
        y = layer(cell, x, params["rnn"])
        pred = y @ params["head"]["w"].T + params["head"]["b"]
        return jnp.mean((pred - target) ** 2)

    @jax.jit
    def step(params: Any, state: Any, x: Any, target: Any) -> Any:
        value, grads = jax.value_and_grad(loss)(params, x, target)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value, grads

    return step


def init_params(cell: str, H: int, I: int, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    G = {"gru": 3, "lstm": 4}[cell]
    k = 1.0 / np.sqrt(H)

    def u(*shape: int) -> Any:
        return jnp.asarray(rng.uniform(-k, k, shape), jnp.float32)

    return {
        "rnn": {"w_ih": u(G * H, I), "w_hh": u(G * H, H), "b_ih": u(G * H), "b_hh": u(G * H)},
        "head": {"w": u(1, H), "b": u(1)},
    }


# --------------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------------


def _sample(fn: Callable[[], Any], min_sample: float) -> tuple[float, float]:
    """(wall s, cpu s) per call, mean over as many calls as fill min_sample seconds."""
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while True:
        jax.block_until_ready(fn())
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_sample:
            return dt / n, (time.process_time() - c0) / n


def alternate(fns: dict[str, Callable[[], Any]], repeats: int, min_sample: float) -> dict[str, Any]:
    for f in fns.values():  # warm up
        jax.block_until_ready(f())
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            samples[k].append(_sample(fns[k], min_sample))
    return {
        k: {
            "wall_ms": 1e3 * statistics.median(s[0] for s in v),
            "cpu_ms": 1e3 * statistics.median(s[1] for s in v),
        }
        for k, v in samples.items()
    }


def rel_err(a: Any, e: Any) -> float:
    a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
    return float(np.max(np.abs(a - e)) / max(float(np.max(np.abs(e))), 1e-30))


def run_row(cell: str, H: int, T: int, I: int, B: int) -> dict[str, Any]:
    opt = optax.adam(1e-3)
    params = init_params(cell, H, I)
    state = opt.init(params)
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((T, B, I)), jnp.float32)
    target = jnp.asarray(rng.standard_normal((T, B, 1)), jnp.float32)
    steps = {
        "lax.scan": make_step(cell, scan_layer, opt),
        "rnnfast": make_step(cell, rnnfast_layer, opt),
    }
    row: dict[str, Any] = {
        "cell": cell,
        "H": H,
        "T": T,
        "I": I,
        "B": B,
        "load_before": os.getloadavg()[0],
    }
    t0 = time.perf_counter()
    out = {k: jax.block_until_ready(s(params, state, x, target)) for k, s in steps.items()}
    row["compile_s"] = time.perf_counter() - t0
    ref, got = out["lax.scan"], out["rnnfast"]
    err = abs(float(got[2]) - float(ref[2])) / abs(float(ref[2]))
    for a, e in zip(jax.tree_util.tree_leaves(got[3]), jax.tree_util.tree_leaves(ref[3])):
        err = max(err, rel_err(a, e))
    row["max_rel_err"] = err
    if not err <= TOL:
        row["status"] = "FAILED"
        return row
    fns = {k: (lambda s=s: s(params, state, x, target)) for k, s in steps.items()}
    row.update(alternate(fns, ARGS.repeats, ARGS.min_sample))
    row["ratio_wall"] = row["lax.scan"]["wall_ms"] / row["rnnfast"]["wall_ms"]
    row["ratio_cpu"] = row["lax.scan"]["cpu_ms"] / row["rnnfast"]["cpu_ms"]
    row["load_after"] = os.getloadavg()[0]
    row["status"] = "ok"
    return row


def overhead() -> dict[str, Any]:
    """Per-call cost of the callback path at a size where the kernels do almost nothing."""
    rng = np.random.default_rng(2)
    T = B = 1
    I = H = 8
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    w = [
        rng.standard_normal(s).astype(np.float32) * 0.3
        for s in ((3 * H, I), (3 * H, H), (3 * H,), (3 * H,))
    ]
    xj, wj = jnp.asarray(x), [jnp.asarray(a) for a in w]

    def functional_train() -> Any:
        y, h, cache = F.gru_forward(x, None, *w, training=True)
        return F.gru_backward(cache, np.ones_like(y), None)["w_ih"]

    def functional_infer() -> Any:
        return F.gru_forward(x, None, *w, training=False)[0]

    jit_train = jax.jit(
        jax.grad(lambda x, *w: jnp.sum(rj.gru(x, None, *w)[0]), argnums=(0, 1, 2, 3, 4))
    )
    jit_infer = jax.jit(lambda x, *w: rj.gru(x, None, *w)[0])
    jit_scan = jax.jit(
        jax.grad(
            lambda x, *w: jnp.sum(
                scan_layer("gru", x, dict(zip(("w_ih", "w_hh", "b_ih", "b_hh"), w)))
            ),
            argnums=(0, 1, 2, 3, 4),
        )
    )
    # the same through jax.pure_callback (rnnfast.jax's fallback), traced with the primitive off
    prim = rj._HOST_PRIMITIVE
    rj._HOST_PRIMITIVE = None
    try:
        pure_train = jax.jit(
            jax.grad(lambda x, *w: jnp.sum(rj.gru(x, None, *w)[0]), argnums=(0, 1, 2, 3, 4))
        )
        pure_infer = jax.jit(lambda x, *w: rj.gru(x, None, *w)[0])
        jax.block_until_ready((pure_train(xj, *wj), pure_infer(xj, *wj)))  # trace now
    finally:
        rj._HOST_PRIMITIVE = prim
    ref = functional_train()
    err = rel_err(jit_train(xj, *wj)[1], ref)
    assert err <= TOL, (
        f"overhead check: rnnfast.jax dW_ih differs from the functional API by {err:.2e}"
    )
    assert rel_err(jit_scan(xj, *wj)[1], ref) <= TOL
    assert rel_err(pure_train(xj, *wj)[1], ref) <= TOL
    assert rel_err(jit_infer(xj, *wj), functional_infer()) <= TOL
    fns = {
        "functional fwd+bwd (NumPy)": functional_train,
        "rnnfast.jax grad, jit (2 callbacks)": lambda: jit_train(xj, *wj),
        "rnnfast.jax grad, jit, pure_callback fallback": lambda: pure_train(xj, *wj),
        "lax.scan grad, jit": lambda: jit_scan(xj, *wj),
        "functional fwd (NumPy)": functional_infer,
        "rnnfast.jax fwd, jit (1 callback)": lambda: jit_infer(xj, *wj),
        "rnnfast.jax fwd, jit, pure_callback fallback": lambda: pure_infer(xj, *wj),
    }
    res = alternate(fns, ARGS.repeats, ARGS.min_sample)
    res["per_callback_us_train"] = (
        1e3
        * (
            res["rnnfast.jax grad, jit (2 callbacks)"]["wall_ms"]
            - res["functional fwd+bwd (NumPy)"]["wall_ms"]
        )
        / 2
    )
    res["per_callback_us_infer"] = 1e3 * (
        res["rnnfast.jax fwd, jit (1 callback)"]["wall_ms"]
        - res["functional fwd (NumPy)"]["wall_ms"]
    )
    res["per_callback_us_infer_pure"] = 1e3 * (
        res["rnnfast.jax fwd, jit, pure_callback fallback"]["wall_ms"]
        - res["functional fwd (NumPy)"]["wall_ms"]
    )
    return res


def _lscpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor()
    info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = info.get("Flags", "")
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE"
    return f"{info.get('Model name', '?').strip()}, {info.get('CPU(s)', '?').strip()} vCPU, {simd}"


def main() -> None:
    rnnfast.set_num_threads(ARGS.threads)
    meta = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": _lscpu(),
        "threads": ARGS.threads,
        "jax": jax.__version__,
        "callback": rj.CALLBACK_KIND,
        "command": "python " + " ".join(sys.argv),
    }
    rows = []
    for cell in ARGS.cells:
        for shape in ARGS.shapes:
            H, T, I = (int(v) for v in shape.split(","))
            for B in ARGS.batch:
                row = run_row(cell, H, T, I, B)
                rows.append(row)
                if row["status"] == "ok":
                    print(
                        f"{cell} H={H} T={T} I={I} B={B}: lax.scan {row['lax.scan']['wall_ms']:.3f} ms, "
                        f"rnnfast {row['rnnfast']['wall_ms']:.3f} ms, x{row['ratio_wall']:.2f} "
                        f"(cpu x{row['ratio_cpu']:.2f}), err {row['max_rel_err']:.1e}, "
                        f"load {row['load_before']:.1f}",
                        flush=True,
                    )
                else:
                    print(f"{cell} H={H} B={B}: FAILED, err {row['max_rel_err']:.2e}", flush=True)
    ovh = None if ARGS.no_overhead else overhead()
    out = Path(ARGS.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dropin_jax.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "overhead": ovh}, indent=1)
    )
    md = [
        f"- {meta['date']}, {meta['cpu']}, threads {meta['threads']} (both), jax {meta['jax']}, "
        f"host call: {meta['callback']}",
        f"- command: `{meta['command']}`",
        "",
        "| cell | H | T | I | B | lax.scan ms | rnnfast.jax ms | speedup (wall) | speedup (CPU) | max rel err | load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r["status"] != "ok":
            md.append(
                f"| {r['cell']} | {r['H']} | {r['T']} | {r['I']} | {r['B']} | FAILED | | | | {r['max_rel_err']:.1e} | |"
            )
            continue
        md.append(
            f"| {r['cell']} | {r['H']} | {r['T']} | {r['I']} | {r['B']} | {r['lax.scan']['wall_ms']:.3f} | "
            f"{r['rnnfast']['wall_ms']:.3f} | {r['ratio_wall']:.2f} | {r['ratio_cpu']:.2f} | "
            f"{r['max_rel_err']:.1e} | {r['load_before']:.1f}-{r['load_after']:.1f} |"
        )
    if ovh is not None:
        md += ["", "| per-call (T=1, B=1, I=H=8, GRU) | wall us | CPU us |", "| --- | --- | --- |"]
        for k, v in ovh.items():
            if isinstance(v, dict):
                md.append(f"| {k} | {1e3 * v['wall_ms']:.1f} | {1e3 * v['cpu_ms']:.1f} |")
        md.append(
            f"\nCallback overhead: {ovh['per_callback_us_infer']:.1f} us per inference call, "
            f"{ovh['per_callback_us_train']:.1f} us per callback in a training step "
            f"(jax.pure_callback fallback: {ovh['per_callback_us_infer_pure']:.1f} us per "
            "inference call)."
        )
    (out / "dropin_jax.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
