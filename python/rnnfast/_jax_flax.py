"""The Flax modules of :mod:`rnnfast.jax` (linen ``GRU``/``LSTM``/``RNN`` and ``nnx.*``), built on
first access (flax is optional even with jax installed). Private: reach them as
``rnnfast.jax.GRU`` / ``rnnfast.jax.nnx.GRU``.

Shapes: T = time steps, B = batch, I = input size, H = hidden size, L = layers, D = directions.
"""

from __future__ import annotations

import types
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._cells import CELLS

__all__: list[str] = []

_GATES = {c.name: c.gates for c in CELLS}  # gate count per cell, from the registry
_PUBLIC_MODULE = "rnnfast.jax"  # where users reach the classes (their __module__)


def _reverse_index(t_steps: int, lengths: Any, batch: int) -> Any:
    """(T, B) time index that reverses each sequence within its valid length (an involution)."""
    t = jnp.arange(t_steps)[:, None]
    if lengths is None:
        return jnp.broadcast_to(t_steps - 1 - t, (t_steps, batch))
    n = jnp.asarray(lengths)[None, :]
    return jnp.where(t < n, n - 1 - t, t)


def _run_stack(
    cell: str,
    nonlinearity: str,
    get: Any,
    x: Any,
    hx: Any,
    lengths: Any,
    hidden_size: int,
    num_layers: int,
    bidirectional: bool,
    bias: bool,
    batch_first: bool,
) -> tuple[Any, Any]:
    """A stack of layers and directions on rnnfast.jax's functions, ``get(name, shape)`` giving the
    parameter of that PyTorch name (shared by the linen and nnx modules)."""
    from .jax import gru, lstm, rnn  # rnnfast.jax imports this module lazily: no cycle

    H, L, D, G = hidden_size, num_layers, 2 if bidirectional else 1, _GATES[cell]
    if x.ndim != 3:
        raise ValueError(f"x: expected a 3-D array, got shape {x.shape}")
    if batch_first:
        x = jnp.swapaxes(x, 0, 1)
    T, B, _ = x.shape
    if cell == "lstm":
        h0, c0 = (None, None) if hx is None else hx
    else:
        h0, c0 = hx, None
    for name, st in (("hx[0]" if cell == "lstm" else "hx", h0), ("hx[1]", c0)):
        if st is not None and st.shape != (L * D, B, H):
            raise ValueError(f"{name}: expected shape {(L * D, B, H)}, got {st.shape}")
    rev = _reverse_index(T, lengths, B) if D == 2 else None
    inp = x
    hs, cs = [], []
    for layer in range(L):
        ys = []
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w_ih = get(f"weight_ih{sfx}", (G * H, inp.shape[2]))
            w_hh = get(f"weight_hh{sfx}", (G * H, H))
            b_ih = get(f"bias_ih{sfx}", (G * H,)) if bias else None
            b_hh = get(f"bias_hh{sfx}", (G * H,)) if bias else None
            xin = inp if d == 0 else jnp.take_along_axis(inp, rev[:, :, None], axis=0)
            k = layer * D + d
            hk = None if h0 is None else h0[k]
            if cell == "lstm":
                ck = None if c0 is None else c0[k]
                y, (h, c) = lstm(xin, (hk, ck), w_ih, w_hh, b_ih, b_hh, lengths=lengths)
                cs.append(c)
            elif cell == "gru":
                y, h = gru(xin, hk, w_ih, w_hh, b_ih, b_hh, lengths=lengths)
            else:
                y, h = rnn(
                    xin, hk, w_ih, w_hh, b_ih, b_hh, nonlinearity=nonlinearity, lengths=lengths
                )
            if d == 1:
                y = jnp.take_along_axis(y, rev[:, :, None], axis=0)
            ys.append(y)
            hs.append(h)
        inp = ys[0] if D == 1 else jnp.concatenate(ys, axis=2)
    out = jnp.swapaxes(inp, 0, 1) if batch_first else inp
    h_n = jnp.stack(hs)
    return out, ((h_n, jnp.stack(cs)) if cell == "lstm" else h_n)


def _uniform_init(hidden_size: int, dtype: Any) -> Any:
    bound = 1.0 / np.sqrt(hidden_size)  # PyTorch's init: U(-1/sqrt(H), 1/sqrt(H))

    def init(key: Any, shape: tuple[int, ...], dtype: Any = dtype) -> Any:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


_DOC = """Flax {kind} {Cell} stack on rnnfast's kernels, with PyTorch's ``nn.{Cell}`` conventions{extra}.

    {args}Parameters are named as PyTorch's state_dict (``weight_ih_l0``, ``bias_hh_l1_reverse``,
    ...) with its shapes and init U(-1/sqrt(H), 1/sqrt(H)). ``__call__(x, hx=None, lengths=None)``:
    x (T, B, I) ((B, T, I) with batch_first), hx (num_layers * num_directions, B, H) (LSTM: a tuple
    (h0, c0)) or None, lengths (B,) or None -> (out (T, B, D*H), h_n (L*D, B, H)) (LSTM:
    ``(out, (h_n, c_n))``). No inter-layer dropout.
    """


def _build_linen() -> dict[str, Any]:
    try:
        import flax.linen as nn
    except ImportError as exc:
        raise ImportError(
            "rnnfast.jax.GRU/LSTM/RNN are Flax modules: pip install 'rnnfast[jax]' (flax)"
        ) from exc

    class _Stack(nn.Module):
        hidden_size: int
        num_layers: int = 1
        bias: bool = True
        batch_first: bool = False
        bidirectional: bool = False
        nonlinearity: str = "tanh"
        param_dtype: Any = jnp.float32
        _cell = "rnn"

        @nn.compact
        def __call__(self, x: Any, hx: Any = None, lengths: Any = None) -> tuple[Any, Any]:
            init = _uniform_init(self.hidden_size, self.param_dtype)
            return _run_stack(
                self._cell, self.nonlinearity,
                lambda name, shape: self.param(name, init, shape),
                jnp.asarray(x, self.param_dtype), hx, lengths, self.hidden_size,
                self.num_layers, self.bidirectional, self.bias, self.batch_first,
            )  # fmt: skip

    args = (
        "Attributes: hidden_size, num_layers=1, bias=True, batch_first=False, bidirectional=False,"
        "\n    {nl}param_dtype=float32 (the input size comes from x at init). "
    )
    out = {}
    for cell, name in (("rnn", "RNN"), ("lstm", "LSTM"), ("gru", "GRU")):
        nl = 'nonlinearity="tanh" | "relu", ' if cell == "rnn" else ""
        doc = _DOC.format(kind="linen", Cell=name, extra="", args=args.format(nl=nl))
        cls = type(name, (_Stack,), {"_cell": cell, "__doc__": doc, "__module__": _PUBLIC_MODULE})
        out[name] = cls
    return out


def _build_nnx() -> dict[str, Any]:
    try:
        from flax import nnx
    except ImportError as exc:
        raise ImportError(
            "rnnfast.jax.nnx.GRU/LSTM/RNN are Flax nnx modules: pip install 'rnnfast[jax]' (flax)"
        ) from exc

    class _Stack(nnx.Module):
        _cell = "rnn"

        def __init__(
            self,
            input_size: int,
            hidden_size: int,
            num_layers: int = 1,
            *,
            bias: bool = True,
            batch_first: bool = False,
            bidirectional: bool = False,
            nonlinearity: str = "tanh",
            param_dtype: Any = jnp.float32,
            rngs: Any,
        ) -> None:
            if nonlinearity not in ("tanh", "relu") or (
                self._cell != "rnn" and nonlinearity != "tanh"
            ):
                raise ValueError(
                    f"nonlinearity: expected 'tanh' (or 'relu' for RNN), got {nonlinearity!r}"
                )
            self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
            self.bias, self.batch_first, self.bidirectional = bias, batch_first, bidirectional
            self.nonlinearity, self.param_dtype = nonlinearity, param_dtype
            init = _uniform_init(hidden_size, param_dtype)
            G, D = _GATES[self._cell], 2 if bidirectional else 1
            for layer in range(num_layers):
                n_in = input_size if layer == 0 else D * hidden_size
                for d in range(D):
                    sfx = f"_l{layer}" + ("_reverse" if d else "")
                    shapes = {
                        "weight_ih": (G * hidden_size, n_in),
                        "weight_hh": (G * hidden_size, hidden_size),
                    }
                    if bias:
                        shapes.update(bias_ih=(G * hidden_size,), bias_hh=(G * hidden_size,))
                    for k, shape in shapes.items():
                        setattr(self, k + sfx, nnx.Param(init(rngs.params(), shape)))

        def __call__(self, x: Any, hx: Any = None, lengths: Any = None) -> tuple[Any, Any]:
            return _run_stack(
                self._cell, self.nonlinearity, lambda name, shape: getattr(self, name)[...],
                jnp.asarray(x, self.param_dtype), hx, lengths, self.hidden_size,
                self.num_layers, self.bidirectional, self.bias, self.batch_first,
            )  # fmt: skip

    args = (
        "``{name}(input_size, hidden_size, num_layers=1, *, bias=True, batch_first=False,"
        "\n    bidirectional=False, {nl}param_dtype=float32, rngs)``. "
    )
    out = {}
    for cell, name in (("rnn", "RNN"), ("lstm", "LSTM"), ("gru", "GRU")):
        nl = 'nonlinearity="tanh" | "relu", ' if cell == "rnn" else ""
        doc = _DOC.format(
            kind="nnx", Cell=name, extra="", args=args.format(name=f"nnx.{name}", nl=nl)
        )
        cls = type(name, (_Stack,), {"_cell": cell, "__doc__": doc, "__module__": _PUBLIC_MODULE})
        cls.__qualname__ = f"nnx.{name}"
        out[name] = cls
    return {"nnx": types.SimpleNamespace(**out)}
