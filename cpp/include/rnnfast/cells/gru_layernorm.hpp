// rnnfast/cells/gru_layernorm.hpp - the layer-normalised GRU (as haste's LayerNormGRU): PyTorch's
// (reset-after) GRU with its input and recurrent pre-activations normalised separately, biases after:
//   gi = LN(W_ih x_t; gamma_ih) + b_ih      gh = LN(W_hh h_{t-1}; gamma_hh) + b_hh    (each LN over 3H)
//   r = sigmoid(gi_r + gh_r), z = sigmoid(gi_z + gh_z), n = tanh(gi_n + r * gh_n)    (PyTorch's order)
//   h_t = (1 - z) * n + z * h_{t-1}
// LN(v; gamma) = gamma * (v - mean(v)) / sqrt(var(v) + 1e-5) over the row, biased variance
// (cells/layernorm.hpp). Extra parameters: gamma_ih (3H), gamma_hh (3H).
//
// H = hidden size, G = 3 gate blocks. A row-wide cell with its biases in the cell (cells/cell.hpp).
// The forward saves the raw products W_ih x_t and W_hh h_{t-1} (aux, 6H per row); backward recomputes
// their statistics and gh_n from them.
#pragma once

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

#include <array>
#include <cstring>

#include "rnnfast/cells/cell.hpp"
#include "rnnfast/cells/layernorm.hpp"

namespace rnnfast {

struct GruLayerNormCell {
  static constexpr const char* name = "gru_layernorm";
  static constexpr Index gates = 3;
  static constexpr bool has_c = false;
  static constexpr Index aux_units = 6;        // W_ih x_t (3H), W_hh h_{t-1} (3H), before the LNs
  static constexpr Index folded_hh_gates = 0;  // the cell adds both biases (bias_in_cell)
  static constexpr Index split_gates = 3;      // dL/d(W_ih x) != dL/d(W_hh h) (different LNs, r * gh_n)
  static constexpr bool row_wide = true;
  static constexpr bool bias_in_cell = true;
  static constexpr std::array<ExtraParam, 2> extra{ExtraParam{"gamma_ih", 3}, ExtraParam{"gamma_hh", 3}};

  // gh_k = LN(W_hh h_{t-1}; gamma_hh)_k + b_hh_k at unit index k of the 3H row (forward and backward)
  template <class T, class S>
  static T gh_at(const S* v, const layernorm::Stats<S>& sv, const S* gamma, const S* b, Index k) {
    using namespace cellmath;
    const T xh = pmul(psub(load<T>(v + k), splat<T>(sv.mean)), splat<T>(sv.rstd));
    return b ? pmadd(load<T>(gamma + k), xh, load<T>(b + k)) : pmul(load<T>(gamma + k), xh);
  }

  // act: in W_ih x_t (no bias), out r, z, n; gh: W_hh h_{t-1}. Whole row (j0 = 0, j1 = H).
  template <class S>
  static void forward(const CellFwd<S>& a, Index H, Index, Index, const CellOptions&) {
    using namespace cellmath;
    const Index GH = 3 * H;
    S* act = a.act;
    const S* gh = a.gh;
    if (a.aux) {  // the raw products, for backward's LN statistics
      std::memcpy(a.aux, act, sizeof(S) * static_cast<std::size_t>(GH));
      std::memcpy(a.aux + GH, gh, sizeof(S) * static_cast<std::size_t>(GH));
    }
    const layernorm::Stats<S> su = layernorm::stats(act, GH), sv = layernorm::stats(gh, GH);
    const S* gi = a.extra[0];
    for (Index j = 0; j < GH; ++j) {
      const S n = gi[j] * ((act[j] - su.mean) * su.rstd);  // gi = LN(W_ih x_t; gamma_ih) + b_ih
      act[j] = a.b_ih ? n + a.b_ih[j] : n;
    }
    const S* gg = a.extra[1];
    for_units<S>(0, H, [&](auto tag, Index j) {
      using T = typename decltype(tag)::type;
      const T r = vec::sigmoid(padd(load<T>(act + j), gh_at<T>(gh, sv, gg, a.b_hh, j)));
      const T z = vec::sigmoid(padd(load<T>(act + H + j), gh_at<T>(gh, sv, gg, a.b_hh, H + j)));
      const T n = vec::tanh_act(pmadd(r, gh_at<T>(gh, sv, gg, a.b_hh, 2 * H + j), load<T>(act + 2 * H + j)));
      store(act + j, r);
      store(act + H + j, z);
      store(act + 2 * H + j, n);
      store(a.h + j, pmadd(z, psub(load<T>(a.h_prev + j), n), n));  // h_t = n + z * (h_{t-1} - n)
    });
  }

  // dg: dL/d(W_hh h_{t-1}), dg_in: dL/d(W_ih x_t) (both through their LNs); whole row.
  template <class S>
  static void backward(const CellBwd<S>& a, Index H, Index, Index, const CellOptions&) {
    using namespace cellmath;
    const Index GH = 3 * H;
    const S* act = a.act;
    const S* u = a.aux;
    const S* v = a.aux + GH;
    const layernorm::Stats<S> sv = layernorm::stats(v, GH);
    S* dgi = a.dg_in;  // dL/dgi, then dL/d(W_ih x_t)
    S* dgh = a.dg;     // dL/dgh, then dL/d(W_hh h_{t-1})
    for_units<S>(0, H, [&](auto tag, Index j) {
      using T = typename decltype(tag)::type;
      const T one = splat<T>(S(1));
      const T r = load<T>(act + j), z = load<T>(act + H + j), n = load<T>(act + 2 * H + j);
      const T d = load<T>(a.dh + j), ghn = gh_at<T>(v, sv, a.extra[1], a.b_hh, 2 * H + j);
      const T dan = pmul(pmul(d, psub(one, z)), psub(one, pmul(n, n)));  // dL/da_n = dh (1 - z) (1 - n^2)
      const T dar = pmul(pmul(dan, ghn), pmul(r, psub(one, r)));         // dL/da_r = dL/da_n gh_n r (1 - r)
      const T daz =
          pmul(pmul(d, psub(load<T>(a.h_prev + j), n)), pmul(z, psub(one, z)));  // dh (h - n) z (1-z)
      store(dgi + j, dar);
      store(dgi + H + j, daz);
      store(dgi + 2 * H + j, dan);  // dL/dgi_n = dL/da_n
      store(dgh + j, dar);
      store(dgh + H + j, daz);
      store(dgh + 2 * H + j, pmul(dan, r));  // dL/dgh_n = dL/da_n * r
      store(a.dh_prev + j, pmul(d, z));      // dL/dh_{t-1} = dL/dh_t z (+ the W_hh path, by the caller)
    });
    if (a.db_ih) {
      for (Index j = 0; j < GH; ++j) {
        a.db_ih[j] += dgi[j];  // dL/db_ih += dL/dgi
        a.db_hh[j] += dgh[j];  // dL/db_hh += dL/dgh
      }
    }
    // through the normalisations (and dL/dgamma_* += dL/dg* * xhat_*), in place
    layernorm::backward(dgi, dgi, u, layernorm::stats(u, GH), a.extra[0], a.dextra[0], GH);
    layernorm::backward(dgh, dgh, v, sv, a.extra[1], a.dextra[1], GH);
  }
};

}  // namespace rnnfast

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
