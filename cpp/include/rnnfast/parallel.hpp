// rnnfast/parallel.hpp - the library-wide thread count, how work is split across threads, and the
// floating-point environment of a kernel call.
#pragma once

#include "rnnfast/common.hpp"  // first: its Eigen configuration macros precede <Eigen/Core>
#include "rnnfast/memory.hpp"

#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <cstddef>
#include <vector>

#if defined(__SSE__) || defined(_M_X64)
#include <xmmintrin.h>
#define RNNFAST_HAVE_MXCSR 1
#endif

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace rnnfast {

// Number of threads kernels may use (>= 1). Defaults to RNNFAST_NUM_THREADS or the core count.
int get_num_threads();
// Sets the thread count used by later kernel calls. n < 1 is an error the caller checks.
void set_num_threads(int n);

// Threads for the time loop of one call: the per-step recurrent product is split over blocks of
// hidden units (each thread keeps its slice of W_hh in its own cache, one barrier per step), so a
// step must carry enough work to pay for the barrier (~1 us when both threads run; far more when
// the cores are shared). Below ~0.25 MFLOP per step a single thread wins.
inline int loop_threads(Index B, Index G, Index H, Index unit_blocks) {
  const double step_flops = 2.0 * static_cast<double>(B) * static_cast<double>(G) * static_cast<double>(H) *
                            static_cast<double>(H);
  if (step_flops < 2.5e5) return 1;
  return static_cast<int>(std::max<Index>(1, std::min<Index>(get_num_threads(), unit_blocks)));
}

// This thread's index and the team size inside an OpenMP parallel region (0 and 1 outside one).
struct TeamSlot {
  int tid = 0;
  int nth = 1;
};
inline TeamSlot team_slot() {
  TeamSlot s;
#if defined(_OPENMP)
  s.tid = omp_get_thread_num();
  s.nth = omp_get_num_threads();
#endif
  return s;
}

// [begin, end) of part `i` of `n` near-equal parts of [0, count).
inline void split_range(Index count, int n, int i, Index& begin, Index& end) {
  const Index q = count / n, r = count % n;
  begin = i * q + std::min<Index>(i, r);
  end = begin + q + (i < r ? 1 : 0);
}

// out = lhs * rhs (+ init broadcast to every row, when init is given) for the large products of a
// call (the input projection, dW_hh, dW_ih, dx), the rows of out split over threads at multiples of
// 48 rows (a multiple of Eigen's register-block height for every scalar and SIMD width), each part
// one single-threaded Eigen GEMM. Eigen's blocking along the reduction depends only on its length, so
// every output element is summed in the same order with 1 or 2 threads: results are bitwise
// identical across thread counts. Products under ~4 MFLOP (~0.1 ms) stay on the calling thread.
// With init, each part is first filled with init and the product accumulated onto it: Eigen's
// `out = lhs * rhs` zero-fills out before accumulating, so this saves two passes over out.
template <class Out, class Lhs, class Rhs>
void parallel_product(Out out, const Lhs& lhs, const Rhs& rhs, const typename Out::Scalar* init = nullptr) {
  using S = typename Out::Scalar;
  constexpr Index kRowAlign = 48;
  const Index M = out.rows();
  const Index blocks = (M + kRowAlign - 1) / kRowAlign;
  const double flops = 2.0 * static_cast<double>(M) * static_cast<double>(out.cols()) * static_cast<double>(lhs.cols());
  const int nt = flops < 4e6 ? 1 : static_cast<int>(std::max<Index>(1, std::min<Index>(get_num_threads(), blocks)));
  auto part = [&](Index r0, Index n) {
    if (init) {
      out.middleRows(r0, n).rowwise() = Eigen::Map<const Eigen::Matrix<S, 1, Eigen::Dynamic>>(init, out.cols());
      out.middleRows(r0, n).noalias() += lhs.middleRows(r0, n) * rhs;
    } else {
      out.middleRows(r0, n).noalias() = lhs.middleRows(r0, n) * rhs;
    }
  };
  if (nt <= 1) {
    part(0, M);
    return;
  }
#if defined(_OPENMP)
#pragma omp parallel num_threads(nt)
#endif
  {
    const TeamSlot me = team_slot();
    Index b0 = 0, b1 = 0;
    split_range(blocks, me.nth, me.tid, b0, b1);
    const Index r0 = std::min(M, b0 * kRowAlign), r1 = std::min(M, b1 * kRowAlign);
    if (r1 > r0) part(r0, r1 - r0);
  }
}

// Flushes subnormal floats to zero (FTZ) and treats subnormal inputs as zero (DAZ) on this thread
// for the lifetime of the object, restoring the previous mode after. Subnormals appear when gates
// saturate and gradients vanish over long sequences, and they slow every x86 FP unit down 10-100x;
// values below ~1e-38 (float) / 1e-308 (double) do not matter to any result here.
class ScopedFlushDenormals {
 public:
  ScopedFlushDenormals() {
#ifdef RNNFAST_HAVE_MXCSR
    saved_ = _mm_getcsr();
    _mm_setcsr(saved_ | 0x8040u);  // FTZ (bit 15) | DAZ (bit 6)
#endif
  }
  ~ScopedFlushDenormals() {
#ifdef RNNFAST_HAVE_MXCSR
    _mm_setcsr(saved_);
#endif
  }
  ScopedFlushDenormals(const ScopedFlushDenormals&) = delete;
  ScopedFlushDenormals& operator=(const ScopedFlushDenormals&) = delete;

 private:
  unsigned saved_ = 0;
};

// A scratch buffer of n scalars for one kernel call, reused by later calls on the same thread, so
// the steady state (the same shapes call after call) allocates nothing and touches no new pages.
// Slots keep buffers of different roles apart within one call. Contents are undefined on entry.
// Buffers above kMaxCached bytes are not kept (a one-off huge call does not pin its memory): they
// are taken for the call and released after it. Storage comes from memory.hpp (pre-faulted).
template <class S>
class Scratch {
 public:
  static constexpr int kSlots = 7;
  static constexpr std::size_t kMaxCached = std::size_t(64) << 20;

  Scratch(int slot, Index n) {
    const std::size_t count = static_cast<std::size_t>(std::max<Index>(n, 1));
    if (count * sizeof(S) <= kMaxCached) {
      auto& buf = cache()[static_cast<std::size_t>(slot)];
      if (buf.size() < count) {
        buf = memory::Buffer<S>();  // release first: never hold the old and the new buffer at once
        buf = memory::Buffer<S>(count);
      }
      ptr_ = buf.data();
    } else {
      own_ = memory::Buffer<S>(count);
      ptr_ = own_.data();
    }
  }
  S* data() const { return ptr_; }

 private:
  static std::array<memory::Buffer<S>, kSlots>& cache() {
    thread_local std::array<memory::Buffer<S>, kSlots> buffers;
    return buffers;
  }
  S* ptr_ = nullptr;
  memory::Buffer<S> own_;
};

}  // namespace rnnfast
