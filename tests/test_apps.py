"""Tests of the applications of issue 16: image captioning (``caption``), next-word suggestion
(``suggest``) and machine translation with :class:`rnnfast.seq2seq.Seq2Seq` (``dates``).

Each task learns with a fixed seed at bounded sizes and beats its stated baseline; data are
recomputed independently where cheap. Tasks on data from an optional extra are skipped with the
reason when the extra is missing.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from rnnfast.tasks import get_task, list_tasks, run_task

__all__: list[str] = []

HAVE_SKLEARN = importlib.util.find_spec("sklearn") is not None
needs_sklearn = pytest.mark.skipif(
    not HAVE_SKLEARN, reason="scikit-learn (the rnnfast[data] extra) is not installed"
)


# --------------------------------------------------------------------------------------------------
# caption
# --------------------------------------------------------------------------------------------------


@needs_sklearn
def test_caption_data_match_the_digits() -> None:
    from sklearn.datasets import load_digits

    from rnnfast.tasks.caption import CAPTION_VOCAB

    task = get_task("caption")
    train, val = task.make_data(seed=0)
    digits = load_digits()
    assert train.n + val.n == len(digits.target)
    for split in (train, val):
        assert split.x.shape == (2, split.n, 64 + len(CAPTION_VOCAB))
        assert split.x.dtype == np.float32 and split.y.dtype == np.int64
        words = [[CAPTION_VOCAB[i] for i in col] for col in split.y.T]
        for w, d in zip(words, split.info["digits"]):
            names = "zero one two three four five six seven eight nine".split()
            assert w == [names[d], "odd" if d % 2 else "even"]
        # step 0 sees <bos>, step 1 the true first word (teacher forcing)
        assert np.all(split.x[0, :, 64] == 1.0)
        assert np.array_equal(split.x[1, :, 64:].argmax(axis=1), split.y[0])
        np.testing.assert_array_equal(split.x[0, :, :64], split.info["features"])
    assert task.make_data(seed=1)[1].info["digits"].tolist() != val.info["digits"].tolist()


@needs_sklearn
def test_caption_learns_beyond_the_majority_baseline() -> None:
    from rnnfast.tasks.caption import caption_images

    res = run_task("caption", epochs=6)
    final = res.final
    assert final["baseline_majority_accuracy"] < 0.35
    assert final["val_accuracy"] > 0.9, final
    assert final["val_caption_accuracy"] > 0.85, final
    caps = caption_images(res.model, res.val.info["features"][:5])
    assert caps.shape == (2, 5) and caps.dtype == np.int64


def test_caption_without_sklearn_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from rnnfast.tasks import caption

    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"rnnfast\[data\]"):
        caption.load_digit_images()


def test_new_tasks_are_registered() -> None:
    for name in ("caption", "suggest", "dates", "digits", "sunspots", "co2"):
        assert name in list_tasks()
        assert get_task(name).name == name


# --------------------------------------------------------------------------------------------------
# Seq2Seq, attention, dates
# --------------------------------------------------------------------------------------------------


def _fd_grad(f, arr: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central finite differences of the scalar f() w.r.t. every entry of ``arr`` (in place)."""
    out = np.zeros_like(arr)
    for i in np.ndindex(arr.shape):
        old = arr[i]
        arr[i] = old + eps
        up = f()
        arr[i] = old - eps
        down = f()
        arr[i] = old
        out[i] = (up - down) / (2 * eps)
    return out


def _assert_close(name: str, got: np.ndarray, want: np.ndarray, rtol: float) -> None:
    err = np.abs(got - want)
    rel = float(err.max() / max(float(np.abs(want).max()), 1e-12))
    where = np.unravel_index(int(err.argmax()), err.shape)
    assert rel < rtol, f"{name}: max relative error {rel:.2e} at {where} (tolerance {rtol:.0e})"


@pytest.mark.parametrize("score", ["dot", "general"])
def test_attention_backward_matches_finite_differences_float64(score: str) -> None:
    from rnnfast.seq2seq import Attention

    rng = np.random.default_rng(0)
    att = Attention(5, score, dtype=np.float64, seed=1)
    dec = rng.standard_normal((3, 2, 5))
    enc = rng.standard_normal((4, 2, 5))
    lens = np.array([4, 2])  # the second source is padded: its last two steps get no weight
    g = rng.standard_normal((3, 2, 5))

    def loss() -> float:
        att.eval()
        value = float((att(dec, enc, lens) * g).sum())
        att.train()
        return value

    att.zero_grad()
    att(dec, enc, lens)
    w = att.last_weights
    assert w is not None and np.allclose(w.sum(axis=2), 1.0) and np.all(w[:, 1, 2:] == 0.0)
    d_dec, d_enc = att.backward(g)
    _assert_close("dL/ddec", d_dec, _fd_grad(loss, dec), 1e-7)
    _assert_close("dL/denc", d_enc, _fd_grad(loss, enc), 1e-7)
    assert np.all(d_enc[2:, 1] == 0.0)
    for name, p in att.parameters().items():
        _assert_close(f"dL/d{name}", att.grads[name], _fd_grad(loss, p), 1e-7)


@pytest.mark.parametrize(
    "cell,attention",
    [("gru", None), ("lstm", "general"), ("rnn", "dot"), ("lstm_peephole", "dot")],
)
def test_seq2seq_gradients_match_finite_differences_float64(cell: str, attention) -> None:
    from rnnfast.seq2seq import Seq2Seq

    rng = np.random.default_rng(1)
    m = Seq2Seq(
        7,
        6,
        embedding_dim=3,
        hidden_size=4,
        cell=cell,
        attention=attention,
        dtype=np.float64,
        seed=2,
    )
    src = rng.integers(0, 7, (5, 3))
    lens = np.array([5, 3, 4])
    tgt_in = rng.integers(1, 6, (4, 3))
    g = rng.standard_normal((4, 3, 6))

    def loss() -> float:
        m.eval()
        value = float((m(src, tgt_in, lens) * g).sum())
        m.train()
        return value

    m.zero_grad()
    m(src, tgt_in, lens)
    m.backward(g)
    grads = m.grads
    for name, p in m.parameters().items():
        _assert_close(f"dL/d{name}", grads[name], _fd_grad(loss, p), 1e-5)


def test_seq2seq_decoding_and_checkpoint_round_trip(tmp_path) -> None:
    import rnnfast.io as rio
    from rnnfast.seq2seq import Seq2Seq

    rng = np.random.default_rng(3)
    m = Seq2Seq(9, 8, embedding_dim=4, hidden_size=6, cell="lstm", attention="general", seed=4)
    src = rng.integers(1, 9, (6, 5))
    lens = np.array([6, 2, 5, 3, 1])
    greedy, weights = m.greedy(src, lens, max_len=7, return_attention=True)
    assert greedy.shape[1] == 5 and greedy.shape[0] <= 7 and greedy.dtype == np.int64
    assert weights.shape == (greedy.shape[0], 5, 6)
    assert np.all(weights[:, 1, 2:] == 0.0) and np.allclose(weights.sum(axis=2), 1.0)
    # beam 1 is greedy decoding; a wider beam never finds a less probable hypothesis
    np.testing.assert_array_equal(m.beam_search(src, lens, beam=1, max_len=7), greedy)
    assert m.beam_search(src, lens, beam=4, max_len=7).shape[1] == 5
    path = tmp_path / "s2s.npz"
    rio.save(path, m, meta={"task": "test"})
    m2 = rio.load(path).build_model()
    assert isinstance(m2, Seq2Seq) and m2.config() == m.config()
    np.testing.assert_array_equal(m2.greedy(src, lens, max_len=7), greedy)
    with pytest.raises(ValueError, match="missing keys"):
        m2.load_state_dict({})


def test_dates_data_are_consistent() -> None:
    import datetime as dt

    from rnnfast.tasks.dates import FORMATS, SRC_VOCAB, date_text, decode_iso

    task = get_task("dates")
    train, val = task.make_data(seed=0, n_train=300, n_val=100)
    assert train.y.shape == (11, 300) and val.x.shape[1] == 100
    for split in (train, val):
        for j in range(split.n):
            text = "".join(SRC_VOCAB[i] for i in split.x[: split.lengths[j], j])
            assert text == split.info["texts"][j]
            assert decode_iso(split.y[:, j]) == split.info["iso"][j]
            assert np.all(split.x[split.lengths[j] :, j] == 0)
    d = dt.date(1998, 3, 3)
    texts = {name: date_text(d, i) for i, (name, _) in enumerate(FORMATS)}
    assert texts["en: the third of march, nineteen ninety-eight"] == (
        "the third of march, nineteen ninety-eight"
    )
    assert texts["de: dienstag, 3. märz 1998"] == "dienstag, 3. märz 1998"
    assert date_text(dt.date(2021, 11, 30), 4) == "the thirtieth of november, twenty twenty-one"
    assert date_text(dt.date(2007, 1, 22), 4) == (
        "the twenty-second of january, two thousand and seven"
    )
    base = task.baseline(val, train)
    assert base["majority_accuracy"] < 0.05 and base["per_position_majority_char_accuracy"] < 0.6


@pytest.mark.slow
def test_dates_seq2seq_learns_beyond_the_baselines() -> None:
    res = run_task("dates", n_train=2000, n_val=300, epochs=4)
    final = res.final
    assert final["val_char_accuracy"] > 0.85, final
    assert final["val_accuracy"] > 0.3, final
    assert final["val_beam_accuracy"] >= final["val_accuracy"] - 0.02, final
    assert final["baseline_majority_accuracy"] < 0.05


# --------------------------------------------------------------------------------------------------
# digits (sequential rows)
# --------------------------------------------------------------------------------------------------


@needs_sklearn
def test_digits_rows_are_the_images_and_the_rnn_beats_the_linear_baseline() -> None:
    from sklearn.datasets import load_digits

    task = get_task("digits")
    train, val = task.make_data(seed=0)
    assert train.x.shape == (8, train.n, 8) and val.y.dtype == np.int64
    images = load_digits().images / 16.0
    j = 5
    match = [i for i in range(len(images)) if np.allclose(images[i], train.x[:, j, :])]
    assert match and load_digits().target[match[0]] == train.y[j]
    res = run_task("digits", epochs=8)
    final = res.final
    assert final["baseline_majority_accuracy"] < 0.15
    assert final["val_accuracy"] > 0.9, final


# --------------------------------------------------------------------------------------------------
# suggest
# --------------------------------------------------------------------------------------------------

SMALL_SUGGEST = {"vocab_size": 300, "n_train": 400, "seq_len": 16}


def test_suggest_data_and_bigram_baseline_recomputed() -> None:
    from collections import Counter

    from rnnfast.tasks.suggest import UNK, load_corpus

    task = get_task("suggest")
    train, val = task.make_data(seed=0, **SMALL_SUGGEST)
    vocab = train.info["vocab"]
    assert vocab[0] == UNK and len(vocab) == 300
    words = load_corpus()
    cut = len(train.info["ids"])
    counts = Counter(words[:cut])
    assert vocab[1:] == sorted(counts, key=lambda w: (-counts[w], w))[:299]
    np.testing.assert_array_equal(train.y[:-1], train.x[1:])  # y is x shifted by one word
    base = task.baseline(val, train)
    # the bigram top-5 by brute force on a few positions
    ids = train.info["ids"]
    follow: dict[int, Counter] = {}
    for a, b in zip(ids[:-1], ids[1:]):
        follow.setdefault(int(a), Counter())[int(b)] += 1
    uni = Counter(ids.tolist())
    hits = total = 0
    for t in range(val.x.shape[0]):
        for j in range(val.x.shape[1]):
            if val.y[t, j] == 0:
                continue
            c = follow.get(int(val.x[t, j]), Counter())
            ranked = sorted(
                (w for w in set(c) | set(uni) if w != 0), key=lambda w: (-c[w], -uni[w])
            )
            hits += int(val.y[t, j]) in ranked[:5]
            total += 1
    assert abs(base["bigram_top5_accuracy"] - hits / total) < 0.01
    assert base["unigram_top5_accuracy"] < base["bigram_top5_accuracy"]


def test_suggest_learns_and_the_cli_suggests(tmp_path, capsys) -> None:
    from rnnfast.cli import main

    path = tmp_path / "suggest.npz"
    rc = main(
        [
            "train",
            "--task",
            "suggest",
            "--epochs",
            "1",
            "--hidden",
            "32",
            "--n-train",
            "200",
            "--no-progress",
            "--save",
            str(path),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "validation top-5 accuracy" in out
    rc = main(["suggest", str(path), "raise an exception if the", "--k", "3"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    probs = [float(line.split("\t")[1]) for line in lines]
    assert probs == sorted(probs, reverse=True) and all(0 < p < 1 for p in probs)
    assert all(line.split("\t")[0] != "<unk>" for line in lines)
    assert main(["suggest", str(path), "!!!"]) == 2
    assert "expected at least one word" in capsys.readouterr().err


def test_suggest_model_beats_the_unigram_baseline() -> None:
    res = run_task(
        "suggest",
        cell="lstm",
        hidden=64,
        embedding_dim=32,
        lr=0.005,
        epochs=4,
        n_train=1000,
        vocab_size=300,
    )
    final = res.final
    assert final["val_top5_accuracy"] > final["baseline_unigram_top5_accuracy"] + 0.03, final
    assert final["val_top1_accuracy"] > 0.08, final


# --------------------------------------------------------------------------------------------------
# sunspots, co2 (statsmodels)
# --------------------------------------------------------------------------------------------------

HAVE_STATSMODELS = importlib.util.find_spec("statsmodels") is not None
needs_statsmodels = pytest.mark.skipif(
    not HAVE_STATSMODELS, reason="statsmodels (the rnnfast[data] extra) is not installed"
)


@needs_statsmodels
@pytest.mark.parametrize("name,period,n_values", [("sunspots", 11, 309), ("co2", 12, 526)])
def test_forecast_windows_and_baselines_recomputed(name: str, period: int, n_values: int) -> None:
    from rnnfast.tasks.forecast import load_co2_monthly, load_sunspots

    s = load_sunspots() if name == "sunspots" else load_co2_monthly()
    assert s.shape == (n_values,) and np.all(np.isfinite(s))
    task = get_task(name)
    seq_len = 20 if name == "sunspots" else 24
    train, val = task.make_data(seed=0, seq_len=seq_len, val_fraction=0.2)
    cut = int(n_values * 0.8)
    scale = np.std(np.diff(s[:cut]))
    assert train.n + val.n == n_values - seq_len
    # the last validation window: the last seq_len values before the final one, relative to the
    # last input value
    want_x = (s[-seq_len - 1 : -1] - s[-2]) / scale
    np.testing.assert_allclose(val.x[:, -1, 0], want_x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(val.y[-1, 0], (s[-1] - s[-2]) / scale, rtol=1e-5)
    targets = np.arange(cut, n_values)
    pers = np.mean(((s[targets] - s[targets - 1]) / scale) ** 2)
    seas = np.mean(((s[targets] - s[targets - period]) / scale) ** 2)
    base = task.baseline(val, train)
    assert base["persistence_mse"] == pytest.approx(pers, rel=1e-5)
    assert base["seasonal_naive_mse"] == pytest.approx(seas, rel=1e-5)


@needs_statsmodels
@pytest.mark.parametrize("name", ["sunspots", "co2"])
def test_forecast_rnn_beats_persistence_and_seasonal_naive(name: str) -> None:
    res = run_task(name)
    final = res.final
    best = min(final["baseline_persistence_mse"], final["baseline_seasonal_naive_mse"])
    assert final["val_mse"] < 0.5 * best, final
    assert final["val_rmse"] > 0


def test_forecast_without_statsmodels_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from rnnfast.tasks import forecast

    monkeypatch.setitem(sys.modules, "statsmodels", None)
    monkeypatch.setitem(sys.modules, "statsmodels.datasets", None)
    with pytest.raises(ImportError, match=r"rnnfast\[data\]"):
        forecast.load_sunspots()


def test_dates_trains_from_the_cli_and_saves_a_seq2seq(tmp_path, capsys) -> None:
    from rnnfast.cli import main
    from rnnfast.io import load
    from rnnfast.seq2seq import Seq2Seq

    path = tmp_path / "dates.npz"
    rc = main(
        ["train", "--task", "dates", "--n-train", "64", "--epochs", "1", "--hidden", "16"]
        + ["--no-progress", "--save", str(path)]
    )
    assert rc == 0
    assert "validation sequence accuracy" in capsys.readouterr().out
    ckpt = load(path)
    assert ckpt.meta["task"] == "dates" and ckpt.meta["vocab"][0] == "<pad>"
    assert isinstance(ckpt.build_model(), Seq2Seq)


def test_plot_attention_writes_an_image(tmp_path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib (rnnfast[plot]) is not installed")
    from rnnfast.seq2seq import plot_attention

    w = np.full((3, 4), 0.25)
    path = tmp_path / "att.png"
    plot_attention(w, list("ab c"), ["1", "2", "<eos>"], str(path), title="t")
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="expected shape"):
        plot_attention(w, list("abc"), ["1"], str(path))
