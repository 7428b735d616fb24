"""Run under ``mpiexec -n 2``: rank 1 alone receives SIGINT (it signals itself at step 3). The stop
request travels in the per-step Allreduce, so every rank must stop after the same step, hold the
same weights, and rank 0 must write the final checkpoint. Prints one JSON line per rank; exits 130.

Usage: python sigint.py CHECKPOINT_PATH
"""

from __future__ import annotations

import json
import os
import signal
import sys

import numpy as np

import rnnfast
import rnnfast.distributed as dist
from rnnfast import losses, optim

__all__: list[str] = []


def main(argv: list[str]) -> int:
    ctx = dist.init()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 400, 2))
    y = rng.standard_normal((400, 1))
    model = rnnfast.build_model("lstm", 2, 4, 1, mode="many_to_one", dtype=np.float64, seed=0)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    steps: list[int] = []

    def on_batch_end(step: int, logs: dict) -> None:
        steps.append(step)
        if ctx.rank == 1 and step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    cb = rnnfast.training.LambdaCallback(on_batch_end=on_batch_end)
    try:
        rnnfast.fit(model, (x, y), losses.MSELoss(), opt, epochs=20, batch_size=4, progress=False,
                    checkpoint=argv[0], callbacks=[cb], distributed=ctx)  # fmt: skip
    except rnnfast.training.TrainingInterrupted as exc:
        div = ctx.max_divergence(model.parameters())
        out = {"rank": ctx.rank, "last_step": steps[-1], "divergence": div,
               "checkpoint": exc.checkpoint}  # fmt: skip
        print(json.dumps(out), flush=True)
        return 130
    print(json.dumps({"rank": ctx.rank, "finished": True}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
