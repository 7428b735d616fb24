// rnnfast/cells/lstm_layernorm.hpp - the layer-normalised LSTM (Ba et al. 2016, as haste's
// LayerNormLSTM): the input and recurrent pre-activations normalised separately, the biases after the
// normalisations, then the cell state normalised before the output tanh:
//   a   = LN(W_ih x_t; gamma_ih) + LN(W_hh h_{t-1}; gamma_hh) + b_ih + b_hh        (each LN over 4H)
//   i, f, g, o = sigmoid(a_i), sigmoid(a_f), tanh(a_g), sigmoid(a_o)               (PyTorch's order)
//   c_t = f * c_{t-1} + i * g                                 (the state carried: c_t, unnormalised)
//   h_t = o * tanh(LN(c_t; gamma_c, beta_c))                                       (LN over H)
// LN(v; gamma, beta) = gamma * (v - mean(v)) / sqrt(var(v) + 1e-5) + beta over the row, biased
// variance (cells/layernorm.hpp); no shift in the first two (the biases play that part).
// Extra parameters: gamma_ih (4H), gamma_hh (4H), gamma_c (H), beta_c (H).
//
// H = hidden size, G = 4 gate blocks. A row-wide cell (the LN statistics span the whole row) with its
// biases in the cell (cells/cell.hpp). The forward saves the raw products W_ih x_t and W_hh h_{t-1}
// (aux, 8H per row); backward recomputes their statistics, and those of c_t from the cached c_t.
#pragma once

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

#include <algorithm>
#include <array>
#include <cstring>

#include "rnnfast/cells/cell.hpp"
#include "rnnfast/cells/layernorm.hpp"

namespace rnnfast {

struct LstmLayerNormCell {
  static constexpr const char* name = "lstm_layernorm";
  static constexpr Index gates = 4;
  static constexpr bool has_c = true;
  static constexpr Index aux_units = 8;        // W_ih x_t (4H), W_hh h_{t-1} (4H), before the LNs
  static constexpr Index folded_hh_gates = 0;  // the cell adds both biases (bias_in_cell)
  static constexpr Index split_gates = 4;      // dL/d(W_ih x) != dL/d(W_hh h) (different LNs)
  static constexpr bool row_wide = true;
  static constexpr bool bias_in_cell = true;
  static constexpr std::array<ExtraParam, 4> extra{ExtraParam{"gamma_ih", 4}, ExtraParam{"gamma_hh", 4},
                                                   ExtraParam{"gamma_c", 1}, ExtraParam{"beta_c", 1}};

  // act: in W_ih x_t (no bias), out i, f, g, o; gh: W_hh h_{t-1}. Whole row (j0 = 0, j1 = H).
  template <class S>
  static void forward(const CellFwd<S>& a, Index H, Index, Index, const CellOptions&) {
    using namespace cellmath;
    const Index GH = 4 * H;
    S* act = a.act;
    const S* gh = a.gh;
    if (a.aux) {  // the raw products, for backward's LN statistics
      std::memcpy(a.aux, act, sizeof(S) * static_cast<std::size_t>(GH));
      std::memcpy(a.aux + GH, gh, sizeof(S) * static_cast<std::size_t>(GH));
    }
    const layernorm::Stats<S> su = layernorm::stats(act, GH), sv = layernorm::stats(gh, GH);
    const S* gi = a.extra[0];
    const S* gg = a.extra[1];
    for (Index j = 0; j < GH; ++j) {
      // a = LN(W_ih x_t; gamma_ih) + LN(W_hh h_{t-1}; gamma_hh) + (b_ih + b_hh)
      const S n = gi[j] * ((act[j] - su.mean) * su.rstd) + gg[j] * ((gh[j] - sv.mean) * sv.rstd);
      act[j] = a.b_ih ? n + (a.b_ih[j] + a.b_hh[j]) : n;
    }
    for_units<S>(0, H, [&](auto tag, Index j) {
      using T = typename decltype(tag)::type;
      const T i = vec::sigmoid(load<T>(act + j)), f = vec::sigmoid(load<T>(act + H + j));
      const T g = vec::tanh_act(load<T>(act + 2 * H + j)), o = vec::sigmoid(load<T>(act + 3 * H + j));
      store(act + j, i);
      store(act + H + j, f);
      store(act + 2 * H + j, g);
      store(act + 3 * H + j, o);
      store(a.c + j, pmadd(f, load<T>(a.c_prev + j), pmul(i, g)));  // c_t = f * c_{t-1} + i * g
    });
    const layernorm::Stats<S> sc = layernorm::stats(a.c, H);
    const S* gc = a.extra[2];
    const S* bc = a.extra[3];
    for_units<S>(0, H, [&](auto tag, Index j) {
      using T = typename decltype(tag)::type;
      const T xc = pmul(psub(load<T>(a.c + j), splat<T>(sc.mean)), splat<T>(sc.rstd));
      const T t = vec::tanh_act(pmadd(load<T>(gc + j), xc, load<T>(bc + j)));  // tanh(LN(c_t))
      store(a.h + j, pmul(load<T>(act + 3 * H + j), t));                       // h_t = o * tanh(LN(c_t))
    });
  }

  // dg: dL/d(W_hh h_{t-1}), dg_in: dL/d(W_ih x_t) (both through their LNs); whole row.
  template <class S>
  static void backward(const CellBwd<S>& a, Index H, Index, Index, const CellOptions&) {
    using namespace cellmath;
    const Index GH = 4 * H;
    const S* act = a.act;
    const S* gc = a.extra[2];
    const S* bc = a.extra[3];
    S* dn = a.dg_in;      // scratch (H): dL/dLN(c_t), then dL/dc_t through the LN
    S* tn = a.dg_in + H;  // scratch (H): tanh(LN(c_t)); dg_in is written last
    const layernorm::Stats<S> sc = layernorm::stats(a.c, H);
    for_units<S>(0, H, [&](auto tag, Index j) {
      using T = typename decltype(tag)::type;
      const T one = splat<T>(S(1));
      const T xc = pmul(psub(load<T>(a.c + j), splat<T>(sc.mean)), splat<T>(sc.rstd));
      const T t = vec::tanh_act(pmadd(load<T>(gc + j), xc, load<T>(bc + j)));
      store(tn + j, t);
      // dL/dLN(c_t) = dL/dh_t * o * (1 - tanh^2)
      store(dn + j, pmul(pmul(load<T>(a.dh + j), load<T>(act + 3 * H + j)), psub(one, pmul(t, t))));
    });
    for (Index j = 0; j < H; ++j) a.dextra[3][j] += dn[j];     // dL/dbeta_c += dL/dLN(c_t)
    layernorm::backward(dn, dn, a.c, sc, gc, a.dextra[2], H);  // dL/dgamma_c; dn = dL/dc_t via LN(c_t)
    S* da = a.dg;
    for_units<S>(0, H, [&](auto tag, Index j) {
      using T = typename decltype(tag)::type;
      const T one = splat<T>(S(1));
      const T i = load<T>(act + j), f = load<T>(act + H + j), g = load<T>(act + 2 * H + j);
      const T o = load<T>(act + 3 * H + j), t = load<T>(tn + j), d = load<T>(a.dh + j);
      const T dct = padd(load<T>(a.dc + j), load<T>(dn + j));    // dL/dc_t = via step t+1 + via LN(c_t)
      store(da + j, pmul(pmul(dct, g), pmul(i, psub(one, i))));  // dL/da_i = dc g i (1 - i)
      store(da + H + j,
            pmul(pmul(dct, load<T>(a.c_prev + j)), pmul(f, psub(one, f))));  // dc c_{t-1} f (1 - f)
      store(da + 2 * H + j, pmul(pmul(dct, i), psub(one, pmul(g, g))));      // dc i (1 - g^2)
      store(da + 3 * H + j, pmul(pmul(d, t), pmul(o, psub(one, o))));  // dL/da_o = dh tanh(LN c_t) o (1 - o)
      store(a.dc + j, pmul(dct, f));                                   // dL/dc_{t-1} = dL/dc_t * f
    });
    if (a.db_ih) {
      for (Index j = 0; j < GH; ++j) {
        a.db_ih[j] += da[j];  // dL/db_ih = dL/db_hh += dL/da (a = ... + b_ih + b_hh)
        a.db_hh[j] += da[j];
      }
    }
    const S* u = a.aux;
    const S* v = a.aux + GH;
    // dL/d(W_ih x_t) = LN backward of dL/da (and dL/dgamma_ih += dL/da * xhat_ih); then W_hh h_{t-1}'s
    layernorm::backward(a.dg_in, da, u, layernorm::stats(u, GH), a.extra[0], a.dextra[0], GH);
    layernorm::backward(da, da, v, layernorm::stats(v, GH), a.extra[1], a.dextra[1], GH);
    std::fill(a.dh_prev, a.dh_prev + H, S(0));  // h_{t-1} reaches h_t only through W_hh
  }
};

}  // namespace rnnfast

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
