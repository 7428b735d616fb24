// Explicit instantiations of the LSTM sequence kernels (float, double).
#define RNNFAST_INSTANTIATING
#include "rnnfast/sequence.hpp"

namespace rnnfast {

#define RNNFAST_INSTANTIATE_LSTM(S)                                                                       \
  template void lstm_sequence_forward<S>(S*, S*, S*, const Activations<S>*, const S*, const S*, const S*, \
                                         const Weights<S>&, const std::int64_t*, const Dims&);            \
  template void lstm_sequence_backward<S>(const Grads<S>&, const Activations<S>&, const S*,               \
                                          const Weights<S>&, const S*, const S*, const S*,                \
                                          const std::int64_t*, const std::uint8_t*, const Dims&);
RNNFAST_INSTANTIATE_LSTM(float)
RNNFAST_INSTANTIATE_LSTM(double)

}  // namespace rnnfast
