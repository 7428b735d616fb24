// The LSTM with projection: forward and backward kernels (equations in rnnfast/lstm_proj.hpp).
// T = time steps, B = batch, I = input size, H = hidden size, P = projection size, G = 4 gates
#include "rnnfast/lstm_proj.hpp"

#include <algorithm>
#include <cstring>

#include "rnnfast/cells/lstm.hpp"
#include "rnnfast/packed.hpp"
#include "rnnfast/parallel.hpp"
#include "rnnfast/ragged.hpp"
#include "rnnfast/sequence.hpp"  // column_sums, detail::copy_or_zero, forced_loop_threads

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace rnnfast {
namespace {

using packed::PackedMatrix;

// Packs the operand W^T of a product out = A W^T, W (G*N, K) row-major: vectors of V output columns
// ordered [block of V units][gate], like packed::pack_forward (which is square, K = H, only).
template <class S>
void pack_transposed(PackedMatrix<S>& p, S* storage, const S* w /* (G*N, K) */, Index G, Index N, Index K) {
  constexpr int V = packed::width<S>();
  p.reset(storage, K, G, N);
  for (Index v = 0; v < p.nvec; ++v) {
    const Index c0 = p.col(v);
    const int nv = p.valid(v);
    S* dst = storage + v * K * V;
    for (Index k = 0; k < K; ++k)
      for (int c = 0; c < V; ++c) dst[k * V + c] = c < nv ? w[(c0 + c) * K + k] : S(0);
  }
}

// Packs the operand W of a product out = A W, W (K, N) row-major: one vector per block of V columns.
template <class S>
void pack_plain(PackedMatrix<S>& p, S* storage, const S* w /* (K, N) */, Index N, Index K) {
  constexpr int V = packed::width<S>();
  p.reset(storage, K, 1, N);
  for (Index v = 0; v < p.nvec; ++v) {
    const Index c0 = p.col(v);
    const int nv = p.valid(v);
    S* dst = storage + v * K * V;
    for (Index k = 0; k < K; ++k)
      for (int c = 0; c < V; ++c) dst[k * V + c] = c < nv ? w[k * N + c0 + c] : S(0);
  }
}

// This thread's unit blocks of two packed operands (gates over H, projection over P), as blocks
// and as unit ranges.
struct Share {
  Index ub0, ub1, j0, j1;  // blocks / units of H
  Index pb0, pb1, q0, q1;  // blocks / units of P
  int nth;
};
template <class S>
Share share_of(Index hblocks, Index H, Index pblocks, Index P) {
  const TeamSlot me = team_slot();
  const Index V = packed::width<S>();
  Share s{};
  s.nth = me.nth;
  split_range(hblocks, me.nth, me.tid, s.ub0, s.ub1);
  split_range(pblocks, me.nth, me.tid, s.pb0, s.pb1);
  s.j0 = std::min(H, s.ub0 * V);
  s.j1 = std::min(H, s.ub1 * V);
  s.q0 = std::min(P, s.pb0 * V);
  s.q1 = std::min(P, s.pb1 * V);
  return s;
}

// Threads for a time loop of B rows with these two products per step (the registry loops' testing
// hook, core._force_loop_threads, applies here too).
int proj_loop_threads(const ProjDims& d, Index hblocks, Index pblocks) {
  const Index parts = std::max<Index>(std::min(hblocks, pblocks), 1);
  const int forced = forced_loop_threads().load(std::memory_order_relaxed);
  if (forced > 0) return forced_team(forced, parts);
  const double flops =
      2.0 * static_cast<double>(d.B) * static_cast<double>(d.P) * 5.0 * static_cast<double>(d.H);
  return loop_threads_for(flops, parts, d.B);
}

}  // namespace

template <class S>
void lstm_proj_forward(S* y, S* h_n, S* c_n, const ProjActivations<S>* cache, const S* x, const S* h0,
                       const S* c0, const ProjWeights<S>& w, const std::int64_t* lengths, const ProjDims& d) {
  const Index T = d.T, B = d.B, I = d.I, H = d.H, P = d.P, GH = 4 * H, BH = B * H, BP = B * P;
  const bool training = cache != nullptr;
  ScopedFlushDenormals flush;

  // Workspaces reused across calls (Scratch). Inference keeps two state slots (ping-pong) and one m_t.
  Scratch<S> gx_store(0, training ? 0 : T * B * GH);        // (T*B, 4H), inference only
  Scratch<S> state_store(1, training ? 0 : 2 * (BP + BH));  // ping-pong h (B, P) and c (B, H)
  Scratch<S> gh(2, B * GH);                                 // (B, 4H) W_hh h_{t-1}
  const Index whh_size = PackedMatrix<S>::size(P, H, 4);
  Scratch<S> pw_store(3, whh_size + PackedMatrix<S>::size(H, P, 1));
  Scratch<S> m_store(4, training ? 0 : BH);  // m_t (B, H), inference only
  S* gx_ptr = training ? cache->act : gx_store.data();
  auto h_at = [&](Index t) -> S* { return training ? cache->h + t * BP : state_store.data() + (t % 2) * BP; };
  auto c_at = [&](Index t) -> S* {
    return training ? cache->c + t * BH : state_store.data() + 2 * BP + (t % 2) * BH;
  };
  auto m_at = [&](Index t) -> S* { return training ? cache->m + t * BH : m_store.data(); };

  detail::copy_or_zero(h_at(0), h0, BP);
  detail::copy_or_zero(c_at(0), c0, BH);

  // Input projection of all steps: one GEMM over T*B rows, both biases folded in.
  MatMap<S> gx(gx_ptr, T * B, GH);
  if (T * B > 0) {
    RowVec<S> bias;
    if (w.b_ih) bias = CRowVecMap<S>(w.b_ih, GH) + CRowVecMap<S>(w.b_hh, GH);
    parallel_product(gx, CMatMap<S>(x, T * B, I), CMatMap<S>(w.w_ih, GH, I).transpose(),
                     w.b_ih ? bias.data() : nullptr);
  }

  // W_hh^T (P, 4H) and W_hr^T (H, P) packed once for all steps.
  PackedMatrix<S> pw, pr;
  pack_transposed(pw, pw_store.data(), w.w_hh, Index(4), H, P);
  pack_transposed(pr, pw_store.data() + whh_size, w.w_hr, Index(1), P, H);
  const Index hblocks = pw.blocks(), pblocks = pr.blocks();
  const int nthreads = proj_loop_threads(d, hblocks, pblocks);
  const CellOptions opt{};

  // Per step: (1) each thread the gates, cells and m_t of its H units; barrier; (2) its P units of
  // h_t = m_t W_hr^T (needs every unit of m_t) and y_t; barrier (h_t feeds the next step's product).
  StepBarrier step_barrier;
#if defined(_OPENMP)
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
#endif
  {
    ScopedFlushDenormals flush_thread;
    const Share s = share_of<S>(hblocks, H, pblocks, P);
#if defined(_OPENMP)
    if (s.nth > 1) {
#pragma omp single
      step_barrier.reset(s.nth);
    }
#endif
    CellFwd<S> row{};
    for (Index t = 0; t < T; ++t) {
      const S* hp = h_at(t);
      S* hc = h_at(t + 1);
      S* mt = m_at(t);
      // gh (B, 4H) = h_{t-1} (B, P) W_hh^T, this thread's units
      packed::product(gh.data(), GH, hp, P, B, pw, s.ub0 * 4, s.ub1 * 4, false);
      for (Index b = 0; b < B; ++b) {
        S* mr = mt + b * H;
        S* cr = c_at(t + 1) + b * H;
        const S* cpr = c_at(t) + b * H;
        if (lengths && t >= lengths[b]) {  // padded: c carried, m = 0 keeps the projection finite
          std::copy(cpr + s.j0, cpr + s.j1, cr + s.j0);
          std::fill(mr + s.j0, mr + s.j1, S(0));
          continue;
        }
        row.act = gx_ptr + (t * B + b) * GH;
        row.gh = gh.data() + b * GH;
        row.c_prev = cpr;
        row.c = cr;
        row.h = mr;  // LstmCell's h_t is m_t = o * tanh(c_t)
        row.aux = training ? cache->tc + (t * B + b) * H : nullptr;
        LstmCell::forward(row, H, s.j0, s.j1, opt);
      }
      if (s.nth > 1) step_barrier.wait();
      // h_t (B, P) = m_t (B, H) W_hr^T, this thread's projection units
      packed::product(hc, P, mt, H, B, pr, s.pb0, s.pb1, false);
      const std::size_t nq = static_cast<std::size_t>(s.q1 - s.q0);
      for (Index b = 0; b < B; ++b) {
        S* yr = y + (t * B + b) * P;
        S* hcr = hc + b * P;
        if (lengths && t >= lengths[b]) {  // padded: h carried, y = 0
          std::copy(hp + b * P + s.q0, hp + b * P + s.q1, hcr + s.q0);
          std::fill(yr + s.q0, yr + s.q1, S(0));
        } else if (nq > 0) {
          std::memcpy(yr + s.q0, hcr + s.q0, sizeof(S) * nq);
        }
      }
      if (s.nth > 1) step_barrier.wait();
    }
  }
  detail::copy_or_zero<S>(h_n, h_at(T), BP);
  detail::copy_or_zero<S>(c_n, c_at(T), BH);
}

template <class S>
void lstm_proj_backward(const ProjGrads<S>& g, const ProjActivations<S>& cache, const S* x,
                        const ProjWeights<S>& w, const S* dy, const S* dh_n, const S* dc_n,
                        const std::int64_t* lengths, const ProjDims& d) {
  const Index T = d.T, B = d.B, I = d.I, H = d.H, P = d.P, GH = 4 * H, BH = B * H, BP = B * P;
  ScopedFlushDenormals flush;

  Scratch<S> dgates_store(0, T * B * GH);  // (T*B, 4H) dL/d(gate pre-activations)
  Scratch<S> dm_store(1, 2 * BH);          // (B, H) dL/dm_t, then (B, H) the cell's direct dh_prev (0)
  const Index whr_size = PackedMatrix<S>::size(P, H, 1);
  Scratch<S> pw_store(2, whr_size + PackedMatrix<S>::size(GH, P, 1));
  MatMap<S> dgates(dgates_store.data(), T * B, GH);
  S* dm = dm_store.data();
  S* unused_dh = dm + BH;

  // The running dL/dh_t (B, P) and dL/dc_t (B, H) live in the dh0 / dc0 outputs.
  detail::copy_or_zero(g.dh0, dh_n, BP);
  detail::copy_or_zero(g.dc0, dc_n, BH);

  // W_hr (P, H) and W_hh (4H, P) as the right operands of dm = dh W_hr and dh_{t-1} = dgates W_hh.
  PackedMatrix<S> pr, pw;
  pack_plain(pr, pw_store.data(), w.w_hr, H, P);
  pack_plain(pw, pw_store.data() + whr_size, w.w_hh, P, GH);
  const Index hblocks = pr.blocks(), pblocks = pw.blocks();
  const int nthreads = proj_loop_threads(d, hblocks, pblocks);
  const CellOptions opt{};

  // Per step: (1) each thread its P columns of dL/dh_t; barrier; (2) dL/dm_t and the cells of its
  // H units; barrier; (3) its P columns of dL/dh_{t-1} = dgates_t W_hh (needs every unit's dgates);
  // the next step's (1) reads only the thread's own columns, so no barrier after (3).
#if defined(_OPENMP)
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
#endif
  {
    ScopedFlushDenormals flush_thread;
    const Share s = share_of<S>(hblocks, H, pblocks, P);
    CellBwd<S> cb{};
    auto barrier = [&] {
#if defined(_OPENMP)
      if (s.nth > 1) {
#pragma omp barrier
      }
#endif
    };
    for (Index t = T - 1; t >= 0; --t) {
      for (Index b = 0; b < B; ++b) {
        const Index row = t * B + b;
        S* dht = g.dh_all + row * P;
        S* dhr = g.dh0 + b * P;  // in: dL/dh_t via step t+1; out: 0 (h_{t-1} reaches h_t only via W_hh)
        if (lengths && t >= lengths[b]) {  // padded: dh carried
          std::fill(dht + s.q0, dht + s.q1, S(0));
          continue;
        }
        const S* dyr = dy ? dy + row * P : nullptr;
        for (Index q = s.q0; q < s.q1; ++q) {
          dht[q] = dyr ? dhr[q] + dyr[q] : dhr[q];  // dL/dh_t = dL/dy_t + dL/dh_t via t+1
          dhr[q] = S(0);
        }
      }
      barrier();
      // dL/dm_t (B, H) = dL/dh_t (B, P) W_hr (P, H), this thread's units (padded rows: dh_t = 0)
      packed::product(dm, H, g.dh_all + t * B * P, P, B, pr, s.ub0, s.ub1, false);
      for (Index b = 0; b < B; ++b) {
        const Index row = t * B + b;
        S* dgr = dgates.data() + row * GH;
        if (lengths && t >= lengths[b]) {  // padded: nothing passes through the cell; dc carried
          for (Index k = 0; k < 4; ++k) std::fill(dgr + k * H + s.j0, dgr + k * H + s.j1, S(0));
          continue;
        }
        cb.dg = dgr;
        cb.dh_prev = unused_dh + b * H;
        cb.dc = g.dc0 + b * H;
        cb.dh = dm + b * H;  // LstmCell's dL/dh_t is dL/dm_t here
        cb.act = cache.act + row * GH;
        cb.c_prev = cache.c + row * H;
        cb.c = cache.c + (row + B) * H;
        cb.aux = cache.tc + row * H;
        LstmCell::backward(cb, H, s.j0, s.j1, opt);  // dgates_t; dL/dc_{t-1} = dL/dc_t f_t
      }
      barrier();
      // dL/dh_{t-1} += dgates_t (B, 4H) W_hh (4H, P), this thread's columns; padded rows add 0
      packed::product(g.dh0, P, dgates.data() + t * B * GH, GH, B, pw, s.pb0, s.pb1, true);
    }
  }

  // Weight gradients: single GEMMs over all T*B rows. A ragged batch's x rows and carried states at
  // padded steps are zeroed in copies (ragged.hpp, as in sequence_backward); m_t and dh_t are 0 at
  // padded steps already.
  const S* x_used = x;
  const S* h_used = cache.h;
  const bool padded = any_padded(lengths, T, B);
  Scratch<S> zero_store(3, padded ? T * B * (I + P) : 0);
  if (padded) {
    S* xz = zero_store.data();
    S* hz = xz + T * B * I;
    zero_padded_rows(xz, hz, x, cache.h, lengths, T, B, I, P);
    x_used = xz;
    h_used = hz;
  }
  parallel_product(MatMap<S>(g.dw_hr, P, H), CMatMap<S>(g.dh_all, T * B, P).transpose(),
                   CMatMap<S>(cache.m, T * B, H));  // dL/dW_hr = sum_t dh_t^T m_t
  parallel_product(MatMap<S>(g.dw_hh, GH, P), dgates.transpose(),
                   CMatMap<S>(h_used, T * B, P));  // dL/dW_hh = sum_t dgates_t^T h_{t-1}
  parallel_product(MatMap<S>(g.dw_ih, GH, I), dgates.transpose(),
                   CMatMap<S>(x_used, T * B, I));               // dL/dW_ih = sum_t dgates_t^T x_t
  if (g.db_hh) column_sums(g.db_hh, dgates.data(), T * B, GH);  // dL/db_hh = sum_{t,b} dgates
  if (g.db_ih) {
    if (g.db_hh)
      std::copy(g.db_hh, g.db_hh + GH, g.db_ih);  // dL/db_ih = dL/db_hh: both enter a alike
    else
      column_sums(g.db_ih, dgates.data(), T * B, GH);
  }
  if (g.dx)
    parallel_product(MatMap<S>(g.dx, T * B, I), dgates,
                     CMatMap<S>(w.w_ih, GH, I));  // dL/dx_t = dgates_t W_ih
}

#define RNNFAST_INSTANTIATE_PROJ(S)                                                                       \
  template void lstm_proj_forward<S>(S*, S*, S*, const ProjActivations<S>*, const S*, const S*, const S*, \
                                     const ProjWeights<S>&, const std::int64_t*, const ProjDims&);        \
  template void lstm_proj_backward<S>(const ProjGrads<S>&, const ProjActivations<S>&, const S*,           \
                                      const ProjWeights<S>&, const S*, const S*, const S*,                \
                                      const std::int64_t*, const ProjDims&);
RNNFAST_INSTANTIATE_PROJ(float)
RNNFAST_INSTANTIATE_PROJ(double)
#undef RNNFAST_INSTANTIATE_PROJ

}  // namespace rnnfast
