"""Drop-in benchmark: a PyTorch training loop with torch.nn.GRU/LSTM vs the same loop with rnnfast.torch.

One training step = forward of a one-layer recurrent model and a linear head on every step, MSE loss,
backward, ``torch.optim.Adam`` step (float32). The "torch" and "rnnfast" models start from the same
weights (rnnfast.torch.convert of a deep copy) and differ only in the recurrent module.

Grid: cell {gru, lstm} x shape (H, T, I) {(64, 100, 64), (128, 64, 128), (256, 50, 256)} (the
built-in tasks use H 16-128, T 6-100; 256 is the largest the tasks' configs suggest) x B {1, 16, 64}
x threads {1, default (os.cpu_count())}; the thread count is set for torch and rnnfast together.

Correctness before timing: one step of each model on the row's inputs (before any timing) must give
the same loss (relative difference <= 1e-4) and the same gradient of every parameter
(max|a - e| / max|e| <= 1e-4); a row that fails is reported as FAILED and not timed.

Timing: the two loops are alternated sample by sample (the order rotated every round), each warmed up
first; a sample is the mean step time over as many steps as fill ``--min-sample`` seconds; the
reported time is the median of ``--repeats`` samples, with wall-clock and process CPU time (CPU time
is less sensitive to other processes on a shared machine; with 2 threads it sums both threads). The
load average is recorded before and after each row.

Per-call overhead (run unless ``--no-overhead``): T = 1, B = 1, I = H = 8, one layer, float32, one
thread. Compared: the functional API alone (rnnfast.functional.gru_forward / gru_backward on NumPy
arrays), the custom op with and without autograd, the module's forward + backward on its eager path
(a plain autograd.Function, the default outside torch.compile/export/jit.trace) and on its custom-op
path (rnnfast.torch.EAGER_FAST_PATH = False, what compiled graphs call), and nn.GRU; the differences
are the cost of the torch dispatcher, autograd and the module's Python.

Examples
  python benchmarks/bench_dropin.py                   # full grid + overhead (several minutes)
  python benchmarks/bench_dropin.py --quick           # gru, H 64, B 1 and 16, 1 thread
  python benchmarks/bench_dropin.py --overhead-only
Outputs (``--out``, default benchmarks/out/dropin): dropin.json and dropin.md.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import rnnfast
import rnnfast.functional as F
import rnnfast.torch as rt

__all__ = ["main"]

SHAPES = ((64, 100, 64), (128, 64, 128), (256, 50, 256))  # (H, T, I)
TOL = 1e-4


# --------------------------------------------------------------------------------------------------
# machine
# --------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "rnnfast": rnnfast.__version__,
        "rnnfast_variant": rnnfast.build_info()["variant"],
        "logical_cpus": os.cpu_count(),
    }
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            key, _, val = line.partition(":")
            if key.strip() in ("Model name", "CPU(s)", "L2 cache", "L3 cache", "Hypervisor vendor"):
                info[f"lscpu {key.strip()}"] = val.strip()
        flags = next((ln for ln in out.splitlines() if ln.startswith("Flags")), "")
        info["simd"] = [f for f in flags.split() if f.startswith(("avx", "fma"))]
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def set_threads(n: int) -> None:
    torch.set_num_threads(n)
    rnnfast.set_num_threads(n)


# --------------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------------


def _sample(fn: Callable[[], Any], inner: int) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - w0) / inner, (time.process_time() - c0) / inner


def time_alternating(
    fns: Mapping[str, Callable[[], Any]], repeats: int, min_sample: float
) -> dict[str, dict[str, float]]:
    """Median wall and CPU seconds per call of each function, alternated sample by sample."""
    names = list(fns)
    inner = {}
    for name in names:
        fns[name]()  # warm-up
        dt, _ = _sample(fns[name], 1)
        inner[name] = max(1, min(20_000, math.ceil(min_sample / max(dt, 1e-7))))
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            w, c = _sample(fns[name], inner[name])
            wall[name].append(w)
            cpu[name].append(c)
    return {
        n: {
            "wall_s": statistics.median(wall[n]),
            "cpu_s": statistics.median(cpu[n]),
            "spread": (max(wall[n]) - min(wall[n])) / statistics.median(wall[n]),
            "inner": inner[n],
        }
        for n in names
    }


# --------------------------------------------------------------------------------------------------
# the training loop
# --------------------------------------------------------------------------------------------------


class Model(nn.Module):
    def __init__(self, cell: str, i: int, h: int) -> None:
        super().__init__()
        self.rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cell](i, h)
        self.head = nn.Linear(h, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(x)
        return self.head(y)


def make_step(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> Callable[[], float]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x), target)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def check(ref: nn.Module, fast: nn.Module, x: torch.Tensor, target: torch.Tensor) -> float:
    """Max relative error of the loss and every gradient of one step (no optimizer step)."""
    errs = []
    losses = []
    grads = []
    for m in (ref, fast):
        m.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(m(x), target)
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append([p.grad.detach().clone() for p in m.parameters()])
        m.zero_grad(set_to_none=True)
    errs.append(abs(losses[1] - losses[0]) / abs(losses[0]))
    for a, e in zip(grads[1], grads[0]):
        errs.append(float((a - e).abs().max() / e.abs().max().clamp_min(1e-30)))
    return max(errs)


def run_row(
    cell: str, h: int, t: int, i: int, b: int, threads: int, args: argparse.Namespace
) -> dict[str, Any]:
    set_threads(threads)
    torch.manual_seed(0)
    ref = Model(cell, i, h)
    fast = rt.convert(copy.deepcopy(ref))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(t, b, i, generator=g)
    target = torch.randn(t, b, 1, generator=g)
    row: dict[str, Any] = dict(
        cell=cell, H=h, T=t, I=i, B=b, threads=threads, load_before=loadavg()
    )
    err = check(ref, fast, x, target)
    row["max_rel_err"] = err
    if not err <= TOL:
        row["status"] = "FAILED"
        return row
    res = time_alternating(
        {"torch": make_step(ref, x, target), "rnnfast": make_step(fast, x, target)},
        args.repeats,
        args.min_sample,
    )
    row.update(
        status="ok",
        torch_ms=res["torch"]["wall_s"] * 1e3,
        rnnfast_ms=res["rnnfast"]["wall_s"] * 1e3,
        torch_cpu_ms=res["torch"]["cpu_s"] * 1e3,
        rnnfast_cpu_ms=res["rnnfast"]["cpu_s"] * 1e3,
        spread=max(res["torch"]["spread"], res["rnnfast"]["spread"]),
        load_after=loadavg(),
    )
    row["speedup"] = row["torch_ms"] / row["rnnfast_ms"]
    row["speedup_cpu"] = row["torch_cpu_ms"] / row["rnnfast_cpu_ms"]
    return row


# --------------------------------------------------------------------------------------------------
# per-call overhead
# --------------------------------------------------------------------------------------------------


def overhead(args: argparse.Namespace) -> dict[str, Any]:
    """Microseconds per call at T = B = 1, I = H = 8 (one thread): what the torch layers add."""
    set_threads(1)
    n = 8
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, n, generator=g)
    w = [torch.randn(3 * n, n, generator=g), torch.randn(3 * n, n, generator=g)]
    w += [torch.randn(3 * n, generator=g), torch.randn(3 * n, generator=g)]
    xa, wa = x.numpy(), [t.numpy() for t in w]
    dy = np.ones((1, 1, n), np.float32)
    op = torch.ops.rnnfast.gru_forward
    xg = x.clone().requires_grad_()
    wg = [t.clone().requires_grad_() for t in w]
    gru = rt.GRU(n, n)
    tgru = nn.GRU(n, n)

    def functional_fwd() -> Any:
        return F.gru_forward(xa, None, *wa, training=False)

    def functional_train() -> Any:
        _, _, cache = F.gru_forward(xa, None, *wa, training=True)
        return F.gru_backward(cache, dy)

    def op_fwd() -> Any:
        return op(x, None, *w, None, False, False)

    def op_train() -> Any:
        y, _, _ = op(xg, None, *wg, None, False, True)
        y.sum().backward()

    def module_fwd() -> Any:
        with torch.no_grad():
            return gru(x)

    def module_train() -> Any:
        y, _ = gru(xg)
        y.sum().backward()

    def module_train_ops() -> Any:
        rt.EAGER_FAST_PATH = False
        try:
            module_train()
        finally:
            rt.EAGER_FAST_PATH = True

    def torch_fwd() -> Any:
        with torch.no_grad():
            return tgru(x)

    def torch_train() -> Any:
        y, _ = tgru(xg)
        y.sum().backward()

    fns = {
        "functional forward": functional_fwd,
        "custom op forward (no grad)": op_fwd,
        "rnnfast.torch.GRU forward (no grad)": module_fwd,
        "nn.GRU forward (no grad)": torch_fwd,
        "functional forward+backward": functional_train,
        "custom op forward+backward (autograd)": op_train,
        "rnnfast.torch.GRU forward+backward": module_train,
        "rnnfast.torch.GRU forward+backward, custom-op path": module_train_ops,
        "nn.GRU forward+backward": torch_train,
    }
    res = time_alternating(fns, args.repeats, args.min_sample)
    return {
        name: {"wall_us": r["wall_s"] * 1e6, "cpu_us": r["cpu_s"] * 1e6} for name, r in res.items()
    }


# --------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------


def markdown(result: Mapping[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"Run {result['date']}: `{result['command']}`",
        "",
        f"CPU: {m.get('lscpu Model name', '?')} ({m.get('logical_cpus')} logical CPUs, "
        f"{m.get('lscpu Hypervisor vendor', 'bare metal')}), SIMD {' '.join(m.get('simd', []))}; "
        f"torch {m['torch']}, rnnfast {m['rnnfast']} ({m['rnnfast_variant']}).",
        "",
    ]
    rows = result["rows"]
    if rows:
        lines += [
            "| cell | H | T | I | B | threads | nn ms | rnnfast.torch ms | speedup | "
            "speedup (CPU time) | spread | load | max rel err |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in rows:
            if r["status"] != "ok":
                lines.append(
                    f"| {r['cell']} | {r['H']} | {r['T']} | {r['I']} | {r['B']} | {r['threads']} "
                    f"| FAILED | | | | | | {r['max_rel_err']:.1e} |"
                )
                continue
            lines.append(
                f"| {r['cell']} | {r['H']} | {r['T']} | {r['I']} | {r['B']} | {r['threads']} | "
                f"{r['torch_ms']:.2f} | {r['rnnfast_ms']:.2f} | **{r['speedup']:.2f}x** | "
                f"{r['speedup_cpu']:.2f}x | {r['spread']:.0%} | "
                f"{r['load_before']}-{r['load_after']} | {r['max_rel_err']:.1e} |"
            )
        lines.append("")
    if result.get("overhead"):
        lines += [
            "Per-call cost at T = B = 1, I = H = 8 (GRU, float32, one thread), microseconds:",
            "",
            "| call | wall us | CPU us |",
            "| --- | --- | --- |",
        ]
        for name, r in result["overhead"].items():
            lines.append(f"| {name} | {r['wall_us']:.0f} | {r['cpu_us']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cells", nargs="+", default=["gru", "lstm"], choices=["gru", "lstm"])
    p.add_argument("--hidden", nargs="+", type=int, default=None, help="subset of H in SHAPES")
    p.add_argument("--batch", nargs="+", type=int, default=[1, 16, 64])
    p.add_argument("--threads", nargs="+", type=int, default=[1, os.cpu_count() or 1])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--min-sample", type=float, default=0.15)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--overhead-only", action="store_true")
    p.add_argument("--no-overhead", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).parent / "out" / "dropin"))
    args = p.parse_args(argv)
    if args.quick:
        args.cells, args.hidden, args.batch, args.threads = ["gru"], [64], [1, 16], [1]
        args.repeats = 5
    shapes = [s for s in SHAPES if args.hidden is None or s[0] in args.hidden]
    result: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": machine(),
        "rows": [],
    }
    if not args.overhead_only:
        for threads in args.threads:
            for cell in args.cells:
                for h, t, i in shapes:
                    for b in args.batch:
                        row = run_row(cell, h, t, i, b, threads, args)
                        result["rows"].append(row)
                        save(result, Path(args.out))
                        print(
                            f"{cell} H={h} T={t} B={b} threads={threads}: "
                            + (
                                f"nn {row['torch_ms']:.2f} ms, rnnfast {row['rnnfast_ms']:.2f} ms, "
                                f"{row['speedup']:.2f}x (CPU {row['speedup_cpu']:.2f}x)"
                                if row["status"] == "ok"
                                else f"FAILED (err {row['max_rel_err']:.1e})"
                            ),
                            flush=True,
                        )
    if not args.no_overhead:
        result["overhead"] = overhead(args)
    md = save(result, Path(args.out))
    print(md)
    return 0


def save(result: Mapping[str, Any], out: Path) -> str:
    """Write dropin.json and dropin.md (after every row: a killed run keeps what it measured)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "dropin.json").write_text(json.dumps(result, indent=1))
    md = markdown(result)
    (out / "dropin.md").write_text(md + "\n")
    return md


if __name__ == "__main__":
    sys.exit(main())
