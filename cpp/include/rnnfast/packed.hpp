// rnnfast/packed.hpp - the per-step recurrent products with W_hh packed once per call.
//
// T = time steps, B = batch, I = input size, H = hidden size, G = gates (1 rnn, 4 lstm, 3 gru),
// V = SIMD width in scalars (Eigen's packet: 8 floats with AVX2, 16 with AVX-512; 4 / 8 doubles)
//
// Why: a general GEMM (Eigen's) re-packs its right-hand side on every call, i.e. copies all of W_hh
// once per time step, and at small B that copy costs as much as the product itself. Here W_hh is
// packed once per call into "column vectors": V adjacent output columns x all K rows, contiguous, so
// a step streams each vector once, front to back, and a thread that owns a range of vectors keeps its
// slice of W_hh hot in its own cache from step to step.
//
//   forward   gh (B, G*H)  = h_{t-1} (B, H) * W_hh^T      K = H,    vectors ordered by unit block:
//             [block 0: gate 0, gate 1, .., gate G-1 | block 1: ...], block u = units u*V..u*V+V-1,
//             so the vectors of one block hold all gates of the same hidden units and a thread can
//             finish those units' cells without waiting for another thread.
//   backward  dh (B, H)   += dgates (B, G*H) * W_hh        K = G*H,  one vector per unit block.
//
// The micro-kernel keeps an MR x NV tile of packets in registers (MR rows of the left operand, NV
// vectors), broadcasting one left scalar per row and loading one packet per vector for each k.
#pragma once

// Eigen's packet types are vector types with attributes; using them as template arguments is intended.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

#include <Eigen/Core>
#include <algorithm>

#include "rnnfast/activations.hpp"  // vec::Packet, vec::width
#include "rnnfast/common.hpp"

namespace rnnfast {
namespace packed {

using vec::Packet;
using vec::width;

// A right-hand operand (K, N) packed as vectors of V columns, in caller-provided storage (a
// Scratch buffer: reused from call to call, see parallel.hpp).
template <class S>
struct PackedMatrix {
  Index K = 0;        // rows (the reduction length)
  Index nvec = 0;     // number of V-column vectors
  Index group = 1;    // vectors per unit block: G (forward: one per gate), 1 (backward)
  Index H = 0;        // hidden size: vector v covers the columns [col(v), col(v) + valid(v))
  S* data = nullptr;  // (nvec, K, V)

  const S* vec(Index v) const { return data + v * K * width<S>(); }
  Index blocks() const { return nvec / group; }
  // First output column of vector v: gate (v % group), units from (v / group) * V.
  Index col(Index v) const { return (v % group) * H + (v / group) * width<S>(); }
  int valid(Index v) const {
    return static_cast<int>(std::min<Index>(width<S>(), H - (v / group) * width<S>()));
  }
  static Index size(Index K, Index H, Index group) {
    return K * ((H + width<S>() - 1) / width<S>()) * group * width<S>();
  }

  // Describes `storage` as K rows of `group` vectors per block of V of the H units.
  void reset(S* storage, Index K_, Index group_, Index H_) {
    K = K_;
    group = group_;
    H = H_;
    nvec = (H_ + width<S>() - 1) / width<S>() * group_;
    data = storage;
  }
};

// Forward operand: P (K, G*H) = W^T of W (G*H, K), vectors ordered [unit block][gate]; W_hh (K = H,
// the default) or, for a prepacked one-step call (step.hpp), W_ih (K = I). storage: size(K, H, G).
// A vector is the transpose of V rows of W (its V output columns): V x V tiles are loaded as V
// packets (one per row), transposed in registers and stored as V packets of the vector (at H = 1024,
// LSTM, ~10x faster than scalar copies: the pack is then ~2 steps' worth of W_hh streaming, not
// ~10). Columns past H (the last unit block when V does not divide H) and k past the last full tile
// are copied one scalar at a time.
template <class S>
void pack_forward(PackedMatrix<S>& p, S* storage, const S* w /* (G*H, K) */, Index G, Index H, Index K = -1) {
  constexpr int V = width<S>();
  if (K < 0) K = H;
  p.reset(storage, K, G, H);
  for (Index v = 0; v < p.nvec; ++v) {
    const Index c0 = p.col(v);
    const int nv = p.valid(v);
    S* dst = storage + v * K * V;
    Index k0 = 0;
    if (nv == V) {
      Eigen::internal::PacketBlock<Packet<S>, V> tile;
      for (; k0 + V <= K; k0 += V) {
        for (int c = 0; c < V; ++c)
          tile.packet[c] = Eigen::internal::ploadu<Packet<S>>(w + (c0 + c) * K + k0);
        Eigen::internal::ptranspose(tile);  // packet i = column k0 + i of the V rows
        for (int i = 0; i < V; ++i) Eigen::internal::pstoreu(dst + (k0 + i) * V, tile.packet[i]);
      }
    }
    for (int c = 0; c < V; ++c) {
      const S* wrow = w + (c0 + c) * K;  // row n of W = column n of W^T
      if (c < nv) {
        for (Index k = k0; k < K; ++k) dst[k * V + c] = wrow[k];
      } else {
        for (Index k = k0; k < K; ++k) dst[k * V + c] = S(0);
      }
    }
  }
}

// Backward operand: P (G*H, H) = W_hh itself, one vector per unit block. storage: size(G*H, H, 1).
template <class S>
void pack_backward(PackedMatrix<S>& p, S* storage, const S* w_hh /* (G*H, H) */, Index G, Index H) {
  constexpr int V = width<S>();
  const Index K = G * H;
  p.reset(storage, K, 1, H);
  for (Index v = 0; v < p.nvec; ++v) {
    const Index c0 = p.col(v);
    const int nv = p.valid(v);
    S* dst = storage + v * K * V;
    for (Index j = 0; j < K; ++j) {
      const S* wrow = w_hh + j * H + c0;
      for (int c = 0; c < nv; ++c) dst[j * V + c] = wrow[c];
      for (int c = nv; c < V; ++c) dst[j * V + c] = S(0);
    }
  }
}

namespace detail {

template <class S>
inline Packet<S> load_partial(const S* p, int n) {
  constexpr int V = width<S>();
  if (n == V) return Eigen::internal::ploadu<Packet<S>>(p);
  alignas(64) S tmp[V] = {};
  for (int c = 0; c < n; ++c) tmp[c] = p[c];
  return Eigen::internal::pload<Packet<S>>(tmp);
}

template <class S>
inline void store_partial(S* p, const Packet<S>& x, int n) {
  constexpr int V = width<S>();
  if (n == V) {
    Eigen::internal::pstoreu(p, x);
    return;
  }
  alignas(64) S tmp[V];
  Eigen::internal::pstore(tmp, x);
  for (int c = 0; c < n; ++c) p[c] = tmp[c];
}

// out[r, col[v] .. col[v]+valid[v]) (+)= sum_k A[r, k] * P_v[k, :]   for MR rows, NV vectors.
template <class S, int MR, int NV>
inline void micro_kernel(S* out, Index ldo, const S* a, Index lda, const PackedMatrix<S>& p, Index v0,
                         Index k0, Index k1, bool accumulate) {
  using P = Packet<S>;
  constexpr int V = width<S>();
  P acc[MR][NV];
  const S* w[NV];
  for (int v = 0; v < NV; ++v) w[v] = p.vec(v0 + v);
  if (accumulate) {
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v] = load_partial(out + r * ldo + p.col(v0 + v), p.valid(v0 + v));
  } else {
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v] = Eigen::internal::pset1<P>(S(0));
  }
  for (Index k = k0; k < k1; ++k) {
    P wk[NV];
    for (int v = 0; v < NV; ++v) wk[v] = Eigen::internal::pload<P>(w[v] + k * V);
    for (int r = 0; r < MR; ++r) {
      const P ar = Eigen::internal::pset1<P>(a[r * lda + k]);
      for (int v = 0; v < NV; ++v) acc[r][v] = Eigen::internal::pmadd(ar, wk[v], acc[r][v]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) store_partial(out + r * ldo + p.col(v0 + v), acc[r][v], p.valid(v0 + v));
}

template <class S, int MR>
inline void dispatch_nv(int nv, S* out, Index ldo, const S* a, Index lda, const PackedMatrix<S>& p, Index v0,
                        Index k0, Index k1, bool accumulate) {
  switch (nv) {
    case 1:
      micro_kernel<S, MR, 1>(out, ldo, a, lda, p, v0, k0, k1, accumulate);
      break;
    case 2:
      micro_kernel<S, MR, 2>(out, ldo, a, lda, p, v0, k0, k1, accumulate);
      break;
    case 3:
      micro_kernel<S, MR, 3>(out, ldo, a, lda, p, v0, k0, k1, accumulate);
      break;
    case 4:
      micro_kernel<S, MR, 4>(out, ldo, a, lda, p, v0, k0, k1, accumulate);
      break;
    case 5:
      micro_kernel<S, MR, 5>(out, ldo, a, lda, p, v0, k0, k1, accumulate);
      break;
    case 6:
      micro_kernel<S, MR, 6>(out, ldo, a, lda, p, v0, k0, k1, accumulate);
      break;
    case 7:
      micro_kernel<S, MR, 7>(out, ldo, a, lda, p, v0, k0, k1, accumulate);
      break;
    default:
      micro_kernel<S, MR, 8>(out, ldo, a, lda, p, v0, k0, k1, accumulate);
      break;
  }
}

}  // namespace detail

// out (M, N) (+)= A (M, K) * P over the vectors [v_begin, v_end) of P only (a thread's share).
// out and A are row-major with leading dimensions ldo, lda. accumulate: add to out instead of =.
template <class S>
void product(S* out, Index ldo, const S* a, Index lda, Index M, const PackedMatrix<S>& p, Index v_begin,
             Index v_end, bool accumulate) {
  // Tile shapes: 12 accumulators where rows allow (4 x 3), 8 packets wide at M = 1 (a GEMV: bound by
  // the stream of W, the tile just keeps enough FMAs in flight).
  const int nv_tile = M == 1 ? 8 : (M == 2 ? 6 : (M == 3 ? 4 : 3));
  // With several row tiles, each tile re-reads the nv_tile vectors: block the reduction so that those
  // vectors (nv_tile x KC x V scalars, ~24 KiB) stay in L1 across the row tiles. One row tile streams
  // each vector once anyway: no blocking. The blocking is fixed by the shapes, never by the thread
  // count, so results stay bitwise identical across thread counts.
  const Index kc_l1 = std::max<Index>(64, (24 * 1024) / (3 * width<S>() * static_cast<Index>(sizeof(S))));
  const Index KC = M > 4 ? kc_l1 : p.K;
  for (Index v = v_begin; v < v_end; v += nv_tile) {
    const int nv = static_cast<int>(std::min<Index>(nv_tile, v_end - v));
    for (Index k0 = 0; k0 < p.K; k0 += KC) {
      const Index k1 = std::min(p.K, k0 + KC);
      const bool acc = accumulate || k0 > 0;
      Index r = 0;
      for (; r + 4 <= M; r += 4)
        detail::dispatch_nv<S, 4>(nv, out + r * ldo, ldo, a + r * lda, lda, p, v, k0, k1, acc);
      switch (M - r) {
        case 3:
          detail::dispatch_nv<S, 3>(nv, out + r * ldo, ldo, a + r * lda, lda, p, v, k0, k1, acc);
          break;
        case 2:
          detail::dispatch_nv<S, 2>(nv, out + r * ldo, ldo, a + r * lda, lda, p, v, k0, k1, acc);
          break;
        case 1:
          detail::dispatch_nv<S, 1>(nv, out + r * ldo, ldo, a + r * lda, lda, p, v, k0, k1, acc);
          break;
        default:
          break;
      }
    }
  }
}

}  // namespace packed
}  // namespace rnnfast

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
