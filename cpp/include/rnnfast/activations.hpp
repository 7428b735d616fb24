// rnnfast/activations.hpp - the cell nonlinearities, exact to libm.
//
// The derivatives are written in terms of the activation's output y, which is what the cells keep:
//   sigmoid'(a) = y (1 - y),  tanh'(a) = 1 - y^2,  relu'(a) = [y > 0].
//
// Vectorised float versions (namespace vec) for the SIMD path of the cells, on Eigen's packet math:
//   tanh:    Eigen's rational approximation (clamped at +-7.9, where tanh rounds to +-1 in float);
//   sigmoid: 1 / (1 + exp(-a)) with Eigen's vectorised exp and a true division.
// Error bound, measured against double-precision libm over every 97th float in [-100, 100] and
// asserted by the C++ unit test: tanh <= 5 ulp with FMA, <= 7 ulp without (baseline); sigmoid <= 4 ulp where
// the result is a normal float (a >= -87), absolute error <= 1e-7 everywhere (it flushes to 0 where the exact
// result is subnormal). NaN in gives NaN out. float64 always uses the exact scalar functions below.
#pragma once

// Eigen's packet types are vector types with attributes; using them as template arguments is intended.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

#include <Eigen/Core>
#include <cmath>
#include <type_traits>

namespace rnnfast {

// Numerically stable logistic: never evaluates exp of a large positive number, so it cannot overflow;
// NaN in gives NaN out.
template <class S>
inline S sigmoid(S a) {
  if (a >= S(0)) return S(1) / (S(1) + std::exp(-a));
  const S e = std::exp(a);  // a < 0 (or NaN): e in [0, 1)
  return e / (S(1) + e);
}

template <class S>
inline S tanh_act(S a) {
  return std::tanh(a);
}

// max(a, 0) that propagates NaN (like np.maximum).
template <class S>
inline S relu(S a) {
  return a < S(0) ? S(0) : a;
}

// d sigmoid / da from y = sigmoid(a)
template <class S>
inline S dsigmoid_y(S y) {
  return y * (S(1) - y);
}

// d tanh / da from y = tanh(a)
template <class S>
inline S dtanh_y(S y) {
  return S(1) - y * y;
}

// d relu / da from y = relu(a)
template <class S>
inline S drelu_y(S y) {
  return y > S(0) ? S(1) : S(0);
}

namespace vec {

template <class S>
using Packet = typename Eigen::internal::packet_traits<S>::type;

template <class S>
constexpr int width() {
  return Eigen::internal::unpacket_traits<Packet<S>>::size;
}

// The packet path is used for float when the variant has float packets wider than one scalar.
template <class S>
constexpr bool enabled() {
  return std::is_same_v<S, float> && Eigen::internal::packet_traits<S>::Vectorizable && width<S>() > 1;
}

// T is a packet of floats, or a scalar float/double (the exact functions above).
template <class T>
inline T sigmoid(const T& a) {
  if constexpr (std::is_arithmetic_v<T>) {
    return rnnfast::sigmoid(a);
  } else {
    const T one = Eigen::internal::pset1<T>(1.0f);
    return Eigen::internal::pdiv(
        one, Eigen::internal::padd(one, Eigen::internal::pexp(Eigen::internal::pnegate(a))));
  }
}

template <class T>
inline T tanh_act(const T& a) {
  if constexpr (std::is_arithmetic_v<T>) {
    return rnnfast::tanh_act(a);
  } else {
    return Eigen::internal::ptanh(a);
  }
}

}  // namespace vec

}  // namespace rnnfast

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
