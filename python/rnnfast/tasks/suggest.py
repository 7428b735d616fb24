"""``suggest``: next-word suggestion (the keypad auto-suggest example) with a word-level language
model on a real corpus that ships with Python itself.

Corpus: the documentation text in the standard library's ``pydoc_data.topics`` (the help topics
``help("if")`` shows; part of every CPython install, under the Python Software Foundation License;
nothing is downloaded). The topics are joined in sorted key order and lower-cased; tokens are runs
of letters (``[a-z]+``). The first ``1 - val_fraction`` of the tokens is for training, the rest for
validation. The vocabulary is the ``vocab_size - 1`` most frequent training words plus ``<unk>``
(id 0), which replaces every rarer word.

x (T, N) int64 word ids, y (T, N) int64: the next word of each step (training: ``n_train`` windows
at random offsets; validation: consecutive windows). Loss: softmax cross-entropy (nats per word).

Score: ``val_top1_accuracy`` and ``val_top5_accuracy`` (``val_accuracy`` = the top-5 one, k = ``TOP_K``): the
fraction of validation positions whose next word is among the model's k best suggestions. A
suggestion list never contains ``<unk>``, and positions whose true next word is ``<unk>`` are not
counted (a keypad cannot suggest an unknown word). Baselines, on the same positions:
``bigram_top{k}_accuracy`` (the k words that most often followed the previous word in training,
topped up with the most frequent words) and ``unigram_top{k}_accuracy`` (always the k most frequent
words).

:func:`suggest_words` gives the top-k next words after a prompt; the CLI's
``python -m rnnfast suggest model.npz "the value of the" --k 5`` calls it.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np

from ._base import (
    Split,
    Task,
    check_cell,
    check_fraction,
    check_positive_int,
    check_seed,
    task_config,
)
from ._text import lm_splits, token_stream

__all__ = ["SuggestTask", "TOP_K", "UNK", "load_corpus", "suggest_words", "tokenize"]

UNK = "<unk>"
#: k of the task's top-k accuracy (the number of words a keypad shows).
TOP_K = 5
_WORD = re.compile(r"[a-z]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased runs of letters: ``"The keeper, of the"`` -> ``["the", "keeper", "of", "the"]``."""
    return _WORD.findall(text.lower())


def load_corpus() -> list[str]:
    """The tokens of ``pydoc_data.topics`` (every help topic, in sorted key order)."""
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:  # a Python built without its documentation topics
        raise ImportError(
            f"the suggest task reads the standard library's pydoc_data.topics ({exc})"
        ) from None
    return tokenize("\n".join(topics[k] for k in sorted(topics)))


def _topk(logits: np.ndarray, k: int) -> np.ndarray:
    """Indices (..., k) of the k largest logits, best first, never id 0 (``<unk>``)."""
    z = np.array(logits, dtype=np.float64)
    z[..., 0] = -np.inf
    idx = np.argpartition(-z, k - 1, axis=-1)[..., :k]
    order = np.argsort(-np.take_along_axis(z, idx, axis=-1), axis=-1, kind="stable")
    return np.take_along_axis(idx, order, axis=-1)


class SuggestTask(Task):
    """Word-level language model on ``pydoc_data.topics``; see the module docstring."""

    name = "suggest"
    description = "next-word suggestion: word LM on Python's own docs (pydoc_data), top-k vs bigram"
    mode = "many_to_many"
    kind = "multiclass"
    data_options = ("seq_len", "n_train", "val_fraction", "vocab_size")
    default_config: dict[str, Any] = task_config(
        cell="gru",
        hidden=256,
        seq_len=32,
        batch_size=32,
        epochs=5,
        lr=0.002,
        mode="many_to_many",
        loss="cross_entropy",
        embedding_dim=128,
        n_train=2000,
        val_fraction=0.1,
        vocab_size=1000,
        dropout=0.0,
    )

    def make_data(
        self,
        seed: int = 0,
        *,
        seq_len: int = 32,
        n_train: int = 2000,
        val_fraction: float = 0.1,
        vocab_size: int = 1000,
        **_: Any,
    ) -> tuple[Split, Split]:
        """(train, val): x, y (T, N) int64 word ids; ``info`` holds ``vocab`` (list of words, id
        order; ``vocab[0] == "<unk>"``) and, for train, ``ids`` (every training token id)."""
        seed = check_seed(seed)
        seq_len = check_positive_int("seq_len", seq_len, 2)
        n_train = check_positive_int("n_train", n_train)
        vocab_size = check_positive_int("vocab_size", vocab_size, 2)
        check_fraction("val_fraction", val_fraction)
        words = load_corpus()
        cut = int(len(words) * (1.0 - val_fraction))
        counts = Counter(words[:cut])
        # most frequent first; ties broken alphabetically so the vocabulary is reproducible
        ranked = sorted(counts, key=lambda w: (-counts[w], w))[: vocab_size - 1]
        vocab = [UNK, *ranked]
        index = {w: i for i, w in enumerate(vocab)}
        ids = np.fromiter((index.get(w, 0) for w in words), dtype=np.int64, count=len(words))
        tr, va = ids[:cut], ids[cut:]
        if len(tr) < seq_len + 2 or len(va) < seq_len + 1:
            raise ValueError(f"seq_len: {seq_len} is too long for a corpus of {len(ids)} words")
        return lm_splits(
            tr, va, seq_len, n_train, seed, {"vocab": vocab, "ids": tr}, {"vocab": vocab}
        )

    def sizes(self, train: Split) -> dict[str, Any]:
        v = len(train.info["vocab"])
        return {
            "input_size": int(self.default_config["embedding_dim"]),
            "output_size": v,
            "vocab_size": v,
        }

    def build_model(self, cfg: dict[str, Any], train: Split) -> Any:
        """An embedding + ``cell`` stack + head over the vocabulary; ``dropout`` between the
        stacked layers (only with ``layers`` >= 2)."""
        from ..modules import build_model

        check_cell(cfg["cell"], "suggest")
        v = len(train.info["vocab"])
        dim = int(cfg.get("embedding_dim") or self.default_config["embedding_dim"])
        return build_model(
            str(cfg["cell"]),
            dim,
            int(cfg["hidden"]),
            v,
            mode="many_to_many",
            num_layers=int(cfg["layers"]),
            dtype=np.dtype(cfg.get("dtype", "float32")).type,
            seed=int(cfg["seed"]),
            init=cfg.get("init") or "torch",
            vocab_size=v,
            embedding_dim=dim,
            dropout=float(cfg.get("dropout", 0.0)) if int(cfg["layers"]) > 1 else 0.0,
        )

    def _k(self) -> int:
        return TOP_K

    def baseline(self, val: Split, train: Split | None = None) -> dict[str, float]:
        """Top-k accuracies of the bigram and unigram suggesters (fit on ``train``'s tokens when
        given, else on ``val`` itself: an optimistic bound), counted as the model's score is."""
        k = self._k()
        v = len(val.info["vocab"])
        fit = train.info["ids"] if train is not None and "ids" in train.info else token_stream(val)
        uni = np.bincount(fit, minlength=v).astype(np.float64)
        big = np.zeros((v, v))
        np.add.at(big, (fit[:-1], fit[1:]), 1.0)
        big += 1e-6 * uni[None, :]  # ties and unseen contexts fall back to the frequent words
        keep = val.y != 0
        top_uni = _topk(uni, k)
        top_big = _topk(big, k)[val.x]  # (T, N, k)
        return {
            f"bigram_top{k}_accuracy": float((top_big == val.y[..., None]).any(-1)[keep].mean()),
            "bigram_top1_accuracy": float((top_big[..., 0] == val.y)[keep].mean()),
            f"unigram_top{k}_accuracy": float(np.isin(val.y, top_uni)[keep].mean()),
        }

    def score(self, model: Any, val: Split) -> dict[str, float]:
        """``val_top1_accuracy``, ``val_top{k}_accuracy`` and ``val_accuracy`` (= the top-k one)."""
        k = self._k()
        top = _topk(self.predict(model, val), k)  # (T, N, k)
        keep = val.y != 0
        topk = float((top == val.y[..., None]).any(-1)[keep].mean())
        return {
            "val_accuracy": topk,
            f"val_top{k}_accuracy": topk,
            "val_top1_accuracy": float((top[..., 0] == val.y)[keep].mean()),
        }


def suggest_words(model: Any, vocab: list[str], prompt: str, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` most likely next words after ``prompt`` with their probabilities, best first.

    The prompt is tokenized as the corpus was (:func:`tokenize`); unknown words become ``<unk>``;
    ``<unk>`` itself is never suggested. One forward pass over the prompt (no Python time loop).
    """
    k = check_positive_int("k", k)
    if k >= len(vocab):
        raise ValueError(f"k: expected at most {len(vocab) - 1} (the vocabulary), got {k}")
    words = tokenize(prompt)
    if not words:
        raise ValueError(f"prompt: expected at least one word (letters), got {prompt!r}")
    index = {w: i for i, w in enumerate(vocab)}
    ids = np.array([index.get(w, 0) for w in words], dtype=np.int64)
    was = model.training
    model.eval()
    try:
        logits = np.asarray(model(ids[:, None]), dtype=np.float64)[-1, 0]  # (V,)
    finally:
        model.train(was)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    return [(vocab[int(i)], float(p[i])) for i in _topk(logits, k)]
