"""Import the best compiled variant of the core that this CPU can run.

The C++ core is compiled several times side by side in one wheel, each as its own extension module:
``_core_baseline`` (portable), ``_core_avx2`` (AVX2 + FMA) and ``_core_avx512`` (AVX-512 F/BW/DQ/VL).
The baseline module asks the CPU what it supports (cpuid); the best supported variant is imported,
unless the environment variable ``RNNFAST_SIMD`` names one (``baseline``, ``avx2`` or ``avx512``).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType

__all__ = ["VARIANTS", "available_variants", "built_variants", "core", "load_variant"]

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


#: The compiled module in use for this process.
core: ModuleType = _select()
