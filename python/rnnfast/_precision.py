"""Mixed precision for the sequence kernels: ``precision="bf16"`` (issue 18).

In bf16 mode every product of a float32 sequence call (``core.sequence_forward`` /
``core.sequence_backward``: the functional API, the modules, ``fit``) takes bf16 operands and
accumulates in float32: the input projection, the per-step recurrent product (on a packed bf16 copy
of W_hh made once per call; an inference call holds no float32 copy) and the backward GEMMs. Biases,
the cells' pointwise math, c_t, states and gradients stay float32; the weights the optimizer updates
stay float32 (master weights), so each call converts them afresh (a per-update cache is not done).
float64 calls ignore the mode. The truncated-BPTT streams (``functional.TBPTTStream``,
``tbptt_grads``, the modules' ``stream_*``, ``fit(bptt=...)``) call the same sequence kernels per
chunk, so they run bf16 too. Kernels outside the sequence path (``step``'s one-step kernel, the
projected LSTM, minGRU/minLSTM) run float32 in bf16 mode, as autocast leaves ops without a
low-precision kernel in float32 (a module with its own ``precision="bf16"`` steps through the
sequence kernels instead: :mod:`rnnfast.nn._precisionops`).

Where the mode comes from: this context manager (the thread's mode), ``fit(precision=...)`` (the
same, around training), a module's ``precision`` attribute (wins over the thread's mode when set)
and the functional API's ``precision=`` keyword (that call only; None = the thread's mode).

The mode belongs to the calling thread (a thread-local in the compiled core), so threads never see
each other's. Numerics, in float64 terms: :mod:`rnnfast.reference.bf16`.

Only the portable path is built: bf16 storage widened to float32 in registers and float32 FMAs
(half the bytes of W_hh per step, which is what B = 1 inference is bound by). Native AVX512_BF16
(``vdpbf16ps``) and AMX kernels are not built; :func:`bf16_info` says what the CPU has, and the
first use of bf16 warns once that the portable path runs.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np

from ._loader import core

__all__ = [
    "PRECISIONS",
    "Bf16PathWarning",
    "bf16_info",
    "bind",
    "check_call_precision",
    "check_precision",
    "precision",
    "run_in",
]

#: the precisions of the sequence kernels' products
PRECISIONS = ("fp32", "bf16")

_warned = False
_T = TypeVar("_T")


class Bf16PathWarning(RuntimeWarning):
    """Issued once per process when bf16 runs the portable path (no native bf16 kernel)."""


def check_precision(value: Any, name: str = "precision") -> str:
    """``value`` if it is one of :data:`PRECISIONS`, else TypeError / ValueError naming ``name``."""
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected one of {PRECISIONS}, got {type(value).__name__}")
    if value not in PRECISIONS:
        raise ValueError(f"{name}: expected one of {PRECISIONS}, got {value!r}")
    return value


def bf16_info() -> dict[str, Any]:
    """What bf16 hardware this CPU has and which path ``precision="bf16"`` runs.

    Returns a dict: ``cpu_avx512_bf16``, ``cpu_amx_bf16`` (bools, from cpuid), ``path``
    (``"portable"``), ``native`` (False: no AVX512_BF16 / AMX kernel is built).
    """
    return dict(core.bf16_info())


def _caller_level() -> int:
    """warnings.warn's stacklevel of the first frame outside rnnfast and contextlib (the user's
    call), seen from _notice's caller."""
    skip = (os.path.dirname(os.path.abspath(__file__)), os.path.dirname(contextlib.__file__))
    frame, level = sys._getframe(2), 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(skip):
        frame, level = frame.f_back, level + 1
    return level


def _notice() -> None:
    global _warned
    if _warned:
        return
    _warned = True
    info = bf16_info()
    has = [
        n for n, k in (("AVX512_BF16", "cpu_avx512_bf16"), ("AMX-BF16", "cpu_amx_bf16")) if info[k]
    ]
    cpu = f"this CPU has {' and '.join(has)}, but " if has else "this CPU has no AVX512_BF16, and "
    warnings.warn(
        "rnnfast: precision='bf16' runs the portable path (bf16 weights widened to float32 in "
        f"registers, float32 FMAs): {cpu}rnnfast builds no native AVX512_BF16/AMX kernel",
        Bf16PathWarning,
        stacklevel=_caller_level(),
    )


@contextlib.contextmanager
def precision(value: str = "bf16") -> Iterator[str]:
    """Context manager: the sequence kernels called on this thread inside run in ``value``.

    ``with precision("bf16"): y, h_n, cache = functional.lstm_forward(x32, ...)`` and the matching
    backward (call it inside too: the mode is read at each call). Restores the previous mode on
    exit, also on an exception; nests. Yields the precision.
    """
    value = check_precision(value)
    if value == "bf16":
        _notice()
    previous = core._get_precision()
    core._set_precision(value)
    try:
        yield value
    finally:
        core._set_precision(previous)


def check_call_precision(value: Any, dtype: Any, name: str = "precision") -> str | None:
    """The ``precision=`` argument of a call on arrays of ``dtype``: None (the thread's mode) as it
    is, else :func:`check_precision`; ``"bf16"`` needs float32 (ValueError naming ``name`` for
    float64, as ``fit`` refuses bf16 for a float64 model: an explicit request is not ignored)."""
    if value is None:
        return None
    value = check_precision(value, name)
    if value == "bf16" and np.dtype(dtype) != np.float32:
        raise ValueError(f"{name}: 'bf16' needs float32 arrays, got {np.dtype(dtype)}")
    return value


def run_in(mode: str, fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(*args)`` with this thread's sequence kernels in ``mode`` (a checked precision), the
    previous mode restored after (also on an exception). When the thread runs ``mode`` already it
    is a plain call: no mode switch, no notice."""
    previous = core._get_precision()
    if previous == mode:
        return fn(*args)
    if mode == "bf16":
        _notice()
    core._set_precision(mode)
    try:
        return fn(*args)
    finally:
        core._set_precision(previous)


def bind(value: Any, dtype: Any, fn: Callable[..., _T]) -> Callable[..., _T]:
    """``fn`` under a call's ``precision=`` argument, checked now (:func:`check_call_precision`):
    ``fn`` itself for None (the thread's mode) or the mode the thread runs already, else ``fn`` run
    in that mode (:func:`run_in`). Call the result at once, on this thread."""
    if value is None:
        return fn
    mode = check_call_precision(value, dtype)
    if mode == core._get_precision():
        return fn
    return functools.partial(run_in, mode, fn)
