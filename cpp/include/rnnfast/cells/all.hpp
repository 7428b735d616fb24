// rnnfast/cells/all.hpp - the registered cells: one line per cell. The sequence kernels, truncated
// BPTT, the one-step path and the bindings are instantiated for every cell of this list (src/cells_*.cpp)
// and find them by name at run time (registry.hpp).
#pragma once

#include "rnnfast/cells/cell.hpp"
#include "rnnfast/cells/gru.hpp"
#include "rnnfast/cells/gru_layernorm.hpp"
#include "rnnfast/cells/gru_reset_before.hpp"
#include "rnnfast/cells/lstm.hpp"
#include "rnnfast/cells/lstm_layernorm.hpp"
#include "rnnfast/cells/lstm_peephole.hpp"
#include "rnnfast/cells/rnn.hpp"

namespace rnnfast {

using RegisteredCells = CellList<RnnCell, LstmCell, GruCell, LstmPeepholeCell, GruResetBeforeCell,
                                 LstmLayerNormCell, GruLayerNormCell>;

}  // namespace rnnfast
