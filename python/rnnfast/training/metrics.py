"""Metrics of :func:`rnnfast.fit` and :func:`rnnfast.evaluate`: the "accuracy" counts, the check of
the ``metrics`` argument, and the running sums of an epoch (exact in JSON, so a checkpoint carries
them)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__: list[str] = []

Array = np.ndarray


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


def _check_eval_loss(loss: Any) -> None:
    """Evaluation calls ``loss.forward(pred, target, mask)`` (the value only)."""
    if not callable(getattr(loss, "forward", None)):
        raise TypeError(
            f"loss: expected an rnnfast loss with forward(pred, target, mask), "
            f"got {type(loss).__name__}"
        )


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


def _means(acc: _Acc, mets: Sequence[tuple[str, Any]]) -> dict[str, float]:
    """The metrics' values from their sums in ``acc`` ("accuracy": correct / count; others: sum /
    weight)."""
    out: dict[str, float] = {}
    for name, m in mets:
        if m == "accuracy":
            out["accuracy"] = acc.get("acc_c") / max(acc.get("acc_n"), 1.0)
        else:
            out[name] = acc.get(name) / max(acc.get(name + "_n"), 1.0)
    return out
