// rnnfast/layers.hpp - gradient kernels of the layers around the recurrent stack.
//
// N = number of looked-up ids, V = rows of the table (num_embeddings), D = embedding dim
#pragma once

#include <cstdint>

#include "rnnfast/common.hpp"

namespace rnnfast {

// dL/dW[ids[n]] += dy[n] for n = 0 .. N-1, in that order (np.add.at's order: bitwise the same sums).
// Every id must be in [0, V) (checked by the caller).
template <class S>
void embedding_backward(S* dW,                    // (V, D) accumulated in place
                        const std::int64_t* ids,  // (N)
                        const S* dy,              // (N, D)
                        Index N, Index D);

}  // namespace rnnfast
