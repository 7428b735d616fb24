// The block allocator of memory.hpp: alignment, the whole size usable, reuse of released blocks,
// the bounds of that reuse, trim, failure as std::bad_alloc, and use from several threads at once.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <thread>
#include <utility>
#include <vector>

#include "rnnfast/memory.hpp"

namespace {

namespace mem = rnnfast::memory;

bool aligned(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % mem::kAlign == 0;
}

class Memory : public ::testing::Test {
 protected:
  void SetUp() override { mem::trim(); }
  void TearDown() override { mem::trim(); }
};

TEST_F(Memory, BlocksAreAlignedAndWhollyUsable) {
  for (std::size_t bytes : {std::size_t(1), std::size_t(100), mem::kMinMapped - 1, mem::kMinMapped,
                            std::size_t(3) << 20, (std::size_t(5) << 20) + 7}) {
    auto* p = static_cast<unsigned char*>(mem::acquire(bytes));
    ASSERT_NE(p, nullptr);
    EXPECT_TRUE(aligned(p)) << bytes;
    std::memset(p, 0xAB, bytes);  // ASan reports any write past the block
    EXPECT_EQ(p[bytes - 1], 0xAB);
    mem::release(p);
  }
  mem::release(nullptr);  // ignored
}

TEST_F(Memory, ReleasedLargeBlockIsReusedForTheSameSize) {
  const std::size_t bytes = std::size_t(3) << 20;
  void* a = mem::acquire(bytes);
  EXPECT_EQ(mem::cached_bytes(), 0u);
  mem::release(a);
  EXPECT_GE(mem::cached_bytes(), bytes);
  void* b = mem::acquire(bytes);
  EXPECT_EQ(a, b);
  EXPECT_EQ(mem::cached_bytes(), 0u);
  mem::release(b);
}

TEST_F(Memory, SmallRequestDoesNotTakeAMuchLargerBlock) {
  void* big = mem::acquire(std::size_t(16) << 20);
  mem::release(big);
  void* small = mem::acquire(mem::kMinMapped);
  EXPECT_NE(small, big);
  EXPECT_GE(mem::cached_bytes(), std::size_t(16) << 20);  // the big block is still kept
  mem::release(small);
}

TEST_F(Memory, TrimReturnsEverything) {
  std::vector<void*> blocks;
  for (int i = 0; i < 4; ++i) blocks.push_back(mem::acquire(std::size_t(i + 1) << 20));
  for (void* p : blocks) mem::release(p);
  EXPECT_GT(mem::cached_bytes(), 0u);
  mem::trim();
  EXPECT_EQ(mem::cached_bytes(), 0u);
}

TEST_F(Memory, CacheStaysWithinItsLimit) {
  const std::size_t limit = mem::cache_limit();
  const std::size_t step = std::size_t(8) << 20;
  std::vector<void*> blocks;
  for (std::size_t held = 0; held <= limit + 2 * step; held += step) blocks.push_back(mem::acquire(step));
  for (void* p : blocks) mem::release(p);
  EXPECT_LE(mem::cached_bytes(), limit);
}

TEST_F(Memory, ImpossibleRequestsThrowBadAlloc) {
  EXPECT_THROW(mem::acquire(static_cast<std::size_t>(-1)), std::bad_alloc);
  EXPECT_THROW(mem::acquire(std::size_t(1) << 62), std::bad_alloc);
  EXPECT_EQ(mem::cached_bytes(), 0u);
}

TEST_F(Memory, BufferOwnsAndMoves) {
  mem::Buffer<float> a(std::size_t(1) << 20);
  ASSERT_NE(a.data(), nullptr);
  a.data()[0] = 1.0f;
  float* p = a.data();
  mem::Buffer<float> b(std::move(a));
  EXPECT_EQ(b.data(), p);
  EXPECT_EQ(a.data(), nullptr);  // NOLINT(bugprone-use-after-move): moved-from state is specified
  EXPECT_EQ(b.size(), std::size_t(1) << 20);
  mem::Buffer<float> c;
  c = std::move(b);
  EXPECT_EQ(c.data()[0], 1.0f);
  mem::Buffer<float> empty(0);
  EXPECT_EQ(empty.data(), nullptr);
}

TEST_F(Memory, ThreadsNeverShareALiveBlock) {
  constexpr int kThreads = 4, kRounds = 200;
  std::vector<std::thread> threads;
  std::vector<int> failures(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([t, &failures] {
      for (int r = 0; r < kRounds; ++r) {
        const std::size_t bytes = (std::size_t(1) << 20) * static_cast<std::size_t>(1 + (r + t) % 3);
        auto* p = static_cast<unsigned char*>(mem::acquire(bytes));
        std::memset(p, t + 1, bytes);
        std::this_thread::yield();
        for (std::size_t i = 0; i < bytes; i += 4096)
          if (p[i] != t + 1) ++failures[static_cast<std::size_t>(t)];
        mem::release(p);
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[static_cast<std::size_t>(t)], 0) << "thread " << t;
}

}  // namespace
