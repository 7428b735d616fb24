// rnnfast/memory.hpp - where the large buffers of a kernel call come from: workspaces, the training
// cache and the arrays returned to Python.
//
// Why: a buffer freshly taken from the system is mapped lazily, one 4 KiB page per page fault on
// first touch, ~4.5 us per page in the virtual machine this was measured on (973 faults made the
// first RNN call of H=256 B=16 T=100 take 11.4 ms against 6.7 ms steady). So large blocks are faulted
// in with one system call (MADV_POPULATE_WRITE, Linux 5.14), from 1 MiB on in 2 MiB huge pages
// (8 MiB: 0.23 ms against 4.5 ms page by page), and a released block is kept for the next call of
// the same shape instead of going back to the system, up to a bounded total (cache_limit()).
//
// Blocks below kMinMapped come from the C heap. Every block is 64-byte aligned. acquire() throws
// std::bad_alloc when the system refuses the memory (it never returns nullptr).
#pragma once

#include <cstddef>

namespace rnnfast {
namespace memory {

constexpr std::size_t kMinMapped = std::size_t(256) << 10;
constexpr std::size_t kAlign = 64;

// A block of at least `bytes` bytes (contents undefined). Thread-safe.
void* acquire(std::size_t bytes);
// Returns a block from acquire() (nullptr is ignored). Thread-safe, never throws.
void release(void* p) noexcept;
// Bytes held in released blocks kept for reuse.
std::size_t cached_bytes() noexcept;
// The most the cache keeps (default 256 MiB; RNNFAST_CACHE_MB overrides, 0 keeps nothing).
std::size_t cache_limit() noexcept;
// Returns every kept block to the system.
void trim() noexcept;

// An owning array of n scalars from acquire(), released on destruction. Move-only.
template <class S>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(std::size_t n) : n_(n) {
    if (n > 0) p_ = static_cast<S*>(acquire(n * sizeof(S)));
  }
  Buffer(Buffer&& o) noexcept : p_(o.p_), n_(o.n_) {
    o.p_ = nullptr;
    o.n_ = 0;
  }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      release(p_);
      p_ = o.p_;
      n_ = o.n_;
      o.p_ = nullptr;
      o.n_ = 0;
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { release(p_); }

  S* data() const { return p_; }
  std::size_t size() const { return n_; }

 private:
  S* p_ = nullptr;
  std::size_t n_ = 0;
};

}  // namespace memory
}  // namespace rnnfast
