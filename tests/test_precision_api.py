"""``precision=`` on the user-facing surfaces (issue 18): the functional API, the modules, their
checkpoints, the truncated-BPTT streams and ``step``.

Oracles: the float64 reference (:mod:`rnnfast.reference`) and the float64 bf16 oracle
(:mod:`rnnfast.reference.bf16`: the same math on bf16-rounded product operands). The bitwise checks
compare two ways of asking for one mode (``precision=`` vs the ``rnnfast.precision`` block); that
the mode is really bf16 is checked against the oracles, never against the code under test.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

import rnnfast
from helpers import cell_inputs_f32
from rnnfast import functional as F
from rnnfast import reference as R
from rnnfast._cells import CELLS, get_cell
from rnnfast._loader import core
from rnnfast._precision import Bf16PathWarning
from rnnfast.reference import bf16 as RB
from rnnfast.testing import assert_close

__all__: list[str] = []

_CELL_NAMES = [c.name for c in (CELLS.values() if isinstance(CELLS, dict) else CELLS)]
#: README's measured bound of bf16 against the float64 reference (~4e-3 relative in the max),
#: with room for the short sequences here
_BF16_BOUND = 1.5e-2


@pytest.fixture(autouse=True)
def _quiet_notice() -> Any:
    """The once-per-process notice is tested in test_bf16.py; here it is noise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Bf16PathWarning)
        yield
    assert core._get_precision() == "fp32", "a test left the thread in bf16"


def _inputs(cell: str, T: int = 5, B: int = 3, I: int = 6, H: int = 24, seed: int = 0) -> dict:  # noqa: E741
    return cell_inputs_f32(cell, T, B, I, H, seed)


def _fwd(cell: str, a: dict, **kw: Any) -> tuple[Any, ...]:
    spec = get_cell(cell)
    args = [a["x"], *(a[n] for n in spec.state_names), a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"]]
    args += [a[name] for name, _ in spec.extra_params]
    return getattr(F, f"{cell}_forward")(*args, **kw)


def _bwd(cell: str, cache: Any, a: dict, **kw: Any) -> dict:
    seeds = (
        (a["dy"], a["dh_n"], a["dc_n"]) if get_cell(cell).has_cell_state else (a["dy"], a["dh_n"])
    )
    return dict(getattr(F, f"{cell}_backward")(cache, *seeds, **kw))


def _run(cell: str, a: dict, **kw: Any) -> tuple[list, dict]:
    """forward (training) and backward with the same keywords: (outputs but the cache, grads)."""
    out = _fwd(cell, a, **kw)
    return list(out[:-1]), _bwd(cell, out[-1], a, **kw)


def _same(got: tuple[list, dict], want: tuple[list, dict], what: str) -> None:
    for i, (g, w) in enumerate(zip(got[0], want[0])):
        assert np.array_equal(g, w), f"{what}: forward output {i} differs"
    for k, w in want[1].items():
        g = got[1][k]
        assert (g is None and w is None) or np.array_equal(g, w), f"{what}: d{k} differs"


def _rel(a: Any, ref: Any) -> float:
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(a - ref)) / max(np.max(np.abs(ref)), 1e-30))


# --------------------------------------------------------------------------------------------------
# functional API
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", _CELL_NAMES)
def test_functional_precision_is_the_block(cell: str) -> None:
    """precision="bf16" is bitwise the call inside rnnfast.precision("bf16"), and "fp32" inside a
    bf16 block is bitwise the plain fp32 call; bf16 differs from fp32 by a rounding, not more."""
    a = _inputs(cell)
    fp32 = _run(cell, a)
    bf16 = _run(cell, a, precision="bf16")
    assert core._get_precision() == "fp32"  # restored after each call
    with rnnfast.precision("bf16"):
        block = _run(cell, a)
        forced = _run(cell, a, precision="fp32")
        assert core._get_precision() == "bf16"  # and the block's mode after a fp32 call
    _same(bf16, block, f"{cell}: precision='bf16' vs the bf16 block")
    _same(forced, fp32, f"{cell}: precision='fp32' in a bf16 block vs fp32")
    _same(_run(cell, a, precision="fp32"), fp32, f"{cell}: precision='fp32' vs the default")
    for name, got, ref in [
        ("y", bf16[0][0], fp32[0][0]),
        ("dw_hh", bf16[1]["w_hh"], fp32[1]["w_hh"]),
        ("dx", bf16[1]["x"], fp32[1]["x"]),
    ]:
        err = assert_close(got, ref, 5e-2, f"{cell} {name} bf16 vs fp32")
        assert err > 1e-5, f"{cell} {name}: bf16 equals fp32 to {err:.1e}: no rounding happened"


def _reference(cell: str, a: dict) -> tuple[Any, ...]:
    d = {k: (None if v is None else v.astype(np.float64)) for k, v in a.items()}
    w = (d["w_ih"], d["w_hh"], d["b_ih"], d["b_hh"])
    if cell == "lstm":
        y, h_n, _, cache = R.lstm_forward(d["x"], d["h0"], d["c0"], *w)
        return y, h_n, R.lstm_backward(cache, d["dy"], d["dh_n"], d["dc_n"])
    y, h_n, cache = getattr(R, f"{cell}_forward")(d["x"], d["h0"], *w)
    return y, h_n, getattr(R, f"{cell}_backward")(cache, d["dy"], d["dh_n"])


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_functional_bf16_against_the_oracles(cell: str) -> None:
    """precision="bf16" is the bf16 oracle's computation (far closer to it than fp32 is) and within
    the documented bound of the float64 reference."""
    a = _inputs(cell, T=4, B=2, I=7, H=48, seed=3)
    (y, h_n, *_), g = _run(cell, a, precision="bf16")
    (y32, *_), g32 = _run(cell, a)
    oy, _, _, ocache = RB.sequence_forward_bf16(
        cell, a["x"], a["h0"], a.get("c0"), a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"]
    )
    og = RB.sequence_backward_bf16(ocache, a["dy"], a["dh_n"], a["dc_n"])
    ry, rh, rg = _reference(cell, a)
    for name, got, fp32, oracle, ref in [
        ("y", y, y32, oy, ry),
        ("dw_hh", g["w_hh"], g32["w_hh"], og["w_hh"], rg["w_hh"]),
        ("dw_ih", g["w_ih"], g32["w_ih"], og["w_ih"], rg["w_ih"]),
        ("dx", g["x"], g32["x"], og["x"], rg["x"]),
    ]:
        e_oracle, e32 = _rel(got, oracle), _rel(fp32, oracle)
        assert e_oracle <= 0.1 * e32, (
            f"{cell} {name}: {e_oracle:.2e} from the bf16 oracle, fp32 is {e32:.2e} from it"
        )
        assert _rel(got, ref) < _BF16_BOUND, f"{cell} {name}: {_rel(got, ref):.2e} from float64"
    assert _rel(h_n, rh) < _BF16_BOUND


def test_functional_precision_refusals() -> None:
    a = _inputs("lstm")
    with pytest.raises(
        ValueError, match=r"precision: expected one of \('fp32', 'bf16'\), got 'fp16'"
    ):
        _fwd("lstm", a, precision="fp16")
    with pytest.raises(TypeError, match="precision: expected one of .* got int"):
        _fwd("lstm", a, precision=16)
    with pytest.raises(TypeError, match="precision: expected one of .* got bytes"):
        _fwd("gru_layernorm", _inputs("gru_layernorm"), precision=b"bf16")
    a64 = {k: (None if v is None else v.astype(np.float64)) for k, v in a.items()}
    with pytest.raises(ValueError, match="precision: 'bf16' needs float32 arrays, got float64"):
        _fwd("lstm", a64, precision="bf16")
    p64 = {
        k: (None if v is None else v.astype(np.float64))
        for k, v in _inputs("lstm_peephole").items()
    }
    with pytest.raises(ValueError, match="precision: 'bf16' needs float32 arrays, got float64"):
        _fwd("lstm_peephole", p64, precision="bf16")  # a generated cell function
    out = _fwd("lstm", a64, precision="fp32")  # float64 with "fp32": runs float64
    assert out[0].dtype == np.float64
    cache = _fwd("lstm", a)[-1]
    with pytest.raises(ValueError, match="precision: expected one of"):
        _bwd("lstm", cache, a, precision="BF16")
    with pytest.raises(ValueError, match="precision: 'bf16' needs float32 arrays, got float64"):
        _bwd("lstm", _fwd("lstm", a64)[-1], a64, precision="bf16")
    assert core._get_precision() == "fp32"


# --------------------------------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------------------------------

_STACKS = ["RNN", "LSTM", "GRU", "PeepholeLSTM", "ResetBeforeGRU", "LayerNormLSTM", "LayerNormGRU"]


def _stack(cls: str, **kw: Any) -> Any:
    return getattr(rnnfast.nn, cls)(5, 16, num_layers=2, bidirectional=True, seed=1, **kw)


def _train_step(m: Any, x: np.ndarray, dout: np.ndarray) -> tuple[Any, ...]:
    """(out, h_n, dx, grads) of one training forward and backward from zero gradients."""
    m.train()
    m.zero_grad()
    out, h_n = m(x)
    dx = m.backward(dout)
    return out, h_n, dx, {k: g.copy() for k, g in m.grads.items()}


def _states(s: Any) -> list[Any]:
    """The arrays of a module state: (h, c) or h."""
    return list(s) if isinstance(s, tuple) else [s]


def _same_step(a: tuple[Any, ...], b: tuple[Any, ...], what: str) -> None:
    flat = [("out", a[0], b[0]), ("dx", a[2], b[2])]
    flat += [(f"h_n[{i}]", u, v) for i, (u, v) in enumerate(zip(_states(a[1]), _states(b[1])))]
    flat += [(f"d{k}", a[3][k], b[3][k]) for k in b[3]]
    for name, u, v in flat:
        assert np.array_equal(u, v), f"{what}: {name} differs"


@pytest.mark.parametrize("cls", _STACKS)
def test_module_precision_train_eval_and_gradients(cls: str) -> None:
    """A module with precision="bf16" is, bitwise, the default module inside rnnfast.precision("bf16")
    (training forward, gradients, dx, eval forward), also when the thread is fp32; with "fp32"
    inside a bf16 block it is the fp32 module. bf16 differs from fp32 by the rounding only."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 3, 5)).astype(np.float32)
    dout = rng.standard_normal((6, 3, 32)).astype(np.float32)
    m_bf16, m_fp32, m_plain = (
        _stack(cls, precision="bf16"),
        _stack(cls, precision="fp32"),
        _stack(cls),
    )
    assert (m_bf16.precision, m_fp32.precision, m_plain.precision) == ("bf16", "fp32", None)
    fp32 = _train_step(m_plain, x, dout)
    got = _train_step(m_bf16, x, dout)
    assert core._get_precision() == "fp32"
    with rnnfast.precision("bf16"):
        block = _train_step(m_plain, x, dout)
        forced = _train_step(m_fp32, x, dout)
        assert core._get_precision() == "bf16"
    _same_step(got, block, f"{cls} precision='bf16' vs the bf16 block")
    _same_step(forced, fp32, f"{cls} precision='fp32' in a bf16 block vs fp32")
    err = assert_close(got[0], fp32[0], 5e-2, f"{cls} out bf16 vs fp32")
    assert err > 1e-5, f"{cls}: bf16 equals fp32 to {err:.1e}: no rounding happened"
    w = "weight_hh_l0_reverse"
    # 0.1: two layers, both directions; a layer norm of W_hh h scales up its rounding
    err = assert_close(got[3][w], fp32[3][w], 0.1, f"{cls} d{w} bf16 vs fp32")
    assert err > 1e-5, f"{cls}: d{w} bf16 equals fp32 to {err:.1e}"
    m_bf16.eval(), m_plain.eval()
    with rnnfast.precision("bf16"):
        want = m_plain(x)[0]
    assert np.array_equal(m_bf16(x)[0], want), f"{cls}: eval forward differs from the bf16 block"
    m_bf16.precision = None  # assignable: now the thread's mode (fp32)
    assert np.array_equal(m_bf16(x)[0], m_plain(x)[0])


def test_module_bf16_against_the_oracles() -> None:
    """One-layer LSTM with precision="bf16": out and the weight gradients are the bf16 oracle's
    (far closer to it than fp32) and within the documented bound of the float64 reference."""
    a = _inputs("lstm", T=5, B=2, I=6, H=32, seed=4)
    m = rnnfast.LSTM(6, 32, precision="bf16")
    m.load_state_dict(
        {"weight_ih_l0": a["w_ih"], "weight_hh_l0": a["w_hh"], "bias_ih_l0": a["b_ih"],
         "bias_hh_l0": a["b_hh"]}
    )  # fmt: skip
    m32 = rnnfast.LSTM(6, 32)
    m32.load_state_dict(m.state_dict())
    got, want32 = [], []
    for mod, sink in ((m, got), (m32, want32)):
        out, _ = mod(a["x"], (a["h0"][None], a["c0"][None]))
        mod.backward(a["dy"])
        sink += [out, mod.grads["weight_hh_l0"].copy(), mod.grads["weight_ih_l0"].copy()]
    oy, _, _, ocache = RB.sequence_forward_bf16(
        "lstm", a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"]
    )
    og = RB.sequence_backward_bf16(ocache, a["dy"], None, None)
    ry, _, rg = _reference(
        "lstm", a | {"dh_n": np.zeros_like(a["dh_n"]), "dc_n": np.zeros_like(a["dc_n"])}
    )
    for name, g, g32, o, r in zip(
        ("out", "dweight_hh", "dweight_ih"), got, want32, (oy, og["w_hh"], og["w_ih"]),
        (ry, rg["w_hh"], rg["w_ih"]),
    ):  # fmt: skip
        assert _rel(g, o) <= 0.1 * _rel(g32, o), (
            f"{name}: {_rel(g, o):.2e} vs fp32 {_rel(g32, o):.2e}"
        )
        assert _rel(g, r) < _BF16_BOUND, f"{name}: {_rel(g, r):.2e} from float64"


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "LayerNormLSTM"])
def test_module_step_in_bf16(cls: str) -> None:
    """step() of a precision="bf16" module is its T = 1 eval forward (bf16; the one-step kernel is
    fp32 only) and departs from fp32 by the rounding; a default module steps in fp32."""
    rng = np.random.default_rng(5)
    m = getattr(rnnfast.nn, cls)(4, 24, num_layers=2, seed=3, precision="bf16").eval()
    plain = getattr(rnnfast.nn, cls)(4, 24, num_layers=2, seed=3).eval()
    x = rng.standard_normal((3, 4)).astype(np.float32)
    y, state = m.step(x)
    y_seq, state_seq = m(x[None])
    assert np.array_equal(y, y_seq[0])
    for a_, b_ in zip(_states(state), _states(state_seq)):
        assert np.array_equal(a_, b_)
    y32, _ = plain.step(x)
    err = assert_close(y, y32, 5e-2, f"{cls} step bf16 vs fp32")
    assert err > 1e-5, f"{cls}: step bf16 equals fp32 to {err:.1e}"
    y2, _ = m.step(x, state)  # a second step from a carried state
    assert np.array_equal(y2, m(x[None], state_seq)[0][0])


# --------------------------------------------------------------------------------------------------
# the option: assignment, refusals, config, checkpoints, copies
# --------------------------------------------------------------------------------------------------


def test_module_precision_refusals() -> None:
    m = rnnfast.GRU(3, 4)
    for bad, exc, msg in [
        ("fp16", ValueError, r"precision: expected one of \('fp32', 'bf16'\), got 'fp16'"),
        ("BF16", ValueError, "precision: expected one of"),
        (16, TypeError, "precision: expected one of .* got int"),
        (["bf16"], TypeError, "precision: expected one of .* got list"),
        (np.str_("bf16").encode(), TypeError, "precision: expected one of .* got bytes"),
    ]:
        with pytest.raises(exc, match=msg):
            m.precision = bad
        assert m.precision is None  # a refused assignment changes nothing
        with pytest.raises(exc, match=msg):
            rnnfast.GRU(3, 4, precision=bad)
    with pytest.raises(ValueError, match="precision: 'bf16' needs a float32 module, got a float64"):
        rnnfast.LSTM(3, 4, dtype=np.float64, precision="bf16")
    m64 = rnnfast.LSTM(3, 4, dtype=np.float64, precision="fp32")
    with pytest.raises(ValueError, match="precision: 'bf16' needs a float32 module"):
        m64.precision = "bf16"
    with pytest.raises(
        ValueError, match=r"precision: the projected LSTM \(proj_size=2\) has no bf16"
    ):
        rnnfast.LSTM(3, 4, proj_size=2, precision="bf16")
    assert rnnfast.LSTM(3, 4, proj_size=2, precision="fp32").precision == "fp32"
    for cls in ("MinGRU", "MinLSTM"):
        with pytest.raises(
            ValueError, match=f"precision: the {cls.lower()} cell .* no bf16 kernel"
        ):
            getattr(rnnfast.nn, cls)(3, 4, precision="bf16")
        assert getattr(rnnfast.nn, cls)(3, 4, precision="fp32").config()["precision"] == "fp32"
    with pytest.raises(ValueError, match="precision: the mingru cell"):
        rnnfast.build_model("mingru", 3, 4, 1, precision="bf16")


def test_config_and_copies_keep_precision() -> None:
    import copy
    import pickle

    assert "precision" not in rnnfast.LSTM(3, 4).config()  # unset: configs as before
    m = rnnfast.build_model("lstm_peephole", 3, 8, 2, seed=0, precision="bf16")
    assert m.rnn.config()["precision"] == "bf16"
    again = rnnfast.model_from_config(m.config())
    assert again.rnn.precision == "bf16"
    for twin in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert twin.rnn.precision == "bf16"
    legacy = m.rnn.config()
    legacy.pop("precision")
    assert rnnfast.model_from_config(legacy).precision is None
    for bad, exc in [("fp16", ValueError), (32, TypeError), ({"p": 1}, TypeError)]:
        cfg = m.config()
        cfg["rnn"]["precision"] = bad
        with pytest.raises(exc, match="precision: expected one of"):
            rnnfast.model_from_config(cfg)
    cfg = m.config()
    cfg["rnn"]["dtype"] = "float64"
    with pytest.raises(ValueError, match="precision: 'bf16' needs a float32 module"):
        rnnfast.model_from_config(cfg)


def test_checkpoint_round_trip_and_hostile_precision(tmp_path: Any) -> None:
    import json

    from rnnfast.io import CheckpointError, load, save

    m = rnnfast.build_model("gru", 3, 8, 2, mode="many_to_one", seed=0, precision="bf16")
    x = np.random.default_rng(6).standard_normal((5, 4, 3)).astype(np.float32)
    m.eval()
    want = m(x)
    save(tmp_path / "m.npz", m)
    back = load(tmp_path / "m.npz").build_model()
    assert back.rnn.precision == "bf16"
    back.eval()
    assert np.array_equal(back(x), want)  # same weights, same mode: bitwise
    with np.load(tmp_path / "m.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(arrays.pop("__metadata__").tobytes().decode("utf-8"))

    def write(name: str, h: Any) -> Any:
        blob = np.frombuffer(json.dumps(h).encode("utf-8"), dtype=np.uint8)
        with open(tmp_path / name, "wb") as f:
            np.savez(f, __metadata__=blob, **arrays)
        return tmp_path / name

    old = json.loads(json.dumps(header))
    del old["model"]["config"]["rnn"]["precision"]  # a checkpoint from before the option
    legacy = load(write("old.npz", old)).build_model()
    assert legacy.rnn.precision is None
    legacy.eval()
    assert_close(legacy(x), want, 5e-2, "legacy fp32 vs bf16")
    for bad in ["fp16", 16, None, ["bf16"], {"bf16": 1}, "bf16\x00"]:
        h = json.loads(json.dumps(header))
        h["model"]["config"]["rnn"]["precision"] = bad
        if bad is None:  # None is a valid value: the thread's mode
            assert load(write("none.npz", h)).build_model().rnn.precision is None
            continue
        with pytest.raises(CheckpointError, match="precision: expected one of"):
            load(write("bad.npz", h)).build_model()
    h = json.loads(json.dumps(header))
    for part in ("rnn", "head"):
        h["model"]["config"][part]["dtype"] = "float64"
    with pytest.raises(CheckpointError, match="precision: 'bf16' needs a float32 module"):
        load(write("f64.npz", h)).build_model()


# --------------------------------------------------------------------------------------------------
# truncated-BPTT streams and fit(bptt=...): the streams call the sequence kernels, so they run bf16
# --------------------------------------------------------------------------------------------------


def _chunk_oracle(a: dict, L: int) -> tuple[np.ndarray, list[dict]]:
    """The bf16 oracle of TBPTT(L, L) over a: the full forward's y, and per chunk [s, s+L) the
    gradients of <y, dy> over the chunk from the oracle's state entering s (held constant)."""
    args = (a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"])
    oy, _, _, full = RB.sequence_forward_bf16("lstm", a["x"], None, None, *args)
    grads = []
    for s in range(0, a["x"].shape[0], L):
        _, _, _, c = RB.sequence_forward_bf16(
            "lstm", a["x"][s : s + L], full["hs"][s], full["cs"][s], *args
        )
        grads.append(RB.sequence_backward_bf16(c, a["dy"][s : s + L], None, None))
    return oy, grads


def _module_stream(m: Any, a: dict, L: int) -> tuple[np.ndarray, list[dict]]:
    m.train()
    m.stream_begin(a["x"].shape[1], L, L)
    ys, grads = [], []
    for s in range(0, a["x"].shape[0], L):
        m.zero_grad()
        ys.append(m.stream_forward(a["x"][s : s + L]))
        m.stream_backward(a["dy"][s : s + L])
        grads.append(
            {"w_hh": m.grads["weight_hh_l0"].copy(), "w_ih": m.grads["weight_ih_l0"].copy()}
        )
    m.stream_end()
    return np.concatenate(ys), grads


def test_streams_run_bf16() -> None:
    """TBPTT(4, 4) over 12 steps: the module stream with precision="bf16", the same stream of a
    default module in a bf16 block (bitwise the same) and tbptt_grads in the block follow the bf16
    oracle (10x closer than fp32 does); fp32 streams do not."""
    a = _inputs("lstm", T=12, B=3, I=5, H=40, seed=8)
    L = 4
    oy, og = _chunk_oracle(a, L)
    state = {"weight_ih_l0": a["w_ih"], "weight_hh_l0": a["w_hh"], "bias_ih_l0": a["b_ih"],
             "bias_hh_l0": a["b_hh"]}  # fmt: skip
    mods = {p: rnnfast.LSTM(5, 40, precision=p) for p in ("bf16", "fp32")}
    mods["plain"] = rnnfast.LSTM(5, 40)
    for m in mods.values():
        m.load_state_dict(state)
    y, g = _module_stream(mods["bf16"], a, L)
    y32, g32 = _module_stream(mods["fp32"], a, L)
    with rnnfast.precision("bf16"):
        yb, gb = _module_stream(mods["plain"], a, L)
        params = {k: a[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh")}
        tg = F.tbptt_grads("lstm", a["x"], None, params, a["dy"], L, L)
    assert np.array_equal(y, yb)
    e, e32 = _rel(y, oy), _rel(y32, oy)
    assert e32 > 1e-4, f"fp32 is within {e32:.1e} of the bf16 oracle: no test"
    assert e <= 0.1 * e32, f"stream y: {e:.2e} from the bf16 oracle, fp32 {e32:.2e}"
    for n, want in enumerate(og):
        for k in ("w_hh", "w_ih"):
            assert np.array_equal(g[n][k], gb[n][k]), f"chunk {n} d{k}: module vs block"
            e, e32 = _rel(g[n][k], want[k]), _rel(g32[n][k], want[k])
            assert e <= 0.1 * e32, f"chunk {n} d{k}: {e:.2e} from the oracle, fp32 {e32:.2e}"
            e = _rel(tg[n][k], want[k])
            assert e <= 0.1 * e32, f"tbptt_grads update {n} d{k}: {e:.2e}, fp32 {e32:.2e}"


def _fit_losses(precision: str, module_precision: str | None, bptt: Any) -> list[float]:
    model = rnnfast.SequenceModel(
        rnnfast.nn.LSTM(3, 8, seed=0, precision=module_precision),
        rnnfast.nn.Linear(8, 1, seed=1),
        mode="many_to_many",
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 16, 3)).astype(np.float32)
    y = np.cumsum(x.sum(axis=2, keepdims=True), axis=0).astype(np.float32) * 0.1
    opt = rnnfast.optim.Adam(model.parameters(), lr=1e-2)
    h = rnnfast.fit(
        model, (x, y), rnnfast.MSELoss(), opt, epochs=3, batch_size=8, progress=False, seed=0,
        precision=precision, bptt=bptt,
    )  # fmt: skip
    assert core._get_precision() == "fp32"
    return [r["loss"] for r in h.epochs] if hasattr(h, "epochs") else list(h.history["loss"])


def test_fit_bf16_with_bptt_and_module_precision() -> None:
    """fit(precision="bf16", bptt=...) runs (no longer refused), learns, and is bf16: it differs
    from fp32 by the rounding; a module's precision="bf16" under fit's default is the same run."""
    bf16 = _fit_losses("bf16", None, (4, 4))
    fp32 = _fit_losses("fp32", None, (4, 4))
    assert bf16[-1] < bf16[0]
    assert bf16 != fp32
    assert np.allclose(bf16, fp32, rtol=0.05)
    assert _fit_losses("fp32", "bf16", (4, 4)) == bf16  # the module's mode wins over fit's fp32
    assert _fit_losses("bf16", "fp32", None) == _fit_losses("fp32", None, None)


def test_notice_points_at_the_callers_line() -> None:
    """The once-per-process notice names the user's line, whichever surface asked for bf16."""
    import rnnfast._precision as P

    a = _inputs("gru")
    m = rnnfast.GRU(6, 24, precision="bf16")
    calls = {
        "functional": lambda: _fwd("gru", a, precision="bf16", training=False),
        "block": lambda: rnnfast.precision("bf16").__enter__(),  # restored below
        "module": lambda: m(a["x"]),
    }
    for name, call in calls.items():
        P._warned = False
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            try:
                call()
            finally:
                core._set_precision("fp32")
        got = [(w.filename, w.lineno) for w in rec if issubclass(w.category, Bf16PathWarning)]
        assert len(got) == 1 and got[0][0] == __file__, f"{name}: {got}"
