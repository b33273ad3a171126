// The CUDA plugin: the ABI of plugin_abi.h over the kernels of kernels.cuh.
//
// One call: stage q/k/v (their strided extents only) into pinned memory and copy them to the device
// in chunks, so the CPU copy of chunk n+1 overlaps the DMA of chunk n; run the passes of make_schedule;
// copy out and lse back the same way. Each call borrows a Context (stream, events, grow-only pinned
// and device buffers) from a pool, so concurrent callers neither share buffers nor serialise.
#if defined(GLA_CUDA_EMULATED)
#include "emu_cuda_runtime.h"  // plugin_emulated.cpp: the same host code over the CPU emulation
#else
#include <cuda_runtime.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

#if defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>
#else
#include <dlfcn.h>
#endif

#include "gla_cuda_build.h"
#include "launch.h"
#include "plugin_abi.h"

#ifndef GLA_CUDA_ARCHS
#define GLA_CUDA_ARCHS "unknown"
#endif

namespace {

using gla::AttentionProblem;
using gla::Status;

int32_t fail(Status status, char* msg, size_t cap, const char* fmt, ...) {
  if (msg != nullptr && cap > 0) {
    va_list args;
    va_start(args, fmt);
    std::vsnprintf(msg, cap, fmt, args);
    va_end(args);
  }
  return static_cast<int32_t>(status);
}

// ---------------------------------------------------------------------------------------------------
// Probe

struct Probe {
  int32_t status = 0;
  char message[512] = {0};
  int device = 0;
  int sm_count = 1;
  size_t smem_per_block = 48 * 1024;
  char name[512] = {0};
};

void probe_into(Probe& p) {
  auto unavailable = [&](const char* fmt, auto... args) {
    p.status = static_cast<int32_t>(Status::unavailable);
    std::snprintf(p.message, sizeof p.message, fmt, args...);
  };
#if defined(GLA_CUDA_EMULATED)
  const char* driver_lib = "(emulated)";
  const bool has_driver = true;
#elif defined(_WIN32)
  const char* driver_lib = "nvcuda.dll";
  const bool has_driver = LoadLibraryA(driver_lib) != nullptr;
#else
  const char* driver_lib = "libcuda.so.1";
  const bool has_driver = dlopen(driver_lib, RTLD_NOW | RTLD_LOCAL) != nullptr;  // kept open: cudart uses it
#endif
  if (!has_driver) return unavailable("no CUDA driver (%s could not be loaded)", driver_lib);

  int driver_version = 0;
  int runtime_version = 0;
  cudaDriverGetVersion(&driver_version);
  cudaRuntimeGetVersion(&runtime_version);
  if (driver_version == 0) return unavailable("no CUDA driver");

  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err == cudaErrorNoDevice || (err == cudaSuccess && count == 0)) {
    cudaGetLastError();
    return unavailable("no CUDA device");
  }
  if (err == cudaErrorInsufficientDriver) {
    cudaGetLastError();
    return unavailable("the NVIDIA driver supports CUDA %d.%d but the plugin was built with CUDA %d.%d; update the driver",
                       driver_version / 1000, (driver_version % 1000) / 10, runtime_version / 1000,
                       (runtime_version % 1000) / 10);
  }
  if (err != cudaSuccess) {
    cudaGetLastError();
    return unavailable("CUDA initialisation failed: %s (%s)", cudaGetErrorString(err), cudaGetErrorName(err));
  }

  const char* wanted = std::getenv("GLA_CUDA_DEVICE");
  if (wanted != nullptr && wanted[0] != '\0') {
    char* end = nullptr;
    const long d = std::strtol(wanted, &end, 10);
    if (*end != '\0' || d < 0 || d >= count) return unavailable("GLA_CUDA_DEVICE=%s: not a device (found %d)", wanted, count);
    p.device = static_cast<int>(d);
  }
  err = cudaSetDevice(p.device);
  if (err == cudaSuccess) err = cudaFree(nullptr);  // creates the context: busy or prohibited devices fail here
  if (err != cudaSuccess) {
    cudaGetLastError();
    return unavailable("cannot use CUDA device %d: %s", p.device, cudaGetErrorString(err));
  }
  cudaDeviceProp prop;
  err = cudaGetDeviceProperties(&prop, p.device);
  if (err != cudaSuccess) return unavailable("cannot query CUDA device %d: %s", p.device, cudaGetErrorString(err));

  // Code for this GPU at all? (The plugin carries SASS for some architectures and PTX for the newest.)
  cudaFuncAttributes attrs;
  err = cudaFuncGetAttributes(&attrs, gla::cuda::merge_rows_kernel);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return unavailable("the CUDA plugin has no code for %s (sm_%d%d); it was built for CUDA architectures %s: %s",
                       prop.name, prop.major, prop.minor, GLA_CUDA_ARCHS, cudaGetErrorString(err));
  }

  p.sm_count = prop.multiProcessorCount > 0 ? prop.multiProcessorCount : 1;
  p.smem_per_block = prop.sharedMemPerBlockOptin > 0 ? prop.sharedMemPerBlockOptin : prop.sharedMemPerBlock;
  std::snprintf(p.name, sizeof p.name, "%s (sm_%d%d, %d SMs, %.1f GiB)", prop.name, prop.major, prop.minor,
                prop.multiProcessorCount, static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0));
}

const Probe& probe() {
  static Probe* p = new Probe;  // never destroyed: CUDA may be torn down before static destructors run
  static std::once_flag once;
  std::call_once(once, [] { probe_into(*p); });
  return *p;
}

// ---------------------------------------------------------------------------------------------------
// Per-call resources

constexpr size_t kAlign = 256;
constexpr size_t kChunkBytes = size_t{8} << 20;  // staging granularity: overlaps memcpy and DMA
constexpr int kMaxChunkEvents = 64;

size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

struct Context {
  cudaStream_t stream = nullptr;
  cudaEvent_t marks[4] = {nullptr, nullptr, nullptr, nullptr};
  cudaEvent_t chunk_done[kMaxChunkEvents] = {};
  char* device = nullptr;
  size_t device_cap = 0;
  char* pinned = nullptr;
  size_t pinned_cap = 0;
};

std::mutex pool_mu;
std::vector<Context*>* pool_free = new std::vector<Context*>;  // contexts live until process exit

cudaError_t create_context(Context** out) {
  Context* c = new Context;
  cudaError_t err = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
  for (int i = 0; i < 4 && err == cudaSuccess; ++i) err = cudaEventCreate(&c->marks[i]);
  for (int i = 0; i < kMaxChunkEvents && err == cudaSuccess; ++i) {
    err = cudaEventCreateWithFlags(&c->chunk_done[i], cudaEventDisableTiming);
  }
  if (err != cudaSuccess) {
    // Leaks the few handles made so far: this only happens when the device is already unusable.
    delete c;
    return err;
  }
  *out = c;
  return cudaSuccess;
}

class Lease {
 public:
  cudaError_t acquire() {
    {
      std::lock_guard<std::mutex> lock(pool_mu);
      if (!pool_free->empty()) {
        ctx_ = pool_free->back();
        pool_free->pop_back();
        return cudaSuccess;
      }
    }
    return create_context(&ctx_);
  }
  ~Lease() {
    if (ctx_ == nullptr) return;
    // An early error return may leave copies in flight that read or write this context's buffers.
    cudaStreamSynchronize(ctx_->stream);
    cudaGetLastError();
    std::lock_guard<std::mutex> lock(pool_mu);
    pool_free->push_back(ctx_);
  }
  Context* operator->() const { return ctx_; }
  Context& get() const { return *ctx_; }

 private:
  Context* ctx_ = nullptr;
};

// Growing frees the old buffers, which synchronises the device; it happens only when a call is
// larger than every earlier call on this context.
cudaError_t ensure_capacity(Context& c, size_t device_bytes, size_t pinned_bytes) {
  if (device_bytes > c.device_cap) {
    if (c.device != nullptr) cudaFree(c.device);
    c.device = nullptr;
    c.device_cap = 0;
    cudaError_t err = cudaMalloc(reinterpret_cast<void**>(&c.device), device_bytes);
    if (err != cudaSuccess) return err;
    c.device_cap = device_bytes;
  }
  if (pinned_bytes > c.pinned_cap) {
    if (c.pinned != nullptr) cudaFreeHost(c.pinned);
    c.pinned = nullptr;
    c.pinned_cap = 0;
    cudaError_t err = cudaHostAlloc(reinterpret_cast<void**>(&c.pinned), pinned_bytes, cudaHostAllocDefault);
    if (err != cudaSuccess) return err;
    c.pinned_cap = pinned_bytes;
  }
  return cudaSuccess;
}

// Elements from index 0 to the last one a [n0, n1, n2, dim] tensor with these strides reaches.
int64_t strided_extent(int64_t n0, int64_t n1, int64_t n2, int64_t dim, const gla::Strides& s) {
  if (n0 == 0 || n1 == 0 || n2 == 0 || dim == 0) return 0;
  return (n0 - 1) * s.batch + (n1 - 1) * s.head + (n2 - 1) * s.seq + dim;
}

// Byte layout of one call. The "in" part is mirrored in pinned and device memory and copied with one
// stream of chunks; so is the "out" part in the other direction.
struct Layout {
  size_t q = 0, k = 0, v = 0, kv_lengths = 0, q_lengths = 0, alibi = 0, sinks = 0, goff = 0, gidx = 0, flags = 0,
         tasks = 0, in_end = 0;
  size_t out = 0, lse = 0, out_end = 0;
  size_t partial = 0, device_end = 0;
  int64_t q_n = 0, k_n = 0, v_n = 0, out_n = 0, lse_n = 0, gidx_n = 0, flags_n = 0;
};

struct Copier {
  cudaStream_t stream;
  cudaEvent_t* events;
  cudaError_t err = cudaSuccess;

  // Host memcpy into pinned memory, then an async copy to the device, chunk by chunk.
  void upload(char* pinned, char* device, const void* src, size_t bytes) {
    for (size_t at = 0; at < bytes && err == cudaSuccess; at += kChunkBytes) {
      const size_t n = std::min(kChunkBytes, bytes - at);
      if (src != pinned) std::memcpy(pinned + at, static_cast<const char*>(src) + at, n);
      err = cudaMemcpyAsync(device + at, pinned + at, n, cudaMemcpyHostToDevice, stream);
    }
  }

  // Async copies of the whole range to pinned memory, each chunk followed by an event; then each
  // chunk is unstaged as soon as its event completes, while the later chunks are still in flight.
  struct Piece {
    size_t pinned_offset;
    void* dst;
    size_t bytes;
  };
  void download(char* pinned, const char* device, size_t bytes, const Piece* pieces, int n_pieces) {
    if (err != cudaSuccess || bytes == 0) return;
    size_t chunk = kChunkBytes;
    while ((bytes + chunk - 1) / chunk > static_cast<size_t>(kMaxChunkEvents)) chunk *= 2;
    const size_t n_chunks = (bytes + chunk - 1) / chunk;
    for (size_t i = 0; i < n_chunks && err == cudaSuccess; ++i) {
      const size_t at = i * chunk;
      const size_t n = std::min(chunk, bytes - at);
      err = cudaMemcpyAsync(pinned + at, device + at, n, cudaMemcpyDeviceToHost, stream);
      if (err == cudaSuccess) err = cudaEventRecord(events[i], stream);
    }
    for (size_t i = 0; i < n_chunks && err == cudaSuccess; ++i) {
      err = cudaEventSynchronize(events[i]);
      const size_t lo = i * chunk;
      const size_t hi = std::min(bytes, lo + chunk);
      for (int k = 0; k < n_pieces && err == cudaSuccess; ++k) {
        const size_t a = std::max(lo, pieces[k].pinned_offset);
        const size_t b = std::min(hi, pieces[k].pinned_offset + pieces[k].bytes);
        if (a < b) std::memcpy(static_cast<char*>(pieces[k].dst) + (a - pieces[k].pinned_offset), pinned + a, b - a);
      }
    }
  }
};

class CudaLauncher {
 public:
  explicit CudaLauncher(cudaStream_t stream) : stream_(stream) {}

  template <class... Params, class... Args>
  void launch(void (*kernel)(Params...), int64_t grid_x, int64_t grid_y, size_t smem, Args... args) {
    if (err_ != cudaSuccess) return;
    if (smem > 48 * 1024) {
      err_ = allow_smem(reinterpret_cast<const void*>(kernel), smem);
      if (err_ != cudaSuccess) return;
    }
#if defined(GLA_CUDA_EMULATED)
    gla::simt::emulate_launch(grid_x, grid_y, gla::cuda::kThreads, smem, [&] { kernel(args...); });
#else
    kernel<<<dim3(static_cast<unsigned>(grid_x), static_cast<unsigned>(grid_y), 1), gla::cuda::kThreads, smem,
             stream_>>>(args...);
    err_ = cudaGetLastError();
#endif
  }
  cudaError_t error() const { return err_; }

 private:
  // Raises a kernel's dynamic shared memory limit once to what it is asked for (never lowers it).
  static cudaError_t allow_smem(const void* kernel, size_t bytes) {
    static std::mutex mu;
    static std::vector<std::pair<const void*, size_t>>* raised = new std::vector<std::pair<const void*, size_t>>;
    std::lock_guard<std::mutex> lock(mu);
    for (auto& r : *raised) {
      if (r.first == kernel && r.second >= bytes) return cudaSuccess;
    }
    const cudaError_t err =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
    if (err == cudaSuccess) raised->emplace_back(kernel, bytes);
    return err;
  }

  cudaStream_t stream_;
  cudaError_t err_ = cudaSuccess;
};

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

int32_t cuda_failure(cudaError_t err, const char* what, char* msg, size_t cap) {
  cudaGetLastError();  // clears a non-sticky error so the next call on this thread starts clean
  if (err == cudaErrorMemoryAllocation) {
    return fail(Status::out_of_memory, msg, cap, "CUDA out of memory (%s)", what);
  }
  return fail(Status::internal_error, msg, cap, "CUDA error during %s: %s (%s)", what, cudaGetErrorString(err),
              cudaGetErrorName(err));
}

int32_t attention(const AttentionProblem& p, gla::CudaTiming* timing, char* msg, size_t cap) {
  using namespace gla::cuda;
  const auto t0 = std::chrono::steady_clock::now();
  if (timing != nullptr) *timing = gla::CudaTiming{};

  const Probe& pr = probe();
  if (pr.status != 0) return fail(Status::unavailable, msg, cap, "%s", pr.message);

  // validate_problem ran in the loader; these are the few facts this code relies on directly.
  if (p.batch < 0 || p.heads < 0 || p.kv_heads <= 0 || p.seq_len < 0 || p.kv_seq_len < 0 || p.head_dim <= 0 ||
      p.heads % p.kv_heads != 0 || p.batch > INT32_MAX || p.seq_len > INT32_MAX || p.kv_seq_len > INT32_MAX) {
    return fail(Status::invalid_argument, msg, cap, "invalid problem sizes");
  }
  if (p.batch == 0 || p.heads == 0 || p.seq_len == 0) return 0;  // nothing to write

  ScheduleLimits limits;
  limits.sm_count = pr.sm_count;
  limits.smem_per_block = pr.smem_per_block;
  LaunchSchedule schedule;
  if (const char* why = make_schedule(p, limits, &schedule)) return fail(Status::unavailable, msg, cap, "%s", why);

  Layout L;
  L.q_n = strided_extent(p.batch, p.heads, p.seq_len, p.head_dim, p.q_strides);
  L.k_n = strided_extent(p.batch, p.kv_heads, p.kv_seq_len, p.head_dim, p.k_strides);
  L.v_n = strided_extent(p.batch, p.kv_heads, p.kv_seq_len, p.head_dim, p.v_strides);
  L.out_n = strided_extent(p.batch, p.heads, p.seq_len, p.head_dim, p.out_strides);
  L.lse_n = p.lse != nullptr ? p.batch * p.heads * p.seq_len : 0;
  L.gidx_n = p.global_offsets != nullptr ? p.global_offsets[p.batch] : 0;
  L.flags_n = p.global_offsets != nullptr ? p.batch * p.kv_seq_len : 0;
  if (L.q_n > p.q_elements || L.k_n > p.k_elements || L.v_n > p.v_elements || L.out_n > p.out_elements ||
      L.lse_n > p.lse_elements) {
    return fail(Status::invalid_argument, msg, cap, "a tensor's strides reach past its buffer");
  }
  // Rows never overlap (validate_problem), so out is dense exactly when its extent equals its size;
  // otherwise the gaps must survive the copy back, so the caller's out goes up first.
  const bool out_dense = L.out_n == p.batch * p.heads * p.seq_len * p.head_dim;

  size_t at = 0;
  auto take = [&](size_t bytes) {
    const size_t o = at;
    at = align_up(at + bytes);
    return o;
  };
  L.q = take(sizeof(float) * L.q_n);
  L.k = take(sizeof(float) * L.k_n);
  L.v = take(sizeof(float) * L.v_n);
  L.kv_lengths = take(p.kv_lengths != nullptr ? sizeof(int32_t) * p.batch : 0);
  L.q_lengths = take(p.q_lengths != nullptr ? sizeof(int32_t) * p.batch : 0);
  L.alibi = take(p.alibi_slopes != nullptr ? sizeof(float) * p.heads : 0);
  L.sinks = take(p.sink_logits != nullptr ? sizeof(float) * p.heads : 0);
  L.goff = take(p.global_offsets != nullptr ? sizeof(int32_t) * (p.batch + 1) : 0);
  L.gidx = take(sizeof(int32_t) * L.gidx_n);
  L.flags = take(static_cast<size_t>(L.flags_n));
  L.tasks = take(sizeof(RowTask) * schedule.tasks);
  L.in_end = at;
  L.out = take(sizeof(float) * L.out_n);
  L.lse = take(sizeof(float) * L.lse_n);
  L.out_end = at;
  L.partial = take(sizeof(float) * schedule.partial_floats);
  L.device_end = at;

  cudaError_t err = cudaSetDevice(pr.device);
  if (err != cudaSuccess) return cuda_failure(err, "cudaSetDevice", msg, cap);
  Lease ctx;
  err = ctx.acquire();
  if (err != cudaSuccess) return cuda_failure(err, "stream creation", msg, cap);
  err = ensure_capacity(ctx.get(), std::max<size_t>(L.device_end, kAlign), std::max<size_t>(L.out_end, kAlign));
  if (err != cudaSuccess) {
    char what[160];
    std::snprintf(what, sizeof what, "%.1f MiB of device memory and %.1f MiB of pinned host memory",
                  static_cast<double>(L.device_end) / 1048576.0, static_cast<double>(L.out_end) / 1048576.0);
    return cuda_failure(err, what, msg, cap);
  }
  char* const pin = ctx->pinned;
  char* const dev = ctx->device;

  // Small inputs first, built in place in pinned memory (from kv_lengths to the tasks: one upload).
  if (p.kv_lengths != nullptr) std::memcpy(pin + L.kv_lengths, p.kv_lengths, sizeof(int32_t) * p.batch);
  if (p.q_lengths != nullptr) std::memcpy(pin + L.q_lengths, p.q_lengths, sizeof(int32_t) * p.batch);
  if (p.alibi_slopes != nullptr) std::memcpy(pin + L.alibi, p.alibi_slopes, sizeof(float) * p.heads);
  if (p.sink_logits != nullptr) std::memcpy(pin + L.sinks, p.sink_logits, sizeof(float) * p.heads);
  if (p.global_offsets != nullptr) {
    std::memcpy(pin + L.goff, p.global_offsets, sizeof(int32_t) * (p.batch + 1));
    std::memcpy(pin + L.gidx, p.global_indices, sizeof(int32_t) * L.gidx_n);
    uint8_t* flags = reinterpret_cast<uint8_t*>(pin + L.flags);
    std::memset(flags, 0, static_cast<size_t>(L.flags_n));
    for (int64_t b = 0; b < p.batch; ++b) {
      for (int64_t g = p.global_offsets[b]; g < p.global_offsets[b + 1]; ++g) {
        flags[b * p.kv_seq_len + p.global_indices[g]] = 1;
      }
    }
  }
  fill_tasks(p, schedule, reinterpret_cast<RowTask*>(pin + L.tasks));

  Copier copier{ctx->stream, ctx->chunk_done};
  const double host_setup_ms = ms_since(t0);
  err = cudaEventRecord(ctx->marks[0], ctx->stream);
  if (err != cudaSuccess) return cuda_failure(err, "cudaEventRecord", msg, cap);
  copier.upload(pin + L.kv_lengths, dev + L.kv_lengths, pin + L.kv_lengths, L.in_end - L.kv_lengths);
  copier.upload(pin + L.q, dev + L.q, p.q, sizeof(float) * L.q_n);
  copier.upload(pin + L.k, dev + L.k, p.k, sizeof(float) * L.k_n);
  copier.upload(pin + L.v, dev + L.v, p.v, sizeof(float) * L.v_n);
  if (!out_dense) copier.upload(pin + L.out, dev + L.out, p.out, sizeof(float) * L.out_n);
  if (copier.err == cudaSuccess) copier.err = cudaEventRecord(ctx->marks[1], ctx->stream);
  if (copier.err != cudaSuccess) return cuda_failure(copier.err, "the copy to the device", msg, cap);

  DeviceBuffers d;
  d.q = reinterpret_cast<const float*>(dev + L.q);
  d.k = reinterpret_cast<const float*>(dev + L.k);
  d.v = reinterpret_cast<const float*>(dev + L.v);
  d.out = reinterpret_cast<float*>(dev + L.out);
  d.lse = p.lse != nullptr ? reinterpret_cast<float*>(dev + L.lse) : nullptr;
  d.kv_lengths = p.kv_lengths != nullptr ? reinterpret_cast<const int32_t*>(dev + L.kv_lengths) : nullptr;
  d.global_offsets = p.global_offsets != nullptr ? reinterpret_cast<const int32_t*>(dev + L.goff) : nullptr;
  d.global_indices = p.global_offsets != nullptr ? reinterpret_cast<const int32_t*>(dev + L.gidx) : nullptr;
  d.global_flags = p.global_offsets != nullptr ? reinterpret_cast<const uint8_t*>(dev + L.flags) : nullptr;
  d.q_lengths = p.q_lengths != nullptr ? reinterpret_cast<const int32_t*>(dev + L.q_lengths) : nullptr;
  d.alibi_slopes = p.alibi_slopes != nullptr ? reinterpret_cast<const float*>(dev + L.alibi) : nullptr;
  d.sink_logits = p.sink_logits != nullptr ? reinterpret_cast<const float*>(dev + L.sinks) : nullptr;
  const DeviceProblem P = make_device_problem(p, d);

  CudaLauncher launcher(ctx->stream);
  launch_schedule(launcher, schedule, P, reinterpret_cast<const RowTask*>(dev + L.tasks),
              reinterpret_cast<float*>(dev + L.partial));
  if (launcher.error() != cudaSuccess) return cuda_failure(launcher.error(), "a kernel launch", msg, cap);
  err = cudaEventRecord(ctx->marks[2], ctx->stream);
  if (err != cudaSuccess) return cuda_failure(err, "cudaEventRecord", msg, cap);

  Copier::Piece pieces[2] = {
      {L.out - L.out, p.out, sizeof(float) * static_cast<size_t>(L.out_n)},
      {L.lse - L.out, p.lse, sizeof(float) * static_cast<size_t>(L.lse_n)},
  };
  copier.download(pin + L.out, dev + L.out, L.out_end - L.out, pieces, p.lse != nullptr ? 2 : 1);
  if (copier.err != cudaSuccess) return cuda_failure(copier.err, "the attention kernels or the copy back", msg, cap);
  err = cudaStreamSynchronize(ctx->stream);
  if (err != cudaSuccess) return cuda_failure(err, "the attention kernels", msg, cap);

  if (timing != nullptr) {
    float in_ms = 0.0f;
    float kernel_ms = 0.0f;
    cudaEventElapsedTime(&in_ms, ctx->marks[0], ctx->marks[1]);
    cudaEventElapsedTime(&kernel_ms, ctx->marks[1], ctx->marks[2]);
    cudaGetLastError();
    timing->total_ms = ms_since(t0);
    timing->kernel_ms = kernel_ms;
    // marks[0] completes as soon as it is recorded (the stream is idle then), so host setup plus
    // marks[0] -> marks[1] is the wall time until the last input byte is on the device, the CPU
    // staging that the DMA waited for included.
    timing->copy_in_ms = host_setup_ms + in_ms;
    timing->copy_out_ms = std::max(0.0, timing->total_ms - timing->copy_in_ms - timing->kernel_ms);
  }
  return 0;
}

}  // namespace

extern "C" {

GLA_CUDA_EXPORT int32_t gla_cuda_abi_version(void) { return GLA_CUDA_ABI_VERSION; }

GLA_CUDA_EXPORT int64_t gla_cuda_problem_size(void) { return static_cast<int64_t>(sizeof(gla::AttentionProblem)); }

GLA_CUDA_EXPORT int32_t gla_cuda_probe(char* msg, size_t cap) {
  const Probe& p = probe();
  if (p.status != 0 && msg != nullptr && cap > 0) std::snprintf(msg, cap, "%s", p.message);
  return p.status;
}

GLA_CUDA_EXPORT int32_t gla_cuda_device_name(char* buf, size_t cap) {
  const Probe& p = probe();
  if (buf != nullptr && cap > 0) std::snprintf(buf, cap, "%s", p.status == 0 ? p.name : p.message);
  return p.status;
}

GLA_CUDA_EXPORT int32_t gla_cuda_attention(const gla::AttentionProblem* problem, gla::CudaTiming* timing, char* msg,
                                           size_t cap) {
  if (msg != nullptr && cap > 0) msg[0] = '\0';
  if (problem == nullptr) return fail(Status::invalid_argument, msg, cap, "problem is null");
  if (problem->dtype != gla::DType::float32 || problem->out_dtype != gla::DType::float32) {
    return fail(Status::invalid_argument, msg, cap, "the plugin computes float32 tensors (the loader widens half ones)");
  }
  try {
    return attention(*problem, timing, msg, cap);
  } catch (const std::bad_alloc&) {
    return fail(Status::out_of_memory, msg, cap, "out of host memory");
  } catch (...) {
    return fail(Status::internal_error, msg, cap, "unexpected exception in the CUDA plugin");
  }
}

}  // extern "C"
