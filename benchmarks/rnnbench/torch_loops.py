"""The PyTorch constructions the new cells are measured against: what a user writes today.

PyTorch has no peephole LSTM, no GRU with the reset gate before the product (Keras's
reset_after=False), no layer-normalised LSTM/GRU (issues #6760/#7032), no zoneout and no recurrent
(variational) dropout, so a user writes these as a loop over time with autograd. Each module here
is that loop, an ``nn.Module`` whose ``forward(x)`` returns ``(y, state)`` like ``nn.LSTM`` (x: (T, B,
I) float32, zero initial state), so one timing function serves them and the built-in modules alike.
Parameter names are the functional API's (``w_ih``, ``w_peep``) or rnnfast's state_dict names
(``weight_ih_l0``, ``gamma_ih_l0``; the layer-norm loops, so an rnnfast model's weights load into
them); :func:`oracle_name` maps either to the name of the float64 oracle's gradient.

* peephole LSTM (Gers & Schmidhuber 2000): i, f see c_{t-1}, o sees c_t, diagonal weights;
* reset-before GRU: n = tanh(W_in x + b_in + W_hn (r * h) + b_hn);
* layer-normalised LSTM / GRU (haste's LayerNormLSTM): LN(W_ih x) and LN(W_hh h) separately with
  learnt gains, then the biases; the LSTM also normalises c_t (gain and shift) before the tanh.
  ``torch.nn.functional.linear`` / ``layer_norm`` (nn.LSTMCell / nn.GRUCell add their biases before
  any normalisation could be applied, so they cannot build this cell);
* LSTM with zoneout and recurrent dropout: ``nn.LSTMCell`` on ``(d * h_{t-1}, c_{t-1})`` and the
  zoneout blend of (h, c) with the previous state, masks fixed per call;
* GRU with zoneout and recurrent dropout: a hand-written step (``nn.GRUCell`` would also use the
  dropped state in ``z * h_{t-1}``, which is not the cell of :mod:`rnnfast.reference.regularisers`).

``build(kind, p)`` returns one of them (or ``nn.LSTM`` / ``nn.GRU`` / ``nn.LSTM(proj_size=P)``) with the
weights of the input dict ``p`` (:func:`rnnbench.variants.variant_inputs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as tf

__all__ = [
    "KINDS",
    "LayerNormLoop",
    "PeepholeLoop",
    "ResetBeforeLoop",
    "ZoneoutGRULoop",
    "ZoneoutLSTMLoop",
    "build",
    "oracle_name",
]

LN_EPS = 1e-5  # rnnfast.reference.LN_EPS (not imported: this module must not need rnnfast)


def oracle_name(param: str) -> str:
    """'cell.weight_ih' / 'weight_hr_l0' / 'gamma_c_l0' / 'w_peep' -> 'w_ih' / 'w_hr' / 'gamma_c' / 'w_peep'."""
    last = param.rsplit(".", 1)[-1].removesuffix("_l0")
    return last.replace("weight_", "w_").replace("bias_", "b_")


def _param(shape: tuple[int, ...]) -> nn.Parameter:
    return nn.Parameter(torch.zeros(shape))


class PeepholeLoop(nn.Module):
    """The peephole LSTM as a loop (W_ih x for every step in one product, then one step at a time)."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        g = 4 * hidden_size
        self.w_ih, self.w_hh = _param((g, input_size)), _param((g, hidden_size))
        self.b_ih, self.b_hh, self.w_peep = _param((g,)), _param((g,)), _param((3 * hidden_size,))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        h = x.new_zeros(x.shape[1], self.w_hh.shape[1])
        c = h
        p_i, p_f, p_o = self.w_peep.chunk(3)
        gx = tf.linear(x, self.w_ih, self.b_ih + self.b_hh)
        ys = []
        for s in range(x.shape[0]):
            ai, af, ag, ao = (gx[s] + h @ self.w_hh.T).chunk(4, dim=1)
            i = torch.sigmoid(ai + p_i * c)
            f = torch.sigmoid(af + p_f * c)
            c = f * c + i * torch.tanh(ag)
            h = torch.sigmoid(ao + p_o * c) * torch.tanh(c)
            ys.append(h)
        return torch.stack(ys), (h[None], c[None])


class ResetBeforeLoop(nn.Module):
    """The reset-before GRU as a loop: the reset gate multiplies h_{t-1} before W_hn."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        g = 3 * hidden_size
        self.w_ih, self.w_hh = _param((g, input_size)), _param((g, hidden_size))
        self.b_ih, self.b_hh = _param((g,)), _param((g,))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        H = self.w_hh.shape[1]
        h = x.new_zeros(x.shape[1], H)
        gx = tf.linear(x, self.w_ih, self.b_ih + self.b_hh)  # b_hn sits outside r here
        ys = []
        for s in range(x.shape[0]):
            rz = torch.sigmoid(gx[s, :, : 2 * H] + h @ self.w_hh[: 2 * H].T)
            r, z = rz[:, :H], rz[:, H:]
            n = torch.tanh(gx[s, :, 2 * H :] + (r * h) @ self.w_hh[2 * H :].T)
            h = (1 - z) * n + z * h
            ys.append(h)
        return torch.stack(ys), h[None]


class LayerNormLoop(nn.Module):
    """Layer-normalised LSTM (``lstm=True``) or GRU with rnnfast's state_dict names (one layer)."""

    def __init__(self, input_size: int, hidden_size: int, lstm: bool = True) -> None:
        super().__init__()
        g = (4 if lstm else 3) * hidden_size
        self.lstm = lstm
        self.weight_ih_l0, self.weight_hh_l0 = _param((g, input_size)), _param((g, hidden_size))
        self.bias_ih_l0, self.bias_hh_l0 = _param((g,)), _param((g,))
        self.gamma_ih_l0, self.gamma_hh_l0 = _param((g,)), _param((g,))
        if lstm:
            self.gamma_c_l0, self.beta_c_l0 = _param((hidden_size,)), _param((hidden_size,))

    def _ln(self, a: torch.Tensor, gamma: torch.Tensor, beta: Any = None) -> torch.Tensor:
        return tf.layer_norm(a, (a.shape[-1],), gamma, beta, LN_EPS)

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        H = self.weight_hh_l0.shape[1]
        h = x.new_zeros(x.shape[1], H)
        c = h
        # every step's LN(W_ih x_t) + b_ih at once
        gi_all = self._ln(tf.linear(x, self.weight_ih_l0), self.gamma_ih_l0) + self.bias_ih_l0
        ys = []
        for s in range(x.shape[0]):
            gi = gi_all[s]
            gh = self._ln(h @ self.weight_hh_l0.T, self.gamma_hh_l0) + self.bias_hh_l0
            if self.lstm:
                i, f, g, o = (gi + gh).chunk(4, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(self._ln(c, self.gamma_c_l0, self.beta_c_l0))
            else:
                r = torch.sigmoid(gi[:, :H] + gh[:, :H])
                z = torch.sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
                n = torch.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
                h = (1 - z) * n + z * h
            ys.append(h)
        return torch.stack(ys), ((h[None], c[None]) if self.lstm else h[None])


class ZoneoutLSTMLoop(nn.Module):
    """nn.LSTMCell with recurrent dropout on the h it reads and zoneout on the (h, c) it writes.

    Masks as in :mod:`rnnfast.reference.regularisers`: ``zoneout_h``, ``zoneout_c`` (T, B, H), 1 = keep
    the previous value; ``dropout_h`` (B, H), values {0, 1/(1-p)}, one per sequence.
    """

    def __init__(self, input_size: int, hidden_size: int, masks: Mapping[str, np.ndarray]) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(input_size, hidden_size)
        for k in ("zoneout_h", "zoneout_c", "dropout_h"):
            self.register_buffer(k, torch.from_numpy(np.ascontiguousarray(masks[k])))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        h = x.new_zeros(x.shape[1], self.cell.hidden_size)
        c = h
        ys = []
        for s in range(x.shape[0]):
            h_new, c_new = self.cell(x[s], (self.dropout_h * h, c))
            mh, mc = self.zoneout_h[s], self.zoneout_c[s]
            c = mc * c + (1 - mc) * c_new
            h = mh * h + (1 - mh) * h_new
            ys.append(h)
        return torch.stack(ys), (h[None], c[None])


class ZoneoutGRULoop(nn.Module):
    """PyTorch's GRU step written out, W_hh reading d * h_{t-1}, zoneout on the h it writes."""

    def __init__(self, input_size: int, hidden_size: int, masks: Mapping[str, np.ndarray]) -> None:
        super().__init__()
        g = 3 * hidden_size
        self.w_ih, self.w_hh = _param((g, input_size)), _param((g, hidden_size))
        self.b_ih, self.b_hh = _param((g,)), _param((g,))
        for k in ("zoneout_h", "dropout_h"):
            self.register_buffer(k, torch.from_numpy(np.ascontiguousarray(masks[k])))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        H = self.w_hh.shape[1]
        h = x.new_zeros(x.shape[1], H)
        gi_all = tf.linear(x, self.w_ih, self.b_ih)
        ys = []
        for s in range(x.shape[0]):
            gi, gh = gi_all[s], tf.linear(self.dropout_h * h, self.w_hh, self.b_hh)
            r = torch.sigmoid(gi[:, :H] + gh[:, :H])
            z = torch.sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
            n = torch.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
            m = self.zoneout_h[s]
            h = m * h + (1 - m) * ((1 - z) * n + z * h)
            ys.append(h)
        return torch.stack(ys), h[None]


# kind -> (what the report calls it, {parameter name: input key})
_LSTM_W = {"w_ih": "w_ih", "w_hh": "w_hh", "b_ih": "b_ih", "b_hh": "b_hh"}
_GRU_W = {"w_ih": "g_ih", "w_hh": "g_hh", "b_ih": "gb_ih", "b_hh": "gb_hh"}


def _named(names: Mapping[str, str], fmt: str) -> dict[str, str]:
    """{'w_ih': key} -> {fmt.format('ih', 'weight'): key}: the same weights, another naming."""
    full = {"w": "weight", "b": "bias"}
    return {fmt.format(k[2:], full[k[0]]): v for k, v in names.items()}


KINDS: dict[str, tuple[str, dict[str, str]]] = {
    "peephole": ("torch peephole loop", {**_LSTM_W, "w_peep": "w_peep"}),
    "reset_before": ("torch reset-before GRU loop", _GRU_W),
    "ln_lstm": (
        "torch LayerNorm-LSTM loop",
        {
            **_named(_LSTM_W, "{1}_{0}_l0"),
            "gamma_ih_l0": "ln_gamma_ih",
            "gamma_hh_l0": "ln_gamma_hh",
            "gamma_c_l0": "ln_gamma_c",
            "beta_c_l0": "ln_beta_c",
        },
    ),  # fmt: skip
    "ln_gru": (
        "torch LayerNorm-GRU loop",
        {
            **_named(_GRU_W, "{1}_{0}_l0"),
            "gamma_ih_l0": "lng_gamma_ih",
            "gamma_hh_l0": "lng_gamma_hh",
        },
    ),  # fmt: skip
    "lstm_proj": (
        "torch nn.LSTM(proj_size)",
        {**_named(_LSTM_W, "{1}_{0}_l0"), "weight_hh_l0": "pw_hh", "weight_hr_l0": "w_hr"},
    ),
    "lstm": ("torch nn.LSTM", _named(_LSTM_W, "{1}_{0}_l0")),
    "gru": ("torch nn.GRU", _named(_GRU_W, "{1}_{0}_l0")),
    "zoneout_lstm": ("torch LSTMCell loop + masks", _named(_LSTM_W, "cell.{1}_{0}")),
    "zoneout_gru": ("torch GRU-step loop + masks", _GRU_W),
}


def build(kind: str, p: Mapping[str, np.ndarray]) -> nn.Module:
    """The PyTorch construction ``kind`` (a key of :data:`KINDS`), float32, with p's weights."""
    H = p["w_hh"].shape[1]
    I = p["x"].shape[2]  # noqa: E741 - the input size, as everywhere in rnnfast
    mod: nn.Module
    if kind == "peephole":
        mod = PeepholeLoop(I, H)
    elif kind == "reset_before":
        mod = ResetBeforeLoop(I, H)
    elif kind in ("ln_lstm", "ln_gru"):
        mod = LayerNormLoop(I, H, lstm=kind == "ln_lstm")
    elif kind == "lstm_proj":
        mod = nn.LSTM(I, H, proj_size=p["w_hr"].shape[0])
    elif kind in ("lstm", "gru"):
        mod = (nn.LSTM if kind == "lstm" else nn.GRU)(I, H)
    elif kind == "zoneout_lstm":
        mod = ZoneoutLSTMLoop(I, H, p)
    elif kind == "zoneout_gru":
        mod = ZoneoutGRULoop(I, H, p)
    else:
        raise ValueError(f"kind: expected one of {sorted(KINDS)}, got {kind!r}")
    params = dict(mod.named_parameters())
    with torch.no_grad():
        for name, key in KINDS[kind][1].items():
            params[name].copy_(torch.from_numpy(np.ascontiguousarray(p[key])))
    return mod
