"""New cells against what users write today: fused rnnfast cells vs idiomatic PyTorch loops.

PyTorch has no peephole LSTM (its PR was never merged), no GRU with the reset gate before the
product (Keras's reset_after=False) and no layer-normalised LSTM/GRU (issues #6760/#7032), so a user
writes such a cell as a loop over time with autograd. This times one training step (forward +
backward, all gradients) of:

* rnnfast ``lstm_peephole``, ``gru_reset_before``, ``lstm_layernorm`` and ``gru_layernorm`` (fused
  kernels, ``rnnfast.functional``),
* the same cells as PyTorch loops (as in tests/test_reference_variants_peers.py; the layer-norm ones
  with nn.Linear + nn.LayerNorm modules: nn.LSTMCell / nn.GRUCell add their biases before any
  normalisation could be applied, so a cell that normalises W_ih x and W_hh h separately cannot be
  built on them),
* rnnfast's plain LSTM / GRU of the same size (what the variant costs in the fused kernel).

Every variant is checked against the float64 oracle (``rnnfast.reference``) before it is timed.
Medians of alternated runs; threads as given (default 1, torch.set_num_threads too).

    python benchmarks/bench_cells.py [--hidden 256] [--batch 16] [--steps 100] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Any, Callable

import numpy as np

__all__ = ["main"]


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _inputs(T: int, B: int, H: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    k = 1.0 / np.sqrt(H)

    def u(*s: int) -> np.ndarray:
        return rng.uniform(-k, k, s).astype(np.float32)

    return {
        "x": rng.standard_normal((T, B, H)).astype(np.float32),
        "h0": np.zeros((B, H), np.float32),
        "c0": np.zeros((B, H), np.float32),
        "w_ih": u(4 * H, H),
        "w_hh": u(4 * H, H),
        "b_ih": u(4 * H),
        "b_hh": u(4 * H),
        "w_peep": u(3 * H),
        "g_ih": u(3 * H, H),
        "g_hh": u(3 * H, H),
        "gb_ih": u(3 * H),
        "gb_hh": u(3 * H),
        "dy": rng.standard_normal((T, B, H)).astype(np.float32),
        # layer-norm gains near 1, the cell-state shift near 0
        "ln_gamma_ih": 1 + 0.2 * u(4 * H),
        "ln_gamma_hh": 1 + 0.2 * u(4 * H),
        "ln_gamma_c": 1 + 0.2 * u(H),
        "ln_beta_c": 0.2 * u(H),
        "lng_gamma_ih": 1 + 0.2 * u(3 * H),
        "lng_gamma_hh": 1 + 0.2 * u(3 * H),
    }


_LN_LSTM = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "ln_gamma_ih", "ln_gamma_hh",
            "ln_gamma_c", "ln_beta_c")  # fmt: skip
_LN_GRU = ("x", "h0", "g_ih", "g_hh", "gb_ih", "gb_hh", "lng_gamma_ih", "lng_gamma_hh")


def _rnnfast_ln(p: dict[str, np.ndarray], cell: str) -> Callable[[], Any]:
    import rnnfast.functional as F

    args = [p[k] for k in (_LN_LSTM if cell == "lstm_layernorm" else _LN_GRU)]
    fwd, bwd = getattr(F, f"{cell}_forward"), getattr(F, f"{cell}_backward")

    def step() -> Any:
        out = fwd(*args)
        return out[0], bwd(out[-1], p["dy"])

    return step


def _torch_ln(p: dict[str, np.ndarray], cell: str) -> Callable[[], Any]:
    """The loop users write: nn.Linear for the products, nn.LayerNorm for the normalisations."""
    import torch
    from torch import nn

    lstm = cell == "lstm_layernorm"
    names = _LN_LSTM if lstm else _LN_GRU
    t = {k: torch.from_numpy(p[k].copy()) for k in names + ("dy",)}
    wi, wh, bi, bh = (t[k] for k in names[(3 if lstm else 2) : (7 if lstm else 6)])
    GH, H = wh.shape
    lin_ih, lin_hh = nn.Linear(wi.shape[1], GH, bias=False), nn.Linear(H, GH, bias=False)
    ln_ih, ln_hh = nn.LayerNorm(GH, bias=False), nn.LayerNorm(GH, bias=False)
    b_ih, b_hh = nn.Parameter(bi), nn.Parameter(bh)
    with torch.no_grad():
        lin_ih.weight.copy_(wi)
        lin_hh.weight.copy_(wh)
        ln_ih.weight.copy_(t[names[7 if lstm else 6]])
        ln_hh.weight.copy_(t[names[8 if lstm else 7]])
    mods = [lin_ih, lin_hh, ln_ih, ln_hh]
    if lstm:
        ln_c = nn.LayerNorm(H)
        with torch.no_grad():
            ln_c.weight.copy_(t["ln_gamma_c"])
            ln_c.bias.copy_(t["ln_beta_c"])
        mods.append(ln_c)
    params = [q for m in mods for q in m.parameters()] + [b_ih, b_hh]

    def step() -> Any:
        for q in params:
            q.grad = None
        h = t["h0"]
        c = t["c0"] if lstm else None
        gi_all = ln_ih(lin_ih(t["x"])) + b_ih  # every step's LN(W_ih x_t) + b_ih at once
        ys = []
        for s in range(gi_all.shape[0]):
            gh = ln_hh(lin_hh(h)) + b_hh
            if lstm:
                a = gi_all[s] + gh
                i, f, g, o = a.chunk(4, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(ln_c(c))
            else:
                gi = gi_all[s]
                r = torch.sigmoid(gi[:, :H] + gh[:, :H])
                z = torch.sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
                n = torch.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
                h = (1 - z) * n + z * h
            ys.append(h)
        y = torch.stack(ys)
        y.backward(t["dy"])
        g = {"w_ih": lin_ih.weight.grad, "w_hh": lin_hh.weight.grad, "b_ih": b_ih.grad}
        return y.detach().numpy(), {k: v.numpy() for k, v in g.items()}

    return step


def _rnnfast_peephole(p: dict[str, np.ndarray]) -> Callable[[], Any]:
    import rnnfast.functional as F

    args = [p[k] for k in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_peep")]

    def step() -> Any:
        y, _, _, cache = F.lstm_peephole_forward(*args)
        g = F.lstm_peephole_backward(cache, p["dy"])
        return y, g

    return step


def _rnnfast_lstm(p: dict[str, np.ndarray]) -> Callable[[], Any]:
    import rnnfast.functional as F

    args = [p[k] for k in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")]

    def step() -> Any:
        y, _, _, cache = F.lstm_forward(*args)
        return y, F.lstm_backward(cache, p["dy"])

    return step


def _torch_peephole(p: dict[str, np.ndarray]) -> Callable[[], Any]:
    import torch

    t = {k: torch.from_numpy(v.copy()) for k, v in p.items()}
    params = [t[k].requires_grad_() for k in ("w_ih", "w_hh", "b_ih", "b_hh", "w_peep")]
    w_ih, w_hh, b_ih, b_hh, w_peep = params
    H = p["h0"].shape[1]
    p_i, p_f, p_o = w_peep[:H], w_peep[H : 2 * H], w_peep[2 * H :]

    def step() -> Any:
        for q in params:
            q.grad = None
        h, c = t["h0"], t["c0"]
        gx = torch.nn.functional.linear(t["x"], w_ih, b_ih + b_hh)  # all steps at once
        ys = []
        for s in range(gx.shape[0]):  # the loop users write: no fused peephole cell exists
            a = gx[s] + h @ w_hh.T
            ai, af, ag, ao = a.chunk(4, dim=1)
            i = torch.sigmoid(ai + p_i * c)
            f = torch.sigmoid(af + p_f * c)
            c = f * c + i * torch.tanh(ag)
            o = torch.sigmoid(ao + p_o * c)
            h = o * torch.tanh(c)
            ys.append(h)
        y = torch.stack(ys)
        y.backward(t["dy"])
        return y.detach().numpy(), {
            k: q.grad.numpy() for k, q in zip(("w_ih", "w_hh", "b_ih", "b_hh", "w_peep"), params)
        }

    return step


def _rnnfast_reset_before(p: dict[str, np.ndarray]) -> Callable[[], Any]:
    import rnnfast.functional as F

    args = [p[k] for k in ("x", "h0", "g_ih", "g_hh", "gb_ih", "gb_hh")]

    def step() -> Any:
        y, _, cache = F.gru_reset_before_forward(*args)
        return y, F.gru_reset_before_backward(cache, p["dy"])

    return step


def _rnnfast_gru(p: dict[str, np.ndarray]) -> Callable[[], Any]:
    import rnnfast.functional as F

    args = [p[k] for k in ("x", "h0", "g_ih", "g_hh", "gb_ih", "gb_hh")]

    def step() -> Any:
        y, _, cache = F.gru_forward(*args)
        return y, F.gru_backward(cache, p["dy"])

    return step


def _torch_reset_before(p: dict[str, np.ndarray]) -> Callable[[], Any]:
    import torch

    t = {k: torch.from_numpy(v.copy()) for k, v in p.items()}
    names = ("g_ih", "g_hh", "gb_ih", "gb_hh")
    params = [t[k].requires_grad_() for k in names]
    w_ih, w_hh, b_ih, b_hh = params
    H = p["h0"].shape[1]

    def step() -> Any:
        for q in params:
            q.grad = None
        h = t["h0"]
        gx = torch.nn.functional.linear(t["x"], w_ih, b_ih + b_hh)  # b_hn sits outside r here
        ys = []
        for s in range(gx.shape[0]):
            rz = torch.sigmoid(gx[s, :, : 2 * H] + h @ w_hh[: 2 * H].T)
            r, z = rz[:, :H], rz[:, H:]
            n = torch.tanh(gx[s, :, 2 * H :] + (r * h) @ w_hh[2 * H :].T)
            h = (1 - z) * n + z * h
            ys.append(h)
        y = torch.stack(ys)
        y.backward(t["dy"])
        grads = {
            k.replace("g_", "w_").replace("gb_", "b_"): q.grad.numpy()
            for k, q in zip(names, params)
        }
        return y.detach().numpy(), grads

    return step


def _check(
    name: str,
    y: np.ndarray,
    grads: dict[str, np.ndarray],
    want: tuple[Any, Any],
    keys: tuple[str, ...] = ("w_ih", "w_hh", "w_peep"),
    tol: float = 1e-4,
) -> float:
    from rnnfast.testing import rel_max_error

    ry, rg = want
    err = rel_max_error(y, ry)[0]
    for k in keys:
        err = max(err, rel_max_error(grads[k], rg[k])[0])
    if err > tol:
        raise SystemExit(
            f"{name}: max relative error {err:.2e} vs the float64 oracle (> {tol:.0e})"
        )
    return err


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args(argv)

    import torch

    import rnnfast
    import rnnfast.reference as R

    rnnfast.set_num_threads(a.threads)
    torch.set_num_threads(a.threads)
    p = _inputs(a.steps, a.batch, a.hidden)
    ry, _, _, rc = R.lstm_peephole_forward(
        *(p[k] for k in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_peep"))
    )
    want = (ry, R.lstm_peephole_backward(rc, p["dy"]))
    gargs = [p[k] for k in ("x", "h0", "g_ih", "g_hh", "gb_ih", "gb_hh")]
    gy, _, gc = R.gru_reset_before_forward(*gargs)
    want_rb = (gy, R.gru_reset_before_backward(gc, p["dy"]))
    gy2, _, gc2 = R.gru_forward(*gargs)
    want_gru = (gy2, R.gru_backward(gc2, p["dy"]))
    want_ln = {}
    for cell, keys in (("lstm_layernorm", _LN_LSTM), ("gru_layernorm", _LN_GRU)):
        out = getattr(R, f"{cell}_forward")(*(p[k] for k in keys))
        want_ln[cell] = (out[0], getattr(R, f"{cell}_backward")(out[-1], p["dy"]))
    runs = {
        "rnnfast lstm_peephole (fused)": _rnnfast_peephole(p),
        "torch peephole loop (autograd)": _torch_peephole(p),
        "rnnfast lstm (no peepholes)": _rnnfast_lstm(p),
        "rnnfast gru_reset_before (fused)": _rnnfast_reset_before(p),
        "torch reset-before GRU loop": _torch_reset_before(p),
        "rnnfast gru (reset after)": _rnnfast_gru(p),
        "rnnfast lstm_layernorm (fused)": _rnnfast_ln(p, "lstm_layernorm"),
        "torch LayerNorm-LSTM loop": _torch_ln(p, "lstm_layernorm"),
        "rnnfast lstm (no layer norm)": _rnnfast_lstm(p),
        "rnnfast gru_layernorm (fused)": _rnnfast_ln(p, "gru_layernorm"),
        "torch LayerNorm-GRU loop": _torch_ln(p, "gru_layernorm"),
        "rnnfast gru (no layer norm)": _rnnfast_gru(p),
    }
    groups = {  # each row is compared with the first row of its group
        "rnnfast lstm_peephole (fused)": 3,
        "rnnfast gru_reset_before (fused)": 3,
        "rnnfast lstm_layernorm (fused)": 3,
        "rnnfast gru_layernorm (fused)": 3,
    }
    fused_of: dict[str, str] = {}
    names = list(runs)
    for head, n in groups.items():
        k = names.index(head)
        fused_of.update({name: head for name in names[k : k + n]})
    lstm_args = [p[k] for k in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")]
    ly, _, _, lc = R.lstm_forward(*lstm_args)
    want_lstm = (ly, R.lstm_backward(lc, p["dy"]))
    errs = {}
    for name, fn in runs.items():  # every variant checked against its float64 oracle first
        y, g = fn()
        if "LayerNorm-LSTM" in name or "lstm_layernorm" in name:
            # 5e-3: LN(c_t) subtracts the row mean of an unnormalised c_t that grows over 100 steps,
            # so float32 loses more bits here (rnnfast 6e-4, the torch loop 2e-3 on this input)
            errs[name] = _check(
                name, y, g, want_ln["lstm_layernorm"], keys=("w_ih", "w_hh", "b_ih"), tol=5e-3
            )
        elif "LayerNorm-GRU" in name or "gru_layernorm" in name:
            errs[name] = _check(name, y, g, want_ln["gru_layernorm"], keys=("w_ih", "w_hh", "b_ih"))
        elif "no layer norm" in name:
            errs[name] = _check(
                name, y, g, want_lstm if "lstm" in name else want_gru, ("w_ih", "w_hh")
            )
        elif "no peepholes" in name:
            errs[name] = _check(name, y, g, want_lstm, keys=("w_ih", "w_hh"))
        elif "reset after" in name:
            errs[name] = _check(name, y, g, want_gru, keys=("w_ih", "w_hh"))
        elif "reset" in name:
            errs[name] = _check(name, y, g, want_rb, keys=("w_ih", "w_hh", "b_ih"))
        else:
            errs[name] = _check(name, y, g, want)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(a.repeats):  # alternated
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(
        f"CPU: {_cpu()}; threads {a.threads}; T={a.steps} B={a.batch} I=H={a.hidden} float32, "
        f"training step (forward + backward), median of {a.repeats} alternated runs"
    )
    for name, ms in med.items():
        fused = fused_of[name]
        e = f"  max rel err vs float64 oracle {errs[name]:.1e}" if name in errs else ""
        print(f"  {name:34s} {ms:9.2f} ms   {ms / med[fused]:5.2f}x {fused}{e}")


if __name__ == "__main__":
    main()
