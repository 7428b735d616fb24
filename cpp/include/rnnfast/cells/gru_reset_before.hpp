// rnnfast/cells/gru_reset_before.hpp - the GRU with the reset gate applied before the recurrent
// product (Cho et al. 2014; Keras GRU(reset_after=False), ONNX GRU with linear_before_reset = 0):
//   r = sigmoid(a_r), z = sigmoid(a_z), a_{r,z} = W_i{r,z} x_t + b_i{r,z} + W_h{r,z} h_{t-1} + b_h{r,z}
//   m_t = r * h_{t-1},  n = tanh(W_in x_t + b_in + W_hn m_t + b_hn),  h_t = (1 - z) * n + z * h_{t-1}
//
// H = hidden size, G = 3 gate blocks (r, z, n: PyTorch's order and parameter shapes). A two-phase
// cell (cells/cell.hpp): W_hn multiplies m_t, which needs r of every unit, so the time loop runs
// forward_gates (r, z, m_t), a barrier, the product m_t W_hn^T, then forward (n, h_t). b_hn is
// outside r here, so all of b_hh joins the input projection. The forward saves m_t (aux) for dW_hn.
#pragma once

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

#include <array>

#include "rnnfast/cells/cell.hpp"

namespace rnnfast {

struct GruResetBeforeCell {
  static constexpr const char* name = "gru_reset_before";
  static constexpr Index gates = 3;
  static constexpr bool has_c = false;
  static constexpr Index aux_units = 1;        // m_t = r * h_{t-1}
  static constexpr Index folded_hh_gates = 3;  // all of b_hh joins b_ih (b_hn is outside r)
  static constexpr Index split_gates = 0;
  static constexpr bool two_phase = true;
  static constexpr std::array<ExtraParam, 0> extra{};

  // phase 1: r, z and m_t = r * h_{t-1}
  template <class S>
  static void forward_gates(const CellFwd<S>& a, Index H, Index j0, Index j1, const CellOptions&) {
    using namespace cellmath;
    S* act = a.act;
    const S* gh = a.gh;
    for_units<S>(j0, j1, [&](auto tag, Index j) {
      using T = typename decltype(tag)::type;
      const T r = vec::sigmoid(padd(load<T>(act + j), load<T>(gh + j)));
      const T z = vec::sigmoid(padd(load<T>(act + H + j), load<T>(gh + H + j)));
      store(act + j, r);
      store(act + H + j, z);
      store(a.aux + j, pmul(r, load<T>(a.h_prev + j)));  // m_t = r * h_{t-1}
    });
  }

  // phase 2 (gh's n block = m_t W_hn^T): n and h_t
  template <class S>
  static void forward(const CellFwd<S>& a, Index H, Index j0, Index j1, const CellOptions&) {
    using namespace cellmath;
    S* act = a.act;
    const S* gh = a.gh;
    for_units<S>(j0, j1, [&](auto tag, Index j) {
      using T = typename decltype(tag)::type;
      const T n = vec::tanh_act(padd(load<T>(act + 2 * H + j), load<T>(gh + 2 * H + j)));  // n = tanh(...)
      store(act + 2 * H + j, n);
      const T z = load<T>(act + H + j), hp = load<T>(a.h_prev + j);
      store(a.h + j, pmadd(z, psub(hp, n), n));  // h_t = (1 - z) * n + z * h_{t-1} = n + z * (h_{t-1} - n)
    });
  }

  // backward phase A: the n and z blocks and the direct path
  template <class S>
  static void backward_gates(const CellBwd<S>& a, Index H, Index j0, Index j1, const CellOptions&) {
    using namespace cellmath;
    const S* act = a.act;
    S* dg = a.dg;
    for_units<S>(j0, j1, [&](auto tag, Index j) {
      using T = typename decltype(tag)::type;
      const T one = splat<T>(S(1));
      const T z = load<T>(act + H + j), n = load<T>(act + 2 * H + j), d = load<T>(a.dh + j);
      const T dn = pmul(pmul(d, psub(one, z)), psub(one, pmul(n, n)));  // dL/da_n = dL/dh_t (1 - z) (1 - n^2)
      const T dz = pmul(d, psub(load<T>(a.h_prev + j), n));             // dL/dz = dL/dh_t (h_{t-1} - n)
      store(dg + H + j, pmul(dz, pmul(z, psub(one, z))));               // dL/da_z = dL/dz z (1 - z)
      store(dg + 2 * H + j, dn);         // dL/d(W_hn m_t + b_hn) = dL/d(W_in x + b_in) = dL/da_n
      store(a.dh_prev + j, pmul(d, z));  // dL/dh_{t-1} = dL/dh_t z (+ the m_t and W_h{r,z} paths)
    });
  }

  // backward phase B, given dm = dL/dm_t = dL/da_n W_hn: the r block and the path through m_t
  template <class S>
  static void backward(const CellBwd<S>& a, Index, Index j0, Index j1, const CellOptions&) {
    using namespace cellmath;
    const S* act = a.act;
    S* dg = a.dg;
    for_units<S>(j0, j1, [&](auto tag, Index j) {
      using T = typename decltype(tag)::type;
      const T one = splat<T>(S(1));
      const T r = load<T>(act + j), dm = load<T>(a.dmid + j);
      store(dg + j,
            pmul(pmul(dm, load<T>(a.h_prev + j)), pmul(r, psub(one, r))));  // dL/da_r = dm h_{t-1} r (1 - r)
      store(a.dh_prev + j, pmadd(dm, r, load<T>(a.dh_prev + j)));           // dL/dh_{t-1} += dm r
    });
  }
};

}  // namespace rnnfast

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
