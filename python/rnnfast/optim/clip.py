"""Gradient clipping in place: :func:`clip_grad_norm_`, :func:`clip_grad_value_`, the running
:class:`ClipStats`, and :func:`grad_sumsq_maxabs` (one fused pass per gradient buffer).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._loader import core as _core
from ._checks import _FLOAT_DTYPES, _flat_view, _int, _real

__all__ = ["ClipStats", "clip_grad_norm_", "clip_grad_value_", "grad_sumsq_maxabs"]


@dataclass
class ClipStats:
    """Running record of gradient clipping: pre-clip norms and how often clipping fired.

    Pass one to :func:`clip_grad_norm_` / :func:`clip_grad_value_` via ``stats=``. For norm clipping
    ``last_norm``/``max_norm_seen`` are pre-clip total norms; for value clipping they are the
    pre-clip max |g| (the inf-norm). Non-finite norms are recorded in ``last_norm`` and counted in
    ``nonfinite`` but do not update ``max_norm_seen``/``sum_norm``.
    """

    calls: int = 0
    clipped: int = 0
    nonfinite: int = 0
    last_norm: float = 0.0
    max_norm_seen: float = 0.0
    sum_norm: float = 0.0

    def record(self, norm: float, clipped: bool) -> None:
        """Add one observation (pre-clip norm, whether clipping was applied)."""
        self.calls += 1
        self.clipped += int(bool(clipped))
        self.last_norm = float(norm)
        if math.isfinite(norm):
            self.max_norm_seen = max(self.max_norm_seen, float(norm))
            self.sum_norm += float(norm)
        else:
            self.nonfinite += 1

    @property
    def fraction_clipped(self) -> float:
        """Fraction of calls in which clipping fired (0.0 before any call)."""
        return self.clipped / self.calls if self.calls else 0.0

    @property
    def mean_norm(self) -> float:
        """Mean of the finite pre-clip norms seen (0.0 before any)."""
        n = self.calls - self.nonfinite
        return self.sum_norm / n if n else 0.0

    def reset(self) -> None:
        """Forget everything (e.g. at the start of an epoch)."""
        self.calls = self.clipped = self.nonfinite = 0
        self.last_norm = self.max_norm_seen = self.sum_norm = 0.0

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state (non-finite ``last_norm`` is kept as a float; io encodes it)."""
        return dict(
            calls=self.calls,
            clipped=self.clipped,
            nonfinite=self.nonfinite,
            last_norm=self.last_norm,
            max_norm_seen=self.max_norm_seen,
            sum_norm=self.sum_norm,
        )

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.calls = _int("calls", d["calls"], lo=0)
        self.clipped = _int("clipped", d["clipped"], lo=0)
        self.nonfinite = _int("nonfinite", d["nonfinite"], lo=0)
        self.last_norm = float(d["last_norm"])
        self.max_norm_seen = float(d["max_norm_seen"])
        self.sum_norm = float(d["sum_norm"])


def _grad_arrays(grads: Any) -> list[tuple[str, np.ndarray]]:
    if isinstance(grads, np.ndarray):  # a flat gradient buffer (model.flat_grads)
        grads = {"grads": grads}
    if not isinstance(grads, Mapping):
        raise TypeError(f"grads: expected a dict name -> ndarray, got {type(grads).__name__}")
    out = []
    for k, g in grads.items():
        if g is None:
            continue
        if not isinstance(g, np.ndarray):
            raise TypeError(
                f"grads[{k!r}]: expected an np.ndarray (clipped in place), got {type(g).__name__}"
            )
        if g.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"grads[{k!r}]: expected dtype float32 or float64, got {g.dtype}")
        if not g.flags.writeable:
            raise ValueError(f"grads[{k!r}]: array is read-only; clipping modifies it in place")
        if not g.flags.c_contiguous:
            raise ValueError(f"grads[{k!r}]: expected a C-contiguous array (clipped in place)")
        out.append((k, g))
    return out


def _one_buffer(arrays: list[tuple[str, np.ndarray]]) -> list[np.ndarray]:
    """The arrays as one flat view when they tile one buffer (one kernel call), else as they are."""
    flat = _flat_view([g for _, g in arrays]) if len(arrays) > 1 else None
    return [flat] if flat is not None else [g for _, g in arrays]


def grad_sumsq_maxabs(grads: Any) -> tuple[float, float]:
    """(sum of squares, max |g|) over all gradient entries, in one pass per buffer.

    The sum of squares is accumulated in float64 in a fixed order (the same on every call and
    thread count); max |g| is NaN when any entry is NaN. ``grads``: a dict name -> array or one
    flat array.
    """
    total, vmax = 0.0, 0.0
    for g in _one_buffer(_grad_arrays(grads)):
        s, m = _core.grad_stats(g)
        total += s
        vmax = m if (m != m or m > vmax) else vmax
    return total, vmax


def clip_grad_norm_(
    grads: Mapping[str, np.ndarray | None],
    max_norm: float,
    norm_type: float = 2.0,
    *,
    error_if_nonfinite: bool = False,
    stats: ClipStats | None = None,
) -> float:
    """Scale all gradients in place so their joint ``norm_type``-norm is at most ``max_norm``.

    Same semantics as ``torch.nn.utils.clip_grad_norm_``: ``total_norm`` is the norm of the vector
    of per-array norms (= the norm of all gradient entries concatenated; ``norm_type=inf`` gives the
    max |g|); if ``scale = max_norm / (total_norm + 1e-6)`` is < 1 every gradient is multiplied by
    it.

    Args:
        grads: dict name -> float32/float64 writeable array (``None`` values are skipped).
        max_norm: the largest allowed total norm, >= 0.
        norm_type: p of the p-norm, > 0, or ``inf``.
        error_if_nonfinite: raise ValueError if the total norm is NaN/Inf.
        stats: optional :class:`ClipStats`, updated with the pre-clip norm and whether it clipped.

    Returns:
        The pre-clip total norm as a Python float (computed in float64).

    Difference from PyTorch: when the total norm is NaN or Inf (and ``error_if_nonfinite`` is False)
    the gradients are left unchanged, instead of being multiplied by NaN/0.
    """
    max_norm = _real("max_norm", max_norm, lo=0.0, finite=False)
    norm_type = _real("norm_type", norm_type, lo=0.0, lo_open=True, finite=False)
    arrays = _grad_arrays(grads)
    if not arrays:
        total = 0.0
    elif norm_type == 2.0 or math.isinf(norm_type):
        sumsq, vmax = grad_sumsq_maxabs(grads)
        total = vmax if math.isinf(norm_type) else math.sqrt(sumsq)
    else:
        norms = np.array(
            [
                np.linalg.norm(g.ravel().astype(np.float64), ord=norm_type) if g.size else 0.0
                for _, g in arrays
            ]
        )
        total = float(np.linalg.norm(norms, ord=norm_type))
    finite = math.isfinite(total)
    if not finite and error_if_nonfinite:
        bad = [k for k, g in arrays if not np.all(np.isfinite(g))]
        raise ValueError(
            f"grads: total norm of order {norm_type} is {total}; non-finite entries in {bad}"
        )
    clip_coef = max_norm / (total + 1e-6) if finite else 1.0
    clipped = clip_coef < 1.0
    if clipped:
        for g in _one_buffer(arrays):
            _core.grad_scale(g, clip_coef)  # g *= clip_coef
    if stats is not None:
        stats.record(total, clipped)
    return total


def clip_grad_value_(
    grads: Mapping[str, np.ndarray | None], clip_value: float, *, stats: ClipStats | None = None
) -> float:
    """Clamp every gradient entry in place to ``[-clip_value, clip_value]`` (as torch's).

    Returns the pre-clip max |g| (inf-norm) as a float, NaN when an entry is NaN; ``stats`` records
    it and whether any entry was clamped. NaN entries stay NaN, the others are clamped.
    """
    clip_value = _real("clip_value", clip_value, lo=0.0, finite=False)
    arrays = _grad_arrays(grads)
    _, vmax = grad_sumsq_maxabs(grads)
    clipped = vmax > clip_value or vmax != vmax  # NaN present: clamp the rest (as torch's clamp_)
    if clipped:
        for g in _one_buffer(arrays):
            _core.grad_clip(g, clip_value)  # np.clip(g, -clip_value, clip_value, out=g)
    if stats is not None:
        stats.record(vmax, clipped)
    return vmax
