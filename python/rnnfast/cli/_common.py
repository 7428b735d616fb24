"""Pieces every subcommand shares: :class:`CLIError`, the argparse value types, the table and JSON
writers, ``--threads``, and the checks of output paths made before any work starts."""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..io import check_writable

__all__ = ["CLIError", "MAX_THREADS", "add_common", "parse_bptt"]


class CLIError(Exception):
    """A user error: printed as ``rnnfast <cmd>: error: <message>`` with exit status 2."""


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _rate(text: str) -> float:
    """A probability in [0, 1) (a dropout or zoneout rate)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a rate in [0, 1), got {text!r}") from None
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"expected a rate in [0, 1), got {text!r}")
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
    from ..tasks import CELLS

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
        from .. import set_num_threads

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


def add_common(sp: argparse.ArgumentParser, seed: int | None = 0) -> None:
    """``--threads`` and ``--seed`` (default ``seed``; None: the task's), shared by subcommands."""
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
