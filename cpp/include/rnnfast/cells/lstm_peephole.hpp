// rnnfast/cells/lstm_peephole.hpp - the peephole LSTM (Gers & Schmidhuber 2000; the ONNX LSTM
// operator with its P input): the input and forget gates see c_{t-1}, the output gate sees c_t,
// through diagonal weights w_peep = [p_i, p_f, p_o] (3H):
//   i = sigmoid(a_i + p_i * c_{t-1}), f = sigmoid(a_f + p_f * c_{t-1}), g = tanh(a_g),
//   c_t = f * c_{t-1} + i * g, o = sigmoid(a_o + p_o * c_t), h_t = o * tanh(c_t),
//   a = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh (gate blocks i, f, g, o: PyTorch's order).
//
// H = hidden size, G = 4 gate blocks. The forward saves tanh(c_t) (aux); backward also reads c_t.
#pragma once

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

#include <algorithm>
#include <array>

#include "rnnfast/cells/cell.hpp"

namespace rnnfast {

struct LstmPeepholeCell {
  static constexpr const char* name = "lstm_peephole";
  static constexpr Index gates = 4;
  static constexpr bool has_c = true;
  static constexpr Index aux_units = 1;        // tanh(c_t)
  static constexpr Index folded_hh_gates = 4;  // all of b_hh joins b_ih
  static constexpr Index split_gates = 0;
  static constexpr std::array<ExtraParam, 1> extra{ExtraParam{"w_peep", 3}};  // [p_i, p_f, p_o]

  template <class S>
  static void forward(const CellFwd<S>& a, Index H, Index j0, Index j1, const CellOptions&) {
    using namespace cellmath;
    S* act = a.act;
    const S* gh = a.gh;
    const S* p = a.extra[0];
    for_units<S>(j0, j1, [&](auto tag, Index j) {
      using T = typename decltype(tag)::type;
      const T cp = load<T>(a.c_prev + j);
      const T i = vec::sigmoid(pmadd(load<T>(p + j), cp, padd(load<T>(act + j), load<T>(gh + j))));
      const T f =
          vec::sigmoid(pmadd(load<T>(p + H + j), cp, padd(load<T>(act + H + j), load<T>(gh + H + j))));
      const T g = vec::tanh_act(padd(load<T>(act + 2 * H + j), load<T>(gh + 2 * H + j)));
      const T ct = pmadd(f, cp, pmul(i, g));  // c_t = f * c_{t-1} + i * g
      const T o = vec::sigmoid(
          pmadd(load<T>(p + 2 * H + j), ct, padd(load<T>(act + 3 * H + j), load<T>(gh + 3 * H + j))));
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
    const S* p = a.extra[0];
    S* dp = a.dextra[0];
    S* da = a.dg;
    for_units<S>(j0, j1, [&](auto tag, Index j) {
      using T = typename decltype(tag)::type;
      const T one = splat<T>(S(1));
      const T i = load<T>(act + j), f = load<T>(act + H + j), g = load<T>(act + 2 * H + j);
      const T o = load<T>(act + 3 * H + j), t = load<T>(a.aux + j), d = load<T>(a.dh + j);
      const T cp = load<T>(a.c_prev + j), ct = load<T>(a.c + j);
      const T dao = pmul(pmul(d, t), pmul(o, psub(one, o)));  // dL/da_o = dL/dh_t * tanh(c_t) * o (1 - o)
      // dL/dc_t = via step t+1 + dL/dh_t * o * (1 - tanh^2 c_t) + dL/da_o * p_o (o's peephole)
      const T dct =
          pmadd(dao, load<T>(p + 2 * H + j), pmadd(pmul(d, o), psub(one, pmul(t, t)), load<T>(a.dc + j)));
      const T dai = pmul(pmul(dct, g), pmul(i, psub(one, i)));   // dL/da_i = dL/dc_t * g * i (1 - i)
      const T daf = pmul(pmul(dct, cp), pmul(f, psub(one, f)));  // dL/da_f = dL/dc_t * c_{t-1} * f (1 - f)
      store(da + j, dai);
      store(da + H + j, daf);
      store(da + 2 * H + j, pmul(pmul(dct, i), psub(one, pmul(g, g))));  // dL/da_g = dL/dc_t * i * (1 - g^2)
      store(da + 3 * H + j, dao);
      store(dp + j, pmadd(dai, cp, load<T>(dp + j)));                  // dL/dp_i += dL/da_i * c_{t-1}
      store(dp + H + j, pmadd(daf, cp, load<T>(dp + H + j)));          // dL/dp_f += dL/da_f * c_{t-1}
      store(dp + 2 * H + j, pmadd(dao, ct, load<T>(dp + 2 * H + j)));  // dL/dp_o += dL/da_o * c_t
      // dL/dc_{t-1} = dL/dc_t * f + dL/da_i * p_i + dL/da_f * p_f (i's and f's peepholes)
      store(a.dc + j, pmadd(daf, load<T>(p + H + j), pmadd(dai, load<T>(p + j), pmul(dct, f))));
    });
    std::fill(a.dh_prev + j0, a.dh_prev + j1, S(0));  // h_{t-1} reaches h_t only through W_hh
  }
};

}  // namespace rnnfast

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
