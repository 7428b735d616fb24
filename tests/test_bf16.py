"""bf16 rounding and the bf16 oracle (rnnfast.reference.bf16; issue 18).

* reference.bf16.round_bf16 / bf16_bits against an independent construction (the two bf16
  neighbours compared in float64, ties to even) and bit for bit against the C++ conversion
  (core._bf16_bits: the kernels' vectorised rounding) on random bit patterns of every class, ties,
  subnormals, NaN / Inf and the overflow edge;
* the oracle's structure: with the rounding switched off it is the float64 reference
  (reference.<cell>_forward / _backward) to 1e-12, every output and gradient; with it on it is not.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from helpers import cell_inputs_f32
from rnnfast import reference as R
from rnnfast._loader import core
from rnnfast.reference import bf16 as RB
from rnnfast.testing import assert_close

__all__: list[str] = []


def _bits_f32(u: Any) -> np.ndarray:
    return np.asarray(u, dtype=np.uint32).view(np.float32)


def _oracle_bits(x: np.ndarray) -> np.ndarray:
    """Nearest bf16 by comparing the two neighbours in float64; ties to the even one; NaN excluded."""
    u = x.view(np.uint32)
    lo = (u >> 16).astype(np.uint32)
    hi = lo + 1
    flo = np.abs((lo << 16).view(np.float32).astype(np.float64))
    hi_bits = (hi << 16).view(np.float32)
    # Inf inputs (their neighbour is a NaN pattern, Inf - Inf) are taken as they are below
    with np.errstate(invalid="ignore"):
        fhi = np.abs(hi_bits.astype(np.float64))
        fhi = np.where(
            np.isinf(hi_bits), 2.0**128, fhi
        )  # Inf's place in the rounding (IEEE overflow)
        ax = np.abs(x.astype(np.float64))
        elo, ehi = ax - flo, fhi - ax
    pick_hi = (ehi < elo) | ((ehi == elo) & ((lo & 1) == 1))
    out = np.where(pick_hi, hi, lo)
    return np.where(np.isinf(x), u >> 16, out).astype(np.uint16)


def _special_values() -> np.ndarray:
    bits = [
        0x00000000, 0x80000000, 0x00000001, 0x00007FFF, 0x00008000, 0x00008001, 0x00018000,
        0x007FFFFF, 0x007F8000, 0x80018000, 0x3F808000, 0x3F818000, 0x3F80FFFF,
        0x7F7F7FFF, 0x7F7F8000, 0x7F7FFFFF, 0xFF7F8000, 0x7F800000, 0xFF800000,
    ]  # fmt: skip
    return _bits_f32(bits)


def _random_values(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = _bits_f32(rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32))
    ties = _bits_f32(
        (rng.integers(0, 2**16, size=n // 4, dtype=np.uint64) << 16 | 0x8000).astype(np.uint32)
    )
    return np.concatenate([x, ties, _special_values()])


def test_round_bf16_matches_independent_oracle() -> None:
    x = _random_values(400_000, 0)
    x = x[~np.isnan(x)]
    got = RB.bf16_bits(x)
    want = _oracle_bits(x)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, f"{bad.size} mismatches, first x bits {x.view(np.uint32)[bad[0]]:#010x}"
    ties = (x.view(np.uint32) & 0xFFFF) == 0x8000
    assert np.all(got[ties & np.isfinite(x)] & 1 == 0), "a tie rounds to the even neighbour"
    assert RB.bf16_bits(_bits_f32([0x7F7F8000]))[0] == 0x7F80  # overflow tie -> Inf
    assert RB.bf16_bits(_bits_f32([0x7F7F7FFF]))[0] == 0x7F7F  # below the midpoint: finite


def test_round_bf16_nan_inf() -> None:
    nans = _bits_f32([0x7FC00000, 0x7F800001, 0x7F80FFFF, 0xFF800001, 0x7FFFFFFF])
    out = RB.round_bf16(nans)
    assert np.all(np.isnan(out))
    assert np.array_equal(np.signbit(out), np.signbit(nans))
    inf = np.array([np.inf, -np.inf], dtype=np.float32)
    assert np.array_equal(RB.round_bf16(inf), inf)


@pytest.mark.parametrize("seed", [1, 2])
def test_round_bf16_bit_exact_with_the_kernels(seed: int) -> None:
    x = _random_values(300_001, seed)  # an odd length: the vector loop's scalar tail is used too
    got = core._bf16_bits(x)
    want = RB.bf16_bits(x)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, f"{bad.size} mismatches, first x bits {x.view(np.uint32)[bad[0]]:#010x}"
    n = x.size // 2 * 2
    rounded = core._bf16_round(x[:n].reshape(-1, 2))  # any shape; values = the bf16 numbers
    assert rounded.shape == (n // 2, 2)
    assert np.array_equal(rounded.view(np.uint32).ravel() >> 16, want[:n].astype(np.uint32))
    assert np.array_equal(rounded.view(np.uint32).ravel() & 0xFFFF, np.zeros(n, np.uint32))


def test_core_conversion_refuses_bad_input() -> None:
    with pytest.raises(TypeError, match="x: expected dtype float32"):
        core._bf16_bits(np.zeros(3))
    with pytest.raises(TypeError, match="x: expected a numpy array"):
        core._bf16_round([1.0, 2.0])
    with pytest.raises(ValueError, match="precision: expected 'fp32' or 'bf16', got 'fp16'"):
        core._set_precision("fp16")


def _args(
    cell: str, T: int = 5, B: int = 3, I: int = 4, H: int = 6, seed: int = 0
) -> dict[str, Any]:  # noqa: E741
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    rng = np.random.default_rng(seed)
    a = {
        "x": rng.standard_normal((T, B, I)),
        "h0": rng.standard_normal((B, H)) * 0.5,
        "c0": rng.standard_normal((B, H)) * 0.5,
        "w_ih": rng.standard_normal((G * H, I)) * 0.4,
        "w_hh": rng.standard_normal((G * H, H)) * 0.4,
        "b_ih": rng.standard_normal(G * H) * 0.1,
        "b_hh": rng.standard_normal(G * H) * 0.1,
        "dy": rng.standard_normal((T, B, H)),
        "dh_n": rng.standard_normal((B, H)),
        "dc_n": rng.standard_normal((B, H)),
    }
    return a


def _reference(cell: str, a: dict[str, Any]) -> tuple[Any, ...]:
    w = (a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"])
    if cell == "lstm":
        y, h_n, c_n, cache = R.lstm_forward(a["x"], a["h0"], a["c0"], *w)
        g = R.lstm_backward(cache, a["dy"], a["dh_n"], a["dc_n"])
        return y, h_n, c_n, g
    y, h_n, cache = getattr(R, f"{cell}_forward")(a["x"], a["h0"], *w)
    g = getattr(R, f"{cell}_backward")(cache, a["dy"], a["dh_n"])
    return y, h_n, None, g


def _oracle(cell: str, a: dict[str, Any]) -> tuple[Any, ...]:
    y, h_n, c_n, cache = RB.sequence_forward_bf16(
        cell,
        a["x"],
        a["h0"],
        a["c0"] if cell == "lstm" else None,
        a["w_ih"],
        a["w_hh"],
        a["b_ih"],
        a["b_hh"],
    )
    g = RB.sequence_backward_bf16(cache, a["dy"], a["dh_n"], a["dc_n"] if cell == "lstm" else None)
    return y, h_n, c_n, g


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_oracle_without_rounding_is_the_reference(
    cell: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = _args(cell)
    monkeypatch.setattr(RB, "_r", lambda v: np.asarray(v, dtype=np.float64))
    y, h_n, c_n, g = _oracle(cell, a)
    ry, rh, rc, rg = _reference(cell, a)
    assert_close(y, ry, 1e-12, "y")
    assert_close(h_n, rh, 1e-12, "h_n")
    if cell == "lstm":
        assert_close(c_n, rc, 1e-12, "c_n")
    for k in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh"):
        if rg.get(k) is None:
            assert g[k] is None or cell != "lstm"
            continue
        assert_close(g[k], rg[k], 1e-12, f"d{k}")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_oracle_rounds(cell: str) -> None:
    """With rounding the oracle departs from the reference by the bf16 roundoff (2**-8), not less."""
    a = _args(cell, H=32)
    y, _, _, g = _oracle(cell, a)
    ry, _, _, rg = _reference(cell, a)
    err_y = np.max(np.abs(y - ry)) / np.max(np.abs(ry))
    err_w = np.max(np.abs(g["w_hh"] - rg["w_hh"])) / np.max(np.abs(rg["w_hh"]))
    assert 1e-4 < err_y < 0.1, err_y
    assert 1e-4 < err_w < 0.1, err_w


# --------------------------------------------------------------------------------------------------
# the kernels in bf16 mode (rnnfast._precision.precision) against the oracle
# --------------------------------------------------------------------------------------------------

from rnnfast import functional as F  # noqa: E402
from rnnfast._cells import CELLS, get_cell  # noqa: E402
from rnnfast._precision import Bf16PathWarning, check_precision, precision  # noqa: E402
from rnnfast.testing import call_backward, call_forward  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet_notice() -> Any:
    """The once-per-process notice is tested on its own; the other tests ignore it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Bf16PathWarning)
        yield


def _f32(a: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if v is None else np.asarray(v, dtype=np.float32)) for k, v in a.items()}


def _kernel(cell: str, a: dict[str, Any], mode: str) -> tuple[Any, ...]:
    with precision(mode):
        y, h_n, c_n, cache = call_forward(F, cell, a)
        g = call_backward(F, cell, cache, a["dy"], a["dh_n"], a.get("dc_n"))
    return y, h_n, c_n, g


def _agree(got: Any, want: Any, fp32: Any, name: str) -> None:
    """got (bf16 kernel) vs want (float64 oracle on the rounded operands), measured against fp32
    (the float32 kernel, which differs from the oracle by every bf16 rounding).

    Exact agreement is not to be had over several steps: a float32 state that differs from its
    float64 value in the last bits can round to the other bf16 neighbour (a "flip", for ~1e-4 of
    the roundings), and that one operand then differs by one bf16 ulp from the next step on. A flip
    is one rounding in B*H, where fp32 differs in all of them: so the kernel must sit 20x closer
    to the oracle than fp32 does in RMS, and 2x closer at the worst entry.
    """
    want = np.asarray(want, dtype=np.float64)
    d = np.asarray(got, dtype=np.float64) - want
    d32 = np.asarray(fp32, dtype=np.float64) - want
    rms, rms32 = float(np.sqrt(np.mean(d * d))), float(np.sqrt(np.mean(d32 * d32)))
    scale = max(float(np.max(np.abs(want))), 1e-30)
    assert rms32 > 1e-5 * scale, (
        f"{name}: fp32 is within {rms32 / scale:.1e} of the oracle: no test"
    )
    assert rms <= 0.15 * rms32, (
        f"{name}: RMS error {rms / scale:.2e} vs fp32's {rms32 / scale:.2e} (rel.)"
    )
    assert float(np.max(np.abs(d))) <= float(np.max(np.abs(d32))), (
        f"{name}: max error {np.max(np.abs(d)) / scale:.2e} vs fp32's {np.max(np.abs(d32)) / scale:.2e}"
    )


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize(("T", "B", "I", "H"), [(6, 3, 5, 64), (4, 1, 7, 37), (3, 5, 16, 130)])
def test_kernels_match_the_bf16_oracle(cell: str, T: int, B: int, I: int, H: int) -> None:  # noqa: E741
    a = _f32(_args(cell, T, B, I, H, seed=T + H))
    a["w_hh"] *= np.float32(2.0 / np.sqrt(H))  # keep the recurrence away from saturation
    if cell != "lstm":
        a.pop("c0"), a.pop("dc_n")
    y, h_n, c_n, g = _kernel(cell, a, "bf16")
    y32, h32, c32, g32 = _kernel(cell, a, "fp32")
    oy, oh, oc, cache = RB.sequence_forward_bf16(
        cell, a["x"], a["h0"], a.get("c0"), a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"]
    )
    og = RB.sequence_backward_bf16(cache, a["dy"], a["dh_n"], a.get("dc_n"))
    assert y.dtype == np.float32 and g["w_hh"].dtype == np.float32
    _agree(y, oy, y32, "y")
    _agree(h_n, oh, h32, "h_n")
    if cell == "lstm":
        _agree(c_n, oc, c32, "c_n")
    for k in ("x", "h0", "w_ih", "w_hh") + (("c0",) if cell == "lstm" else ()):
        _agree(g[k], og[k], g32[k], f"d{k}")
    for k in ("b_ih", "b_hh"):  # sums of fp32 dgates: bf16 enters only through the recurrence
        _agree(g[k], og[k], g32[k], f"d{k}")
    # one step from a state that is bf16 already: nothing can flip, float32 agreement everywhere
    one = {k: (v[:1] if k in ("x", "dy") else v) for k, v in a.items()}
    one["h0"] = RB.round_bf16(one["h0"])
    y1, h1, c1, _ = _kernel(cell, one, "bf16")
    oy1, oh1, oc1, _ = RB.sequence_forward_bf16(
        cell, one["x"], one["h0"], one.get("c0"), a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"]
    )
    assert_close(y1, oy1, 2e-6, "T=1 y")
    if cell == "lstm":
        assert_close(c1, oc1, 2e-6, "T=1 c_n")


def _cell_inputs(cell: str, T: int, B: int, I: int, H: int, seed: int) -> dict[str, Any]:  # noqa: E741
    return cell_inputs_f32(cell, T, B, I, H, seed)


@pytest.mark.parametrize(
    "cell", [c.name for c in CELLS.values()] if isinstance(CELLS, dict) else [c.name for c in CELLS]
)
def test_every_cell_runs_bf16(cell: str) -> None:
    """Every registered cell: bf16 differs from fp32 by the bf16 roundoff (it is applied), not more;
    with T = 1 and operands that are bf16 values already, a plain cell's forward is the fp32 one."""
    a = _cell_inputs(cell, 5, 3, 6, 24, seed=7)
    y, h_n, _, g = _kernel(cell, a, "bf16")
    y32, _, _, g32 = _kernel(cell, a, "fp32")
    for name, got, ref in [
        ("y", y, y32),
        ("dw_hh", g["w_hh"], g32["w_hh"]),
        ("dx", g["x"], g32["x"]),
    ]:
        err = assert_close(got, ref, 5e-2, f"{name} bf16 vs fp32")
        assert err > 1e-5, f"{name}: bf16 equals fp32 to {err:.1e}: no rounding happened"
    b = _cell_inputs(cell, 1, 3, 6, 24, seed=8)
    for k in ["x", "w_ih", "w_hh", *get_cell(cell).state_names]:
        b[k] = RB.round_bf16(b[k])
    two_phase = (
        cell == "gru_reset_before"
    )  # its second product takes r * h_{t-1}, rounded in the kernel
    y1, _, _, _ = _kernel(cell, b, "bf16")
    y1_32, _, _, _ = _kernel(cell, b, "fp32")
    if not two_phase:
        assert_close(y1, y1_32, 1e-6, "T=1 y on bf16 operands")


def test_float64_ignores_bf16_and_mode_is_restored() -> None:
    a = _args("lstm")
    with precision("bf16") as p:
        assert p == "bf16" and core._get_precision() == "bf16"
        y, *_ = call_forward(F, "lstm", a)
    assert core._get_precision() == "fp32"
    y64, *_ = call_forward(F, "lstm", a)
    assert np.array_equal(y, y64)  # float64 calls run float64 whatever the mode
    with pytest.raises(RuntimeError, match="boom"):
        with precision("bf16"):
            raise RuntimeError("boom")
    assert core._get_precision() == "fp32"


def test_mode_is_per_thread() -> None:
    import threading

    seen: list[str] = []
    with precision("bf16"):
        t = threading.Thread(target=lambda: seen.append(core._get_precision()))
        t.start()
        t.join()
    assert seen == ["fp32"]


def test_check_precision_and_notice() -> None:
    assert check_precision("fp32") == "fp32"
    with pytest.raises(
        ValueError, match=r"precision: expected one of \('fp32', 'bf16'\), got 'fp16'"
    ):
        check_precision("fp16")
    with pytest.raises(TypeError, match="precision: expected one of .* got int"):
        check_precision(16)
    import rnnfast._precision as P

    P._warned = False
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with precision("bf16"):
            pass
        with precision("bf16"):
            pass
    msgs = [str(w.message) for w in rec if issubclass(w.category, Bf16PathWarning)]
    assert len(msgs) == 1 and "portable path" in msgs[0] and "AVX512_BF16" in msgs[0], msgs


# --------------------------------------------------------------------------------------------------
# fit, run_task and the CLI
# --------------------------------------------------------------------------------------------------


def _tiny_model(dtype: Any = np.float32) -> Any:
    import rnnfast

    return rnnfast.SequenceModel(
        rnnfast.nn.LSTM(3, 8, dtype=dtype, seed=0),
        rnnfast.nn.Linear(8, 1, dtype=dtype, seed=1),
        mode="many_to_one",
    )


def _tiny_data(dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 16, 3)).astype(dtype)
    return x, x.sum(axis=(0, 2))[:, None].astype(dtype) * 0.1


def test_fit_bf16_trains_and_differs_from_fp32() -> None:
    import rnnfast

    losses = {}
    for p in ("fp32", "bf16"):
        model = _tiny_model()
        opt = rnnfast.optim.Adam(model.parameters(), lr=1e-2)
        h = rnnfast.fit(
            model, _tiny_data(), rnnfast.MSELoss(), opt, epochs=3, batch_size=8,
            progress=False, seed=0, precision=p,
        )  # fmt: skip
        losses[p] = (
            [r["loss"] for r in h.epochs] if hasattr(h, "epochs") else list(h.history["loss"])
        )
        assert core._get_precision() == "fp32"  # restored after fit
    assert losses["bf16"][-1] < losses["bf16"][0]  # it learns
    assert losses["bf16"] != losses["fp32"]  # and ran in bf16
    assert np.allclose(losses["bf16"], losses["fp32"], rtol=0.05)


def test_fit_bf16_refusals() -> None:
    import rnnfast

    model = _tiny_model(np.float64)
    opt = rnnfast.optim.Adam(model.parameters(), lr=1e-2)
    with pytest.raises(ValueError, match="precision: 'bf16' needs a float32 model, got float64"):
        rnnfast.fit(model, _tiny_data(np.float64), rnnfast.MSELoss(), opt, epochs=1, batch_size=8,
                    progress=False, precision="bf16")  # fmt: skip
    with pytest.raises(ValueError, match="precision: expected one of"):
        rnnfast.fit(model, _tiny_data(np.float64), rnnfast.MSELoss(), opt, epochs=1, batch_size=8,
                    progress=False, precision="fp16")  # fmt: skip


def test_cli_precision(capsys: pytest.CaptureFixture[str]) -> None:
    from rnnfast.cli import main

    args = ["train", "--task", "sine", "--hidden", "4", "--seq-len", "8", "--epochs", "1",
            "--n-train", "32", "--no-progress", "--precision", "bf16"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "val_loss" in out or "epoch 1/1" in out
    with pytest.raises(SystemExit):
        main([*args[:-1], "fp16"])
