"""Losses with their gradients (pure NumPy, float32 / float64 preserving).

Every loss is a small object, configured once and called many times::

    loss_fn = CrossEntropyLoss(ignore_index=-100)
    loss, dlogits = loss_fn(logits, target)          # value (Python float) and dL/dlogits
    value = loss_fn.forward(logits, target)          # value only
    dlogits = loss_fn.backward(logits, target)       # gradient only

* ``loss_fn(pred, target, mask=None) -> (loss: float, dpred: ndarray)``: the value and its gradient
  in one pass; ``dpred`` has the shape and dtype of ``pred`` and is the gradient of the *returned*
  (reduced) loss, so it can be fed straight into a module's ``backward``.
* ``forward`` returns only the value, ``backward`` only the gradient (each computes just what it
  needs).

Dtypes: ``pred`` must be float32 or float64; the gradient has ``pred``'s dtype, the value is always
a Python float (accumulated in float64). Real-valued targets (MSE, BCE) may be any bool, integer or
floating dtype and are converted to ``pred``'s dtype; class targets (cross-entropy) must be
integers.

``mask`` (all losses): optional bool array (or 0/1 numbers) whose shape is a *leading prefix* of the
item shape -- ``pred.shape`` for MSE/BCE, ``target.shape`` for cross-entropy. For example ``pred``
of shape (T, B, D) with a (T, B) mask from :func:`sequence_mask` excludes the padded steps of a
ragged batch. Masked-out items contribute nothing to the value or the gradient, and
``reduction="mean"`` divides by the number of items that remain (times their trailing element count
for MSE/BCE).

Empty selections: if no item counts (zero-size input, everything masked or ignored) the value is 0.0
and the gradient is zero (PyTorch would return NaN for a mean over nothing; a padding-only batch
should not poison training). Non-finite values in ``pred`` propagate (NaN/Inf in the value and
gradient), so the training loop can detect them; they are not silently replaced.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "Loss",
    "MSELoss",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "sequence_mask",
]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_REDUCTIONS = ("mean", "sum")


# --------------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------------


def _as_pred(pred: Any, name: str = "pred") -> np.ndarray:
    arr = np.asarray(pred)
    if arr.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {arr.dtype}")
    return arr


def _as_real_target(target: Any, pred: np.ndarray, name: str = "target") -> np.ndarray:
    arr = np.asarray(target)
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{name}: expected a real (bool, integer or floating) dtype, got {arr.dtype}"
        )
    if arr.shape != pred.shape:
        raise ValueError(f"{name}: expected shape {pred.shape} (same as pred), got {arr.shape}")
    return arr.astype(pred.dtype, copy=False)


def _as_mask(mask: Any, item_shape: tuple[int, ...], name: str = "mask") -> np.ndarray | None:
    """Validate ``mask`` and return it as a bool array of shape ``item_shape[:mask.ndim]``."""
    if mask is None:
        return None
    arr = np.asarray(mask)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected a bool (or 0/1 numeric) dtype, got {arr.dtype}")
    if arr.ndim > len(item_shape) or arr.shape != item_shape[: arr.ndim]:
        raise ValueError(
            f"{name}: expected a leading prefix of shape {item_shape} "
            f"(e.g. {item_shape[:2]} or {item_shape}), got {arr.shape}"
        )
    if arr.dtype.kind != "b":
        bad = (arr != 0) & (arr != 1)
        if np.any(bad):
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{name}: expected only 0/1 values, got {arr[where]!r} at {where}")
        arr = arr != 0
    return arr


def _expand(mask: np.ndarray, ndim: int) -> np.ndarray:
    """Append trailing singleton axes so ``mask`` broadcasts against an ``ndim``-d array."""
    return mask.reshape(mask.shape + (1,) * (ndim - mask.ndim))


def _check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


# --------------------------------------------------------------------------------------------------
# base
# --------------------------------------------------------------------------------------------------


class Loss:
    """Base: ``__call__`` -> (value, gradient); ``forward`` -> value; ``backward`` -> gradient.

    Subclasses implement ``_compute(pred, target, mask, need_grad) -> (value, grad_or_None)``.
    """

    reduction: str

    def __call__(self, pred: Any, target: Any, mask: Any = None) -> tuple[float, np.ndarray]:
        """Return ``(loss, dpred)``: the reduced loss (float) and dL/dpred (pred's shape, dtype)."""
        value, grad = self._compute(pred, target, mask, True)
        assert grad is not None
        return value, grad

    def forward(self, pred: Any, target: Any, mask: Any = None) -> float:
        """Return the reduced loss value only (no gradient is computed)."""
        return self._compute(pred, target, mask, False)[0]

    def backward(self, pred: Any, target: Any, mask: Any = None) -> np.ndarray:
        """Return dL/dpred only (pred's shape and dtype)."""
        grad = self._compute(pred, target, mask, True)[1]
        assert grad is not None
        return grad

    def _compute(
        self, pred: Any, target: Any, mask: Any, need_grad: bool
    ) -> tuple[float, np.ndarray | None]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r})"


def _elementwise_reduce(
    elem: np.ndarray,
    mask: np.ndarray | None,
    reduction: str,
) -> tuple[float, float, np.ndarray | None]:
    """Reduce an elementwise loss: (value, scale, mask_broadcast); grad = d_elem * scale * m."""
    if mask is None:
        count = elem.size
        mfull = None
        total = float(np.sum(elem, dtype=np.float64))
    else:
        mfull = _expand(mask, elem.ndim)
        per_item = int(np.prod(elem.shape[mask.ndim :], dtype=np.int64))
        count = int(np.count_nonzero(mask)) * per_item
        # where= keeps NaN/Inf of masked-out (padding) elements from leaking into the value
        total = float(np.sum(elem, dtype=np.float64, where=np.broadcast_to(mfull, elem.shape)))
    if reduction == "sum":
        return total, 1.0, mfull
    if count == 0:
        return 0.0, 0.0, mfull
    return total / count, 1.0 / count, mfull


# --------------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------------


class MSELoss(Loss):
    r"""Half mean squared error: ``L = mean(1/2 (pred - target)^2)`` (``reduction="mean"``).

    With ``reduction="sum"``: ``L = sum(1/2 (pred - target)^2)``. The gradient is
    ``dL/dpred = (pred - target) / N`` (mean over N counted elements) or ``pred - target`` (sum).

    Note the factor 1/2: this loss is **half** of ``torch.nn.MSELoss`` (which has no 1/2), and its
    gradient is half of torch's. The 1/2 is the textbook convention that makes the gradient the
    plain residual ``pred - target``.

    Args:
        reduction: ``"mean"`` (default) or ``"sum"``.

    Call: ``loss, dpred = MSELoss()(pred, target, mask=None)``; ``pred`` any shape, float32/float64;
    ``target`` the same shape (converted to pred's dtype); ``mask`` a leading prefix of pred's
    shape.
    """

    def __init__(self, reduction: str = "mean") -> None:
        self.reduction = _check_reduction(reduction)

    def _compute(
        self, pred: Any, target: Any, mask: Any, need_grad: bool
    ) -> tuple[float, np.ndarray | None]:
        p = _as_pred(pred)
        y = _as_real_target(target, p)
        m = _as_mask(mask, p.shape)
        diff = p - y
        elem = 0.5 * diff * diff
        value, scale, mfull = _elementwise_reduce(elem, m, self.reduction)
        if not need_grad:
            return value, None
        grad = diff * scale
        if mfull is not None:
            grad = np.where(mfull, grad, 0).astype(p.dtype, copy=False)
        return value, grad


def _softplus_parts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (softplus(x), softplus(-x), exp(-|x|)) computed without overflow or cancellation."""
    e = np.exp(-np.abs(x))
    l1p = np.log1p(e)
    sp_pos = np.maximum(x, 0) + l1p  # log(1 + e^x)
    sp_neg = np.maximum(-x, 0) + l1p  # log(1 + e^-x)
    return sp_pos, sp_neg, e


class BCEWithLogitsLoss(Loss):
    r"""Binary cross-entropy on logits (numerically stable), as ``torch.nn.BCEWithLogitsLoss``.

    For a logit ``x`` and target ``y`` in [0, 1] (soft labels allowed), with ``p = pos_weight``::

        l(x, y) = -[p * y * log(sigmoid(x)) + (1 - y) * log(1 - sigmoid(x))]
                = p * y * softplus(-x) + (1 - y) * softplus(x)
        dl/dx   = (1 - y) * sigmoid(x) - p * y * sigmoid(-x)           (= sigmoid(x) - y when p = 1)

    ``softplus(x) = max(x, 0) + log1p(exp(-|x|))`` never overflows, so logits of any finite size
    give a finite loss and gradient.

    Args:
        pos_weight: optional weight of positive examples, a scalar or an array that broadcasts to
            ``pred``'s trailing axes (typically shape (C,) for C independent outputs); must be >= 0.
        reduction: ``"mean"`` (default) or ``"sum"``.

    Call: ``loss, dlogits = BCEWithLogitsLoss()(logits, target, mask=None)``; ``logits`` any shape,
    float32/float64; ``target`` the same shape with values in [0, 1].
    """

    def __init__(self, pos_weight: Any = None, reduction: str = "mean") -> None:
        self.reduction = _check_reduction(reduction)
        if pos_weight is None:
            self.pos_weight: np.ndarray | None = None
        else:
            pw = np.asarray(pos_weight)
            if pw.dtype.kind not in "iuf":
                raise TypeError(f"pos_weight: expected a real numeric dtype, got {pw.dtype}")
            pw = pw.astype(np.float64)
            if not np.all(np.isfinite(pw)) or np.any(pw < 0):
                raise ValueError("pos_weight: expected finite values >= 0")
            self.pos_weight = pw

    def _compute(
        self, pred: Any, target: Any, mask: Any, need_grad: bool
    ) -> tuple[float, np.ndarray | None]:
        x = _as_pred(pred, "pred")
        y = _as_real_target(target, x)
        m = _as_mask(mask, x.shape)
        out_of_range = (y < 0) | (y > 1)
        if m is not None:  # padding may hold any value; only counted items must be valid
            out_of_range &= _expand(m, y.ndim)
        if np.any(out_of_range):
            where = tuple(int(i) for i in np.argwhere(out_of_range)[0])
            raise ValueError(f"target: expected values in [0, 1], got {y[where]!r} at {where}")
        pw: np.ndarray | None = None
        if self.pos_weight is not None:
            try:
                shape = np.broadcast_shapes(self.pos_weight.shape, x.shape)
            except ValueError:
                shape = None
            if shape != x.shape:
                raise ValueError(
                    f"pos_weight: shape {self.pos_weight.shape} does not broadcast to pred shape "
                    f"{x.shape}"
                )
            pw = self.pos_weight.astype(x.dtype)
        sp_pos, sp_neg, e = _softplus_parts(x)
        one_minus_y = 1 - y
        pos_term = y * sp_neg if pw is None else pw * y * sp_neg
        elem = pos_term + one_minus_y * sp_pos
        value, scale, mfull = _elementwise_reduce(elem, m, self.reduction)
        if not need_grad:
            return value, None
        denom = 1 + e
        sig = np.where(x >= 0, 1, e) / denom  # sigmoid(x)
        # sigmoid(-x) = 1 - sigmoid(x), computed without cancellation
        sig_neg = np.where(x >= 0, e, 1) / denom
        # (1 - y) s(x) - p y s(-x); not s(x) - y, which loses e.g. -e^-80 for x = 80, y = 1
        grad = one_minus_y * sig - (y * sig_neg if pw is None else pw * y * sig_neg)
        grad = grad * scale
        if mfull is not None:
            grad = np.where(mfull, grad, 0)
        return value, grad.astype(x.dtype, copy=False)

    def __repr__(self) -> str:
        pw = None if self.pos_weight is None else self.pos_weight.tolist()
        return f"BCEWithLogitsLoss(pos_weight={pw!r}, reduction={self.reduction!r})"


class CrossEntropyLoss(Loss):
    r"""Softmax cross-entropy over the last axis with integer class targets (as torch's).

    For logits ``z`` of shape (..., C) and targets ``y`` of shape (...) with ``0 <= y < C``::

        l_i   = -log softmax(z_i)[y_i] = logsumexp(z_i) - z_i[y_i]
        L     = sum_i w[y_i] l_i / sum_i w[y_i]         (reduction="mean", over counted items i)
        dL/dz_i = w[y_i] (softmax(z_i) - onehot(y_i)) / sum_j w[y_j]

    Items whose target equals ``ignore_index`` (padding) or that are masked out are not counted:
    they add nothing to the value, the gradient or the mean's denominator. ``w`` is the optional
    per-class ``weight`` (1 for every class by default). The log-sum-exp is shifted by the row
    maximum, so large logits never overflow.

    Args:
        weight: optional per-class weights, shape (C,), >= 0.
        ignore_index: target value that marks an item to skip (default -100, as PyTorch).
        reduction: ``"mean"`` (default) or ``"sum"``.

    Call: ``loss, dlogits = CrossEntropyLoss()(logits, target, mask=None)``; ``logits`` (..., C)
    float32/float64 with C >= 1; ``target`` integer array of shape logits.shape[:-1]; ``mask`` a
    leading prefix of target's shape, e.g. (T, B) for logits (T, B, C).
    """

    def __init__(
        self, weight: Any = None, ignore_index: int = -100, reduction: str = "mean"
    ) -> None:
        self.reduction = _check_reduction(reduction)
        if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(
            ignore_index, (int, np.integer)
        ):
            raise TypeError(f"ignore_index: expected an int, got {type(ignore_index).__name__}")
        self.ignore_index = int(ignore_index)
        if weight is None:
            self.weight: np.ndarray | None = None
        else:
            w = np.asarray(weight)
            if w.dtype.kind not in "iuf":
                raise TypeError(f"weight: expected a real numeric dtype, got {w.dtype}")
            if w.ndim != 1:
                raise ValueError(f"weight: expected shape (C,), got {w.shape}")
            w = w.astype(np.float64)
            if not np.all(np.isfinite(w)) or np.any(w < 0):
                raise ValueError("weight: expected finite values >= 0")
            self.weight = w

    def _compute(
        self, pred: Any, target: Any, mask: Any, need_grad: bool
    ) -> tuple[float, np.ndarray | None]:
        z = _as_pred(pred, "pred")
        if z.ndim < 1 or z.shape[-1] < 1:
            raise ValueError(f"pred: expected shape (..., C) with C >= 1, got {z.shape}")
        C = z.shape[-1]
        t = np.asarray(target)
        if t.dtype.kind not in "iu":
            raise TypeError(f"target: expected an integer dtype (class indices), got {t.dtype}")
        if t.shape != z.shape[:-1]:
            raise ValueError(
                f"target: expected shape {z.shape[:-1]} (pred.shape[:-1]), got {t.shape}"
            )
        if self.weight is not None and self.weight.shape != (C,):
            raise ValueError(
                f"weight: expected shape ({C},) to match pred's classes, got {self.weight.shape}"
            )
        m = _as_mask(mask, t.shape)

        valid = t != self.ignore_index
        if m is not None:
            valid = valid & m
        bad = valid & ((t < 0) | (t >= C))
        if np.any(bad):
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"target: class index {int(t[where])} at {where} is out of range [0, {C}) "
                f"and is not ignore_index={self.ignore_index}"
            )
        t_safe = np.where(valid, t, 0).astype(np.intp)

        shift = z - np.max(z, axis=-1, keepdims=True)
        expz = np.exp(shift)
        sumexp = np.sum(expz, axis=-1)
        z_t = np.take_along_axis(shift, t_safe[..., None], axis=-1)[..., 0]
        nll = np.log(sumexp) - z_t  # -log softmax(z)[y], shape (...)

        w_item = valid.astype(np.float64)
        if self.weight is not None:
            w_item = w_item * self.weight[t_safe]
        total = float(np.sum(nll * w_item, dtype=np.float64, where=valid))
        if self.reduction == "sum":
            value, scale = total, 1.0
        else:
            denom = float(np.sum(w_item))
            value, scale = (total / denom, 1.0 / denom) if denom > 0 else (0.0, 0.0)
        if not need_grad:
            return value, None
        coef = (w_item * scale).astype(z.dtype)  # per-item factor w[y_i] / N
        grad = np.divide(expz, sumexp[..., None], out=expz)  # softmax, in expz's buffer
        np.put_along_axis(
            grad,
            t_safe[..., None],
            np.take_along_axis(grad, t_safe[..., None], axis=-1) - 1,
            axis=-1,
        )
        grad *= coef[..., None]
        if not valid.all():
            grad[~valid] = 0  # ignored or masked items: exactly 0 (also where grad is not finite)
        return value, grad.astype(z.dtype, copy=False)

    def __repr__(self) -> str:
        w = None if self.weight is None else self.weight.tolist()
        return (
            f"CrossEntropyLoss(weight={w!r}, ignore_index={self.ignore_index}, "
            f"reduction={self.reduction!r})"
        )


def sequence_mask(lengths: Any, T: int, *, batch_first: bool = False) -> np.ndarray:
    """Bool mask of valid steps for a ragged batch: shape (T, B) (or (B, T) with ``batch_first``).

    ``mask[t, b]`` is True iff ``t < lengths[b]``; ``lengths``: integer array (B,) in [0, T].
    """
    lens = np.asarray(lengths)
    if lens.dtype.kind not in "iu":
        raise TypeError(f"lengths: expected an integer dtype, got {lens.dtype}")
    if lens.ndim != 1:
        raise ValueError(f"lengths: expected shape (B,), got {lens.shape}")
    if isinstance(T, (bool, np.bool_)) or not isinstance(T, (int, np.integer)) or T < 0:
        raise ValueError(f"T: expected an int >= 0, got {T!r}")
    if np.any(lens < 0) or np.any(lens > T):
        raise ValueError(
            f"lengths: expected values in [0, {T}], got min {lens.min()}, max {lens.max()}"
        )
    mask = np.arange(int(T))[:, None] < lens[None, :]
    return np.ascontiguousarray(mask.T) if batch_first else mask
