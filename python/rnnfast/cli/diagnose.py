"""``rnnfast diagnose``: vanishing and exploding gradients on the adding problem."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import (
    CLIError,
    _cell_list,
    _check_plot,
    _nonneg_int,
    _positive_int,
    _seq_len_at_least_2,
    _set_threads,
    _table,
    add_common,
)

__all__ = ["add_parser", "cmd_diagnose"]


def cmd_diagnose(args: argparse.Namespace) -> int:
    from ..diagnostics import exploding_case, plot_gradient_flow, vanishing_case

    args.plot = _check_plot(args.plot)
    _set_threads(args.threads)
    if args.task != "adding":
        raise CLIError("--task: diagnose currently supports the adding task only")
    t_steps = args.seq_len
    dists = sorted({d for d in (1, 10, 25, 50, t_steps - 1) if d < t_steps})
    print(
        f"rnnfast diagnose: adding problem, T={t_steps}; gradient of the loss (on the last step) "
        "w.r.t. each hidden state h_t,\n"
        "shown as ||dL/dh_(T-1-d)|| / ||dL/dh_(T-1)|| for distance d "
        "(1 = no decay). Batch of 64, hidden 64.\n"
    )
    flows = vanishing_case(args.cell, t_steps, seed=args.seed, train_steps_=args.train_steps)
    rows = [
        [f.label, f.meta.get("train_mse_recent", "-")] + [f.ratio(d) for d in dists] for f in flows
    ]
    print(_table(["cell", "train MSE"] + [f"d={d}" for d in dists], rows))
    print(
        "(train MSE: plain MSE over the last 50 training batches; < 0.01 = task solved, "
        "0.167 = guessing)"
    )
    print()
    ex = exploding_case(t_steps, seed=args.seed, steps=args.explode_steps)
    print(
        f"exploding: tanh RNN with recurrent weights {ex['gain']} x orthogonal (spectral radius "
        f"{ex['gain']}), ||dL/dh_0|| / ||dL/dh_(T-1)|| = {ex['ratio']:.2e} at init."
    )
    print(
        f"Plain SGD, lr {ex['lr']}, {ex['steps']} steps on adding batches; gradient norm before "
        "clipping, loss = half MSE (predicting the mean gives 0.083):"
    )
    rows = [
        [
            name,
            r["grad_norm_first"],
            r["grad_norm_max"],
            r["loss_first"],
            r["loss_max"],
            r["loss_last"],
            f"{len(r['log'])}" + ("" if r["finite"] else " (stopped: non-finite)"),
        ]
        for name, r in ex["runs"].items()
    ]
    headers = ["run", "grad norm step 1", "max grad norm", "loss step 1", "max loss", "last loss"]
    print(_table([*headers, "steps"], rows))
    if args.plot:
        try:
            plot_gradient_flow(
                [*flows, ex["flow"]],
                args.plot,
                title=f"Adding problem, T={t_steps}: ||dL/dh_t|| vs distance from the loss",
            )
        except (OSError, ValueError, TypeError, ImportError) as exc:
            raise CLIError(f"--plot: cannot write {args.plot} ({exc})") from None
        print(f"\nrnnfast: wrote {args.plot}")
    return 0


def add_parser(sub: Any) -> None:
    """The ``diagnose`` subcommand on ``sub`` (argparse's subparsers)."""
    dg = sub.add_parser("diagnose", help="show vanishing and exploding gradients")
    dg.add_argument("--task", default="adding", choices=["adding"])
    dg.add_argument(
        "--cell",
        type=_cell_list,
        default=["rnn", "lstm"],
        help="comma-separated cells of `rnnfast train --cell` (e.g. rnn,lstm,gru_layernorm; "
        "default rnn,lstm)",
    )
    dg.add_argument("--seq-len", type=_seq_len_at_least_2, default=100, help="T >= 2")
    dg.add_argument(
        "--train-steps",
        type=_nonneg_int,
        default=1500,
        help="Adam steps (batch 32, lr 0.01) on the adding task before the trained measurement "
        "(0: init only, instant; the LSTM solves the task after about 1100-1200 steps; 1500 "
        "steps of rnn,lstm take about 25 s of CPU)",
    )
    dg.add_argument("--explode-steps", type=_positive_int, default=20)
    dg.add_argument("--plot", metavar="PATH", help="write a PNG of the gradient flow")
    add_common(dg)
    dg.set_defaults(func=cmd_diagnose)
