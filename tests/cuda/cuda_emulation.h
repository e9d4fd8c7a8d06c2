// Just enough of the CUDA device API to run a one-block-per-row kernel on CPU threads, so the
// reduction kernel's own source is tested on machines without a GPU: one std::thread per CUDA
// thread, __syncthreads = a std::barrier of the block, warp intrinsics = a per-warp barrier
// around an exchange buffer, shared-memory atomics = std::atomic_ref. Slow (a barrier wakes
// 256 OS threads) but faithful to the barriers: a missing one shows as a wrong result or, under
// ThreadSanitizer, as a data race. Include after any CUDA header and before the kernel source.
#pragma once
#include <algorithm>
#include <atomic>
#include <barrier>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __launch_bounds__
#undef __shared__
#undef __align__
#undef __restrict__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__
#define __align__(n) __attribute__((aligned(n)))
#define __restrict__ __restrict

namespace emu {

struct Index {
  unsigned x = 0;
};

struct Block {
  int threads;
  std::barrier<> all;
  std::vector<std::unique_ptr<std::barrier<>>> warp;
  std::vector<uint64_t> exchange;  // [threads]: one slot per lane
  explicit Block(int n) : threads(n), all(n), exchange(size_t(n)) {
    for (int w = 0; w < n / 32; ++w) warp.push_back(std::make_unique<std::barrier<>>(32));
  }
};

inline thread_local Index thread_index;
inline thread_local Index block_index;
inline Index grid_dim, block_dim;  // of the grid run_grid runs (grid-stride loops read them)
inline Block* block = nullptr;

// Every lane of the calling thread's warp publishes v; returns what lane src published.
template <typename T>
T exchange(T v, int src) {
  static_assert(sizeof(T) <= 8);
  const int t = int(thread_index.x), base = t & ~31;
  uint64_t slot = 0;
  std::memcpy(&slot, &v, sizeof(T));
  block->exchange[size_t(t)] = slot;
  block->warp[size_t(t / 32)]->arrive_and_wait();
  T out;
  slot = block->exchange[size_t(base + (src & 31))];
  std::memcpy(&out, &slot, sizeof(T));
  block->warp[size_t(t / 32)]->arrive_and_wait();
  return out;
}

// Runs kernel() for blocks 0 .. blocks-1 of `threads` CUDA threads each, one block at a time on
// the same OS threads: between blocks every thread waits at a barrier and thread 0 runs
// between_blocks() (e.g. to scribble over the shared memory) before the next block starts.
inline void run_grid(unsigned blocks, int threads, const std::function<void()>& kernel,
                     const std::function<void()>& between_blocks) {
  Block b(threads);
  block = &b;
  grid_dim.x = blocks;
  block_dim.x = unsigned(threads);
  std::vector<std::thread> pool;
  pool.reserve(size_t(threads));
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([t, blocks, &b, &kernel, &between_blocks] {
      thread_index.x = unsigned(t);
      for (unsigned x = 0; x < blocks; ++x) {
        if (t == 0) between_blocks();
        b.all.arrive_and_wait();
        block_index.x = x;
        kernel();
        b.all.arrive_and_wait();
      }
    });
  for (auto& th : pool) th.join();
  block = nullptr;
}

}  // namespace emu

#undef threadIdx
#undef blockIdx
#undef gridDim
#undef blockDim
#define threadIdx (::emu::thread_index)
#define blockIdx (::emu::block_index)
#define gridDim (::emu::grid_dim)
#define blockDim (::emu::block_dim)

inline void __syncthreads() { emu::block->all.arrive_and_wait(); }

inline unsigned __ballot_sync(unsigned, bool p) {
  const int t = int(emu::thread_index.x), base = t & ~31;
  emu::block->exchange[size_t(t)] = p ? 1 : 0;
  emu::block->warp[size_t(t / 32)]->arrive_and_wait();
  unsigned r = 0;
  for (int lane = 0; lane < 32; ++lane)
    if (emu::block->exchange[size_t(base + lane)]) r |= 1u << lane;
  emu::block->warp[size_t(t / 32)]->arrive_and_wait();
  return r;
}
template <typename T>
inline T __shfl_sync(unsigned, T v, int src) {
  return emu::exchange<T>(v, src);
}
template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int lane_mask) {
  return emu::exchange<T>(v, int(emu::thread_index.x & 31) ^ lane_mask);
}
inline int __ffs(unsigned x) { return x ? std::countr_zero(x) + 1 : 0; }
inline int __popc(unsigned x) { return std::popcount(x); }
inline int atomicAdd(int* p, int v) { return std::atomic_ref<int>(*p).fetch_add(v); }
inline unsigned atomicOr(unsigned* p, unsigned v) { return std::atomic_ref<unsigned>(*p).fetch_or(v); }
inline float __ldcs(const float* p) { return *p; }
inline float __expf(float x) { return std::exp(x); }
// Round-to-nearest single operations (no FMA contraction: the tests build with -ffp-contract=off).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline int min(int a, int b) { return std::min(a, b); }
using std::isnan;
