"""Shared test helpers: tolerance checks whose failure messages print the max error and where it is.

Import from a test file as ``from helpers import assert_close`` (pytest puts tests/ on sys.path).

Error measure used throughout (``rel_max_error``, from :mod:`rnnfast.testing`):
max_i |actual_i - expected_i| / max_i |expected_i|, i.e. the max absolute error relative to the
largest magnitude in the expected (reference) array. It is stable where single entries of a
gradient are near zero, and it is the measure the tolerances in issue 2 (1e-6 FD, 1e-10 float64,
1e-4 float32) refer to in these tests.

The cells come from the registry (:data:`rnnfast._cells.CELLS`): a newly registered cell is
parametrised into every test that uses ``CELLS`` / ``CELL_NAMES`` here.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from rnnfast._cells import CELLS as _SPECS
from rnnfast._cells import get_cell
from rnnfast.testing import assert_close, call_backward, call_forward, rel_max_error

__all__ = [
    "CELLS",
    "CELL_NAMES",
    "GATES",
    "TORCH_CELLS",
    "assert_close",
    "assert_grads_close",
    "central_difference",
    "backward",
    "bad_forward_cases",
    "call_forward_kw",
    "forward",
    "grad_keys",
    "loss",
    "make_inputs",
    "rel_max_error",
]

#: (cell, nonlinearity) for every registered cell and each nonlinearity it accepts (rnn twice).
CELLS: tuple[tuple[str, str], ...] = tuple((c.name, nl) for c in _SPECS for nl in c.nonlinearities)
#: The registered cell names ("rnn", "lstm", "gru").
CELL_NAMES: list[str] = [c.name for c in _SPECS]
GATES = {c.name: c.gates for c in _SPECS}
#: (cell, nonlinearity) of the cells PyTorch has a module for (torch parity tests).
TORCH_CELLS: tuple[tuple[str, str], ...] = tuple(
    (c, nl) for c, nl in CELLS if get_cell(c).torch_name is not None
)


def assert_grads_close(
    actual: Mapping[str, Any], expected: Mapping[str, Any], rtol: float, where: str = ""
) -> dict[str, float]:
    """assert_close for every key of ``expected`` (None must match None); returns errors per key."""
    errors: dict[str, float] = {}
    for key, exp in expected.items():
        if key not in actual:
            raise AssertionError(f"{where}: gradient dict lacks key {key!r} (has {sorted(actual)})")
        act = actual[key]
        if isinstance(exp, (tuple, list)):
            if not isinstance(act, (tuple, list)) or len(act) != len(exp):
                raise AssertionError(
                    f"{where}{key}: expected a {len(exp)}-tuple, got {type(act).__name__}"
                )
            for j, (a_j, e_j) in enumerate(zip(act, exp)):
                errors[f"{key}[{j}]"] = assert_close(a_j, e_j, rtol, f"{where}{key}[{j}]")
        else:
            errors[key] = assert_close(act, exp, rtol, f"{where}{key}")
    return errors


def central_difference(f: Callable[[], float], arr: np.ndarray, eps: float) -> np.ndarray:
    """d f / d arr by central differences, perturbing ``arr`` in place (restored afterwards).

    ``f`` takes no argument and must read ``arr`` (float64) when called.
    """
    grad = np.zeros_like(arr)
    flat = arr.reshape(-1)  # a view: arr is C-contiguous
    assert np.shares_memory(flat, arr)
    gflat = grad.reshape(-1)
    for k in range(flat.size):
        old = flat[k]
        flat[k] = old + eps
        f_plus = f()
        flat[k] = old - eps
        f_minus = f()
        flat[k] = old
        gflat[k] = (f_plus - f_minus) / (2.0 * eps)  # f'(p) = (f(p+e) - f(p-e)) / 2e + O(e^2)
    return grad


def make_inputs(
    cell: str,
    t_steps: int,
    batch: int,
    n_in: int,
    hidden: int,
    *,
    dtype: Any = np.float64,
    bias: bool = True,
    seed: int = 0,
    scale: float = 0.5,
) -> dict[str, np.ndarray | None]:
    """Random inputs for one call.

    Keys: x, h0, c0 (lstm only, else None), w_ih, w_hh, b_ih, b_hh, dy, dh_n, dc_n (lstm only),
    and the cell's extra parameters by name (``CellSpec.extra_params``).

    Weights ~ U(-scale, scale) (keeps activations away from saturation); every array has ``dtype``.
    """
    rng = np.random.default_rng(seed)
    g = GATES[cell]

    def u(*shape: int) -> np.ndarray:
        return rng.uniform(-scale, scale, size=shape).astype(dtype)

    spec = get_cell(cell)
    extra = {name: u(per_unit * hidden) for name, per_unit in spec.extra_params}
    return {
        **extra,
        "x": rng.standard_normal((t_steps, batch, n_in)).astype(dtype),
        "h0": u(batch, hidden),
        "c0": u(batch, hidden) if get_cell(cell).has_cell_state else None,
        "w_ih": u(g * hidden, n_in),
        "w_hh": u(g * hidden, hidden),
        "b_ih": u(g * hidden) if bias else None,
        "b_hh": u(g * hidden) if bias else None,
        "dy": rng.standard_normal((t_steps, batch, hidden)).astype(dtype),
        "dh_n": rng.standard_normal((batch, hidden)).astype(dtype),
        "dc_n": (
            rng.standard_normal((batch, hidden)).astype(dtype)
            if get_cell(cell).has_cell_state
            else None
        ),
    }


def forward(
    mod: Any,
    cell: str,
    nonlinearity: str,
    inp: Mapping[str, Any],
    lengths: Any = None,
    training: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, Any]:
    """Call ``mod.<cell>_forward`` with the arrays of ``inp`` (:func:`rnnfast.testing.call_forward`).

    Returns (y, h_n, c_n or None, cache) for every cell.
    """
    return call_forward(
        mod, cell, inp, nonlinearity=nonlinearity, lengths=lengths, training=training
    )


def backward(
    mod: Any, cell: str, cache: Any, dy: Any, dh_n: Any = None, dc_n: Any = None
) -> dict[str, Any]:
    """Call ``mod.<cell>_backward``; dc_n is used for a cell with a cell state only."""
    return call_backward(mod, cell, cache, dy, dh_n, dc_n)


def loss(
    cell: str, y: np.ndarray, h_n: np.ndarray, c_n: np.ndarray | None, inp: Mapping[str, Any]
) -> float:
    """L = <y, dy> + <h_n, dh_n> (+ <c_n, dc_n>): the scalar whose gradient backward computes."""
    total = float(np.sum(y * inp["dy"]) + np.sum(h_n * inp["dh_n"]))
    if get_cell(cell).has_cell_state:
        assert c_n is not None
        total += float(np.sum(c_n * inp["dc_n"]))
    return total


def grad_keys(cell: str) -> tuple[str, ...]:
    """Gradient dict keys of ``<cell>_backward`` (without dh_all)."""
    spec = get_cell(cell)
    extra = tuple(name for name, _ in spec.extra_params)
    return ("x", *spec.state_names, "w_ih", "w_hh", "b_ih", "b_hh", *extra)


def bad_forward_cases(cell: str) -> list[tuple[str, str, Any, type, str]]:
    """Invalid-argument cases for ``<cell>_forward``: (id, argument, bad value, exception, match).

    Baseline shapes: T=3, B=2, I=3, H=4 (see ``make_inputs(cell, 3, 2, 3, 4)``).
    """
    g = GATES[cell]
    cases: list[tuple[str, str, Any, type, str]] = [
        ("x-2d", "x", np.zeros((2, 3)), ValueError, "x"),
        ("w_ih-rows", "w_ih", np.zeros((g * 4 + 1, 3)), ValueError, "w_ih"),
        ("w_ih-cols", "w_ih", np.zeros((g * 4, 2)), ValueError, "w_ih"),
        ("w_hh-shape", "w_hh", np.zeros((g * 4, 3)), ValueError, "w_hh"),
        ("b_ih-shape", "b_ih", np.zeros(g * 4 + 1), ValueError, "b_ih"),
        ("b_hh-shape", "b_hh", np.zeros((1, g * 4)), ValueError, "b_hh"),
        ("h0-shape", "h0", np.zeros((2, 5)), ValueError, "h0"),
        ("lengths-too-long", "lengths", np.array([4, 1]), ValueError, "lengths"),
        ("lengths-negative", "lengths", np.array([-1, 1]), ValueError, "lengths"),
        ("lengths-wrong-size", "lengths", np.array([1, 1, 1]), ValueError, "lengths"),
        ("lengths-float", "lengths", np.array([1.0, 2.0]), TypeError, "lengths"),
        ("x-complex", "x", np.zeros((3, 2, 3), dtype=np.complex128), TypeError, "x"),
    ]
    if get_cell(cell).has_cell_state:
        cases.append(("c0-shape", "c0", np.zeros((3, 4)), ValueError, "c0"))
    return cases


def call_forward_kw(mod: Any, cell: str, kw: Mapping[str, Any], nonlinearity: str = "tanh") -> Any:
    """Call ``mod.<cell>_forward`` with contract keyword arguments from ``kw``."""
    spec = get_cell(cell)
    names = ("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh", *(n for n, _ in spec.extra_params))
    args = {k: kw[k] for k in names}
    if spec.has_cell_state:
        args["c0"] = kw["c0"]
    if len(spec.nonlinearities) > 1:
        args["nonlinearity"] = nonlinearity
    return getattr(mod, f"{cell}_forward")(**args, lengths=kw.get("lengths"))


def cell_inputs_f32(
    cell: str,
    T: int = 5,
    B: int = 3,
    I: int = 6,  # noqa: E741
    H: int = 24,
    seed: int = 0,
) -> dict[str, Any]:
    """float32 inputs of one whole-sequence call of a registered cell (x, weights, biases, the
    states, the cell's extra parameters near 1) and of its backward (dy, dh_n, dc_n), at scales
    where bf16 rounding is visible but nothing saturates (test_bf16, test_precision_api)."""
    spec = get_cell(cell)
    rng = np.random.default_rng(seed)
    G = spec.gates
    a: dict[str, Any] = {
        "x": rng.standard_normal((T, B, I)),
        "w_ih": rng.standard_normal((G * H, I)) * 0.4,
        "w_hh": rng.standard_normal((G * H, H)) * (1.0 / np.sqrt(H)),
        "b_ih": rng.standard_normal(G * H) * 0.1,
        "b_hh": rng.standard_normal(G * H) * 0.1,
        "dy": rng.standard_normal((T, B, H)),
        "dh_n": rng.standard_normal((B, H)),
        "dc_n": rng.standard_normal((B, H)) if spec.has_cell_state else None,
    }
    for n in spec.state_names:
        a[n] = rng.standard_normal((B, H)) * 0.5
    for name, per_unit in spec.extra_params:
        a[name] = 1.0 + 0.2 * rng.standard_normal(per_unit * H)
    return {k: (None if v is None else np.asarray(v, dtype=np.float32)) for k, v in a.items()}


def thread_cpu_seconds() -> dict[int, float]:
    """CPU seconds of every thread of this process: /proc/self/task/<tid>/schedstat (ns), else the
    utime + stime clock ticks of /proc/self/task/<tid>/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for tid in os.listdir("/proc/self/task"):
        base = f"/proc/self/task/{tid}"
        try:
            with open(f"{base}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[0]) * 1e-9
            continue
        except (OSError, ValueError, IndexError):
            pass
        try:
            with open(f"{base}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[int(tid)] = (
                int(fields[11]) + int(fields[12])
            ) / tick  # utime, stime (fields 14, 15)
        except (OSError, ValueError, IndexError):
            pass  # the thread exited
    return out


def cpu_of_other_threads(fn: Callable[[], Any]) -> tuple[float, float]:
    """(CPU seconds of the calling thread, most CPU seconds of any other thread) while fn runs."""
    me = threading.get_native_id()
    before = thread_cpu_seconds()
    fn()
    after = thread_cpu_seconds()
    used = {t: after[t] - before.get(t, 0.0) for t in after}
    return used.pop(me, 0.0), max(used.values(), default=0.0)
