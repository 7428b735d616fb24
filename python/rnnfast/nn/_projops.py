"""The LSTM with projection in the module stack (``LSTM(..., proj_size=P)``): its per-layer dispatch
onto :mod:`rnnfast._proj` (or a test backend's ``lstm_proj_forward``) and its initialisation.

Shapes per layer and direction (PyTorch's): weight_ih (4H, I or D*P), weight_hh (4H, P), biases
(4H,), weight_hr (P, H); h (B, P), c (B, H).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _proj
from ._util import Array, State

__all__: list[str] = []


def _proj_forward(
    F: Any,
    cell: str,
    nonlinearity: str,
    x: Array,
    state: State | None,
    w: Sequence[Array | None],
    lengths: Array | None,
    training: bool,
) -> tuple[Array, State, Any]:
    """One layer and direction (the signature of ``_cellops._cell_forward``): (y, (h_n, c_n), cache).

    ``w``: w_ih, w_hh, b_ih, b_hh, w_hr. ``F`` is the backend; one without ``lstm_proj_forward``
    (the functional API before it re-exports it) uses :mod:`rnnfast._proj`.
    """
    del cell, nonlinearity  # always the LSTM (tanh)
    fn = getattr(F, "lstm_proj_forward", _proj.lstm_proj_forward)
    h0, c0 = state if state is not None else (None, None)  # type: ignore[misc]
    y, h_n, c_n, cache = fn(x, h0, c0, *w, lengths=lengths, training=training)
    return y, (h_n, c_n), cache


def _proj_backward(
    F: Any, cell: str, cache: Any, dy: Array, dstate: State | None
) -> dict[str, Any]:
    """Backward of :func:`_proj_forward` (the signature of ``_cellops._cell_backward``)."""
    del cell
    fn = getattr(F, "lstm_proj_backward", _proj.lstm_proj_backward)
    dh, dc = dstate if dstate is not None else (None, None)  # type: ignore[misc]
    return dict(fn(cache, dy, dh, dc))


def _semi_orthogonal(rng: np.random.Generator, rows: int, cols: int) -> Array:
    """A (rows, cols) matrix with orthonormal columns (rows >= cols) or rows (rows < cols)."""
    n, k = max(rows, cols), min(rows, cols)
    q, r = np.linalg.qr(rng.standard_normal((n, k)))
    q = q * np.sign(np.diag(r))[None, :]
    return q if rows >= cols else q.T


def _init_proj_layer(
    rng: np.random.Generator,
    init: str,
    n_in: int,
    hidden: int,
    proj: int,
    bias: bool,
    dtype: np.dtype,
) -> dict[str, Array | None]:
    """w_ih, w_hh, b_ih, b_hh, w_hr of one layer and direction for the init preset ``init``.

    "torch": every weight U(-1/sqrt(H), 1/sqrt(H)) (torch.nn.LSTM's reset_parameters, weight_hr
    included); "orthogonal": Xavier-uniform w_ih, semi-orthogonal (H, P) blocks of w_hh and
    semi-orthogonal w_hr, zero biases but forget-gate b_ih = 1; "identity": identity blocks
    (eye(H, P), eye(P, H)), N(0, 1e-3) w_ih, zero biases.
    """
    gh = 4 * hidden
    if init == "torch":
        k = 1.0 / math.sqrt(hidden)
        w_ih = rng.uniform(-k, k, (gh, n_in))
        w_hh = rng.uniform(-k, k, (gh, proj))
        b_ih = rng.uniform(-k, k, gh) if bias else None
        b_hh = rng.uniform(-k, k, gh) if bias else None
        w_hr = rng.uniform(-k, k, (proj, hidden))
    elif init == "orthogonal":
        a = math.sqrt(6.0 / (n_in + hidden))
        w_ih = rng.uniform(-a, a, (gh, n_in))
        w_hh = np.concatenate([_semi_orthogonal(rng, hidden, proj) for _ in range(4)], axis=0)
        b_ih = np.zeros(gh) if bias else None
        b_hh = np.zeros(gh) if bias else None
        if b_ih is not None:
            b_ih[hidden : 2 * hidden] = 1.0  # forget gate (i, f, g, o)
        w_hr = _semi_orthogonal(rng, proj, hidden)
    else:  # identity
        w_ih = rng.normal(0.0, 1e-3, (gh, n_in))
        w_hh = np.concatenate([np.eye(hidden, proj) for _ in range(4)], axis=0)
        b_ih = np.zeros(gh) if bias else None
        b_hh = np.zeros(gh) if bias else None
        w_hr = np.eye(proj, hidden)
    out = {"w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh, "w_hr": w_hr}
    return {
        k: (None if v is None else np.ascontiguousarray(v, dtype=dtype)) for k, v in out.items()
    }
