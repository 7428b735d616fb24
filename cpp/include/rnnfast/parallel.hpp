// rnnfast/parallel.hpp - the library-wide thread count, how work is split across threads, and the
// floating-point environment of a kernel call.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <vector>

#include "rnnfast/common.hpp"  // first: its Eigen configuration macros precede <Eigen/Core>
#include "rnnfast/memory.hpp"

#if defined(__SSE__) || defined(_M_X64)
#include <xmmintrin.h>
#define RNNFAST_HAVE_MXCSR 1
#endif

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace rnnfast {

// Number of threads kernels may use (>= 1): an upper bound; each call takes as many of them as its
// work pays for (loop_threads, product_threads). Defaults to RNNFAST_NUM_THREADS or the CPUs this
// process may run on.
int get_num_threads();
// Largest thread count set_num_threads accepts: 4x the CPUs this process may run on, at least 16.
int max_threads();
// Sets the thread count used by later kernel calls, clamped to [1, max_threads()]. Throws
// std::runtime_error when the threads cannot be created now (memory or process limits): the count
// is then left as it was (GNU OpenMP aborts the process when it cannot create a team's thread).
void set_num_threads(int n);

// Seconds one barrier of the full team costs now: measured by a short probe (a few rounds of a
// spinning barrier, given up after 2 ms), re-measured when older than 100 ms. Idle cores: ~0.3 us;
// a busy process on the other core or another runtime's spinning pool: 0.1-2 ms (the barrier then
// waits for a descheduled thread). 0 when only one thread is allowed.
double barrier_cost();

// How many threads the CPUs can run for rnnfast now: the CPUs this process may use minus the CPU
// time that other processes, the hypervisor (steal) and other threads of this process (another
// runtime's pool, NumPy's BLAS threads) took over the last ~100 ms, from /proc/stat and the CPU
// clocks of rnnfast's own threads. get_num_threads() where that cannot be read.
int free_cpus();

// The `rows` of a product that is not a stream (product_threads' default).
constexpr Index kManyRows = Index(1) << 30;

// Threads for a time loop that ends every step with one barrier, each step `step_flops` of work on
// `rows` batch rows that splits over at most `parts` threads, and at most free_cpus(). A thread's
// share of a step must be worth at least 16 barriers at the measured cost (and the step at least
// 0.25 MFLOP, below which the exchange of h_t between cores costs more than it saves even on idle
// cores); at rows <= 4, where the step streams W_hh, 4 barriers and 0.025 MFLOP (parallel.cpp has
// the measurements). Beside a busy process or a spinning pool a barrier waits for a descheduled
// thread (0.1-3 ms): the loop then runs on one thread, which gets its fair share of a core instead
// of waiting at every step.
int loop_threads_for(double step_flops, Index parts, Index rows);
// Threads for one product of `flops` split into at most `parts` row blocks (one parallel region):
// at least 4 MFLOP at the GEMM rate (a parallel region costs a wake-up of a sleeping thread, ~70 us
// in a VM), and each thread's share worth 16 measured barriers. A product with `rows` <= 4 left-hand
// rows streams its weights (a one-step call's W_ih x and W_hh h) and runs at most half the GEMM rate
// (measured 1/4-1/2 on Zen 3): its time is counted at half the rate.
int product_threads(double flops, Index parts, Index rows = kManyRows);
// Testing hook (core._force_product_threads): n > 0 makes every product_threads call return
// min(n, parts) threads whatever the work and the machine's load (which run small products, and any
// product on a busy machine, on 1 thread), so the tests of bitwise identity across thread counts
// split the products they claim to; 0 = automatic. Still 1 inside a parallel region and in a fork()
// child, and fewer when the threads cannot be created.
void force_product_threads(int n);
// The team a testing hook forces (force_product_threads, core._force_loop_threads): min(forced,
// parts) threads, but 1 inside a parallel region and in a fork() child (where a team would hang),
// and fewer when the threads cannot be created.
int forced_team(int forced, Index parts);

// Threads for the time loop of one call: the per-step recurrent product is split over blocks of
// hidden units (each thread keeps its slice of W_hh in its own cache, one barrier per step).
inline int loop_threads(Index B, Index G, Index H, Index unit_blocks) {
  return loop_threads_for(
      2.0 * static_cast<double>(B) * static_cast<double>(G) * static_cast<double>(H) * static_cast<double>(H),
      unit_blocks, B);
}

// This thread's index and the team size inside an OpenMP parallel region (0 and 1 outside one).
struct TeamSlot {
  int tid = 0;
  int nth = 1;
};
// Records the calling thread as one of rnnfast's (a kernel caller or a team thread), once per thread:
// the CPU time of these threads is rnnfast's own load, everything else on the CPUs is competition.
void note_own_thread();
inline TeamSlot team_slot() {
  TeamSlot s;
#if defined(_OPENMP)
  s.tid = omp_get_thread_num();
  s.nth = omp_get_num_threads();
  if (s.nth > 1) note_own_thread();
#endif
  return s;
}

// The per-step barrier of a time loop's team: every thread spins on a shared generation counter,
// a bounded number of rounds (~10-40 us: a teammate that is running arrives within a step's work),
// then yields its CPU between checks, so a teammate that was descheduled gets the core instead of
// a spinning waiter. Cheaper than libgomp's barrier at one per step (measured by
// rnnfast._core.barrier_probe): one atomic add per arrival and one store to release the team. The
// arrival counter and the generation sit on separate cache lines (the waiters read only the
// generation). Construct it outside the parallel region for a team of n (or reset(n) before use by
// one thread while no thread waits).
class StepBarrier {
 public:
  explicit StepBarrier(int n = 1) : n_(n) {}
  void reset(int n) {
    n_ = n;
    arrived_.store(0, std::memory_order_relaxed);
  }
  void wait() {
    if (n_ <= 1) return;
    const std::uint32_t gen = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.store(gen + 1, std::memory_order_release);  // releases the team, and the reset above
      return;
    }
    int spins = 0;
    while (generation_.load(std::memory_order_acquire) == gen) {
      if (spins < kSpins) {
        ++spins;
        pause();
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  static constexpr int kSpins = 1 << 12;
  static void pause() {
#if defined(RNNFAST_HAVE_MXCSR)
    _mm_pause();
#endif
  }
  alignas(64) std::atomic<int> arrived_{0};
  alignas(64) std::atomic<std::uint32_t> generation_{0};
  int n_;
};

// [begin, end) of part `i` of `n` near-equal parts of [0, count).
inline void split_range(Index count, int n, int i, Index& begin, Index& end) {
  const Index q = count / n, r = count % n;
  begin = i * q + std::min<Index>(i, r);
  end = begin + q + (i < r ? 1 : 0);
}

// out = lhs * rhs (+ init broadcast to every row, when init is given) for the large products of a
// call (the input projection, dW_hh, dW_ih, dx), the rows of out split over threads near-evenly in
// blocks of 4 rows (the last block also takes the M % 4 rows left over), each part one
// single-threaded Eigen GEMM. Eigen computes a row-major out as out^T = rhs^T lhs^T, so the rows of
// out are its register block's columns (nr = 4 for every scalar and SIMD width in Eigen 3.4): parts
// that start at multiples of 4 keep every row in the same 4-column block (or the same remainder) as
// one GEMM over all rows would, and Eigen's blocking along the reduction depends only on its length,
// so every output element is summed in the same order with any thread count: results are bitwise
// identical across thread counts. No part is a single row (unless M = 1): Eigen runs a one-row
// product as a GEMV, which sums in another order (the old 48-row blocks did that to the last row
// when M = 48k + 1). (48-row blocks also split the 100 rows of a B = 1 input projection 96 / 4 at
// 2 threads; 4-row blocks split them 52 / 48.) product_threads decides how many threads it is worth.
// With init, each part is first filled with init and the product accumulated onto it: Eigen's
// `out = lhs * rhs` zero-fills out before accumulating, so this saves two passes over out.
template <class Out, class Lhs, class Rhs>
void parallel_product(Out out, const Lhs& lhs, const Rhs& rhs, const typename Out::Scalar* init = nullptr) {
  using S = typename Out::Scalar;
  constexpr Index kRowAlign = 4;  // Eigen's nr (see above)
  static_assert(kRowAlign % Eigen::internal::gebp_traits<S, S>::nr == 0,
                "parts of out must start at Eigen's register-block columns (bitwise across thread counts)");
  const Index M = out.rows();
  const Index blocks = std::max<Index>(1, M / kRowAlign);  // the last one ends at M
  const double flops =
      2.0 * static_cast<double>(M) * static_cast<double>(out.cols()) * static_cast<double>(lhs.cols());
  const int nt = product_threads(flops, blocks);
  auto part = [&](Index r0, Index n) {
    if (init) {
      out.middleRows(r0, n).rowwise() =
          Eigen::Map<const Eigen::Matrix<S, 1, Eigen::Dynamic>>(init, out.cols());
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
    const Index r0 = b0 == blocks ? M : b0 * kRowAlign, r1 = b1 == blocks ? M : b1 * kRowAlign;
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
  static constexpr int kSlots = 8;
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
