"""Run under ``mpiexec -n 2``: rank 1 raises in the middle of ``fit`` while rank 0 goes on into the
next gradient Allreduce. With :func:`rnnfast.distributed.init`'s excepthook the error is printed and
MPI_Abort brings every rank down (instead of rank 0 waiting forever).

Usage: python fail_rank.py [excepthook|context]
  excepthook: the exception is left uncaught (init's sys.excepthook aborts)
  context:    the exception is raised inside ``with rnnfast.distributed.abort_on_error():``
"""

from __future__ import annotations

import sys

import numpy as np

import rnnfast
import rnnfast.distributed as dist
from rnnfast import losses, optim

__all__: list[str] = []


class _Boom(RuntimeError):
    pass


def _train(ctx: dist.DataParallel) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 40, 2))
    y = rng.standard_normal((40, 1))
    model = rnnfast.build_model("gru", 2, 4, 1, mode="many_to_one", dtype=np.float64, seed=0)
    opt = optim.SGD(model.parameters(), lr=0.1)

    def on_batch_end(step: int, logs: dict) -> None:
        if ctx.rank == 1 and step == 2:
            raise _Boom(f"injected failure on rank {ctx.rank} at step {step}")

    cb = rnnfast.training.LambdaCallback(on_batch_end=on_batch_end)
    rnnfast.fit(
        model,
        (x, y),
        losses.MSELoss(),
        opt,
        epochs=50,
        batch_size=4,
        progress=False,
        callbacks=[cb],
        distributed=ctx,
    )
    print(f"rank {ctx.rank}: finished (should not happen)", flush=True)


def main(argv: list[str]) -> int:
    how = argv[0] if argv else "excepthook"
    if how == "context":
        ctx = dist.init(abort_on_exception=False)
        with dist.abort_on_error():
            _train(ctx)
    else:
        _train(dist.init())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
