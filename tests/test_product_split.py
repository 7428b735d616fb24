"""The large products of a call split over threads (parallel_product) give the same bits with 1 and
2 threads, at row counts around the old 48-row block edges.

parallel_product splits the rows of its output (the T*B rows of the input projection and of dx)
over threads. With the old 48-row blocks, 48k + 1 rows left one row to the last thread, which Eigen
computes as a GEMV (another summation order): 1 and 2 threads differed in that row. The threads a
product gets depend on its size and the machine's load, so these tests force teams with the testing
hooks (core._force_product_threads, core._force_loop_threads), and check with the threads' own CPU
clocks that a forced team really runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import rnnfast
from helpers import GATES, cpu_of_other_threads
from rnnfast import functional as F
from rnnfast._cells import get_cell
from rnnfast._loader import core

__all__: list[str] = []

I, H = 160, 64  # noqa: E741 - the LSTM of the original report: T*B = 49, I = 160, H = 64


@pytest.fixture(autouse=True)
def _restore_hooks() -> Iterator[None]:
    before = rnnfast.get_num_threads()
    yield
    core._force_product_threads(0)
    core._force_loop_threads(0)
    rnnfast.set_num_threads(before)


def _teams(n_products: int, n_loops: int) -> None:
    rnnfast.set_num_threads(max(n_products, n_loops))
    core._force_product_threads(n_products)  # teams of n whatever the size and the load
    core._force_loop_threads(n_loops)


def _forward_backward(cell: str, x: np.ndarray, w: list[np.ndarray], dy: np.ndarray) -> list[Any]:
    """[y, h_n, (c_n), grads...] of one training forward and its backward."""
    fwd, back = getattr(F, f"{cell}_forward"), getattr(F, f"{cell}_backward")
    out = fwd(x, None, None, *w) if get_cell(cell).has_cell_state else fwd(x, None, *w)
    grads = back(out[-1], dy)
    grads = list(grads.values()) if isinstance(grads, dict) else list(grads)
    return [*out[:-1], *grads]


def _inputs(
    cell: str, T: int, B: int, dtype: Any
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """x (T, B, I), [w_ih (G*H, I), w_hh (G*H, H), b_ih (G*H), b_hh (G*H)], dy (T, B, H) of dtype."""
    g = GATES[cell]
    r = np.random.default_rng(T * 1000 + B)
    x = r.standard_normal((T, B, I)).astype(dtype)
    shapes = ((g * H, I), (g * H, H), (g * H,), (g * H,))
    w = [(r.standard_normal(s) * 0.1).astype(dtype) for s in shapes]
    dy = r.standard_normal((T, B, H)).astype(dtype)
    return x, w, dy


# T*B = 47, 48, 49, 97, 100 (B = 1: the per-step and B > 1 layouts of the same row counts)
ROWS = [(47, 1), (48, 1), (49, 1), (7, 7), (97, 1), (100, 1), (25, 4)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize(("T", "B"), ROWS, ids=[f"T{t}B{b}" for t, b in ROWS])
def test_products_bitwise_identical_with_one_and_two_threads(
    cell: str, dtype: Any, T: int, B: int
) -> None:
    x, w, dy = _inputs(cell, T, B, dtype)
    runs = []
    for n in (1, 2):
        _teams(n, n)
        runs.append(_forward_backward(cell, x, w, dy))
    one, two = runs
    assert len(one) == len(two)
    for k, (a, b) in enumerate(zip(one, two)):
        assert a.shape == b.shape and a.dtype == b.dtype
        diff = a != b
        assert not diff.any(), (
            f"{cell} {np.dtype(dtype)} T={T} B={B} output {k}: {int(diff.sum())} elements differ "
            f"between 1 and 2 threads, first at {np.argwhere(diff)[0].tolist()}, max |diff| "
            f"{float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))}"
        )


# --------------------------------------------------------------------------------------------------
# the hook really runs a team
# --------------------------------------------------------------------------------------------------


@pytest.mark.skipif(
    not os.path.isdir("/proc/self/task"), reason="needs Linux /proc per-thread clocks"
)
@pytest.mark.skipif(not core.openmp, reason="built without OpenMP: one thread only")
def test_forced_product_threads_run_a_team_of_two() -> None:
    """Time loops forced to 1 thread, so any CPU time of another thread comes from the products:
    with products forced to 1 the other threads stay (nearly) idle, forced to 2 one of them does
    about half of the products' work even on a busy machine (the caller waits for it)."""
    r = np.random.default_rng(0)
    T, B, In, Hn = 64, 32, 512, 128
    x = r.standard_normal((T, B, In)).astype(np.float32)
    w = [(r.standard_normal(s) * 0.05).astype(np.float32) for s in ((4 * Hn, In), (4 * Hn, Hn))]

    def work() -> None:
        for _ in range(20):  # ~2.7 GFLOP of products, ~4% of it the time loop
            F.lstm_forward(x, None, None, w[0], w[1], None, None)

    _teams(1, 1)
    work()  # warm-up: scratch buffers, the team's threads started
    main1, other1 = cpu_of_other_threads(work)
    _teams(2, 1)
    work()
    main2, other2 = cpu_of_other_threads(work)
    assert other1 < 0.1 * main1 + 0.01, (
        f"products at 1 thread: another thread used {other1:.3f} s CPU (caller {main1:.3f} s)"
    )
    assert other2 > 0.25 * main2, (
        f"products forced to 2 threads: the busiest other thread used {other2:.3f} s CPU, the caller "
        f"{main2:.3f} s: no second thread ran the products"
    )
