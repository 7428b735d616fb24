"""The ``rnnfast gradcheck`` rows of the LSTM with projection (``lstm_proj``, :mod:`rnnfast._proj`),
which runs beside the cell registry and so is not among the registered cells that
:func:`rnnfast.diagnostics.gradcheck` walks: the fused kernels against the float64 reference
(:func:`rnnfast.reference.lstm_proj_forward` / ``_backward``), both against central finite
differences of the reference, and ``lstm_proj_tbptt_grads`` (k1=2, k2=3) against the explicit
window construction on the reference. Private.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .diagnostics import _central_differences, _gc_row
from .testing import rel_max_error

__all__: list[str] = []

_NAMES = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr")
_PARAMS = ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr")


def _err(a: Any, b: Any) -> float:
    return rel_max_error(a, b)[0]


def _objective(arrs: Mapping[str, Any], seeds: Mapping[str, Any], lengths: Any) -> float:
    from . import reference as R

    y, h, c, _ = R.lstm_proj_forward(*(arrs[k] for k in _NAMES), lengths=lengths)
    return float(np.sum(y * seeds["dy"]) + np.sum(h * seeds["dh_n"]) + np.sum(c * seeds["dc_n"]))


def reference_tbptt(base: Mapping[str, Any], dy: Any, k1: int, k2: int) -> list[dict[str, Any]]:
    """TBPTT(k1, k2) by its definition on the reference (float64): one forward stores every state;
    update n re-runs its window [s, e] from the stored state entering s and backprops dy on its own
    steps [n*k1, e] only. Each dict is the reference backward's, plus "state0" = (dL/dh0, dL/dc0),
    zero unless the window starts at step 0. ``base``: x, h0, c0 and the weights by name; dy (T, B,
    P). Also the oracle of tests/test_lstm_proj.py."""
    from . import reference as R

    w = [base[k] for k in _PARAMS]
    _, _, _, full = R.lstm_proj_forward(base["x"], base["h0"], base["c0"], *w)
    T = base["x"].shape[0]
    out = []
    for start in range(0, T, k1):
        e = min(start + k1, T) - 1
        s = max(0, e - k2 + 1)
        dyw = np.zeros_like(dy[s : e + 1])
        dyw[start - s :] = dy[start : e + 1]
        _, _, _, c = R.lstm_proj_forward(base["x"][s : e + 1], full.h[s], full.c[s], *w)
        g = R.lstm_proj_backward(c, dyw)
        g["state0"] = (g["h0"] * (s == 0), g["c0"] * (s == 0))
        out.append(g)
    return out


def gradcheck_rows(
    seed: int,
    t_steps: int,
    batch: int,
    n_in: int,
    hidden: int,
    lengths: Any,
    tolerances: Mapping[str, Mapping[str, float]],
    fd_tol: float,
) -> list[dict[str, Any]]:
    """One row per dtype (float32, float64) in the format of diagnostics.gradcheck, P = hidden // 2."""
    from . import _proj
    from . import reference as R

    P = max(1, hidden // 2)
    rng = np.random.default_rng(seed)

    def u(*shape: int) -> np.ndarray:
        return rng.uniform(-0.5, 0.5, shape)

    base = {
        "x": rng.standard_normal((t_steps, batch, n_in)),
        "h0": u(batch, P),
        "c0": u(batch, hidden),
        "w_ih": u(4 * hidden, n_in),
        "w_hh": u(4 * hidden, P),
        "b_ih": u(4 * hidden),
        "b_hh": u(4 * hidden),
        "w_hr": u(P, hidden),
    }
    seeds = {
        "dy": rng.standard_normal((t_steps, batch, P)),
        "dh_n": rng.standard_normal((batch, P)),
        "dc_n": rng.standard_normal((batch, hidden)),
    }
    *ref_out, ref_cache = R.lstm_proj_forward(*(base[k] for k in _NAMES), lengths=lengths)
    ref_grad = R.lstm_proj_backward(ref_cache, seeds["dy"], seeds["dh_n"], seeds["dc_n"])
    fd = _central_differences(lambda arrs: _objective(arrs, seeds, lengths), base, _NAMES)
    ref_fd = max(_err(ref_grad[k], fd[k]) for k in _NAMES)
    tb_ref = reference_tbptt(base, seeds["dy"], 2, 3)

    rows = []
    for dtype in ("float32", "float64"):
        dt = np.dtype(dtype)
        arrs = {k: v.astype(dt) for k, v in base.items()}
        sd = {k: v.astype(dt) for k, v in seeds.items()}
        *outs, cache = _proj.lstm_proj_forward(*(arrs[k] for k in _NAMES), lengths=lengths)
        grads = _proj.lstm_proj_backward(cache, sd["dy"], sd["dh_n"], sd["dc_n"])
        fwd_err = max(_err(o, r) for o, r in zip(outs, ref_out))
        grad_err = max(_err(grads[k], ref_grad[k]) for k in (*_NAMES, "dh_all"))
        fd_err = max(_err(grads[k], fd[k]) for k in _NAMES)
        params = {k: arrs[k] for k in _PARAMS}
        tb = _proj.lstm_proj_tbptt_grads(
            arrs["x"], (arrs["h0"], arrs["c0"]), params, sd["dy"], 2, 3
        )
        tb_err = max(_err(a[k], b[k]) for a, b in zip(tb, tb_ref) for k in _PARAMS)
        if len(tb) != len(tb_ref):
            tb_err = float("inf")
        rows.append(
            _gc_row(
                "lstm_proj", dtype, fwd_err, grad_err, fd_err, ref_fd, tb_err, tolerances, fd_tol
            )
        )
    return rows
