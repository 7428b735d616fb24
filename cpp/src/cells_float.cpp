// The kernels of every registered cell (cells/all.hpp) for S = float.
#include "cells_impl.hpp"

namespace rnnfast {

template const CellKernels<float>* find_cell<float>(const std::string& name);

}  // namespace rnnfast
