"""Training data: :class:`Dataset` (arrays with their batch axes), a task's :class:`Split`, the
reading of fit's ``train_data`` / ``val_data`` arguments, :func:`stateful_batches`, and one batch
through the model (forward with its loss mask, backward) in the model's layout.

Layout: see :mod:`rnnfast.training` (time-major unless a Dataset or the model says batch-first).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..losses import sequence_mask
from ..modules import SequenceModel

__all__ = ["Dataset", "Split", "stateful_batches"]

Array = np.ndarray
_SEQ_MODES = ("many_to_many", "one_to_many")


@dataclass
class Split:
    """One split of a task's data: ``x``, ``y`` and optional ragged ``lengths`` (time-major; see
    :mod:`rnnfast.tasks`).

    :func:`rnnfast.fit` and :func:`rnnfast.evaluate` take a Split directly (or the tuple ``(x, y)``
    / ``(x, y, lengths)`` of :meth:`as_tuple`). ``info`` carries task-specific extras (e.g. the
    vocabulary). Defined here, below the tasks, so that training needs no import of
    ``rnnfast.tasks`` (which re-exports it as ``rnnfast.tasks.Split``).
    """

    x: np.ndarray
    y: np.ndarray
    lengths: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of sequences (the batch axis, axis 1 of ``x``)."""
        return int(self.x.shape[1])

    def as_tuple(self) -> tuple[np.ndarray, ...]:
        """``(x, y)`` or ``(x, y, lengths)`` for :func:`rnnfast.fit` / :func:`rnnfast.evaluate`."""
        if self.lengths is None:
            return (self.x, self.y)
        return (self.x, self.y, self.lengths)


class Dataset:
    """Arrays (x, y[, lengths]) with their batch axes, yielding (x, y, lengths) batches.

    Args:
        x: time-major sequences (T, N, I) / token ids (T, N), or (N, I) / (N,) for one_to_one;
            batch-first (N, T, I) / (N, T) with ``batch_first=True``.
        y: targets (see the module docstring for the layout per mode).
        lengths: optional int (N,) valid lengths.
        mode: the model mode the arrays are laid out for; fixes the batch axes (x: 1 for sequences,
            0 for one_to_one; y: 1 for many_to_many / one_to_many, else 0). None: inferred by
            ``fit`` from the model, or here from the shapes (x float 3-D / int 2-D -> axis 1; y -> axis
            1 if its first two axes equal x's (T, N), else 0).
        resets: optional bool (N,) for stateful training: True where a row starts a new sequence.
        shuffle: shuffle every epoch (seeded by fit's ``seed``); ignored in stateful mode.
        batch_first: x and sequence targets are (N, T, ...) (every batch axis is 0). They are held
            as time-major views (``self.x``, ``self.y``; no copy), whatever the model's layout.
    """

    def __init__(
        self,
        x: Any,
        y: Any,
        lengths: Any = None,
        *,
        mode: str | None = None,
        resets: Any = None,
        shuffle: bool = True,
        batch_first: bool = False,
    ) -> None:
        self.x = np.asarray(x)
        self.y = np.asarray(y)
        if self.x.dtype.kind not in "fiu" or self.y.dtype.kind not in "fiub":
            raise TypeError(
                f"x, y: expected numeric arrays, got dtypes {self.x.dtype}, {self.y.dtype}"
            )
        self.mode = mode
        self.shuffle = bool(shuffle)
        self.batch_first = bool(batch_first)
        self._given = (self.x, self.y)  # as passed: with_mode re-reads them
        self._set_axes(mode)
        if self.batch_first:  # held time-major (views), as the rest of fit expects
            if self.x_axis == 1:
                self.x = np.swapaxes(self.x, 0, 1)
            if self.y_axis == 1:
                self.y = np.swapaxes(self.y, 0, 1)
        n = self.n
        self.lengths = None
        if lengths is not None:
            lens = np.asarray(lengths)
            if lens.dtype.kind not in "iu":
                raise TypeError(f"lengths: expected an integer array (N,), got dtype {lens.dtype}")
            if lens.shape != (n,):
                raise ValueError(f"lengths: expected shape ({n},), got {lens.shape}")
            t_max = self.x.shape[0] if self.x_axis == 1 else 1
            if n and (lens.min() < 0 or lens.max() > t_max):
                raise ValueError(
                    f"lengths: expected values in [0, {t_max}], got min {lens.min()}, max {lens.max()}"
                )
            self.lengths = lens.astype(np.int64)
        self.resets = None
        if resets is not None:
            r = np.asarray(resets)
            if r.shape != (n,):
                raise ValueError(f"resets: expected shape ({n},), got {r.shape}")
            self.resets = r.astype(bool)

    def _set_axes(self, mode: str | None) -> None:
        x, y = self.x, self.y
        if mode is None:
            seq_x = x.ndim == 3 or (x.ndim == 2 and x.dtype.kind in "iu")
            self.x_axis = 1 if seq_x else 0
            self.y_axis = (
                1 if (self.x_axis == 1 and y.ndim >= 2 and y.shape[:2] == x.shape[:2]) else 0
            )
        else:
            if mode not in ("many_to_many", "many_to_one", "one_to_many", "one_to_one"):
                raise ValueError(f"mode: expected a SequenceModel mode, got {mode!r}")
            self.x_axis = 0 if mode == "one_to_one" else 1
            self.y_axis = 1 if mode in _SEQ_MODES else 0
        # the axes of the arrays as given (batch-first: every batch axis is 0)
        xa, ya = (0, 0) if self.batch_first else (self.x_axis, self.y_axis)
        if x.ndim <= self.x_axis or y.ndim <= self.y_axis:
            raise ValueError(
                f"x, y: arrays of shapes {x.shape}, {y.shape} do not fit mode {mode!r}"
            )
        if x.shape[xa] != y.shape[ya]:
            seq = self.x_axis == 1
            if not seq:
                layout = ""
            elif self.batch_first:
                layout = " is batch-first (N, T, ...):"
            else:
                layout = " is time-major (T, N, ...):"
            hint = ""
            if seq and not self.batch_first and x.shape[0] == y.shape[0]:
                hint = (
                    "; batch-first arrays (N, T, ...)? train a batch_first=True model, or pass "
                    "rnnfast.Dataset(x, y, batch_first=True)"
                )
            elif seq and self.batch_first and y.ndim > 1 and x.shape[1] == y.shape[self.y_axis]:
                hint = "; time-major arrays (T, N, ...)? pass rnnfast.Dataset(x, y) (time-major)"
            raise ValueError(
                f"y: expected {x.shape[xa]} samples along axis {ya} (x {x.shape}{layout} its "
                f"batch axis is {xa}), got shape {y.shape}{hint}"
            )
        self.mode = mode

    def with_mode(self, mode: str) -> Dataset:
        """This dataset with batch axes fixed for ``mode`` (returns self if already so)."""
        if self.mode == mode:
            return self
        return Dataset(
            *self._given,
            self.lengths,
            mode=mode,
            resets=self.resets,
            shuffle=self.shuffle,
            batch_first=self.batch_first,
        )

    @property
    def n(self) -> int:
        """Number of samples."""
        return int(self.x.shape[self.x_axis])

    def __len__(self) -> int:
        return self.n

    def batch(self, idx: Array) -> tuple[Array, Array, Array | None]:
        """(x, y, lengths) of the samples ``idx``; sequence batches are trimmed to their longest length."""
        xb = np.take(self.x, idx, axis=self.x_axis)
        yb = np.take(self.y, idx, axis=self.y_axis)
        lb = None if self.lengths is None else self.lengths[idx]
        if lb is not None and self.x_axis == 1 and lb.size:
            t = max(int(lb.max()), 1)
            if t < xb.shape[0]:
                xb = xb[:t]
                if self.y_axis == 1:
                    yb = yb[:t]
        return xb, yb, lb

    def batches(
        self, batch_size: int, rng: np.random.Generator | None = None
    ) -> Iterable[tuple[Array, Array, Array | None]]:
        """Iterate over batches (shuffled with ``rng`` when given and ``shuffle``)."""
        order = rng.permutation(self.n) if (rng is not None and self.shuffle) else np.arange(self.n)
        for i in range(0, self.n, batch_size):
            yield self.batch(order[i : i + batch_size])


def _as_dataset(data: Any, mode: str, name: str, batch_first: bool = False) -> Dataset:
    """``data`` (a Dataset, a task Split, or a tuple (x, y) / (x, y, lengths)) as a Dataset for
    ``mode``; TypeError naming the argument ``name`` otherwise. A tuple is read batch-first when
    ``batch_first`` (the model's layout); a Dataset keeps its own, a Split is time-major."""
    if isinstance(data, Dataset):
        return data.with_mode(mode) if data.mode is None or data.mode != mode else data
    if isinstance(data, (tuple, list)) and len(data) in (2, 3):
        bf = bool(batch_first) and mode != "one_to_one"
        try:
            return Dataset(*data, mode=mode, batch_first=bf)
        except ValueError as exc:
            if "samples along axis" not in str(exc):
                raise
            why = " (a tuple is read batch-first: the model is batch_first=True)" if bf else ""
            raise ValueError(f"{name}: {exc}{why}") from None
    if isinstance(data, Split):
        return Dataset(*data.as_tuple(), mode=mode)
    got = type(data).__name__
    if isinstance(data, (tuple, list)):
        got = f"a {got} of {len(data)} items"
    raise TypeError(
        f"{name}: expected a rnnfast.Dataset, a task Split (rnnfast.tasks.Split) or a tuple "
        f"(x, y) / (x, y, lengths), got {got}"
    )


def stateful_batches(
    series: Any, targets: Any, batch_size: int, seq_len: int
) -> tuple[Array, Array]:
    """Cut a long series for stateful training (Keras layout).

    ``series`` (L, I) (or token ids (L,)) and ``targets`` (L, ...) are split into ``batch_size``
    contiguous streams, each cut into segments of ``seq_len`` steps (the tail that does not fill a
    segment is dropped). Returns time-major (x, y) of shapes (seq_len, n_seg * batch_size, ...) where
    batch j (columns j*B .. j*B+B-1) holds segment j of every stream, so row i of batch j+1 continues
    row i of batch j. Use with ``fit(..., stateful=True, batch_size=batch_size)``; for a
    ``batch_first=True`` model pass ``rnnfast.Dataset(x, y)`` (time-major), since a plain tuple is
    read in the model's layout. For forecasting windows that keep every step, see
    :func:`rnnfast.data.windows`.
    """
    s = np.asarray(series)
    t = np.asarray(targets)
    if s.shape[0] != t.shape[0]:
        raise ValueError(f"targets: expected {s.shape[0]} steps like series, got shape {t.shape}")
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size, seq_len: expected >= 1, got {batch_size}, {seq_len}")
    per_stream = s.shape[0] // batch_size
    n_seg = per_stream // seq_len
    if n_seg < 1:
        raise ValueError(
            f"series: {s.shape[0]} steps are too short for {batch_size} streams of at least "
            f"{seq_len} steps"
        )

    def cut(a: Array) -> Array:
        a = a[: batch_size * per_stream].reshape((batch_size, per_stream) + a.shape[1:])
        a = a[:, : n_seg * seq_len].reshape((batch_size, n_seg, seq_len) + a.shape[2:])
        a = np.moveaxis(a, 2, 0)  # (seq_len, B, n_seg, ...)
        a = np.swapaxes(a, 1, 2)  # (seq_len, n_seg, B, ...): column j*B + i = segment j of stream i
        return np.ascontiguousarray(a.reshape((seq_len, n_seg * batch_size) + a.shape[3:]))

    return cut(s), cut(t)


# --------------------------------------------------------------------------------------------------
# one batch through the model
# --------------------------------------------------------------------------------------------------


def _mask_for(model: SequenceModel, lb: Array | None, t_steps: int) -> Array | None:
    if lb is None or model.mode not in _SEQ_MODES:
        return None
    return sequence_mask(lb, t_steps)


def _n_items(mask: Array | None, y: Array, model: SequenceModel) -> float:
    if mask is not None:
        return float(np.sum(mask))
    if model.mode in _SEQ_MODES:
        return float(y.shape[0] * y.shape[1])
    return float(y.shape[0])


def _forward_batch(
    model: SequenceModel, xb: Array, yb: Array, lb: Array | None
) -> tuple[Array, Array, Array | None]:
    """Model predictions (time-major) for a time-major batch; returns (pred, y, mask)."""
    bf = model.rnn.batch_first and model.mode != "one_to_one"
    t_steps = xb.shape[0] if model.mode != "one_to_one" else 1
    mask = _mask_for(model, lb, t_steps)
    xin = np.swapaxes(xb, 0, 1) if bf else xb
    pred = model.forward(xin, lengths=lb if model.mode != "one_to_one" else None)
    if bf and model.mode in _SEQ_MODES:
        pred = np.swapaxes(pred, 0, 1)
    return pred, yb, mask


def _backward_batch(model: SequenceModel, dpred: Array) -> None:
    bf = model.rnn.batch_first and model.mode in _SEQ_MODES
    model.backward(np.ascontiguousarray(np.swapaxes(dpred, 0, 1)) if bf else dpred)
