"""Learning-rate schedulers with PyTorch's semantics (one param group): :class:`LRScheduler` and
:class:`StepLR`, :class:`ExponentialLR`, :class:`CosineAnnealingLR`, :class:`LinearLR`,
:class:`SequentialLR`, :class:`LinearWarmup`, :class:`ReduceLROnPlateau`.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping
from typing import Any

from ._checks import _int, _real, _to_json_scalar
from .optimizers import Optimizer

__all__ = [
    "LRScheduler",
    "StepLR",
    "ExponentialLR",
    "CosineAnnealingLR",
    "LinearLR",
    "SequentialLR",
    "LinearWarmup",
    "ReduceLROnPlateau",
]


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
