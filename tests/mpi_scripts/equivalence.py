"""Run under ``mpiexec -n N``: train the same float64 models with ``fit(distributed=...)`` on N
ranks and, on rank 0, with the plain single-process ``fit`` (the oracle), then print one JSON line
per case from rank 0: the max |difference| of every weight and of the optimizer state against the
oracle, the max difference between the ranks' weights, and the epoch losses of both runs.

Cases cover full BPTT (ragged lengths, uneven shards, a last global batch smaller than the number of
ranks), cross-entropy with ignore_index, class weights and masks over token ids, TBPTT(k1, k2) with
ragged lengths, and stateful TBPTT streams; each with an optimizer with state (Adam / SGD momentum)
and gradient clipping after the reduction.

The "resume" case trains one epoch with ``checkpoint=``, then resumes a perturbed model to the
full epoch count (``resume=True``); it also counts checkpoint writes per rank (only rank 0 may
write).

Usage: python equivalence.py [--tmp DIR] [case ...]   (default: all cases; checkpoints in DIR)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any

import numpy as np
from mpi4py import MPI

import rnnfast
import rnnfast.distributed as dist
from rnnfast import losses, optim, training
from rnnfast.training import Dataset, fit, stateful_batches

__all__: list[str] = []


def _case_full_bptt(rng: np.random.Generator) -> dict[str, Any]:
    # 22 sequences, global batch 7 -> batches 7, 7, 7, 1: shards 4/3 and, last, 1/0 (stand-in row)
    n, t, i = 22, 9, 3
    x = rng.standard_normal((t, n, i))
    y = rng.standard_normal((n, 2))
    lengths = rng.integers(1, t + 1, size=n)
    model = rnnfast.build_model(
        "lstm", i, 6, 2, mode="many_to_one", num_layers=2, dtype=np.float64, seed=3
    )
    return {
        "model": model,
        "data": (x, y, lengths),
        "loss": losses.MSELoss(),
        "opt": lambda m: optim.Adam(m.parameters(), lr=0.05),
        "kw": {"epochs": 2, "batch_size": 7, "clip_norm": 0.5},
    }


def _case_ce_tokens(rng: np.random.Generator) -> dict[str, Any]:
    # token ids, per-step classes with ignore_index and class weights, ragged lengths (masks)
    n, t, vocab, classes = 13, 8, 11, 4
    x = rng.integers(0, vocab, size=(t, n))
    y = rng.integers(0, classes, size=(t, n))
    y[rng.random((t, n)) < 0.3] = -1  # ignored items, unevenly spread over the shards
    lengths = rng.integers(2, t + 1, size=n)
    model = rnnfast.build_model(
        "gru", 5, 7, classes, mode="many_to_many", dtype=np.float64, seed=4, vocab_size=vocab
    )
    return {
        "model": model,
        "data": (x, y, lengths),
        "loss": losses.CrossEntropyLoss(ignore_index=-1, weight=np.array([1.0, 2.0, 0.5, 1.5])),
        "opt": lambda m: optim.SGD(m.parameters(), lr=0.3, momentum=0.9),
        "kw": {"epochs": 2, "batch_size": 5, "metrics": ("accuracy",)},
    }


def _case_tbptt(rng: np.random.Generator) -> dict[str, Any]:
    n, t, i = 10, 13, 2
    x = rng.standard_normal((t, n, i))
    y = rng.standard_normal((t, n, 3))
    lengths = rng.integers(4, t + 1, size=n)
    model = rnnfast.build_model("lstm", i, 5, 3, mode="many_to_many", dtype=np.float64, seed=5)
    return {
        "model": model,
        "data": (x, y, lengths),
        "loss": losses.MSELoss(),
        "opt": lambda m: optim.Adam(m.parameters(), lr=0.02),
        "kw": {"epochs": 2, "batch_size": 5, "bptt": (3, 5), "clip_norm": 1.0},
    }


def _case_stateful(rng: np.random.Generator) -> dict[str, Any]:
    series = rng.standard_normal((6 * 40, 2))
    target = np.roll(series[:, :1], 1, axis=0)
    x, y = stateful_batches(series, target, batch_size=6, seq_len=8)
    resets = np.zeros(x.shape[1], dtype=bool)
    resets[12:18] = True  # restart every stream at the third batch
    model = rnnfast.build_model("rnn", 2, 6, 1, mode="many_to_many", dtype=np.float64, seed=6)
    return {
        "model": model,
        "data": Dataset(x, y, resets=resets, mode="many_to_many"),
        "loss": losses.MSELoss(),
        "opt": lambda m: optim.Adam(m.parameters(), lr=0.01),
        "kw": {"epochs": 2, "batch_size": 6, "stateful": True, "bptt": (4, 6)},
    }


def _case_resume(rng: np.random.Generator) -> dict[str, Any]:
    # TBPTT over ragged sequences, 1 epoch with a checkpoint, then a resumed run to 3 epochs
    c = _case_tbptt(rng)
    c["kw"] = {"epochs": 3, "batch_size": 4, "bptt": (2, 4)}
    c["resume"] = 1
    return c


CASES = {
    "full_bptt": _case_full_bptt,
    "ce_tokens": _case_ce_tokens,
    "tbptt": _case_tbptt,
    "stateful": _case_stateful,
    "resume": _case_resume,
}


def _run(name: str, ctx: dist.DataParallel, tmp: str) -> dict[str, Any] | None:
    def build() -> dict[str, Any]:
        return CASES[name](np.random.default_rng(100 + list(CASES).index(name)))

    c = build()
    model = c["model"]
    if ctx.rank > 0:  # ranks > 0 start from other weights: the broadcast must fix that
        for a in model.parameters().values():
            a += 1.0
    opt = c["opt"](model)
    saves = 0
    if "resume" in c:
        # phase 1: stop after `resume` epochs with a checkpoint; phase 2: a perturbed model resumes
        ckpt = os.path.join(tmp, f"{name}.npz")
        real_save = training._io.save

        def counting_save(*a: Any, **k: Any) -> Any:
            nonlocal saves
            saves += 1
            return real_save(*a, **k)

        training._io.save = counting_save
        kw1 = dict(c["kw"], epochs=c["resume"])
        fit(model, c["data"], c["loss"], opt, progress=False, seed=11, distributed=ctx,
            checkpoint=ckpt, **kw1)  # fmt: skip
        ctx.comm.Barrier()
        c = build()
        model = c["model"]
        for a in model.parameters().values():
            a -= 0.5
        opt = c["opt"](model)
        h = fit(model, c["data"], c["loss"], opt, progress=False, seed=11, distributed=ctx,
                checkpoint=ckpt, resume=True, **c["kw"])  # fmt: skip
        training._io.save = real_save
    else:
        h = fit(
            model, c["data"], c["loss"], opt, progress=False, seed=11, distributed=ctx, **c["kw"]
        )
    div = ctx.max_divergence(model.parameters())
    counts = np.array([saves if ctx.rank > 0 else 0, saves if ctx.rank == 0 else 0], np.int64)
    ctx.comm.Allreduce(MPI.IN_PLACE, counts)
    if not ctx.is_root:
        return None
    ref = build()
    ref_opt = ref["opt"](ref["model"])
    hr = fit(
        ref["model"],
        ref["data"],
        ref["loss"],
        ref_opt,
        progress=False,
        seed=11,
        distributed=False,
        **ref["kw"],
    )
    worst, where = 0.0, ""
    for k, a in model.parameters().items():
        b = ref["model"].parameters()[k]
        e = float(np.max(np.abs(a - b)))
        if e > worst:
            worst, where = e, f"{k}[{np.unravel_index(np.argmax(np.abs(a - b)), a.shape)}]"
    opt_err = 0.0
    sd, sr = opt.state_dict(), ref_opt.state_dict()
    stack = [(sd, sr)]
    while stack:
        u, v = stack.pop()
        if isinstance(u, dict):
            stack += [(u[k], v[k]) for k in u]
        elif isinstance(u, (list, tuple)):
            stack += list(zip(u, v))
        elif isinstance(u, np.ndarray) and u.dtype.kind == "f":
            opt_err = max(opt_err, float(np.max(np.abs(u - v))) if u.size else 0.0)
    moved = max(
        float(np.max(np.abs(ref["model"].parameters()[k] - a)))
        for k, a in build()["model"].parameters().items()
    )
    return {
        "case": name,
        "size": ctx.size,
        "weights_max_err": worst,
        "weights_max_err_at": where,
        "optimizer_state_max_err": opt_err,
        "ranks_max_divergence": div,
        "weights_moved": moved,
        "loss_dist": h["loss"],
        "loss_ref": hr["loss"],
        "steps_dist": h["steps"],
        "steps_ref": hr["steps"],
        "accuracy_dist": h["accuracy"],
        "accuracy_ref": hr["accuracy"],
        "comm_steps": ctx.steps,
        "saves_rank0": int(counts[1]),
        "saves_other_ranks": int(counts[0]),
    }


def main(argv: list[str]) -> int:
    ctx = dist.init()
    tmp = argv.pop(argv.index("--tmp") + 1) if "--tmp" in argv else tempfile.gettempdir()
    argv = [a for a in argv if a != "--tmp"]
    for name in argv or list(CASES):
        ctx.steps = 0
        out = _run(name, ctx, tmp)
        if out is not None:
            print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
