"""minGRU (log-space parallel scan) against rnnfast's GRU of the same width: training-step time vs T,
and the adding problem at T = 100.

Timing: one training step = forward (training=True) + backward with every gradient (weights,
biases, dx, dh0) of ``L = sum(y * dy)``, float32, I = H (default 256), B = 16, T = 100, 1,000,
10,000, with 1 and 2 threads (``rnnfast.set_num_threads``; NumPy's BLAS held at one thread). The
two kernels are alternated call by call (the order swapping each round) after a warm-up, and the
figure is the median of ``--repeats`` wall-clock samples. Before anything is timed, each kernel's
outputs and gradients at that T are compared with the float64 NumPy oracle
(:mod:`rnnfast.reference.minimal`, :mod:`rnnfast.reference`): max |a - e| / max |e| must be <= 1e-4,
else the row is reported FAILED and not timed (exit status 1).

Adding problem (``rnnfast.tasks.adding.make_adding``): MinGRU(2, H) (+ a Linear(H, 1) head on the
last step) trained with ``rnnfast.optim.Adam`` (lr 0.01, the adding task's default) on fresh batches of 64; the MSE on 2,000 held-out sequences
against the 0.167 of predicting the mean. The same loop with rnnfast's GRU is printed beside it.

Usage: ``python benchmarks/bench_minimal.py [--steps 100 1000 10000] [--threads 1 2]
[--hidden 256] [--batch 16] [--repeats 7] [--adding-steps 1000] [--adding-lr 0.01] [--no-adding]
[--no-timing] [--out DIR]``.
Writes ``DIR/bench_minimal.json`` and, with matplotlib, ``DIR/bench_minimal.png`` (default DIR:
benchmarks/out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import rnnfast as rf  # noqa: E402
from rnnfast import functional as F  # noqa: E402
from rnnfast import minimal as M  # noqa: E402
from rnnfast import reference as REF  # noqa: E402
from rnnfast.nn.layers import Linear  # noqa: E402
from rnnfast.nn.minimal import MinGRU  # noqa: E402
from rnnfast.optim import Adam  # noqa: E402
from rnnfast.reference import minimal as RMIN  # noqa: E402
from rnnfast.tasks.adding import BASELINE_MSE, make_adding  # noqa: E402
from rnnfast.testing import rel_max_error  # noqa: E402

TOL = 1e-4


def cpu_model() -> str:
    """Model name, family/model numbers and the widest SIMD flag, from /proc/cpuinfo."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, val = line.partition(":")
                info.setdefault(key.strip(), val.strip())
    except OSError:
        return platform.processor() or "unknown"
    flags = info.get("flags", "").split()
    simd = "avx512f" if "avx512f" in flags else ("avx2" if "avx2" in flags else "sse")
    return (
        f"{info.get('model name', 'unknown')} (family {info.get('cpu family', '?')}, "
        f"model {info.get('model', '?')}, {simd})"
    )


def _inputs(t: int, b: int, h: int, seed: int = 0) -> dict[str, np.ndarray]:
    """float32 inputs on a coarse grid (x: multiples of 1/8 in [-4, 4]; weights: multiples of
    1/1024 in [-1/sqrt(H), 1/sqrt(H)]), so that the float32 input projection is exact for H <= 1024.

    The reason: g(u) of minGRU has a kink at u = 0 (g' jumps from 1/4 to 1), and a pre-activation
    that float32 rounding moves across 0 changes its gradient by 3/4 of its size (seen at T = 1,000:
    one element of 4M, dx off by 7e-4 relative); with exact pre-activations the check against the
    float64 oracle measures the kernels' own rounding only.
    """
    rng = np.random.default_rng(seed)
    k = 1.0 / np.sqrt(h)
    f32 = np.float32

    def w(*shape: int) -> np.ndarray:
        return (np.round(rng.uniform(-k, k, shape) * 1024) / 1024).astype(f32)

    return {
        "x": (np.clip(np.round(rng.standard_normal((t, b, h)) * 8), -32, 32) / 8).astype(f32),
        "dy": rng.standard_normal((t, b, h)).astype(f32),
        "mg_w": w(2 * h, h),
        "mg_b": w(2 * h),
        "gru_wih": w(3 * h, h),
        "gru_whh": w(3 * h, h),
        "gru_bih": w(3 * h),
        "gru_bhh": w(3 * h),
    }


def _mingru_step(a: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, Any]]:
    y, _, c = M.mingru_forward(a["x"], None, a["mg_w"], a["mg_b"])
    return y, M.mingru_backward(c, a["dy"])


def _gru_step(a: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, Any]]:
    w = (a["gru_wih"], a["gru_whh"], a["gru_bih"], a["gru_bhh"])
    y, _, c = F.gru_forward(a["x"], None, *w)
    return y, F.gru_backward(c, a["dy"])


def check(a: dict[str, np.ndarray]) -> dict[str, float]:
    """Max relative error of each kernel's y and gradients against the float64 oracle."""
    y, g = _mingru_step(a)
    yr, _, cr = RMIN.mingru_forward(a["x"], None, a["mg_w"], a["mg_b"])
    gr = RMIN.mingru_backward(cr, a["dy"])
    errs = {
        "mingru": max(
            rel_max_error(y, yr)[0], *(rel_max_error(g[k], gr[k])[0] for k in ("x", "w_ih", "b_ih"))
        )
    }
    del yr, cr, gr
    y, g = _gru_step(a)
    w = (a["gru_wih"], a["gru_whh"], a["gru_bih"], a["gru_bhh"])
    yr, _, cr = REF.gru_forward(a["x"], None, *w)
    gr = REF.gru_backward(cr, a["dy"])
    errs["gru"] = max(
        rel_max_error(y, yr)[0],
        *(rel_max_error(g[k], gr[k])[0] for k in ("x", "w_ih", "w_hh", "b_ih", "b_hh")),
    )
    return errs


def time_pair(fs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, alternated call by call."""
    names = list(fs)
    for n in names:  # warm-up (scratch buffers, pages)
        fs[n]()
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            t0 = time.perf_counter()
            fs[n]()
            samples[n].append(time.perf_counter() - t0)
    return {n: float(np.median(v)) for n, v in samples.items()}


def run_timing(args: argparse.Namespace) -> tuple[list[dict[str, Any]], bool]:
    rows: list[dict[str, Any]] = []
    ok = True
    for t in args.steps:
        a = _inputs(t, args.batch, args.hidden)
        reps = max(3, args.repeats if t <= 1000 else args.repeats // 2)
        errs = check(a)  # the kernels are bitwise the same at every thread count
        for n in args.threads:
            rf.set_num_threads(n)
            if max(errs.values()) > TOL:
                ok = False
                print(f"T={t} threads={n}: FAILED check {errs}", flush=True)
                rows.append({"T": t, "threads": n, "failed": errs})
                continue
            med = time_pair(
                {"mingru": partial(_mingru_step, a), "gru": partial(_gru_step, a)}, reps
            )
            row = {
                "T": t,
                "threads": n,
                "mingru_s": med["mingru"],
                "gru_s": med["gru"],
                "max_err": errs,
                "repeats": reps,
            }
            rows.append(row)
            print(
                f"T={t:>6} threads={n}  minGRU {med['mingru'] * 1e3:10.2f} ms  GRU {med['gru'] * 1e3:10.2f} ms  "
                f"speedup {med['gru'] / med['mingru']:5.2f}x  (check: {errs['mingru']:.1e}, {errs['gru']:.1e})",
                flush=True,
            )
        del a
    return rows, ok


def train_adding(cell: str, steps: int, hidden: int, lr: float, seed: int = 0) -> dict[str, float]:
    """Train cell (+ Linear head on the last step) on the adding problem, T = 100; held-out MSE."""
    rng = np.random.default_rng(seed)
    rnn: Any = MinGRU(2, hidden, seed=seed) if cell == "mingru" else rf.GRU(2, hidden, seed=seed)
    head = Linear(hidden, 1, seed=seed)
    opts = [Adam(rnn.parameters(), lr=lr), Adam(head.parameters(), lr=lr)]
    batch, t_steps = 64, 100
    t0 = time.perf_counter()
    for _ in range(steps):
        x, y = make_adding(batch, t_steps, rng)
        out, _ = rnn(x)
        pred = head(out[-1])
        dpred = (2.0 / batch) * (pred - y)  # d mean((pred - y)^2) / d pred
        rnn.zero_grad()
        head.zero_grad()
        dout = np.zeros_like(out)
        dout[-1] = head.backward(dpred)
        rnn.backward(dout)
        opts[0].step(rnn.grads)
        opts[1].step(head.grads)
    train_s = time.perf_counter() - t0
    xv, yv = make_adding(2000, t_steps, np.random.default_rng(seed + 1000))
    rnn.eval()
    head.eval()
    out, _ = rnn(xv)
    mse = float(np.mean((head(out[-1]) - yv) ** 2))
    return {"mse": mse, "train_s": train_s}


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for n in sorted({r["threads"] for r in rows}):
        rs = [r for r in rows if r["threads"] == n and "mingru_s" in r]
        ts = [r["T"] for r in rs]
        ax.loglog(ts, [r["mingru_s"] for r in rs], "o-", label=f"minGRU, {n} thread(s)")
        ax.loglog(ts, [r["gru_s"] for r in rs], "s--", label=f"GRU, {n} thread(s)")
    ax.set_xlabel("T (time steps)")
    ax.set_ylabel("training step (s), median")
    ax.set_title(f"forward + backward, H = I = {rows[0].get('H')}, B = {rows[0].get('B')}, float32")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, nargs="+", default=[100, 1000, 10000])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--adding-steps", type=int, default=1000)
    p.add_argument("--adding-lr", type=float, default=0.01)  # the adding task's default
    p.add_argument("--no-timing", action="store_true")
    p.add_argument("--adding-hidden", type=int, default=64)
    p.add_argument("--no-adding", action="store_true")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    args = p.parse_args(argv)
    old_threads = rf.get_num_threads()
    print(
        f"CPU: {cpu_model()} ({os.cpu_count()} CPUs); rnnfast {rf.__version__}; float32", flush=True
    )
    print(f"H = I = {args.hidden}, B = {args.batch}; medians of alternated runs", flush=True)
    rows, ok = run_timing(args) if not args.no_timing else ([], True)
    for r in rows:
        r.update(H=args.hidden, B=args.batch)
    rf.set_num_threads(old_threads)
    print("\ntime vs T (ms per training step, median):")
    print(f"{'T':>7} {'threads':>7} {'minGRU':>10} {'GRU':>10} {'GRU/minGRU':>10}")
    for r in rows:
        if "mingru_s" in r:
            print(
                f"{r['T']:>7} {r['threads']:>7} {r['mingru_s'] * 1e3:>10.2f} {r['gru_s'] * 1e3:>10.2f} "
                f"{r['gru_s'] / r['mingru_s']:>10.2f}"
            )
    result: dict[str, Any] = {"cpu": cpu_model(), "timing": rows}
    if not args.no_adding:
        print(
            f"\nadding problem, T = 100, {args.adding_steps} Adam steps (lr {args.adding_lr}) of 64 "
            f"sequences, H = {args.adding_hidden}:"
        )
        for cell in ("mingru", "gru"):
            res = train_adding(cell, args.adding_steps, args.adding_hidden, args.adding_lr)
            result[f"adding_{cell}"] = res
            print(
                f"  {cell:>6}: held-out MSE {res['mse']:.4f} (baseline {BASELINE_MSE:.3f}); "
                f"training {res['train_s']:.1f} s",
                flush=True,
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_minimal.json").write_text(json.dumps(result, indent=2))
    if rows and plot(rows, args.out / "bench_minimal.png"):
        print(f"wrote {args.out / 'bench_minimal.png'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
