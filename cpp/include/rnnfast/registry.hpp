// rnnfast/registry.hpp - the registered cells (cells/all.hpp) found by name at run time.
//
// T = time steps, B = batch, I = input size, H = hidden size, G = gates
//
// A CellKernels<S> is one cell's entry: its traits as values (CellInfo) and its kernels, the generic
// sequence forward/backward (sequence.hpp) and one-step forward (step.hpp) instantiated for that cell.
// The truncated-BPTT stream and the bindings work through this table, so they know no cell by name.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "rnnfast/cells/all.hpp"
#include "rnnfast/sequence.hpp"

namespace rnnfast {

template <class S>
struct CellKernels {
  CellInfo info;
  // sequence_forward<Cell, S>: y, h_n, c_n, cache, x, h0, c0, w, lengths, options, dims
  void (*forward)(S*, S*, S*, const Activations<S>*, const S*, const S*, const S*, const Weights<S>&,
                  const std::int64_t*, const CellOptions&, const Dims&);
  // sequence_backward<Cell, S>: grads, cache, x, w, dy, dh_n, dc_n, lengths, cut, options, dims
  void (*backward)(const Grads<S>&, const Activations<S>&, const S*, const Weights<S>&, const S*, const S*,
                   const S*, const std::int64_t*, const std::uint8_t*, const CellOptions&, const Dims&);
  // step_forward<Cell, S>: h, c, work, x, h_prev, c_prev, w, options, B, I, H
  void (*step)(S*, S*, S*, const S*, const S*, const S*, const Weights<S>&, const CellOptions&, Index, Index,
               Index);
  // step_forward_packed<Cell, S>: as step, on a prepacked layer (Weights::pre)
  void (*step_packed)(S*, S*, S*, const S*, const S*, const S*, const Weights<S>&, const CellOptions&, Index,
                      Index, Index);
};

// The entry of cell `name`, or nullptr when no registered cell has that name (defined in src/cells_*.cpp).
template <class S>
const CellKernels<S>* find_cell(const std::string& name);

namespace detail {
template <class... Cells>
std::vector<CellInfo> infos_of(CellList<Cells...>) {
  return {info_of<Cells>()...};
}
}  // namespace detail

// The traits of every registered cell, in registration order.
inline const std::vector<CellInfo>& registered_cells() {
  static const std::vector<CellInfo> cells = detail::infos_of(RegisteredCells{});
  return cells;
}

// "'rnn', 'lstm', 'gru'": the registered names, for error messages.
inline std::string registered_names() {
  std::string s;
  for (const CellInfo& c : registered_cells()) s += (s.empty() ? "'" : ", '") + std::string(c.name) + "'";
  return s;
}

}  // namespace rnnfast
