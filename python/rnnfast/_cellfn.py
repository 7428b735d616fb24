"""``<cell>_forward`` / ``<cell>_backward`` for every registered cell without hand-written ones.

The functional API of :mod:`rnnfast.functional` has one hand-written pair per classic cell (rnn,
lstm, gru). Every other cell registered in :data:`rnnfast._cells.CELLS` (and in the compiled core,
``cpp/include/rnnfast/cells/all.hpp``) gets its pair here, built from its :class:`CellSpec`, with
the same conventions and checks: positional arguments ``x, <states>, w_ih, w_hh, b_ih, b_hh,
<extra parameters>`` (the order of :mod:`rnnfast.reference`'s oracle of the cell), keywords
``lengths``, ``training`` and ``precision`` (and ``nonlinearity`` for a cell with more than one),
and a backward that returns every gradient by argument name plus ``dh_all`` (keywords ``need_dx``
and ``precision``: see :mod:`rnnfast.functional`).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Any

from ._cells import CELLS, CellSpec
from ._loader import core

__all__ = ["install"]

_HAND_WRITTEN = ("rnn", "lstm", "gru")
_P = inspect.Parameter


def _signature(spec: CellSpec) -> inspect.Signature:
    names = ["x", *spec.state_names, "w_ih", "w_hh", "b_ih", "b_hh"]
    names += [name for name, _ in spec.extra_params]
    params = [_P(n, _P.POSITIONAL_OR_KEYWORD) for n in names]
    if len(spec.nonlinearities) > 1:
        params.append(_P("nonlinearity", _P.KEYWORD_ONLY, default=spec.nonlinearities[0]))
    params += [
        _P("lengths", _P.KEYWORD_ONLY, default=None),
        _P("training", _P.KEYWORD_ONLY, default=True),
        _P("precision", _P.KEYWORD_ONLY, default=None),
    ]
    return inspect.Signature(params)


def _make_forward(spec: CellSpec, F: Any) -> Callable[..., Any]:
    sig = _signature(spec)

    def forward(*args: Any, **kwargs: Any) -> tuple[Any, ...]:
        try:
            b = sig.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{spec.name}_forward{sig}: {e}") from None
        b.apply_defaults()
        v = b.arguments
        nl = F._check_nonlinearity(v.get("nonlinearity", spec.nonlinearities[0]))
        if nl not in spec.nonlinearities:
            raise ValueError(
                f"nonlinearity: the {spec.name} cell takes {spec.nonlinearities}, got {nl!r}"
            )
        a = F._Args(spec.name, v["x"], v["w_ih"], v["w_hh"], v["b_ih"], v["b_hh"])
        states = [a.state(n, v[n]) for n in spec.state_names]
        extra = F._extra_params(spec.name, v, a.dtype, a.H)
        lengths = a.lengths(v["lengths"])
        training = F._check_bool("training", v["training"])
        a.check_forward_memory(spec.name, training)
        p = v["precision"]
        fwd = core.sequence_forward if p is None else F._bind(p, a.dtype, True)
        out = fwd(
            spec.name,
            a.x,
            states[0],
            states[1] if spec.has_cell_state else None,
            a.w_ih,
            a.w_hh,
            a.b_ih,
            a.b_hh,
            extra or None,
            lengths,
            nl,
            training,
        )
        cache = F.SequenceCache(spec.name, nl, out[-1], a, extra) if training else None
        return (*out[:-1], cache)

    forward.__name__ = forward.__qualname__ = f"{spec.name}_forward"
    forward.__signature__ = sig  # type: ignore[attr-defined]
    shapes = ", ".join(f"{n} ({k}*H,)" for n, k in spec.extra_params)
    forward.__doc__ = (
        f"The {spec.name} cell over a whole sequence (gates {spec.gate_order}; "
        f"its equations: cpp/include/rnnfast/cells/{spec.name}.hpp and rnnfast.reference).\n\n"
        f"Args:\n    x: (T, B, I) float32 or float64. {', '.join(spec.state_names)}: (B, H) or None.\n"
        f"    w_ih: ({spec.gates}H, I); w_hh: ({spec.gates}H, H); b_ih, b_hh: ({spec.gates}H,) or "
        f"both None. {shapes}\n    lengths: (B,) integers in [0, T], or None. training: False = "
        f"inference, cache None.\n    precision: None (the thread's mode), 'fp32' or 'bf16' "
        f"(float32 only): this call's mode (rnnfast.functional).\n\nReturns:\n    y (T, B, H), "
        + ", ".join(f"{n[:-1]}_n (B, H)" for n in spec.state_names)
        + ", cache (SequenceCache or None)."
    )
    return forward


def _make_backward(spec: CellSpec, F: Any) -> Callable[..., Any]:
    def backward(
        cache: Any,
        dy: Any,
        dh_n: Any = None,
        dc_n: Any = None,
        *,
        need_dx: bool = True,
        precision: str | None = None,
    ) -> dict[str, Any]:
        if not spec.has_cell_state and dc_n is not None:
            raise TypeError(f"dc_n: the {spec.name} cell has no cell state")
        return F._backward(spec.name, cache, dy, dh_n, dc_n, need_dx, precision)

    backward.__name__ = backward.__qualname__ = f"{spec.name}_backward"
    if not spec.has_cell_state:
        params = [p for n, p in inspect.signature(backward).parameters.items() if n != "dc_n"]
        backward.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    backward.__doc__ = (
        f"Full BPTT through :func:`{spec.name}_forward`: dy (T, B, H) or None, "
        + ", ".join(f"d{n[:-1]}_n" for n in spec.state_names)
        + " (B, H) or None.\n\nReturns a dict with x, "
        + ", ".join(spec.state_names)
        + ", w_ih, w_hh, b_ih, b_hh, "
        + "".join(f"{n}, " for n, _ in spec.extra_params)
        + "dh_all (T, B, H)."
    )
    return backward


def install(namespace: dict[str, Any], names: list[str]) -> None:
    """Add the generated pair of every registered cell without hand-written ones to ``namespace``
    (the :mod:`rnnfast.functional` module) and to its ``__all__`` list ``names``."""
    F = sys.modules[namespace["__name__"]]  # the (partly initialised) rnnfast.functional
    for spec in CELLS:
        if spec.name in _HAND_WRITTEN:
            continue
        for fn in (_make_forward(spec, F), _make_backward(spec, F)):
            namespace[fn.__name__] = fn
            fn.__module__ = "rnnfast.functional"
            if fn.__name__ not in names:
                names.append(fn.__name__)
