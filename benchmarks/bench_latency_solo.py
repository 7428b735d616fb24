"""B = 1 inference latency with each library alone in a fresh process (issue 17).

``bench_latency.py`` times every variant of a row in one process, alternated sample by sample. At
one thread that is the fairest comparison; at two or more, the other libraries' thread pools
(onnxruntime's spinning pool, PyTorch's OpenMP pool) share the process and the cores, and rnnfast's
free-CPU check may count them as competition and run one thread (issue 12's rule, as designed).
This script removes that interaction: every (row, variant) sample is a fresh Python process that
imports only its own library, checks its outputs against rnnfast's float64 reference
(``rnnfast.reference``) on the row's inputs, warms up, and reports the median of ``--samples``
samples (a sample: the mean of as many calls as fill ``--min-sample`` seconds). The parent runs
``--rounds`` such processes per variant, alternated (the order rotates each round), and reports the
median over rounds of the per-process medians.

Variants: rnnfast (``functional.<cell>_forward(..., training=False)`` after
``set_num_threads(threads)``), ort (one ONNX node, intra-op threads = threads, spinning on),
ort_nospin (spinning off), torch (``torch.nn.<Cell>`` under ``inference_mode`` after
``torch.set_num_threads(threads)``). The inputs and calls are ``rnnbench/latency_calls.py``'s,
the same as bench_latency's. Outputs (``--out``): latency_solo.json and latency_solo.md.

Examples
  python benchmarks/bench_latency_solo.py --cells lstm gru --hidden 256 1024 --threads 2
  python benchmarks/bench_latency_solo.py --quick
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rnnbench.latency_calls import (
    build_onnx_model,
    frozen_call,
    make_inputs,
    max_error,
    named_outputs,
    ort_call,
    reference_outputs,
    rnnfast_call,
    torch_call,
)
from rnnbench.machine import cpuinfo, loadavg

__all__ = ["VARIANTS", "main", "one_process", "parse_args", "run"]

VARIANTS = ("rnnfast", "frozen", "ort", "ort_nospin", "torch")
_T = 100


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--cells", nargs="+", default=["lstm", "gru", "rnn"], choices=["rnn", "lstm", "gru"]
    )
    p.add_argument("--hidden", nargs="+", type=int, default=[128, 256, 512, 1024])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--rounds", type=int, default=3, help="fresh processes per variant (median)")
    p.add_argument("--samples", type=int, default=5, help="samples per process (median)")
    p.add_argument("--min-sample", type=float, default=0.2, help="seconds per sample")
    p.add_argument("--tol", type=float, default=1e-4, help="max relative error vs the reference")
    p.add_argument("--quick", action="store_true", help="lstm and gru at H 256 1024, 2 rounds")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: one variant's process (JSON)
    a = p.parse_args(argv)
    for name in ("rounds", "samples"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')}: expected >= 1, got {getattr(a, name)}")
    if not a.min_sample > 0:
        p.error(f"--min-sample: expected > 0, got {a.min_sample}")
    if any(h < 1 for h in a.hidden) or any(t < 1 for t in a.threads):
        p.error("--hidden and --threads: expected positive integers")
    if a.quick:
        a.cells, a.hidden, a.rounds = ["lstm", "gru"], [256, 1024], 2
    return a


def _build(variant: str, cell: str, inp: dict[str, Any], threads: int) -> Any:
    if variant == "rnnfast":
        import rnnfast
        import rnnfast.functional as functional

        rnnfast.set_num_threads(threads)
        return rnnfast_call(functional, cell, inp)
    if variant == "frozen":
        import rnnfast

        rnnfast.set_num_threads(threads)
        return frozen_call(rnnfast, cell, inp)
    if variant in ("ort", "ort_nospin"):
        import onnxruntime as ort

        return ort_call(ort, build_onnx_model(cell, inp), cell, inp, threads, spin=variant == "ort")
    import torch

    torch.set_num_threads(threads)
    return torch_call(torch, cell, inp)


def one_process(req: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: check, warm up and time one variant on one row."""
    import rnnfast.reference as reference

    cell, h, threads = req["cell"], int(req["hidden"]), int(req["threads"])
    inp = make_inputs(cell, _T, 1, h, seed=0)
    fn = _build(req["variant"], cell, inp, threads)
    err, where = max_error(named_outputs(cell, fn()), reference_outputs(reference, cell, inp))
    if not err <= req["tol"]:
        return {"error": f"{where or 'outputs'}: max rel error {err:.3g} > {req['tol']}"}
    fn()
    t0 = time.perf_counter()
    fn()
    inner = max(1, int(req["min_sample"] / max(time.perf_counter() - t0, 1e-7)))
    samples = []
    for _ in range(int(req["samples"])):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return {"median_s": statistics.median(samples), "err": err}


def _spawn(req: dict[str, Any]) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(req)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {proc.returncode}: {tail[0]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> dict[str, Any]:
    args.out.mkdir(parents=True, exist_ok=True)  # before any timing: a bad --out fails at once
    info = cpuinfo()
    rows = []
    for threads in args.threads:
        for cell in args.cells:
            for h in args.hidden:
                times: dict[str, list[float]] = {v: [] for v in args.variants}
                errors: dict[str, str] = {}
                for r in range(args.rounds):
                    k = r % len(args.variants)
                    for v in args.variants[k:] + args.variants[:k]:
                        if v in errors:
                            continue
                        req = {
                            "variant": v,
                            "cell": cell,
                            "hidden": h,
                            "threads": threads,
                            "samples": args.samples,
                            "min_sample": args.min_sample,
                            "tol": args.tol,
                        }
                        res = _spawn(req)
                        if "error" in res:
                            errors[v] = res["error"]
                        else:
                            times[v].append(res["median_s"])
                med = {
                    v: statistics.median(t) * 1e3 for v, t in times.items() if t and v not in errors
                }
                row = {
                    "cell": cell,
                    "H": h,
                    "B": 1,
                    "threads": threads,
                    "ms": med,
                    "errors": errors,
                }
                row["ms_each"] = {v: [x * 1e3 for x in t] for v, t in times.items()}
                rows.append(row)
                print(_line(row), flush=True)
    doc = {
        "when": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": info.get("cpu_model", "unknown"),
        "logical_cpus": info.get("logical_cpus"),
        "load": loadavg(),
        "args": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "one"
        },
        "rows": rows,
    }
    (args.out / "latency_solo.json").write_text(json.dumps(doc, indent=1))
    (args.out / "latency_solo.md").write_text(_markdown(doc, args.variants))
    return doc


def _ratio(row: dict[str, Any], v: str, base: str = "rnnfast") -> str:
    ms = row["ms"]
    return f"{ms[v] / ms[base]:.2f}" if v in ms and base in ms else "-"


def _line(row: dict[str, Any]) -> str:
    parts = [f"{row['cell']:4s} H={row['H']:5d} thr={row['threads']}"]
    parts += [f"{v} {ms:.3f}" for v, ms in row["ms"].items()]
    parts += [f"x{v} {_ratio(row, v)}" for v in row["ms"] if v != "rnnfast"]
    parts += [f"{v} FAILED ({e})" for v, e in row["errors"].items()]
    return "  ".join(parts)


def _markdown(doc: dict[str, Any], variants: list[str]) -> str:
    others = [v for v in variants if v != "rnnfast"]
    vs_frozen = [v for v in ("ort", "torch") if "frozen" in variants and v in variants]
    head = ["cell", "H", "thr", *(f"{v} ms" for v in variants), *(f"x{v}" for v in others)]
    head += [f"frozen x{v}" for v in vs_frozen]
    lines = [
        f"CPU: {doc['cpu']} ({doc['logical_cpus']} logical CPUs), load {doc['load']}, {doc['when']}",
        "",
        "Each figure: the median over fresh processes of each process's median sample; "
        "x<v> = v's time / rnnfast's (> 1: rnnfast faster); frozen x<v> = v's time / the frozen "
        "module's.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in doc["rows"]:
        ms = row["ms"]
        cells = [row["cell"], str(row["H"]), str(row["threads"])]
        cells += [f"{ms[v]:.3f}" if v in ms else "FAILED" for v in variants]
        cells += [_ratio(row, v) for v in others]
        cells += [_ratio(row, v, "frozen") for v in vs_frozen]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one:
        print(json.dumps(one_process(json.loads(args.one))))
        return 0
    doc = run(args)
    return 1 if any(row["errors"] for row in doc["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
