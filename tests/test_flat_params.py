"""Parameters and gradients of every module live in one flat buffer each (one view per tensor)."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import numpy as np
import pytest

import rnnfast as rf
from rnnfast.optim import _flat_view


def _tiles(arrays: dict[str, np.ndarray], flat: np.ndarray) -> bool:
    v = _flat_view(list(arrays.values()))
    return v is not None and v.size == flat.size and np.shares_memory(v, flat)


def _models() -> list[Any]:
    return [
        rf.LSTM(3, 5, num_layers=2, bidirectional=True, seed=0),
        rf.Linear(4, 2, seed=0),
        rf.Embedding(7, 3, seed=0),
        rf.build_model("gru", 3, 6, 4, mode="many_to_one", seed=0),
        rf.build_model("lstm", 4, 6, 10, mode="many_to_many", vocab_size=10, seed=0),
    ]


@pytest.mark.parametrize("i", range(5))
def test_views_of_one_buffer_with_torch_names(i: int) -> None:
    m = _models()[i]
    params, grads = m.parameters(), m.grads
    assert list(params) == list(grads) == list(m.state_dict())
    assert _tiles(params, m.flat_parameters) and _tiles(grads, m.flat_grads)
    for k, v in params.items():
        assert grads[k].shape == v.shape and v.dtype == m.flat_parameters.dtype
    m.flat_grads[...] = 1.0
    assert all(np.all(g == 1.0) for g in m.grads.values())
    m.zero_grad()
    assert not m.flat_grads.any()


def test_load_state_dict_copies_into_the_views() -> None:
    m = rf.build_model("lstm", 3, 6, 4, mode="many_to_many", seed=0)
    before = {k: v for k, v in m.parameters().items()}
    other = rf.build_model("lstm", 3, 6, 4, mode="many_to_many", seed=1)
    m.load_state_dict(other.state_dict())
    for k, v in m.parameters().items():
        assert v is before[k]  # never rebound
        np.testing.assert_array_equal(v, other.parameters()[k])
    np.testing.assert_array_equal(m.flat_parameters, other.flat_parameters)


def test_sequence_model_parts_share_its_buffer() -> None:
    m = rf.build_model("gru", 3, 6, 4, mode="many_to_many", seed=0)
    assert np.shares_memory(m.rnn.flat_parameters, m.flat_parameters)
    assert np.shares_memory(m.head.flat_grads, m.flat_grads)
    opt = rf.optim.SGD(m.parameters(), lr=0.1)
    assert opt._flat is not None and opt._flat.size == m.flat_parameters.size


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_remake_the_views_and_keep_the_optimizer_linked(how: str) -> None:
    m = rf.build_model("lstm", 3, 6, 4, mode="many_to_many", seed=0)
    opt = rf.optim.Adam(m.parameters(), lr=1e-2)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)

    def train(model: Any, o: Any) -> None:
        for _ in range(3):
            y = model(x)
            model.backward(np.ones_like(y))
            o.step(model.flat_grads)
            model.zero_grad()

    train(m, opt)
    m2, o2 = copy.deepcopy((m, opt)) if how == "deepcopy" else pickle.loads(pickle.dumps((m, opt)))
    assert _tiles(m2.parameters(), m2.flat_parameters) and _tiles(m2.grads, m2.flat_grads)
    assert not np.shares_memory(m2.flat_parameters, m.flat_parameters)
    assert o2._flat is not None and np.shares_memory(o2._flat, m2.flat_parameters)
    train(m, opt)
    train(m2, o2)
    np.testing.assert_array_equal(m2.flat_parameters, m.flat_parameters)
    r = copy.deepcopy(m.rnn)  # a part alone
    assert _tiles(r.parameters(), r.flat_parameters)


def test_an_optimizer_over_moved_arrays_fails_loudly() -> None:
    """Parts joined into a SequenceModel move into its buffer; their old arrays turn read-only."""
    rnn, head = rf.GRU(3, 4, seed=0), rf.Linear(4, 2, seed=0)
    stale = rf.optim.SGD(rnn.parameters(), lr=0.1)
    rf.SequenceModel(rnn, head)
    with pytest.raises(ValueError, match="read-only"):
        stale.step(rnn.grads)
    other = rf.optim.SGD(dict(list(head.parameters().items())[:1]), lr=0.1)  # one array: per array
    rf.SequenceModel(rf.GRU(3, 4), head)  # the head moves again: its old views turn read-only
    with pytest.raises(ValueError, match="read-only"):
        other.step({"weight": head.grads["weight"]})
