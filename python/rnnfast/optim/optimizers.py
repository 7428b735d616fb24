"""The optimizers: :class:`Optimizer` (the base: params, lr, state, state_dict, the flat-buffer fast
path) and :class:`SGD`, :class:`Adam`, :class:`AdamW`, :class:`RMSprop` over the fused kernels.

Semantics (params, grads, state_dict, fused updates): see :mod:`rnnfast.optim`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._loader import core as _core
from ._checks import (
    _HYPERPARAM_CHECKS,
    _check_grads,
    _check_param_dict,
    _flat_view,
    _int,
    _real,
    _to_json_scalar,
)

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop"]


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

    # -- per-parameter state with a step count (Adam, RMSprop) ------------------------------------
    #: state arrays every parameter has from its first step (besides ``step``)
    _base_buffers: tuple[str, ...] = ()

    def _optional_buffers(self) -> tuple[str, ...]:
        """State arrays the current hyperparameters need besides ``_base_buffers`` (e.g. AMSGrad's
        ``max_exp_avg_sq``); added to an existing state when a hyperparameter turns them on."""
        return ()

    def _complete_state(self, name: str, st: dict[str, Any]) -> None:
        for key in self._optional_buffers():
            if key not in st:
                st[key] = self._state_array(name, key)

    def _new_state(self, name: str) -> dict[str, Any]:
        st: dict[str, Any] = {"step": 0}
        for key in self._base_buffers:
            st[key] = self._state_array(name, key)
        self._complete_state(name, st)
        return st

    def _advance(self, name: str) -> dict[str, Any]:
        """Parameter ``name``'s state (made or completed as needed) with its step counted."""
        st = self.state.get(name)
        if st is None:
            st = self.state[name] = self._new_state(name)
        else:
            self._complete_state(name, st)
        st["step"] += 1
        return st

    def _advance_flat(self) -> int:
        """:meth:`_advance` for every parameter at once (their states alike); the new step."""
        if not self.state:
            for name in self.params:
                self.state[name] = self._new_state(name)
        elif any(k not in next(iter(self.state.values())) for k in self._optional_buffers()):
            for name, st in self.state.items():
                self._complete_state(name, st)
        step = 0
        for st in self.state.values():
            step = st["step"] = st["step"] + 1
        return step

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

    _base_buffers = ("exp_avg", "exp_avg_sq")

    def _optional_buffers(self) -> tuple[str, ...]:
        return ("max_exp_avg_sq",) if self.amsgrad else ()

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
        st = self._advance(name)
        self._adam(p, g, st["exp_avg"], st["exp_avg_sq"], st.get("max_exp_avg_sq"), st["step"])

    def _update_flat(self, g: np.ndarray) -> None:
        assert self._flat is not None
        step = self._advance_flat()
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

    _base_buffers = ("square_avg",)

    def _optional_buffers(self) -> tuple[str, ...]:
        return (("grad_avg",) if self.centered else ()) + (
            ("momentum_buffer",) if self.momentum > 0 else ()
        )

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
        st = self._advance(name)
        self._rmsprop(p, g, st["square_avg"], st.get("grad_avg"), st.get("momentum_buffer"))

    def _update_flat(self, g: np.ndarray) -> None:
        assert self._flat is not None
        self._advance_flat()
        fs = self._flat_state
        self._rmsprop(
            self._flat, g, fs["square_avg"], fs.get("grad_avg"), fs.get("momentum_buffer")
        )
