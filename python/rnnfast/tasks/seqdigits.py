"""``digits``: sequential digits, many-to-one classification of real 8x8 images read row by row.

Data: scikit-learn's bundled handwritten digits (``sklearn.datasets.load_digits``: 1797 images of
8x8 pixels, values 0..16; a copy of the UCI "Optical Recognition of Handwritten Digits" test set,
shipped inside scikit-learn under its BSD-3-Clause licence; nothing is downloaded). Needs the
optional extra ``rnnfast[data]`` (scikit-learn).

Each image is a sequence of its 8 rows (top to bottom): x (T=8, N, I=8) float32 pixels scaled to
[0, 1], y (N,) int64 digit 0..9; the recurrent stack sees one row per step and classifies from its
final state (the small cousin of sequential MNIST). Split at random (seeded): 20% validation.

Score: ``val_accuracy``. Baselines: ``majority_accuracy`` (the most frequent training digit,
~10%) and ``linear_accuracy``: a ridge one-vs-rest linear classifier on all 64 pixels at once
(no sequence at all; a strong baseline on these small, centred images, ~95%).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import Split, Task, check_fraction, check_seed, random_split, task_config
from .caption import load_digit_images

__all__ = ["SeqDigitsTask"]


class SeqDigitsTask(Task):
    """8x8 digits as 8 steps of 8 pixels; see the module docstring."""

    name = "digits"
    description = "sequential digits: 8x8 images (scikit-learn) read row by row, 10 classes"
    mode = "many_to_one"
    kind = "multiclass"
    data_options = ("val_fraction",)
    default_config: dict[str, Any] = task_config(
        cell="gru",
        hidden=64,
        seq_len=8,
        batch_size=32,
        epochs=15,
        lr=0.005,
        mode="many_to_one",
        loss="cross_entropy",
        val_fraction=0.2,
    )

    def make_data(
        self, seed: int = 0, *, val_fraction: float = 0.2, **_: Any
    ) -> tuple[Split, Split]:
        """(train, val): x (8, N, 8) float32 rows, y (N,) int64 digits; ``info["pixels"]`` (N, 64)."""
        seed = check_seed(seed)
        check_fraction("val_fraction", val_fraction)
        feats, digits = load_digit_images()
        out = []
        for idx in random_split(len(digits), val_fraction, seed):
            rows = feats[idx].reshape(-1, 8, 8).transpose(1, 0, 2)  # (T=8 rows, N, 8 pixels)
            out.append(Split(np.ascontiguousarray(rows), digits[idx], info={"pixels": feats[idx]}))
        return out[0], out[1]

    def sizes(self, train: Split) -> dict[str, Any]:
        return {"input_size": 8, "output_size": 10}

    def baseline(self, val: Split, train: Split | None = None) -> dict[str, float]:
        """Majority digit and a ridge one-vs-rest linear classifier on the 64 pixels (fit on
        ``train`` when given, else on the first half of ``val`` and scored on the second)."""
        if train is not None:
            fx, fy, tx, ty = train.info["pixels"], train.y, val.info["pixels"], val.y
        else:
            h = val.n // 2
            fx, fy = val.info["pixels"][:h], val.y[:h]
            tx, ty = val.info["pixels"][h:], val.y[h:]
        a = np.hstack([fx, np.ones((len(fx), 1))]).astype(np.float64)
        target = np.where(fy[:, None] == np.arange(10)[None, :], 1.0, -1.0)
        w = np.linalg.solve(a.T @ a + 1e-1 * np.eye(a.shape[1]), a.T @ target)
        pred = np.argmax(np.hstack([tx, np.ones((len(tx), 1))]) @ w, axis=1)
        majority = np.bincount(fy, minlength=10).argmax()
        return {
            "majority_accuracy": float(np.mean(val.y == majority)),
            "linear_accuracy": float(np.mean(pred == ty)),
        }
