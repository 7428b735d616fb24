"""Callbacks and history of :func:`rnnfast.fit`: :class:`History` (the per-epoch records, their
repr, rows and CSV), the :class:`Callback` hooks, :class:`LambdaCallback`, :class:`EarlyStopping`,
and the progress output (the tqdm bar's figures, ``verbose``'s epoch line).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    from .metrics import _Acc

__all__ = ["Callback", "EarlyStopping", "History", "LambdaCallback"]

Array = np.ndarray


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
    """Base class of fit callbacks; override any hook. ``self.trainer`` (set by fit: the Trainer)
    exposes ``model``, ``optimizer``, ``history`` and ``stop_training`` (set True to stop after this
    epoch)."""

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


class _FunctionCallback(Callback):
    def __init__(self, f: Callable[..., Any]) -> None:
        self.f = f

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> Any:  # type: ignore[override]
        return self.f(epoch, logs)


# --------------------------------------------------------------------------------------------------
# progress output
# --------------------------------------------------------------------------------------------------


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
