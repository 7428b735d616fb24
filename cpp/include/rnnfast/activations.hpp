// rnnfast/activations.hpp - the cell nonlinearities, exact to libm.
//
// The derivatives are written in terms of the activation's output y, which is what the cells keep:
//   sigmoid'(a) = y (1 - y),  tanh'(a) = 1 - y^2,  relu'(a) = [y > 0].
// (A vectorised float version with a stated error bound belongs to the speed work.)
#pragma once

#include <cmath>

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

}  // namespace rnnfast
