// Thread count shared by every kernel of one compiled variant, and how many threads a call takes.
#include "rnnfast/parallel.hpp"

#include <Eigen/Core>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#if defined(_OPENMP) && defined(__unix__)
#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>
#define RNNFAST_HAVE_ATFORK 1
#endif

#if defined(_OPENMP)
#include <omp.h>
#endif

#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#endif

namespace rnnfast {
namespace {

using Clock = std::chrono::steady_clock;

double now_s() {
  return std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
}

inline void cpu_relax() {
#if defined(__SSE2__) || defined(_M_X64)
  _mm_pause();
#endif
}

// CPUs this process may run on (its affinity mask, as `taskset` or a container sets it).
int cpu_count() {
#if defined(_OPENMP)
  const int n = omp_get_num_procs();
  if (n >= 1) return n;
#endif
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

int default_threads() {
  if (const char* env = std::getenv("RNNFAST_NUM_THREADS")) {
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && n >= 1) return static_cast<int>(std::min<long>(n, max_threads()));
  }
  return cpu_count();
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

// ---- can the threads be created? ---------------------------------------------------------------
// GNU OpenMP calls exit() when it cannot create a thread of a team ("libgomp: Thread creation
// failed"), e.g. under an address-space limit (each thread reserves its stack, 8 MiB by default).
// So before a calling thread first runs a team of n, n - 1 threads with the stack size libgomp uses
// are created here and joined; if that fails the caller runs on fewer threads (or set_num_threads
// reports it). libgomp keeps a calling thread's team threads for later regions, so each calling
// thread checks each larger team size once.

#if defined(RNNFAST_HAVE_ATFORK)
// Stack size libgomp gives its threads: OMP_STACKSIZE (number, unit B/K/M/G, default K), else
// GOMP_STACKSIZE (KiB), else the pthread default (0 here).
std::size_t omp_stack_bytes() {
  for (const char* name : {"OMP_STACKSIZE", "GOMP_STACKSIZE"}) {
    const char* env = std::getenv(name);
    if (!env) continue;
    char* end = nullptr;
    const unsigned long long v = std::strtoull(env, &end, 10);
    if (end == env) continue;
    while (*end == ' ') ++end;
    unsigned long long unit = 1024;
    switch (*end) {
      case 'b':
      case 'B':
        unit = 1;
        break;
      case 'm':
      case 'M':
        unit = 1024ull * 1024;
        break;
      case 'g':
      case 'G':
        unit = 1024ull * 1024 * 1024;
        break;
      default:
        break;
    }
    return static_cast<std::size_t>(v * unit);
  }
  return 0;
}

void* preflight_thread(void*) {
  return nullptr;
}

// Creates `extra` threads at once (joinable: each keeps its stack until joined), then joins them.
// Returns 0 or the pthread_create error.
int try_start_threads(int extra) {
  pthread_attr_t attr;
  if (pthread_attr_init(&attr) != 0) return EAGAIN;
  if (const std::size_t stack = omp_stack_bytes()) pthread_attr_setstacksize(&attr, stack);
  std::vector<pthread_t> started;
  int err = 0;
  try {
    started.reserve(static_cast<std::size_t>(extra));
  } catch (const std::bad_alloc&) {
    err = ENOMEM;
  }
  for (int i = 0; i < extra && err == 0; ++i) {
    pthread_t t;
    err = pthread_create(&t, &attr, &preflight_thread, nullptr);
    if (err == 0) started.push_back(t);
  }
  for (pthread_t t : started) pthread_join(t, nullptr);
  pthread_attr_destroy(&attr);
  return err;
}
#else
int try_start_threads(int) {
  return 0;
}
#endif

// Largest team this calling thread has been checked for.
int& checked_team() {
  thread_local int n = 1;
  return n;
}

// The largest team size <= n this calling thread can run (n when its threads could be created).
int startable_team(int n) {
  int& ok = checked_team();
  if (n <= ok) return n;
  if (try_start_threads(n - 1) == 0) {
    ok = n;
    return n;
  }
  return ok;
}

// ---- the measured cost of a barrier --------------------------------------------------------------

constexpr double kProbeInterval = 0.1;  // seconds between probes
constexpr double kProbeGiveUp = 2e-3;   // a probe that has not finished by then: the team cannot run together
constexpr int kProbeRounds = 16;
// A thread's share of a product must be worth this many probe barriers (a parallel region's fork and
// join cost several), and so must a share of a time-loop step at B > 4. At B <= 4 a step's product
// is a stream of W_hh (each weight used <= 4 times), which a second core's cache and bandwidth
// speed up more than its flops suggest, and the loop's StepBarrier is one round (0.03-0.09 us
// against the probe's 0.14-0.57 us on a 2-vCPU Zen 3): 4 probe barriers per share and 2.5e4 flops a
// step put the switch to 2 threads near 3e4 flops, where issue 17's measurements put it (T = 100,
// B = 1: GRU H = 64 0.17 -> 0.12 ms, LSTM H = 128 0.74 -> 0.49 ms, LSTM H = 64 even, RNN H = 64 (8e3
// flops) slower on 2); training at B 16-32 with steps of 1e5-2.5e5 flops measured 4-7 % slower on
// 2 threads, so B > 4 keeps 16 barriers and 2.5e5 flops.
constexpr double kBarriersPerShare = 16.0;
constexpr double kStreamBarriersPerShare = 4.0;
constexpr double kStepFlopsPerSecond =
    3e10;  // one thread in the time loop (B=1..64, float; double is slower)
constexpr double kGemmFlopsPerSecond = 6e10;  // one thread in a large product
constexpr double kMinStepFlops = 2.5e5;
constexpr double kMinStreamStepFlops = 2.5e4;  // B <= 4
constexpr double kMinProductFlops = 4e6;

struct Probe {
  std::atomic<double> cost{-1.0};  // seconds per barrier; < 0 = never measured
  std::atomic<double> when{-1e9};  // now_s() of the measurement
  std::atomic<int> team{0};        // team size measured
  std::atomic<bool> busy{false};
};

Probe& probe_state() {
  static Probe p;
  return p;
}

// Rounds of a spinning barrier over a team of n: seconds per round once the whole team is running,
// the slowest round left out (one interrupt); kProbeGiveUp when the team did not finish in time.
double measure_barrier(int n) {
#if defined(_OPENMP)
  std::atomic<int> arrived{0};
  std::atomic<bool> stop{false};
  double total = 0.0, slowest = 0.0;
  bool finished = false;
#pragma omp parallel num_threads(n)
  {
    const bool master = omp_get_thread_num() == 0;
    const int nth = omp_get_num_threads();
    const double t0 = master ? now_s() : 0.0;
    double last = t0;
    for (int r = 0; r <= kProbeRounds; ++r) {
      arrived.fetch_add(1, std::memory_order_acq_rel);
      const int target = nth * (r + 1);
      bool out = false;
      while (arrived.load(std::memory_order_acquire) < target) {
        if (stop.load(std::memory_order_relaxed)) {
          out = true;
          break;
        }
        cpu_relax();
        if (master && now_s() - t0 > kProbeGiveUp) {
          stop.store(true, std::memory_order_relaxed);
          out = true;
          break;
        }
      }
      if (out) break;
      if (master) {
        const double t = now_s();
        if (r > 0) {  // round 0 only gathers the team (a sleeping thread's wake-up)
          total += t - last;
          slowest = std::max(slowest, t - last);
        }
        last = t;
        if (r == kProbeRounds) finished = true;
      }
    }
  }
  if (!finished) return kProbeGiveUp;
  return (total - slowest) / (kProbeRounds - 1);
#else
  (void)n;
  return 0.0;
#endif
}

// ---- the CPUs free for rnnfast -------------------------------------------------------------------
// Over the last interval: busy time of the CPUs this process may use (/proc/stat: user, nice,
// system, irq, softirq, steal) minus the CPU time of rnnfast's own threads (their CPU clocks) is
// what everything else took: other processes, the hypervisor, and other threads of this process
// (another runtime's spinning pool, NumPy's BLAS threads, the user's own threads).

#if defined(RNNFAST_HAVE_ATFORK)
struct OwnThread {
  clockid_t clock;
  double last;  // its CPU seconds at the previous sample
};

struct LoadState {
  std::mutex m;
  std::vector<OwnThread> own;
  double when = -1.0;        // wall seconds of the previous sample
  double busy = 0.0;         // busy CPU seconds of our CPUs then
  std::atomic<int> free{0};  // 0 = not measured yet
};

LoadState& load_state() {
  static LoadState* s = new LoadState();  // never destroyed: threads may note themselves at exit
  return *s;
}

double clock_seconds(clockid_t c, bool& ok) {
  timespec ts;
  ok = clock_gettime(c, &ts) == 0;
  return ok ? static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec) : 0.0;
}

// Busy CPU seconds summed over the CPUs in this process's affinity mask; < 0 if unreadable.
double busy_cpu_seconds() {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  const bool have_mask = sched_getaffinity(0, sizeof(mask), &mask) == 0;
  std::ifstream f("/proc/stat");
  if (!f) return -1.0;
  static const double tick = static_cast<double>(sysconf(_SC_CLK_TCK) > 0 ? sysconf(_SC_CLK_TCK) : 100);
  std::string name;
  double busy = 0.0;
  bool any = false;
  while (f >> name) {
    if (name.rfind("cpu", 0) != 0) break;
    unsigned long long v[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (auto& x : v) f >> x;
    f.ignore(1 << 12, '\n');
    if (name == "cpu") continue;
    const int id = std::atoi(name.c_str() + 3);
    if (have_mask && (id < 0 || id >= CPU_SETSIZE || !CPU_ISSET(id, &mask))) continue;
    // user nice system idle iowait irq softirq steal (guest time is inside user)
    busy += static_cast<double>(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]);
    any = true;
  }
  return any ? busy / tick : -1.0;
}
#endif

}  // namespace

void note_own_thread() {
#if defined(RNNFAST_HAVE_ATFORK)
  thread_local bool noted = false;
  if (noted) return;
  noted = true;
  clockid_t c;
  if (pthread_getcpuclockid(pthread_self(), &c) != 0) return;
  bool ok = false;
  const double t = clock_seconds(c, ok);
  if (!ok) return;
  LoadState& s = load_state();
  std::lock_guard<std::mutex> lock(s.m);
  s.own.push_back(OwnThread{c, t});
#endif
}

int free_cpus() {
  const int n = get_num_threads();
#if defined(RNNFAST_HAVE_ATFORK)
  constexpr double kInterval = 0.1;
  LoadState& s = load_state();
  const double t = now_s();
  const int cached = s.free.load(std::memory_order_relaxed);
  std::unique_lock<std::mutex> lock(s.m, std::try_to_lock);
  if (!lock.owns_lock() || t - s.when < kInterval) return cached > 0 ? std::min(cached, n) : n;
  const double busy = busy_cpu_seconds();
  if (busy < 0.0) {
    s.free.store(n, std::memory_order_relaxed);
    return n;
  }
  double own = 0.0;  // CPU seconds rnnfast's threads used since the previous sample
  for (std::size_t i = 0; i < s.own.size();) {
    bool ok = false;
    const double c = clock_seconds(s.own[i].clock, ok);
    if (!ok) {  // the thread has exited
      s.own[i] = s.own.back();
      s.own.pop_back();
      continue;
    }
    own += c - s.own[i].last;
    s.own[i].last = c;
    ++i;
  }
  const double dt = t - s.when;
  const bool first = s.when < 0.0;
  s.when = t;
  const double prev_busy = s.busy;
  s.busy = busy;
  if (first || dt > 10.0) {  // no interval to compare with yet (or a stale one): assume free
    s.free.store(n, std::memory_order_relaxed);
    return n;
  }
  // /proc/stat counts whole clock ticks per CPU, so the busy time of the window is known to about a
  // tick per CPU: with rnnfast's own threads running all of a 0.1 s window on an idle 2-vCPU machine
  // the difference read -0.10..+0.28 CPUs (40 windows), and the old threshold (0.25) ran ~8 % of a
  // 2-thread loop's calls on one thread. That much is not counted as competition.
  const double tick = 1.0 / static_cast<double>(sysconf(_SC_CLK_TCK) > 0 ? sysconf(_SC_CLK_TCK) : 100);
  const double resolution = static_cast<double>(cpu_count()) * tick / dt;
  const double others = std::max(0.0, (busy - prev_busy - own) / dt - resolution);
  // A CPU counts as free when others took less than ~a quarter of it (beyond the resolution).
  const int free = std::max(1, static_cast<int>(static_cast<double>(cpu_count()) - others + 0.25));
  s.free.store(free, std::memory_order_relaxed);
  return std::min(free, n);
#else
  return n;
#endif
}

namespace {

// Team size for a call: the most threads (<= cap) whose share of `seconds` of work is worth
// `per_share` barriers at the measured cost.
int threads_for(double seconds, Index parts, double per_share) {
  int n_max = static_cast<int>(std::min<Index>(get_num_threads(), std::max<Index>(parts, 1)));
  if (n_max <= 1) return 1;
#if defined(_OPENMP)
  if (omp_in_parallel()) return 1;
#endif
  note_own_thread();
  n_max = std::min(n_max, free_cpus());
  if (n_max <= 1) return 1;
  const double cost = barrier_cost();
  if (cost <= 0.0) return 1;
  const int n = static_cast<int>(std::min<double>(n_max, seconds / (per_share * cost)));
  return n <= 1 ? 1 : startable_team(n);
}

}  // namespace

int get_num_threads() {
  return thread_count().load(std::memory_order_relaxed);
}

int max_threads() {
  return std::max(16, 4 * cpu_count());
}

void set_num_threads(int n) {
  n = std::clamp(n, 1, max_threads());
  if (n > 1 && forked_child().load(std::memory_order_relaxed))
    throw std::runtime_error(
        "set_num_threads: this process is a fork() child, where OpenMP threads cannot be started again "
        "(GNU OpenMP's thread pool does not survive fork); kernels run on 1 thread here. Start worker "
        "processes with multiprocessing's 'spawn' or 'forkserver' method to use threads in them.");
  if (n > checked_team()) {
    const int err = try_start_threads(n - 1);
    if (err != 0)
      throw std::runtime_error("set_num_threads: cannot start " + std::to_string(n) + " threads (" +
                               std::strerror(err) + ": a memory or process limit); the thread count stays " +
                               std::to_string(get_num_threads()));
    checked_team() = n;
  }
  thread_count().store(n, std::memory_order_relaxed);
  Eigen::setNbThreads(1);
}

double barrier_cost() {
  const int n = get_num_threads();
  if (n <= 1 || forked_child().load(std::memory_order_relaxed)) return 0.0;
  Probe& p = probe_state();
  const double t = now_s();
  const double cost = p.cost.load(std::memory_order_relaxed);
  if (cost >= 0.0 && p.team.load(std::memory_order_relaxed) == n &&
      t - p.when.load(std::memory_order_relaxed) < kProbeInterval)
    return cost;
  // One caller measures; concurrent callers use the last value (or run on one thread before the first).
  if (p.busy.exchange(true, std::memory_order_acquire)) return cost < 0.0 ? 0.0 : cost;
  const int team = startable_team(n);
  double measured = team > 1 ? measure_barrier(team) : kProbeGiveUp;
  // The first probe of a team size also starts its threads (and wakes sleeping ones): once more.
  if (team > 1 && measured >= kProbeGiveUp && p.team.load(std::memory_order_relaxed) != n)
    measured = measure_barrier(team);
  p.cost.store(measured, std::memory_order_relaxed);
  p.team.store(n, std::memory_order_relaxed);
  p.when.store(now_s(), std::memory_order_relaxed);
  p.busy.store(false, std::memory_order_release);
  return measured;
}

int loop_threads_for(double step_flops, Index parts, Index rows) {
  const bool stream = rows <= 4;
  if (step_flops < (stream ? kMinStreamStepFlops : kMinStepFlops)) return 1;
  return threads_for(step_flops / kStepFlopsPerSecond, parts,
                     stream ? kStreamBarriersPerShare : kBarriersPerShare);
}

namespace {

std::atomic<int>& forced_product_threads() {
  static std::atomic<int> n{0};
  return n;
}

}  // namespace

void force_product_threads(int n) {
  forced_product_threads().store(std::max(0, n), std::memory_order_relaxed);
}

int forced_team(int forced, Index parts) {
  const int n = static_cast<int>(std::min<Index>(forced, std::max<Index>(parts, 1)));
  if (n <= 1 || forked_child().load(std::memory_order_relaxed)) return 1;
#if defined(_OPENMP)
  if (omp_in_parallel()) return 1;
#endif
  note_own_thread();
  return startable_team(n);
}

int product_threads(double flops, Index parts, Index rows) {
  if (const int forced = forced_product_threads().load(std::memory_order_relaxed); forced > 0)
    return forced_team(forced, parts);
  const double rate = rows <= 4 ? kGemmFlopsPerSecond / 2 : kGemmFlopsPerSecond;  // stream: half
  if (flops / rate < kMinProductFlops / kGemmFlopsPerSecond) return 1;
  return threads_for(flops / rate, parts, kBarriersPerShare);
}

}  // namespace rnnfast
