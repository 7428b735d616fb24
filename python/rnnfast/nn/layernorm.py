"""Layer-normalised recurrent stacks: :class:`LayerNormLSTM` and :class:`LayerNormGRU`.

Ba et al. 2016 as in haste's ``LayerNormLSTM`` / ``LayerNormGRU`` (the input and recurrent
pre-activations normalised separately, the biases after the normalisations). Both run the fused
kernels of ``cells/lstm_layernorm.hpp`` and ``cells/gru_layernorm.hpp`` through :class:`RNNBase`:
same arguments, parameter names, state layout, streaming, checkpoints and step as :class:`LSTM` /
:class:`GRU`, plus the layer-norm gains (and the cell-state shift of the LSTM) per layer and
direction, initialised to 1 (gains) and 0 (shift) whatever ``init`` (PyTorch's ``LayerNorm``
init). LN(v; gamma, beta) = gamma * (v - mean(v)) / sqrt(var(v) + 1e-5) + beta over the row,
biased variance. PyTorch has neither module.
"""

from __future__ import annotations

from .module import _PUBLIC_MODULE
from .rnn import RNNBase, _tanh_only_init

__all__ = ["LayerNormGRU", "LayerNormLSTM"]


class LayerNormLSTM(RNNBase):
    """Layer-normalised LSTM stack (haste's ``LayerNormLSTM``; gates i, f, g, o)::

        a   = LN(W_ih x_t; gamma_ih) + LN(W_hh h_{t-1}; gamma_hh) + b_ih + b_hh    (LNs over 4H)
        i, f, g, o = sigmoid(a_i), sigmoid(a_f), tanh(a_g), sigmoid(a_o)
        c_t = f*c_{t-1} + i*g                      (the state carried: c_t, unnormalised)
        h_t = o * tanh(LN(c_t; gamma_c, beta_c))   (LN over H)

    Same arguments, shapes and state ``(h, c)`` as :class:`LSTM`, plus per layer and direction
    ``gamma_ih_l{k}``, ``gamma_hh_l{k}`` (4H,), ``gamma_c_l{k}``, ``beta_c_l{k}`` (H,) (gains 1,
    shift 0 at init). haste's names: ``gamma[0]`` = gamma_ih, ``gamma[1]`` = gamma_hh, ``gamma_h``
    = gamma_c, ``beta_h`` = beta_c, ``bias`` = b_ih + b_hh (gate blocks i, g, f, o there).
    """

    __module__ = _PUBLIC_MODULE
    _cell = "lstm_layernorm"
    __init__ = _tanh_only_init


class LayerNormGRU(RNNBase):
    """Layer-normalised GRU stack (haste's ``LayerNormGRU``; PyTorch's GRU, gates r, z, n)::

        gi = LN(W_ih x_t; gamma_ih) + b_ih        gh = LN(W_hh h_{t-1}; gamma_hh) + b_hh  (over 3H)
        r = sigmoid(gi_r + gh_r), z = sigmoid(gi_z + gh_z), n = tanh(gi_n + r*gh_n)
        h_t = (1 - z)*n + z*h_{t-1}

    Same arguments, shapes and state as :class:`GRU`, plus ``gamma_ih_l{k}``, ``gamma_hh_l{k}``
    (3H,) per layer and direction (1 at init). haste's names: ``gamma[0]`` = gamma_ih,
    ``gamma[1]`` = gamma_hh, ``bias`` = b_ih, ``recurrent_bias`` = b_hh (gate blocks z, r, n there).
    """

    __module__ = _PUBLIC_MODULE
    _cell = "gru_layernorm"
    __init__ = _tanh_only_init
