"""Training loops: ``fit`` (full BPTT, truncated BPTT, stateful streams), ``evaluate``, datasets,
history, callbacks and early stopping, with crash-safe checkpoints and exact resume.

::

    model = rnnfast.build_model("lstm", 1, 32, 1, mode="many_to_one", seed=0)
    opt = rnnfast.optim.Adam(model.parameters(), lr=1e-2)
    history = rnnfast.fit(model, (x, y), rnnfast.losses.MSELoss(), opt, epochs=10, batch_size=32,
                          val_data=(xv, yv), clip_norm=1.0, seed=0, checkpoint="run/ckpt.npz")

Data layout follows the model, like its forward: time-major x (T, N, I) floats or token ids (T, N);
targets per the model's mode: many_to_one (N, O) floats or (N,) class ids; many_to_many / one_to_many
(T, N, O) or (T, N) ids; one_to_one x (N, I) and y (N, O) / (N,). A tuple (x, y[, lengths]) given
to a ``batch_first=True`` model is read batch-first: x (N, T, I), sequence targets (N, T, O). A
:class:`Dataset` says its layout itself (``batch_first=False`` by default) and a task's Split is
time-major, whatever the model. ``lengths`` (N,) marks ragged sequences (padding at the end; padded
steps are masked out of the loss; :func:`rnnfast.data.pad` makes them).

Modes of ``fit``:

* ``bptt=None``: full backpropagation through time per batch.
* ``bptt=(k1, k2)``: truncated BPTT (Williams & Peng's TBPTT(k1, k2)) through the model's
  ``stream_*`` methods, i.e. one C++ ``functional.TBPTTStream`` per layer called once per chunk: a weight update
  every k1 steps, each backpropagated through the last k2 steps (many_to_many / one_to_many models,
  unidirectional). Every step runs forward once; the k2 - k1 history steps of a window keep the
  activations computed with the weights of their time, the backward uses the current weights
  (k1 == k2 is exactly the torch "detach every k steps" loop). Memory is O(k2), independent of T.
* ``stateful=True`` (Keras's stateful RNNs): row i of batch j+1 continues row i of batch j (use
  :func:`stateful_batches` to cut a long series that way). No shuffling; the final state of each
  batch is carried into the next (detached: gradients stop at batch boundaries unless ``bptt`` gives
  a longer k2); the state is zeroed at every epoch start and, per row, wherever the Dataset's
  ``resets`` flags a new sequence.

Reliability: with ``checkpoint=path`` the latest state is written atomically (rnnfast.io) every
``checkpoint_every`` epochs and the best model (lowest monitored loss) to ``<stem>.best<suffix>``;
``resume=True`` continues from the latest checkpoint bit for bit (weights, optimizer and scheduler
state, data order, RNG states, carried TBPTT/stateful state, partial-epoch statistics). SIGINT (Ctrl-C)
stops at the next optimizer-step boundary, writes a final checkpoint when ``checkpoint`` is set, and
raises :class:`TrainingInterrupted` (a KeyboardInterrupt carrying the history); a second Ctrl-C
interrupts at once. A non-finite loss or gradient raises :class:`NonFiniteError` naming the epoch,
step and parameter (``on_nonfinite="skip"`` skips that update instead and counts it).

Determinism: all randomness comes from ``seed`` (data order, and -- when given -- the model's
dropout RNG); nothing reads NumPy's global RNG.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable

import numpy as np

from . import io as _io
from . import optim as _optim
from ._loader import core as _core
from ._threads import with_single_thread_blas
from .losses import sequence_mask
from .modules import SequenceModel

__all__ = [
    "Callback",
    "Dataset",
    "EarlyStopping",
    "History",
    "LambdaCallback",
    "NonFiniteError",
    "TrainingInterrupted",
    "evaluate",
    "fit",
    "stateful_batches",
]

Array = np.ndarray
_SEQ_MODES = ("many_to_many", "one_to_many")


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------


class NonFiniteError(FloatingPointError):
    """A non-finite loss or gradient stopped training. Attributes: epoch, step (global optimizer step,
    0-based), batch (index within the epoch), name ("loss" or the parameter name)."""

    def __init__(self, message: str, *, epoch: int, step: int, batch: int, name: str) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step
        self.batch = batch
        self.name = name


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT stopped ``fit`` at a step boundary. ``history`` holds the completed epochs;
    ``checkpoint`` is the path of the final checkpoint (None if none was asked for)."""

    def __init__(self, history: History, checkpoint: str | None) -> None:
        super().__init__(
            "training interrupted" + (f"; checkpoint written to {checkpoint}" if checkpoint else "")
        )
        self.history = history
        self.checkpoint = checkpoint


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------


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
    from .tasks import Split  # here, not at the top: rnnfast.tasks imports this module in run_task

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
# history and callbacks
# --------------------------------------------------------------------------------------------------


class History:
    """Per-epoch records. ``epochs``: list of dicts with "epoch", "loss", "val_loss" (None without
    validation), metric values ("accuracy", "val_accuracy", ...), "grad_norm" (mean pre-clip global
    norm), "grad_norm_max", "clip_fraction", "lr", "seq_per_s", "steps", "skipped" (non-finite updates
    skipped), "time_s"; ``history["loss"]`` gives one key over all epochs."""

    def __init__(self, epochs: list[dict[str, Any]] | None = None) -> None:
        self.epochs: list[dict[str, Any]] = list(epochs or [])
        #: why training ended: "completed", "early_stopping", "callback" or "interrupted".
        self.stop_reason: str = "completed"

    def __getitem__(self, key: str) -> list[Any]:
        return [e.get(key) for e in self.epochs]

    def __len__(self) -> int:
        return len(self.epochs)

    @property
    def history(self) -> dict[str, list[Any]]:
        """Keras-style dict key -> list over epochs."""
        keys: list[str] = []
        for e in self.epochs:
            keys += [k for k in e if k not in keys]
        return {k: self[k] for k in keys}

    def to_json(self, path: str | None = None) -> str:
        """JSON text of the epoch list (non-finite floats as null); also written to ``path`` if given."""

        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, dict):
                return {k: clean(u) for k, u in v.items()}
            if isinstance(v, list):
                return [clean(u) for u in v]
            return v

        text = json.dumps(clean(self.epochs), indent=1)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        return text

    def rows(self) -> list[dict[str, Any]]:
        """One plain dict per epoch (the table of :meth:`to_csv`): every key that any epoch has, in
        order of appearance, scalar values only (``None`` where an epoch lacks a key or the value
        is not finite; the per-step ``grad_flow`` lists are left out, see ``epochs``)."""
        keys: list[str] = []
        for e in self.epochs:
            keys += [k for k, v in e.items() if k not in keys and not isinstance(v, (list, dict))]

        def scalar(v: Any) -> Any:
            if isinstance(v, (np.generic,)):
                v = v.item()
            if isinstance(v, float) and not math.isfinite(v):
                return None
            return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)

        return [{k: scalar(e.get(k)) for k in keys} for e in self.epochs]

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`rows` as CSV (a header line, one line per epoch, empty cells for None)."""
        import csv

        rows = self.rows()
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            keys = list(rows[0]) if rows else ["epoch", "loss", "val_loss"]
            w.writerow(keys)
            for r in rows:
                w.writerow(["" if r[k] is None else _cell(r[k]) for k in keys])

    def __repr__(self) -> str:
        n = len(self.epochs)
        if n == 0:
            return "History(0 epochs)"
        last = self.epochs[-1]
        head = f"History({n} epochs"
        if self.stop_reason != "completed":
            head += f", stopped by {self.stop_reason.replace('_', ' ')}"
        parts = [head]
        shown = [
            f"{k} {last[k]:.4g}"
            for k in ("loss", "val_loss", "accuracy", "val_accuracy")
            if isinstance(last.get(k), (int, float))
        ]
        if shown:
            parts.append("last: " + ", ".join(shown))
        key = "val_loss" if any(e.get("val_loss") is not None for e in self.epochs) else "loss"
        vals = [
            (float(e[key]), e.get("epoch", i + 1))
            for i, e in enumerate(self.epochs)
            if isinstance(e.get(key), (int, float)) and math.isfinite(float(e[key]))
        ]
        if vals:
            best, at = min(vals)
            parts.append(f"best {key} {best:.4g} at epoch {at}")
        return "; ".join(parts) + ")"


class Callback:
    """Base class of fit callbacks; override any hook. ``self.trainer`` (set by fit) exposes
    ``model``, ``optimizer``, ``history`` and ``stop_training`` (set True to stop after this epoch)."""

    trainer: Any = None

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        """Before the first epoch (logs: {"epoch": start epoch})."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any]) -> None:
        """At the start of each epoch."""

    def on_batch_end(self, step: int, logs: dict[str, Any]) -> None:
        """After each optimizer step (logs: loss, grad_norm, lr, epoch, batch)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        """After each epoch with the epoch's history record."""

    def on_train_end(self, logs: dict[str, Any]) -> None:
        """After training (also after early stopping; not after an interrupt or error)."""


class LambdaCallback(Callback):
    """A callback from plain functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``."""

    def __init__(self, **hooks: Callable[..., Any]) -> None:
        for k, f in hooks.items():
            if not hasattr(Callback, k) or not k.startswith("on_"):
                raise ValueError(f"{k}: not a callback hook")
            setattr(self, k, f)


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    ``restore_best``: at the end put back the weights of the best epoch. ``monitor`` defaults to
    "val_loss" (falls back to "loss" without validation data). ``mode`` "min" or "max".
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 5,
        min_delta: float = 0.0,
        mode: str = "min",
        restore_best: bool = True,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode: expected 'min' or 'max', got {mode!r}")
        if (
            isinstance(patience, (bool, np.bool_))
            or not isinstance(patience, (int, np.integer))
            or patience < 0
        ):
            raise ValueError(f"patience: expected an int >= 0, got {patience!r}")
        self.monitor = monitor
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.mode = mode
        self.restore_best = bool(restore_best)
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self.best_weights: dict[str, Array] | None = None

    def _value(self, logs: Mapping[str, Any]) -> float | None:
        v = logs.get(self.monitor)
        if v is None and self.monitor == "val_loss":
            v = logs.get("loss")
        return None if v is None else float(v)

    def improved(self, value: float) -> bool:
        """Whether ``value`` beats the best so far by more than min_delta."""
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        v = self._value(logs)
        if v is None:
            return
        if self.improved(v):
            self.best, self.best_epoch, self.wait = v, epoch, 0
            if self.restore_best:
                self.best_weights = self.trainer.model.state_dict()
        else:
            self.wait += 1
            if self.wait > self.patience:
                self.trainer.stop_training = True
                self.trainer.stop_reason = "early_stopping"

    def on_train_end(self, logs: dict[str, Any]) -> None:
        if self.restore_best and self.best_weights is not None:
            self.trainer.model.load_state_dict(self.best_weights)

    def state(self) -> dict[str, Any]:
        """JSON-able counters (for checkpoints); best weights are stored as arrays separately."""
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state(self, d: Mapping[str, Any]) -> None:
        """Restore :meth:`state`."""
        self.best, self.best_epoch, self.wait = (
            d.get("best"),
            d.get("best_epoch"),
            int(d.get("wait", 0)),
        )


class _Trainer:
    """What callbacks see as ``self.trainer``."""

    def __init__(self, model: Any, optimizer: Any, history: History) -> None:
        self.model = model
        self.optimizer = optimizer
        self.history = history
        self.stop_training = False
        self.stop_reason = "callback"


# --------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------


def _is_class_loss(loss: Any, pred: Array, y: Array) -> bool:
    name = type(loss).__name__
    if name == "CrossEntropyLoss":
        return True
    if name in ("BCEWithLogitsLoss", "MSELoss"):
        return False
    return y.dtype.kind in "iu" and pred.ndim == y.ndim + 1


def _accuracy_counts(loss: Any, pred: Array, y: Array, mask: Array | None) -> tuple[float, float]:
    """(correct, count) for "accuracy": argmax for class targets, logit > 0 vs target > 0.5 otherwise."""
    if _is_class_loss(loss, pred, y):
        ok = np.argmax(pred, axis=-1) == y
        valid = np.ones(y.shape, dtype=bool)
        ignore = getattr(loss, "ignore_index", None)
        if ignore is not None:
            valid &= y != ignore
    else:
        yy = np.asarray(y).reshape(pred.shape)
        ok = (pred > 0) == (yy > 0.5)
        valid = np.ones(ok.shape, dtype=bool)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        valid &= m.reshape(m.shape + (1,) * (valid.ndim - m.ndim))
    return float(np.sum(ok & valid)), float(np.sum(valid))


def _check_metrics(metrics: Sequence[Any]) -> list[tuple[str, Any]]:
    out = []
    for m in metrics:
        if m == "accuracy":
            out.append(("accuracy", "accuracy"))
        elif callable(m):
            out.append((getattr(m, "__name__", "metric"), m))
        else:
            raise ValueError(
                f"metrics: expected 'accuracy' or a callable f(pred, y, mask), got {m!r}"
            )
    return out


class _Acc:
    """Running sums of one epoch (plain Python floats, exact to save in JSON)."""

    def __init__(self, d: Mapping[str, Any] | None = None) -> None:
        self.s: dict[str, float] = dict(d) if d else {}

    def add(self, k: str, v: float) -> None:
        self.s[k] = self.s.get(k, 0.0) + float(v)

    def max(self, k: str, v: float) -> None:
        self.s[k] = max(self.s.get(k, -math.inf), float(v))

    def get(self, k: str, default: float = 0.0) -> float:
        return self.s.get(k, default)


# --------------------------------------------------------------------------------------------------
# batches through the model
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


@with_single_thread_blas  # NumPy's BLAS pool would fight the kernels' threads
def evaluate(
    model: SequenceModel,
    data: Any,
    loss: Any,
    *,
    batch_size: int = 256,
    metrics: Sequence[Any] = (),
) -> dict[str, float]:
    """Loss (and metrics) of ``model`` on ``data`` in eval mode (restored afterwards).

    ``data`` is a Dataset, a task's Split (``rnnfast.tasks``) or (x, y) / (x, y, lengths), as for
    :func:`fit`.
    Returns {"loss": mean over loss items (valid steps / samples), "accuracy": ..., ...}. Batches are
    whole sequences (full forward passes), whatever mode the model was trained in.
    """
    if not isinstance(model, SequenceModel):
        raise TypeError(f"model: expected a rnnfast.SequenceModel, got {type(model).__name__}")
    if not callable(getattr(loss, "forward", None)):
        raise TypeError(
            f"loss: expected an rnnfast loss with forward(pred, target, mask), "
            f"got {type(loss).__name__}"
        )
    if (
        isinstance(batch_size, (bool, np.bool_))
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    ds = _as_dataset(data, model.mode, "data", model.rnn.batch_first)
    mets = _check_metrics(metrics)
    was = model.training
    model.eval()
    acc = _Acc()
    try:
        for xb, yb, lb in ds.batches(int(batch_size)):
            pred, y, mask = _forward_batch(model, xb, yb, lb)
            value = loss.forward(pred, y, mask)
            w = _n_items(mask, y, model)
            acc.add("loss", value * w)
            acc.add("n", w)
            for name, m in mets:
                if m == "accuracy":
                    c, n = _accuracy_counts(loss, pred, y, mask)
                    acc.add("acc_c", c)
                    acc.add("acc_n", n)
                else:
                    acc.add(name, float(m(pred, y, mask)) * y.shape[ds.y_axis])
                    acc.add(name + "_n", y.shape[ds.y_axis])
    finally:
        model.train(was)
    out = {"loss": acc.get("loss") / max(acc.get("n"), 1.0)}
    for name, m in mets:
        if m == "accuracy":
            out["accuracy"] = acc.get("acc_c") / max(acc.get("acc_n"), 1.0)
        else:
            out[name] = acc.get(name) / max(acc.get(name + "_n"), 1.0)
    return out


# --------------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------------


def _same_memory(a: Any, b: Array) -> bool:
    """True when ``a`` is an array over exactly the memory of ``b`` (e.g. two views of one
    parameter, as a model and its optimizer hold after being copied together)."""
    return (
        isinstance(a, np.ndarray)
        and a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.shape == b.shape
        and a.strides == b.strides
        and a.dtype == b.dtype
    )


def _check_optimizer_params(model: SequenceModel, optimizer: Any) -> None:
    """An rnnfast optimizer (one with a ``params`` dict) must update this model's live arrays."""
    opt_params = getattr(optimizer, "params", None)
    if not isinstance(opt_params, Mapping):
        return  # a duck-typed optimizer: step(grads) is all fit relies on
    for name, p in model.parameters().items():
        q = opt_params.get(name)
        if q is not p and not _same_memory(q, p):
            what = "has no parameter" if name not in opt_params else "holds a different array for"
            raise ValueError(
                f"optimizer: expected an optimizer over this model's parameters, but it {what} "
                f"{name!r}; build it with e.g. rnnfast.Adam(model.parameters(), lr=...)"
            )


def _resolve_distributed(distributed: Any) -> Any:
    """fit's ``distributed`` -> a rnnfast.distributed.DataParallel or None (mpi4py is imported
    only when data parallelism is asked for)."""
    if distributed is None:
        mod = sys.modules.get(f"{__package__}.distributed")
        return None if mod is None else mod.current()
    if distributed is False:
        return None
    from . import distributed as _dist

    return _dist.resolve(distributed)


def _best_path(path: str) -> str:
    root, ext = os.path.splitext(path)
    return f"{root}.best{ext or '.npz'}"


def _stdio_is_tty() -> bool:
    try:
        return sys.stderr.isatty() and sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


class _Stop(Exception):
    """Internal: SIGINT seen at a step boundary."""


def _real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


#: Accumulator entries that count things: finite and >= 0 (metric counts end in "_n").
_ACC_COUNTS = ("n", "acc_c", "acc_n", "clipped", "updates", "seqs", "skipped", "elapsed", "gn_sum")


def _check_resume(
    path: str,
    fm: Mapping[str, Any],
    extra_arrays: Mapping[str, Any],
    *,
    n_seq: int,
    t_steps: int,
    batch_size: int,
    bptt: tuple[int, int] | None,
    stateful: bool,
) -> None:
    """Validate fit's resume state read from ``path`` before anything is restored.

    Tampered or nonsensical values raise CheckpointError naming the key; settings that differ from
    the recorded ones (exact resume replays the run) raise ValueError naming both values.
    """

    def bad(key: str, expected: str, got: Any) -> _io.CheckpointError:
        return _io.CheckpointError(f"{path}: {key}: expected {expected}, got {got!r}")

    # settings recorded by the run (older checkpoints lack batch_size and n_sequences)
    current = {
        "bptt": list(bptt) if bptt else None,
        "stateful": bool(stateful),
        "batch_size": batch_size,
        "n_sequences": n_seq,
    }
    for key, now in current.items():
        if key in fm and fm[key] != now:
            raise ValueError(
                f"{key}: the checkpoint {path} was written with {key}={fm[key]!r}, this call has "
                f"{key}={now!r}; resume with the settings of the run (exact resume replays it)"
            )
    pos = fm.get("pos")
    if not isinstance(pos, Mapping):
        raise bad("fit.pos", "an object with epoch, batch, chunk, step", pos)
    for k in ("epoch", "batch", "chunk", "step"):
        v = pos.get(k)
        if not _real(v) or not isinstance(v, int) or v < 0:
            raise bad(f"fit.pos.{k}", "an int >= 0", v)
    n_batches = (n_seq + batch_size - 1) // batch_size
    if pos["batch"] > n_batches:
        raise bad("fit.pos.batch", f"at most {n_batches} (batches per epoch)", pos["batch"])
    k1 = bptt[0] if bptt else t_steps
    n_chunks = (t_steps + k1 - 1) // k1 if (bptt is not None or stateful) else 1
    if pos["chunk"] >= n_chunks or (pos["chunk"] and pos["batch"] == n_batches):
        raise bad("fit.pos.chunk", f"less than {n_chunks} (chunks per batch)", pos["chunk"])
    history = fm.get("history")
    if not isinstance(history, list) or len(history) != pos["epoch"]:
        raise bad(
            "fit.history",
            f"a list of {pos['epoch']} epoch records (fit.pos.epoch)",
            type(history).__name__ if not isinstance(history, list) else f"{len(history)} records",
        )
    for i, rec in enumerate(history):
        if (
            not isinstance(rec, Mapping)
            or rec.get("epoch") != i + 1
            or isinstance(rec.get("epoch"), bool)
            or not _real(rec.get("loss"))
        ):
            raise bad(f"fit.history[{i}]", f"a record with epoch {i + 1} and a loss", rec)
    acc = fm.get("acc")
    if not isinstance(acc, Mapping):
        raise bad("fit.acc", "an object of running sums", acc)
    for k, v in acc.items():
        if not _real(v):
            raise bad(f"fit.acc[{k!r}]", "a number", v)
        if (k in _ACC_COUNTS or k.endswith("_n")) and not (math.isfinite(v) and v >= 0):
            raise bad(f"fit.acc[{k!r}]", "a finite number >= 0", v)
        if k == "gn_max" and (math.isnan(v) or v < 0):
            raise bad(f"fit.acc[{k!r}]", "a number >= 0", v)
    best = fm.get("best_loss")
    if best is not None and not (_real(best) and math.isfinite(best)):
        raise bad("fit.best_loss", "null or a finite number", best)
    es = fm.get("early_stopping")
    if es is not None:
        if not isinstance(es, Mapping):
            raise bad("fit.early_stopping", "an object", es)
        if es.get("best") is not None and not _real(es["best"]):
            raise bad("fit.early_stopping.best", "null or a number", es["best"])
        for k in ("best_epoch", "wait"):
            v = es.get(k, 0)
            if v is not None and (not _real(v) or not isinstance(v, int) or v < 0):
                raise bad(f"fit.early_stopping.{k}", "an int >= 0", v)
    if "order" in extra_arrays:
        order = np.asarray(extra_arrays["order"])
        if (
            order.dtype.kind not in "iu"
            or order.shape != (n_seq,)
            or not np.array_equal(np.sort(order), np.arange(n_seq))
        ):
            raise bad(
                "extra_arrays['order']",
                f"a permutation of the {n_seq} training sequences",
                f"{order.dtype} array of shape {order.shape}",
            )
    elif pos["batch"] or pos["chunk"]:
        raise bad("extra_arrays['order']", "the epoch's batch order (mid-epoch position)", None)
    ints = fm.get("stream_ints", {})
    if not isinstance(ints, Mapping) or not all(_real(v) for v in ints.values()):
        raise bad("fit.stream_ints", "an object of ints", ints)


@with_single_thread_blas  # NumPy's BLAS pool would fight the kernels' threads
def fit(
    model: SequenceModel,
    train_data: Any,
    loss: Any,
    optimizer: Any,
    *,
    epochs: int,
    batch_size: int,
    bptt: tuple[int, int] | None = None,
    stateful: bool = False,
    clip_norm: float | None = None,
    clip_value: float | None = None,
    scheduler: Any = None,
    val_data: Any = None,
    callbacks: Sequence[Callback | Callable[..., Any]] = (),
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    early_stopping: EarlyStopping | int | None = None,
    progress: bool = True,
    seed: int | None = None,
    metrics: Sequence[Any] = (),
    on_nonfinite: str = "raise",
    log_grad_flow: bool = False,
    distributed: Any = None,
    verbose: int | None = None,
) -> History:
    """Train ``model`` (a SequenceModel) and return its :class:`History`.

    Args:
        model: rnnfast.SequenceModel (its parameters are updated in place).
        train_data, val_data: Dataset, a task's Split (``rnnfast.tasks``) or (x, y) /
            (x, y, lengths), in the model's layout (time-major, or batch-first for a
            ``batch_first=True`` model; module docstring).
        loss: an rnnfast loss (``loss(pred, target, mask) -> (value, dpred)``).
        optimizer: an rnnfast optimizer over ``model.parameters()`` (``step(grads)``, ``lr``).
        epochs: total number of epochs (a resumed run continues up to this number).
        batch_size: sequences per batch.
        bptt: None (full BPTT) or (k1, k2) truncated BPTT with k2 >= k1 >= 1.
        stateful: carry the final state of each batch into the next (see the module docstring).
        clip_norm / clip_value: clip the global gradient norm / each entry before every update.
        scheduler: an rnnfast LR scheduler, stepped once per epoch (ReduceLROnPlateau with the
            monitored loss: val_loss, or loss without validation data).
        callbacks: Callback objects or functions ``f(epoch, logs)`` called at each epoch end (return
            True to stop).
        checkpoint: file path of the latest checkpoint (best model in ``<stem>.best<suffix>``).
        checkpoint_every: epochs between latest-checkpoint writes (the last epoch is always written).
        resume: continue from ``checkpoint`` if that file exists (else start fresh).
        early_stopping: an EarlyStopping, or an int patience (monitor val_loss, restore best).
        progress: tqdm bar (loss, grad norm, lr, seq/s) when stdout and stderr are terminals.
        verbose: None (default): the bar of ``progress`` only, nothing that stays (unchanged, so
            callers that print their own lines, like the CLI, do not print twice); 0: silent (no
            bar either); 1: one line per epoch on stdout that stays (Keras's habit: epoch, loss,
            metrics, val_loss, seconds), with the bar during the epoch on a terminal; 2: the
            lines, never a bar (logs, notebooks).
        seed: seeds the data order and (when given) re-seeds the model's dropout RNG.
        metrics: "accuracy" and/or callables ``f(pred, y, mask) -> float`` (train and val).
        on_nonfinite: "raise" (NonFiniteError naming epoch, step and parameter) or "skip" the update.
        log_grad_flow: add "grad_flow" to each epoch record: per layer/direction, ||dL/dh_t|| averaged
            over the batch, for every step t of the epoch's last full-BPTT batch.
        distributed: data parallelism over MPI (see :mod:`rnnfast.distributed`): None uses the
            context of ``rnnfast.distributed.init()`` if one was made, True makes it, False never;
            or a ``rnnfast.distributed.DataParallel``. ``batch_size`` is then the global batch.

    Raises:
        NonFiniteError, TrainingInterrupted (SIGINT), ValueError/TypeError for bad arguments.
    """
    # ---- arguments --------------------------------------------------------------------------------
    if not isinstance(model, SequenceModel):
        raise TypeError(f"model: expected a rnnfast.SequenceModel, got {type(model).__name__}")
    if not callable(getattr(optimizer, "step", None)):
        raise TypeError(
            f"optimizer: expected an rnnfast optimizer with step(grads), got {type(optimizer).__name__}"
        )
    if not callable(loss):
        raise TypeError(
            f"loss: expected a callable loss(pred, target, mask), got {type(loss).__name__}"
        )
    _check_optimizer_params(model, optimizer)
    if seed is not None:
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed: expected None or an int >= 0, got {type(seed).__name__}")
        if seed < 0:
            raise ValueError(f"seed: expected None or an int >= 0, got {seed}")
    for name, v in (
        ("epochs", epochs),
        ("batch_size", batch_size),
        ("checkpoint_every", checkpoint_every),
    ):
        if (
            isinstance(v, bool)
            or not isinstance(v, (int, np.integer))
            or v < (0 if name == "epochs" else 1)
        ):
            raise ValueError(
                f"{name}: expected an int >= {0 if name == 'epochs' else 1}, got {v!r}"
            )
    epochs, batch_size = int(epochs), int(batch_size)
    if verbose is not None and (
        isinstance(verbose, (bool, np.bool_))
        or not isinstance(verbose, (int, np.integer))
        or verbose not in (0, 1, 2)
    ):
        raise ValueError(f"verbose: expected None, 0, 1 or 2, got {verbose!r}")
    if on_nonfinite not in ("raise", "skip"):
        raise ValueError(f"on_nonfinite: expected 'raise' or 'skip', got {on_nonfinite!r}")
    if bptt is not None:
        if not isinstance(bptt, (tuple, list)) or len(bptt) != 2:
            raise TypeError(f"bptt: expected None or a pair (k1, k2), got {bptt!r}")
        k1, k2 = (
            int(k) if isinstance(k, (int, np.integer)) and not isinstance(k, bool) else -1
            for k in bptt
        )
        if k1 < 1 or k2 < k1:
            raise ValueError(f"bptt: expected (k1, k2) with k2 >= k1 >= 1, got {tuple(bptt)}")
        bptt = (k1, k2)
    streaming = bptt is not None or bool(stateful)
    if streaming:
        if model.mode not in _SEQ_MODES:
            raise ValueError(
                f"bptt/stateful: truncated and stateful training need a per-step output "
                f"(many_to_many or one_to_many), got mode {model.mode!r}"
            )
        if model.rnn.bidirectional:
            raise ValueError(
                "bptt/stateful: a bidirectional model cannot stream (its backward direction "
                "needs the whole sequence); use bptt=None and stateful=False"
            )
    for name, v in (("clip_norm", clip_norm), ("clip_value", clip_value)):
        if v is not None and (  # NumPy scalars are numbers too (np.float32(1.0)); bools are not
            isinstance(v, (bool, np.bool_))
            or not isinstance(v, (int, float, np.integer, np.floating))
            or not v > 0
        ):
            raise ValueError(f"{name}: expected None or a float > 0, got {v!r}")
    clip_norm = None if clip_norm is None else float(clip_norm)
    clip_value = None if clip_value is None else float(clip_value)
    if isinstance(early_stopping, (int, np.integer)) and not isinstance(early_stopping, bool):
        early_stopping = EarlyStopping(patience=early_stopping)
    if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
        raise TypeError(
            f"early_stopping: expected an EarlyStopping or an int patience, got "
            f"{type(early_stopping).__name__}"
        )
    bf_model = model.rnn.batch_first
    train = _as_dataset(train_data, model.mode, "train_data", bf_model)
    val = None if val_data is None else _as_dataset(val_data, model.mode, "val_data", bf_model)
    for name, ds in (("train_data", train), ("val_data", val)):
        if ds is not None and ds.n == 0:
            raise ValueError(f"{name}: expected at least one sequence, got 0")
    if stateful:
        if train.n % batch_size != 0:
            raise ValueError(
                f"batch_size: stateful training needs the number of sequences ({train.n}) "
                f"to be a multiple of batch_size, got {batch_size}"
            )
        if train.lengths is not None:
            raise ValueError("train_data: stateful training takes dense series (no lengths)")
    mets = _check_metrics(metrics)
    cbs: list[Callback] = []
    for cb in callbacks:
        if isinstance(cb, Callback):
            cbs.append(cb)
        elif callable(cb):
            cbs.append(_FunctionCallback(cb))
        else:
            raise TypeError(
                f"callbacks: expected Callback objects or functions, got {type(cb).__name__}"
            )
    if early_stopping is not None:
        cbs.append(early_stopping)
    ckpt_path = None if checkpoint is None else os.fspath(checkpoint)
    if resume and ckpt_path is None:
        raise ValueError("resume: needs checkpoint=<path>")
    if ckpt_path is not None:  # before any training: a bad path must not cost an epoch's work
        ckpt_path = _io.check_writable(ckpt_path, "checkpoint")
        _io.check_writable(_best_path(ckpt_path), "checkpoint (best model)")

    # ---- state ------------------------------------------------------------------------------------
    dist = _resolve_distributed(distributed)
    if dist is not None:
        seed = dist.agree_seed(seed)
    history = History()
    trainer = _Trainer(model, optimizer, history)
    for cb in cbs:
        cb.trainer = trainer
    seq = np.random.SeedSequence(seed)
    data_seq, drop_seq = seq.spawn(2)
    data_rng = np.random.default_rng(data_seq)
    if seed is not None:
        model.rnn.rng = np.random.default_rng(drop_seq)
    pos = {"epoch": 0, "batch": 0, "chunk": 0, "step": 0}
    acc = _Acc()
    order: Array | None = None
    best_loss: float | None = None
    stream_loaded = False
    if resume and ckpt_path is not None and os.path.exists(ckpt_path):
        ck = _io.load(ckpt_path)
        fm = ck.meta.get("fit")
        if not isinstance(fm, Mapping):
            raise ValueError(f"checkpoint: {ckpt_path} was not written by fit (no 'fit' metadata)")
        _check_resume(
            ckpt_path,
            fm,
            ck.extra_arrays,
            n_seq=train.n,
            t_steps=int(train.x.shape[0]),
            batch_size=batch_size,
            bptt=bptt,
            stateful=bool(stateful),
        )
        try:  # validated layouts, before anything is restored
            resumed_rngs = [_io.rng_from_state(fm[k]) for k in ("data_rng", "model_rng")]
        except (KeyError, ValueError) as exc:
            raise _io.CheckpointError(f"{ckpt_path}: fit.data_rng / fit.model_rng: {exc}") from None
        ck.restore_model(model)
        if ck.optimizer_state is not None:
            ck.restore_optimizer(optimizer)
        if scheduler is not None and ck.scheduler_state is not None:
            ck.restore_scheduler(scheduler)
        pos = {k: int(fm["pos"][k]) for k in ("epoch", "batch", "chunk", "step")}
        acc = _Acc(fm["acc"])
        data_rng, model.rnn.rng = resumed_rngs
        history.epochs = [dict(e) for e in fm["history"]]
        best_loss = fm.get("best_loss")
        if "order" in ck.extra_arrays:
            order = np.asarray(ck.extra_arrays["order"], dtype=np.int64)
        if early_stopping is not None and "early_stopping" in fm:
            early_stopping.load_state(fm["early_stopping"])
            bw = {k[len("best/") :]: v for k, v in ck.extra_arrays.items() if k.startswith("best/")}
            early_stopping.best_weights = bw or None
        sa = {k[len("stream/") :]: v for k, v in ck.extra_arrays.items() if k.startswith("stream/")}
        if sa:
            sa.update(fm.get("stream_ints", {}))
            try:
                model.stream_import(sa)
            except (KeyError, ValueError, TypeError, IndexError) as exc:
                raise _io.CheckpointError(
                    f"{ckpt_path}: extra_arrays['stream/...'] / fit.stream_ints: the carried "
                    f"stream cannot be restored ({type(exc).__name__}: {exc})"
                ) from None
            stream_loaded = True
    if dist is not None:
        dist.setup(model)  # rank 0's weights everywhere; own dropout stream per rank

    def save_latest(path: str) -> None:
        if dist is not None and not dist.is_root:
            return
        meta = {
            "fit": {
                "pos": dict(pos),
                "acc": dict(acc.s),
                "data_rng": _io.rng_state(data_rng),
                "model_rng": _io.rng_state(model.rnn.rng),
                "history": history.epochs,
                "best_loss": best_loss,
                "bptt": list(bptt) if bptt else None,
                "stateful": bool(stateful),
                "batch_size": batch_size,  # checked on resume, as bptt and stateful
                "n_sequences": train.n,
            }
        }
        extra: dict[str, Any] = {}
        if order is not None:
            extra["order"] = order
        if early_stopping is not None:
            meta["fit"]["early_stopping"] = early_stopping.state()
            if early_stopping.best_weights is not None:
                extra.update({f"best/{k}": v for k, v in early_stopping.best_weights.items()})
        if streaming and model.rnn._stream is not None:
            ints = {}
            for k, v in model.stream_export().items():
                if isinstance(v, (int, np.integer)):
                    ints[k] = int(v)
                elif isinstance(v, tuple):
                    extra[f"stream/{k}"] = np.stack(v)  # LSTM (h, c) -> (2, L, B, H)
                else:
                    extra[f"stream/{k}"] = v
            meta["fit"]["stream_ints"] = ints
        _io.save(path, model, optimizer, meta, scheduler=scheduler, extra_arrays=extra)

    # ---- SIGINT -----------------------------------------------------------------------------------
    interrupted = {"flag": False, "synced": False}

    def on_sigint(signum: int, frame: Any) -> None:
        if interrupted["flag"]:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        interrupted["flag"] = True

    old_handler: Any = None
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        old_handler = signal.signal(signal.SIGINT, on_sigint)

    is_root = dist is None or dist.is_root
    use_bar = bool(progress) and verbose not in (0, 2) and _stdio_is_tty() and is_root
    epoch_lines = verbose in (1, 2) and is_root
    grads = model.grads
    # The model's gradients as one flat buffer (rnnfast modules keep them so): the non-finite
    # check, the norm, the clipping and the update are then one call each over it.
    gflat = _optim._flat_view(list(grads.values()))
    opt_flat = getattr(optimizer, "_flat", None)
    fused = (
        gflat is not None
        and isinstance(optimizer, _optim.Optimizer)
        and opt_flat is not None
        and opt_flat.size == gflat.size
        and list(optimizer.params) == list(grads)
    )

    def check_finite_grads(ep: int, bi: int) -> str | None:
        for name, g in grads.items():
            if not np.all(np.isfinite(g)):
                return name
        return None

    def grad_norm_and_bad() -> tuple[float, str | None]:
        """The global L2 norm of the gradients (float64 accumulation) and the first parameter
        with a non-finite gradient (None if all are finite)."""
        sumsq, _ = _optim.grad_sumsq_maxabs(gflat if gflat is not None else grads)
        if math.isfinite(sumsq):
            return math.sqrt(sumsq), None
        return math.sqrt(sumsq), check_finite_grads(0, 0)  # which one (or an overflow: none)

    def update(ep: int, bi: int, value: float) -> bool:
        """Checks, clipping and the optimizer step; False if the update was skipped."""
        step = pos["step"]
        if not math.isfinite(value):
            if on_nonfinite == "raise":
                raise NonFiniteError(
                    f"non-finite loss ({value}) at epoch {ep}, step {step} (batch {bi})",
                    epoch=ep,
                    step=step,
                    batch=bi,
                    name="loss",
                )
            model.zero_grad()
            acc.add("skipped", 1)
            return False
        norm, bad = grad_norm_and_bad()
        if bad is not None:
            if on_nonfinite == "raise":
                raise NonFiniteError(
                    f"non-finite gradient of parameter {bad!r} at epoch {ep}, step {step} "
                    f"(batch {bi})",
                    epoch=ep,
                    step=step,
                    batch=bi,
                    name=bad,
                )
            model.zero_grad()
            acc.add("skipped", 1)
            return False
        g_all: Any = gflat if gflat is not None else grads
        clipped = False
        if clip_norm is not None:  # clip_grad_norm_'s rule, with the norm computed above
            coef = clip_norm / (norm + 1e-6) if math.isfinite(norm) else 1.0
            if coef < 1.0:
                clipped = True
                if gflat is not None:
                    _core.grad_scale(gflat, coef)  # g *= coef
                else:
                    for g in grads.values():
                        g *= coef
        if clip_value is not None:
            clipped = _optim.clip_grad_value_(g_all, clip_value) > clip_value or clipped
        optimizer.step(gflat if fused else grads)
        model.zero_grad()
        acc.add("gn_sum", norm)
        acc.max("gn_max", norm)
        acc.add("clipped", float(clipped))
        acc.add("updates", 1)
        pos["step"] += 1
        return True

    def add_metrics(pred: Array, y: Array, mask: Array | None, value: float) -> None:
        a: Any = acc if dist is None else dist.stats  # distributed: summed over ranks per step
        w = _n_items(mask, y, model)
        if dist is None:
            a.add("loss", value * w)  # distributed: added by reduce_step with the global value
        a.add("n", w)
        for name, m in mets:
            if m == "accuracy":
                c, n = _accuracy_counts(loss, pred, y, mask)
                a.add("acc_c", c)
                a.add("acc_n", n)
            else:
                a.add(name, float(m(pred, y, mask)))
                a.add(name + "_n", 1)

    def reduce_step(pred: Array, y: Array, mask: Array | None, value: float) -> float:
        """Distributed: one Allreduce of gradients, loss and statistics; returns the global loss."""
        if dist is None:
            return value
        share = dist.loss_share(loss, pred, y, mask)
        n0 = acc.get("n")
        value, stop = dist.allreduce_step(grads, value, share, into=acc, stop=interrupted["flag"])
        acc.add("loss", value * (acc.get("n") - n0))  # global batch loss x global items
        interrupted["synced"] = stop  # the same on every rank: all stop after the same step
        return value

    def after_step(ep: int, bi: int, value: float) -> None:
        logs = {
            "epoch": ep,
            "batch": bi,
            "loss": value,
            "lr": float(getattr(optimizer, "lr", float("nan"))),
        }
        for cb in cbs:
            cb.on_batch_end(pos["step"], logs)
        if interrupted["flag"] if dist is None else interrupted["synced"]:
            raise _Stop

    def finite_state_or_reset() -> None:
        st = model.stream_state
        if st is None:
            return
        parts = st if isinstance(st, tuple) else (st,)
        bad = np.zeros(parts[0].shape[1], dtype=bool)
        for a in parts:
            bad |= ~np.all(np.isfinite(a), axis=(0, 2))
        if bad.any():
            # drop the history too: the stored activations of those rows are not finite
            model.stream_reset(np.flatnonzero(bad), drop_history=True)

    grad_flow: list[list[float]] | None = None
    bar: Any = None
    # Non-finite values are detected and reported by fit itself (NonFiniteError / skip): NumPy's
    # overflow/invalid warnings on the way there would only duplicate that.
    errstate = np.errstate(over="ignore", invalid="ignore", divide="ignore")
    errstate.__enter__()
    try:
        for cb in cbs:
            cb.on_train_begin({"epoch": pos["epoch"]})
        while pos["epoch"] < epochs and not trainer.stop_training:
            ep = pos["epoch"]
            fresh_epoch = pos["batch"] == 0 and pos["chunk"] == 0 and order is None
            if fresh_epoch:
                acc = _Acc()
                order = (
                    data_rng.permutation(train.n)
                    if (train.shuffle and not stateful)
                    else np.arange(train.n)
                )
                for cb in cbs:
                    cb.on_epoch_begin(ep, {"epoch": ep})
            assert order is not None
            n_batches = (train.n + batch_size - 1) // batch_size
            t0 = time.perf_counter()
            if use_bar:
                from tqdm.auto import tqdm

                bar = tqdm(
                    total=n_batches,
                    initial=pos["batch"],
                    desc=f"epoch {ep + 1}/{epochs}",
                    leave=False,
                    file=sys.stderr,
                )
            if stateful and not stream_loaded and pos["batch"] == 0 and pos["chunk"] == 0:
                k1s, k2s = bptt if bptt else (train.x.shape[0], train.x.shape[0])
                # chunks never exceed T and the stream restarts every epoch (n_batches * T steps):
                # size its buffers by that, not by a larger k2 (same gradients)
                t_all = train.x.shape[0]
                k1s, k2s = min(k1s, t_all), min(k2s, n_batches * t_all)
                model.stream_begin(
                    batch_size if dist is None else dist.local_size(batch_size),
                    k1s,
                    k2s,
                    replayable=ckpt_path is not None,
                )
            stream_loaded = False
            model.train()
            while pos["batch"] < n_batches:
                bi = pos["batch"]
                idx = order[bi * batch_size : (bi + 1) * batch_size]
                xb, yb, lb = train.batch(idx) if dist is None else dist.batch(train, idx)
                seqs = len(idx)
                if not streaming:
                    pred, y, mask = _forward_batch(model, xb, yb, lb)
                    value, dpred = loss(pred, y, mask)
                    add_metrics(pred, y, mask, value)
                    if math.isfinite(value):
                        _backward_batch(model, dpred)
                        if log_grad_flow:
                            grad_flow = [
                                np.linalg.norm(np.asarray(g, np.float64), axis=2)
                                .mean(axis=1)
                                .tolist()
                                for g in model.rnn.last_state_grads
                            ]
                    value = reduce_step(pred, y, mask, value)
                    update(ep, bi, value)
                    acc.add("seqs", seqs)
                    pos["batch"] += 1
                    if bar is not None:
                        _bar_update(bar, acc, optimizer, t0)
                    after_step(ep, bi, value)
                    continue
                # streaming: truncated BPTT within the batch and/or stateful carry across batches
                t_steps = xb.shape[0]
                k1 = bptt[0] if bptt else t_steps
                if stateful:
                    if pos["chunk"] == 0 and train.resets is not None:
                        rows = np.flatnonzero(
                            train.resets[idx if dist is None else dist.local_index(idx)]
                        )
                        if rows.size:
                            model.stream_reset(rows)
                elif pos["chunk"] == 0:  # a new batch starts fresh (also right after a resume:
                    # a stream restored from a checkpoint taken at a batch boundary is the finished
                    # batch's, whose state must not carry into this one)
                    # the batch's stream ends after t_steps: no window is longer, so its buffers
                    # are sized by min(k2, T) (same gradients; bptt=(3, 20000) on 10 steps must
                    # not allocate 20000 steps)
                    model.stream_begin(
                        xb.shape[1],
                        min(k1, t_steps),
                        min(bptt[1], t_steps) if bptt else t_steps,
                        lengths=lb,
                        replayable=ckpt_path is not None,
                    )
                n_chunks = (t_steps + k1 - 1) // k1
                while pos["chunk"] < n_chunks:
                    c = pos["chunk"]
                    a, b = c * k1, min((c + 1) * k1, t_steps)
                    pred = model.stream_forward(xb[a:b])
                    y = yb[a:b]
                    mask = None if lb is None else sequence_mask(np.clip(lb - a, 0, b - a), b - a)
                    value, dpred = loss(pred, y, mask)
                    add_metrics(pred, y, mask, value)
                    if math.isfinite(value):
                        model.stream_backward(dpred)
                    value = reduce_step(pred, y, mask, value)
                    ok = update(ep, bi, value)
                    if not ok:
                        finite_state_or_reset()
                    pos["chunk"] += 1
                    if pos["chunk"] == n_chunks:
                        pos["chunk"] = 0
                        pos["batch"] += 1
                        acc.add("seqs", seqs)
                        if bar is not None:
                            _bar_update(bar, acc, optimizer, t0)
                    after_step(ep, bi, value)
                    if pos["chunk"] == 0:
                        break
            if bar is not None:
                bar.close()
                bar = None
            # ---- epoch end ----
            elapsed = time.perf_counter() - t0 + acc.get("elapsed")
            rec: dict[str, Any] = {
                "epoch": ep + 1,
                "loss": acc.get("loss") / max(acc.get("n"), 1.0),
            }
            for name, m in mets:
                if m == "accuracy":
                    rec["accuracy"] = acc.get("acc_c") / max(acc.get("acc_n"), 1.0)
                else:
                    rec[name] = acc.get(name) / max(acc.get(name + "_n"), 1.0)
            rec["val_loss"] = None
            if val is not None:
                ev = evaluate(model, val, loss, batch_size=max(batch_size, 256), metrics=metrics)
                rec["val_loss"] = ev["loss"]
                for k, v in ev.items():
                    if k != "loss":
                        rec[f"val_{k}"] = v
            updates = acc.get("updates")
            rec.update(
                {
                    "grad_norm": acc.get("gn_sum") / updates if updates else None,
                    "grad_norm_max": acc.get("gn_max") if updates else None,
                    "clip_fraction": acc.get("clipped") / updates if updates else 0.0,
                    "lr": float(getattr(optimizer, "lr", float("nan"))),
                    "seq_per_s": acc.get("seqs") / elapsed if elapsed > 0 else None,
                    "steps": int(updates),
                    "skipped": int(acc.get("skipped")),
                    "time_s": elapsed,
                }
            )
            if log_grad_flow and grad_flow is not None:
                rec["grad_flow"] = grad_flow
            history.epochs.append(rec)
            if epoch_lines:
                print(_epoch_line(rec, epochs), flush=True)
            monitored = rec["val_loss"] if rec["val_loss"] is not None else rec["loss"]
            if scheduler is not None:
                if isinstance(scheduler, _optim.ReduceLROnPlateau):
                    scheduler.step(monitored)
                else:
                    scheduler.step()
            for cb in cbs:
                r = cb.on_epoch_end(ep, rec)
                if r is True:
                    trainer.stop_training = True
            pos.update(epoch=ep + 1, batch=0, chunk=0)
            order = None
            acc = _Acc()
            if stateful and model.rnn._stream is not None:
                model.stream_end()
            elif streaming:
                model.stream_end()
            if ckpt_path is not None:
                if (
                    monitored is not None
                    and math.isfinite(monitored)
                    and (best_loss is None or monitored < best_loss)
                ):
                    best_loss = float(monitored)
                    if dist is None or dist.is_root:
                        best_meta = {"epoch": ep + 1, "loss": best_loss}
                        _io.save(_best_path(ckpt_path), model, None, best_meta)
                last = pos["epoch"] >= epochs or trainer.stop_training
                if (ep + 1) % checkpoint_every == 0 or last:
                    save_latest(ckpt_path)
        if trainer.stop_training:
            history.stop_reason = trainer.stop_reason
        for cb in cbs:
            cb.on_train_end({"epoch": pos["epoch"]})
        return history
    except _Stop:
        history.stop_reason = "interrupted"
        if ckpt_path is not None:
            save_latest(ckpt_path)
        raise TrainingInterrupted(history, ckpt_path) from None
    finally:
        errstate.__exit__(None, None, None)
        if bar is not None:
            bar.close()
        if in_main:
            signal.signal(signal.SIGINT, old_handler)
        model.zero_grad()
        if streaming and model.rnn._stream is not None:
            model.stream_end()


def _epoch_line(rec: Mapping[str, Any], epochs: int) -> str:
    """``fit(verbose=1)``'s line: "epoch 3/20 - loss 0.0123 - val_loss 0.015 - 1.2 s"."""
    parts = [f"epoch {rec['epoch']}/{epochs}"]
    for k, v in rec.items():
        if k == "loss" or (k not in _NOT_IN_LINE and isinstance(v, float)):
            parts.append(f"{k} {v:.4g}")
    parts.append(f"{rec.get('time_s') or 0.0:.1f} s")
    return " - ".join(parts)


def _cell(v: Any) -> Any:
    return repr(v) if isinstance(v, float) else v  # repr: every digit of a float


#: epoch-record keys that fit's verbose line leaves out (statistics, not results)
_NOT_IN_LINE = frozenset(
    ("epoch", "grad_norm", "grad_norm_max", "clip_fraction", "lr", "seq_per_s", "time_s")
)


def _bar_update(bar: Any, acc: _Acc, optimizer: Any, t0: float) -> None:
    el = time.perf_counter() - t0
    upd = acc.get("updates")
    bar.update(1)
    bar.set_postfix(
        loss=f"{acc.get('loss') / max(acc.get('n'), 1.0):.4g}",
        gnorm=f"{acc.get('gn_sum') / upd:.3g}" if upd else "-",
        lr=f"{float(getattr(optimizer, 'lr', float('nan'))):.3g}",
        seq_s=f"{acc.get('seqs') / el:.0f}" if el > 0 else "-",
        refresh=False,
    )


class _FunctionCallback(Callback):
    def __init__(self, f: Callable[..., Any]) -> None:
        self.f = f

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> Any:  # type: ignore[override]
        return self.f(epoch, logs)
