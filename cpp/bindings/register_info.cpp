// Build and CPU information, and the thread count.
#include <pybind11/pybind11.h>

#include <Eigen/Core>
#include <string>

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
  m.def("memory_cached_bytes", &rnnfast::memory::cached_bytes,
        "Bytes of released large blocks kept for reuse by later calls.");
  m.def("memory_cache_limit", &rnnfast::memory::cache_limit, "The most memory_cached_bytes() may reach.");
  m.def("release_memory", &rnnfast::memory::trim, "Returns every kept block to the system.");
}
