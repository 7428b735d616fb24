"""The :class:`Trainer` behind :func:`rnnfast.fit`: the epoch loop, one optimizer step of full BPTT
(:meth:`Trainer.full_bptt_step`) or of a stream (truncated BPTT and/or stateful carry,
:meth:`Trainer.streaming_step`), the update with its non-finite checks and clipping, the epoch's
record with the validation, and the checkpoints.

A Trainer takes validated settings (``fit`` checks its arguments and builds one); callbacks see it
as ``self.trainer`` (``model``, ``optimizer``, ``history``, ``stop_training``).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import optim as _optim
from .._loader import core as _core
from .._threads import with_single_thread_blas
from ..losses import sequence_mask
from ..modules import SequenceModel
from . import checkpointing as _ckpt
from .callbacks import Callback, EarlyStopping, History, _bar_update, _epoch_line
from .data import Dataset, _backward_batch, _forward_batch, _n_items
from .interrupt import TrainingInterrupted, _SigintFlag, _Stop
from .metrics import _Acc, _accuracy_counts, _check_eval_loss, _means

__all__ = ["NonFiniteError", "Trainer"]

Array = np.ndarray


class NonFiniteError(FloatingPointError):
    """A non-finite loss or gradient stopped training. Attributes: epoch, step (global optimizer step,
    0-based), batch (index within the epoch), name ("loss" or the parameter name)."""

    def __init__(self, message: str, *, epoch: int, step: int, batch: int, name: str) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step
        self.batch = batch
        self.name = name


def _stdio_is_tty() -> bool:
    try:
        return sys.stderr.isatty() and sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def evaluate_dataset(
    model: SequenceModel,
    ds: Dataset,
    loss: Any,
    batch_size: int,
    mets: Sequence[tuple[str, Any]],
) -> dict[str, float]:
    """Loss and metrics of ``model`` over ``ds`` (checked arguments; see :func:`rnnfast.evaluate`),
    whole sequences per batch, in eval mode (the mode is restored afterwards)."""
    _check_eval_loss(loss)
    was = model.training
    model.eval()
    acc = _Acc()
    try:
        for xb, yb, lb in ds.batches(int(batch_size)):
            pred, y, mask = _forward_batch(model, xb, yb, lb)
            value = loss.forward(pred, y, mask)
            w = _n_items(mask, y, model)
            acc.add("loss", value * w)
            acc.add("n", w)
            for name, m in mets:
                if m == "accuracy":
                    c, n = _accuracy_counts(loss, pred, y, mask)
                    acc.add("acc_c", c)
                    acc.add("acc_n", n)
                else:
                    acc.add(name, float(m(pred, y, mask)) * y.shape[ds.y_axis])
                    acc.add(name + "_n", y.shape[ds.y_axis])
    finally:
        model.train(was)
    out = {"loss": acc.get("loss") / max(acc.get("n"), 1.0)}
    out.update(_means(acc, mets))
    return out


class Trainer:
    """Trains a SequenceModel with settings that :func:`rnnfast.fit` has checked (its arguments
    mean the same here; ``callbacks`` are Callback objects, ``mets`` the checked metrics,
    ``checkpoint`` a checked path or None, ``dist`` a DataParallel or None).

    Building one seeds the data order and (``seed`` given) the model's dropout RNG; :func:`resume`
    (``rnnfast.training.checkpointing``) may then restore a checkpoint; :meth:`train` runs the epochs
    and returns the :class:`History`.
    """

    def __init__(
        self,
        model: SequenceModel,
        loss: Any,
        optimizer: Any,
        train: Dataset,
        *,
        epochs: int,
        batch_size: int,
        val: Dataset | None = None,
        bptt: tuple[int, int] | None = None,
        stateful: bool = False,
        clip_norm: float | None = None,
        clip_value: float | None = None,
        scheduler: Any = None,
        callbacks: Sequence[Callback] = (),
        checkpoint: str | None = None,
        checkpoint_every: int = 1,
        early_stopping: EarlyStopping | None = None,
        progress: bool = True,
        verbose: int | None = None,
        seed: int | None = None,
        metrics: Sequence[Any] = (),
        mets: Sequence[tuple[str, Any]] = (),
        on_nonfinite: str = "raise",
        log_grad_flow: bool = False,
        dist: Any = None,
    ) -> None:
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.train_data, self.val_data = train, val
        self.epochs, self.batch_size = epochs, batch_size
        self.bptt, self.stateful = bptt, bool(stateful)
        self.streaming = bptt is not None or self.stateful
        self.clip_norm, self.clip_value = clip_norm, clip_value
        self.scheduler = scheduler
        self.callbacks = list(callbacks)
        self.checkpoint, self.checkpoint_every = checkpoint, checkpoint_every
        self.early_stopping = early_stopping
        self.progress, self.verbose = progress, verbose
        self.metrics, self.mets = metrics, list(mets)
        self.on_nonfinite, self.log_grad_flow = on_nonfinite, log_grad_flow
        self.dist = dist
        # what callbacks see
        self.history = History()
        self.stop_training = False
        self.stop_reason = "callback"
        for cb in self.callbacks:
            cb.trainer = self
        data_seq, drop_seq = np.random.SeedSequence(seed).spawn(2)
        self.state = _ckpt.TrainState(np.random.default_rng(data_seq))
        if seed is not None:
            model.rnn.rng = np.random.default_rng(drop_seq)
        self.stream_loaded = False  # a resumed checkpoint restored the carried stream
        self.grad_flow: list[list[float]] | None = None
        self.bar: Any = None
        self.sigint = _SigintFlag()

    # ---- the run ---------------------------------------------------------------------------------

    @with_single_thread_blas  # NumPy's BLAS pool would fight the kernels' threads
    def train(self) -> History:
        """Run the epochs up to ``epochs`` (from where the state stands) and return the history.

        Raises NonFiniteError, TrainingInterrupted (SIGINT, after a final checkpoint)."""
        model, st, dist = self.model, self.state, self.dist
        if dist is not None:
            dist.setup(model)  # rank 0's weights everywhere; own dropout stream per rank
        self.sigint.install()
        is_root = dist is None or dist.is_root
        self.use_bar = (
            bool(self.progress) and self.verbose not in (0, 2) and _stdio_is_tty() and is_root
        )
        self.epoch_lines = self.verbose in (1, 2) and is_root
        self._setup_grads()
        # Non-finite values are detected and reported by fit itself (NonFiniteError / skip): NumPy's
        # overflow/invalid warnings on the way there would only duplicate that.
        errstate = np.errstate(over="ignore", invalid="ignore", divide="ignore")
        errstate.__enter__()
        try:
            for cb in self.callbacks:
                cb.on_train_begin({"epoch": st.epoch})
            while self.state.epoch < self.epochs and not self.stop_training:
                self.run_epoch()
            if self.stop_training:
                self.history.stop_reason = self.stop_reason
            for cb in self.callbacks:
                cb.on_train_end({"epoch": self.state.epoch})
            return self.history
        except _Stop:
            self.history.stop_reason = "interrupted"
            if self.checkpoint is not None:
                _ckpt.save_latest(self.checkpoint, self)
            raise TrainingInterrupted(self.history, self.checkpoint) from None
        finally:
            errstate.__exit__(None, None, None)
            if self.bar is not None:
                self.bar.close()
            self.sigint.restore()
            model.zero_grad()
            if self.streaming and model.rnn._stream is not None:
                model.stream_end()

    def _setup_grads(self) -> None:
        # The model's gradients as one flat buffer (rnnfast modules keep them so): the non-finite
        # check, the norm, the clipping and the update are then one call each over it.
        self.grads = grads = self.model.grads
        self.gflat = gflat = _optim._flat_view(list(grads.values()))
        opt_flat = getattr(self.optimizer, "_flat", None)
        self.fused = (
            gflat is not None
            and isinstance(self.optimizer, _optim.Optimizer)
            and opt_flat is not None
            and opt_flat.size == gflat.size
            and list(self.optimizer.params) == list(grads)
        )

    def run_epoch(self) -> None:
        """One epoch (or the rest of one, after a resume): its batches, then :meth:`end_epoch`."""
        st, train, model, bs = self.state, self.train_data, self.model, self.batch_size
        ep = st.epoch
        fresh_epoch = st.batch == 0 and st.chunk == 0 and st.order is None
        if fresh_epoch:
            st.acc = _Acc()
            st.order = (
                st.data_rng.permutation(train.n)
                if (train.shuffle and not self.stateful)
                else np.arange(train.n)
            )
            for cb in self.callbacks:
                cb.on_epoch_begin(ep, {"epoch": ep})
        assert st.order is not None
        n_batches = (train.n + bs - 1) // bs
        t0 = time.perf_counter()
        if self.use_bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=n_batches,
                initial=st.batch,
                desc=f"epoch {ep + 1}/{self.epochs}",
                leave=False,
                file=sys.stderr,
            )
        if self.stateful and not self.stream_loaded and st.batch == 0 and st.chunk == 0:
            k1s, k2s = self.bptt if self.bptt else (train.x.shape[0], train.x.shape[0])
            # chunks never exceed T and the stream restarts every epoch (n_batches * T steps):
            # size its buffers by that, not by a larger k2 (same gradients)
            t_all = train.x.shape[0]
            k1s, k2s = min(k1s, t_all), min(k2s, n_batches * t_all)
            model.stream_begin(
                bs if self.dist is None else self.dist.local_size(bs),
                k1s,
                k2s,
                replayable=self.checkpoint is not None,
            )
        self.stream_loaded = False
        model.train()
        while st.batch < n_batches:
            bi = st.batch
            idx = st.order[bi * bs : (bi + 1) * bs]
            xb, yb, lb = train.batch(idx) if self.dist is None else self.dist.batch(train, idx)
            if self.streaming:
                self.streaming_step(ep, bi, idx, xb, yb, lb, t0)
            else:
                self.full_bptt_step(ep, bi, idx, xb, yb, lb, t0)
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.end_epoch(ep, t0)

    # ---- one step --------------------------------------------------------------------------------

    def full_bptt_step(
        self, ep: int, bi: int, idx: Array, xb: Array, yb: Array, lb: Array | None, t0: float
    ) -> None:
        """Batch ``bi`` of epoch ``ep`` (rows ``idx``: x ``xb``, y ``yb``, lengths ``lb``,
        time-major): forward over the whole sequences, backward through all their steps, one
        update."""
        model, st = self.model, self.state
        pred, y, mask = _forward_batch(model, xb, yb, lb)
        value, dpred = self.loss(pred, y, mask)
        self._add_metrics(pred, y, mask, value)
        if math.isfinite(value):
            _backward_batch(model, dpred)
            if self.log_grad_flow:
                self.grad_flow = [
                    np.linalg.norm(np.asarray(g, np.float64), axis=2).mean(axis=1).tolist()
                    for g in model.rnn.last_state_grads
                ]
        value = self._reduce_step(pred, y, mask, value)
        self._update(ep, bi, value)
        st.acc.add("seqs", len(idx))
        st.batch += 1
        if self.bar is not None:
            _bar_update(self.bar, st.acc, self.optimizer, t0)
        self._after_step(ep, bi, value)

    def streaming_step(
        self, ep: int, bi: int, idx: Array, xb: Array, yb: Array, lb: Array | None, t0: float
    ) -> None:
        """Batch ``bi`` of epoch ``ep`` as a stream (arguments as :meth:`full_bptt_step`): truncated
        BPTT within the batch (an update every k1 steps, each backpropagated through the last k2)
        and/or the stateful carry across batches; continues at ``state.chunk`` after a resume."""
        model, st, train = self.model, self.state, self.train_data
        t_steps = xb.shape[0]
        k1 = self.bptt[0] if self.bptt else t_steps
        if self.stateful:
            if st.chunk == 0 and train.resets is not None:
                local = idx if self.dist is None else self.dist.local_index(idx)
                rows = np.flatnonzero(train.resets[local])
                if rows.size:
                    model.stream_reset(rows)
        elif st.chunk == 0:  # a new batch starts fresh (also right after a resume: a stream
            # restored from a checkpoint taken at a batch boundary is the finished batch's, whose
            # state must not carry into this one). The batch's stream ends after t_steps: no window
            # is longer, so its buffers are sized by min(k2, T) (same gradients; bptt=(3, 20000)
            # on 10 steps must not allocate 20000 steps)
            model.stream_begin(
                xb.shape[1],
                min(k1, t_steps),
                min(self.bptt[1], t_steps) if self.bptt else t_steps,
                lengths=lb,
                replayable=self.checkpoint is not None,
            )
        n_chunks = (t_steps + k1 - 1) // k1
        while st.chunk < n_chunks:
            c = st.chunk
            a, b = c * k1, min((c + 1) * k1, t_steps)
            pred = model.stream_forward(xb[a:b])
            y = yb[a:b]
            mask = None if lb is None else sequence_mask(np.clip(lb - a, 0, b - a), b - a)
            value, dpred = self.loss(pred, y, mask)
            self._add_metrics(pred, y, mask, value)
            if math.isfinite(value):
                model.stream_backward(dpred)
            value = self._reduce_step(pred, y, mask, value)
            if not self._update(ep, bi, value):
                self._finite_state_or_reset()
            st.chunk += 1
            if st.chunk == n_chunks:
                st.chunk = 0
                st.batch += 1
                st.acc.add("seqs", len(idx))
                if self.bar is not None:
                    _bar_update(self.bar, st.acc, self.optimizer, t0)
            self._after_step(ep, bi, value)
            if st.chunk == 0:
                break

    # ---- the update ------------------------------------------------------------------------------

    def _first_nonfinite_grad(self) -> str | None:
        for name, g in self.grads.items():
            if not np.all(np.isfinite(g)):
                return name
        return None

    def _grad_norm_and_bad(self) -> tuple[float, str | None]:
        """The global L2 norm of the gradients (float64 accumulation) and the first parameter
        with a non-finite gradient (None if all are finite)."""
        sumsq, _ = _optim.grad_sumsq_maxabs(self.gflat if self.gflat is not None else self.grads)
        if math.isfinite(sumsq):
            return math.sqrt(sumsq), None
        return math.sqrt(sumsq), self._first_nonfinite_grad()  # which one (or an overflow: none)

    def _skip_or_raise(self, message: str, ep: int, bi: int, name: str) -> bool:
        """A non-finite loss or gradient: NonFiniteError, or (``on_nonfinite="skip"``) drop the
        gradients and count the skipped update; returns False (no update)."""
        if self.on_nonfinite == "raise":
            step = self.state.step
            raise NonFiniteError(
                f"{message} at epoch {ep}, step {step} (batch {bi})",
                epoch=ep,
                step=step,
                batch=bi,
                name=name,
            )
        self.model.zero_grad()
        self.state.acc.add("skipped", 1)
        return False

    def _update(self, ep: int, bi: int, value: float) -> bool:
        """Checks, clipping and the optimizer step; False if the update was skipped."""
        st, gflat, grads = self.state, self.gflat, self.grads
        if not math.isfinite(value):
            return self._skip_or_raise(f"non-finite loss ({value})", ep, bi, "loss")
        norm, bad = self._grad_norm_and_bad()
        if bad is not None:
            return self._skip_or_raise(f"non-finite gradient of parameter {bad!r}", ep, bi, bad)
        g_all: Any = gflat if gflat is not None else grads
        clipped = False
        if self.clip_norm is not None:  # clip_grad_norm_'s rule, with the norm computed above
            coef = self.clip_norm / (norm + 1e-6) if math.isfinite(norm) else 1.0
            if coef < 1.0:
                clipped = True
                if gflat is not None:
                    _core.grad_scale(gflat, coef)  # g *= coef
                else:
                    for g in grads.values():
                        g *= coef
        if self.clip_value is not None:
            clipped = _optim.clip_grad_value_(g_all, self.clip_value) > self.clip_value or clipped
        self.optimizer.step(gflat if self.fused else grads)
        self.model.zero_grad()
        st.acc.add("gn_sum", norm)
        st.acc.max("gn_max", norm)
        st.acc.add("clipped", float(clipped))
        st.acc.add("updates", 1)
        st.step += 1
        return True

    def _add_metrics(self, pred: Array, y: Array, mask: Array | None, value: float) -> None:
        dist = self.dist
        a: Any = self.state.acc if dist is None else dist.stats  # distributed: summed per step
        w = _n_items(mask, y, self.model)
        if dist is None:
            a.add("loss", value * w)  # distributed: added by _reduce_step with the global value
        a.add("n", w)
        for name, m in self.mets:
            if m == "accuracy":
                c, n = _accuracy_counts(self.loss, pred, y, mask)
                a.add("acc_c", c)
                a.add("acc_n", n)
            else:
                a.add(name, float(m(pred, y, mask)))
                a.add(name + "_n", 1)

    def _reduce_step(self, pred: Array, y: Array, mask: Array | None, value: float) -> float:
        """Distributed: one Allreduce of gradients, loss and statistics; returns the global loss."""
        dist, acc = self.dist, self.state.acc
        if dist is None:
            return value
        share = dist.loss_share(self.loss, pred, y, mask)
        n0 = acc.get("n")
        value, stop = dist.allreduce_step(self.grads, value, share, into=acc, stop=self.sigint.flag)
        acc.add("loss", value * (acc.get("n") - n0))  # global batch loss x global items
        self.sigint.synced = stop  # the same on every rank: all stop after the same step
        return value

    def _after_step(self, ep: int, bi: int, value: float) -> None:
        logs = {
            "epoch": ep,
            "batch": bi,
            "loss": value,
            "lr": float(getattr(self.optimizer, "lr", float("nan"))),
        }
        for cb in self.callbacks:
            cb.on_batch_end(self.state.step, logs)
        if self.sigint.flag if self.dist is None else self.sigint.synced:
            raise _Stop

    def _finite_state_or_reset(self) -> None:
        st = self.model.stream_state
        if st is None:
            return
        parts = st if isinstance(st, tuple) else (st,)
        bad = np.zeros(parts[0].shape[1], dtype=bool)
        for a in parts:
            bad |= ~np.all(np.isfinite(a), axis=(0, 2))
        if bad.any():
            # drop the history too: the stored activations of those rows are not finite
            self.model.stream_reset(np.flatnonzero(bad), drop_history=True)

    # ---- the epoch's end -------------------------------------------------------------------------

    def epoch_record(self, ep: int, t0: float) -> dict[str, Any]:
        """The history record of epoch ``ep`` (started at ``t0``): losses, metrics, validation,
        gradient statistics, lr, speed."""
        acc, opt = self.state.acc, self.optimizer
        elapsed = time.perf_counter() - t0 + acc.get("elapsed")
        rec: dict[str, Any] = {"epoch": ep + 1, "loss": acc.get("loss") / max(acc.get("n"), 1.0)}
        rec.update(_means(acc, self.mets))
        rec["val_loss"] = None
        if self.val_data is not None:
            bs = max(self.batch_size, 256)
            ev = evaluate_dataset(self.model, self.val_data, self.loss, bs, self.mets)
            rec["val_loss"] = ev["loss"]
            for k, v in ev.items():
                if k != "loss":
                    rec[f"val_{k}"] = v
        updates = acc.get("updates")
        rec.update(
            {
                "grad_norm": acc.get("gn_sum") / updates if updates else None,
                "grad_norm_max": acc.get("gn_max") if updates else None,
                "clip_fraction": acc.get("clipped") / updates if updates else 0.0,
                "lr": float(getattr(opt, "lr", float("nan"))),
                "seq_per_s": acc.get("seqs") / elapsed if elapsed > 0 else None,
                "steps": int(updates),
                "skipped": int(acc.get("skipped")),
                "time_s": elapsed,
            }
        )
        if self.log_grad_flow and self.grad_flow is not None:
            rec["grad_flow"] = self.grad_flow
        return rec

    def end_epoch(self, ep: int, t0: float) -> None:
        """Record epoch ``ep``, step the scheduler, call the callbacks, move to the next epoch and
        write the checkpoints."""
        rec = self.epoch_record(ep, t0)
        self.history.epochs.append(rec)
        if self.epoch_lines:
            print(_epoch_line(rec, self.epochs), flush=True)
        monitored = rec["val_loss"] if rec["val_loss"] is not None else rec["loss"]
        if self.scheduler is not None:
            if isinstance(self.scheduler, _optim.ReduceLROnPlateau):
                self.scheduler.step(monitored)
            else:
                self.scheduler.step()
        for cb in self.callbacks:
            r = cb.on_epoch_end(ep, rec)
            if r is True:
                self.stop_training = True
        st = self.state
        st.epoch, st.batch, st.chunk = ep + 1, 0, 0
        st.order = None
        st.acc = _Acc()
        if self.streaming:
            self.model.stream_end()
        if self.checkpoint is not None:
            _ckpt.save_best(self.checkpoint, self, monitored, ep + 1)
            last = st.epoch >= self.epochs or self.stop_training
            if (ep + 1) % self.checkpoint_every == 0 or last:
                _ckpt.save_latest(self.checkpoint, self)
