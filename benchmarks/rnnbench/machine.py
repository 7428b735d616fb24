"""Machine description, thread control and the machine limits (sgemm, read bandwidth) of a run."""

from __future__ import annotations

import ctypes
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .common import GATES
from .timing import time_alternating

__all__ = [
    "Threads",
    "bandwidth_level",
    "cache_sizes",
    "cpuinfo",
    "loadavg",
    "measure_bandwidth",
    "measure_sgemm",
]


def cpuinfo() -> dict[str, Any]:
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
    info["caches"] = cache_sizes()
    return info


def cache_sizes() -> dict[str, int]:
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


def loadavg() -> tuple[float, float, float] | None:
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
