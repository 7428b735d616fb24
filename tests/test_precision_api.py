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
    spec = get_cell(cell)
    rng = np.random.default_rng(seed)
    G = spec.gates
    a: dict[str, Any] = {
        "x": rng.standard_normal((T, B, I)),
        "w_ih": rng.standard_normal((G * H, I)) * 0.4,
        "w_hh": rng.standard_normal((G * H, H)) * (1.0 / np.sqrt(H)),
        "b_ih": rng.standard_normal(G * H) * 0.1,
        "b_hh": rng.standard_normal(G * H) * 0.1,
        "dy": rng.standard_normal((T, B, H)),
        "dh_n": rng.standard_normal((B, H)),
        "dc_n": rng.standard_normal((B, H)) if spec.has_cell_state else None,
    }
    for n in spec.state_names:
        a[n] = rng.standard_normal((B, H)) * 0.5
    for name, per_unit in spec.extra_params:
        a[name] = 1.0 + 0.2 * rng.standard_normal(per_unit * H)
    return {k: (None if v is None else np.asarray(v, dtype=np.float32)) for k, v in a.items()}


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
