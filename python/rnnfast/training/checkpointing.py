"""Checkpoints of :func:`rnnfast.fit`: the typed train state (position, running sums, data order,
best loss), the latest checkpoint (everything an exact resume needs, in the metadata layout
``{"fit": {...}}`` that every earlier rnnfast wrote), the best model, and the resume: validation of
what a checkpoint says (:func:`_check_resume`) before anything is restored.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import io as _io
from .metrics import _Acc

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["TrainState"]

Array = np.ndarray


@dataclass
class TrainState:
    """Where training stands: what a checkpoint saves besides the model, optimizer and scheduler.

    ``epoch`` (completed epochs), ``batch`` (next batch of the epoch), ``chunk`` (next TBPTT chunk of
    that batch), ``step`` (optimizer steps so far, skipped updates not counted); ``acc`` the epoch's
    running sums; ``order`` the epoch's batch order (None between epochs); ``best_loss`` the lowest
    monitored loss so far (None before a finite one); ``data_rng`` the generator of the data order.
    """

    data_rng: np.random.Generator
    epoch: int = 0
    batch: int = 0
    chunk: int = 0
    step: int = 0
    acc: _Acc = field(default_factory=_Acc)
    order: Array | None = None
    best_loss: float | None = None

    def pos(self) -> dict[str, int]:
        """The position as the checkpoint stores it (``fit.pos``)."""
        return {"epoch": self.epoch, "batch": self.batch, "chunk": self.chunk, "step": self.step}


def _best_path(path: str) -> str:
    root, ext = os.path.splitext(path)
    return f"{root}.best{ext or '.npz'}"


def _real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


#: Accumulator entries that count things: finite and >= 0 (metric counts end in "_n").
_ACC_COUNTS = ("n", "acc_c", "acc_n", "clipped", "updates", "seqs", "skipped", "elapsed", "gn_sum")


def _check_resume(
    path: str,
    fm: Mapping[str, Any],
    extra_arrays: Mapping[str, Any],
    *,
    n_seq: int,
    t_steps: int,
    batch_size: int,
    bptt: tuple[int, int] | None,
    stateful: bool,
) -> None:
    """Validate fit's resume state read from ``path`` before anything is restored.

    Tampered or nonsensical values raise CheckpointError naming the key; settings that differ from
    the recorded ones (exact resume replays the run) raise ValueError naming both values.
    """

    def bad(key: str, expected: str, got: Any) -> _io.CheckpointError:
        return _io.CheckpointError(f"{path}: {key}: expected {expected}, got {got!r}")

    # settings recorded by the run (older checkpoints lack batch_size and n_sequences)
    current = {
        "bptt": list(bptt) if bptt else None,
        "stateful": bool(stateful),
        "batch_size": batch_size,
        "n_sequences": n_seq,
    }
    for key, now in current.items():
        if key in fm and fm[key] != now:
            raise ValueError(
                f"{key}: the checkpoint {path} was written with {key}={fm[key]!r}, this call has "
                f"{key}={now!r}; resume with the settings of the run (exact resume replays it)"
            )
    pos = fm.get("pos")
    if not isinstance(pos, Mapping):
        raise bad("fit.pos", "an object with epoch, batch, chunk, step", pos)
    for k in ("epoch", "batch", "chunk", "step"):
        v = pos.get(k)
        if not _real(v) or not isinstance(v, int) or v < 0:
            raise bad(f"fit.pos.{k}", "an int >= 0", v)
    n_batches = (n_seq + batch_size - 1) // batch_size
    if pos["batch"] > n_batches:
        raise bad("fit.pos.batch", f"at most {n_batches} (batches per epoch)", pos["batch"])
    k1 = bptt[0] if bptt else t_steps
    n_chunks = (t_steps + k1 - 1) // k1 if (bptt is not None or stateful) else 1
    if pos["chunk"] >= n_chunks or (pos["chunk"] and pos["batch"] == n_batches):
        raise bad("fit.pos.chunk", f"less than {n_chunks} (chunks per batch)", pos["chunk"])
    history = fm.get("history")
    if not isinstance(history, list) or len(history) != pos["epoch"]:
        raise bad(
            "fit.history",
            f"a list of {pos['epoch']} epoch records (fit.pos.epoch)",
            type(history).__name__ if not isinstance(history, list) else f"{len(history)} records",
        )
    for i, rec in enumerate(history):
        if (
            not isinstance(rec, Mapping)
            or rec.get("epoch") != i + 1
            or isinstance(rec.get("epoch"), bool)
            or not _real(rec.get("loss"))
        ):
            raise bad(f"fit.history[{i}]", f"a record with epoch {i + 1} and a loss", rec)
    acc = fm.get("acc")
    if not isinstance(acc, Mapping):
        raise bad("fit.acc", "an object of running sums", acc)
    for k, v in acc.items():
        if not _real(v):
            raise bad(f"fit.acc[{k!r}]", "a number", v)
        if (k in _ACC_COUNTS or k.endswith("_n")) and not (math.isfinite(v) and v >= 0):
            raise bad(f"fit.acc[{k!r}]", "a finite number >= 0", v)
        if k == "gn_max" and (math.isnan(v) or v < 0):
            raise bad(f"fit.acc[{k!r}]", "a number >= 0", v)
    best = fm.get("best_loss")
    if best is not None and not (_real(best) and math.isfinite(best)):
        raise bad("fit.best_loss", "null or a finite number", best)
    es = fm.get("early_stopping")
    if es is not None:
        if not isinstance(es, Mapping):
            raise bad("fit.early_stopping", "an object", es)
        if es.get("best") is not None and not _real(es["best"]):
            raise bad("fit.early_stopping.best", "null or a number", es["best"])
        for k in ("best_epoch", "wait"):
            v = es.get(k, 0)
            if v is not None and (not _real(v) or not isinstance(v, int) or v < 0):
                raise bad(f"fit.early_stopping.{k}", "an int >= 0", v)
    if "order" in extra_arrays:
        order = np.asarray(extra_arrays["order"])
        if (
            order.dtype.kind not in "iu"
            or order.shape != (n_seq,)
            or not np.array_equal(np.sort(order), np.arange(n_seq))
        ):
            raise bad(
                "extra_arrays['order']",
                f"a permutation of the {n_seq} training sequences",
                f"{order.dtype} array of shape {order.shape}",
            )
    elif pos["batch"] or pos["chunk"]:
        raise bad("extra_arrays['order']", "the epoch's batch order (mid-epoch position)", None)
    ints = fm.get("stream_ints", {})
    if not isinstance(ints, Mapping) or not all(_real(v) for v in ints.values()):
        raise bad("fit.stream_ints", "an object of ints", ints)


def save_latest(path: str, t: Trainer) -> None:
    """Write the latest checkpoint of trainer ``t`` (on the root rank only when distributed)."""
    if t.dist is not None and not t.dist.is_root:
        return
    st, model, es = t.state, t.model, t.early_stopping
    meta = {
        "fit": {
            "pos": st.pos(),
            "acc": dict(st.acc.s),
            "data_rng": _io.rng_state(st.data_rng),
            "model_rng": _io.rng_state(model.rnn.rng),
            "history": t.history.epochs,
            "best_loss": st.best_loss,
            "bptt": list(t.bptt) if t.bptt else None,
            "stateful": bool(t.stateful),
            "batch_size": t.batch_size,  # checked on resume, as bptt and stateful
            "n_sequences": t.train_data.n,
        }
    }
    extra: dict[str, Any] = {}
    if st.order is not None:
        extra["order"] = st.order
    if es is not None:
        meta["fit"]["early_stopping"] = es.state()
        if es.best_weights is not None:
            extra.update({f"best/{k}": v for k, v in es.best_weights.items()})
    if t.streaming and model.rnn._stream is not None:
        ints = {}
        for k, v in model.stream_export().items():
            if isinstance(v, (int, np.integer)):
                ints[k] = int(v)
            elif isinstance(v, tuple):
                extra[f"stream/{k}"] = np.stack(v)  # LSTM (h, c) -> (2, L, B, H)
            else:
                extra[f"stream/{k}"] = v
        meta["fit"]["stream_ints"] = ints
    _io.save(path, model, t.optimizer, meta, scheduler=t.scheduler, extra_arrays=extra)


def save_best(path: str, t: Trainer, monitored: float | None, epoch: int) -> None:
    """Write the model to ``<stem>.best<suffix>`` of ``path`` if ``monitored`` beats the best loss
    so far (the best loss is tracked on every rank, written by the root)."""
    st = t.state
    if (
        monitored is not None
        and math.isfinite(monitored)
        and (st.best_loss is None or monitored < st.best_loss)
    ):
        st.best_loss = float(monitored)
        if t.dist is None or t.dist.is_root:
            best_meta = {"epoch": epoch, "loss": st.best_loss}
            _io.save(_best_path(path), t.model, None, best_meta)


def resume(path: str, t: Trainer) -> None:
    """Restore trainer ``t`` from the latest checkpoint ``path`` (written by fit), validated first:
    weights, optimizer and scheduler state, position, running sums, RNG states, history, best loss,
    early-stopping state and the carried stream."""
    ck = _io.load(path)
    fm = ck.meta.get("fit")
    if not isinstance(fm, Mapping):
        raise ValueError(f"checkpoint: {path} was not written by fit (no 'fit' metadata)")
    _check_resume(
        path,
        fm,
        ck.extra_arrays,
        n_seq=t.train_data.n,
        t_steps=int(t.train_data.x.shape[0]),
        batch_size=t.batch_size,
        bptt=t.bptt,
        stateful=bool(t.stateful),
    )
    try:  # validated layouts, before anything is restored
        resumed_rngs = [_io.rng_from_state(fm[k]) for k in ("data_rng", "model_rng")]
    except (KeyError, ValueError) as exc:
        raise _io.CheckpointError(f"{path}: fit.data_rng / fit.model_rng: {exc}") from None
    model, es = t.model, t.early_stopping
    ck.restore_model(model)
    if ck.optimizer_state is not None:
        ck.restore_optimizer(t.optimizer)
    if t.scheduler is not None and ck.scheduler_state is not None:
        ck.restore_scheduler(t.scheduler)
    pos = {k: int(fm["pos"][k]) for k in ("epoch", "batch", "chunk", "step")}
    t.state = TrainState(resumed_rngs[0], **pos, acc=_Acc(fm["acc"]))
    model.rnn.rng = resumed_rngs[1]
    t.history.epochs = [dict(e) for e in fm["history"]]
    t.state.best_loss = fm.get("best_loss")
    if "order" in ck.extra_arrays:
        t.state.order = np.asarray(ck.extra_arrays["order"], dtype=np.int64)
    if es is not None and "early_stopping" in fm:
        es.load_state(fm["early_stopping"])
        bw = {k[len("best/") :]: v for k, v in ck.extra_arrays.items() if k.startswith("best/")}
        es.best_weights = bw or None
    sa = {k[len("stream/") :]: v for k, v in ck.extra_arrays.items() if k.startswith("stream/")}
    if sa:
        sa.update(fm.get("stream_ints", {}))
        try:
            model.stream_import(sa)
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise _io.CheckpointError(
                f"{path}: extra_arrays['stream/...'] / fit.stream_ints: the carried "
                f"stream cannot be restored ({type(exc).__name__}: {exc})"
            ) from None
        t.stream_loaded = True
