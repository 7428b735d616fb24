// Build and CPU information, and the thread count.
#include <pybind11/pybind11.h>

#include <Eigen/Core>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif
#if defined(_OPENMP)
#include <omp.h>
#endif

#include "rnnfast/memory.hpp"
#include "rnnfast/parallel.hpp"

namespace py = pybind11;

#ifndef RNNFAST_COMPILER
#define RNNFAST_COMPILER "unknown"
#endif

namespace {

// What the running CPU supports, asked of the CPU itself (cpuid through the compiler's builtin).
py::dict cpu_features() {
  py::dict d;
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  d["avx2"] = static_cast<bool>(__builtin_cpu_supports("avx2"));
  d["fma"] = static_cast<bool>(__builtin_cpu_supports("fma"));
  d["avx512f"] = static_cast<bool>(__builtin_cpu_supports("avx512f"));
  d["avx512bw"] = static_cast<bool>(__builtin_cpu_supports("avx512bw"));
  d["avx512dq"] = static_cast<bool>(__builtin_cpu_supports("avx512dq"));
  d["avx512vl"] = static_cast<bool>(__builtin_cpu_supports("avx512vl"));
#endif
  return d;
}

// Sum of n floats with 8 independent accumulators (FP add latency x throughput: <= 8 adds in
// flight), so the loop is bound by the loads, not by one dependent chain of adds.
float sum_floats(const float* p, std::size_t n) {
#if defined(__AVX2__)
  __m256 a[8];
  for (auto& v : a) v = _mm256_setzero_ps();
  std::size_t i = 0;
  for (; i + 64 <= n; i += 64)
    for (int k = 0; k < 8; ++k) a[k] = _mm256_add_ps(a[k], _mm256_load_ps(p + i + 8 * k));
  for (int k = 1; k < 8; ++k) a[0] = _mm256_add_ps(a[0], a[k]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, a[0]);
  float r = 0.0f;
  for (float l : lanes) r += l;
  for (; i < n; ++i) r += p[i];
  return r;
#else
  float r[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) r[k] += p[i + k];
  for (; i < n; ++i) r[0] += p[i];
  return r[0] + r[1] + r[2] + r[3] + r[4] + r[5] + r[6] + r[7];
#endif
}

double seconds_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Read bandwidth (bytes/s, all threads together) of `threads` threads, each summing its own
// 64-byte-aligned buffer of `nbytes` bytes (first-touched by that thread) over and over: the
// bandwidth of the cache level a buffer of that size lives in (per-core L1/L2, shared L3, DRAM).
// Each thread times rounds of ~4 MiB of reads for `seconds` after one warm-up pass and keeps its
// median round; the result is the sum of the threads' rates.
double read_bandwidth(std::size_t nbytes, int threads, double seconds) {
  const std::size_t n = std::max<std::size_t>(64, nbytes / sizeof(float) / 64 * 64);
  const std::size_t passes = std::max<std::size_t>(1, (std::size_t(1) << 22) / (n * sizeof(float)));
  const double round_bytes = static_cast<double>(passes * n * sizeof(float));
  std::vector<double> rate(static_cast<std::size_t>(threads), 0.0);
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads)
#endif
  {
    int tid = 0;
#if defined(_OPENMP)
    tid = omp_get_thread_num();
#endif
    float* buf = static_cast<float*>(Eigen::internal::aligned_malloc(n * sizeof(float)));
    std::fill(buf, buf + n, 1.0f);
    float s = sum_floats(buf, n);  // warm-up: the buffer into its cache level
    std::vector<double> dt;
    dt.reserve(4096);
#if defined(_OPENMP)
#pragma omp barrier
#endif
    const double t_end = seconds_now() + seconds;
    for (double t = seconds_now(); t < t_end && dt.size() < 4096;) {
      for (std::size_t r = 0; r < passes; ++r) {
        s += sum_floats(buf, n);
        asm volatile("" : "+r"(buf) : : "memory");  // each pass re-reads the buffer (not hoisted)
      }
      asm volatile("" : "+x"(s) : : "memory");  // the sums are done before the clock is read
      const double t1 = seconds_now();
      dt.push_back(t1 - t);
      t = t1;
    }
    volatile float keep = s;  // the sums are used: the passes are not optimised away
    (void)keep;
    Eigen::internal::aligned_free(buf);
    if (!dt.empty()) {
      std::nth_element(dt.begin(), dt.begin() + static_cast<std::ptrdiff_t>(dt.size() / 2), dt.end());
      rate[static_cast<std::size_t>(tid)] = round_bytes / dt[dt.size() / 2];
    }
  }
  double total = 0.0;
  for (double r : rate) total += r;
  return total;
}

struct BarrierTimes {
  int team = 1;
  double omp_s = 0.0, spin_s = 0.0;
};
BarrierTimes barrier_times(int threads, int rounds) {
  BarrierTimes out;
  rnnfast::StepBarrier spin(threads);
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads)
#endif
  {
    int team = 1;
    bool master = true;
#if defined(_OPENMP)
    team = omp_get_num_threads();
    master = omp_get_thread_num() == 0;
#pragma omp barrier
#endif
    const double t0 = seconds_now();
    for (int r = 0; r < rounds; ++r) {
#if defined(_OPENMP)
#pragma omp barrier
#endif
    }
    const double t1 = seconds_now();
    if (master) spin.reset(team);
#if defined(_OPENMP)
#pragma omp barrier
#endif
    const double t2 = seconds_now();
    if (team > 1)
      for (int r = 0; r < rounds; ++r) spin.wait();
    const double t3 = seconds_now();
    if (master && team > 1) {
      out.team = team;
      out.omp_s = (t1 - t0) / rounds;
      out.spin_s = (t3 - t2) / rounds;
    }
  }
  return out;
}

}  // namespace

void register_info(py::module_& m) {
  m.attr("variant") = RNNFAST_VARIANT;
  m.attr("eigen_version") = std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) +
                            "." + std::to_string(EIGEN_MINOR_VERSION);
  m.attr("compiler") = RNNFAST_COMPILER;
#if defined(_OPENMP)
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
  m.attr("simd_instruction_sets") = std::string(Eigen::SimdInstructionSetsInUse());
  m.def("cpu_features", &cpu_features, "Dict of the SIMD features the running CPU supports.");
  m.def("get_num_threads", &rnnfast::get_num_threads, "Threads kernels may use.");
  m.def("max_threads", &rnnfast::max_threads, "Largest count set_num_threads accepts.");
  m.def(
      "set_num_threads",
      [](const py::int_& n) {
        // any Python int: 2**31 or 2**70 must give the ValueError below, not a conversion TypeError
        const std::string range = "1.." + std::to_string(rnnfast::max_threads());
        long long v = 0;
        int overflow = 0;
        v = PyLong_AsLongLongAndOverflow(n.ptr(), &overflow);
        if (overflow != 0 || v < 1 || v > rnnfast::max_threads())
          throw py::value_error("n: expected an integer in " + range +
                                " (4x this process's CPUs, at least 16), got " + std::string(py::str(n)));
        // set_num_threads starts the threads once to check they can be created (no kernel runs)
        rnnfast::set_num_threads(static_cast<int>(v));
      },
      py::arg("n"), "Sets the number of threads kernels may use (1..max_threads()).");
  m.def(
      "barrier_cost", [] { return rnnfast::barrier_cost(); },
      "Seconds one barrier of the kernels' thread team costs now (measured at most every 100 ms).");
  m.def(
      "free_cpus", [] { return rnnfast::free_cpus(); },
      "Threads the CPUs can run for the kernels now (CPUs minus what others took over ~100 ms).");
  m.def(
      "_force_product_threads",
      [](int n) { rnnfast::force_product_threads(std::clamp(n, 0, rnnfast::max_threads())); }, py::arg("n"),
      "Testing only: the large products of a call (input projection, dx, dW_ih, dW_hh) run teams of n "
      "threads (at most one per 4-row block) whatever their size and the machine's load; 0 restores the "
      "automatic choice.");
  m.def(
      "read_bandwidth",
      [](long long nbytes, int threads, double seconds) {
        if (nbytes < 256 || nbytes > (1LL << 32))
          throw py::value_error("nbytes: expected 256..2**32 bytes per thread, got " +
                                std::to_string(nbytes));
        if (threads < 1 || threads > rnnfast::max_threads())
          throw py::value_error("threads: expected 1.." + std::to_string(rnnfast::max_threads()) + ", got " +
                                std::to_string(threads));
        if (!(seconds > 0.0 && seconds <= 10.0))
          throw py::value_error("seconds: expected a value in (0, 10], got " + std::to_string(seconds));
        py::gil_scoped_release release;  // touches only its own buffers
        return read_bandwidth(static_cast<std::size_t>(nbytes), threads, seconds);
      },
      py::arg("nbytes"), py::arg("threads") = 1, py::arg("seconds") = 0.05,
      "Read bandwidth in bytes/s of `threads` threads each re-reading its own buffer of `nbytes` bytes "
      "(the yardstick of the cache level a buffer of that size lives in).");
  m.def(
      "barrier_probe",
      [](int threads, int rounds) {
        if (threads < 1 || threads > rnnfast::max_threads())
          throw py::value_error("threads: expected 1.." + std::to_string(rnnfast::max_threads()) + ", got " +
                                std::to_string(threads));
        if (rounds < 1 || rounds > 10000000)
          throw py::value_error("rounds: expected 1..10000000, got " + std::to_string(rounds));
        // the dict is built after the probe, with the GIL held again
        double omp_s = 0.0, spin_s = 0.0;
        int team = 1;
        {
          py::gil_scoped_release release;  // the probe touches no Python object
          const auto r = barrier_times(threads, rounds);
          omp_s = r.omp_s;
          spin_s = r.spin_s;
          team = r.team;
        }
        py::dict d;
        d["threads"] = team;
        d["omp_barrier_s"] = omp_s;
        d["step_barrier_s"] = spin_s;
        return d;
      },
      py::arg("threads") = 2, py::arg("rounds") = 2000,
      "Seconds per barrier round in a running team: {'threads', 'omp_barrier_s', 'step_barrier_s'}.");
  m.def("memory_cached_bytes", &rnnfast::memory::cached_bytes,
        "Bytes of released large blocks kept for reuse by later calls.");
  m.def("memory_cache_limit", &rnnfast::memory::cache_limit, "The most memory_cached_bytes() may reach.");
  m.def("release_memory", &rnnfast::memory::trim, "Returns every kept block to the system.");
}
