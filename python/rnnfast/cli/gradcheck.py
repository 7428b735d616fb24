"""``rnnfast gradcheck``: C++ vs the NumPy reference vs finite differences, every cell."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import _set_threads, _table, add_common

__all__ = ["add_parser", "cmd_gradcheck"]


def cmd_gradcheck(args: argparse.Namespace) -> int:
    from ..diagnostics import TOLERANCES, gradcheck

    _set_threads(args.threads)
    rows, ok = gradcheck(seed=args.seed)
    headers = [
        "cell",
        "dtype",
        "fwd C++ vs ref",
        "grad C++ vs ref",
        "grad C++ vs FD",
        "ref vs FD",
        "tbptt C++ vs ref",
        "ok",
    ]
    print(
        _table(
            headers,
            [
                [
                    r["cell"],
                    r["dtype"],
                    r["fwd_cpp_ref"],
                    r["grad_cpp_ref"],
                    r["grad_cpp_fd"],
                    r["grad_ref_fd"],
                    r["tbptt_cpp_ref"],
                    "ok" if r["ok"] else "FAIL",
                ]
                for r in rows
            ],
        )
    )
    tol = ", ".join(
        f"{k}: C++ vs ref {v['cpp_ref']:.0e}, vs FD {v['fd']:.0e}" for k, v in TOLERANCES.items()
    )
    print(f"\nmax relative errors (max |a - b| / max |b|); tolerances {tol}; ref vs FD in float64.")
    print("all within tolerance" if ok else "SOME CHECKS EXCEED THEIR TOLERANCE")
    return 0 if ok else 1


def add_parser(sub: Any) -> None:
    """The ``gradcheck`` subcommand on ``sub`` (argparse's subparsers)."""
    gc = sub.add_parser(
        "gradcheck", help="C++ vs NumPy reference vs finite differences, every cell"
    )
    add_common(gc)
    gc.set_defaults(func=cmd_gradcheck)
