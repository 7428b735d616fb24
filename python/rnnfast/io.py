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
import os
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._io_format import (
    _META_KEY,
    _REF,
    FORMAT_NAME,
    FORMAT_VERSION,
    CheckpointError,
    _as_storable_array,
    _check_manifest,
    _check_member_sizes,
    _check_name,
    _decode,
    _encode,
    _fail,
    _read_header,
    _require_regular_file,
    _state_of,
)
from ._io_format import MAX_METADATA_DEPTH as MAX_METADATA_DEPTH  # public, read by users
from ._io_registry import (
    _BUILTIN_NAMES,
    _builtin_model_classes,
    _class_name,
    _resolve_model_class,
    register_model_class,
    registered_model_classes,
    rng_from_state,
    rng_state,
    unregister_model_class,
)

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
    model_state, model_config, model_class = _model_parts(model)
    state_refs = _store_named(model_state, "model", "model.state_dict()", arrays)
    extra_refs: dict[str, Any] = {}
    if extra_arrays is not None:
        if not isinstance(extra_arrays, Mapping):
            raise TypeError(
                f"extra_arrays: expected a dict name -> array, got {type(extra_arrays).__name__}"
            )
        extra_refs = _store_named(extra_arrays, "extra", "extra_arrays", arrays)

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
    _write_atomic(path, {_META_KEY: np.frombuffer(blob, dtype=np.uint8), **arrays})


def _model_parts(model: Any) -> tuple[Mapping[str, Any], Any, str | None]:
    """(state dict, config or None, ``"module:QualName"`` or None) of a model or a plain dict."""
    if isinstance(model, Mapping):
        return model, None, None
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
    if not isinstance(model_state, Mapping):
        raise TypeError(f"model.state_dict(): expected a dict, got {type(model_state).__name__}")
    return model_state, model_config, f"{type(model).__module__}:{type(model).__qualname__}"


def _store_named(
    named: Mapping[Any, Any], prefix: str, what: str, arrays: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Store each ``name -> array`` of ``named`` as ``arrays[prefix/name]``; the refs by name.

    ``what`` names the argument in errors (``model.state_dict()``, ``extra_arrays``).
    """
    refs: dict[str, Any] = {}
    for name, value in named.items():
        if not isinstance(name, str):
            raise TypeError(f"{what}: keys must be str, got {type(name).__name__} key {name!r}")
        _check_name(name, f"{what}[{name!r}]")
        key = f"{prefix}/{name}"
        arrays[key] = _as_storable_array(value, f"{what}[{name!r}]")
        refs[name] = {_REF: key}
    return refs


def _write_atomic(path: str, payload: Mapping[str, np.ndarray]) -> None:
    """``np.savez`` of ``payload`` to a temp file beside ``path``, fsync'ed, then renamed over it."""
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
    f = _open_regular(path)
    # One open file for the whole read (np.load is given the file object, so nothing leaks on
    # errors, and the size we validate against is the size of what we read).
    with f:
        header, arrays = _read_archive(path, f)
    return _checkpoint_of(path, header, arrays)


def _open_regular(path: str) -> Any:
    """``path`` opened for binary reading, refused unless it is a regular file (before and after
    the open, so a FIFO or device swapped in between is refused too)."""
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
    return os.fdopen(fd, "rb")


def _read_archive(path: str, f: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The validated header and the arrays (key -> ndarray, as the manifest says) of open file ``f``."""
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
        raise _fail(path, f"not a readable .npz archive ({type(exc).__name__}: {exc})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise _fail(path, "is a single .npy array, not an .npz checkpoint archive")
    try:
        with npz:
            zf: zipfile.ZipFile = npz.zip
            _check_member_sizes(path, zf, archive_size)
            header = _read_header(path, zf, npz)
            manifest = _check_manifest(path, header, zf)
            return header, {
                key: _read_array(path, npz, key, *spec) for key, spec in manifest.items()
            }
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


def _read_array(
    path: str, npz: Any, key: str, dtype: np.dtype, shape: tuple[int, ...]
) -> np.ndarray:
    """Member ``key`` of the archive, which must be an array of the manifest's dtype and shape."""
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
        raise _fail(path, f"array {key!r} cannot be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(arr, np.ndarray):
        raise _fail(path, f"array {key!r} is not an .npy array")
    if arr.dtype != dtype or arr.shape != shape:
        raise _fail(
            path,
            f"array {key!r}: expected {dtype.str} {shape} (manifest), "
            f"got {arr.dtype.str} {arr.shape}",
        )
    return arr


def _checkpoint_of(path: str, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> Checkpoint:
    """The Checkpoint of a validated header and its arrays (every array referenced exactly once)."""
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
