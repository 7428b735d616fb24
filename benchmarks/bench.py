"""rnnfast speed benchmark: rnnfast.functional vs PyTorch (CPU) vs the NumPy reference.

Grid: cell {rnn (tanh), lstm, gru} x H {64, 256, 512, 1024} x B {1, 16, 64} x T = 100 (I = H) x mode
{inference, training} x threads {1, 2}, float32. Every implementation runs in this one process, the
implementations of a row are alternated (A/B/A/B...), each one is warmed up, and the reported time
is the median of ``--repeats`` (>= 5) samples. A sample is the mean of as many calls as fill
``--min-sample`` seconds (one call for slow rows).

What a "call" is
  inference: rnnfast ``<cell>_forward(..., training=False)``; PyTorch ``torch.nn.<Cell>`` forward
             under ``torch.inference_mode()``; reference ``<cell>_forward(..., training=False)``.
  training:  forward with training=True, then backward of L = sum(y * dy) with ALL gradients
             (weights, biases, dx, dh0 [, dc0]); PyTorch computes the same set with
             ``torch.autograd.grad``.

FLOP formula (the recurrent and the input GEMMs only; pointwise work is not counted):
  inference  F = 2 * T * B * G * H * (I + H)        G = 1 rnn, 3 gru, 4 lstm
  training   3 * F (forward, the dh/dx GEMMs and the dW GEMMs)
The "limit" column is the same run's sgemm peak: the best of ``torch.mm`` and NumPy ``@`` on square
float32 matrices (``--gemm-n``, default 2048) at the row's thread count.

At B = 1 the recurrent step is a matrix-vector product bound by how fast W_hh streams from cache, so
the table also gives the weight bytes streamed per second,
  inference  4 * G*H * (T*H + I) bytes per call      (W_hh every step, W_ih once)
  training   4 * G*H * (2*T*H + 3*I) bytes per call  (W_hh in the forward and the dh recurrence;
                                                      W_ih in the input GEMM, dx and dW_ih)
against the read bandwidth measured in this run (a repeated row-sum over a float32 array sized to
L1 / L2 / L3 / DRAM, at the row's thread count) of the smallest cache level, L2 or larger, that
holds the W_hh slice of one thread (G*H*H*4 / threads bytes; <= 3/4 of the per-core L2, else
<= 3/4 of L3).

Correctness before timing: before a row is timed, the rnnfast result on the row's own inputs (at
the row's thread count) is compared with an oracle: the float64 NumPy reference for small shapes,
PyTorch in float64 for big ones. Error = max|a - e| / max|e| per output and gradient; a row whose
error exceeds ``--tol`` (1e-4, float32) is reported as FAILED and not timed.

Other modes
  cell variants (issue 14; after the grid, or alone with --variants): lstm_peephole,
      gru_reset_before, lstm_layernorm, gru_layernorm, lstm_proj, mingru, minlstm and LSTM / GRU
      with zoneout + recurrent dropout, each vs the nearest PyTorch construction (the torch loops of
      rnnbench/torch_loops.py, nn.LSTM(proj_size), nn.GRU / nn.LSTM for the minimal cells), training
      and inference, --variant-threads (default 1) on both sides, H 256 (--quick 64), B 16; checked
      against the float64 oracle first (rnnbench/variants.py).
  first call after import: fresh subprocesses per cell and mode (--first-runs, default 5) import
      rnnfast, time the first call and then the median steady-state call; the median ratio over the
      processes is reported (target <= 1.2).
  --memory: peak RSS growth of one training step, rnnfast vs PyTorch, each in a fresh subprocess;
      and of TBPTT training as the stream grows 1x, 10x, 100x (must stay flat).

Outputs (``--out``, default benchmarks/out/): bench.json, bench.md, bench_speedup.png,
bench_efficiency.png (and memory.json / memory.md with --memory).

Examples
  python benchmarks/bench.py --quick
  python benchmarks/bench.py                              # the full grid (tens of minutes)
  python benchmarks/bench.py --cells lstm --hidden 256 --batch 1 16 --threads 1 --modes training
  python benchmarks/bench.py --memory
  python benchmarks/bench.py --variants --quick          # the cell-variant rows only
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from rnnbench.children import CHILDREN, first_call, memory_mode
from rnnbench.common import CELLS, DEFAULT_OUT, GATES, MODES, flops, make_inputs, weight_bytes
from rnnbench.impls import Oracles, Row, run_row
from rnnbench.machine import Threads, cpuinfo, loadavg, measure_bandwidth, measure_sgemm
from rnnbench.report import fmt, memory_markdown, row_console, targets_summary, write_outputs
from rnnbench.variants import VARIANT_ROWS, VariantRow, run_variants

__all__ = [
    "CELLS",
    "GATES",
    "Row",
    "flops",
    "main",
    "weight_bytes",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--cells", nargs="+", choices=CELLS, default=list(CELLS))
    p.add_argument(
        "--hidden", nargs="+", type=int, default=[64, 256, 512, 1024], help="H (= I) values"
    )
    p.add_argument("--batch", nargs="+", type=int, default=[1, 16, 64])
    p.add_argument("--steps", type=int, default=100, help="T")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--repeats", type=int, default=7, help="timed samples per implementation (>= 5)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up calls per implementation")
    p.add_argument(
        "--min-sample", type=float, default=0.05, help="seconds of calls per timed sample"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small subset: H 64 256, B 1 16, 5 repeats, short samples, smaller sgemm",
    )
    p.add_argument(
        "--tol", type=float, default=1e-4, help="max relative error vs the oracle (float32)"
    )
    p.add_argument(
        "--impl",
        default="rnnfast.functional",
        help="module with the functional API to benchmark as 'rnnfast'",
    )
    p.add_argument("--no-torch", action="store_true", help="do not time PyTorch")
    p.add_argument("--no-reference", action="store_true", help="do not time the NumPy reference")
    p.add_argument(
        "--ref-max-hidden", type=int, default=256, help="time the reference only up to this H"
    )
    p.add_argument(
        "--ref-max-batch", type=int, default=16, help="time the reference only up to this B"
    )
    p.add_argument(
        "--ref-max-gflop",
        type=float,
        default=2.0,
        help="oracle = float64 reference up to this many training GFLOP, else float64 PyTorch",
    )
    p.add_argument(
        "--gemm-n", type=int, default=2048, help="square size of the sgemm limit measurement"
    )
    p.add_argument(
        "--no-first-call", action="store_true", help="skip the first-call-after-import subprocesses"
    )
    p.add_argument(
        "--first-runs",
        type=int,
        default=5,
        help="fresh processes per first-call measurement (the median is reported)",
    )
    p.add_argument("--first-hidden", type=int, default=256)
    p.add_argument("--first-batch", type=int, default=16)
    p.add_argument(
        "--memory", action="store_true", help="memory mode (peak RSS) instead of the speed grid"
    )
    p.add_argument("--mem-hidden", nargs="+", type=int, default=[256, 1024])
    p.add_argument("--mem-batch", type=int, default=16)
    p.add_argument("--mem-tbptt-hidden", type=int, default=256)
    p.add_argument("--mem-chunk", type=int, default=20, help="TBPTT chunk (steps per call, <= k1)")
    p.add_argument("--mem-k1", type=int, default=20)
    p.add_argument("--mem-k2", type=int, default=40)
    p.add_argument("--mem-base-chunks", type=int, default=5, help="chunks of the 1x stream")
    p.add_argument("--mem-stream-mults", nargs="+", type=int, default=[1, 10, 100])
    p.add_argument(
        "--variants",
        action="store_true",
        help="only the cell-variant rows (issue 14), not the grid (they also end a full run)",
    )
    p.add_argument("--no-variants", action="store_true", help="skip the cell-variant rows")
    p.add_argument("--variant-cells", nargs="+", choices=VARIANT_ROWS, default=list(VARIANT_ROWS))
    p.add_argument("--variant-hidden", nargs="+", type=int, default=[256], help="H (= I)")
    p.add_argument("--variant-batch", nargs="+", type=int, default=[16])
    p.add_argument("--variant-threads", nargs="+", type=int, default=[1])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    p.add_argument("--child", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        if args.hidden == [64, 256, 512, 1024]:
            args.hidden = [64, 256]
        if args.batch == [1, 16, 64]:
            args.batch = [1, 16]
        args.repeats = 5
        args.warmup = 1
        args.min_sample = 0.02
        args.gemm_n = min(args.gemm_n, 1024)
        if args.variant_hidden == [256]:
            args.variant_hidden = [64]
        args.mem_stream_mults = (
            [1, 10] if args.mem_stream_mults == [1, 10, 100] else args.mem_stream_mults
        )
    if args.repeats < 5:
        p.error("--repeats: expected >= 5 (the median of at least 5 samples)")
    return args


def _meta(args: argparse.Namespace, top: Any, torch: Any) -> dict[str, Any]:
    """The run's description: date, command, machine, build, versions, settings, load average."""
    machine = cpuinfo()
    build = top.build_info() if hasattr(top, "build_info") else {}
    return {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {k: v for k, v in machine.items() if k != "flags"},
        "cpu_flags": machine.get("flags", ""),
        "rnnfast_build": build,
        "torch_version": None if torch is None else torch.__version__,
        "numpy_version": np.__version__,
        "impl": args.impl,
        "steps": args.steps,
        "repeats": args.repeats,
        "gemm_n": args.gemm_n,
        "load_start": loadavg(),
    }


def _run_memory(args: argparse.Namespace, meta: dict[str, Any]) -> int:
    """--memory: the memory subprocesses, then memory.json and memory.md."""
    mem = memory_mode(args, args.cells)
    meta["load_end"] = loadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    targets = targets_summary([], [], mem)
    (args.out / "memory.json").write_text(
        json.dumps({"meta": meta, "memory": mem, "targets": targets}, indent=1, default=str)
    )
    lines = [
        f"# rnnfast memory benchmark ({meta['date']})",
        "",
        f"- command: `{meta['command']}`",
    ]
    lines += memory_markdown(mem)
    (args.out / "memory.md").write_text("\n".join(lines) + "\n")
    for t in (t for t in targets if t["n"]):
        print(
            f"target {t['target']}: {t['goal']} -> met={t['met']} "
            f"worst={fmt(t['worst'], '.3f')} ({t['where']})"
        )
    print(f"\nwrote {args.out}/memory.json, memory.md")
    return 0


def _measure_limits(
    args: argparse.Namespace, threads: Threads, caches: dict[str, int]
) -> dict[str, Any]:
    """sgemm GFLOP/s and read bandwidth per thread count of the grid, measured now (same run)."""
    print("\n== limits: sgemm and read bandwidth ==", flush=True)
    limits: dict[str, Any] = {"sgemm": {}, "bandwidth": {}}
    for thr in sorted(set(args.threads)):
        limits["sgemm"][str(thr)] = measure_sgemm(threads, thr, args.gemm_n, repeats=5)
        limits["bandwidth"][str(thr)] = measure_bandwidth(threads, thr, caches)
        g = limits["sgemm"][str(thr)]
        bw = limits["bandwidth"][str(thr)]
        print(
            f"  {thr} thread(s): sgemm {g['gflops']:.1f} GFLOP/s "
            f"(torch {fmt(g.get('torch_gflops'), '.1f')}, "
            f"numpy {g['numpy_gflops']:.1f}); read GB/s "
            + ", ".join(f"{k} {v:.1f}" for k, v in bw.items()),
            flush=True,
        )
    return limits


def _run_grid(
    args: argparse.Namespace,
    impl: Any,
    torch: Any,
    reference: Any,
    oracles: Oracles,
    threads: Threads,
    limits: dict[str, Any],
    caches: dict[str, int],
) -> list[Row]:
    """Every row of the grid, checked then timed, printed as it completes."""
    print("\n== grid ==", flush=True)
    rows: list[Row] = []
    for cell in args.cells:
        for h in args.hidden:
            for b in args.batch:
                inp = make_inputs(cell, args.steps, b, h, h, seed=1000 * GATES[cell] + 10 * h + b)
                for mode in args.modes:
                    for thr in args.threads:
                        row = Row(
                            cell=cell, hidden=h, batch=b, steps=args.steps, mode=mode, threads=thr
                        )
                        run_row(
                            row, impl, torch, reference, oracles, threads, limits, caches, args, inp
                        )
                        rows.append(row)
                        print(row_console(row), flush=True)
                oracles.clear()
                gc.collect()
    return rows


def _print_targets(rows: list[Row], first: list[dict[str, Any]], variants: list[VariantRow]) -> int:
    """The target summary and the failed rows; the exit status (1 if any row failed)."""
    print("\n== targets (issue 4) ==" if rows or first else "")
    for t in targets_summary(rows, first, None) if rows or first else []:
        met = "n/a" if t["met"] is None else ("MET" if t["met"] else "not met")
        print(
            f"  {t['target']:55s} {t['goal']:8s} {met:8s} worst {fmt(t['worst'], '.2f')} "
            f"({t['where']}) "
            f"{t['n_met']}/{t['n']}"
        )
    failed: list[Row | VariantRow] = [r for r in [*rows, *variants] if r.status != "ok"]
    if failed:
        print(f"\n{len(failed)} row(s) FAILED the correctness check (not timed):")
        for r in failed:
            print("  " + r.message)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        kind, spec = args.child[0], json.loads(args.child[1])
        print("RESULT " + json.dumps(CHILDREN[kind](spec)), flush=True)
        return 0

    try:
        import torch
    except ImportError:
        torch = None
        print("PyTorch not installed: rnnfast and the reference only")
    impl = importlib.import_module(args.impl)
    top = importlib.import_module("rnnfast")
    reference = None if args.no_reference else importlib.import_module("rnnfast.reference")
    oracle_ref = importlib.import_module("rnnfast.reference")
    threads = Threads(top, torch)

    meta = _meta(args, top, torch)
    caches = meta["machine"]["caches"]
    print(
        f"rnnfast benchmark  {meta['date']}  {meta['machine'].get('cpu_model')}  "
        f"{meta['machine'].get('logical_cpus')} CPUs  "
        f"load {meta['load_start']}"
    )
    print(f"rnnfast build: {meta['rnnfast_build']}")
    if args.memory:
        return _run_memory(args, meta)

    rows: list[Row] = []
    first: list[dict[str, Any]] = []
    meta["limits"] = {"sgemm": {}, "bandwidth": {}}
    if not args.variants:
        limits = _measure_limits(args, threads, caches)
        meta["limits"] = limits
        oracles = Oracles(oracle_ref, torch, ref_max_work=args.ref_max_gflop * 1e9)
        rows = _run_grid(args, impl, torch, reference, oracles, threads, limits, caches)
        if not args.no_first_call:
            print("\n== first call after import (fresh process, 1 thread) ==", flush=True)
            first = first_call(args, args.cells, args.modes)
    variants: list[VariantRow] = []
    if (args.variants or not args.no_variants) and torch is not None and not args.no_torch:
        print("\n== cell variants vs the nearest PyTorch construction ==", flush=True)
        variants = run_variants(args, threads)

    meta["load_end"] = loadavg()
    write_outputs(args.out, meta, rows, first, None, variants)
    return _print_targets(rows, first, variants)


if __name__ == "__main__":
    sys.exit(main())
