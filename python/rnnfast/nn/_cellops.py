"""Per-cell dispatch onto the functional API, the time reversal of bidirectional layers, and the
initialisation presets of the recurrent layers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._cells import get_cell
from ._util import _GATES, Array, State

__all__: list[str] = []

# --------------------------------------------------------------------------------------------------
# per-cell dispatch onto the functional API
# --------------------------------------------------------------------------------------------------


def _cell_forward(
    F: Any,
    cell: str,
    nonlinearity: str,
    x: Array,
    state: State | None,
    w: Sequence[Array | None],
    lengths: Array | None,
    training: bool,
) -> tuple[Array, State, Any]:
    """One layer and direction over the whole sequence: (y, final state, cache).

    ``w``: w_ih, w_hh, b_ih, b_hh and the cell's extra parameters (``CellSpec.extra_params``).
    """
    spec = get_cell(cell)
    kw: dict[str, Any] = {"lengths": lengths, "training": training}
    if len(spec.nonlinearities) > 1:
        kw["nonlinearity"] = nonlinearity
    if spec.has_cell_state:
        h0, c0 = state if state is not None else (None, None)
        y, h_n, c_n, cache = getattr(F, f"{cell}_forward")(x, h0, c0, *w, **kw)
        return y, (h_n, c_n), cache
    y, h_n, cache = getattr(F, f"{cell}_forward")(x, state, *w, **kw)
    return y, h_n, cache


def _cell_backward(
    F: Any, cell: str, cache: Any, dy: Array, dstate: State | None
) -> dict[str, Any]:
    if get_cell(cell).has_cell_state:
        dh, dc = dstate if dstate is not None else (None, None)
        return dict(getattr(F, f"{cell}_backward")(cache, dy, dh, dc))
    return dict(getattr(F, f"{cell}_backward")(cache, dy, dstate))


def _reverse_index(t_steps: int, batch: int, lengths: Array | None) -> Array:
    """(T, B) time index that reverses each sequence within its valid length (padding stays put).

    idx[t, b] = L_b - 1 - t for t < L_b, else t; an involution, so the same gather undoes it.
    """
    t = np.arange(t_steps)[:, None]
    if lengths is None:
        return np.broadcast_to(t_steps - 1 - t, (t_steps, batch))
    lens = lengths[None, :]
    return np.where(t < lens, lens - 1 - t, t)


def _gather_time(a: Array, idx: Array) -> Array:
    """a (T, B, ...) gathered along time per batch column: out[t, b] = a[idx[t, b], b]."""
    return np.ascontiguousarray(a[idx, np.arange(a.shape[1])[None, :]])


# --------------------------------------------------------------------------------------------------
# initialisation
# --------------------------------------------------------------------------------------------------


def _orthogonal(rng: np.random.Generator, n: int) -> Array:
    """An (n, n) orthogonal matrix (QR of a Gaussian with the sign fix that makes it Haar-uniform)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))[None, :]


def _init_layer(
    rng: np.random.Generator,
    cell: str,
    init: str,
    n_in: int,
    hidden: int,
    bias: bool,
    dtype: np.dtype,
) -> dict[str, Array | None]:
    g = _GATES[cell]
    gh = g * hidden
    if init == "torch":
        k = 1.0 / math.sqrt(hidden)  # torch.nn.RNNBase.reset_parameters: U(-1/sqrt(H), 1/sqrt(H))
        w_ih = rng.uniform(-k, k, (gh, n_in))
        w_hh = rng.uniform(-k, k, (gh, hidden))
        b_ih = rng.uniform(-k, k, gh) if bias else None
        b_hh = rng.uniform(-k, k, gh) if bias else None
    elif init == "orthogonal":
        a = math.sqrt(
            6.0 / (n_in + hidden)
        )  # Xavier/Glorot uniform per gate block (fan_in I, fan_out H)
        w_ih = rng.uniform(-a, a, (gh, n_in))
        w_hh = np.concatenate([_orthogonal(rng, hidden) for _ in range(g)], axis=0)
        b_ih = np.zeros(gh) if bias else None
        b_hh = np.zeros(gh) if bias else None
        gates = get_cell(cell).gate_order.split(",")
        if get_cell(cell).has_cell_state and "f" in gates and b_ih is not None:
            f = gates.index("f")  # forget-gate bias 1 (Jozefowicz et al. 2015); b_hh stays 0
            b_ih[f * hidden : (f + 1) * hidden] = 1.0
    else:  # identity (IRNN, Le et al. 2015): identity recurrence, small Gaussian input weights, zero bias
        w_ih = rng.normal(0.0, 1e-3, (gh, n_in))
        w_hh = np.concatenate([np.eye(hidden) for _ in range(g)], axis=0)
        b_ih = np.zeros(gh) if bias else None
        b_hh = np.zeros(gh) if bias else None
    out: dict[str, Array | None] = {"w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh}
    fixed = dict(get_cell(cell).extra_init)  # e.g. layer-norm gains 1, shifts 0, under every preset
    for name, per_unit in get_cell(cell).extra_params:  # the cell's own (e.g. peepholes)
        if name in fixed:
            out[name] = np.full(per_unit * hidden, fixed[name])
        elif init == "torch":  # PyTorch's rule for every weight: U(-1/sqrt(H), 1/sqrt(H))
            k = 1.0 / math.sqrt(hidden)
            out[name] = rng.uniform(-k, k, per_unit * hidden)
        else:  # the other presets start the cell as its base cell (peepholes off)
            out[name] = np.zeros(per_unit * hidden)
    return {
        k: (None if v is None else np.ascontiguousarray(v, dtype=dtype)) for k, v in out.items()
    }
