// Thread count shared by every kernel of one compiled variant.
#include "rnnfast/parallel.hpp"

#include <Eigen/Core>
#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <thread>

#if defined(_OPENMP) && defined(__unix__)
#include <pthread.h>
#define RNNFAST_HAVE_ATFORK 1
#endif

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
std::atomic<int>& thread_count();

// Set in a child of fork(): GNU OpenMP's thread pool does not survive fork, and a parallel region
// in the child of a process that had started the pool hangs for ever (seen: every child of a parent
// that had run 2-thread kernels). So a forked child runs its kernels on one thread and refuses more.
std::atomic<bool>& forked_child() {
  static std::atomic<bool> f{false};
  return f;
}

int init_threads() {
  Eigen::setNbThreads(1);
#if defined(RNNFAST_HAVE_ATFORK)
  pthread_atfork(nullptr, nullptr, [] {
    forked_child().store(true, std::memory_order_relaxed);
    thread_count().store(1, std::memory_order_relaxed);
  });
#endif
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
  if (n > 1 && forked_child().load(std::memory_order_relaxed))
    throw std::runtime_error(
        "set_num_threads: this process is a fork() child, where OpenMP threads cannot be started again "
        "(GNU OpenMP's thread pool does not survive fork); kernels run on 1 thread here. Start worker "
        "processes with multiprocessing's 'spawn' or 'forkserver' method to use threads in them.");
  thread_count().store(n, std::memory_order_relaxed);
  Eigen::setNbThreads(1);
}

}  // namespace rnnfast
