// Gradient kernels of the layers around the stack (see rnnfast/layers.hpp), float and double.
#include "rnnfast/layers.hpp"

namespace rnnfast {

template <class S>
void embedding_backward(S* dW, const std::int64_t* ids, const S* dy, Index N, Index D) {
  for (Index n = 0; n < N; ++n) {
    S* row = dW + ids[n] * D;
    const S* g = dy + n * D;
    for (Index j = 0; j < D; ++j) row[j] += g[j];  // dL/dW[id] = sum of dL/dy over the rows that read it
  }
}

template void embedding_backward<float>(float*, const std::int64_t*, const float*, Index, Index);
template void embedding_backward<double>(double*, const std::int64_t*, const double*, Index, Index);

}  // namespace rnnfast
