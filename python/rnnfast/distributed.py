"""Data-parallel training over MPI (mpi4py), in the style of Horovod.

Launch one process per core or node, each with the whole dataset; every process runs the same
script (or ``python -m rnnfast train ... --distributed``)::

    mpiexec -n 4 python train.py

    import rnnfast, rnnfast.distributed as dist
    dist.init()                                   # COMM_WORLD; an exception on any rank aborts all
    model = rnnfast.build_model("lstm", 64, 256, 10, mode="many_to_one", seed=0)
    opt = rnnfast.optim.Adam(model.parameters(), lr=1e-3)
    rnnfast.fit(model, (x, y), loss, opt, epochs=5, batch_size=64, seed=0)   # batch_size: GLOBAL

What :func:`rnnfast.fit` does with a :class:`DataParallel` context (``fit(..., distributed=...)``;
the default ``None`` uses the context made by :func:`init`, if any):

* Start: rank 0's ``seed`` and parameters are broadcast (all ranks start from the same weights and
  draw the same data order; dropout RNGs of ranks > 0 are decorrelated from rank 0's).
* Every global batch (``batch_size`` rows, the same order on all ranks) is cut into ``size``
  contiguous shards (:func:`shard_bounds`, sizes differ by at most one); rank r computes the loss
  and gradients of shard r only. Sequence batches are trimmed to the longest length of the *global*
  batch, so every rank makes the same number of truncated-BPTT updates.
* Before every optimizer step the gradients are packed into ONE contiguous buffer (the parameters'
  dtype) together with the loss, its normaliser, the SIGINT flag and the step's loss/metric sums,
  and summed with a single in-place ``Allreduce``. Each rank's shard-mean gradient is weighted by
  its share of the global loss normaliser (counted items after masks, ragged lengths and
  ``ignore_index``; class-weighted for cross-entropy; see :func:`loss_share`) and the sum divided
  by the global normaliser, so N ranks with global batch B take the step 1 rank takes with batch B
  (float64: equal to ~1e-16; only the order of the additions differs).
* Clipping, the non-finite checks and the optimizer step then run on identical gradients on every
  rank, so parameters and optimizer state stay identical without further communication.
* Only rank 0 writes checkpoints and shows the progress bar; the History (global loss and metrics)
  is the same on every rank. Callbacks run on every rank (so EarlyStopping agrees everywhere); gate
  your own output with ``dist.is_root()``. Validation runs on every rank over the whole val set.

* SIGINT seen by any rank is carried in the step's Allreduce: every rank stops after the same
  step and rank 0 writes the final checkpoint (``resume=True`` needs that file on every rank).

The Allreduce is not overlapped with backward: the recurrent weights' gradients are complete only
when the (single, C++) backward call returns -- the weight-gradient GEMMs are deferred to its end --
so only the small head gradients could be sent early. At the benchmark shape (LSTM I=64 H=256
T=100, 2 ranks) the bare Allreduce of the packed 1.3 MB buffer took 0.8 ms against ~230 ms of
compute per step (benchmarks/bench_mpi.py reports both): nothing worth hiding.

Failure handling: :func:`init` installs a ``sys.excepthook`` that prints the traceback and calls
``MPI_Abort`` so an uncaught exception on one rank brings every rank down instead of leaving them
blocked in a collective; wrap code that may catch exceptions itself in :func:`abort_on_error`.

A global batch with fewer rows than ranks (a short last batch) leaves some ranks without rows; they
compute on a copy of one row with weight 0 (forward/backward on an empty batch is not defined) and
add exactly nothing to the gradient or the statistics.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
import time
import traceback
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from .optim import _flat_view

__all__ = [
    "DataParallel",
    "StepStats",
    "abort_on_error",
    "available",
    "current",
    "init",
    "is_root",
    "loss_share",
    "rank",
    "resolve",
    "shard_bounds",
    "size",
]

Array = np.ndarray

_CONTEXT: DataParallel | None = None


def available() -> bool:
    """Whether mpi4py (and an MPI library it can load) is importable."""
    try:
        from mpi4py import MPI  # noqa: F401
    except Exception:  # ImportError, or RuntimeError when the MPI library cannot be loaded
        return False
    return True


def shard_bounds(n: int, size: int, rank: int) -> tuple[int, int]:
    """Rows [start, stop) of rank ``rank`` when ``n`` rows are split over ``size`` ranks.

    Contiguous shards whose sizes differ by at most one (the first ``n % size`` ranks get one more),
    like ``numpy.array_split``. A rank may get no rows when ``n < size``.
    """
    for name, v, lo in (("n", n, 0), ("size", size, 1), ("rank", rank, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name}: expected an int >= {lo}, got {v!r}")
    if rank >= size:
        raise ValueError(f"rank: expected an int in [0, {size}), got {rank}")
    q, r = divmod(int(n), int(size))
    start = rank * q + min(rank, r)
    return start, start + q + (1 if rank < r else 0)


def loss_share(loss: Any, pred: Array, target: Array, mask: Array | None) -> tuple[float, float]:
    """(weight, denominator) of this rank's shard in the global loss.

    With ``reduction="mean"`` a loss returns ``S_r / n_r`` (sum over counted items / their count or,
    for class-weighted cross-entropy, their summed class weights); the global loss is
    ``sum_r S_r / sum_r n_r``, so the shard's value and gradient are weighted by ``n_r`` and the sum
    divided by ``sum_r n_r``: this returns ``(n_r, n_r)``. With ``reduction="sum"`` the shard sums
    simply add up: this returns ``(1.0, -1.0)`` (a negative denominator marks a sum loss).

    The count rules follow :mod:`rnnfast.losses`: cross-entropy counts targets that are not
    ``ignore_index`` and not masked (times ``weight[target]`` when class weights are given);
    MSE/BCE count unmasked elements. Other losses may define ``normalizer(pred, target, mask) ->
    float``; without it the MSE rule is used (exact for per-element means).
    """
    if getattr(loss, "reduction", "mean") == "sum":
        return 1.0, -1.0
    custom = getattr(loss, "normalizer", None)
    if callable(custom):
        n = float(custom(pred, target, mask))
        return n, n
    p = np.asarray(pred)
    if type(loss).__name__ == "CrossEntropyLoss":
        t = np.asarray(target)
        valid = t != int(getattr(loss, "ignore_index", -100))
        if mask is not None:
            m = np.asarray(mask, dtype=bool)
            valid = valid & m.reshape(m.shape + (1,) * (valid.ndim - m.ndim))
        w = getattr(loss, "weight", None)
        if w is None:
            n = float(np.count_nonzero(valid))
        else:
            t_safe = np.where(valid, t, 0).astype(np.intp)
            n = float(np.sum(np.where(valid, np.asarray(w, np.float64)[t_safe], 0.0)))
        return n, n
    if mask is None:
        n = float(p.size)
    else:
        m = np.asarray(mask)
        per_item = int(np.prod(p.shape[m.ndim :], dtype=np.int64))
        n = float(np.count_nonzero(m) * per_item)
    return n, n


class StepStats:
    """Loss/metric sums of the current step on this rank (fit's ``add`` interface); summed over
    ranks by :meth:`DataParallel.allreduce_step` and merged into fit's epoch accumulator."""

    def __init__(self) -> None:
        self.s: dict[str, float] = {}

    def add(self, k: str, v: float) -> None:
        """Add ``v`` to the sum ``k``."""
        self.s[k] = self.s.get(k, 0.0) + float(v)

    def clear(self) -> None:
        """Forget the sums (after they were reduced)."""
        self.s.clear()


class DataParallel:
    """Data-parallel context over an MPI communicator (default ``MPI.COMM_WORLD``).

    The methods are the hooks :func:`rnnfast.fit` calls; they can also drive a hand-written loop:
    :meth:`broadcast_parameters`, :meth:`batch` (this rank's shard of a global batch),
    :func:`loss_share` and :meth:`allreduce_step` (one in-place Allreduce of the packed gradients).

    Attributes: ``comm``, ``rank``, ``size``; for measurements ``comm_seconds`` and
    ``comm_cpu_seconds`` (wall and process CPU time in the per-step Allreduce, waiting for other
    ranks included) and ``steps`` (number of reduced steps).
    """

    def __init__(self, comm: Any = None) -> None:
        from mpi4py import MPI

        self._mpi = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank = int(self.comm.Get_rank())
        self.size = int(self.comm.Get_size())
        self.stats = StepStats()
        self.comm_seconds = 0.0
        self.comm_cpu_seconds = 0.0
        self.steps = 0
        self._buf: Array | None = None
        self._dummy = False

    # ---- identity --------------------------------------------------------------------------------
    @property
    def is_root(self) -> bool:
        """True on rank 0 (the rank that writes checkpoints, logs and the progress bar)."""
        return self.rank == 0

    def __repr__(self) -> str:
        return f"DataParallel(rank={self.rank}, size={self.size})"

    # ---- start -----------------------------------------------------------------------------------
    def agree_seed(self, seed: int | None) -> int | None:
        """Rank 0's seed on every rank (with >1 ranks rank 0 draws one when it has None)."""
        if self.size == 1:
            return seed
        buf = np.zeros(1, dtype=np.int64)
        if self.is_root:
            buf[0] = secrets.randbits(62) if seed is None else int(seed)
        self.comm.Bcast(buf, root=0)
        return int(buf[0])

    def broadcast_parameters(self, params: Mapping[str, Array]) -> None:
        """Overwrite ``params`` (name -> live array, in place) with rank 0's values: one Bcast of a
        packed buffer (each dtype separately)."""
        if self.size == 1:
            return
        flat = _flat_view(list(params.values()))
        if flat is not None:  # a model's parameters: one buffer, broadcast in place
            self.comm.Bcast(flat, root=0)
            return
        arrays = [params[k] for k in sorted(params)]
        for dt in sorted({a.dtype.str for a in arrays}):
            group = [a for a in arrays if a.dtype.str == dt]
            flat = np.concatenate([a.ravel() for a in group]) if group else np.zeros(0, dt)
            self.comm.Bcast(flat, root=0)
            off = 0
            for a in group:
                a[...] = flat[off : off + a.size].reshape(a.shape)
                off += a.size

    def setup(self, model: Any) -> None:
        """Start of training: broadcast the model's parameters from rank 0 and give ranks > 0 their
        own dropout stream (derived from rank 0's, so runs stay reproducible)."""
        self.broadcast_parameters(model.parameters())
        rnn = getattr(model, "rnn", None)
        rng = getattr(rnn, "rng", None)
        if self.rank > 0 and isinstance(rng, np.random.Generator):
            rnn.rng = np.random.default_rng([int(rng.integers(2**62)), self.rank])

    # ---- sharding --------------------------------------------------------------------------------
    def local_slice(self, n: int) -> slice:
        """This rank's rows of a global batch of ``n`` rows (empty if n < size and rank >= n)."""
        a, b = shard_bounds(int(n), self.size, self.rank)
        return slice(a, b)

    def local_size(self, n: int) -> int:
        """Rows this rank computes for a global batch of ``n`` (at least 1: see :meth:`batch`)."""
        s = self.local_slice(n)
        return max(s.stop - s.start, 1)

    def local_index(self, idx: Array) -> Array:
        """This rank's part of the global batch's sample indices (the weight-0 stand-in row when
        the shard is empty)."""
        idx = np.asarray(idx)
        part = idx[self.local_slice(len(idx))]
        return part if part.size or not idx.size else idx[:1]

    def batch(self, data: Any, idx: Array) -> tuple[Array, Array, Array | None]:
        """This rank's shard of the global batch ``data.batch(idx)`` (a :class:`rnnfast.Dataset`).

        The global batch is cut after it was trimmed to its longest sequence, so the time length is
        the same on every rank. An empty shard yields the global batch's first row as a stand-in
        that :meth:`allreduce_step` weights by exactly 0.
        """
        xb, yb, lb = data.batch(idx)
        n = len(idx)
        s = self.local_slice(n)
        self._dummy = s.stop == s.start and n > 0
        if self._dummy:
            s = slice(0, 1)
        xs = xb[(slice(None),) * data.x_axis + (s,)]
        ys = yb[(slice(None),) * data.y_axis + (s,)]
        ls = None if lb is None else lb[s]
        return np.ascontiguousarray(xs), np.ascontiguousarray(ys), ls

    # ---- the step --------------------------------------------------------------------------------
    #: :func:`loss_share`, reachable from the context fit holds.
    loss_share = staticmethod(loss_share)

    def _buffer(self, n: int, dtype: np.dtype) -> Array:
        if self._buf is None or self._buf.size != n or self._buf.dtype != dtype:
            self._buf = np.empty(n, dtype=dtype)
        return self._buf

    def allreduce_step(
        self,
        grads: Mapping[str, Array],
        value: float,
        share: tuple[float, float],
        *,
        into: Any = None,
        stop: bool = False,
    ) -> tuple[float, bool]:
        """Average gradients over ranks in place with ONE Allreduce; return (global loss, stop).

        Args:
            grads: name -> live gradient array of this rank's shard (the gradient of its shard's
                loss value); replaced in place by the gradient of the global loss.
            value: this rank's shard loss.
            share: ``(weight, denominator)`` from :func:`loss_share` (denominator < 0: a sum loss).
            into: an accumulator with ``add(key, value)`` that receives the global sums of
                :attr:`stats` (the step's loss/metric sums, then cleared); None: stats are dropped.
            stop: this rank's stop request (SIGINT); the result is True if any rank asked.

        When the gradients tile one buffer (an rnnfast model's ``grads``) they are packed and
        unpacked with one call each. The buffer (gradients' dtype, float64 when they differ) holds
        ``[w*grad..., w*value, denominator, stop, stats...]``; after the sum the gradients and the
        loss are divided by the summed denominator. The stand-in row of an empty shard contributes
        exactly zero.
        """
        MPI = self._mpi
        keys = list(grads)
        arrays = [grads[k] for k in keys]
        flat = _flat_view(arrays)  # a model's gradients: one buffer, packed with one copy
        if flat is not None:
            arrays = [flat]
        dts = {a.dtype for a in arrays}
        dtype = dts.pop() if len(dts) == 1 else np.dtype(np.float64)
        skeys = sorted(self.stats.s)
        n_g = sum(a.size for a in arrays)
        buf = self._buffer(n_g + 3 + len(skeys), np.dtype(dtype))
        w, denom = float(share[0]), float(share[1])
        is_sum = denom < 0
        if is_sum:
            denom = 1.0 if self.is_root else 0.0
        if self._dummy:
            w = 0.0
            if not is_sum:
                denom = 0.0
        off = 0
        for a in arrays:
            seg = buf[off : off + a.size]
            if w == 0.0:
                seg.fill(0)  # not a*0: a NaN of a stand-in row must not leak
            elif w == 1.0:
                seg[...] = a.ravel()
            else:
                np.multiply(a.ravel(), w, out=seg)
            off += a.size
        buf[off] = 0.0 if w == 0.0 else value * w
        buf[off + 1] = denom
        buf[off + 2] = 1.0 if stop else 0.0
        for i, k in enumerate(skeys):
            buf[off + 3 + i] = 0.0 if self._dummy else self.stats.s[k]
        t0, c0 = time.perf_counter(), time.process_time()
        if self.size > 1:
            self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        self.comm_seconds += time.perf_counter() - t0
        self.comm_cpu_seconds += time.process_time() - c0
        self.steps += 1
        total = float(buf[off + 1])
        scale = 0.0 if total == 0.0 else 1.0 / total
        off = 0
        for a in arrays:
            seg = buf[off : off + a.size]
            if scale == 1.0:
                a[...] = seg.reshape(a.shape)
            else:
                np.multiply(seg.reshape(a.shape), scale, out=a, casting="unsafe")
            off += a.size
        gvalue = float(buf[off]) / total if total != 0.0 else float(buf[off])
        gstop = bool(buf[off + 2] > 0)
        if into is not None:
            for i, k in enumerate(skeys):
                into.add(k, float(buf[off + 3 + i]))
        self.stats.clear()
        return gvalue, gstop

    # ---- checks ----------------------------------------------------------------------------------
    def max_divergence(self, params: Mapping[str, Array]) -> float:
        """Largest |difference| of any parameter entry between this rank and rank 0 (the max over
        ranks, returned on every rank); 0.0 when all ranks hold identical weights."""
        flat = np.concatenate([np.asarray(params[k], np.float64).ravel() for k in sorted(params)])
        ref = flat.copy()
        self.comm.Bcast(ref, root=0)
        local = np.array([float(np.max(np.abs(flat - ref))) if flat.size else 0.0])
        self.comm.Allreduce(self._mpi.IN_PLACE, local, op=self._mpi.MAX)
        return float(local[0])

    def abort(self, code: int = 1) -> None:
        """MPI_Abort: terminate every rank of the communicator."""
        self.comm.Abort(code)


# --------------------------------------------------------------------------------------------------
# process-wide context
# --------------------------------------------------------------------------------------------------


def _report_and_abort(exc_type: Any, exc: Any, tb: Any, code: int, what: str) -> None:
    """Print the error (one summary line first, then the traceback) and MPI_Abort every rank."""
    r = -1 if _CONTEXT is None else _CONTEXT.rank
    # The error itself first, in one line: MPI_Abort may kill this process (and mpiexec may drop
    # the rest of its forwarded output) before a long traceback is through.
    summary = "".join(traceback.format_exception_only(exc_type, exc)).strip().replace("\n", " ")
    sys.stderr.write(f"rnnfast.distributed: {what} on rank {r}: {summary}; aborting all ranks\n")
    sys.stderr.flush()
    traceback.print_exception(exc_type, exc, tb)
    sys.stderr.flush()
    sys.stdout.flush()
    if _CONTEXT is not None:
        time.sleep(0.2)  # let mpiexec forward what was written before the abort tears it down
        _CONTEXT.abort(code)
        os._exit(code)  # MPI_Abort should not return; never fall back into a blocking MPI_Finalize


def _abort_hook(exc_type: Any, exc: Any, tb: Any) -> None:
    if issubclass(exc_type, SystemExit) and exc is not None and exc.code in (0, None):
        return
    _report_and_abort(exc_type, exc, tb, 1, "uncaught exception")


def init(comm: Any = None, *, abort_on_exception: bool = True) -> DataParallel:
    """Create (once) the process-wide :class:`DataParallel` context that ``fit`` uses by default.

    ``abort_on_exception`` installs a ``sys.excepthook`` that prints the traceback of an uncaught
    exception and calls ``MPI_Abort``, so the other ranks do not wait forever in a collective.
    Calling init again returns the existing context.
    """
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = DataParallel(comm)
        if abort_on_exception:
            sys.excepthook = _abort_hook
    return _CONTEXT


def current() -> DataParallel | None:
    """The context made by :func:`init`, or None."""
    return _CONTEXT


def rank() -> int:
    """This process's rank (0 without :func:`init`)."""
    return 0 if _CONTEXT is None else _CONTEXT.rank


def size() -> int:
    """Number of ranks (1 without :func:`init`)."""
    return 1 if _CONTEXT is None else _CONTEXT.size


def is_root() -> bool:
    """True on rank 0 (and without :func:`init`): the rank that should print and write files."""
    return rank() == 0


def resolve(distributed: Any) -> DataParallel | None:
    """What ``fit(distributed=...)`` means: None -> the :func:`init` context if any; False -> none;
    True -> :func:`init`; a DataParallel -> itself."""
    if distributed is None:
        return _CONTEXT
    if distributed is False:
        return None
    if distributed is True:
        return init()
    if isinstance(distributed, DataParallel):
        return distributed
    raise TypeError(
        f"distributed: expected None, a bool or a rnnfast.distributed.DataParallel, got "
        f"{type(distributed).__name__}"
    )


@contextlib.contextmanager
def abort_on_error(code: int = 1) -> Iterator[None]:
    """Context manager: on any exception print its traceback and MPI_Abort every rank (after
    :func:`init`; without a context the exception propagates)."""
    try:
        yield
    except BaseException as exc:
        if _CONTEXT is None or (isinstance(exc, SystemExit) and exc.code in (0, None)):
            raise
        _report_and_abort(type(exc), exc, exc.__traceback__, code, "exception")
