"""The checkpoint file format of :mod:`rnnfast.io`: its constants, the encoding of state trees into
JSON plus named arrays, and the validation of a file read back (header, manifest, zip members).

Private: :mod:`rnnfast.io` re-exports what users need (``CheckpointError``, ``FORMAT_NAME``, ...).
"""

from __future__ import annotations

import json
import math
import stat
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAX_METADATA_DEPTH",
    "CheckpointError",
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


CheckpointError.__module__ = "rnnfast.io"  # its public home (tracebacks, pickling)


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
