"""Argument checks, casts and constants shared by the layers of :mod:`rnnfast.nn`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Union

import numpy as np

from .._argcheck import check_lengths_dtype, check_shape
from .._cells import CELLS

__all__ = ["Array", "State", "INIT_PRESETS", "MODES", "IncompatibleKeys"]

Array = np.ndarray
State = Union[Array, tuple[Array, Array]]

#: Initialisation presets of the recurrent modules.
INIT_PRESETS = ("torch", "orthogonal", "identity")
#: SequenceModel modes.
MODES = ("many_to_many", "many_to_one", "one_to_many", "one_to_one")

_GATES = {c.name: c.gates for c in CELLS}  # gate count per cell, from the registry
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _module_name(name: str) -> str:
    """state_dict stem of a functional parameter name, PyTorch-style: w_peep -> weight_peep,
    b_x -> bias_x, other names unchanged (gamma_c -> gamma_c); suffixed with _l{k}[_reverse]."""
    if name.startswith("w_"):
        return "weight_" + name[2:]
    if name.startswith("b_"):
        return "bias_" + name[2:]
    return name


def _check_int(name: str, value: Any, lo: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int >= {lo}, got {type(value).__name__} {value!r}")
    if value < lo:
        raise ValueError(f"{name}: expected an int >= {lo}, got {value}")
    return int(value)


def _fmt_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.4g} {unit}"
        size /= 1024
    return f"{size:.4g} TiB"


def _check_allocatable(names: str, what: str, n_params: int, dtype: np.dtype) -> None:
    """MemoryError naming the size arguments ``names`` when ``n_params`` parameters of ``dtype``
    and their gradients cannot be allocated, before any of them is (a huge ``num_layers`` would
    otherwise loop over layers until the memory runs out). The probe is never written to, so it
    costs address space only, not physical memory."""
    nbytes = 2 * n_params * dtype.itemsize
    try:
        np.empty(2 * n_params, dtype=dtype)
    except (MemoryError, ValueError) as exc:  # ValueError: larger than the address space
        raise MemoryError(
            f"{names}: {what} needs {n_params} parameters ({_fmt_bytes(nbytes)} with their "
            f"gradients), more memory than can be allocated"
        ) from exc


def _check_dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype!r}") from exc
    if dt not in _FLOAT_DTYPES:
        raise TypeError(f"dtype: expected float32 or float64, got {dt}")
    return dt


def _as_float(name: str, a: Any, dtype: np.dtype, ndim: int | None = None) -> Array:
    """A C-contiguous array of ``dtype`` from float input; TypeError for other dtypes."""
    if a is None:
        raise TypeError(f"{name}: expected an array, got None")
    try:
        arr = np.asarray(a)
    except ValueError as exc:  # e.g. a ragged nested list
        raise ValueError(f"{name}: expected a rectangular float array, got {exc}") from None
    if arr.dtype not in _FLOAT_DTYPES and arr.dtype != np.float16:
        raise TypeError(f"{name}: expected a float32 or float64 array, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=dtype)


def _as_hx(hx: Any, dtype: np.dtype, shape: tuple[int, ...], owner: str) -> Array:
    """``hx`` of a stack without a cell state: one array of ``shape`` (L*D, B, H) in ``dtype``.

    TypeError for a tuple or list (naming ``owner``, the module's class) or a non-float array,
    ValueError for another shape."""
    if isinstance(hx, (tuple, list)):
        raise TypeError(f"hx: expected an array {shape} for {owner}, got {type(hx).__name__}")
    h0 = _as_float("hx", hx, dtype)
    if h0.shape != shape:
        raise ValueError(f"hx: expected shape {shape}, got {h0.shape}")
    return h0


def _as_lengths(lengths: Any, batch: int, t_steps: int) -> Array | None:
    if lengths is None:
        return None
    arr = np.asarray(lengths)
    check_lengths_dtype(arr.dtype, batch)
    check_shape("lengths", arr.shape, (batch,))
    if arr.size and (arr.min() < 0 or arr.max() > t_steps):
        raise ValueError(
            f"lengths: expected 0 <= lengths[b] <= T = {t_steps}, got min {arr.min()}, "
            f"max {arr.max()}"
        )
    return np.ascontiguousarray(arr, dtype=np.int64)


def _to_numpy(name: str, v: Any) -> Array:
    """np.asarray for NumPy arrays and anything with ``__array__`` (torch tensors are detached first)."""
    if hasattr(v, "detach") and callable(v.detach):
        v = v.detach()
        if hasattr(v, "cpu"):
            v = v.cpu()
    if not isinstance(v, (np.ndarray, list, tuple)) and not hasattr(v, "__array__"):
        raise TypeError(
            f"{name}: expected an array (or an object with __array__), got {type(v).__name__}"
        )
    try:
        return np.asarray(v)
    except (TypeError, ValueError) as e:  # ragged nested lists, torch.bfloat16, ...
        raise TypeError(f"{name}: cannot convert {type(v).__name__} to an array ({e})") from e


def _cast_parameter(name: str, v: Array, dtype: np.dtype) -> Array:
    """``v`` as ``dtype``: floating arrays only, and every value finite after the cast."""
    if v.dtype.kind != "f":
        raise TypeError(
            f"{name}: expected a floating-point array (float16, float32 or float64; converted to "
            f"the module dtype {dtype}), got dtype {v.dtype}"
        )
    with np.errstate(over="ignore"):  # overflow to inf is reported below, naming the value
        out = np.asarray(v, dtype=dtype)
    finite = np.isfinite(out)
    if not finite.all():
        where = np.unravel_index(int(np.argmin(finite)), out.shape)
        index = tuple(int(i) for i in where)
        if np.isfinite(v[where]):
            raise ValueError(
                f"{name}: value {float(v[where])!r} at index {index} overflows {dtype} "
                f"(largest finite {float(np.finfo(dtype).max):.6g})"
            )
        raise ValueError(f"{name}: non-finite value {float(v[where])} at index {index}")
    return out


class IncompatibleKeys(NamedTuple):
    """Returned by ``load_state_dict(..., strict=False)``: names that were missing / not expected."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _load_into(
    params: Mapping[str, Array], state: Mapping[str, Any], strict: bool, prefix: str = ""
) -> IncompatibleKeys:
    """Copy ``state`` into the live arrays ``params`` (in place, so optimizers keep their references)."""
    if not isinstance(state, Mapping):
        raise TypeError(f"state_dict: expected a dict of arrays, got {type(state).__name__}")
    missing = [k for k in params if k not in state]
    unexpected = [k for k in state if k not in params]
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        raise ValueError(f"state_dict: {' and '.join(parts)} (expected exactly {list(params)})")
    converted: dict[str, Array] = {}
    for k, p in params.items():
        if k not in state:
            continue
        name = f"state_dict[{prefix + k!r}]"
        v = _to_numpy(name, state[k])
        if v.shape != p.shape:
            raise ValueError(f"{name}: expected shape {p.shape}, got {v.shape}")
        converted[k] = _cast_parameter(name, v, p.dtype)
    # A source may be (a view of) one of the live arrays, e.g. the module's own parameters in another
    # order (swapping the directions of a bidirectional layer): copying in place would then read
    # values already overwritten, so such sources are snapshotted before anything is written.
    dests = list(params.values())
    for k, v in converted.items():
        if any(np.may_share_memory(v, d) for d in dests):
            converted[k] = v.copy()
    for k, v in converted.items():  # all checked first: a failed load changes nothing
        np.copyto(params[k], v)
    return IncompatibleKeys(missing, unexpected)
