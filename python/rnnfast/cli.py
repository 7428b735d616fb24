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
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._threads import single_thread_blas
from .io import check_writable

__all__ = ["build_parser", "main"]


class CLIError(Exception):
    """A user error: printed as ``rnnfast <cmd>: error: <message>`` with exit status 2."""


# --------------------------------------------------------------------------------------------------
# argument types
# --------------------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return v


#: The most threads ``--threads`` accepts (more are never useful on a CPU and can exhaust memory).
MAX_THREADS = 1024


def _thread_count(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer in 1..{MAX_THREADS}, got {text!r}"
        ) from None
    if not 1 <= v <= MAX_THREADS:
        raise argparse.ArgumentTypeError(f"expected an integer in 1..{MAX_THREADS}, got {text!r}")
    return v


def _seq_len_at_least_2(text: str) -> int:
    v = _positive_int(text)
    if v < 2:
        raise argparse.ArgumentTypeError(
            f"expected an integer >= 2 (the adding problem marks two steps), got {text!r}"
        )
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def parse_bptt(text: str) -> tuple[int, int]:
    """``"k1,k2"`` (or ``"k"`` for k1 = k2) -> (k1, k2) with k2 >= k1 >= 1."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(
            f"expected k1,k2 (two positive integers, k2 >= k1, e.g. 20,40), got {text!r}"
        )
    k1, k2 = int(parts[0]), int(parts[1])
    if k1 < 1 or k2 < k1:
        raise argparse.ArgumentTypeError(f"expected k2 >= k1 >= 1, got k1={k1}, k2={k2}")
    return k1, k2


def _patience(text: str) -> int | bool:
    """``--early-stopping``: a patience in epochs (>= 0), or ``off`` (False)."""
    if text.strip().lower() in ("off", "no", "none"):
        return False
    return _nonneg_int(text)


def _cell_list(text: str) -> list[str]:
    from .tasks import CELLS

    cells = [c.strip() for c in text.split(",") if c.strip()]
    bad = [c for c in cells if c not in CELLS]
    if not cells or bad:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(CELLS)}, got {text!r}"
        )
    return cells


# --------------------------------------------------------------------------------------------------
# output helpers
# --------------------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v == 0 or not math.isfinite(v):
            return str(v)
        return f"{v:.4g}" if 1e-3 <= abs(v) < 1e5 else f"{v:.2e}"
    return str(v)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_fmt(v) for v in r] for r in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(line.rstrip() for line in out)


def _jsonable(obj: Any) -> Any:
    """Replace non-finite floats by None and NumPy scalars/arrays by Python values (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _write_json(path: str, payload: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(_jsonable(payload), indent=2, allow_nan=False) + "\n")


def _set_threads(n: int | None) -> None:
    if n is not None:
        from . import set_num_threads

        try:
            set_num_threads(int(n))
        except (ValueError, TypeError, OverflowError, RuntimeError) as exc:  # a cap; no threads
            raise CLIError(f"--threads: {exc}") from None


def _check_output(path: str | None, flag: str) -> str | None:
    """Check, before any work, that ``path`` can be written (:func:`rnnfast.io.check_writable`;
    ``--save`` writes a temp file beside the target); return it as it will be written."""
    if path is None:
        return None
    try:
        return check_writable(path, flag, temp_beside=flag == "--save")
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _plot_formats() -> dict[str, str]:
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError as exc:
        raise CLIError(
            f"--plot: needs matplotlib, the optional extra rnnfast[plot] "
            f"(pip install 'rnnfast[plot]'): {exc}"
        ) from None
    return dict(FigureCanvasBase.get_supported_filetypes())


def _check_plot(path: str | None) -> str | None:
    """``--plot``: matplotlib importable and a known image format; returns the file name that will
    be written (``.png`` appended when the name has no extension, as matplotlib does)."""
    if path is None:
        return None
    formats = _plot_formats()
    if Path(path).expanduser().is_dir():
        raise CLIError(f"--plot: {path!r} is a directory; expected an image file path")
    suffix = Path(path).suffix
    if not suffix:
        path = path + ".png"
    elif suffix[1:].lower() not in formats:
        raise CLIError(
            f"--plot: unknown image format {suffix!r} in {path!r}; expected one of "
            f"{', '.join('.' + f for f in sorted(formats))}"
        )
    return _check_output(path, "--plot")


def _check_distinct(paths: Sequence[tuple[str, str | None]]) -> None:
    seen: dict[str, str] = {}
    for flag, path in paths:
        if path is None:
            continue
        key = os.path.realpath(path)
        if key in seen:
            raise CLIError(
                f"{flag}: {path!r} is also the {seen[key]} file; give each output its own"
            )
        seen[key] = flag


# --------------------------------------------------------------------------------------------------
# train / demo
# --------------------------------------------------------------------------------------------------


def _score_line(task: Any, final: dict[str, Any]) -> str:
    """One human sentence comparing the result with the task's main baseline."""
    if task.kind == "regression":
        mse = final["val_mse"]
        base_key = next((k for k in final if k.startswith("baseline_") and k.endswith("mse")), None)
        if base_key is None:
            return f"validation MSE {mse:.4g}"
        base = final[base_key]
        name = base_key[len("baseline_") :].replace("_", " ")
        times = f"{base / mse:.1f}x lower" if mse > 0 else "perfect"
        return f"validation MSE {mse:.4g} vs {name} {base:.4g} ({times})"
    if task.name == "charlm":
        nats = final["val_loss"]
        return (
            f"validation loss {nats:.3f} nats/char ({nats / math.log(2):.2f} bits/char) vs "
            f"bigram {final['baseline_bigram_nats']:.3f}, "
            f"unigram {final['baseline_unigram_nats']:.3f}, "
            f"uniform {final['baseline_uniform_nats']:.3f}"
        )
    if task.name == "suggest":
        return (
            f"validation top-5 accuracy {final['val_top5_accuracy']:.1%} "
            f"(top-1 {final['val_top1_accuracy']:.1%}) vs bigram top-5 "
            f"{final['baseline_bigram_top5_accuracy']:.1%} (top-1 "
            f"{final['baseline_bigram_top1_accuracy']:.1%}), unigram top-5 "
            f"{final['baseline_unigram_top5_accuracy']:.1%}"
        )
    if task.name == "dates":
        return (
            f"validation sequence accuracy {final['val_accuracy']:.1%} greedy, "
            f"{final['val_beam_accuracy']:.1%} beam search (characters "
            f"{final['val_char_accuracy']:.1%}) vs most common answer "
            f"{final['baseline_majority_accuracy']:.1%} (characters, per-position majority: "
            f"{final['baseline_per_position_majority_char_accuracy']:.1%})"
        )
    acc = final["val_accuracy"]
    bases = ", ".join(
        f"{k[len('baseline_') :].replace('_accuracy', '').replace('_', ' ')} {v:.1%}"
        for k, v in final.items()
        if k.startswith("baseline_")
    )
    return f"validation accuracy {acc:.1%} (baselines: {bases})"


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "cell": args.cell,
        "hidden": args.hidden,
        "layers": args.layers,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "bptt": list(args.bptt) if args.bptt else None,
        "epochs": args.epochs,
        "lr": args.lr,
        "clip_norm": args.clip_norm,
        "dtype": args.dtype,
        "seed": args.seed,
        "init": args.init,
        "optimizer": args.optimizer,
        "n_train": args.n_train,
        "mode": args.mode,
    }


def _run_and_report(
    args: argparse.Namespace, task_name: str, overrides: dict[str, Any], out: Any
) -> dict[str, Any]:
    from .io import save
    from .tasks import get_task, run_task

    task = get_task(task_name)
    extra = {k: v for k, v in overrides.items() if v is not None}
    if task_name == "sentiment" and "seq_len" in extra:
        raise CLIError("--seq-len: the sentiment toy has fixed sentences of 2-6 words")
    if "mode" in extra and "mode" not in task.data_options:
        raise CLIError(f"--mode: task {task_name!r} has a fixed mode ({task.mode})")
    if getattr(args, "text", None):
        if task_name != "charlm":
            raise CLIError("--text: only the charlm task reads a text file")
        extra["text_path"] = args.text
    mode = extra.get("mode", task.mode)  # the requested mode (sine has both)
    if extra.get("bptt") and mode != "many_to_many":
        raise CLIError(
            f"--bptt: truncated BPTT needs a many-to-many task; {task_name!r} is {mode}"
            + (" (try --mode many_to_many)" if "mode" in task.data_options else "")
        )
    try:
        cfg = task.config(**extra)
    except (ValueError, TypeError) as exc:
        raise CLIError(str(exc)) from None
    print(f"rnnfast: task {task.name} ({task.description})", file=out)
    shown = ", ".join(
        f"{k}={cfg[k]}"
        for k in (
            "cell",
            "hidden",
            "layers",
            "seq_len",
            "batch_size",
            "epochs",
            "lr",
            "clip_norm",
            "bptt",
            "dtype",
            "seed",
        )
    )
    if cfg.get("early_stopping") not in (None, False):
        shown += f", early_stopping={cfg['early_stopping']}"
    print(f"rnnfast: {shown}", file=out)
    t0 = time.perf_counter()
    epochs = int(cfg["epochs"])

    def epoch_line(epoch: int, logs: dict[str, Any]) -> None:
        parts = [f"epoch {logs.get('epoch', epoch + 1)}/{epochs}: loss {logs['loss']:.4g}"]
        for key in ("val_loss", "accuracy", "val_accuracy"):
            if logs.get(key) is not None:
                parts.append(f"{key} {logs[key]:.4g}")
        elapsed = f" ({time.perf_counter() - t0:.1f} s)"
        print("rnnfast: " + ", ".join(parts) + elapsed, file=out, flush=True)

    show_bar = not args.no_progress and sys.stderr.isatty()
    built = False

    def on_model(model: Any) -> None:
        nonlocal built
        built = True

    try:
        result = run_task(
            task,
            progress=show_bar,
            callbacks=() if show_bar else (epoch_line,),
            on_model=on_model,
            **extra,
        )
    except MemoryError as exc:  # sizes from the command line that do not fit in memory
        raise CLIError(f"out of memory: {exc}") from None
    except (ValueError, TypeError) as exc:
        if built:  # raised during training: not a command-line problem, keep the traceback
            raise
        # making the data or the model: a bad option value (e.g. an unreadable --text file)
        raise CLIError(str(exc)) from None
    total = time.perf_counter() - t0
    final = result.final
    hist = result.history
    if getattr(hist, "stop_reason", None) == "early_stopping":
        vals = [e.get("val_loss") for e in hist.epochs]
        best = min((v, i + 1) for i, v in enumerate(vals) if v is not None)[1]
        print(
            f"rnnfast: stopped early after epoch {len(vals)} (no better validation loss); kept "
            f"epoch {best}'s weights",
            file=out,
        )
    print(
        f"rnnfast: trained in {result.seconds:.1f} s wall, {result.cpu_seconds:.1f} s CPU "
        f"({total:.1f} s wall with data generation): "
        f"{_score_line(task, final)}",
        file=out,
    )
    history = result.history_list()
    # the checkpoint first: a failing extra (JSON, plot) must never cost the trained model
    failed: list[str] = []
    if args.save:
        meta: dict[str, Any] = {
            "task": task.name,
            "config": _jsonable(cfg),
            "final": _jsonable(final),
        }
        if "vocab" in result.train.info:
            meta["vocab"] = result.train.info["vocab"]
        try:
            save(args.save, result.model, meta=meta)
            print(f"rnnfast: saved the model to {args.save}", file=out)
        except (OSError, ValueError, TypeError) as exc:
            failed.append(f"--save: cannot write {args.save} ({exc})")
    if args.json:
        try:
            _write_json(
                args.json,
                {
                    "task": task.name,
                    "cell": cfg["cell"],
                    "config": cfg,
                    "history": history,
                    "final": final,
                    "seconds": round(result.seconds, 3),
                    "cpu_seconds": round(result.cpu_seconds, 3),
                },
            )
            print(f"rnnfast: wrote {args.json}", file=out)
        except (OSError, ValueError, TypeError) as exc:
            failed.append(f"--json: cannot write {args.json} ({exc})")
    if args.plot:
        try:
            from .diagnostics import plot_history

            base = None
            if task.kind == "regression":
                key = next(
                    (k for k in final if k.startswith("baseline_") and k.endswith("mse")), None
                )
                base = 0.5 * final[key] if key else None  # MSELoss is half the mean squared error
            plot_history(
                {cfg["cell"]: history},
                args.plot,
                title=f"{task.name}: loss per epoch",
                baseline=base,
                baseline_label="baseline (same loss units)",
            )
            print(f"rnnfast: wrote {args.plot}", file=out)
        except (OSError, ValueError, TypeError, ImportError) as exc:
            failed.append(f"--plot: cannot write {args.plot} ({exc})")
    if failed:
        kept = (
            f" (the model was saved to {args.save})"
            if args.save and not failed[0].startswith("--save")
            else ""
        )
        raise CLIError("; ".join(failed) + kept)
    return {"task": task.name, "final": final, "seconds": result.seconds}


def _distributed_output(args: argparse.Namespace) -> Any:
    """--distributed: make the MPI context that fit uses; ranks > 0 print and write nothing."""
    try:
        from .distributed import init

        ctx = init()  # an uncaught exception on any rank now aborts every rank
    except ImportError as exc:
        raise CLIError(
            f"--distributed: needs mpi4py and an MPI library (pip install 'rnnfast[mpi]'): {exc}"
        ) from None
    if ctx.is_root:
        return sys.stdout
    args.json = args.plot = args.save = None
    args.no_progress = True
    return io.StringIO()


#: ``train --csv`` options (None = not given) and the ``--task`` options they exclude
_CSV_ONLY = (
    "target",
    "features",
    "input_len",
    "horizon",
    "val_fraction",
    "forecast",
    "predictions",
)
_TASK_ONLY = ("text", "mode", "n_train", "bptt", "seq_len", "distributed")


def cmd_train(args: argparse.Namespace) -> int:
    if (args.task is None) == (args.csv is None):
        raise CLIError(
            "expected one of --task NAME (a built-in task) or --csv FILE (your own series)"
        )
    used = _TASK_ONLY if args.csv else _CSV_ONLY
    for key in used:
        if getattr(args, key, None) not in (None, False):
            flag = "--" + key.replace("_", "-")
            if args.csv:
                hint = " (use --input-len)" if key == "seq_len" else ""
                raise CLIError(f"{flag}: not an option of --csv training{hint}")
            raise CLIError(f"{flag}: only with --csv FILE")
    if args.csv and args.target is None:
        raise CLIError("--target: required with --csv (the column to forecast)")
    if args.csv and args.forecast and args.features and args.features.strip(","):
        raise CLIError("--forecast: needs future values of --features; only without --features")
    # every output path is checked before training starts (nothing trained is lost to a typo)
    args.save = _check_output(args.save, "--save")
    args.json = _check_output(args.json, "--json")
    args.plot = _check_plot(args.plot)
    args.predictions = _check_output(args.predictions, "--predictions")
    _check_distinct(
        [
            ("--save", args.save),
            ("--json", args.json),
            ("--plot", args.plot),
            ("--predictions", args.predictions),
        ]
    )
    _set_threads(args.threads)
    if args.csv:
        return _train_csv(args, sys.stdout)
    out = _distributed_output(args) if getattr(args, "distributed", False) else sys.stdout
    overrides = _train_overrides(args)
    overrides["early_stopping"] = args.early_stopping
    _run_and_report(args, args.task, overrides, out)
    return 0


# --------------------------------------------------------------------------------------------------
# train --csv: a user's own time series
# --------------------------------------------------------------------------------------------------

#: ``train --csv`` defaults (every one can be changed by its option).
CSV_DEFAULTS: dict[str, Any] = {
    "cell": "gru",
    "hidden": 32,
    "layers": 1,
    "batch_size": 32,
    "epochs": 30,
    "lr": 0.01,
    "clip_norm": 1.0,
    "optimizer": "adam",
    "init": None,
    "dtype": "float32",
    "seed": 0,
    "early_stopping": 5,
    "input_len": 48,
    "horizon": 1,
    "val_fraction": 0.2,
    "forecast": 0,
}


def read_csv_columns(path: str, columns: Sequence[str]) -> Any:
    """The named ``columns`` of a CSV file with a header line, as a (rows, len(columns)) float64
    array; blank lines are skipped, anything else that is not a finite number is an error naming
    the line and column (no pandas needed)."""
    import csv

    try:
        f = open(path, newline="", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise CLIError(f"--csv: cannot read {path!r} ({exc.strerror or exc})") from None
    with f:
        try:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            if not header:
                raise CLIError(f"--csv: {path!r} is empty; expected a header line of column names")
            missing = [c for c in columns if c not in header]
            if missing:
                flag = "--target" if missing[0] == columns[0] else "--features"
                raise CLIError(
                    f"{flag}: no column {missing[0]!r} in {path!r} (columns: {', '.join(header)})"
                )
            idx = [header.index(c) for c in columns]
            rows: list[list[float]] = []
            for row in reader:
                if not any(c.strip() for c in row):
                    continue
                vals = []
                for c, i in zip(columns, idx):
                    cell = row[i].strip() if i < len(row) else ""
                    try:
                        v = float(cell)
                    except ValueError:
                        v = math.nan
                    if not math.isfinite(v):
                        raise CLIError(
                            f"--csv: {path!r} line {reader.line_num}, column {c!r}: expected a "
                            f"finite number, got {cell!r}"
                        )
                    vals.append(v)
                rows.append(vals)
        except UnicodeDecodeError:
            raise CLIError(f"--csv: {path!r} is not UTF-8 text") from None
        except csv.Error as exc:
            raise CLIError(f"--csv: {path!r}: {exc}") from None
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(columns))


def _train_csv(args: argparse.Namespace, out: Any) -> int:
    """``train --csv FILE --target COL``: windows, a time-ordered split, normalisation from the
    training part (stored in the checkpoint's metadata), a GRU, a persistence baseline."""
    from .data import windows
    from .io import save
    from .losses import MSELoss
    from .modules import build_model
    from .tasks import make_optimizer
    from .training import EarlyStopping, fit

    cfg = dict(CSV_DEFAULTS)
    for key in cfg:
        v = getattr(args, key, None)
        if v is not None:
            cfg[key] = v
    features = [c.strip() for c in (args.features or "").split(",") if c.strip()]
    columns = [args.target] + [c for c in dict.fromkeys(features) if c != args.target]
    series = read_csv_columns(args.csv, columns)
    n_steps, n_cols = series.shape
    input_len, horizon = int(cfg["input_len"]), int(cfg["horizon"])
    vf = float(cfg["val_fraction"])
    if not 0.0 < vf < 1.0:
        raise CLIError(f"--val-fraction: expected a number in (0, 1), got {vf}")
    n_train = int(round(n_steps * (1.0 - vf)))
    if n_train < input_len + horizon or n_steps - n_train < horizon:
        raise CLIError(
            f"--csv: {n_steps} rows are too few for --input-len {input_len} and --horizon "
            f"{horizon} with --val-fraction {vf} (training needs input_len + horizon = "
            f"{input_len + horizon} rows, validation at least {horizon})"
        )
    # normalisation from the training part only: the validation part stays unseen
    mean = series[:n_train].mean(axis=0)
    std = series[:n_train].std(axis=0)
    std[std == 0] = 1.0
    dtype = np.dtype(cfg["dtype"]).type
    w = windows((series - mean) / std, input_len, horizon, target=0, dtype=dtype)
    ti = w.target_index
    tr, va = ti + horizon <= n_train, ti >= n_train  # no window's targets straddle the split
    x, y = w
    if not va.any():
        raise CLIError(f"--val-fraction: {vf} leaves no validation window of {horizon} steps")
    cell, rnn_kwargs, init = str(cfg["cell"]), {}, cfg["init"] or "torch"
    if cell == "rnn-relu":
        cell, rnn_kwargs["nonlinearity"] = "rnn", "relu"
        init = cfg["init"] or "identity"
    model = build_model(
        cell,
        n_cols,
        int(cfg["hidden"]),
        horizon,
        mode="many_to_one",
        num_layers=int(cfg["layers"]),
        dtype=dtype,
        seed=int(cfg["seed"]),
        init=init,
        **rnn_kwargs,
    )
    print(
        f"rnnfast: {args.csv}: {n_steps} rows; target {args.target!r}, inputs {columns}; "
        f"{int(tr.sum())} training windows (rows < {n_train}), {int(va.sum())} validation "
        f"windows (the last {n_steps - n_train} rows); input_len {input_len}, horizon {horizon}",
        file=out,
    )
    shown = ("cell", "hidden", "layers", "batch_size", "epochs", "lr", "early_stopping", "seed")
    print("rnnfast: " + ", ".join(f"{k}={cfg[k]}" for k in shown), file=out, flush=True)
    opt = make_optimizer(str(cfg["optimizer"]), model.parameters(), float(cfg["lr"]))
    patience = cfg["early_stopping"]
    t0, c0 = time.perf_counter(), time.process_time()
    history = fit(
        model,
        (x[:, tr], y[tr]),
        MSELoss(),
        opt,
        epochs=int(cfg["epochs"]),
        batch_size=int(cfg["batch_size"]),
        clip_norm=cfg["clip_norm"],
        val_data=(x[:, va], y[va]),
        early_stopping=None if patience is False else EarlyStopping(patience=int(patience)),
        progress=not args.no_progress,
        verbose=1,
        seed=int(cfg["seed"]),
    )
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    # predictions in the series' own units, and the persistence forecast (the last input value)
    mu, sd = mean[0], std[0]
    pred = model.predict(x).astype(np.float64) * sd + mu  # (N, horizon)
    actual = y.astype(np.float64) * sd + mu
    persist = np.repeat(series[ti - 1, :1], horizon, axis=1)
    mse = float(np.mean((pred[va] - actual[va]) ** 2))
    base = float(np.mean((persist[va] - actual[va]) ** 2))
    ratio = f"{base / mse:.1f}x lower" if mse > 0 else "perfect"
    stop = f", stopped early at epoch {len(history)} (best epoch's weights)" * (
        history.stop_reason == "early_stopping"
    )
    print(
        f"rnnfast: trained in {seconds:.1f} s wall, {cpu:.1f} s CPU{stop}: validation MSE "
        f"{mse:.4g} (RMSE {math.sqrt(mse):.4g} in {args.target!r} units) vs persistence "
        f"{base:.4g} (RMSE {math.sqrt(base):.4g}; {ratio})",
        file=out,
    )
    future = None
    steps = int(cfg["forecast"])
    if steps and n_cols == 1:
        last = ((series[-input_len:] - mean) / std).astype(dtype)[:, None, :]
        future = model.forecast(last, steps)[:, 0, 0].astype(np.float64) * sd + mu
        print(
            f"rnnfast: forecast of the next {steps} rows: " + ", ".join(f"{v:.4g}" for v in future),
            file=out,
        )
    final = {
        "val_mse": mse,
        "val_rmse": math.sqrt(mse),
        "baseline_persistence_mse": base,
        "stop_reason": history.stop_reason,
        "epochs": len(history),
    }
    failed: list[str] = []
    if args.save:  # first: a failing extra never costs the model
        norm = {"columns": columns, "mean": mean.tolist(), "std": std.tolist()}
        meta = {
            "task": "csv",
            "config": _jsonable(cfg),
            "csv": {"path": args.csv, "target": args.target, "features": columns[1:]},
            "normalisation": norm,
            "final": _jsonable(final),
        }
        try:
            save(args.save, model, meta=meta)
            print(f"rnnfast: saved the model (and the normalisation) to {args.save}", file=out)
        except (OSError, ValueError, TypeError) as exc:
            failed.append(f"--save: cannot write {args.save} ({exc})")
    if args.predictions:
        try:
            _write_predictions(args.predictions, ti, tr, va, actual, pred, persist, future, n_steps)
            print(f"rnnfast: wrote {args.predictions}", file=out)
        except OSError as exc:
            failed.append(f"--predictions: cannot write {args.predictions} ({exc})")
    if args.json:
        try:
            payload = {"csv": args.csv, "config": cfg, "history": history.rows(), "final": final}
            payload.update(seconds=round(seconds, 3), cpu_seconds=round(cpu, 3))
            _write_json(args.json, payload)
            print(f"rnnfast: wrote {args.json}", file=out)
        except (OSError, ValueError, TypeError) as exc:
            failed.append(f"--json: cannot write {args.json} ({exc})")
    if args.plot:
        try:
            _plot_forecast(args.plot, series[:, 0], ti, va, pred, future, n_train, args.target)
            print(f"rnnfast: wrote {args.plot}", file=out)
        except (OSError, ValueError, TypeError, ImportError) as exc:
            failed.append(f"--plot: cannot write {args.plot} ({exc})")
    if failed:
        raise CLIError("; ".join(failed))
    return 0


def _write_predictions(
    path: str, ti: Any, tr: Any, va: Any, actual: Any, pred: Any, persist: Any, future: Any, n: int
) -> None:
    """CSV: one line per (window, step): the 0-based data row of the target, the split, the step
    ahead, the actual value, the model's and persistence's predictions; then the forecast rows."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        wr = csv.writer(f)
        wr.writerow(["row", "split", "step", "actual", "predicted", "persistence"])
        for j in range(len(ti)):
            split = "train" if tr[j] else "val" if va[j] else "gap"
            for k in range(pred.shape[1]):
                wr.writerow(
                    [
                        int(ti[j]) + k,
                        split,
                        k + 1,
                        f"{actual[j, k]:.9g}",
                        f"{pred[j, k]:.9g}",
                        f"{persist[j, k]:.9g}",
                    ]
                )
        for k, v in enumerate([] if future is None else future):
            wr.writerow([n + k, "forecast", k + 1, "", f"{v:.9g}", ""])


def _plot_forecast(
    path: str, target: Any, ti: Any, va: Any, pred: Any, future: Any, n_train: int, name: str
) -> None:
    """The series (the last stretch before validation and all of it), the one-step-ahead
    predictions on validation, and the forecast past the end."""
    from .diagnostics import _figure

    fig = _figure((8.0, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    start = max(0, n_train - 3 * max(int(va.sum()), 1))
    rows = np.arange(len(target))
    ax.plot(rows[start:], target[start:], color="0.3", lw=1.2, label=f"{name} (actual)")
    ax.plot(ti[va], pred[va, 0], color="C0", lw=1.2, label="predicted (1 step ahead)")
    if future is not None:
        fr = np.arange(len(target), len(target) + len(future))
        ax.plot(fr, future, color="C3", lw=1.4, label=f"forecast ({len(future)} steps)")
    ax.axvline(n_train - 0.5, color="0.6", ls=":", lw=1)
    ax.text(n_train, ax.get_ylim()[1], " validation", va="top", fontsize=8, color="0.4")
    ax.set_xlabel("row")
    ax.set_ylabel(name)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)


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


def cmd_tasks(args: argparse.Namespace) -> int:
    from .tasks import get_task, list_tasks

    rows = []
    for name in list_tasks():
        t = get_task(name)
        c = t.default_config
        rows.append(
            [name, t.mode, c["cell"], c["hidden"], c["seq_len"], c["epochs"], t.description]
        )
    print(_table(["task", "mode", "cell", "hidden", "seq_len", "epochs", "description"], rows))
    return 0


# --------------------------------------------------------------------------------------------------
# sample
# --------------------------------------------------------------------------------------------------


def cmd_sample(args: argparse.Namespace) -> int:
    from .io import load
    from .tasks.charlm import Vocab, sample_text

    try:
        ckpt = load(args.checkpoint)
    except FileNotFoundError:
        raise CLIError(f"{args.checkpoint}: no such checkpoint") from None
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    vocab_chars = ckpt.meta.get("vocab")
    if ckpt.meta.get("task") != "charlm" or not isinstance(vocab_chars, str):
        raise CLIError(
            f"{args.checkpoint}: not a charlm checkpoint (train one with "
            "`python -m rnnfast train --task charlm --save PATH`)"
        )
    try:
        vocab = Vocab(vocab_chars)
    except ValueError as exc:
        raise CLIError(f"{args.checkpoint}: meta.vocab: {exc}") from None
    from .modules import SequenceModel

    try:
        model = ckpt.build_model()  # rnnfast's own classes only; config and weights validated
    except (ValueError, TypeError) as exc:
        raise CLIError(
            str(exc) if args.checkpoint in str(exc) else f"{args.checkpoint}: {exc}"
        ) from None
    except MemoryError as exc:
        raise CLIError(
            f"{args.checkpoint}: the model config does not fit in memory: {exc}"
        ) from None
    if not isinstance(model, SequenceModel) or model.embedding is None:
        raise CLIError(
            f"{args.checkpoint}: expected a character model (a SequenceModel with an embedding), "
            f"got {type(model).__name__}"
        )
    sizes = {
        "embedding": model.embedding.num_embeddings,
        "output": model.head.out_features,
    }
    if any(n != len(vocab) for n in sizes.values()):
        raise CLIError(
            f"{args.checkpoint}: meta.vocab has {len(vocab)} characters but the model's "
            + " and ".join(f"{k} size is {v}" for k, v in sizes.items())
        )
    try:
        text = sample_text(
            model,
            vocab,
            prime=args.prime,
            length=args.length,
            temperature=args.temperature,
            seed=args.seed,
        )
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    print(text)
    return 0


def cmd_suggest(args: argparse.Namespace) -> int:
    """Top-k next words after a prompt from a ``suggest`` checkpoint."""
    from .io import load
    from .modules import SequenceModel
    from .tasks.suggest import suggest_words

    try:
        ckpt = load(args.checkpoint)
    except FileNotFoundError:
        raise CLIError(f"{args.checkpoint}: no such checkpoint") from None
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    vocab = ckpt.meta.get("vocab")
    if (
        ckpt.meta.get("task") != "suggest"
        or not isinstance(vocab, list)
        or not all(isinstance(w, str) for w in vocab)
    ):
        raise CLIError(
            f"{args.checkpoint}: not a suggest checkpoint (train one with "
            "`python -m rnnfast train --task suggest --save PATH`)"
        )
    try:
        model = ckpt.build_model()  # rnnfast's own classes only; config and weights validated
    except (ValueError, TypeError, MemoryError) as exc:
        raise CLIError(f"{args.checkpoint}: {exc}") from None
    if (
        not isinstance(model, SequenceModel)
        or model.embedding is None
        or model.embedding.num_embeddings != len(vocab)
        or model.head.out_features != len(vocab)
    ):
        raise CLIError(
            f"{args.checkpoint}: expected a word model over meta.vocab ({len(vocab)} words)"
        )
    try:
        words = suggest_words(model, vocab, args.prompt, k=args.k)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    for word, p in words:
        print(f"{word}\t{p:.3f}")
    return 0


# --------------------------------------------------------------------------------------------------
# diagnose
# --------------------------------------------------------------------------------------------------


def cmd_diagnose(args: argparse.Namespace) -> int:
    from .diagnostics import exploding_case, plot_gradient_flow, vanishing_case

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


# --------------------------------------------------------------------------------------------------
# gradcheck
# --------------------------------------------------------------------------------------------------


def cmd_gradcheck(args: argparse.Namespace) -> int:
    from .diagnostics import TOLERANCES, gradcheck

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


# --------------------------------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``python -m rnnfast``."""
    from .tasks import CELLS, list_tasks

    p = argparse.ArgumentParser(
        prog="rnnfast",
        description="rnnfast: fast CPU RNN/LSTM/GRU training, "
        "built-in tasks, gradient diagnostics.",
    )
    sub = p.add_subparsers(
        dest="command", metavar="{demo,train,sample,suggest,diagnose,gradcheck,tasks}"
    )
    sub.required = True

    def common(sp: argparse.ArgumentParser, seed: int | None = 0) -> None:
        sp.add_argument(
            "--threads",
            type=_thread_count,
            default=None,
            help=f"kernel threads, 1..{MAX_THREADS} (default: RNNFAST_NUM_THREADS or the cores)",
        )
        shown = "the task's" if seed is None else seed
        sp.add_argument(
            "--seed", type=_nonneg_int, default=seed, help=f"random seed (default: {shown})"
        )

    demo = sub.add_parser(
        "demo", help="train the demo task (< 1 min on one core) and print the result"
    )
    common(demo, seed=None)
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(func=cmd_demo)

    tr = sub.add_parser(
        "train",
        help="train a built-in task, or a forecaster on your own CSV",
        description="Train a built-in task (--task NAME; its defaults: `python -m rnnfast tasks`) "
        "or a forecaster on a column of your own CSV file (--csv FILE --target COL). "
        "'default: the task's' means the value in the task's config; with --csv the default is "
        "the one after 'csv:'.",
    )
    d = CSV_DEFAULTS
    tr.add_argument("--task", choices=list_tasks(), help="a built-in task (or use --csv)")
    tr.add_argument(
        "--csv",
        metavar="FILE",
        help="train on your own time series: a CSV file with a header line, rows in time order",
    )
    tr.add_argument("--target", metavar="COL", help="--csv: the column to forecast (required)")
    tr.add_argument(
        "--features",
        metavar="A,B",
        help="--csv: more input columns beside the target's own history (default: none)",
    )
    tr.add_argument(
        "--input-len",
        type=_positive_int,
        help=f"--csv: steps of history the model sees (default: {d['input_len']})",
    )
    tr.add_argument(
        "--horizon",
        type=_positive_int,
        help=f"--csv: steps predicted at once after them (default: {d['horizon']})",
    )
    tr.add_argument(
        "--val-fraction",
        type=_positive_float,
        help=f"--csv: the last fraction of rows held out for validation (default: "
        f"{d['val_fraction']})",
    )
    tr.add_argument(
        "--forecast",
        type=_nonneg_int,
        metavar="N",
        help="--csv: forecast N rows past the end (fed back step by step; no --features); "
        "printed, in --predictions and --plot (default: 0)",
    )
    tr.add_argument(
        "--predictions",
        metavar="PATH",
        help="--csv: write a CSV of every window's actual, predicted and persistence values "
        "(default: none)",
    )
    tr.add_argument(
        "--cell", choices=CELLS, default=None, help=f"default: the task's; csv: {d['cell']}"
    )
    tr.add_argument(
        "--hidden",
        type=_positive_int,
        help=f"hidden units (default: the task's; csv: {d['hidden']})",
    )
    tr.add_argument(
        "--layers",
        type=_positive_int,
        help=f"stacked layers (default: the task's; csv: {d['layers']})",
    )
    tr.add_argument(
        "--seq-len",
        type=_positive_int,
        help="sequence length of generated tasks (default: the task's)",
    )
    tr.add_argument(
        "--batch-size",
        type=_positive_int,
        help=f"sequences per optimizer step (default: the task's; csv: {d['batch_size']})",
    )
    tr.add_argument(
        "--bptt",
        type=parse_bptt,
        metavar="K1,K2",
        help="truncated BPTT: update every K1 steps through the last K2 (many-to-many tasks; "
        "default: full BPTT)",
    )
    tr.add_argument(
        "--epochs",
        type=_positive_int,
        help=f"at most this many epochs (default: the task's; csv: {d['epochs']})",
    )
    tr.add_argument(
        "--early-stopping",
        type=_patience,
        metavar="N|off",
        help="stop after N epochs without a better validation loss and keep the best epoch's "
        f"weights; 'off': never (default: the task's, else off; csv: {d['early_stopping']})",
    )
    tr.add_argument(
        "--lr", type=_positive_float, help=f"learning rate (default: the task's; csv: {d['lr']})"
    )
    tr.add_argument(
        "--clip-norm",
        type=_positive_float,
        help=f"clip the global gradient norm to this (default: the task's; csv: {d['clip_norm']})",
    )
    tr.add_argument(
        "--dtype", choices=("float32", "float64"), help="default: the task's; csv: float32"
    )
    tr.add_argument(
        "--init",
        choices=("torch", "orthogonal", "identity"),
        help="weight init preset (default: the task's; torch, or identity for rnn-relu)",
    )
    tr.add_argument(
        "--optimizer",
        choices=("adam", "adamw", "sgd", "rmsprop"),
        help=f"default: the task's; csv: {d['optimizer']}",
    )
    tr.add_argument(
        "--n-train",
        type=_positive_int,
        help="training sequences of generated tasks (default: the task's)",
    )
    tr.add_argument(
        "--mode",
        choices=("many_to_one", "many_to_many"),
        help="sine: one target or one per step (default: many_to_one)",
    )
    tr.add_argument(
        "--text",
        metavar="PATH",
        help="charlm: train on this UTF-8 text file (default: the shipped story)",
    )
    tr.add_argument(
        "--save", metavar="PATH", help="write a checkpoint (.npz + JSON metadata; default: none)"
    )
    tr.add_argument(
        "--json", metavar="PATH", help="write history and final metrics as JSON (default: none)"
    )
    tr.add_argument(
        "--plot",
        metavar="PATH",
        help="write a PNG of the loss curves; with --csv, of the forecast (needs rnnfast[plot]; "
        "default: none)",
    )
    tr.add_argument(
        "--no-progress", action="store_true", help="no progress bar (default: a bar on a terminal)"
    )
    tr.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over MPI: run under `mpiexec -n N`; --batch-size is the global batch "
        "(needs rnnfast[mpi]; default: one process)",
    )
    common(tr, seed=None)
    tr.set_defaults(func=cmd_train)

    sa = sub.add_parser("sample", help="generate text from a charlm checkpoint")
    sa.add_argument("checkpoint", help="checkpoint written by `train --task charlm --save PATH`")
    sa.add_argument("--prime", default="The ", help="text to start from (default %(default)r)")
    sa.add_argument("--length", type=_positive_int, default=300, help="characters to generate")
    sa.add_argument("--temperature", type=_positive_float, default=0.8)
    common(sa)
    sa.set_defaults(func=cmd_sample)

    sg = sub.add_parser("suggest", help="next-word suggestions from a suggest checkpoint")
    sg.add_argument("checkpoint", help="checkpoint written by `train --task suggest --save PATH`")
    sg.add_argument("prompt", help="the words typed so far, e.g. 'the value of the'")
    sg.add_argument("--k", type=_positive_int, default=5, help="how many words (default 5)")
    sg.set_defaults(func=cmd_suggest)

    dg = sub.add_parser("diagnose", help="show vanishing and exploding gradients")
    dg.add_argument("--task", default="adding", choices=["adding"])
    dg.add_argument(
        "--cell",
        type=_cell_list,
        default=["rnn", "lstm"],
        help="comma-separated cells among rnn, rnn-relu, lstm, gru (default rnn,lstm)",
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
    common(dg)
    dg.set_defaults(func=cmd_diagnose)

    gc = sub.add_parser(
        "gradcheck", help="C++ vs NumPy reference vs finite differences, every cell"
    )
    common(gc)
    gc.set_defaults(func=cmd_gradcheck)

    ls = sub.add_parser("tasks", help="list the built-in tasks")
    ls.set_defaults(func=cmd_tasks)
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
