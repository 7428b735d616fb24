// Explicit instantiations of the GRU sequence kernels (float, double).
#define RNNFAST_INSTANTIATING
#include "rnnfast/sequence.hpp"

namespace rnnfast {

#define RNNFAST_INSTANTIATE_GRU(S)                                                                   \
  template void gru_sequence_forward<S>(S*, S*, const Activations<S>*, const S*, const S*,           \
                                        const Weights<S>&, const std::int64_t*, const Dims&);        \
  template void gru_sequence_backward<S>(const Grads<S>&, const Activations<S>&, const S*,           \
                                         const Weights<S>&, const S*, const S*, const std::int64_t*, \
                                         const std::uint8_t*, const Dims&);
RNNFAST_INSTANTIATE_GRU(float)
RNNFAST_INSTANTIATE_GRU(double)

}  // namespace rnnfast
