// rnnfast/cells/rnn.hpp - the vanilla (Elman) RNN cell: h_t = act(a_t), act = tanh or relu,
// a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh.
//
// H = hidden size, G = 1 gate block (the pre-activation a_t itself).
#pragma once

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

#include <algorithm>
#include <array>

#include "rnnfast/cells/cell.hpp"

namespace rnnfast {

struct RnnCell {
  static constexpr const char* name = "rnn";
  static constexpr Index gates = 1;
  static constexpr bool has_c = false;
  static constexpr Index aux_units = 0;        // backward reads h_t = act(a_t) from the gates
  static constexpr Index folded_hh_gates = 1;  // all of b_hh joins b_ih
  static constexpr Index split_gates = 0;
  static constexpr std::array<ExtraParam, 0> extra{};

  template <class S>
  static void forward(const CellFwd<S>& a, Index H, Index j0, Index j1, const CellOptions& o) {
    using namespace cellmath;
    (void)H;
    if (o.nl == Nonlinearity::tanh) {
      for_units<S>(j0, j1, [&](auto tag, Index j) {
        using T = typename decltype(tag)::type;
        const T y = vec::tanh_act(padd(load<T>(a.act + j), load<T>(a.gh + j)));  // h_t = tanh(a_t)
        store(a.act + j, y);
        store(a.h + j, y);
      });
    } else {
      for (Index j = j0; j < j1; ++j) a.h[j] = a.act[j] = relu(a.act[j] + a.gh[j]);  // h_t = relu(a_t)
    }
  }

  template <class S>
  static void backward(const CellBwd<S>& a, Index H, Index j0, Index j1, const CellOptions& o) {
    using namespace cellmath;
    (void)H;
    if (o.nl == Nonlinearity::tanh) {
      for_units<S>(j0, j1, [&](auto tag, Index j) {
        using T = typename decltype(tag)::type;
        const T y = load<T>(a.act + j);
        store(a.dg + j,
              pmul(load<T>(a.dh + j), psub(splat<T>(S(1)), pmul(y, y))));  // dL/da = dL/dh * (1 - h^2)
      });
    } else {
      for (Index j = j0; j < j1; ++j) a.dg[j] = a.dh[j] * drelu_y(a.act[j]);  // dL/da = dL/dh * [a > 0]
    }
    std::fill(a.dh_prev + j0, a.dh_prev + j1, S(0));  // h_{t-1} reaches h_t only through W_hh
  }
};

}  // namespace rnnfast

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
