"""The one-call API: :func:`fit` checks its arguments, builds a :class:`~rnnfast.training.Trainer`
(resuming it from a checkpoint when asked) and runs it; :func:`evaluate` gives a model's loss and
metrics on a dataset. See :mod:`rnnfast.training` for the data layout and the modes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import numpy as np

from .. import _precision
from .. import io as _io
from .._threads import with_single_thread_blas
from ..modules import SequenceModel
from . import checkpointing as _ckpt
from .callbacks import Callback, EarlyStopping, History, _FunctionCallback
from .data import _SEQ_MODES, Dataset, _as_dataset
from .metrics import _check_eval_loss, _check_metrics
from .trainer import Trainer, evaluate_dataset

__all__ = ["evaluate", "fit"]

Array = np.ndarray


@with_single_thread_blas  # NumPy's BLAS pool would fight the kernels' threads
def evaluate(
    model: SequenceModel,
    data: Any,
    loss: Any,
    *,
    batch_size: int = 256,
    metrics: Sequence[Any] = (),
) -> dict[str, float]:
    """Loss (and metrics) of ``model`` on ``data`` in eval mode (restored afterwards).

    ``data`` is a Dataset, a task's Split (``rnnfast.tasks``) or (x, y) / (x, y, lengths), as for
    :func:`fit`.
    Returns {"loss": mean over loss items (valid steps / samples), "accuracy": ..., ...}. Batches are
    whole sequences (full forward passes), whatever mode the model was trained in.
    """
    if not isinstance(model, SequenceModel):
        raise TypeError(f"model: expected a rnnfast.SequenceModel, got {type(model).__name__}")
    _check_eval_loss(loss)
    if (
        isinstance(batch_size, (bool, np.bool_))
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    ds = _as_dataset(data, model.mode, "data", model.rnn.batch_first)
    mets = _check_metrics(metrics)
    return evaluate_dataset(model, ds, loss, int(batch_size), mets)


def _same_memory(a: Any, b: Array) -> bool:
    """True when ``a`` is an array over exactly the memory of ``b`` (e.g. two views of one
    parameter, as a model and its optimizer hold after being copied together)."""
    return (
        isinstance(a, np.ndarray)
        and a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.shape == b.shape
        and a.strides == b.strides
        and a.dtype == b.dtype
    )


def _check_optimizer_params(model: SequenceModel, optimizer: Any) -> None:
    """An rnnfast optimizer (one with a ``params`` dict) must update this model's live arrays."""
    opt_params = getattr(optimizer, "params", None)
    if not isinstance(opt_params, Mapping):
        return  # a duck-typed optimizer: step(grads) is all fit relies on
    for name, p in model.parameters().items():
        q = opt_params.get(name)
        if q is not p and not _same_memory(q, p):
            what = "has no parameter" if name not in opt_params else "holds a different array for"
            raise ValueError(
                f"optimizer: expected an optimizer over this model's parameters, but it {what} "
                f"{name!r}; build it with e.g. rnnfast.Adam(model.parameters(), lr=...)"
            )


_PARENT = __name__.rpartition(".")[0].rpartition(".")[0]  # "rnnfast"


def _resolve_distributed(distributed: Any) -> Any:
    """fit's ``distributed`` -> a rnnfast.distributed.DataParallel or None (mpi4py is imported
    only when data parallelism is asked for)."""
    if distributed is None:
        mod = sys.modules.get(f"{_PARENT}.distributed")
        return None if mod is None else mod.current()
    if distributed is False:
        return None
    from .. import distributed as _dist

    return _dist.resolve(distributed)


@with_single_thread_blas  # NumPy's BLAS pool would fight the kernels' threads
def fit(
    model: SequenceModel,
    train_data: Any,
    loss: Any,
    optimizer: Any,
    *,
    epochs: int,
    batch_size: int,
    bptt: tuple[int, int] | None = None,
    stateful: bool = False,
    clip_norm: float | None = None,
    clip_value: float | None = None,
    scheduler: Any = None,
    val_data: Any = None,
    callbacks: Sequence[Callback | Callable[..., Any]] = (),
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    early_stopping: EarlyStopping | int | None = None,
    progress: bool = True,
    seed: int | None = None,
    metrics: Sequence[Any] = (),
    on_nonfinite: str = "raise",
    log_grad_flow: bool = False,
    distributed: Any = None,
    verbose: int | None = None,
    precision: str = "fp32",
) -> History:
    """Train ``model`` (a SequenceModel) and return its :class:`History`.

    Args:
        model: rnnfast.SequenceModel (its parameters are updated in place).
        train_data, val_data: Dataset, a task's Split (``rnnfast.tasks``) or (x, y) /
            (x, y, lengths), in the model's layout (time-major, or batch-first for a
            ``batch_first=True`` model; module docstring).
        loss: an rnnfast loss (``loss(pred, target, mask) -> (value, dpred)``).
        optimizer: an rnnfast optimizer over ``model.parameters()`` (``step(grads)``, ``lr``).
        epochs: total number of epochs (a resumed run continues up to this number).
        batch_size: sequences per batch.
        bptt: None (full BPTT) or (k1, k2) truncated BPTT with k2 >= k1 >= 1.
        stateful: carry the final state of each batch into the next (see the module docstring).
        clip_norm / clip_value: clip the global gradient norm / each entry before every update.
        scheduler: an rnnfast LR scheduler, stepped once per epoch (ReduceLROnPlateau with the
            monitored loss: val_loss, or loss without validation data).
        callbacks: Callback objects or functions ``f(epoch, logs)`` called at each epoch end (return
            True to stop).
        checkpoint: file path of the latest checkpoint (best model in ``<stem>.best<suffix>``).
        checkpoint_every: epochs between latest-checkpoint writes (the last epoch is always written).
        resume: continue from ``checkpoint`` if that file exists (else start fresh).
        early_stopping: an EarlyStopping, or an int patience (monitor val_loss, restore best).
        progress: tqdm bar (loss, grad norm, lr, seq/s) when stdout and stderr are terminals.
        verbose: None (default): the bar of ``progress`` only, nothing that stays (unchanged, so
            callers that print their own lines, like the CLI, do not print twice); 0: silent (no
            bar either); 1: one line per epoch on stdout that stays (Keras's habit: epoch, loss,
            metrics, val_loss, seconds), with the bar during the epoch on a terminal; 2: the
            lines, never a bar (logs, notebooks).
        seed: seeds the data order and (when given) re-seeds the model's dropout RNG.
        metrics: "accuracy" and/or callables ``f(pred, y, mask) -> float`` (train and val).
        on_nonfinite: "raise" (NonFiniteError naming epoch, step and parameter) or "skip" the update.
        log_grad_flow: add "grad_flow" to each epoch record: per layer/direction, ||dL/dh_t|| averaged
            over the batch, for every step t of the epoch's last full-BPTT batch.
        distributed: data parallelism over MPI (see :mod:`rnnfast.distributed`): None uses the
            context of ``rnnfast.distributed.init()`` if one was made, True makes it, False never;
            or a ``rnnfast.distributed.DataParallel``. ``batch_size`` is then the global batch.
        precision: "fp32", or "bf16": the recurrent layers' products in bf16 with fp32
            accumulation, weights and optimizer state fp32 (:mod:`rnnfast._precision`), with full
            BPTT or ``bptt`` (the truncated-BPTT streams run the same sequence kernels); float32
            models only. A stack's own ``precision`` (not None) wins over this one.

    Raises:
        NonFiniteError, TrainingInterrupted (SIGINT), ValueError/TypeError for bad arguments.
    """
    _check_parts(model, loss, optimizer)
    _check_seed(seed)
    epochs, batch_size = _check_counts(epochs, batch_size, checkpoint_every)
    _check_modes(verbose, on_nonfinite)
    bptt = _check_bptt(model, bptt, bool(stateful))
    precision = _check_fit_precision(model, precision)
    clip_norm, clip_value = _check_clip(clip_norm, clip_value)
    early_stopping = _check_early_stopping(early_stopping)
    train, val = _check_data(model, train_data, val_data, batch_size, bool(stateful))
    mets = _check_metrics(metrics)
    cbs = _check_callbacks(callbacks, early_stopping)
    ckpt_path = None if checkpoint is None else os.fspath(checkpoint)
    if resume and ckpt_path is None:
        raise ValueError("resume: needs checkpoint=<path>")
    if ckpt_path is not None:  # before any training: a bad path must not cost an epoch's work
        ckpt_path = _io.check_writable(ckpt_path, "checkpoint")
        _io.check_writable(_ckpt._best_path(ckpt_path), "checkpoint (best model)")

    dist = _resolve_distributed(distributed)
    if dist is not None:
        seed = dist.agree_seed(seed)
    trainer = Trainer(
        model,
        loss,
        optimizer,
        train,
        epochs=epochs,
        batch_size=batch_size,
        val=val,
        bptt=bptt,
        stateful=bool(stateful),
        clip_norm=clip_norm,
        clip_value=clip_value,
        scheduler=scheduler,
        callbacks=cbs,
        checkpoint=ckpt_path,
        checkpoint_every=checkpoint_every,
        early_stopping=early_stopping,
        progress=progress,
        verbose=verbose,
        seed=seed,
        metrics=metrics,
        mets=mets,
        on_nonfinite=on_nonfinite,
        log_grad_flow=log_grad_flow,
        dist=dist,
    )
    if resume and ckpt_path is not None and os.path.exists(ckpt_path):
        _ckpt.resume(ckpt_path, trainer)
    with _precision.precision(precision):
        return trainer.train()


# --------------------------------------------------------------------------------------------------
# fit's argument checks (in the order fit makes them: the first bad argument is the one named)
# --------------------------------------------------------------------------------------------------


def _check_parts(model: Any, loss: Any, optimizer: Any) -> None:
    if not isinstance(model, SequenceModel):
        raise TypeError(f"model: expected a rnnfast.SequenceModel, got {type(model).__name__}")
    if not callable(getattr(optimizer, "step", None)):
        raise TypeError(
            f"optimizer: expected an rnnfast optimizer with step(grads), got {type(optimizer).__name__}"
        )
    if not callable(loss):
        raise TypeError(
            f"loss: expected a callable loss(pred, target, mask), got {type(loss).__name__}"
        )
    _check_optimizer_params(model, optimizer)


def _check_fit_precision(model: SequenceModel, precision: Any) -> str:
    precision = _precision.check_precision(precision)
    if precision == "bf16" and np.dtype(model.dtype) != np.float32:
        raise ValueError(f"precision: 'bf16' needs a float32 model, got {np.dtype(model.dtype)}")
    return precision


def _check_seed(seed: Any) -> None:
    if seed is not None:
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed: expected None or an int >= 0, got {type(seed).__name__}")
        if seed < 0:
            raise ValueError(f"seed: expected None or an int >= 0, got {seed}")


def _check_counts(epochs: Any, batch_size: Any, checkpoint_every: Any) -> tuple[int, int]:
    for name, v in (
        ("epochs", epochs),
        ("batch_size", batch_size),
        ("checkpoint_every", checkpoint_every),
    ):
        if (
            isinstance(v, bool)
            or not isinstance(v, (int, np.integer))
            or v < (0 if name == "epochs" else 1)
        ):
            raise ValueError(
                f"{name}: expected an int >= {0 if name == 'epochs' else 1}, got {v!r}"
            )
    return int(epochs), int(batch_size)


def _check_modes(verbose: Any, on_nonfinite: Any) -> None:
    if verbose is not None and (
        isinstance(verbose, (bool, np.bool_))
        or not isinstance(verbose, (int, np.integer))
        or verbose not in (0, 1, 2)
    ):
        raise ValueError(f"verbose: expected None, 0, 1 or 2, got {verbose!r}")
    if on_nonfinite not in ("raise", "skip"):
        raise ValueError(f"on_nonfinite: expected 'raise' or 'skip', got {on_nonfinite!r}")


def _check_bptt(model: SequenceModel, bptt: Any, stateful: bool) -> tuple[int, int] | None:
    if bptt is not None:
        if not isinstance(bptt, (tuple, list)) or len(bptt) != 2:
            raise TypeError(f"bptt: expected None or a pair (k1, k2), got {bptt!r}")
        k1, k2 = (
            int(k) if isinstance(k, (int, np.integer)) and not isinstance(k, bool) else -1
            for k in bptt
        )
        if k1 < 1 or k2 < k1:
            raise ValueError(f"bptt: expected (k1, k2) with k2 >= k1 >= 1, got {tuple(bptt)}")
        bptt = (k1, k2)
    if bptt is not None or stateful:
        if model.mode not in _SEQ_MODES:
            raise ValueError(
                f"bptt/stateful: truncated and stateful training need a per-step output "
                f"(many_to_many or one_to_many), got mode {model.mode!r}"
            )
        if model.rnn.bidirectional:
            raise ValueError(
                "bptt/stateful: a bidirectional model cannot stream (its backward direction "
                "needs the whole sequence); use bptt=None and stateful=False"
            )
        # a minimal stack (MinGRU / MinLSTM) has no truncated-BPTT stream: refused here, before
        # any work, not when the first epoch begins its first stream
        model._check_streams("fit")
    return bptt


def _check_clip(clip_norm: Any, clip_value: Any) -> tuple[float | None, float | None]:
    for name, v in (("clip_norm", clip_norm), ("clip_value", clip_value)):
        if v is not None and (  # NumPy scalars are numbers too (np.float32(1.0)); bools are not
            isinstance(v, (bool, np.bool_))
            or not isinstance(v, (int, float, np.integer, np.floating))
            or not v > 0
        ):
            raise ValueError(f"{name}: expected None or a float > 0, got {v!r}")
    return (
        None if clip_norm is None else float(clip_norm),
        None if clip_value is None else float(clip_value),
    )


def _check_early_stopping(early_stopping: Any) -> EarlyStopping | None:
    if isinstance(early_stopping, (int, np.integer)) and not isinstance(early_stopping, bool):
        early_stopping = EarlyStopping(patience=early_stopping)
    if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
        raise TypeError(
            f"early_stopping: expected an EarlyStopping or an int patience, got "
            f"{type(early_stopping).__name__}"
        )
    return early_stopping


def _check_data(
    model: SequenceModel, train_data: Any, val_data: Any, batch_size: int, stateful: bool
) -> tuple[Dataset, Dataset | None]:
    bf_model = model.rnn.batch_first
    train = _as_dataset(train_data, model.mode, "train_data", bf_model)
    val = None if val_data is None else _as_dataset(val_data, model.mode, "val_data", bf_model)
    for name, ds in (("train_data", train), ("val_data", val)):
        if ds is not None and ds.n == 0:
            raise ValueError(f"{name}: expected at least one sequence, got 0")
    if stateful:
        if train.n % batch_size != 0:
            raise ValueError(
                f"batch_size: stateful training needs the number of sequences ({train.n}) "
                f"to be a multiple of batch_size, got {batch_size}"
            )
        if train.lengths is not None:
            raise ValueError("train_data: stateful training takes dense series (no lengths)")
    return train, val


def _check_callbacks(
    callbacks: Sequence[Callback | Callable[..., Any]], early_stopping: EarlyStopping | None
) -> list[Callback]:
    cbs: list[Callback] = []
    for cb in callbacks:
        if isinstance(cb, Callback):
            cbs.append(cb)
        elif callable(cb):
            cbs.append(_FunctionCallback(cb))
        else:
            raise TypeError(
                f"callbacks: expected Callback objects or functions, got {type(cb).__name__}"
            )
    if early_stopping is not None:
        cbs.append(early_stopping)
    return cbs
