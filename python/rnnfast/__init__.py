"""rnnfast: fast CPU recurrent neural networks with a C++/Eigen core.

The compiled core holds the cell kernels (vanilla RNN, LSTM, GRU), whole-sequence forward and
backward (BPTT) and truncated BPTT; the Python layer holds models, losses, optimizers and training
loops, and :mod:`rnnfast.reference` is a plain NumPy float64 oracle every kernel is checked against.
"""

from __future__ import annotations

import os as _os
from typing import Any

from . import _loader
from ._loader import available_variants

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "available_variants",
    "build_info",
    "get_num_threads",
    "set_num_threads",
]


def build_info() -> dict[str, Any]:
    """How this installation was built and what it runs with.

    Returns a dict with the chosen SIMD ``variant``, the ``variants_available`` on this CPU and the
    ``variants_built`` into the wheel, the ``eigen_version``, the ``compiler``, whether OpenMP is used,
    Eigen's SIMD instruction sets in the chosen variant, and the current ``num_threads``.
    """
    core = _loader.core
    return {
        "version": __version__,
        "variant": core.variant,
        "variants_available": available_variants(),
        "variants_built": _loader.built_variants(),
        "eigen_version": core.eigen_version,
        "compiler": core.compiler,
        "openmp": core.openmp,
        "simd_instruction_sets": core.simd_instruction_sets,
        "num_threads": core.get_num_threads(),
        "cpu_count": _os.cpu_count(),
    }


def get_num_threads() -> int:
    """Number of threads the kernels may use."""
    return int(_loader.core.get_num_threads())


def set_num_threads(n: int) -> None:
    """Set the number of threads the kernels may use (an int >= 1).

    The default is the environment variable ``RNNFAST_NUM_THREADS`` or the number of cores.
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n: expected an int >= 1, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n}")
    _loader.core.set_num_threads(n)
