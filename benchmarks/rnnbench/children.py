"""Subprocess measurements: the first call after import, and peak memory (one step, TBPTT)."""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .common import HERE, make_inputs
from .impls import TorchImpl, functional_call
from .timing import time_once

__all__ = ["CHILDREN", "first_call", "memory_mode"]


def _child_first_call(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Runs in a fresh interpreter: import, build inputs, time the first call, then steady state."""
    t_import0 = time.perf_counter()
    mod = importlib.import_module(spec["impl"])
    t_import = time.perf_counter() - t_import0
    if spec.get("set_threads"):
        top = importlib.import_module(spec["impl"].split(".")[0])
        if hasattr(top, "set_num_threads"):
            top.set_num_threads(int(spec["threads"]))
    inp = make_inputs(
        spec["cell"], spec["steps"], spec["batch"], spec["hidden"], spec["hidden"], seed=7
    )
    fn = functional_call(mod, spec["cell"], inp, spec["mode"])
    first = time_once(fn, 1)
    steady = [time_once(fn, 1) for _ in range(int(spec["repeats"]))]
    med = statistics.median(steady)
    return {
        "import_s": t_import,
        "first_ms": first * 1e3,
        "steady_ms": med * 1e3,
        "ratio": first / med,
    }


def first_call(
    args: argparse.Namespace, cells: list[str], modes: list[str]
) -> list[dict[str, Any]]:
    out = []
    for cell in cells:
        for mode in modes:
            spec = {
                "impl": args.impl,
                "cell": cell,
                "mode": mode,
                "hidden": args.first_hidden,
                "batch": args.first_batch,
                "steps": args.steps,
                "repeats": max(args.repeats, 7),
                "threads": 1,
                "set_threads": True,
            }
            # One fresh process gives one first call: on a shared machine a single sample is as
            # noisy as any single timing, so take the median over --first-runs processes.
            runs = [_run_child("first-call", spec) for _ in range(args.first_runs)]
            good = [r for r in runs if "error" not in r]
            res: dict[str, Any]
            if not good:
                res = {"error": runs[0]["error"]}
            else:
                res = {
                    key: statistics.median(r[key] for r in good)
                    for key in ("import_s", "first_ms", "steady_ms", "ratio")
                }
                res["ratios"] = [r["ratio"] for r in good]
            res.update(
                {"cell": cell, "mode": mode, "hidden": args.first_hidden, "batch": args.first_batch}
            )
            out.append(res)
            if "error" in res:
                print(f"  first call {cell:4s} {mode:9s}: child failed: {res['error']}", flush=True)
            else:
                print(
                    f"  first call {cell:4s} {mode:9s}: first {res['first_ms']:.3f} ms, "
                    f"steady {res['steady_ms']:.3f} ms, ratio {res['ratio']:.2f} "
                    f"(median of {len(good)} processes: "
                    f"{', '.join(f'{x:.2f}' for x in res['ratios'])}; "
                    f"import {res['import_s']:.2f} s)",
                    flush=True,
                )
    return out


def _run_child(kind: str, spec: Mapping[str, Any], timeout: float = 1800.0) -> dict[str, Any]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(spec.get("threads", 1)))
    cmd = [sys.executable, str(HERE / "bench.py"), "--child", kind, json.dumps(spec)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout} s"}
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-800:]}"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT ") :]))
    return {"error": f"no result line in child output: {proc.stdout[-400:]}"}


def _rss_bytes(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _measure_peak(fn: Callable[[], Any]) -> dict[str, float]:
    gc.collect()
    can_reset = _reset_peak()
    base = _rss_bytes("VmRSS")
    base_hwm = _rss_bytes("VmHWM")
    keep = fn()
    peak = _rss_bytes("VmHWM")
    after = _rss_bytes("VmRSS")
    del keep
    return {
        "baseline_mb": base / 2**20,
        "peak_mb": peak / 2**20,
        "after_mb": after / 2**20,
        "peak_growth_mb": (peak - (base if can_reset else base_hwm)) / 2**20,
        "peak_reset": float(can_reset),
    }


def _child_memory_step(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Peak RSS growth of one training step of one implementation (fresh process)."""
    cell, h, b, t = spec["cell"], spec["hidden"], spec["batch"], spec["steps"]
    inp = make_inputs(cell, t, b, h, h, seed=3)
    if spec["impl_kind"] == "torch":
        import torch

        torch.set_num_threads(int(spec["threads"]))
        fn = TorchImpl(torch, cell, inp, torch.float32).training
    else:
        mod = importlib.import_module(spec["impl"])
        top = importlib.import_module(spec["impl"].split(".")[0])
        if hasattr(top, "set_num_threads"):
            top.set_num_threads(int(spec["threads"]))
        fn = functional_call(mod, cell, inp, "training")
    first = _measure_peak(fn)
    second = _measure_peak(fn)
    inputs_mb = sum(v.nbytes for v in inp.values() if v is not None) / 2**20
    return {"first": first, "second": second, "inputs_mb": inputs_mb}


def _tbptt_runner(
    mod: Any, cell: str, b: int, h: int, k1: int, k2: int, chunk: int, n_chunks: int, seed: int
) -> Callable[[], Any]:
    """Stream n_chunks chunks of `chunk` steps through TBPTT training (weights fixed).

    Uses ``functional.TBPTTStream`` when the module has it (chunks of ``chunk`` <= k1 steps
    generated on the fly, so the input of the whole stream never exists at once; every chunk is one
    TBPTT(k1, k2) update); else calls ``tbptt_grads`` chunk by chunk with the state carried by an
    inference forward (k1 = k2 = chunk).
    """
    inp = make_inputs(cell, chunk, b, h, h, seed=seed)
    params = {k: inp[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh")}
    rng = np.random.default_rng(seed + 1)
    stream_cls = getattr(mod, "TBPTTStream", None)

    def chunks() -> Any:
        for _ in range(n_chunks):
            x = rng.standard_normal((chunk, b, h), dtype=np.float32)
            dy = rng.standard_normal((chunk, b, h), dtype=np.float32)
            yield x, dy

    if stream_cls is not None:

        def run_stream() -> Any:
            state0 = (inp["h0"], inp["c0"]) if cell == "lstm" else inp["h0"]
            stream = stream_cls(cell, params, state0, k1, k2)
            acc = None
            for x, dy in chunks():
                y = stream.forward(x)
                start, stop = stream.window  # backward window [start, stop) of global steps
                dyw = np.zeros((stop - start, b, h), dtype=np.float32)
                dyw[stop - start - len(y) :] = dy  # zero on the history steps before the chunk
                acc = _accumulate(acc, stream.backward(dyw))
            return acc

        return run_stream

    def run_chunked() -> Any:
        state = (inp["h0"], inp["c0"]) if cell == "lstm" else inp["h0"]
        acc = None
        for x, dy in chunks():
            ups = mod.tbptt_grads(cell, x, state, params, dy, chunk, chunk)
            for g in ups:
                acc = _accumulate(acc, g)
            if cell == "lstm":
                _, h_n, c_n, _ = mod.lstm_forward(
                    x, state[0], state[1], *params.values(), training=False
                )
                state = (h_n, c_n)
            else:
                fwd = getattr(mod, f"{cell}_forward")
                _, h_n, _ = fwd(x, state, *params.values(), training=False)
                state = h_n
        return acc

    return run_chunked


def _accumulate(acc: dict[str, Any] | None, grads: Any) -> dict[str, Any] | None:
    if grads is None:
        return acc
    if isinstance(grads, (list, tuple)):
        for g in grads:
            acc = _accumulate(acc, g)
        return acc
    keys = [k for k in ("w_ih", "w_hh", "b_ih", "b_hh") if k in grads and grads[k] is not None]
    if acc is None:
        return {k: np.array(grads[k], copy=True) for k in keys}
    for k in keys:
        acc[k] += grads[k]
    return acc


def _child_memory_tbptt(spec: Mapping[str, Any]) -> dict[str, Any]:
    mod = importlib.import_module(spec["impl"])
    top = importlib.import_module(spec["impl"].split(".")[0])
    if hasattr(top, "set_num_threads"):
        top.set_num_threads(int(spec["threads"]))
    run = _tbptt_runner(
        mod,
        spec["cell"],
        spec["batch"],
        spec["hidden"],
        spec["k1"],
        spec["k2"],
        spec["chunk"],
        spec["n_chunks"],
        seed=5,
    )
    t0 = time.perf_counter()
    m = _measure_peak(run)
    m["seconds"] = time.perf_counter() - t0
    m["api"] = "TBPTTStream" if hasattr(mod, "TBPTTStream") else "tbptt_grads per chunk"
    return m


def memory_mode(args: argparse.Namespace, cells: list[str]) -> dict[str, Any]:
    res: dict[str, Any] = {"step": [], "tbptt": []}
    print("\n== memory: peak RSS growth of one training step (fresh process each) ==", flush=True)
    for cell in cells:
        for h in args.mem_hidden:
            for kind in ("rnnfast", "torch"):
                spec = {
                    "impl": args.impl,
                    "impl_kind": kind,
                    "cell": cell,
                    "hidden": h,
                    "batch": args.mem_batch,
                    "steps": args.steps,
                    "threads": 1,
                }
                out = _run_child("memory-step", spec)
                out.update({"cell": cell, "hidden": h, "batch": args.mem_batch, "impl": kind})
                res["step"].append(out)
                if "error" in out:
                    print(
                        f"  {cell:4s} H={h:5d} {kind:8s}: child failed: {out['error']}", flush=True
                    )
                else:
                    print(
                        f"  {cell:4s} H={h:5d} B={args.mem_batch} {kind:8s}: peak growth "
                        f"{out['first']['peak_growth_mb']:8.1f} MB first step, "
                        f"{out['second']['peak_growth_mb']:8.1f} MB second "
                        f"(inputs {out['inputs_mb']:.1f} MB)",
                        flush=True,
                    )
    print("\n== memory: TBPTT training as the stream grows ==", flush=True)
    for cell in cells:
        base = None
        for mult in args.mem_stream_mults:
            spec = {
                "impl": args.impl,
                "cell": cell,
                "hidden": args.mem_tbptt_hidden,
                "batch": args.mem_batch,
                "k1": args.mem_k1,
                "k2": args.mem_k2,
                "chunk": args.mem_chunk,
                "n_chunks": args.mem_base_chunks * mult,
                "threads": 1,
            }
            out = _run_child("memory-tbptt", spec)
            out.update(
                {
                    "cell": cell,
                    "mult": mult,
                    "steps": args.mem_chunk * args.mem_base_chunks * mult,
                    "hidden": args.mem_tbptt_hidden,
                    "batch": args.mem_batch,
                }
            )
            if "error" not in out:
                if base is None:
                    base = out["peak_mb"]
                out["peak_vs_1x"] = out["peak_mb"] / base
                print(
                    f"  {cell:4s} stream x{mult:<4d} ({out['steps']} steps, {out['api']}): "
                    "peak RSS "
                    f"{out['peak_mb']:.1f} MB (growth {out['peak_growth_mb']:.1f} MB), "
                    f"{out['peak_vs_1x']:.3f}x of 1x, {out['seconds']:.1f} s",
                    flush=True,
                )
            else:
                print(f"  {cell:4s} stream x{mult}: child failed: {out['error']}", flush=True)
            res["tbptt"].append(out)
    return res


# ``bench.py --child KIND SPEC`` runs CHILDREN[KIND](SPEC) and prints its result.
CHILDREN: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "first-call": _child_first_call,
    "memory-step": _child_memory_step,
    "memory-tbptt": _child_memory_tbptt,
}
