// rnnfast/cells/lstm.hpp - the LSTM cell, gates i, f, g, o (PyTorch's order):
// i = sigmoid(a_i), f = sigmoid(a_f), g = tanh(a_g), o = sigmoid(a_o),
// c_t = f * c_{t-1} + i * g, h_t = o * tanh(c_t), a = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh.
//
// H = hidden size, G = 4 gate blocks. The forward saves tanh(c_t) (aux) for the backward.
#pragma once

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

#include <algorithm>
#include <array>

#include "rnnfast/cells/cell.hpp"

namespace rnnfast {

struct LstmCell {
  static constexpr const char* name = "lstm";
  static constexpr Index gates = 4;
  static constexpr bool has_c = true;
  static constexpr Index aux_units = 1;        // tanh(c_t)
  static constexpr Index folded_hh_gates = 4;  // all of b_hh joins b_ih
  static constexpr Index split_gates = 0;
  static constexpr std::array<ExtraParam, 0> extra{};

  template <class S>
  static void forward(const CellFwd<S>& a, Index H, Index j0, Index j1, const CellOptions&) {
    using namespace cellmath;
    S* act = a.act;
    const S* gh = a.gh;
    for_units<S>(j0, j1, [&](auto tag, Index j) {
      using T = typename decltype(tag)::type;
      const T i = vec::sigmoid(padd(load<T>(act + j), load<T>(gh + j)));
      const T f = vec::sigmoid(padd(load<T>(act + H + j), load<T>(gh + H + j)));
      const T g = vec::tanh_act(padd(load<T>(act + 2 * H + j), load<T>(gh + 2 * H + j)));
      const T o = vec::sigmoid(padd(load<T>(act + 3 * H + j), load<T>(gh + 3 * H + j)));
      const T ct = pmadd(f, load<T>(a.c_prev + j), pmul(i, g));  // c_t = f * c_{t-1} + i * g
      const T t = vec::tanh_act(ct);
      store(act + j, i);
      store(act + H + j, f);
      store(act + 2 * H + j, g);
      store(act + 3 * H + j, o);
      store(a.c + j, ct);
      store(a.h + j, pmul(o, t));  // h_t = o * tanh(c_t)
      if (a.aux) store(a.aux + j, t);
    });
  }

  template <class S>
  static void backward(const CellBwd<S>& a, Index H, Index j0, Index j1, const CellOptions&) {
    using namespace cellmath;
    const S* act = a.act;
    S* da = a.dg;
    for_units<S>(j0, j1, [&](auto tag, Index j) {
      using T = typename decltype(tag)::type;
      const T one = splat<T>(S(1));
      const T i = load<T>(act + j), f = load<T>(act + H + j), g = load<T>(act + 2 * H + j);
      const T o = load<T>(act + 3 * H + j), t = load<T>(a.aux + j), d = load<T>(a.dh + j);
      // dL/dc_t = dL/dc_t (via t+1) + dL/dh_t * o * (1 - tanh^2 c_t)
      const T dct = pmadd(pmul(d, o), psub(one, pmul(t, t)), load<T>(a.dc + j));
      store(da + j, pmul(pmul(dct, g), pmul(i, psub(one, i))));  // dL/da_i = dL/dc_t * g * i (1 - i)
      store(da + H + j, pmul(pmul(dct, load<T>(a.c_prev + j)),
                             pmul(f, psub(one, f))));  // dL/da_f = dL/dc_t * c_{t-1} * f (1 - f)
      store(da + 2 * H + j, pmul(pmul(dct, i), psub(one, pmul(g, g))));  // dL/da_g = dL/dc_t * i * (1 - g^2)
      store(da + 3 * H + j,
            pmul(pmul(d, t), pmul(o, psub(one, o))));  // dL/da_o = dL/dh_t * tanh(c_t) * o (1 - o)
      store(a.dc + j, pmul(dct, f));                   // dL/dc_{t-1} = dL/dc_t * f_t
    });
    std::fill(a.dh_prev + j0, a.dh_prev + j1, S(0));  // h_{t-1} reaches h_t only through W_hh
  }
};

}  // namespace rnnfast

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
