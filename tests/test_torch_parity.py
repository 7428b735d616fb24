"""Parity of rnnfast with PyTorch autograd (skipped without torch; CI installs torch==2.13.0).

What is compared (torch is the oracle; rnnfast's arrays are the "actual" side):

1. functional API, one layer: rnn (tanh, relu), lstm, gru x bias on/off x initial state
   given/absent x full/ragged batch (torch: pack_padded_sequence(enforce_sorted=False) +
   pad_packed_sequence) x float64/float32: y, h_n (c_n) and every gradient (x, h0, c0, w_ih,
   w_hh, b_ih, b_hh) of L = <y, dy> + <h_n, dh_n> (+ <c_n, dc_n>);
2. modules (rnnfast.RNN / LSTM / GRU built with from_torch): num_layers 1..3 x bidirectional x
   a pairwise-covering set of (batch_first, initial state, ragged, bias) x float64/float32; outputs,
   final states and every gradient (input, initial states, all parameters);
3. TBPTT: functional tbptt_grads with k1 = k2 = k against the torch loop that detaches the state
   every k steps, general (k1, k2) against torch on the contract's windows, and SequenceModel
   streaming TBPTT training (SGD step per chunk) against the torch detach loop;
4. clip_grad_norm_ against torch.nn.utils.clip_grad_norm_;
5. 20-step training trajectories (SGD, Adam) of a many-to-one LSTM + Linear head with MSE;
6. from_torch -> to_torch round trip exact.

Error measure (helpers.rel_max_error): max_i |actual_i - expected_i| / max_i |expected_i| per array,
i.e. relative to the largest magnitude of the torch result for that array.
Tolerances: float64 1e-10 for everything. float32: outputs/states 1e-5, gradients 1e-4, where the
expected value is torch in float64 on the very same (float32-representable) inputs and weights, so
the tolerance bounds rnnfast's own float32 rounding error, not the gap between two float32 results.
Training runs (stream TBPTT, trajectories) evolve separately, so there both sides run in the test's
dtype (rnnfast float32 vs torch float32); trajectories compare each step's loss, relative to torch's
loss (1e-4 float32, 1e-9 float64), and the final parameters.

Set RNNFAST_PARITY_REPORT=<path> to write the worst errors seen per (test group, cell, dtype, kind)
to a JSON file at the end of the module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from helpers import assert_close, make_inputs

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

from rnnfast import functional as F  # noqa: E402
from rnnfast.interop import from_torch, to_torch  # noqa: E402
from rnnfast.modules import SequenceModel  # noqa: E402

__all__: list[str] = []

pytestmark = pytest.mark.torch

CELLS = (("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh"))
CELL_IDS = ["rnn-tanh", "rnn-relu", "lstm", "gru"]
TOL_OUT = {np.float64: 1e-10, np.float32: 1e-5}
TOL_GRAD = {np.float64: 1e-10, np.float32: 1e-4}
DTYPE_IDS = {np.float64: "f64", np.float32: "f32"}
TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}

T, B, N_IN, H = 5, 3, 4, 5
LENGTHS = np.array([2, 5, 1])  # unsorted, one full, one of length 1 (torch cannot pack length 0)

# worst errors seen: (group, cell, dtype, "out" | "grad") -> (error, array name)
WORST: dict[tuple[str, str, str, str], tuple[float, str]] = {}


@pytest.fixture(scope="module", autouse=True)
def _module_setup() -> Iterator[None]:
    """One torch thread (tiny shapes on a shared machine: threads only contend), restored after;
    writes the worst-error report at the end when RNNFAST_PARITY_REPORT is set."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
    path = os.environ.get("RNNFAST_PARITY_REPORT")
    if path:
        rows = [
            {"group": g, "cell": c, "dtype": d, "kind": k, "max_rel_error": e, "array": n}
            for (g, c, d, k), (e, n) in sorted(WORST.items())
        ]
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=1)


def check(
    actual: Any, expected: Any, tol: float, name: str, key: tuple[str, str, str, str]
) -> None:
    """assert_close, and remember the worst error per key for the report."""
    err = assert_close(actual, expected, tol, name)
    if err >= WORST.get(key, (-1.0, ""))[0]:
        WORST[key] = (err, name)


def t64(a: np.ndarray | None, grad: bool = False) -> Any:
    """float64 torch tensor copy of a NumPy array (None stays None)."""
    if a is None:
        return None
    return torch.tensor(np.asarray(a, dtype=np.float64)).requires_grad_(grad)


def torch_module(
    cell: str,
    nonlinearity: str,
    n_in: int,
    hidden: int,
    *,
    num_layers: int = 1,
    bias: bool = True,
    batch_first: bool = False,
    bidirectional: bool = False,
    dtype: Any = torch.float64,
) -> Any:
    kwargs: dict[str, Any] = {
        "num_layers": num_layers,
        "bias": bias,
        "batch_first": batch_first,
        "bidirectional": bidirectional,
        "dtype": dtype,
    }
    if cell == "rnn":
        return torch.nn.RNN(n_in, hidden, nonlinearity=nonlinearity, **kwargs)
    return {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](n_in, hidden, **kwargs)


def torch_run(
    mod: Any,
    x: np.ndarray,
    hx: Any,
    lengths: np.ndarray | None,
    dy: np.ndarray,
    dh_n: np.ndarray,
    dc_n: np.ndarray | None,
) -> dict[str, Any]:
    """Run ``mod`` (float64 torch RNN/LSTM/GRU) on x in its layout; grads of <y,dy>+<h_n,dh_n>(+c).

    hx: None, an array (L*D, B, H), or a pair for LSTM. Returns float64 NumPy arrays: y, h_n, c_n,
    and grads "x", "h0", "c0" and every parameter name.
    """
    xt = t64(x, True)
    h0t = c0t = None
    hx_t: Any = None
    if hx is not None:
        if isinstance(hx, tuple):
            h0t, c0t = t64(hx[0], True), t64(hx[1], True)
            hx_t = (h0t, c0t)
        else:
            h0t = t64(hx, True)
            hx_t = h0t
    if lengths is not None:
        packed = pack_padded_sequence(
            xt,
            torch.from_numpy(np.asarray(lengths, dtype=np.int64)),
            batch_first=mod.batch_first,
            enforce_sorted=False,
        )
        out_p, state = mod(packed, hx_t)
        y, _ = pad_packed_sequence(
            out_p, batch_first=mod.batch_first, total_length=x.shape[1 if mod.batch_first else 0]
        )
    else:
        y, state = mod(xt, hx_t)
    h_n, c_n = state if isinstance(state, tuple) else (state, None)
    total = (y * t64(dy)).sum() + (h_n * t64(dh_n)).sum()
    if c_n is not None:
        total = total + (c_n * t64(dc_n)).sum()
    names = [n for n, _ in mod.named_parameters()]
    inputs = (
        [xt] + [t for t in (h0t, c0t) if t is not None] + [p for _, p in mod.named_parameters()]
    )
    grads = torch.autograd.grad(total, inputs)
    out: dict[str, Any] = {
        "y": y.detach().numpy(),
        "h_n": h_n.detach().numpy(),
        "c_n": None if c_n is None else c_n.detach().numpy(),
        "x": grads[0].numpy(),
    }
    k = 1
    for nm, t in (("h0", h0t), ("c0", c0t)):
        if t is not None:
            out[nm] = grads[k].numpy()
            k += 1
    for nm, g in zip(names, grads[k:]):
        out[nm] = g.numpy()
    return out


# --------------------------------------------------------------------------------------------------
# 1. functional API, one layer
# --------------------------------------------------------------------------------------------------

FUNC_KEYS = {
    "w_ih": "weight_ih_l0",
    "w_hh": "weight_hh_l0",
    "b_ih": "bias_ih_l0",
    "b_hh": "bias_hh_l0",
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=DTYPE_IDS.get)
@pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])
@pytest.mark.parametrize("given_state", [True, False], ids=["h0", "noh0"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
def test_functional_matches_torch(
    cell: str, nonlinearity: str, bias: bool, given_state: bool, ragged: bool, dtype: Any
) -> None:
    cid = CELL_IDS[CELLS.index((cell, nonlinearity))]
    dn = DTYPE_IDS[dtype]
    inp = make_inputs(cell, T, B, N_IN, H, dtype=dtype, bias=bias, seed=7)
    if not given_state:
        inp["h0"] = inp["c0"] = None
    lengths = LENGTHS if ragged else None

    mod = torch_module(cell, nonlinearity, N_IN, H, bias=bias)
    with torch.no_grad():
        for k, tk in FUNC_KEYS.items():
            if inp[k] is not None:
                getattr(mod, tk).copy_(t64(inp[k]))
    hx: Any = None
    if given_state:
        hx = (inp["h0"][None], inp["c0"][None]) if cell == "lstm" else inp["h0"][None]
    exp = torch_run(
        mod,
        inp["x"],
        hx,
        lengths,
        inp["dy"],
        inp["dh_n"][None],
        None if inp["dc_n"] is None else inp["dc_n"][None],
    )

    args = (inp["w_ih"], inp["w_hh"], inp["b_ih"], inp["b_hh"])
    if cell == "rnn":
        y, h_n, cache = F.rnn_forward(
            inp["x"], inp["h0"], *args, nonlinearity=nonlinearity, lengths=lengths
        )
        c_n = None
        g = F.rnn_backward(cache, inp["dy"], inp["dh_n"])
    elif cell == "lstm":
        y, h_n, c_n, cache = F.lstm_forward(inp["x"], inp["h0"], inp["c0"], *args, lengths=lengths)
        g = F.lstm_backward(cache, inp["dy"], inp["dh_n"], inp["dc_n"])
    else:
        y, h_n, cache = F.gru_forward(inp["x"], inp["h0"], *args, lengths=lengths)
        c_n = None
        g = F.gru_backward(cache, inp["dy"], inp["dh_n"])

    tag = f"functional {cid} {dn} bias={bias} state={given_state} ragged={ragged}"
    assert y.dtype == dtype and h_n.dtype == dtype, f"{tag}: output dtype {y.dtype}, {h_n.dtype}"
    ko, kg = ("functional", cid, dn, "out"), ("functional", cid, dn, "grad")
    check(y, exp["y"], TOL_OUT[dtype], f"{tag} y", ko)
    check(h_n, exp["h_n"][0], TOL_OUT[dtype], f"{tag} h_n", ko)
    if cell == "lstm":
        check(c_n, exp["c_n"][0], TOL_OUT[dtype], f"{tag} c_n", ko)
    check(g["x"], exp["x"], TOL_GRAD[dtype], f"{tag} dx", kg)
    if given_state:
        check(g["h0"], exp["h0"][0], TOL_GRAD[dtype], f"{tag} dh0", kg)
        if cell == "lstm":
            check(g["c0"], exp["c0"][0], TOL_GRAD[dtype], f"{tag} dc0", kg)
    for k, tk in FUNC_KEYS.items():
        if bias or k in ("w_ih", "w_hh"):
            assert g[k] is not None and g[k].dtype == dtype, (
                f"{tag} d{k}: {None if g[k] is None else g[k].dtype}"
            )
            check(g[k], exp[tk], TOL_GRAD[dtype], f"{tag} d{k}", kg)
        else:
            assert g[k] is None, f"{tag} d{k}: expected None without bias"


# --------------------------------------------------------------------------------------------------
# 3. TBPTT (functional) against torch
# --------------------------------------------------------------------------------------------------


def _check_update(
    cell: str,
    upd: dict[str, Any],
    grads: tuple[Any, ...],
    first: bool,
    tag: str,
    tol: float,
    key: tuple[str, str, str, str],
) -> None:
    """upd: one rnnfast update; grads: torch grads of (w_ih, w_hh, b_ih, b_hh[, h0[, c0]])."""
    for name, gt in zip(FUNC_KEYS, grads[:4]):
        check(upd[name], gt.numpy(), tol, f"{tag} d{name}", key)
    s0 = upd["state0"]
    if first:
        if cell == "lstm":
            check(s0[0], grads[4].numpy()[0], tol, f"{tag} dh0", key)
            check(s0[1], grads[5].numpy()[0], tol, f"{tag} dc0", key)
        else:
            check(s0, grads[4].numpy()[0], tol, f"{tag} dh0", key)
    else:
        for arr in s0 if cell == "lstm" else (s0,):
            assert not np.any(arr), (
                f"{tag}: state0 gradient must be zero when the window starts after 0"
            )


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=DTYPE_IDS.get)
@pytest.mark.parametrize("k", [1, 2, 3, 6])
@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
def test_tbptt_k1_eq_k2_matches_torch_detach_loop(
    cell: str, nonlinearity: str, k: int, dtype: Any
) -> None:
    """TBPTT(k, k) over T = 6 steps (k divides T) equals the usual torch loop: run k steps, backprop
    <y, dy> of those steps, detach the state, go on. (k = 6 is full BPTT.)"""
    cid = CELL_IDS[CELLS.index((cell, nonlinearity))]
    dn = DTYPE_IDS[dtype]
    t_steps = 6
    inp = make_inputs(cell, t_steps, B, N_IN, H, dtype=dtype, bias=True, seed=13)
    params = {key: inp[key] for key in FUNC_KEYS}
    state0: Any = (inp["h0"], inp["c0"]) if cell == "lstm" else inp["h0"]
    updates = F.tbptt_grads(
        cell, inp["x"], state0, params, inp["dy"], k, k, nonlinearity=nonlinearity
    )
    assert len(updates) == t_steps // k, f"expected {t_steps // k} updates, got {len(updates)}"

    mod = torch_module(cell, nonlinearity, N_IN, H)
    with torch.no_grad():
        for key, tk in FUNC_KEYS.items():
            getattr(mod, tk).copy_(t64(params[key]))
    plist = [getattr(mod, tk) for tk in FUNC_KEYS.values()]
    h0t = t64(inp["h0"][None], True)
    c0t = t64(inp["c0"][None], True) if cell == "lstm" else None
    state: Any = (h0t, c0t) if cell == "lstm" else h0t
    xt, dyt = t64(inp["x"]), t64(inp["dy"])
    for n, start in enumerate(range(0, t_steps, k)):
        out, new_state = mod(xt[start : start + k], state)
        total = (out * dyt[start : start + k]).sum()
        wrt = list(plist)
        if n == 0:
            wrt += [h0t] + ([c0t] if c0t is not None else [])
        grads = torch.autograd.grad(total, wrt)
        _check_update(
            cell,
            updates[n],
            grads,
            n == 0,
            f"tbptt {cid} {dn} k={k} update {n}",
            TOL_GRAD[dtype],
            ("tbptt", cid, dn, "grad"),
        )
        # the usual torch loop: carry the state on, cut from the graph
        state = tuple(s.detach() for s in new_state) if cell == "lstm" else new_state.detach()


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=DTYPE_IDS.get)
@pytest.mark.parametrize("k1,k2", [(2, 2), (3, 3), (1, 3), (2, 5)])
@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
def test_tbptt_general_matches_torch_windows(
    cell: str, nonlinearity: str, k1: int, k2: int, dtype: Any
) -> None:
    """TBPTT(k1, k2) over T = 7 steps (partial last chunk) vs torch run on the contract's windows:
    update n backprops <y_t, dy_t> for t in [n*k1, e] through steps [s, e], s = max(0, e - k2 + 1),
    from the (detached) state entering s. A partial last chunk still looks back k2 steps from e,
    which is where this differs from the detach-every-k loop."""
    cid = CELL_IDS[CELLS.index((cell, nonlinearity))]
    dn = DTYPE_IDS[dtype]
    t_steps = 7
    inp = make_inputs(cell, t_steps, B, N_IN, H, dtype=dtype, bias=True, seed=17)
    params = {key: inp[key] for key in FUNC_KEYS}
    state0: Any = (inp["h0"], inp["c0"]) if cell == "lstm" else inp["h0"]
    updates = F.tbptt_grads(
        cell, inp["x"], state0, params, inp["dy"], k1, k2, nonlinearity=nonlinearity
    )
    n_updates = -(-t_steps // k1)
    assert len(updates) == n_updates, f"expected {n_updates} updates, got {len(updates)}"

    mod = torch_module(cell, nonlinearity, N_IN, H)
    with torch.no_grad():
        for key, tk in FUNC_KEYS.items():
            getattr(mod, tk).copy_(t64(params[key]))
    plist = [getattr(mod, tk) for tk in FUNC_KEYS.values()]
    xt, dyt = t64(inp["x"]), t64(inp["dy"])
    # states entering every step, one torch step at a time, outside the graph
    entering: list[Any] = []
    with torch.no_grad():
        st: Any = (
            (t64(inp["h0"][None]), t64(inp["c0"][None])) if cell == "lstm" else t64(inp["h0"][None])
        )
        for t in range(t_steps):
            entering.append(st)
            _, st = mod(xt[t : t + 1], st)
    for n, start in enumerate(range(0, t_steps, k1)):
        e = min(start + k1, t_steps) - 1
        s = max(0, e - k2 + 1)
        if cell == "lstm":
            h_s, c_s = (
                entering[s][0].clone().requires_grad_(True),
                entering[s][1].clone().requires_grad_(True),
            )
            st_s: Any = (h_s, c_s)
            extra = [h_s, c_s]
        else:
            h_s = entering[s].clone().requires_grad_(True)
            st_s = h_s
            extra = [h_s]
        out, _ = mod(xt[s : e + 1], st_s)
        total = (out[start - s :] * dyt[start : e + 1]).sum()
        grads = torch.autograd.grad(total, plist + extra)
        _check_update(
            cell,
            updates[n],
            grads,
            s == 0,
            f"tbptt {cid} {dn} k1={k1} k2={k2} update {n}",
            TOL_GRAD[dtype],
            ("tbptt", cid, dn, "grad"),
        )


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=DTYPE_IDS.get)
@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize(
    "cell,nonlinearity",
    [("lstm", "tanh"), ("gru", "tanh"), ("rnn", "relu")],
    ids=["lstm", "gru", "rnn-relu"],
)
def test_stream_tbptt_training_matches_torch_detach_loop(
    cell: str, nonlinearity: str, k: int, dtype: Any
) -> None:
    """SequenceModel streaming TBPTT(k, k) (2-layer stack + Linear head, MSE, SGD step after every
    chunk) against the usual torch loop: forward k steps, loss, backward, step, detach the state."""
    from rnnfast.losses import MSELoss
    from rnnfast.optim import SGD

    cid = {"lstm": "lstm", "gru": "gru", "rnn": "rnn-relu"}[cell]
    dn = DTYPE_IDS[dtype]
    t_steps, n_out = 12, 2
    tdt = TORCH_DTYPE[dtype]
    torch.manual_seed(9)
    t_rnn = torch_module(cell, nonlinearity, N_IN, H, num_layers=2, dtype=tdt)
    t_head = torch.nn.Linear(H, n_out, dtype=tdt)
    model = SequenceModel(from_torch(t_rnn), from_torch(t_head), mode="many_to_many")
    tparams = list(t_rnn.parameters()) + list(t_head.parameters())
    topt = torch.optim.SGD(tparams, lr=0.05)
    opt = SGD(model.parameters(), lr=0.05)
    rng = np.random.default_rng(43)
    x = rng.standard_normal((t_steps, B, N_IN)).astype(dtype)
    target = rng.standard_normal((t_steps, B, n_out)).astype(dtype)
    xt, yt = torch.from_numpy(x.copy()), torch.from_numpy(target.copy())
    loss_fn = MSELoss(reduction="sum")

    model.stream_begin(B, k, k)
    state: Any = None
    names = [f"rnn.{n}" for n, _ in t_rnn.named_parameters()] + [
        f"head.{n}" for n, _ in t_head.named_parameters()
    ]
    for n, start in enumerate(range(0, t_steps, k)):
        pred = model.stream_forward(x[start : start + k])
        loss, dpred = loss_fn(pred, target[start : start + k])
        model.zero_grad()
        model.stream_backward(dpred)
        grads = {nm: np.array(g, copy=True) for nm, g in model.grads.items()}
        opt.step(model.grads)

        topt.zero_grad()
        out, new_state = t_rnn(xt[start : start + k], state)
        tloss = 0.5 * ((t_head(out) - yt[start : start + k]) ** 2).sum()
        tloss.backward()
        tag = f"stream tbptt {cid} {dn} k={k} chunk {n}"
        check(
            np.float64(loss),
            np.float64(tloss.item()),
            TOL_OUT[dtype],
            f"{tag} loss",
            ("stream-tbptt", cid, dn, "out"),
        )
        for nm, p in zip(names, tparams):
            check(
                grads[nm],
                p.grad.numpy(),
                TOL_GRAD[dtype],
                f"{tag} d{nm}",
                ("stream-tbptt", cid, dn, "grad"),
            )
        topt.step()
        state = tuple(s.detach() for s in new_state) if cell == "lstm" else new_state.detach()
    params = model.parameters()
    for nm, p in zip(names, tparams):
        check(
            params[nm],
            p.detach().numpy(),
            TOL_GRAD[dtype],
            f"stream tbptt {cid} {dn} k={k} final {nm}",
            ("stream-tbptt", cid, dn, "out"),
        )


# --------------------------------------------------------------------------------------------------
# 4. gradient clipping by norm
# --------------------------------------------------------------------------------------------------

CLIP_TOL = {np.float64: 1e-12, np.float32: 1e-6}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=DTYPE_IDS.get)
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
@pytest.mark.parametrize("max_norm", [0.5, 1e6], ids=["clips", "noclip"])
def test_clip_grad_norm_matches_torch(max_norm: float, norm_type: float, dtype: Any) -> None:
    from rnnfast.optim import clip_grad_norm_

    rng = np.random.default_rng(21)
    shapes = {
        "weight_ih_l0": (12, 4),
        "weight_hh_l0": (12, 3),
        "bias_ih_l0": (12,),
        "head.weight": (2, 3),
    }
    grads = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    tparams = []
    for g in grads.values():
        p = torch.zeros(g.shape, dtype=TORCH_DTYPE[dtype], requires_grad=True)
        p.grad = torch.tensor(g.copy())
        tparams.append(p)
    norm_t = float(torch.nn.utils.clip_grad_norm_(tparams, max_norm, norm_type=norm_type))
    norm = clip_grad_norm_(grads, max_norm, norm_type=norm_type)
    tol = CLIP_TOL[dtype]
    assert isinstance(norm, float)
    assert abs(norm - norm_t) <= tol * norm_t, (
        f"norm {norm!r} vs torch {norm_t!r} (norm_type {norm_type})"
    )
    for (k, g), p in zip(grads.items(), tparams):
        assert g.dtype == dtype
        check(
            g,
            p.grad.numpy(),
            tol,
            f"clip {k} norm_type={norm_type} max_norm={max_norm}",
            ("clip", "-", DTYPE_IDS[dtype], "grad"),
        )


# --------------------------------------------------------------------------------------------------
# 2. modules: multi-layer, bidirectional, batch_first, ragged, initial states, bias
# --------------------------------------------------------------------------------------------------

# (batch_first, given_state, ragged, bias): every pair of values of every two factors occurs
MODULE_COMBOS = [
    (False, False, False, False),
    (False, True, True, True),
    (True, False, True, True),
    (True, True, False, True),
    (True, True, True, False),
    (False, False, True, False),
]
COMBO_IDS = [
    "tm-noh0-full-nobias",
    "tm-h0-ragged-bias",
    "bf-noh0-ragged-bias",
    "bf-h0-full-bias",
    "bf-h0-ragged-nobias",
    "tm-noh0-ragged-nobias",
]


def _module_state_grads(m: Any, cell: str) -> tuple[Any, Any]:
    """(dh0, dc0 or None) of the most recent backward of an rnnfast module, shapes (L*D, B, H)."""
    g = m.grad_hx
    if cell == "lstm":
        return g[0], g[1]
    return g, None


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=DTYPE_IDS.get)
@pytest.mark.parametrize("combo", MODULE_COMBOS, ids=COMBO_IDS)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
def test_module_matches_torch(
    cell: str,
    nonlinearity: str,
    num_layers: int,
    bidirectional: bool,
    combo: tuple[bool, bool, bool, bool],
    dtype: Any,
) -> None:
    import copy

    batch_first, given_state, ragged, bias = combo
    cid = CELL_IDS[CELLS.index((cell, nonlinearity))]
    dn = DTYPE_IDS[dtype]
    torch.manual_seed(100 * num_layers + 10 * bidirectional + MODULE_COMBOS.index(combo))
    tmod = torch_module(
        cell,
        nonlinearity,
        N_IN,
        H,
        num_layers=num_layers,
        bias=bias,
        batch_first=batch_first,
        bidirectional=bidirectional,
        dtype=TORCH_DTYPE[dtype],
    )
    m = from_torch(tmod)
    ref = copy.deepcopy(tmod).double()  # the oracle: the same (dtype-rounded) weights in float64

    d = 2 if bidirectional else 1
    rng = np.random.default_rng(31)
    x = rng.standard_normal((T, B, N_IN)).astype(dtype)
    dy = rng.standard_normal((T, B, d * H)).astype(dtype)
    if batch_first:
        x, dy = (
            np.ascontiguousarray(x.transpose(1, 0, 2)),
            np.ascontiguousarray(dy.transpose(1, 0, 2)),
        )
    dh_n = rng.standard_normal((num_layers * d, B, H)).astype(dtype)
    dc_n = rng.standard_normal((num_layers * d, B, H)).astype(dtype) if cell == "lstm" else None
    hx: Any = None
    if given_state:
        h0 = rng.uniform(-0.5, 0.5, (num_layers * d, B, H)).astype(dtype)
        hx = (
            (h0, rng.uniform(-0.5, 0.5, (num_layers * d, B, H)).astype(dtype))
            if cell == "lstm"
            else h0
        )
    lengths = LENGTHS if ragged else None
    exp = torch_run(ref, x, hx, lengths, dy, dh_n, dc_n)

    out, state = m(x, hx, lengths=lengths)
    h_n, c_n = state if cell == "lstm" else (state, None)
    grad_state = (dh_n, dc_n) if cell == "lstm" else dh_n
    m.zero_grad()
    dx = m.backward(dy, grad_state)

    tag = (
        f"module {cid} {dn} L={num_layers} bi={bidirectional} bf={batch_first} h0={given_state} "
        f"ragged={ragged} bias={bias}"
    )
    ko, kg = ("module", cid, dn, "out"), ("module", cid, dn, "grad")
    assert out.dtype == dtype, f"{tag}: output dtype {out.dtype}"
    check(out, exp["y"], TOL_OUT[dtype], f"{tag} out", ko)
    check(h_n, exp["h_n"], TOL_OUT[dtype], f"{tag} h_n", ko)
    if cell == "lstm":
        check(c_n, exp["c_n"], TOL_OUT[dtype], f"{tag} c_n", ko)
    check(dx, exp["x"], TOL_GRAD[dtype], f"{tag} dx", kg)
    if given_state:
        dh0, dc0 = _module_state_grads(m, cell)
        check(dh0, exp["h0"], TOL_GRAD[dtype], f"{tag} dh0", kg)
        if cell == "lstm":
            check(dc0, exp["c0"], TOL_GRAD[dtype], f"{tag} dc0", kg)
    names = [n for n, _ in ref.named_parameters()]
    assert sorted(m.grads) == sorted(names), (
        f"{tag}: grads keys {sorted(m.grads)} vs torch {sorted(names)}"
    )
    for n in names:
        assert m.grads[n].dtype == dtype, f"{tag} grad {n}: dtype {m.grads[n].dtype}"
        check(m.grads[n], exp[n], TOL_GRAD[dtype], f"{tag} d{n}", kg)


# --------------------------------------------------------------------------------------------------
# 6. from_torch -> to_torch round trip
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=DTYPE_IDS.get)
@pytest.mark.parametrize(
    "config",
    [(1, False, False, True), (2, True, True, True), (3, True, False, False)],
    ids=["L1", "L2-bi-bf", "L3-bi-nobias"],
)
@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
def test_from_torch_to_torch_round_trip_exact(
    cell: str, nonlinearity: str, config: tuple[int, bool, bool, bool], dtype: Any
) -> None:
    num_layers, bidirectional, batch_first, bias = config
    torch.manual_seed(5)
    tmod = torch_module(
        cell,
        nonlinearity,
        N_IN,
        H,
        num_layers=num_layers,
        bias=bias,
        batch_first=batch_first,
        bidirectional=bidirectional,
        dtype=TORCH_DTYPE[dtype],
    )
    tmod.eval()
    back = to_torch(from_torch(tmod))
    assert type(back) is type(tmod)
    for attr in (
        "input_size",
        "hidden_size",
        "num_layers",
        "bias",
        "batch_first",
        "bidirectional",
        "dropout",
        "training",
    ):
        assert getattr(back, attr) == getattr(tmod, attr), (
            f"{attr}: {getattr(back, attr)} vs {getattr(tmod, attr)}"
        )
    if cell == "rnn":
        assert back.nonlinearity == tmod.nonlinearity
    sd, sd2 = tmod.state_dict(), back.state_dict()
    assert list(sd2) == list(sd)
    for k in sd:
        assert sd2[k].dtype == sd[k].dtype, f"{k}: dtype {sd2[k].dtype} vs {sd[k].dtype}"
        assert torch.equal(sd2[k], sd[k]), f"{k}: not bit-identical after the round trip"
        assert sd2[k].data_ptr() != sd[k].data_ptr(), f"{k}: to_torch must not alias the original"
    x = (
        torch.randn(B, T, N_IN, dtype=TORCH_DTYPE[dtype])
        if batch_first
        else torch.randn(T, B, N_IN, dtype=TORCH_DTYPE[dtype])
    )
    with torch.no_grad():
        y1, y2 = tmod(x)[0], back(x)[0]
    assert torch.equal(y1, y2), "outputs of the round-tripped module differ"


# --------------------------------------------------------------------------------------------------
# 5. training trajectories
# --------------------------------------------------------------------------------------------------

TRAJ_TOL = {np.float64: 1e-9, np.float32: 1e-4}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=DTYPE_IDS.get)
@pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_trajectory_matches_torch(optimizer: str, ragged: bool, dtype: Any) -> None:
    """20 full-batch steps of a many-to-one 2-layer LSTM + Linear head with MSE, same data, init.

    rnnfast's MSELoss is mean(1/2 (pred - y)^2), so torch's loss is written as 0.5 * mse_loss. Each
    step's loss (before the update) must match torch's within TRAJ_TOL relative, and so the final
    parameters (relative to max |p| per array).
    """
    from rnnfast.losses import MSELoss
    from rnnfast.optim import SGD, Adam

    n_steps, t_steps, batch, n_in, hidden, n_out = 20, 6, 4, 3, 5, 2
    tdt = TORCH_DTYPE[dtype]
    torch.manual_seed(3)
    t_rnn = torch.nn.LSTM(n_in, hidden, num_layers=2, dtype=tdt)
    t_head = torch.nn.Linear(hidden, n_out, dtype=tdt)
    model = SequenceModel(from_torch(t_rnn), from_torch(t_head), mode="many_to_one")
    rng = np.random.default_rng(41)
    x = rng.standard_normal((t_steps, batch, n_in)).astype(dtype)
    target = rng.standard_normal((batch, n_out)).astype(dtype)
    lengths = np.array([6, 3, 5, 1]) if ragged else None

    tparams = list(t_rnn.parameters()) + list(t_head.parameters())
    if optimizer == "sgd":
        topt = torch.optim.SGD(tparams, lr=0.1, momentum=0.9)
        opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    else:
        topt = torch.optim.Adam(tparams, lr=0.01, betas=(0.9, 0.999), eps=1e-8)
        opt = Adam(model.parameters(), lr=0.01, betas=(0.9, 0.999), eps=1e-8)
    loss_fn = MSELoss()
    xt, yt = torch.from_numpy(x.copy()), torch.from_numpy(target.copy())

    losses, tlosses = [], []
    for _ in range(n_steps):
        pred = model(x, lengths=lengths)
        loss, dpred = loss_fn(pred, target)
        model.zero_grad()
        model.backward(dpred)
        opt.step(model.grads)
        losses.append(float(loss))

        topt.zero_grad()
        if ragged:
            packed = pack_padded_sequence(xt, torch.from_numpy(lengths), enforce_sorted=False)
            _, (h_n, _) = t_rnn(packed)
        else:
            _, (h_n, _) = t_rnn(xt)
        tloss = 0.5 * torch.nn.functional.mse_loss(
            t_head(h_n[-1]), yt
        )  # h_n[-1]: last valid step, top layer
        tloss.backward()
        topt.step()
        tlosses.append(tloss.item())

    losses_a, tlosses_a = np.array(losses), np.array(tlosses)
    rel = np.abs(losses_a - tlosses_a) / np.abs(tlosses_a)
    worst = int(np.argmax(rel))
    key = ("trajectory", f"{optimizer}-{'ragged' if ragged else 'full'}", DTYPE_IDS[dtype], "loss")
    if rel[worst] >= WORST.get(key, (-1.0, ""))[0]:
        WORST[key] = (float(rel[worst]), f"step {worst}")
    assert tlosses_a[-1] < tlosses_a[0], "torch did not train: the comparison would be weak"
    assert rel[worst] <= TRAJ_TOL[dtype], (
        f"{optimizer} {DTYPE_IDS[dtype]} ragged={ragged}: loss at step {worst} differs by "
        f"{rel[worst]:.3e} relative (> {TRAJ_TOL[dtype]:.0e}): rnnfast {losses_a[worst]!r}, "
        f"torch {tlosses_a[worst]!r}\n"
        f"rnnfast {losses_a}\ntorch   {tlosses_a}"
    )
    named = {f"rnn.{n}": p for n, p in t_rnn.named_parameters()}
    named.update({f"head.{n}": p for n, p in t_head.named_parameters()})
    params = model.parameters()
    for n, p in named.items():
        check(
            params[n],
            p.detach().numpy(),
            10 * TRAJ_TOL[dtype],
            f"{optimizer} final {n}",
            ("trajectory", "params", DTYPE_IDS[dtype], "out"),
        )
