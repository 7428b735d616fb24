"""``rnnfast tasks``: the built-in tasks and their defaults."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import _table

__all__ = ["add_parser", "cmd_tasks"]


def cmd_tasks(args: argparse.Namespace) -> int:
    from ..tasks import get_task, list_tasks

    rows = []
    for name in list_tasks():
        t = get_task(name)
        c = t.default_config
        rows.append(
            [name, t.mode, c["cell"], c["hidden"], c["seq_len"], c["epochs"], t.description]
        )
    print(_table(["task", "mode", "cell", "hidden", "seq_len", "epochs", "description"], rows))
    return 0


def add_parser(sub: Any) -> None:
    """The ``tasks`` subcommand on ``sub`` (argparse's subparsers)."""
    ls = sub.add_parser("tasks", help="list the built-in tasks")
    ls.set_defaults(func=cmd_tasks)
