// Thread count shared by every kernel of one compiled variant.
#include "rnnfast/parallel.hpp"

#include <Eigen/Core>
#include <atomic>
#include <cstdlib>
#include <thread>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace rnnfast {
namespace {

int default_threads() {
  if (const char* env = std::getenv("RNNFAST_NUM_THREADS")) {
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && n >= 1 && n <= 4096) return static_cast<int>(n);
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

// Eigen never threads a product by itself: the kernels split their products across threads
// themselves (parallel_product in parallel.hpp), at fixed row boundaries, so a result is bitwise the
// same with any thread count, and small products never pay for a parallel region.
int init_threads() {
  Eigen::setNbThreads(1);
  return default_threads();
}

std::atomic<int>& thread_count() {
  static std::atomic<int> n{init_threads()};
  return n;
}

}  // namespace

int get_num_threads() { return thread_count().load(std::memory_order_relaxed); }

void set_num_threads(int n) {
  if (n < 1) n = 1;
  thread_count().store(n, std::memory_order_relaxed);
  Eigen::setNbThreads(1);
}

}  // namespace rnnfast
