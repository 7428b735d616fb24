"""Timing: medians of alternated samples."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["time_alternating", "time_once"]


def time_once(fn: Callable[[], Any], inner: int) -> float:
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
            dt = time_once(fns[name], 1)
        inner[name] = max(1, min(10_000, int(math.ceil(min_sample / max(dt, 1e-7)))))
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            samples[name].append(time_once(fns[name], inner[name]))
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
