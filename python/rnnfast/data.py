"""Your own data as arrays for :func:`rnnfast.fit`: forecasting windows and padded token lists.

::

    series = np.loadtxt("load.csv", delimiter=",", skiprows=1)      # (L, F)
    x, y = rnnfast.data.windows(series, input_len=48, horizon=1)     # x (48, N, F), y (N, F)
    ids, lengths = rnnfast.data.pad([[3, 1, 4], [1, 5], [9]])         # ids (3, 3), lengths (3,)

Both return time-major arrays by default, like the modules (``batch_first=True`` gives the
batch-first layout that Keras and ``batch_first=True`` PyTorch models use); :func:`rnnfast.fit`
reads a tuple in the layout of the model it trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["Windows", "pad", "windows"]

Array = np.ndarray


def _int_at_least(name: str, v: Any, low: int) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {v!r}")
    return int(v)


class Windows(tuple):
    """``(x, y)`` from :func:`windows`, unpackable and accepted by ``fit`` as a tuple, with
    ``target_index`` (N,) int64: the index in the series of each window's first target step (the
    step after the window's inputs), to put predictions back on the series' time axis."""

    target_index: Array

    def __new__(cls, x: Array, y: Array, target_index: Array) -> Windows:
        obj = super().__new__(cls, (x, y))
        obj.target_index = target_index
        return obj

    @property
    def x(self) -> Array:
        """The inputs: (input_len, N, F) time-major, (N, input_len, F) batch-first."""
        return self[0]

    @property
    def y(self) -> Array:
        """The targets: (N, horizon * D), step-major (the D targets of step 1, then of step 2...)."""
        return self[1]

    def __repr__(self) -> str:
        return f"Windows(x {self[0].shape}, y {self[1].shape})"


def windows(
    series: Any,
    input_len: int,
    horizon: int = 1,
    stride: int = 1,
    *,
    target: int | Sequence[int] | None = None,
    batch_first: bool = False,
    dtype: Any = np.float32,
) -> Windows:
    """Cut a series into (input window, next values) pairs for forecasting (many_to_one models).

    Args:
        series: (L,) or (L, F) numbers, oldest first.
        input_len: steps the model sees (>= 1).
        horizon: steps it predicts after them (>= 1).
        stride: steps between the starts of consecutive windows (>= 1).
        target: the column(s) of ``series`` to predict (default: all of them).
        batch_first: x (N, input_len, F) instead of time-major (input_len, N, F).
        dtype: of x and y (float32, as the models' default).

    Returns:
        :class:`Windows` ``(x, y)``: x (input_len, N, F) (a 1-D series counts as F = 1), y
        (N, horizon * D) for D target columns, step-major; ``.target_index`` (N,) the position of
        each window's first target in ``series``. ``N = (L - input_len - horizon) // stride + 1``.

    The tail is never dropped: windows are aligned to the *end* of the series, so the last window's
    last target is the last value. When ``L - input_len - horizon`` is not a multiple of
    ``stride``, the ``(L - input_len - horizon) % stride`` *oldest* steps are in no window (with
    ``stride=1`` every step is used). Windows are in time order
    (oldest first); split train and validation by ``target_index``, not at random, to keep
    the future out of training.
    """
    s = np.asarray(series)
    if s.dtype.kind not in "fiub":
        raise TypeError(f"series: expected numbers, got dtype {s.dtype}")
    if s.ndim == 1:
        s = s[:, None]
    if s.ndim != 2:
        raise ValueError(f"series: expected shape (L,) or (L, F), got {np.shape(series)}")
    input_len = _int_at_least("input_len", input_len, 1)
    horizon = _int_at_least("horizon", horizon, 1)
    stride = _int_at_least("stride", stride, 1)
    n_steps, n_feat = s.shape
    if target is None:
        cols = list(range(n_feat))
    else:
        raw = [target] if isinstance(target, (int, np.integer)) else list(target)
        cols = []
        for c in raw:
            if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)):
                raise TypeError(f"target: expected column indices (ints), got {target!r}")
            if not -n_feat <= c < n_feat:
                raise ValueError(f"target: column {c} out of range for {n_feat} columns")
            cols.append(int(c) % n_feat)
        if not cols:
            raise ValueError("target: expected at least one column, got none")
    span = input_len + horizon
    if n_steps < span:
        raise ValueError(
            f"series: {n_steps} steps are too short for one window of input_len {input_len} + "
            f"horizon {horizon} = {span} steps"
        )
    n = (n_steps - span) // stride + 1
    first = (n_steps - span) - (n - 1) * stride  # the oldest steps that start no window
    starts = first + stride * np.arange(n)
    sv = s.astype(dtype, copy=False)
    x = sv[starts[:, None] + np.arange(input_len)[None, :]]  # (N, input_len, F)
    tsteps = starts[:, None] + input_len + np.arange(horizon)[None, :]  # (N, horizon)
    y = sv[tsteps][:, :, cols].reshape(n, horizon * len(cols))
    if not batch_first:
        x = np.swapaxes(x, 0, 1)
    return Windows(
        np.ascontiguousarray(x), np.ascontiguousarray(y), (starts + input_len).astype(np.int64)
    )


def pad(
    sequences: Sequence[Any],
    *,
    padding_value: float = 0,
    maxlen: int | None = None,
    truncating: str = "post",
    batch_first: bool = False,
    dtype: Any = None,
) -> tuple[Array, Array]:
    """Pad ragged sequences (token id lists, or (len, F) arrays) into one array, padding at the end.

    Args:
        sequences: N sequences of token ids (lists / 1-D arrays) or of feature vectors ((len, F)).
        padding_value: the value of padded steps (it never reaches the loss: ``lengths`` masks them).
        maxlen: cut longer sequences to this many steps (default: the longest length).
        truncating: "post" keeps the first ``maxlen`` steps, "pre" the last ``maxlen``.
        batch_first: (N, T, ...) instead of time-major (T, N, ...).
        dtype: of the result (default: int64 for integer input, else float32).

    Returns:
        ``(padded, lengths)``: padded (T, N) / (T, N, F) (batch-first (N, T[, F])) and lengths (N,)
        int64, the ``lengths`` that ``fit``, ``evaluate`` and the modules take (PyTorch's
        ``pad_sequence`` plus the lengths of ``pack_padded_sequence``). Empty sequences have length 0.
    """
    if isinstance(sequences, np.ndarray) and sequences.dtype != object:
        seqs = list(sequences)
    elif isinstance(sequences, (list, tuple)):
        seqs = list(sequences)
    else:
        raise TypeError(f"sequences: expected a list of sequences, got {type(sequences).__name__}")
    if truncating not in ("post", "pre"):
        raise ValueError(f"truncating: expected 'post' or 'pre', got {truncating!r}")
    arrs = [np.asarray(q) for q in seqs]
    if not arrs:
        raise ValueError("sequences: expected at least one sequence, got none")
    feat: tuple[int, ...] | None = None
    for i, a in enumerate(arrs):
        if a.dtype.kind not in "fiub" and a.size:
            raise TypeError(f"sequences[{i}]: expected numbers, got dtype {a.dtype}")
        if a.ndim == 0 or a.ndim > 2:
            raise ValueError(
                f"sequences[{i}]: expected a 1-D sequence or (len, F), got shape {a.shape}"
            )
        if a.size == 0 and a.ndim == 1:
            continue  # an empty list fits any feature shape
        if feat is None:
            feat = a.shape[1:]
        elif a.shape[1:] != feat:
            raise ValueError(
                f"sequences[{i}]: expected steps of shape {feat} like the others, got {a.shape[1:]}"
            )
    feat = feat or ()
    if dtype is None:
        kinds = {a.dtype.kind for a in arrs if a.size}
        dtype = np.int64 if kinds <= {"i", "u", "b"} else np.float32
    lengths = np.array([len(a) for a in arrs], dtype=np.int64)
    if maxlen is not None:
        maxlen = _int_at_least("maxlen", maxlen, 1)
        lengths = np.minimum(lengths, maxlen)
    t_max = int(maxlen if maxlen is not None else max(lengths.max(), 1))
    out = np.full((len(arrs), t_max, *feat), padding_value, dtype=dtype)
    for i, a in enumerate(arrs):
        k = int(lengths[i])
        if k:
            out[i, :k] = a[:k] if truncating == "post" else a[len(a) - k :]
    if not batch_first:
        out = np.ascontiguousarray(np.swapaxes(out, 0, 1))
    return out, lengths
