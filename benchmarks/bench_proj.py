"""LSTM with projection: rnnfast.nn.LSTM(proj_size=P) against torch.nn.LSTM(proj_size=P).

One training step (forward + backward with every parameter gradient and dL/dx) of one layer, same
weights (torch's, loaded through ``rnnfast.interop.from_torch``), float32, 1 thread on both sides
(``torch.set_num_threads(1)``, ``rnnfast.set_num_threads(1)``) unless ``--threads`` says otherwise.
Also a plain LSTM of the same H (rnnfast and torch) for scale. Before timing, the outputs and
every gradient of rnnfast are checked against torch's (float32: rel max error <= 1e-4). Timings
are medians over ``--repeats`` rounds in which the variants run alternately.

    python benchmarks/bench_proj.py [--shapes 100x16x512x128,100x64x256x64] [--repeats 15]
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


def _cpu() -> str:
    return cpuinfo().get("cpu_model") or platform.processor() or "unknown"


def _rel(a: Any, b: Any) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _make(T: int, B: int, H: int, P: int, seed: int = 0) -> dict[str, Any]:
    import torch

    from rnnfast.interop import from_torch

    torch.manual_seed(seed)
    tmod = torch.nn.LSTM(H, H, proj_size=P)  # input size = H, as bench.py
    fmod = from_torch(tmod)
    tplain = torch.nn.LSTM(H, H)
    fplain = from_torch(tplain)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, H)).astype(np.float32)
    return {
        "tmod": tmod,
        "fmod": fmod,
        "tplain": tplain,
        "fplain": fplain,
        "x": x,
        "dy": rng.standard_normal((T, B, P)).astype(np.float32),
        "dy_plain": rng.standard_normal((T, B, H)).astype(np.float32),
    }


def _torch_step(mod: Any, x: np.ndarray, dy: np.ndarray) -> Callable[[], Any]:
    import torch

    xt = torch.from_numpy(x).requires_grad_(True)
    dyt = torch.from_numpy(dy)

    def step() -> Any:
        mod.zero_grad(set_to_none=True)
        xt.grad = None
        y, _ = mod(xt)
        y.backward(dyt)
        return y

    return step


def _fast_step(mod: Any, x: np.ndarray, dy: np.ndarray) -> Callable[[], Any]:
    def step() -> Any:
        mod.zero_grad()
        y, _ = mod(x)
        mod.backward(dy)
        return y

    return step


def _check(p: dict[str, Any]) -> float:
    """Max rel error of rnnfast's y, dx and parameter gradients vs torch's (same weights, float32)."""
    import torch

    tmod, fmod = p["tmod"], p["fmod"]
    xt = torch.from_numpy(p["x"]).requires_grad_(True)
    tmod.zero_grad()
    yt, _ = tmod(xt)
    yt.backward(torch.from_numpy(p["dy"]))
    fmod.zero_grad()
    y, _ = fmod(p["x"])
    dx = fmod.backward(p["dy"])
    errs = [_rel(y, yt.detach().numpy()), _rel(dx, xt.grad.numpy())]
    errs += [_rel(fmod.grads[n], t.grad.numpy()) for n, t in tmod.named_parameters()]
    err = max(errs)
    if not err <= 1e-4:
        raise SystemExit(f"rnnfast vs torch mismatch: max rel error {err:.2e}")
    return err


def _time(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    for f in fns.values():  # warm-up (scratch buffers, packing, torch's allocator)
        f()
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="100x16x512x128,100x64x256x64", help="TxBxHxP,...")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    import rnnfast

    torch.set_num_threads(args.threads)
    rnnfast.set_num_threads(args.threads)
    # torch notes once that oneDNN has no projected LSTM and it runs its own implementation
    warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")
    print(f"CPU: {_cpu()}; threads: {args.threads} (torch {torch.__version__}); float32")
    print(
        "T    B    H    P    | torch proj ms | rnnfast proj ms | speedup | torch lstm ms | rnnfast lstm ms | check"
    )
    for shape in args.shapes.split(","):
        T, B, H, P = (int(v) for v in shape.split("x"))
        p = _make(T, B, H, P)
        err = _check(p)
        fns = {
            "torch_proj": _torch_step(p["tmod"], p["x"], p["dy"]),
            "fast_proj": _fast_step(p["fmod"], p["x"], p["dy"]),
            "torch_lstm": _torch_step(p["tplain"], p["x"], p["dy_plain"]),
            "fast_lstm": _fast_step(p["fplain"], p["x"], p["dy_plain"]),
        }
        m = _time(fns, args.repeats)
        print(
            f"{T:<4d} {B:<4d} {H:<4d} {P:<4d} | {1e3 * m['torch_proj']:13.2f} | "
            f"{1e3 * m['fast_proj']:15.2f} | {m['torch_proj'] / m['fast_proj']:6.2f}x | "
            f"{1e3 * m['torch_lstm']:13.2f} | {1e3 * m['fast_lstm']:15.2f} | {err:.1e}"
        )


if __name__ == "__main__":
    main()
