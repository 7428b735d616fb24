"""bf16 products (issue 18): rnnfast bf16 vs rnnfast fp32 vs torch fp32 vs torch bf16, one layer.

Inference (B = 1 by default: the per-step product streams W_hh, so half the bytes should show) and
training (forward + backward with every gradient and dL/dx) of one rnn / lstm / gru layer, input
size = H, the same weights everywhere (torch's ``nn.<Cell>(H, H)``; torch bf16 is that module after
``.to(torch.bfloat16)``, inputs in bf16). rnnfast runs ``rnnfast.functional`` in float32, bf16
through ``rnnfast._precision.precision("bf16")``. 1 thread on both sides unless ``--threads``.

Inference rows also time ``module.freeze()`` in fp32 and bf16 (the weights packed once; checked
bitwise equal to the unfrozen call of the same precision first).

Checked before timing (max |a - b| / max |b| over y and, in training, every gradient):
rnnfast fp32 vs torch fp32 <= 1e-4; rnnfast bf16 vs torch fp32 <= 5e-2 (bf16 roundoff, measured
~1e-3-1e-2); torch bf16 vs torch fp32 is printed (it rounds activations too). Timings are medians
over ``--repeats`` rounds in which the four variants run alternately. The CPU model and whether it
has AVX512_BF16 / AMX are printed first: rnnfast builds only the portable bf16 path (bf16 storage
widened to fp32 in registers), torch uses oneDNN's native bf16 kernels where the CPU has them.

    python benchmarks/bench_bf16.py [--cells lstm,gru,rnn] [--infer 100x1x256,100x1x512,100x1x1024]
                                    [--train 50x16x256,50x64x256,50x16x512] [--repeats 7]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings
from typing import Any, Callable

import numpy as np

from rnnbench.machine import cpuinfo

__all__ = ["main"]

_TORCH = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


def _cpu() -> str:
    return cpuinfo().get("cpu_model") or platform.processor() or "unknown"


def _rel(a: Any, b: Any) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _setup(cell: str, T: int, B: int, H: int, seed: int = 0) -> dict[str, Any]:
    import torch

    torch.manual_seed(seed)
    tmod = getattr(torch.nn, _TORCH[cell])(H, H)
    tbf = getattr(torch.nn, _TORCH[cell])(H, H)
    tbf.load_state_dict(tmod.state_dict())
    tbf = tbf.to(torch.bfloat16)
    w = [
        getattr(tmod, n).detach().numpy().copy()
        for n in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    ]
    rng = np.random.default_rng(seed)
    return {
        "cell": cell,
        "tmod": tmod,
        "tbf": tbf,
        "w": w,
        "x": rng.standard_normal((T, B, H)).astype(np.float32),
        "dy": rng.standard_normal((T, B, H)).astype(np.float32),
    }


def _fast(p: dict[str, Any], precision: str, train: bool) -> Callable[[], Any]:
    from rnnfast import functional as F
    from rnnfast._precision import precision as use

    cell, x, dy, w = p["cell"], p["x"], p["dy"], p["w"]
    fwd, bwd = getattr(F, f"{cell}_forward"), getattr(F, f"{cell}_backward")
    states = (None, None) if cell == "lstm" else (None,)

    def run() -> Any:
        with use(precision):
            y, *_, cache = fwd(x, *states, *w, training=train)
            if not train:
                return y, None
            return y, bwd(cache, dy)

    return run


def _frozen(p: dict[str, Any], precision: str) -> Callable[[], Any]:
    """Inference on ``module.freeze(precision)`` of an rnnfast module with p's weights."""
    import rnnfast

    cell, x, w = p["cell"], p["x"], p["w"]
    H = w[1].shape[1]
    m = getattr(rnnfast.nn, _TORCH[cell])(w[0].shape[1], H)
    names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    m.load_state_dict(dict(zip(names, w)))
    f = m.eval().freeze(precision)

    def run() -> Any:
        return f(x)[0], None

    return run


def _torch(p: dict[str, Any], bf16: bool, train: bool) -> Callable[[], Any]:
    import torch

    mod = p["tbf"] if bf16 else p["tmod"]
    dt = torch.bfloat16 if bf16 else torch.float32
    x = torch.from_numpy(p["x"]).to(dt)
    dy = torch.from_numpy(p["dy"]).to(dt)

    def run() -> Any:
        if not train:
            with torch.no_grad():
                return mod(x)[0], None
        mod.zero_grad(set_to_none=True)
        xr = x.detach().requires_grad_(True)
        y, _ = mod(xr)
        y.backward(dy)
        return y, xr

    return run


def _outputs(p: dict[str, Any], fn: Callable[[], Any], kind: str, train: bool) -> list[np.ndarray]:
    """y (and dx, dW_ih, dW_hh, db_ih, db_hh) as float64 arrays from one run of a variant."""
    y, extra = fn()
    if kind == "fast":
        out = [np.asarray(y)]
        if train:
            out += [extra[k] for k in ("x", "w_ih", "w_hh", "b_ih", "b_hh")]
        return [np.asarray(a, np.float64) for a in out]
    mod = p["tbf"] if kind == "torch_bf16" else p["tmod"]
    out = [y.detach().float().numpy()]
    if train:
        out.append(extra.grad.float().numpy())
        out += [
            getattr(mod, n).grad.float().numpy()
            for n in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
        ]
    return [np.asarray(a, np.float64) for a in out]


def _check(p: dict[str, Any], fns: dict[str, Callable[[], Any]], train: bool) -> dict[str, float]:
    ref = _outputs(p, fns["torch_fp32"], "torch", train)
    errs = {}
    for name, kind in (("fast_fp32", "fast"), ("fast_bf16", "fast"), ("torch_bf16", "torch_bf16")):
        got = _outputs(p, fns[name], kind, train)
        errs[name] = max(_rel(a, b) for a, b in zip(got, ref))
    for frozen, plain in (("frz_fp32", "fast_fp32"), ("frz_bf16", "fast_bf16")):
        if frozen in fns and not np.array_equal(fns[frozen]()[0], fns[plain]()[0]):
            raise SystemExit(f"{frozen}: not bitwise the module's {plain} output")
    if not errs["fast_fp32"] <= 1e-4:
        raise SystemExit(
            f"rnnfast fp32 vs torch fp32: max rel error {errs['fast_fp32']:.2e} > 1e-4"
        )
    if not errs["fast_bf16"] <= 5e-2:
        raise SystemExit(
            f"rnnfast bf16 vs torch fp32: max rel error {errs['fast_bf16']:.2e} > 5e-2"
        )
    return errs


def _time(
    fns: dict[str, Callable[[], Any]], repeats: int, clock: Callable[[], float]
) -> dict[str, float]:
    for f in fns.values():  # warm-up (scratch buffers, packing, torch's allocator / primitives)
        f()
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = clock()
            f()
            times[k].append(clock() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _row(
    cell: str, shape: tuple[int, int, int], train: bool, repeats: int, clock: Callable[[], float]
) -> str:
    T, B, H = shape
    p = _setup(cell, T, B, H)
    fns = {
        "fast_fp32": _fast(p, "fp32", train),
        "fast_bf16": _fast(p, "bf16", train),
        "torch_fp32": _torch(p, False, train),
        "torch_bf16": _torch(p, True, train),
    }
    if not train:
        fns["frz_fp32"] = _frozen(p, "fp32")
        fns["frz_bf16"] = _frozen(p, "bf16")
    errs = _check(p, fns, train)
    m = _time(fns, repeats, clock)
    ms = {k: 1e3 * v for k, v in m.items()}
    line = (
        f"{'train' if train else 'infer':5s} {cell:4s} {T:<4d} {B:<3d} {H:<5d}| {ms['fast_fp32']:9.2f} "
        f"{ms['fast_bf16']:9.2f} {ms['torch_fp32']:10.2f} {ms['torch_bf16']:10.2f} | "
        f"{m['fast_fp32'] / m['fast_bf16']:8.2f}x {m['torch_bf16'] / m['fast_bf16']:8.2f}x "
        f"{m['torch_fp32'] / m['fast_fp32']:8.2f}x | {errs['fast_bf16']:.1e} {errs['torch_bf16']:.1e}"
    )
    if not train:
        line += (
            f" | frozen fp32 {ms['frz_fp32']:.2f} bf16 {ms['frz_bf16']:.2f}: bf16/fp32 "
            f"{m['frz_fp32'] / m['frz_bf16']:.2f}x, vs tbf16 {m['torch_bf16'] / m['frz_bf16']:.2f}x"
        )
    return line


def _shapes(spec: str) -> list[tuple[int, int, int]]:
    return [tuple(int(v) for v in s.split("x")) for s in spec.split(",") if s]  # type: ignore[misc]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default="lstm,gru,rnn")
    ap.add_argument(
        "--infer", default="100x1x256,100x1x512,100x1x1024", help="TxBxH,... (inference)"
    )
    ap.add_argument("--train", default="50x16x256,50x64x256,50x16x512", help="TxBxH,... (training)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: perf_counter; cpu: the calling thread's CPU time (thread_time; 1 thread only: "
        "robust to a busy shared machine, where time spent descheduled would count as wall time)",
    )
    args = ap.parse_args(argv)
    if args.clock == "cpu" and args.threads != 1:
        raise SystemExit("--clock cpu: needs --threads 1 (the kernels run on the calling thread)")
    clock = time.perf_counter if args.clock == "wall" else time.thread_time

    import torch

    import rnnfast
    from rnnfast._precision import Bf16PathWarning, bf16_info

    torch.set_num_threads(args.threads)
    rnnfast.set_num_threads(args.threads)
    warnings.simplefilter("ignore", Bf16PathWarning)
    info = bf16_info()
    print(
        f"CPU: {_cpu()}; AVX512_BF16: {info['cpu_avx512_bf16']}, AMX-BF16: {info['cpu_amx_bf16']}; "
        f"rnnfast bf16 path: {info['path']} ({rnnfast.build_info().get('variant', '?')} variant); "
        f"threads: {args.threads}; torch {torch.__version__}; clock: {args.clock}"
    )
    print(
        "mode  cell T    B   H    |  fast fp32 fast bf16 torch fp32 torch bf16 | "
        "bf16/fp32 vs tbf16 tfp32/fp32 | err bf16 tbf16  (ms, medians; err vs torch fp32)"
    )
    for cell in args.cells.split(","):
        for shape in _shapes(args.infer):
            print(_row(cell, shape, False, args.repeats, clock), flush=True)
        for shape in _shapes(args.train):
            print(_row(cell, shape, True, args.repeats, clock), flush=True)


if __name__ == "__main__":
    main()
