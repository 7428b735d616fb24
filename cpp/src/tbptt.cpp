// Explicit instantiations of the truncated-BPTT stream and tbptt_grads (float, double).
#include "rnnfast/tbptt.hpp"

namespace rnnfast {

template class TBPTTStream<float>;
template class TBPTTStream<double>;
template void tbptt_grads<float>(float*, float*, float*, float*, float*, float*, CellKind, Nonlinearity,
                                 const float*, const float*, const float*, const Weights<float>&,
                                 const float*, Index, Index, const Dims&);
template void tbptt_grads<double>(double*, double*, double*, double*, double*, double*, CellKind,
                                  Nonlinearity, const double*, const double*, const double*,
                                  const Weights<double>&, const double*, Index, Index, const Dims&);

}  // namespace rnnfast
