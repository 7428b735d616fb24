// rnnfast/sequence.hpp - whole-sequence forward and backward (full BPTT), generic over the cell.
//
// T = time steps, B = batch, I = input size, H = hidden size, G = gates (Cell::gates)
//
// Forward, per call:
//   gx (T*B, G*H) = X (T*B, I) * W_ih^T + bias          one GEMM over all steps, biases folded in
//   per step t:  gh (B, G*H) = h_{t-1} (B, H) * W_hh^T   one gate-merged recurrent GEMM
//                one fused pointwise pass (Cell::forward, cells/<cell>.hpp) turns gx_t + gh into the
//                activated gates, in place in gx_t, and writes c_t, h_t, y_t
// Only the leading Cell::folded_hh_gates blocks of b_hh are folded (the GRU's b_hn sits inside
// r * (W_hn h + b_hn), so its cell adds it). In training the gx buffer *is* the cache's activation
// buffer (act), so nothing is copied.
//
// Backward, per call: only the dh (and dc) recurrence runs per step:
//   dgates_t = Cell::backward (pointwise)           stored for every step (T*B, G*H)
//   dh_{t-1} = direct path + dgates_t (B, G*H) * W_hh (G*H, H)
// then, after the loop, single GEMMs / reductions over the whole sequence (K = T*B):
//   dW_hh = dgates^T * H_prev,  dW_ih = dgates^T * X,  dx = dgates * W_ih,  db = column sums.
// For a cell with split gates (the GRU's n block), dL/d(W_hh h + b_hh) and dL/d(W_ih x + b_ih) differ
// in those blocks; the cell writes the latter to dg_in, swapped in between the two sets of GEMMs.
//
// Row-wide cells (Cell::row_wide, layer normalisation) run their pointwise passes over whole rows:
// forward after one more barrier per step (every unit of gh is there), the rows split over the team;
// backward on one thread (its accumulated parameter gradients keep one summation order), with one
// more barrier per step (every column of dL/dh_t is there). Cells with Cell::bias_in_cell get no
// folded bias and accumulate dL/db_ih, dL/db_hh themselves (no column sums after the loop).
//
// Regularisation (Weights::zoneout_h/_c, dropout_h; reference/regularisers.py): zoneout blends the
// cell's h~_t (c~_t, kept in Activations::c_cand for backward) with h_{t-1} (c_{t-1}) after the
// cell, per unit; recurrent dropout multiplies the product's input by d, kept as a ping-pong
// d * h buffer written next to h_t (no extra barrier); backward splits dL/dh_t (dL/dc_t) into the
// cell's and the direct part and scales the product's dL/dh_{t-1} by d.
//
// Precision (issue 18): a float32 call on a thread in bf16 mode (bf16.hpp, core._set_precision) runs
// every product on bf16 operands with fp32 accumulation: the input projection and the backward GEMMs
// on bf16-rounded copies (bf16 x bf16 is exact in fp32), the per-step products on a packed bf16 copy
// of W_hh, made once per call (packed_bf16.hpp; the only copy of W_hh a bf16 call holds). Biases,
// cells, states and gradients stay fp32. float64 calls ignore the mode.
//
// Ragged batches: with lengths (B,), steps t >= lengths[b] carry sequence b's state unchanged and
// write y = 0 (PyTorch's packed-sequence semantics); backward gives them zero dgates and carries
// dh (and dc) through. Workspaces come from Scratch buffers reused across calls (parallel.hpp), never
// allocated inside the time loop.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>

#include "rnnfast/cells/cell.hpp"
#include "rnnfast/common.hpp"
#include "rnnfast/packed.hpp"
#include "rnnfast/packed_bf16.hpp"
#include "rnnfast/parallel.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace rnnfast {

// What the generic code needs to know of a cell at run time (its traits, as values).
struct CellInfo {
  const char* name;
  Index gates;
  bool has_c;
  Index aux_units;
  int n_extra;
  std::array<ExtraParam, kMaxExtra> extra;
  bool two_phase;  // two_phase_of<Cell>: the last gate block's product takes m_t
};

template <class Cell>
constexpr CellInfo info_of() {
  CellInfo i{Cell::name,
             Cell::gates,
             Cell::has_c,
             Cell::aux_units,
             static_cast<int>(Cell::extra.size()),
             {},
             two_phase_of<Cell>::value};
  static_assert(Cell::extra.size() <= static_cast<std::size_t>(kMaxExtra), "too many extra parameters");
  for (std::size_t k = 0; k < Cell::extra.size(); ++k) i.extra[k] = Cell::extra[k];
  return i;
}

// A layer's weights packed once for inference calls (rnnfast.nn.FrozenRNN; the binding owns the
// storage), in the precision of the calls that use it, so that a call neither packs W_hh nor rounds
// W_ih: the forward operand of W_hh (K = H; a two-phase cell's last block on its own), W_ih packed the
// same way (K = I) for the one-step product (step.hpp), and W_ih as the input GEMM's operand (bf16:
// its rounded values). A bf16 layer holds the stream operands (bf16) only; a call past the stream
// mode's batch widens them (packed_bf16::widen), which is bitwise what packing W_hh would give.
template <class S>
struct Prepacked {
  packed_bf16::Operand<S> hh, hh_mid, ih;
  const S* w_ih_gemm = nullptr;  // (G*H, I)
};

// The parameters of one layer (PyTorch layout) as named arrays: the four every cell has, then the
// cell's own (Cell::extra order, per_unit*H each). Biases are both present or both nullptr.
template <class S>
struct Weights {
  const S* w_ih;                          // (G*H, I)
  const S* w_hh;                          // (G*H, H)
  const S* b_ih;                          // (G*H) or nullptr
  const S* b_hh;                          // (G*H) or nullptr
  std::array<const S*, kMaxExtra> extra;  // the cell's extra parameters
  // Training-time regularisation (reference/regularisers.py), nullptr = none. Zoneout (Krueger et al.
  // 2017): h_t = m^h_t * h_{t-1} + (1 - m^h_t) * h~_t, c_t likewise with m^c_t (has_c), h~_t and c~_t
  // the cell's own update; masks (T, B, H), 1 = keep the old value. Variational recurrent dropout
  // (Gal & Ghahramani 2016): W_hh multiplies d * h_{t-1}, one mask d (B, H) per sequence (its values
  // used as given: {0, 1/(1-p)}); the cell itself still sees the undropped h_{t-1}, except a two-phase
  // cell's m_t = r * (d * h_{t-1}) (Keras's GRU(reset_after=False) with recurrent_dropout).
  const S* zoneout_h = nullptr;       // (T, B, H)
  const S* zoneout_c = nullptr;       // (T, B, H), has_c
  const S* dropout_h = nullptr;       // (B, H)
  const Prepacked<S>* pre = nullptr;  // inference only: the layer packed once (see Prepacked)
};

// What backward needs from forward, as views into caller-owned storage (see cache_sizes()).
template <class S>
struct Activations {
  S* act;  // (T, B, G*H) activated gates: rnn h_t; lstm i, f, g, o; gru r, z, n
  S* h;    // (T+1, B, H) h[0] = state entering step 0, h[t+1] = state after step t
  S* c;    // (T+1, B, H) cell states (has_c), else nullptr
  S* aux;  // (T, B, aux_units*H) the cell's saved values (lstm tanh(c_t); gru W_hn h + b_hn), or nullptr
  S* c_cand = nullptr;  // (T, B, H) c~_t before zoneout (Weights::zoneout_c given), else nullptr
};

// Element counts of the Activations buffers for a run of T steps.
struct CacheSizes {
  Index act = 0, h = 0, c = 0, aux = 0;
};
inline CacheSizes cache_sizes(const CellInfo& cell, const Dims& d) {
  CacheSizes s;
  s.act = d.T * d.B * cell.gates * d.H;
  s.h = (d.T + 1) * d.B * d.H;
  s.c = cell.has_c ? s.h : 0;
  s.aux = d.T * d.B * cell.aux_units * d.H;
  return s;
}

// The gradient outputs of a backward call. All are written (=), none accumulated.
template <class S>
struct Grads {
  S* dx;                             // (T, B, I), or nullptr when not wanted (saves a GEMM)
  S* dh0;                            // (B, H) dL/dh0
  S* dc0;                            // (B, H) dL/dc0 (has_c), else nullptr
  S* dw_ih;                          // (G*H, I)
  S* dw_hh;                          // (G*H, H)
  S* db_ih;                          // (G*H) or nullptr (no bias)
  S* db_hh;                          // (G*H) or nullptr
  S* dh_all;                         // (T, B, H) total dL/dh_t per step (zero rows at padded steps); required
  std::array<S*, kMaxExtra> dextra;  // (per_unit*H) each, the cell's extra parameters
};

// out[j] = sum_r m[r, j] for a row-major (rows, cols) matrix, summed row by row in a fixed order.
// Eigen's colwise().sum() into a NumPy buffer picks its vectorised traversal by the buffer's
// alignment, so the last bits of the sums would depend on where NumPy put the output; this loop
// does the same additions in the same order wherever the buffers are (bitwise reproducible).
template <class S>
inline void column_sums(S* out, const S* m, Index rows, Index cols) {
  std::fill(out, out + cols, S(0));
  for (Index r = 0; r < rows; ++r) {
    const S* row = m + r * cols;
    for (Index j = 0; j < cols; ++j) out[j] += row[j];
  }
}

namespace detail {

template <class S>
inline void copy_or_zero(S* dst, const S* src, Index n) {
  if (dst == src) return;
  if (src)
    std::memcpy(dst, src, sizeof(S) * static_cast<std::size_t>(n));
  else
    std::fill(dst, dst + n, S(0));
}

// The share of a time loop's work this thread owns: unit blocks [ub0, ub1) of the packed W_hh, i.e.
// hidden units [j0, j1) (all gates of each), out of `nblocks` split near-evenly over the team of nth.
struct OwnUnits {
  Index ub0, ub1, j0, j1;
  int nth, tid;
};
template <class S>
inline OwnUnits own_units(Index nblocks, Index H) {
  const TeamSlot me = team_slot();
  OwnUnits u{0, 0, 0, 0, me.nth, me.tid};
  split_range(nblocks, me.nth, me.tid, u.ub0, u.ub1);
  const Index V = packed::width<S>();
  u.j0 = std::min(H, u.ub0 * V);
  u.j1 = std::min(H, u.ub1 * V);
  return u;
}

}  // namespace detail

// Testing hook (core._force_loop_threads): n > 0 makes the time loops run teams of min(n, unit
// blocks) threads whatever loop_threads estimates (which runs 1 thread when the machine is busy), so
// the tests of bitwise identity across thread counts compare what they claim to; 0 = automatic.
inline std::atomic<int>& forced_loop_threads() {
  static std::atomic<int> n{0};
  return n;
}
inline int time_loop_threads(Index B, Index G, Index H, Index nblocks) {
  const int forced = forced_loop_threads().load(std::memory_order_relaxed);
  if (forced > 0) return forced_team(forced, nblocks);  // 1 in a fork() child, like the product hook
  return loop_threads(B, G, H, nblocks);
}

namespace detail {
// The operand a call runs on, from a prepacked one: itself when its mode is the call's; for a bf16 call
// past the stream mode's batch, the wide copy of the stream operand, widened into fstore.
template <class S>
packed_bf16::Operand<S> from_prepacked(const packed_bf16::Operand<S>& pre, packed_bf16::Mode mode,
                                       S* fstore) {
  if (pre.mode == mode) return pre;
  if constexpr (std::is_same_v<S, float>) {
    if (pre.mode == packed_bf16::Mode::stream && mode == packed_bf16::Mode::wide) {
      packed_bf16::Operand<S> op{mode, {}, {}};
      packed_bf16::widen(op.f, fstore, pre.b);
      return op;
    }
  }
  throw Error("prepacked weights: packed for another precision than the call's");
}
}  // namespace detail

// ------------------------------------------------------------------------------------------------
// The kernels, generic over the cell (instantiated for every registered cell in src/cells_*.cpp).
//
// Forward: y (T, B, H), h_n (B, H), c_n (B, H, has_c) are written. cache == nullptr is inference (no
// activations stored); otherwise cache views buffers of cache_sizes(info_of<Cell>(), d) elements.
// h0 / c0 may be nullptr (zeros) and may alias cache->h / cache->c (step 0's slot). lengths (B) in
// [0, T] or nullptr. With w.pre (inference only) the call reads the prepacked operands instead of
// packing W_hh and rounding W_ih: bitwise the same results.
//
// Backward: reads the cache of the matching forward. dy (T, B, H), dh_n, dc_n (B, H) may be nullptr
// (zeros). cut (T, B) or nullptr: cut[t*B + b] != 0 means the state entering step t of sequence b is a
// constant (a reset in a stream), so no gradient flows from step t into earlier steps of b.

template <class Cell, class S>
void sequence_forward(S* y,                         // (T, B, H)
                      S* h_n,                       // (B, H)
                      S* c_n,                       // (B, H) has_c, else ignored
                      const Activations<S>* cache,  // nullptr = inference
                      const S* x,                   // (T, B, I)
                      const S* h0,                  // (B, H) or nullptr
                      const S* c0,                  // (B, H) has_c, or nullptr
                      const Weights<S>& w,          // w_ih (G*H, I), w_hh (G*H, H), biases (G*H), extra
                      const std::int64_t* lengths,  // (B) or nullptr
                      const CellOptions& opt, const Dims& d) {
  constexpr Index G = Cell::gates;
  constexpr bool has_c = Cell::has_c;
  constexpr bool TP = two_phase_of<Cell>::value;  // the last block's product takes m_t, not h_{t-1}
  constexpr Index GP = TP ? G - 1 : G;            // gate blocks of the product on h_{t-1}
  constexpr bool RW = row_wide_of<Cell>::value;   // the cell works on whole rows
  constexpr bool BC = bias_in_cell_of<Cell>::value;
  static_assert(!(TP && RW), "a cell cannot be both two_phase and row_wide");
  const Index T = d.T, B = d.B, I = d.I, H = d.H, GH = G * H, BH = B * H;
  const bool training = cache != nullptr;
  const bool bf16 = packed_bf16::use_bf16<S>();
  const Prepacked<S>* pre = w.pre;
  if (pre && training) throw Error("sequence_forward: prepacked weights are for inference calls only");
  ScopedFlushDenormals flush;

  // Workspaces, reused across calls (Scratch). Inference keeps two state slots (ping-pong) instead
  // of T+1, and its gates in a scratch buffer; training writes the gates into the cache directly.
  Scratch<S> gx_store(0, training ? 0 : T * B * GH);               // (T*B, G*H), inference only
  Scratch<S> state_store(1, training ? 0 : (has_c ? 4 : 2) * BH);  // ping-pong h (and c), inference
  Scratch<S> gh(2, B * GH);                                        // (B, G*H) W_hh h_{t-1}
  const Index pw_size = packed::PackedMatrix<S>::size(H, H, GP);
  const Index pw_all = pw_size + (TP ? packed::PackedMatrix<S>::size(H, H, 1) : 0);
  const packed_bf16::Mode pmode = packed_bf16::mode_for<S>(B);  // bf16: streamed or widened W_hh
  const bool repack = !pre || pre->hh.mode != pmode;            // prepacked: nothing, or the widening
  Scratch<S> pw_store(3, repack ? packed_bf16::float_size(pmode, pw_all) : 0);
  Scratch<bf16::Bf16> pwb_store(3, pre ? 0 : packed_bf16::bf16_size(pmode, pw_all));  // bf16 W_hh (stream)
  Scratch<S> rnd_store(5, bf16 ? T * B * I + (pre ? 0 : GH * I) : 0);                 // bf16(x), bf16(W_ih)
  Scratch<S> mid_store(7, TP && !training ? BH : 0);  // m_t (B, H) of two-phase cells, inference
  // Regularisation (Weights): d * h_{t-1} ping-pong for the product (dropout), c~ rows (zoneout of c,
  // inference; training keeps c~_t in cache->c_cand for backward).
  const S* zh = w.zoneout_h;
  const S* zc = has_c ? w.zoneout_c : nullptr;
  const S* dmask = w.dropout_h;
  if (training && zc && !cache->c_cand) throw Error("sequence_forward: zoneout_c needs the cache's c_cand");
  Scratch<S> reg_store(4, (dmask ? 2 * BH : 0) + (zc && !training ? BH : 0));
  S* const hd_buf = reg_store.data();
  S* const cz_buf = reg_store.data() + (dmask ? 2 * BH : 0);
  auto hd_at = [&](Index t) -> S* { return hd_buf + (t % 2) * BH; };  // d * h_{t-1} entering step t
  S* gx_ptr = training ? cache->act : gx_store.data();
  auto h_at = [&](Index t) -> S* {  // state entering step t (t = T: the final state)
    return training ? cache->h + t * BH : state_store.data() + (t % 2) * BH;
  };
  auto c_at = [&](Index t) -> S* {
    return training ? cache->c + t * BH : state_store.data() + (2 + t % 2) * BH;
  };

  detail::copy_or_zero(h_at(0), h0, BH);
  if constexpr (has_c) detail::copy_or_zero(c_at(0), c0, BH);
  if (dmask)
    for (Index i = 0; i < BH; ++i) hd_at(0)[i] = dmask[i] * h_at(0)[i];

  // Input projection of all steps: one GEMM over T*B rows, biases folded in (a bias_in_cell cell adds
  // its biases itself).
  MatMap<S> gx(gx_ptr, T * B, GH);
  const bool fold_bias = w.b_ih && !BC;
  if (T * B > 0) {
    RowVec<S> bias;
    if (fold_bias) {
      bias = CRowVecMap<S>(w.b_ih, GH);
      bias.head(Cell::folded_hh_gates * H) += CRowVecMap<S>(w.b_hh, Cell::folded_hh_gates * H);
    }
    Index used = 0;  // bf16: the product of the rounded operands, fp32 accumulation
    const S* xo = packed_bf16::operand(bf16, x, T * B * I, rnd_store.data(), &used);
    const S* wo = pre ? pre->w_ih_gemm : packed_bf16::operand(bf16, w.w_ih, GH * I, rnd_store.data(), &used);
    parallel_product(gx, CMatMap<S>(xo, T * B, I), CMatMap<S>(wo, GH, I).transpose(),
                     fold_bias ? bias.data() : nullptr);
  }

  // W_hh packed once for all steps, by blocks of V hidden units holding all G gates (packed.hpp);
  // for a two-phase cell the first G-1 blocks, and the last one (multiplying m_t) on its own.
  packed_bf16::Operand<S> pw{pmode, {}, {}}, pw_mid{pmode, {}, {}};
  if (pre) {
    pw = detail::from_prepacked(pre->hh, pmode, pw_store.data());
    if constexpr (TP) pw_mid = detail::from_prepacked(pre->hh_mid, pmode, pw_store.data() + pw_size);
  } else {
    packed_bf16::pack_forward(pw, pw_store.data(), pwb_store.data(), w.w_hh, GP, H);
    if constexpr (TP)
      packed_bf16::pack_forward(pw_mid, pw_store.data() + pw_size, pwb_store.data() + pw_size,
                                w.w_hh + GP * H * H, Index(1), H);
  }
  auto mid_at = [&](Index t) -> S* {
    return training ? cache->aux + t * BH * Cell::aux_units : mid_store.data();
  };
  const Index nblocks = pw.blocks();
  const int nthreads = time_loop_threads(B, G, H, nblocks);

  // The time loop. Each thread owns the unit blocks [ub0, ub1): it computes their gates' recurrent
  // product, then their cells, for every row; one barrier per step publishes h_t to all threads:
  // a StepBarrier (parallel.hpp; a few hundred ns a round where libgomp's barrier takes 0.5-3 us),
  // sized once to the team OpenMP actually started. (Running the B = 1 product in tile-sized chunks,
  // each followed by its units' cells, was measured 10-15% slower on one Zen 3 thread: not done.)
  StepBarrier step_barrier;
#if defined(_OPENMP)
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
#endif
  {
    ScopedFlushDenormals flush_thread;
    const auto [ub0, ub1, j0, j1, nth, tid] = detail::own_units<S>(nblocks, H);
#if defined(_OPENMP)
    if (nth > 1) {
#pragma omp single
      step_barrier.reset(nth);
    }
#endif
    // A row-wide cell runs whole rows, the rows [rb0, rb1) of the batch split over the team.
    Index rb0 = 0, rb1 = B;
    if constexpr (RW) split_range(B, nth, tid, rb0, rb1);
    const Index k0 = RW ? 0 : j0, k1 = RW ? H : j1, nk = k1 - k0;  // the units this thread's cells run
    CellFwd<S> row{};
    row.b_hh = w.b_hh;
    row.b_ih = w.b_ih;
    row.extra = w.extra;
    for (Index t = 0; t < T; ++t) {
      const S* hp = h_at(t);
      S* hc = h_at(t + 1);
      // gh (B, G*H) = h_{t-1} (B, H) W_hh^T (d * h_{t-1} with recurrent dropout), this thread's units
      packed_bf16::product(gh.data(), GH, dmask ? hd_at(t) : hp, H, B, pw, ub0 * GP, ub1 * GP, false);
      if constexpr (TP) {
        // phase 1: gates 0..G-2 and m_t of this thread's units; then, once every unit's m_t is
        // there, gh's last block = m_t (B, H) W_h,last^T
        S* mt = mid_at(t);
        for (Index b = 0; b < B; ++b) {
          S* mr = mt + b * H * Cell::aux_units;
          if (lengths && t >= lengths[b]) {  // padded: m = 0 keeps the product finite
            std::fill(mr + j0, mr + j1, S(0));
            continue;
          }
          row.act = gx_ptr + (t * B + b) * GH;
          row.gh = gh.data() + b * GH;
          row.h_prev = dmask ? hd_at(t) + b * H : hp + b * H;  // m_t = r * (d * h_{t-1}) with dropout
          row.aux = mr;
          Cell::forward_gates(row, H, j0, j1, opt);
        }
        if (nth > 1) step_barrier.wait();
        packed_bf16::product(gh.data() + GP * H, GH, mt, H * Cell::aux_units, B, pw_mid, ub0, ub1, false);
      }
      if constexpr (RW) {
        if (nth > 1) step_barrier.wait();  // every unit of gh is there: whole rows from here
      }
      for (Index b = rb0; b < rb1; ++b) {
        S* yr = y + (t * B + b) * H;
        const S* hpr = hp + b * H;
        S* hcr = hc + b * H;
        if (lengths && t >= lengths[b]) {  // padded step: carry the state, output zero
          std::copy(hpr + k0, hpr + k1, hcr + k0);
          if constexpr (has_c)
            std::copy(c_at(t) + b * H + k0, c_at(t) + b * H + k1, c_at(t + 1) + b * H + k0);
          std::fill(yr + k0, yr + k1, S(0));
          if (dmask)
            for (Index j = k0; j < k1; ++j) hd_at(t + 1)[b * H + j] = dmask[b * H + j] * hcr[j];
          continue;
        }
        row.act = gx_ptr + (t * B + b) * GH;
        row.gh = gh.data() + b * GH;
        row.h_prev = hpr;
        row.h = hcr;
        if constexpr (has_c) {
          row.c_prev = c_at(t) + b * H;
          // with zoneout of c the cell writes c~_t aside, and c_t is blended below
          row.c = !zc ? c_at(t + 1) + b * H : training ? cache->c_cand + (t * B + b) * H : cz_buf + b * H;
        }
        row.aux = training && Cell::aux_units > 0 ? cache->aux + (t * B + b) * Cell::aux_units * H : nullptr;
        Cell::forward(row, H, k0, k1, opt);
        if (zh || zc) {
          const Index o = (t * B + b) * H;
          if constexpr (has_c) {
            if (zc) {
              S* cn = c_at(t + 1) + b * H;
              for (Index j = k0; j < k1; ++j)
                cn[j] = zc[o + j] * row.c_prev[j] +
                        (S(1) - zc[o + j]) * row.c[j];  // c_t = m c_{t-1} + (1-m) c~_t
            }
          }
          if (zh)
            for (Index j = k0; j < k1; ++j)
              hcr[j] = zh[o + j] * hpr[j] + (S(1) - zh[o + j]) * hcr[j];  // h_t = m h_{t-1} + (1 - m) h~_t
        }
        if (nk > 0) std::memcpy(yr + k0, hcr + k0, sizeof(S) * static_cast<std::size_t>(nk));
        if (dmask)
          for (Index j = k0; j < k1; ++j)
            hd_at(t + 1)[b * H + j] = dmask[b * H + j] * hcr[j];  // next product's
      }
      if (nth > 1) step_barrier.wait();
    }
  }
  detail::copy_or_zero<S>(h_n, h_at(T), BH);
  if constexpr (has_c) detail::copy_or_zero<S>(c_n, c_at(T), BH);
}

namespace detail {

// The weight and bias gradients and dL/dx of a backward call, once its time loop has left
// dL/d(gates) of every step in dgates (T*B, G*H) (and, for split gates, dL/d(W_ih x + b_ih) of those
// blocks in dgin (T*B, SG*H)): single GEMMs over all T*B rows. dgates is overwritten (split gates).
template <class Cell, class S>
void weight_grads(const Grads<S>& g, const Activations<S>& cache, const S* x, const Weights<S>& w,
                  const std::int64_t* lengths, S* dgates_data, const S* dgin_data, const Dims& d, bool bf16) {
  constexpr Index G = Cell::gates;
  constexpr Index SG = Cell::split_gates;
  constexpr bool TP = two_phase_of<Cell>::value;
  constexpr Index GP = TP ? G - 1 : G;
  constexpr bool BC = bias_in_cell_of<Cell>::value;
  const Index T = d.T, B = d.B, I = d.I, H = d.H, GH = G * H;
  const S* dmask = w.dropout_h;
  MatMap<S> dgates(dgates_data, T * B, GH);
  CMatMap<S> dgin(dgin_data, SG > 0 ? T * B : 0, SG * H);
  // Padded steps have dgates = 0, but 0 * NaN = NaN: a non-finite x on a padded step (never read by
  // the forward), or a non-finite state carried over padded steps (e.g. the h0 of a sequence of
  // length 0, which reaches no output), must not reach dW_ih / dW_hh. Ragged batches therefore use
  // copies of x and of the states h_{t-1} with those rows zeroed (one scratch: x rows, then h rows);
  // full batches use the buffers themselves (no copy).
  const S* x_used = x;
  const S* h_used = cache.h;
  const bool padded = lengths && std::any_of(lengths, lengths + B, [T](std::int64_t n) { return n < T; });
  Scratch<S> zero_store(6, padded ? T * B * (I + H) : 0);
  if (padded) {
    S* xz = zero_store.data();
    S* hz = xz + T * B * I;
    for (Index t = 0; t < T; ++t)
      for (Index b = 0; b < B; ++b) {
        const Index row = t * B + b;
        if (t < lengths[b]) {
          std::copy(x + row * I, x + (row + 1) * I, xz + row * I);
          std::copy(cache.h + row * H, cache.h + (row + 1) * H, hz + row * H);
        } else {
          std::fill(xz + row * I, xz + (row + 1) * I, S(0));
          std::fill(hz + row * H, hz + (row + 1) * H, S(0));
        }
      }
    x_used = xz;
    h_used = hz;
  }
  // With recurrent dropout W_hh multiplied d * h_{t-1}: dL/dW_hh = sum_t dgates_t^T (d * h_{t-1}).
  Scratch<S> drop_store(0, dmask ? T * B * H : 0);
  if (dmask) {
    S* hd = drop_store.data();
    for (Index r = 0; r < T * B; ++r)
      for (Index j = 0; j < H; ++j) hd[r * H + j] = dmask[(r % B) * H + j] * h_used[r * H + j];
    h_used = hd;
  }
  // bf16 mode: every GEMM below multiplies bf16-rounded copies (rnd_store: dgates, h_{t-1}, m_t, x,
  // W_ih), exact products with fp32 accumulation; the bias sums keep the fp32 dgates.
  Scratch<S> rnd_store(2, bf16 ? T * B * (GH + H + (TP ? Cell::aux_units * H : 0) + I) + GH * I : 0);
  Index used = 0;
  const S* dg_op = packed_bf16::operand(bf16, dgates.data(), T * B * GH, rnd_store.data(), &used);
  h_used = packed_bf16::operand(bf16, h_used, T * B * H, rnd_store.data(), &used);
  if constexpr (TP) {
    const S* aux_op =
        packed_bf16::operand(bf16, cache.aux, T * B * Cell::aux_units * H, rnd_store.data(), &used);
    MatMap<S> dW1(g.dw_hh, GP * H, H);
    parallel_product(dW1, CMatMap<S>(dg_op, T * B, GH).leftCols(GP * H).transpose(),
                     CMatMap<S>(h_used, T * B, H));  // dL/dW_h,0..G-2 = sum_t dgates_t^T h_{t-1}
    MatMap<S> dW2(g.dw_hh + GP * H * H, H, H);
    parallel_product(
        dW2, CMatMap<S>(dg_op, T * B, GH).rightCols(H).transpose(),
        CMatMap<S>(aux_op, T * B, H * Cell::aux_units).leftCols(H));  // dL/dW_h,last = sum dg^T m_t
  } else {
    MatMap<S> dWhh(g.dw_hh, GH, H);
    parallel_product(dWhh, CMatMap<S>(dg_op, T * B, GH).transpose(),
                     CMatMap<S>(h_used, T * B, H));  // dL/dW_hh = sum_t dgates_t^T h_{t-1}
  }
  if (g.db_hh && !BC) column_sums(g.db_hh, dgates.data(), T * B, GH);  // dL/db_hh = sum_{t,b} dgates
  if constexpr (SG > 0) {
    dgates.rightCols(SG * H) = dgin;  // now dL/d(W_ih x + b_ih)
    Index at = 0;                     // bf16: re-round them over the first copy
    dg_op = packed_bf16::operand(bf16, dgates.data(), T * B * GH, rnd_store.data(), &at);
  }
  x_used = packed_bf16::operand(bf16, x_used, T * B * I, rnd_store.data(), &used);
  const S* w_ih_op = packed_bf16::operand(bf16, w.w_ih, GH * I, rnd_store.data(), &used);
  MatMap<S> dWih(g.dw_ih, GH, I);
  parallel_product(dWih, CMatMap<S>(dg_op, T * B, GH).transpose(),
                   CMatMap<S>(x_used, T * B, I));  // dL/dW_ih = sum_t dgates_t^T x_t
  if (g.db_ih && !BC) {  // dL/db_ih = sum_{t,b} dgates: without split gates the very sums of db_hh
    if (SG == 0 && g.db_hh) {
      std::copy(g.db_hh, g.db_hh + GH, g.db_ih);
    } else {
      column_sums(g.db_ih, dgates.data(), T * B, GH);
    }
  }
  if (g.dx)
    parallel_product(MatMap<S>(g.dx, T * B, I), CMatMap<S>(dg_op, T * B, GH),
                     CMatMap<S>(w_ih_op, GH, I));  // dL/dx_t = dgates_t W_ih
}

}  // namespace detail

template <class Cell, class S>
void sequence_backward(const Grads<S>& g,            // outputs, see Grads
                       const Activations<S>& cache,  // from the forward
                       const S* x,                   // (T, B, I)
                       const Weights<S>& w,          // w_ih (G*H, I), w_hh (G*H, H), extra
                       const S* dy,                  // (T, B, H) or nullptr
                       const S* dh_n,                // (B, H) or nullptr
                       const S* dc_n,                // (B, H) has_c, or nullptr
                       const std::int64_t* lengths,  // (B) or nullptr
                       const std::uint8_t* cut,      // (T, B) or nullptr
                       const CellOptions& opt, const Dims& d) {
  constexpr Index G = Cell::gates;
  constexpr bool has_c = Cell::has_c;
  constexpr Index SG = Cell::split_gates;
  constexpr Index NX = static_cast<Index>(Cell::extra.size());
  constexpr bool TP = two_phase_of<Cell>::value;  // the last block's product took m_t (aux)
  constexpr Index GP = TP ? G - 1 : G;
  constexpr bool RW = row_wide_of<Cell>::value;      // the cell works on whole rows
  constexpr bool BC = bias_in_cell_of<Cell>::value;  // the cell accumulates db_ih, db_hh
  const Index T = d.T, B = d.B, H = d.H, GH = G * H, BH = B * H;
  const bool bf16 = packed_bf16::use_bf16<S>();
  ScopedFlushDenormals flush;

  // dL/d(gate pre-activations) of every step (of W_hh h + b_hh), and for split gates dL/d(W_ih x +
  // b_ih) of those blocks. Workspaces reused across calls (Scratch).
  Scratch<S> dgates_store(4, T * B * GH);
  Scratch<S> dan_store(5, T * B * SG * H);
  const Index pw_size = packed::PackedMatrix<S>::size(GP * H, H, 1);
  const Index pw_all = pw_size + (TP ? packed::PackedMatrix<S>::size(H, H, 1) : 0);
  const packed_bf16::Mode pmode = packed_bf16::mode_for<S>(B);  // bf16: streamed or widened W_hh
  Scratch<S> pw_store(3, packed_bf16::float_size(pmode, pw_all));
  Scratch<bf16::Bf16> pwb_store(3, packed_bf16::bf16_size(pmode, pw_all));  // bf16 W_hh (stream mode)
  Scratch<S> dmid_store(7, TP ? BH : 0);  // dL/dm_t (B, H) of two-phase cells
  MatMap<S> dgates(dgates_store.data(), T * B, GH);
  MatMap<S> dgin(dan_store.data(), SG > 0 ? T * B : 0, SG * H);
  // Regularisation (Weights): per-row scratch (B, H) each: dL/dh~_t (zoneout of h), m^c * dL/dc_t
  // (zoneout of c), the W_hh product before the dropout mask (recurrent dropout).
  const S* zh = w.zoneout_h;
  const S* zc = has_c ? w.zoneout_c : nullptr;
  const S* dmask = w.dropout_h;
  if (zc && !cache.c_cand) throw Error("sequence_backward: zoneout_c needs the cache's c_cand");
  Scratch<S> reg_store(1, (zh ? BH : 0) + (zc ? BH : 0) + (dmask ? BH : 0));
  S* const dhc_buf = reg_store.data();
  S* const dcz_buf = dhc_buf + (zh ? BH : 0);
  S* const dprod_buf = dcz_buf + (zc ? BH : 0);

  // The running dL/dh (and dL/dc) live in the dh0 (dc0) outputs: written in place.
  detail::copy_or_zero(g.dh0, dh_n, BH);
  if constexpr (has_c) detail::copy_or_zero(g.dc0, dc_n, BH);
  for (Index k = 0; k < NX; ++k) std::fill(g.dextra[k], g.dextra[k] + Cell::extra[k].per_unit * H, S(0));
  if constexpr (BC) {
    if (g.db_ih) std::fill(g.db_ih, g.db_ih + GH, S(0));
    if (g.db_hh) std::fill(g.db_hh, g.db_hh + GH, S(0));
  }

  // W_hh packed once, one vector per block of V hidden units (packed.hpp); for a two-phase cell the
  // first G-1 blocks (multiplying h_{t-1}) and the last one (multiplying m_t) apart.
  packed_bf16::Operand<S> pw{pmode, {}, {}}, pw_mid{pmode, {}, {}};
  packed_bf16::pack_backward(pw, pw_store.data(), pwb_store.data(), w.w_hh, GP, H);
  if constexpr (TP)
    packed_bf16::pack_backward(pw_mid, pw_store.data() + pw_size, pwb_store.data() + pw_size,
                               w.w_hh + GP * H * H, Index(1), H);
  const Index nblocks = pw.blocks();
  const int nthreads = time_loop_threads(B, G, H, nblocks);

  // Each thread owns the hidden units [j0, j1): their cells (all gates of those units) and their
  // columns of dL/dh_{t-1} = dgates_t W_hh, which needs every unit's dgates_t: one barrier per step,
  // between the cells and the product. The next step's cells read only the thread's own dh columns.
#if defined(_OPENMP)
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
#endif
  {
    ScopedFlushDenormals flush_thread;
    const auto [ub0, ub1, j0, j1, nth, tid] = detail::own_units<S>(nblocks, H);
    // A row-wide cell's backward runs whole rows, all of them on thread 0: the gradients it
    // accumulates over rows (dextra, db) are then summed in one order whatever the team size.
    const Index rb1 = RW && tid != 0 ? 0 : B;
    const Index k0 = RW ? 0 : j0, k1 = RW ? H : j1;  // the units this thread's cells run
    CellBwd<S> cb{};
    cb.extra = w.extra;
    cb.dextra = g.dextra;
    cb.b_ih = w.b_ih;
    cb.b_hh = w.b_hh;
    if constexpr (BC) {
      cb.db_ih = g.db_ih;
      cb.db_hh = g.db_hh;
    }
    // points cb at row (t, b): its gradients, the running dL/dh (dc) and the forward's activations
    auto bind = [&](Index t, Index b) {
      const Index row = t * B + b;
      cb.dg = dgates.data() + row * GH;
      cb.dg_in = SG > 0 ? dgin.data() + row * SG * H : nullptr;
      cb.dh_prev = g.dh0 + b * H;
      cb.dh = g.dh_all + row * H;
      cb.act = cache.act + row * GH;
      cb.h_prev = cache.h + row * H;
      if constexpr (has_c) {
        cb.dc = g.dc0 + b * H;
        cb.c_prev = cache.c + row * H;
        cb.c = cache.c + (row + B) * H;  // slot t+1: the state after step t
      }
      cb.aux = Cell::aux_units > 0 ? cache.aux + row * Cell::aux_units * H : nullptr;
    };
    for (Index t = T - 1; t >= 0; --t) {
      if constexpr (RW) {
#if defined(_OPENMP)
        if (nth > 1 && t < T - 1) {
#pragma omp barrier
        }  // every column of dL/dh_t (the previous step's product) is there
#endif
      }
      for (Index b = 0; b < rb1; ++b) {
        const Index row = t * B + b;
        S* dht = g.dh_all + row * H;
        S* dhr = g.dh0 + b * H;  // in: dL/dh_t via step t+1; out: direct part of dL/dh_{t-1}
        S* dgr = dgates.data() + row * GH;
        if (lengths && t >= lengths[b]) {  // padded step: nothing passes through the cell; dh, dc carried
          for (Index k = 0; k < G; ++k) std::fill(dgr + k * H + k0, dgr + k * H + k1, S(0));
          std::fill(dht + k0, dht + k1, S(0));
          for (Index k = 0; k < SG; ++k) {
            S* di = dgin.data() + row * SG * H + k * H;
            std::fill(di + k0, di + k1, S(0));
          }
          continue;
        }
        const S* dyr = dy ? dy + row * H : nullptr;
        for (Index j = k0; j < k1; ++j)
          dht[j] = dyr ? dhr[j] + dyr[j] : dhr[j];  // dL/dh_t = dL/dy_t + dL/dh_t via t+1
        bind(t, b);
        const Index o = row * H;
        if (zh) {  // dL/dh~_t = (1 - m^h_t) dL/dh_t enters the cell
          S* dhc = dhc_buf + b * H;
          for (Index j = k0; j < k1; ++j) dhc[j] = (S(1) - zh[o + j]) * dht[j];
          cb.dh = dhc;
        }
        if constexpr (has_c) {
          if (zc) {  // dL/dc~_t = (1 - m^c_t) dL/dc_t enters the cell; m^c_t dL/dc_t goes to c_{t-1}
            S* dcr = g.dc0 + b * H;
            S* dz = dcz_buf + b * H;
            for (Index j = k0; j < k1; ++j) {
              dz[j] = zc[o + j] * dcr[j];
              dcr[j] = (S(1) - zc[o + j]) * dcr[j];
            }
            cb.c = cache.c_cand + o;  // the cell's own c~_t
          }
        }
        if constexpr (TP) {
          Cell::backward_gates(cb, H, j0, j1, opt);  // the last block's gradients first
        } else {
          Cell::backward(cb, H, k0, k1, opt);
        }
        if (zh)
          for (Index j = k0; j < k1; ++j) dhr[j] += zh[o + j] * dht[j];  // dL/dh_{t-1} += m^h_t dL/dh_t
        if constexpr (has_c) {
          if (zc) {
            S* dcr = g.dc0 + b * H;
            const S* dz = dcz_buf + b * H;
            for (Index j = k0; j < k1; ++j) dcr[j] += dz[j];  // dL/dc_{t-1} += m^c_t dL/dc_t
          }
        }
      }
#if defined(_OPENMP)
      if (nth > 1) {
#pragma omp barrier
      }
#endif
      if constexpr (TP) {
        // dL/dm_t = dL/d(last block) W_h,last (B, H), this thread's columns; then the rest of the cell
        S* dm = dmid_store.data();
        packed_bf16::product(dm, H, dgates.data() + t * B * GH + GP * H, GH, B, pw_mid, ub0, ub1, false);
        if (dmask)  // m_t took d * h_{t-1}: the cell's phase B, given d * dL/dm_t, then gives d r dL/dm_t
          for (Index b = 0; b < B; ++b)
            for (Index j = j0; j < j1; ++j) dm[b * H + j] *= dmask[b * H + j];
        for (Index b = 0; b < B; ++b) {
          if (lengths && t >= lengths[b]) continue;  // padded: nothing passes through the cell
          bind(t, b);
          cb.dmid = dm + b * H;
          Cell::backward(cb, H, j0, j1, opt);
        }
#if defined(_OPENMP)
        if (nth > 1) {
#pragma omp barrier
        }
#endif
      }
      // dL/dh_{t-1} += dL/dgates_t W_hh   (B, G*H) x (G*H, H), this thread's columns; padded rows
      // have dgates = 0. With recurrent dropout the product took d * h_{t-1}: its part is d * (...).
      if (dmask) {
        packed_bf16::product(dprod_buf, H, dgates.data() + t * B * GH, GH, B, pw, ub0, ub1, false);
        for (Index b = 0; b < B; ++b)
          for (Index j = j0; j < j1; ++j) g.dh0[b * H + j] += dmask[b * H + j] * dprod_buf[b * H + j];
      } else {
        packed_bf16::product(g.dh0, H, dgates.data() + t * B * GH, GH, B, pw, ub0, ub1, true);
      }
      if (cut) {
        for (Index b = 0; b < B; ++b) {
          if (!cut[t * B + b]) continue;  // the state entering step t of b is a constant
          std::fill(g.dh0 + b * H + j0, g.dh0 + b * H + j1, S(0));
          if constexpr (has_c) std::fill(g.dc0 + b * H + j0, g.dc0 + b * H + j1, S(0));
        }
      }
    }
  }

  detail::weight_grads<Cell>(g, cache, x, w, lengths, dgates.data(), SG > 0 ? dgin.data() : nullptr, d, bf16);
}

}  // namespace rnnfast
