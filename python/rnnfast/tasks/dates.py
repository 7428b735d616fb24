"""``dates``: machine translation (many-to-many, encoder-decoder) of dates written in words, in
several formats and three languages, into ISO 8601 dates.

Examples (generated in code from a seeded NumPy Generator; nothing downloaded)::

    "tuesday, march 3, 1998"                 -> "1998-03-03"
    "the third of march, nineteen ninety-eight" -> "1998-03-03"
    "le 3 mars 1998" / "mardi 3 mars 1998"   -> "1998-03-03"
    "3. märz 1998" / "dienstag, 3. märz 1998" -> "1998-03-03"

Dates are uniform over 1900-01-01 .. 2099-12-31; each gets one of ``FORMATS`` at random (English,
French, German; day and year as digits or as words, weekday optional, month names full or short).
Source: characters (S, N) int64 ids into ``SRC_VOCAB`` (id 0 = padding past ``lengths``); target:
the 10 characters of the ISO date then ``<eos>``, (11, N) int64 ids into ``TGT_VOCAB`` (``<pad>``
0, ``<bos>`` 1, ``<eos>`` 2, digits, ``-``). The model is a :class:`rnnfast.seq2seq.Seq2Seq`
(GRU encoder and decoder, Luong "general" attention) trained with teacher forcing by
:func:`rnnfast.seq2seq.train_seq2seq`.

Score (``val_accuracy``): sequence accuracy of greedy decoding (the whole date right);
``val_beam_accuracy`` with beam search (beam 3); ``val_char_accuracy``: per-character accuracy of
the greedy output. Baselines: ``majority_accuracy`` (always answer the most common training date:
sequence accuracy ~0.0003) and ``per_position_majority_char_accuracy`` (the most common character
at each of the 10 positions: "19"/"20" and the dashes right, the rest guessed).
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._base import Split, Task, check_cell, check_positive_int, check_seed, task_config
from ._text import pad_ids

__all__ = [
    "DatesTask",
    "FORMATS",
    "SRC_VOCAB",
    "TGT_VOCAB",
    "date_text",
    "decode_iso",
    "encode_source",
]

_MONTHS = {
    "en": "january february march april may june july august september october november "
    "december".split(),
    "fr": "janvier février mars avril mai juin juillet août septembre octobre novembre "
    "décembre".split(),
    "de": "januar februar märz april mai juni juli august september oktober november "
    "dezember".split(),
}
_WEEKDAYS = {
    "en": "monday tuesday wednesday thursday friday saturday sunday".split(),
    "fr": "lundi mardi mercredi jeudi vendredi samedi dimanche".split(),
    "de": "montag dienstag mittwoch donnerstag freitag samstag sonntag".split(),
}
_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
_ONES += "fifteen sixteen seventeen eighteen nineteen"
_UNITS = _ONES.split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORD = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}


def _words(n: int) -> str:
    """0..99 in English words: 42 -> "forty-two"."""
    if n < 20:
        return _UNITS[n]
    t, u = divmod(n, 10)
    return _TENS[t] + ("" if u == 0 else "-" + _UNITS[u])


def _ordinal_words(n: int) -> str:
    """1..31 as an English ordinal: 3 -> "third", 21 -> "twenty-first", 30 -> "thirtieth"."""
    w = _words(n)
    head, _, last = w.rpartition("-")
    if last in _ORD:
        last = _ORD[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return (head + "-" if head else "") + last


def _ordinal_suffix(n: int) -> str:
    """3 -> "3rd", 11 -> "11th", 22 -> "22nd"."""
    if 10 <= n % 100 <= 20:
        return f"{n}th"
    return f"{n}" + {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def _year_words(y: int) -> str:
    """1998 -> "nineteen ninety-eight", 1905 -> "nineteen oh five", 2000 -> "two thousand",
    2007 -> "two thousand and seven", 2021 -> "twenty twenty-one"."""
    hi, lo = divmod(y, 100)
    if y == 2000:
        return "two thousand"
    if 2000 < y < 2010:
        return "two thousand and " + _UNITS[lo]
    if lo == 0:
        return _words(hi) + " hundred"
    return _words(hi) + " " + ("oh " + _UNITS[lo] if lo < 10 else _words(lo))


#: (name, function(date) -> text); the weekday and month names are those of the language.
FORMATS: tuple[tuple[str, Any], ...] = (
    ("en: march 3, 1998", lambda d: f"{_MONTHS['en'][d.month - 1]} {d.day}, {d.year}"),
    ("en: 3 mar 1998", lambda d: f"{d.day} {_MONTHS['en'][d.month - 1][:3]} {d.year}"),
    (
        "en: tuesday, march 3, 1998",
        lambda d: f"{_WEEKDAYS['en'][d.weekday()]}, {_MONTHS['en'][d.month - 1]} {d.day}, {d.year}",
    ),
    (
        "en: the 3rd of march 1998",
        lambda d: f"the {_ordinal_suffix(d.day)} of {_MONTHS['en'][d.month - 1]} {d.year}",
    ),
    (
        "en: the third of march, nineteen ninety-eight",
        lambda d: (
            f"the {_ordinal_words(d.day)} of {_MONTHS['en'][d.month - 1]}, {_year_words(d.year)}"
        ),
    ),
    (
        "en: march third, 1998",
        lambda d: f"{_MONTHS['en'][d.month - 1]} {_ordinal_words(d.day)}, {d.year}",
    ),
    ("fr: le 3 mars 1998", lambda d: f"le {d.day} {_MONTHS['fr'][d.month - 1]} {d.year}"),
    (
        "fr: mardi 3 mars 1998",
        lambda d: f"{_WEEKDAYS['fr'][d.weekday()]} {d.day} {_MONTHS['fr'][d.month - 1]} {d.year}",
    ),
    ("de: 3. märz 1998", lambda d: f"{d.day}. {_MONTHS['de'][d.month - 1]} {d.year}"),
    (
        "de: dienstag, 3. märz 1998",
        lambda d: f"{_WEEKDAYS['de'][d.weekday()]}, {d.day}. {_MONTHS['de'][d.month - 1]} {d.year}",
    ),
)


def _source_alphabet() -> str:
    chars: set[str] = set("0123456789 ,.-abcdefghijklmnopqrstuvwxyz")
    for table in (_MONTHS, _WEEKDAYS):
        for names in table.values():
            chars.update("".join(names))
    return "".join(sorted(chars))


#: source characters; id 0 is padding.
SRC_VOCAB: tuple[str, ...] = ("<pad>", *_source_alphabet())
#: target tokens: padding, start, end, then the ISO date's characters.
TGT_VOCAB: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", *"0123456789-")
_SRC_INDEX = {c: i for i, c in enumerate(SRC_VOCAB)}
_TGT_INDEX = {c: i for i, c in enumerate(TGT_VOCAB)}
_FIRST = _dt.date(1900, 1, 1).toordinal()
_LAST = _dt.date(2099, 12, 31).toordinal()


def date_text(date: _dt.date, fmt: int) -> str:
    """``date`` written in format number ``fmt`` of :data:`FORMATS`."""
    return str(FORMATS[fmt][1](date))


def decode_iso(ids: Any) -> str:
    """Target ids (T,) -> the text up to ``<eos>`` (e.g. "1998-03-03")."""
    out = []
    for i in np.asarray(ids).reshape(-1):
        tok = TGT_VOCAB[int(i)]
        if tok == "<eos>":
            break
        if tok not in ("<pad>", "<bos>"):
            out.append(tok)
    return "".join(out)


def encode_source(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Source texts -> (x (S, N) int64 character ids, padded with 0; lengths (N,) int64).

    Raises ValueError naming characters outside :data:`SRC_VOCAB` (texts are lower-cased first).
    """
    texts = [t.lower() for t in texts]
    if not texts or not all(texts):
        raise ValueError("texts: expected at least one non-empty text")
    bad = sorted({c for t in texts for c in t if c not in _SRC_INDEX})
    if bad:
        raise ValueError(f"texts: characters outside the source vocabulary: {''.join(bad)!r}")
    return pad_ids([[_SRC_INDEX[c] for c in t] for t in texts])


class DatesTask(Task):
    """Dates in words (English, French, German) -> ISO dates; see the module docstring."""

    name = "dates"
    needs = ("lengths",)  # ragged source texts (its Seq2Seq takes rnn, lstm or gru)
    description = "translation (seq2seq + attention): dates in words, 3 languages -> ISO 8601"
    mode = "many_to_many"
    kind = "multiclass"
    data_options = ("n_train", "n_val")
    default_config: dict[str, Any] = task_config(
        cell="gru",
        hidden=64,
        seq_len=None,  # sources are ragged (10-55 characters); not an option here
        batch_size=64,
        epochs=8,
        lr=0.005,
        mode="many_to_many",
        loss="cross_entropy",
        embedding_dim=16,
        attention="general",
        beam=3,
        n_train=8000,
        n_val=1000,
    )

    def make_data(
        self, seed: int = 0, *, n_train: int = 8000, n_val: int = 1000, **_: Any
    ) -> tuple[Split, Split]:
        """(train, val): x (S, N) int64 source characters with ``lengths`` (N,), y (11, N) int64
        target ids; ``info`` holds ``texts``, ``iso`` and ``formats`` (format number per example),
        ``vocab`` (source characters, id order) and ``tgt_vocab``."""
        seed = check_seed(seed)
        n_train = check_positive_int("n_train", n_train)
        n_val = check_positive_int("n_val", n_val)
        rng = np.random.default_rng(seed)
        out = []
        for n in (n_train, n_val):
            days = rng.integers(_FIRST, _LAST + 1, size=n)
            fmts = rng.integers(0, len(FORMATS), size=n)
            dates = [_dt.date.fromordinal(int(o)) for o in days]
            texts = [date_text(d, int(f)) for d, f in zip(dates, fmts)]
            iso = [d.isoformat() for d in dates]
            x, lengths = encode_source(texts)
            y = np.array([[_TGT_INDEX[c] for c in s] + [_TGT_INDEX["<eos>"]] for s in iso]).T
            info = {
                "texts": texts,
                "iso": iso,
                "formats": fmts,
                "vocab": list(SRC_VOCAB),
                "tgt_vocab": list(TGT_VOCAB),
            }
            out.append(Split(x, np.ascontiguousarray(y, dtype=np.int64), lengths, info=info))
        return out[0], out[1]

    def sizes(self, train: Split) -> dict[str, Any]:
        return {"src_vocab": len(SRC_VOCAB), "tgt_vocab": len(TGT_VOCAB)}

    def build_model(self, cfg: dict[str, Any], train: Split) -> Any:
        """A :class:`rnnfast.seq2seq.Seq2Seq` (cell, hidden, layers, embedding_dim, attention)."""
        from ..seq2seq import Seq2Seq

        check_cell(cfg["cell"], "dates", self.needs)
        if cfg.get("bptt"):
            raise ValueError("bptt: the dates task trains whole sequences (teacher forcing)")
        if str(cfg["optimizer"]) != "adam":
            raise ValueError(
                f"optimizer: the dates task trains with adam, got {cfg['optimizer']!r}"
            )
        return Seq2Seq(
            len(SRC_VOCAB),
            len(TGT_VOCAB),
            embedding_dim=int(cfg["embedding_dim"]),
            hidden_size=int(cfg["hidden"]),
            cell=str(cfg["cell"]),
            num_layers=int(cfg["layers"]),
            attention=cfg["attention"],
            pad=_TGT_INDEX["<pad>"],
            bos=_TGT_INDEX["<bos>"],
            eos=_TGT_INDEX["<eos>"],
            dtype=np.dtype(cfg.get("dtype", "float32")).type,
            seed=int(cfg["seed"]),
        )

    def fit_model(
        self,
        model: Any,
        train: Split,
        val: Split,
        cfg: dict[str, Any],
        *,
        callbacks: Any = (),
    ) -> tuple[list[dict[str, Any]], float]:
        """Teacher-forced training (:func:`rnnfast.seq2seq.train_seq2seq`); returns the per-epoch
        records and the final validation loss (nats per target token)."""
        from ..seq2seq import seq2seq_loss, train_seq2seq

        hist = train_seq2seq(
            model,
            train.x,
            train.lengths,
            train.y,
            epochs=int(cfg["epochs"]),
            batch_size=int(cfg["batch_size"]),
            lr=float(cfg["lr"]),
            clip_norm=cfg.get("clip_norm"),
            seed=int(cfg["seed"]),
            val=(val.x, val.lengths, val.y),
            callbacks=callbacks,
        )
        return hist, seq2seq_loss(model, val.x, val.lengths, val.y)

    def baseline(self, val: Split, train: Split | None = None) -> dict[str, float]:
        """Sequence accuracy of always answering the most common (``train``'s, else ``val``'s)
        date, and the character accuracy of the per-position majority character."""
        ref = train if train is not None else val
        common = Counter(ref.info["iso"]).most_common(1)[0][0]
        cols = np.array([list(s) for s in ref.info["iso"]])  # (N, 10)
        per_pos = [Counter(cols[:, i]).most_common(1)[0][0] for i in range(cols.shape[1])]
        vcols = np.array([list(s) for s in val.info["iso"]])
        return {
            "majority_accuracy": float(np.mean([s == common for s in val.info["iso"]])),
            "per_position_majority_char_accuracy": float((vcols == np.array(per_pos)).mean()),
        }

    def score(self, model: Any, val: Split) -> dict[str, float]:
        """Greedy sequence accuracy (``val_accuracy``), per-character accuracy and beam-search
        sequence accuracy (beam from the config default)."""
        beam = int(self.default_config["beam"])
        greedy = model.greedy(val.x, val.lengths, max_len=val.y.shape[0])
        beamed = model.beam_search(val.x, val.lengths, beam=beam, max_len=val.y.shape[0])
        g_txt = [decode_iso(greedy[:, j]) for j in range(val.n)]
        b_txt = [decode_iso(beamed[:, j]) for j in range(val.n)]
        iso = val.info["iso"]
        chars = [sum(a == b for a, b in zip(g.ljust(10), t)) / len(t) for g, t in zip(g_txt, iso)]
        return {
            "val_accuracy": float(np.mean([g == t for g, t in zip(g_txt, iso)])),
            "val_char_accuracy": float(np.mean(chars)),
            "val_beam_accuracy": float(np.mean([b == t for b, t in zip(b_txt, iso)])),
        }
