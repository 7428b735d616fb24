// Explicit instantiations of the truncated-BPTT stream and tbptt_grads (float, double).
#include "rnnfast/tbptt.hpp"

namespace rnnfast {

template class TBPTTStream<float>;
template class TBPTTStream<double>;
template void tbptt_grads<float>(const StreamGrads<float>&, const CellKernels<float>&, const CellOptions&,
                                 const float*, const float*, const float*, const Weights<float>&,
                                 const float*, Index, Index, const Dims&);
template void tbptt_grads<double>(const StreamGrads<double>&, const CellKernels<double>&, const CellOptions&,
                                  const double*, const double*, const double*, const Weights<double>&,
                                  const double*, Index, Index, const Dims&);

}  // namespace rnnfast
