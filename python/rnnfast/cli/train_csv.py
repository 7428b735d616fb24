"""``rnnfast train --csv FILE --target COL``: a forecaster on a column of the user's own CSV
file: windows, a time-ordered split, normalisation from the training part, a persistence
baseline, predictions and a forecast.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._common import CLIError, _jsonable, _write_json

__all__ = ["CSV_DEFAULTS", "read_csv_columns"]


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


@dataclass
class _Series:
    """The CSV's columns (target first), normalised with the training part's statistics and cut
    into windows: ``x`` (input_len, N, n_cols), ``y`` (N, horizon); window ``j`` predicts rows
    ``ti[j] .. ti[j] + horizon - 1``; ``tr`` / ``va`` mark training / validation windows."""

    series: Any
    columns: list[str]
    mean: Any
    std: Any
    n_train: int
    input_len: int
    horizon: int
    dtype: Any
    x: Any
    y: Any
    ti: Any
    tr: Any
    va: Any


def _read_series(args: argparse.Namespace, cfg: dict[str, Any]) -> _Series:
    """Read --target (and --features), split by time, normalise, cut the windows."""
    from ..data import windows

    features = [c.strip() for c in (args.features or "").split(",") if c.strip()]
    columns = [args.target] + [c for c in dict.fromkeys(features) if c != args.target]
    series = read_csv_columns(args.csv, columns)
    n_steps = series.shape[0]
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
    return _Series(series, columns, mean, std, n_train, input_len, horizon, dtype, x, y, ti, tr, va)


def _build_model(cfg: dict[str, Any], s: _Series) -> Any:
    from ..modules import build_model

    cell, rnn_kwargs, init = str(cfg["cell"]), {}, cfg["init"] or "torch"
    if cell == "rnn-relu":
        cell, rnn_kwargs["nonlinearity"] = "rnn", "relu"
        init = cfg["init"] or "identity"
    return build_model(
        cell,
        s.series.shape[1],
        int(cfg["hidden"]),
        s.horizon,
        mode="many_to_one",
        num_layers=int(cfg["layers"]),
        dtype=s.dtype,
        seed=int(cfg["seed"]),
        init=init,
        **rnn_kwargs,
    )


def _train_csv(args: argparse.Namespace, out: Any) -> int:
    """``train --csv FILE --target COL``: windows, a time-ordered split, normalisation from the
    training part (stored in the checkpoint's metadata), a GRU, a persistence baseline."""
    from ..losses import MSELoss
    from ..optim import make_optimizer
    from ..training import EarlyStopping, fit

    cfg = dict(CSV_DEFAULTS)
    for key in cfg:
        v = getattr(args, key, None)
        if v is not None:
            cfg[key] = v
    s = _read_series(args, cfg)
    series, columns, mean, std, n_train = s.series, s.columns, s.mean, s.std, s.n_train
    x, y, ti, tr, va = s.x, s.y, s.ti, s.tr, s.va
    n_steps, n_cols = series.shape
    input_len, horizon, dtype = s.input_len, s.horizon, s.dtype
    model = _build_model(cfg, s)
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
        precision=getattr(args, "precision", None) or "fp32",
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
    extras = {"seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3)}
    values = (actual, pred, persist, future)
    _write_outputs(args, cfg, s, model, final, history, extras, values, out)
    return 0


def _write_outputs(
    args: argparse.Namespace,
    cfg: dict[str, Any],
    s: _Series,
    model: Any,
    final: dict[str, Any],
    history: Any,
    times: dict[str, float],
    values: tuple[Any, Any, Any, Any],
    out: Any,
) -> None:
    """--save (first: a failing extra never costs the model), --predictions, --json, --plot;
    every failure is collected into one :class:`CLIError`. ``values``: (actual, predicted,
    persistence, forecast or None), in the series' units."""
    from ..io import save

    actual, pred, persist, future = values
    failed: list[str] = []
    if args.save:  # first: a failing extra never costs the model
        norm = {"columns": s.columns, "mean": s.mean.tolist(), "std": s.std.tolist()}
        meta = {
            "task": "csv",
            "config": _jsonable(cfg),
            "csv": {"path": args.csv, "target": args.target, "features": s.columns[1:]},
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
            n_steps = s.series.shape[0]
            _write_predictions(
                args.predictions, s.ti, s.tr, s.va, actual, pred, persist, future, n_steps
            )
            print(f"rnnfast: wrote {args.predictions}", file=out)
        except OSError as exc:
            failed.append(f"--predictions: cannot write {args.predictions} ({exc})")
    if args.json:
        try:
            payload = {"csv": args.csv, "config": cfg, "history": history.rows(), "final": final}
            payload.update(**times)
            _write_json(args.json, payload)
            print(f"rnnfast: wrote {args.json}", file=out)
        except (OSError, ValueError, TypeError) as exc:
            failed.append(f"--json: cannot write {args.json} ({exc})")
    if args.plot:
        try:
            _plot_forecast(
                args.plot, s.series[:, 0], s.ti, s.va, pred, future, s.n_train, args.target
            )
            print(f"rnnfast: wrote {args.plot}", file=out)
        except (OSError, ValueError, TypeError, ImportError) as exc:
            failed.append(f"--plot: cannot write {args.plot} ({exc})")
    if failed:
        raise CLIError("; ".join(failed))


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
    from ..diagnostics import _figure

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
