"""The implementations of a row (rnnfast, PyTorch, reference), their oracles, and one grid row."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .common import TORCH_CLASS, flops, weight_bytes
from .machine import Threads, bandwidth_level
from .timing import time_alternating

__all__ = [
    "Oracles",
    "Row",
    "TorchImpl",
    "compare",
    "functional_call",
    "functional_results",
    "rel_max_error",
    "run_row",
]


def _testing() -> Any:
    """rnnfast.testing, imported on first use: importing bench.py must not import rnnfast (the
    first-call children time that import)."""
    return importlib.import_module("rnnfast.testing")


def _functional_forward(
    mod: Any, cell: str, inp: Mapping[str, Any], training: bool
) -> tuple[Any, ...]:
    return _testing().call_forward(mod, cell, inp, training=training)


def _functional_backward(mod: Any, cell: str, cache: Any, dy: Any) -> dict[str, Any]:
    return _testing().call_backward(mod, cell, cache, dy)


def functional_call(mod: Any, cell: str, inp: Mapping[str, Any], mode: str) -> Callable[[], Any]:
    """A zero-argument callable running one benchmark call of a functional-API module."""
    t = _testing()  # resolved once, outside the timed call
    fwd, bwd = t.call_forward, t.call_backward
    if mode == "inference":
        return lambda: fwd(mod, cell, inp, training=False)

    def step() -> Any:
        _, _, _, cache = fwd(mod, cell, inp, training=True)
        return bwd(mod, cell, cache, inp["dy"])

    return step


def functional_results(mod: Any, cell: str, inp: Mapping[str, Any], mode: str) -> dict[str, Any]:
    """Outputs (and, for training, gradients) of one call, under contract names."""
    y, h_n, c_n, cache = _functional_forward(mod, cell, inp, mode == "training")
    res: dict[str, Any] = {"y": y, "h_n": h_n}
    if cell == "lstm":
        res["c_n"] = c_n
    if mode == "training":
        g = _functional_backward(mod, cell, cache, inp["dy"])
        for key in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh"):
            if key == "c0" and cell != "lstm":
                continue
            res["d" + key] = g[key]
    return res


class TorchImpl:
    """torch.nn.RNN/LSTM/GRU with the benchmark's weights; one call = forward (+ autograd.grad)."""

    def __init__(self, torch: Any, cell: str, inp: Mapping[str, Any], dtype: Any) -> None:
        self.torch = torch
        self.cell = cell
        t, b, i = inp["x"].shape
        h = inp["w_hh"].shape[1]
        kwargs: dict[str, Any] = {"nonlinearity": "tanh"} if cell == "rnn" else {}
        self.module = getattr(torch.nn, TORCH_CLASS[cell])(i, h, **kwargs).to(dtype)
        with torch.no_grad():
            for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
                getattr(
                    self.module, f"{name.replace('w_', 'weight_').replace('b_', 'bias_')}_l0"
                ).copy_(torch.from_numpy(np.asarray(inp[name])).to(dtype))

        def tens(a: Any, grad: bool) -> Any:
            tt = torch.from_numpy(np.ascontiguousarray(a)).to(dtype)
            return tt.requires_grad_(grad)

        self.x = {g: tens(inp["x"], g) for g in (False, True)}
        self.h0 = {g: tens(inp["h0"][None], g) for g in (False, True)}
        self.c0 = {g: tens(inp["c0"][None], g) for g in (False, True)} if cell == "lstm" else None
        self.dy = tens(inp["dy"], False)
        self.params = [
            self.module.weight_ih_l0,
            self.module.weight_hh_l0,
            self.module.bias_ih_l0,
            self.module.bias_hh_l0,
        ]

    def _forward(self, grad: bool) -> tuple[Any, Any, Any]:
        if self.cell == "lstm":
            assert self.c0 is not None
            y, (h_n, c_n) = self.module(self.x[grad], (self.h0[grad], self.c0[grad]))
            return y, h_n, c_n
        y, h_n = self.module(self.x[grad], self.h0[grad])
        return y, h_n, None

    def inference(self) -> Any:
        with self.torch.inference_mode():
            return self._forward(False)

    def inputs_with_grad(self) -> list[Any]:
        ins = [self.x[True], self.h0[True]]
        if self.c0 is not None:
            ins.append(self.c0[True])
        return ins

    def training(self) -> Any:
        y, _, _ = self._forward(True)
        loss = (y * self.dy).sum()
        return self.torch.autograd.grad(loss, self.params + self.inputs_with_grad())

    def call(self, mode: str) -> Callable[[], Any]:
        return self.inference if mode == "inference" else self.training

    def results(self, mode: str) -> dict[str, Any]:
        """Same keys as functional_results, as float64 NumPy arrays."""
        if mode == "inference":
            with self.torch.inference_mode():
                y, h_n, c_n = self._forward(False)
            grads = None
        else:
            y, h_n, c_n = self._forward(True)
            loss = (y * self.dy).sum()
            grads = self.torch.autograd.grad(loss, self.params + self.inputs_with_grad())

        def npy(a: Any) -> np.ndarray:
            return a.detach().to(self.torch.float64).numpy()

        res: dict[str, Any] = {"y": npy(y), "h_n": npy(h_n[0])}
        if c_n is not None:
            res["c_n"] = npy(c_n[0])
        if grads is not None:
            names = ["dw_ih", "dw_hh", "db_ih", "db_hh", "dx", "dh0"] + (
                ["dc0"] if self.cell == "lstm" else []
            )
            for name, g in zip(names, grads):
                arr = npy(g)
                res[name] = arr[0] if name in ("dh0", "dc0") else arr
        return res


def rel_max_error(actual: Any, expected: Any) -> tuple[float, tuple[int, ...]]:
    """max |a - e| / max |e| and the index of the largest absolute difference (float64); see
    :func:`rnnfast.testing.rel_max_error`."""
    return _testing().rel_max_error(actual, expected)


def compare(actual: Mapping[str, Any], expected: Mapping[str, Any]) -> tuple[float, str]:
    """Worst error over the keys of ``expected``: (error, 'key at index')."""
    worst, where = 0.0, ""
    for key, exp in expected.items():
        if key not in actual or actual[key] is None:
            return float("inf"), f"{key} missing"
        err, idx = rel_max_error(actual[key], exp)
        if err > worst or not where:
            worst, where = err, f"{key} at {idx}"
    return worst, where


@dataclass
class Row:
    """One benchmark row (times in ms; None when an implementation was not run)."""

    cell: str
    hidden: int
    batch: int
    steps: int
    mode: str
    threads: int
    status: str = "ok"
    message: str = ""
    oracle: str = ""
    error: float | None = None
    error_where: str = ""
    rnnfast_ms: float | None = None
    torch_ms: float | None = None
    reference_ms: float | None = None
    spread: dict[str, float] = field(default_factory=dict)
    gflop: float = 0.0
    rnnfast_gflops: float | None = None
    torch_gflops: float | None = None
    limit_gflops: float | None = None
    frac_limit: float | None = None
    speedup: float | None = None
    weight_gbs: float | None = None
    bw_level: str | None = None
    bw_gbs: float | None = None
    frac_bw: float | None = None


class Oracles:
    """Oracle results per (cell, H, B): float64 reference (small shapes), float64 PyTorch (big)."""

    def __init__(self, reference: Any, torch: Any, ref_max_work: float) -> None:
        self.reference = reference
        self.torch = torch
        self.ref_max_work = ref_max_work
        self._cache: dict[tuple[str, int, int], tuple[str, dict[str, Any]]] = {}

    def get(self, cell: str, h: int, b: int, inp: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        key = (cell, h, b)
        if key not in self._cache:
            t, _, i = inp["x"].shape
            use_ref = self.torch is None or flops(cell, t, b, i, h, "training") <= self.ref_max_work
            if use_ref:
                inp64 = {
                    k: (None if v is None else np.asarray(v, dtype=np.float64))
                    for k, v in inp.items()
                }
                res = functional_results(self.reference, cell, inp64, "training")
                self._cache[key] = ("reference f64", res)
            else:
                res = TorchImpl(self.torch, cell, inp, self.torch.float64).results("training")
                self._cache[key] = ("torch f64", res)
        return self._cache[key]

    def clear(self) -> None:
        self._cache.clear()


def run_row(
    row: Row,
    impl: Any,
    torch: Any,
    reference: Any,
    oracles: Oracles,
    threads: Threads,
    limits: Mapping[str, Any],
    caches: Mapping[str, int],
    args: argparse.Namespace,
    inp: Mapping[str, Any],
) -> Row:
    """Check then time one row; fills in the Row."""
    cell, h, b, t, mode, nthr = row.cell, row.hidden, row.batch, row.steps, row.mode, row.threads
    threads.set(nthr)

    # 1. correctness on this row's inputs at this row's thread count
    oracle_name, expected_all = oracles.get(cell, h, b, inp)
    keys = ["y", "h_n"] + (["c_n"] if cell == "lstm" else [])
    if mode == "training":
        keys += ["dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh"] + (
            ["dc0"] if cell == "lstm" else []
        )
    expected = {k: expected_all[k] for k in keys}
    row.oracle = oracle_name
    try:
        actual = functional_results(impl, cell, inp, mode)
    except Exception as exc:  # report and skip the row, the grid goes on
        row.status, row.message = "FAILED", f"rnnfast raised {type(exc).__name__}: {exc}"
        return row
    err, where = compare(actual, expected)
    row.error, row.error_where = err, where
    if not err <= args.tol:
        row.status = "FAILED"
        row.message = (
            f"rnnfast {cell} H={h} B={b} {mode} threads={nthr}: max relative error {err:.3e} "
            f"> tol {args.tol:.1e} ({where}) vs {oracle_name}; row not timed"
        )
        return row
    del actual

    # 2. timing, alternated
    fns: dict[str, Callable[[], Any]] = {"rnnfast": functional_call(impl, cell, inp, mode)}
    if torch is not None and not args.no_torch:
        fns["torch"] = TorchImpl(torch, cell, inp, torch.float32).call(mode)
    if reference is not None and h <= args.ref_max_hidden and b <= args.ref_max_batch:
        inp_ref = dict(inp)
        fns["reference"] = functional_call(reference, cell, inp_ref, mode)
    res = time_alternating(
        fns, repeats=args.repeats, min_sample=args.min_sample, warmup=args.warmup
    )
    row.rnnfast_ms = res["rnnfast"]["median_s"] * 1e3
    row.spread = {k: v["spread"] for k, v in res.items()}
    if "torch" in res:
        row.torch_ms = res["torch"]["median_s"] * 1e3
        row.speedup = row.torch_ms / row.rnnfast_ms
    if "reference" in res:
        row.reference_ms = res["reference"]["median_s"] * 1e3

    # 3. derived figures
    i = inp["x"].shape[2]
    f = flops(cell, t, b, i, h, mode)
    row.gflop = f / 1e9
    row.rnnfast_gflops = f / (row.rnnfast_ms * 1e-3) / 1e9
    if row.torch_ms:
        row.torch_gflops = f / (row.torch_ms * 1e-3) / 1e9
    gemm = limits["sgemm"].get(str(nthr))
    if gemm:
        row.limit_gflops = gemm["gflops"]
        row.frac_limit = row.rnnfast_gflops / row.limit_gflops
    if b == 1:
        row.weight_gbs = weight_bytes(cell, t, i, h, mode) / (row.rnnfast_ms * 1e-3) / 1e9
        bw = limits["bandwidth"].get(str(nthr), {})
        level = bandwidth_level(cell, h, nthr, caches)
        row.bw_level = level
        if level in bw:
            row.bw_gbs = bw[level]
            row.frac_bw = row.weight_gbs / row.bw_gbs
    return row
