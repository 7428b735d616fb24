"""Checks shared by the optimizers, clipping and the schedulers: hyperparameter validators, the
parameter and gradient dict checks, and :func:`_flat_view` (the one buffer a model's arrays tile).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__: list[str] = []

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _flat_view(arrays: list[np.ndarray]) -> np.ndarray | None:
    """The 1-D slice of one buffer that ``arrays`` tile, in order, or None.

    True for the parameters (or gradients) of an rnnfast model: C-contiguous views of one 1-D
    buffer, of one dtype, each starting where the previous one ends. The slice is a real view of
    that buffer, so writing it writes the arrays.
    """
    if not arrays:
        return None
    first = arrays[0]
    base = first.base
    if not isinstance(base, np.ndarray) or base.ndim != 1 or not base.flags.c_contiguous:
        return None
    dtype = first.dtype
    item = dtype.itemsize
    start = first.__array_interface__["data"][0]
    addr = start
    for a in arrays:
        if (
            a.base is not base
            or a.dtype != dtype
            or not a.flags.c_contiguous
            or a.__array_interface__["data"][0] != addr
        ):
            return None
        addr += a.size * item
    base_addr = base.__array_interface__["data"][0]
    if base.dtype != dtype or (start - base_addr) % item:
        return None
    off = (start - base_addr) // item
    n = (addr - start) // item
    if off + n > base.size:
        return None
    return base[off : off + n]


# --------------------------------------------------------------------------------------------------
# small validators
# --------------------------------------------------------------------------------------------------


def _real(
    name: str,
    value: Any,
    *,
    lo: float | None = None,
    lo_open: bool = False,
    hi: float | None = None,
    hi_open: bool = False,
    finite: bool = True,
) -> float:
    """Checks a real hyperparameter; ``finite=False`` admits +-inf (e.g. the inf-norm)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    v = float(value)
    if math.isnan(v):
        raise ValueError(f"{name}: expected a number, got nan")
    if finite and math.isinf(v):
        raise ValueError(f"{name}: expected a finite number, got {v}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ValueError(f"{name}: expected {'>' if lo_open else '>='} {lo}, got {v}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise ValueError(f"{name}: expected {'<' if hi_open else '<='} {hi}, got {v}")
    return v


def _int(name: str, value: Any, *, lo: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    v = int(value)
    if lo is not None and v < lo:
        raise ValueError(f"{name}: expected an int >= {lo}, got {v}")
    return v


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")
    return bool(value)


def _nonnegative(name: str, value: Any) -> float:
    return _real(name, value, lo=0.0)


def _betas(name: str, value: Any) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name}: expected a pair (beta1, beta2), got {value!r}")
    return (
        _real(f"{name}[0]", value[0], lo=0.0, hi=1.0, hi_open=True),
        _real(f"{name}[1]", value[1], lo=0.0, hi=1.0, hi_open=True),
    )


#: the check of each optimizer hyperparameter (besides ``lr``), by name: the optimizers share the
#: names with torch.optim and with each other, so ``weight_decay`` is checked the same way in all
_HYPERPARAM_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "momentum": _nonnegative,
    "dampening": _real,
    "weight_decay": _nonnegative,
    "eps": _nonnegative,
    "alpha": _nonnegative,
    "betas": _betas,
    "nesterov": _bool,
    "amsgrad": _bool,
    "centered": _bool,
    "maximize": _bool,
}


def _check_param_dict(params: Any) -> dict[str, np.ndarray]:
    if not isinstance(params, Mapping) and callable(getattr(params, "parameters", None)):
        params = params.parameters()
    if not isinstance(params, Mapping):
        raise TypeError(
            "params: expected a dict name -> ndarray (e.g. model.parameters()), "
            f"got {type(params).__name__}"
        )
    if len(params) == 0:
        raise ValueError("params: got an empty parameter dict")
    out: dict[str, np.ndarray] = {}
    for name, p in params.items():
        if not isinstance(name, str):
            raise TypeError(f"params: expected str keys, got {type(name).__name__} key {name!r}")
        if not isinstance(p, np.ndarray):
            raise TypeError(
                f"params[{name!r}]: expected an np.ndarray (updated in place), "
                f"got {type(p).__name__}"
            )
        if p.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"params[{name!r}]: expected dtype float32 or float64, got {p.dtype}")
        if not p.flags.writeable:
            raise ValueError(
                f"params[{name!r}]: array is read-only; the optimizer updates it in place"
            )
        out[name] = p
    return out


def _check_grads(
    grads: Any, params: Mapping[str, np.ndarray], name: str = "grads"
) -> dict[str, np.ndarray]:
    """Return the non-None gradients as arrays, checked against the parameters."""
    if not isinstance(grads, Mapping):
        raise TypeError(f"{name}: expected a dict name -> ndarray, got {type(grads).__name__}")
    out: dict[str, np.ndarray] = {}
    for key, g in grads.items():
        if key not in params:
            raise ValueError(
                f"{name}: unknown parameter {key!r} (known: {sorted(params)[:8]}"
                f"{' ...' if len(params) > 8 else ''})"
            )
        if g is None:
            continue
        p = params[key]
        g = np.asarray(g)
        if g.dtype != p.dtype:
            raise TypeError(
                f"{name}[{key!r}]: expected dtype {p.dtype} (the parameter's), got {g.dtype}"
            )
        if g.shape != p.shape:
            raise ValueError(f"{name}[{key!r}]: expected shape {p.shape}, got {g.shape}")
        out[key] = g
    return out


def _to_json_scalar(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, tuple):
        return [_to_json_scalar(x) for x in v]
    return v
