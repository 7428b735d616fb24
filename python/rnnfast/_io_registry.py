"""The model classes a checkpoint may rebuild (rnnfast's own and registered ones) and the NumPy RNG
state helpers of :mod:`rnnfast.io`, which re-exports the public names.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._io_format import CheckpointError

__all__ = [
    "register_model_class",
    "registered_model_classes",
    "rng_from_state",
    "rng_state",
    "unregister_model_class",
]

# --------------------------------------------------------------------------------------------------
# model classes a checkpoint may name: rnnfast's own plus those registered on purpose
# --------------------------------------------------------------------------------------------------

#: rnnfast's model classes, by the class string ``save`` records (``type(m).__module__:__qualname__``)
_BUILTIN_NAMES = (
    "SequenceModel",
    "RNN",
    "LSTM",
    "GRU",
    "PeepholeLSTM",
    "ResetBeforeGRU",
    "LayerNormLSTM",
    "LayerNormGRU",
    "MinGRU",
    "MinLSTM",
    "Linear",
    "Embedding",
)
_registry: dict[str, type] = {}
_registry_lock = threading.Lock()


def _class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _builtin_model_classes() -> dict[str, type]:
    from . import modules  # here, not at import time: modules may one day import io

    out: dict[str, type] = {}
    for n in _BUILTIN_NAMES:
        c = getattr(modules, n)
        out[f"rnnfast.modules:{n}"] = c  # what every rnnfast so far has written
        out[_class_name(c)] = c  # the same today; keeps working if a class moves
    from .seq2seq import Seq2Seq  # builds itself from its config (Seq2Seq.from_config)

    out[_class_name(Seq2Seq)] = Seq2Seq
    return out


def register_model_class(cls: type, name: str | None = None) -> type:
    """Allow checkpoints naming ``cls`` to rebuild it with :meth:`Checkpoint.build_model`.

    ``name``: the class string the files record (default ``"module:QualName"`` of ``cls``, what
    :func:`save` writes). Returns ``cls``, so it can be used as a decorator. Registering the same
    class again is a no-op; a class redefined under the same module and name (e.g. a notebook
    cell run twice) replaces the old one. Registration is process-wide and thread-safe.

    Raises:
        TypeError: ``cls`` is not a class with ``load_state_dict``, or ``name`` is not a str.
        ValueError: ``name`` is one of rnnfast's own classes or registered to another class.
    """
    if not isinstance(cls, type):
        raise TypeError(f"cls: expected a class, got {type(cls).__name__}")
    if not callable(getattr(cls, "load_state_dict", None)):
        raise TypeError(
            f"cls: {cls.__qualname__} has no load_state_dict(); it is not a model class"
        )
    if name is None:
        name = _class_name(cls)
    elif not isinstance(name, str) or not name:
        raise TypeError(f"name: expected a non-empty str, got {name!r}")
    builtin = _builtin_model_classes()
    if name in builtin:
        if builtin[name] is cls:
            return cls
        raise ValueError(f"name: {name!r} is rnnfast's own model class and cannot be replaced")
    with _registry_lock:
        old = _registry.get(name)
        if old is not None and old is not cls and _class_name(old) != _class_name(cls):
            raise ValueError(
                f"name: {name!r} is already registered to {_class_name(old)}, not "
                f"{_class_name(cls)}; unregister_model_class({name!r}) first"
            )
        _registry[name] = cls
    return cls


def unregister_model_class(cls_or_name: type | str) -> None:
    """Undo :func:`register_model_class` (by class, every name it holds, or by class string).

    Unknown classes and names are ignored; rnnfast's own classes cannot be unregistered.
    """
    with _registry_lock:
        if isinstance(cls_or_name, str):
            _registry.pop(cls_or_name, None)
        else:
            for k in [k for k, v in _registry.items() if v is cls_or_name]:
                del _registry[k]


def registered_model_classes() -> dict[str, type]:
    """Class string -> class for every class :meth:`Checkpoint.build_model` may construct."""
    with _registry_lock:
        user = dict(_registry)
    return {**_builtin_model_classes(), **user}


def _resolve_model_class(spec: Any, classes: Any, where: str) -> type:
    if not spec:
        raise CheckpointError(
            f"{where}the checkpoint does not record the model class; pass cls= to build_model"
        )
    extra: dict[str, Any] = {}
    if classes is not None:
        if isinstance(classes, Mapping):
            extra = dict(classes)
        elif isinstance(classes, (list, tuple, set, frozenset)):
            for c in classes:
                if not isinstance(c, type):
                    raise TypeError(f"classes: expected classes, got {type(c).__name__}")
                extra[_class_name(c)] = c
        else:
            raise TypeError(
                "classes: expected a dict class string -> class or a list of classes, got "
                f"{type(classes).__name__}"
            )
    known = {**registered_model_classes(), **extra}
    found = known.get(spec) if isinstance(spec, str) else None
    if found is None:
        raise CheckpointError(
            f"{where}model class {spec!r} is not an rnnfast class or a registered one; "
            "a checkpoint never imports code: pass cls=, classes=, or call "
            "rnnfast.register_model_class(YourClass)"
        )
    if not isinstance(found, type):
        raise TypeError(f"classes[{spec!r}]: expected a class, got {type(found).__name__}")
    return found


# --------------------------------------------------------------------------------------------------
# RNG state helpers
# --------------------------------------------------------------------------------------------------

_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937")


def _jsonify_rng(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonify_rng(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return {"dtype": obj.dtype.str, "data": obj.tolist()}
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _unjsonify_like(template: Any, given: Any, where: str) -> Any:
    """``given`` (JSON from :func:`rng_state`) converted to the structure of ``template`` (a fresh
    bit generator's state): the same keys, ints where it has ints (0 <= v < 2**128), arrays of
    its dtype and shape. Anything else raises ValueError naming the entry."""
    if isinstance(template, dict):
        if not isinstance(given, Mapping):
            raise ValueError(f"{where}: expected an object, got {type(given).__name__}")
        if set(given) != set(template):
            raise ValueError(f"{where}: expected keys {sorted(template)}, got {sorted(given)}")
        return {k: _unjsonify_like(template[k], given[k], f"{where}['{k}']") for k in template}
    if isinstance(template, np.ndarray):
        if (
            not isinstance(given, Mapping)
            or set(given) != {"dtype", "data"}
            or given["dtype"] != template.dtype.str
            or not isinstance(given["data"], list)
            or len(given["data"]) != template.size
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in given["data"])
        ):
            raise ValueError(
                f"{where}: expected {{'dtype': {template.dtype.str!r}, 'data': "
                f"[{template.size} ints]}}"
            )
        info = np.iinfo(template.dtype)
        if any(v < info.min or v > info.max for v in given["data"]):
            raise ValueError(f"{where}: values out of range for {template.dtype}")
        return np.asarray(given["data"], dtype=template.dtype).reshape(template.shape)
    if isinstance(template, str):
        if given != template:
            raise ValueError(f"{where}: expected {template!r}, got {given!r}")
        return given
    if isinstance(template, (int, np.integer)):
        if isinstance(given, bool) or not isinstance(given, int) or not 0 <= given < 2**128:
            raise ValueError(f"{where}: expected an int in [0, 2**128), got {given!r}")
        return given
    raise ValueError(f"{where}: unexpected entry")  # pragma: no cover - numpy state layout changed


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """JSON-able state of a NumPy ``Generator`` (its ``bit_generator.state``, arrays as lists)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected np.random.Generator, got {type(rng).__name__}")
    return _jsonify_rng(rng.bit_generator.state)


#: The bit generators rng_from_state may construct (a name from a file never reaches getattr).
_BIT_GENERATOR_CLASSES: dict[str, Any] = {
    "PCG64": np.random.PCG64,
    "PCG64DXSM": np.random.PCG64DXSM,
    "Philox": np.random.Philox,
    "SFC64": np.random.SFC64,
    "MT19937": np.random.MT19937,
}


def rng_from_state(state: Mapping[str, Any]) -> np.random.Generator:
    """A new ``Generator`` in the state given by :func:`rng_state`.

    Only NumPy's bit generators PCG64, PCG64DXSM, Philox, SFC64 and MT19937 are accepted, and the
    state must have exactly the layout of that generator's own state (keys, int ranges, array
    dtypes and sizes); anything else raises ValueError naming the entry.
    """
    if not isinstance(state, Mapping) or "bit_generator" not in state:
        raise ValueError("state: expected a dict from rng_state() with a 'bit_generator' entry")
    name = state["bit_generator"]
    if not isinstance(name, str) or name not in _BIT_GENERATOR_CLASSES:
        raise ValueError(f"state['bit_generator']: expected one of {_BIT_GENERATORS}, got {name!r}")
    bg = _BIT_GENERATOR_CLASSES[name]()
    value = _unjsonify_like(bg.state, state, "state")
    try:
        bg.state = value
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise ValueError(f"state: not a valid {name} state ({exc})") from None
    return np.random.Generator(bg)
