"""Tests of rnnfast.tasks: data generators (shapes, determinism, labels recomputed independently,
balance), baselines recomputed from their formulas, the registry, and a short learning run (the
sentiment toy reaches 100% validation accuracy)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from rnnfast.tasks import get_task, list_tasks
from rnnfast.tasks.adding import make_adding
from rnnfast.tasks.charlm import DEFAULT_TEXT, Vocab, load_text
from rnnfast.tasks.sentiment import LARGE_VOCAB, TOY_VOCAB
from rnnfast.tasks.speech import BANDS, CLASSES, N_FFT, SAMPLE_RATE, log_spectrogram

__all__: list[str] = []

SMALL = {
    "sine": {"n_train": 64, "n_val": 32, "seq_len": 12},
    "sentiment": {},
    "sentiment-large": {"n_train": 300, "n_val": 200},
    "adding": {"n_train": 64, "n_val": 32, "seq_len": 30},
    "charlm": {"n_train": 40, "seq_len": 16},
    "speech": {"n_train": 50, "n_val": 25},
}


def _equal_splits(a, b) -> bool:
    return all(
        np.array_equal(x, y) if x is not None else y is None
        for x, y in ((a.x, b.x), (a.y, b.y), (a.lengths, b.lengths))
    )


def test_registry_lists_every_task_and_rejects_unknown_names() -> None:
    assert list_tasks()[:6] == [
        "sine",
        "sentiment",
        "sentiment-large",
        "adding",
        "charlm",
        "speech",
    ]
    for name in list_tasks():
        task = get_task(name)
        assert task.name == name
        for key in (
            "cell",
            "hidden",
            "layers",
            "seq_len",
            "batch_size",
            "epochs",
            "lr",
            "optimizer",
            "clip_norm",
            "bptt",
            "mode",
            "loss",
        ):
            assert key in task.default_config, f"{name}: default_config lacks {key!r}"
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        get_task("nope")
    with pytest.raises(ValueError, match="not_an_option"):
        get_task("sine").config(not_an_option=3)


@pytest.mark.parametrize("name", list(SMALL))
def test_make_data_is_deterministic_in_the_seed(name: str) -> None:
    task = get_task(name)
    a = task.make_data(seed=3, **SMALL[name])
    b = task.make_data(seed=3, **SMALL[name])
    c = task.make_data(seed=4, **SMALL[name])
    assert _equal_splits(a[0], b[0]) and _equal_splits(a[1], b[1])
    assert not _equal_splits(a[0], c[0]), f"{name}: seeds 3 and 4 gave the same training data"


@pytest.mark.parametrize("name", list(SMALL))
def test_shapes_and_dtypes_match_the_model_sizes(name: str) -> None:
    task = get_task(name)
    train, val = task.make_data(seed=0, **SMALL[name])
    sizes = task.sizes(train)
    for split in (train, val):
        t_steps, n = split.x.shape[:2]
        if "vocab_size" in sizes:
            assert split.x.dtype == np.int64 and split.x.ndim == 2
            assert split.x.min() >= 0 and split.x.max() < sizes["vocab_size"]
        else:
            assert split.x.dtype == np.float32 and split.x.shape[2] == sizes["input_size"]
        if task.mode == "many_to_many":
            assert split.y.shape[:2] == (t_steps, n)
        else:
            assert split.y.shape[0] == n
        if task.kind == "multiclass":
            assert split.y.dtype == np.int64 and split.y.max() < sizes["output_size"]
        if split.lengths is not None:
            assert split.lengths.shape == (n,)
            assert split.lengths.min() >= 1 and split.lengths.max() == t_steps


def test_bad_options_raise_errors_naming_them() -> None:
    with pytest.raises(ValueError, match="seq_len"):
        get_task("adding").make_data(seed=0, seq_len=1)
    with pytest.raises(TypeError, match="seed"):
        get_task("adding").make_data(seed=1.5)
    with pytest.raises(ValueError, match="seed"):
        get_task("sine").make_data(seed=-1)
    with pytest.raises(ValueError, match="mode"):
        get_task("sine").make_data(seed=0, mode="one_to_one")
    with pytest.raises(ValueError, match="text_path"):
        get_task("charlm").make_data(seed=0, text_path="/nonexistent/file.txt")


# --- adding ------------------------------------------------------------------------------------


def test_adding_targets_are_the_sum_of_the_two_marked_values() -> None:
    x, y = make_adding(200, 40, np.random.default_rng(1))
    assert x.shape == (40, 200, 2) and y.shape == (200, 1)
    for b in range(200):
        marks = np.nonzero(x[:, b, 1])[0]
        assert len(marks) == 2, f"sequence {b}: {len(marks)} markers"
        assert marks[0] < 20 <= marks[1], f"sequence {b}: markers at {marks}, expected one per half"
        expected = float(x[marks[0], b, 0]) + float(x[marks[1], b, 0])
        assert abs(float(y[b, 0]) - expected) < 1e-6
    assert np.all((x[:, :, 0] >= 0) & (x[:, :, 0] < 1))


def test_adding_baseline_is_the_constant_one_mse_near_one_sixth() -> None:
    task = get_task("adding")
    _, val = task.make_data(seed=0, seq_len=20, n_train=10, n_val=20000)
    base = task.baseline(val)
    direct = float(np.mean((val.y.astype(np.float64) - 1.0) ** 2))
    assert abs(base["constant_mse"] - direct) < 1e-12
    # Var(U + U) = 1/6; with 20000 samples the standard error is about 0.001
    assert abs(base["constant_mse"] - 1.0 / 6.0) < 0.006, base
    assert base["theoretical_mse"] == pytest.approx(1.0 / 6.0)


# --- sine --------------------------------------------------------------------------------------


def test_sine_targets_are_the_next_values_and_persistence_baseline_formula() -> None:
    task = get_task("sine")
    one, one_val = task.make_data(seed=2, seq_len=15, n_train=50, n_val=40, mode="many_to_one")
    many, many_val = task.make_data(seed=2, seq_len=15, n_train=50, n_val=40, mode="many_to_many")
    assert np.array_equal(one.x, many.x), "the two modes must see the same series for one seed"
    assert np.array_equal(many.y[:-1], many.x[1:]), "many-to-many target must be the next input"
    assert np.array_equal(one.y, many.y[-1]), (
        "many-to-one target must be the value after the window"
    )
    x, y = one_val.x.astype(np.float64), one_val.y.astype(np.float64)
    expected = float(np.mean((y[:, 0] - x[-1, :, 0]) ** 2))
    assert task.baseline(one_val)["persistence_mse"] == pytest.approx(expected, rel=1e-12)
    xm, ym = many_val.x.astype(np.float64), many_val.y.astype(np.float64)
    assert task.baseline(many_val)["persistence_mse"] == pytest.approx(
        float(np.mean((ym - xm) ** 2))
    )
    # the series is smooth at this sampling: persistence beats predicting the mean by a wide margin
    base = task.baseline(one_val)
    assert base["persistence_mse"] < 0.5 * base["mean_mse"], base


# --- sentiment ---------------------------------------------------------------------------------


def test_sentiment_toy_labels_balance_and_padding() -> None:
    task = get_task("sentiment")
    train, val = task.make_data(seed=0)
    assert train.x.shape[2] == len(TOY_VOCAB) == 3
    seen = set()
    labels = []
    for split in (train, val):
        for b in range(split.n):
            n = int(split.lengths[b])
            assert 2 <= n <= 6
            assert np.all(split.x[n:, b] == 0), "one-hot rows past the length must be zero"
            onehot = split.x[:n, b]
            assert np.all(onehot.sum(axis=1) == 1), "each valid step must be one-hot"
            words = [TOY_VOCAB[i] for i in np.argmax(onehot, axis=1)]
            cats, rats = words.count("cat"), words.count("rat")
            assert cats != rats
            assert float(split.y[b, 0]) == float(cats > rats), f"{words}: label {split.y[b, 0]}"
            seen.add(tuple(words))
            labels.append(cats > rats)
    # every sentence of 2..6 words without a cat/rat tie, each once: count them by brute force
    expected = sum(
        1
        for n in range(2, 7)
        for k in range(3**n)
        if (lambda w: w.count(0) != w.count(2))([(k // 3**i) % 3 for i in range(n)])
    )
    assert len(seen) == train.n + val.n == expected
    assert np.mean(labels) == 0.5


def _large_label(words: list[str]) -> int | None:
    """Independent re-implementation of the sentiment-large rule (see the module docstring)."""
    pos = {
        "good",
        "great",
        "excellent",
        "wonderful",
        "brilliant",
        "enjoyable",
        "fun",
        "superb",
        "charming",
        "moving",
    }
    neg = {
        "bad",
        "awful",
        "terrible",
        "boring",
        "dull",
        "poor",
        "weak",
        "painful",
        "bland",
        "tedious",
    }
    separators = {"and", "honestly", "overall", "so", "well", "also"}
    score, weight, negated = 0, 1, False
    for w in words:
        if w == "but":
            weight, negated = 2, False
        elif w in separators:
            weight, negated = 1, False
        elif w in ("not", "never"):
            negated = True
        elif w in pos or w in neg:
            s = 1 if w in pos else -1
            score += weight * (-s if negated else s)
            negated = False
    return None if score == 0 else int(score > 0)


def test_sentiment_large_labels_follow_negation_and_but_rules() -> None:
    task = get_task("sentiment-large")
    train, val = task.make_data(seed=5, n_train=400, n_val=400)
    for split in (train, val):
        for b in range(split.n):
            n = int(split.lengths[b])
            assert np.all(split.x[n:, b] == 0) and np.all(split.x[:n, b] > 0)
            words = [LARGE_VOCAB[i] for i in split.x[:n, b]]
            assert _large_label(words) == int(split.y[b, 0]), " ".join(words)
    assert 0.4 < float(train.y.mean()) < 0.6


def test_sentiment_large_order_matters_for_a_bag_of_words_baseline() -> None:
    task = get_task("sentiment-large")
    train, val = task.make_data(seed=0, n_train=3000, n_val=1000)
    base = task.baseline(val, train)
    assert base["bow_linear_accuracy"] < 0.7, base
    assert base["negation_blind_accuracy"] < 0.7, base


# --- charlm ------------------------------------------------------------------------------------


def test_charlm_windows_are_shifted_text_and_baselines_match_formulas() -> None:
    text = load_text()
    assert DEFAULT_TEXT.is_file() and 3000 < len(text) < 20000
    task = get_task("charlm")
    train, val = task.make_data(seed=1, seq_len=20, n_train=30)
    vocab = Vocab(train.info["vocab"])
    assert set(vocab.chars) == set(text)
    cut = int(len(text) * 0.9)
    for b in range(train.n):
        s = vocab.decode(train.x[:, b]) + vocab.decode(train.y[-1:, b])
        assert s in text[:cut], "training window must be a substring of the training text"
        assert np.array_equal(train.y[:-1, b], train.x[1:, b])
    for b in range(val.n):
        assert vocab.decode(val.x[:, b]) in text[cut:]
    base = task.baseline(val, train)
    assert base["uniform_nats"] == pytest.approx(math.log(len(vocab)))
    counts = Counter(text[:cut])
    total = sum(counts.values()) + len(vocab)  # add-one smoothing over the vocabulary
    targets = vocab.decode(val.y.T.reshape(-1))
    unigram = -np.mean([math.log((counts[c] + 1) / total) for c in targets])
    assert base["unigram_nats"] == pytest.approx(unigram, rel=1e-10)
    assert base["bigram_nats"] < base["unigram_nats"] < base["uniform_nats"]


def test_charlm_vocab_round_trip_and_errors() -> None:
    v = Vocab.from_text("hello world")
    assert v.decode(v.encode("low hello")) == "low hello"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        v.encode("xyz")


# --- speech ------------------------------------------------------------------------------------


def test_log_spectrogram_puts_a_pure_tone_in_its_band() -> None:
    t = np.arange(3200) / SAMPLE_RATE
    for freq in (500.0, 1000.0, 2500.0):
        spec = log_spectrogram(np.sin(2 * np.pi * freq * t)[None, :])
        assert spec.shape == (24, 1, BANDS)
        band = int(freq / (SAMPLE_RATE / N_FFT)) // ((N_FFT // 2) // BANDS)
        peaks = np.argmax(spec[:, 0, :], axis=1)
        assert np.all(peaks == band), f"{freq} Hz: peak bands {peaks}, expected {band}"


def test_speech_classes_are_balanced_and_chirps_move_in_opposite_directions() -> None:
    task = get_task("speech")
    train, val = task.make_data(seed=0, n_train=250, n_val=50)
    assert train.x.shape == (24, 250, BANDS)
    assert np.all(np.bincount(train.y, minlength=len(CLASSES)) == 50)
    assert np.abs(train.x.mean(axis=(0, 1))).max() < 1e-4
    assert np.abs(train.x.std(axis=(0, 1)) - 1).max() < 1e-3
    # the loudest band should rise over time for chirp_up and fall for chirp_down (most examples)
    frames = np.arange(24)
    slopes = {}
    for c in (CLASSES.index("chirp_up"), CLASSES.index("chirp_down")):
        s = []
        for b in np.nonzero(train.y == c)[0]:
            peak = np.argmax(train.x[:, b, :], axis=1)
            loud = train.x[:, b, :].max(axis=1) > np.median(train.x[:, b, :].max(axis=1))
            s.append(np.polyfit(frames[loud], peak[loud], 1)[0])
        slopes[CLASSES[c]] = np.array(s)
    assert np.mean(slopes["chirp_up"] > 0) > 0.8, slopes["chirp_up"]
    assert np.mean(slopes["chirp_down"] < 0) > 0.8, slopes["chirp_down"]


def test_speech_order_blind_baseline_is_well_below_perfect() -> None:
    task = get_task("speech")
    train, val = task.make_data(seed=0, n_train=600, n_val=300)
    base = task.baseline(val, train)
    assert base["majority_accuracy"] == pytest.approx(0.2)
    assert 0.3 < base["order_blind_accuracy"] < 0.8, base


# --- learning runs (compiled core + training loop) ---------------------------------------------


def test_sentiment_toy_reaches_full_validation_accuracy() -> None:
    from rnnfast.tasks import run_task

    result = run_task("sentiment", seed=0)
    assert result.final["val_accuracy"] == 1.0, result.final
    assert result.final["baseline_majority_accuracy"] <= 0.55
