"""The ``precision`` option of the recurrent stacks (issue 18): the mode of their products.

``precision`` is None (default: the thread's mode, fp32 unless inside ``rnnfast.precision(...)`` or
``fit(precision=...)``), ``"fp32"`` or ``"bf16"`` (the products on bf16 operands with fp32
accumulation, fp32 weights: :mod:`rnnfast._precision`). A module's own value, when set, wins over the
thread's mode, for its forward (training and eval), backward, truncated-BPTT streams and ``step``
(bf16: the one-step call goes through the sequence kernels, since the compiled step has no bf16
kernel). It is checked on assignment (``module.precision = "bf16"``) and kept in ``config()`` (only
when set, so older configs and checkpoints load unchanged, as None).

Refused (ValueError naming ``precision``): ``"bf16"`` on a float64 module (as ``fit`` refuses a
float64 model), on the projected LSTM (``proj_size``) and on the minimal cells (MinGRU, MinLSTM):
their kernels have no bf16 path and run float32 whatever the mode.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _precision
from .._loader import core

__all__ = ["PrecisionOption", "config_items", "run_in", "switch"]

run_in = _precision.run_in


def _check(module: Any, value: Any) -> str | None:
    if value is None:
        return None
    value = _precision.check_precision(value, "precision")
    if value != "bf16":
        return value
    name = type(module).__name__
    if np.dtype(module.dtype) != np.float32:
        raise ValueError(f"precision: 'bf16' needs a float32 module, got a {module.dtype} {name}")
    if getattr(module, "proj_size", 0):
        raise ValueError(
            f"precision: the projected LSTM (proj_size={module.proj_size}) has no bf16 kernel (it "
            "runs float32), expected None or 'fp32'"
        )
    if not getattr(module, "_bf16_kernel", True):
        raise ValueError(
            f"precision: the {module._cell} cell ({name}) has no bf16 kernel (it runs float32), "
            "expected None or 'fp32'"
        )
    return value


class PrecisionOption:
    """Mixin: the ``precision`` attribute (None, "fp32" or "bf16"), checked on assignment."""

    #: the class default: None (modules pickled before the option have no instance value)
    _precision: str | None = None

    @property
    def precision(self) -> str | None:
        """The mode of this module's products: None (the thread's), "fp32" or "bf16"."""
        return self._precision

    @precision.setter
    def precision(self, value: Any) -> None:
        self._precision = _check(self, value)


def switch(module: Any) -> str | None:
    """The module's mode when the thread runs another one (the caller then runs in it), else None."""
    p = module._precision
    return p if p is not None and p != core._get_precision() else None


def config_items(module: Any) -> dict[str, Any]:
    """``{"precision": value}`` for ``config()`` when set, else nothing (older configs unchanged)."""
    p = module._precision
    return {} if p is None else {"precision": p}
