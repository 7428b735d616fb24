"""rnnfast: fast CPU recurrent neural networks with a C++/Eigen core.

The compiled core holds the cell kernels (vanilla RNN with tanh or ReLU, LSTM, GRU), whole-sequence
forward and backward (BPTT) and truncated BPTT(k1, k2); the Python layer holds the models, losses,
optimizers and training loops, and :mod:`rnnfast.reference` is a plain NumPy float64 oracle that every
kernel is checked against.

Submodules: :mod:`~rnnfast.functional` (kernels), :mod:`~rnnfast.reference` (oracle),
:mod:`~rnnfast.modules`, :mod:`~rnnfast.losses`, :mod:`~rnnfast.optim`, :mod:`~rnnfast.training`,
:mod:`~rnnfast.io`, :mod:`~rnnfast.interop`, :mod:`~rnnfast.diagnostics`, :mod:`~rnnfast.tasks`,
:mod:`~rnnfast.distributed` (MPI; imported on use).
"""

from __future__ import annotations

import os as _os
from typing import Any

from . import _loader
from ._loader import available_variants

__version__ = "0.1.0"


def build_info() -> dict[str, Any]:
    """How this installation was built and what it runs with.

    Returns a dict with the chosen SIMD ``variant``, the ``variants_available`` on this CPU and the
    ``variants_built`` into the wheel, the ``eigen_version``, the ``compiler``, whether OpenMP is used,
    Eigen's SIMD instruction sets in the chosen variant, the current ``num_threads`` and
    ``max_threads``, and ``omp_spin_count``: the GOMP_SPINCOUNT rnnfast gave GNU OpenMP when it
    loaded (None when the user set OMP_WAIT_POLICY or GOMP_SPINCOUNT themselves), and ``bf16``: the
    CPU's AVX512_BF16 / AMX-BF16 and the path ``precision("bf16")`` runs (:func:`precision`).
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
        "max_threads": core.max_threads(),
        "omp_spin_count": _loader.omp_spin_count,
        "cpu_count": _os.cpu_count(),
        "bf16": dict(core.bf16_info()),
    }


def get_num_threads() -> int:
    """Number of threads the kernels may use (an upper bound: see :func:`set_num_threads`)."""
    return int(_loader.core.get_num_threads())


def max_threads() -> int:
    """Largest count :func:`set_num_threads` accepts: 4x the CPUs this process may use, at least 16."""
    return int(_loader.core.max_threads())


def set_num_threads(n: int) -> None:
    """Set the most threads the kernels may use: an int in ``1..max_threads()``.

    The default is the environment variable ``RNNFAST_NUM_THREADS`` or the number of CPUs this
    process may run on. Each kernel call takes only as many as its work pays for: a time step must
    be worth 16 barriers per thread at the barrier cost measured now, and threads are only used on
    CPUs that other processes and other thread pools left free over the last ~100 ms (so beside a
    busy process or another runtime's spinning pool the kernels run on one thread instead of waiting
    at every step for a descheduled teammate). Results are bitwise the same for every thread count.

    Raises ValueError outside ``1..max_threads()`` and RuntimeError when the threads cannot be
    created (a memory or process limit; the count is then unchanged).
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n: expected an int in 1..{max_threads()}, got {type(n).__name__}")
    if not 1 <= n <= max_threads():
        raise ValueError(
            f"n: expected an int in 1..{max_threads()} (4x this process's CPUs, at least 16), got {n}"
        )
    _loader.core.set_num_threads(n)


def memory_info() -> dict[str, int]:
    """The block cache of the compiled core: ``cached_bytes`` now held, ``limit`` the most it keeps.

    Large workspaces, training caches and result arrays come from pre-faulted blocks; a block
    released by one call (its arrays dropped) is kept for the next call of the same shape, up to
    ``limit`` bytes (256 MiB, or the environment variable ``RNNFAST_CACHE_MB`` read at import).
    """
    core = _loader.core
    return {
        "cached_bytes": int(core.memory_cached_bytes()),
        "limit": int(core.memory_cache_limit()),
    }


def release_memory() -> None:
    """Return the blocks kept for reuse to the system (arrays still alive are not affected)."""
    _loader.core.release_memory()


# The public names. Submodules are imported eagerly except tasks/diagnostics/distributed/cli, which
# stay one attribute access away (see __getattr__) so that `import rnnfast` stays fast.
from . import functional, io, losses, modules, optim, reference, training  # noqa: E402
from ._precision import precision  # noqa: E402
from .interop import from_keras_weights, from_torch, to_keras_weights, to_torch  # noqa: E402
from .io import Checkpoint, CheckpointError, load, register_model_class, save  # noqa: E402
from .losses import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, sequence_mask  # noqa: E402
from .modules import (  # noqa: E402
    GRU,
    LSTM,
    RNN,
    Embedding,
    LayerNormGRU,
    LayerNormLSTM,
    Linear,
    MinGRU,
    MinLSTM,
    PeepholeLSTM,
    ResetBeforeGRU,
    SequenceModel,
    build_model,
    model_from_config,
)
from .optim import (  # noqa: E402
    SGD,
    Adam,
    AdamW,
    ClipStats,
    CosineAnnealingLR,
    ExponentialLR,
    LinearLR,
    LinearWarmup,
    ReduceLROnPlateau,
    RMSprop,
    SequentialLR,
    StepLR,
    clip_grad_norm_,
    clip_grad_value_,
)
from .training import (  # noqa: E402
    Callback,
    Dataset,
    EarlyStopping,
    History,
    NonFiniteError,
    TrainingInterrupted,
    evaluate,
    fit,
)

_LAZY = ("tasks", "diagnostics", "distributed", "cli", "interop", "data")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'rnnfast' has no attribute {name!r}")


__all__ = [
    "GRU",
    "PeepholeLSTM",
    "ResetBeforeGRU",
    "LayerNormLSTM",
    "LayerNormGRU",
    "LSTM",
    "MinGRU",
    "MinLSTM",
    "RNN",
    "SGD",
    "Adam",
    "AdamW",
    "BCEWithLogitsLoss",
    "Callback",
    "Checkpoint",
    "CheckpointError",
    "ClipStats",
    "CosineAnnealingLR",
    "CrossEntropyLoss",
    "Dataset",
    "EarlyStopping",
    "Embedding",
    "ExponentialLR",
    "History",
    "Linear",
    "LinearLR",
    "LinearWarmup",
    "MSELoss",
    "NonFiniteError",
    "RMSprop",
    "ReduceLROnPlateau",
    "SequenceModel",
    "SequentialLR",
    "StepLR",
    "TrainingInterrupted",
    "__version__",
    "available_variants",
    "build_info",
    "build_model",
    "clip_grad_norm_",
    "clip_grad_value_",
    "evaluate",
    "fit",
    "from_keras_weights",
    "from_torch",
    "functional",
    "get_num_threads",
    "max_threads",
    "io",
    "load",
    "losses",
    "memory_info",
    "model_from_config",
    "precision",
    "modules",
    "optim",
    "reference",
    "register_model_class",
    "release_memory",
    "save",
    "sequence_mask",
    "set_num_threads",
    "to_keras_weights",
    "to_torch",
    "training",
]
