// rnnfast/cells/layernorm.hpp - layer normalisation over one row, forward statistics and backward, for
// the row-wide cells (cells/lstm_layernorm.hpp, cells/gru_layernorm.hpp).
//
// n = width of the normalised row (G*H or H).
//   LN(v; gamma, beta) = gamma * xhat + beta,  xhat = (v - mean(v)) * rstd,  rstd = 1 / sqrt(var(v) + eps)
// with the biased variance and eps = 1e-5 (reference/_common.py: LN_EPS; PyTorch's LayerNorm default).
//
// Every sum over a row is taken in one fixed order (8 interleaved partial sums, then the tail), so a
// row's statistics have the same bits wherever its buffer sits and whichever thread computes them.
#pragma once

#include <cmath>

#include "rnnfast/common.hpp"

namespace rnnfast {
namespace layernorm {

constexpr double kEps = 1e-5;

// sum_{j < n} f(j), summed in a fixed order.
template <class S, class F>
inline S fixed_sum(Index n, F&& f) {
  constexpr Index L = 8;
  S acc[L] = {};
  Index j = 0;
  for (; j + L <= n; j += L)
    for (Index k = 0; k < L; ++k) acc[k] += f(j + k);
  S s = 0;
  for (Index k = 0; k < L; ++k) s += acc[k];
  for (; j < n; ++j) s += f(j);
  return s;
}

template <class S>
struct Stats {
  S mean, rstd;
};

// mean(v) and rstd = 1 / sqrt(var(v) + eps) of v (n), two passes.
template <class S>
inline Stats<S> stats(const S* v, Index n) {
  const S inv_n = S(1) / static_cast<S>(n);
  const S mean = fixed_sum<S>(n, [&](Index j) { return v[j]; }) * inv_n;
  const S var = fixed_sum<S>(n, [&](Index j) { return (v[j] - mean) * (v[j] - mean); }) * inv_n;
  return {mean, S(1) / std::sqrt(var + static_cast<S>(kEps))};
}

// Backward of y = gamma * xhat (+ beta) over a row of n, xhat = (v - mean) * rstd, given dy = dL/dy:
//   dL/dgamma += dy * xhat                                     (accumulated into dgamma)
//   out = dL/dv = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dL/dxhat = dy * gamma
// (the two subtracted terms are the paths through mean(v) and var(v)). out may be dy itself. g is
// stored (in out) before its mean is taken, so g - mean(g) is exactly 0 where the row is one unit
// (no fused multiply-add of dy * gamma against its own rounded value).
template <class S>
inline void backward(S* out, const S* dy, const S* v, const Stats<S>& st, const S* gamma, S* dgamma,
                     Index n) {
  const S inv_n = S(1) / static_cast<S>(n);
  for (Index j = 0; j < n; ++j) dgamma[j] += dy[j] * ((v[j] - st.mean) * st.rstd);  // dL/dgamma += dy xhat
  for (Index j = 0; j < n; ++j) out[j] = dy[j] * gamma[j];                          // g
  const S mg = fixed_sum<S>(n, [&](Index j) { return out[j]; }) * inv_n;            // mean(g)
  const S mgx = fixed_sum<S>(n, [&](Index j) { return out[j] * ((v[j] - st.mean) * st.rstd); }) *
                inv_n;  // mean(g xhat)
  for (Index j = 0; j < n; ++j) {
    const S xh = (v[j] - st.mean) * st.rstd;
    out[j] = st.rstd * (out[j] - mg - xh * mgx);  // dL/dv_j
  }
}

}  // namespace layernorm
}  // namespace rnnfast
