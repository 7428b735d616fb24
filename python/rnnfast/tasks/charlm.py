"""``charlm``: character-level language modelling (many-to-many), and sampling (one-to-many).

Default text: ``data/lighthouse.txt``, a short story (about 5.5 KB of original prose written for
rnnfast); any UTF-8 text file can be used instead (``text_path``). The vocabulary is the sorted set
of characters of the text. The first ``1 - val_fraction`` of the text is for training (``n_train``
windows of ``seq_len + 1`` characters at random offsets), the rest is cut into consecutive
validation
windows. x (T, N) int64 character ids, y (T, N) int64: the next character of each step.

Loss: softmax cross-entropy in nats per character. Baselines on the validation targets:
``uniform_nats`` = ln V, ``unigram_nats`` (character frequencies of the training text) and
``bigram_nats`` (add-one-smoothed bigram model fit on the training text).

:func:`sample_text` generates text from a trained model: it feeds a prime string, then samples one
character at a time at a given temperature, feeding each sample back in (one-to-many).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._base import Split, Task, check_fraction, check_positive_int, check_seed, task_config
from ._text import lm_splits, token_stream

__all__ = ["CharLMTask", "DEFAULT_TEXT", "Vocab", "load_text", "sample_text"]

#: The text shipped with the package (original prose written for rnnfast).
DEFAULT_TEXT = Path(__file__).with_name("data") / "lighthouse.txt"


def load_text(path: str | Path | None = None) -> str:
    """The text of ``path`` (UTF-8), or of the shipped default text when ``path`` is None."""
    p = DEFAULT_TEXT if path is None else Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"text_path: cannot read {str(p)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"text_path: {str(p)!r} is not UTF-8 text") from None
    if len(text) < 100:
        raise ValueError(f"text_path: {str(p)!r} has {len(text)} characters; need at least 100")
    return text


class Vocab:
    """Character <-> id mapping: ``chars`` sorted, ``encode(str) -> (n,) int64``, ``decode(ids) ->
    str``."""

    def __init__(self, chars: str) -> None:
        if len(set(chars)) != len(chars) or not chars:
            raise ValueError(f"chars: expected distinct characters, got {len(chars)} with repeats")
        self.chars = chars
        self._index = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, s: str) -> np.ndarray:
        missing = sorted({c for c in s if c not in self._index})
        if missing:
            raise ValueError(f"text: characters not in the vocabulary: {''.join(missing)!r}")
        return np.fromiter((self._index[c] for c in s), dtype=np.int64, count=len(s))

    def decode(self, ids: Any) -> str:
        return "".join(self.chars[int(i)] for i in np.asarray(ids).reshape(-1))


class CharLMTask(Task):
    """Character-level language model; see the module docstring."""

    name = "charlm"
    description = "character-level language model on a shipped short story (nats/char vs n-gram)"
    mode = "many_to_many"
    kind = "multiclass"
    data_options = ("seq_len", "n_train", "val_fraction", "text_path")
    default_config: dict[str, Any] = task_config(
        cell="lstm",
        hidden=128,
        seq_len=64,
        batch_size=32,
        epochs=5,
        lr=0.005,
        mode="many_to_many",
        loss="cross_entropy",
        embedding_dim=32,
        n_train=1000,
        val_fraction=0.1,
        text_path=None,
        # the text is small (5.5 KB): longer TBPTT windows overfit within 2 epochs
        # (--bptt 32,64 --seq-len 128: val 1.91 after epoch 1, 2.75 after 5), so stop after one
        # epoch without improvement and keep the best epoch's weights
        early_stopping=1,
    )

    def make_data(
        self,
        seed: int = 0,
        *,
        seq_len: int = 64,
        n_train: int = 1000,
        val_fraction: float = 0.1,
        text_path: str | None = None,
        **_: Any,
    ) -> tuple[Split, Split]:
        """(train, val): x, y (T, N) int64; ``info`` holds ``vocab`` (str of characters)."""
        seed = check_seed(seed)
        seq_len = check_positive_int("seq_len", seq_len, 2)
        n_train = check_positive_int("n_train", n_train)
        check_fraction("val_fraction", val_fraction)
        text = load_text(text_path)
        vocab = Vocab.from_text(text)
        ids = vocab.encode(text)
        cut = int(len(ids) * (1.0 - val_fraction))
        tr, va = ids[:cut], ids[cut:]
        if len(tr) < seq_len + 2 or len(va) < seq_len + 1:
            raise ValueError(
                f"seq_len: {seq_len} is too long for a text of {len(ids)} characters "
                f"with val_fraction {val_fraction}"
            )
        info = {"vocab": vocab.chars}
        return lm_splits(tr, va, seq_len, n_train, seed, {**info, "text": text[:cut]}, info)

    def sizes(self, train: Split) -> dict[str, Any]:
        return {
            "input_size": int(self.default_config["embedding_dim"]),
            "output_size": len(train.info["vocab"]),
            "vocab_size": len(train.info["vocab"]),
        }

    def build_model(self, cfg: dict[str, Any], train: Split) -> Any:
        cfg = dict(cfg)
        cfg.setdefault("embedding_dim", self.default_config["embedding_dim"])
        return super().build_model(cfg, train)

    def baseline(self, val: Split, train: Split | None = None) -> dict[str, float]:
        """Cross-entropies (nats/char) on ``val.y`` of the uniform, unigram and bigram models, the
        n-gram models fit on ``train``'s text (if given, else on ``val`` itself: an optimistic
        bound)."""
        vocab = Vocab(val.info["vocab"])
        v = len(vocab)
        fit_ids = (
            vocab.encode(train.info["text"])
            if train is not None and "text" in train.info
            else token_stream(val)
        )
        uni = np.bincount(fit_ids, minlength=v) + 1.0
        uni /= uni.sum()
        big = np.ones((v, v))
        np.add.at(big, (fit_ids[:-1], fit_ids[1:]), 1.0)
        big /= big.sum(axis=1, keepdims=True)
        return {
            "uniform_nats": float(np.log(v)),
            "unigram_nats": float(-np.mean(np.log(uni[val.y]))),
            "bigram_nats": float(-np.mean(np.log(big[val.x, val.y]))),
        }


def sample_text(
    model: Any,
    vocab: Vocab,
    *,
    prime: str = "The ",
    length: int = 300,
    temperature: float = 0.8,
    seed: int | None = 0,
) -> str:
    """Generate ``length`` characters after ``prime`` from a trained charlm model (one-to-many).

    The prime (all but its last character) is run through the model in one forward pass to set the
    recurrent state; then :meth:`SequenceModel.generate` samples each next character from
    softmax(logits / temperature), feeding it back as the next input. Returns prime + generated
    text.
    """
    length = check_positive_int("length", length)
    if (
        isinstance(temperature, (bool, np.bool_))
        or not isinstance(temperature, (int, float, np.integer, np.floating))
        or not temperature > 0
    ):
        raise ValueError(f"temperature: expected a number > 0, got {temperature!r}")
    if not prime:
        raise ValueError("prime: expected at least one character")
    try:
        ids = vocab.encode(prime)
    except ValueError as exc:
        raise ValueError(f"prime: {exc}".replace("text: ", "")) from None
    model.eval()
    hx = None
    if len(ids) > 1:
        model(ids[:-1, None])
        hx = model.last_hidden
    rng = np.random.default_rng(seed)
    out = model.generate(
        ids[-1:], length, temperature=float(temperature), sample=True, rng=rng, hx=hx
    )
    return prime + vocab.decode(out[:, 0])
