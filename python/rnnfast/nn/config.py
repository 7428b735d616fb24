"""Building models: :func:`build_model` (a SequenceModel from a cell name and sizes) and
:func:`model_from_config` (any rnnfast model from its ``config()`` dict)."""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._util import _check_int
from .layers import Embedding, Linear
from .minimal import MINIMAL_CELLS, MinimalRNNBase
from .rnn import RNNBase
from .sequence_model import SequenceModel

__all__ = ["build_model", "model_from_config"]

#: cell name -> module class: every registered cell that has one (RNN, LSTM, GRU, PeepholeLSTM:
#: ``RNNBase._classes``, read live, so cells registered later appear), then the minimal cells
#: (MinGRU, MinLSTM), which are no CellSpecs (no recurrent weight)
_CELL_CLASSES: ChainMap[str, type[RNNBase] | type[MinimalRNNBase]] = ChainMap(
    MINIMAL_CELLS,  # type: ignore[arg-type]
    RNNBase._classes,  # type: ignore[arg-type]
)


def _minimal_kwargs(cell: str, init: str, rnn_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The stack arguments of a minimal cell: ValueError naming each argument it lacks when set to
    anything but its neutral value (``init`` "torch", ``dropout`` 0, ``bidirectional`` False),
    which are dropped."""
    if init != "torch":
        raise ValueError(
            f"init: the {cell} cell takes only 'torch' (its gates have no recurrent weight for the "
            f"'orthogonal' / 'identity' presets), got {init!r}"
        )
    out = dict(rnn_kwargs)
    if "dropout" in out:
        d = out.pop("dropout")
        if isinstance(d, bool) or not isinstance(d, (int, float, np.integer, np.floating)) or d:
            raise ValueError(
                f"dropout: the {cell} cell has no dropout between layers, expected 0, got {d!r}"
            )
    if "bidirectional" in out:
        b = out.pop("bidirectional")
        if b is not False and not (isinstance(b, np.bool_) and not b):
            raise ValueError(
                f"bidirectional: the {cell} cell runs forward in time only, expected False, "
                f"got {b!r}"
            )
    return out


def build_model(
    cell: str,
    input_size: int,
    hidden_size: int,
    output_size: int,
    *,
    mode: str = "many_to_many",
    num_layers: int = 1,
    dtype: Any = np.float32,
    seed: int | None = None,
    init: str = "torch",
    vocab_size: int | None = None,
    embedding_dim: int | None = None,
    **rnn_kwargs: Any,
) -> SequenceModel:
    """A :class:`SequenceModel`: ``cell`` stack + Linear head (+ Embedding).

    ``cell``: "rnn" | "lstm" | "gru" | "lstm_peephole" (and any cell registered later), or a
    minimal cell "mingru" | "minlstm" (:class:`MinGRU`, :class:`MinLSTM`: only ``init="torch"``,
    no ``dropout``, no ``bidirectional``: ValueError naming the argument otherwise).

    With ``vocab_size`` the input is token ids and an Embedding(vocab_size, embedding_dim or
    input_size) feeds the stack (``input_size`` is then ignored in favour of ``embedding_dim`` when
    given). ``rnn_kwargs`` go to the stack (nonlinearity, bias, batch_first, dropout, bidirectional,
    zoneout, recurrent_dropout, precision; MinGRU/MinLSTM take precision None or "fp32" only).
    ``seed`` seeds every part (distinct derived seeds).
    """
    if cell not in _CELL_CLASSES:
        raise ValueError(f"cell: expected one of {tuple(_CELL_CLASSES)}, got {cell!r}")
    if seed is not None:
        seed = _check_int("seed", seed, 0)
    output_size = _check_int("output_size", output_size, 1)
    seeds = (
        [None, None, None]
        if seed is None
        else [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(3)]
    )
    emb = None
    if vocab_size is not None:
        dim = embedding_dim if embedding_dim is not None else input_size
        emb = Embedding(vocab_size, dim, dtype=dtype, seed=seeds[0])
        input_size = dim
    elif embedding_dim is not None:
        raise ValueError("embedding_dim: only meaningful with vocab_size")
    if cell != "rnn" and "nonlinearity" in rnn_kwargs:
        if rnn_kwargs["nonlinearity"] != "tanh":
            raise ValueError(
                f"nonlinearity: only the 'rnn' cell takes one, got {rnn_kwargs['nonlinearity']!r}"
            )
        rnn_kwargs = {k: v for k, v in rnn_kwargs.items() if k != "nonlinearity"}
    if cell in MINIMAL_CELLS:
        rnn: RNNBase | MinimalRNNBase = MINIMAL_CELLS[cell](
            input_size,
            hidden_size,
            num_layers=num_layers,
            dtype=dtype,
            seed=seeds[1],
            **_minimal_kwargs(cell, init, rnn_kwargs),
        )
    else:
        rnn = _CELL_CLASSES[cell](
            input_size,
            hidden_size,
            num_layers=num_layers,
            dtype=dtype,
            seed=seeds[1],
            init=init,
            **rnn_kwargs,
        )
    head = Linear(rnn.output_size, output_size, dtype=dtype, seed=seeds[2])
    return SequenceModel(rnn, head, mode=mode, embedding=emb)


def _stack_classes() -> dict[str, type]:
    """Class name (a config's ``type``) -> class, for every recurrent stack."""
    return {c.__name__: c for c in _CELL_CLASSES.values()}


def _from_cfg(cfg: Mapping[str, Any]) -> Any:
    if not isinstance(cfg, Mapping) or "type" not in cfg:
        raise ValueError(f"cfg: expected a dict with a 'type' key, got {cfg!r}")
    kind = cfg["type"]
    args = {k: v for k, v in cfg.items() if k != "type"}
    stacks = _stack_classes()
    if isinstance(kind, str) and kind in stacks:
        return stacks[kind](**args)
    if kind == "Linear":
        return Linear(**args)
    if kind == "Embedding":
        return Embedding(**args)
    if kind == "SequenceModel":
        for key in ("mode", "rnn", "head"):
            if key not in cfg:
                raise ValueError(f"cfg: missing key {key!r} for a SequenceModel")
        emb = None if cfg.get("embedding") is None else _from_cfg(cfg["embedding"])
        return SequenceModel(
            _from_cfg(cfg["rnn"]), _from_cfg(cfg["head"]), mode=cfg["mode"], embedding=emb
        )
    raise ValueError(
        f"cfg['type']: expected one of {', '.join(stacks)}, Linear, Embedding or SequenceModel, "
        f"got {kind!r}"
    )


def model_from_config(cfg: Mapping[str, Any]) -> Any:
    """Rebuild a model (SequenceModel, or a single module) from its ``config()`` dict.

    The weights are re-initialised from the config's seeds; load a state_dict for trained weights.
    """
    return _from_cfg(cfg)
