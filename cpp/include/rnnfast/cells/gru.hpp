// rnnfast/cells/gru.hpp - the GRU cell, gates r, z, n (PyTorch's order, reset applied after the
// product): r = sigmoid(a_r), z = sigmoid(a_z), n = tanh(W_in x + b_in + r * (W_hn h_{t-1} + b_hn)),
// h_t = (1 - z) * n + z * h_{t-1}, a_{r,z} = W_i{r,z} x + b_i{r,z} + W_h{r,z} h_{t-1} + b_h{r,z}.
//
// H = hidden size, G = 3 gate blocks. b_hn is not folded into the input projection (it is multiplied
// by r), and dL/d(W_in x + b_in) = dL/da_n differs from dL/d(W_hn h + b_hn) = dL/da_n * r: the n block
// is a split gate. The forward saves W_hn h_{t-1} + b_hn (aux) for the backward.
#pragma once

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

#include <array>

#include "rnnfast/cells/cell.hpp"

namespace rnnfast {

struct GruCell {
  static constexpr const char* name = "gru";
  static constexpr Index gates = 3;
  static constexpr bool has_c = false;
  static constexpr Index aux_units = 1;        // ghn = W_hn h_{t-1} + b_hn
  static constexpr Index folded_hh_gates = 2;  // b_hr, b_hz join b_ih; b_hn stays in the cell
  static constexpr Index split_gates = 1;      // the n block
  static constexpr std::array<ExtraParam, 0> extra{};

  template <class S>
  static void forward(const CellFwd<S>& a, Index H, Index j0, Index j1, const CellOptions&) {
    using namespace cellmath;
    S* act = a.act;
    const S* gh = a.gh;
    const S* b_hn = a.b_hh ? a.b_hh + 2 * H : nullptr;
    for_units<S>(j0, j1, [&](auto tag, Index j) {
      using T = typename decltype(tag)::type;
      const T r = vec::sigmoid(padd(load<T>(act + j), load<T>(gh + j)));
      const T z = vec::sigmoid(padd(load<T>(act + H + j), load<T>(gh + H + j)));
      const T gn = b_hn ? padd(load<T>(gh + 2 * H + j), load<T>(b_hn + j)) : load<T>(gh + 2 * H + j);
      const T n = vec::tanh_act(
          pmadd(r, gn, load<T>(act + 2 * H + j)));  // n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
      store(act + j, r);
      store(act + H + j, z);
      store(act + 2 * H + j, n);
      if (a.aux) store(a.aux + j, gn);
      const T hp = load<T>(a.h_prev + j);
      store(a.h + j, pmadd(z, psub(hp, n), n));  // h_t = (1 - z) * n + z * h_{t-1} = n + z * (h_{t-1} - n)
    });
  }

  template <class S>
  static void backward(const CellBwd<S>& a, Index H, Index j0, Index j1, const CellOptions&) {
    using namespace cellmath;
    const S* act = a.act;
    S* dgh = a.dg;
    for_units<S>(j0, j1, [&](auto tag, Index j) {
      using T = typename decltype(tag)::type;
      const T one = splat<T>(S(1));
      const T r = load<T>(act + j), z = load<T>(act + H + j), n = load<T>(act + 2 * H + j);
      const T d = load<T>(a.dh + j);
      const T dn =
          pmul(pmul(d, psub(one, z)), psub(one, pmul(n, n)));  // dL/da_n = dL/dh_t * (1 - z) * (1 - n^2)
      const T dz = pmul(d, psub(load<T>(a.h_prev + j), n));    // dL/dz = dL/dh_t * (h_{t-1} - n)
      store(dgh + j, pmul(pmul(dn, load<T>(a.aux + j)),
                          pmul(r, psub(one, r))));          // dL/da_r = dL/da_n * ghn * r (1 - r)
      store(dgh + H + j, pmul(dz, pmul(z, psub(one, z))));  // dL/da_z = dL/dz * z (1 - z)
      store(dgh + 2 * H + j, pmul(dn, r));                  // dL/d(W_hn h + b_hn) = dL/da_n * r
      store(a.dg_in + j, dn);                               // dL/d(W_in x + b_in) = dL/da_n
      // dL/dh_{t-1} = dL/dh_t * z  (+ dL/dgh W_hh, added by the caller's product)
      store(a.dh_prev + j, pmul(d, z));
    });
  }
};

}  // namespace rnnfast

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
