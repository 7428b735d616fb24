"""Data-parallel scaling: training throughput of 1 vs N MPI ranks at the same GLOBAL batch.

    python benchmarks/bench_mpi.py                       # LSTM I=64 H=256 T=100 B=64, 1 vs 2 ranks
    python benchmarks/bench_mpi.py --ranks 1 2 --repeats 5 --json mpi.json

The script launches itself under ``mpiexec -n R`` (loopback, fork launcher) for every rank count,
``--repeats`` times, alternating the rank counts so slow phases of a shared machine hit all of them.
Every rank runs ONE kernel thread (``RNNFAST_NUM_THREADS=1``), so R ranks use R cores.

Each run first checks correctness -- a short float64 ``fit(distributed=...)`` of the same
architecture must give the weights of the single-process ``fit`` within 1e-10 and identical weights
on every rank -- then times ``fit`` (Adam, full BPTT, float32 by default) step by step with a
callback, warm-up steps dropped. Reported per rank count: median step time over all timed steps of
all repeats, sequences/s, speed-up vs 1 rank, the time spent in the per-step Allreduce (including
waiting for the slower rank) and, separately, the bare Allreduce time of the packed gradient buffer
(after a barrier), which bounds what overlapping communication with backward could save.

On a shared machine the wall-clock figures depend on what else runs; the "cpu" columns are less
sensitive: the median CPU time per step outside the Allreduce of the slowest rank, and the speed-up
it implies on idle cores (1-rank CPU time / (slowest rank's CPU time + bare Allreduce)).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__: list[str] = []


# --------------------------------------------------------------------------------------------------
# worker (runs under mpiexec)
# --------------------------------------------------------------------------------------------------


def _data(args: argparse.Namespace, n: int, t: int, dtype: Any, seed: int) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((t, n, args.input)).astype(dtype)
    y = rng.standard_normal((n, args.output)).astype(dtype)
    return x, y


def _check(args: argparse.Namespace, ctx: Any) -> float:
    """2 epochs of a small float64 run vs the single-process fit; returns the max weight error."""
    import rnnfast
    from rnnfast import losses, optim

    def build() -> Any:
        return rnnfast.build_model(
            args.cell, args.input, 16, args.output, mode="many_to_one", dtype=np.float64, seed=1
        )

    x, y = _data(args, 3 * args.batch + 5, 6, np.float64, 2)
    m = build()
    kw = {"epochs": 1, "batch_size": args.batch, "progress": False, "seed": 3}
    rnnfast.fit(m, (x, y), losses.MSELoss(), optim.Adam(m.parameters(), lr=1e-2), **kw,
                distributed=ctx)  # fmt: skip
    if ctx.max_divergence(m.parameters()) != 0.0:
        raise AssertionError("ranks hold different weights after training")
    err = 0.0
    if ctx.is_root:
        r = build()
        rnnfast.fit(r, (x, y), losses.MSELoss(), optim.Adam(r.parameters(), lr=1e-2), **kw,
                    distributed=False)  # fmt: skip
        err = max(float(np.max(np.abs(m.parameters()[k] - v))) for k, v in r.parameters().items())
        if not err <= 1e-10:
            raise AssertionError(f"{ctx.size} ranks vs 1 rank: weights differ by {err:.3e}")
    return err


def worker(args: argparse.Namespace) -> None:
    import rnnfast
    import rnnfast.distributed as dist
    from rnnfast import losses, optim

    ctx = dist.init()
    check_err = _check(args, ctx)
    dtype = np.dtype(args.dtype)
    steps = args.warmup + args.steps
    x, y = _data(args, steps * args.batch, args.seq_len, dtype, 0)
    model = rnnfast.build_model(
        args.cell, args.input, args.hidden, args.output, mode="many_to_one", dtype=dtype, seed=0
    )
    opt = optim.Adam(model.parameters(), lr=1e-3)
    stamps: list[tuple[float, float]] = []
    cb = rnnfast.training.LambdaCallback(
        on_batch_end=lambda step, logs: stamps.append((time.perf_counter(), time.process_time()))
    )
    ctx.comm.Barrier()
    stamps.append((time.perf_counter(), time.process_time()))
    ctx.comm_seconds, ctx.comm_cpu_seconds, ctx.steps = 0.0, 0.0, 0
    rnnfast.fit(model, (x, y), losses.MSELoss(), opt, epochs=1, batch_size=args.batch,
                progress=False, seed=0, callbacks=[cb], distributed=ctx)  # fmt: skip
    st = np.array(stamps)
    times = np.diff(st[:, 0])[args.warmup :]
    cpu = np.diff(st[:, 1])[args.warmup :]
    comm_per_step = ctx.comm_seconds / max(ctx.steps, 1)
    # CPU time per step outside the Allreduce (MPICH spins while it waits), slowest rank: the
    # step time this rank count would reach on otherwise idle cores, before communication
    worst = np.array([float(np.median(cpu)) - ctx.comm_cpu_seconds / max(ctx.steps, 1)])
    ctx.comm.Allreduce(dist_in_place(), worst, op=_mpi_max())
    # bare Allreduce of a buffer of the packed size (all ranks enter together)
    n_grad = sum(g.size for g in model.grads.values())
    buf = np.zeros(n_grad + 8, dtype=dtype)
    bare: list[float] = []
    for _ in range(20):
        ctx.comm.Barrier()
        a = time.perf_counter()
        ctx.comm.Allreduce(dist_in_place(), buf)
        bare.append(time.perf_counter() - a)
    if ctx.is_root:
        print(
            json.dumps(
                {
                    "ranks": ctx.size,
                    "step_s": [float(v) for v in times],
                    "compute_cpu_step_s": float(worst[0]),
                    "allreduce_in_step_s": comm_per_step,
                    "bare_allreduce_s": float(np.median(bare)),
                    "grad_floats": int(n_grad),
                    "check_max_err": check_err,
                }
            ),
            flush=True,
        )


def dist_in_place() -> Any:
    from mpi4py import MPI

    return MPI.IN_PLACE


def _mpi_max() -> Any:
    from mpi4py import MPI

    return MPI.MAX


# --------------------------------------------------------------------------------------------------
# launcher
# --------------------------------------------------------------------------------------------------


def _mpiexec() -> str:
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else "mpiexec"


def launch(args: argparse.Namespace, ranks: int) -> dict[str, Any]:
    env = dict(os.environ, RNNFAST_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [_mpiexec(), "-n", str(ranks), "-launcher", "fork", "-host", "localhost"]
    cmd += [sys.executable, __file__, "--worker"] + _forward(args)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"bench_mpi: {ranks} ranks failed:\n{proc.stdout}\n{proc.stderr}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("{"))
    return json.loads(line)


def _forward(args: argparse.Namespace) -> list[str]:
    out = []
    for k in ("cell", "input", "hidden", "output", "seq_len", "batch", "steps", "warmup", "dtype"):
        out += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cell", default="lstm", choices=("rnn", "lstm", "gru"))
    p.add_argument("--input", type=int, default=64)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--output", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=100)
    p.add_argument("--batch", type=int, default=64, help="GLOBAL batch size")
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps per run")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3, help="runs per rank count (alternating)")
    p.add_argument("--json", metavar="PATH", help="write the raw results here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    runs: dict[int, list[dict[str, Any]]] = {r: [] for r in args.ranks}
    for rep in range(args.repeats):
        for r in args.ranks:
            res = launch(args, r)
            runs[r].append(res)
            med = statistics.median(res["step_s"])
            print(f"repeat {rep + 1}/{args.repeats}: {r} rank(s): median step {med * 1e3:.1f} ms",
                  file=sys.stderr, flush=True)  # fmt: skip
    shape = (
        f"{args.cell.upper()} I={args.input} H={args.hidden} T={args.seq_len} "
        f"global B={args.batch} {args.dtype}, Adam, full BPTT, 1 thread per rank"
    )
    print(f"bench_mpi: {shape}; median over {args.repeats} x {args.steps} steps")
    print(f"{'ranks':>5} {'step ms':>9} {'seq/s':>8} {'speed-up':>8} {'allreduce ms':>13} "
          f"{'bare allreduce ms':>18} {'cpu ms':>8} {'cpu speed-up':>12} "
          f"{'check err':>10}")  # fmt: skip
    base = None
    base_cpu = None
    summary = []
    for r in args.ranks:
        steps = [s for res in runs[r] for s in res["step_s"]]
        med = statistics.median(steps)
        base = med if base is None else base
        comm = statistics.median(res["allreduce_in_step_s"] for res in runs[r])
        bare = statistics.median(res["bare_allreduce_s"] for res in runs[r])
        err = max(res["check_max_err"] for res in runs[r])
        cpu = statistics.median(res["compute_cpu_step_s"] for res in runs[r])
        base_cpu = cpu if base_cpu is None else base_cpu
        # on idle cores: the slowest rank's compute plus the bare Allreduce
        cpu_speedup = base_cpu / (cpu + (bare if r > 1 else 0.0))
        print(f"{r:>5} {med * 1e3:>9.1f} {args.batch / med:>8.1f} {base / med:>8.2f} "
              f"{comm * 1e3:>13.2f} {bare * 1e3:>18.3f} {cpu * 1e3:>8.1f} {cpu_speedup:>12.2f} "
              f"{err:>10.1e}")  # fmt: skip
        summary.append({"ranks": r, "median_step_s": med, "seq_per_s": args.batch / med,
                        "speedup": base / med, "allreduce_in_step_s": comm,
                        "bare_allreduce_s": bare, "compute_cpu_step_s": cpu,
                        "cpu_speedup": cpu_speedup, "check_max_err": err})  # fmt: skip
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"config": vars(args), "summary": summary, "runs": runs}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
