// Large-block allocation for the kernels: pre-faulted mappings and a bounded cache of released blocks
// (see rnnfast/memory.hpp for why).
#include "rnnfast/memory.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <new>

#if defined(__linux__)
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>
#define RNNFAST_HAVE_MMAP 1
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#endif

namespace rnnfast {
namespace memory {
namespace {

constexpr std::size_t kHuge = std::size_t(2) << 20;

// Sits in the 64 bytes just before every block handed out.
struct Header {
  std::size_t capacity;  // usable bytes after the header
  std::size_t map_len;   // bytes mapped (0: C heap block)
  void* base;            // start of the mapping or of the heap allocation
};
static_assert(sizeof(Header) <= kAlign, "header must fit in one alignment unit");

Header* header_of(void* p) {
  return reinterpret_cast<Header*>(static_cast<char*>(p) - kAlign);
}
void* user_of(Header* h) {
  return reinterpret_cast<char*>(h) + kAlign;
}

std::size_t round_up(std::size_t n, std::size_t m) {
  return (n + m - 1) / m * m;
}

std::size_t limit_from_env() {
  if (const char* env = std::getenv("RNNFAST_CACHE_MB")) {
    char* end = nullptr;
    const long long mb = std::strtoll(env, &end, 10);
    if (end != env && *end == '\0' && mb >= 0 && mb <= (1LL << 30)) return static_cast<std::size_t>(mb) << 20;
  }
  return std::size_t(256) << 20;
}

// The cache of released mapped blocks, oldest first. Never destroyed: thread_local workspaces may
// release into it while the program exits.
struct Cache {
  std::mutex mu;
  std::deque<Header*> blocks;
  std::size_t total = 0;
  std::size_t limit = limit_from_env();
};
Cache& cache() {
  static Cache* c = [] {
    auto* made = new Cache;
#if defined(RNNFAST_HAVE_MMAP)
    // A fork() while another thread holds the lock would leave the child's copy locked for ever:
    // hold it across fork, release it on both sides.
    pthread_atfork([] { cache().mu.lock(); }, [] { cache().mu.unlock(); }, [] { cache().mu.unlock(); });
#endif
    return made;
  }();
  return *c;
}

void* heap_block(std::size_t bytes) {
  if (bytes > SIZE_MAX - 2 * kAlign) throw std::bad_alloc();
  void* base = std::malloc(bytes + 2 * kAlign);
  if (!base) throw std::bad_alloc();
  const std::uintptr_t u = (reinterpret_cast<std::uintptr_t>(base) + 2 * kAlign - 1) / kAlign * kAlign;
  Header* h = reinterpret_cast<Header*>(u - kAlign);
  h->capacity = bytes;
  h->map_len = 0;
  h->base = base;
  return user_of(h);
}

#if defined(RNNFAST_HAVE_MMAP)
void unmap(Header* h) noexcept {
  munmap(h->base, h->map_len);
}

void* mapped_block(std::size_t bytes) {
  const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  if (bytes > SIZE_MAX / 2) throw std::bad_alloc();
  // From 1 MiB on, whole 2 MiB huge pages (<= 50% rounding waste): one fault per 2 MiB instead of 512.
  const bool huge = bytes >= kHuge / 2;
  const std::size_t len = round_up(bytes + kAlign, huge ? kHuge : page);
  // Huge pages need 2 MiB-aligned ranges: map one extra 2 MiB and trim both ends.
  const std::size_t span = huge ? len + kHuge : len;
  void* raw = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  char* base = static_cast<char*>(raw);
  if (huge) {
    char* aligned = reinterpret_cast<char*>(round_up(reinterpret_cast<std::uintptr_t>(base), kHuge));
    if (aligned > base) munmap(base, static_cast<std::size_t>(aligned - base));
    const std::size_t tail = static_cast<std::size_t>((base + span) - (aligned + len));
    if (tail > 0) munmap(aligned + len, tail);
    base = aligned;
#if defined(MADV_HUGEPAGE)
    madvise(base, len, MADV_HUGEPAGE);  // advice only: ignored where huge pages are off
#endif
  }
  // Fault every page in with one call. Kernels before 5.14 answer EINVAL: touch the pages instead.
  if (madvise(base, len, MADV_POPULATE_WRITE) != 0) {
    if (errno != EINVAL) {
      munmap(base, len);
      throw std::bad_alloc();
    }
    for (std::size_t off = 0; off < len; off += page) base[off] = 0;
  }
  Header* h = reinterpret_cast<Header*>(base);
  h->capacity = len - kAlign;
  h->map_len = len;
  h->base = base;
  return user_of(h);
}
#endif

}  // namespace

void* acquire(std::size_t bytes) {
  bytes = std::max<std::size_t>(bytes, 1);
#if defined(RNNFAST_HAVE_MMAP)
  if (bytes >= kMinMapped) {
    Cache& c = cache();
    {
      std::lock_guard<std::mutex> lock(c.mu);
      // Smallest kept block that fits without wasting more than half of itself.
      auto best = c.blocks.end();
      for (auto it = c.blocks.begin(); it != c.blocks.end(); ++it) {
        const std::size_t cap = (*it)->capacity;
        if (cap >= bytes && cap / 2 <= bytes && (best == c.blocks.end() || cap < (*best)->capacity))
          best = it;
      }
      if (best != c.blocks.end()) {
        Header* h = *best;
        c.blocks.erase(best);
        c.total -= h->capacity;
        return user_of(h);
      }
    }
    return mapped_block(bytes);
  }
#endif
  return heap_block(bytes);
}

void release(void* p) noexcept {
  if (!p) return;
  Header* h = header_of(p);
  if (h->map_len == 0) {
    std::free(h->base);
    return;
  }
#if defined(RNNFAST_HAVE_MMAP)
  Cache& c = cache();
  std::deque<Header*> evicted;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    if (h->capacity > c.limit) {
      evicted.push_back(h);
    } else {
      c.blocks.push_back(h);
      c.total += h->capacity;
      while (c.total > c.limit) {
        evicted.push_back(c.blocks.front());
        c.total -= c.blocks.front()->capacity;
        c.blocks.pop_front();
      }
    }
  }
  for (Header* e : evicted) unmap(e);
#endif
}

std::size_t cached_bytes() noexcept {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.total;
}

std::size_t cache_limit() noexcept {
  return cache().limit;
}

void trim() noexcept {
#if defined(RNNFAST_HAVE_MMAP)
  Cache& c = cache();
  std::deque<Header*> evicted;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    evicted.swap(c.blocks);
    c.total = 0;
  }
  for (Header* e : evicted) unmap(e);
#endif
}

}  // namespace memory
}  // namespace rnnfast
