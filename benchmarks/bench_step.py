"""Streaming inference: per-call time of ``step()`` against the bare recurrent product and torch.

For each cell and hidden size (B = 1, I = 64, float32, one thread everywhere) it times, as the
median of many calls (thread CPU time, so that a loaded machine's descheduling is not counted):

* ``step``: ``RNN/LSTM/GRU.step(x_t, state)``;
* ``seqmodel``: ``SequenceModel.step(x_t, state)`` (the step plus a Linear head to 16 outputs);
* ``bare``: the recurrent product alone, ``np.matmul(h, W_hh.T, out=...)`` (the floor of a step);
* ``torch``: ``nn.LSTM/GRU/RNN`` on a (1, 1, I) input with its state, under ``torch.no_grad()``.

Each variant is checked against ``forward`` (rnnfast) or torch with the same weights before it is
timed. Usage: ``python benchmarks/bench_step.py [cells] [hidden sizes]``, e.g. ``lstm,gru 256,1024``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import rnnfast as rf  # noqa: E402

try:
    import torch
except ImportError:  # the torch column is left out
    torch = None  # type: ignore[assignment]


def _median_us(f: Callable[[], Any], n: int) -> float:
    ts = []
    for _ in range(n):
        t = time.thread_time()
        f()
        ts.append(time.thread_time() - t)
    ts.sort()
    return ts[len(ts) // 2] * 1e6


def _bench(cell: str, hidden: int, inp: int) -> dict[str, float]:
    """Medians (us) of step, seqmodel, bare and torch for one cell and hidden size."""
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    cls = {"rnn": rf.RNN, "lstm": rf.LSTM, "gru": rf.GRU}[cell]
    m = cls(inp, hidden, seed=0).eval()
    seq = rf.build_model(cell, inp, hidden, 16, mode="many_to_many", seed=0).eval()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, inp)).astype(np.float32)
    xs = rng.standard_normal((3, 1, inp)).astype(np.float32)
    # correctness first: three steps against forward
    out, _ = m(xs)
    st: Any = None
    for t in range(3):
        o, st = m.step(xs[t], st)
        assert np.allclose(o, out[t], atol=1e-5), f"{cell} H={hidden}: step != forward"
    w_hh = m.parameters()["weight_hh_l0"]
    h = np.ascontiguousarray(o)
    buf = np.empty((1, gates * hidden), np.float32)
    state = [st]
    sstate = [seq.step(x)[1]]

    def bare() -> None:
        np.matmul(h, w_hh.T, out=buf)

    def step() -> None:
        state[0] = m.step(x, state[0])[1]

    def sstep() -> None:
        sstate[0] = seq.step(x, sstate[0])[1]

    fns = {"step": step, "seq": sstep, "bare": bare}
    if torch is not None:
        tm = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](inp, hidden)
        tm.load_state_dict(rf.to_torch(m).state_dict())
        with torch.no_grad():
            t_out, _ = tm(torch.from_numpy(xs))
        assert np.allclose(t_out.numpy(), out, atol=1e-5), f"{cell}: torch != rnnfast"
        tx = torch.from_numpy(x[None])
        with torch.no_grad():
            tst = [tm(tx)[1]]

        def tstep() -> None:
            with torch.no_grad():
                tst[0] = tm(tx, tst[0])[1]

        fns["torch"] = tstep
    n = 3000 if hidden <= 256 else 800
    runs: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(5):  # alternated rounds
        for k, f in fns.items():
            runs[k].append(_median_us(f, n))
    return {k: sorted(v)[len(v) // 2] for k, v in runs.items()}


def main() -> None:
    rf.set_num_threads(1)
    if torch is not None:
        torch.set_num_threads(1)
    cells = sys.argv[1].split(",") if len(sys.argv) > 1 else ["rnn", "lstm", "gru"]
    sizes = [int(h) for h in sys.argv[2].split(",")] if len(sys.argv) > 2 else [64, 256, 512, 1024]
    print(
        f"{'cell':5s} {'H':>5s} {'step us':>8s} {'seqmodel':>9s} {'bare us':>8s} {'torch us':>9s} "
        f"{'step/bare':>9s} {'step/torch':>10s}"
    )
    for cell in cells:
        for hidden in sizes:
            r = _bench(cell, hidden, 64)
            tt = r.get("torch", float("nan"))
            print(
                f"{cell:5s} {hidden:5d} {r['step']:8.1f} {r['seq']:9.1f} {r['bare']:8.1f} "
                f"{tt:9.1f} {r['step'] / r['bare']:9.2f} {r['step'] / tt:10.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
