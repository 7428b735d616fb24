"""bf16 rounding and the bf16 oracle (rnnfast.reference.bf16; issue 18).

* reference.bf16.round_bf16 / bf16_bits against an independent construction (the two bf16
  neighbours compared in float64, ties to even) and bit for bit against the C++ conversion
  (core._bf16_bits: the kernels' vectorised rounding) on random bit patterns of every class, ties,
  subnormals, NaN / Inf and the overflow edge;
* the oracle's structure: with the rounding switched off it is the float64 reference
  (reference.<cell>_forward / _backward) to 1e-12, every output and gradient; with it on it is not.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

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
