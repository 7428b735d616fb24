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
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as _dt
import gc
import importlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CELLS",
    "GATES",
    "Row",
    "flops",
    "main",
    "weight_bytes",
]

CELLS: tuple[str, ...] = ("rnn", "lstm", "gru")
GATES: dict[str, int] = {"rnn": 1, "lstm": 4, "gru": 3}
MODES: tuple[str, ...] = ("inference", "training")
TORCH_CLASS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "out"

# Issue-4 targets (ratios in one run, same thread count, fp32).
TARGET_SMALL = 3.0  # B in {1, 16}, H 64..512: >= 3x PyTorch
TARGET_BW = 0.70  # B = 1: weight bytes/s >= 70% of the measured L2/L3 read bandwidth
TARGET_LARGE = 1.0  # B = 64, H 256..1024: >= 1x PyTorch
TARGET_GEMM = 0.80  # B = 64, H 256..1024: >= 0.8 of the same run's sgemm GFLOP/s
TARGET_GRU_RNN_TRAIN = 1.5  # GRU and vanilla RNN training, any shape
TARGET_THREADS = 1.7  # 2 threads vs 1 at B >= 16
TARGET_FIRST_CALL = 1.2  # first call after import <= 1.2x steady state
TARGET_MEM_FLAT = 0.10  # TBPTT memory flat within +-10% as the stream grows 100x


# --------------------------------------------------------------------------------------------------
# formulas
# --------------------------------------------------------------------------------------------------


def flops(cell: str, t: int, b: int, i: int, h: int, mode: str) -> float:
    """FLOPs of one call: 2*T*B*G*H*(I+H) (input + recurrent GEMMs), x3 for training."""
    f = 2.0 * t * b * GATES[cell] * h * (i + h)
    return 3.0 * f if mode == "training" else f


def weight_bytes(cell: str, t: int, i: int, h: int, mode: str, itemsize: int = 4) -> float:
    """Weight bytes streamed per call at B = 1 (see the module docstring for the formula)."""
    gh = GATES[cell] * h
    if mode == "training":
        return float(itemsize * gh * (2 * t * h + 3 * i))
    return float(itemsize * gh * (t * h + i))


# --------------------------------------------------------------------------------------------------
# machine description and thread control
# --------------------------------------------------------------------------------------------------


def _cpuinfo() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, val = (s.strip() for s in line.split(":", 1))
        if key == "model name" and "cpu_model" not in info:
            info["cpu_model"] = val
        elif key == "flags" and "flags" not in info:
            flags = val.split()
            info["simd_flags"] = [f for f in flags if f.startswith(("avx", "fma", "sse4", "f16c"))]
            info["flags"] = val
        elif key == "cpu MHz" and "cpu_mhz" not in info:
            info["cpu_mhz"] = val
    info["logical_cpus"] = os.cpu_count()
    info["caches"] = _cache_sizes()
    return info


def _cache_sizes() -> dict[str, int]:
    """Per-instance cache sizes in bytes from sysfs: {'L1d': .., 'L2': .., 'L3': ..}."""
    out: dict[str, int] = {}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for idx in sorted(base.glob("index*")) if base.exists() else []:
        try:
            level = (idx / "level").read_text().strip()
            ctype = (idx / "type").read_text().strip()
            size = (idx / "size").read_text().strip()
        except OSError:
            continue
        mult = 1024 if size.endswith("K") else 1024 * 1024 if size.endswith("M") else 1
        n = int(size.rstrip("KM")) * mult
        if ctype == "Instruction":
            continue
        name = f"L{level}" + ("d" if level == "1" else "")
        out[name] = n
    out.setdefault("L1d", 32 * 1024)
    out.setdefault("L2", 512 * 1024)
    out.setdefault("L3", 16 * 1024 * 1024)
    return out


def _loadavg() -> tuple[float, float, float] | None:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return None
    return (round(one, 2), round(five, 2), round(fifteen, 2))


class _OpenBLAS:
    """Sets NumPy's OpenBLAS thread count through its C API (what threadpoolctl does), if found."""

    def __init__(self) -> None:
        self._set: Callable[[int], None] | None = None
        try:
            maps = Path("/proc/self/maps").read_text()
        except OSError:
            return
        libs = sorted(
            {ln.split()[-1] for ln in maps.splitlines() if "openblas" in ln.lower() and ".so" in ln}
        )
        for lib in libs:
            try:
                dll = ctypes.CDLL(lib)
            except OSError:
                continue
            for sym in (
                "scipy_openblas_set_num_threads64_",
                "openblas_set_num_threads64_",
                "openblas_set_num_threads",
            ):
                fn = getattr(dll, sym, None)
                if fn is not None:
                    fn.argtypes = [ctypes.c_int]
                    self._set = fn
                    return

    def set(self, n: int) -> bool:
        if self._set is None:
            return False
        self._set(int(n))
        return True


class Threads:
    """Sets the thread count of rnnfast, PyTorch and NumPy's BLAS together."""

    def __init__(self, rnnfast_mod: Any, torch_mod: Any) -> None:
        self.rnnfast = rnnfast_mod
        self.torch = torch_mod
        self.openblas = _OpenBLAS()

    def set(self, n: int) -> None:
        if self.rnnfast is not None and hasattr(self.rnnfast, "set_num_threads"):
            self.rnnfast.set_num_threads(n)
        if self.torch is not None:
            self.torch.set_num_threads(n)
        self.openblas.set(n)


# --------------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------------


def _time_once(fn: Callable[[], Any], inner: int) -> float:
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def time_alternating(
    fns: Mapping[str, Callable[[], Any]], repeats: int, min_sample: float, warmup: int = 1
) -> dict[str, dict[str, Any]]:
    """Median seconds per call of each function, the functions alternated sample by sample.

    Each function is warmed up ``warmup`` times (the last warm-up call is timed to choose how many
    calls make one sample: enough to fill ``min_sample`` seconds). Then ``repeats`` rounds run every
    function once each, in an order rotated every round so no function always runs first.
    """
    names = list(fns)
    inner: dict[str, int] = {}
    for name in names:
        dt = 0.0
        for _ in range(max(1, warmup)):
            dt = _time_once(fns[name], 1)
        inner[name] = max(1, min(10_000, int(math.ceil(min_sample / max(dt, 1e-7)))))
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            samples[name].append(_time_once(fns[name], inner[name]))
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        s = samples[name]
        med = statistics.median(s)
        out[name] = {
            "median_s": med,
            "min_s": min(s),
            "max_s": max(s),
            "spread": (max(s) - min(s)) / med if med > 0 else 0.0,
            "inner": inner[name],
            "samples": len(s),
        }
    return out


# --------------------------------------------------------------------------------------------------
# machine limits measured in this run
# --------------------------------------------------------------------------------------------------


def measure_sgemm(threads: Threads, nthreads: int, n: int, repeats: int) -> dict[str, float]:
    """GFLOP/s of an (n x n) @ (n x n) float32 product with torch.mm and NumPy, at ``nthreads``."""
    threads.set(nthreads)
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    fns: dict[str, Callable[[], Any]] = {"numpy": lambda: np.matmul(a, b, out=c)}
    if threads.torch is not None:
        ta, tb = threads.torch.from_numpy(a), threads.torch.from_numpy(b)
        tc = threads.torch.from_numpy(c)
        fns["torch"] = lambda: threads.torch.mm(ta, tb, out=tc)
    res = time_alternating(fns, repeats=repeats, min_sample=0.2, warmup=2)
    f = 2.0 * n**3
    out = {f"{k}_gflops": f / v["median_s"] / 1e9 for k, v in res.items()}
    out["gflops"] = max(out.values())
    out["n"] = float(n)
    return out


def measure_bandwidth(
    threads: Threads, nthreads: int, caches: Mapping[str, int]
) -> dict[str, float]:
    """Read bandwidth (GB/s) of arrays sized to L1 / L2 / L3 / DRAM at ``nthreads`` threads.

    A float32 array of half the level's size is read over and over by one reduction call (torch
    row sums over a zero-stride view, so there is one Python call per measurement, not one per pass,
    and each thread sums its own rows). Median of 5, best of two reductions.
    """
    out: dict[str, float] = {}
    torch = threads.torch
    if torch is None:
        return out
    threads.set(nthreads)
    sizes = {
        "L1": caches["L1d"] // 2,
        "L2": caches["L2"] // 2,
        "L3": max(caches["L3"] // 4, 4 * caches["L2"]),
        "DRAM": max(8 * caches["L3"], 256 * 1024 * 1024),
    }
    for level, nbytes in sizes.items():
        # Each thread sums its own rows; the rows of a zero-stride view all alias the same buffer of
        # nbytes (L1/L2: per-thread caches; L3/DRAM: one shared buffer of nbytes).
        n = max(1024, nbytes // 4)
        buf = torch.rand(n, dtype=torch.float32)
        total_target = 2.0e9 if level != "DRAM" else 1.0e9
        reps = max(nthreads, int(total_target // (n * 4)))
        view = torch.as_strided(buf, (reps, n), (0, 1))
        best = 0.0
        for fn in (partial(view.sum, dim=1), view.sum):
            fn()
            ts = []
            for _ in range(5):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            best = max(best, reps * n * 4 / statistics.median(ts) / 1e9)
        out[level] = best
    return out


def bandwidth_level(cell: str, h: int, nthreads: int, caches: Mapping[str, int]) -> str:
    """Smallest level, L2 or larger, holding one thread's slice of W_hh (float32)."""
    w = GATES[cell] * h * h * 4
    if w / nthreads <= 0.75 * caches["L2"]:
        return "L2"
    if w <= 0.75 * caches["L3"]:
        return "L3"
    return "DRAM"


# --------------------------------------------------------------------------------------------------
# inputs, oracles and implementations
# --------------------------------------------------------------------------------------------------


def make_inputs(cell: str, t: int, b: int, i: int, h: int, seed: int) -> dict[str, Any]:
    """float32 inputs with PyTorch's default init: weights ~ U(-1/sqrt(H), 1/sqrt(H))."""
    rng = np.random.default_rng(seed)
    g = GATES[cell]
    k = 1.0 / math.sqrt(h)

    def u(*shape: int, s: float = k) -> np.ndarray:
        return rng.uniform(-s, s, size=shape).astype(np.float32)

    return {
        "x": rng.standard_normal((t, b, i), dtype=np.float32),
        "h0": u(b, h, s=0.5),
        "c0": u(b, h, s=0.5) if cell == "lstm" else None,
        "w_ih": u(g * h, i),
        "w_hh": u(g * h, h),
        "b_ih": u(g * h),
        "b_hh": u(g * h),
        "dy": rng.standard_normal((t, b, h), dtype=np.float32),
    }


def _testing() -> Any:
    """rnnfast.testing, imported on first use: importing bench.py must not import rnnfast (the
    first-call children time that import)."""
    return importlib.import_module("rnnfast.testing")


def _functional_forward(
    mod: Any, cell: str, inp: Mapping[str, Any], training: bool
) -> tuple[Any, ...]:
    return _testing().call_forward(mod, cell, inp, training=training)


def _functional_backward(mod: Any, cell: str, cache: Any, dy: Any) -> dict[str, Any]:
    return _testing().call_backward(mod, cell, cache, dy)


def functional_call(mod: Any, cell: str, inp: Mapping[str, Any], mode: str) -> Callable[[], Any]:
    """A zero-argument callable running one benchmark call of a functional-API module."""
    t = _testing()  # resolved once, outside the timed call
    fwd, bwd = t.call_forward, t.call_backward
    if mode == "inference":
        return lambda: fwd(mod, cell, inp, training=False)

    def step() -> Any:
        _, _, _, cache = fwd(mod, cell, inp, training=True)
        return bwd(mod, cell, cache, inp["dy"])

    return step


def functional_results(mod: Any, cell: str, inp: Mapping[str, Any], mode: str) -> dict[str, Any]:
    """Outputs (and, for training, gradients) of one call, under contract names."""
    y, h_n, c_n, cache = _functional_forward(mod, cell, inp, mode == "training")
    res: dict[str, Any] = {"y": y, "h_n": h_n}
    if cell == "lstm":
        res["c_n"] = c_n
    if mode == "training":
        g = _functional_backward(mod, cell, cache, inp["dy"])
        for key in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh"):
            if key == "c0" and cell != "lstm":
                continue
            res["d" + key] = g[key]
    return res


class TorchImpl:
    """torch.nn.RNN/LSTM/GRU with the benchmark's weights; one call = forward (+ autograd.grad)."""

    def __init__(self, torch: Any, cell: str, inp: Mapping[str, Any], dtype: Any) -> None:
        self.torch = torch
        self.cell = cell
        t, b, i = inp["x"].shape
        h = inp["w_hh"].shape[1]
        kwargs: dict[str, Any] = {"nonlinearity": "tanh"} if cell == "rnn" else {}
        self.module = getattr(torch.nn, TORCH_CLASS[cell])(i, h, **kwargs).to(dtype)
        with torch.no_grad():
            for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
                getattr(
                    self.module, f"{name.replace('w_', 'weight_').replace('b_', 'bias_')}_l0"
                ).copy_(torch.from_numpy(np.asarray(inp[name])).to(dtype))

        def tens(a: Any, grad: bool) -> Any:
            tt = torch.from_numpy(np.ascontiguousarray(a)).to(dtype)
            return tt.requires_grad_(grad)

        self.x = {g: tens(inp["x"], g) for g in (False, True)}
        self.h0 = {g: tens(inp["h0"][None], g) for g in (False, True)}
        self.c0 = {g: tens(inp["c0"][None], g) for g in (False, True)} if cell == "lstm" else None
        self.dy = tens(inp["dy"], False)
        self.params = [
            self.module.weight_ih_l0,
            self.module.weight_hh_l0,
            self.module.bias_ih_l0,
            self.module.bias_hh_l0,
        ]

    def _forward(self, grad: bool) -> tuple[Any, Any, Any]:
        if self.cell == "lstm":
            assert self.c0 is not None
            y, (h_n, c_n) = self.module(self.x[grad], (self.h0[grad], self.c0[grad]))
            return y, h_n, c_n
        y, h_n = self.module(self.x[grad], self.h0[grad])
        return y, h_n, None

    def inference(self) -> Any:
        with self.torch.inference_mode():
            return self._forward(False)

    def inputs_with_grad(self) -> list[Any]:
        ins = [self.x[True], self.h0[True]]
        if self.c0 is not None:
            ins.append(self.c0[True])
        return ins

    def training(self) -> Any:
        y, _, _ = self._forward(True)
        loss = (y * self.dy).sum()
        return self.torch.autograd.grad(loss, self.params + self.inputs_with_grad())

    def call(self, mode: str) -> Callable[[], Any]:
        return self.inference if mode == "inference" else self.training

    def results(self, mode: str) -> dict[str, Any]:
        """Same keys as functional_results, as float64 NumPy arrays."""
        if mode == "inference":
            with self.torch.inference_mode():
                y, h_n, c_n = self._forward(False)
            grads = None
        else:
            y, h_n, c_n = self._forward(True)
            loss = (y * self.dy).sum()
            grads = self.torch.autograd.grad(loss, self.params + self.inputs_with_grad())

        def npy(a: Any) -> np.ndarray:
            return a.detach().to(self.torch.float64).numpy()

        res: dict[str, Any] = {"y": npy(y), "h_n": npy(h_n[0])}
        if c_n is not None:
            res["c_n"] = npy(c_n[0])
        if grads is not None:
            names = ["dw_ih", "dw_hh", "db_ih", "db_hh", "dx", "dh0"] + (
                ["dc0"] if self.cell == "lstm" else []
            )
            for name, g in zip(names, grads):
                arr = npy(g)
                res[name] = arr[0] if name in ("dh0", "dc0") else arr
        return res


def rel_max_error(actual: Any, expected: Any) -> tuple[float, tuple[int, ...]]:
    """max |a - e| / max |e| and the index of the largest absolute difference (float64); see
    :func:`rnnfast.testing.rel_max_error`."""
    return _testing().rel_max_error(actual, expected)


def compare(actual: Mapping[str, Any], expected: Mapping[str, Any]) -> tuple[float, str]:
    """Worst error over the keys of ``expected``: (error, 'key at index')."""
    worst, where = 0.0, ""
    for key, exp in expected.items():
        if key not in actual or actual[key] is None:
            return float("inf"), f"{key} missing"
        err, idx = rel_max_error(actual[key], exp)
        if err > worst or not where:
            worst, where = err, f"{key} at {idx}"
    return worst, where


# --------------------------------------------------------------------------------------------------
# one row of the grid
# --------------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One benchmark row (times in ms; None when an implementation was not run)."""

    cell: str
    hidden: int
    batch: int
    steps: int
    mode: str
    threads: int
    status: str = "ok"
    message: str = ""
    oracle: str = ""
    error: float | None = None
    error_where: str = ""
    rnnfast_ms: float | None = None
    torch_ms: float | None = None
    reference_ms: float | None = None
    spread: dict[str, float] = field(default_factory=dict)
    gflop: float = 0.0
    rnnfast_gflops: float | None = None
    torch_gflops: float | None = None
    limit_gflops: float | None = None
    frac_limit: float | None = None
    speedup: float | None = None
    weight_gbs: float | None = None
    bw_level: str | None = None
    bw_gbs: float | None = None
    frac_bw: float | None = None


class Oracles:
    """Oracle results per (cell, H, B): float64 reference (small shapes), float64 PyTorch (big)."""

    def __init__(self, reference: Any, torch: Any, ref_max_work: float) -> None:
        self.reference = reference
        self.torch = torch
        self.ref_max_work = ref_max_work
        self._cache: dict[tuple[str, int, int], tuple[str, dict[str, Any]]] = {}

    def get(self, cell: str, h: int, b: int, inp: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        key = (cell, h, b)
        if key not in self._cache:
            t, _, i = inp["x"].shape
            use_ref = self.torch is None or flops(cell, t, b, i, h, "training") <= self.ref_max_work
            if use_ref:
                inp64 = {
                    k: (None if v is None else np.asarray(v, dtype=np.float64))
                    for k, v in inp.items()
                }
                res = functional_results(self.reference, cell, inp64, "training")
                self._cache[key] = ("reference f64", res)
            else:
                res = TorchImpl(self.torch, cell, inp, self.torch.float64).results("training")
                self._cache[key] = ("torch f64", res)
        return self._cache[key]

    def clear(self) -> None:
        self._cache.clear()


def run_row(
    row: Row,
    impl: Any,
    torch: Any,
    reference: Any,
    oracles: Oracles,
    threads: Threads,
    limits: Mapping[str, Any],
    caches: Mapping[str, int],
    args: argparse.Namespace,
    inp: Mapping[str, Any],
) -> Row:
    """Check then time one row; fills in the Row."""
    cell, h, b, t, mode, nthr = row.cell, row.hidden, row.batch, row.steps, row.mode, row.threads
    threads.set(nthr)

    # 1. correctness on this row's inputs at this row's thread count
    oracle_name, expected_all = oracles.get(cell, h, b, inp)
    keys = ["y", "h_n"] + (["c_n"] if cell == "lstm" else [])
    if mode == "training":
        keys += ["dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh"] + (
            ["dc0"] if cell == "lstm" else []
        )
    expected = {k: expected_all[k] for k in keys}
    row.oracle = oracle_name
    try:
        actual = functional_results(impl, cell, inp, mode)
    except Exception as exc:  # report and skip the row, the grid goes on
        row.status, row.message = "FAILED", f"rnnfast raised {type(exc).__name__}: {exc}"
        return row
    err, where = compare(actual, expected)
    row.error, row.error_where = err, where
    if not err <= args.tol:
        row.status = "FAILED"
        row.message = (
            f"rnnfast {cell} H={h} B={b} {mode} threads={nthr}: max relative error {err:.3e} "
            f"> tol {args.tol:.1e} ({where}) vs {oracle_name}; row not timed"
        )
        return row
    del actual

    # 2. timing, alternated
    fns: dict[str, Callable[[], Any]] = {"rnnfast": functional_call(impl, cell, inp, mode)}
    if torch is not None and not args.no_torch:
        fns["torch"] = TorchImpl(torch, cell, inp, torch.float32).call(mode)
    if reference is not None and h <= args.ref_max_hidden and b <= args.ref_max_batch:
        inp_ref = dict(inp)
        fns["reference"] = functional_call(reference, cell, inp_ref, mode)
    res = time_alternating(
        fns, repeats=args.repeats, min_sample=args.min_sample, warmup=args.warmup
    )
    row.rnnfast_ms = res["rnnfast"]["median_s"] * 1e3
    row.spread = {k: v["spread"] for k, v in res.items()}
    if "torch" in res:
        row.torch_ms = res["torch"]["median_s"] * 1e3
        row.speedup = row.torch_ms / row.rnnfast_ms
    if "reference" in res:
        row.reference_ms = res["reference"]["median_s"] * 1e3

    # 3. derived figures
    i = inp["x"].shape[2]
    f = flops(cell, t, b, i, h, mode)
    row.gflop = f / 1e9
    row.rnnfast_gflops = f / (row.rnnfast_ms * 1e-3) / 1e9
    if row.torch_ms:
        row.torch_gflops = f / (row.torch_ms * 1e-3) / 1e9
    gemm = limits["sgemm"].get(str(nthr))
    if gemm:
        row.limit_gflops = gemm["gflops"]
        row.frac_limit = row.rnnfast_gflops / row.limit_gflops
    if b == 1:
        row.weight_gbs = weight_bytes(cell, t, i, h, mode) / (row.rnnfast_ms * 1e-3) / 1e9
        bw = limits["bandwidth"].get(str(nthr), {})
        level = bandwidth_level(cell, h, nthr, caches)
        row.bw_level = level
        if level in bw:
            row.bw_gbs = bw[level]
            row.frac_bw = row.weight_gbs / row.bw_gbs
    return row


# --------------------------------------------------------------------------------------------------
# first call after import (subprocess)
# --------------------------------------------------------------------------------------------------


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
    first = _time_once(fn, 1)
    steady = [_time_once(fn, 1) for _ in range(int(spec["repeats"]))]
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
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, json.dumps(spec)]
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


# --------------------------------------------------------------------------------------------------
# memory mode (subprocesses)
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# output: table, markdown, JSON, plots, target summary
# --------------------------------------------------------------------------------------------------


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def _pct(v: float | None, spec: str = ".0f") -> str:
    return _fmt(None if v is None else 100.0 * v, spec)


def _md_row(cells: list[Any]) -> str:
    """A markdown table row from a list of already formatted cells."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


TABLE_COLUMNS = [
    "cell", "H", "B", "mode", "thr", "rnnfast ms", "torch ms", "ref ms", "x torch", "rnnfast GF/s",
    "torch GF/s", "limit GF/s", "% limit", "B=1 weight GB/s", "bw (level) GB/s", "% bw", "err",
]  # fmt: skip
TABLE_HEADER = _md_row(TABLE_COLUMNS)


def row_markdown(r: Row) -> str:
    head = [r.cell, r.hidden, r.batch, r.mode, r.threads]
    if r.status != "ok":
        return _md_row(head + [f"FAILED: {r.message}"] + [""] * (len(TABLE_COLUMNS) - 6))
    bw = "-" if r.bw_gbs is None else f"{r.bw_gbs:.1f} ({r.bw_level})"
    return _md_row(
        head
        + [_fmt(r.rnnfast_ms, ".3f"), _fmt(r.torch_ms, ".3f"), _fmt(r.reference_ms, ".1f")]
        + [_fmt(r.speedup), _fmt(r.rnnfast_gflops, ".1f"), _fmt(r.torch_gflops, ".1f")]
        + [_fmt(r.limit_gflops, ".1f"), _pct(r.frac_limit), _fmt(r.weight_gbs, ".1f"), bw]
        + [_pct(r.frac_bw), _fmt(r.error, ".1e")]
    )


def row_console(r: Row) -> str:
    head = f"{r.cell:4s} H={r.hidden:<5d} B={r.batch:<3d} {r.mode:9s} thr={r.threads}"
    if r.status != "ok":
        return f"{head}  FAILED  {r.message}"
    extra = ""
    if r.frac_bw is not None:
        extra = f"  W {r.weight_gbs:6.1f} GB/s = {100 * r.frac_bw:3.0f}% of {r.bw_level}"
    ref = f"  ref {r.reference_ms:8.2f}" if r.reference_ms is not None else ""
    return (
        f"{head}  rnnfast {r.rnnfast_ms:9.3f} ms  torch {_fmt(r.torch_ms, '9.3f')} ms  "
        f"x{_fmt(r.speedup, '5.2f')}  {r.rnnfast_gflops:6.1f} GF/s "
        f"({_pct(r.frac_limit, '3.0f')}% of sgemm)"
        f"{extra}{ref}  err {r.error:.1e}"
    )


def targets_summary(
    rows: list[Row], first: list[dict[str, Any]], memory: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Evaluate the issue-4 targets on the rows measured (no rows: 'not measured')."""
    ok = [r for r in rows if r.status == "ok"]
    out: list[dict[str, Any]] = []

    def add(
        name: str, target: str, values: list[tuple[float, str]], thresh: float, higher: bool = True
    ) -> None:
        if not values:
            out.append(
                {
                    "target": name,
                    "goal": target,
                    "met": None,
                    "worst": None,
                    "where": "not measured",
                    "n": 0,
                    "n_met": 0,
                }
            )
            return
        worst = min(values) if higher else max(values)
        n_met = sum(1 for v, _ in values if (v >= thresh if higher else v <= thresh))
        out.append(
            {
                "target": name,
                "goal": target,
                "met": n_met == len(values),
                "worst": worst[0],
                "where": worst[1],
                "n": len(values),
                "n_met": n_met,
            }
        )

    def tag(r: Row) -> str:
        return f"{r.cell} H={r.hidden} B={r.batch} {r.mode} thr={r.threads}"

    add(
        "B in {1,16}, H 64..512: speedup vs PyTorch",
        ">= 3x",
        [(r.speedup, tag(r)) for r in ok if r.batch in (1, 16) and r.hidden <= 512 and r.speedup],
        TARGET_SMALL,
    )
    add(
        "B=1: weight bytes/s vs measured L2/L3 bandwidth",
        ">= 70%",
        [
            (r.frac_bw, tag(r))
            for r in ok
            if r.batch == 1 and r.hidden <= 512 and r.frac_bw is not None
        ],
        TARGET_BW,
    )
    add(
        "B=64, H 256..1024: speedup vs PyTorch",
        ">= 1.0x",
        [(r.speedup, tag(r)) for r in ok if r.batch == 64 and r.hidden >= 256 and r.speedup],
        TARGET_LARGE,
    )
    add(
        "B=64, H 256..1024: GFLOP/s vs same-run sgemm",
        ">= 0.8",
        [
            (r.frac_limit, tag(r))
            for r in ok
            if r.batch == 64 and r.hidden >= 256 and r.frac_limit is not None
        ],
        TARGET_GEMM,
    )
    add(
        "GRU and RNN training, any shape: speedup vs PyTorch",
        ">= 1.5x",
        [
            (r.speedup, tag(r))
            for r in ok
            if r.cell in ("gru", "rnn") and r.mode == "training" and r.speedup
        ],
        TARGET_GRU_RNN_TRAIN,
    )
    by_key = {(r.cell, r.hidden, r.batch, r.mode, r.threads): r for r in ok}
    scal = []
    for (cell, h, b, mode, thr), r2 in by_key.items():
        if thr == 2 and b >= 16 and (cell, h, b, mode, 1) in by_key:
            r1 = by_key[(cell, h, b, mode, 1)]
            if r1.rnnfast_ms and r2.rnnfast_ms:
                scal.append((r1.rnnfast_ms / r2.rnnfast_ms, f"{cell} H={h} B={b} {mode}"))
    add("2 threads vs 1 thread at B >= 16 (rnnfast)", ">= 1.7x", scal, TARGET_THREADS)
    add(
        "first call after import / steady state",
        "<= 1.2x",
        [
            (f["ratio"], f"{f['cell']} {f['mode']} H={f['hidden']} B={f['batch']}")
            for f in first
            if "ratio" in f
        ],
        TARGET_FIRST_CALL,
        higher=False,
    )
    if memory is not None:
        vals = []
        for t in memory.get("tbptt", []):
            if "peak_vs_1x" in t:
                vals.append((abs(t["peak_vs_1x"] - 1.0), f"{t['cell']} x{t['mult']}"))
        add(
            "TBPTT peak RSS as the stream grows 100x (|ratio - 1|)",
            "<= 0.10",
            vals,
            TARGET_MEM_FLAT,
            higher=False,
        )
    return out


def write_outputs(
    out_dir: Path,
    meta: dict[str, Any],
    rows: list[Row],
    first: list[dict[str, Any]],
    memory: dict[str, Any] | None,
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = targets_summary(rows, first, memory)
    doc = {
        "meta": meta,
        "rows": [asdict(r) for r in rows],
        "first_call": first,
        "memory": memory,
        "targets": targets,
    }
    (out_dir / "bench.json").write_text(json.dumps(doc, indent=1, default=str))
    (out_dir / "bench.md").write_text(markdown_report(meta, rows, first, memory, targets))
    try:
        plot(out_dir, rows)
    except (
        Exception
    ) as exc:  # matplotlib missing or a backend problem: the numbers are written anyway
        print(f"(plot skipped: {type(exc).__name__}: {exc})")
    print(f"\nwrote {out_dir}/bench.json, bench.md, bench_speedup.png, bench_efficiency.png")


def markdown_report(
    meta: Mapping[str, Any],
    rows: list[Row],
    first: list[dict[str, Any]],
    memory: Mapping[str, Any] | None,
    targets: list[dict[str, Any]],
) -> str:
    m = meta["machine"]
    lim = meta["limits"]
    caches = ", ".join(f"{k} {v // 1024} KiB" for k, v in m.get("caches", {}).items())
    lines = [
        f"# rnnfast benchmark ({meta['date']})",
        "",
        f"- machine: {m.get('cpu_model', '?')}, {m.get('logical_cpus')} logical CPUs, caches "
        f"{caches}; SIMD flags: {' '.join(m.get('simd_flags', []))}",
        f"- rnnfast: {meta.get('rnnfast_build', {})}",
        f"- torch {meta.get('torch_version')}, numpy {meta.get('numpy_version')}; "
        f"impl `{meta['impl']}`",
        f"- command: `{meta['command']}`",
        f"- load average at start {meta.get('load_start')}, at end {meta.get('load_end')} "
        "(the machine is shared: figures are medians of alternated runs)",
        f"- T = {meta['steps']}, I = H, float32; median of {meta['repeats']} alternated samples "
        "after warm-up",
        "- FLOPs = 2*T*B*G*H*(I+H) (input + recurrent GEMMs), x3 for training; limit = same-run "
        f"sgemm (best of torch.mm / numpy @, square n = {meta['gemm_n']})",
        "- B=1 weight bytes per call: inference 4*G*H*(T*H+I), training 4*G*H*(2*T*H+3*I); "
        "bw = measured read bandwidth of the cache level holding one thread's W_hh slice",
        "",
        "## Machine limits measured in this run",
        "",
        _md_row(["threads", "sgemm GFLOP/s (torch / numpy)", "L1 GB/s", "L2 GB/s", "L3 GB/s",
                 "DRAM GB/s"]),
        _md_row(["---"] * 6),
    ]  # fmt: skip
    for thr, g in lim["sgemm"].items():
        bw = lim["bandwidth"].get(thr, {})
        gemm = f"{g['gflops']:.1f} ({_fmt(g.get('torch_gflops'), '.1f')} / {g['numpy_gflops']:.1f})"
        levels = [_fmt(bw.get(k), ".1f") for k in ("L1", "L2", "L3", "DRAM")]
        lines.append(_md_row([thr, gemm, *levels]))
    lines += ["", "## Targets (issue 4)", ""]
    lines += [_md_row(["target", "goal", "met", "worst", "where", "rows met"])]
    lines += [_md_row(["---"] * 6)]
    for t in targets:
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "no")
        lines.append(
            _md_row([t["target"], t["goal"], met, _fmt(t["worst"], ".2f"), t["where"],
                     f"{t['n_met']}/{t['n']}"])
        )  # fmt: skip
    lines += ["", "## Results", "", TABLE_HEADER, _md_row(["---"] * len(TABLE_COLUMNS))]
    lines += [row_markdown(r) for r in rows]
    if first:
        cols = ["cell", "mode", "H", "B", "first ms", "steady ms", "ratio", "import s"]
        lines += ["", "## First call after import (fresh process, 1 thread)", ""]
        lines += [_md_row(cols), _md_row(["---"] * len(cols))]
        for f in first:
            head = [f["cell"], f["mode"], f["hidden"], f["batch"]]
            if "ratio" in f:
                vals = [f"{f['first_ms']:.3f}", f"{f['steady_ms']:.3f}", f"{f['ratio']:.2f}",
                        f"{f['import_s']:.2f}"]  # fmt: skip
            else:
                vals = [f"error: {f.get('error')}", "", "", ""]
            lines.append(_md_row(head + vals))
    if memory:
        lines += memory_markdown(memory)
    return "\n".join(lines) + "\n"


def memory_markdown(memory: Mapping[str, Any]) -> list[str]:
    cols = ["cell", "H", "B", "impl", "first step MB", "second step MB", "inputs MB"]
    lines = ["", "## Memory: peak RSS growth of one training step (fresh process, 1 thread)", ""]
    lines += [_md_row(cols), _md_row(["---"] * len(cols))]
    for s in memory.get("step", []):
        head = [s["cell"], s["hidden"], s["batch"], s["impl"]]
        if "error" in s:
            lines.append(_md_row(head + [f"error: {s['error'][:80]}", "", ""]))
        else:
            vals = [s["first"]["peak_growth_mb"], s["second"]["peak_growth_mb"], s["inputs_mb"]]
            lines.append(_md_row(head + [f"{v:.1f}" for v in vals]))
    cols = ["cell", "H", "B", "stream steps", "API", "peak RSS MB", "growth MB", "vs 1x"]
    lines += ["", "## Memory: TBPTT training as the stream grows", ""]
    lines += [_md_row(cols), _md_row(["---"] * len(cols))]
    for t in memory.get("tbptt", []):
        head = [t["cell"], t["hidden"], t["batch"], t["steps"]]
        if "error" in t:
            lines.append(_md_row(head + [f"error: {t['error'][:80]}", "", "", ""]))
        else:
            vals = [t["api"], f"{t['peak_mb']:.1f}", f"{t['peak_growth_mb']:.1f}",
                    f"{t['peak_vs_1x']:.3f}"]  # fmt: skip
            lines.append(_md_row(head + vals))
    return lines


def plot(out_dir: Path, rows: list[Row]) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.status == "ok"]
    if not ok:
        return
    cells = [c for c in CELLS if any(r.cell == c for r in ok)]
    modes = [m for m in MODES if any(r.mode == m for r in ok)]
    batches = sorted({r.batch for r in ok})
    thr_list = sorted({r.threads for r in ok})
    colors = dict(zip(batches, ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]))
    styles = {1: "-", 2: "--", 4: ":"}

    for kind, ylabel, fname in (
        ("speedup", "speed-up vs PyTorch (x)", "bench_speedup.png"),
        ("frac_limit", "GFLOP/s / same-run sgemm GFLOP/s", "bench_efficiency.png"),
    ):
        fig, axes = plt.subplots(
            len(modes),
            len(cells),
            figsize=(4.2 * len(cells), 3.4 * len(modes)),
            squeeze=False,
            sharex=True,
        )
        for mi, mode in enumerate(modes):
            for ci, cell in enumerate(cells):
                ax = axes[mi][ci]
                for b in batches:
                    for thr in thr_list:
                        pts = sorted(
                            (r.hidden, getattr(r, kind))
                            for r in ok
                            if r.cell == cell
                            and r.mode == mode
                            and r.batch == b
                            and r.threads == thr
                            and getattr(r, kind) is not None
                        )
                        if pts:
                            ax.plot(
                                [p[0] for p in pts],
                                [p[1] for p in pts],
                                styles.get(thr, "-."),
                                marker="o",
                                color=colors[b],
                                label=f"B={b}, {thr} thr",
                            )
                if kind == "speedup":
                    ax.axhline(1.0, color="gray", lw=0.8)
                    ax.axhline(
                        TARGET_SMALL, color="tab:red", lw=0.8, ls=":", label="3x target (B<=16)"
                    )
                    ax.set_yscale("log")
                    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
                    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
                else:
                    ax.axhline(
                        TARGET_GEMM, color="tab:red", lw=0.8, ls=":", label="0.8 target (B=64)"
                    )
                ax.set_xscale("log", base=2)
                ax.set_title(f"{cell} {mode}")
                ax.set_xlabel("H (= I), T = 100")
                if ci == 0:
                    ax.set_ylabel(ylabel)
                ax.grid(True, which="both", alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 7), fontsize=8)
        fig.tight_layout(rect=(0, 0.07, 1, 1))
        fig.savefig(out_dir / fname, dpi=110)
        plt.close(fig)


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------


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
        args.mem_stream_mults = (
            [1, 10] if args.mem_stream_mults == [1, 10, 100] else args.mem_stream_mults
        )
    if args.repeats < 5:
        p.error("--repeats: expected >= 5 (the median of at least 5 samples)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        kind, spec = args.child[0], json.loads(args.child[1])
        fn = {
            "first-call": _child_first_call,
            "memory-step": _child_memory_step,
            "memory-tbptt": _child_memory_tbptt,
        }[kind]
        print("RESULT " + json.dumps(fn(spec)), flush=True)
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

    machine = _cpuinfo()
    caches = machine["caches"]
    build = top.build_info() if hasattr(top, "build_info") else {}
    meta: dict[str, Any] = {
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
        "load_start": _loadavg(),
    }
    print(
        f"rnnfast benchmark  {meta['date']}  {machine.get('cpu_model')}  "
        f"{machine.get('logical_cpus')} CPUs  "
        f"load {meta['load_start']}"
    )
    print(f"rnnfast build: {build}")

    if args.memory:
        mem = memory_mode(args, args.cells)
        meta["load_end"] = _loadavg()
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
                f"worst={_fmt(t['worst'], '.3f')} ({t['where']})"
            )
        print(f"\nwrote {args.out}/memory.json, memory.md")
        return 0

    # machine limits, measured now (same run)
    print("\n== limits: sgemm and read bandwidth ==", flush=True)
    limits: dict[str, Any] = {"sgemm": {}, "bandwidth": {}}
    for thr in sorted(set(args.threads)):
        limits["sgemm"][str(thr)] = measure_sgemm(threads, thr, args.gemm_n, repeats=5)
        limits["bandwidth"][str(thr)] = measure_bandwidth(threads, thr, caches)
        g = limits["sgemm"][str(thr)]
        bw = limits["bandwidth"][str(thr)]
        print(
            f"  {thr} thread(s): sgemm {g['gflops']:.1f} GFLOP/s "
            f"(torch {_fmt(g.get('torch_gflops'), '.1f')}, "
            f"numpy {g['numpy_gflops']:.1f}); read GB/s "
            + ", ".join(f"{k} {v:.1f}" for k, v in bw.items()),
            flush=True,
        )
    meta["limits"] = limits

    print("\n== grid ==", flush=True)
    oracles = Oracles(oracle_ref, torch, ref_max_work=args.ref_max_gflop * 1e9)
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

    first: list[dict[str, Any]] = []
    if not args.no_first_call:
        print("\n== first call after import (fresh process, 1 thread) ==", flush=True)
        first = first_call(args, args.cells, args.modes)

    meta["load_end"] = _loadavg()
    write_outputs(args.out, meta, rows, first, None)
    print("\n== targets (issue 4) ==")
    for t in targets_summary(rows, first, None):
        met = "n/a" if t["met"] is None else ("MET" if t["met"] else "not met")
        print(
            f"  {t['target']:55s} {t['goal']:8s} {met:8s} worst {_fmt(t['worst'], '.2f')} "
            f"({t['where']}) "
            f"{t['n_met']}/{t['n']}"
        )
    failed = [r for r in rows if r.status != "ok"]
    if failed:
        print(f"\n{len(failed)} row(s) FAILED the correctness check (not timed):")
        for r in failed:
            print("  " + r.message)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
