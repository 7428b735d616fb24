"""Import the best compiled variant of the core that this CPU can run.

The C++ core is compiled several times side by side in one wheel, each as its own extension module:
``_core_baseline`` (portable), ``_core_avx2`` (AVX2 + FMA) and ``_core_avx512`` (AVX-512 F/BW/DQ/VL).
The baseline module asks the CPU what it supports (cpuid); the best supported variant is imported,
unless the environment variable ``RNNFAST_SIMD`` names one (``baseline``, ``avx2`` or ``avx512``).

GNU OpenMP (libgomp, loaded with the first core module) reads how long its idle threads spin once,
when it loads. Its default, 300,000 spins (~11 ms on a Zen 3 core), keeps a core busy after every
kernel call and at every barrier whose teammate was descheduled, taking it from NumPy's BLAS
threads, other runtimes' pools and other processes. Unless the user set ``OMP_WAIT_POLICY`` or
``GOMP_SPINCOUNT``, the spin is bounded to :data:`OMP_SPIN_COUNT` (~0.1-0.5 ms, the order of a
sleeping thread's wake-up in a VM) while libgomp loads; the variable is removed again afterwards,
so child processes see the user's environment. ``omp_spin_count`` says what was set, if anything.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType

__all__ = [
    "OMP_SPIN_COUNT",
    "VARIANTS",
    "available_variants",
    "built_variants",
    "core",
    "load_variant",
    "omp_spin_count",
]

#: Variant names, worst to best.
VARIANTS: tuple[str, ...] = ("baseline", "avx2", "avx512")

# CPU features each variant needs (names as the baseline module's cpu_features() reports them).
_REQUIRES: dict[str, tuple[str, ...]] = {
    "baseline": (),
    "avx2": ("avx2", "fma"),
    "avx512": ("avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl"),
}


def _import(name: str) -> ModuleType:
    return importlib.import_module(f"rnnfast._core_{name}")


def built_variants() -> list[str]:
    """Variants compiled into this installation (whether or not this CPU can run them)."""
    found = []
    for name in VARIANTS:
        spec = importlib.util.find_spec(f"rnnfast._core_{name}")
        if spec is not None:
            found.append(name)
    return found


def available_variants() -> list[str]:
    """Variants that are compiled in *and* that this CPU can run, worst to best."""
    try:
        baseline = _import("baseline")
    except ImportError as exc:  # pragma: no cover - a broken installation
        raise ImportError(
            "rnnfast: the compiled core (rnnfast._core_baseline) is missing; reinstall with "
            "`pip install .` from the source tree"
        ) from exc
    features = baseline.cpu_features()
    return [v for v in built_variants() if all(features.get(flag, False) for flag in _REQUIRES[v])]


def load_variant(name: str) -> ModuleType:
    """Import one variant's module by name; ValueError if it is unknown or this CPU cannot run it."""
    if name not in VARIANTS:
        raise ValueError(f"RNNFAST_SIMD: expected one of {', '.join(VARIANTS)}, got {name!r}")
    available = available_variants()
    if name not in available:
        raise ValueError(
            f"RNNFAST_SIMD: variant {name!r} is not available on this CPU/installation "
            f"(available: {', '.join(available) or 'none'})"
        )
    return _import(name)


def _select() -> ModuleType:
    requested = os.environ.get("RNNFAST_SIMD", "").strip().lower()
    if requested:
        return load_variant(requested)
    available = available_variants()
    return _import(available[-1])


#: GOMP_SPINCOUNT set while libgomp loads, unless the user chose a wait policy.
OMP_SPIN_COUNT = "10000"


def _libgomp_loaded() -> bool:
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as f:
            return "/libgomp" in f.read()
    except OSError:
        return False


def _select_with_bounded_spin() -> tuple[ModuleType, str | None]:
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ or _libgomp_loaded():
        return _select(), None
    os.environ["GOMP_SPINCOUNT"] = OMP_SPIN_COUNT
    try:
        return _select(), OMP_SPIN_COUNT
    finally:
        os.environ.pop("GOMP_SPINCOUNT", None)


#: The compiled module in use for this process, and the GOMP_SPINCOUNT rnnfast set for libgomp
#: (None: the user's OMP_WAIT_POLICY / GOMP_SPINCOUNT, or libgomp already loaded by another module).
core, omp_spin_count = _select_with_bounded_spin()
