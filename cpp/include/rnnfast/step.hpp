// rnnfast/step.hpp - one time step of one layer for streaming inference (RNNBase.step), generic over
// the cell.
//
// B = batch, I = input size, H = hidden size, G = gates (Cell::gates)
//
// No time loop, no training cache and no allocation: two products (W_ih x, W_hh h, GEMV
// when B = 1) and the cell's pointwise pass (Cell::forward), into caller-owned outputs and a
// caller-owned workspace. A sequence call with T = 1 (sequence.hpp) sets up the time loop, the
// packed weights and the thread team for one step, which costs several times the step itself.
// step_forward multiplies the weights as they are (Eigen's GEMV at B = 1); step_forward_packed runs a
// prepacked layer (rnnfast.nn.FrozenRNN) through the packed kernels, in bf16 if it was packed so.
#pragma once

#include <algorithm>

#include "rnnfast/cells/cell.hpp"
#include "rnnfast/common.hpp"
#include "rnnfast/sequence.hpp"

namespace rnnfast {

// Workspace the step functions need, in elements of S.
constexpr Index step_workspace_size(Index B, Index G, Index H) {
  return 2 * B * G * H + 2 * B * H;
}

namespace detail {

// act (B, G*H) += b_ih + bias2 (bias2: the first n_bias2 entries of b_hh, its folded blocks).
template <class S>
void add_step_bias(S* act, const S* b_ih, const S* b_hh, Index n_bias2, Index B, Index GH) {
  for (Index b = 0; b < B; ++b) {
    S* row = act + b * GH;
    for (Index j = 0; j < GH; ++j) row[j] += b_ih[j];
    for (Index j = 0; j < n_bias2; ++j) row[j] += b_hh[j];
  }
}

// act = x W_ih^T + b_ih + bias2 (bias2: the first n_bias2 entries of b_hh, its folded blocks);
// gh = h_prev W_hh^T (zero without h_prev). Row-major (B, GH) each.
template <class S>
void step_products(S* act, S* gh, const S* x, const S* h_prev, const S* w_ih, const S* w_hh, const S* b_ih,
                   const S* b_hh, Index n_bias2, Index B, Index I, Index H, Index GH) {
  MatMap<S> A(act, B, GH);
  A.noalias() = CMatMap<S>(x, B, I) * CMatMap<S>(w_ih, GH, I).transpose();
  if (b_ih) add_step_bias(act, b_ih, b_hh, n_bias2, B, GH);
  if (h_prev) {
    MatMap<S>(gh, B, GH).noalias() = CMatMap<S>(h_prev, B, H) * CMatMap<S>(w_hh, GH, H).transpose();
  } else {
    std::fill(gh, gh + B * GH, S(0));
  }
}

// Cell::forward of rows 0..B-1 on the units [k0, k1): row's parameters are set, act and gh hold the
// products, zeros (B, H) stands in for a missing state.
template <class Cell, class S>
void forward_rows(CellFwd<S>& row, S* h, S* c, S* act, const S* gh, const S* zeros, const S* h_prev,
                  const S* c_prev, const CellOptions& opt, Index B, Index H, Index k0, Index k1) {
  const Index GH = Cell::gates * H;
  for (Index b = 0; b < B; ++b) {
    row.act = act + b * GH;
    row.gh = gh + b * GH;
    row.h_prev = h_prev ? h_prev + b * H : zeros + b * H;
    row.h = h + b * H;
    if constexpr (Cell::has_c) {
      row.c_prev = c_prev ? c_prev + b * H : zeros + b * H;
      row.c = c + b * H;
    }
    Cell::forward(row, H, k0, k1, opt);
  }
}

// The cells of one step once act and gh hold the products: a two-phase cell's gates and m_t first,
// then last_product(mid) writes gh's last block (m_t W_h,last^T), then every row's cell.
template <class Cell, class S, class LastProduct>
void step_cells(S* h, S* c, S* work, const S* h_prev, const S* c_prev, const Weights<S>& w,
                const CellOptions& opt, Index B, Index H, LastProduct&& last_product) {
  constexpr Index G = Cell::gates;
  const Index GH = G * H;
  S* act = work;
  S* gh = work + B * GH;
  S* zeros = work + 2 * B * GH;
  S* mid = zeros + B * H;  // m_t of a two-phase cell (B, H)
  if (!h_prev || (Cell::has_c && !c_prev)) std::fill(zeros, zeros + B * H, S(0));
  CellFwd<S> row{};
  row.b_hh = w.b_hh;
  row.b_ih = w.b_ih;
  row.extra = w.extra;
  if constexpr (two_phase_of<Cell>::value) {
    // gates 0..G-2 and m_t first, then gh's last block = m_t W_h,last^T (its h_{t-1} product is
    // replaced)
    for (Index b = 0; b < B; ++b) {
      row.act = act + b * GH;
      row.gh = gh + b * GH;
      row.h_prev = h_prev ? h_prev + b * H : zeros + b * H;
      row.aux = mid + b * H;
      Cell::forward_gates(row, H, 0, H, opt);
    }
    last_product(mid, gh + (G - 1) * H);
    row.aux = nullptr;
  }
  forward_rows<Cell>(row, h, c, act, gh, zeros, h_prev, c_prev, opt, B, H, 0, H);
}

}  // namespace detail

namespace detail {

// Threads for one step: a team when its products are worth a parallel region (product_threads with
// the step's rows: from ~2 MFLOP at B = 1, e.g. LSTM H >= 384 with I = H). Two-phase and row-wide
// cells, whose cells need every unit, take one.
template <class Cell>
int step_threads(Index B, Index I, Index H, bool has_h, Index parts) {
  if constexpr (two_phase_of<Cell>::value || row_wide_of<Cell>::value) {
    return 1;
  } else {
    const double flops =
        2.0 * static_cast<double>(B * Cell::gates * H) * static_cast<double>(I + (has_h ? H : 0));
    return product_threads(flops, parts, B);
  }
}

// One step over a team of nth threads split by blocks of V hidden units (the time loop's split):
// products(j0, j1, ub0, ub1) writes act and gh (zeros without h_prev) for the thread's units, all
// gates; the biases are added and the units' cells run on the same thread, with no barrier. Each
// output element is computed as on one thread, so the results are bitwise the same.
template <class Cell, class S, class Products>
void step_team(int nth, S* h, S* c, S* work, const S* h_prev, const S* c_prev, const Weights<S>& w,
               const CellOptions& opt, Index B, Index H, Products&& products) {
  constexpr Index G = Cell::gates;
  const Index GH = G * H;
  constexpr bool BC = bias_in_cell_of<Cell>::value;
  S* act = work;
  S* gh = work + B * GH;
  S* zeros = work + 2 * B * GH;
  if (!h_prev || (Cell::has_c && !c_prev)) std::fill(zeros, zeros + B * H, S(0));
  const Index nblocks = (H + vec::width<S>() - 1) / vec::width<S>();
#if defined(_OPENMP)
#pragma omp parallel num_threads(nth)
#endif
  {
    const OwnUnits u = own_units<S>(nblocks, H);
    if (u.ub1 > u.ub0) {
      const Index j0 = u.j0, j1 = u.j1;
      products(j0, j1, u.ub0, u.ub1);
      for (Index b = 0; b < B; ++b)
        for (Index g = 0; g < G; ++g) {
          S* a = act + b * GH + g * H;
          if (w.b_ih && !BC) {  // as add_step_bias: b_ih, then a folded block of b_hh
            for (Index j = j0; j < j1; ++j) a[j] += w.b_ih[g * H + j];
            if (g < Cell::folded_hh_gates)
              for (Index j = j0; j < j1; ++j) a[j] += w.b_hh[g * H + j];
          }
          if (!h_prev) std::fill(gh + b * GH + g * H + j0, gh + b * GH + g * H + j1, S(0));
        }
      CellFwd<S> row{};
      row.b_hh = w.b_hh;
      row.b_ih = w.b_ih;
      row.extra = w.extra;
      forward_rows<Cell>(row, h, c, act, gh, zeros, h_prev, c_prev, opt, B, H, j0, j1);
    }
  }
}

}  // namespace detail

// h_prev == nullptr (and c_prev == nullptr) means the zero state. A large step runs over a team
// (detail::step_threads, step_team): each thread multiplies its units' rows of W_ih and W_hh, gate
// by gate.
template <class Cell, class S>
void step_forward(S* h,                 // (B, H) out: h_t
                  S* c,                 // (B, H) out: c_t (has_c), else ignored
                  S* work,              // step_workspace_size(B, G, H)
                  const S* x,           // (B, I)
                  const S* h_prev,      // (B, H) or nullptr
                  const S* c_prev,      // (B, H) or nullptr (has_c)
                  const Weights<S>& w,  // w_ih (G*H, I), w_hh (G*H, H), biases (G*H) or nullptr, extra
                  const CellOptions& opt, Index B, Index I, Index H) {
  constexpr Index G = Cell::gates;
  const Index GH = G * H;
  constexpr bool BC = bias_in_cell_of<Cell>::value;  // the cell adds its biases itself
  const int nth =
      detail::step_threads<Cell>(B, I, H, h_prev != nullptr, (H + vec::width<S>() - 1) / vec::width<S>());
  if (nth > 1) {
    using Block = Eigen::Map<Mat<S>, 0, Eigen::OuterStride<>>;
    detail::step_team<Cell>(
        nth, h, c, work, h_prev, c_prev, w, opt, B, H, [&](Index j0, Index j1, Index, Index) {
          for (Index g = 0; g < G; ++g) {
            const Index r0 = g * H + j0, n = j1 - j0;
            Block(work + r0, B, n, Eigen::OuterStride<>(GH)).noalias() =
                CMatMap<S>(x, B, I) * CMatMap<S>(w.w_ih + r0 * I, n, I).transpose();
            if (h_prev)
              Block(work + B * GH + r0, B, n, Eigen::OuterStride<>(GH)).noalias() =
                  CMatMap<S>(h_prev, B, H) * CMatMap<S>(w.w_hh + r0 * H, n, H).transpose();
          }
        });
    return;
  }
  detail::step_products(work, work + B * GH, x, h_prev, w.w_ih, w.w_hh, BC ? nullptr : w.b_ih, w.b_hh,
                        w.b_ih && !BC ? Cell::folded_hh_gates * H : 0, B, I, H, GH);
  detail::step_cells<Cell>(h, c, work, h_prev, c_prev, w, opt, B, H, [&](const S* mid, S* gh_last) {
    Eigen::Map<Mat<S>, 0, Eigen::OuterStride<>> last(gh_last, B, H, Eigen::OuterStride<>(GH));
    last.noalias() = CMatMap<S>(mid, B, H) * CMatMap<S>(w.w_hh + (G - 1) * H * H, H, H).transpose();
  });
}

// step_forward on a prepacked layer (w.pre, see sequence.hpp's Prepacked; only w.pre, the biases and
// the extra parameters are read): both products through the packed kernels in the layer's precision
// (bf16: the stream operands, half the bytes of float32, at any B). The same results as step_forward
// to rounding (the products sum in k order here). A large step runs over a team as step_forward's
// (both packed operands group a unit block's gates together: a thread's blocks are one range of
// vectors).
template <class Cell, class S>
void step_forward_packed(S* h, S* c, S* work, const S* x, const S* h_prev, const S* c_prev,
                         const Weights<S>& w, const CellOptions& opt, Index B, Index I, Index H) {
  constexpr Index G = Cell::gates;
  const Index GH = G * H;
  constexpr bool BC = bias_in_cell_of<Cell>::value;
  if (!w.pre) throw Error("step_forward_packed: expected prepacked weights");
  const Prepacked<S>& pre = *w.pre;
  S* act = work;
  S* gh = work + B * GH;
  const int nth = detail::step_threads<Cell>(B, I, H, h_prev != nullptr, pre.hh.blocks());
  if (nth > 1) {
    detail::step_team<Cell>(nth, h, c, work, h_prev, c_prev, w, opt, B, H,
                            [&](Index, Index, Index ub0, Index ub1) {
                              packed_bf16::product(act, GH, x, I, B, pre.ih, ub0 * G, ub1 * G, false);
                              if (h_prev)
                                packed_bf16::product(gh, GH, h_prev, H, B, pre.hh, ub0 * G, ub1 * G, false);
                            });
    return;
  }
  packed_bf16::product(act, GH, x, I, B, pre.ih, 0, pre.ih.nvec(), false);
  if (w.b_ih && !BC) detail::add_step_bias(act, w.b_ih, w.b_hh, Cell::folded_hh_gates * H, B, GH);
  if (h_prev) {
    packed_bf16::product(gh, GH, h_prev, H, B, pre.hh, 0, pre.hh.nvec(), false);
  } else {
    std::fill(gh, gh + B * GH, S(0));
  }
  detail::step_cells<Cell>(h, c, work, h_prev, c_prev, w, opt, B, H, [&](const S* mid, S* gh_last) {
    packed_bf16::product(gh_last, GH, mid, H, B, pre.hh_mid, 0, pre.hh_mid.nvec(), false);
  });
}

}  // namespace rnnfast
