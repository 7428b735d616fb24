"""The :class:`Module` base of every layer, its flat parameter buffer and its thread guard."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np

from ._util import Array, IncompatibleKeys, _load_into

__all__ = ["Module"]

#: the module name in the class string that checkpoints record (``rnnfast.io.save``:
#: ``type(m).__module__:__qualname__``) and that pickle looks classes up by: the public classes
#: keep the one every rnnfast has written (``rnnfast.modules`` re-exports them), so files written
#: after the move to ``rnnfast.nn`` still load in older versions
_PUBLIC_MODULE = "rnnfast.modules"

# --------------------------------------------------------------------------------------------------
# the base of every layer
# --------------------------------------------------------------------------------------------------

_M = TypeVar("_M", bound="Module")


class Module:
    """The base of every rnnfast layer: what ``torch.nn.Module`` users expect of each of them.

    A module holds its parameters by PyTorch name (:meth:`parameters`, live arrays that optimizers
    update in place) and their gradients in :attr:`grads` (accumulated by ``backward`` until
    :meth:`zero_grad`), both as views of one flat buffer each (:attr:`flat_parameters`,
    :attr:`flat_grads`); ``training`` switches between training and inference (:meth:`train`,
    :meth:`eval`); :meth:`state_dict` / :meth:`load_state_dict` copy the parameters out and in;
    :meth:`config` gives the JSON-able constructor arguments that :meth:`from_config` (and
    :func:`rnnfast.nn.model_from_config`) rebuild the module from.
    """

    training: bool
    grads: dict[str, Array]
    _params: dict[str, Array]
    _flat_params: Array
    _flat_grads: Array
    #: attributes holding a stored forward pass (for backward): :meth:`eval` releases them
    _pending: tuple[str, ...] = ()

    def parameters(self) -> dict[str, Array]:
        """The live parameter arrays by PyTorch name (optimizers update them in place)."""
        return self._params

    def named_parameters(self) -> list[tuple[str, Array]]:
        """(name, array) pairs in PyTorch's order."""
        return list(self.parameters().items())

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

    def train(self: _M, mode: bool = True) -> _M:
        """Training mode (dropout on, forward stores what backward needs). Returns self."""
        self.training = bool(mode)
        return self

    def eval(self: _M) -> _M:
        """Inference mode: no dropout, nothing stored for backward (backward then raises). Returns
        self."""
        for name in self._pending:
            setattr(self, name, None)
        return self.train(False)

    def state_dict(self) -> dict[str, Array]:
        """Copies of the parameters, keys and shapes exactly as PyTorch's module of the same config."""
        return OrderedDict((k, v.copy()) for k, v in self.parameters().items())

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
        return _load_into(self.parameters(), state_dict, strict)

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments (``type`` names the class); see :meth:`from_config`."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Any:
        """Rebuild from :meth:`config` (used by ``rnnfast.io.Checkpoint.build_model``)."""
        from .config import model_from_config

        return model_from_config(cfg)


# --------------------------------------------------------------------------------------------------
# parameter storage: one flat buffer for the parameters and one for the gradients
# --------------------------------------------------------------------------------------------------


class _FlatParams(Module):
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
    from .rnn import RNNBase  # here: rnn imports this module

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
