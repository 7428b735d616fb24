"""``python -m rnnfast``: the command line.

Subcommands::

    python -m rnnfast demo                      # the README's first command: < 1 min on one core
    python -m rnnfast train --task adding --cell lstm [--hidden N] [--layers N] [--seq-len N]
        [--batch-size N] [--bptt k1,k2] [--epochs N] [--lr X] [--clip-norm X]
        [--dtype float32|float64] [--seed N] [--save PATH] [--json PATH] [--plot PATH]
        [--threads N] [--no-progress] [--init torch|orthogonal|identity]
        [--optimizer adam|adamw|sgd|rmsprop] [--n-train N] [--mode many_to_one|many_to_many]
        [--text PATH] [--distributed]           # --distributed: under `mpiexec -n N`, over MPI
        [--early-stopping N|off]
    python -m rnnfast train --csv FILE --target COL [--features A,B] [--input-len N] [--horizon N]
        [--val-fraction X] [--forecast N] [--predictions PATH] [--plot PATH] [--save PATH] ...
                                                # your own series: windows, persistence baseline
    python -m rnnfast sample CHECKPOINT [--prime TEXT] [--length N] [--temperature X] [--seed N]
    python -m rnnfast suggest CHECKPOINT "the value of the" [--k 5]   # next-word suggestions
    python -m rnnfast diagnose --task adding [--cell rnn,lstm,gru] [--seq-len N]
        [--train-steps N] [--explode-steps N] [--plot PATH]
    python -m rnnfast gradcheck                 # C++ vs reference vs finite differences, every cell
    python -m rnnfast tasks                     # list the built-in tasks and their defaults

Errors in the arguments (unknown task, malformed --bptt, an option a task does not have, an output
path that cannot be written, a checkpoint that cannot be used) print one line
``rnnfast <cmd>: error: ...`` and exit with status 2, as argparse does; never a traceback.

Nothing trained is lost to an output path: every file a command will write (``--save``, ``--json``,
``--plot``, ``--predictions``) is checked before any work starts (parent directory exists and is writable, the path is
not a directory, distinct from the others, a plot has an image format matplotlib can write and
matplotlib is installed), and ``train`` writes the checkpoint first, so a failing extra never costs
the model. ``--plot out`` (no extension) writes and reports ``out.png``.

Layout: one module per subcommand (``demo``, ``train`` with ``train_csv``, ``sample``, ``suggest``,
``diagnose``, ``gradcheck``, ``tasks``), each with its ``cmd_*`` and its ``add_parser(sub)``; the
argument types and output checks they share are in ``_common``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .._threads import single_thread_blas
from . import demo, diagnose, gradcheck, sample, suggest, tasks, train

# the names this module had as one file, for code that imports them from here
from ._common import (  # noqa: F401
    MAX_THREADS,
    CLIError,
    _check_distinct,
    _check_output,
    _check_plot,
    _jsonable,
    _set_threads,
    _table,
    _write_json,
    parse_bptt,
)
from .demo import DEMO, cmd_demo  # noqa: F401
from .diagnose import cmd_diagnose  # noqa: F401
from .gradcheck import cmd_gradcheck  # noqa: F401
from .sample import cmd_sample  # noqa: F401
from .suggest import cmd_suggest  # noqa: F401
from .tasks import cmd_tasks  # noqa: F401
from .train import cmd_train  # noqa: F401
from .train_csv import CSV_DEFAULTS, read_csv_columns  # noqa: F401

__all__ = ["build_parser", "main"]

#: the subcommands, in the order of the help
_SUBCOMMANDS = (demo, train, sample, suggest, diagnose, gradcheck, tasks)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``python -m rnnfast``."""
    p = argparse.ArgumentParser(
        prog="rnnfast",
        description="rnnfast: fast CPU RNN/LSTM/GRU training, "
        "built-in tasks, gradient diagnostics.",
    )
    sub = p.add_subparsers(
        dest="command", metavar="{demo,train,sample,suggest,diagnose,gradcheck,tasks}"
    )
    sub.required = True
    for module in _SUBCOMMANDS:
        module.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse ``argv`` (default ``sys.argv[1:]``), run the subcommand, return its
    status.

    User errors exit with status 2 and a one-line message (argparse style).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with single_thread_blas():  # NumPy's BLAS pool would fight the kernels' threads
            return int(args.func(args))
    except CLIError as exc:
        sub = f" {args.command}" if getattr(args, "command", None) else ""
        print(f"rnnfast{sub}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rnnfast: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `python -m rnnfast diagnose | head`: stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
