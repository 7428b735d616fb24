// rnnfast/cells/cell.hpp - what a cell is: the traits type every cell header defines, the row views
// its pointwise forward and backward work on, and the SIMD helpers they are written with.
//
// T = time steps, B = batch, I = input size, H = hidden size, G = gates (Cell::gates),
// V = SIMD width (packed.hpp)
//
// A cell is a struct (cells/rnn.hpp, cells/lstm.hpp, cells/gru.hpp) with:
//   name              its registry name ("lstm"), the `cell` string of the Python API
//   gates             G: gate blocks stacked in the rows of W_ih (G*H, I) and W_hh (G*H, H)
//   has_c             true when the state is (h, c), false when it is h alone
//   aux_units         scalars per unit the training forward saves for backward besides the gates
//                     (cache `aux`, (T, B, aux_units*H)); 0 when none
//   folded_hh_gates   leading gate blocks of b_hh that are added to the input projection (b_ih + b_hh);
//                     the rest of b_hh is the cell's to apply (the GRU's b_hn sits inside r * (...))
//   split_gates       trailing gate blocks whose dL/d(W_ih x + b_ih) differs from
//                     dL/d(W_hh h + b_hh); backward writes them to `dg_in` (the GRU's n block)
//   extra             the cell's own parameters besides w_ih, w_hh, b_ih, b_hh, as named (per_unit*H)
//                     vectors (e.g. peepholes); their gradients are accumulated by backward
//   forward(CellFwd, H, j0, j1, CellOptions)    the fused pointwise pass of one row, units [j0, j1)
//   backward(CellBwd, H, j0, j1, CellOptions)   its derivative, units [j0, j1)
// and optionally
//   two_phase = true  the last gate block's recurrent product takes m_t = (gate 0) * h_{t-1}, not
//                     h_{t-1} (the GRU with the reset gate before the product). The cell then has
//                     forward_gates (activates gates 0..G-2 and writes m_t to `aux`, which holds it
//                     for backward too: aux_units >= 1) before `forward`, and backward_gates (the
//                     gradients of the last block: dg's last block, the direct dh_prev) before
//                     `backward` (the rest, given dm = dL/dm_t in `dmid`); the time loops run a
//                     product and a barrier between the two halves (sequence.hpp).
//   row_wide = true   forward and backward need the whole row at once (layer normalisation: its
//                     statistics span all G*H, or H, units of the row). The time loops call them with
//                     j0 = 0, j1 = H only: in forward, after a barrier (every unit's W_hh h_{t-1} is
//                     there), threads split the rows of the batch; in backward one thread runs the
//                     cells of every row in the fixed order of the one-thread loop, so the gradients
//                     the cell accumulates (dextra, db_ih, db_hh) are summed in the same order whatever
//                     the thread count (bitwise identical results with 1 or 2 threads). Not combinable
//                     with two_phase.
//   bias_in_cell = true   b_ih is not folded into the input projection (act holds W_ih x_t alone) and
//                     the cell adds both biases itself (CellFwd::b_ih, b_hh; folded_hh_gates = 0). Its
//                     backward accumulates dL/db_ih and dL/db_hh itself (CellBwd::db_ih, db_hh, when
//                     not nullptr), because they differ from dL/d(W_ih x) and dL/d(W_hh h) (a
//                     normalisation lies between); the loops skip their column sums for such a cell.
//
// A row of gates is G*H wide, gate-major: [gate 0 units 0..H-1 | gate 1 units 0..H-1 | ...] (PyTorch's
// layout). Each function is one fused pass over the gates of a row: it reads the pre-activations and
// writes the activated gates in place (no per-gate temporaries), so the caller keeps one (B, G*H) tile
// hot in cache per step. Every function works on the units [j0, j1) of the row (a thread's share) and
// must touch nothing outside those units (the time loop splits rows between threads by units).
//
// The math of one unit is written once, as a template over T = a SIMD packet or the scalar S: float
// runs V units at a time with the vectorised activations of activations.hpp (stated error bound there)
// and the remaining units with the scalar ones; double runs scalar, exact to libm.
//
// Adding a cell: write cells/<cell>.hpp with such a struct and add it to the list in cells/all.hpp.
// The sequence kernels, truncated BPTT, the one-step path and the bindings are generic over it.
#pragma once

// Eigen's packet types are vector types with attributes; using them as template arguments is intended.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

#include <array>
#include <type_traits>

#include "rnnfast/activations.hpp"
#include "rnnfast/common.hpp"

namespace rnnfast {

// Most extra parameters a cell may declare.
constexpr int kMaxExtra = 8;

// One of a cell's own parameters: a vector of per_unit * H scalars (gate-major like the gates).
struct ExtraParam {
  const char* name;
  Index per_unit;
};

// Run-time options of a cell (today only the vanilla RNN's activation).
struct CellOptions {
  Nonlinearity nl = Nonlinearity::tanh;
};

// The views of one row (one sequence b at one step t) that a cell's forward reads and writes.
template <class S>
struct CellFwd {
  S* act;                                 // (G*H) in: W_ih x_t + b_ih + folded b_hh; out: activated gates
  const S* gh;                            // (G*H) W_hh h_{t-1} (no bias)
  const S* h_prev;                        // (H) h_{t-1}
  const S* c_prev;                        // (H) c_{t-1} (has_c), else nullptr
  S* h;                                   // (H) out: h_t
  S* c;                                   // (H) out: c_t (has_c), else nullptr
  S* aux;                                 // (aux_units*H) out: values backward needs, nullptr in inference
  const S* b_hh;                          // (G*H) b_hh, or nullptr (no bias): its unfolded blocks
  const S* b_ih;                          // (G*H) b_ih, or nullptr: read by bias_in_cell cells only
  std::array<const S*, kMaxExtra> extra;  // the cell's extra parameters, in Cell::extra order
};

// The views of one row that a cell's backward reads and writes.
template <class S>
struct CellBwd {
  S* dg;                                  // (G*H) out: dL/d(W_hh h_{t-1} + b_hh), gate pre-activations
  S* dg_in;                               // (split_gates*H) out: dL/d(W_ih x + b_ih) of the split blocks
  S* dh_prev;                             // (H) out: the direct part of dL/dh_{t-1} (the W_hh part is
                                          //     added by the caller's product)
  S* dc;                                  // (H) in: dL/dc_t via step t+1; out: dL/dc_{t-1} (has_c)
  const S* dh;                            // (H) dL/dh_t (total)
  const S* act;                           // (G*H) the activated gates of the forward
  const S* h_prev;                        // (H) h_{t-1}
  const S* c_prev;                        // (H) c_{t-1} (has_c), else nullptr
  const S* c;                             // (H) c_t (has_c), else nullptr
  const S* dmid;                          // (H) two-phase cells: dL/dm_t of the mid-step product
  const S* aux;                           // (aux_units*H) what the forward saved
  std::array<const S*, kMaxExtra> extra;  // the cell's extra parameters
  std::array<S*, kMaxExtra> dextra;       // their gradients, accumulated (+=) over rows
  const S* b_ih;                          // (G*H) bias_in_cell cells: b_ih, or nullptr (no bias)
  const S* b_hh;                          // (G*H) bias_in_cell cells: b_hh, or nullptr
  S* db_ih;                               // (G*H) bias_in_cell cells: dL/db_ih, accumulated, or nullptr
  S* db_hh;                               // (G*H) bias_in_cell cells: dL/db_hh, accumulated, or nullptr
};

namespace cellmath {

using Eigen::internal::padd;
using Eigen::internal::pmadd;
using Eigen::internal::pmul;
using Eigen::internal::psub;

template <class T, class S>
inline T load(const S* p) {
  if constexpr (std::is_same_v<T, S>) {
    return *p;
  } else {
    return Eigen::internal::ploadu<T>(p);
  }
}
template <class T, class S>
inline void store(S* p, const T& x) {
  if constexpr (std::is_same_v<T, S>) {
    *p = x;
  } else {
    Eigen::internal::pstoreu(p, x);
  }
}
template <class T, class S>
inline T splat(S x) {
  if constexpr (std::is_same_v<T, S>) {
    return x;
  } else {
    return Eigen::internal::pset1<T>(x);
  }
}

template <class T>
struct Tag {
  using type = T;
};

// Runs f(Tag<T>{}, j) over [j0, j1): packets of V units where S = float (and the SIMD
// variant has packets), the scalar S for the rest.
template <class S, class F>
inline void for_units(Index j0, Index j1, F&& f) {
  Index j = j0;
  if constexpr (vec::enabled<S>()) {
    using P = vec::Packet<S>;
    constexpr Index V = vec::width<S>();
    for (; j + V <= j1; j += V) f(Tag<P>{}, j);
  }
  for (; j < j1; ++j) f(Tag<S>{}, j);
}

}  // namespace cellmath

// Cell::two_phase, false for a cell that does not declare it.
template <class C, class = void>
struct two_phase_of : std::false_type {};
template <class C>
struct two_phase_of<C, std::void_t<decltype(C::two_phase)>> : std::bool_constant<C::two_phase> {};

// Cell::row_wide and Cell::bias_in_cell, false for a cell that does not declare them.
template <class C, class = void>
struct row_wide_of : std::false_type {};
template <class C>
struct row_wide_of<C, std::void_t<decltype(C::row_wide)>> : std::bool_constant<C::row_wide> {};
template <class C, class = void>
struct bias_in_cell_of : std::false_type {};
template <class C>
struct bias_in_cell_of<C, std::void_t<decltype(C::bias_in_cell)>> : std::bool_constant<C::bias_in_cell> {};

// A compile-time list of cell types (cells/all.hpp holds the registered one).
template <class... Cells>
struct CellList {};

}  // namespace rnnfast

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
