"""rnnfast.nn: the layers (PyTorch's ``torch.nn`` conventions), one concept per file.

* :mod:`~rnnfast.nn.module`: the :class:`Module` base (parameters, state_dict, train/eval,
  zero_grad, config, the flat parameter buffer, the thread guard, pickling).
* :mod:`~rnnfast.nn.rnn`: the recurrent stacks :class:`RNN`, :class:`LSTM`, :class:`GRU`
  (:class:`RNNBase`), :class:`PeepholeLSTM`; :mod:`~rnnfast.nn.layernorm`: :class:`LayerNormLSTM`,
  :class:`LayerNormGRU`; :mod:`~rnnfast.nn.streaming`: their truncated-BPTT
  sessions; :mod:`~rnnfast.nn.frozen`: :class:`FrozenRNN`, the inference snapshot
  ``module.freeze()`` makes (weights packed once, fp32 or bf16).
* :mod:`~rnnfast.nn.minimal`: :class:`MinGRU`, :class:`MinLSTM` (Feng et al. 2024; a parallel scan
  over time, no recurrent weight).
* :mod:`~rnnfast.nn.layers`: :class:`Linear`, :class:`Embedding`.
* :mod:`~rnnfast.nn.sequence_model`: :class:`SequenceModel`.
* :mod:`~rnnfast.nn.config`: :func:`build_model`, :func:`model_from_config`.
* :mod:`~rnnfast.nn.backend`: :func:`set_backend` / :func:`get_backend` (tests: the NumPy oracle).

:mod:`rnnfast.modules` re-exports all of it (the names every earlier rnnfast used).
"""

from __future__ import annotations

from ._util import INIT_PRESETS, MODES, IncompatibleKeys
from .backend import get_backend, set_backend
from .config import build_model, model_from_config
from .frozen import FrozenRNN
from .layernorm import LayerNormGRU, LayerNormLSTM
from .layers import Embedding, Linear
from .minimal import MinGRU, MinLSTM
from .module import Module
from .rnn import GRU, LSTM, RNN, PeepholeLSTM, ResetBeforeGRU, RNNBase
from .sequence_model import SequenceModel
from .streaming import TBPTTSession

__all__ = [
    "Module",
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
    "TBPTTSession",
    "FrozenRNN",
    "IncompatibleKeys",
    "build_model",
    "model_from_config",
    "set_backend",
    "get_backend",
    "INIT_PRESETS",
    "MODES",
]
