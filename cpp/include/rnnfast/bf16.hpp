// rnnfast/bf16.hpp - bfloat16 storage and conversions (issue 18: bf16 products, fp32 accumulation).
//
// bf16 is the upper half of an IEEE float32: sign, the same 8 exponent bits, 7 mantissa bits. It has
// float32's range (so no scaling is needed) and 8 significant bits (unit roundoff u = 2^-8). It is
// only a storage format here: a bf16 value is widened to float32 (exactly: append 16 zero bits)
// before any arithmetic, and a product of two bf16 values is exact in float32 (8 + 8 significant bits
// <= 24), so "bf16 multiplication with fp32 accumulation" is an fp32 FMA on widened operands.
//
// float32 -> bf16 rounds to nearest, ties to even (the IEEE default, and what AVX512_BF16's
// vcvtneps2bf16 and PyTorch's c10::BFloat16 do):
//   bits += 0x7fff + ((bits >> 16) & 1); keep the upper 16 bits
// which also rounds the largest finite floats (>= the midpoint above bf16's largest finite value,
// 0x7f7f) up to Inf, as round-to-nearest must; Inf stays Inf. NaN is the one input where the carry
// could turn it into Inf: it is kept a NaN (quieted, sign kept) instead. Subnormals round like any
// other value (the integer rounding needs no special case).
//
// The vectorised conversions (namespace vec below) do the same integer operations on AVX2 (8 floats)
// and AVX-512F/BW (16 floats) registers, selected by the variant's compiler flags like Eigen's
// packets; other targets use the scalar functions. They are bit-exact with the scalar ones (tested).
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "rnnfast/common.hpp"

namespace rnnfast {
namespace bf16 {

// One bf16 value: its 16 bits, the upper half of the float32 it stands for.
using Bf16 = std::uint16_t;

inline std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// float32 -> bf16, round to nearest even; NaN stays NaN (quieted), +-Inf stays +-Inf.
inline Bf16 from_float(float f) {
  const std::uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<Bf16>((u >> 16) | 0x0040u);  // NaN
  return static_cast<Bf16>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// bf16 -> float32, exact.
inline float to_float(Bf16 b) {
  return bits_float(static_cast<std::uint32_t>(b) << 16);
}

// f rounded to the nearest bf16 value, as a float32 (what a bf16 operand means in fp32 arithmetic).
inline float round(float f) {
  return to_float(from_float(f));
}

namespace vec {

// Floats converted per vector instruction by the variant's path (1: the scalar path).
constexpr int width() {
#if defined(__AVX512F__) && defined(__AVX512BW__)
  return 16;
#elif defined(__AVX2__)
  return 8;
#else
  return 1;
#endif
}

#if defined(__AVX512F__) && defined(__AVX512BW__)
// 16 floats -> 16 bf16 (the integer rounding above, NaN lanes blended back in).
inline __m256i from_float16(__m512 x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  const __m512i q = _mm512_mask_blend_epi32(nan, r, _mm512_or_si512(u, _mm512_set1_epi32(0x00400000)));
  return _mm512_cvtepi32_epi16(_mm512_srli_epi32(q, 16));
}
// 16 bf16 -> 16 floats
inline __m512 to_float16(__m256i b) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16));
}
#endif

#if defined(__AVX2__)
// 8 floats -> 8 bf16
inline __m128i from_float8(__m256 x) {
  const __m256i u = _mm256_castps_si256(x);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
  const __m256i q = _mm256_blendv_epi8(r, _mm256_or_si256(u, _mm256_set1_epi32(0x00400000)), nan);
  const __m256i s = _mm256_srli_epi32(q, 16);  // each lane <= 0xffff: the unsigned pack is exact
  // packus works per 128-bit half: [s0..s3 s0..s3 | s4..s7 s4..s7]; keep quarters 0 and 2
  const __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(s, s), 0x08);
  return _mm256_castsi256_si128(p);
}
// 8 bf16 -> 8 floats
inline __m256 to_float8(__m128i b) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(b), 16));
}
#endif

}  // namespace vec

// dst[i] = from_float(src[i]), i < n.
inline void from_float(Bf16* dst, const float* src, Index n) {
  Index i = 0;
#if defined(__AVX512F__) && defined(__AVX512BW__)
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), vec::from_float16(_mm512_loadu_ps(src + i)));
#elif defined(__AVX2__)
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), vec::from_float8(_mm256_loadu_ps(src + i)));
#endif
  for (; i < n; ++i) dst[i] = from_float(src[i]);
}

// dst[i] = to_float(src[i]), i < n.
inline void to_float(float* dst, const Bf16* src, Index n) {
  Index i = 0;
#if defined(__AVX512F__) && defined(__AVX512BW__)
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(dst + i, vec::to_float16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
#elif defined(__AVX2__)
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, vec::to_float8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
#endif
  for (; i < n; ++i) dst[i] = to_float(src[i]);
}

// dst[i] = round(src[i]) (dst may be src): float32 values that are exactly bf16 values.
inline void round(float* dst, const float* src, Index n) {
  Index i = 0;
#if defined(__AVX512F__) && defined(__AVX512BW__)
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(dst + i, vec::to_float16(vec::from_float16(_mm512_loadu_ps(src + i))));
#elif defined(__AVX2__)
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, vec::to_float8(vec::from_float8(_mm256_loadu_ps(src + i))));
#endif
  for (; i < n; ++i) dst[i] = round(src[i]);
}

// The precision of the sequence kernels' products on this thread (sequence.hpp reads it at entry;
// float32 calls only, float64 ignores it): fp32, or bf16 operands with fp32 accumulation. Set by
// the binding core._set_precision (python/rnnfast/_precision.py's context manager), so the kernel
// signatures and every binding stay as they are; a thread-local, so threads never see each other's.
enum class Precision { fp32, bf16 };
inline Precision& thread_precision() {
  thread_local Precision p = Precision::fp32;
  return p;
}

}  // namespace bf16
}  // namespace rnnfast
