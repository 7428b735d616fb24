"""Numbers at the edges of the public API: NumPy scalars wherever a Python number is accepted, tiny
sampling temperatures (greedy, never NaN), and TBPTT streams sized by the data, not by k2."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import rnnfast.modules as M
import rnnfast.training as TR
from rnnfast import losses, optim
from rnnfast.tasks import charlm

__all__: list[str] = []


def _lm(seed: int = 0) -> M.SequenceModel:
    return M.build_model(
        "gru", 0, 8, 6, mode="many_to_many", vocab_size=6, embedding_dim=4, seed=seed
    )


def _fit_data(t_steps: int = 10, n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((t_steps, n, 2)), rng.standard_normal((t_steps, n, 1))


def _fit(**kw: Any) -> dict[str, np.ndarray]:
    x, y = _fit_data()
    model = M.build_model("lstm", 2, 4, 1, mode="many_to_many", seed=0, dtype=np.float64)
    TR.fit(
        model,
        (x, y),
        losses.MSELoss(),
        optim.SGD(model.parameters(), lr=0.5),
        epochs=2,
        batch_size=4,
        seed=0,
        progress=False,
        **kw,
    )
    return model.state_dict()


# --------------------------------------------------------------------------------------------------
# tiny temperatures
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1e-310, 5e-324, 1e-300, np.float32(1e-30)])
def test_tiny_temperature_samples_greedily(temperature: Any) -> None:
    """softmax(logits / T) for T -> 0 is the argmax: sampling at a subnormal temperature gives the
    greedy chain (logits / T overflows; the max is subtracted first, so no inf - inf = NaN)."""
    model = _lm()
    model.eval()
    x0 = np.array([0, 3, 5])
    greedy = model.generate(x0, 12, sample=False)
    tiny = model.generate(x0, 12, temperature=temperature, rng=np.random.default_rng(2))
    np.testing.assert_array_equal(tiny, greedy, err_msg=f"temperature={temperature!r}")
    assert len(set(greedy[:, 0].tolist())) > 1, "the greedy chain should not be constant"


def test_sample_text_tiny_temperature_is_greedy() -> None:
    vocab = charlm.Vocab("abcdef")
    model = _lm(seed=1)
    text = charlm.sample_text(model, vocab, prime="ab", length=10, temperature=1e-310)
    model.eval()
    model(vocab.encode("a")[:, None])
    greedy = model.generate(vocab.encode("b"), 10, sample=False, hx=model.last_hidden)
    assert text == "ab" + vocab.decode(greedy[:, 0])


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), True, "1.0", None])
def test_temperature_must_be_a_positive_number(bad: Any) -> None:
    model = _lm()
    with pytest.raises(ValueError, match="temperature"):
        model.generate(np.array([0]), 2, temperature=bad)
    with pytest.raises(ValueError, match="temperature"):
        charlm.sample_text(model, charlm.Vocab("abcdef"), prime="a", temperature=bad)


# --------------------------------------------------------------------------------------------------
# NumPy scalars are numbers
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw,plain",
    [
        ({"clip_norm": np.float32(0.05)}, {"clip_norm": float(np.float32(0.05))}),
        ({"clip_norm": np.float64(0.05)}, {"clip_norm": 0.05}),
        ({"clip_norm": np.int64(1)}, {"clip_norm": 1.0}),
        ({"clip_value": np.float32(0.01)}, {"clip_value": float(np.float32(0.01))}),
        ({"clip_value": np.int32(1)}, {"clip_value": 1}),
    ],
    ids=["norm-f32", "norm-f64", "norm-i64", "value-f32", "value-i32"],
)
def test_fit_accepts_numpy_scalars(kw: dict[str, Any], plain: dict[str, Any]) -> None:
    got, want = _fit(**kw), _fit(**plain)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=f"{k} with {kw}")


@pytest.mark.parametrize("name", ["clip_norm", "clip_value"])
@pytest.mark.parametrize("bad", [np.bool_(True), True, 0.0, np.float32(-1.0), np.nan, "1"])
def test_fit_refuses_non_positive_or_non_numbers(name: str, bad: Any) -> None:
    with pytest.raises(ValueError, match=name):
        _fit(**{name: bad})


def test_numpy_int_patience() -> None:
    assert TR.EarlyStopping(patience=np.int64(3)).patience == 3
    assert type(TR.EarlyStopping(patience=np.int32(0)).patience) is int
    with pytest.raises(ValueError, match="patience"):
        TR.EarlyStopping(patience=np.bool_(True))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# TBPTT streams sized by the data
# --------------------------------------------------------------------------------------------------


def test_fit_sizes_the_stream_by_min_k2_and_t(monkeypatch: pytest.MonkeyPatch) -> None:
    """bptt=(3, 20000) on 10-step batches: no window is longer than 10 steps, so the stream is made
    with k2 = 10 (buffers of 20 steps, not 40000), and training is exactly that of bptt=(3, 10)."""
    seen: list[tuple[int, int]] = []
    begin = M.RNNBase.stream_begin

    def spy(self: M.RNNBase, batch_size: int, k1: int, k2: int, *a: Any, **kw: Any) -> None:
        seen.append((k1, k2))
        begin(self, batch_size, k1, k2, *a, **kw)

    monkeypatch.setattr(M.RNNBase, "stream_begin", spy)
    huge = _fit(bptt=(3, 20000))
    assert seen and all(k2 <= 10 for _, k2 in seen), f"streams begun with (k1, k2) = {seen}"
    seen.clear()
    big_k1 = _fit(bptt=(50, 20000))  # one chunk of the whole batch: full BPTT
    assert seen and all(k1 <= 10 and k2 <= 10 for k1, k2 in seen), f"streams: {seen}"
    for k, v in _fit(bptt=(3, 10)).items():
        np.testing.assert_array_equal(huge[k], v, err_msg=f"{k}: bptt=(3, 20000) vs (3, 10)")
    for k, v in _fit(bptt=(10, 10)).items():
        np.testing.assert_array_equal(big_k1[k], v, err_msg=f"{k}: bptt=(50, 20000) vs (10, 10)")


def test_stateful_fit_sizes_the_stream_by_the_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stateful training carries one stream through an epoch (n_batches * T steps, restarted every
    epoch): k2 beyond that sizes nothing larger, with the same training."""
    seen: list[tuple[int, int]] = []
    begin = M.RNNBase.stream_begin

    def spy(self: M.RNNBase, batch_size: int, k1: int, k2: int, *a: Any, **kw: Any) -> None:
        seen.append((k1, k2))
        begin(self, batch_size, k1, k2, *a, **kw)

    monkeypatch.setattr(M.RNNBase, "stream_begin", spy)
    huge = _fit(bptt=(3, 20000), stateful=True)  # 8 sequences, batches of 4: 2 * 10 steps
    assert seen and all(k2 <= 20 for _, k2 in seen), f"streams begun with (k1, k2) = {seen}"
    for k, v in _fit(bptt=(3, 20), stateful=True).items():
        np.testing.assert_array_equal(huge[k], v, err_msg=f"{k}: bptt=(3, 20000) vs (3, 20)")
