"""Crash-safe checkpoints: one ``.npz`` of arrays plus JSON metadata, never pickle.

Save and load::

    rnnfast.io.save("run/ckpt.npz", model, optimizer, meta={"epoch": 3, "step": 1200,
                    "rng": rng_state(rng), "history": history}, scheduler=sched)
    ckpt = rnnfast.io.load("run/ckpt.npz")
    model = ckpt.build_model()                # rnnfast's own (or registered) class + weights
    ckpt.restore_optimizer(optimizer)         # optimizer.load_state_dict(ckpt.optimizer_state)
    ckpt.restore_scheduler(sched)
    rng = rng_from_state(ckpt.meta["rng"])

Model protocol (what ``save`` needs from ``model``):

* ``model.state_dict() -> Mapping[str, array]`` -- PyTorch names (``weight_ih_l0``, ...), NumPy
  arrays or anything with ``__array__``; numeric dtypes only;
* ``model.config() -> dict`` -- JSON-able constructor arguments: ``type(model)(**model.config())``
  (or ``type(model).from_config(config)`` if the class defines it) rebuilds an equivalent model;
  optional (a model without ``config`` is saved with ``model_config=None``);
* ``model.load_state_dict(d)`` -- used by :meth:`Checkpoint.restore_model` / ``build_model``.

A plain ``Mapping[str, array]`` may be passed instead of a model. ``optimizer`` and ``scheduler``
are objects with ``state_dict()`` (rnnfast.optim ones) or already-made state dicts: nested
dicts/lists of NumPy arrays and JSON scalars (str, int, float incl. +-inf/nan, bool, None).

File format (version 1): a standard zip written by ``np.savez`` (uncompressed). Member
``__metadata__`` is a uint8 array holding UTF-8 JSON::

    {"format": "rnnfast-checkpoint", "version": 1, "numpy_version": "...",
     "model": {"class": "pkg.module:Class" | null, "config": {...} | null, "state": {name: REF}},
     "optimizer": TREE | null, "scheduler": TREE | null, "meta": {...},
     "extra_arrays": {name: REF},
     "arrays": {key: {"dtype": "<f4", "shape": [..]}}}

where ``REF = {"__ndarray__": key}`` marks an array stored as zip member ``key + ".npy"`` (keys are
paths such as ``model/weight_ih_l0`` or ``optimizer/state/weight_ih_l0/exp_avg``), and non-finite
floats are written as ``{"__float__": "inf" | "-inf" | "nan"}`` so the JSON is strict. Names of
model-state entries and extra arrays may use ``/`` to namespace (``"best/weight_ih_l0"``); empty,
``.`` or ``..`` parts, backslashes and NUL are rejected.

Atomicity: the archive is written to a temporary file in the target's directory, flushed and
fsync'ed, then ``os.replace``'d over the target and the directory is fsync'ed. A crash at any point
leaves either the old checkpoint or the new one, never a partial file (a stale ``.rnnfast-*.tmp``
may remain after a hard kill; it is never read). The temp name is short, so any target name the
file system accepts can be saved.

Loading treats the file as hostile input. It never unpickles (``np.load(..., allow_pickle=False)``)
and never runs code named by the file: :meth:`Checkpoint.build_model` constructs only rnnfast's own
model classes (SequenceModel, RNN, LSTM, GRU, Linear, Embedding) and classes registered on purpose
(:func:`register_model_class`, or ``cls=`` / ``classes=``), looked up by the recorded class string,
never imported; :func:`rng_from_state` builds only NumPy's PCG64, PCG64DXSM, Philox, SFC64 or
MT19937 from a state of exactly their layout. Only regular files are opened (a directory, FIFO or
device is refused before ``open`` could block); zip members must be stored uncompressed (save
never compresses; a deflated member could be a decompression bomb) and no larger than the file;
metadata nested deeper than ``MAX_METADATA_DEPTH`` (100) levels is refused. The format name,
version, metadata schema, and every array's presence, dtype and shape are validated against the
manifest; any problem raises :class:`CheckpointError` (a ValueError) naming what is wrong.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
import threading
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "CheckpointError",
    "Checkpoint",
    "save",
    "load",
    "rng_state",
    "rng_from_state",
    "check_writable",
    "register_model_class",
    "unregister_model_class",
    "registered_model_classes",
    "FORMAT_NAME",
    "FORMAT_VERSION",
]

FORMAT_NAME = "rnnfast-checkpoint"
FORMAT_VERSION = 1

_META_KEY = "__metadata__"
_REF = "__ndarray__"
_FLOAT = "__float__"
_RESERVED = (_REF, _FLOAT)
_ALLOWED_KINDS = "biufc"  # bool, signed/unsigned int, float, complex: never object/void/str
_TOP_KEYS = (
    "format",
    "version",
    "numpy_version",
    "model",
    "optimizer",
    "scheduler",
    "meta",
    "extra_arrays",
    "arrays",
)
_MAX_NPY_HEADER = 65536 + 16  # upper bound of an .npy header (format 2/3)
#: Deepest nesting of JSON objects/lists accepted in the metadata (and written by save). fit's
#: history with gradient-flow records is ~7 levels deep; deeper files are hostile or broken.
MAX_METADATA_DEPTH = 100


class CheckpointError(ValueError):
    """A checkpoint file is truncated, corrupt, of an unknown format/version, or fails validation.

    The message names the file and what is wrong (e.g. the array, its expected and actual shape).
    """


@dataclass
class Checkpoint:
    """What :func:`load` returns.

    Attributes:
        model_state: dict name -> ndarray (the saved ``model.state_dict()``).
        model_config: the saved ``model.config()`` (JSON dict) or None.
        model_class: ``"module:QualName"`` of the saved model's class, or None.
        optimizer_state: the optimizer's state dict (arrays + scalars) or None.
        scheduler_state: the scheduler's state dict or None.
        meta: the JSON metadata dict given to :func:`save` (epoch, step, RNG state, history, ...).
        extra_arrays: dict name -> ndarray given to :func:`save` as ``extra_arrays``.
        version: format version of the file.
        path: the file it was loaded from (None for a Checkpoint made by hand).
    """

    model_state: dict[str, np.ndarray]
    model_config: dict[str, Any] | None = None
    model_class: str | None = None
    optimizer_state: dict[str, Any] | None = None
    scheduler_state: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    extra_arrays: dict[str, np.ndarray] = field(default_factory=dict)
    version: int = FORMAT_VERSION
    path: str | None = None

    def _where(self) -> str:
        return f"{self.path}: " if self.path else ""

    def restore_model(self, model: Any) -> Any:
        """``model.load_state_dict(self.model_state)``; returns ``model``."""
        model.load_state_dict(self.model_state)
        return model

    def build_model(self, cls: Any = None, *, classes: Any = None) -> Any:
        """Rebuild the saved model from its config and load its weights.

        Which class is constructed -- never one named by an import path in the file:

        * ``cls`` given: that class or factory (``cls.from_config(config)`` if it defines it,
          else ``cls(**config)``), whatever the file says;
        * otherwise the class string recorded in the file (``"module:QualName"``) is looked up,
          in this order, in ``classes`` (a dict class string -> class, or a list of classes keyed
          by their own ``"module:QualName"``), in rnnfast's own model classes (SequenceModel,
          RNN, LSTM, GRU, Linear, Embedding) and in the classes registered with
          :func:`register_model_class`. A string found in none of them raises
          :class:`CheckpointError` naming it; nothing is imported.

        Raises:
            CheckpointError: unknown class string, or a config / state that does not build or
                load (the message names the file and the cause).
            ValueError: the checkpoint has no model config.
        """
        if self.model_config is None:
            raise ValueError(
                "checkpoint has no model config (the saved model had no config()); "
                "build the model yourself and use restore_model"
            )
        where = self._where()
        resolved = cls is None
        if resolved:
            cls = _resolve_model_class(self.model_class, classes, where)
        elif not callable(cls):
            raise TypeError(f"cls: expected a model class (or factory), got {type(cls).__name__}")
        name = self.model_class if resolved else getattr(cls, "__qualname__", repr(cls))
        try:
            if cls in _builtin_model_classes().values() and cls.__name__ in _BUILTIN_NAMES:
                from .modules import model_from_config  # every rnnfast config names its "type"

                model = model_from_config(self.model_config)
            elif hasattr(cls, "from_config"):
                model = cls.from_config(self.model_config)
            else:
                model = cls(**self.model_config)
        except (TypeError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"{where}model.config does not build a {name} ({type(exc).__name__}: {exc})"
            ) from exc
        if resolved and not isinstance(model, cls):
            raise CheckpointError(
                f"{where}model.config builds a {_class_name(type(model))}, but the file records "
                f"the class {name!r}"
            )
        try:
            model.load_state_dict(self.model_state)
        except (TypeError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"{where}model.state does not fit the {name} built from model.config "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        return model

    def restore_optimizer(self, optimizer: Any) -> Any:
        """``optimizer.load_state_dict(self.optimizer_state)``; returns ``optimizer``."""
        if self.optimizer_state is None:
            raise ValueError("checkpoint has no optimizer state")
        optimizer.load_state_dict(self.optimizer_state)
        return optimizer

    def restore_scheduler(self, scheduler: Any) -> Any:
        """``scheduler.load_state_dict(self.scheduler_state)``; returns ``scheduler``."""
        if self.scheduler_state is None:
            raise ValueError("checkpoint has no scheduler state")
        scheduler.load_state_dict(self.scheduler_state)
        return scheduler


# --------------------------------------------------------------------------------------------------
# model classes a checkpoint may name: rnnfast's own plus those registered on purpose
# --------------------------------------------------------------------------------------------------

#: rnnfast's model classes, by the class string ``save`` records (``type(m).__module__:__qualname__``)
_BUILTIN_NAMES = ("SequenceModel", "RNN", "LSTM", "GRU", "Linear", "Embedding")
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


# --------------------------------------------------------------------------------------------------
# encoding: nested dict/list trees with arrays -> JSON + named arrays
# --------------------------------------------------------------------------------------------------


def _check_name(name: str, where: str) -> None:
    """Array names become zip member paths: '/'-separated parts, none empty, '.' or '..'."""
    if "\\" in name or "\x00" in name or any(p in ("", ".", "..") for p in name.split("/")):
        raise ValueError(
            f"{where}: name {name!r} cannot be stored (empty, '.' or '..' path parts, a "
            "backslash or NUL)"
        )


def _as_storable_array(value: Any, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - report any conversion failure with its location
        raise TypeError(
            f"{where}: cannot convert {type(value).__name__} to an array ({exc})"
        ) from None
    if arr.dtype.kind not in _ALLOWED_KINDS or arr.dtype.hasobject:
        raise TypeError(
            f"{where}: dtype {arr.dtype} cannot be stored (numeric dtypes only, no pickle)"
        )
    return np.ascontiguousarray(arr)


def _encode(obj: Any, path: list[str], arrays: dict[str, np.ndarray], *, allow_arrays: bool) -> Any:
    """JSON-able ``obj`` with its arrays replaced by refs (stored in ``arrays`` by path)."""
    where = "/".join(path)
    if len(path) > MAX_METADATA_DEPTH:
        raise ValueError(
            f"{where[:200]}...: nested deeper than {MAX_METADATA_DEPTH} levels (load refuses such "
            "files)"
        )
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else {_FLOAT: repr(v)}
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(
                    f"{where}: keys must be str for JSON, got {type(k).__name__} key {k!r}"
                )
            if k in _RESERVED:
                raise ValueError(f"{where}: key {k!r} is reserved by the checkpoint format")
            out[k] = _encode(v, [*path, k], arrays, allow_arrays=allow_arrays)
        return out
    if isinstance(obj, (list, tuple)):
        return [
            _encode(v, [*path, str(i)], arrays, allow_arrays=allow_arrays)
            for i, v in enumerate(obj)
        ]
    if isinstance(obj, np.ndarray) or hasattr(obj, "__array__"):
        if not allow_arrays:
            raise TypeError(
                f"{where}: arrays are not allowed here (meta must be JSON; use extra_arrays)"
            )
        for comp in path:
            _check_name(comp, where)
        if where in arrays:  # e.g. {"a/b": x} next to {"a": {"b": y}}
            raise ValueError(f"{where}: two arrays would be stored under the same path")
        arr = _as_storable_array(obj, where)
        arrays[where] = arr
        return {_REF: where}
    raise TypeError(f"{where}: value of type {type(obj).__name__} is not JSON-able or an array")


def _state_of(obj: Any, what: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj
    sd = getattr(obj, "state_dict", None)
    if not callable(sd):
        raise TypeError(
            f"{what}: expected an object with state_dict() or a dict, got {type(obj).__name__}"
        )
    return sd()


# --------------------------------------------------------------------------------------------------
# save
# --------------------------------------------------------------------------------------------------


def _fsync_dir(dirname: str) -> None:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(dirname, flags)
    except OSError:  # e.g. Windows: directories cannot be opened; rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def check_writable(path: str | os.PathLike[str], name: str, *, temp_beside: bool = True) -> str:
    """Check, before any long work, that ``path`` can be written; return it (``~`` expanded).

    The path must not be a directory or another non-regular file, an existing file must be
    writable, and the parent directory must exist and -- for a new file, or when ``temp_beside``
    (as :func:`save` writes a temp file beside the target) -- accept a new file: probed by creating
    and removing one, which is also right for root, read-only mounts and ACLs. ``name`` is the
    argument named in the error.

    Raises:
        ValueError: the path cannot be written (the message names ``name``, the path and why).
    """
    p = os.path.expanduser(os.fspath(path))
    if os.path.isdir(p):
        raise ValueError(f"{name}: {p!r} is a directory; expected a file path")
    if os.path.lexists(p) and not os.path.isfile(p):
        raise ValueError(f"{name}: {p!r} exists and is not a regular file")
    parent = os.path.dirname(os.path.abspath(p))
    if not os.path.isdir(parent):
        raise ValueError(f"{name}: directory {parent!r} does not exist")
    exists = os.path.exists(p)
    if exists and not os.access(p, os.W_OK):
        raise ValueError(f"{name}: {p!r} exists and is not writable")
    if temp_beside or not exists:
        try:
            fd, probe = tempfile.mkstemp(prefix=".rnnfast-probe-", dir=parent)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise ValueError(
                f"{name}: cannot create files in {parent!r} ({exc.strerror or exc})"
            ) from None
    return p


def save(
    path: str | os.PathLike[str],
    model: Any,
    optimizer: Any = None,
    meta: Mapping[str, Any] | None = None,
    *,
    scheduler: Any = None,
    extra_arrays: Mapping[str, Any] | None = None,
) -> None:
    """Write a checkpoint atomically to ``path`` (used as given; ``.npz`` is conventional).

    Args:
        path: target file; its directory must exist. An existing file is replaced atomically. model:
        an object with ``state_dict()`` (and optionally ``config()``), or a dict name -> array.
        optimizer: an object with ``state_dict()``, a state dict, or None. meta: JSON-able dict
        (epoch, step, RNG state from :func:`rng_state`, history, ...). Floats may
            be non-finite. Arrays are rejected here; pass them in ``extra_arrays``.
        scheduler: an object with ``state_dict()``, a state dict, or None.
        extra_arrays: dict name -> array saved alongside (e.g. a carried TBPTT state).

    Raises:
        TypeError / ValueError naming the offending entry if something cannot be stored (before any
        file is touched); OSError if writing fails (the old checkpoint, if any, is left intact).
    """
    path = _fspath(path)
    arrays: dict[str, np.ndarray] = {}

    if isinstance(model, Mapping):
        model_state, model_config, model_class = model, None, None
    else:
        sd = getattr(model, "state_dict", None)
        if not callable(sd):
            raise TypeError(
                f"model: expected an object with state_dict() or a dict, got {type(model).__name__}"
            )
        model_state = sd()
        cfg = getattr(model, "config", None)
        model_config = cfg() if callable(cfg) else None
        if model_config is not None and not isinstance(model_config, Mapping):
            raise TypeError(f"model.config(): expected a dict, got {type(model_config).__name__}")
        model_class = f"{type(model).__module__}:{type(model).__qualname__}"
    if not isinstance(model_state, Mapping):
        raise TypeError(f"model.state_dict(): expected a dict, got {type(model_state).__name__}")
    state_refs: dict[str, Any] = {}
    for name, value in model_state.items():
        if not isinstance(name, str):
            raise TypeError(
                f"model.state_dict(): keys must be str, got {type(name).__name__} key {name!r}"
            )
        _check_name(name, f"model.state_dict()[{name!r}]")
        key = f"model/{name}"
        arrays[key] = _as_storable_array(value, f"model.state_dict()[{name!r}]")
        state_refs[name] = {_REF: key}

    extra_refs: dict[str, Any] = {}
    if extra_arrays is not None:
        if not isinstance(extra_arrays, Mapping):
            raise TypeError(
                f"extra_arrays: expected a dict name -> array, got {type(extra_arrays).__name__}"
            )
        for name, value in extra_arrays.items():
            if not isinstance(name, str):
                raise TypeError(
                    f"extra_arrays: keys must be str, got {type(name).__name__} key {name!r}"
                )
            _check_name(name, f"extra_arrays[{name!r}]")
            key = f"extra/{name}"
            arrays[key] = _as_storable_array(value, f"extra_arrays[{name!r}]")
            extra_refs[name] = {_REF: key}

    if meta is not None and not isinstance(meta, Mapping):
        raise TypeError(f"meta: expected a JSON-able dict, got {type(meta).__name__}")
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "numpy_version": np.__version__,
        "model": {
            "class": model_class,
            "config": _encode(model_config, ["model.config()"], arrays, allow_arrays=False),
            "state": state_refs,
        },
        "optimizer": _encode(
            _state_of(optimizer, "optimizer"), ["optimizer"], arrays, allow_arrays=True
        ),
        "scheduler": _encode(
            _state_of(scheduler, "scheduler"), ["scheduler"], arrays, allow_arrays=True
        ),
        "meta": _encode(dict(meta or {}), ["meta"], arrays, allow_arrays=False),
        "extra_arrays": extra_refs,
        "arrays": {k: {"dtype": a.dtype.str, "shape": list(a.shape)} for k, a in arrays.items()},
    }
    if _META_KEY in arrays:  # cannot happen with the prefixes above; keep the invariant explicit
        raise ValueError(f"array name {_META_KEY!r} is reserved")
    blob = json.dumps(header, allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8"
    )
    payload = {_META_KEY: np.frombuffer(blob, dtype=np.uint8), **arrays}

    dirname = os.path.dirname(os.path.abspath(path))
    # a short temp name: one derived from the target's would fail where the target name itself is
    # near the file system's limit (255 bytes)
    fd, tmp = tempfile.mkstemp(prefix=".rnnfast-", suffix=".tmp", dir=dirname)
    try:
        try:
            mode = os.stat(path).st_mode & 0o777  # keep an existing checkpoint's permissions
        except FileNotFoundError:
            mode = 0o644
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(dirname)


# --------------------------------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------------------------------


def _fspath(path: Any) -> str:
    """``os.fspath(path)`` as a str, with a TypeError naming ``path`` for anything else."""
    try:
        p = os.fspath(path)
    except TypeError:
        raise TypeError(
            f"path: expected a str or os.PathLike file path, got {type(path).__name__}"
        ) from None
    if not isinstance(p, str):
        raise TypeError(f"path: expected a str or os.PathLike file path, got {type(p).__name__}")
    return p


def _fail(path: str, msg: str) -> CheckpointError:
    return CheckpointError(f"{path}: {msg}")


def _decode(
    obj: Any, arrays: Mapping[str, np.ndarray], used: set[str], path: str, where: str
) -> Any:
    if isinstance(obj, dict):
        if _REF in obj:
            key = obj[_REF]
            if len(obj) != 1 or not isinstance(key, str):
                raise _fail(path, f"metadata {where}: malformed array reference {obj!r}")
            if key not in arrays:
                raise _fail(
                    path, f"metadata {where}: references array {key!r} which is not in the manifest"
                )
            if key in used:
                raise _fail(path, f"metadata {where}: array {key!r} is referenced twice")
            used.add(key)
            return arrays[key]
        if _FLOAT in obj:
            if len(obj) != 1 or obj[_FLOAT] not in ("inf", "-inf", "nan"):
                raise _fail(path, f"metadata {where}: malformed float {obj!r}")
            return float(obj[_FLOAT])
        return {k: _decode(v, arrays, used, path, f"{where}/{k}") for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, arrays, used, path, f"{where}/{i}") for i, v in enumerate(obj)]
    return obj


def _json_depth(obj: Any) -> int:
    """Nesting depth of parsed JSON, without recursion (hostile files nest thousands deep)."""
    deepest = 0
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, (dict, list)):
            deepest = max(deepest, d)
            if d > MAX_METADATA_DEPTH:
                return d
            stack.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))
    return deepest


def _read_header(path: str, zf: zipfile.ZipFile, npz: Any) -> dict[str, Any]:
    try:
        raw = npz[_META_KEY]
    except KeyError:
        raise _fail(path, f"missing {_META_KEY!r}: not an rnnfast checkpoint") from None
    if not isinstance(raw, np.ndarray) or raw.dtype != np.uint8 or raw.ndim != 1:
        raise _fail(path, f"{_META_KEY!r} must be a 1-d uint8 array")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _fail(
            path, f"metadata is not valid UTF-8 JSON ({type(exc).__name__}: {exc})"
        ) from None
    depth = _json_depth(header)
    if depth > MAX_METADATA_DEPTH:
        raise _fail(
            path, f"metadata is nested {depth} levels deep (at most {MAX_METADATA_DEPTH} accepted)"
        )
    if not isinstance(header, dict):
        raise _fail(path, "metadata must be a JSON object")
    if header.get("format") != FORMAT_NAME:
        raise _fail(path, f"format: expected {FORMAT_NAME!r}, got {header.get('format')!r}")
    version = header.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise _fail(path, f"version: expected an int, got {version!r}")
    if version > FORMAT_VERSION:
        raise _fail(
            path,
            f"version {version} was written by a newer rnnfast (this one reads up to "
            f"{FORMAT_VERSION}); upgrade rnnfast",
        )
    if version < 1:
        raise _fail(path, f"version: expected 1..{FORMAT_VERSION}, got {version}")
    missing = [k for k in _TOP_KEYS if k not in header]
    if missing:
        raise _fail(path, f"metadata: missing keys {missing}")
    unknown = sorted(set(header) - set(_TOP_KEYS))
    if unknown:
        raise _fail(path, f"metadata: unexpected keys {unknown}")
    model = header["model"]
    if not isinstance(model, dict) or set(model) != {"class", "config", "state"}:
        raise _fail(path, "metadata model: expected an object with keys class, config, state")
    if model["class"] is not None and not isinstance(model["class"], str):
        raise _fail(path, "metadata model.class: expected a string or null")
    if model["config"] is not None and not isinstance(model["config"], dict):
        raise _fail(path, "metadata model.config: expected an object or null")
    for name in ("state",):
        if not isinstance(model[name], dict):
            raise _fail(path, f"metadata model.{name}: expected an object")
    for key in ("optimizer", "scheduler"):
        if header[key] is not None and not isinstance(header[key], dict):
            raise _fail(path, f"metadata {key}: expected an object or null")
    if not isinstance(header["meta"], dict):
        raise _fail(path, "metadata meta: expected an object")
    if not isinstance(header["extra_arrays"], dict):
        raise _fail(path, "metadata extra_arrays: expected an object")
    if not isinstance(header["arrays"], dict):
        raise _fail(path, "metadata arrays: expected an object")
    return header


def _check_member_sizes(path: str, zf: zipfile.ZipFile, archive_size: int) -> None:
    """Reject zip members whose declared sizes could not come from this file (bombs, corruption)."""
    for info in zf.infolist():
        if info.flag_bits & 0x61:  # encrypted (bit 0), patched data (5), strong encryption (6)
            raise _fail(
                path,
                f"member {info.filename!r}: encrypted or patched zip entries are not supported",
            )
        if info.compress_type != zipfile.ZIP_STORED:
            # save never compresses; a compressed member could expand ~1000x (a decompression
            # bomb: 1 MiB of file asking for 1 GiB), so none is ever decompressed
            raise _fail(
                path,
                f"member {info.filename!r} is compressed (zip method {info.compress_type}); "
                "checkpoints are stored uncompressed and compressed members are refused "
                "(decompress with e.g. `zip -0` or re-save with rnnfast.io.save)",
            )
        ok = info.compress_size == info.file_size <= archive_size
        if not ok:
            raise _fail(
                path,
                f"member {info.filename!r}: inconsistent sizes in the zip directory "
                f"({info.compress_size} -> {info.file_size} bytes; file is {archive_size})",
            )


def _check_manifest(
    path: str, header: dict[str, Any], zf: zipfile.ZipFile
) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    manifest: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
    for key, spec in header["arrays"].items():
        if key == _META_KEY:
            raise _fail(path, f"manifest: array name {key!r} is reserved")
        if not isinstance(spec, dict) or set(spec) != {"dtype", "shape"}:
            raise _fail(path, f"manifest[{key!r}]: expected an object with dtype and shape")
        dstr, shape = spec["dtype"], spec["shape"]
        if not isinstance(dstr, str):
            raise _fail(path, f"manifest[{key!r}].dtype: expected a string, got {dstr!r}")
        try:
            dtype = np.dtype(dstr)
        except TypeError:
            raise _fail(path, f"manifest[{key!r}].dtype: unknown dtype {dstr!r}") from None
        if dtype.kind not in _ALLOWED_KINDS or dtype.hasobject or dtype.str != dstr:
            raise _fail(path, f"manifest[{key!r}].dtype: {dstr!r} is not an allowed numeric dtype")
        if not isinstance(shape, list) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
        ):
            raise _fail(
                path,
                f"manifest[{key!r}].shape: expected a list of non-negative ints, got {shape!r}",
            )
        nbytes = dtype.itemsize * math.prod(shape)
        try:
            info = zf.getinfo(key + ".npy")
        except KeyError:
            raise _fail(
                path, f"array {key!r} is listed in the manifest but missing from the archive"
            ) from None
        # bound what a hostile archive can make us allocate: the member must be about as large as
        # the array it claims to hold, and its (stored or deflated) bytes must fit in the file
        if info.file_size < nbytes or info.file_size > nbytes + _MAX_NPY_HEADER:
            raise _fail(
                path,
                f"array {key!r}: archive member of {info.file_size} bytes cannot hold "
                f"{dtype} {tuple(shape)} ({nbytes} bytes)",
            )
        manifest[key] = (dtype, tuple(shape))
    members = {n[: -len(".npy")] if n.endswith(".npy") else n for n in zf.namelist()}
    extra = sorted(members - set(manifest) - {_META_KEY})
    if extra:
        raise _fail(path, f"archive contains members not in the manifest: {extra[:5]}")
    return manifest


def _require_regular_file(path: str, mode: int) -> None:
    """Refuse directories, FIFOs, devices and sockets before anything reads (or blocks on) them."""
    if stat.S_ISREG(mode):
        return
    kind = (
        "a directory"
        if stat.S_ISDIR(mode)
        else "a FIFO (named pipe)"
        if stat.S_ISFIFO(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a special file"
    )
    raise _fail(path, f"is {kind}, not a checkpoint file (a regular file is required)")


def load(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and validate a checkpoint written by :func:`save`.

    Raises:
        FileNotFoundError: if ``path`` does not exist. CheckpointError: (a ValueError) for anything
        else wrong with the file: not a zip/npz archive,
            truncated, corrupt data (CRC), pickled or object arrays, unknown format, newer or
            invalid version, malformed metadata, arrays missing/extra or with a dtype/shape other
            than the manifest says. The message names the file and the problem.
    """
    path = _fspath(path)
    try:
        _require_regular_file(path, os.stat(path).st_mode)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such checkpoint") from None
    except OSError as exc:
        raise _fail(path, f"cannot be read ({type(exc).__name__}: {exc})") from None
    # O_NONBLOCK: should the path become a FIFO between the stat and the open, the open still
    # returns at once (and fstat refuses it); reads of a regular file are unaffected
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _fail(path, f"cannot be read ({type(exc).__name__}: {exc})") from None
    try:
        _require_regular_file(path, os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    f = os.fdopen(fd, "rb")
    # One open file for the whole read (np.load is given the file object, so nothing leaks on
    # errors, and the size we validate against is the size of what we read).
    with f:
        try:
            magic = f.read(4)
            archive_size = os.fstat(f.fileno()).st_size
        except OSError as exc:
            raise _fail(path, f"cannot be read ({type(exc).__name__}: {exc})") from None
        if magic != b"PK\x03\x04":
            # never hand anything but a zip to np.load: no pickle attempts, no bare .npy allocations
            raise _fail(
                path,
                f"not an .npz (zip) archive (starts with {magic!r}); truncated or not a checkpoint",
            )
        try:
            f.seek(0)
            npz = np.load(f, allow_pickle=False)
        except (
            ValueError,
            OSError,
            EOFError,
            zipfile.BadZipFile,
            NotImplementedError,
            RuntimeError,
        ) as exc:
            raise _fail(
                path, f"not a readable .npz archive ({type(exc).__name__}: {exc})"
            ) from None
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise _fail(path, "is a single .npy array, not an .npz checkpoint archive")
        try:
            with npz:
                zf: zipfile.ZipFile = npz.zip
                _check_member_sizes(path, zf, archive_size)
                header = _read_header(path, zf, npz)
                manifest = _check_manifest(path, header, zf)
                arrays: dict[str, np.ndarray] = {}
                for key, (dtype, shape) in manifest.items():
                    try:
                        arr = npz[key]
                    except (
                        ValueError,
                        OSError,
                        EOFError,
                        zipfile.BadZipFile,
                        KeyError,
                        NotImplementedError,
                        RuntimeError,
                    ) as exc:
                        raise _fail(
                            path, f"array {key!r} cannot be read ({type(exc).__name__}: {exc})"
                        ) from None
                    if not isinstance(arr, np.ndarray):
                        raise _fail(path, f"array {key!r} is not an .npy array")
                    if arr.dtype != dtype or arr.shape != shape:
                        raise _fail(
                            path,
                            f"array {key!r}: expected {dtype.str} {shape} (manifest), "
                            f"got {arr.dtype.str} {arr.shape}",
                        )
                    arrays[key] = arr
        except CheckpointError:
            raise
        except (
            zipfile.BadZipFile,
            OSError,
            EOFError,
            ValueError,
            NotImplementedError,
            RuntimeError,
        ) as exc:
            raise _fail(path, f"corrupt archive ({type(exc).__name__}: {exc})") from None

    used: set[str] = set()
    model_state = _decode(header["model"]["state"], arrays, used, path, "model.state")
    if not all(isinstance(v, np.ndarray) for v in model_state.values()):
        raise _fail(path, "metadata model.state: every entry must be an array reference")
    extra_arrays = _decode(header["extra_arrays"], arrays, used, path, "extra_arrays")
    if not all(isinstance(v, np.ndarray) for v in extra_arrays.values()):
        raise _fail(path, "metadata extra_arrays: every entry must be an array reference")
    optimizer_state = _decode(header["optimizer"], arrays, used, path, "optimizer")
    scheduler_state = _decode(header["scheduler"], arrays, used, path, "scheduler")
    unused_refs: set[str] = set()
    model_config = _decode(header["model"]["config"], {}, unused_refs, path, "model.config")
    meta = _decode(header["meta"], {}, unused_refs, path, "meta")
    unreferenced = sorted(set(arrays) - used)
    if unreferenced:
        raise _fail(path, f"arrays not referenced by the metadata: {unreferenced[:5]}")
    return Checkpoint(
        model_state=model_state,
        model_config=model_config,
        model_class=header["model"]["class"],
        optimizer_state=optimizer_state,
        scheduler_state=scheduler_state,
        meta=meta,
        extra_arrays=extra_arrays,
        version=header["version"],
        path=path,
    )
