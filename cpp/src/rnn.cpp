// Explicit instantiations of the vanilla RNN sequence kernels (float, double).
#define RNNFAST_INSTANTIATING
#include "rnnfast/sequence.hpp"

namespace rnnfast {

#define RNNFAST_INSTANTIATE_RNN(S)                                                                          \
  template void rnn_sequence_forward<S>(S*, S*, const Activations<S>*, const S*, const S*,                  \
                                        const Weights<S>&, const std::int64_t*, Nonlinearity, const Dims&); \
  template void rnn_sequence_backward<S>(const Grads<S>&, const Activations<S>&, const S*,                  \
                                         const Weights<S>&, const S*, const S*, const std::int64_t*,        \
                                         const std::uint8_t*, Nonlinearity, const Dims&);
RNNFAST_INSTANTIATE_RNN(float)
RNNFAST_INSTANTIATE_RNN(double)

}  // namespace rnnfast
