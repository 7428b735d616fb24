"""Streaming inference: per-call time of ``step()`` against the bare recurrent product and torch.

For each cell and hidden size (B = 1, I = 64, float32, one thread everywhere unless asked) it
times, as the median of many calls (thread CPU time, so that a loaded machine's descheduling is not
counted):

* ``step``: ``RNN/LSTM/GRU.step(x_t, state)``;
* ``seqmodel``: ``SequenceModel.step(x_t, state)`` (the step plus a Linear head to 16 outputs);
* ``frozen``: ``module.freeze().step(x_t, state)`` (both products on weights packed once);
* ``bf16 mod``: ``step`` of the module with ``precision="bf16"`` (a T = 1 sequence call);
* ``bf16 frz``: ``module.freeze(precision="bf16").step`` (the bf16 kernels on bf16 copies);
* ``bare``: the recurrent product alone, ``np.matmul(h, W_hh.T, out=...)`` (the floor of a step);
* ``torch``: ``nn.LSTM/GRU/RNN`` on a (1, 1, I) input with its state, under ``torch.no_grad()``;
  ``torch bf16``: the same module after ``.to(torch.bfloat16)``.

Each variant is checked before it is timed: rnnfast's fp32 steps against ``forward``, the bf16 ones
against the bf16 ``forward`` (the same rounded operands), torch's against rnnfast's forward (fp32
1e-5, bf16 3e-2). ``frz GB/s`` = the weight bytes one frozen fp32 step reads (4 * G*H * (I + H)) /
its time, and ``bw`` = ``core.read_bandwidth`` of a buffer of that size, measured in the same run:
the cache level the weights live in (``frac`` = frz GB/s / bw).

Usage: ``python benchmarks/bench_step.py [cells] [hidden sizes] [threads]``, e.g. ``lstm,gru
256,1024`` (threads > 1: rnnfast and torch may use that many, timed in wall time: a frozen step
worth a parallel region splits over a team).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from typing import Any, Callable

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import rnnfast as rf  # noqa: E402
from rnnbench.machine import cpuinfo  # noqa: E402
from rnnfast._loader import core  # noqa: E402

try:
    import torch
except ImportError:  # the torch column is left out
    torch = None  # type: ignore[assignment]


_CLOCK = [time.thread_time]  # wall time (perf_counter) when more than one thread may run


def _median_us(f: Callable[[], Any], n: int) -> float:
    ts = []
    for _ in range(n):
        t = _CLOCK[0]()
        f()
        ts.append(_CLOCK[0]() - t)
    ts.sort()
    return ts[len(ts) // 2] * 1e6


def _torch_step(mod: Any, xs: Any, x: Any, want: Any, dtype: Any, tol: float, what: str) -> Any:
    """A one-step call of torch module ``mod`` carrying its state, checked on ``xs`` first."""
    with torch.no_grad():
        got, _ = mod(torch.from_numpy(xs).to(dtype))
    assert np.allclose(got.float().numpy(), want, atol=tol), what
    tx = torch.from_numpy(x[None]).to(dtype)
    with torch.no_grad():
        st = [mod(tx)[1]]

    def step() -> None:
        with torch.no_grad():
            st[0] = mod(tx, st[0])[1]

    return step


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

    frz = m.freeze()
    m16 = cls(inp, hidden, seed=0, precision="bf16").eval()
    f16 = m16.freeze()
    with rf.precision("bf16"):
        out16, _ = m16(xs)
    for name, f, want in (("frozen", frz, out), ("bf16 mod", m16, out16), ("bf16 frz", f16, out16)):
        st2: Any = None
        for t in range(3):
            o2, st2 = f.step(xs[t], st2)
            assert np.allclose(o2, want[t], atol=1e-5), f"{cell} H={hidden}: {name} step != forward"
    fstate = [frz.step(x)[1]]
    bstate = [m16.step(x)[1]]
    fbstate = [f16.step(x)[1]]

    def fstep() -> None:
        fstate[0] = frz.step(x, fstate[0])[1]

    def bstep() -> None:
        bstate[0] = m16.step(x, bstate[0])[1]

    def fbstep() -> None:
        fbstate[0] = f16.step(x, fbstate[0])[1]

    fns = {"step": step, "seq": sstep, "frozen": fstep, "bf16 mod": bstep, "bf16 frz": fbstep}
    fns["bare"] = bare
    if torch is not None:
        tm = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](inp, hidden)
        tm.load_state_dict(rf.to_torch(m).state_dict())
        tb = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](inp, hidden)
        tb.load_state_dict(tm.state_dict())
        tb = tb.to(torch.bfloat16)
        for name, mod, dt, tol in (
            ("torch", tm, torch.float32, 1e-5),
            ("torch bf16", tb, torch.bfloat16, 3e-2),
        ):
            fns[name] = _torch_step(mod, xs, x, out, dt, tol, f"{cell}: {name} != rnnfast")
    n = 3000 if hidden <= 256 else 800
    runs: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(5):  # alternated rounds, the order rotated
        keys = list(fns)
        for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
            runs[k].append(_median_us(fns[k], n if k != "bf16 mod" else max(50, n // 10)))
    res = {k: sorted(v)[len(v) // 2] for k, v in runs.items()}
    nbytes = 4 * gates * hidden * (inp + hidden)
    res["frz_gbs"] = nbytes / (res["frozen"] * 1e-6) / 1e9
    thr = rf.get_num_threads()  # per-thread buffers of nbytes / thr, the rates summed
    res["bw_gbs"] = core.read_bandwidth(max(nbytes // thr, 4096), thr, 0.1) / 1e9
    return res


def main() -> None:
    from rnnfast._precision import Bf16PathWarning, bf16_info

    warnings.simplefilter("ignore", Bf16PathWarning)
    cells = sys.argv[1].split(",") if len(sys.argv) > 1 else ["rnn", "lstm", "gru"]
    sizes = [int(h) for h in sys.argv[2].split(",")] if len(sys.argv) > 2 else [64, 256, 512, 1024]
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    if threads > 1:
        _CLOCK[0] = time.perf_counter
    rf.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    print(
        f"CPU: {cpuinfo().get('cpu_model', '?')}, rnnfast core {rf.build_info()['variant']}, "
        f"bf16 path {bf16_info()['path']}, threads {threads}, us per call (medians of "
        f"{'wall time' if threads > 1 else 'thread CPU time'})"
    )
    cols = ["step", "seq", "frozen", "bf16 mod", "bf16 frz", "bare", "torch", "torch bf16"]
    print(
        "| cell | H | "
        + " | ".join(cols)
        + " | frz vs step | bf16 frz vs frz | step vs torch | bf16 frz vs torch bf16 | frz GB/s"
        + " | bw GB/s | frac |"
    )
    print("|" + "---|" * (len(cols) + 9))
    for cell in cells:
        for hidden in sizes:
            r = _bench(cell, hidden, 64)
            nan = float("nan")
            vals = " | ".join(f"{r.get(c, nan):.1f}" for c in cols)
            print(
                f"| {cell} | {hidden} | {vals} | {r['step'] / r['frozen']:.2f} | "
                f"{r['frozen'] / r['bf16 frz']:.2f} | {r.get('torch', nan) / r['step']:.2f} | "
                f"{r.get('torch bf16', nan) / r['bf16 frz']:.2f} | {r['frz_gbs']:.1f} | "
                f"{r['bw_gbs']:.1f} | {r['frz_gbs'] / r['bw_gbs']:.2f} |",
                flush=True,
            )
    print(
        "\n<a> vs <b>: b's time / a's (> 1: a is faster). frz GB/s: weight bytes of a frozen fp32 "
        "step / its time; bw: read_bandwidth of that many bytes, same run; frac = frz GB/s / bw."
    )


if __name__ == "__main__":
    main()
