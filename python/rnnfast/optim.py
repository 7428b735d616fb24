"""Optimizers, gradient clipping and learning-rate schedulers (pure NumPy, PyTorch semantics).

Optimizers work on a dict of named parameter arrays that they update **in place**::

    opt = Adam(model.parameters(), lr=1e-3)     # dict name -> ndarray: the live arrays
    ...
    total_norm = clip_grad_norm_(grads, max_norm=1.0, stats=clip_stats)
    opt.step(grads)                             # dict name -> ndarray: same keys/shapes/dtypes
    sched.step()

* ``params``: ``Mapping[str, np.ndarray]`` of float32/float64, writeable arrays (or an object with a
  ``parameters()`` method returning one). The optimizer keeps references to these very arrays and
  modifies them in place, so the model sees the update without any copy back.
* ``step(grads)``: ``grads`` has a subset of the parameter names (a missing name or a ``None`` value
  means "no gradient", and that parameter is skipped, like a PyTorch parameter whose ``.grad`` is
  None); each gradient must have its parameter's shape and dtype. ``grads`` are never modified by
  ``step``.
* Update formulas are PyTorch's (``torch.optim`` 2.x, single-tensor path), written out in each
  class's docstring; on float64 they agree with torch to ~1e-16 relative (tested to 1e-12).
* ``lr`` is a plain attribute; schedulers change it. ``initial_lr`` is set by the first scheduler
  attached (like ``param_group["initial_lr"]``).
* ``state_dict()`` is a plain dict of NumPy arrays and JSON-able scalars (no pickle needed);
  ``load_state_dict(d)`` restores hyperparameters, ``lr`` and per-parameter state (arrays are copied
  and checked against the parameters' shapes and dtypes). Lists are accepted where tuples were saved
  (JSON).

Non-finite gradients are not checked here (they propagate into the parameters); the training loop
and ``clip_grad_norm_(..., error_if_nonfinite=True)`` are where that is detected.

Fused updates: the arithmetic runs in compiled kernels (``rnnfast._core``: ``sgd_update``,
``adam_update``, ``rmsprop_update``) that perform the formulas below operation by operation in the
parameters' dtype, so the results are bitwise those of the NumPy expressions in the docstrings
(tested in float32 and float64). When the parameters are views that tile one contiguous buffer, in
order (a model's ``parameters()``: every rnnfast module keeps its parameters, and its gradients, in
one flat buffer), the state arrays are views of flat buffers too and a step whose gradients cover
every parameter is ONE kernel call over the whole buffer; ``step`` also accepts that flat gradient
buffer itself (``model.flat_grads``). Any other dict of arrays is updated array by array.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._loader import core as _core

__all__ = [
    "Optimizer",
    "SGD",
    "Adam",
    "AdamW",
    "RMSprop",
    "clip_grad_norm_",
    "clip_grad_value_",
    "ClipStats",
    "LRScheduler",
    "StepLR",
    "ExponentialLR",
    "CosineAnnealingLR",
    "LinearLR",
    "SequentialLR",
    "LinearWarmup",
    "ReduceLROnPlateau",
]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _flat_view(arrays: list[np.ndarray]) -> np.ndarray | None:
    """The 1-D slice of one buffer that ``arrays`` tile, in order, or None.

    True for the parameters (or gradients) of an rnnfast model: C-contiguous views of one 1-D
    buffer, of one dtype, each starting where the previous one ends. The slice is a real view of
    that buffer, so writing it writes the arrays.
    """
    if not arrays:
        return None
    first = arrays[0]
    base = first.base
    if not isinstance(base, np.ndarray) or base.ndim != 1 or not base.flags.c_contiguous:
        return None
    dtype = first.dtype
    item = dtype.itemsize
    start = first.__array_interface__["data"][0]
    addr = start
    for a in arrays:
        if (
            a.base is not base
            or a.dtype != dtype
            or not a.flags.c_contiguous
            or a.__array_interface__["data"][0] != addr
        ):
            return None
        addr += a.size * item
    base_addr = base.__array_interface__["data"][0]
    if base.dtype != dtype or (start - base_addr) % item:
        return None
    off = (start - base_addr) // item
    n = (addr - start) // item
    if off + n > base.size:
        return None
    return base[off : off + n]


# --------------------------------------------------------------------------------------------------
# small validators
# --------------------------------------------------------------------------------------------------


def _real(
    name: str,
    value: Any,
    *,
    lo: float | None = None,
    lo_open: bool = False,
    hi: float | None = None,
    hi_open: bool = False,
    finite: bool = True,
) -> float:
    """Checks a real hyperparameter; ``finite=False`` admits +-inf (e.g. the inf-norm)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    v = float(value)
    if math.isnan(v):
        raise ValueError(f"{name}: expected a number, got nan")
    if finite and math.isinf(v):
        raise ValueError(f"{name}: expected a finite number, got {v}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ValueError(f"{name}: expected {'>' if lo_open else '>='} {lo}, got {v}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise ValueError(f"{name}: expected {'<' if hi_open else '<='} {hi}, got {v}")
    return v


def _int(name: str, value: Any, *, lo: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    v = int(value)
    if lo is not None and v < lo:
        raise ValueError(f"{name}: expected an int >= {lo}, got {v}")
    return v


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")
    return bool(value)


def _nonnegative(name: str, value: Any) -> float:
    return _real(name, value, lo=0.0)


def _betas(name: str, value: Any) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name}: expected a pair (beta1, beta2), got {value!r}")
    return (
        _real(f"{name}[0]", value[0], lo=0.0, hi=1.0, hi_open=True),
        _real(f"{name}[1]", value[1], lo=0.0, hi=1.0, hi_open=True),
    )


#: the check of each optimizer hyperparameter (besides ``lr``), by name: the optimizers share the
#: names with torch.optim and with each other, so ``weight_decay`` is checked the same way in all
_HYPERPARAM_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "momentum": _nonnegative,
    "dampening": _real,
    "weight_decay": _nonnegative,
    "eps": _nonnegative,
    "alpha": _nonnegative,
    "betas": _betas,
    "nesterov": _bool,
    "amsgrad": _bool,
    "centered": _bool,
    "maximize": _bool,
}


def _check_param_dict(params: Any) -> dict[str, np.ndarray]:
    if not isinstance(params, Mapping) and callable(getattr(params, "parameters", None)):
        params = params.parameters()
    if not isinstance(params, Mapping):
        raise TypeError(
            "params: expected a dict name -> ndarray (e.g. model.parameters()), "
            f"got {type(params).__name__}"
        )
    if len(params) == 0:
        raise ValueError("params: got an empty parameter dict")
    out: dict[str, np.ndarray] = {}
    for name, p in params.items():
        if not isinstance(name, str):
            raise TypeError(f"params: expected str keys, got {type(name).__name__} key {name!r}")
        if not isinstance(p, np.ndarray):
            raise TypeError(
                f"params[{name!r}]: expected an np.ndarray (updated in place), "
                f"got {type(p).__name__}"
            )
        if p.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"params[{name!r}]: expected dtype float32 or float64, got {p.dtype}")
        if not p.flags.writeable:
            raise ValueError(
                f"params[{name!r}]: array is read-only; the optimizer updates it in place"
            )
        out[name] = p
    return out


def _check_grads(
    grads: Any, params: Mapping[str, np.ndarray], name: str = "grads"
) -> dict[str, np.ndarray]:
    """Return the non-None gradients as arrays, checked against the parameters."""
    if not isinstance(grads, Mapping):
        raise TypeError(f"{name}: expected a dict name -> ndarray, got {type(grads).__name__}")
    out: dict[str, np.ndarray] = {}
    for key, g in grads.items():
        if key not in params:
            raise ValueError(
                f"{name}: unknown parameter {key!r} (known: {sorted(params)[:8]}"
                f"{' ...' if len(params) > 8 else ''})"
            )
        if g is None:
            continue
        p = params[key]
        g = np.asarray(g)
        if g.dtype != p.dtype:
            raise TypeError(
                f"{name}[{key!r}]: expected dtype {p.dtype} (the parameter's), got {g.dtype}"
            )
        if g.shape != p.shape:
            raise ValueError(f"{name}[{key!r}]: expected shape {p.shape}, got {g.shape}")
        out[key] = g
    return out


def _to_json_scalar(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, tuple):
        return [_to_json_scalar(x) for x in v]
    return v


# --------------------------------------------------------------------------------------------------
# optimizers
# --------------------------------------------------------------------------------------------------


class Optimizer:
    """Base class of the optimizers: holds ``params`` (name -> live array), ``lr`` and ``state``.

    Attributes:
        params: dict name -> ndarray, the arrays updated in place.
        lr: current learning rate (schedulers write it).
        initial_lr: learning rate when the first scheduler was attached (None before).
        state: dict name -> per-parameter state (dict of arrays and ints).
        step_count: number of ``step`` calls so far.

    A subclass lists its other hyperparameters in ``_hyperparam_names`` (each checked by
    ``_HYPERPARAM_CHECKS`` and kept as an attribute of that name), passes them to ``__init__`` as
    keywords, and implements ``_update``.
    """

    #: names of the per-parameter state arrays, in a fixed order
    _state_arrays: tuple[str, ...] = ()
    #: names of the hyperparameters besides ``lr``, in the order they are checked and saved
    _hyperparam_names: tuple[str, ...] = ()

    def __init__(self, params: Any, lr: float, **hyperparams: Any) -> None:
        self.params: dict[str, np.ndarray] = _check_param_dict(params)
        self.lr: float = _real("lr", lr, lo=0.0)
        self._assign_hyperparams(self._check_hyperparams(hyperparams))
        self.initial_lr: float | None = None
        self.state: dict[str, dict[str, Any]] = {}
        self.step_count: int = 0
        self._init_flat()

    # -- flat buffers ---------------------------------------------------------------------------
    def _init_flat(self) -> None:
        """Find the buffer the parameters tile (None: a plain dict of arrays) and the offsets."""
        #: 1-D view of the buffer the parameters tile in order, or None
        self._flat: np.ndarray | None = _flat_view(list(self.params.values()))
        #: per state name: a flat buffer like ``_flat`` whose views are the per-parameter state arrays
        self._flat_state: dict[str, np.ndarray] = {}
        self._offsets: dict[str, int] = {}
        off = 0
        for name, p in self.params.items():
            self._offsets[name] = off
            off += p.size

    def __getstate__(self) -> dict[str, Any]:
        d = self.__dict__.copy()
        flat = d.pop("_flat", None)
        d.pop("_flat_state", None)
        if flat is not None:
            # deepcopy and pickle copy every array on its own, cutting views from their buffer:
            # keep the buffer's owner (shared with a model copied in the same call) and the layout
            owner = flat.base
            delta = flat.__array_interface__["data"][0] - owner.__array_interface__["data"][0]
            d["params"] = [(k, v.shape) for k, v in self.params.items()]
            d["_flat_owner"] = (owner, delta // flat.dtype.itemsize, flat.size)
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        d = dict(d)
        owner = d.pop("_flat_owner", None)
        self.__dict__.update(d)
        if owner is not None:  # the parameters as views of the (copied) buffer again
            buf, off, n = owner
            flat = buf[off : off + n]
            self.params = {}
            for k, shape in d["params"]:
                size = math.prod(shape)
                self.params[k] = flat[:size].reshape(shape)
                flat = flat[size:]
        self._init_flat()
        if self._flat is not None:
            self._adopt_state()  # the state arrays were copied one by one: into flat buffers

    def _state_array(self, name: str, key: str) -> np.ndarray:
        """A zeroed state array for parameter ``name``: a view of the flat buffer of ``key`` when
        the parameters are flat, else a new array."""
        p = self.params[name]
        if self._flat is None:
            return np.zeros_like(p)
        buf = self._flat_state.get(key)
        if buf is None:
            buf = self._flat_state[key] = np.zeros_like(self._flat)
        off = self._offsets[name]
        view = buf[off : off + p.size].reshape(p.shape)
        view.fill(0)
        return view

    def _adopt_state(self) -> None:
        """Move every state array into the flat state buffers (after a load or a copy)."""
        for name, st in self.state.items():
            for k, v in list(st.items()):
                if isinstance(v, np.ndarray):
                    view = self._state_array(name, k)
                    np.copyto(view, v)
                    st[k] = view

    def _flat_ready(self) -> bool:
        """True when one fused call can update every parameter: the state of every parameter has
        the same entries and step (or there is no state yet)."""
        if not self.state:
            return True
        if len(self.state) != len(self.params):
            return False
        ref = None
        for st in self.state.values():
            sig = (st.get("step"), tuple(sorted(st)))
            if ref is None:
                ref = sig
            elif sig != ref:
                return False
        return True

    # -- hyperparameters ------------------------------------------------------------------------
    def _hyperparams(self) -> dict[str, Any]:
        """The hyperparameters besides ``lr``, JSON-able (a tuple such as ``betas`` as a list)."""
        return {k: _to_json_scalar(getattr(self, k)) for k in self._hyperparam_names}

    def _check_hyperparams(self, hp: Mapping[str, Any]) -> dict[str, Any]:
        """Check every entry of ``hp`` (keys: ``_hyperparam_names``); return the checked values.

        Raises TypeError/ValueError naming the hyperparameter; never modifies ``self``.
        """
        checked = {k: _HYPERPARAM_CHECKS[k](k, hp[k]) for k in self._hyperparam_names}
        self._check_combination(checked)
        return checked

    def _check_combination(self, hp: Mapping[str, Any]) -> None:
        """Subclass hook: reject combinations of individually valid hyperparameters."""

    def _assign_hyperparams(self, checked: Mapping[str, Any]) -> None:
        for k, v in checked.items():
            setattr(self, k, v)

    # -- subclass hooks -------------------------------------------------------------------------
    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:  # pragma: no cover
        """Update parameter ``name`` (array ``p``) with gradient ``g`` (one kernel call)."""
        raise NotImplementedError

    def _update_flat(self, g: np.ndarray) -> None:  # pragma: no cover
        """Update every parameter at once: ``g`` is the flat gradient (``_flat``'s layout)."""
        raise NotImplementedError

    # -- public API -----------------------------------------------------------------------------
    def step(self, grads: Mapping[str, np.ndarray | None] | np.ndarray) -> None:
        """Apply one update to every parameter that has a gradient in ``grads`` (in place).

        ``grads``: dict name -> array (see the module docstring), or the flat gradient buffer of
        the parameters' buffer (a 1-D array of the same dtype and size as all parameters
        together, e.g. ``model.flat_grads``; only when the parameters tile one buffer).
        """
        flat = self._flat
        if flat is not None and not all(p.flags.writeable for p in self.params.values()):
            raise ValueError(
                "params: the parameters were moved to another buffer (e.g. the module was joined "
                "into a SequenceModel after this optimizer was built; their old memory is "
                "read-only now): build the optimizer over model.parameters() after the model"
            )
        if isinstance(grads, np.ndarray):
            if flat is None:
                raise TypeError(
                    "grads: a flat gradient array needs parameters that tile one buffer "
                    "(a model's parameters()); pass a dict name -> ndarray"
                )
            if grads.dtype != flat.dtype or grads.shape != flat.shape:
                raise ValueError(
                    f"grads: expected a flat array of shape {flat.shape} and dtype {flat.dtype} "
                    f"(all parameters), got shape {grads.shape} and dtype {grads.dtype}"
                )
            g = np.ascontiguousarray(grads)
            if not self._flat_ready():
                self.step(
                    {
                        n: g[o : o + p.size].reshape(p.shape)
                        for (n, p), o in zip(self.params.items(), self._offsets.values())
                    }
                )
                return
            self.step_count += 1
            self._update_flat(g)
            return
        checked = _check_grads(grads, self.params)
        self.step_count += 1
        if flat is not None and len(checked) == len(self.params) and self._flat_ready():
            gflat = _flat_view([checked[n] for n in self.params])
            if gflat is not None:
                self._update_flat(gflat)
                return
        for name, g in checked.items():
            self._update(name, self.params[name], np.ascontiguousarray(g))

    def state_dict(self) -> dict[str, Any]:
        """The optimizer state: NumPy arrays (copies) and JSON-able scalars, nested dicts only."""
        state: dict[str, dict[str, Any]] = {}
        for name, st in self.state.items():
            state[name] = {
                k: (v.copy() if isinstance(v, np.ndarray) else _to_json_scalar(v))
                for k, v in st.items()
            }
        return {
            "type": type(self).__name__,
            "lr": float(self.lr),
            "initial_lr": None if self.initial_lr is None else float(self.initial_lr),
            "step_count": int(self.step_count),
            "hyperparams": self._hyperparams(),
            "state": state,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a state produced by :meth:`state_dict` of the same optimizer class.

        Raises ValueError/TypeError naming the offending entry (wrong type, unknown parameter,
        misshaped or mistyped state array). Nothing is modified if validation fails.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict: expected a dict, got {type(state_dict).__name__}")
        for key in ("type", "lr", "initial_lr", "step_count", "hyperparams", "state"):
            if key not in state_dict:
                raise ValueError(f"state_dict: missing key {key!r}")
        if state_dict["type"] != type(self).__name__:
            raise ValueError(
                f"state_dict['type']: expected {type(self).__name__!r}, got {state_dict['type']!r}"
            )
        lr = _real("state_dict['lr']", state_dict["lr"], lo=0.0)
        initial_lr = state_dict["initial_lr"]
        if initial_lr is not None:
            initial_lr = _real("state_dict['initial_lr']", initial_lr, lo=0.0)
        step_count = _int("state_dict['step_count']", state_dict["step_count"], lo=0)
        hp = state_dict["hyperparams"]
        if not isinstance(hp, Mapping):
            raise TypeError("state_dict['hyperparams']: expected a dict")
        expected_hp = set(self._hyperparam_names)
        if set(hp) != expected_hp:
            raise ValueError(
                f"state_dict['hyperparams']: expected keys {sorted(expected_hp)}, got {sorted(hp)}"
            )
        raw_state = state_dict["state"]
        if not isinstance(raw_state, Mapping):
            raise TypeError("state_dict['state']: expected a dict")
        new_state: dict[str, dict[str, Any]] = {}
        for name, st in raw_state.items():
            where = f"state_dict['state'][{name!r}]"
            if name not in self.params:
                raise ValueError(f"{where}: unknown parameter {name!r}")
            if not isinstance(st, Mapping):
                raise TypeError(f"{where}: expected a dict")
            p = self.params[name]
            new_st: dict[str, Any] = {}
            for k, v in st.items():
                if k in self._state_arrays:
                    a = np.asarray(v)
                    if a.dtype != p.dtype:
                        raise TypeError(f"{where}[{k!r}]: expected dtype {p.dtype}, got {a.dtype}")
                    if a.shape != p.shape:
                        raise ValueError(f"{where}[{k!r}]: expected shape {p.shape}, got {a.shape}")
                    new_st[k] = np.array(a, dtype=p.dtype, copy=True)
                elif k == "step":
                    new_st[k] = _int(f"{where}['step']", v, lo=0)
                else:
                    raise ValueError(f"{where}: unexpected entry {k!r}")
            new_state[name] = new_st
        checked_hp = self._check_hyperparams(hp)
        # everything is checked: from here on nothing can fail
        self._assign_hyperparams(checked_hp)
        self.lr = lr
        self.initial_lr = initial_lr
        self.step_count = step_count
        self.state = new_state
        if self._flat is not None:
            self._adopt_state()

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self._hyperparams().items())
        return f"{type(self).__name__}(lr={self.lr!r}, {hp}, params={len(self.params)})"


class SGD(Optimizer):
    r"""SGD with momentum, dampening, Nesterov and weight decay (torch.optim.SGD).

    Per parameter ``p`` with gradient ``g`` (``mu`` = momentum, ``tau`` = dampening, ``wd`` = weight
    decay)::

        g = -g                              if maximize
        g = g + wd * p                      if wd != 0
        if mu != 0:
            b = g                           first step
            b = mu * b + (1 - tau) * g      later steps
            g = g + mu * b                  if nesterov
            g = b                           otherwise
        p = p - lr * g

    Nesterov requires ``momentum > 0`` and ``dampening == 0`` (as PyTorch).
    """

    _state_arrays = ("momentum_buffer",)
    _hyperparam_names = ("momentum", "dampening", "weight_decay", "nesterov", "maximize")
    momentum: float
    dampening: float
    weight_decay: float
    nesterov: bool
    maximize: bool

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        super().__init__(
            params,
            lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
        )

    def _check_combination(self, hp: Mapping[str, Any]) -> None:
        if hp["nesterov"] and (hp["momentum"] <= 0 or hp["dampening"] != 0):
            raise ValueError("nesterov: requires momentum > 0 and dampening == 0")

    def _sgd(self, p: np.ndarray, g: np.ndarray, buf: np.ndarray | None, first: bool) -> None:
        _core.sgd_update(
            p,
            g,
            buf,
            self.lr,
            self.momentum,
            1 - self.dampening,
            self.weight_decay,
            self.nesterov,
            self.maximize,
            first,
        )

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        buf = None
        first = False
        if self.momentum != 0:
            st = self.state.setdefault(name, {})
            buf = st.get("momentum_buffer")
            if buf is None:
                first = True
                buf = st["momentum_buffer"] = self._state_array(name, "momentum_buffer")
        self._sgd(p, g, buf, first)

    def _update_flat(self, g: np.ndarray) -> None:
        assert self._flat is not None
        buf = None
        first = False
        if self.momentum != 0:
            first = not self.state
            if first:
                for name in self.params:
                    self.state[name] = {
                        "momentum_buffer": self._state_array(name, "momentum_buffer")
                    }
            buf = self._flat_state["momentum_buffer"]
        self._sgd(self._flat, g, buf, first)


class Adam(Optimizer):
    r"""Adam (torch.optim.Adam), with optional AMSGrad; L2 weight decay added to the gradient.

    Per parameter, with step count ``t`` (per parameter, starting at 1)::

        g = -g                                  if maximize
        p = p * (1 - lr * wd)                   (AdamW only: decoupled weight decay)
        g = g + wd * p                          (Adam only, if wd != 0)
        m = m + (1 - beta1) * (g - m)           (= beta1 m + (1 - beta1) g)
        v = beta2 * v + (1 - beta2) * g * g
        v_max = max(v_max, v)                   if amsgrad (and v_max replaces v below)
        denom = sqrt(v) / sqrt(1 - beta2^t) + eps
        p = p - (lr / (1 - beta1^t)) * m / denom

    Note ``eps`` is added *after* the bias correction of ``sqrt(v)``, as in PyTorch.
    """

    _state_arrays = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _hyperparam_names = ("betas", "eps", "weight_decay", "amsgrad", "maximize")
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    amsgrad: bool
    maximize: bool

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
        )

    #: weight decay added to the gradient (Adam) or multiplying the parameter (AdamW)
    _decoupled_weight_decay = False

    def _new_state(self, name: str) -> dict[str, Any]:
        st: dict[str, Any] = {
            "step": 0,
            "exp_avg": self._state_array(name, "exp_avg"),
            "exp_avg_sq": self._state_array(name, "exp_avg_sq"),
        }
        if self.amsgrad:
            st["max_exp_avg_sq"] = self._state_array(name, "max_exp_avg_sq")
        return st

    def _adam(
        self,
        p: np.ndarray,
        g: np.ndarray,
        m: np.ndarray,
        v: np.ndarray,
        vmax: np.ndarray | None,
        step: int,
    ) -> None:
        beta1, beta2 = self.betas
        lr = self.lr
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        if self.weight_decay == 0:
            wd_mode, wd_value = 0, 0.0
        elif self._decoupled_weight_decay:
            wd_mode, wd_value = 2, 1 - lr * self.weight_decay  # p *= 1 - lr * wd
        else:
            wd_mode, wd_value = 1, self.weight_decay  # grad += wd * p
        _core.adam_update(
            p,
            g,
            m,
            v,
            vmax,
            1 - beta1,
            beta2,
            1 - beta2,
            -step_size,
            bias_correction2_sqrt,
            self.eps,
            wd_mode,
            wd_value,
            self.maximize,
        )

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        st = self.state.get(name)
        if st is None:
            st = self.state[name] = self._new_state(name)
        elif self.amsgrad and "max_exp_avg_sq" not in st:
            st["max_exp_avg_sq"] = self._state_array(name, "max_exp_avg_sq")
        st["step"] += 1
        self._adam(p, g, st["exp_avg"], st["exp_avg_sq"], st.get("max_exp_avg_sq"), st["step"])

    def _update_flat(self, g: np.ndarray) -> None:
        assert self._flat is not None
        if not self.state:
            for name in self.params:
                self.state[name] = self._new_state(name)
        elif self.amsgrad and "max_exp_avg_sq" not in next(iter(self.state.values())):
            for name, st in self.state.items():
                st["max_exp_avg_sq"] = self._state_array(name, "max_exp_avg_sq")
        step = 0
        for st in self.state.values():
            step = st["step"] = st["step"] + 1
        fs = self._flat_state
        vmax = fs["max_exp_avg_sq"] if self.amsgrad else None
        self._adam(self._flat, g, fs["exp_avg"], fs["exp_avg_sq"], vmax, step)


class AdamW(Adam):
    r"""AdamW (torch.optim.AdamW): Adam with decoupled weight decay ``p = p * (1 - lr * wd)``.

    Same update as :class:`Adam` except the weight decay multiplies the parameter before the moment
    updates instead of being added to the gradient. Default ``weight_decay=1e-2`` (as PyTorch).
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize)

    _decoupled_weight_decay = True


class RMSprop(Optimizer):
    r"""RMSprop (torch.optim.RMSprop), optionally centered and with momentum.

    Per parameter::

        g = -g                                  if maximize
        g = g + wd * p                          if wd != 0
        v = alpha * v + (1 - alpha) * g * g
        if centered:
            ga = ga + (1 - alpha) * (g - ga)    (running mean of g)
            avg = sqrt(v - ga * ga) + eps
        else:
            avg = sqrt(v) + eps
        if momentum > 0:
            b = momentum * b + g / avg
            p = p - lr * b
        else:
            p = p - lr * g / avg

    Note ``eps`` is added outside the square root, as in PyTorch.
    """

    _state_arrays = ("square_avg", "grad_avg", "momentum_buffer")
    _hyperparam_names = ("alpha", "eps", "weight_decay", "momentum", "centered", "maximize")
    alpha: float
    eps: float
    weight_decay: float
    momentum: float
    centered: bool
    maximize: bool

    def __init__(
        self,
        params: Any,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        super().__init__(
            params,
            lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
            maximize=maximize,
        )

    def _complete_state(self, name: str, st: dict[str, Any]) -> None:
        if self.centered and "grad_avg" not in st:
            st["grad_avg"] = self._state_array(name, "grad_avg")
        if self.momentum > 0 and "momentum_buffer" not in st:
            st["momentum_buffer"] = self._state_array(name, "momentum_buffer")

    def _rmsprop(
        self,
        p: np.ndarray,
        g: np.ndarray,
        v: np.ndarray,
        ga: np.ndarray | None,
        buf: np.ndarray | None,
    ) -> None:
        _core.rmsprop_update(
            p,
            g,
            v,
            ga if self.centered else None,
            buf if self.momentum > 0 else None,
            self.alpha,
            1 - self.alpha,
            self.eps,
            self.weight_decay,
            self.momentum,
            -self.lr,
            self.maximize,
        )

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        st = self.state.get(name)
        if st is None:
            st = self.state[name] = {"step": 0, "square_avg": self._state_array(name, "square_avg")}
        self._complete_state(name, st)
        st["step"] += 1
        self._rmsprop(p, g, st["square_avg"], st.get("grad_avg"), st.get("momentum_buffer"))

    def _update_flat(self, g: np.ndarray) -> None:
        assert self._flat is not None
        if not self.state:
            for name in self.params:
                self.state[name] = {"step": 0, "square_avg": self._state_array(name, "square_avg")}
        first = next(iter(self.state.values()))
        if (self.centered and "grad_avg" not in first) or (
            self.momentum > 0 and "momentum_buffer" not in first
        ):
            for name, st in self.state.items():
                self._complete_state(name, st)
        for st in self.state.values():
            st["step"] += 1
        fs = self._flat_state
        self._rmsprop(
            self._flat, g, fs["square_avg"], fs.get("grad_avg"), fs.get("momentum_buffer")
        )


# --------------------------------------------------------------------------------------------------
# gradient clipping
# --------------------------------------------------------------------------------------------------


@dataclass
class ClipStats:
    """Running record of gradient clipping: pre-clip norms and how often clipping fired.

    Pass one to :func:`clip_grad_norm_` / :func:`clip_grad_value_` via ``stats=``. For norm clipping
    ``last_norm``/``max_norm_seen`` are pre-clip total norms; for value clipping they are the
    pre-clip max |g| (the inf-norm). Non-finite norms are recorded in ``last_norm`` and counted in
    ``nonfinite`` but do not update ``max_norm_seen``/``sum_norm``.
    """

    calls: int = 0
    clipped: int = 0
    nonfinite: int = 0
    last_norm: float = 0.0
    max_norm_seen: float = 0.0
    sum_norm: float = 0.0

    def record(self, norm: float, clipped: bool) -> None:
        """Add one observation (pre-clip norm, whether clipping was applied)."""
        self.calls += 1
        self.clipped += int(bool(clipped))
        self.last_norm = float(norm)
        if math.isfinite(norm):
            self.max_norm_seen = max(self.max_norm_seen, float(norm))
            self.sum_norm += float(norm)
        else:
            self.nonfinite += 1

    @property
    def fraction_clipped(self) -> float:
        """Fraction of calls in which clipping fired (0.0 before any call)."""
        return self.clipped / self.calls if self.calls else 0.0

    @property
    def mean_norm(self) -> float:
        """Mean of the finite pre-clip norms seen (0.0 before any)."""
        n = self.calls - self.nonfinite
        return self.sum_norm / n if n else 0.0

    def reset(self) -> None:
        """Forget everything (e.g. at the start of an epoch)."""
        self.calls = self.clipped = self.nonfinite = 0
        self.last_norm = self.max_norm_seen = self.sum_norm = 0.0

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state (non-finite ``last_norm`` is kept as a float; io encodes it)."""
        return dict(
            calls=self.calls,
            clipped=self.clipped,
            nonfinite=self.nonfinite,
            last_norm=self.last_norm,
            max_norm_seen=self.max_norm_seen,
            sum_norm=self.sum_norm,
        )

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.calls = _int("calls", d["calls"], lo=0)
        self.clipped = _int("clipped", d["clipped"], lo=0)
        self.nonfinite = _int("nonfinite", d["nonfinite"], lo=0)
        self.last_norm = float(d["last_norm"])
        self.max_norm_seen = float(d["max_norm_seen"])
        self.sum_norm = float(d["sum_norm"])


def _grad_arrays(grads: Any) -> list[tuple[str, np.ndarray]]:
    if isinstance(grads, np.ndarray):  # a flat gradient buffer (model.flat_grads)
        grads = {"grads": grads}
    if not isinstance(grads, Mapping):
        raise TypeError(f"grads: expected a dict name -> ndarray, got {type(grads).__name__}")
    out = []
    for k, g in grads.items():
        if g is None:
            continue
        if not isinstance(g, np.ndarray):
            raise TypeError(
                f"grads[{k!r}]: expected an np.ndarray (clipped in place), got {type(g).__name__}"
            )
        if g.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"grads[{k!r}]: expected dtype float32 or float64, got {g.dtype}")
        if not g.flags.writeable:
            raise ValueError(f"grads[{k!r}]: array is read-only; clipping modifies it in place")
        if not g.flags.c_contiguous:
            raise ValueError(f"grads[{k!r}]: expected a C-contiguous array (clipped in place)")
        out.append((k, g))
    return out


def _one_buffer(arrays: list[tuple[str, np.ndarray]]) -> list[np.ndarray]:
    """The arrays as one flat view when they tile one buffer (one kernel call), else as they are."""
    flat = _flat_view([g for _, g in arrays]) if len(arrays) > 1 else None
    return [flat] if flat is not None else [g for _, g in arrays]


def grad_sumsq_maxabs(grads: Any) -> tuple[float, float]:
    """(sum of squares, max |g|) over all gradient entries, in one pass per buffer.

    The sum of squares is accumulated in float64 in a fixed order (the same on every call and
    thread count); max |g| is NaN when any entry is NaN. ``grads``: a dict name -> array or one
    flat array.
    """
    total, vmax = 0.0, 0.0
    for g in _one_buffer(_grad_arrays(grads)):
        s, m = _core.grad_stats(g)
        total += s
        vmax = m if (m != m or m > vmax) else vmax
    return total, vmax


def clip_grad_norm_(
    grads: Mapping[str, np.ndarray | None],
    max_norm: float,
    norm_type: float = 2.0,
    *,
    error_if_nonfinite: bool = False,
    stats: ClipStats | None = None,
) -> float:
    """Scale all gradients in place so their joint ``norm_type``-norm is at most ``max_norm``.

    Same semantics as ``torch.nn.utils.clip_grad_norm_``: ``total_norm`` is the norm of the vector
    of per-array norms (= the norm of all gradient entries concatenated; ``norm_type=inf`` gives the
    max |g|); if ``scale = max_norm / (total_norm + 1e-6)`` is < 1 every gradient is multiplied by
    it.

    Args:
        grads: dict name -> float32/float64 writeable array (``None`` values are skipped).
        max_norm: the largest allowed total norm, >= 0.
        norm_type: p of the p-norm, > 0, or ``inf``.
        error_if_nonfinite: raise ValueError if the total norm is NaN/Inf.
        stats: optional :class:`ClipStats`, updated with the pre-clip norm and whether it clipped.

    Returns:
        The pre-clip total norm as a Python float (computed in float64).

    Difference from PyTorch: when the total norm is NaN or Inf (and ``error_if_nonfinite`` is False)
    the gradients are left unchanged, instead of being multiplied by NaN/0.
    """
    max_norm = _real("max_norm", max_norm, lo=0.0, finite=False)
    norm_type = _real("norm_type", norm_type, lo=0.0, lo_open=True, finite=False)
    arrays = _grad_arrays(grads)
    if not arrays:
        total = 0.0
    elif norm_type == 2.0 or math.isinf(norm_type):
        sumsq, vmax = grad_sumsq_maxabs(grads)
        total = vmax if math.isinf(norm_type) else math.sqrt(sumsq)
    else:
        norms = np.array(
            [
                np.linalg.norm(g.ravel().astype(np.float64), ord=norm_type) if g.size else 0.0
                for _, g in arrays
            ]
        )
        total = float(np.linalg.norm(norms, ord=norm_type))
    finite = math.isfinite(total)
    if not finite and error_if_nonfinite:
        bad = [k for k, g in arrays if not np.all(np.isfinite(g))]
        raise ValueError(
            f"grads: total norm of order {norm_type} is {total}; non-finite entries in {bad}"
        )
    clip_coef = max_norm / (total + 1e-6) if finite else 1.0
    clipped = clip_coef < 1.0
    if clipped:
        for g in _one_buffer(arrays):
            _core.grad_scale(g, clip_coef)  # g *= clip_coef
    if stats is not None:
        stats.record(total, clipped)
    return total


def clip_grad_value_(
    grads: Mapping[str, np.ndarray | None], clip_value: float, *, stats: ClipStats | None = None
) -> float:
    """Clamp every gradient entry in place to ``[-clip_value, clip_value]`` (as torch's).

    Returns the pre-clip max |g| (inf-norm) as a float, NaN when an entry is NaN; ``stats`` records
    it and whether any entry was clamped. NaN entries stay NaN, the others are clamped.
    """
    clip_value = _real("clip_value", clip_value, lo=0.0, finite=False)
    arrays = _grad_arrays(grads)
    _, vmax = grad_sumsq_maxabs(grads)
    clipped = vmax > clip_value or vmax != vmax  # NaN present: clamp the rest (as torch's clamp_)
    if clipped:
        for g in _one_buffer(arrays):
            _core.grad_clip(g, clip_value)  # np.clip(g, -clip_value, clip_value, out=g)
    if stats is not None:
        stats.record(vmax, clipped)
    return vmax


# --------------------------------------------------------------------------------------------------
# learning-rate schedulers
# --------------------------------------------------------------------------------------------------


class LRScheduler:
    """Base class of the schedulers (PyTorch's chainable LRScheduler semantics, one param group).

    On construction the scheduler records ``optimizer.initial_lr`` (if not yet set) as its
    ``base_lr`` and performs the initial step (``last_epoch`` becomes 0). Each :meth:`step` advances
    ``last_epoch`` by one and sets ``optimizer.lr``. The updates are PyTorch's recursive
    ("chainable") formulas, so two schedulers on one optimizer compose multiplicatively, exactly as
    in PyTorch.
    """

    _fields: tuple[str, ...] = ()  # hyperparameters saved in state_dict

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"optimizer: expected an rnnfast Optimizer, got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        if optimizer.initial_lr is None:
            optimizer.initial_lr = float(optimizer.lr)
        self.base_lr: float = float(optimizer.initial_lr)
        self.last_epoch: int = -1
        self._step_count: int = 0
        self._is_initial = False
        self._last_lr: float = float(optimizer.lr)
        self._initial_step()

    def _initial_step(self) -> None:
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def _get_lr(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def _closed_form_lr(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch/step and set ``optimizer.lr``."""
        self._step_count += 1
        self.last_epoch += 1
        self._set_lr(self._get_lr())

    def _set_lr(self, lr: float) -> None:
        self.optimizer.lr = float(lr)
        self._last_lr = float(lr)

    def _jump_to(self, epoch: int) -> None:
        """Set ``last_epoch`` and the closed-form lr there (used by SequentialLR at milestones)."""
        self.last_epoch = epoch
        self._set_lr(self._closed_form_lr())

    def get_last_lr(self) -> list[float]:
        """The last learning rate set by this scheduler, as a one-element list (PyTorch's form)."""
        return [self._last_lr]

    @property
    def last_lr(self) -> float:
        """The last learning rate set by this scheduler."""
        return self._last_lr

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: type, counters, base/last lr and hyperparameters."""
        d: dict[str, Any] = {
            "type": type(self).__name__,
            "last_epoch": int(self.last_epoch),
            "step_count": int(self._step_count),
            "base_lr": float(self.base_lr),
            "last_lr": float(self._last_lr),
        }
        for f in self._fields:
            d[f] = _to_json_scalar(getattr(self, f))
        return d

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` of the same scheduler class."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict: expected a dict, got {type(state_dict).__name__}")
        if state_dict.get("type") != type(self).__name__:
            raise ValueError(
                f"state_dict['type']: expected {type(self).__name__!r}, "
                f"got {state_dict.get('type')!r}"
            )
        for key in ("last_epoch", "step_count", "base_lr", "last_lr", *self._fields):
            if key not in state_dict:
                raise ValueError(f"state_dict: missing key {key!r}")
        self.last_epoch = _int("state_dict['last_epoch']", state_dict["last_epoch"], lo=-1)
        self._step_count = _int("state_dict['step_count']", state_dict["step_count"], lo=0)
        self.base_lr = _real("state_dict['base_lr']", state_dict["base_lr"], lo=0.0)
        self._last_lr = _real("state_dict['last_lr']", state_dict["last_lr"], lo=0.0)
        for f in self._fields:
            setattr(self, f, state_dict[f])

    def __repr__(self) -> str:
        hp = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__name__}({hp}, last_epoch={self.last_epoch}, lr={self._last_lr!r})"


class StepLR(LRScheduler):
    """Multiply the lr by ``gamma`` every ``step_size`` epochs.

    ``lr = base_lr * gamma ** (epoch // step_size)`` (torch.optim.lr_scheduler.StepLR).
    """

    _fields = ("step_size", "gamma")

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        self.step_size = _int("step_size", step_size, lo=1)
        self.gamma = _real("gamma", gamma, lo=0.0)
        super().__init__(optimizer)

    def _get_lr(self) -> float:
        lr = self.optimizer.lr
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return lr
        return lr * self.gamma

    def _closed_form_lr(self) -> float:
        return self.base_lr * self.gamma ** (self.last_epoch // self.step_size)


class ExponentialLR(LRScheduler):
    """Multiply the lr by ``gamma`` every epoch: ``lr = base_lr * gamma ** epoch``."""

    _fields = ("gamma",)

    def __init__(self, optimizer: Optimizer, gamma: float) -> None:
        self.gamma = _real("gamma", gamma, lo=0.0)
        super().__init__(optimizer)

    def _get_lr(self) -> float:
        if self._is_initial:
            return self.optimizer.lr
        return self.optimizer.lr * self.gamma

    def _closed_form_lr(self) -> float:
        return self.base_lr * self.gamma**self.last_epoch


class CosineAnnealingLR(LRScheduler):
    r"""Cosine annealing: ``lr = eta_min + (base_lr - eta_min) (1 + cos(pi epoch / T_max)) / 2``.

    Computed with PyTorch's recursive form (chainable); after ``T_max`` the cosine continues (the lr
    rises again over the next ``T_max`` epochs), as in PyTorch (no restarts).
    """

    _fields = ("T_max", "eta_min")

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        self.T_max = _int("T_max", T_max, lo=1)
        self.eta_min = _real("eta_min", eta_min, lo=0.0)
        super().__init__(optimizer)

    def _get_lr(self) -> float:
        lr, e, T, lo = self.optimizer.lr, self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return lr
        if (e - 1 - T) % (2 * T) == 0:
            return lr + (self.base_lr - lo) * (1 - math.cos(math.pi / T)) / 2
        return (1 + math.cos(math.pi * e / T)) / (1 + math.cos(math.pi * (e - 1) / T)) * (
            lr - lo
        ) + lo

    def _closed_form_lr(self) -> float:
        return (
            self.eta_min
            + (self.base_lr - self.eta_min)
            * (1 + math.cos(math.pi * self.last_epoch / self.T_max))
            / 2
        )


class LinearLR(LRScheduler):
    """Scale ``base_lr`` by a factor going linearly from ``start_factor`` to ``end_factor``.

    ``lr = base_lr * (start + (end - start) * min(epoch, total_iters) / total_iters)``
    (torch.optim.lr_scheduler.LinearLR).
    """

    _fields = ("start_factor", "end_factor", "total_iters")

    def __init__(
        self,
        optimizer: Optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
    ) -> None:
        self.start_factor = _real("start_factor", start_factor, lo=0.0, lo_open=True, hi=1.0)
        self.end_factor = _real("end_factor", end_factor, lo=0.0, hi=1.0)
        self.total_iters = _int("total_iters", total_iters, lo=1)
        super().__init__(optimizer)

    def _get_lr(self) -> float:
        lr, e = self.optimizer.lr, self.last_epoch
        s, t, n = self.start_factor, self.end_factor, self.total_iters
        if e == 0:
            return lr * s
        if self._is_initial or e > n:
            return lr
        return lr * (1.0 + (t - s) / (n * s + (e - 1) * (t - s)))

    def _closed_form_lr(self) -> float:
        s, t, n = self.start_factor, self.end_factor, self.total_iters
        return self.base_lr * (s + (t - s) * min(n, self.last_epoch) / n)


class SequentialLR(LRScheduler):
    """Run ``schedulers`` one after another, switching at ``milestones`` (torch's SequentialLR).

    At a milestone the next scheduler restarts from its epoch 0 (closed form, so from ``base_lr``
    times its initial factor). The given schedulers must belong to ``optimizer``; construct them
    first (their own initial steps are undone here, as PyTorch does).
    """

    def __init__(
        self, optimizer: Optimizer, schedulers: list[LRScheduler], milestones: list[int]
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"optimizer: expected an rnnfast Optimizer, got {type(optimizer).__name__}"
            )
        schedulers = list(schedulers)
        milestones = [_int(f"milestones[{i}]", m, lo=1) for i, m in enumerate(milestones)]
        if not schedulers:
            raise ValueError("schedulers: expected at least one scheduler")
        for i, s in enumerate(schedulers):
            if isinstance(s, ReduceLROnPlateau) or not isinstance(s, LRScheduler):
                raise TypeError(
                    f"schedulers[{i}]: expected an epoch-based LRScheduler, got {type(s).__name__}"
                )
            if s.optimizer is not optimizer:
                raise ValueError(f"schedulers[{i}]: belongs to a different optimizer")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                f"milestones: expected {len(schedulers) - 1} (one fewer than schedulers), "
                f"got {len(milestones)}"
            )
        if any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise ValueError(f"milestones: expected strictly increasing values, got {milestones}")
        self.optimizer = optimizer
        self._schedulers = schedulers
        self.milestones = milestones
        assert optimizer.initial_lr is not None  # set by the sub-schedulers
        self.base_lr = float(optimizer.initial_lr)
        self.last_epoch = 0
        self._step_count = 1
        self._is_initial = False
        optimizer.lr = float(optimizer.initial_lr)
        for s in schedulers:
            s.last_epoch -= 1
        idx = bisect_right(milestones, 0)
        schedulers[idx]._initial_step()
        self._last_lr = schedulers[idx].last_lr

    @property
    def schedulers(self) -> list[LRScheduler]:
        """The wrapped schedulers."""
        return self._schedulers

    def step(self) -> None:
        """Advance one epoch, delegating to the scheduler active at that epoch."""
        self._step_count += 1
        self.last_epoch += 1
        idx = bisect_right(self.milestones, self.last_epoch)
        sched = self._schedulers[idx]
        if idx > 0 and self.milestones[idx - 1] == self.last_epoch:
            sched._jump_to(0)
        else:
            sched.step()
        self._last_lr = sched.last_lr

    def state_dict(self) -> dict[str, Any]:
        """State including each wrapped scheduler's state under ``"schedulers"``."""
        return {
            "type": type(self).__name__,
            "last_epoch": int(self.last_epoch),
            "step_count": int(self._step_count),
            "base_lr": float(self.base_lr),
            "last_lr": float(self._last_lr),
            "milestones": list(self.milestones),
            "schedulers": [s.state_dict() for s in self._schedulers],
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict` (same scheduler types, same number of them)."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict: expected a dict, got {type(state_dict).__name__}")
        if state_dict.get("type") != type(self).__name__:
            raise ValueError(
                f"state_dict['type']: expected {type(self).__name__!r}, "
                f"got {state_dict.get('type')!r}"
            )
        subs = state_dict.get("schedulers")
        if not isinstance(subs, (list, tuple)) or len(subs) != len(self._schedulers):
            raise ValueError(
                f"state_dict['schedulers']: expected a list of {len(self._schedulers)} states"
            )
        if list(state_dict.get("milestones", [])) != self.milestones:
            raise ValueError(
                f"state_dict['milestones']: expected {self.milestones}, "
                f"got {state_dict.get('milestones')!r}"
            )
        for s, d in zip(self._schedulers, subs):
            s.load_state_dict(d)
        self.last_epoch = _int("state_dict['last_epoch']", state_dict["last_epoch"], lo=0)
        self._step_count = _int("state_dict['step_count']", state_dict["step_count"], lo=0)
        self.base_lr = _real("state_dict['base_lr']", state_dict["base_lr"], lo=0.0)
        self._last_lr = _real("state_dict['last_lr']", state_dict["last_lr"], lo=0.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._schedulers!r}, milestones={self.milestones})"


class LinearWarmup(SequentialLR):
    """Linear warm-up over ``warmup_steps`` steps, then ``after`` (any epoch-based scheduler).

    The lr factor goes linearly from ``start_factor`` to 1 over ``warmup_steps`` steps (a
    :class:`LinearLR`), then ``after`` takes over from its epoch 0 (a :class:`SequentialLR` with one
    milestone at ``warmup_steps``). The default ``start_factor = 1 / (warmup_steps + 1)`` gives the
    factors 1/(W+1), 2/(W+1), ..., 1 -- never a zero learning rate. Equivalent to PyTorch's
    ``SequentialLR(opt, [LinearLR(opt, start_factor, 1.0, W), after], milestones=[W])``.

    Build ``after`` first, on the same optimizer, e.g.
    ``LinearWarmup(opt, 100, after=CosineAnnealingLR(opt, T_max=900))``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int,
        after: LRScheduler | None = None,
        *,
        start_factor: float | None = None,
    ) -> None:
        warmup_steps = _int("warmup_steps", warmup_steps, lo=1)
        if start_factor is None:
            start_factor = 1.0 / (warmup_steps + 1)
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"optimizer: expected an rnnfast Optimizer, got {type(optimizer).__name__}"
            )
        if after is not None and not isinstance(after, LRScheduler):
            raise TypeError(f"after: expected an LRScheduler, got {type(after).__name__}")
        warm = LinearLR(
            optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup_steps
        )
        if after is None:
            super().__init__(optimizer, [warm], [])
        else:
            super().__init__(optimizer, [warm, after], [warmup_steps])
        self.warmup_steps = warmup_steps


class ReduceLROnPlateau:
    """Reduce the lr by ``factor`` when a metric stopped improving (torch's ReduceLROnPlateau).

    ``step(metric)`` once per epoch. "Improving" is ``metric < best * (1 - threshold)`` (mode "min",
    threshold_mode "rel"), ``metric < best - threshold`` ("min", "abs"), ``metric > best * (1 +
    threshold)`` ("max", "rel") or ``metric > best + threshold`` ("max", "abs"). After more than
    ``patience`` bad epochs, ``lr = max(lr * factor, min_lr)`` (skipped if the change is <=
    ``eps``), then ``cooldown`` epochs in which bad epochs are not counted. A NaN metric counts as a
    bad epoch (as in PyTorch).
    """

    _fields = (
        "mode",
        "factor",
        "patience",
        "threshold",
        "threshold_mode",
        "cooldown",
        "min_lr",
        "eps",
    )

    def __init__(
        self,
        optimizer: Optimizer,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float = 0.0,
        eps: float = 1e-8,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"optimizer: expected an rnnfast Optimizer, got {type(optimizer).__name__}"
            )
        if mode not in ("min", "max"):
            raise ValueError(f"mode: expected 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode: expected 'rel' or 'abs', got {threshold_mode!r}")
        self.optimizer = optimizer
        self.mode = mode
        self.factor = _real("factor", factor, lo=0.0, hi=1.0, hi_open=True)
        self.patience = _int("patience", patience, lo=0)
        self.threshold = _real("threshold", threshold, lo=0.0)
        self.threshold_mode = threshold_mode
        self.cooldown = _int("cooldown", cooldown, lo=0)
        self.min_lr = _real("min_lr", min_lr, lo=0.0)
        self.eps = _real("eps", eps, lo=0.0)
        self.last_epoch = 0
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self._last_lr = float(optimizer.lr)

    def _is_better(self, a: float) -> bool:
        best = self.best
        if self.mode == "min":
            return a < (
                best * (1.0 - self.threshold)
                if self.threshold_mode == "rel"
                else best - self.threshold
            )
        return a > (
            best * (self.threshold + 1.0) if self.threshold_mode == "rel" else best + self.threshold
        )

    def step(self, metric: float) -> None:
        """Record one epoch's ``metric`` and reduce the lr if it has plateaued."""
        try:
            current = float(metric)
        except (TypeError, ValueError):
            raise TypeError(
                f"metric: expected a real number, got {type(metric).__name__}"
            ) from None
        self.last_epoch += 1
        if self._is_better(current):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            old = float(self.optimizer.lr)
            new = max(old * self.factor, self.min_lr)
            if old - new > self.eps:
                self.optimizer.lr = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = float(self.optimizer.lr)

    @property
    def in_cooldown(self) -> bool:
        """True while in the cooldown period after a reduction."""
        return self.cooldown_counter > 0

    def get_last_lr(self) -> list[float]:
        """The current learning rate as a one-element list (PyTorch's form)."""
        return [self._last_lr]

    @property
    def last_lr(self) -> float:
        """The current learning rate."""
        return self._last_lr

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state (``best`` may be +-inf; rnnfast.io encodes non-finite floats)."""
        d: dict[str, Any] = {f: getattr(self, f) for f in self._fields}
        d.update(
            type="ReduceLROnPlateau",
            last_epoch=self.last_epoch,
            best=float(self.best),
            num_bad_epochs=self.num_bad_epochs,
            cooldown_counter=self.cooldown_counter,
            last_lr=self._last_lr,
        )
        return d

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict: expected a dict, got {type(state_dict).__name__}")
        if state_dict.get("type") != "ReduceLROnPlateau":
            raise ValueError(
                f"state_dict['type']: expected 'ReduceLROnPlateau', got {state_dict.get('type')!r}"
            )
        keys = (
            *self._fields,
            "last_epoch",
            "best",
            "num_bad_epochs",
            "cooldown_counter",
            "last_lr",
        )
        missing = [k for k in keys if k not in state_dict]
        if missing:
            raise ValueError(f"state_dict: missing keys {missing}")
        fresh = ReduceLROnPlateau(self.optimizer, **{f: state_dict[f] for f in self._fields})
        for f in self._fields:
            setattr(self, f, getattr(fresh, f))
        self.last_epoch = _int("state_dict['last_epoch']", state_dict["last_epoch"], lo=0)
        self.best = float(state_dict["best"])
        self.num_bad_epochs = _int(
            "state_dict['num_bad_epochs']", state_dict["num_bad_epochs"], lo=0
        )
        self.cooldown_counter = _int(
            "state_dict['cooldown_counter']", state_dict["cooldown_counter"], lo=0
        )
        self._last_lr = _real("state_dict['last_lr']", state_dict["last_lr"], lo=0.0)

    def __repr__(self) -> str:
        return (
            f"ReduceLROnPlateau(mode={self.mode!r}, factor={self.factor}, "
            f"patience={self.patience}, "
            f"best={self.best}, lr={self.optimizer.lr!r})"
        )
