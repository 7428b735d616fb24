"""``rnnfast train``: a built-in task (``--task``) end to end, with its report and outputs; the
``--csv`` path is in :mod:`rnnfast.cli.train_csv`. ``demo`` reuses :func:`_run_and_report`."""

from __future__ import annotations

import argparse
import io
import math
import sys
import time
from typing import Any

from ._common import (
    CLIError,
    _check_distinct,
    _check_output,
    _check_plot,
    _jsonable,
    _nonneg_int,
    _patience,
    _positive_float,
    _positive_int,
    _rate,
    _set_threads,
    _write_json,
    add_common,
    parse_bptt,
)
from .train_csv import CSV_DEFAULTS, _train_csv

__all__ = ["add_parser", "cmd_train"]


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
        "proj": getattr(args, "proj", None),
        "zoneout": getattr(args, "zoneout", None),
        "recurrent_dropout": getattr(args, "recurrent_dropout", None),
        "precision": getattr(args, "precision", None),
    }


def _task_config(
    args: argparse.Namespace, task: Any, task_name: str, overrides: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The options given (``extra``, checked against the task) and the task's config with them."""
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
    proj = {k: extra.pop(k) for k in ("proj",) if k in extra}  # run_task's, not the task's
    run_opts = {k: extra.pop(k) for k in ("precision",) if k in extra}  # run_task's too
    regularise = {k: extra.pop(k) for k in ("zoneout", "recurrent_dropout") if k in extra}
    try:
        cfg = task.config(**extra)
    except (ValueError, TypeError) as exc:
        raise CLIError(str(exc)) from None
    if proj and cfg["cell"] != "lstm_proj":
        raise CLIError(f"--proj: only with --cell lstm_proj, got cell {cfg['cell']!r}")
    cfg.update(proj)
    cfg.update(regularise)  # shown in the config line; run_task checks them
    extra.update(proj)
    extra.update(regularise)
    extra.update(run_opts)
    return extra, cfg


def _print_config(task: Any, cfg: dict[str, Any], out: Any) -> None:
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
    for key in ("zoneout", "recurrent_dropout"):
        if cfg.get(key):
            shown += f", {key}={cfg[key]}"
    print(f"rnnfast: {shown}", file=out)


def _train_task(
    args: argparse.Namespace, task: Any, extra: dict[str, Any], epochs: int, t0: float, out: Any
) -> Any:
    """:func:`rnnfast.tasks.run_task` with a line per epoch (or a bar on a terminal); errors from
    the options (before the model is built) become :class:`CLIError`."""
    from ..tasks import run_task

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
        return run_task(
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


def _write_outputs(
    args: argparse.Namespace,
    task: Any,
    cfg: dict[str, Any],
    result: Any,
    history: list[dict[str, Any]],
    out: Any,
) -> None:
    """--save, then --json and --plot; every failure is collected into one :class:`CLIError`."""
    from ..io import save

    final = result.final
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
            from ..diagnostics import plot_history

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


def _run_and_report(
    args: argparse.Namespace, task_name: str, overrides: dict[str, Any], out: Any
) -> dict[str, Any]:
    """Train ``task_name`` with ``overrides``, print the progress and the result against the
    task's baseline, write the outputs asked for; returns the task name, final metrics, seconds."""
    from ..tasks import get_task

    task = get_task(task_name)
    extra, cfg = _task_config(args, task, task_name, overrides)
    _print_config(task, cfg, out)
    t0 = time.perf_counter()
    result = _train_task(args, task, extra, int(cfg["epochs"]), t0, out)
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
    _write_outputs(args, task, cfg, result, result.history_list(), out)
    return {"task": task.name, "final": final, "seconds": result.seconds}


def _distributed_output(args: argparse.Namespace) -> Any:
    """--distributed: make the MPI context that fit uses; ranks > 0 print and write nothing."""
    try:
        from ..distributed import init

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


def add_parser(sub: Any) -> None:
    """The ``train`` subcommand on ``sub`` (argparse's subparsers)."""
    tr = sub.add_parser(
        "train",
        help="train a built-in task, or a forecaster on your own CSV",
        description="Train a built-in task (--task NAME; its defaults: `python -m rnnfast tasks`) "
        "or a forecaster on a column of your own CSV file (--csv FILE --target COL). "
        "'default: the task's' means the value in the task's config; with --csv the default is "
        "the one after 'csv:'.",
    )
    _add_csv_options(tr)
    _add_training_options(tr)
    _add_output_options(tr)
    add_common(tr, seed=None)
    tr.set_defaults(func=cmd_train)


def _add_csv_options(tr: argparse.ArgumentParser) -> None:
    """--task or --csv, and the options only --csv has."""
    from ..tasks import list_tasks

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


def _add_training_options(tr: argparse.ArgumentParser) -> None:
    """The model and training options (defaults: the task's, or CSV_DEFAULTS with --csv)."""
    from ..tasks import CELLS

    d = CSV_DEFAULTS
    tr.add_argument(
        "--cell", choices=CELLS, default=None, help=f"default: the task's; csv: {d['cell']}"
    )
    tr.add_argument(
        "--hidden",
        type=_positive_int,
        help=f"hidden units (default: the task's; csv: {d['hidden']})",
    )
    tr.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        help="products of the recurrent layers: fp32 (default) or bf16 with fp32 accumulation "
        "(float32 models, full BPTT; portable path without native AVX512_BF16)",
    )
    tr.add_argument(
        "--proj",
        type=_positive_int,
        help="projection size P of --cell lstm_proj (PyTorch's proj_size; default hidden // 2)",
    )
    tr.add_argument(
        "--zoneout",
        type=_rate,
        metavar="P",
        help="zoneout rate of the recurrent units in training (Krueger et al. 2017; default 0)",
    )
    tr.add_argument(
        "--recurrent-dropout",
        type=_rate,
        metavar="P",
        help="variational dropout rate on h_{t-1} entering W_hh, one mask per sequence "
        "(Gal & Ghahramani 2016; default 0)",
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


def _add_output_options(tr: argparse.ArgumentParser) -> None:
    """--save, --json, --plot, --no-progress, --distributed."""
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
