"""Streaming inference: RNNBase.step and SequenceModel.step against forward, argument handling."""

from __future__ import annotations

import copy
import pickle
import threading
from typing import Any

import numpy as np
import pytest

import rnnfast as rf
from rnnfast import modules as M
from rnnfast import reference

CLASSES = {"rnn": rf.RNN, "lstm": rf.LSTM, "gru": rf.GRU}
TOL = {np.float64: 1e-12, np.float32: 2e-5}


def _close(a: np.ndarray, e: np.ndarray, tol: float, what: str) -> None:
    err = np.abs(np.asarray(a, np.float64) - np.asarray(e, np.float64))
    assert err.max() <= tol * (1 + np.abs(e).max()), f"{what}: max error {err.max():.3g}"


def _states(st: Any) -> tuple[np.ndarray, ...]:
    return st if isinstance(st, tuple) else (st,)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    ("cell", "kw"),
    [
        ("rnn", {}),
        ("rnn", {"nonlinearity": "relu"}),
        ("lstm", {}),
        ("gru", {}),
        ("lstm", {"bias": False}),
        ("gru", {"bias": False}),
    ],
)
@pytest.mark.parametrize("batch", [1, 3])
def test_step_equals_forward(cell: str, kw: dict[str, Any], dtype: Any, batch: int) -> None:
    m = CLASSES[cell](4, 7, num_layers=3, dtype=dtype, seed=0, **kw).eval()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, batch, 4)).astype(dtype)
    n = 3
    h0 = rng.standard_normal((n, batch, 7)).astype(dtype)
    hx: Any = (h0, rng.standard_normal((n, batch, 7)).astype(dtype)) if cell == "lstm" else h0
    for start in (None, hx):
        out, h_n = m(x, start)
        state = start
        for t in range(6):
            o, state = m.step(x[t], state)
            assert o.dtype == dtype and o.shape == (batch, 7)
            _close(o, out[t], TOL[dtype], f"step {t}")
        for a, e in zip(_states(state), _states(h_n)):
            _close(a, e, TOL[dtype], "final state")


def test_step_converts_what_is_not_ready() -> None:
    m = rf.LSTM(3, 5, num_layers=2, seed=0)  # float32; train mode does not matter for step
    x64 = np.random.default_rng(0).standard_normal((2, 3))
    o1, (h1, c1) = m.step(x64)  # float64 input converted
    o2, (h2, c2) = m.step(np.asfortranarray(x64.astype(np.float32)))
    np.testing.assert_array_equal(o1, o2)
    state = [h1.astype(np.float64), c1]  # a list, another dtype
    o3, _ = m.step(x64, state)
    o4, _ = m.step(x64.astype(np.float32), (h1, c1))
    np.testing.assert_array_equal(o3, o4)
    assert o1 is not h1[-1] and not np.shares_memory(o1, h1)  # new arrays each call
    with pytest.raises(ValueError, match=r"x_t: expected shape \(B, 3\)"):
        m.step(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="hx"):
        m.step(x64, (h1[:1], c1[:1]))
    with pytest.raises(TypeError, match="hx"):
        m.step(x64, h1)
    with pytest.raises(ValueError, match="bidirectional"):
        rf.GRU(3, 5, bidirectional=True).step(x64)


def test_step_sees_loaded_weights_and_the_reference_backend() -> None:
    a, b = rf.GRU(3, 5, seed=0).eval(), rf.GRU(3, 5, seed=1).eval()
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    a.step(x)  # makes the plan
    a.load_state_dict(b.state_dict())  # copied into the same arrays: the plan sees it
    np.testing.assert_array_equal(a.step(x)[0], b.step(x)[0])
    M.set_backend(reference)
    try:
        _close(a.step(x)[0], b.step(x)[0], 2e-5, "reference backend")
    finally:
        M.set_backend(None)


def test_step_threads_and_copies() -> None:
    m = rf.build_model("lstm", 3, 8, 4, mode="many_to_many", seed=0).eval()
    x = np.random.default_rng(0).standard_normal((1, 3)).astype(np.float32)
    ref = m.rnn.step(x)[0]
    out: list[np.ndarray] = []

    def run() -> None:
        for _ in range(50):
            o, _ = m.rnn.step(x)
        out.append(o)

    ts = [threading.Thread(target=run) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(out) == 4 and all(np.array_equal(o, ref) for o in out)
    for c in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        np.testing.assert_array_equal(c.rnn.step(x)[0], ref)


@pytest.mark.parametrize("vocab", [None, 11])
def test_sequence_model_step_applies_the_head(vocab: int | None) -> None:
    kw: dict[str, Any] = {"vocab_size": vocab} if vocab else {}
    m = rf.build_model("gru", 3, 6, 11, mode="many_to_many", dtype=np.float64, seed=0, **kw)
    m.eval()
    rng = np.random.default_rng(2)
    x = rng.integers(0, 11, (5, 2)) if vocab else rng.standard_normal((5, 2, 3))
    pred = m(x)
    state = None
    for t in range(5):
        p, state = m.step(x[t], state)
        _close(p, pred[t], 1e-12, f"step {t}")
    _close(state, m.last_hidden, 1e-12, "state")
    m.train()  # nothing is stored for backward by step
    m.step(x[0])
    with pytest.raises(ValueError):
        m.backward(np.ones((2, 11)))
