"""The layer-normalised LSTM and GRU (``lstm_layernorm``, ``gru_layernorm``; issue 14).

What the cell-parametrised suites do not cover for these two row-wide, bias-in-cell cells:

* the compiled kernels against the float64 oracle (rnnfast.reference) with gains away from 1, in
  float64 (1e-12) and float32 (1e-5), full and ragged batches, with and without biases;
* an independent peer: the same equations written with torch autograd (torch.nn.functional.layer_norm
  over the rows) in float64, against the compiled kernels, every gradient;
* 1 vs 2 threads: bitwise identical outputs and gradients (the row-wide loops sum the gains' and
  biases' gradients in one order whatever the team);
* truncated BPTT (functional.tbptt_grads) against an explicit construction from the oracle;
* the modules: LayerNormLSTM / LayerNormGRU start with gains 1 and shift 0 under every init preset.

Errors: max |got - expected| / max |expected| per array (rnnfast.testing.assert_close).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import rnnfast
from rnnfast import functional as F
from rnnfast import reference as R
from rnnfast._cells import get_cell
from rnnfast._loader import core
from rnnfast.testing import assert_close

__all__: list[str] = []

LN_CELLS = ["lstm_layernorm", "gru_layernorm"]
TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}


def _inputs(
    cell: str, T: int, B: int, I: int, H: int, *, bias: bool = True, seed: int = 0
) -> dict[str, Any]:  # noqa: E741
    """float64 arguments of <cell>_forward by name (gains 1 +- 0.3, beta_c +- 0.3) and dy, dh_n, dc_n."""
    rng = np.random.default_rng(seed)
    spec = get_cell(cell)
    G = spec.gates

    def u(*shape: int, scale: float = 0.5) -> np.ndarray:
        return rng.uniform(-scale, scale, shape)

    out: dict[str, Any] = {
        "x": rng.standard_normal((T, B, I)),
        "h0": u(B, H),
        "c0": u(B, H) if spec.has_cell_state else None,
        "w_ih": u(G * H, I),
        "w_hh": u(G * H, H),
        "b_ih": u(G * H) if bias else None,
        "b_hh": u(G * H) if bias else None,
    }
    for name, per_unit in spec.extra_params:
        out[name] = (0.0 if name.startswith("beta") else 1.0) + u(per_unit * H, scale=0.3)
    out["dy"] = rng.standard_normal((T, B, H))
    out["dh_n"] = rng.standard_normal((B, H))
    out["dc_n"] = rng.standard_normal((B, H)) if spec.has_cell_state else None
    return out


def _args(cell: str, inp: dict[str, Any], dtype: Any = np.float64) -> list[Any]:
    spec = get_cell(cell)
    names = [*spec.state_names, "w_ih", "w_hh", "b_ih", "b_hh", *(n for n, _ in spec.extra_params)]
    return [inp["x"].astype(dtype)] + [
        None if inp[n] is None else inp[n].astype(dtype) for n in names
    ]


def _run(mod: Any, cell: str, inp: dict[str, Any], dtype: Any, lengths: Any = None) -> dict:
    """Outputs and gradients of mod.<cell>_forward/_backward, by name (y, h_n, c_n, d<param>)."""
    spec = get_cell(cell)
    outs = getattr(mod, f"{cell}_forward")(*_args(cell, inp, dtype), lengths=lengths)
    cache = outs[-1]
    seeds = [inp["dy"].astype(dtype), inp["dh_n"].astype(dtype)]
    if spec.has_cell_state:
        seeds.append(inp["dc_n"].astype(dtype))
    grads = getattr(mod, f"{cell}_backward")(cache, *seeds)
    res = {"y": outs[0], "h_n": outs[1]}
    if spec.has_cell_state:
        res["c_n"] = outs[2]
    res.update({f"d{k}": v for k, v in grads.items() if v is not None})
    return res


# --------------------------------------------------------------------------------------------------
# kernels vs the float64 oracle
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(6, 4, 5, 7), (3, 2, 9, 16), (2, 1, 3, 2)], ids=str)
@pytest.mark.parametrize("cell", LN_CELLS)
def test_kernels_match_the_oracle(
    cell: str, shape: tuple[int, int, int, int], dtype: Any, bias: bool, ragged: bool
) -> None:
    T, B, I, H = shape  # noqa: E741
    inp = _inputs(cell, T, B, I, H, bias=bias, seed=sum(shape))
    inp["x"] = inp["x"].astype(dtype).astype(np.float64)  # the oracle sees the same values
    for k in ("h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", *dict(get_cell(cell).extra_params)):
        if inp[k] is not None:
            inp[k] = inp[k].astype(dtype).astype(np.float64)
    lengths = np.array([T, 0, T - 1, 1][:B], np.int64) if ragged and B > 1 else None
    got = _run(F, cell, inp, dtype, lengths)
    want = _run(R, cell, inp, np.float64, lengths)
    assert set(got) == set(want), (sorted(got), sorted(want))
    for k, w in want.items():
        assert got[k].dtype == dtype, f"{k}: dtype {got[k].dtype}"
        assert_close(got[k], w, TOL[np.dtype(dtype)], f"{cell} {np.dtype(dtype)} {shape} {k}")


# --------------------------------------------------------------------------------------------------
# an independent peer: the same equations with torch autograd
# --------------------------------------------------------------------------------------------------


def _torch_peer(cell: str, inp: dict[str, Any], lengths: np.ndarray) -> dict[str, Any]:
    """Forward with torch ops in float64 (layer_norm over the rows, eps 1e-5), loss <y, dy> +
    <h_n, dh_n> (+ <c_n, dc_n>), gradients by autograd."""
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    spec = get_cell(cell)
    names = ["x", *spec.state_names, "w_ih", "w_hh", "b_ih", "b_hh", *dict(spec.extra_params)]
    p = {k: torch.tensor(inp[k], dtype=torch.float64, requires_grad=True) for k in names}
    T, B, _ = inp["x"].shape
    H = inp["w_hh"].shape[1]
    GH = spec.gates * H
    valid = torch.tensor(np.arange(T)[:, None] < lengths[None, :])[:, :, None]  # (T, B, 1)
    h = p["h0"]
    c = p.get("c0")
    ys = []
    for t in range(T):
        ni = tf.layer_norm(p["x"][t] @ p["w_ih"].T, (GH,), p["gamma_ih"], None, 1e-5)
        nh = tf.layer_norm(h @ p["w_hh"].T, (GH,), p["gamma_hh"], None, 1e-5)
        if cell == "lstm_layernorm":
            a = ni + nh + p["b_ih"] + p["b_hh"]
            i, f, g, o = torch.sigmoid(a[:, :H]), torch.sigmoid(a[:, H : 2 * H]), None, None
            g = torch.tanh(a[:, 2 * H : 3 * H])
            o = torch.sigmoid(a[:, 3 * H :])
            c_new = f * c + i * g
            h_new = o * torch.tanh(tf.layer_norm(c_new, (H,), p["gamma_c"], p["beta_c"], 1e-5))
            c = torch.where(valid[t], c_new, c)
        else:
            gi, gh = ni + p["b_ih"], nh + p["b_hh"]
            r = torch.sigmoid(gi[:, :H] + gh[:, :H])
            z = torch.sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
            n = torch.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
            h_new = (1 - z) * n + z * h
        h = torch.where(valid[t], h_new, h)
        ys.append(torch.where(valid[t], h, torch.zeros_like(h)))
    y = torch.stack(ys)
    loss = (y * torch.tensor(inp["dy"])).sum() + (h * torch.tensor(inp["dh_n"])).sum()
    out = {"y": y.detach().numpy(), "h_n": h.detach().numpy()}
    if c is not None:
        loss = loss + (c * torch.tensor(inp["dc_n"])).sum()
        out["c_n"] = c.detach().numpy()
    loss.backward()
    out.update({f"d{k}": v.grad.numpy() for k, v in p.items()})
    return out


@pytest.mark.parametrize("cell", LN_CELLS)
def test_kernels_match_torch_autograd(cell: str) -> None:
    T, B, I, H = 5, 4, 3, 6  # noqa: E741
    inp = _inputs(cell, T, B, I, H, seed=7)
    lengths = np.array([5, 2, 0, 4], np.int64)
    want = _torch_peer(cell, inp, lengths)
    got = _run(F, cell, inp, np.float64, lengths)
    assert set(want) <= set(got), (sorted(want), sorted(got))
    for k, w in want.items():
        assert_close(got[k], w, 1e-12, f"{cell} vs torch autograd {k}")


# --------------------------------------------------------------------------------------------------
# 1 vs 2 threads, bitwise
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cell", LN_CELLS)
def test_bitwise_identical_with_one_and_two_threads(cell: str, dtype: Any) -> None:
    """The time loops forced to teams of 1 and 2 (core._force_loop_threads): the row-wide passes
    (forward rows split over the team, backward cells on one thread) must give the same bits."""
    T, B, I, H = 6, 48, 32, 128  # noqa: E741
    inp = _inputs(cell, T, B, I, H, seed=3)
    lengths = np.array([T - (b % 3) for b in range(B)], np.int64)
    before = rnnfast.get_num_threads()
    try:
        runs = []
        for n in (1, 2):
            rnnfast.set_num_threads(n)
            core._force_loop_threads(n)  # a team of n even when the machine is busy
            runs.append(_run(F, cell, inp, dtype, lengths))
            params = {k: inp[k].astype(dtype) for k in ("w_ih", "w_hh", "b_ih", "b_hh")}
            params.update({k: inp[k].astype(dtype) for k in dict(get_cell(cell).extra_params)})
            state0 = (
                (inp["h0"].astype(dtype), inp["c0"].astype(dtype))
                if inp["c0"] is not None
                else None
            )
            ups = F.tbptt_grads(
                cell, inp["x"].astype(dtype), state0, params, inp["dy"].astype(dtype), 2, 4
            )
            runs[-1].update(
                {
                    f"tbptt{u}_{k}": v
                    for u, g in enumerate(ups)
                    for k, v in g.items()
                    if isinstance(v, np.ndarray)
                }
            )
    finally:
        core._force_loop_threads(0)
        rnnfast.set_num_threads(before)
    one, two = runs
    assert set(one) == set(two)
    for k in one:
        assert one[k].tobytes() == two[k].tobytes(), (
            f"{cell} {np.dtype(dtype)} {k}: 1 and 2 threads differ, max |diff| "
            f"{float(np.max(np.abs(one[k] - two[k])))}"
        )


# --------------------------------------------------------------------------------------------------
# truncated BPTT vs an explicit construction from the oracle
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("k1", "k2"), [(2, 2), (2, 5), (3, 4)])
@pytest.mark.parametrize("cell", LN_CELLS)
def test_tbptt_matches_the_explicit_construction(cell: str, k1: int, k2: int) -> None:
    """Update n: the oracle's forward from the state entering s = max(0, e - k2 + 1) (the oracle's
    own forward over x[:s]), backward of <y, dy> over the update's output steps [n*k1, e] only."""
    T, B, I, H = 9, 3, 4, 5  # noqa: E741
    inp = _inputs(cell, T, B, I, H, seed=11)
    spec = get_cell(cell)
    extra = [inp[n] for n, _ in spec.extra_params]
    weights = [inp["w_ih"], inp["w_hh"], inp["b_ih"], inp["b_hh"], *extra]
    fwd, bwd = getattr(R, f"{cell}_forward"), getattr(R, f"{cell}_backward")
    states0 = [inp["h0"], inp["c0"]] if spec.has_cell_state else [inp["h0"]]
    params = dict(zip(("w_ih", "w_hh", "b_ih", "b_hh", *dict(spec.extra_params)), weights))
    got = F.tbptt_grads(cell, inp["x"], tuple(states0) if spec.has_cell_state else states0[0],
                        params, inp["dy"], k1, k2)  # fmt: skip
    n = 0
    for start in range(0, T, k1):
        e = min(start + k1, T) - 1
        s = max(0, e - k2 + 1)
        states = states0
        if s > 0:
            out = fwd(inp["x"][:s], *states0, *weights, training=False)
            states = list(out[1 : 1 + spec.n_states])
        out = fwd(inp["x"][s : e + 1], *states, *weights)
        dyw = np.zeros((e + 1 - s, B, H))
        dyw[start - s :] = inp["dy"][start : e + 1]
        want = bwd(out[-1], dyw)
        for k in ("w_ih", "w_hh", "b_ih", "b_hh", *dict(spec.extra_params)):
            assert_close(got[n][k], want[k], 1e-12, f"{cell} k1={k1} k2={k2} update {n} d{k}")
        n += 1
    assert n == len(got)


# --------------------------------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("init", ["torch", "orthogonal", "identity"])
@pytest.mark.parametrize("cls", ["LayerNormLSTM", "LayerNormGRU"])
def test_module_gains_start_at_one_and_shift_at_zero(cls: str, init: str) -> None:
    m = getattr(rnnfast, cls)(3, 5, num_layers=2, bidirectional=True, init=init, seed=0)
    sd = m.state_dict()
    gains = [k for k in sd if k.startswith("gamma_")]
    shifts = [k for k in sd if k.startswith("beta_")]
    per_layer_dir = (2, 0) if cls == "LayerNormGRU" else (3, 1)  # gains, shifts
    assert (len(gains), len(shifts)) == (4 * per_layer_dir[0], 4 * per_layer_dir[1]), sorted(sd)
    for k in gains:
        np.testing.assert_array_equal(sd[k], 1.0, err_msg=k)
    for k in shifts:
        np.testing.assert_array_equal(sd[k], 0.0, err_msg=k)
    assert ("beta_c_l1_reverse" in sd) == (cls == "LayerNormLSTM")


@pytest.mark.parametrize("cls", ["LayerNormLSTM", "LayerNormGRU"])
def test_module_matches_the_functional_kernels(cls: str) -> None:
    """One layer in float64: the module's output and parameter gradients are the functional call's."""
    m = getattr(rnnfast, cls)(4, 6, dtype=np.float64, seed=1)
    cell = m._cell
    spec = get_cell(cell)
    rng = np.random.default_rng(2)
    sd = m.state_dict()
    for k, v in sd.items():  # gains away from 1 so that a swapped gain would show
        if k.startswith(("gamma_", "beta_")):
            sd[k] = v + rng.uniform(-0.3, 0.3, v.shape)
    m.load_state_dict(sd)
    x = rng.standard_normal((5, 3, 4))
    out = m(x)
    y = out[0]
    dy = rng.standard_normal(y.shape)
    m.zero_grad()
    m.backward(dy)
    p = m.state_dict()
    args = [p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"]]
    args += [p[f"{n}_l0"] for n, _ in spec.extra_params]
    states = [None] * spec.n_states
    fo = getattr(F, f"{cell}_forward")(x, *states, *args)
    g = getattr(F, f"{cell}_backward")(fo[-1], dy)
    np.testing.assert_array_equal(y, fo[0])
    for n, _ in spec.extra_params:
        np.testing.assert_array_equal(m.grads[f"{n}_l0"], g[n], err_msg=n)
    np.testing.assert_array_equal(m.grads["bias_ih_l0"], g["b_ih"])
