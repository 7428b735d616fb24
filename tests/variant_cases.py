"""The variant oracles of rnnfast.reference (issue 14) as a table the tests iterate over.

Import from a test file as ``from variant_cases import CASES, forward, ...`` (pytest puts tests/ on
sys.path). Each :class:`Case` names one oracle (``<name>_forward`` / ``<name>_backward``) with its
state and parameter argument names in call order, and, for the regularisers, how its masks are
drawn: "train" (zoneout Bernoulli(0.3) / 0.2 samples, recurrent dropout {0, 1/(1-0.25)} per
sequence) or "eval" (zoneout = the scalar rates, dropout None).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnfast import reference as ref

__all__ = [
    "CASES",
    "CASE_IDS",
    "Case",
    "P_PROJ",
    "backward",
    "case",
    "forward",
    "grad_keys",
    "loss",
    "make_inputs",
    "time_slice",
]

P_PROJ = 2  # projection size of lstm_proj in the shared inputs
ZONEOUT_H, ZONEOUT_C, DROPOUT = 0.3, 0.2, 0.25


@dataclass(frozen=True)
class Case:
    """One variant oracle: call order of its arrays and how its inputs are drawn."""

    name: str  # "<name>_forward" / "<name>_backward" in rnnfast.reference
    states: tuple[str, ...]  # ("h0", "c0") or ("h0",)
    params: tuple[str, ...]  # positional parameters after the states, in order
    biases: tuple[str, ...]  # the parameters that are None without bias
    masks: tuple[str, ...] = ()  # keyword masks (regularisers)
    mask_mode: str = ""  # "train" or "eval" for the regularisers

    @property
    def id(self) -> str:
        return f"{self.name}-{self.mask_mode}" if self.mask_mode else self.name

    @property
    def gates(self) -> int:
        return 4 if self.name.startswith("lstm") else 3

    def out_width(self, hidden: int) -> int:
        """Width of y and h: P for the projection LSTM, else H."""
        return P_PROJ if self.name == "lstm_proj" else hidden

    def shapes(self, n_in: int, hidden: int) -> dict[str, tuple[int, ...]]:
        """Parameter name -> shape."""
        gh = self.gates * hidden
        width = self.out_width(hidden)
        table = {
            "w_ih": (gh, n_in),
            "w_hh": (gh, width),
            "b_ih": (gh,),
            "b_hh": (gh,),
            "w_peep": (3 * hidden,),
            "w_hr": (P_PROJ, hidden),
            "gamma_ih": (gh,),
            "gamma_hh": (gh,),
            "gamma_c": (hidden,),
            "beta_c": (hidden,),
        }
        return {p: table[p] for p in self.params}


_LSTM = ("w_ih", "w_hh", "b_ih", "b_hh")
_BIAS2 = ("b_ih", "b_hh")
CASES: tuple[Case, ...] = (
    Case("lstm_peephole", ("h0", "c0"), (*_LSTM, "w_peep"), _BIAS2),
    Case("lstm_proj", ("h0", "c0"), (*_LSTM, "w_hr"), _BIAS2),
    Case(
        "lstm_layernorm",
        ("h0", "c0"),
        (*_LSTM, "gamma_ih", "gamma_hh", "gamma_c", "beta_c"),
        _BIAS2,
    ),
    Case("gru_reset_before", ("h0",), _LSTM, _BIAS2),
    Case("gru_layernorm", ("h0",), (*_LSTM, "gamma_ih", "gamma_hh"), _BIAS2),
    Case(
        "lstm_regularised",
        ("h0", "c0"),
        _LSTM,
        _BIAS2,
        ("zoneout_h", "zoneout_c", "dropout_h"),
        "train",
    ),
    Case("lstm_regularised", ("h0", "c0"), _LSTM, _BIAS2, ("zoneout_h", "zoneout_c"), "eval"),
    Case("gru_regularised", ("h0",), _LSTM, _BIAS2, ("zoneout_h", "dropout_h"), "train"),
    Case("gru_regularised", ("h0",), _LSTM, _BIAS2, ("zoneout_h",), "eval"),
)
CASE_IDS = [c.id for c in CASES]


def case(case_id: str) -> Case:
    """The case of id ``case_id`` (e.g. "lstm_peephole", "gru_regularised-train")."""
    return CASES[CASE_IDS.index(case_id)]


def make_inputs(
    c: Case,
    t_steps: int,
    batch: int,
    n_in: int,
    hidden: int,
    *,
    bias: bool = True,
    seed: int = 0,
    scale: float = 0.5,
    dtype: Any = np.float64,
) -> dict[str, Any]:
    """Random inputs of one call: x, the states, the parameters (None biases without bias), the
    masks (arrays, scalars or absent per ``c.mask_mode``) and the seeds dy, dh_n (, dc_n).

    Weights, biases, states, beta ~ U(-scale, scale); gains gamma ~ 1 + U(-scale, scale) (away from
    0, where LN would hide its input); x, dy, dh_n, dc_n ~ N(0, 1).
    """
    rng = np.random.default_rng(seed)
    width = c.out_width(hidden)

    def u(*shape: int) -> np.ndarray:
        return rng.uniform(-scale, scale, size=shape).astype(dtype)

    inp: dict[str, Any] = {"x": rng.standard_normal((t_steps, batch, n_in)).astype(dtype)}
    inp["h0"] = u(batch, width)
    if "c0" in c.states:
        inp["c0"] = u(batch, hidden)
    for name, shape in c.shapes(n_in, hidden).items():
        if name in c.biases and not bias:
            inp[name] = None
        elif name.startswith("gamma"):
            inp[name] = (1.0 + u(*shape)).astype(dtype)
        else:
            inp[name] = u(*shape)
    if c.mask_mode == "train":
        full = (t_steps, batch, hidden)
        inp["zoneout_h"] = (rng.random(full) < ZONEOUT_H).astype(dtype)
        if "zoneout_c" in c.masks:
            inp["zoneout_c"] = (rng.random(full) < ZONEOUT_C).astype(dtype)
        keep = rng.random((batch, hidden)) >= DROPOUT
        inp["dropout_h"] = (keep / (1.0 - DROPOUT)).astype(dtype)
    elif c.mask_mode == "eval":
        inp["zoneout_h"] = ZONEOUT_H
        if "zoneout_c" in c.masks:
            inp["zoneout_c"] = ZONEOUT_C
    inp["dy"] = rng.standard_normal((t_steps, batch, width)).astype(dtype)
    inp["dh_n"] = rng.standard_normal((batch, width)).astype(dtype)
    if "c0" in c.states:
        inp["dc_n"] = rng.standard_normal((batch, hidden)).astype(dtype)
    return inp


def forward(
    c: Case, inp: Mapping[str, Any], lengths: Any = None, training: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, Any]:
    """Call ``ref.<name>_forward`` with the arrays of ``inp``; (y, h_n, c_n or None, cache)."""
    fwd = getattr(ref, f"{c.name}_forward")
    args = [inp["x"], *(inp[s] for s in c.states), *(inp[p] for p in c.params)]
    kw = {m: inp[m] for m in c.masks}
    out = fwd(*args, lengths=lengths, training=training, **kw)
    if len(c.states) == 2:
        return out
    y, h_n, cache = out
    return y, h_n, None, cache


def backward(c: Case, cache: Any, inp: Mapping[str, Any]) -> dict[str, Any]:
    """Call ``ref.<name>_backward(cache, dy, dh_n[, dc_n])`` with the seeds of ``inp``."""
    seeds = [inp["dy"], inp["dh_n"]] + ([inp["dc_n"]] if "c0" in c.states else [])
    return dict(getattr(ref, f"{c.name}_backward")(cache, *seeds))


def loss(c: Case, y: Any, h_n: Any, c_n: Any, inp: Mapping[str, Any]) -> float:
    """L = <y, dy> + <h_n, dh_n> (+ <c_n, dc_n>): the scalar whose gradient backward computes."""
    total = float(np.sum(y * inp["dy"]) + np.sum(h_n * inp["dh_n"]))
    if "c0" in c.states:
        total += float(np.sum(c_n * inp["dc_n"]))
    return total


def grad_keys(c: Case) -> tuple[str, ...]:
    """The keys of ``<name>_backward``'s dict but dh_all: x, the states, the parameters."""
    return ("x", *c.states, *c.params)


def time_slice(inp: Mapping[str, Any], start: int, stop: int | None) -> dict[str, Any]:
    """``inp`` restricted to steps [start, stop): x, dy and time-indexed (T, B, H) masks."""
    out = dict(inp)
    for key in ("x", "dy", "zoneout_h", "zoneout_c"):
        v = inp.get(key)
        if isinstance(v, np.ndarray) and v.ndim == 3:
            out[key] = v[start:stop]
    return out
