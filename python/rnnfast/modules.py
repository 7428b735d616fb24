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
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Union

import numpy as np

__all__ = [
    "RNN",
    "LSTM",
    "GRU",
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

Array = np.ndarray
State = Union[Array, tuple[Array, Array]]

#: Initialisation presets of the recurrent modules.
INIT_PRESETS = ("torch", "orthogonal", "identity")
#: SequenceModel modes.
MODES = ("many_to_many", "many_to_one", "one_to_many", "one_to_one")

_GATES = {"rnn": 1, "lstm": 4, "gru": 3}
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# --------------------------------------------------------------------------------------------------
# backend: rnnfast.functional (the compiled core); tests may point it at rnnfast.reference
# --------------------------------------------------------------------------------------------------

_backend: Any = None


def set_backend(module: Any = None) -> None:
    """Select the functional backend used by every module (``None`` = :mod:`rnnfast.functional`).

    Meant for tests: ``set_backend(rnnfast.reference)`` runs the same modules on the NumPy oracle.
    The module must provide the functional API (``rnn_forward`` ... ``gru_backward``).
    """
    global _backend
    if module is not None:
        for name in (
            "rnn_forward",
            "rnn_backward",
            "lstm_forward",
            "lstm_backward",
            "gru_forward",
            "gru_backward",
        ):
            if not callable(getattr(module, name, None)):
                raise TypeError(f"module: expected the functional API, {name!r} is missing")
    _backend = module


def get_backend() -> Any:
    """The functional backend in use (:mod:`rnnfast.functional` unless :func:`set_backend` changed it)."""
    if _backend is not None:
        return _backend
    from . import functional  # the compiled core; imported lazily so this module imports without it

    return functional


# --------------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------------


def _check_int(name: str, value: Any, lo: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int >= {lo}, got {type(value).__name__} {value!r}")
    if value < lo:
        raise ValueError(f"{name}: expected an int >= {lo}, got {value}")
    return int(value)


def _fmt_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.4g} {unit}"
        size /= 1024
    return f"{size:.4g} TiB"


def _check_allocatable(names: str, what: str, n_params: int, dtype: np.dtype) -> None:
    """MemoryError naming the size arguments ``names`` when ``n_params`` parameters of ``dtype``
    and their gradients cannot be allocated, before any of them is (a huge ``num_layers`` would
    otherwise loop over layers until the memory runs out). The probe is never written to, so it
    costs address space only, not physical memory."""
    nbytes = 2 * n_params * dtype.itemsize
    try:
        np.empty(2 * n_params, dtype=dtype)
    except (MemoryError, ValueError) as exc:  # ValueError: larger than the address space
        raise MemoryError(
            f"{names}: {what} needs {n_params} parameters ({_fmt_bytes(nbytes)} with their "
            f"gradients), more memory than can be allocated"
        ) from exc


def _check_dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype!r}") from exc
    if dt not in _FLOAT_DTYPES:
        raise TypeError(f"dtype: expected float32 or float64, got {dt}")
    return dt


def _as_float(name: str, a: Any, dtype: np.dtype, ndim: int | None = None) -> Array:
    """A C-contiguous array of ``dtype`` from float input; TypeError for other dtypes."""
    if a is None:
        raise TypeError(f"{name}: expected an array, got None")
    arr = np.asarray(a)
    if arr.dtype not in _FLOAT_DTYPES and arr.dtype != np.float16:
        raise TypeError(f"{name}: expected a float32 or float64 array, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=dtype)


def _as_lengths(lengths: Any, batch: int, t_steps: int) -> Array | None:
    if lengths is None:
        return None
    arr = np.asarray(lengths)
    if arr.dtype.kind not in "iu":
        raise TypeError(
            f"lengths: expected an integer array of shape ({batch},), got dtype {arr.dtype}"
        )
    if arr.shape != (batch,):
        raise ValueError(f"lengths: expected shape ({batch},), got {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() > t_steps):
        raise ValueError(
            f"lengths: expected 0 <= lengths[b] <= T = {t_steps}, got min {arr.min()}, "
            f"max {arr.max()}"
        )
    return np.ascontiguousarray(arr, dtype=np.int64)


def _to_numpy(name: str, v: Any) -> Array:
    """np.asarray for NumPy arrays and anything with ``__array__`` (torch tensors are detached first)."""
    if hasattr(v, "detach") and callable(v.detach):
        v = v.detach()
        if hasattr(v, "cpu"):
            v = v.cpu()
    if not isinstance(v, (np.ndarray, list, tuple)) and not hasattr(v, "__array__"):
        raise TypeError(
            f"{name}: expected an array (or an object with __array__), got {type(v).__name__}"
        )
    try:
        return np.asarray(v)
    except (TypeError, ValueError) as e:  # ragged nested lists, torch.bfloat16, ...
        raise TypeError(f"{name}: cannot convert {type(v).__name__} to an array ({e})") from e


def _cast_parameter(name: str, v: Array, dtype: np.dtype) -> Array:
    """``v`` as ``dtype``: floating arrays only, and every value finite after the cast."""
    if v.dtype.kind != "f":
        raise TypeError(
            f"{name}: expected a floating-point array (float16, float32 or float64; converted to "
            f"the module dtype {dtype}), got dtype {v.dtype}"
        )
    with np.errstate(over="ignore"):  # overflow to inf is reported below, naming the value
        out = np.asarray(v, dtype=dtype)
    finite = np.isfinite(out)
    if not finite.all():
        where = np.unravel_index(int(np.argmin(finite)), out.shape)
        index = tuple(int(i) for i in where)
        if np.isfinite(v[where]):
            raise ValueError(
                f"{name}: value {float(v[where])!r} at index {index} overflows {dtype} "
                f"(largest finite {float(np.finfo(dtype).max):.6g})"
            )
        raise ValueError(f"{name}: non-finite value {float(v[where])} at index {index}")
    return out


class IncompatibleKeys(NamedTuple):
    """Returned by ``load_state_dict(..., strict=False)``: names that were missing / not expected."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _load_into(
    params: Mapping[str, Array], state: Mapping[str, Any], strict: bool, prefix: str = ""
) -> IncompatibleKeys:
    """Copy ``state`` into the live arrays ``params`` (in place, so optimizers keep their references)."""
    if not isinstance(state, Mapping):
        raise TypeError(f"state_dict: expected a dict of arrays, got {type(state).__name__}")
    missing = [k for k in params if k not in state]
    unexpected = [k for k in state if k not in params]
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        raise ValueError(f"state_dict: {' and '.join(parts)} (expected exactly {list(params)})")
    converted: dict[str, Array] = {}
    for k, p in params.items():
        if k not in state:
            continue
        name = f"state_dict[{prefix + k!r}]"
        v = _to_numpy(name, state[k])
        if v.shape != p.shape:
            raise ValueError(f"{name}: expected shape {p.shape}, got {v.shape}")
        converted[k] = _cast_parameter(name, v, p.dtype)
    # A source may be (a view of) one of the live arrays, e.g. the module's own parameters in another
    # order (swapping the directions of a bidirectional layer): copying in place would then read
    # values already overwritten, so such sources are snapshotted before anything is written.
    dests = list(params.values())
    for k, v in converted.items():
        if any(np.may_share_memory(v, d) for d in dests):
            converted[k] = v.copy()
    for k, v in converted.items():  # all checked first: a failed load changes nothing
        np.copyto(params[k], v)
    return IncompatibleKeys(missing, unexpected)


# --------------------------------------------------------------------------------------------------
# parameter storage: one flat buffer for the parameters and one for the gradients
# --------------------------------------------------------------------------------------------------


class _FlatParams:
    """Parameters and gradients of a module live in two flat 1-D buffers, one view per tensor.

    ``_params`` / ``grads`` map PyTorch names to C-contiguous views of ``_flat_params`` /
    ``_flat_grads`` (in that order, back to back), so clipping, the optimizer update, the
    non-finite check and an MPI allreduce can each be one call over one buffer. The dicts are
    updated in place and the views never rebound afterwards (``load_state_dict`` copies into them),
    except when a :class:`SequenceModel` gathers its parts into its own buffer at construction.

    Copies (``copy.deepcopy``, ``pickle``) carry the buffers and the layout, not the views, and
    re-make the views on the copy; an optimizer copied together with the model (one deepcopy or
    one pickle of both) keeps updating the copy's buffer.
    """

    _params: dict[str, Array]
    grads: dict[str, Array]
    _flat_params: Array
    _flat_grads: Array

    def _rehome(self, fp: Array, fg: Array) -> None:
        """Copy the parameters and gradients into ``fp`` / ``fg`` (1-D, the total size) and make
        the dict values views of them."""
        old_fp: Array | None = getattr(self, "_flat_params", None)
        old_fg: Array | None = getattr(self, "_flat_grads", None)
        off = 0
        for k, v in self._params.items():
            n = v.size
            pv = fp[off : off + n].reshape(v.shape)
            gv = fg[off : off + n].reshape(v.shape)
            pv[...] = v
            g = self.grads.get(k)
            if g is not None and g is not gv:
                gv[...] = g
            elif g is None:
                gv.fill(0)
            # the arrays left behind turn read-only: an optimizer built over them before the move
            # fails loudly ("read-only") instead of updating memory the module no longer reads
            v.flags.writeable = False
            if g is not None:
                g.flags.writeable = False
            self._params[k] = pv
            self.grads[k] = gv
            off += n
        for old in (old_fp, old_fg):
            if old is not None and old.base is None:  # this module's own buffer, now left behind
                old.flags.writeable = False
        self._flat_params = fp
        self._flat_grads = fg

    def _flatten(self) -> None:
        """Move the parameters and gradients into two new flat buffers."""
        dtype = np.dtype(getattr(self, "dtype", np.float32))
        n = sum(v.size for v in self._params.values())
        self._rehome(np.empty(n, dtype), np.zeros(n, dtype))

    @property
    def flat_parameters(self) -> Array:
        """All parameters as one 1-D array (a view: writing it writes the parameters), in the
        order of :meth:`parameters`."""
        return self._flat_params

    @property
    def flat_grads(self) -> Array:
        """All gradients as one 1-D array (a view of the :attr:`grads` arrays), in the order of
        :meth:`parameters`; ``optimizer.step(model.flat_grads)`` is one fused update."""
        return self._flat_grads

    def zero_grad(self) -> None:
        """Set every gradient to zero (in place; one call over the flat buffer)."""
        self._flat_grads.fill(0)

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        # deepcopy and pickle copy every array on its own, which would cut the views from the
        # buffers: carry the buffers' owners (shared with a SequenceModel or an optimizer copied in
        # the same call) and the layout, and re-make the views on the copy. The rest of the state is
        # the class's own __getstate__/__setstate__.
        state = dict(self.__getstate__())
        fp, fg = self._flat_params, self._flat_grads
        op = fp.base if isinstance(fp.base, np.ndarray) else fp
        og = fg.base if isinstance(fg.base, np.ndarray) else fg
        state["_params"] = [(k, v.shape) for k, v in self._params.items()]
        state["grads"] = None
        state["_flat_params"] = (op, _offset_in(fp, op), fp.size)
        state["_flat_grads"] = (og, _offset_in(fg, og), fg.size)
        state.pop("_step_local", None)  # per-thread step() buffers: re-made empty
        return (_unpickle_flat, (type(self), state))


def _unpickle_flat(cls: type, state: dict[str, Any]) -> Any:
    """Rebuild a module pickled by :meth:`_FlatParams.__reduce_ex__`."""
    state = dict(state)
    layout = state.pop("_params")
    (op, po, n), (og, go, _) = state.pop("_flat_params"), state.pop("_flat_grads")
    state.pop("grads", None)
    obj = cls.__new__(cls)
    setstate = getattr(obj, "__setstate__", None)
    if setstate is not None:
        setstate(state)
    else:
        obj.__dict__.update(state)
    fp, fg = op[po : po + n], og[go : go + n]
    obj._params = OrderedDict()
    obj.grads = OrderedDict()
    off = 0
    for k, shape in layout:
        size = math.prod(shape)
        obj._params[k] = fp[off : off + size].reshape(shape)
        obj.grads[k] = fg[off : off + size].reshape(shape)
        off += size
    obj._flat_params, obj._flat_grads = fp, fg
    if isinstance(obj, RNNBase) and not hasattr(obj, "_step_local"):
        obj._step_local = threading.local()
    return obj


def _offset_in(view: Array, owner: Array) -> int:
    """Element offset of the 1-D view ``view`` within its owner buffer ``owner``."""
    delta = view.__array_interface__["data"][0] - owner.__array_interface__["data"][0]
    return delta // view.dtype.itemsize


_NO_CACHE_MSG = (
    "backward: no stored forward pass to differentiate; call forward in train() mode first "
    "(eval() mode stores no activations, and each forward pass can be differentiated once)"
)


# --------------------------------------------------------------------------------------------------
# training-mode ownership: one thread at a time, inputs that backward reads kept private
# --------------------------------------------------------------------------------------------------


class _Guard:
    """Detects a training-mode module used from two threads at once.

    A training-mode module holds the activations of its last forward pass (until ``backward``) and
    accumulates one set of gradients, so two threads training it at once would silently swap or mix
    their gradients. ``call`` holds a lock, taken without blocking, for the duration of one
    forward/backward (a second thread inside one at the same moment gets a RuntimeError); ``owner``
    is the thread whose forward pass awaits its backward: a training forward from another (live)
    thread meanwhile, or a backward from another thread, gets a RuntimeError too. Inference
    (``eval()`` mode) never takes it, so eval-mode modules stay shareable between threads.
    """

    __slots__ = ("_lock", "owner")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.owner: threading.Thread | None = None

    def _error(self, module: Any, what: str, detail: str) -> RuntimeError:
        return RuntimeError(
            f"{type(module).__name__}.{what}: the module is in use by another thread ({detail}). "
            "A training-mode module keeps one forward pass for backward and one set of gradients, "
            "so it cannot be trained from two threads at once: give each thread its own copy "
            "(copy.deepcopy(model)), or use eval() mode to share it for inference"
        )

    def enter(self, module: Any, what: str) -> None:
        """Take the call lock (RuntimeError if another thread is inside forward/backward)."""
        if not self._lock.acquire(blocking=False):
            raise self._error(module, what, "another thread is inside its forward or backward")

    def exit(self) -> None:
        self._lock.release()

    def check_forward(self, module: Any, what: str, pending: bool) -> None:
        """RuntimeError if ``pending`` (a stored forward) belongs to another thread still alive."""
        owner = self.owner
        if pending and owner is not None and owner is not threading.current_thread():
            if owner.is_alive():
                raise self._error(
                    module, what, f"thread {owner.name!r} has a forward pass awaiting its backward"
                )

    def check_backward(self, module: Any, what: str, pending: bool) -> None:
        """RuntimeError if ``pending`` (the stored forward pass) was made by another thread."""
        owner = self.owner
        if pending and owner is not None and owner is not threading.current_thread():
            raise self._error(
                module, what, f"the stored forward pass was made by thread {owner.name!r}"
            )


def _private(a: Array, src: Any) -> Array:
    """``a`` (converted from the caller's ``src``) as an array that the caller cannot change: ``a``
    itself when the conversion made a new array, else a copy. A training forward keeps its input for
    backward; an input changed in place between forward and backward would otherwise silently give
    the weight gradients of other data."""
    if a is not src and a.base is None:
        return a
    return a.copy()


def _getstate(obj: Any, cls: type, drop: tuple[str, ...]) -> dict[str, Any]:
    """The pickling state of ``obj`` (the base classes' after ``cls``, else ``__dict__``) without
    the thread-bound members (lock, per-thread buffers) and without the stored forward pass
    (``drop``: attributes set to None; a copy's backward needs a forward of its own)."""
    base = getattr(super(cls, obj), "__getstate__", None)
    d = dict(base() if base is not None else obj.__dict__)
    d.pop("_guard", None)
    d.pop("_step_local", None)
    for k in drop:
        if k in d:
            d[k] = None
    return d


def _rebuild_streaming(fn: Any, args: tuple[Any, ...], state: Any, exported: Any) -> Any:
    """Unpickle a recurrent module with its TBPTT stream: ``fn(*args)``, then ``state`` (as pickle
    applies it), then :meth:`RNNBase.stream_import` of the exported stream."""
    obj = fn(*args)
    if state is not None:
        setstate = getattr(obj, "__setstate__", None)
        if setstate is not None:
            setstate(state)
        else:
            obj.__dict__.update(state)
    obj.stream_import(exported)
    return obj


def _setstate(obj: Any, cls: type, d: dict[str, Any]) -> None:
    """Inverse of :func:`_getstate`: the base classes' ``__setstate__`` (or a dict update), then new
    thread-bound members."""
    base = getattr(super(cls, obj), "__setstate__", None)
    if base is not None:
        base(d)
    else:
        obj.__dict__.update(d)
    obj._guard = _Guard()


# --------------------------------------------------------------------------------------------------
# per-cell dispatch onto the functional API
# --------------------------------------------------------------------------------------------------


def _cell_forward(
    F: Any,
    cell: str,
    nonlinearity: str,
    x: Array,
    state: State | None,
    w: Sequence[Array | None],
    lengths: Array | None,
    training: bool,
) -> tuple[Array, State, Any]:
    """One layer and direction over the whole sequence: (y, final state, cache)."""
    if cell == "lstm":
        h0, c0 = state if state is not None else (None, None)
        y, h_n, c_n, cache = F.lstm_forward(x, h0, c0, *w, lengths=lengths, training=training)
        return y, (h_n, c_n), cache
    if cell == "rnn":
        y, h_n, cache = F.rnn_forward(
            x, state, *w, nonlinearity=nonlinearity, lengths=lengths, training=training
        )
    else:
        y, h_n, cache = F.gru_forward(x, state, *w, lengths=lengths, training=training)
    return y, h_n, cache


def _cell_backward(
    F: Any, cell: str, cache: Any, dy: Array, dstate: State | None
) -> dict[str, Any]:
    if cell == "lstm":
        dh, dc = dstate if dstate is not None else (None, None)
        return dict(F.lstm_backward(cache, dy, dh, dc))
    return dict(getattr(F, f"{cell}_backward")(cache, dy, dstate))


def _reverse_index(t_steps: int, batch: int, lengths: Array | None) -> Array:
    """(T, B) time index that reverses each sequence within its valid length (padding stays put).

    idx[t, b] = L_b - 1 - t for t < L_b, else t; an involution, so the same gather undoes it.
    """
    t = np.arange(t_steps)[:, None]
    if lengths is None:
        return np.broadcast_to(t_steps - 1 - t, (t_steps, batch))
    lens = lengths[None, :]
    return np.where(t < lens, lens - 1 - t, t)


def _gather_time(a: Array, idx: Array) -> Array:
    """a (T, B, ...) gathered along time per batch column: out[t, b] = a[idx[t, b], b]."""
    return np.ascontiguousarray(a[idx, np.arange(a.shape[1])[None, :]])


# --------------------------------------------------------------------------------------------------
# initialisation
# --------------------------------------------------------------------------------------------------


def _orthogonal(rng: np.random.Generator, n: int) -> Array:
    """An (n, n) orthogonal matrix (QR of a Gaussian with the sign fix that makes it Haar-uniform)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))[None, :]


def _init_layer(
    rng: np.random.Generator,
    cell: str,
    init: str,
    n_in: int,
    hidden: int,
    bias: bool,
    dtype: np.dtype,
) -> dict[str, Array | None]:
    g = _GATES[cell]
    gh = g * hidden
    if init == "torch":
        k = 1.0 / math.sqrt(hidden)  # torch.nn.RNNBase.reset_parameters: U(-1/sqrt(H), 1/sqrt(H))
        w_ih = rng.uniform(-k, k, (gh, n_in))
        w_hh = rng.uniform(-k, k, (gh, hidden))
        b_ih = rng.uniform(-k, k, gh) if bias else None
        b_hh = rng.uniform(-k, k, gh) if bias else None
    elif init == "orthogonal":
        a = math.sqrt(
            6.0 / (n_in + hidden)
        )  # Xavier/Glorot uniform per gate block (fan_in I, fan_out H)
        w_ih = rng.uniform(-a, a, (gh, n_in))
        w_hh = np.concatenate([_orthogonal(rng, hidden) for _ in range(g)], axis=0)
        b_ih = np.zeros(gh) if bias else None
        b_hh = np.zeros(gh) if bias else None
        if cell == "lstm" and b_ih is not None:
            b_ih[hidden : 2 * hidden] = (
                1.0  # forget-gate bias 1 (Jozefowicz et al. 2015); b_hh stays 0
            )
    else:  # identity (IRNN, Le et al. 2015): identity recurrence, small Gaussian input weights, zero bias
        w_ih = rng.normal(0.0, 1e-3, (gh, n_in))
        w_hh = np.concatenate([np.eye(hidden) for _ in range(g)], axis=0)
        b_ih = np.zeros(gh) if bias else None
        b_hh = np.zeros(gh) if bias else None
    out: dict[str, Array | None] = {"w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh}
    return {
        k: (None if v is None else np.ascontiguousarray(v, dtype=dtype)) for k, v in out.items()
    }


# --------------------------------------------------------------------------------------------------
# recurrent stacks
# --------------------------------------------------------------------------------------------------


class _Chunk:
    """One chunk a stream has run (kept while it overlaps a possible backward window).

    start, n: global steps [start, start + n). masks: per layer, the inter-layer dropout mask
    (n, B, H) applied to that layer's input (None for layer 0, without dropout, and in eval mode).
    For replay on checkpoint import (``replayable`` streams) also: x (n, B, I) the stack's input,
    states the state entering the chunk per layer (after resets), params the weights it ran with
    per layer ([w_ih, w_hh, b_ih, b_hh] copies) and resets the (B,) bool rows reset just before it
    (or None).
    """

    __slots__ = ("start", "n", "masks", "x", "states", "params", "resets")

    def __init__(self, start: int, n: int) -> None:
        self.start = start
        self.n = n
        self.masks: list[Array | None] = []
        self.x: Array | None = None
        self.states: list[State] | None = None
        self.params: list[list[Array | None]] | None = None
        self.resets: Array | None = None


class _Stream:
    """Truncated-BPTT streaming state of one recurrent stack (see RNNBase.stream_begin).

    One ``functional.TBPTTStream`` per layer holds the activations of the last k2 steps (C++ buffers
    of 2*k2 steps) and the carried state; Python keeps only what the C++ side does not: the dropout
    masks of the chunks that overlap the current window and, for replayable streams, their inputs,
    entering states and weights (O(k2 + k1) steps: memory independent of the stream length).
    """

    def __init__(
        self, batch: int, k1: int, k2: int, lengths: Array | None, replayable: bool
    ) -> None:
        self.batch = batch
        self.k1 = k1
        self.k2 = k2
        self.lengths = lengths  # absolute valid lengths (B,) or None
        self.replayable = replayable
        self.layers: list[Any] = []  # functional.TBPTTStream per layer
        self.origin = 0  # global index of the layers' position 0 (moves when history is dropped)
        self.chunks: list[_Chunk] = []
        self.pending_reset: Array | None = None  # (B,) bool: rows reset since the last chunk
        self.ready = False  # a training forward whose window has not been backpropagated yet

    @property
    def pos(self) -> int:
        """Global index of the next step."""
        return self.origin + int(self.layers[0].position)

    @property
    def window(self) -> int:
        """Length of the current backward window: the last min(k2, pos - origin) steps."""
        start, stop = self.layers[0].window
        return int(stop) - int(start)

    def window_masks(self, layer: int) -> Array | None:
        """Dropout mask (W, B, H) of ``layer``'s input over the current window (None: no dropout
        anywhere in it; steps run without a mask count as ones)."""
        stop = self.pos
        start = stop - self.window
        parts: list[tuple[int, Array | None]] = []
        for c in self.chunks:
            a, b = max(c.start, start), min(c.start + c.n, stop)
            if a < b:
                m = c.masks[layer] if layer < len(c.masks) else None
                parts.append((b - a, None if m is None else m[a - c.start : b - c.start]))
        assert sum(n for n, _ in parts) == stop - start, "stream chunks do not cover the window"
        given = [m for _, m in parts if m is not None]
        if not given:
            return None
        shape, dt = given[0].shape[1:], given[0].dtype
        return np.concatenate(
            [m if m is not None else np.ones((n,) + shape, dt) for n, m in parts], axis=0
        )

    def nbytes(self) -> int:
        """Bytes of NumPy arrays the Python side holds for the stream (tests: flat in T)."""
        total = 0 if self.pending_reset is None else self.pending_reset.nbytes
        for c in self.chunks:
            arrs: list[Any] = list(c.masks) + [c.x, c.resets]
            for s in c.states or []:
                arrs += list(s) if isinstance(s, tuple) else [s]
            for p in c.params or []:
                arrs += p
            total += sum(a.nbytes for a in arrs if a is not None)
        return total


def _zero_nonfinite_rows(state: State, rows: Array) -> State:
    """``state`` (B, H) (LSTM: (h, c)) with the rows selected by ``rows`` (B,) that hold a non-finite
    value set to zero (a copy; ``state`` itself is unchanged)."""
    if isinstance(state, tuple):
        return tuple(_zero_nonfinite_rows(s, rows) for s in state)  # type: ignore[return-value]
    bad = rows & ~np.isfinite(state).all(axis=1)
    if not bad.any():
        return state
    out = state.copy()
    out[bad] = 0
    return out


def _tbptt_stream_class() -> Any:
    """The C++ streaming TBPTT class: the backend's, else rnnfast.functional's (the reference
    backend has none: streaming always runs in the compiled core)."""
    cls = getattr(get_backend(), "TBPTTStream", None)
    if cls is None:
        from . import functional

        cls = functional.TBPTTStream
    return cls


def _step_ready(a: Any, dtype: np.dtype, shape: tuple[int, ...]) -> bool:
    """True when ``a`` can go to the compiled step as it is (no conversion or copy)."""
    return type(a) is np.ndarray and a.dtype == dtype and a.shape == shape and a.flags.c_contiguous


class RNNBase(_FlatParams):
    """Shared implementation of :class:`RNN`, :class:`LSTM` and :class:`GRU` (see their docstrings)."""

    _cell = "rnn"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        dtype: Any = np.float32,
        seed: int | None = None,
        init: str = "torch",
    ) -> None:
        self.input_size = _check_int("input_size", input_size, 1)
        self.hidden_size = _check_int("hidden_size", hidden_size, 1)
        self.num_layers = _check_int("num_layers", num_layers, 1)
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        if self._cell != "rnn" and nonlinearity != "tanh":
            raise ValueError(
                f"nonlinearity: only RNN takes a nonlinearity, got {nonlinearity!r} for "
                f"{type(self).__name__}"
            )
        self.nonlinearity = nonlinearity
        for name, flag in (
            ("bias", bias),
            ("batch_first", batch_first),
            ("bidirectional", bidirectional),
        ):
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"{name}: expected a bool, got {type(flag).__name__}")
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        if isinstance(dropout, bool) or not isinstance(
            dropout, (int, float, np.floating, np.integer)
        ):
            raise TypeError(f"dropout: expected a float in [0, 1), got {type(dropout).__name__}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout: expected a float in [0, 1), got {dropout}")
        self.dropout = float(dropout)
        self.dtype = _check_dtype(dtype)
        if init not in INIT_PRESETS:
            raise ValueError(f"init: expected one of {INIT_PRESETS}, got {init!r}")
        self.init = init
        if seed is not None:
            seed = _check_int("seed", seed, 0)
        self.seed = seed
        self.num_directions = 2 if self.bidirectional else 1
        self.training = True

        seq = np.random.SeedSequence(seed)
        init_seq, drop_seq = seq.spawn(2)
        init_rng = np.random.default_rng(init_seq)
        #: RNG of the inter-layer dropout masks (seeded from ``seed``; saved in training checkpoints).
        self.rng = np.random.default_rng(drop_seq)
        gh = _GATES[self._cell] * self.hidden_size
        n_out = self.num_directions * self.hidden_size  # input size of layers >= 1
        n_in_total = self.input_size + (self.num_layers - 1) * n_out
        # per direction: w_ih of every layer, plus w_hh and both biases of every layer
        n_params = (
            self.num_directions
            * gh
            * (n_in_total + self.num_layers * (self.hidden_size + 2 * self.bias))
        )
        _check_allocatable(
            "input_size, hidden_size, num_layers",
            f"{type(self).__name__}(input_size={self.input_size}, hidden_size={self.hidden_size}, "
            f"num_layers={self.num_layers}, bidirectional={self.bidirectional})",
            n_params,
            self.dtype,
        )
        self._params: dict[str, Array] = OrderedDict()
        for layer in range(self.num_layers):
            n_in = self.input_size if layer == 0 else self.hidden_size * self.num_directions
            for d in range(self.num_directions):
                w = _init_layer(
                    init_rng, self._cell, init, n_in, self.hidden_size, self.bias, self.dtype
                )
                sfx = self._suffix(layer, d)
                self._params[f"weight_ih{sfx}"] = w["w_ih"]  # type: ignore[assignment]
                self._params[f"weight_hh{sfx}"] = w["w_hh"]  # type: ignore[assignment]
                if self.bias:
                    self._params[f"bias_ih{sfx}"] = w["b_ih"]  # type: ignore[assignment]
                    self._params[f"bias_hh{sfx}"] = w["b_hh"]  # type: ignore[assignment]
        self.grads: dict[str, Array] = OrderedDict()
        self._flatten()
        #: per layer and direction (index layer * num_directions + d): dL/dh_t (T, B, H) of every step
        #: from the most recent backward (time-aligned with the input also for reverse directions).
        self.last_state_grads: list[Array] = []
        #: gradient w.r.t. the initial state hx of the most recent backward (h0, or (h0, c0) for LSTM).
        self.grad_hx: State | None = None
        self._grad_hx_list: list[State | None] = []
        self._cache: dict[str, Any] | None = None
        self._stream: _Stream | None = None
        # step()'s preallocated input buffers, one set per thread: a module in eval mode may be
        # shared by threads, and a shared buffer would let one thread overwrite another's input.
        self._step_local = threading.local()
        self._guard = _Guard()  # one training thread at a time (see _Guard)

    # --- names -------------------------------------------------------------------------------------
    @staticmethod
    def _suffix(layer: int, d: int) -> str:
        return f"_l{layer}" + ("_reverse" if d == 1 else "")

    def _weights(self, layer: int, d: int) -> list[Array | None]:
        sfx = self._suffix(layer, d)
        p = self._params
        return [
            p[f"weight_ih{sfx}"],
            p[f"weight_hh{sfx}"],
            p.get(f"bias_ih{sfx}"),
            p.get(f"bias_hh{sfx}"),
        ]

    # --- PyTorch-like housekeeping ------------------------------------------------------------------
    def parameters(self) -> dict[str, Array]:
        """The live parameter arrays by PyTorch name (optimizers update them in place)."""
        return self._params

    def named_parameters(self) -> list[tuple[str, Array]]:
        """(name, array) pairs in PyTorch's order."""
        return list(self._params.items())

    def train(self, mode: bool = True) -> RNNBase:
        """Training mode (dropout on, forward stores activations for backward). Returns self."""
        self.training = bool(mode)
        return self

    def eval(self) -> RNNBase:
        """Inference mode: no dropout, no stored activations (backward then raises). Returns self."""
        self._cache = None
        return self.train(False)

    def state_dict(self) -> dict[str, Array]:
        """Copies of the parameters, keys and shapes exactly as PyTorch's module of the same config."""
        return OrderedDict((k, v.copy()) for k, v in self._params.items())

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True
    ) -> IncompatibleKeys:
        """Load parameters (NumPy arrays or anything with ``__array__``, e.g. torch tensors).

        Values must be floating-point arrays (float16, float32 or float64); they are converted to
        the module dtype and copied into the live arrays. ``strict`` (default): missing or unexpected
        keys raise ValueError naming them. Always, naming the key: a misshaped value or one that
        is not finite after the conversion (NaN, inf, or e.g. 1e300 into float32) raises
        ValueError; a non-floating value (integer, bool, complex, object) raises TypeError.
        Nothing is loaded unless every value passes. Returns (missing_keys, unexpected_keys).
        """
        return _load_into(self._params, state_dict, strict)

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments (``type`` names the class); see :func:`model_from_config`."""
        cfg: dict[str, Any] = {
            "type": type(self).__name__,
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
        }
        if self._cell == "rnn":
            cfg["nonlinearity"] = self.nonlinearity
        cfg.update(
            bias=self.bias,
            batch_first=self.batch_first,
            dropout=self.dropout,
            bidirectional=self.bidirectional,
            dtype=self.dtype.name,
            seed=self.seed,
            init=self.init,
        )
        return cfg

    @property
    def output_size(self) -> int:
        """Features of ``out``: hidden_size * num_directions."""
        return self.hidden_size * self.num_directions

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Any:
        """Rebuild from :meth:`config` (used by ``rnnfast.io.Checkpoint.build_model``)."""
        return model_from_config(cfg)

    def __repr__(self) -> str:
        c = self.config()
        args = ", ".join(f"{k}={v!r}" for k, v in c.items() if k not in ("type",))
        return f"{type(self).__name__}({args})"

    # --- copying and pickling ------------------------------------------------------------------------
    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        """``copy.deepcopy`` / ``pickle``: configuration, parameters, gradients, dropout RNG, mode
        (see :meth:`__getstate__`) and a TBPTT stream: a replayable one is exported and rebuilt on
        the copy (:meth:`stream_export` / :meth:`stream_import`, exact); a stream begun with
        ``replayable=False`` cannot be copied (TypeError)."""
        st = self._stream
        rv = super().__reduce_ex__(protocol)
        if st is None:
            return rv
        if not st.replayable:
            raise TypeError(
                f"cannot copy or pickle a {type(self).__name__} in the middle of a TBPTT stream "
                "begun with replayable=False (its history lives in the compiled core only); call "
                "stream_end() first, or begin the stream with replayable=True"
            )
        return (
            _rebuild_streaming,
            (rv[0], rv[1], rv[2] if len(rv) > 2 else None, self.stream_export()),
        )

    def __getstate__(self) -> dict[str, Any]:
        """The attributes to copy: not the activations of a forward pass awaiting backward (the
        copy's backward needs a forward of its own), the stream (see :meth:`__reduce_ex__`), the
        thread guard or the per-thread ``step`` buffers."""
        d = _getstate(self, RNNBase, ("_cache", "_stream"))
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        _setstate(self, RNNBase, d)
        self._step_local = threading.local()

    # --- state helpers ------------------------------------------------------------------------------
    def _split_hx(self, hx: Any, batch: int) -> list[State | None]:
        """Per layer/direction initial states from hx ((L*D, B, H), or a (h0, c0) pair for LSTM)."""
        n = self.num_layers * self.num_directions
        shape = (n, batch, self.hidden_size)
        if hx is None:
            return [None] * n
        if self._cell == "lstm":
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(
                    f"hx: expected a tuple (h0, c0) of arrays {shape} for LSTM, got "
                    f"{type(hx).__name__}"
                )
            h0 = _as_float("hx[0]", hx[0], self.dtype)
            c0 = _as_float("hx[1]", hx[1], self.dtype)
            for name, a in (("hx[0]", h0), ("hx[1]", c0)):
                if a.shape != shape:
                    raise ValueError(f"{name}: expected shape {shape}, got {a.shape}")
            return [(h0[i], c0[i]) for i in range(n)]
        if isinstance(hx, (tuple, list)):
            raise TypeError(
                f"hx: expected an array {shape} for {type(self).__name__}, got {type(hx).__name__}"
            )
        h0 = _as_float("hx", hx, self.dtype)
        if h0.shape != shape:
            raise ValueError(f"hx: expected shape {shape}, got {h0.shape}")
        return [h0[i] for i in range(n)]

    def _join_states(self, states: list[State]) -> State:
        if self._cell == "lstm":
            return (np.stack([s[0] for s in states]), np.stack([s[1] for s in states]))  # type: ignore[index]
        return np.stack(states)  # type: ignore[arg-type]

    def _zero_state(self, batch: int) -> State:
        z = np.zeros((batch, self.hidden_size), dtype=self.dtype)
        return (z, z.copy()) if self._cell == "lstm" else z

    # --- forward / backward -------------------------------------------------------------------------
    def __call__(self, x: Any, hx: Any = None, lengths: Any = None) -> tuple[Array, State]:
        return self.forward(x, hx, lengths)

    def forward(self, x: Any, hx: Any = None, lengths: Any = None) -> tuple[Array, State]:
        """Run the stack over a batch of sequences.

        Args:
            x: (T, B, input_size), or (B, T, input_size) with ``batch_first``; float32/float64.
            hx: initial state, (num_layers * num_directions, B, H) (LSTM: a tuple (h0, c0)); None = 0.
            lengths: optional int array (B,) of valid lengths (ragged batch, padding at the end);
                outputs at padded steps are 0 and h_n is the state after the last valid step.

        Returns:
            out (T, B, num_directions * H) (batch_first: (B, T, D*H)) and h_n
            (num_layers * num_directions, B, H) (LSTM: (h_n, c_n)), in the module dtype.
        """
        return self._forward(x, hx, lengths, private=False)

    def _forward(self, x: Any, hx: Any, lengths: Any, private: bool) -> tuple[Array, State]:
        """forward; ``private``: the caller guarantees that nobody else holds ``x`` (no copy)."""
        xt = self._time_major_input(x)
        lens = _as_lengths(lengths, xt.shape[1], xt.shape[0])
        states = self._split_hx(hx, xt.shape[1])
        if not self.training:  # inference stores nothing: shareable between threads
            y, finals, _ = self._run(xt, states, lens, False, None)
        else:
            if not private:  # backward reads x (dW_ih): keep it safe from in-place changes
                xt = _private(xt, x)
            g = self._guard
            g.enter(self, "forward")
            try:
                g.check_forward(self, "forward", self._cache is not None)
                y, finals, cache = self._run(xt, states, lens, True, None)
                self._cache = cache
                g.owner = threading.current_thread()
            finally:
                g.exit()
        out = np.ascontiguousarray(y.transpose(1, 0, 2)) if self.batch_first else y
        return out, self._join_states(finals)

    def _time_major_input(self, x: Any) -> Array:
        xa = _as_float("x", x, self.dtype)
        if xa.ndim != 3:
            layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
            raise ValueError(f"x: expected a 3-D array {layout}, got shape {xa.shape}")
        if self.batch_first:
            xa = np.ascontiguousarray(xa.transpose(1, 0, 2))
        if xa.shape[2] != self.input_size:
            raise ValueError(
                f"x: expected input size {self.input_size} in the last axis, got shape "
                f"{np.asarray(x).shape}"
            )
        if xa.shape[0] < 1 or xa.shape[1] < 1:
            raise ValueError(f"x: expected T >= 1 and B >= 1, got shape {np.asarray(x).shape}")
        return xa

    def _run(
        self,
        x: Array,
        states: list[State | None],
        lengths: Array | None,
        training: bool,
        masks: list[Array | None] | None,
    ) -> tuple[Array, list[State], dict[str, Any] | None]:
        """Forward through every layer/direction (time-major). ``masks`` overrides the dropout masks.

        Returns (y (T, B, D*H), final states per layer/direction, cache or None).
        """
        F = get_backend()
        t_steps, batch, _ = x.shape
        D, H = self.num_directions, self.hidden_size
        rev_idx = _reverse_index(t_steps, batch, lengths) if self.bidirectional else None
        finals: list[State] = []
        layer_caches: list[list[Any]] = []
        used_masks: list[Array | None] = [None]
        inp = x
        for layer in range(self.num_layers):
            if layer > 0:
                mask = None
                if training and self.dropout > 0.0:
                    if masks is not None and masks[layer] is not None:
                        mask = masks[layer]
                    else:  # inverted dropout: keep with prob 1-p, scale by 1/(1-p)
                        keep = self.rng.random(inp.shape) >= self.dropout
                        mask = (keep / (1.0 - self.dropout)).astype(self.dtype)
                    inp = inp * mask
                used_masks.append(mask)
            ys = []
            dcaches = []
            for d in range(D):
                xin = inp if d == 0 else _gather_time(inp, rev_idx)  # type: ignore[arg-type]
                y, fin, cache = _cell_forward(
                    F,
                    self._cell,
                    self.nonlinearity,
                    xin,
                    states[layer * D + d],
                    self._weights(layer, d),
                    lengths,
                    training,
                )
                y = np.asarray(y, dtype=self.dtype)
                fin = (
                    tuple(np.asarray(s, dtype=self.dtype) for s in fin)
                    if isinstance(fin, tuple)
                    else np.asarray(fin, dtype=self.dtype)
                )
                if d == 1:
                    y = _gather_time(y, rev_idx)  # type: ignore[arg-type]
                ys.append(y)
                finals.append(fin)  # type: ignore[arg-type]
                dcaches.append(cache)
            layer_caches.append(dcaches)
            inp = ys[0] if D == 1 else np.concatenate(ys, axis=2)
        if not training:
            return inp, finals, None
        cache_all = {
            "caches": layer_caches,
            "masks": used_masks,
            "rev_idx": rev_idx,
            "shape": (t_steps, batch),
            "x_dtype": x.dtype,
        }
        assert inp.shape == (t_steps, batch, D * H)
        return inp, finals, cache_all

    def backward(self, grad_output: Any, grad_state: Any = None) -> Array:
        """Backpropagate through the last forward pass; accumulate parameter gradients into :attr:`grads`.

        Args:
            grad_output: dL/dout, the shape of ``out`` (None = zeros).
            grad_state: dL/dh_n (num_layers * num_directions, B, H) (LSTM: (dh_n, dc_n), either may be
                None); None = zeros.

        Returns:
            dL/dx in the layout of x. Also sets :attr:`grad_hx` (dL/dhx) and :attr:`last_state_grads`.
            The stored activations are released: a second backward raises ValueError.
        """
        g = self._guard
        g.enter(self, "backward")
        try:
            g.check_backward(self, "backward", self._cache is not None)
            return self._backward(grad_output, grad_state)
        finally:
            g.exit()

    def _backward(self, grad_output: Any, grad_state: Any) -> Array:
        cache = self._cache
        if cache is None:
            raise ValueError(_NO_CACHE_MSG)
        self._cache = None
        self._guard.owner = None
        t_steps, batch = cache["shape"]
        D, H = self.num_directions, self.hidden_size
        dout: Array | None = None  # None: zeros (the kernels skip it), one direction only
        if grad_output is None:
            if D == 2:
                dout = np.zeros((t_steps, batch, D * H), dtype=self.dtype)
        else:
            dout = _as_float("grad_output", grad_output, self.dtype)
            exp = (batch, t_steps, D * H) if self.batch_first else (t_steps, batch, D * H)
            if dout.shape != exp:
                raise ValueError(f"grad_output: expected shape {exp}, got {dout.shape}")
            if self.batch_first:
                dout = np.ascontiguousarray(dout.transpose(1, 0, 2))
        dstates = self._split_grad_state(grad_state, batch)
        dx = self._backward_time_major(cache, dout, dstates)
        return np.ascontiguousarray(dx.transpose(1, 0, 2)) if self.batch_first else dx

    def _split_grad_state(self, grad_state: Any, batch: int) -> list[State | None]:
        if grad_state is None:
            return [None] * (self.num_layers * self.num_directions)
        if self._cell == "lstm":
            if not isinstance(grad_state, (tuple, list)) or len(grad_state) != 2:
                raise TypeError(
                    "grad_state: expected a tuple (dh_n, dc_n) for LSTM, got "
                    f"{type(grad_state).__name__}"
                )
            n = self.num_layers * self.num_directions
            shape = (n, batch, self.hidden_size)
            parts = []
            for j, g in enumerate(grad_state):
                if g is None:
                    parts.append(np.zeros(shape, dtype=self.dtype))
                else:
                    a = _as_float(f"grad_state[{j}]", g, self.dtype)
                    if a.shape != shape:
                        raise ValueError(f"grad_state[{j}]: expected shape {shape}, got {a.shape}")
                    parts.append(a)
            return [(parts[0][i], parts[1][i]) for i in range(n)]
        try:
            return self._split_hx(grad_state, batch)
        except (TypeError, ValueError) as exc:
            raise type(exc)(str(exc).replace("hx", "grad_state")) from None

    def _backward_time_major(
        self, cache: dict[str, Any], dout: Array | None, dstates: list[State | None]
    ) -> Array:
        F = get_backend()
        D, H = self.num_directions, self.hidden_size
        rev_idx = cache["rev_idx"]
        dh_alls: list[Array | None] = [None] * (self.num_layers * D)
        dhx: list[State | None] = [None] * (self.num_layers * D)
        dy = dout
        for layer in reversed(range(self.num_layers)):
            dx_layer: Array | None = None
            for d in range(D):
                dyd = dy if D == 1 else np.ascontiguousarray(dy[:, :, d * H : (d + 1) * H])
                if d == 1:
                    dyd = _gather_time(dyd, rev_idx)
                g = _cell_backward(
                    F, self._cell, cache["caches"][layer][d], dyd, dstates[layer * D + d]
                )
                sfx = self._suffix(layer, d)
                self.grads[f"weight_ih{sfx}"] += g["w_ih"]
                self.grads[f"weight_hh{sfx}"] += g["w_hh"]
                if self.bias:
                    self.grads[f"bias_ih{sfx}"] += g["b_ih"]
                    self.grads[f"bias_hh{sfx}"] += g["b_hh"]
                dxd = np.asarray(g["x"], dtype=self.dtype)
                dha = np.asarray(g["dh_all"], dtype=self.dtype)
                if d == 1:
                    dxd = _gather_time(dxd, rev_idx)
                    dha = _gather_time(dha, rev_idx)
                dh_alls[layer * D + d] = dha
                if self._cell == "lstm":
                    dhx[layer * D + d] = (
                        np.asarray(g["h0"], dtype=self.dtype),
                        np.asarray(g["c0"], dtype=self.dtype),
                    )
                else:
                    dhx[layer * D + d] = np.asarray(g["h0"], dtype=self.dtype)
                dx_layer = dxd if dx_layer is None else dx_layer + dxd
            assert dx_layer is not None
            mask = cache["masks"][layer]
            if mask is not None:
                dx_layer = dx_layer * mask  # d(inp * mask)/d inp = mask
            dy = dx_layer
        self.last_state_grads = dh_alls  # type: ignore[assignment]
        self._grad_hx_list = dhx
        self.grad_hx = self._join_states(dhx)  # type: ignore[arg-type]
        return dy

    # --- streaming inference ------------------------------------------------------------------------
    def step(self, x_t: Any, state: Any = None) -> tuple[Array, State]:
        """One time step for streaming inference (no dropout, nothing stored for backward).

        Args: x_t (B, input_size); state as ``hx`` of forward (None = zeros). Returns (out_t (B, H),
        new state (num_layers, B, H) (LSTM: (h, c))), new arrays. Equal to ``forward`` run one step
        at a time in eval mode (to rounding: the products sum in another order). Unidirectional
        stacks only.

        One call into the compiled core (``_core.step_plan``: the weights are checked once, then
        each step checks x_t and the state only); a C-contiguous x_t and state of the module dtype
        are used as they are, anything else is converted first. Thread-safe (nothing shared is
        written).
        """
        plan = self._step_plan()
        dt, L, H = self.dtype, self.num_layers, self.hidden_size
        x = x_t
        if not (
            type(x) is np.ndarray
            and x.dtype == dt
            and x.ndim == 2
            and x.shape[1] == self.input_size
            and x.flags.c_contiguous
        ):
            x = _as_float("x_t", x_t, dt)
            if x.ndim != 2 or x.shape[1] != self.input_size:
                raise ValueError(f"x_t: expected shape (B, {self.input_size}), got {x.shape}")
        shape = (L, x.shape[0], H)
        if self._cell == "lstm":
            h0 = c0 = None
            if state is not None:
                if not (
                    type(state) is tuple
                    and len(state) == 2
                    and _step_ready(state[0], dt, shape)
                    and _step_ready(state[1], dt, shape)
                ):
                    state = self._join_states(self._split_hx(state, x.shape[0]))  # type: ignore[arg-type]
                h0, c0 = state
            if plan is None:
                return self._step_run(x, None if state is None else (h0, c0))
            y, h_n, c_n = plan.forward(x, h0, c0)
            return y, (h_n, c_n)
        if state is not None and not _step_ready(state, dt, shape):
            state = self._join_states(self._split_hx(state, x.shape[0]))  # type: ignore[arg-type]
        if plan is None:
            return self._step_run(x, state)
        y, h_n, _ = plan.forward(x, state, None)
        return y, h_n

    def _step_plan(self) -> Any:
        """This thread's compiled step plan over the current weights (None with a test backend)."""
        if self.bidirectional:
            raise ValueError("step: a bidirectional module needs the whole sequence; use forward")
        loc = self._step_local
        plan = getattr(loc, "plan", None)
        if plan is not None and loc.plan_key is self._flat_params:
            return plan
        if _backend is not None:  # rnnfast.reference or another test backend: the sequence path
            return None
        from ._loader import core

        layers = [tuple(self._weights(layer, 0)) for layer in range(self.num_layers)]
        plan = core.step_plan(
            self._cell,
            self.nonlinearity,
            self.dtype.name,
            self.input_size,
            self.hidden_size,
            layers,
        )
        # the weights are views of the flat buffer: valid until the buffer is replaced
        loc.plan, loc.plan_key = plan, self._flat_params
        return plan

    def _step_run(self, x: Array, state: State | None) -> tuple[Array, State]:
        """step through the sequence path (a T = 1 forward), for a test backend."""
        states = self._split_hx(state, x.shape[0])
        y, finals, _ = self._run(x[None], states, None, False, None)
        return y[0], self._join_states(finals)

    # --- truncated BPTT streaming -------------------------------------------------------------------
    def stream_begin(
        self,
        batch_size: int,
        k1: int,
        k2: int,
        hx: Any = None,
        lengths: Any = None,
        total_steps: int | None = None,
        *,
        replayable: bool = True,
    ) -> None:
        """Start a TBPTT(k1, k2) stream of ``batch_size`` sequences (time-major chunks).

        Then call :meth:`stream_forward` with chunks of 1..k1 steps and, in training mode,
        :meth:`stream_backward` after each chunk: its gradient is that of the chunk's loss w.r.t.
        the weights through the window of the last k2 steps (``[e - k2 + 1, e]``, ``e`` = the
        chunk's last step), the state entering the window held constant: Williams & Peng's
        TBPTT(k1, k2), the semantics of ``functional.tbptt_grads``.

        Implementation: one ``functional.TBPTTStream`` per layer (the C++ core keeps the
        activations of the last k2 steps; memory independent of the stream length). Every step
        runs forward once: the k2 - k1 history steps of a window keep the activations computed
        when they were run, with the weights of that time; the backward uses the current weights
        (for k1 == k2 there is no history: exactly the classic detach-every-k-steps loop). The
        layer above's dL/dx over the window is the dL/dy of the layer below; inter-layer dropout
        masks are kept for the window, so a step's mask is the same in its forward and in every
        backward that reaches it. The weights are read from the module at every
        :meth:`stream_forward` (an optimizer step in between is seen by the next chunk and its
        backward).

        Args:
            batch_size: sequences B. k1: steps per chunk (at most). k2 >= k1: window length.
            hx: initial state as for forward ((L, B, H); LSTM (h0, c0)); None = zeros.
            lengths: optional (B,) absolute valid lengths of ragged streams: outputs are zero and
                dL/dy is ignored at steps >= lengths[b]; the input there is taken as zero (the row's
                state keeps running over the padding, which no valid step depends on).
            total_steps: accepted for compatibility (unused: windows never depend on the next
                chunk).
            replayable: keep the inputs, entering states and weights of the chunks in the window so
                that :meth:`stream_export` / :meth:`stream_import` can rebuild the C++ history
                exactly (checkpoints); False saves that memory and makes :meth:`stream_export`
                raise.

        Bidirectional stacks cannot stream (ValueError).
        """
        if self.bidirectional:
            raise ValueError(
                "stream_begin: truncated BPTT streams forward in time; a bidirectional "
                "module's backward direction needs the whole sequence (use bptt=None)"
            )
        batch = _check_int("batch_size", batch_size, 1)
        k1 = _check_int("k1", k1, 1)
        k2 = _check_int("k2", k2, 1)
        if k2 < k1:
            raise ValueError(f"k2: expected k2 >= k1 = {k1}, got {k2}")
        if total_steps is not None:
            _check_int("total_steps", total_steps, 1)
        states = [
            s if s is not None else self._zero_state(batch) for s in self._split_hx(hx, batch)
        ]
        lens = None
        if lengths is not None:
            arr = np.asarray(lengths)
            if arr.dtype.kind not in "iu":
                raise TypeError(
                    f"lengths: expected an integer array of shape ({batch},), got dtype {arr.dtype}"
                )
            if arr.shape != (batch,):
                raise ValueError(f"lengths: expected shape ({batch},), got {arr.shape}")
            if arr.size and arr.min() < 0:
                raise ValueError(f"lengths: expected lengths >= 0, got min {arr.min()}")
            lens = arr.astype(np.int64)
            empty = lens == 0
            if empty.any():  # a sequence of length 0: its state reaches no output, and a non-finite
                # one would run over its padding into the stored activations (0 * NaN in dW)
                states = [_zero_nonfinite_rows(s, empty) for s in states]  # type: ignore[misc]
        self._cache = None
        self._stream = _Stream(batch, k1, k2, lens, bool(replayable))
        self._stream_layers(self._stream, states, 0)  # type: ignore[arg-type]

    def _stream_layers(self, st: _Stream, states: list[State], origin: int) -> None:
        """(Re)create the per-layer C++ streams from ``states``; global step ``origin`` = position 0
        (no history before it)."""
        cls = _tbptt_stream_class()
        st.layers = []
        for layer in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self._weights(layer, 0)
            st.layers.append(
                cls(
                    self._cell,
                    {"w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh},
                    states[layer],
                    st.k1,
                    st.k2,
                    nonlinearity=self.nonlinearity,
                )
            )
        st.origin = origin
        st.chunks = []
        st.pending_reset = None
        st.ready = False

    def _require_stream(self, name: str) -> _Stream:
        if self._stream is None:
            raise ValueError(f"{name}: no stream; call stream_begin first")
        return self._stream

    def _stream_run(
        self,
        st: _Stream,
        x: Array,
        masks: list[Array | None],
        params: list[list[Array | None]],
    ) -> Array:
        """One chunk through every layer's C++ stream: x (n, B, I) -> top output (n, B, H)."""
        inp = x
        for layer, s in enumerate(st.layers):
            w_ih, w_hh, b_ih, b_hh = params[layer]
            s.set_params({"w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh})
            if masks[layer] is not None:
                inp = inp * masks[layer]
            inp = s.forward(inp)
        return inp

    def stream_forward(self, x_chunk: Any, next_len: int | None = None) -> Array:
        """Forward the next chunk (n, B, input_size), 1 <= n <= k1 (time-major even with
        batch_first); returns the top layer's outputs (n, B, H).

        Runs each layer's C++ stream once over the chunk with the module's current weights (and, in
        training mode, fresh inter-layer dropout masks). In training mode the window of the last k2
        steps can then be backpropagated once with :meth:`stream_backward`. In eval mode the chunk
        only advances the carried state (no dropout; no backward). ``next_len`` is accepted for
        compatibility and ignored. A stream belongs to one thread at a time (RuntimeError otherwise,
        see :meth:`forward`).
        """
        g = self._guard
        g.enter(self, "stream_forward")  # the stream's state is shared even in eval mode
        try:
            st = self._stream
            g.check_forward(self, "stream_forward", st is not None and st.ready)
            y = self._stream_forward(x_chunk)
            if self.training:
                g.owner = threading.current_thread()
            return y
        finally:
            g.exit()

    def _stream_forward(self, x_chunk: Any) -> Array:
        st = self._require_stream("stream_forward")
        xa = _as_float("x_chunk", x_chunk, self.dtype)
        if xa.ndim != 3 or xa.shape[1] != st.batch or xa.shape[2] != self.input_size:
            raise ValueError(
                f"x_chunk: expected shape (n, {st.batch}, {self.input_size}), got {xa.shape}"
            )
        n = xa.shape[0]
        if not 1 <= n <= st.k1:
            raise ValueError(
                f"x_chunk: expected 1 <= n <= k1 = {st.k1} time steps, got shape {xa.shape}"
            )
        start = st.pos
        valid = None
        if st.lengths is not None:
            valid = (start + np.arange(n))[:, None] < st.lengths[None, :]  # (n, B)
            if valid.all():
                valid = None
            else:  # padding: zero input (NaN padding must not reach the stored activations)
                xa = np.where(valid[:, :, None], xa, 0).astype(self.dtype)
        # chunks that end before the window this forward opens are no longer needed
        lo = start + n - st.k2
        while st.chunks and st.chunks[0].start + st.chunks[0].n <= lo:
            st.chunks.pop(0)
        chunk = _Chunk(start, n)
        chunk.resets, st.pending_reset = st.pending_reset, None
        masks: list[Array | None] = [None] * self.num_layers
        if self.training and self.dropout > 0.0:
            for layer in range(1, self.num_layers):  # inverted dropout, as in forward
                keep = self.rng.random((n, st.batch, self.hidden_size)) >= self.dropout
                masks[layer] = (keep / (1.0 - self.dropout)).astype(self.dtype)
        chunk.masks = masks
        if st.replayable:
            params = [
                [None if w is None else w.copy() for w in self._weights(layer, 0)]
                for layer in range(self.num_layers)
            ]
            chunk.x = xa.copy()
            chunk.states = [s.state for s in st.layers]
            chunk.params = params
        else:
            params = [self._weights(layer, 0) for layer in range(self.num_layers)]
        y = self._stream_run(st, xa, masks, params)
        st.chunks.append(chunk)
        st.ready = self.training
        self._cache = None
        if valid is not None:
            y = np.where(valid[:, :, None], y, 0).astype(self.dtype)  # not y * 0: NaN * 0 = NaN
        return y

    def stream_backward(self, dy_chunk: Any, need_dx: bool = True) -> Array | None:
        """Backward for the last chunk: dy_chunk (n, B, H) = dL/dy of the chunk's outputs.

        Backpropagates through the window of the last min(k2, steps) steps (stored activations,
        current weights), layer by layer from the top, and accumulates the weight gradients into
        :attr:`grads`. Returns dL/dx over the whole window (W, B, input_size) (None when
        ``need_dx`` is False). :attr:`grad_hx` is dL/d(initial state) when the window reaches back
        to the stream start, else None; :attr:`last_state_grads` is not filled by streams ([]).
        """
        g = self._guard
        g.enter(self, "stream_backward")
        try:
            st = self._stream
            g.check_backward(self, "stream_backward", st is not None and st.ready)
            return self._stream_backward(dy_chunk, need_dx)
        finally:
            g.exit()

    def _stream_backward(self, dy_chunk: Any, need_dx: bool) -> Array | None:
        st = self._require_stream("stream_backward")
        if not st.ready:
            raise ValueError(_NO_CACHE_MSG)
        dya = _as_float("dy_chunk", dy_chunk, self.dtype)
        win = st.window
        n = dya.shape[0] if dya.ndim == 3 else -1
        if dya.ndim != 3 or dya.shape[1:] != (st.batch, self.hidden_size) or not 1 <= n <= win:
            raise ValueError(
                f"dy_chunk: expected shape (n, {st.batch}, {self.hidden_size}) with n the "
                f"chunk length, got {dya.shape}"
            )
        st.ready = False
        dyw = np.zeros((win, st.batch, self.hidden_size), dtype=self.dtype)
        dyw[win - n :] = dya
        if st.lengths is not None:  # dL/dy at padded steps is ignored (packed-sequence semantics)
            steps = st.pos - n + np.arange(n)
            keep = (steps[:, None] < st.lengths[None, :])[:, :, None]
            dyw[win - n :] = np.where(keep, dyw[win - n :], 0)  # selected, not * 0 (NaN * 0 = NaN)
        dx: Array | None = None
        dstate0: list[Any] = [None] * self.num_layers
        for layer in reversed(range(self.num_layers)):
            want = layer > 0 or bool(need_dx)
            g = st.layers[layer].backward(dyw, need_dx=want)
            sfx = self._suffix(layer, 0)
            self.grads[f"weight_ih{sfx}"] += g["w_ih"]
            self.grads[f"weight_hh{sfx}"] += g["w_hh"]
            if self.bias:
                self.grads[f"bias_ih{sfx}"] += g["b_ih"]
                self.grads[f"bias_hh{sfx}"] += g["b_hh"]
            dstate0[layer] = g["state0"]
            dx = g["x"]
            if layer > 0:
                mask = st.window_masks(layer)
                dyw = dx if mask is None else dx * mask  # d(inp * mask)/d inp = mask
        self.last_state_grads = []
        self._grad_hx_list = dstate0
        self.grad_hx = (
            None if any(s is None for s in dstate0) else self._join_states(dstate0)  # type: ignore[arg-type]
        )
        return dx

    @property
    def stream_state(self) -> State | None:
        """The carried state of the current stream ((L, B, H); LSTM (h, c)); None without one."""
        if self._stream is None:
            return None
        return self._join_states([s.state for s in self._stream.layers])

    def _rows_mask(self, rows: Any, batch: int) -> Array:
        if rows is None:
            return np.ones(batch, dtype=bool)
        arr = np.asarray(rows)
        if arr.dtype == np.bool_:
            if arr.shape != (batch,):
                raise ValueError(f"rows: expected a bool mask of shape ({batch},), got {arr.shape}")
            return arr.copy()
        if arr.dtype.kind not in "iu":
            raise TypeError(f"rows: expected integer indices or a bool mask, got dtype {arr.dtype}")
        idx = arr.reshape(-1).astype(np.int64)
        if idx.size and (idx.min() < -batch or idx.max() >= batch):
            raise ValueError(
                f"rows: expected indices in [-{batch}, {batch}), got min {idx.min()}, "
                f"max {idx.max()}"
            )
        mask = np.zeros(batch, dtype=bool)
        mask[idx] = True
        return mask

    def stream_reset(self, rows: Any = None, drop_history: bool = False) -> None:
        """Zero the carried state of some sequences (a new sequence starts in those batch rows).

        Args:
            rows: integer indices or a (B,) bool mask; None = all rows.
            drop_history: False (default): per-row reset (``TBPTTStream.reset_state``): later
                windows treat the zero state as a constant, so no gradient of a reset row reaches
                back past the reset, while the other rows keep their k2-step history. True: also
                forget the history of every row (the next windows start at the reset); fit uses it
                after non-finite values, whose stored activations must not enter a later window.
        """
        st = self._require_stream("stream_reset")
        mask = self._rows_mask(rows, st.batch)
        st.ready = False
        self._cache = None
        if drop_history:
            states = []
            for s in st.layers:
                v = s.state
                parts = v if isinstance(v, tuple) else (v,)
                for p in parts:
                    p[mask] = 0
                states.append(v)
            self._stream_layers(st, states, st.pos)
            return
        for s in st.layers:
            s.reset_state(mask)
        st.pending_reset = mask if st.pending_reset is None else (st.pending_reset | mask)

    def stream_export(self) -> dict[str, Any]:
        """The stream as ints and arrays (for checkpoints); inverse of :meth:`stream_import`.

        Holds the carried state and, for every chunk still inside a possible backward window, its
        input, dropout masks, resets and weights, plus the state entering the first one: enough for
        :meth:`stream_import` to rebuild the C++ activations by running those chunks again with the
        weights they had (bit for bit: training resumes exactly). Flat keys: "batch", "k1", "k2",
        "pos", "origin", "n_chunks", "state" (LSTM (h, c)), "c{i}_start", "c{i}_x", "c{i}_mask{l}",
        "c{i}_reset", "c{i}_p{l}_{w_ih,w_hh,b_ih,b_hh}", "c0_state{l}" (LSTM: (h, c)), "lengths",
        "pending_reset".
        """
        st = self._require_stream("stream_export")
        if not st.replayable:
            raise ValueError(
                "stream_export: the stream was begun with replayable=False (no stored history to "
                "rebuild it from); use stream_begin(..., replayable=True)"
            )
        out: dict[str, Any] = {
            "format": 2,
            "batch": st.batch,
            "k1": st.k1,
            "k2": st.k2,
            "pos": st.pos,
            "origin": st.origin,
            "n_chunks": len(st.chunks),
            "state": self.stream_state,
        }
        if st.lengths is not None:
            out["lengths"] = st.lengths.copy()
        if st.pending_reset is not None:
            out["pending_reset"] = st.pending_reset.astype(np.uint8)
        names = ("w_ih", "w_hh", "b_ih", "b_hh")
        for i, c in enumerate(st.chunks):
            assert c.x is not None and c.params is not None and c.states is not None
            out[f"c{i}_start"] = c.start
            out[f"c{i}_x"] = c.x
            if c.resets is not None:
                out[f"c{i}_reset"] = c.resets.astype(np.uint8)
            for layer in range(self.num_layers):
                if c.masks[layer] is not None:
                    out[f"c{i}_mask{layer}"] = c.masks[layer]
                for nm, w in zip(names, c.params[layer]):
                    if w is not None:
                        out[f"c{i}_p{layer}_{nm}"] = w
                if i == 0:
                    out[f"c0_state{layer}"] = c.states[layer]
        return out

    def stream_import(self, d: Mapping[str, Any]) -> None:
        """Restore a stream saved by :meth:`stream_export`: begin a replayable stream at the state
        entering the first stored chunk and run the stored chunks again with their stored weights,
        masks and resets, which rebuilds the C++ history exactly. (A dict without "n_chunks", from
        an older rnnfast, restores the carried state only: the first windows then have no history.)
        """
        batch, k1, k2 = int(d["batch"]), int(d["k1"]), int(d["k2"])

        def unpack(v: Any) -> Any:  # LSTM (h, c) may come back stacked as one (2, ..., B, H) array
            return (v[0], v[1]) if self._cell == "lstm" and not isinstance(v, (tuple, list)) else v

        def arr(key: str) -> Array:
            return _as_float(key, d[key], self.dtype)

        lengths = d.get("lengths")
        n_chunks = int(d.get("n_chunks", 0))
        if "n_chunks" not in d or n_chunks == 0:
            self.stream_begin(batch, k1, k2, hx=unpack(d["state"]), lengths=lengths)
            st = self._require_stream("stream_import")
            st.origin = int(d["pos"])
        else:
            first = [unpack(d[f"c0_state{layer}"]) for layer in range(self.num_layers)]
            hx0 = (
                (np.stack([s[0] for s in first]), np.stack([s[1] for s in first]))
                if self._cell == "lstm"
                else np.stack(first)
            )
            self.stream_begin(batch, k1, k2, hx=hx0, lengths=lengths)
            st = self._require_stream("stream_import")
            st.origin = int(d["c0_start"])
            names = ("w_ih", "w_hh", "b_ih", "b_hh")
            for i in range(n_chunks):
                x = arr(f"c{i}_x")
                chunk = _Chunk(int(d[f"c{i}_start"]), x.shape[0])
                if chunk.start != st.pos:
                    raise ValueError(
                        f"stream_import: chunk {i} starts at step {chunk.start}, expected {st.pos}"
                    )
                if f"c{i}_reset" in d:
                    chunk.resets = np.asarray(d[f"c{i}_reset"]).astype(bool)
                    if i > 0:
                        for s in st.layers:
                            s.reset_state(chunk.resets)
                chunk.masks = [
                    arr(f"c{i}_mask{layer}") if f"c{i}_mask{layer}" in d else None
                    for layer in range(self.num_layers)
                ]
                chunk.params = [
                    [
                        arr(f"c{i}_p{layer}_{nm}") if f"c{i}_p{layer}_{nm}" in d else None
                        for nm in names
                    ]
                    for layer in range(self.num_layers)
                ]
                chunk.x = x
                chunk.states = [s.state for s in st.layers]
                self._stream_run(st, x, chunk.masks, chunk.params)
                st.chunks.append(chunk)
            if st.pos != int(d["pos"]):
                raise ValueError(
                    f"stream_import: the stored chunks end at step {st.pos}, "
                    f"expected {int(d['pos'])}"
                )
            saved = unpack(d["state"])
            now = self.stream_state
            for a, b in zip(
                saved if isinstance(saved, tuple) else (saved,),
                now if isinstance(now, tuple) else (now,),  # type: ignore[arg-type]
            ):
                a = np.asarray(a, dtype=self.dtype)
                if a.shape != b.shape or not np.allclose(a, b, rtol=1e-3, atol=1e-5):
                    raise ValueError(
                        "stream_import: replaying the stored chunks does not reproduce the saved "
                        "state (corrupt or mismatched checkpoint)"
                    )
        if "pending_reset" in d:
            mask = np.asarray(d["pending_reset"]).astype(bool)
            for s in st.layers:
                s.reset_state(mask)
            st.pending_reset = mask

    def stream_end(self) -> None:
        """Forget the stream (and any stored window)."""
        self._stream = None
        self._cache = None


class RNN(RNNBase):
    """Elman RNN stack, ``h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``, act = tanh or relu.

    ``RNN(input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, dtype=np.float32, seed=None, init="torch")``.

    Parameters (PyTorch names): weight_ih_l{k} (H, I or D*H), weight_hh_l{k} (H, H), bias_ih_l{k},
    bias_hh_l{k} (H,), and ``..._reverse`` for the backward direction. ``dropout`` (inverted, between
    layers, training only, drawn from :attr:`rng`). ``init``: "torch" (U(-1/sqrt(H), 1/sqrt(H))),
    "orthogonal" (orthogonal recurrent blocks, Xavier-uniform input weights, zero bias; LSTM forget
    bias 1), "identity" (IRNN: identity recurrence, N(0, 1e-3) input weights, zero bias -- use with
    nonlinearity="relu"). ``seed`` fixes the initial weights and the dropout RNG.
    """

    _cell = "rnn"


class LSTM(RNNBase):
    """LSTM stack (gates i, f, g, o): ``c_t = f*c_{t-1} + i*g``, ``h_t = o*tanh(c_t)``.

    Same arguments as :class:`RNN` without ``nonlinearity``. ``forward`` returns ``out, (h_n, c_n)``
    and takes ``hx=(h0, c0)``. Weight shapes (4H, I) and (4H, H).
    """

    _cell = "lstm"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        dtype: Any = np.float32,
        seed: int | None = None,
        init: str = "torch",
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            "tanh",
            bias,
            batch_first,
            dropout,
            bidirectional,
            dtype,
            seed,
            init,
        )


class GRU(RNNBase):
    """GRU stack (gates r, z, n): ``n = tanh(W_in x + b_in + r*(W_hn h + b_hn))``, ``h_t = (1-z)*n + z*h``.

    Same arguments as :class:`RNN` without ``nonlinearity``. Weight shapes (3H, I) and (3H, H).
    """

    _cell = "gru"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        dtype: Any = np.float32,
        seed: int | None = None,
        init: str = "torch",
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            "tanh",
            bias,
            batch_first,
            dropout,
            bidirectional,
            dtype,
            seed,
            init,
        )


# --------------------------------------------------------------------------------------------------
# Linear and Embedding
# --------------------------------------------------------------------------------------------------


class Linear(_FlatParams):
    """``y = x W^T + b`` over the last axis (any leading dims), like ``torch.nn.Linear``.

    weight (out_features, in_features), bias (out_features,); init U(-1/sqrt(in), 1/sqrt(in)) (PyTorch's
    default). ``backward(dy) -> dx`` accumulates into :attr:`grads` ("weight", "bias").
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype: Any = np.float32,
        seed: int | None = None,
    ) -> None:
        self.in_features = _check_int("in_features", in_features, 1)
        self.out_features = _check_int("out_features", out_features, 1)
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias: expected a bool, got {type(bias).__name__}")
        self.bias = bool(bias)
        self.dtype = _check_dtype(dtype)
        if seed is not None:
            seed = _check_int("seed", seed, 0)
        self.seed = seed
        _check_allocatable(
            "in_features, out_features",
            f"Linear({self.in_features}, {self.out_features})",
            self.out_features * (self.in_features + self.bias),
            self.dtype,
        )
        rng = np.random.default_rng(seed)
        k = 1.0 / math.sqrt(self.in_features)
        self._params: dict[str, Array] = OrderedDict()
        self._params["weight"] = rng.uniform(-k, k, (self.out_features, self.in_features)).astype(
            self.dtype
        )
        if self.bias:
            self._params["bias"] = rng.uniform(-k, k, self.out_features).astype(self.dtype)
        self.grads: dict[str, Array] = OrderedDict()
        self._flatten()
        self.training = True
        self._x: Array | None = None
        self._guard = _Guard()

    def parameters(self) -> dict[str, Array]:
        """Live parameter arrays ("weight", "bias")."""
        return self._params

    def train(self, mode: bool = True) -> Linear:
        """Training mode (forward stores its input for backward)."""
        self.training = bool(mode)
        return self

    def eval(self) -> Linear:
        """Inference mode (nothing stored)."""
        self._x = None
        return self.train(False)

    def state_dict(self) -> dict[str, Array]:
        """Copies of the parameters (PyTorch keys "weight", "bias")."""
        return OrderedDict((k, v.copy()) for k, v in self._params.items())

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True
    ) -> IncompatibleKeys:
        """Load parameters (strict by default; see RNNBase.load_state_dict)."""
        return _load_into(self._params, state_dict, strict)

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments."""
        return {
            "type": "Linear",
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias,
            "dtype": self.dtype.name,
            "seed": self.seed,
        }

    def __call__(self, x: Any) -> Array:
        return self.forward(x)

    def forward(self, x: Any) -> Array:
        """x (..., in_features) -> (..., out_features)."""
        return self._forward(x, private=False)

    def _forward(self, x: Any, private: bool) -> Array:
        """forward; ``private``: the caller guarantees that nobody else holds ``x`` (no copy)."""
        xa = _as_float("x", x, self.dtype)
        if xa.ndim < 1 or xa.shape[-1] != self.in_features:
            raise ValueError(f"x: expected shape (..., {self.in_features}), got {xa.shape}")
        if self.training:  # backward reads x (dW): keep it safe from in-place changes
            keep = xa if private else _private(xa, x)
            g = self._guard
            g.enter(self, "forward")
            try:
                g.check_forward(self, "forward", self._x is not None)
                self._x = keep
                g.owner = threading.current_thread()
            finally:
                g.exit()
        # One 2-D GEMM over all leading axes: NumPy runs a 3-D matmul as one small GEMM per
        # leading index (measured 1.3x slower with one BLAS thread, ~5x with several).
        lead = xa.shape[:-1]
        y = (xa.reshape(-1, self.in_features) @ self._params["weight"].T).reshape(
            *lead, self.out_features
        )
        if self.bias:
            y += self._params["bias"]
        return y

    def backward(self, grad_output: Any) -> Array:
        """dL/dy (..., out_features) -> dL/dx (..., in_features); accumulates weight/bias grads."""
        g = self._guard
        g.enter(self, "backward")
        try:
            g.check_backward(self, "backward", self._x is not None)
            return self._backward(grad_output)
        finally:
            g.exit()

    def _backward(self, grad_output: Any) -> Array:
        x = self._x
        if x is None:
            raise ValueError(_NO_CACHE_MSG)
        dy = _as_float("grad_output", grad_output, self.dtype)
        if dy.shape != x.shape[:-1] + (self.out_features,):
            raise ValueError(
                f"grad_output: expected shape {x.shape[:-1] + (self.out_features,)}, got {dy.shape}"
            )
        self._x = None
        dy2 = dy.reshape(-1, self.out_features)
        x2 = x.reshape(-1, self.in_features)
        self.grads["weight"] += dy2.T @ x2  # dL/dW = sum over rows dy^T x
        if self.bias:
            self.grads["bias"] += dy2.sum(axis=0)  # dL/db = sum over rows dy
        return (dy2 @ self._params["weight"]).reshape(x.shape)  # dL/dx = dy W

    def __repr__(self) -> str:
        return f"Linear(in_features={self.in_features}, out_features={self.out_features}, bias={self.bias})"

    def __getstate__(self) -> dict[str, Any]:
        """``copy.deepcopy`` / ``pickle`` state (not the input kept for a pending backward)."""
        return _getstate(self, Linear, ("_x",))

    def __setstate__(self, d: dict[str, Any]) -> None:
        _setstate(self, Linear, d)


class Embedding(_FlatParams):
    """Lookup table ``weight[ids]`` (``torch.nn.Embedding``): weight (num_embeddings, embedding_dim), N(0, 1) init.

    ``forward(ids)``: integer array of any shape -> (*ids.shape, embedding_dim). ``backward(dy)``
    scatters dy into grads["weight"] (returns None: integer inputs have no gradient).
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        dtype: Any = np.float32,
        seed: int | None = None,
    ) -> None:
        self.num_embeddings = _check_int("num_embeddings", num_embeddings, 1)
        self.embedding_dim = _check_int("embedding_dim", embedding_dim, 1)
        self.dtype = _check_dtype(dtype)
        if seed is not None:
            seed = _check_int("seed", seed, 0)
        self.seed = seed
        _check_allocatable(
            "num_embeddings, embedding_dim",
            f"Embedding({self.num_embeddings}, {self.embedding_dim})",
            self.num_embeddings * self.embedding_dim,
            self.dtype,
        )
        rng = np.random.default_rng(seed)
        self._params: dict[str, Array] = OrderedDict(
            weight=rng.standard_normal((self.num_embeddings, self.embedding_dim)).astype(self.dtype)
        )
        self.grads: dict[str, Array] = OrderedDict()
        self._flatten()
        self.training = True
        self._ids: Array | None = None
        self._guard = _Guard()

    def parameters(self) -> dict[str, Array]:
        """Live parameter arrays ("weight")."""
        return self._params

    def train(self, mode: bool = True) -> Embedding:
        """Training mode (forward remembers the ids for backward)."""
        self.training = bool(mode)
        return self

    def eval(self) -> Embedding:
        """Inference mode."""
        self._ids = None
        return self.train(False)

    def state_dict(self) -> dict[str, Array]:
        """Copy of the table ("weight")."""
        return OrderedDict(weight=self._params["weight"].copy())

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True
    ) -> IncompatibleKeys:
        """Load the table (strict by default)."""
        return _load_into(self._params, state_dict, strict)

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments."""
        return {
            "type": "Embedding",
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "dtype": self.dtype.name,
            "seed": self.seed,
        }

    def _check_ids(self, ids: Any) -> Array:
        arr = np.asarray(ids)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"ids: expected an integer array of token ids, got dtype {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() >= self.num_embeddings):
            raise ValueError(
                f"ids: expected values in [0, {self.num_embeddings}), got min {arr.min()}, "
                f"max {arr.max()}"
            )
        return arr.astype(np.int64)

    def __call__(self, ids: Any) -> Array:
        return self.forward(ids)

    def forward(self, ids: Any) -> Array:
        """ids (...) int -> (..., embedding_dim)."""
        arr = self._check_ids(ids)  # a copy: in-place changes of ids cannot reach backward
        if self.training:
            g = self._guard
            g.enter(self, "forward")
            try:
                g.check_forward(self, "forward", self._ids is not None)
                self._ids = arr
                g.owner = threading.current_thread()
            finally:
                g.exit()
        return self._params["weight"][arr]

    def backward(self, grad_output: Any) -> None:
        """Scatter-add dL/d(output) into grads["weight"]."""
        g = self._guard
        g.enter(self, "backward")
        try:
            g.check_backward(self, "backward", self._ids is not None)
            ids = self._ids
            if ids is None:
                raise ValueError(_NO_CACHE_MSG)
            self._ids = None
            self.backward_ids(ids, grad_output)
        finally:
            g.exit()

    def backward_ids(self, ids: Array, grad_output: Any) -> None:
        """Scatter-add ``grad_output`` (*ids.shape, dim) at rows ``ids`` (used by streaming)."""
        dy = _as_float("grad_output", grad_output, self.dtype)
        if dy.shape != ids.shape + (self.embedding_dim,):
            raise ValueError(
                f"grad_output: expected shape {ids.shape + (self.embedding_dim,)}, got {dy.shape}"
            )
        from ._loader import core

        # np.add.at(grads["weight"], ids, dy) in one compiled pass (same order, same sums)
        core.embedding_backward(
            self.grads["weight"],
            np.ascontiguousarray(ids.reshape(-1), dtype=np.int64),
            np.ascontiguousarray(dy.reshape(-1, self.embedding_dim)),
        )

    def __repr__(self) -> str:
        return f"Embedding({self.num_embeddings}, {self.embedding_dim})"

    def __getstate__(self) -> dict[str, Any]:
        """``copy.deepcopy`` / ``pickle`` state (not the ids kept for a pending backward)."""
        return _getstate(self, Embedding, ("_ids",))

    def __setstate__(self, d: dict[str, Any]) -> None:
        _setstate(self, Embedding, d)


# --------------------------------------------------------------------------------------------------
# sequence model
# --------------------------------------------------------------------------------------------------


class SequenceModel:
    """A recurrent stack plus a head (and optional token embedding) for the four sequence shapes.

    ``SequenceModel(rnn, head, mode="many_to_many", embedding=None)``

    * ``many_to_many``: x (T, B, I) (token ids (T, B) with an embedding) -> pred (T, B, O);
      batch-major (B, T, ...) when ``rnn.batch_first``.
    * ``many_to_one``: -> pred (B, O), the head applied to the top layer's final state, i.e. the output
      at the last *valid* step of each (ragged) sequence; bidirectional: [forward final, backward final].
    * ``one_to_many``: trained like many_to_many (teacher forcing); :meth:`generate` feeds each output
      back as the next input.
    * ``one_to_one``: x (B, I) (ids (B,)) -> pred (B, O): one recurrent step from the zero state.

    Parameter names are prefixed: "rnn.weight_ih_l0", "head.weight", "embedding.weight".
    """

    def __init__(
        self,
        rnn: RNNBase,
        head: Linear,
        mode: str = "many_to_many",
        embedding: Embedding | None = None,
    ) -> None:
        if not isinstance(rnn, RNNBase):
            raise TypeError(f"rnn: expected an rnnfast RNN, LSTM or GRU, got {type(rnn).__name__}")
        if not isinstance(head, Linear):
            raise TypeError(f"head: expected an rnnfast Linear, got {type(head).__name__}")
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        if embedding is not None and not isinstance(embedding, Embedding):
            raise TypeError(
                f"embedding: expected an rnnfast Embedding or None, got {type(embedding).__name__}"
            )
        if head.in_features != rnn.output_size:
            raise ValueError(
                f"head: expected in_features = rnn output size {rnn.output_size}, got "
                f"{head.in_features}"
            )
        if embedding is not None and embedding.embedding_dim != rnn.input_size:
            raise ValueError(
                f"embedding: expected embedding_dim = rnn input_size {rnn.input_size}, got "
                f"{embedding.embedding_dim}"
            )
        for name, m in (("head", head), ("embedding", embedding)):
            if m is not None and m.dtype != rnn.dtype:
                raise TypeError(f"{name}: expected dtype {rnn.dtype} (the rnn's), got {m.dtype}")
        self.rnn = rnn
        self.head = head
        self.mode = mode
        self.embedding = embedding
        self.dtype = rnn.dtype
        self.training = rnn.training
        #: final state of the last forward pass (as the rnn returns it).
        self.last_hidden: State | None = None
        self._fwd: dict[str, Any] | None = None
        self._stream_ids: Array | None = None
        self._guard = _Guard()
        self._join_buffers()

    def _join_buffers(self) -> None:
        """Gather the parts' parameters and gradients into one flat buffer each (in the order of
        :meth:`parameters`): each part's buffers become slices of the model's, its arrays views
        of them. Build optimizers over the parts after this (their arrays move here)."""
        parts = [m for _, m in self._children()]
        n = sum(m._flat_params.size for m in parts)
        fp, fg = np.empty(n, self.dtype), np.zeros(n, self.dtype)
        off = 0
        for m in parts:
            k = m._flat_params.size
            m._rehome(fp[off : off + k], fg[off : off + k])
            off += k
        self._flat_params, self._flat_grads = fp, fg

    @property
    def flat_parameters(self) -> Array:
        """All parameters as one 1-D array (a view: writing it writes the parameters), in the
        order of :meth:`parameters`."""
        return self._flat_params

    @property
    def flat_grads(self) -> Array:
        """All gradients as one 1-D array (a view of the :attr:`grads` arrays), in the order of
        :meth:`parameters`; ``optimizer.step(model.flat_grads)`` is one fused update."""
        return self._flat_grads

    # --- housekeeping ------------------------------------------------------------------------------
    def _children(self) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        if self.embedding is not None:
            out.append(("embedding", self.embedding))
        out += [("rnn", self.rnn), ("head", self.head)]
        return out

    def parameters(self) -> dict[str, Array]:
        """Live parameter arrays, prefixed "embedding.", "rnn.", "head." (optimizers update in place)."""
        return OrderedDict(
            (f"{p}.{k}", v) for p, m in self._children() for k, v in m.parameters().items()
        )

    @property
    def grads(self) -> dict[str, Array]:
        """The live gradient arrays, keys as :meth:`parameters`."""
        return OrderedDict((f"{p}.{k}", v) for p, m in self._children() for k, v in m.grads.items())

    def zero_grad(self) -> None:
        """Zero every gradient (one call over the flat buffer)."""
        self._flat_grads.fill(0)

    def train(self, mode: bool = True) -> SequenceModel:
        """Training mode for every part."""
        self.training = bool(mode)
        for _, m in self._children():
            m.train(mode)
        if not mode:
            self._fwd = None
        return self

    def eval(self) -> SequenceModel:
        """Inference mode for every part (nothing stored; backward raises)."""
        return self.train(False)

    def state_dict(self) -> dict[str, Array]:
        """Copies of all parameters with prefixed names."""
        return OrderedDict(
            (f"{p}.{k}", v) for p, m in self._children() for k, v in m.state_dict().items()
        )

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True
    ) -> IncompatibleKeys:
        """Load all parameters (prefixed names; strict by default: missing/extra/misshaped -> ValueError)."""
        return _load_into(self.parameters(), state_dict, strict)

    def config(self) -> dict[str, Any]:
        """JSON-able description (rebuild with :func:`model_from_config`)."""
        return {
            "type": "SequenceModel",
            "mode": self.mode,
            "rnn": self.rnn.config(),
            "head": self.head.config(),
            "embedding": None if self.embedding is None else self.embedding.config(),
        }

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Any:
        """Rebuild from :meth:`config` (used by ``rnnfast.io.Checkpoint.build_model``)."""
        return model_from_config(cfg)

    def __repr__(self) -> str:
        return (
            f"SequenceModel(mode={self.mode!r}, rnn={self.rnn!r}, head={self.head!r}, "
            f"embedding={self.embedding!r})"
        )

    def __getstate__(self) -> dict[str, Any]:
        """``copy.deepcopy`` / ``pickle`` state: the parts (see RNNBase.__getstate__), mode, last
        hidden state and a replayable stream's window ids; not a pending forward pass."""
        return _getstate(self, SequenceModel, ("_fwd",))

    def __setstate__(self, d: dict[str, Any]) -> None:
        _setstate(self, SequenceModel, d)

    @property
    def num_parameters(self) -> int:
        """Total number of scalar parameters."""
        return int(sum(v.size for v in self.parameters().values()))

    # --- forward / backward -------------------------------------------------------------------------
    def _embed(self, x: Any) -> Array:
        if self.embedding is None:
            return x
        return self.embedding.forward(x)

    def __call__(self, x: Any, lengths: Any = None, hx: Any = None) -> Array:
        return self.forward(x, lengths, hx)

    def forward(self, x: Any, lengths: Any = None, hx: Any = None) -> Array:
        """Predictions for a batch; shapes per mode (see the class docstring)."""
        if not self.training:  # inference stores nothing: shareable between threads
            return self._forward(x, lengths, hx)
        g = self._guard
        g.enter(self, "forward")
        try:
            g.check_forward(self, "forward", self._fwd is not None)
            pred = self._forward(x, lengths, hx)
            g.owner = threading.current_thread()
            return pred
        finally:
            g.exit()

    def _forward(self, x: Any, lengths: Any, hx: Any) -> Array:
        rnn = self.rnn
        # arrays made here (embeddings, the rnn's outputs) are private: no defensive copies
        own = self.embedding is not None
        if self.mode == "one_to_one":
            if lengths is not None:
                raise ValueError(
                    "lengths: not used in one_to_one mode (a single step), got an array"
                )
            xa = np.asarray(x)
            need = 1 if self.embedding is not None else 2
            if xa.ndim != need:
                raise ValueError(
                    f"x: expected shape {'(B,)' if need == 1 else '(B, I)'} in one_to_one mode, "
                    f"got {xa.shape}"
                )
            e = self._embed(xa)
            e = e[:, None] if rnn.batch_first else e[None]
            out, h_n = rnn._forward(e, hx, None, private=own)
            feat = out[:, 0] if rnn.batch_first else out[0]
            self.last_hidden = h_n
            self._fwd = {"mode": "one_to_one", "shape": out.shape} if self.training else None
            return self.head._forward(feat, private=True)
        e = self._embed(x)
        out, h_n = rnn._forward(e, hx, lengths, private=own)
        self.last_hidden = h_n
        if self.mode == "many_to_one":
            h = h_n[0] if isinstance(h_n, tuple) else h_n
            top = h[-rnn.num_directions :]  # (D, B, H): final states of the top layer
            feat = top[0] if rnn.num_directions == 1 else np.concatenate([top[0], top[1]], axis=1)
            self._fwd = {"mode": "many_to_one", "batch": feat.shape[0]} if self.training else None
            return self.head._forward(feat, private=False)  # a view of last_hidden (public)
        self._fwd = {"mode": "seq"} if self.training else None
        return self.head._forward(out, private=True)

    def backward(self, grad_output: Any) -> Array | None:
        """dL/dpred -> dL/dx (None for token inputs); accumulates every part's gradients."""
        g = self._guard
        g.enter(self, "backward")
        try:
            g.check_backward(self, "backward", self._fwd is not None)
            return self._backward(grad_output)
        finally:
            g.exit()

    def _backward(self, grad_output: Any) -> Array | None:
        f = self._fwd
        if f is None:
            raise ValueError(_NO_CACHE_MSG)
        self._fwd = None
        rnn = self.rnn
        dfeat = self.head.backward(grad_output)
        if f["mode"] == "one_to_one":
            dout = dfeat[:, None] if rnn.batch_first else dfeat[None]
            dx = rnn.backward(dout)
            dx = dx[:, 0] if rnn.batch_first else dx[0]
        elif f["mode"] == "many_to_one":
            L, D, H = rnn.num_layers, rnn.num_directions, rnn.hidden_size
            dh = np.zeros((L * D, f["batch"], H), dtype=self.dtype)
            for d in range(D):
                dh[(L - 1) * D + d] = dfeat[:, d * H : (d + 1) * H]
            gs: Any = (dh, None) if isinstance(rnn, LSTM) else dh
            dx = rnn.backward(None, gs)
        else:
            dx = rnn.backward(dfeat)
        if self.embedding is not None:
            self.embedding.backward(dx)
            return None
        return dx

    # --- streaming inference ------------------------------------------------------------------------
    def step(self, x_t: Any, state: Any = None) -> tuple[Array, State]:
        """One time step of streaming inference: the rnn's :meth:`RNNBase.step`, then the head.

        Args:
            x_t: (B, I) floats, or token ids (B,) with an embedding.
            state: the recurrent state, as ``hx`` of the rnn ((num_layers, B, H); LSTM (h, c));
                None = zeros.

        Returns:
            (pred (B, O), new state). Nothing is stored for backward and dropout is off, in any
            mode; equal to ``forward`` run one step at a time in eval mode (to rounding).
        """
        emb = self.embedding
        if emb is not None:
            ids = emb._check_ids(x_t)
            if ids.ndim != 1:
                raise ValueError(f"x_t: expected token ids (B,), got shape {ids.shape}")
            x_t = emb._params["weight"][ids]
        h, state = self.rnn.step(x_t, state)
        head = self.head._params
        pred = h @ head["weight"].T
        if self.head.bias:
            pred += head["bias"]
        return pred, state

    # --- generation ---------------------------------------------------------------------------------
    def generate(
        self,
        x0: Any,
        steps: int,
        *,
        temperature: float = 1.0,
        sample: bool = True,
        rng: np.random.Generator | None = None,
        hx: Any = None,
        feedback: str = "auto",
    ) -> Array:
        """Free-running generation (one-to-many): feed each output back as the next input.

        Args:
            x0: first input, (B, I) floats or token ids (B,) with an embedding.
            steps: number of outputs to produce.
            temperature, sample: for token outputs, sample from softmax(logits / temperature)
                (``sample=False``: argmax). ``rng``: a NumPy Generator (default: a fresh unseeded one).
            hx: initial recurrent state (e.g. ``last_hidden`` after a priming forward pass).
            feedback: "token" (feed the chosen id; needs an embedding), "onehot" (feed a one-hot
                vector of the chosen class; needs I == O), "value" (feed the prediction; needs I == O),
                "auto" = token with an embedding, else value.

        Returns: (steps, B) int64 token ids for token/onehot feedback, else (steps, B, O) values.
        The loop over generated steps is inherent (each input depends on the previous output); each
        step runs in the compiled core via ``rnn.step``.
        """
        steps = _check_int("steps", steps, 1)
        if feedback == "auto":
            feedback = "token" if self.embedding is not None else "value"
        if feedback not in ("token", "onehot", "value"):
            raise ValueError(
                f"feedback: expected 'auto', 'token', 'onehot' or 'value', got {feedback!r}"
            )
        O, I = self.head.out_features, self.rnn.input_size
        if feedback == "token" and self.embedding is None:
            raise ValueError("feedback: 'token' needs a model with an embedding")
        if feedback in ("onehot", "value") and (self.embedding is not None or O != I):
            raise ValueError(
                f"feedback: {feedback!r} needs output size == input size and no embedding, "
                f"got O={O}, I={I}"
            )
        if (
            isinstance(temperature, (bool, np.bool_))
            or not isinstance(temperature, (int, float, np.integer, np.floating))
            or not temperature > 0
        ):
            raise ValueError(f"temperature: expected a float > 0, got {temperature!r}")
        rng = rng if rng is not None else np.random.default_rng()
        cur: Any = np.asarray(x0)
        if self.embedding is not None:
            if cur.ndim != 1:
                raise ValueError(f"x0: expected token ids (B,), got shape {cur.shape}")
        elif cur.ndim != 2 or cur.shape[1] != I:
            raise ValueError(f"x0: expected shape (B, {I}), got {cur.shape}")
        batch = cur.shape[0]
        state = hx
        tokens = feedback in ("token", "onehot")
        out = (
            np.zeros((steps, batch), dtype=np.int64)
            if tokens
            else np.zeros((steps, batch, O), self.dtype)
        )
        was = self.head.training
        self.head.train(False)
        try:
            for k in range(steps):
                inp = (
                    self.embedding._params["weight"][self.embedding._check_ids(cur)]
                    if self.embedding
                    else cur
                )
                h, state = self.rnn.step(inp, state)
                pred = self.head.forward(h)
                if not tokens:
                    out[k] = pred
                    cur = pred
                    continue
                logits = pred.astype(np.float64)
                if sample:
                    # softmax(logits / temperature), the max subtracted *before* dividing: a tiny
                    # temperature sends the others to -inf (probability 0), never inf - inf = NaN,
                    # so it tends to greedy decoding (ties share the probability)
                    with np.errstate(over="ignore"):
                        z = (logits - logits.max(axis=1, keepdims=True)) / float(temperature)
                    p = np.exp(z)
                    p /= p.sum(axis=1, keepdims=True)
                    u = rng.random((batch, 1))
                    ids = np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), O - 1)
                else:
                    ids = np.argmax(logits, axis=1)
                out[k] = ids
                cur = ids if feedback == "token" else np.eye(O, dtype=self.dtype)[ids]
        finally:
            self.head.train(was)
        return out

    # --- inference on a data set --------------------------------------------------------------------
    def predict(self, x: Any, lengths: Any = None, *, batch_size: int | None = 256) -> Array:
        """Predictions for a whole data set in eval mode, ``batch_size`` sequences at a time.

        Args:
            x: inputs in the model's layout (class docstring): (T, N, I) / ids (T, N), batch-first
                (N, T, ...) when ``rnn.batch_first``; one_to_one (N, I) / (N,).
            lengths: optional int (N,) valid lengths of ragged sequences.
            batch_size: sequences per forward pass (None: all at once).

        Returns:
            pred with the batches joined back: many_to_one / one_to_one (N, O); many_to_many /
            one_to_many (T, N, O) ((N, T, O) batch-first). Dropout is off and nothing is stored for
            backward (eval mode); the model's train/eval mode is restored afterwards. ``last_hidden``
            holds the final state of the last batch only.
        """
        if batch_size is not None:
            batch_size = _check_int("batch_size", batch_size, 1)
        xa = np.asarray(x)
        seq = self.mode != "one_to_one"
        x_axis = 1 if (seq and not self.rnn.batch_first) else 0
        if xa.ndim <= x_axis:
            raise ValueError(f"x: expected a batch of inputs, got shape {xa.shape}")
        n = xa.shape[x_axis]
        lens = None if lengths is None else np.asarray(lengths)
        if lens is not None and lens.shape != (n,):
            raise ValueError(
                f"lengths: expected shape ({n},) (x's batch axis {x_axis}), got {lens.shape}"
            )
        step = n if batch_size is None else batch_size
        seq_out = self.mode in ("many_to_many", "one_to_many")
        out_axis = 1 if (seq_out and not self.rnn.batch_first) else 0
        was = self.training
        self.eval()
        try:
            parts = []
            for i in range(0, max(n, 1), max(step, 1)):
                sl = (slice(None),) * x_axis + (slice(i, i + step),)
                parts.append(self.forward(xa[sl], None if lens is None else lens[i : i + step]))
        finally:
            self.train(was)
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=out_axis)

    def forecast(self, x: Any, steps: int) -> Array:
        """Multi-step autoregressive forecast: each prediction becomes the next input.

        Args:
            x: the history, (T, B, I) floats ((B, T, I) batch-first); no embedding.
            steps: how many future steps to produce (>= 1).

        Returns:
            (steps, B, I) ((B, steps, I) batch-first), in eval mode (restored afterwards).

        * many_to_one (a model trained on :func:`rnnfast.data.windows`): the output (B, k * I)
          holds the next k steps (k = 1 for ``horizon=1``); the window slides by k each call and
          always has the last T steps, as in training.
        * many_to_many / one_to_many (trained to predict the next step at every step, O == I): one
          forward pass over the history, then :meth:`generate` from the final state, feeding each
          prediction back (``feedback="value"``).

        Errors compound: a forecast n steps ahead is no better than the model's one-step error
        allows; compare it with a persistence forecast (repeat the last value).
        """
        steps = _check_int("steps", steps, 1)
        if self.embedding is not None:
            raise ValueError("forecast: a model over token ids generates tokens; use generate()")
        if self.mode == "one_to_one":
            raise ValueError("forecast: needs a sequence model, got mode 'one_to_one'")
        xa = np.asarray(x)
        bf = self.rnn.batch_first
        I, O = self.rnn.input_size, self.head.out_features
        if xa.ndim != 3 or xa.shape[2] != I or xa.shape[1 if bf else 0] < 1:
            want = "(B, T, I)" if bf else "(T, B, I)"
            raise ValueError(f"x: expected a history {want} with I = {I}, got shape {xa.shape}")
        hist = np.swapaxes(xa, 0, 1) if bf else xa  # (T, B, I)
        t_len, batch = hist.shape[:2]
        was = self.training
        self.eval()
        try:
            if self.mode == "many_to_one":
                if O % I:
                    raise ValueError(
                        f"forecast: a many_to_one model forecasts k steps of I = {I} values per "
                        f"call, so its output size must be a multiple of {I}, got {O}"
                    )
                k = O // I
                outs: list[Array] = []
                made = 0
                while made < steps:  # one forward pass per k steps (each input depends on them)
                    window = np.ascontiguousarray(np.swapaxes(hist, 0, 1) if bf else hist)
                    nxt = self.forward(window).reshape(batch, k, I).swapaxes(0, 1)  # (k, B, I)
                    outs.append(nxt)
                    hist = np.concatenate([hist, nxt.astype(hist.dtype, copy=False)])[-t_len:]
                    made += k
                out = np.concatenate(outs)[:steps]
            else:
                if O != I:
                    raise ValueError(
                        f"forecast: feeding predictions back needs output size == input size, "
                        f"got O={O}, I={I}"
                    )
                pred = self.forward(xa)
                last = pred[:, -1] if bf else pred[-1]  # (B, O): the first forecast step
                out = last[None]
                if steps > 1:
                    rest = self.generate(last, steps - 1, hx=self.last_hidden, feedback="value")
                    out = np.concatenate([out, rest])
        finally:
            self.train(was)
        return np.ascontiguousarray(np.swapaxes(out, 0, 1)) if bf else out

    # --- truncated BPTT streaming -------------------------------------------------------------------
    def stream_begin(
        self,
        batch_size: int,
        k1: int,
        k2: int,
        hx: Any = None,
        lengths: Any = None,
        total_steps: int | None = None,
        *,
        replayable: bool = True,
    ) -> None:
        """Start a TBPTT(k1, k2) stream (many_to_many / one_to_many only); see RNNBase.stream_begin.

        A training loop over a long batch (time-major x (T, B, I), targets y)::

            model.stream_begin(B, k1, k2)
            for a in range(0, T, k1):
                pred = model.stream_forward(x[a : a + k1])      # (n, B, O), n <= k1
                value, dpred = loss(pred, y[a : a + k1])
                model.stream_backward(dpred)                    # grads of the last k2 steps' window
                optimizer.step(model.grads); model.zero_grad()  # the next chunk sees the new weights
            model.stream_end()
        """
        if self.mode not in ("many_to_many", "one_to_many"):
            raise ValueError(
                f"stream_begin: truncated BPTT needs a per-step output (many_to_many or "
                f"one_to_many), got mode {self.mode!r}"
            )
        self.rnn.stream_begin(batch_size, k1, k2, hx, lengths, total_steps, replayable=replayable)
        self._stream_ids = None

    def stream_forward(self, x_chunk: Any, next_len: int | None = None) -> Array:
        """Chunk (n, B, I) (ids (n, B)), time-major -> predictions (n, B, O); see RNNBase.stream_forward."""
        if self.embedding is not None:
            ids = self.embedding._check_ids(x_chunk)
            e = self.embedding._params["weight"][ids]
        else:
            ids = None
            e = x_chunk
        y = self.rnn.stream_forward(e)
        if ids is not None:  # the ids of the window, for the embedding's gradient
            st = self.rnn._stream
            assert st is not None
            prev = self._stream_ids if self._stream_ids is not None else ids[:0]
            allids = np.concatenate([prev, ids], axis=0)
            self._stream_ids = allids[allids.shape[0] - st.window :]
        return self.head._forward(y, private=True)

    def stream_backward(self, grad_chunk: Any) -> None:
        """Backward for the last chunk's predictions (n, B, O); accumulates gradients of the window."""
        dy = self.head.backward(grad_chunk)
        dxw = self.rnn.stream_backward(dy, need_dx=self.embedding is not None)
        if self.embedding is not None:
            assert self._stream_ids is not None and dxw is not None
            self.embedding.backward_ids(self._stream_ids[-dxw.shape[0] :], dxw)

    @property
    def stream_state(self) -> State | None:
        """Carried recurrent state of the current stream."""
        return self.rnn.stream_state

    def stream_reset(self, rows: Any = None, drop_history: bool = False) -> None:
        """Zero the carried state of ``rows`` (all when None); see RNNBase.stream_reset."""
        self.rnn.stream_reset(rows, drop_history)

    def stream_export(self) -> dict[str, Any]:
        """Stream state for checkpoints (RNNBase.stream_export plus the window's token ids)."""
        d = self.rnn.stream_export()
        if self._stream_ids is not None:
            d["ids"] = self._stream_ids.copy()
        return d

    def stream_import(self, d: Mapping[str, Any]) -> None:
        """Restore a stream saved by :meth:`stream_export`."""
        self.rnn.stream_import(d)
        self._stream_ids = (
            None if d.get("ids") is None else np.asarray(d["ids"], dtype=np.int64).copy()
        )

    def stream_end(self) -> None:
        """Forget the stream."""
        self.rnn.stream_end()
        self._stream_ids = None


# --------------------------------------------------------------------------------------------------
# construction helpers
# --------------------------------------------------------------------------------------------------

_CELL_CLASSES: dict[str, type[RNNBase]] = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


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
    """A :class:`SequenceModel`: ``cell`` ("rnn" | "lstm" | "gru") stack + Linear head (+ Embedding).

    With ``vocab_size`` the input is token ids and an Embedding(vocab_size, embedding_dim or
    input_size) feeds the stack (``input_size`` is then ignored in favour of ``embedding_dim`` when
    given). ``rnn_kwargs`` go to the stack (nonlinearity, bias, batch_first, dropout, bidirectional).
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


def _from_cfg(cfg: Mapping[str, Any]) -> Any:
    if not isinstance(cfg, Mapping) or "type" not in cfg:
        raise ValueError(f"cfg: expected a dict with a 'type' key, got {cfg!r}")
    kind = cfg["type"]
    args = {k: v for k, v in cfg.items() if k != "type"}
    if kind in ("RNN", "LSTM", "GRU"):
        return {"RNN": RNN, "LSTM": LSTM, "GRU": GRU}[kind](**args)
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
        f"cfg['type']: expected RNN, LSTM, GRU, Linear, Embedding or SequenceModel, got {kind!r}"
    )


def model_from_config(cfg: Mapping[str, Any]) -> Any:
    """Rebuild a model (SequenceModel, or a single module) from its ``config()`` dict.

    The weights are re-initialised from the config's seeds; load a state_dict for trained weights.
    """
    return _from_cfg(cfg)
