"""The ``zoneout`` and ``recurrent_dropout`` options of the recurrent stacks (:class:`RNNBase`).

Zoneout (Krueger et al. 2017) and variational recurrent dropout (Gal & Ghahramani 2016) run inside
the fused time loops (:mod:`rnnfast._regularise`); this module checks the options, draws the masks
and picks the layer forward that applies them. Masks are drawn from the module's :attr:`rng` (the
inter-layer dropout RNG, saved in training checkpoints, so an exact resume draws the same masks),
per forward call, layer and direction, in that order:

* recurrent dropout p: d (B, H) = (U >= p) / (1 - p), fixed over the sequence;
* zoneout p: m (T, B, H) = (U < p) per step (1 = the unit keeps its previous value), for h and,
  in cells with a cell state, an independent draw for c (with its own rate when ``zoneout`` is a
  pair (p_h, p_c)).

At evaluation (``training`` False) both are the identity: the plain cell, which is also what
:meth:`RNNBase.step`, the ONNX export and the peers compute. Truncated-BPTT streaming does not apply
them, so :meth:`stream_begin` refuses a module in training mode with either set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .._regularise import regularised_forward
from ._util import Array, State

__all__: list[str] = []


def _rate(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a float in [0, 1), got {type(v).__name__} {v!r}")
    if not 0.0 <= float(v) < 1.0:
        raise ValueError(f"{name}: expected a float in [0, 1), got {v!r}")
    return float(v)


def configure(module: Any, zoneout: Any, recurrent_dropout: Any) -> None:
    """Checks the options and sets ``module.zoneout`` ((p_h, p_c); p_c is 0 for cells without a
    cell state) and ``module.recurrent_dropout``; ValueError/TypeError naming the argument."""
    spec = module._spec
    if isinstance(zoneout, (tuple, list)):
        if len(zoneout) != 2 or not spec.has_cell_state:
            want = "a float or a pair (p_h, p_c)" if spec.has_cell_state else "a float"
            raise ValueError(f"zoneout: expected {want} for the {spec.name} cell, got {zoneout!r}")
        p_h, p_c = _rate("zoneout", zoneout[0]), _rate("zoneout", zoneout[1])
    else:
        p_h = _rate("zoneout", zoneout)
        p_c = p_h if spec.has_cell_state else 0.0
    p_d = _rate("recurrent_dropout", recurrent_dropout)
    if (p_h or p_c or p_d) and getattr(module, "proj_size", 0):
        raise ValueError("zoneout, recurrent_dropout: not supported with proj_size, expected 0")
    module.zoneout = (p_h, p_c)
    module.recurrent_dropout = p_d


def active(module: Any) -> bool:
    """True when the module has zoneout or recurrent dropout set."""
    return (
        any(getattr(module, "zoneout", (0.0, 0.0)))
        or getattr(module, "recurrent_dropout", 0.0) > 0.0
    )


def config_items(module: Any) -> dict[str, Any]:
    """The options for ``config()``: only those that are set (older configs stay unchanged)."""
    out: dict[str, Any] = {}
    p_h, p_c = getattr(module, "zoneout", (0.0, 0.0))
    if p_h or p_c:
        out["zoneout"] = p_h if (p_c == p_h or not module._spec.has_cell_state) else [p_h, p_c]
    if getattr(module, "recurrent_dropout", 0.0):
        out["recurrent_dropout"] = module.recurrent_dropout
    return out


def check_streaming(module: Any) -> None:
    """ValueError when a TBPTT stream would silently train without the module's regularisation."""
    if module.training and active(module):
        raise ValueError(
            "zoneout, recurrent_dropout: truncated-BPTT streaming does not apply them; train with "
            "full BPTT (bptt=None), or call eval() / set them to 0 for streaming"
        )


def layer_forward(module: Any, training: bool) -> Callable[..., tuple[Array, State, Any]] | None:
    """A replacement for ``_cell_forward`` (same arguments) that draws this call's masks from
    ``module.rng`` and runs the masked kernels; None when nothing is to be applied (evaluation, or
    no option set)."""
    if not training or not active(module):
        return None
    p_h, p_c = module.zoneout
    p_d = module.recurrent_dropout
    rng: np.random.Generator = module.rng

    def forward(
        F: Any,
        cell: str,
        nonlinearity: str,
        x: Array,
        state: State | None,
        w: Any,
        lengths: Array | None,
        training: bool,
    ) -> tuple[Array, State, Any]:
        from .. import functional

        if F is not functional:
            raise ValueError(
                "zoneout, recurrent_dropout: need the compiled backend (set_backend('compiled'))"
            )
        T, B, _ = x.shape
        H = module.hidden_size
        dt = module.dtype
        masks: dict[str, Array] = {}
        if p_d > 0.0:
            masks["dropout_h"] = ((rng.random((B, H)) >= p_d) / (1.0 - p_d)).astype(dt)
        if p_h > 0.0:
            masks["zoneout_h"] = (rng.random((T, B, H)) < p_h).astype(dt)
        if p_c > 0.0:
            masks["zoneout_c"] = (rng.random((T, B, H)) < p_c).astype(dt)
        return regularised_forward(
            cell,
            x,
            state,
            w,
            lengths=lengths,
            training=training,
            nonlinearity=nonlinearity,
            **masks,
        )

    return forward
