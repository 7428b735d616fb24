"""New cells against what users write today: fused rnnfast cells vs idiomatic PyTorch loops.

PyTorch has no peephole LSTM (its PR was never merged), no GRU with the reset gate before the
product (Keras's reset_after=False) and no layer-normalised LSTM/GRU (issues #6760/#7032), so a user
writes such a cell as a loop over time with autograd. This times one training step (forward +
backward, all gradients) of:

* rnnfast ``lstm_peephole``, ``gru_reset_before``, ``lstm_layernorm`` and ``gru_layernorm`` (fused
  kernels, ``rnnfast.functional``),
* the same cells as PyTorch loops (``rnnbench/torch_loops.py``; the layer-norm ones with
  ``torch.nn.functional.linear`` + ``layer_norm``: nn.LSTMCell / nn.GRUCell add their biases before
  any normalisation could be applied, so a cell that normalises W_ih x and W_hh h separately cannot
  be built on them),
* rnnfast's plain LSTM / GRU of the same size (what the variant costs in the fused kernel).

These are the rows of ``bench.py --variants`` for these four cells (``rnnbench/variants.py``): every
implementation is checked against the float64 oracle (``rnnfast.reference``) before it is timed,
medians of alternated runs; threads as given (default 1, torch.set_num_threads too).

    python benchmarks/bench_cells.py [--hidden 256] [--batch 16] [--steps 100] [--threads 1]
        [--modes training inference]
"""

from __future__ import annotations

import argparse
import sys

from rnnbench.common import MODES
from rnnbench.machine import Threads, cpuinfo
from rnnbench.variants import run_variants

__all__ = ["CELLS", "main"]

CELLS = ("lstm_peephole", "gru_reset_before", "lstm_layernorm", "gru_layernorm")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--modes", nargs="+", choices=MODES, default=["training"])
    ap.add_argument("--tol", type=float, default=1e-4, help="max relative error vs the oracle")
    a = ap.parse_args(argv)

    import torch

    import rnnfast

    print(
        f"CPU: {cpuinfo().get('cpu_model')}; threads {a.threads}; T={a.steps} B={a.batch} "
        f"I=H={a.hidden} float32, median of {a.repeats} alternated runs"
    )
    args = argparse.Namespace(
        variant_hidden=[a.hidden], variant_batch=[a.batch], variant_threads=[a.threads],
        variant_cells=list(CELLS), modes=a.modes, steps=a.steps, repeats=a.repeats,
        min_sample=0.0, tol=a.tol,
    )  # fmt: skip
    rows = run_variants(args, Threads(rnnfast, torch))
    failed = [r.message for r in rows if r.status != "ok"]
    for m in failed:
        print("FAILED " + m)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
