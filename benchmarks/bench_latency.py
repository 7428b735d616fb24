"""B = 1 / small-batch inference latency: rnnfast vs onnxruntime vs PyTorch (issue 17).

Grid: cell {rnn (tanh), lstm, gru} x H {64, 128, 256, 512, 1024} x B {1, 4} x threads {1, 2},
T = 100, I = H, float32, inference (no cache). One process; every variant of a row is checked
against rnnfast's float64 NumPy reference (``rnnfast.reference``) on the row's own inputs before
it is timed, then the variants are alternated sample by sample (the order rotates each round) and
each figure is the median of ``--repeats`` samples (a sample: the mean of as many calls as fill
``--min-sample`` seconds).

Settling (rows with threads > 1): each variant is timed as if it ran alone in its process. Before
every sample the run sleeps ``--settle`` seconds (onnxruntime's spinning pool and torch's threads of
the previous sample wind down: ~20-40 ms of spinning after an onnxruntime run was measured), reads
the compiled core's ``free_cpus()`` (rnnfast's load window starts there), and sleeps ``--settle``
again. rnnfast picks its thread count from the CPU time that others took in that window (issue 12),
so it then sees the machine's own load, not the other libraries' samples of this benchmark; on a
machine shared with other work it may still, correctly, run on fewer threads than allowed.

Variants
  rnnfast       ``rnnfast.functional.<cell>_forward(..., training=False)``, after
                ``rnnfast.set_num_threads(threads)`` (threads is an upper bound: rnnfast takes as
                many as the measured barrier cost and the free CPUs pay for).
  frozen        ``module.freeze()`` of an rnnfast module holding the row's weights (float32): the
                same kernels on weights packed once, as onnxruntime's session packs them at
                creation (``rnnfast`` packs W_hh in every call).
  before        (with ``--before-core PATH``) the same call on another build of the compiled core,
                in a worker process that loads PATH as ``rnnfast._core_<variant>``: a before/after
                comparison in the same run. The worker waits on a pipe while the others run.
  ort           onnxruntime, one ONNX RNN/LSTM/GRU node (built with onnx.helper, weights as
                initializers, GRU with linear_before_reset=1 = PyTorch's GRU), intra_op_num_threads
                = threads, inter_op 1, sequential execution; onnxruntime's pool spins while idle.
  ort_nospin    the same session with ``session.intra_op.allow_spinning = 0``.
  torch         ``torch.nn.<Cell>`` under ``torch.inference_mode()`` after
                ``torch.set_num_threads(threads)``.

Bandwidth (the yardstick of issue 17): per row, the W_hh stream rate of rnnfast (from the median
sample, and from the fastest one: "frac best"),
  4 * G*H*H * T bytes / call time          (W_hh read once per step; the call time includes the
                                             input GEMM and the cells, so this is a lower bound),
and, measured in the same run by the compiled core's ``read_bandwidth`` (each thread re-reads its
own buffer), the read bandwidth of a buffer the size of one thread's W_hh slice (G*H*H*4 / threads
bytes) at the row's thread count: the cache level the weights live in. ``frac`` = stream / that.
The barrier cost (``barrier_probe``: the OpenMP barrier and rnnfast's StepBarrier in a running
team of 2) is measured at the start and the end of the run.

Outputs (``--out``, default benchmarks/out/): latency.json and latency.md.

The inputs, the ONNX model and each variant's call: ``rnnbench/latency_calls.py``.

Examples
  python benchmarks/bench_latency.py --quick
  python benchmarks/bench_latency.py                     # the full grid (~20 minutes on 2 cores)
  python benchmarks/bench_latency.py --cells lstm --hidden 256 --threads 1 \\
      --before-core /tmp/before/_core_avx2.cpython-311-x86_64-linux-gnu.so
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import importlib.util
import json
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

from rnnbench.common import GATES
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

__all__ = [
    "GATES",
    "build_onnx_model",
    "cpu_model",
    "make_inputs",
    "main",
    "time_alternating",
]

DEFAULT_OUT = Path(__file__).resolve().parent / "out"
VARIANT_ORDER = ("rnnfast", "frozen", "before", "ort", "ort_nospin", "torch")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", nargs="+", default=["lstm", "gru", "rnn"], choices=sorted(GATES))
    p.add_argument("--hidden", nargs="+", type=int, default=[64, 128, 256, 512, 1024])
    p.add_argument("--batch", nargs="+", type=int, default=[1, 4])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=7, help="samples per variant (median; >= 3)")
    p.add_argument("--min-sample", type=float, default=0.05, help="seconds per sample")
    p.add_argument("--tol", type=float, default=1e-4, help="max relative error vs the reference")
    p.add_argument(
        "--settle",
        type=float,
        default=0.12,
        help="seconds of quiet before each sample of a row with threads > 1 (twice; 0: none)",
    )
    p.add_argument("--no-ort", action="store_true", help="do not time onnxruntime")
    p.add_argument("--no-frozen", action="store_true", help="do not time module.freeze()")
    p.add_argument("--no-torch", action="store_true", help="do not time PyTorch")
    p.add_argument(
        "--before-core",
        type=Path,
        default=None,
        help="another build of rnnfast's compiled core (.so) to time as 'before' in a worker",
    )
    p.add_argument("--quick", action="store_true", help="H 128 256 1024, B 1, 5 repeats")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    p.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        if args.hidden == [64, 128, 256, 512, 1024]:
            args.hidden = [128, 256, 1024]
        if args.batch == [1, 4]:
            args.batch = [1]
        args.repeats = 5
        args.min_sample = 0.03
    if args.repeats < 3:
        p.error(f"--repeats: expected >= 3, got {args.repeats}")
    for name in ("hidden", "batch", "threads"):
        bad = [v for v in getattr(args, name) if v < 1]
        if bad:
            p.error(f"--{name}: expected positive integers, got {bad}")
    if args.steps < 1:
        p.error(f"--steps: expected >= 1, got {args.steps}")
    if not args.settle >= 0:
        p.error(f"--settle: expected >= 0 seconds, got {args.settle}")
    if not args.min_sample > 0:
        p.error(f"--min-sample: expected > 0 seconds, got {args.min_sample}")
    if args.before_core is not None and not args.before_core.is_file():
        p.error(f"--before-core: expected a compiled core module file, got {args.before_core}")
    return args


# ---- machine ----------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or platform.processor())."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cache_sizes() -> dict[str, int]:
    """Per-core L1d / L2 and shared L3 sizes in bytes from sysfs (missing levels left out)."""
    out: dict[str, int] = {}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for idx in sorted(base.glob("index*")) if base.is_dir() else []:
        try:
            level = (idx / "level").read_text().strip()
            kind = (idx / "type").read_text().strip()
            size = (idx / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        mult = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(size[-1:], 1)
        digits = size.rstrip("KMG")
        if digits.isdigit():
            out[f"L{level}"] = int(digits) * mult
    return out


def cache_level(nbytes: float, caches: Mapping[str, int]) -> str:
    """The smallest cache level (L2 or larger) whose size holds nbytes, else DRAM."""
    for level in ("L2", "L3"):
        if level in caches and nbytes <= caches[level]:
            return level
    return "DRAM"


# ---- timing -----------------------------------------------------------------------------------


def _calibrate(fn: Callable[[], Any], min_sample: float) -> int:
    """Calls per sample so that a sample lasts about min_sample seconds (fn warmed up)."""
    fn()
    t0 = time.perf_counter()
    fn()
    dt = max(time.perf_counter() - t0, 1e-7)
    return max(1, int(min_sample / dt))


def _settle(core: Any, seconds: float) -> None:
    """Quiet before a sample: the previous sample's threads wind down, then rnnfast's load window
    (``free_cpus``) restarts and sees only the machine's own load (see the module docstring)."""
    if seconds > 0:
        time.sleep(seconds)
        core.free_cpus()
        time.sleep(seconds)


def _sample(fn: Callable[[], Any], inner: int) -> float:
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def time_alternating(
    samplers: Mapping[str, Callable[[], float]], repeats: int
) -> dict[str, list[float]]:
    """Seconds per call of each sampler, ``repeats`` samples each: the samplers alternated, the
    order rotated every round."""
    names = list(samplers)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            times[n].append(samplers[n]())
    return times


# ---- the 'before' worker ----------------------------------------------------------------------


def _load_core_from(path: Path) -> str:
    """Imports the compiled core at path as rnnfast's core (before rnnfast itself); its variant."""
    stem = path.name.split(".")[0]
    if not stem.startswith("_core_"):
        raise ValueError(
            f"--before-core: expected a file named _core_<variant>.*.so, got {path.name}"
        )
    os.environ["RNNFAST_SIMD"] = stem[len("_core_") :]
    spec = importlib.util.spec_from_file_location(f"rnnfast.{stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"--before-core: cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[f"rnnfast.{stem}"] = mod
    spec.loader.exec_module(mod)
    return stem[len("_core_") :]


def worker_main(path: Path) -> int:
    """Serve setup / sample requests (JSON lines on stdin) with the core at path."""
    _load_core_from(path)
    import rnnfast
    import rnnfast.functional as functional
    from rnnfast._loader import core

    fn: Callable[[], Any] | None = None
    out = sys.stdout
    for line in sys.stdin:
        req = json.loads(line)
        if req["cmd"] == "setup":
            rnnfast.set_num_threads(int(req["threads"]))
            inp = make_inputs(req["cell"], req["steps"], req["batch"], req["hidden"], req["seed"])
            fn = rnnfast_call(functional, req["cell"], inp)
            got = named_outputs(req["cell"], fn())
            exp = {k: np.asarray(v) for k, v in np.load(req["expected"]).items()}
            err, where = max_error(got, exp)
            inner = _calibrate(fn, float(req["min_sample"]))
            reply: dict[str, Any] = {"err": err, "where": where, "inner": inner}
        elif req["cmd"] == "sample" and fn is not None:
            if hasattr(core, "free_cpus"):  # (a core older than issue 12 has no load window)
                _settle(core, float(req.get("settle", 0.0)))
            reply = {"seconds": _sample(fn, int(req["inner"]))}
        else:
            reply = {"error": f"unknown request {req!r}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    return 0


class Worker:
    """The 'before' core in a child process (this script with --worker PATH)."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.inner = 1

    def ask(self, req: Mapping[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the --before-core worker exited")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


# ---- the run ----------------------------------------------------------------------------------


def _yardsticks(core: Any, cells: list[str], hidden: list[int], threads: list[int]) -> dict:
    """read_bandwidth (bytes/s) of a buffer of one thread's W_hh slice, per (cell, H, threads)."""
    out: dict[str, float] = {}
    for thr in threads:
        for cell in cells:
            for h in hidden:
                nbytes = 4 * GATES[cell] * h * h // thr
                key = f"{nbytes}/{thr}"
                if key not in out:
                    out[key] = core.read_bandwidth(max(nbytes, 4096), thr, 0.1)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Check and time every row; returns the JSON document."""
    import rnnfast
    import rnnfast.functional as functional
    import rnnfast.reference as reference
    from rnnfast._loader import core

    ort = None if args.no_ort else __import__("onnxruntime")
    torch = None if args.no_torch else __import__("torch")
    caches = cache_sizes()
    meta = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "caches": caches,
        "variant": core.variant,
        "loadavg_start": os.getloadavg(),
        "onnxruntime": getattr(ort, "__version__", None),
        "torch": getattr(torch, "__version__", None),
        "before_core": str(args.before_core) if args.before_core else None,
        "settle_s": args.settle,
    }
    print(f"CPU: {meta['cpu_model']} ({meta['cpus']} CPUs), caches {caches}, core {core.variant}")
    barrier_start = [core.barrier_probe(2, 2000) for _ in range(3)]
    print(f"barrier (running team of 2, s/round): {barrier_start}", flush=True)
    bw = _yardsticks(core, args.cells, args.hidden, args.threads)
    worker = Worker(args.before_core) if args.before_core else None
    rows: list[dict[str, Any]] = []
    tmp = args.out / "latency_expected.npz"
    try:
        for thr in args.threads:
            rnnfast.set_num_threads(thr)
            if torch is not None:
                torch.set_num_threads(thr)
            for cell in args.cells:
                for h in args.hidden:
                    for b in args.batch:
                        rows.append(
                            _row(
                                args,
                                cell,
                                h,
                                b,
                                thr,
                                functional,
                                reference,
                                ort,
                                torch,
                                worker,
                                tmp,
                                bw,
                                caches,
                            )
                        )
                        gc.collect()
    finally:
        if worker is not None:
            worker.close()
        tmp.unlink(missing_ok=True)
    meta["loadavg_end"] = os.getloadavg()
    barrier_end = [core.barrier_probe(2, 2000) for _ in range(3)]
    print(f"barrier at the end: {barrier_end}")
    return {
        "meta": meta,
        "barrier": {"start": barrier_start, "end": barrier_end},
        "read_bandwidth": bw,
        "rows": rows,
    }


def _row(
    args: argparse.Namespace,
    cell: str,
    h: int,
    b: int,
    thr: int,
    functional: Any,
    reference: Any,
    ort: Any,
    torch: Any,
    worker: Worker | None,
    tmp: Path,
    bw: Mapping[str, float],
    caches: Mapping[str, int],
) -> dict[str, Any]:
    seed = 1000 * GATES[cell] + 10 * h + b
    inp = make_inputs(cell, args.steps, b, h, seed)
    expected = reference_outputs(reference, cell, inp)
    calls: dict[str, Callable[[], Any]] = {"rnnfast": rnnfast_call(functional, cell, inp)}
    if not args.no_frozen:
        import rnnfast

        calls["frozen"] = frozen_call(rnnfast, cell, inp)
    if ort is not None:
        model = build_onnx_model(cell, inp)
        calls["ort"] = ort_call(ort, model, cell, inp, thr, spin=True)
        calls["ort_nospin"] = ort_call(ort, model, cell, inp, thr, spin=False)
    if torch is not None:
        calls["torch"] = torch_call(torch, cell, inp)
    from rnnfast._loader import core

    row: dict[str, Any] = {"cell": cell, "hidden": h, "batch": b, "threads": thr, "errors": {}}
    samplers: dict[str, Callable[[], float]] = {}
    settle = args.settle if thr > 1 else 0.0

    def settled(fn: Callable[[], Any], inner: int) -> Callable[[], float]:
        def sample() -> float:
            _settle(core, settle)
            return _sample(fn, inner)

        return sample

    for name, fn in calls.items():
        err, where = max_error(named_outputs(cell, fn()), expected)
        row["errors"][name] = err
        if err > args.tol:
            print(f"  {cell} H={h} B={b} thr={thr} {name}: FAILED (error {err:.2e} in {where})")
            continue
        inner = _calibrate(fn, args.min_sample)
        samplers[name] = settled(fn, inner)
    if worker is not None:
        np.savez(tmp, **expected)
        rep = worker.ask(
            {"cmd": "setup", "cell": cell, "hidden": h, "batch": b, "threads": thr,
             "steps": args.steps, "seed": seed, "expected": str(tmp),
             "min_sample": args.min_sample}
        )  # fmt: skip
        row["errors"]["before"] = rep["err"]
        if rep["err"] <= args.tol:
            samplers["before"] = lambda inner=rep["inner"]: worker.ask(
                {"cmd": "sample", "inner": inner, "settle": settle}
            )["seconds"]
        else:
            print(f"  {cell} H={h} B={b} thr={thr} before: FAILED (error {rep['err']:.2e})")
    order = {n: i for i, n in enumerate(VARIANT_ORDER)}
    samplers = dict(sorted(samplers.items(), key=lambda kv: order[kv[0]]))
    samples = time_alternating(samplers, args.repeats)
    row["ms"] = {k: 1e3 * statistics.median(v) for k, v in samples.items()}
    row["ms_best"] = {k: 1e3 * min(v) for k, v in samples.items()}
    g = GATES[cell]
    whh = 4.0 * g * h * h
    level = cache_level(whh / thr, caches)
    yard = bw.get(f"{int(whh) // thr}/{thr}")
    if "rnnfast" in row["ms"]:
        stream = whh * args.steps / (row["ms"]["rnnfast"] * 1e-3)
        row["whh_gbs"] = stream / 1e9
        row["yard_gbs"] = yard / 1e9 if yard else None
        row["frac"] = stream / yard if yard else None
        best = whh * args.steps / (row["ms_best"]["rnnfast"] * 1e-3)
        row["frac_best"] = best / yard if yard else None
    row["level"] = level
    print(_console(row), flush=True)
    return row


def _ratio(row: Mapping[str, Any], other: str, base: str = "rnnfast") -> float | None:
    ms = row.get("ms", {})
    if base not in ms or other not in ms:
        return None
    return ms[other] / ms[base]


def _console(row: Mapping[str, Any]) -> str:
    ms = row.get("ms", {})
    parts = [f"{row['cell']:4s} H={row['hidden']:4d} B={row['batch']} thr={row['threads']}"]
    for n in VARIANT_ORDER:
        if n in ms:
            parts.append(f"{n} {ms[n]:.3f}")
    for n in ("frozen", "ort", "torch", "before"):
        r = _ratio(row, n)
        if r is not None:
            parts.append(f"x{n} {r:.2f}")
    r = _ratio(row, "ort", "frozen")
    if r is not None:
        parts.append(f"frozen xort {r:.2f}")
    if row.get("frac") is not None:
        parts.append(
            f"W_hh {row['whh_gbs']:.1f} GB/s = {100 * row['frac']:.0f}% of {row['level']} "
            f"({row['yard_gbs']:.1f})"
        )
    return "  ".join(parts)


def markdown(doc: Mapping[str, Any]) -> str:
    """The rows as a markdown table, with the machine line and the barrier costs."""
    meta = doc["meta"]
    lines = [
        f"CPU: {meta['cpu_model']} ({meta['cpus']} CPUs), caches {meta['caches']}, "
        f"core {meta['variant']}, load {meta['loadavg_start']} -> {meta['loadavg_end']}, "
        f"{meta['date']}",
        "",
        f"Settle: {meta.get('settle_s', 0)} s of quiet twice before each sample of a row with "
        "threads > 1 (each variant timed as if alone in its process).",
        "",
        "Barrier, running team of 2, us per round (OpenMP / StepBarrier): "
        + ", ".join(
            f"{1e6 * p['omp_barrier_s']:.2f} / {1e6 * p['step_barrier_s']:.2f}"
            for p in doc["barrier"]["start"] + doc["barrier"]["end"]
        ),
        "",
    ]
    names = [n for n in VARIANT_ORDER if any(n in r.get("ms", {}) for r in doc["rows"])]
    head = ["cell", "H", "B", "thr", *[f"{n} ms" for n in names]]
    head += [f"x{n}" for n in ("frozen", "ort", "ort_nospin", "torch", "before") if n in names]
    if "frozen" in names and "ort" in names:
        head += ["frozen xort", "frozen xtorch"]
    head += ["W_hh GB/s", "level", "yardstick GB/s", "frac", "frac best"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for r in doc["rows"]:
        ms = r.get("ms", {})
        cells = [r["cell"], r["hidden"], r["batch"], r["threads"]]
        cells += [f"{ms[n]:.3f}" if n in ms else "-" for n in names]
        for n in ("frozen", "ort", "ort_nospin", "torch", "before"):
            if n in names:
                v = _ratio(r, n)
                cells.append("-" if v is None else f"{v:.2f}")
        if "frozen" in names and "ort" in names:
            for n in ("ort", "torch"):
                v = _ratio(r, n, "frozen")
                cells.append("-" if v is None else f"{v:.2f}")
        frac = r.get("frac")
        cells += [
            f"{r['whh_gbs']:.1f}" if "whh_gbs" in r else "-",
            r.get("level", "-"),
            f"{r['yard_gbs']:.1f}" if r.get("yard_gbs") else "-",
            f"{100 * frac:.0f}%" if frac is not None else "-",
            f"{100 * r['frac_best']:.0f}%" if r.get("frac_best") is not None else "-",
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines.append("")
    lines.append(
        "x<name> = that variant's time / rnnfast's (> 1: rnnfast faster); frozen x<name> = that "
        "variant's time / frozen's. W_hh GB/s = 4*G*H*H*T / "
        "rnnfast's call time; yardstick = read_bandwidth of one thread's W_hh slice at the row's "
        "thread count, same run; frac = W_hh GB/s / yardstick; frac best = the same from rnnfast's "
        "fastest sample (the yardstick is a median of ~4 MiB rounds, each short enough to run "
        "between preemptions: on a loaded machine 'frac best' compares like with like)."
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the grid (or serve as the --before-core worker)."""
    args = parse_args(argv)
    if args.worker is not None:
        return worker_main(args.worker)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = run(args)
    (args.out / "latency.json").write_text(json.dumps(doc, indent=1))
    md = markdown(doc)
    (args.out / "latency.md").write_text(md)
    print("\n" + md)
    print(f"written: {args.out / 'latency.json'}, {args.out / 'latency.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
