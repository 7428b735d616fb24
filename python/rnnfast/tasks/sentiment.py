"""``sentiment`` and ``sentiment-large``: many-to-one binary classification of word sequences.

``sentiment`` (the classic toy): sentences of 2-6 words over the vocabulary {cat, mat, rat}, fed as
one-hot vectors (T, N, 3) with ragged ``lengths``; the label is 1 when the sentence has more "cat"s
than "rat"s ("mat" is neutral; ties are left out). Every such sentence is enumerated (868 of them,
exactly balanced since swapping cat and rat flips the label), then split at random into train and
val.
One logit out, sigmoid + binary cross-entropy. An RNN reaches 100% validation accuracy.

``sentiment-large``: generated movie-review-like sentences (token ids (T, N) into a 52-word
vocabulary
with padding id 0) built from clauses such as "the plot was not very good". Each sentiment word has
polarity +1/-1; "not"/"never" right before it (optionally with "very"/"really"/"quite" in between)
flips it, and a clause after "but" counts double. Label = sign of the sum (ties left out). Word
order matters:
"not good ... bad" and "good ... not bad" have the same bag of words and opposite labels, so a
linear
bag-of-words classifier (reported as ``bow_linear_accuracy``) stays well below what an RNN reaches.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from ._base import (
    Split,
    Task,
    check_fraction,
    check_positive_int,
    check_seed,
    random_split,
    task_config,
)
from ._text import pad_ids

__all__ = ["LARGE_VOCAB", "SentimentLargeTask", "SentimentTask", "TOY_VOCAB", "toy_sentences"]

TOY_VOCAB: tuple[str, ...] = ("cat", "mat", "rat")

_POSITIVE = (
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
)
_NEGATIVE = (
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
)
_NEGATORS = ("not", "never")
_INTENSIFIERS = ("very", "really", "quite")
_SUBJECTS = (
    "the movie",
    "the film",
    "the plot",
    "the acting",
    "the story",
    "the cast",
    "the music",
    "the ending",
    "the script",
    "this sequel",
    "the dialogue",
    "it",
)
_VERBS = ("was", "is", "felt", "seemed", "looked")
_FILLERS = ("and", "honestly", "overall", "so", "well", "also")

#: id 0 is padding; ids 1.. are the words, in a fixed order.
LARGE_VOCAB: tuple[str, ...] = (
    "<pad>",
    "but",
    *_NEGATORS,
    *_INTENSIFIERS,
    *_POSITIVE,
    *_NEGATIVE,
    *_VERBS,
    *_FILLERS,
    *sorted({w for s in _SUBJECTS for w in s.split()}),
)


def toy_sentences(min_len: int = 2, max_len: int = 6) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """Every sentence over {cat, mat, rat} of length min_len..max_len with #cat != #rat, and labels.

    Returns (sentences as tuples of word ids 0/1/2, labels (n,) int: 1 iff #cat > #rat).
    """
    sents: list[tuple[int, ...]] = []
    labels: list[int] = []
    for length in range(min_len, max_len + 1):
        for s in itertools.product(range(3), repeat=length):
            n_cat, n_rat = s.count(0), s.count(2)
            if n_cat != n_rat:
                sents.append(s)
                labels.append(int(n_cat > n_rat))
    return sents, np.asarray(labels)


def _one_hot_padded(sents: list[tuple[int, ...]], vocab: int) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(s) for s in sents], dtype=np.int64)
    t_steps = int(lengths.max())
    ids = np.full((t_steps, len(sents)), -1, dtype=np.int64)
    for j, s in enumerate(sents):
        ids[: len(s), j] = s
    x = (ids[:, :, None] == np.arange(vocab)[None, None, :]).astype(np.float32)
    return x, lengths


class SentimentTask(Task):
    """The {cat, mat, rat} toy; see the module docstring."""

    name = "sentiment"
    needs = ("lengths",)  # ragged sentences
    description = "toy NLP: one-hot {cat, mat, rat} sentences, label = more cats than rats (BCE)"
    mode = "many_to_one"
    kind = "binary"
    data_options = ("val_fraction",)
    default_config: dict[str, Any] = task_config(
        cell="rnn",
        hidden=16,
        seq_len=6,
        batch_size=16,
        epochs=5,
        lr=0.01,
        mode="many_to_one",
        loss="bce",
        val_fraction=0.3,
    )

    def make_data(
        self, seed: int = 0, *, val_fraction: float = 0.3, **_: Any
    ) -> tuple[Split, Split]:
        """(train, val): x (6, N, 3) one-hot float32 (zeros past ``lengths``), y (N, 1) float32 0/1,
        lengths (N,) int64 in 2..6. ``seq_len`` is fixed at 6 for this task."""
        seed = check_seed(seed)
        check_fraction("val_fraction", val_fraction)
        sents, labels = toy_sentences()
        x, lengths = _one_hot_padded(sents, len(TOY_VOCAB))
        out = []
        for idx in random_split(len(sents), val_fraction, seed):
            out.append(
                Split(
                    np.ascontiguousarray(x[:, idx]),
                    labels[idx, None].astype(np.float32),
                    lengths[idx],
                    info={"vocab": list(TOY_VOCAB)},
                )
            )
        return out[0], out[1]

    def sizes(self, train: Split) -> dict[str, Any]:
        return {"input_size": len(TOY_VOCAB), "output_size": 1}

    def baseline(self, val: Split, train: Split | None = None) -> dict[str, float]:
        p = float(np.mean(val.y))
        return {"majority_accuracy": max(p, 1.0 - p)}


def _clause(rng: np.random.Generator) -> tuple[list[str], int]:
    """One clause and its signed polarity, e.g. (["the", "plot", "was", "not", "good"], -1)."""
    words = list(_SUBJECTS[rng.integers(len(_SUBJECTS))].split())
    words.append(_VERBS[rng.integers(len(_VERBS))])
    negated = rng.random() < 0.4
    if negated:
        words.append(_NEGATORS[rng.integers(len(_NEGATORS))])
    if rng.random() < 0.35:
        words.append(_INTENSIFIERS[rng.integers(len(_INTENSIFIERS))])
    positive = rng.random() < 0.5
    pool = _POSITIVE if positive else _NEGATIVE
    words.append(pool[rng.integers(len(pool))])
    polarity = 1 if positive else -1
    return words, -polarity if negated else polarity


def _large_sentences(n: int, rng: np.random.Generator) -> tuple[list[list[str]], np.ndarray]:
    sents: list[list[str]] = []
    labels: list[int] = []
    while len(sents) < n:
        n_clauses = int(rng.integers(1, 4))
        words: list[str] = []
        score = 0
        for c in range(n_clauses):
            clause, pol = _clause(rng)
            weight = 1
            if c > 0:
                if rng.random() < 0.5:
                    words.append("but")
                    weight = 2
                else:
                    words.append(_FILLERS[rng.integers(len(_FILLERS))])
            words.extend(clause)
            score += weight * pol
        if score == 0:
            continue
        sents.append(words)
        labels.append(int(score > 0))
    return sents, np.asarray(labels)


class SentimentLargeTask(Task):
    """Generated review-like sentences with negation and "but"; see the module docstring."""

    name = "sentiment-large"
    needs = ("lengths",)  # ragged sentences
    description = (
        "NLP: generated review sentences with negation and 'but' (order matters), token ids"
    )
    mode = "many_to_one"
    kind = "binary"
    data_options = ("n_train", "n_val")
    default_config: dict[str, Any] = task_config(
        cell="gru",
        hidden=32,
        seq_len=20,
        batch_size=32,
        epochs=5,
        lr=0.01,
        mode="many_to_one",
        loss="bce",
        embedding_dim=16,
        n_train=4000,
        n_val=1000,
    )

    def make_data(
        self, seed: int = 0, *, n_train: int = 4000, n_val: int = 1000, **_: Any
    ) -> tuple[Split, Split]:
        """(train, val): x (T, N) int64 token ids (0 = padding past ``lengths``), y (N, 1) float32
        0/1,
        lengths (N,) int64; T is the longest sentence of the split (at most 20)."""
        seed = check_seed(seed)
        n_train = check_positive_int("n_train", n_train)
        n_val = check_positive_int("n_val", n_val)
        rng = np.random.default_rng(seed)
        index = {w: i for i, w in enumerate(LARGE_VOCAB)}
        out = []
        for n in (n_train, n_val):
            sents, labels = _large_sentences(n, rng)
            x, lengths = pad_ids([[index[w] for w in s] for s in sents])
            out.append(
                Split(
                    x,
                    labels[:, None].astype(np.float32),
                    lengths,
                    info={"vocab": list(LARGE_VOCAB)},
                )
            )
        return out[0], out[1]

    def sizes(self, train: Split) -> dict[str, Any]:
        dim = int(self.default_config["embedding_dim"])
        return {"input_size": dim, "output_size": 1, "vocab_size": len(LARGE_VOCAB)}

    def build_model(self, cfg: dict[str, Any], train: Split) -> Any:
        cfg = dict(cfg)
        cfg.setdefault("embedding_dim", self.default_config["embedding_dim"])
        return super().build_model(cfg, train)

    def baseline(self, val: Split, train: Split | None = None) -> dict[str, float]:
        """majority accuracy; negation-blind rule (sign of the raw polarity sum); and a linear
        bag-of-words classifier (ridge regression on word counts, fit on ``train`` if given, else on
        the first half of ``val`` and scored on the second half)."""
        y = val.y[:, 0] > 0.5
        p = float(np.mean(y))
        v = len(LARGE_VOCAB)
        pos_ids = [LARGE_VOCAB.index(w) for w in _POSITIVE]
        neg_ids = [LARGE_VOCAB.index(w) for w in _NEGATIVE]
        counts = _counts(val.x, v)
        raw = counts[:, pos_ids].sum(1) - counts[:, neg_ids].sum(1)
        blind = np.where(raw == 0, p >= 0.5, raw > 0)
        if train is not None:
            fit_x, fit_y, test_x, test_y = _counts(train.x, v), train.y[:, 0] > 0.5, counts, y
        else:
            h = len(y) // 2
            fit_x, fit_y, test_x, test_y = counts[:h], y[:h], counts[h:], y[h:]
        bow = _ridge_accuracy(fit_x, fit_y, test_x, test_y)
        return {
            "majority_accuracy": max(p, 1 - p),
            "negation_blind_accuracy": float(np.mean(blind == y)),
            "bow_linear_accuracy": bow,
        }


def _counts(x: np.ndarray, vocab: int) -> np.ndarray:
    """(N, V) word counts of token ids x (T, N), padding (id 0) excluded."""
    n = x.shape[1]
    counts = np.zeros((n, vocab))
    np.add.at(counts, (np.broadcast_to(np.arange(n), x.shape), x), 1.0)
    counts[:, 0] = 0.0
    return counts


def _ridge_accuracy(fx: np.ndarray, fy: np.ndarray, tx: np.ndarray, ty: np.ndarray) -> float:
    a = np.hstack([fx, np.ones((len(fx), 1))])
    target = np.where(fy, 1.0, -1.0)
    w = np.linalg.solve(a.T @ a + 1e-3 * np.eye(a.shape[1]), a.T @ target)
    pred = np.hstack([tx, np.ones((len(tx), 1))]) @ w > 0
    return float(np.mean(pred == ty))
