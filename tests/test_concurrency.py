"""Concurrency and determinism (issue 6).

* The kernels release the GIL: 4 Python threads calling them at once (separate modules training;
  one shared module in inference; the functional API on shared read-only weights; a TBPTT stream
  per thread) give exactly (bitwise) the results of the same calls made serially.
* Changing the thread count while kernels run in other threads is safe.
* Same seed => bitwise identical training (weights, optimizer state, history) across runs, and
  across ``set_num_threads(1)`` and ``set_num_threads(2)``.

What is and is not thread-safe is documented in docs/RELIABILITY.md.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import rnnfast as rf
from helpers import GATES
from rnnfast import functional as F
from rnnfast._cells import get_cell

__all__: list[str] = []

N_THREADS = 4


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    n = rf.get_num_threads()
    yield
    rf.set_num_threads(n)


def run_threads(fns: list[Callable[[], Any]]) -> list[Any]:
    """Runs fns in parallel threads released together; returns their results (re-raises errors)."""
    barrier = threading.Barrier(len(fns))
    results: list[Any] = [None] * len(fns)
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            barrier.wait()
            results[k] = fns[k]()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    if errors:
        raise errors[0]
    return results


def assert_bitwise(a: Any, b: Any, what: str) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for k in a:
            assert_bitwise(a[k], b[k], f"{what}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), what
        for k, (x, y) in enumerate(zip(a, b)):
            assert_bitwise(x, y, f"{what}[{k}]")
    elif isinstance(a, np.ndarray):
        assert a.shape == b.shape and a.dtype == b.dtype, what
        diff = a != b
        assert not diff.any(), (
            f"{what}: {int(diff.sum())} elements differ, first at {np.argwhere(diff)[0].tolist()}, "
            f"max |diff| {float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))}"
        )
    else:
        assert a == b or (a != a and b != b), f"{what}: {a!r} != {b!r}"


def _data(seed: int, T: int = 12, B: int = 16, I: int = 8) -> np.ndarray:  # noqa: E741
    return np.random.default_rng(seed).standard_normal((T, B, I)).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# separate modules training in parallel
# --------------------------------------------------------------------------------------------------


def _train_module(kind: str, seed: int, steps: int = 4) -> dict[str, Any]:
    cls = {"rnn": rf.RNN, "lstm": rf.LSTM, "gru": rf.GRU}[kind]
    m = cls(8, 32, num_layers=2, seed=seed, dtype=np.float32)
    opt = rf.Adam(m.parameters(), lr=1e-2)
    x = _data(seed)
    outs = []
    for _ in range(steps):
        y, _ = m(x)
        m.zero_grad()
        m.backward(y - 0.5)
        opt.step(m.grads)
        outs.append(y.copy())
    return {"outputs": outs, "params": {k: v.copy() for k, v in m.parameters().items()}}


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_separate_modules_in_threads_equal_serial(kind: str) -> None:
    serial = [_train_module(kind, s) for s in range(N_THREADS)]
    parallel = run_threads([lambda s=s: _train_module(kind, s) for s in range(N_THREADS)])
    for s in range(N_THREADS):
        assert_bitwise(parallel[s], serial[s], f"{kind} module {s}")


# --------------------------------------------------------------------------------------------------
# one shared module in inference
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_shared_module_inference_in_threads_equals_serial(kind: str) -> None:
    cls = {"lstm": rf.LSTM, "gru": rf.GRU}[kind]
    m = cls(8, 32, num_layers=2, bidirectional=True, seed=3).eval()
    xs = [_data(10 + k) for k in range(N_THREADS)]
    lengths = [np.random.default_rng(k).integers(1, 13, size=16) for k in range(N_THREADS)]
    serial = [m(xs[k], lengths=lengths[k]) for k in range(N_THREADS)]

    def job(k: int) -> Any:
        return [m(xs[k], lengths=lengths[k]) for _ in range(3)]

    parallel = run_threads([lambda k=k: job(k) for k in range(N_THREADS)])
    for k in range(N_THREADS):
        for rep in parallel[k]:
            assert_bitwise(rep, serial[k], f"shared {kind} thread {k}")


def test_shared_sequence_model_generate_in_threads() -> None:
    model = rf.build_model("gru", 4, 16, 4, mode="one_to_many", seed=1).eval()
    x0 = [
        np.random.default_rng(k).standard_normal((3, 4)).astype(np.float32)
        for k in range(N_THREADS)
    ]
    serial = [model.generate(x0[k], 6, sample=False) for k in range(N_THREADS)]
    parallel = run_threads(
        [lambda k=k: model.generate(x0[k], 6, sample=False) for k in range(N_THREADS)]
    )
    for k in range(N_THREADS):
        assert_bitwise(parallel[k], serial[k], f"generate thread {k}")


# --------------------------------------------------------------------------------------------------
# functional API on shared read-only weights; streams; thread count changes
# --------------------------------------------------------------------------------------------------


def _weights(cell: str, I: int = 8, H: int = 24) -> dict[str, np.ndarray]:  # noqa: E741
    g = GATES[cell]
    r = np.random.default_rng(5)
    w = {
        "w_ih": r.standard_normal((g * H, I)).astype(np.float32) * 0.3,
        "w_hh": r.standard_normal((g * H, H)).astype(np.float32) * 0.3,
        "b_ih": r.standard_normal(g * H).astype(np.float32) * 0.1,
        "b_hh": r.standard_normal(g * H).astype(np.float32) * 0.1,
    }
    for v in w.values():
        v.flags.writeable = False
    return w


def _functional_job(cell: str, w: dict[str, np.ndarray], seed: int) -> dict[str, Any]:
    x = _data(seed, I=w["w_ih"].shape[1])
    lengths = np.random.default_rng(seed).integers(0, 13, size=16)
    args = (x, None, None) if get_cell(cell).has_cell_state else (x, None)
    fwd = getattr(F, f"{cell}_forward")
    out = fwd(*args, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"], lengths=lengths)
    grads = getattr(F, f"{cell}_backward")(out[-1], np.ones_like(out[0]))
    tb = F.tbptt_grads(cell, x, None, dict(w), np.ones_like(out[0]), 3, 5)
    return {"y": out[0], "h_n": out[1], "grads": grads, "tbptt": tb}


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_functional_on_shared_weights_in_threads_equals_serial(cell: str) -> None:
    w = _weights(cell)
    serial = [_functional_job(cell, w, s) for s in range(N_THREADS)]
    parallel = run_threads([lambda s=s: _functional_job(cell, w, s) for s in range(N_THREADS)])
    for s in range(N_THREADS):
        assert_bitwise(parallel[s], serial[s], f"{cell} functional thread {s}")


def _stream_job(seed: int) -> list[Any]:
    w = _weights("lstm")
    s = F.TBPTTStream("lstm", dict(w), None, 3, 6)
    x = _data(seed, T=15)
    out = []
    for t in range(0, 15, 3):
        y = s.forward(x[t : t + 3])
        start, stop = s.window
        dy = np.zeros((stop - start, 16, 24), np.float32)
        dy[-3:] = y
        out.append(s.backward(dy))
    return out


def test_one_stream_per_thread_equals_serial() -> None:
    serial = [_stream_job(s) for s in range(N_THREADS)]
    parallel = run_threads([lambda s=s: _stream_job(s) for s in range(N_THREADS)])
    for s in range(N_THREADS):
        assert_bitwise(parallel[s], serial[s], f"stream thread {s}")


def test_changing_thread_count_while_kernels_run() -> None:
    w = _weights("gru", I=32, H=64)
    rf.set_num_threads(2)
    serial = [_functional_job("gru", w, s) for s in range(3)]
    stop = threading.Event()

    def toggler() -> int:
        n = 0
        while not stop.is_set():
            rf.set_num_threads(1 + n % 2)
            n += 1
        return n

    def job(s: int) -> Any:
        try:
            return [_functional_job("gru", w, s) for _ in range(2)]
        finally:
            if s == 0:
                stop.set()

    results = run_threads([toggler] + [lambda s=s: job(s) for s in range(3)])
    for s in range(3):
        for rep in results[1 + s]:
            # close, not bitwise: bitwise independence of the thread count is tested separately
            assert_close(rep, serial[s], f"gru job {s} while the thread count changed")


def assert_close(a: Any, b: Any, what: str) -> None:
    if isinstance(a, dict):
        for k in a:
            assert_close(a[k], b[k], f"{what}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        for k, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{what}[{k}]")
    elif isinstance(a, np.ndarray):
        err = np.abs(a.astype(np.float64) - b.astype(np.float64))
        bound = 1e-5 * (1 + np.abs(b.astype(np.float64)))
        assert (err <= bound).all(), (
            f"{what}: max error {float(err.max())} at {np.argmax(err - bound)}"
        )


# --------------------------------------------------------------------------------------------------
# determinism of training
# --------------------------------------------------------------------------------------------------


def _fit_once(threads: int, bptt: Any = None, cell: str = "lstm") -> dict[str, Any]:
    rf.set_num_threads(threads)
    r = np.random.default_rng(0)
    mode = "many_to_many" if bptt else "many_to_one"
    # batches of 48 x H=64: sizes at which Eigen's GEMMs do split work between 2 threads
    x = r.standard_normal((16, 96, 8)).astype(np.float32)
    y = r.standard_normal((16, 96, 3) if bptt else (96, 3)).astype(np.float32)
    model = rf.build_model(cell, 8, 64, 3, mode=mode, num_layers=2, seed=11, dropout=0.1)
    opt = rf.Adam(model.parameters(), lr=3e-3)
    hist = rf.fit(model, (x, y), rf.MSELoss(), opt, epochs=2, batch_size=48, bptt=bptt, seed=5,
                  clip_norm=1.0, progress=False)  # fmt: skip
    losses = [(e["loss"], e["grad_norm"]) for e in hist.epochs]
    return {
        "params": {k: v.copy() for k, v in model.parameters().items()},
        "opt": opt.state_dict()["state"],
        "losses": losses,
    }


@pytest.mark.parametrize(("cell", "bptt"), [("lstm", None), ("gru", (4, 8)), ("rnn", None)])
def test_same_seed_bitwise_identical_across_runs(cell: str, bptt: Any) -> None:
    a = _fit_once(2, bptt, cell)
    b = _fit_once(2, bptt, cell)
    assert_bitwise(a, b, f"{cell} bptt={bptt} run 1 vs run 2")


@pytest.mark.parametrize(("cell", "bptt"), [("lstm", None), ("gru", (4, 8)), ("rnn", None)])
def test_same_seed_bitwise_identical_across_thread_counts(cell: str, bptt: Any) -> None:
    one = _fit_once(1, bptt, cell)
    two = _fit_once(2, bptt, cell)
    assert_bitwise(one, two, f"{cell} bptt={bptt} set_num_threads(1) vs (2)")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_bitwise_identical_across_thread_counts(dtype: Any) -> None:
    """Big enough that Eigen's GEMMs would split the work between threads if they could."""
    r = np.random.default_rng(2)
    T, B, I, H = 8, 128, 96, 128  # noqa: E741
    x = r.standard_normal((T, B, I)).astype(dtype)
    w = {
        "w_ih": (r.standard_normal((4 * H, I)) * 0.1).astype(dtype),
        "w_hh": (r.standard_normal((4 * H, H)) * 0.1).astype(dtype),
        "b_ih": None,
        "b_hh": None,
    }

    def run(threads: int) -> Any:
        rf.set_num_threads(threads)
        y, h, c, cache = F.lstm_forward(x, None, None, w["w_ih"], w["w_hh"], None, None)
        return y, h, c, F.lstm_backward(cache, y)

    assert_bitwise(run(1), run(2), "lstm kernels 1 vs 2 threads")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_does_not_depend_on_output_buffer_alignment(cell: str, dtype: Any) -> None:
    """The same backward on the same cache, repeated while the allocator's state shifts (so the
    output arrays land at different alignments), must give bitwise identical gradients."""
    g = GATES[cell]
    r = np.random.default_rng(0)
    T, B, I, H = 10, 8, 3, 12  # noqa: E741
    x = r.standard_normal((T, B, I)).astype(dtype)
    w = [r.standard_normal(s).astype(dtype) for s in ((g * H, I), (g * H, H), (g * H,), (g * H,))]
    fwd, back = getattr(F, f"{cell}_forward"), getattr(F, f"{cell}_backward")
    out = fwd(x, None, None, *w) if get_cell(cell).has_cell_state else fwd(x, None, *w)
    dy = r.standard_normal(out[0].shape).astype(dtype)
    first = back(out[-1], dy)
    keep = []
    for k in range(64):
        keep.append(np.empty(k % 7 + 1, np.uint8))  # shifts where the next arrays are allocated
        assert_bitwise(back(out[-1], dy), first, f"{cell} backward repeat {k}")


_FORK_SCRIPT = r"""
import os, sys, threading
import numpy as np
import rnnfast
from rnnfast import functional as F

rng = np.random.default_rng(0)
x = rng.standard_normal((64, 16, 64)).astype(np.float32)  # results above the pooled-block size
w = (rng.standard_normal((64, 64)) * 0.1).astype(np.float32)
want = F.rnn_forward(x, None, w, w, None, None, training=False)[0]
rnnfast.set_num_threads(2)  # the parent runs 2-thread kernels: GNU OpenMP's pool is started
F.rnn_forward(x, None, w, w, None, None, training=False)
stop = threading.Event()

def churn():  # keeps taking and returning pooled blocks while the main thread forks
    while not stop.is_set():
        F.rnn_forward(x, None, w, w, None, None, training=False)

threads = [threading.Thread(target=churn) for _ in range(2)]
for t in threads:
    t.start()
children = []
for _ in range(20):
    pid = os.fork()
    if pid == 0:  # the child must be able to run kernels and allocate (no lock left held)
        try:
            got = F.rnn_forward(x, None, w, w, None, None, training=False)[0]
            rnnfast.release_memory()
            ok = np.array_equal(got, want) and rnnfast.get_num_threads() == 1
            try:  # OpenMP threads cannot restart in a fork child: refused with a reason
                rnnfast.set_num_threads(2)
                ok = False
            except RuntimeError as exc:
                ok = ok and "spawn" in str(exc)
        except BaseException:
            ok = False
        os._exit(0 if ok else 3)
    children.append(pid)
stop.set()
for t in threads:
    t.join()
codes = [os.waitpid(pid, 0)[1] for pid in children]
print(codes)
sys.exit(0 if all(c == 0 for c in codes) else 1)
"""


def test_fork_while_other_threads_allocate() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _FORK_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"children failed: {proc.stdout} {proc.stderr}"


_FORK_FORCED_SCRIPT = r"""
import os, sys
import numpy as np
import rnnfast
from rnnfast import functional as F
from rnnfast._loader import core

rng = np.random.default_rng(0)
x = rng.standard_normal((20, 4, 64)).astype(np.float32)
w = (rng.standard_normal((256, 64)) * 0.1).astype(np.float32)
rnnfast.set_num_threads(2)
core._force_loop_threads(2)  # the testing hooks force 2-thread teams: the parent's pool starts
core._force_product_threads(2)
want = F.lstm_forward(x, None, None, w, w, None, None, training=False)[0]
pid = os.fork()
if pid == 0:  # the hooks are still set in the child: its kernels must run on one thread, not hang
    got = F.lstm_forward(x, None, None, w, w, None, None, training=False)[0]
    os._exit(0 if np.array_equal(got, want) else 3)
code = os.waitpid(pid, 0)[1]
sys.exit(0 if code == 0 else 1)
"""


def test_fork_child_ignores_forced_teams() -> None:
    # _force_loop_threads / _force_product_threads in a fork() child: a team would hang in GNU
    # OpenMP's dead pool, so the child runs one thread (bitwise the parent's 2-thread result).
    proc = subprocess.run(
        [sys.executable, "-c", _FORK_FORCED_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, f"child failed: {proc.stdout} {proc.stderr}"


# --------------------------------------------------------------------------------------------------
# one training-mode module used from two threads: detected, never a swapped gradient
# --------------------------------------------------------------------------------------------------


def _in_thread(fn: Callable[[], Any]) -> Any:
    """Run fn in a new thread (joined); return its result or the exception it raised."""
    out: list[Any] = [None]

    def run() -> None:
        try:
            out[0] = fn()
        except BaseException as exc:  # noqa: BLE001 - returned to the caller
            out[0] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join(timeout=120)
    assert not t.is_alive(), "the thread hung"
    return out[0]


def _training_models() -> dict[str, Any]:
    return {
        "rnn": rf.RNN(8, 16, seed=0),
        "lstm": rf.LSTM(8, 16, seed=0),
        "gru": rf.GRU(8, 16, seed=0),
        "linear": rf.Linear(8, 3, seed=0),
        "embedding": rf.Embedding(5, 8, seed=0),
        "seq": rf.build_model("gru", 8, 16, 3, mode="many_to_many", seed=0),
    }


def _fwd(name: str, m: Any) -> Any:
    x = np.arange(5 * 2).reshape(5, 2) % 5 if name == "embedding" else _data(1, T=5, B=2)
    out = m(x)
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru", "linear", "embedding", "seq"])
def test_training_forward_of_another_thread_pending_is_refused(name: str) -> None:
    """Thread A's training forward awaits its backward: a training forward or a backward from
    thread B raises RuntimeError (saying to use a copy per thread or eval mode) and leaves A's
    pending forward intact."""
    m = _training_models()[name]
    held = threading.Event()
    go = threading.Event()

    def thread_a() -> Any:
        out = _fwd(name, m)
        held.set()
        go.wait(60)
        m.backward(np.ones_like(out))
        return {k: v.copy() for k, v in m.grads.items()}

    a_result: list[Any] = [None]
    ta = threading.Thread(target=lambda: a_result.__setitem__(0, thread_a()))
    ta.start()
    try:
        assert held.wait(60)
        err = _in_thread(lambda: _fwd(name, m))
        assert isinstance(err, RuntimeError), f"training forward from B: {err!r}"
        assert "thread" in str(err) and "copy" in str(err) and "eval()" in str(err), str(err)
        err = _in_thread(lambda: m.backward(np.ones((5, 2, 16 if name in "rnn lstm gru" else 3))))
        assert isinstance(err, RuntimeError), f"backward from B: {err!r}"
    finally:
        go.set()
        ta.join(60)
    # A's backward used A's own forward: the gradients of a lone forward/backward
    fresh = _training_models()[name]
    out = _fwd(name, fresh)
    fresh.backward(np.ones_like(out))
    for k, v in fresh.grads.items():
        np.testing.assert_array_equal(a_result[0][k], v, err_msg=f"{name} {k}")


def test_pending_forward_of_a_finished_thread_does_not_block_others() -> None:
    m = rf.GRU(8, 16, seed=0)
    _in_thread(lambda: m(_data(1, T=5, B=2)))  # a forward never backpropagated, thread gone
    out, _ = m(_data(2, T=5, B=2))
    m.backward(np.ones_like(out))
    for k in range(2):  # alternating threads, each with a whole forward/backward, are fine
        res = _in_thread(lambda: m.backward(np.ones_like(m(_data(3, T=5, B=2))[0])))
        assert isinstance(res, np.ndarray), f"round {k}: {res!r}"


def test_concurrent_training_never_returns_another_threads_gradient() -> None:
    """4 threads train one module at once: each call either raises RuntimeError or returns the
    gradient of the thread's own input (dx is per call), never another thread's."""
    m = rf.LSTM(8, 64, seed=0)  # kernels long enough (GIL released) for the threads to interleave
    xs = [_data(20 + k, T=24, B=16) for k in range(N_THREADS)]
    ref = rf.LSTM(8, 64, seed=0)
    want = []
    for x in xs:
        y, _ = ref(x)
        want.append(ref.backward(np.ones_like(y)))
    counts = {"ok": 0, "refused": 0}
    lock = threading.Lock()

    def job(k: int) -> None:
        for _ in range(25):
            try:
                y, _ = m(xs[k])
                dx = m.backward(np.ones_like(y))
            except RuntimeError as exc:
                assert "another thread" in str(exc), str(exc)
                with lock:
                    counts["refused"] += 1
                continue
            assert_bitwise(dx, want[k], f"thread {k} dx")
            with lock:
                counts["ok"] += 1

    run_threads([lambda k=k: job(k) for k in range(N_THREADS)])
    assert counts["ok"] > 0, counts


def test_stream_of_one_module_is_refused_to_a_second_thread() -> None:
    """A TBPTT stream whose chunk awaits its backward in thread A: stream_forward or
    stream_backward from thread B raises RuntimeError; A's window is untouched."""
    m = rf.GRU(8, 16, seed=0)
    x = _data(4, T=4, B=2)
    m.stream_begin(2, 2, 4)
    y = m.stream_forward(x[:2])
    err = _in_thread(lambda: m.stream_forward(x[2:]))
    assert isinstance(err, RuntimeError) and "another thread" in str(err), repr(err)
    err = _in_thread(lambda: m.stream_backward(np.ones_like(y)))
    assert isinstance(err, RuntimeError) and "another thread" in str(err), repr(err)
    m.stream_backward(np.ones_like(y))
    fresh = rf.GRU(8, 16, seed=0)
    fresh.stream_begin(2, 2, 4)
    fresh.stream_backward(np.ones_like(fresh.stream_forward(x[:2])))
    assert_bitwise(m.grads, fresh.grads, "grads of thread A's chunk")


_BLAS_LATE_SCRIPT = r"""
import sys
import numpy as np
import rnnfast as rf
from threadpoolctl import threadpool_info

def blas_threads():
    return [(d["filepath"], d["num_threads"]) for d in threadpool_info() if d["user_api"] == "blas"]

seen = []

class Probe(rf.MSELoss):
    def __call__(self, *args, **kwargs):
        seen.append(blas_threads())
        return super().__call__(*args, **kwargs)

model = rf.build_model("gru", 3, 8, 1, mode="many_to_one", seed=0)
rng = np.random.default_rng(0)
x = rng.standard_normal((5, 16, 3)).astype(np.float32)
y = rng.standard_normal((16, 1)).astype(np.float32)
opt = rf.optim.Adam(model.parameters(), lr=1e-3)
rf.fit(model, (x, y), rf.MSELoss(), opt, epochs=1, batch_size=8, progress=False)  # limiter built
import scipy.linalg  # noqa: E402,F401 - loads SciPy's own OpenBLAS after the first fit
libs = {path for path, _ in blas_threads()}
rf.fit(model, (x, y), Probe(), opt, epochs=1, batch_size=8, progress=False)
ok = len(libs) >= 2 and all({p for p, _ in s} == libs and all(n == 1 for _, n in s) for s in seen)
print(libs, seen[:1])
sys.exit(0 if seen and ok else 1)
"""


def test_fit_limits_a_blas_loaded_after_its_first_call() -> None:
    """A BLAS library loaded after fit first ran (SciPy's own OpenBLAS) is held at one thread too:
    the limiter's view of the loaded libraries is rebuilt when modules were imported since."""
    pytest.importorskip("threadpoolctl")
    pytest.importorskip("scipy")
    proc = subprocess.run(
        [sys.executable, "-c", _BLAS_LATE_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"{proc.stdout} {proc.stderr}"


def test_fit_holds_numpy_blas_at_one_thread_and_restores_it() -> None:
    """Inside fit (and evaluate) NumPy's BLAS pool runs one thread, so its spinning threads never
    compete with the kernels' team (issue 12); the user's setting is back afterwards."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from rnnfast._threads import blas_limit_active

    def blas_threads() -> list[int]:
        return [
            d["num_threads"] for d in threadpoolctl.threadpool_info() if d["user_api"] == "blas"
        ]

    seen: list[tuple[bool, list[int]]] = []

    class Probe(rf.MSELoss):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            seen.append((blas_limit_active(), blas_threads()))
            return super().__call__(*args, **kwargs)

    before = blas_threads()
    model = rf.build_model("gru", 3, 8, 1, mode="many_to_one", seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 16, 3)).astype(np.float32)
    y = rng.standard_normal((16, 1)).astype(np.float32)
    opt = rf.optim.Adam(model.parameters(), lr=1e-3)
    rf.fit(model, (x, y), Probe(), opt, epochs=1, batch_size=8, progress=False)
    assert seen and all(active and all(n == 1 for n in nums) for active, nums in seen), seen
    assert not blas_limit_active()
    assert blas_threads() == before


def test_decoding_and_inference_loops_hold_numpy_blas_at_one_thread() -> None:
    """greedy / beam_search / train_seq2seq, generate / predict / forecast and captioning run their
    NumPy products (attention, heads) with the BLAS pool at one thread, as fit does: measured on
    2 vCPUs, Seq2Seq greedy decoding ran 2.4-3.8x slower beside OpenBLAS's pool. Restored after."""
    pytest.importorskip("threadpoolctl")
    from rnnfast import seq2seq
    from rnnfast._threads import blas_limit_active
    from rnnfast.tasks import caption

    seen: dict[str, bool] = {}
    rng = np.random.default_rng(0)

    class Spy:
        """Wraps a module's step / forward: records whether the limit is held when it runs."""

        def __init__(self, name: str, fn: Any) -> None:
            self.name, self.fn = name, fn

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            seen[self.name] = seen.get(self.name, True) and blas_limit_active()
            return self.fn(*args, **kwargs)

    m = seq2seq.Seq2Seq(9, 8, embedding_dim=4, hidden_size=6, cell="gru", seed=0)
    src = rng.integers(3, 9, size=(5, 2))
    m.decoder.step = Spy("greedy", m.decoder.step)  # type: ignore[method-assign]
    m.greedy(src, max_len=3)
    m.decoder.step = Spy("beam_search", m.decoder.step.fn)  # type: ignore[method-assign]
    m.beam_search(src, beam=2, max_len=3)
    sm = rf.build_model("gru", 3, 8, 3, mode="many_to_many", seed=0)
    x = rng.standard_normal((6, 4, 3)).astype(np.float32)
    sm.rnn.step = Spy("generate", sm.rnn.step)  # type: ignore[method-assign]
    sm.generate(x[0], 3)
    sm.forecast(x, 2)
    sm.rnn._forward = Spy("predict", sm.rnn._forward)  # type: ignore[method-assign]
    sm.predict(x)
    cm = rf.build_model("gru", caption._N_FEATURES + len(caption.CAPTION_VOCAB), 8,
                        len(caption.CAPTION_VOCAB), mode="many_to_many", seed=0)  # fmt: skip
    cm.rnn.step = Spy("caption", cm.rnn.step)  # type: ignore[method-assign]
    caption.caption_images(cm, rng.standard_normal((2, caption._N_FEATURES)))
    assert seen == dict.fromkeys(("greedy", "beam_search", "generate", "predict", "caption"), True)
    assert not blas_limit_active()


def test_sequence_model_calls_hold_blas_when_the_head_product_is_large() -> None:
    """forward / backward of a SequenceModel hold the limit when rows * H >= 2**16 (a user's own
    loop: the head's product is then large enough for OpenBLAS to wake its pool), not below."""
    pytest.importorskip("threadpoolctl")
    from rnnfast._threads import blas_limit_active

    seen: list[bool] = []
    model = rf.build_model("gru", 3, 64, 2, mode="many_to_many", seed=0)
    inner = model.head._forward

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(blas_limit_active())
        return inner(*args, **kwargs)

    model.head._forward = spy  # type: ignore[method-assign]
    rng = np.random.default_rng(0)
    big = rng.standard_normal((32, 32, 3)).astype(np.float32)  # 1024 rows * 64 = 2**16
    small = big[:4, :2]
    pred = model(big)
    model.backward(np.ones_like(pred))
    model(small)
    model.eval()
    model(big)
    assert seen == [True, False, True], seen
    assert not blas_limit_active()
