"""Token-id helpers shared by the text tasks: language-model windows (``charlm``, ``suggest``) and
zero-padded ragged sequences (``dates``, ``sentiment-large``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._base import Split

__all__ = ["lm_splits", "pad_ids", "token_stream"]


def lm_splits(
    train_ids: np.ndarray,
    val_ids: np.ndarray,
    seq_len: int,
    n_train: int,
    seed: int,
    train_info: dict[str, Any],
    val_info: dict[str, Any],
) -> tuple[Split, Split]:
    """(train, val) next-token splits of two token-id streams: x, y (T=seq_len, N) int64.

    Train: ``n_train`` windows of ``seq_len + 1`` tokens at random offsets of ``train_ids``
    (``default_rng(seed)``); val: consecutive windows of ``val_ids``. x is each window but its last
    token, y the window shifted by one (the next token of each step).
    """
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(train_ids) - seq_len, size=n_train)
    win = starts[None, :] + np.arange(seq_len + 1)[:, None]  # (T+1, N)
    n_val = (len(val_ids) - 1) // seq_len
    vwin = (np.arange(n_val) * seq_len)[None, :] + np.arange(seq_len + 1)[:, None]
    train, val = (
        Split(np.ascontiguousarray(w[:-1]), np.ascontiguousarray(w[1:]), info=info)
        for w, info in ((train_ids[win], train_info), (val_ids[vwin], val_info))
    )
    return train, val


def pad_ids(seqs: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Ragged id sequences -> (x (T, N) int64 time-major, zero past each length; lengths (N,)
    int64), T the longest sequence."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    x = np.zeros((int(lengths.max()), len(seqs)), dtype=np.int64)
    for j, s in enumerate(seqs):
        x[: len(s), j] = s
    return x, lengths


def token_stream(split: Split) -> np.ndarray:
    """(N * (T + 1),) int64 the token ids of a next-token split: the first input of every window,
    then every window's targets; what the n-gram baselines fit on when no training text is given."""
    return np.concatenate([split.x[:1].reshape(-1), split.y.T.reshape(-1)])
