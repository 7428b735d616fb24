"""``caption``: image captioning (one-to-many conditioned on an input) on real 8x8 digit images.

Data: scikit-learn's bundled handwritten digits (``sklearn.datasets.load_digits``: 1797 images of
8x8 pixels, values 0..16; a copy of the UCI "Optical Recognition of Handwritten Digits" test set,
shipped inside scikit-learn under its BSD-3-Clause licence; nothing is downloaded). Needs the
optional extra ``rnnfast[data]`` (scikit-learn); :func:`load_digit_images` raises ImportError
naming it otherwise.

Each image is captioned with the digit's name and its parity, e.g. "seven odd", "zero even".
The decoder is a recurrent stack whose input at every step is the image's feature vector (the 64
pixels scaled to [0, 1]) concatenated with the one-hot previous word (``<bos>`` at the first step):
x (T=2, N, 64 + V) float32, y (2, N) int64 word ids, V = 13 (``<bos>``, the ten digit names,
``even``, ``odd``). Training uses teacher forcing (the true previous word); :func:`caption_images`
decodes greedily, feeding back the word the model chose (one-to-many).

Score (``val_accuracy``): word accuracy of the greedy captions on the validation images (the
caption the model writes by itself, not the teacher-forced prediction); ``val_caption_accuracy``:
fraction of captions entirely right. Baseline: ``majority_accuracy``, the most frequent training
word at each position ("one"/"odd"-like guesses: ~30% word accuracy).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._threads import with_single_thread_blas
from ..nn.frozen import decode_step
from ._base import Split, Task, check_fraction, check_seed, random_split, task_config

__all__ = ["CAPTION_VOCAB", "CaptionTask", "caption_images", "load_digit_images"]

_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: word id -> word; id 0 is the start token fed at the first step.
CAPTION_VOCAB: tuple[str, ...] = ("<bos>", *_NAMES, "even", "odd")
_N_FEATURES = 64
_CAPTION_LEN = 2


def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """(features (1797, 64) float32 in [0, 1], digits (1797,) int64) from scikit-learn.

    Raises ImportError naming the extra when scikit-learn is missing.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError(
            "the caption task needs scikit-learn's bundled digits: pip install 'rnnfast[data]' "
            f"(or scikit-learn) ({exc})"
        ) from None
    d = load_digits()
    return (np.asarray(d.data, np.float32) / 16.0), np.asarray(d.target, np.int64)


def captions_of(digits: np.ndarray) -> np.ndarray:
    """(2, N) int64 word ids of "name parity" for digits (N,)."""
    name = digits + 1  # ids 1..10
    parity = np.where(digits % 2 == 0, CAPTION_VOCAB.index("even"), CAPTION_VOCAB.index("odd"))
    return np.stack([name, parity]).astype(np.int64)


def _inputs(features: np.ndarray, words: np.ndarray) -> np.ndarray:
    """x (T, N, 64 + V): the features at every step beside the one-hot previous word."""
    t_steps, n = words.shape
    v = len(CAPTION_VOCAB)
    prev = np.concatenate([np.zeros((1, n), np.int64), words[:-1]])  # <bos>, w_1, ..., w_{T-1}
    x = np.zeros((t_steps, n, _N_FEATURES + v), np.float32)
    x[:, :, :_N_FEATURES] = features[None]
    x[np.arange(t_steps)[:, None], np.arange(n)[None, :], _N_FEATURES + prev] = 1.0
    return x


@with_single_thread_blas  # NumPy's BLAS pool would fight the kernels' threads
def caption_images(model: Any, features: Any) -> np.ndarray:
    """Greedy captions (T=2, N) int64 word ids for image features (N, 64) (one-to-many decoding).

    Each step feeds [features, one-hot of the word chosen at the previous step] through
    ``model.rnn.step`` and takes the argmax of the head; the loop over generated words is inherent
    (each input depends on the previous output). Decode with ``CAPTION_VOCAB``.
    """
    f = np.asarray(features, dtype=model.dtype)
    if f.ndim != 2 or f.shape[1] != _N_FEATURES:
        raise ValueError(f"features: expected shape (N, {_N_FEATURES}), got {f.shape}")
    v = len(CAPTION_VOCAB)
    n = f.shape[0]
    was = model.training
    model.eval()
    try:
        out = np.zeros((_CAPTION_LEN, n), np.int64)
        prev = np.zeros(n, np.int64)
        state = None
        inp = np.zeros((n, _N_FEATURES + v), model.dtype)
        inp[:, :_N_FEATURES] = f
        step = decode_step(model.rnn)  # bf16: one frozen pack for the whole caption
        for t in range(_CAPTION_LEN):
            inp[:, _N_FEATURES:] = 0.0
            inp[np.arange(n), _N_FEATURES + prev] = 1.0
            h, state = step(inp, state)
            prev = np.argmax(model.head.forward(h), axis=1)
            out[t] = prev
    finally:
        model.train(was)
    return out


class CaptionTask(Task):
    """Captions of scikit-learn's 8x8 digits ("seven odd"); see the module docstring."""

    name = "caption"
    needs = ("step",)  # greedy decoding, one word at a time (caption_images)
    description = "image captioning: 8x8 digits (scikit-learn) -> 'seven odd' (greedy word acc.)"
    mode = "many_to_many"
    kind = "multiclass"
    data_options = ("val_fraction",)
    default_config: dict[str, Any] = task_config(
        cell="gru",
        hidden=64,
        seq_len=_CAPTION_LEN,
        batch_size=32,
        epochs=15,
        lr=0.005,
        mode="many_to_many",
        loss="cross_entropy",
        val_fraction=0.2,
    )

    def make_data(
        self, seed: int = 0, *, val_fraction: float = 0.2, **_: Any
    ) -> tuple[Split, Split]:
        """(train, val): x (2, N, 77) float32, y (2, N) int64; ``info`` holds ``vocab`` (list of
        words), ``features`` (N, 64) and ``digits`` (N,)."""
        seed = check_seed(seed)
        check_fraction("val_fraction", val_fraction)
        feats, digits = load_digit_images()
        out = []
        for idx in random_split(len(digits), val_fraction, seed):
            words = captions_of(digits[idx])
            out.append(
                Split(
                    _inputs(feats[idx], words),
                    words,
                    info={
                        "vocab": list(CAPTION_VOCAB),
                        "features": feats[idx],
                        "digits": digits[idx],
                    },
                )
            )
        return out[0], out[1]

    def sizes(self, train: Split) -> dict[str, Any]:
        v = len(CAPTION_VOCAB)
        return {"input_size": _N_FEATURES + v, "output_size": v}

    def baseline(self, val: Split, train: Split | None = None) -> dict[str, float]:
        """``majority_accuracy``: word accuracy on ``val`` of the most frequent word of each
        position (counted on ``train`` when given, else on ``val``)."""
        ref = train if train is not None else val
        guess = [np.bincount(row, minlength=len(CAPTION_VOCAB)).argmax() for row in ref.y]
        hits = np.stack([val.y[t] == g for t, g in enumerate(guess)])
        return {"majority_accuracy": float(hits.mean())}

    def score(self, model: Any, val: Split) -> dict[str, float]:
        """Greedy-decoded word accuracy (``val_accuracy``) and whole-caption accuracy
        (``val_caption_accuracy``), plus the teacher-forced word accuracy
        (``val_teacher_forced_accuracy``)."""
        caps = caption_images(model, val.info["features"])
        forced = super().score(model, val)["val_accuracy"]
        return {
            "val_accuracy": float((caps == val.y).mean()),
            "val_caption_accuracy": float((caps == val.y).all(axis=0).mean()),
            "val_teacher_forced_accuracy": forced,
        }
