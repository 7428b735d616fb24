"""Constants of the speed grid, the FLOP and weight-byte formulas, and the benchmark inputs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CELLS",
    "DEFAULT_OUT",
    "GATES",
    "HERE",
    "MODES",
    "TORCH_CLASS",
    "flops",
    "make_inputs",
    "weight_bytes",
]

# Literal tables, not rnnfast._cells: importing any rnnfast module runs rnnfast/__init__ (and loads
# the core), and the first-call children must time exactly that import.
CELLS: tuple[str, ...] = ("rnn", "lstm", "gru")
GATES: dict[str, int] = {"rnn": 1, "lstm": 4, "gru": 3}
MODES: tuple[str, ...] = ("inference", "training")
TORCH_CLASS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}

# benchmarks/ (bench.py re-runs itself from there for its subprocesses)
HERE = Path(__file__).resolve().parent.parent
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
