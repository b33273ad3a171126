// The few SIMT primitives the attention kernels use, for two compilers:
//  - nvcc: thin wrappers over threadIdx / blockIdx / __syncthreads(_or) / __shfl_xor_sync / shared
//    memory;
//  - a plain C++ compiler: an emulation in which every CUDA thread of a block is an OS thread, so the
//    very same kernel source runs on the CPU in native/tests/cuda/cuda_tests.cpp. That is how the kernels'
//    index math, masks and barriers get tested on machines (and CI runs) without a GPU.
// Kernels must call sync_threads(), sync_threads_or() and shfl_xor() uniformly (every thread of the
// block, every lane of the warp), as CUDA requires; the emulation turns a divergent call into a
// reported deadlock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)

#define GLA_GLOBAL __global__
#define GLA_DEVICE __device__ __forceinline__
#define GLA_LAUNCH_BOUNDS(n) __launch_bounds__(n)
#define GLA_UNROLL _Pragma("unroll")
#define GLA_RESTRICT __restrict__

namespace gla {
namespace simt {

using f4 = float4;
using f2 = float2;

GLA_DEVICE int thread_x() { return static_cast<int>(threadIdx.x); }
GLA_DEVICE int64_t block_x() { return static_cast<int64_t>(blockIdx.x); }
GLA_DEVICE int64_t block_y() { return static_cast<int64_t>(blockIdx.y); }
GLA_DEVICE void sync_threads() { __syncthreads(); }
GLA_DEVICE bool sync_threads_or(bool p) { return __syncthreads_or(p ? 1 : 0) != 0; }
GLA_DEVICE float shfl_xor(float v, int lane_mask) { return __shfl_xor_sync(0xffffffffu, v, lane_mask); }
GLA_DEVICE float* shared_floats() {
  extern __shared__ float4 gla_dynamic_smem[];  // float4 so that the carve-outs are 16-byte aligned
  return reinterpret_cast<float*>(gla_dynamic_smem);
}
GLA_DEVICE f4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }
GLA_DEVICE f2 load2(const float* p) { return *reinterpret_cast<const float2*>(p); }
GLA_DEVICE void store4(float* p, f4 v) { *reinterpret_cast<float4*>(p) = v; }
GLA_DEVICE void store2(float* p, f2 v) { *reinterpret_cast<float2*>(p) = v; }

}  // namespace simt
}  // namespace gla

#else  // host emulation

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

#define GLA_GLOBAL inline
#define GLA_DEVICE inline
#define GLA_LAUNCH_BOUNDS(n)
#define GLA_UNROLL
#define GLA_RESTRICT

namespace gla {
namespace simt {

struct alignas(16) f4 {
  float x, y, z, w;
};
struct alignas(8) f2 {
  float x, y;
};

// A reusable barrier for a fixed number of threads. A wait that lasts a minute means some thread
// skipped the barrier (divergent __syncthreads or shuffle in the kernel): report it instead of hanging.
// wait(p) also returns whether any thread arrived with p true (__syncthreads_or): the last arrival
// publishes the OR of a generation before releasing it, and no thread can complete the next
// generation (and overwrite it) before every thread has read it.
class EmuBarrier {
 public:
  explicit EmuBarrier(int count) : count_(count) {}
  bool wait(bool p = false) {
    std::unique_lock<std::mutex> lock(mu_);
    const uint64_t gen = generation_;
    any_ = any_ || p;
    if (++arrived_ == count_) {
      arrived_ = 0;
      released_any_ = any_;
      any_ = false;
      ++generation_;
      cv_.notify_all();
      return released_any_;
    }
    if (!cv_.wait_for(lock, std::chrono::seconds(60), [&] { return generation_ != gen; })) {
      std::fprintf(stderr, "simt emulation: barrier deadlock (a thread skipped sync_threads/shfl_xor)\n");
      std::abort();
    }
    return released_any_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int count_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  bool any_ = false;           // OR of the predicates of the generation being gathered
  bool released_any_ = false;  // OR of the last generation released
};

struct EmuWarp {
  EmuWarp() : barrier(32) {}
  EmuBarrier barrier;
  float slots[2][32] = {};
};

struct EmuThread {
  int thread = 0;
  int64_t block_x = 0;
  int64_t block_y = 0;
  float* smem = nullptr;
  EmuBarrier* block_barrier = nullptr;
  EmuWarp* warp = nullptr;
  int shuffle_phase = 0;
};

inline EmuThread*& emu_self() {
  static thread_local EmuThread* self = nullptr;
  return self;
}

inline int thread_x() { return emu_self()->thread; }
inline int64_t block_x() { return emu_self()->block_x; }
inline int64_t block_y() { return emu_self()->block_y; }
inline void sync_threads() { emu_self()->block_barrier->wait(); }
inline bool sync_threads_or(bool p) { return emu_self()->block_barrier->wait(p); }
inline float* shared_floats() { return emu_self()->smem; }

// Double-buffered slots: a lane writes slot set k % 2 only after the barrier of shuffle k - 1, which
// every lane reaches only after reading shuffle k - 2 from the same set.
inline float shfl_xor(float v, int lane_mask) {
  EmuThread* t = emu_self();
  const int lane = t->thread & 31;
  float* slots = t->warp->slots[t->shuffle_phase];
  slots[lane] = v;
  t->warp->barrier.wait();
  const float r = slots[lane ^ lane_mask];
  t->shuffle_phase ^= 1;
  return r;
}

inline f4 load4(const float* p) {
  f4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline f2 load2(const float* p) {
  f2 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store4(float* p, f4 v) { std::memcpy(p, &v, sizeof v); }
inline void store2(float* p, f2 v) { std::memcpy(p, &v, sizeof v); }

// Runs `body` as a grid of grid_x * grid_y blocks of `threads` threads (a multiple of 32), the blocks
// one after another. Shared memory is refilled with NaN before each block so that a kernel reading
// what it never wrote poisons its output instead of passing by luck.
template <class Body>
void emulate_launch(int64_t grid_x, int64_t grid_y, int threads, size_t smem_bytes, const Body& body) {
  std::vector<float> smem((smem_bytes + sizeof(float) - 1) / sizeof(float) + 1);
  EmuBarrier block_barrier(threads);
  std::vector<EmuWarp> warps(static_cast<size_t>(threads / 32));
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads));
  for (int tid = 0; tid < threads; ++tid) {
    pool.emplace_back([&, tid] {
      EmuThread self;
      self.thread = tid;
      self.smem = smem.data();
      self.block_barrier = &block_barrier;
      self.warp = &warps[static_cast<size_t>(tid / 32)];
      emu_self() = &self;
      for (int64_t by = 0; by < grid_y; ++by) {
        for (int64_t bx = 0; bx < grid_x; ++bx) {
          if (tid == 0) {
            for (float& f : smem) f = std::numeric_limits<float>::quiet_NaN();
          }
          block_barrier.wait();
          self.block_x = bx;
          self.block_y = by;
          self.shuffle_phase = 0;
          body();
          block_barrier.wait();
        }
      }
      emu_self() = nullptr;
    });
  }
  for (std::thread& t : pool) t.join();
}

}  // namespace simt
}  // namespace gla

#endif
