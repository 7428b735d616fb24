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

from typing import Any

from ._checks import _flat_view as _flat_view
from .clip import ClipStats, clip_grad_norm_, clip_grad_value_
from .clip import grad_sumsq_maxabs as grad_sumsq_maxabs
from .optimizers import SGD, Adam, AdamW, Optimizer, RMSprop
from .schedules import (
    CosineAnnealingLR,
    ExponentialLR,
    LinearLR,
    LinearWarmup,
    LRScheduler,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)

__all__ = [
    "Optimizer",
    "SGD",
    "Adam",
    "AdamW",
    "RMSprop",
    "make_optimizer",
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

# also imported by name elsewhere, outside __all__ as before: grad_sumsq_maxabs (tests, training)
# and _flat_view (training, distributed)

#: ``make_optimizer`` names -> optimizer class names
_BY_NAME = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "rmsprop": "RMSprop"}


def make_optimizer(name: str, params: Any, lr: float) -> Optimizer:
    """An optimizer by name: ``adam``, ``adamw``, ``sgd``, ``rmsprop`` (default hyperparameters)."""
    if name not in _BY_NAME:
        raise ValueError(f"optimizer: expected one of {', '.join(_BY_NAME)}, got {name!r}")
    return globals()[_BY_NAME[name]](params, lr=lr)
