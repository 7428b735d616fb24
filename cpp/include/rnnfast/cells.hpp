// rnnfast/cells.hpp - the pointwise math of one time step of one sequence (one row of a batch), for
// every cell, forward and backward. The GEMMs around it live in sequence.hpp and packed.hpp.
//
// T = time steps, B = batch, I = input size, H = hidden size, G = gates (1 rnn, 4 lstm, 3 gru),
// V = SIMD width (packed.hpp)
//
// A row of gates is G*H wide, gate-major: [gate 0 units 0..H-1 | gate 1 units 0..H-1 | ...], which is
// PyTorch's layout of W_ih (G*H, I) and W_hh (G*H, H). Each function is one fused pass over the gates
// of a row: it reads the pre-activations and writes the activated gates in place (no per-gate
// temporaries), so the caller keeps one (B, G*H) tile hot in cache per step.
//
// Every function works on the units [j0, j1) of the row (a thread's share). The math of one unit is
// written once, as a template over T = a SIMD packet or the scalar S: float runs V units at a time
// with the vectorised activations of activations.hpp (stated error bound there) and the remaining
// units with the scalar ones; double runs scalar, exact to libm.
#pragma once

// Eigen's packet types are vector types with attributes; using them as template arguments is intended.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

#include <type_traits>

#include "rnnfast/activations.hpp"
#include "rnnfast/common.hpp"

namespace rnnfast {
namespace cellmath {

using Eigen::internal::padd;
using Eigen::internal::pmadd;
using Eigen::internal::pmul;
using Eigen::internal::psub;

template <class T, class S>
inline T load(const S* p) {
  if constexpr (std::is_same_v<T, S>) {
    return *p;
  } else {
    return Eigen::internal::ploadu<T>(p);
  }
}
template <class T, class S>
inline void store(S* p, const T& x) {
  if constexpr (std::is_same_v<T, S>) {
    *p = x;
  } else {
    Eigen::internal::pstoreu(p, x);
  }
}
template <class T, class S>
inline T splat(S x) {
  if constexpr (std::is_same_v<T, S>) {
    return x;
  } else {
    return Eigen::internal::pset1<T>(x);
  }
}

template <class T>
struct Tag {
  using type = T;
};

// Runs f(Tag<T>{}, j) over [j0, j1): packets of V units where S = float (and the SIMD
// variant has packets), the scalar S for the rest.
template <class S, class F>
inline void for_units(Index j0, Index j1, F&& f) {
  Index j = j0;
  if constexpr (vec::enabled<S>()) {
    using P = vec::Packet<S>;
    constexpr Index V = vec::width<S>();
    for (; j + V <= j1; j += V) f(Tag<P>{}, j);
  }
  for (; j < j1; ++j) f(Tag<S>{}, j);
}

}  // namespace cellmath

// ------------------------------------------------------------------------------------------------
// vanilla RNN: h_t = act(a_t), a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh

template <class S>
inline void rnn_cell_forward(S* act,       // (H) in: W_ih x_t + b_ih + b_hh; out: h_t = act(a_t)
                             S* h,         // (H) out: h_t
                             const S* gh,  // (H) W_hh h_{t-1}
                             Index H, Nonlinearity nl, Index j0 = 0, Index j1 = -1) {
  using namespace cellmath;
  if (j1 < 0) j1 = H;
  if (nl == Nonlinearity::tanh) {
    for_units<S>(j0, j1, [&](auto tag, Index j) {
      using T = typename decltype(tag)::type;
      const T y = vec::tanh_act(padd(load<T>(act + j), load<T>(gh + j)));
      store(act + j, y);
      store(h + j, y);
    });
  } else {
    for (Index j = j0; j < j1; ++j) h[j] = act[j] = relu(act[j] + gh[j]);
  }
}

template <class S>
inline void rnn_cell_backward(S* da,         // (H) out: dL/da_t
                              const S* dh,   // (H) dL/dh_t (total)
                              const S* act,  // (H) h_t = act(a_t)
                              Index H, Nonlinearity nl, Index j0 = 0, Index j1 = -1) {
  using namespace cellmath;
  if (j1 < 0) j1 = H;
  if (nl == Nonlinearity::tanh) {
    for_units<S>(j0, j1, [&](auto tag, Index j) {
      using T = typename decltype(tag)::type;
      const T y = load<T>(act + j);
      store(da + j, pmul(load<T>(dh + j), psub(splat<T>(S(1)), pmul(y, y))));  // dL/da = dL/dh * (1 - h^2)
    });
  } else {
    for (Index j = j0; j < j1; ++j) da[j] = dh[j] * drelu_y(act[j]);  // dL/da = dL/dh * [a > 0]
  }
}

// ------------------------------------------------------------------------------------------------
// LSTM, gates i, f, g, o: c_t = f*c_{t-1} + i*g, h_t = o*tanh(c_t)

template <class S>
inline void lstm_cell_forward(S* act,           // (4H) in: W_ih x_t + b_ih + b_hh; out: i, f, g, o
                              S* c,             // (H) out: c_t
                              S* h,             // (H) out: h_t
                              S* tc,            // (H) out: tanh(c_t), or nullptr (inference)
                              const S* gh,      // (4H) W_hh h_{t-1}
                              const S* c_prev,  // (H) c_{t-1}
                              Index H, Index j0 = 0, Index j1 = -1) {
  using namespace cellmath;
  if (j1 < 0) j1 = H;
  for_units<S>(j0, j1, [&](auto tag, Index j) {
    using T = typename decltype(tag)::type;
    const T i = vec::sigmoid(padd(load<T>(act + j), load<T>(gh + j)));
    const T f = vec::sigmoid(padd(load<T>(act + H + j), load<T>(gh + H + j)));
    const T g = vec::tanh_act(padd(load<T>(act + 2 * H + j), load<T>(gh + 2 * H + j)));
    const T o = vec::sigmoid(padd(load<T>(act + 3 * H + j), load<T>(gh + 3 * H + j)));
    const T ct = pmadd(f, load<T>(c_prev + j), pmul(i, g));  // c_t = f * c_{t-1} + i * g
    const T t = vec::tanh_act(ct);
    store(act + j, i);
    store(act + H + j, f);
    store(act + 2 * H + j, g);
    store(act + 3 * H + j, o);
    store(c + j, ct);
    store(h + j, pmul(o, t));  // h_t = o * tanh(c_t)
    if (tc) store(tc + j, t);
  });
}

template <class S>
inline void lstm_cell_backward(S* da,            // (4H) out: dL/da for gates i, f, g, o
                               S* dc,            // (H) in: dL/dc_t via step t+1; out: dL/dc_{t-1}
                               const S* dh,      // (H) dL/dh_t (total)
                               const S* act,     // (4H) i, f, g, o
                               const S* c_prev,  // (H) c_{t-1}
                               const S* tc,      // (H) tanh(c_t)
                               Index H, Index j0 = 0, Index j1 = -1) {
  using namespace cellmath;
  if (j1 < 0) j1 = H;
  for_units<S>(j0, j1, [&](auto tag, Index j) {
    using T = typename decltype(tag)::type;
    const T one = splat<T>(S(1));
    const T i = load<T>(act + j), f = load<T>(act + H + j), g = load<T>(act + 2 * H + j);
    const T o = load<T>(act + 3 * H + j), t = load<T>(tc + j), d = load<T>(dh + j);
    // dL/dc_t = dL/dc_t (via t+1) + dL/dh_t * o * (1 - tanh^2 c_t)
    const T dct = pmadd(pmul(d, o), psub(one, pmul(t, t)), load<T>(dc + j));
    store(da + j, pmul(pmul(dct, g), pmul(i, psub(one, i))));  // dL/da_i = dL/dc_t * g * i (1 - i)
    store(da + H + j, pmul(pmul(dct, load<T>(c_prev + j)),
                           pmul(f, psub(one, f))));  // dL/da_f = dL/dc_t * c_{t-1} * f (1 - f)
    store(da + 2 * H + j, pmul(pmul(dct, i), psub(one, pmul(g, g))));  // dL/da_g = dL/dc_t * i * (1 - g^2)
    store(da + 3 * H + j,
          pmul(pmul(d, t), pmul(o, psub(one, o))));  // dL/da_o = dL/dh_t * tanh(c_t) * o (1 - o)
    store(dc + j, pmul(dct, f));                     // dL/dc_{t-1} = dL/dc_t * f_t
  });
}

// ------------------------------------------------------------------------------------------------
// GRU, gates r, z, n: r = sigmoid(a_r), z = sigmoid(a_z), n = tanh(W_in x + b_in + r * ghn),
// ghn = W_hn h_{t-1} + b_hn, h_t = (1 - z) * n + z * h_{t-1}

template <class S>
inline void gru_cell_forward(S* act,           // (3H) in: W_ih x_t + b_ih + [b_hr, b_hz, 0]; out: r, z, n
                             S* ghn,           // (H) out: W_hn h_{t-1} + b_hn, or nullptr (inference)
                             S* h,             // (H) out: h_t
                             const S* gh,      // (3H) W_hh h_{t-1} (no bias)
                             const S* b_hn,    // (H) b_hn, or nullptr (no bias)
                             const S* h_prev,  // (H) h_{t-1}
                             Index H, Index j0 = 0, Index j1 = -1) {
  using namespace cellmath;
  if (j1 < 0) j1 = H;
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
    if (ghn) store(ghn + j, gn);
    const T hp = load<T>(h_prev + j);
    store(h + j, pmadd(z, psub(hp, n), n));  // h_t = (1 - z) * n + z * h_{t-1} = n + z * (h_{t-1} - n)
  });
}

template <class S>
inline void gru_cell_backward(S* dgh,           // (3H) out: dL/d(W_hh h_{t-1} + b_hh) for r, z, n
                              S* dan,           // (H) out: dL/da_n = n-part of dL/d(W_ih x_t + b_ih)
                              S* dh_prev,       // (H) out: the direct path dL/dh_t * z (no W_hh part)
                              const S* dh,      // (H) dL/dh_t (total)
                              const S* act,     // (3H) r, z, n
                              const S* ghn,     // (H) W_hn h_{t-1} + b_hn
                              const S* h_prev,  // (H) h_{t-1}
                              Index H, Index j0 = 0, Index j1 = -1) {
  using namespace cellmath;
  if (j1 < 0) j1 = H;
  for_units<S>(j0, j1, [&](auto tag, Index j) {
    using T = typename decltype(tag)::type;
    const T one = splat<T>(S(1));
    const T r = load<T>(act + j), z = load<T>(act + H + j), n = load<T>(act + 2 * H + j), d = load<T>(dh + j);
    const T dn =
        pmul(pmul(d, psub(one, z)), psub(one, pmul(n, n)));  // dL/da_n = dL/dh_t * (1 - z) * (1 - n^2)
    const T dz = pmul(d, psub(load<T>(h_prev + j), n));      // dL/dz = dL/dh_t * (h_{t-1} - n)
    store(dgh + j,
          pmul(pmul(dn, load<T>(ghn + j)), pmul(r, psub(one, r))));  // dL/da_r = dL/da_n * ghn * r (1 - r)
    store(dgh + H + j, pmul(dz, pmul(z, psub(one, z))));             // dL/da_z = dL/dz * z (1 - z)
    store(dgh + 2 * H + j, pmul(dn, r));                             // dL/d(W_hn h + b_hn) = dL/da_n * r
    store(dan + j, dn);
    store(dh_prev + j, pmul(d, z));  // dL/dh_{t-1} = dL/dh_t * z  (+ dL/dgh W_hh, added by the caller's GEMM)
  });
}

}  // namespace rnnfast

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
