"""rnnfast.reference, the float64 oracle, checked against things that do not depend on it.

- every gradient (x, h0, c0, weights, biases) against central finite differences of the reference's
  own forward pass, in float64, with and without ragged lengths and bias: max error <= 1e-6 relative
  to max |FD gradient| (helpers.rel_max_error);
- dh_all (total dL/dh_t) against finite differences of the loss w.r.t. a perturbation of h_t,
  obtained by splitting the sequence at t (the split itself is checked by the ragged tests);
- forward formulas against the contract written out by hand for one step, and (when PyTorch is
  installed) forward and backward against torch.nn.RNN / LSTM / GRU with packed sequences;
- ragged semantics: a sequence of length L gives the same y, h_n and gradients as running its first
  L steps alone; length 0 returns h0 and passes dh_n straight to dh0; NaN/Inf at padded steps (given
  or produced there) change no result;
- argument validation: ValueError/TypeError naming the argument.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from helpers import (
    CELL_NAMES,
    CELLS,
    TORCH_CELLS,
    assert_close,
    backward,
    bad_forward_cases,
    call_forward_kw,
    central_difference,
    forward,
    grad_keys,
    loss,
    make_inputs,
)
from rnnfast import reference as ref

__all__: list[str] = []

FD_EPS = 1e-6
FD_TOL = 1e-6
T, B, IN, H = 5, 3, 3, 4  # time steps, batch, input size, hidden size
RAGGED = np.array([5, 0, 2])  # full, empty, partial


def _cell_id(c: tuple[str, str]) -> str:
    return c[0] if c[0] != "rnn" else f"rnn-{c[1]}"


CELL_IDS = [_cell_id(c) for c in CELLS]


def _f64(inp: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (None if v is None else np.ascontiguousarray(v, dtype=np.float64))
        for k, v in inp.items()
    }


# ------------------------------------------------------------------------------------------------
# finite differences
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])
def test_gradients_match_finite_differences(
    cell: str, nonlinearity: str, bias: bool, ragged: bool
) -> None:
    inp = _f64(make_inputs(cell, T, B, IN, H, bias=bias, seed=11))
    lengths = RAGGED if ragged else None

    def f() -> float:
        y, h_n, c_n, _ = forward(ref, cell, nonlinearity, inp, lengths)
        return loss(cell, y, h_n, c_n, inp)

    _, _, _, cache = forward(ref, cell, nonlinearity, inp, lengths)
    grads = backward(ref, cell, cache, inp["dy"], inp["dh_n"], inp["dc_n"])
    assert set(grads) == set(grad_keys(cell)) | {"dh_all"}
    for key in grad_keys(cell):
        if key in ("b_ih", "b_hh") and not bias:
            assert grads[key] is None, f"{key}: expected None without bias, got {type(grads[key])}"
            continue
        fd = central_difference(f, inp[key], FD_EPS)
        assert np.max(np.abs(fd)) > 1e-3, f"{key}: FD gradient is ~0, the check would be vacuous"
        assert_close(grads[key], fd, FD_TOL, f"{cell}/{nonlinearity} d{key} vs FD")
        assert grads[key].dtype == np.float64


def _split_loss_grad(
    cell: str, nonlinearity: str, inp: dict[str, Any], lengths: np.ndarray | None, t: int
) -> np.ndarray:
    """FD of L w.r.t. h_t through everything after step t (steps > t, h_n, c_n); c_t held."""
    n_steps = inp["x"].shape[0]
    lens = np.full(B, n_steps) if lengths is None else lengths
    head = dict(inp, x=inp["x"][: t + 1])
    _, h_t, c_t, _ = forward(ref, cell, nonlinearity, head, np.minimum(lens, t + 1))
    h_t = np.ascontiguousarray(h_t)

    def rest() -> float:
        if t == n_steps - 1:
            total = float(np.sum(h_t * inp["dh_n"]))
            return total + (float(np.sum(c_t * inp["dc_n"])) if cell == "lstm" else 0.0)
        tail = dict(inp, x=inp["x"][t + 1 :], h0=h_t, c0=c_t, dy=inp["dy"][t + 1 :])
        y, h_n, c_n, _ = forward(ref, cell, nonlinearity, tail, np.maximum(lens - (t + 1), 0))
        return loss(cell, y, h_n, c_n, tail)

    return central_difference(rest, h_t, FD_EPS)


@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])
def test_dh_all_matches_finite_differences(cell: str, nonlinearity: str, ragged: bool) -> None:
    # dh_all[t] = dL/dh_t = dy_t (y_t = h_t at a valid step) + d(loss of steps > t, h_n, c_n)/dh_t.
    inp = _f64(make_inputs(cell, T, B, IN, H, seed=5))
    lengths = RAGGED if ragged else None
    _, _, _, cache = forward(ref, cell, nonlinearity, inp, lengths)
    dh_all = backward(ref, cell, cache, inp["dy"], inp["dh_n"], inp["dc_n"])["dh_all"]
    lens = np.full(B, T) if lengths is None else lengths
    for t in range(T):
        valid = t < lens
        expected = inp["dy"][t] + _split_loss_grad(cell, nonlinearity, inp, lengths, t)
        assert_close(
            dh_all[t][valid],
            expected[valid],
            FD_TOL,
            f"{cell}/{nonlinearity} dh_all[{t}] valid rows",
        )
        assert np.all(dh_all[t][~valid] == 0.0), (
            f"dh_all[{t}]: padded rows must be zero, got {dh_all[t][~valid]}"
        )


# ------------------------------------------------------------------------------------------------
# the forward formulas
# ------------------------------------------------------------------------------------------------


def _sig(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a))


# The formulas below are written per classic cell; the other cells' oracles are checked against
# independent constructions in tests/test_reference_variants_peers.py.
@pytest.mark.parametrize(
    "cell,nonlinearity",
    [c for c in CELLS if c[0] in ("rnn", "lstm", "gru")],
    ids=[i for c, i in zip(CELLS, CELL_IDS) if c[0] in ("rnn", "lstm", "gru")],
)
def test_one_step_matches_contract_formulas(cell: str, nonlinearity: str) -> None:
    inp = _f64(make_inputs(cell, 1, B, IN, H, seed=3, scale=1.0))
    x, h, w_ih, w_hh, b_ih, b_hh = (inp[k] for k in ("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"))
    x = x[0]
    y, h_n, c_n, _ = forward(ref, cell, nonlinearity, inp)
    if cell == "rnn":
        a = w_ih @ x.T + b_ih[:, None] + w_hh @ h.T + b_hh[:, None]  # (H, B), written column-wise
        want = (np.tanh(a) if nonlinearity == "tanh" else np.where(a > 0, a, 0.0)).T
    elif cell == "lstm":
        gates = [
            w_ih[k * H : (k + 1) * H] @ x.T
            + w_hh[k * H : (k + 1) * H] @ h.T
            + (b_ih + b_hh)[k * H : (k + 1) * H, None]
            for k in range(4)
        ]
        i, f, g, o = _sig(gates[0]), _sig(gates[1]), np.tanh(gates[2]), _sig(gates[3])
        c_want = (f * inp["c0"].T + i * g).T
        want = (o * np.tanh(c_want.T)).T
        assert_close(c_n, c_want, 1e-14, "lstm c_n (one step)")
    else:

        def part(w: np.ndarray, b: np.ndarray, v: np.ndarray, k: int) -> np.ndarray:
            return w[k * H : (k + 1) * H] @ v.T + b[k * H : (k + 1) * H, None]

        r = _sig(part(w_ih, b_ih, x, 0) + part(w_hh, b_hh, h, 0))
        z = _sig(part(w_ih, b_ih, x, 1) + part(w_hh, b_hh, h, 1))
        n = np.tanh(part(w_ih, b_ih, x, 2) + r * part(w_hh, b_hh, h, 2))
        want = ((1 - z) * n + z * h.T).T
    assert_close(h_n, want, 1e-14, f"{cell} h_n (one step)")
    assert_close(y[0], want, 1e-14, f"{cell} y[0] (one step)")


@pytest.mark.torch
@pytest.mark.parametrize("cell,nonlinearity", TORCH_CELLS, ids=[_cell_id(c) for c in TORCH_CELLS])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_matches_torch_packed(cell: str, nonlinearity: str, bias: bool) -> None:
    # torch is a test dependency (pyproject [test] extra): a missing torch fails, not skips.
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    lengths = np.array([5, 1, 3])  # torch cannot pack a length-0 sequence
    inp = _f64(make_inputs(cell, T, B, IN, H, bias=bias, seed=21))
    y, h_n, c_n, cache = forward(ref, cell, nonlinearity, inp, lengths)
    grads = backward(ref, cell, cache, inp["dy"], inp["dh_n"], inp["dc_n"])

    kind = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    kwargs = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
    mod = kind(IN, H, bias=bias, dtype=torch.float64, **kwargs)
    with torch.no_grad():
        mod.weight_ih_l0.copy_(torch.from_numpy(inp["w_ih"]))
        mod.weight_hh_l0.copy_(torch.from_numpy(inp["w_hh"]))
        if bias:
            mod.bias_ih_l0.copy_(torch.from_numpy(inp["b_ih"]))
            mod.bias_hh_l0.copy_(torch.from_numpy(inp["b_hh"]))
    xt = torch.from_numpy(inp["x"].copy()).requires_grad_(True)
    h0t = torch.from_numpy(inp["h0"].copy()).requires_grad_(True)
    packed = pack_padded_sequence(xt, torch.from_numpy(lengths), enforce_sorted=False)
    if cell == "lstm":
        c0t = torch.from_numpy(inp["c0"].copy()).requires_grad_(True)
        out, (hn_t, cn_t) = mod(packed, (h0t[None], c0t[None]))
    else:
        out, hn_t = mod(packed, h0t[None])
    yt, _ = pad_packed_sequence(out, total_length=T)
    total = (yt * torch.from_numpy(inp["dy"])).sum() + (
        hn_t[0] * torch.from_numpy(inp["dh_n"])
    ).sum()
    if cell == "lstm":
        total = total + (cn_t[0] * torch.from_numpy(inp["dc_n"])).sum()
        assert_close(c_n, cn_t[0].detach().numpy(), 1e-12, f"{cell} c_n vs torch")
    total.backward()

    tag = f"{cell}/{nonlinearity}"
    assert_close(y, yt.detach().numpy(), 1e-12, f"{tag} y vs torch")
    assert_close(h_n, hn_t[0].detach().numpy(), 1e-12, f"{tag} h_n vs torch")
    assert_close(grads["x"], xt.grad.numpy(), 1e-12, f"{tag} dx vs torch")
    assert_close(grads["h0"], h0t.grad.numpy(), 1e-12, f"{tag} dh0 vs torch")
    if cell == "lstm":
        assert_close(grads["c0"], c0t.grad.numpy(), 1e-12, f"{tag} dc0 vs torch")
    assert_close(grads["w_ih"], mod.weight_ih_l0.grad.numpy(), 1e-12, f"{tag} dw_ih vs torch")
    assert_close(grads["w_hh"], mod.weight_hh_l0.grad.numpy(), 1e-12, f"{tag} dw_hh vs torch")
    if bias:
        assert_close(grads["b_ih"], mod.bias_ih_l0.grad.numpy(), 1e-12, f"{tag} db_ih vs torch")
        assert_close(grads["b_hh"], mod.bias_hh_l0.grad.numpy(), 1e-12, f"{tag} db_hh vs torch")


# ------------------------------------------------------------------------------------------------
# ragged semantics, checked against running each sequence alone
# ------------------------------------------------------------------------------------------------


def _one_sequence(inp: dict[str, Any], b: int, n: int) -> dict[str, Any]:
    """Sequence b of a batch, its first n steps only, as a batch of one (weights shared)."""
    out: dict[str, Any] = {}
    for k, v in inp.items():
        if v is not None and k in ("x", "dy"):
            out[k] = v[:n, b : b + 1]
        elif v is not None and k in ("h0", "c0", "dh_n", "dc_n"):
            out[k] = v[b : b + 1]
        else:  # the parameters (w_*, b_* and a cell's extra ones such as gamma_*): shared
            out[k] = v
    return out


@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
def test_ragged_equals_each_sequence_alone(cell: str, nonlinearity: str) -> None:
    lengths = np.array([5, 0, 2, 1])
    batch = lengths.size
    inp = _f64(make_inputs(cell, T, batch, IN, H, seed=8))
    y, h_n, c_n, cache = forward(ref, cell, nonlinearity, inp, lengths)
    grads = backward(ref, cell, cache, inp["dy"], inp["dh_n"], inp["dc_n"])
    sum_w = {k: np.zeros_like(inp[k]) for k in ("w_ih", "w_hh", "b_ih", "b_hh")}

    for b, n in enumerate(lengths):
        rows = slice(b, b + 1)
        assert np.all(y[n:, b] == 0.0), f"y[{n}:, {b}] must be zero at padded steps, got {y[n:, b]}"
        assert np.all(grads["x"][n:, b] == 0.0), f"dx[{n}:, {b}] must be zero at padded steps"
        assert np.all(grads["dh_all"][n:, b] == 0.0), (
            f"dh_all[{n}:, {b}] must be zero at padded steps"
        )
        if n == 0:  # nothing runs: the state is h0 (c0) and dh_n (dc_n) flows straight to dh0 (dc0)
            assert np.array_equal(h_n[b], inp["h0"][b]), f"length 0: h_n[{b}] != h0[{b}]"
            assert np.array_equal(grads["h0"][b], inp["dh_n"][b]), (
                f"length 0: dh0[{b}] != dh_n[{b}]"
            )
            if cell == "lstm":
                assert np.array_equal(c_n[b], inp["c0"][b]), f"length 0: c_n[{b}] != c0[{b}]"
                assert np.array_equal(grads["c0"][b], inp["dc_n"][b]), (
                    f"length 0: dc0[{b}] != dc_n[{b}]"
                )
            continue
        alone = _one_sequence(inp, b, n)
        y1, h1, c1, cache1 = forward(ref, cell, nonlinearity, alone)
        g1 = backward(ref, cell, cache1, alone["dy"], alone["dh_n"], alone["dc_n"])
        assert_close(y[:n, rows], y1, 1e-14, f"seq {b} (length {n}) y vs alone")
        assert_close(h_n[rows], h1, 1e-14, f"seq {b} (length {n}) h_n vs alone")
        assert_close(grads["x"][:n, rows], g1["x"], 1e-13, f"seq {b} dx vs alone")
        assert_close(grads["h0"][rows], g1["h0"], 1e-13, f"seq {b} dh0 vs alone")
        assert_close(grads["dh_all"][:n, rows], g1["dh_all"], 1e-13, f"seq {b} dh_all vs alone")
        if cell == "lstm":
            assert_close(c_n[rows], c1, 1e-14, f"seq {b} c_n vs alone")
            assert_close(grads["c0"][rows], g1["c0"], 1e-13, f"seq {b} dc0 vs alone")
        for k in sum_w:
            sum_w[k] += g1[k]
    for k, total in sum_w.items():  # the batch's weight gradient is the sum over its sequences
        assert_close(
            grads[k], total, 1e-13, f"{cell} d{k} of ragged batch vs sum over sequences alone"
        )


@pytest.mark.parametrize("poison", ["nan", "inf", "overflow"])
@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
def test_padded_steps_never_reach_a_result(cell: str, nonlinearity: str, poison: str) -> None:
    """Padded steps are selected away, not multiplied by 0: whatever x and dy hold there (NaN, Inf,
    or inputs whose step overflows to Inf), y, the final state and every gradient are exactly those
    of zero padding -- as in the kernels, which never compute a padded step, and in PyTorch."""
    padded = np.arange(T)[:, None] >= RAGGED[None, :]  # (T, B): True at padded steps
    clean = _f64(make_inputs(cell, T, B, IN, H, seed=11))
    clean["x"][padded] = 0.0
    clean["dy"][padded] = 0.0
    dirty = {k: (None if v is None else v.copy()) for k, v in clean.items()}
    if poison == "overflow":  # W_ih x_t = +Inf on every padded row: relu gives h = Inf there
        big = np.finfo(np.float64).max
        for inp in (clean, dirty):
            inp["w_ih"] = np.abs(inp["w_ih"]) + 0.5  # each row sums to > 1
        dirty["x"][padded] = big
        dirty["dy"][padded] = big
    else:
        dirty["x"][padded] = float(poison)
        dirty["dy"][padded] = float(poison)
    results = []
    for inp in (clean, dirty):
        # the dirty run evaluates its padded rows (then discards them): they overflow
        with np.errstate(over="ignore", invalid="ignore"):
            y, h_n, c_n, cache = forward(ref, cell, nonlinearity, inp, RAGGED)
            grads = backward(ref, cell, cache, inp["dy"], inp["dh_n"], inp["dc_n"])
        results.append({"y": y, "h_n": h_n, "c_n": c_n, **{f"d{k}": v for k, v in grads.items()}})
    if poison == "overflow" and nonlinearity == "relu":
        assert not np.isfinite(cache.act[padded]).any(), "the padded steps should give h = Inf"
    want, got = results
    for k, v in got.items():
        if v is None:
            assert want[k] is None, k
            continue
        assert np.isfinite(v).all(), f"{k}: non-finite at {np.argwhere(~np.isfinite(v))[:3]}"
        np.testing.assert_array_equal(v, want[k], err_msg=f"{k}: padding changed the result")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=_cell_id)
def test_non_finite_state_of_empty_sequence_is_isolated(
    cell: str, nonlinearity: str, dtype: Any, bad: float
) -> None:
    """The h0 (c0) of a sequence of length 0 is carried over all its (padded) steps to h_n and reaches
    no other result: dW_hh's h_{t-1} rows are selected away at padded steps like x, not multiplied
    by a zero dL/da (0 * NaN = NaN would poison the whole batch's weight gradient)."""
    b = int(np.argmin(RAGGED))
    assert RAGGED[b] == 0
    clean = _f64(make_inputs(cell, T, B, IN, H, dtype=dtype, seed=13))
    dirty = {k: (None if v is None else v.copy()) for k, v in clean.items()}
    states = ("h0", "c0") if cell == "lstm" else ("h0",)
    for key in states:
        clean[key][b] = 0.0
        dirty[key][b] = bad
    results = []
    for inp in (clean, dirty):
        with np.errstate(invalid="ignore", over="ignore"):  # the discarded padded rows
            y, h_n, c_n, cache = forward(ref, cell, nonlinearity, inp, RAGGED)
            grads = backward(ref, cell, cache, inp["dy"], inp["dh_n"], inp["dc_n"])
        results.append({"y": y, "h_n": h_n, "c_n": c_n, **{f"d{k}": v for k, v in grads.items()}})
    want, got = results
    for final in ("h_n", "c_n")[: len(states)]:
        np.testing.assert_array_equal(got[final][b], np.full(H, bad), err_msg=f"{final}[{b}]")
        got[final][b] = want[final][b] = 0.0
    for k, v in got.items():
        if v is None:
            assert want[k] is None, k
            continue
        assert np.isfinite(v).all(), f"{k}: non-finite at {np.argwhere(~np.isfinite(v))[:3]}"
        np.testing.assert_array_equal(v, want[k], err_msg=f"{k}: h0[{b}] = {bad} changed it")


@pytest.mark.parametrize("lengths", [None, [2], [1]], ids=["no-lengths", "full", "padded"])
def test_infinite_state_is_carried_not_turned_into_nan(lengths: Any) -> None:
    """GRU h_t = (1 - z) n + z h_{t-1} with h0 = +Inf, W_hh = 1, x = 0: r = z = n = 1, so every valid
    step gives h = 0 * 1 + 1 * Inf = +Inf (PyTorch's value), and a padded step carries it: the carry
    is a selection, so it never computes 0 * Inf = NaN."""
    x = np.zeros((2, 1, 1))
    w_ih, w_hh = np.zeros((3, 1)), np.ones((3, 1))
    y, h_n, _ = ref.gru_forward(x, [[np.inf]], w_ih, w_hh, None, None, lengths=lengths)
    n_valid = 2 if lengths is None else lengths[0]
    assert h_n.tolist() == [[np.inf]]
    assert y[:, 0, 0].tolist() == [np.inf] * n_valid + [0.0] * (2 - n_valid)


@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
def test_full_lengths_equal_no_lengths(cell: str, nonlinearity: str) -> None:
    inp = _f64(make_inputs(cell, T, B, IN, H, seed=2))
    y0, h0, c0, cache0 = forward(ref, cell, nonlinearity, inp)
    y1, h1, c1, cache1 = forward(ref, cell, nonlinearity, inp, np.full(B, T))
    assert_close(y1, y0, 0.0, "y")
    assert_close(h1, h0, 0.0, "h_n")
    assert_close(c1, c0, 0.0, "c_n")
    g0 = backward(ref, cell, cache0, inp["dy"], inp["dh_n"], inp["dc_n"])
    g1 = backward(ref, cell, cache1, inp["dy"], inp["dh_n"], inp["dc_n"])
    for k in g0:
        assert_close(g1[k], g0[k], 0.0, f"d{k}")


# ------------------------------------------------------------------------------------------------
# conventions: None inputs, training=False, dtypes
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
def test_none_means_zeros(cell: str, nonlinearity: str) -> None:
    inp = _f64(make_inputs(cell, T, B, IN, H, seed=4))
    zeros = dict(inp, h0=np.zeros((B, H)), c0=np.zeros((B, H)) if cell == "lstm" else None)
    nones = dict(inp, h0=None, c0=None)
    y0, h0, c0, cache0 = forward(ref, cell, nonlinearity, zeros)
    y1, h1, c1, cache1 = forward(ref, cell, nonlinearity, nones)
    assert_close(y1, y0, 0.0, "y with h0=None")
    assert_close(h1, h0, 0.0, "h_n with h0=None")
    assert_close(c1, c0, 0.0, "c_n with c0=None")
    g_zero = backward(
        ref,
        cell,
        cache0,
        np.zeros((T, B, H)),
        np.zeros((B, H)),
        np.zeros((B, H)) if cell == "lstm" else None,
    )
    g_none = backward(ref, cell, cache1, None, None, None)
    for k in g_zero:
        assert_close(g_none[k], g_zero[k], 0.0, f"d{k} with dy/dh_n/dc_n None")
        if g_zero[k] is not None:
            assert np.all(g_zero[k] == 0.0), f"d{k} must be zero for a zero upstream gradient"


@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
def test_training_false_and_float32_input(cell: str, nonlinearity: str) -> None:
    inp32 = make_inputs(cell, T, B, IN, H, dtype=np.float32, seed=6)
    y, h_n, c_n, cache = forward(ref, cell, nonlinearity, inp32, RAGGED, training=False)
    assert cache is None
    y64, h64, c64, _ = forward(ref, cell, nonlinearity, _f64(inp32), RAGGED)
    for name, a, b in (("y", y, y64), ("h_n", h_n, h64), ("c_n", c_n, c64)):
        if a is None:
            continue
        assert a.dtype == np.float64, f"{name}: reference output must be float64, got {a.dtype}"
        assert_close(a, b, 0.0, f"{name} (float32 input, training=False)")


# ------------------------------------------------------------------------------------------------
# argument validation
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_bad_forward_arguments(cell: str) -> None:
    base = make_inputs(cell, 3, 2, 3, 4)
    for case_id, arg, value, exc, match in bad_forward_cases(cell):
        kw = dict(base, **{arg: value})
        with pytest.raises(exc, match=match):
            call_forward_kw(ref, cell, kw)
        del case_id


def test_bad_misc_arguments() -> None:
    inp = make_inputs("rnn", 3, 2, 3, 4)
    with pytest.raises(ValueError, match="nonlinearity"):
        call_forward_kw(ref, "rnn", inp, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="b_ih"):
        call_forward_kw(ref, "rnn", dict(inp, b_hh=None))
    _, _, cache = ref.rnn_forward(
        inp["x"], inp["h0"], inp["w_ih"], inp["w_hh"], inp["b_ih"], inp["b_hh"]
    )
    with pytest.raises(ValueError, match="dy"):
        ref.rnn_backward(cache, np.zeros((3, 2, 5)))
    with pytest.raises(ValueError, match="dh_n"):
        ref.rnn_backward(cache, None, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="cache"):
        ref.rnn_backward(None, None)
    with pytest.raises(ValueError, match="cache"):
        ref.gru_backward(cache, None)
    with pytest.raises(TypeError, match="cache"):
        ref.rnn_backward({"x": inp["x"]}, None)
