// rnnfast/ragged.hpp - ragged-batch helpers of the backward passes (lengths (B) in [0, T]: steps
// t >= lengths[b] are padded).
//
// T = time steps, B = batch, I = input size, W = width of a state row (H, or P with a projection)
#pragma once

#include <algorithm>
#include <cstdint>

#include "rnnfast/common.hpp"

namespace rnnfast {

// True when some sequence is shorter than T (lengths nullptr: a full batch, false).
inline bool any_padded(const std::int64_t* lengths, Index T, Index B) {
  return lengths && std::any_of(lengths, lengths + B, [T](std::int64_t n) { return n < T; });
}

// The operands of the weight-gradient GEMMs of a ragged batch. Padded steps have dgates = 0, but
// 0 * NaN = NaN: a non-finite x on a padded step (never read by the forward), or a non-finite state
// carried over padded steps (e.g. the h0 of a sequence of length 0, which reaches no output), must
// not reach dW_ih / dW_hh. So the GEMMs read copies of x and of the states h_{t-1} in which the rows
// of padded steps are zero: xz[t, b] = t < lengths[b] ? x[t, b] : 0, hz likewise from h.
template <class S>
void zero_padded_rows(S* xz,                        // (T, B, I) out
                      S* hz,                        // (T, B, W) out
                      const S* x,                   // (T, B, I)
                      const S* h,                   // (T, B, W) h_{t-1} of step t
                      const std::int64_t* lengths,  // (B), not nullptr
                      Index T, Index B, Index I, Index W) {
  for (Index t = 0; t < T; ++t)
    for (Index b = 0; b < B; ++b) {
      const Index row = t * B + b;
      if (t < lengths[b]) {
        std::copy(x + row * I, x + (row + 1) * I, xz + row * I);
        std::copy(h + row * W, h + (row + 1) * W, hz + row * W);
      } else {
        std::fill(xz + row * I, xz + (row + 1) * I, S(0));
        std::fill(hz + row * W, hz + (row + 1) * W, S(0));
      }
    }
}

}  // namespace rnnfast
