"""The argument checks of the functional API (one place for them): dtypes, shapes, memory, the
validated arguments of one call (``_Args``) and parameters by name. Used by
:mod:`rnnfast.functional`, its truncated-BPTT half (``_tbptt_api``) and :mod:`rnnfast.minimal`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Union

import numpy as np

from ._cells import CELLS, get_cell

__all__: list[str] = []

Array = np.ndarray
State = Union[Array, tuple[Array, Array]]

_GATES = {c.name: c.gates for c in CELLS}  # gate count per cell, from the registry
_NONLINEARITIES = ("tanh", "relu")
_PARAM_KEYS = ("w_ih", "w_hh", "b_ih", "b_hh")


# --------------------------------------------------------------------------------------------------
# argument checks (the one place for them)
# --------------------------------------------------------------------------------------------------


_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
_ndarray = np.ndarray


def _float_array(name: str, a: Any, dtype: np.dtype | None = None) -> Array:
    """``a`` as a C-contiguous float32/float64 array (of ``dtype`` when given), else TypeError.

    The result always carries NumPy's canonical float32/float64 descriptor (byte-swapped input is
    converted, dtype metadata dropped), which is what the compiled core checks for.
    """
    # The common case first, returned as it is (what the general path below returns for it too):
    # an ndarray (not a subclass) with the canonical descriptor, of the wanted dtype, C-contiguous.
    # It costs ~0.3 us where the general path takes ~1.5 us, per array and call (7 arrays a call).
    if type(a) is _ndarray:
        dt = a.dtype
        if (dt is _F32 or dt is _F64) and (dtype is None or dt == dtype) and a.flags.c_contiguous:
            return a
    if a is None:
        raise TypeError(f"{name}: expected an array, got None")
    try:
        arr = a if isinstance(a, np.ndarray) else np.asarray(a)
    except (ValueError, TypeError) as exc:  # e.g. ragged nested lists
        raise TypeError(f"{name}: expected an array, got {type(a).__name__} ({exc})") from None
    dt = arr.dtype
    if dt.kind != "f" or dt.itemsize not in (4, 8):
        want = f"dtype {dtype}" if dtype is not None else "dtype float32 or float64"
        raise TypeError(f"{name}: expected {want}, got dtype {dt}")
    if dtype is not None and dt.itemsize != dtype.itemsize:
        raise TypeError(f"{name}: expected dtype {dtype} (the dtype of x), got dtype {dt}")
    canon = np.dtype(np.float32) if dt.itemsize == 4 else np.dtype(np.float64)
    try:
        if not dt.isnative:
            arr = arr.astype(canon)
        elif dt is not canon:
            arr = arr.view(canon)  # same layout; the canonical descriptor (e.g. without metadata)
        # not np.ascontiguousarray alone: it turns a 0-d array into shape (1,), which would then pass
        # a (1,) shape check (a 0-d bias when G*H == 1)
        return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)
    except MemoryError as exc:
        raise MemoryError(
            f"{name}: cannot make a C-contiguous copy of shape {arr.shape} "
            f"({arr.size * canon.itemsize} bytes): {exc}"
        ) from None


def _memory_limit() -> int | None:
    """RAM + swap of this machine in bytes (Linux), or None when unknown."""
    global _MEMORY_LIMIT
    if _MEMORY_LIMIT is None:
        total = 0
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                for line in f:
                    key, _, rest = line.partition(":")
                    if key in ("MemTotal", "SwapTotal"):
                        total += int(rest.split()[0]) * 1024
        except (OSError, ValueError, IndexError):
            total = 0
        _MEMORY_LIMIT = total if total > 0 else -1
    return None if _MEMORY_LIMIT < 0 else _MEMORY_LIMIT


_MEMORY_LIMIT: int | None = None


def _check_memory(what: str, nbytes: int) -> None:
    """MemoryError naming ``what`` when a call would need more than the machine's RAM + swap.

    Checked before anything is allocated: a buffer larger than memory would otherwise either fail
    deep in the core or, worse, be granted by the kernel's overcommit and get the process killed.
    """
    limit = _memory_limit()
    if limit is not None and nbytes > limit:
        raise MemoryError(
            f"{what}: needs {nbytes / 2**30:.1f} GiB of buffers, more than this machine's "
            f"{limit / 2**30:.1f} GiB of RAM + swap"
        )


def _check_shape(name: str, a: Array, shape: tuple[int, ...]) -> None:
    if a.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {a.shape}")


def _opt_array(name: str, a: Any, dtype: np.dtype, shape: tuple[int, ...]) -> Array | None:
    """None for None, else ``a`` as a C-contiguous array of ``dtype`` and ``shape`` (TypeError or
    ValueError naming ``name`` otherwise): an optional gradient or state argument, e.g. dy, dh_n."""
    if a is None:
        return None
    arr = _float_array(name, a, dtype)
    _check_shape(name, arr, shape)
    return arr


def _check_nonlinearity(nonlinearity: Any) -> str:
    if nonlinearity not in _NONLINEARITIES:
        raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
    return str(nonlinearity)


def _check_bool(name: str, v: Any) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(v).__name__}")
    return bool(v)


def _check_k(name: str, k: Any) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{name}: expected an int >= 1, got {type(k).__name__} {k!r}")
    if k < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {k}")
    return int(k)


class _Args:
    """Validated arguments of one call: sizes, dtype and C-contiguous arrays."""

    def __init__(self, cell: str, x: Any, w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any) -> None:
        gates = _GATES[cell]
        self.x = _float_array("x", x)
        self.dtype = self.x.dtype
        if self.x.ndim != 3:
            raise ValueError(
                f"x: expected a 3-D array of shape (T, B, I), got shape {self.x.shape}"
            )
        t, b, i = self.x.shape
        self.T, self.B, self.I = int(t), int(b), int(i)
        if self.T < 1 or self.B < 1 or self.I < 1:
            raise ValueError(f"x: expected shape (T, B, I) with T, B, I >= 1, got {self.x.shape}")
        self.w_ih = _float_array("w_ih", w_ih, self.dtype)
        if self.w_ih.ndim != 2 or self.w_ih.shape[0] % gates != 0 or self.w_ih.shape[0] == 0:
            raise ValueError(
                f"w_ih: expected shape ({gates}*H, {self.I}) with H >= 1, got {self.w_ih.shape}"
            )
        self.H = self.w_ih.shape[0] // gates
        self.GH = gates * self.H
        _check_shape("w_ih", self.w_ih, (self.GH, self.I))
        self.w_hh = _float_array("w_hh", w_hh, self.dtype)
        _check_shape("w_hh", self.w_hh, (self.GH, self.H))
        if (b_ih is None) != (b_hh is None):
            raise ValueError("b_ih, b_hh: expected both arrays or both None, got one of each")
        self.b_ih = self.opt("b_ih", b_ih, (self.GH,))
        self.b_hh = self.opt("b_hh", b_hh, (self.GH,))

    def arr(self, name: str, a: Any, shape: tuple[int, ...]) -> Array:
        out = _float_array(name, a, self.dtype)
        if out.shape != shape:
            _check_shape(name, out, shape)
        return out

    def opt(self, name: str, a: Any, shape: tuple[int, ...]) -> Array | None:
        return None if a is None else self.arr(name, a, shape)

    def state(self, name: str, a: Any) -> Array | None:
        return None if a is None else self.arr(name, a, (self.B, self.H))

    def check_forward_memory(self, cell: str, training: bool) -> None:
        """MemoryError naming x and w_hh when y and the activations cannot fit in memory."""
        t, b, h, g = self.T, self.B, self.H, _GATES[cell]
        n = t * b * h + 2 * b * h  # y, h_n, c_n
        if training:  # act, h, c, aux of the cache (cache_sizes in sequence.hpp)
            n += (
                t * b * g * h
                + (t + 1) * b * h * get_cell(cell).n_states
                + (0 if cell == "rnn" else t * b * h)
            )
        else:  # the input-projection workspace
            n += t * b * g * h
        limit = _memory_limit()
        if limit is not None and n * self.dtype.itemsize > limit:  # (the message only when raised)
            what = f"x, w_hh: T={t}, B={b}, H={h} ({cell}, training={training})"
            _check_memory(what, n * self.dtype.itemsize)

    def lengths(self, lengths: Any) -> Array | None:
        if lengths is None:
            return None
        arr = np.asarray(lengths)
        if arr.dtype.kind not in "iu":
            raise TypeError(
                f"lengths: expected an integer array of shape ({self.B},), got dtype {arr.dtype}"
            )
        _check_shape("lengths", arr, (self.B,))
        if arr.min() < 0 or arr.max() > self.T:
            raise ValueError(
                f"lengths: expected 0 <= lengths[b] <= T = {self.T}, "
                f"got min {arr.min()}, max {arr.max()}"
            )
        return np.ascontiguousarray(arr, dtype=np.int64)


# --------------------------------------------------------------------------------------------------
# parameters by name (shared with truncated BPTT, rnnfast/_tbptt_api.py, and the generated cells)
# --------------------------------------------------------------------------------------------------


def _check_params(params: Any, cell: str = "rnn") -> tuple[Any, Any, Any, Any]:
    """(w_ih, w_hh, b_ih, b_hh) of a params dict; the cell's extra parameters are required keys
    too (read them with :func:`_extra_params`)."""
    extra = tuple(name for name, _ in get_cell(cell).extra_params)
    keys = ", ".join(_PARAM_KEYS + extra)
    if not isinstance(params, Mapping):
        raise TypeError(f"params: expected a dict with keys {keys}, got {type(params).__name__}")
    for key in ("w_ih", "w_hh", *extra):
        if key not in params:
            raise ValueError(f"params: missing key {key!r} (expected keys {keys})")
    unknown = set(params) - set(_PARAM_KEYS) - set(extra)
    if unknown:
        raise ValueError(f"params: unexpected keys {sorted(unknown)} (expected {keys})")
    return params["w_ih"], params["w_hh"], params.get("b_ih"), params.get("b_hh")


def _extra_params(cell: str, params: Mapping[str, Any], dtype: Any, hidden: int) -> tuple:
    """The cell's extra parameters from ``params`` (checked: dtype, shape (per_unit*H,))."""
    out = []
    for name, per_unit in get_cell(cell).extra_params:
        arr = _float_array(name, params[name], dtype)
        _check_shape(name, arr, (per_unit * hidden,))
        out.append(arr)
    return tuple(out)
