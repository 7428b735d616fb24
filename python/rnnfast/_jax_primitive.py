"""The host-call primitive of :mod:`rnnfast.jax`: XLA's Python host callback without
``jax.pure_callback``'s wrapping. Private; :mod:`rnnfast.jax` builds it once (``_HOST_PRIMITIVE``).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__: list[str] = []


def _make_host_primitive() -> Any:
    """A primitive whose lowering hands XLA's host buffers to the callback as NumPy arrays.

    ``jax.pure_callback`` (jax 0.10) first wraps every argument into a jax Array with
    ``device_put`` and checks the results, ~0.3 ms of CPU per call measured here; this primitive
    calls the same XLA host-callback custom call without that wrapping (~0.06 ms). It uses
    ``jax._src.callback.emit_python_callback``, a private function: when it is missing or its
    signature changed, None is returned and ``jax.pure_callback`` is used instead (same results;
    ``RNNFAST_JAX_CALLBACK=pure`` forces that).
    """
    if os.environ.get("RNNFAST_JAX_CALLBACK", "") == "pure":
        return None
    try:
        from jax._src.callback import emit_python_callback
        from jax.extend.core import Primitive
        from jax.interpreters import batching, mlir

        params = inspect.signature(emit_python_callback).parameters
        if not {"has_side_effect", "returns_token"} <= set(params):
            return None
    except (ImportError, AttributeError, TypeError, ValueError):
        return None

    prim = Primitive("rnnfast_host_call")
    prim.multiple_results = True

    def out_avals(avals: Sequence[Any], bases: tuple[int, ...], results: Any) -> list[Any]:
        lead = np.broadcast_shapes(*(a.shape[: len(a.shape) - b] for a, b in zip(avals, bases)))
        return [jax.core.ShapedArray(lead + shape, np.dtype(dt)) for shape, dt in results]

    def impl(*args: Any, callback: Any, bases: Any, results: Any) -> list[Any]:
        outs = callback(*(np.asarray(a) for a in args))
        return [jnp.asarray(o) for o in outs]

    def abstract_eval(*avals: Any, callback: Any, bases: Any, results: Any) -> list[Any]:
        return out_avals(avals, bases, results)

    def lowering(ctx: Any, *args: Any, callback: Any, bases: Any, results: Any) -> Any:
        def cb(*arrs: Any) -> tuple[Any, ...]:
            return tuple(callback(*arrs))

        out, _, _ = emit_python_callback(
            ctx, cb, None, list(args), ctx.avals_in, ctx.avals_out,
            has_side_effect=False, returns_token=False,
        )  # fmt: skip
        return out

    def batch_rule(args: Any, dims: Any, *, callback: Any, bases: Any, results: Any) -> Any:
        # the callbacks take any number of leading vmapped axes (size 1 = not vmapped), as with
        # pure_callback's vmap_method="expand_dims"
        moved = [
            jnp.expand_dims(a, 0) if d is None else jnp.moveaxis(a, d, 0)
            for a, d in zip(args, dims)
        ]
        outs = prim.bind(*moved, callback=callback, bases=bases, results=results)
        return outs, [0] * len(outs)

    prim.def_impl(impl)
    prim.def_abstract_eval(abstract_eval)
    mlir.register_lowering(prim, lowering, platform="cpu", cacheable=False)
    batching.primitive_batchers[prim] = batch_rule
    return prim
