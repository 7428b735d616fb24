"""rnnfast inside PyTorch: drop-in ``GRU``, ``LSTM`` and ``RNN`` modules over the rnnfast kernels.

``rnnfast.torch.GRU(...)`` takes ``torch.nn.GRU``'s constructor arguments, forward signature
(``input``, ``hx`` / ``(h0, c0)``; ``batch_first``; unbatched 2-D input; ``PackedSequence`` in and
out), returns the same outputs and has the same parameters (``nn.Parameter``s named ``weight_ih_l0``,
``bias_hh_l1_reverse``, ...; identical state_dict and, for one seed, identical initial values), so
torch optimizers, ``clip_grad_norm_``, LR schedulers and checkpoints work unchanged.
:func:`convert` swaps every ``nn.GRU``/``nn.LSTM``/``nn.RNN`` of a module tree for these modules,
keeping the very same Parameter objects (an optimizer built before keeps working); :func:`revert`
swaps them back.

How it runs: each layer and direction is one call of a ``torch.library.custom_op``
(``rnnfast::gru_forward``, ``rnnfast::lstm_forward``, ``rnnfast::rnn_forward``, and the matching
``*_backward``) with ``register_autograd`` and ``register_fake``, so autograd, ``torch.compile``
(``fullgraph=True``: no graph break; a PackedSequence output, whose size depends on the lengths, is
the one exception) and ``torch.export`` see one opaque op per layer and direction.
Tensors reach the kernels without a copy (``tensor.numpy()`` on C-contiguous CPU tensors; results come
back with ``torch.from_numpy``), and the kernels release the GIL. The forward's activation cache is
owned by a one-byte uint8 "handle" tensor that the forward op returns and autograd saves for the
backward op; should the handle ever not lead back to its cache, the backward op recomputes the forward
(same result, one extra forward). In eager mode (outside torch.compile, torch.export and
torch.jit.trace) the modules call the very same implementation through a plain
``torch.autograd.Function`` instead (the cache on its ctx): the dispatcher and custom_op's generic
autograd wrapper cost ~0.3 ms per layer and direction of a training step (set
``EAGER_FAST_PATH = False`` to use the ops everywhere). Dropout between layers is ``torch.nn.functional.dropout`` on the
layer outputs (training mode only), as in ``nn.GRU``.

Scope: float32 and float64 CPU tensors. ``LSTM(proj_size=P)`` runs the fused projected-LSTM kernels
(``rnnfast::lstm_proj_forward`` / ``_backward``, :mod:`rnnfast._torch_proj`). A CUDA (or any non-CPU)
tensor or float16/bfloat16 raise a clear error (no silent fallback: use ``revert(model)`` to get torch's own
modules back). Double backward (``create_graph=True`` then a second backward through the RNN) is not
supported. Threads: the kernels use rnnfast's thread pool (``rnnfast.set_num_threads``), not
``torch.set_num_threads``.

Shapes (T = time steps, B = batch, I = input size, H = hidden size, L = num_layers, D = 1 or 2
directions): input (T, B, I) ((B, T, I) with ``batch_first``), h0/c0 (L*D, B, H); output (T, B, D*H),
h_n/c_n (L*D, B, H).

``torch`` is imported by this module only: ``import rnnfast`` never needs it.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from . import _torch_proj
from ._cells import CELLS
from ._torch_ops import _CACHES as _CACHES  # the live handles (read by tests)
from ._torch_ops import (
    _EagerRNN,
    _run_forward,
    gru_forward_op,
    lstm_forward_op,
    rnn_forward_op,
)
from ._torch_ops import gru_backward_op as gru_backward_op  # the op functions, as before the split
from ._torch_ops import lstm_backward_op as lstm_backward_op
from ._torch_ops import rnn_backward_op as rnn_backward_op

__all__ = ["EAGER_FAST_PATH", "GRU", "LSTM", "RNN", "convert", "revert"]

Tensor = torch.Tensor

_GATES = {c.name: c.gates for c in CELLS}  # gate count per cell, from the registry

# The eager path (``_torch_ops._EagerRNN``): outside torch.compile / torch.export / torch.jit.trace
# the modules call the NumPy-side implementation through a plain autograd.Function instead of the
# custom ops, whose dispatch costs more than the whole kernel at small sizes.
# False: always use the custom ops (tests compare both paths)
EAGER_FAST_PATH = True


# --------------------------------------------------------------------------------------------------


def _check_device_dtype(name: str, t: Tensor) -> None:
    if t.device.type != "cpu":
        raise RuntimeError(
            f"rnnfast.torch: {name} is on {t.device}; rnnfast runs on the CPU only "
            "(move the tensors to the CPU, or use torch's own module: rnnfast.torch.revert(model))"
        )
    if t.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"rnnfast.torch: {name}: expected float32 or float64, got {t.dtype}")


class _RNNBase(nn.Module):
    """Shared body of GRU/LSTM/RNN: nn.RNNBase's constructor, parameters and checks.

    Deliberately not a subclass of torch.nn.RNNBase: Dynamo graph-breaks on every instance of
    nn.RNN/GRU/LSTM, which is exactly what these modules avoid.
    """

    _cell: str = "gru"

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        num_directions = 2 if bidirectional else 1
        # the checks and messages of torch.nn.RNNBase
        if (
            not isinstance(dropout, numbers.Number)
            or isinstance(dropout, bool)
            or not 0 <= dropout <= 1
        ):
            raise ValueError(
                "dropout should be a number in range [0, 1] representing the probability of an "
                "element being zeroed"
            )
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero "
                "dropout expects num_layers greater than 1, but got "
                f"dropout={dropout} and num_layers={num_layers}",
                stacklevel=3,
            )
        if not isinstance(bias, bool):
            raise TypeError(f"bias should be of type bool, got: {type(bias).__name__}")
        if not isinstance(batch_first, bool):
            raise TypeError(
                f"batch_first should be of type bool, got: {type(batch_first).__name__}"
            )
        if not isinstance(input_size, int):
            raise TypeError(f"input_size should be of type int, got: {type(input_size).__name__}")
        if input_size <= 0:
            raise ValueError("input_size must be greater than zero")
        if not isinstance(hidden_size, int):
            raise TypeError(f"hidden_size should be of type int, got: {type(hidden_size).__name__}")
        if hidden_size <= 0:
            raise ValueError("hidden_size must be greater than zero")
        if num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if proj_size < 0:
            raise ValueError(
                "proj_size should be a positive integer or zero to disable projections"
            )
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        if dtype is not None and dtype not in (torch.float32, torch.float64):
            raise TypeError(f"rnnfast.torch: dtype: expected float32 or float64, got {dtype}")
        if device is not None and torch.device(device).type not in ("cpu", "meta"):
            raise RuntimeError(
                f"rnnfast.torch: device {device}: rnnfast runs on the CPU only "
                "(use torch.nn's own module on other devices)"
            )

        gate_size = _GATES[self._cell] * hidden_size
        self._flat_weights_names: list[str] = []
        self._all_weights: list[list[str]] = []
        for layer in range(num_layers):
            for direction in range(num_directions):
                real_hidden = proj_size if proj_size > 0 else hidden_size
                layer_input_size = input_size if layer == 0 else real_hidden * num_directions
                params = [
                    torch.empty((gate_size, layer_input_size), **factory_kwargs),
                    torch.empty((gate_size, real_hidden), **factory_kwargs),
                ]
                names = ["weight_ih_l{}{}", "weight_hh_l{}{}"]
                if bias:
                    params += [
                        torch.empty(gate_size, **factory_kwargs),
                        torch.empty(gate_size, **factory_kwargs),
                    ]
                    names += ["bias_ih_l{}{}", "bias_hh_l{}{}"]
                if proj_size > 0:
                    params.append(torch.empty((proj_size, hidden_size), **factory_kwargs))
                    names.append("weight_hr_l{}{}")
                suffix = "_reverse" if direction == 1 else ""
                names = [n.format(layer, suffix) for n in names]
                for name, p in zip(names, params):
                    setattr(self, name, nn.Parameter(p))
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        self.reset_parameters()

    # ---- nn.RNNBase's public surface ----

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) for every parameter, in nn.RNNBase's order (same seed, same
        values)."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    def flatten_parameters(self) -> None:
        """No-op (cuDNN only in torch); here for code that calls it."""

    @property
    def _flat_weights(self) -> list[Tensor]:
        return [getattr(self, n) for n in self._flat_weights_names]

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        return [[getattr(self, w) for w in weights] for weights in self._all_weights]

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if self.num_layers != 1:
            s += ", num_layers={num_layers}"
        if self.bias is not True:
            s += ", bias={bias}"
        if self.batch_first is not False:
            s += ", batch_first={batch_first}"
        if self.dropout != 0:
            s += ", dropout={dropout}"
        if self.bidirectional is not False:
            s += ", bidirectional={bidirectional}"
        if self.proj_size != 0:
            s += ", proj_size={proj_size}"
        return s.format(**self.__dict__)

    # ---- forward ----

    def _weights(self, layer: int, direction: int) -> list[Tensor | None]:
        names = self._all_weights[layer * (2 if self.bidirectional else 1) + direction]
        w = [getattr(self, n) for n in names]
        if not self.bias:
            w = [w[0], w[1], None, None, *w[2:]]
        return w  # w_ih, w_hh, b_ih, b_hh (, w_hr)

    def _run(
        self, x: Tensor, states: list[Tensor | None], lengths: Tensor | None
    ) -> tuple[Tensor, list[Tensor]]:
        """x (T, B, I); states: [h0 (L*D, B, H)] (+ [c0] for lstm) or Nones.

        Returns (y (T, B, D*H), [h_n (L*D, B, H)(, c_n)]).
        """
        D = 2 if self.bidirectional else 1
        training = torch.is_grad_enabled() and (
            x.requires_grad
            or any(p.requires_grad for p in self._flat_weights)
            or any(s is not None and s.requires_grad for s in states)
        )
        eager = EAGER_FAST_PATH and not (torch.compiler.is_compiling() or torch.jit.is_tracing())
        nl = getattr(self, "nonlinearity", "tanh")
        pad = [None] if self._cell != "lstm" else []  # c0 slot of gru/rnn in the eager calls
        ns = len(states)
        finals: list[list[Tensor]] = [[] for _ in range(ns)]
        inp = x
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0 and self.training:
                inp = nn.functional.dropout(inp, self.dropout, True)
            ys = []
            for d in range(D):
                k = layer * D + d
                s0 = [s[k] if s is not None else None for s in states]
                w = self._weights(layer, d)
                if self.proj_size > 0:
                    y, outs = _torch_proj.run_layer(
                        inp, s0[0], s0[1], w, lengths, d == 1, training, eager
                    )
                elif eager:
                    if training:
                        y, *outs = _EagerRNN.apply(
                            self._cell, nl, inp, *s0, *pad, *w, lengths, d == 1
                        )
                    else:
                        y_, fin, _, _ = _run_forward(
                            self._cell, nl, inp, *s0, *pad, *w, lengths, d == 1, False
                        )
                        y, outs = torch.from_numpy(y_), [torch.from_numpy(f) for f in fin]
                elif self._cell == "gru":
                    y, h_n, _ = gru_forward_op(inp, *s0, *w, lengths, d == 1, training)
                    outs = [h_n]
                elif self._cell == "lstm":
                    y, h_n, c_n, _ = lstm_forward_op(inp, *s0, *w, lengths, d == 1, training)
                    outs = [h_n, c_n]
                else:
                    y, h_n, _ = rnn_forward_op(inp, *s0, *w, lengths, d == 1, training, nl)
                    outs = [h_n]
                ys.append(y)
                for j in range(ns):
                    finals[j].append(outs[j])
            inp = ys[0] if D == 1 else torch.cat(ys, dim=2)
        return inp, [torch.stack(f) for f in finals]

    def _forward(self, input: Any, hx: Any) -> tuple[Any, Any]:
        D = 2 if self.bidirectional else 1
        is_lstm = self._cell == "lstm"
        packed = isinstance(input, PackedSequence)
        lengths = None
        if packed:
            sorted_indices = input.sorted_indices
            x, lengths = pad_packed_sequence(input)  # (T, B, I) in the caller's batch order
            is_batched = True
        else:
            if input.dim() not in (2, 3):
                raise ValueError(
                    f"{type(self).__name__}: Expected input to be 2D or 3D, "
                    f"got {input.dim()}D tensor instead"
                )
            is_batched = input.dim() == 3
            x = input if is_batched else input.unsqueeze(1)
            if is_batched and self.batch_first:
                x = x.transpose(0, 1)
        _check_device_dtype("input", x)
        w0 = getattr(self, self._flat_weights_names[0])
        _check_device_dtype("weights", w0)
        if x.dtype != w0.dtype:
            raise ValueError(
                f"RNN input dtype ({x.dtype}) does not match weight dtype ({w0.dtype}). "
                f"Convert input: input.to({w0.dtype}), or convert model: model.to({x.dtype})"
            )
        if x.size(-1) != self.input_size:
            raise RuntimeError(
                "input.size(-1) must be equal to input_size. "
                f"Expected {self.input_size}, got {x.size(-1)}"
            )
        expected = (self.num_layers * D, x.size(1), self.proj_size or self.hidden_size)
        expected_c = (self.num_layers * D, x.size(1), self.hidden_size)
        states: list[Tensor | None]
        if hx is None:
            states = [None, None] if is_lstm else [None]
        else:
            states = list(hx) if is_lstm else [hx]
            if is_lstm and len(states) != 2:
                raise RuntimeError("LSTM: hx must be a tuple (h_0, c_0)")
            want = 3 if is_batched else 2
            for name, s in zip(("hx", "cx"), states):
                if s.dim() != want:
                    raise RuntimeError(
                        f"For {'batched 3-D' if is_batched else 'unbatched 2-D'} input, {name} "
                        f"should also be {want}-D but got {s.dim()}-D tensor"
                    )
            if not is_batched:
                states = [s.unsqueeze(1) for s in states]
            for j, s in enumerate(states):
                _check_device_dtype("hx", s)
                if s.dtype != x.dtype:
                    raise RuntimeError(
                        f"rnnfast.torch: hx dtype {s.dtype} does not match input dtype {x.dtype}"
                    )
                want_shape = expected_c if j == 1 else expected
                if tuple(s.shape) != want_shape:
                    kind = "cell" if j == 1 else "hidden"
                    raise RuntimeError(f"Expected {kind} size {want_shape}, got {list(s.shape)}")
        y, finals = self._run(x, states, lengths)
        if packed:
            # pack in the input's order: sorted by length, time-major (the rows valid at each step)
            lens_sorted = lengths.index_select(0, sorted_indices)
            mask = torch.arange(y.size(0))[:, None] < lens_sorted[None, :]
            data = y.index_select(1, sorted_indices)[mask]
            output: Any = PackedSequence(
                data, input.batch_sizes, input.sorted_indices, input.unsorted_indices
            )
        else:
            output = y
            if not is_batched:
                output = y.squeeze(1)
                finals = [f.squeeze(1) for f in finals]
            elif self.batch_first:
                output = y.transpose(0, 1)
        return output, (tuple(finals) if is_lstm else finals[0])


class GRU(_RNNBase):
    """torch.nn.GRU over the rnnfast kernels (same arguments, outputs, parameters and state_dict).

    Args:
        input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
        bidirectional=False, device=None (CPU only), dtype=None (float32 or float64).

    forward(input, hx=None): input (T, B, I) ((B, T, I) with batch_first), (T, I) unbatched, or a
    PackedSequence; hx (L*D, B, H) or None (zeros). Returns (output (T, B, D*H) or a
    PackedSequence, h_n (L*D, B, H)).
    """

    _cell = "gru"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, **kwargs)

    def forward(self, input: Any, hx: Tensor | None = None) -> tuple[Any, Tensor]:
        return self._forward(input, hx)


class LSTM(_RNNBase):
    """torch.nn.LSTM over the rnnfast kernels (same arguments, outputs, parameters and state_dict).

    Args: as :class:`GRU`, plus proj_size=0 (0 < P < H: h_t = W_hr (o * tanh(c_t)) is P wide,
    ``weight_hr_l{k}`` (P, H), as torch.nn.LSTM).

    forward(input, hx=None): hx = (h_0 (L*D, B, P or H), c_0 (L*D, B, H)), or None. Returns
    (output (T, B, D*P or D*H), (h_n, c_n)).
    """

    _cell = "lstm"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__("LSTM", *args, **kwargs)

    def forward(
        self, input: Any, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Any, tuple[Tensor, Tensor]]:
        return self._forward(input, hx)


class RNN(_RNNBase):
    """torch.nn.RNN (Elman, tanh or relu) over the rnnfast kernels.

    Args: input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, device=None, dtype=None (nn.RNN's positional order).
    """

    _cell = "rnn"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if len(args) > 3:
            self.nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            self.nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if self.nonlinearity == "tanh":
            mode = "RNN_TANH"
        elif self.nonlinearity == "relu":
            mode = "RNN_RELU"
        else:
            raise ValueError(
                f"Unknown nonlinearity '{self.nonlinearity}'. Select from 'tanh' or 'relu'."
            )
        super().__init__(mode, *args, **kwargs)

    def forward(self, input: Any, hx: Tensor | None = None) -> tuple[Any, Tensor]:
        return self._forward(input, hx)


# --------------------------------------------------------------------------------------------------
# convert / revert
# --------------------------------------------------------------------------------------------------

_TO_FAST = {nn.GRU: GRU, nn.LSTM: LSTM, nn.RNN: RNN}
_TO_TORCH = {GRU: nn.GRU, LSTM: nn.LSTM, RNN: nn.RNN}


def _swap(mod: nn.Module, cls: type) -> nn.Module:
    """A ``cls`` with ``mod``'s configuration holding ``mod``'s very Parameter objects."""
    kwargs: dict[str, Any] = dict(
        num_layers=mod.num_layers,
        bias=mod.bias,
        batch_first=mod.batch_first,
        dropout=mod.dropout,
        bidirectional=mod.bidirectional,
    )
    if isinstance(mod, (nn.RNN, RNN)):
        kwargs["nonlinearity"] = mod.nonlinearity
    if getattr(mod, "proj_size", 0) > 0:
        kwargs["proj_size"] = mod.proj_size
    w0 = getattr(mod, mod._flat_weights_names[0])
    with warnings.catch_warnings():  # the dropout-with-one-layer warning was given once already
        warnings.simplefilter("ignore", UserWarning)
        new = cls(mod.input_size, mod.hidden_size, device="meta", dtype=w0.dtype, **kwargs)
    for name in mod._flat_weights_names:
        setattr(new, name, getattr(mod, name))
    new.train(mod.training)
    return new


def _convert(module: nn.Module, table: dict[type, type], what: str) -> nn.Module:
    def swap(mod: nn.Module, path: str) -> nn.Module:
        cls = table.get(type(mod))
        if cls is None:
            return mod
        return _swap(mod, cls)

    root = swap(module, "")
    if root is not module:
        return root
    for name, child in list(module.named_modules()):
        for cname, sub in list(child.named_children()):
            new = swap(sub, f"{name}.{cname}" if name else cname)
            if new is not sub:
                setattr(child, cname, new)
    return module


def convert(module: nn.Module) -> nn.Module:
    """Replace every torch.nn.GRU/LSTM/RNN in ``module``'s tree with rnnfast.torch's (in place).

    The new modules hold the very same Parameter objects (an optimizer made before keeps working)
    and the same configuration and train/eval mode (an LSTM's proj_size included). Returns
    ``module`` (or, when ``module`` itself is an nn.GRU/LSTM/RNN, its replacement). Only exact nn.GRU/LSTM/RNN instances are replaced, not subclasses of them.
    """
    return _convert(module, _TO_FAST, "rnnfast.torch.convert")


def revert(module: nn.Module) -> nn.Module:
    """The inverse of :func:`convert`: every rnnfast.torch GRU/LSTM/RNN back to torch.nn's."""
    return _convert(module, _TO_TORCH, "rnnfast.torch.revert")
