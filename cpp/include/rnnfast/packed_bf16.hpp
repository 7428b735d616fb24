// rnnfast/packed_bf16.hpp - the per-step recurrent products with a packed bf16 copy of W_hh (issue 18).
//
// T = time steps, B = batch, I = input size, H = hidden size, G = gates (1 rnn, 4 lstm, 3 gru),
// V = SIMD width in floats (Eigen's float packet: 4 SSE2, 8 AVX2, 16 AVX-512)
//
// The same layout and interface as packed.hpp (read it first), with the packed operand stored as
// bf16 (bf16.hpp): half the bytes of the float32 copy. At small B the per-step product streams all of
// W_hh once per step and is bound by that stream, so halving it is the gain this file is for, on any
// x86-64 (it needs no AVX512_BF16): each packed vector is loaded as V bf16 and widened to V floats in
// registers (a shift: exact), then multiplied and accumulated in float32 FMAs as in packed.hpp.
//
// Semantics, per output element: out = sum_k bf16(a_k) * w_k (+ out), w_k the bf16 value of W_hh's
// entry, bf16() = round to nearest even. Each product bf16 * bf16 is exact in float32; the sum is
// accumulated in float32 in packed.hpp's order (k ascending). The left operand (h_{t-1}, or dgates in
// backward) is rounded by product() itself (once per call), so callers pass their float32 rows.
//
// Layout: k in pairs. Within a packed vector, rows 2q and 2q + 1 are stored together as V 32-bit
// words, word c = bf16(row 2q, column c) in its low half, bf16(row 2q + 1, column c) in its high half
// (with an odd K the last row is stored alone, V bf16); the same bytes as one row after another. A
// pair is one load; the two rows are widened from it by an AND with 0xffff0000 (row 2q + 1) and a
// 16-bit left shift (row 2q): one integer operation per V floats, where widening each row from V
// bf16 takes a zero-extension (a shuffle) and a shift. The rows are still added in k order, so the
// sums are bitwise those of the row-after-row layout (and of the wide mode below). Pairs of k in a
// 32-bit lane are also what AVX512_BF16's vdpbf16ps multiplies.
//
// No native bf16 instruction is used (AVX512_BF16's vdpbf16ps, AMX): this file is the portable path.
#pragma once

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

#include <Eigen/Core>
#include <algorithm>
#include <type_traits>
#include <vector>

#include "rnnfast/activations.hpp"  // vec::Packet, vec::width
#include "rnnfast/bf16.hpp"
#include "rnnfast/common.hpp"
#include "rnnfast/packed.hpp"

namespace rnnfast {
namespace packed_bf16 {

using bf16::Bf16;
using PacketF = vec::Packet<float>;
constexpr int V = vec::width<float>();

// Which register path converts (the width of Eigen's float packet in this variant): 16 AVX-512,
// 8 AVX2, 4 SSE2, 0 a scalar loop through memory (other targets).
#if defined(EIGEN_VECTORIZE_AVX512) && defined(__AVX512BW__)
#define RNNFAST_BF16_PATH 16
#elif defined(EIGEN_VECTORIZE_AVX) && defined(__AVX2__)
#define RNNFAST_BF16_PATH 8
#elif defined(EIGEN_VECTORIZE_SSE2)
#define RNNFAST_BF16_PATH 4
#else
#define RNNFAST_BF16_PATH 0
#endif
static_assert(RNNFAST_BF16_PATH == 0 || RNNFAST_BF16_PATH == V,
              "the bf16 path must match Eigen's float packet");

// A right-hand operand (K, N) packed as vectors of V columns of bf16, in caller-provided storage.
// The fields mean what packed::PackedMatrix<float>'s do (same col(), valid(), blocks()).
struct PackedMatrix {
  Index K = 0;
  Index nvec = 0;
  Index group = 1;
  Index H = 0;
  Bf16* data = nullptr;  // (nvec, K, V)

  const Bf16* vec(Index v) const { return data + v * K * V; }
  Index blocks() const { return nvec / group; }
  Index col(Index v) const { return (v % group) * H + (v / group) * V; }
  int valid(Index v) const { return static_cast<int>(std::min<Index>(V, H - (v / group) * V)); }
  // bf16 elements of storage for a (K, group*H) operand: packed::PackedMatrix<float>::size(K, H, group)
  static Index size(Index K, Index H, Index group) { return K * ((H + V - 1) / V) * group * V; }
  void reset(Bf16* storage, Index K_, Index group_, Index H_) {
    K = K_;
    group = group_;
    H = H_;
    nvec = (H_ + V - 1) / V * group_;
    data = storage;
  }
};

namespace detail {

// V bf16 at p (aligned to 2 bytes) -> V floats, exactly.
inline PacketF load_widen(const Bf16* p) {
#if RNNFAST_BF16_PATH == 16
  return bf16::vec::to_float16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#elif RNNFAST_BF16_PATH == 8
  return bf16::vec::to_float8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#elif RNNFAST_BF16_PATH == 4
  // (0, b) 16-bit pairs are the 32-bit lanes b << 16
  return _mm_castsi128_ps(
      _mm_unpacklo_epi16(_mm_setzero_si128(), _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
#else
  alignas(64) float tmp[V];
  for (int c = 0; c < V; ++c) tmp[c] = bf16::to_float(p[c]);
  return Eigen::internal::pload<PacketF>(tmp);
#endif
}

// The two rows of a pair at p (V 32-bit words, see Layout): lo = row 2q, hi = row 2q + 1, exactly.
inline void widen_pair(const Bf16* p, PacketF& lo, PacketF& hi) {
#if RNNFAST_BF16_PATH == 16
  const __m512i w = _mm512_loadu_si512(reinterpret_cast<const void*>(p));
  lo = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  hi = _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
#elif RNNFAST_BF16_PATH == 8
  const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  lo = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  hi = _mm256_castsi256_ps(_mm256_and_si256(w, _mm256_set1_epi32(static_cast<int>(0xffff0000u))));
#elif RNNFAST_BF16_PATH == 4
  const __m128i w = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  lo = _mm_castsi128_ps(_mm_slli_epi32(w, 16));
  hi = _mm_castsi128_ps(_mm_and_si128(w, _mm_set1_epi32(static_cast<int>(0xffff0000u))));
#else
  alignas(64) float tl[V], th[V];
  for (int c = 0; c < V; ++c) {
    tl[c] = bf16::to_float(p[2 * c]);
    th[c] = bf16::to_float(p[2 * c + 1]);
  }
  lo = Eigen::internal::pload<PacketF>(tl);
  hi = Eigen::internal::pload<PacketF>(th);
#endif
}

// bf16(lo), bf16(hi) (rows 2q and 2q + 1 of V columns) stored as one pair at dst (round to nearest
// even).
inline void store_pair(Bf16* dst, const PacketF& lo, const PacketF& hi) {
#if RNNFAST_BF16_PATH == 16
  const __m512i l = _mm512_cvtepu16_epi32(bf16::vec::from_float16(lo));
  const __m512i h = _mm512_cvtepu16_epi32(bf16::vec::from_float16(hi));
  _mm512_storeu_si512(reinterpret_cast<void*>(dst), _mm512_or_si512(l, _mm512_slli_epi32(h, 16)));
#elif RNNFAST_BF16_PATH == 8
  const __m256i l = _mm256_cvtepu16_epi32(bf16::vec::from_float8(lo));
  const __m256i h = _mm256_cvtepu16_epi32(bf16::vec::from_float8(hi));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm256_or_si256(l, _mm256_slli_epi32(h, 16)));
#else
  alignas(64) float tl[V], th[V];
  Eigen::internal::pstore(tl, lo);
  Eigen::internal::pstore(th, hi);
  for (int c = 0; c < V; ++c) {
    dst[2 * c] = bf16::from_float(tl[c]);
    dst[2 * c + 1] = bf16::from_float(th[c]);
  }
#endif
}

// Where element (k, c) of a packed vector of K rows lives, from the vector's start (see Layout).
inline Index pair_index(Index k, int c, Index K) {
  if ((K & 1) && k == K - 1) return k * V + c;  // an odd K's last row, alone
  return (k >> 1) * 2 * V + 2 * c + (k & 1);
}

}  // namespace detail

// Forward operand: bf16(W^T) (K, G*H) of W (G*H, K) (W_hh, K = H by default; W_ih, K = I, for a
// prepacked one-step call), vectors ordered [unit block][gate], as packed::pack_forward (V x V
// tiles transposed in registers, converted as they are stored). storage: size(K, H, G).
inline void pack_forward(PackedMatrix& p, Bf16* storage, const float* w /* (G*H, K) */, Index G, Index H,
                         Index K = -1) {
  if (K < 0) K = H;
  p.reset(storage, K, G, H);
  for (Index v = 0; v < p.nvec; ++v) {
    const Index c0 = p.col(v);
    const int nv = p.valid(v);
    Bf16* dst = storage + v * K * V;
    Index k0 = 0;
    if (nv == V && V % 2 == 0) {  // V even: a tile of V rows is V / 2 whole pairs
      Eigen::internal::PacketBlock<PacketF, V> tile;
      for (; k0 + V <= K; k0 += V) {
        for (int c = 0; c < V; ++c) tile.packet[c] = Eigen::internal::ploadu<PacketF>(w + (c0 + c) * K + k0);
        Eigen::internal::ptranspose(tile);  // packet i = column k0 + i of the V rows
        for (int i = 0; i < V; i += 2)
          detail::store_pair(dst + (k0 + i) * V, tile.packet[i], tile.packet[i + 1]);
      }
    }
    for (int c = 0; c < V; ++c) {
      const float* wrow = w + (c0 + c) * K;
      for (Index k = k0; k < K; ++k)
        dst[detail::pair_index(k, c, K)] = c < nv ? bf16::from_float(wrow[k]) : Bf16(0);
    }
  }
}

// The wide copy of a stream operand: f = the same vectors as float32 in packed.hpp's layout (each
// value widened exactly), for a call whose batch is past the stream mode's (a prepacked layer that
// holds only the bf16 copy). storage: packed::PackedMatrix<float>::size(b.K, b.H, b.group).
inline void widen(packed::PackedMatrix<float>& f, float* storage, const PackedMatrix& b) {
  f.reset(storage, b.K, b.group, b.H);
  for (Index v = 0; v < b.nvec; ++v) {
    const Bf16* src = b.vec(v);
    float* dst = storage + v * b.K * V;
    Index k = 0;
    for (; k + 2 <= b.K; k += 2) {
      PacketF lo, hi;
      detail::widen_pair(src + k * V, lo, hi);
      Eigen::internal::pstoreu(dst + k * V, lo);
      Eigen::internal::pstoreu(dst + (k + 1) * V, hi);
    }
    if (k < b.K) Eigen::internal::pstoreu(dst + k * V, detail::load_widen(src + k * V));
  }
}

// Backward operand: bf16(W_hh) (G*H, H), one vector per unit block. storage: size(G*H, H, 1).
inline void pack_backward(PackedMatrix& p, Bf16* storage, const float* w_hh /* (G*H, H) */, Index G,
                          Index H) {
  const Index K = G * H;
  p.reset(storage, K, 1, H);
  for (Index v = 0; v < p.nvec; ++v) {
    const Index c0 = p.col(v);
    const int nv = p.valid(v);
    Bf16* dst = storage + v * K * V;
    Index j = 0;
    if (nv == V)
      for (; j + 2 <= K; j += 2)
        detail::store_pair(dst + j * V, Eigen::internal::ploadu<PacketF>(w_hh + j * H + c0),
                           Eigen::internal::ploadu<PacketF>(w_hh + (j + 1) * H + c0));
    for (; j < K; ++j) {
      const float* wrow = w_hh + j * H + c0;
      for (int c = 0; c < V; ++c)
        dst[detail::pair_index(j, c, K)] = c < nv ? bf16::from_float(wrow[c]) : Bf16(0);
    }
  }
}

namespace detail {

// out[r, col[v] .. col[v]+valid[v]) (+)= sum_k A[r, k] * P_v[k, :]   for MR rows, NV vectors; A holds
// bf16 values already (product() rounds it once).
template <int MR, int NV>
inline void micro_kernel(float* out, Index ldo, const float* a, Index lda, const PackedMatrix& p, Index v0,
                         Index k0, Index k1, bool accumulate) {
  using P = PacketF;
  P acc[MR][NV];
  const Bf16* w[NV];
  for (int v = 0; v < NV; ++v) w[v] = p.vec(v0 + v);
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v)
      acc[r][v] = accumulate ? packed::detail::load_partial(out + r * ldo + p.col(v0 + v), p.valid(v0 + v))
                             : Eigen::internal::pset1<P>(0.0f);
  // k0 is even (product's blocking); rows 2q, 2q + 1 from one pair, added in k order
  Index k = k0;
  for (; k + 2 <= k1; k += 2) {
    P a0[MR], a1[MR];
    for (int r = 0; r < MR; ++r) {
      a0[r] = Eigen::internal::pset1<P>(a[r * lda + k]);
      a1[r] = Eigen::internal::pset1<P>(a[r * lda + k + 1]);
    }
    for (int v = 0; v < NV; ++v) {
      P lo, hi;
      widen_pair(w[v] + k * V, lo, hi);
      for (int r = 0; r < MR; ++r) {
        acc[r][v] = Eigen::internal::pmadd(a0[r], lo, acc[r][v]);
        acc[r][v] = Eigen::internal::pmadd(a1[r], hi, acc[r][v]);
      }
    }
  }
  if (k < k1) {  // an odd K's last row (k1 = K), stored alone
    for (int v = 0; v < NV; ++v) {
      const P wk = load_widen(w[v] + k * V);
      for (int r = 0; r < MR; ++r)
        acc[r][v] = Eigen::internal::pmadd(Eigen::internal::pset1<P>(a[r * lda + k]), wk, acc[r][v]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v)
      packed::detail::store_partial(out + r * ldo + p.col(v0 + v), acc[r][v], p.valid(v0 + v));
}

template <int MR>
inline void dispatch_nv(int nv, float* out, Index ldo, const float* a, Index lda, const PackedMatrix& p,
                        Index v0, Index k0, Index k1, bool accumulate) {
  switch (nv) {
    case 1:
      micro_kernel<MR, 1>(out, ldo, a, lda, p, v0, k0, k1, accumulate);
      break;
    case 2:
      micro_kernel<MR, 2>(out, ldo, a, lda, p, v0, k0, k1, accumulate);
      break;
    case 3:
      micro_kernel<MR, 3>(out, ldo, a, lda, p, v0, k0, k1, accumulate);
      break;
    case 4:
      micro_kernel<MR, 4>(out, ldo, a, lda, p, v0, k0, k1, accumulate);
      break;
    case 5:
      micro_kernel<MR, 5>(out, ldo, a, lda, p, v0, k0, k1, accumulate);
      break;
    case 6:
      micro_kernel<MR, 6>(out, ldo, a, lda, p, v0, k0, k1, accumulate);
      break;
    case 7:
      micro_kernel<MR, 7>(out, ldo, a, lda, p, v0, k0, k1, accumulate);
      break;
    default:
      micro_kernel<MR, 8>(out, ldo, a, lda, p, v0, k0, k1, accumulate);
      break;
  }
}

}  // namespace detail

namespace detail {
// bf16(A) (M, K) into this thread's buffer (grown on the first call of a shape, then reused).
inline const float* rounded_rows(const float* a, Index lda, Index M, Index K) {
  thread_local std::vector<float> work;
  if (work.size() < static_cast<std::size_t>(M * K)) work.resize(static_cast<std::size_t>(M * K));
  for (Index r = 0; r < M; ++r) bf16::round(work.data() + r * K, a + r * lda, K);
  return work.data();
}
}  // namespace detail

// out (M, N) (+)= bf16(A) (M, K) * P over the vectors [v_begin, v_end) of P only (a thread's share).
// out and A are row-major float32 with leading dimensions ldo, lda. Tiles and reduction blocking as
// packed::product (fixed by the shapes, never by the thread count: bitwise the same for any team).
inline void product(float* out, Index ldo, const float* a_in, Index lda_in, Index M, const PackedMatrix& p,
                    Index v_begin, Index v_end, bool accumulate) {
  // bf16(A) once per call, into this thread's buffer (no allocation in the steady state), instead of
  // once per broadcast (once per tile)
  const Index lda = p.K;
  const float* a = detail::rounded_rows(a_in, lda_in, M, lda);
  const int nv_tile = M == 1 ? 8 : (M == 2 ? 6 : (M == 3 ? 4 : 3));
  // the vectors of a tile are half the bytes of packed.hpp's: twice the k per L1 block
  const Index kc_l1 = std::max<Index>(64, (24 * 1024) / (3 * V * static_cast<Index>(sizeof(Bf16)))) &
                      ~Index(1);  // even: whole pairs
  const Index KC = M > 4 ? kc_l1 : p.K;
  for (Index v = v_begin; v < v_end; v += nv_tile) {
    const int nv = static_cast<int>(std::min<Index>(nv_tile, v_end - v));
    for (Index k0 = 0; k0 < p.K; k0 += KC) {
      const Index k1 = std::min(p.K, k0 + KC);
      const bool acc = accumulate || k0 > 0;
      Index r = 0;
      for (; r + 4 <= M; r += 4)
        detail::dispatch_nv<4>(nv, out + r * ldo, ldo, a + r * lda, lda, p, v, k0, k1, acc);
      switch (M - r) {
        case 3:
          detail::dispatch_nv<3>(nv, out + r * ldo, ldo, a + r * lda, lda, p, v, k0, k1, acc);
          break;
        case 2:
          detail::dispatch_nv<2>(nv, out + r * ldo, ldo, a + r * lda, lda, p, v, k0, k1, acc);
          break;
        case 1:
          detail::dispatch_nv<1>(nv, out + r * ldo, ldo, a + r * lda, lda, p, v, k0, k1, acc);
          break;
        default:
          break;
      }
    }
  }
}

// The operand of a bf16 GEMM in float32 storage: dst (n) = bf16 values of src (n), dst may be src.
// A float32 GEMM on two such operands multiplies bf16 by bf16 exactly and accumulates in float32,
// i.e. it is the bf16 product with fp32 accumulation (the input projection, the backward GEMMs).
inline void round_operand(float* dst, const float* src, Index n) {
  bf16::round(dst, src, n);
}

// ---------------------------------------------------------------------------------------------------
// The recurrent operand of a sequence call in the call's precision (sequence.hpp), one of three modes:
//   fp32    packed.hpp's float copy of W_hh;
//   stream  (bf16, B <= 2) the bf16 copy above and nothing else: half the bytes streamed per step,
//           which is what a B = 1..2 step is bound by (an inference call holds no float copy);
//   wide    (bf16, B > 2) a float copy of bf16(W_hh) in packed.hpp's layout, widened once per call:
//           from B ~ 4 rows a step is compute-bound and widening in every step costs more than the
//           bytes save (measured 0.56-0.65x at B = 16 on AVX2 and AVX-512).
// stream and wide give bitwise the same results: the same bf16 operands, the same fp32 FMAs in the
// same order (a k-blocked sum reloads its fp32 partial sums exactly).

// bf16 products for this call: the calling thread's precision (bf16.hpp), float32 calls only.
template <class S>
inline bool use_bf16() {
  return std::is_same_v<S, float> && bf16::thread_precision() == bf16::Precision::bf16;
}

enum class Mode { fp32, stream, wide };

// The mode of a call whose per-step products have `rows` (= B) left-hand rows.
template <class S>
inline Mode mode_for(Index rows) {
  if (!use_bf16<S>()) return Mode::fp32;
  return rows <= 2 ? Mode::stream : Mode::wide;
}

template <class S>
struct Operand {
  Mode mode = Mode::fp32;
  packed::PackedMatrix<S> f;  // fp32 and wide
  PackedMatrix b;             // stream
  Index blocks() const { return mode == Mode::stream ? b.blocks() : f.blocks(); }
  Index nvec() const { return mode == Mode::stream ? b.nvec : f.nvec; }
};

// Storage (elements) for an operand of packed::PackedMatrix<S>::size(K, H, group) = n entries:
// float storage (fp32, wide) or bf16 storage (stream), the same count (the layouts share V).
inline Index float_size(Mode m, Index n) {
  return m == Mode::stream ? 0 : n;
}
inline Index bf16_size(Mode m, Index n) {
  return m == Mode::stream ? n : 0;
}

template <class S>
void pack_forward(Operand<S>& p, S* fstore, Bf16* bstore, const S* w_hh, Index G, Index H, Index K = -1) {
  if constexpr (std::is_same_v<S, float>) {
    if (p.mode == Mode::stream) return pack_forward(p.b, bstore, w_hh, G, H, K);
  }
  packed::pack_forward(p.f, fstore, w_hh, G, H, K);
  if constexpr (std::is_same_v<S, float>) {
    if (p.mode == Mode::wide) bf16::round(fstore, fstore, p.f.nvec * p.f.K * V);  // elementwise
  }
}

template <class S>
void pack_backward(Operand<S>& p, S* fstore, Bf16* bstore, const S* w_hh, Index G, Index H) {
  if constexpr (std::is_same_v<S, float>) {
    if (p.mode == Mode::stream) return pack_backward(p.b, bstore, w_hh, G, H);
  }
  packed::pack_backward(p.f, fstore, w_hh, G, H);
  if constexpr (std::is_same_v<S, float>) {
    if (p.mode == Mode::wide) bf16::round(fstore, fstore, p.f.nvec * p.f.K * V);
  }
}

template <class S>
void product(S* out, Index ldo, const S* a, Index lda, Index M, const Operand<S>& p, Index v_begin,
             Index v_end, bool accumulate) {
  if constexpr (std::is_same_v<S, float>) {
    if (p.mode == Mode::stream) return product(out, ldo, a, lda, M, p.b, v_begin, v_end, accumulate);
    if (p.mode == Mode::wide) {
      const float* ar = detail::rounded_rows(a, lda, M, p.f.K);
      return packed::product(out, ldo, ar, p.f.K, M, p.f, v_begin, v_end, accumulate);
    }
  }
  packed::product(out, ldo, a, lda, M, p.f, v_begin, v_end, accumulate);
}

// A GEMM operand in the call's precision: src itself, or (bf16) its bf16 values written to
// work[*used ..] (the caller sized work), *used advanced past them.
template <class S>
const S* operand(bool use, const S* src, Index n, S* work, Index* used) {
  if constexpr (std::is_same_v<S, float>) {
    if (use) {
      S* dst = work + *used;
      round_operand(dst, src, n);
      *used += n;
      return dst;
    }
  }
  return src;
}

}  // namespace packed_bf16
}  // namespace rnnfast

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
