"""The cell-variant rows of ``benchmarks/bench.py`` (issue 14): each new cell against the nearest
PyTorch construction, training step and inference, checked against the float64 oracle first.

A row: the fused rnnfast cell (``rnnfast.functional`` / ``rnnfast.minimal``), the PyTorch
construction of :mod:`rnnbench.torch_loops` (a loop with autograd where PyTorch has no such cell,
``nn.LSTM(proj_size=P)`` for the projection, ``nn.GRU`` / ``nn.LSTM`` for minGRU / minLSTM) and, for
scale, rnnfast's plain fused LSTM or GRU of the same size. One call:

  inference  ``<cell>_forward(..., training=False)``; torch ``module(x)`` under ``inference_mode``
  training   forward + backward of L = sum(y * dy) with every gradient (dx included) on both sides;
             torch ``y.backward(dy)`` (``bench_proj._torch_step``), zero initial state on both sides

Correctness before timing: rnnfast's y and every gradient, and the torch construction's y and
parameter gradients, against the float64 oracle (``rnnfast.reference``) on the row's own inputs at
the row's thread count (max |a - e| / max |e| <= tol; the layer-normalised LSTM 5e-3: LN(c_t)
subtracts the row mean of an unnormalised c_t, which costs float32 more bits). A failed check marks
the row FAILED with the error and where; it is not timed. Zoneout / recurrent dropout are training
only (the identity at evaluation: the plain cell), their masks fixed inputs of both sides.
"""

from __future__ import annotations

import argparse
import importlib
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .common import MODES
from .impls import compare
from .machine import Threads
from .timing import time_alternating

__all__ = [
    "VARIANTS",
    "VARIANT_ROWS",
    "Variant",
    "VariantRow",
    "fused_call",
    "oracle_results",
    "run_variants",
    "variant_inputs",
    "variants_markdown",
]

_LSTM = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")
_GRU = ("x", "h0", "g_ih", "g_hh", "gb_ih", "gb_hh")
_F, _R = "rnnfast.functional", "rnnfast.reference"
_M, _RM = "rnnfast.minimal", "rnnfast.reference.minimal"


@dataclass(frozen=True)
class Variant:
    """One cell: its rnnfast and oracle functions, arguments (input keys), torch construction."""

    name: str
    args: tuple[str, ...]
    torch: str  # a key of torch_loops.KINDS
    plain: str  # the plain fused cell shown for scale ("lstm" / "gru")
    fast: tuple[str, str, str] = ("", "", "")  # module, forward, backward ('' -> functional)
    ref: tuple[str, str, str] = ("", "", "")  # the float64 oracle's ('' -> rnnfast.reference)
    kwargs: tuple[tuple[str, str], ...] = ()  # (keyword, input key)
    dy: str = "dy"
    modes: tuple[str, ...] = MODES
    torch_oracle: str = ""  # the variant whose oracle checks the torch side ('' -> this one)
    tol: float | None = None  # None -> --tol

    def fns(self, f64: bool) -> tuple[str, str, str]:
        given = self.ref if f64 else self.fast
        if given[0]:
            return given
        return (_R if f64 else _F, f"{self.name}_forward", f"{self.name}_backward")


def _minimal(name: str, peer: str) -> Variant:
    """minGRU / minLSTM (rnnfast.minimal) against PyTorch's GRU / LSTM of the same width."""
    fns = (f"{name}_forward", f"{name}_backward")
    key = "mg" if name == "mingru" else "ml"
    return Variant(
        name, ("x", "h0", f"{key}_w", f"{key}_b"), peer, peer, fast=(_M, *fns), ref=(_RM, *fns),
        torch_oracle=peer,
    )  # fmt: skip


def _regularised(cell: str) -> Variant:
    """The LSTM / GRU with zoneout (h, and c for the LSTM) and recurrent dropout (training only)."""
    masks = ("zoneout_h", "dropout_h") + (("zoneout_c",) if cell == "lstm" else ())
    return Variant(
        f"{cell}+zoneout+rec.dropout", _LSTM if cell == "lstm" else _GRU, f"zoneout_{cell}", cell,
        fast=(_F, f"{cell}_regularised_forward", f"{cell}_backward"),
        ref=(_R, f"{cell}_regularised_forward", f"{cell}_regularised_backward"),
        kwargs=tuple((m, m) for m in masks), modes=("training",),
    )  # fmt: skip


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("lstm", _LSTM, "lstm", "lstm"),
        Variant("gru", _GRU, "gru", "gru"),
        Variant("lstm_peephole", _LSTM + ("w_peep",), "peephole", "lstm"),
        Variant("gru_reset_before", _GRU, "reset_before", "gru"),
        Variant(
            "lstm_layernorm",
            _LSTM + ("ln_gamma_ih", "ln_gamma_hh", "ln_gamma_c", "ln_beta_c"),
            "ln_lstm",
            "lstm",
            tol=5e-3,
        ),
        Variant("gru_layernorm", _GRU + ("lng_gamma_ih", "lng_gamma_hh"), "ln_gru", "gru"),
        Variant(
            "lstm_proj",
            ("x", "ph0", "c0", "w_ih", "pw_hh", "b_ih", "b_hh", "w_hr"),
            "lstm_proj",
            "lstm",
            dy="pdy",
        ),
        *(_minimal(name, peer) for name, peer in (("mingru", "gru"), ("minlstm", "lstm"))),
        *(_regularised(cell) for cell in ("lstm", "gru")),
    )
}
VARIANT_ROWS: tuple[str, ...] = tuple(v for v in VARIANTS if v not in ("lstm", "gru"))


def variant_inputs(
    t: int, b: int, h: int, seed: int = 0, zoneout: float = 0.1, dropout: float = 0.25
) -> dict[str, np.ndarray]:
    """float32 inputs of every variant (I = H, P = H // 4, zero initial states).

    x on multiples of 1/8 in [-4, 4] and weights on multiples of 1/1024 in [-1/sqrt(H), 1/sqrt(H)]
    (the float32 input projection is exact for H <= 1024: minGRU's g(u) has a kink at 0 that a
    rounding across 0 would turn into a gradient difference no kernel is to blame for). Layer-norm
    gains near 1, the cell-state shift near 0. Masks: zoneout Bernoulli(``zoneout``) (T, B, H),
    recurrent dropout {0, 1/(1-p)} (B, H) with p = ``dropout``.
    """
    rng = np.random.default_rng(seed)
    k, p, f32 = 1.0 / math.sqrt(h), max(1, h // 4), np.float32

    def w(*shape: int) -> np.ndarray:
        return (np.round(rng.uniform(-k, k, shape) * 1024) / 1024).astype(f32)

    x = np.clip(np.round(rng.standard_normal((t, b, h)) * 8), -32, 32) / 8
    out = {
        "x": x.astype(f32),
        "dy": rng.standard_normal((t, b, h)).astype(f32),
        "pdy": rng.standard_normal((t, b, p)).astype(f32),
        "h0": np.zeros((b, h), f32),
        "c0": np.zeros((b, h), f32),
        "ph0": np.zeros((b, p), f32),
        "zoneout_h": (rng.random((t, b, h)) < zoneout).astype(f32),
        "zoneout_c": (rng.random((t, b, h)) < zoneout).astype(f32),
        "dropout_h": ((rng.random((b, h)) >= dropout) / (1.0 - dropout)).astype(f32),
    }
    shapes = {
        "w_ih": (4 * h, h), "w_hh": (4 * h, h), "b_ih": (4 * h,), "b_hh": (4 * h,),
        "w_peep": (3 * h,), "g_ih": (3 * h, h), "g_hh": (3 * h, h), "gb_ih": (3 * h,),
        "gb_hh": (3 * h,), "pw_hh": (4 * h, p), "w_hr": (p, h), "mg_w": (2 * h, h),
        "mg_b": (2 * h,), "ml_w": (3 * h, h), "ml_b": (3 * h,),
    }  # fmt: skip
    out.update({key: w(*shape) for key, shape in shapes.items()})
    for key, n in (
        ("ln_gamma_ih", 4),
        ("ln_gamma_hh", 4),
        ("lng_gamma_ih", 3),
        ("lng_gamma_hh", 3),
    ):
        out[key] = (1 + 0.2 * w(n * h)).astype(f32)
    out["ln_gamma_c"] = (1 + 0.2 * w(h)).astype(f32)
    out["ln_beta_c"] = (0.2 * w(h)).astype(f32)
    return out


def fused_call(
    v: Variant, p: Mapping[str, np.ndarray], mode: str, f64: bool = False
) -> Callable[[], tuple[Any, dict[str, Any] | None]]:
    """One call of the variant's fused (or, ``f64``, oracle) functions: () -> (y, grads or None).

    The oracle is always called in training form (``rnnfast.reference.minimal`` has no
    ``training`` argument); inference compares y only.
    """
    modname, fwd_name, bwd_name = v.fns(f64)
    mod = importlib.import_module(modname)
    fwd, bwd = getattr(mod, fwd_name), getattr(mod, bwd_name)

    def arr(key: str) -> np.ndarray:
        return np.asarray(p[key], np.float64) if f64 else p[key]

    args, dy = [arr(k) for k in v.args], arr(v.dy)
    kw = {name: arr(key) for name, key in v.kwargs}
    if mode == "inference" and not f64:
        return lambda: (fwd(*args, **kw, training=False)[0], None)

    def step() -> tuple[Any, dict[str, Any]]:
        out = fwd(*args, **kw)
        return out[0], bwd(out[-1], dy)

    return step


def oracle_results(v: Variant, p: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The float64 oracle's y and gradients ('y', 'dx', 'dw_ih', ...; h0/c0 left out: zero)."""
    y, grads = fused_call(v, p, "training", f64=True)()
    res = {"y": y}
    res.update({"d" + k: g for k, g in grads.items() if g is not None and k not in ("h0", "c0")})
    return res


def _expected(want: Mapping[str, Any], got: Mapping[str, Any]) -> dict[str, Any]:
    """The oracle's entries that an implementation produced (its y and the gradients it has)."""
    return {k: e for k, e in want.items() if got.get(k) is not None}


def _fast_results(v: Variant, p: Mapping[str, np.ndarray], mode: str) -> dict[str, Any]:
    y, grads = fused_call(v, p, mode)()
    return {"y": y, **{"d" + k: g for k, g in (grads or {}).items()}}


def _torch_call(mod: Any, p: Mapping[str, np.ndarray], v: Variant, mode: str) -> Any:
    import torch

    if mode == "training":
        from bench_proj import _torch_step  # the torch training step of bench_proj.py

        return _torch_step(mod, p["x"], p[v.dy])
    x = torch.from_numpy(p["x"])

    def infer() -> Any:
        with torch.inference_mode():
            return mod(x)[0]

    return infer


def _torch_results(mod: Any, call: Callable[[], Any], mode: str) -> dict[str, Any]:
    from .torch_loops import oracle_name

    y = call()
    res = {"y": y.detach().numpy()}
    if mode == "training":
        res.update({"d" + oracle_name(n): q.grad.numpy() for n, q in mod.named_parameters()})
    return res


@dataclass
class VariantRow:
    """One variant row (times in ms; None when not measured)."""

    variant: str
    torch_impl: str
    hidden: int
    batch: int
    steps: int
    mode: str
    threads: int
    plain: str = ""
    status: str = "ok"
    message: str = ""
    error: float | None = None
    error_where: str = ""
    torch_error: float | None = None
    torch_error_where: str = ""
    rnnfast_ms: float | None = None
    torch_ms: float | None = None
    plain_ms: float | None = None
    speedup: float | None = None
    cost_vs_plain: float | None = None
    spread: dict[str, float] = field(default_factory=dict)


def _check(
    row: VariantRow, what: str, got: Mapping[str, Any], want: Mapping[str, Any], tol: float
) -> tuple[float, str]:
    err, where = compare(got, _expected(want, got))
    if not err <= tol and row.status == "ok":
        row.status = "FAILED"
        row.message = (
            f"{what} {row.variant} H={row.hidden} B={row.batch} {row.mode}: max relative error "
            f"{err:.3e} > tol {tol:.1e} ({where}) vs the float64 oracle; row not timed"
        )
    return err, where


def run_variant_row(
    row: VariantRow,
    p: Mapping[str, np.ndarray],
    oracles: dict[str, dict[str, Any]],
    args: argparse.Namespace,
) -> VariantRow:
    """Check rnnfast, the torch construction and the plain cell against their oracles; then time."""
    from .torch_loops import build

    v = VARIANTS[row.variant]
    tol = args.tol if v.tol is None else max(args.tol, v.tol)
    for name in {v.name, v.torch_oracle or v.name, v.plain}:
        if name not in oracles:
            oracles[name] = oracle_results(VARIANTS[name], p)
    try:
        tmod = build(v.torch, p)
        calls = {
            "rnnfast": fused_call(v, p, row.mode),
            "torch": _torch_call(tmod, p, v, row.mode),
            "plain": fused_call(VARIANTS[v.plain], p, row.mode),
        }
        got = _fast_results(v, p, row.mode)
        row.error, row.error_where = _check(row, "rnnfast", got, oracles[v.name], tol)
        got = _torch_results(tmod, calls["torch"], row.mode)
        torch_want = oracles[v.torch_oracle or v.name]
        row.torch_error, row.torch_error_where = _check(row, "torch", got, torch_want, tol)
        plain = _fast_results(VARIANTS[v.plain], p, row.mode)
        _check(row, f"rnnfast plain {v.plain} beside", plain, oracles[v.plain], args.tol)
    except Exception as exc:  # report the row, the section goes on
        row.status, row.message = "FAILED", f"{row.variant}: {type(exc).__name__}: {exc}"
    if row.status != "ok":
        return row
    res = time_alternating(calls, repeats=args.repeats, min_sample=args.min_sample, warmup=2)
    row.rnnfast_ms, row.torch_ms, row.plain_ms = (res[k]["median_s"] * 1e3 for k in calls)
    row.speedup = row.torch_ms / row.rnnfast_ms
    row.cost_vs_plain = row.rnnfast_ms / row.plain_ms
    row.spread = {k: r["spread"] for k, r in res.items()}
    return row


def run_variants(args: argparse.Namespace, threads: Threads) -> list[VariantRow]:
    """Every variant row (--variant-hidden x --variant-batch x modes x --variant-threads)."""
    from .torch_loops import KINDS

    # torch notes once that oneDNN has no projected LSTM and it runs its own implementation
    warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")
    rows: list[VariantRow] = []
    for h in args.variant_hidden:
        for b in args.variant_batch:
            p = variant_inputs(args.steps, b, h, seed=10 * h + b)
            oracles: dict[str, dict[str, Any]] = {}
            for name in args.variant_cells:
                v = VARIANTS[name]
                for mode in (m for m in args.modes if m in v.modes):
                    for thr in args.variant_threads:
                        threads.set(thr)
                        row = VariantRow(
                            name, KINDS[v.torch][0], h, b, args.steps, mode, thr, plain=v.plain
                        )
                        rows.append(run_variant_row(row, p, oracles, args))
                        print(variant_console(row), flush=True)
    return rows


def _f(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def variant_console(r: VariantRow) -> str:
    head = f"{r.variant:24s} H={r.hidden:<4d} B={r.batch:<3d} {r.mode:9s} thr={r.threads}"
    if r.status != "ok":
        return f"{head}  FAILED  {r.message}"
    return (
        f"{head}  rnnfast {r.rnnfast_ms:8.2f} ms  {r.torch_impl} {r.torch_ms:8.2f} ms  "
        f"x{r.speedup:5.2f}  (plain {r.plain} {r.plain_ms:7.2f} ms)  err {r.error:.1e} / "
        f"{r.torch_error:.1e}"
    )


VARIANT_COLUMNS = [
    "cell", "PyTorch construction", "H", "B", "mode", "thr", "rnnfast ms", "torch ms", "x torch",
    "plain rnnfast ms", "cost vs plain", "err rnnfast", "err torch",
]  # fmt: skip


def variants_markdown(rows: list[VariantRow]) -> list[str]:
    """The report's section: the table of the variant rows (markdown lines)."""

    def md(cells: list[Any]) -> str:
        return "| " + " | ".join(str(c) for c in cells) + " |"

    lines = [
        "",
        "## Cell variants vs the nearest PyTorch construction (issue 14)",
        "",
        "T as above, I = H, P = H/4 (projection), float32, zero initial state; training = forward"
        " + backward with every gradient (dx included) on both sides; the plain rnnfast cell"
        " (lstm or gru, same H) for scale. Zoneout 0.1 on h (and c) and recurrent dropout 0.25,"
        " masks fixed inputs of both sides. Errors vs the float64 oracle (the torch side of"
        " minGRU / minLSTM: vs the GRU / LSTM oracle).",
        "",
        md(VARIANT_COLUMNS),
        md(["---"] * len(VARIANT_COLUMNS)),
    ]
    for r in rows:
        head = [r.variant, r.torch_impl, r.hidden, r.batch, r.mode, r.threads]
        if r.status != "ok":
            lines.append(md(head + [f"FAILED: {r.message}"] + [""] * 6))
            continue
        lines.append(
            md(
                head
                + [_f(r.rnnfast_ms, ".2f"), _f(r.torch_ms, ".2f"), f"**{r.speedup:.2f}**"]
                + [f"{_f(r.plain_ms, '.2f')} ({r.plain})", _f(r.cost_vs_plain, ".2f")]
                + [_f(r.error, ".1e"), _f(r.torch_error, ".1e")]
            )
        )
    return lines
