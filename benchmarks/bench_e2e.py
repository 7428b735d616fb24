"""End-to-end benchmark: one epoch of ``rnnfast.fit`` against the idiomatic PyTorch loop (issue 12).

For every built-in task (``python -m rnnfast tasks``) the task's own model (embedding / recurrent
layer / linear head, the task's default cell, hidden size, batch size and learning rate) is trained
for one epoch on the task's training split by

  rnnfast  ``rnnfast.fit(model, train, loss, Adam, epochs=1, batch_size, clip_norm=1.0)``
  PyTorch  ``for batch: zero_grad; loss = lossfn(model(x)); loss.backward();
            clip_grad_norm_(params, 1.0); torch.optim.Adam.step()`` over the same data, batch size
            and shuffling (a fresh permutation per epoch), ragged batches through
            ``pack_padded_sequence`` as a PyTorch user would write it; the loss is the task's
            (``0.5 * MSELoss``: rnnfast's MSELoss is the half mean squared error; BCE with logits;
            cross-entropy),

The user path of the new cells (issue 14): ``adding:lstm_layernorm``, the adding task's many-to-one
model with a LayerNormLSTM, against the same PyTorch loop with the LayerNorm-LSTM loop module of
``rnnbench/torch_loops.py`` (what bench.py's lstm_layernorm rows time) in place of nn.LSTM.

Everything is timed at the library's default thread count and at one thread
(``rnnfast.set_num_threads`` / ``torch.set_num_threads``). Each of the four variants lives in its own worker process (so one
library's thread pool never spins beside the other's), the workers are kept warm and their epochs
alternated (A/B/C/D, A/B/C/D, ...); figures are medians over the repeats, wall time and the process's
CPU time. The rnnfast worker also times every call into the compiled core, so the report gives the
share of the epoch spent in the recurrent kernels and in all core calls.

Correctness before timing: every worker builds its model from the same rnnfast weights and reports
the loss and the global gradient norm of the first batch; each must match the rnnfast value to
``--tol`` (relative, 1e-4), else the task is reported FAILED and not timed.

Threading stress cases (LSTM H=256, B=1, T=100 inference, the issue's case, at default threads):
idle; with one busy competitor process per CPU; right after a PyTorch call each time (its OpenMP
pool spins ~10 ms after every call, in the same process); with a PyTorch thread computing beside it
in the same process; with onnxruntime's pool likewise when onnxruntime is installed. Each is
reported as the ratio to idle (target <= 2x with a competitor per core, the fair share; <= 1.5x
beside a spinning pool). CLI commands (demo; in the full run also gradcheck, diagnose) are timed at
default threads and at ``--threads 1``.

Examples
  python benchmarks/bench_e2e.py --quick                 # ~3 minutes on 2 cores
  python benchmarks/bench_e2e.py                         # ~10 minutes on 2 cores
  python benchmarks/bench_e2e.py --tasks adding charlm --repeats 5
  python benchmarks/bench_e2e.py --rnnfast-path /tmp/old/python   # another rnnfast checkout
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

from rnnbench.common import HERE
from rnnbench.e2e_cases import bench_cli, bench_stress, bench_task
from rnnbench.e2e_report import machine, markdown
from rnnbench.e2e_workers import import_rnnfast, task_setup

__all__ = ["main"]

# the old private name (a checkout's scripts may call bench_e2e._import_rnnfast)
_import_rnnfast = import_rnnfast


# the user-path rows of the new cells (issue 14): "task:cell", the task's model with that cell
CELL_CASES = ("adding:lstm_layernorm",)


def _is_sequence_task(rf: Any, name: str, cell: str | None = None) -> bool:
    task, _cfg, _train, model = task_setup(rf, name, 0.01, cell)
    return isinstance(model, rf.SequenceModel)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="25%% of each training set, 2 repeats, fewer stress samples, demo only",
    )
    ap.add_argument(
        "--tasks",
        nargs="*",
        default=None,
        help="task names, or task:cell for the task's model with another cell (default: every "
        "built-in task, then adding:lstm_layernorm)",
    )
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument(
        "--frac", type=float, default=None, help="fraction of each training set per epoch"
    )
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--no-stress", action="store_true")
    ap.add_argument(
        "--rnnfast-only", action="store_true", help="skip the PyTorch loops (before/after runs)"
    )
    ap.add_argument("--no-cli", action="store_true")
    ap.add_argument("--stress-seconds", type=float, default=None)
    ap.add_argument(
        "--rnnfast-path", default=None, help="import rnnfast from this python/ folder instead"
    )
    ap.add_argument("--out", default=str(HERE / "out" / "e2e"))
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.frac = args.frac or (0.25 if args.quick else 1.0)
    args.stress_seconds = args.stress_seconds or (1.0 if args.quick else 2.0)
    args.stress_repeats = 2 if args.quick else 3
    args.cli_repeats = 1 if args.quick else 2
    return args


def _report_head(args: argparse.Namespace, rf: Any, torch: Any) -> dict[str, Any]:
    """The report's header: date, machine, versions, command; an empty task list."""
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "rnnfast": rf.__version__,
        "rnnfast_path": args.rnnfast_path,
        "rnnfast_build": {
            k: v
            for k, v in rf.build_info().items()
            if k in ("variant", "num_threads", "omp_spin_count")
        },
        "torch": torch.__version__,
        "command": "python " + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "args": {"repeats": args.repeats, "frac": args.frac},
        "tasks": [],
    }


def _task_row(
    ctx: Any, name: str, args: argparse.Namespace, cell: str | None = None
) -> dict[str, Any]:
    """One task's row; a worker that died (EOFError) is retried once, other errors are reported."""
    row: dict[str, Any] = {}
    for _attempt in range(2):
        try:
            return bench_task(ctx, name, args, cell)
        except Exception as exc:  # noqa: BLE001 - reported in the table
            row = {
                "task": name,
                "check_ok": False,
                "error": f"{type(exc).__name__}: {str(exc)[:300]}",
            }
            if not isinstance(exc, EOFError):
                break
    return row


def _bench_tasks(args: argparse.Namespace, rf: Any, report: dict[str, Any]) -> None:
    """Every task's fit epochs (rows appended to ``report["tasks"]``), printed as they complete."""
    from rnnfast.tasks import get_task, list_tasks

    ctx = mp.get_context("spawn")
    for entry in args.tasks or [*list_tasks(), *CELL_CASES]:
        name, _, cell_arg = entry.partition(":")
        cell = cell_arg or None
        cfg = get_task(name).config()
        t0 = time.perf_counter()
        if not _is_sequence_task(rf, name, cell):
            print(
                f"{name:16s} skipped: its model is not a SequenceModel (no one-epoch torch twin here)"
            )
            continue
        row = _task_row(ctx, name, args, cell)
        row["task"], row["cell"], row["hidden"] = entry, cell or cfg["cell"], cfg["hidden"]
        row["seconds"] = time.perf_counter() - t0
        report["tasks"].append(row)
        if row.get("check_ok"):
            print(
                f"{entry:16s} torch/rf default {row['torch_over_rnnfast_default']:5.2f}  1t {row['torch_over_rnnfast_1']:5.2f}"
                f"  rf 1t/default {row['rnnfast_1_over_default']:5.2f}  kernels/fit {row['kernel_rec_frac']:.2f}"
                f"  ({row['seconds']:.0f} s)",
                flush=True,
            )
        else:
            print(f"{entry:16s} FAILED {row.get('check') or row.get('error')}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(HERE))
    rf = import_rnnfast(args.rnnfast_path)
    import torch

    report = _report_head(args, rf, torch)
    _bench_tasks(args, rf, report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_e2e.json").write_text(json.dumps(report, indent=1, default=str))
    if not args.no_stress:
        report["stress"] = bench_stress(args)
        print("stress", json.dumps(report["stress"]["ratio_to_idle"]), flush=True)
    if not args.no_cli:
        report["cli"] = bench_cli(args)
        print("cli", json.dumps(report["cli"]), flush=True)
    report["loadavg_end"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_e2e.json").write_text(json.dumps(report, indent=1, default=str))
    md = markdown(report)
    (out / "bench_e2e.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
