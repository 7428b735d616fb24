// The kernels of every registered cell (cells/all.hpp) for S = double.
#include "cells_impl.hpp"

namespace rnnfast {

template const CellKernels<double>* find_cell<double>(const std::string& name);

}  // namespace rnnfast
