// The table of registered cells for one scalar type (included by cells_float.cpp, cells_double.cpp:
// one translation unit per scalar type, so the two compile in parallel).
#pragma once

#include <vector>

#include "rnnfast/registry.hpp"
#include "rnnfast/step.hpp"

namespace rnnfast {
namespace detail {

template <class S, class... Cells>
std::vector<CellKernels<S>> kernel_table(CellList<Cells...>) {
  return {CellKernels<S>{info_of<Cells>(), &sequence_forward<Cells, S>, &sequence_backward<Cells, S>,
                         &step_forward<Cells, S>, &step_forward_packed<Cells, S>}...};
}

}  // namespace detail

template <class S>
const CellKernels<S>* find_cell(const std::string& name) {
  static const std::vector<CellKernels<S>> table = detail::kernel_table<S>(RegisteredCells{});
  for (const CellKernels<S>& k : table)
    if (name == k.info.name) return &k;
  return nullptr;
}
}  // namespace rnnfast
