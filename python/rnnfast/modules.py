"""Modules: RNN / LSTM / GRU stacks, Linear and Embedding layers, and the sequence-model container.

PyTorch's conventions throughout (``torch.nn.RNN`` / ``LSTM`` / ``GRU`` / ``Linear`` / ``Embedding``):
argument names, parameter names (``weight_ih_l0``, ``bias_hh_l1_reverse``, ...), shapes, gate orders
(LSTM i, f, g, o; GRU r, z, n) and initial-state layout (``(num_layers * num_directions, B, H)``).
Arrays are NumPy; every module has a ``dtype`` (float32 or float64) that its parameters, gradients
and outputs share (float inputs of the other float dtype are converted).

Differentiation is explicit, layer by layer, like a hand-written backward pass::

    rnn = LSTM(8, 32, num_layers=2)
    out, (h_n, c_n) = rnn(x)                 # x (T, B, 8) -> out (T, B, 32)
    dx = rnn.backward(dout)                  # fills rnn.grads (accumulates until zero_grad())

Every time step runs in the compiled core (:mod:`rnnfast.functional`): the Python code loops over
layers and directions only. Bidirectional ragged batches reverse each sequence within its own valid
length with one vectorised gather. ``eval()`` switches to inference (no dropout, no stored
activations: calling ``backward`` afterwards raises).

Thread safety: a module holds the activations of its last forward pass, so one module must not be
trained from two threads at once; inference (``eval()`` mode, ``forward``/``step``) stores nothing
shared except the preallocated ``step`` buffers, so concurrent ``forward`` calls in eval mode are safe
but concurrent ``step`` calls on one module are not.

Since the move to the :mod:`rnnfast.nn` package (one concept per file) this module re-exports
every name it defined before, public and private, for code and checkpoints that name
``rnnfast.modules``; the public classes still report ``__module__ == "rnnfast.modules"`` (the
class string :func:`rnnfast.io.save` records), so files written now also load in older versions.
"""

from __future__ import annotations

from .nn._cellops import (  # noqa: F401
    _cell_backward,
    _cell_forward,
    _gather_time,
    _init_layer,
    _orthogonal,
    _reverse_index,
)
from .nn._util import (  # noqa: F401
    _FLOAT_DTYPES,
    _GATES,
    INIT_PRESETS,
    MODES,
    Array,
    IncompatibleKeys,
    State,
    _as_float,
    _as_lengths,
    _cast_parameter,
    _check_allocatable,
    _check_dtype,
    _check_int,
    _fmt_bytes,
    _load_into,
    _to_numpy,
)
from .nn.backend import get_backend, set_backend
from .nn.config import _CELL_CLASSES, _from_cfg, build_model, model_from_config  # noqa: F401
from .nn.layernorm import LayerNormGRU, LayerNormLSTM
from .nn.layers import Embedding, Linear
from .nn.minimal import MinGRU, MinimalRNNBase, MinLSTM  # noqa: F401
from .nn.module import (  # noqa: F401
    _NO_CACHE_MSG,
    Module,
    _FlatParams,
    _getstate,
    _Guard,
    _offset_in,
    _private,
    _rebuild_streaming,
    _setstate,
    _unpickle_flat,
)
from .nn.rnn import GRU, LSTM, RNN, PeepholeLSTM, ResetBeforeGRU, RNNBase, _step_ready  # noqa: F401
from .nn.sequence_model import SequenceModel
from .nn.streaming import (  # noqa: F401
    TBPTTSession,
    _Chunk,
    _Stream,
    _tbptt_stream_class,
    _zero_nonfinite_rows,
)

__all__ = [
    "RNN",
    "LSTM",
    "GRU",
    "PeepholeLSTM",
    "ResetBeforeGRU",
    "LayerNormLSTM",
    "LayerNormGRU",
    "MinGRU",
    "MinLSTM",
    "RNNBase",
    "Linear",
    "Embedding",
    "SequenceModel",
    "IncompatibleKeys",
    "build_model",
    "model_from_config",
    "set_backend",
    "get_backend",
    "INIT_PRESETS",
    "MODES",
]
