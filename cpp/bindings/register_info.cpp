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
  m.def(
      "set_num_threads",
      [](int n) {
        if (n < 1) throw py::value_error("n: expected an integer >= 1, got " + std::to_string(n));
        rnnfast::set_num_threads(n);
      },
      py::arg("n"), "Sets the number of threads kernels may use (>= 1).");
  m.def("memory_cached_bytes", &rnnfast::memory::cached_bytes,
        "Bytes of released large blocks kept for reuse by later calls.");
  m.def("memory_cache_limit", &rnnfast::memory::cache_limit, "The most memory_cached_bytes() may reach.");
  m.def("release_memory", &rnnfast::memory::trim, "Returns every kept block to the system.");
}
