"""The measurements of ``benchmarks/bench_e2e.py``: fit epochs per task, threading stress, CLI."""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from .common import HERE
from .e2e_workers import Worker

__all__ = ["bench_cli", "bench_stress", "bench_task"]


def bench_task(
    ctx: Any, task: str, args: argparse.Namespace, cell: str | None = None
) -> dict[str, Any]:
    """One epoch of fit vs the PyTorch loop on ``task`` (its model with ``cell`` if given), checked
    first: rnnfast and torch at default threads and at 1, alternated, medians."""
    frac = args.frac
    variants = [("rnnfast", None), ("rnnfast", 1), ("torch", None), ("torch", 1)]
    if args.rnnfast_only:
        variants = variants[:2]
    workers: dict[tuple[str, int | None], Worker] = {}
    row: dict[str, Any] = {"task": task}
    try:
        base = Worker(
            ctx,
            {
                "lib": "rnnfast",
                "task": task,
                "threads": None,
                "frac": frac,
                "path": args.rnnfast_path,
                "cell": cell,
            },
        )
        workers[("rnnfast", None)] = base
        weights = base.call("weights")
        for lib, th in variants[1:]:
            workers[(lib, th)] = Worker(
                ctx,
                {
                    "lib": lib,
                    "task": task,
                    "threads": th,
                    "frac": frac,
                    "path": args.rnnfast_path,
                    "weights": weights,
                    "cell": cell,
                },
            )
        # correctness: same loss and gradient norm on the first batch, from the same weights
        ref = base.call("check")
        row["check"] = {}
        ok = True
        for key, w in workers.items():
            got = w.call("check")
            err = max(abs(got[m] - ref[m]) / max(abs(ref[m]), 1e-12) for m in ("loss", "grad_norm"))
            row["check"][f"{key[0]}/{key[1] or 'default'}"] = err
            ok = ok and err <= args.tol
        row["check_ok"] = ok
        row["initial_loss"] = ref["loss"]
        if not ok:
            return row
        for w in workers.values():  # warm-up epoch (first-call costs, page faults, pools)
            w.call("epoch")
        samples: dict[str, list[dict[str, float]]] = {
            f"{k[0]}/{k[1] or 'default'}": [] for k in workers
        }
        for _ in range(args.repeats):
            for key, w in workers.items():
                samples[f"{key[0]}/{key[1] or 'default'}"].append(w.call("epoch"))
        med = {k: {m: statistics.median(s[m] for s in v) for m in v[0]} for k, v in samples.items()}
        row["threads"] = {f"{k[0]}/{k[1] or 'default'}": w.threads for k, w in workers.items()}
        row["median"] = med
        nan = {"wall": math.nan, "cpu": math.nan}
        rd, r1, td, t1 = (
            med.get(k, nan)["wall"]
            for k in ("rnnfast/default", "rnnfast/1", "torch/default", "torch/1")
        )
        row["torch_over_rnnfast_default"] = td / rd
        row["torch_over_rnnfast_1"] = t1 / r1
        row["rnnfast_1_over_default"] = r1 / rd
        row["torch_1_over_default"] = t1 / td
        row["kernel_rec_frac"] = med["rnnfast/default"]["kernel_rec"] / rd
        row["kernel_all_frac"] = med["rnnfast/default"]["kernel_all"] / rd
        row["kernel_rec_frac_1"] = med["rnnfast/1"]["kernel_rec"] / r1
        return row
    finally:
        for w in workers.values():
            w.close()


# ==================================================================================================
# threading stress cases
# ==================================================================================================

_STRESS = r"""
import json, statistics, sys, threading, time
sys.path[:0] = PATHS
import numpy as np
rf = IMPORT_RNNFAST()
from rnnfast import functional as F
H, B, T = 256, 1, 100
rng = np.random.default_rng(0)
x = rng.standard_normal((T, B, H), dtype=np.float32)
w_ih = rng.standard_normal((4 * H, H), dtype=np.float32) * 0.05
w_hh = rng.standard_normal((4 * H, H), dtype=np.float32) * 0.05
b = np.zeros(4 * H, np.float32)
import torch
ref_y = torch.nn.LSTM(H, H)
with torch.no_grad():
    ref_y.weight_ih_l0.copy_(torch.from_numpy(w_ih)); ref_y.weight_hh_l0.copy_(torch.from_numpy(w_hh))
    ref_y.bias_ih_l0.zero_(); ref_y.bias_hh_l0.zero_()
    expect = ref_y(torch.from_numpy(x))[0].numpy()
got = F.lstm_forward(x, None, None, w_ih, w_hh, b, b, training=False)[0]
err = float(np.abs(got - expect).max() / np.abs(expect).max())
assert err < 1e-4, f"LSTM inference differs from torch: {err}"
call = lambda: F.lstm_forward(x, None, None, w_ih, w_hh, b, b, training=False)
MODE = sys.argv[1]
SECONDS = float(sys.argv[2])
stop = threading.Event()
before = None
if MODE == "torch_before_each":
    a = torch.randn(256, 256)
    before = lambda: torch.mm(a, a)
elif MODE == "torch_thread":
    def spin():
        a = torch.randn(128, 128)
        while not stop.is_set():
            torch.mm(a, a)
    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
elif MODE.startswith("ort_"):
    import onnxruntime as ort
    from onnx import helper, TensorProto
    node = helper.make_node("MatMul", ["a", "b"], ["c"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [128, 128]),
        helper.make_tensor_value_info("b", TensorProto.FLOAT, [128, 128])], [helper.make_tensor_value_info("c", TensorProto.FLOAT, [128, 128])])
    sess = ort.InferenceSession(helper.make_model(g).SerializeToString())
    feed = {"a": np.ones((128, 128), np.float32), "b": np.ones((128, 128), np.float32)}
    def spin():
        while not stop.is_set():
            sess.run(None, feed)
    if MODE == "ort_before_each":
        before = lambda: sess.run(None, feed)
    else:
        spinner = threading.Thread(target=spin, daemon=True)
        spinner.start()
for _ in range(5):
    call()
times = []
end = time.perf_counter() + SECONDS
while time.perf_counter() < end or len(times) < 5:
    if before is not None:
        before()
    t = time.perf_counter()
    call()
    times.append(time.perf_counter() - t)
stop.set()
if MODE in ("torch_thread", "ort_thread"):
    spinner.join()
print(json.dumps({"median_ms": statistics.median(times) * 1e3, "n": len(times), "threads": rf.get_num_threads(), "err": err}))
sys.stdout.flush()
import os
os._exit(0)  # no interpreter teardown beside another runtime's pool threads
"""


def _stress_script(path: str | None) -> str:
    paths = repr([str(HERE)])
    return _STRESS.replace("PATHS", paths).replace(
        "IMPORT_RNNFAST()",
        f"__import__('rnnbench.e2e_workers', fromlist=['_']).import_rnnfast({path!r})",
    )


def _busy(stop_at: float) -> None:
    while time.time() < stop_at:
        pass


def bench_stress(args: argparse.Namespace) -> dict[str, Any]:
    script = _stress_script(args.rnnfast_path)
    modes = ["idle", "competitors", "torch_before_each", "torch_thread"]
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401

        modes += ["ort_before_each", "ort_thread"]
    except ImportError:
        pass
    ncpu = os.cpu_count() or 1
    out: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.stress_repeats):
        for mode in modes:
            comps = []
            if mode == "competitors":
                ctx = mp.get_context("spawn")
                comps = [
                    ctx.Process(
                        target=_busy, args=(time.time() + args.stress_seconds + 30,), daemon=True
                    )
                    for _ in range(ncpu)
                ]
                for p in comps:
                    p.start()
                time.sleep(0.5)
            try:
                proc = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        script,
                        "plain" if mode in ("idle", "competitors") else mode,
                        str(args.stress_seconds),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
            finally:
                for p in comps:
                    p.kill()
                for p in comps:
                    p.join()
            if proc.returncode != 0:
                print(f"stress {mode}: exit {proc.returncode}: {proc.stderr[-500:]}", flush=True)
                out[mode].append(math.nan)
                continue
            out[mode].append(json.loads(proc.stdout.strip().splitlines()[-1])["median_ms"])
    med = {m: statistics.median([x for x in v if x == x] or [math.nan]) for m, v in out.items()}
    return {
        "median_ms": med,
        "ratio_to_idle": {m: med[m] / med["idle"] for m in modes},
        "samples_ms": out,
    }


# ==================================================================================================
# CLI commands
# ==================================================================================================


def bench_cli(args: argparse.Namespace) -> dict[str, Any]:
    cmds = [["demo"]] if args.quick else [["demo"], ["gradcheck"], ["diagnose"]]
    env = dict(os.environ)
    if args.rnnfast_path:
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    res: dict[str, Any] = {}
    for cmd in cmds:
        t: dict[str, list[float]] = {"default": [], "1": []}
        for _ in range(args.cli_repeats):
            for th in ("default", "1"):
                argv = cmd + ([] if th == "default" else ["--threads", "1"])
                if args.rnnfast_path:
                    code = (
                        f"import sys, rnnbench.e2e_workers as w; w.import_rnnfast({args.rnnfast_path!r}); "
                        f"from rnnfast.cli import main; sys.exit(main({argv!r}))"
                    )
                    full = [sys.executable, "-c", code]
                else:
                    full = [sys.executable, "-m", "rnnfast", *argv]
                t0 = time.perf_counter()
                proc = subprocess.run(full, capture_output=True, text=True, timeout=1800, env=env)
                dt = time.perf_counter() - t0
                if proc.returncode != 0:
                    raise RuntimeError(
                        f"{' '.join(argv)}: exit {proc.returncode}\n{proc.stderr[-2000:]}"
                    )
                t[th].append(dt)
        res[" ".join(cmd)] = {
            "default_s": statistics.median(t["default"]),
            "one_s": statistics.median(t["1"]),
            "one_over_default": statistics.median(t["1"]) / statistics.median(t["default"]),
        }
    return res
