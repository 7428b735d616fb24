"""``rnnfast demo``: the README's first command, the adding problem with a GRU."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._common import _set_threads, add_common
from .train import _run_and_report

__all__ = ["DEMO", "add_parser", "cmd_demo"]


#: What ``demo`` trains: the adding problem at T=100 with a GRU, two epochs of 10000 sequences
#: (measured: solved after the first, MSE ~0.004, and ~0.0005 after the second; ~25 s CPU).
DEMO: dict[str, Any] = {
    "task": "adding",
    "cell": "gru",
    "seq_len": 100,
    "epochs": 2,
    "init": "torch",
    "n_train": 10000,
}


def cmd_demo(args: argparse.Namespace) -> int:
    """Train the demo task (adding problem, GRU) and say whether it beat the baseline."""
    _set_threads(args.threads)
    print(
        "rnnfast demo: a GRU learns the adding problem: remember two marked numbers in a "
        f"sequence of {DEMO['seq_len']} and output their sum (the first can be "
        f"{DEMO['seq_len'] - 1} steps back)."
    )
    args.json = args.plot = args.save = None
    overrides = {k: v for k, v in DEMO.items() if k != "task"}
    if args.seed is not None:
        overrides["seed"] = args.seed
    res = _run_and_report(args, str(DEMO["task"]), overrides, sys.stdout)
    mse = res["final"]["val_mse"]
    base = res["final"]["baseline_constant_mse"]
    verdict = "solved" if mse < 0.01 else "not solved yet"
    print(
        f"rnnfast demo: {verdict} -- MSE {mse:.4f} (< 0.01 counts as solved; always guessing the "
        f"mean gives {base:.3f}) in {res['seconds']:.0f} s.\n"
        "rnnfast demo: next: `python -m rnnfast diagnose` shows why a plain tanh RNN cannot learn "
        "this; `python -m rnnfast tasks` lists every built-in task."
    )
    return 0


def add_parser(sub: Any) -> None:
    """The ``demo`` subcommand on ``sub`` (argparse's subparsers)."""
    demo = sub.add_parser(
        "demo", help="train the demo task (< 1 min on one core) and print the result"
    )
    add_common(demo, seed=None)
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(func=cmd_demo)
