"""Testing helpers shared by the tests, the benchmarks and :func:`rnnfast.diagnostics.gradcheck`.

Like ``numpy.testing``: public, small, and free of pytest. The per-cell calls go through the cell
registry (:mod:`rnnfast._cells`), so a newly registered cell is called the same way everywhere.

Error measure used throughout (``rel_max_error``):
max_i |actual_i - expected_i| / max_i |expected_i|, i.e. the max absolute error relative to the
largest magnitude in the expected (reference) array. It is stable where single entries of a
gradient are near zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._cells import get_cell

__all__ = ["assert_close", "call_backward", "call_forward", "rel_max_error"]

# Denominator floor: an all-zero expected array is compared in absolute terms against this scale.
_TINY = 1e-30


def rel_max_error(actual: Any, expected: Any) -> tuple[float, tuple[int, ...]]:
    """(max |a - e| / max |e|, index of the max abs difference); both compared in float64.

    Different shapes give (inf, ()); a non-finite difference gives inf at its first index; empty
    arrays give (0.0, ()).
    """
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        return float("inf"), ()
    if a.size == 0:
        return 0.0, ()
    diff = np.abs(a - e)
    if not np.all(np.isfinite(diff)):
        bad = np.unravel_index(int(np.argmax(~np.isfinite(diff))), diff.shape)
        return float("inf"), tuple(int(i) for i in bad)
    idx = np.unravel_index(int(np.argmax(diff)), diff.shape)
    scale = max(float(np.max(np.abs(e))), _TINY)
    return float(diff[idx]) / scale, tuple(int(i) for i in idx)


def assert_close(actual: Any, expected: Any, rtol: float, name: str = "array") -> float:
    """Assert rel_max_error(actual, expected) <= rtol; return the error.

    The failure message names the array, the error, the tolerance, the index of the largest absolute
    difference and both values there, and the scale (max |expected|). None matches only None.
    """
    if actual is None or expected is None:
        if actual is None and expected is None:
            return 0.0
        raise AssertionError(
            f"{name}: one side is None (actual {type(actual).__name__}, "
            f"expected {type(expected).__name__})"
        )
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        raise AssertionError(f"{name}: shape mismatch, actual {a.shape}, expected {e.shape}")
    err, idx = rel_max_error(a, e)
    if not err <= rtol:
        scale = float(np.max(np.abs(e))) if e.size else 0.0
        raise AssertionError(
            f"{name}: max relative error {err:.3e} > tol {rtol:.1e} at index {idx} "
            f"(actual {float(a[idx])!r}, expected {float(e[idx])!r}; "
            f"scale max|expected| = {scale:.3e}, shape {a.shape})"
        )
    return err


def call_forward(
    mod: Any,
    cell: str,
    inp: Mapping[str, Any],
    *,
    nonlinearity: str = "tanh",
    lengths: Any = None,
    training: bool = True,
) -> tuple[Any, Any, Any, Any]:
    """Call ``mod.<cell>_forward`` (``mod``: :mod:`rnnfast.functional`, :mod:`rnnfast.reference`
    or anything with the same functions) with the arrays of ``inp``.

    ``inp`` holds x (T, B, I), the initial states (h0, and c0 for a cell with a cell state),
    w_ih (G*H, I), w_hh (G*H, H), b_ih, b_hh (G*H,) or None, and the cell's extra parameters by
    name (``CellSpec.extra_params``). ``nonlinearity`` is passed only to
    cells that accept more than one. Returns (y, h_n, c_n or None, cache) for every cell.
    """
    spec = get_cell(cell)
    states = [inp[n] for n in spec.state_names]
    kw: dict[str, Any] = {"lengths": lengths, "training": training}
    if len(spec.nonlinearities) > 1:
        kw["nonlinearity"] = nonlinearity
    extra = [inp[name] for name, _ in spec.extra_params]
    out = getattr(mod, f"{cell}_forward")(
        inp["x"], *states, inp["w_ih"], inp["w_hh"], inp["b_ih"], inp["b_hh"], *extra, **kw
    )
    if spec.has_cell_state:
        y, h_n, c_n, cache = out
        return y, h_n, c_n, cache
    y, h_n, cache = out
    return y, h_n, None, cache


def call_backward(
    mod: Any, cell: str, cache: Any, dy: Any, dh_n: Any = None, dc_n: Any = None
) -> dict[str, Any]:
    """Call ``mod.<cell>_backward(cache, dy, dh_n[, dc_n])``; dc_n is passed only to a cell with a
    cell state. Returns the gradient dict (x, h0, [c0], w_ih, w_hh, b_ih, b_hh, dh_all)."""
    seeds = (dy, dh_n, dc_n) if get_cell(cell).has_cell_state else (dy, dh_n)
    return dict(getattr(mod, f"{cell}_backward")(cache, *seeds))
