"""module.freeze(): inference snapshots with the weights packed once (rnnfast.nn.frozen.FrozenRNN).

* forward is bitwise the module's eval-mode forward at the same precision, for every recurrent
  stack, both precisions, the stream (B <= 2) and wide (B > 2) bf16 modes, several layers, both
  directions, ragged lengths, given states and batch_first;
* step agrees with forward step by step (to float32 rounding: the input product sums in another
  order) and, in bf16, with the float64 bf16 oracle (rnnfast.reference.bf16) on a rounded state;
* the snapshot does not follow later changes of the module; bad arguments raise errors that name
  them; calls from several threads agree bitwise.
"""

from __future__ import annotations

import os
import pickle
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import rnnfast as rf
from helpers import cpu_of_other_threads
from rnnfast import nn
from rnnfast._precision import Bf16PathWarning, precision
from rnnfast.reference import bf16 as RB
from rnnfast.testing import assert_close

STACKS = [
    nn.RNN,
    nn.LSTM,
    nn.GRU,
    nn.rnn.PeepholeLSTM,
    nn.rnn.ResetBeforeGRU,
    nn.layernorm.LayerNormLSTM,
    nn.layernorm.LayerNormGRU,
]
IDS = [c.__name__ for c in STACKS]


@pytest.fixture(autouse=True)
def _quiet_notice() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Bf16PathWarning)
        yield


def _states(s: Any) -> tuple[np.ndarray, ...]:
    return s if isinstance(s, tuple) else (s,)


def _hx(m: Any, batch: int, rng: np.random.Generator) -> Any:
    shape = (m.num_layers * m.num_directions, batch, m.hidden_size)
    h = (0.5 * rng.standard_normal(shape)).astype(m.dtype)
    if m._spec.has_cell_state:
        return h, (0.5 * rng.standard_normal(shape)).astype(m.dtype)
    return h


def _same(got: tuple[Any, Any], want: tuple[Any, Any], what: str) -> None:
    assert got[0].dtype == want[0].dtype, what
    assert np.array_equal(got[0], want[0]), f"{what}: out differs"
    gs, ws = _states(got[1]), _states(want[1])
    assert len(gs) == len(ws), what
    for k, (a, b) in enumerate(zip(gs, ws)):
        assert np.array_equal(a, b), f"{what}: state {k} differs"


@pytest.mark.parametrize("cls", STACKS, ids=IDS)
@pytest.mark.parametrize("prec", ["fp32", "bf16"])
@pytest.mark.parametrize("batch", [1, 2, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_forward_is_bitwise_the_module(
    cls: Any, prec: str, batch: int, bidirectional: bool
) -> None:
    rng = np.random.default_rng(batch)
    m = cls(13, 19, num_layers=2, bidirectional=bidirectional, seed=3).eval()
    f = m.freeze(precision=prec)
    assert f.precision == prec
    x = rng.standard_normal((6, batch, 13)).astype(np.float32)
    lengths = np.array([6, 2, 4][:batch], dtype=np.int64)
    hx = _hx(m, batch, rng)
    for kw in ({}, {"lengths": lengths}, {"hx": hx}, {"hx": hx, "lengths": lengths}):
        with precision(prec):
            want = m(x, **kw)
        _same(f(x, **kw), want, f"{cls.__name__} {prec} B={batch} {sorted(kw)}")


@pytest.mark.parametrize("prec", ["fp32", "bf16"])
def test_batch_first_and_training_mode_module(prec: str) -> None:
    """freeze() of a module in training mode runs as the module in eval mode (no dropout)."""
    rng = np.random.default_rng(0)
    m = nn.GRU(5, 16, num_layers=3, dropout=0.5, batch_first=True, seed=1)
    assert m.training
    f = m.freeze(prec)
    x = rng.standard_normal((2, 7, 5)).astype(np.float32)  # (B, T, I)
    m.eval()
    with precision(prec):
        want = m(x)
    got = f(x)
    assert got[0].shape == (2, 7, 16)
    _same(got, want, "batch_first")


def test_float64_module_freezes_in_fp32_bitwise() -> None:
    rng = np.random.default_rng(1)
    m = nn.LSTM(6, 10, num_layers=2, dtype=np.float64, seed=2).eval()
    f = m.freeze()
    assert f.precision == "fp32" and f.dtype == np.float64
    x = rng.standard_normal((5, 3, 6))
    _same(f(x), m(x), "float64")
    with pytest.raises(ValueError, match="precision.*float32"):
        m.freeze("bf16")


@pytest.mark.parametrize("cls", STACKS, ids=IDS)
@pytest.mark.parametrize("prec", ["fp32", "bf16"])
@pytest.mark.parametrize("batch", [1, 4])
def test_step_follows_forward(cls: Any, prec: str, batch: int) -> None:
    rng = np.random.default_rng(7)
    m = cls(9, 33, num_layers=2, seed=5).eval()  # H = 33: a partial SIMD vector at the end
    f = m.freeze(prec)
    x = rng.standard_normal((8, batch, 9)).astype(np.float32)
    hx = _hx(m, batch, rng)
    with precision(prec):
        y, s_want = m(x, hx)
    state, ys = hx, []
    for t in range(8):
        yt, state = f.step(x[t], state)
        ys.append(yt)
    assert_close(np.stack(ys), y, 1e-5, "out")
    for a, b in zip(_states(state), _states(s_want)):
        assert_close(a, b, 1e-5, "state")
    # zero state (None) as the first state
    y0, _ = f.step(x[0])
    with precision(prec):
        want0, _ = m(x[:1])
    assert_close(y0, want0[0], 1e-5, "step from None")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_bf16_step_matches_the_bf16_oracle(cell: str) -> None:
    """One step from a state that is bf16 already: the float64 oracle on the rounded operands
    (rnnfast.reference.bf16), which no float32 computation of the unrounded operands meets."""
    rng = np.random.default_rng(11)
    m = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell](24, 40, seed=4).eval()
    f = m.freeze("bf16")
    x = rng.standard_normal((3, 24)).astype(np.float32)
    h0 = RB.round_bf16(0.5 * rng.standard_normal((3, 40))).astype(np.float32)
    c0 = (0.5 * rng.standard_normal((3, 40))).astype(np.float32)
    state = (h0[None], c0[None]) if cell == "lstm" else h0[None]
    y, s = f.step(x, state)
    w = m.state_dict()
    oy, oh, oc, _ = RB.sequence_forward_bf16(
        cell,
        x[None],
        h0,
        c0 if cell == "lstm" else None,
        w["weight_ih_l0"],
        w["weight_hh_l0"],
        w["bias_ih_l0"],
        w["bias_hh_l0"],
    )
    assert_close(y, oy[0], 2e-6, "y")
    if cell == "lstm":
        assert_close(s[1][0], oc, 2e-6, "c")
    y32, _ = m.freeze("fp32").step(x, state)
    assert np.max(np.abs(y32 - oy[0])) > 1e-4, "fp32 meets the bf16 oracle: no test"


def test_snapshot_does_not_follow_the_module() -> None:
    rng = np.random.default_rng(2)
    m = nn.LSTM(4, 8, seed=0).eval()
    x = rng.standard_normal((5, 2, 4)).astype(np.float32)
    f = m.freeze()
    before = f(x)[0].copy()
    p = m.parameters()  # the live arrays: optimizers update them in place
    p["weight_hh_l0"][...] *= 0.5
    p["bias_ih_l0"][...] += 1.0
    assert np.array_equal(f(x)[0], before)
    assert not np.array_equal(m(x)[0], before)
    assert np.array_equal(m.freeze()(x)[0], m(x)[0])


def test_precision_default_is_the_module_then_the_thread() -> None:
    m = nn.GRU(4, 8, seed=0)
    assert m.freeze().precision == "fp32"
    with precision("bf16"):
        assert m.freeze().precision == "bf16"
    m.precision = "bf16"
    assert m.freeze().precision == "bf16"
    assert m.freeze("fp32").precision == "fp32"


def test_nbytes_counts_what_is_held() -> None:
    """fp32: W_ih twice (the GEMM's and the step's packed copy), W_hh packed, two biases;
    bf16: the GEMM's W_ih in float32 (bf16 values), packed W_hh and W_ih as bf16. H and I are
    multiples of 16, so no SIMD width pads a packed vector."""
    I, H, G = 32, 48, 4  # noqa: E741
    m = nn.LSTM(I, H, seed=0)
    f32, b16 = m.freeze("fp32"), m.freeze("bf16")
    assert f32.nbytes == 4 * (G * H * I + G * H * H + G * H * I + 2 * G * H)
    assert b16.nbytes == 4 * G * H * I + 2 * (G * H * H + G * H * I) + 4 * 2 * G * H


def test_calls_from_threads_agree() -> None:
    rng = np.random.default_rng(3)
    m = nn.LSTM(16, 64, num_layers=2, seed=1).eval()
    f = m.freeze("bf16")
    x = rng.standard_normal((20, 2, 16)).astype(np.float32)
    want = f(x)
    want_step = f.step(x[0])
    errors: list[str] = []

    def work() -> None:
        for _ in range(20):
            got = f(x)
            if not np.array_equal(got[0], want[0]):
                errors.append("forward")
            if not np.array_equal(f.step(x[0])[0], want_step[0]):
                errors.append("step")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_bad_arguments() -> None:
    m = nn.LSTM(4, 8, seed=0)
    for bad in ("fp16", "BF16", 1, b"bf16", ["bf16"]):
        with pytest.raises((TypeError, ValueError), match="precision"):
            m.freeze(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="proj_size"):
        nn.LSTM(4, 8, proj_size=3).freeze()
    with pytest.raises(TypeError, match="module"):
        nn.frozen.FrozenRNN(object())
    f = m.freeze()
    with pytest.raises(ValueError, match="x"):
        f(np.zeros((3, 2, 5), np.float32))
    with pytest.raises(ValueError, match="x"):
        f(np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="x_t"):
        f.step(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="lengths"):
        f(np.zeros((3, 2, 4), np.float32), lengths=np.array([4, 1]))
    with pytest.raises(ValueError, match=r"hx\[0\]"):
        f(np.zeros((3, 2, 4), np.float32), hx=(np.zeros((1, 3, 8)), np.zeros((1, 2, 8))))
    with pytest.raises(TypeError, match="hx"):
        f(np.zeros((3, 2, 4), np.float32), hx=np.zeros((1, 2, 8)))
    with pytest.raises(ValueError, match="bidirectional"):
        nn.GRU(4, 8, bidirectional=True).freeze().step(np.zeros((1, 4), np.float32))
    with pytest.raises(TypeError, match="pickle"):
        pickle.dumps(f)
    assert "precision='fp32'" in repr(f)


def test_freeze_is_exported_for_every_stack() -> None:
    for cls in STACKS:
        assert callable(getattr(cls, "freeze", None)), cls.__name__
    assert rf.nn.FrozenRNN is nn.frozen.FrozenRNN


def test_core_refuses_bad_stacks() -> None:
    """The compiled entry point checks what the wrapper would never pass (every array's shape and
    dtype, the layer count, the cell and the precision) with errors that name the argument."""
    from rnnfast._loader import core

    m = nn.LSTM(4, 8, num_layers=2, seed=0)
    layers = [tuple(m._weights(layer, 0)) for layer in range(2)]

    def make(**kw: Any) -> Any:
        a = {
            "cell": "lstm",
            "nonlinearity": "tanh",
            "dtype": "float32",
            "precision": "fp32",
            "input_size": 4,
            "hidden_size": 8,
            "num_directions": 1,
            "layers": layers,
        }
        a.update(kw)
        return core.frozen_stack(**a)

    make()  # the arguments themselves are valid
    bad_w = (np.zeros((32, 5), np.float32), *layers[0][1:])
    cases = [
        ({"cell": "nope"}, ValueError, "cell"),
        ({"nonlinearity": "sigmoid"}, ValueError, "nonlinearity"),
        ({"precision": "fp16"}, ValueError, "precision"),
        ({"dtype": "float64", "precision": "bf16"}, ValueError, "precision"),
        ({"dtype": "float64"}, TypeError, "w_ih"),
        ({"num_directions": 3}, ValueError, "num_directions"),
        ({"num_directions": 2, "layers": layers[:1]}, ValueError, "layers"),
        ({"layers": []}, ValueError, "layers"),
        ({"layers": [list(layers[0])]}, TypeError, r"layers\[0\]"),
        ({"layers": [layers[0][:3]]}, ValueError, "layers"),
        ({"layers": [bad_w]}, ValueError, "w_ih"),
        ({"layers": [(*layers[0][:2], None, layers[0][3])]}, ValueError, "b_ih"),
        ({"hidden_size": 0}, ValueError, "hidden_size"),
    ]
    for kw, exc, match in cases:
        with pytest.raises(exc, match=match):
            make(**kw)
    st = make()
    x = np.zeros((3, 2, 4), np.float32)
    with pytest.raises(IndexError, match="index"):
        st.forward(2, x, None, None, None)
    with pytest.raises(TypeError, match="x"):
        st.forward(0, [[1.0]], None, None, None)
    with pytest.raises(ValueError, match="h0"):
        st.forward(0, x, np.zeros((2, 9), np.float32), None, None)
    with pytest.raises(ValueError, match="lengths"):
        st.forward(0, x, None, None, np.array([9, 1], np.int64))
    with pytest.raises(ValueError, match="h0"):
        st.step(np.zeros((2, 4), np.float32), np.zeros((1, 2, 8), np.float32), None)


def test_generate_of_a_bf16_model_runs_the_frozen_step() -> None:
    """SequenceModel.generate with a bf16 rnn steps on one bf16 pack (FrozenRNN.step): the same
    tokens as a greedy loop over rnn.freeze('bf16').step; an fp32 rnn keeps rnn.step."""
    rng = np.random.default_rng(5)
    for prec in ("bf16", None):
        model = rf.build_model("lstm", 6, 32, 6, mode="one_to_many", seed=2)
        model.rnn.precision = prec
        x0 = rng.standard_normal((3, 6)).astype(np.float32)
        got = model.generate(x0, 7)  # feedback="value": (7, 3, 6)
        step = model.rnn.freeze("bf16").step if prec == "bf16" else model.rnn.step
        head = model.head.parameters()
        cur, state, want = x0, None, []
        for _ in range(7):
            h, state = step(cur, state)
            cur = h @ head["weight"].T + head["bias"]
            want.append(cur)
        assert np.array_equal(got, np.stack(want)), prec


@pytest.fixture()
def _hooks() -> Iterator[None]:
    from rnnfast._loader import core

    before = rf.get_num_threads()
    yield
    core._force_product_threads(0)
    rf.set_num_threads(before)


@pytest.mark.usefixtures("_hooks")
@pytest.mark.parametrize("cls", STACKS, ids=IDS)
@pytest.mark.parametrize("prec", ["fp32", "bf16"])
def test_step_split_over_a_team_is_bitwise_one_thread(cls: Any, prec: str) -> None:
    """A large step runs over a team (by unit blocks, products then cells, no barrier): forced to
    2 threads it gives the bits of 1 thread, from a given and from a zero state, B 1 and 3, for the
    frozen step and the module's own (two-phase and row-wide cells stay on one thread)."""
    from rnnfast._loader import core

    rng = np.random.default_rng(9)
    m = cls(20, 45, num_layers=2, seed=6).eval()  # 6 unit blocks of 8 (AVX2), the last partial
    m.precision = prec if prec == "bf16" else None
    f = m.freeze(prec)
    rf.set_num_threads(2)
    for batch in (1, 3):
        x = rng.standard_normal((batch, 20)).astype(np.float32)
        hx = _hx(m, batch, rng)
        runs = []
        for n in (1, 2):
            core._force_product_threads(n)
            runs.append([f.step(x), f.step(x, hx), m.step(x), m.step(x, hx)])
        for k, ((y1, s1), (y2, s2)) in enumerate(zip(*runs)):
            what = f"{'frozen' if k < 2 else 'module'} step, B={batch}"
            assert np.array_equal(y1, y2), what
            for a, b in zip(_states(s1), _states(s2)):
                assert np.array_equal(a, b), what


@pytest.mark.usefixtures("_hooks")
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc per-thread clocks")
@pytest.mark.parametrize("which", ["frozen", "module"])
def test_forced_step_team_runs_a_second_thread(which: str) -> None:
    from rnnfast._loader import core

    if not core.openmp:
        pytest.skip("built without OpenMP: one thread only")
    m = nn.LSTM(256, 256, seed=0).eval()
    f = m.freeze() if which == "frozen" else m
    x = np.ones((1, 256), np.float32)
    rf.set_num_threads(2)

    def work() -> None:
        s = None
        for _ in range(300):
            _, s = f.step(x, s)

    core._force_product_threads(1)
    work()
    main1, other1 = cpu_of_other_threads(work)
    core._force_product_threads(2)
    work()
    main2, other2 = cpu_of_other_threads(work)
    assert other1 < 0.1 * main1 + 0.01, f"1 thread: another thread used {other1:.3f} s"
    assert other2 > 0.2 * main2, f"forced to 2: the busiest other thread used {other2:.3f} s"


def test_decode_step_freezes_a_bf16_stack_for_the_call() -> None:
    from rnnfast.nn import backend
    from rnnfast.nn.frozen import decode_step

    m = nn.GRU(4, 8, seed=0)
    assert decode_step(m) == m.step  # fp32 (None): the module's own step
    m.precision = "fp32"
    assert decode_step(m) == m.step
    m.precision = "bf16"
    step = decode_step(m)
    assert isinstance(step.__self__, nn.FrozenRNN) and step.__self__.precision == "bf16"
    x = np.ones((2, 4), np.float32)
    assert_close(step(x)[0], m.step(x)[0], 1e-5, "frozen bf16 step vs the module's bf16 step")
    from rnnfast import reference

    backend.set_backend(reference)
    try:
        assert decode_step(m) == m.step  # a test backend: no compiled stack
    finally:
        backend.set_backend(None)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_seq2seq_decoding_of_a_bf16_decoder(cell: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """greedy and beam_search with a bf16 decoder step on one frozen bf16 pack: the same ids as the
    decoder's own (per-step converting) bf16 step."""
    from rnnfast import seq2seq
    from rnnfast.seq2seq import Seq2Seq

    m = Seq2Seq(9, 8, embedding_dim=4, hidden_size=16, cell=cell, attention="general", seed=4)
    m.decoder.precision = "bf16"
    src = np.array([[3, 4, 5], [6, 7, 3], [2, 0, 0]], dtype=np.int64)  # (S, B)
    lens = np.array([3, 2, 2])
    got = (m.greedy(src, lens, max_len=6), m.beam_search(src, lens, beam=3, max_len=6))
    monkeypatch.setattr(seq2seq, "decode_step", lambda rnn: rnn.step)
    want = (m.greedy(src, lens, max_len=6), m.beam_search(src, lens, beam=3, max_len=6))
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_seq2seq_decoding_computes_the_attention_keys_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """greedy / beam_search pass the attention keys of the source (W_a h_s), computed once per call,
    to every step: bitwise the ids and weights of recomputing them in every step."""
    from rnnfast import seq2seq
    from rnnfast.seq2seq import Attention, Seq2Seq

    m = Seq2Seq(9, 8, embedding_dim=4, hidden_size=16, cell="lstm", attention="general", seed=5)
    src = np.array([[3, 4, 5], [6, 7, 3], [2, 0, 0]], dtype=np.int64)
    lens = np.array([3, 2, 2])
    calls = {"keys": 0}
    keys_fn = Attention.keys

    def counting(self: Attention, enc: Any) -> Any:
        calls["keys"] += 1
        return keys_fn(self, enc)

    monkeypatch.setattr(Attention, "keys", counting)
    ids, att = m.greedy(src, lens, max_len=6, return_attention=True)
    beam = m.beam_search(src, lens, beam=3, max_len=6)
    assert calls["keys"] == 2  # once per decoding call
    forward = Attention.forward
    monkeypatch.setattr(
        Attention,
        "forward",
        lambda self, d, e, lengths=None, keys=None: forward(self, d, e, lengths),
    )
    ids2, att2 = m.greedy(src, lens, max_len=6, return_attention=True)
    assert np.array_equal(ids, ids2) and np.array_equal(att, att2)
    assert np.array_equal(beam, m.beam_search(src, lens, beam=3, max_len=6))
    assert calls["keys"] > 2  # the per-step path did recompute them
    monkeypatch.undo()
    a = seq2seq.Attention(16, seed=0)
    with pytest.raises(ValueError, match="keys"):
        a.forward(np.zeros((1, 2, 16), np.float32), np.zeros((3, 2, 16), np.float32), None,
                  np.zeros((2, 4, 16), np.float32))  # fmt: skip
