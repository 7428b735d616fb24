"""Pieces shared by the variant oracles (:mod:`.lstm_variants`, :mod:`.gru_variants`,
:mod:`.regularisers`): their cache type, layer normalisation with its backward, argument checks.

Layer normalisation, as everywhere in this package (haste's and ``torch.nn.functional.layer_norm``'s
definition): over the last axis of width N,

    LN(a; gamma, beta) = gamma * (a - mean(a)) / sqrt(var(a) + LN_EPS) + beta,

mean and var = mean((a - mean(a))^2) (the biased variance, divided by N) over the N entries of each
row, LN_EPS = 1e-5 inside the square root; beta omitted means 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import ReferenceCache, _as_f64, _check_cache, _check_shape, _sigmoid

__all__ = ["LN_EPS", "VariantCache"]

Array = np.ndarray

#: epsilon of every layer normalisation in the variant oracles (haste's and PyTorch's default)
LN_EPS = 1e-5


@dataclass(frozen=True)
class VariantCache(ReferenceCache):
    """A :class:`~rnnfast.reference.ReferenceCache` plus what a variant cell adds.

    The inherited fields keep their meaning (``cell`` names the oracle, e.g. "lstm_peephole"; h and
    c are the carried states, h[0] = h0; act the activated gates in PyTorch's order); ``extra`` maps
    names to the variant's own parameters (float64 copies, by their argument names) and the
    activations its backward reads (listed in each oracle's docstring).
    """

    extra: Mapping[str, Any] = field(default_factory=dict)


def _variant_cache(cache: Any, cell: str) -> VariantCache:
    """The cache of ``<cell>_forward``; the errors of :func:`rnnfast.reference._check_cache`."""
    c = _check_cache(cache, cell)
    if not isinstance(c, VariantCache):
        raise TypeError(
            f"cache: expected a rnnfast.reference.VariantCache from {cell}_forward, "
            f"got {type(c).__name__}"
        )
    return c


def _x_sizes(x: Array) -> tuple[int, int, int]:
    """(T, B, I) of x (T, B, I), each >= 1 (the messages of the base oracles)."""
    if x.ndim != 3:
        raise ValueError(f"x: expected a 3-D array of shape (T, B, I), got shape {x.shape}")
    t_steps, batch, n_in = x.shape
    if t_steps < 1 or batch < 1 or n_in < 1:
        raise ValueError(f"x: expected shape (T, B, I) with T, B, I >= 1, got {x.shape}")
    return t_steps, batch, n_in


def _vector(name: str, a: Any, n: int) -> Array:
    """A required parameter vector (n,) as float64 (TypeError for None, ValueError for a shape)."""
    arr = _as_f64(name, a)
    _check_shape(name, arr, (n,))
    return arr


def _broadcast(name: str, a: Any, shape: tuple[int, ...], default: float) -> Array:
    """A mask broadcastable to ``shape`` as a float64 array of that shape (``default`` when None;
    booleans are 0/1)."""
    if a is None:
        return np.full(shape, default)
    arr = np.asarray(a)
    arr = _as_f64(name, arr.astype(np.float64) if arr.dtype == np.bool_ else arr)
    try:
        return np.broadcast_to(arr, shape).copy()
    except ValueError:
        raise ValueError(
            f"{name}: expected an array broadcastable to {shape}, got shape {arr.shape}"
        ) from None


def _layer_norm(a: Array, gamma: Array, beta: Array | None = None) -> tuple[Array, Array, Array]:
    """LN over the last axis. Returns (y, xhat, rstd): y = gamma * xhat + beta,
    xhat = (a - mean(a)) * rstd, rstd = 1 / sqrt(var(a) + LN_EPS) of shape (..., 1)."""
    d = a - a.mean(axis=-1, keepdims=True)  # a - mean(a)
    rstd = 1.0 / np.sqrt((d * d).mean(axis=-1, keepdims=True) + LN_EPS)  # biased variance
    xhat = d * rstd
    y = gamma * xhat if beta is None else gamma * xhat + beta
    return y, xhat, rstd


def _layer_norm_backward(dy: Array, xhat: Array, rstd: Array, gamma: Array) -> Array:
    """dL/da of y = LN(a; gamma, beta), row by row (dL/dgamma = sum dy * xhat, dL/dbeta = sum dy
    are summed by the caller over its valid rows).

    With g = dL/dxhat = dL/dy * gamma: dL/da = rstd * (g - mean(g) - xhat * mean(g * xhat)), the
    means over the row (the two subtracted terms are the paths through mean(a) and var(a)).
    """
    g = dy * gamma
    return rstd * (
        g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True)
    )


def _lstm_gates(a: Array, hidden: int) -> tuple[Array, Array, Array, Array]:
    """i, f, g, o = sig(a_i), sig(a_f), tanh(a_g), sig(a_o) of the 4H-wide pre-activation a."""
    H = hidden
    return (
        _sigmoid(a[:, 0:H]),
        _sigmoid(a[:, H : 2 * H]),
        np.tanh(a[:, 2 * H : 3 * H]),
        _sigmoid(a[:, 3 * H : 4 * H]),
    )


def _lstm_gate_grads(
    dct: Array, do: Array, c_prev: Array, i: Array, f: Array, g: Array, o: Array
) -> Array:
    """dL/da (4H wide, i, f, g, o) of c_t = f * c_{t-1} + i * g from dL/dc_t and dL/do."""
    return np.concatenate(
        [
            dct * g * i * (1.0 - i),  # dL/da_i = dL/dc_t * g * i (1 - i)
            dct * c_prev * f * (1.0 - f),  # dL/da_f = dL/dc_t * c_{t-1} * f (1 - f)
            dct * i * (1.0 - g**2),  # dL/da_g = dL/dc_t * i * (1 - g^2)
            do * o * (1.0 - o),  # dL/da_o = dL/do * o (1 - o)
        ],
        axis=1,
    )


def _vsum(v: Array, a: Array) -> Array:
    """sum over the batch of the valid rows of a (padded rows selected away, never multiplied)."""
    return np.where(v, a, 0.0).sum(axis=0)
