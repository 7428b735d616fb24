"""Argument checks of a whole-sequence call that depend only on shapes and Python values, shared by
the front ends over any array library (:mod:`rnnfast.jax` today; the messages are those of
:mod:`rnnfast.functional`, so its NumPy checks and :mod:`rnnfast.reference`'s can call these too).

Shapes: T = time steps, B = batch, I = input size, H = hidden size, G = gates of the cell.
Every failure is a TypeError or ValueError naming the argument, what was expected and what came.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "NONLINEARITIES",
    "check_bias_pair",
    "check_bool",
    "check_lengths_dtype",
    "check_nonlinearity",
    "check_shape",
    "sequence_sizes",
]

#: The ``nonlinearity`` values of the Elman RNN.
NONLINEARITIES = ("tanh", "relu")


def check_shape(name: str, shape: Sequence[int], expected: tuple[int, ...]) -> None:
    """ValueError unless ``shape`` (an array's ``.shape``) equals ``expected``."""
    if tuple(shape) != expected:
        raise ValueError(f"{name}: expected shape {expected}, got {tuple(shape)}")


def check_bool(name: str, v: Any) -> bool:
    """``v`` as a bool; TypeError for anything but a bool or NumPy bool."""
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(v).__name__}")
    return bool(v)


def check_nonlinearity(nonlinearity: Any) -> str:
    """``nonlinearity`` if it is "tanh" or "relu", else ValueError."""
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
    return str(nonlinearity)


def check_bias_pair(b_ih: Any, b_hh: Any) -> None:
    """ValueError when exactly one of the two biases is None."""
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih, b_hh: expected both arrays or both None, got one of each")


def sequence_sizes(
    gates: int, x_shape: Sequence[int], w_ih_shape: Sequence[int], w_hh_shape: Sequence[int]
) -> tuple[int, int, int, int]:
    """(T, B, I, H) from the shapes of x (T, B, I), w_ih (G*H, I) and w_hh (G*H, H), each checked.

    H comes from w_ih's rows (a multiple of G, at least G); T, B and I must be >= 1. Any w_ih
    shape problem gives one message, "w_ih: expected shape (G*H, I) with H >= 1, got ...".
    """
    x_shape, w_ih_shape = tuple(x_shape), tuple(w_ih_shape)
    if len(x_shape) != 3:
        raise ValueError(f"x: expected a 3-D array of shape (T, B, I), got shape {x_shape}")
    t, b, i = (int(n) for n in x_shape)
    if t < 1 or b < 1 or i < 1:
        raise ValueError(f"x: expected shape (T, B, I) with T, B, I >= 1, got {x_shape}")
    if (
        len(w_ih_shape) != 2
        or w_ih_shape[0] % gates != 0
        or w_ih_shape[0] == 0
        or w_ih_shape[1] != i
    ):
        raise ValueError(f"w_ih: expected shape ({gates}*H, {i}) with H >= 1, got {w_ih_shape}")
    h = int(w_ih_shape[0]) // gates
    check_shape("w_hh", w_hh_shape, (gates * h, h))
    return t, b, i, h


def check_lengths_dtype(dtype: Any, batch: int) -> None:
    """TypeError unless ``lengths`` (B,) has an integer dtype (``dtype``: its dtype)."""
    if np.dtype(dtype).kind not in ("i", "u"):
        raise TypeError(
            f"lengths: expected an integer array of shape ({batch},), got dtype {dtype}"
        )
