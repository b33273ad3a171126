// Loads the CUDA plugin on first need. Plain C++: no CUDA headers or libraries, so it is part of every
// build, and a machine without CUDA gets a reason string where one with CUDA gets a GPU.
//
// The plugin is never unloaded: it holds a CUDA context and static cudart state whose teardown at
// process exit (or mid-flight, if another thread is still computing) is a known source of crashes.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

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
#include <sys/stat.h>
#include <unistd.h>
#endif

#include <vector>

#include "dispatch/kernel_table.h"
#include "gla/attention.h"
#include "gla/cuda_backend.h"
#include "plugin_abi.h"

// cmake/cuda.cmake says what it decided about the plugin, so that "not found" can say why:
// 1 GLA_CUDA=OFF, 2 no CUDA compiler found, 3 built.
#if defined(__has_include)
#if __has_include("gla_cuda_build.h")
#include "gla_cuda_build.h"
#endif
#endif
#ifndef GLA_CUDA_BUILD_STATE_CODE
#define GLA_CUDA_BUILD_STATE_CODE 0
#endif

namespace gla {
namespace {

#if defined(_WIN32)
constexpr const char* kPluginName = "gla_cuda.dll";
constexpr char kSep = '\\';
#elif defined(__APPLE__)
constexpr const char* kPluginName = "libgla_cuda.dylib";
constexpr char kSep = '/';
#else
constexpr const char* kPluginName = "libgla_cuda.so";
constexpr char kSep = '/';
#endif

struct Plugin {
  std::string reason;  // empty: usable
  std::string device;
  gla_cuda_attention_fn attention = nullptr;
};

void module_anchor() {}

bool file_exists(const std::string& path) {
#if defined(_WIN32)
  const DWORD attrs = GetFileAttributesA(path.c_str());
  return attrs != INVALID_FILE_ATTRIBUTES && (attrs & FILE_ATTRIBUTE_DIRECTORY) == 0;
#else
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
#endif
}

// The directory of the module (.node addon, shared library or executable) this code is linked into.
std::string module_directory() {
  std::string path;
#if defined(_WIN32)
  HMODULE module = nullptr;
  if (GetModuleHandleExA(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
                         reinterpret_cast<LPCSTR>(&module_anchor), &module)) {
    char buf[4096];
    const DWORD n = GetModuleFileNameA(module, buf, sizeof buf);
    if (n > 0 && n < sizeof buf) path.assign(buf, n);
  }
  const size_t cut = path.find_last_of("\\/");
#else
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&module_anchor), &info) != 0 && info.dli_fname != nullptr) {
    path = info.dli_fname;
  }
#if defined(__linux__)
  // For code linked into the main executable, glibc may report argv[0] or an empty name.
  if (path.find('/') == std::string::npos) {
    char buf[4096];
    const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n > 0) path.assign(buf, static_cast<size_t>(n));
  }
#endif
  const size_t cut = path.find_last_of('/');
#endif
  if (cut == std::string::npos) return ".";
  return path.substr(0, cut);
}

void* open_library(const std::string& path, std::string* error) {
#if defined(_WIN32)
  HMODULE h = LoadLibraryExA(path.c_str(), nullptr, LOAD_WITH_ALTERED_SEARCH_PATH);
  if (h == nullptr) *error = "LoadLibrary error " + std::to_string(static_cast<unsigned long>(GetLastError()));
  return reinterpret_cast<void*>(h);
#else
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (h == nullptr) {
    const char* e = dlerror();
    *error = e != nullptr ? e : "dlopen failed";
  }
  return h;
#endif
}

void* find_symbol(void* lib, const char* name) {
#if defined(_WIN32)
  return reinterpret_cast<void*>(GetProcAddress(reinterpret_cast<HMODULE>(lib), name));
#else
  return dlsym(lib, name);
#endif
}

template <class Fn>
bool bind(void* lib, const char* name, Fn* out, const std::string& path, Plugin& p) {
  *out = reinterpret_cast<Fn>(find_symbol(lib, name));
  if (*out == nullptr) {
    p.reason = "the CUDA plugin " + path + " lacks the symbol " + name + " (a stale or foreign build; rebuild)";
    return false;
  }
  return true;
}

void load(Plugin& p) {
  const char* env = std::getenv("GLA_CUDA_PLUGIN");
  const bool explicit_path = env != nullptr && env[0] != '\0';
  const std::string path = explicit_path ? std::string(env) : module_directory() + kSep + kPluginName;

  if (!file_exists(path)) {
    const int state = GLA_CUDA_BUILD_STATE_CODE;
    if (explicit_path) {
      p.reason = "GLA_CUDA_PLUGIN=" + path + ": no such file";
    } else if (state == 1) {
      p.reason = "CUDA plugin not built: GLA_CUDA=OFF at build time";
    } else if (state == 2) {
      p.reason = "CUDA plugin not built: the CUDA toolkit was not found at build time";
    } else {
      p.reason = "CUDA plugin not found: " + path + " does not exist";
    }
    return;
  }

  std::string error;
  void* lib = open_library(path, &error);
  if (lib == nullptr) {
    p.reason = "cannot load the CUDA plugin " + path + ": " + error;
    return;
  }

  gla_cuda_abi_version_fn abi_version = nullptr;
  gla_cuda_problem_size_fn problem_size = nullptr;
  gla_cuda_probe_fn probe = nullptr;
  gla_cuda_device_name_fn device_name = nullptr;
  gla_cuda_attention_fn attention = nullptr;
  if (!bind(lib, "gla_cuda_abi_version", &abi_version, path, p)) return;
  const int32_t version = abi_version();
  if (version != GLA_CUDA_ABI_VERSION) {
    p.reason = "the CUDA plugin " + path + " has ABI version " + std::to_string(version) + ", this build expects " +
               std::to_string(GLA_CUDA_ABI_VERSION) + " (rebuild both)";
    return;
  }
  if (!bind(lib, "gla_cuda_problem_size", &problem_size, path, p)) return;
  if (problem_size() != static_cast<int64_t>(sizeof(AttentionProblem))) {
    p.reason = "the CUDA plugin " + path + " was built with another AttentionProblem layout (rebuild both)";
    return;
  }
  if (!bind(lib, "gla_cuda_probe", &probe, path, p)) return;
  if (!bind(lib, "gla_cuda_device_name", &device_name, path, p)) return;
  if (!bind(lib, "gla_cuda_attention", &attention, path, p)) return;

  char msg[512] = {0};
  if (probe(msg, sizeof msg) != 0) {
    p.reason = msg[0] != '\0' ? msg : "the CUDA plugin's probe failed without a reason";
    return;
  }
  char name[512] = {0};
  if (device_name(name, sizeof name) == 0) p.device = name;
  p.attention = attention;
}

Plugin& plugin() {
  static Plugin* p = new Plugin;  // never destroyed: see the file comment
  static std::once_flag once;
  std::call_once(once, [] { load(*p); });
  return *p;
}

}  // namespace

const char* cuda_unavailable_reason() {
  const Plugin& p = plugin();
  return p.reason.empty() ? nullptr : p.reason.c_str();
}

const char* cuda_device_name() {
  const Plugin& p = plugin();
  return p.reason.empty() ? p.device.c_str() : nullptr;
}

namespace {

// The plugin computes float32 on plain [batch, heads, seq, dim] tensors (plugin_abi.h). Anything
// else reaches it regularised on the host: half-precision inputs widened (exact: every half value
// is a float32), a paged cache gathered out of its pool, packed sequences unpacked into a batch
// padded to the longest one (q_lengths/kv_lengths then mark the padding); out (and, packed, lse)
// computed aside and written back once, rounded to the out dtype as the CPU kernels round. O(n d) on
// the host against O(n^2 d) on the GPU; reading pages and packed rows on the device, and tensor-core
// half products, are the CUDA issue's work.
struct PluginProblem {
  AttentionProblem problem;
  std::vector<float> q, k, v, out, lse;
};

// The best CPU kernels' conversions (looked up once: supported_isas() builds a vector).
const cpu::CpuKernels& conversion_kernels() {
  static const cpu::CpuKernels& kernels = *dispatch::kernels_for(supported_isas().front());
  return kernels;
}

bool needs_regularising(const AttentionProblem& p) {
  return p.dtype != DType::float32 || p.out_dtype != DType::float32 || p.block_table != nullptr || p.q_starts != nullptr;
}

// Element offset of query row i of item b, and of key row j (problem.h's query_row / key_row).
int64_t q_row_offset(const AttentionProblem& p, const Strides& s, int64_t b, int64_t h, int64_t i) {
  return b * s.batch + h * s.head + query_row(p, b, i) * s.seq;
}
int64_t kv_row_offset(const AttentionProblem& p, const Strides& s, int64_t b, int64_t h, int64_t j) {
  return b * s.batch + h * s.head + key_row(p, b, j) * s.seq;
}

// One source row of `dtype` into a float32 row of dim elements.
void widen_row(const void* base, DType dtype, int64_t offset, int64_t dim, float* dst) {
  if (dtype == DType::float32) {
    std::memcpy(dst, static_cast<const float*>(base) + offset, static_cast<size_t>(dim) * sizeof(float));
    return;
  }
  const int64_t first = 0;
  conversion_kernels().widen_rows(dtype, static_cast<const uint16_t*>(base) + offset, 0, &first, 1, static_cast<int>(dim),
                                  1.0f, dst, 0);
}

// A [batch, heads, length, dim] float32 tensor of the rows `offset` names (those past `real(b)`
// are left zero: padding the plugin masks anyway).
template <typename Offset, typename Real>
void gather(const void* base, DType dtype, int64_t batch, int64_t heads, int64_t length, int64_t dim, Offset offset,
            Real real, std::vector<float>& dst) {
  dst.assign(static_cast<size_t>(batch * heads * length * dim), 0.0f);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < real(b); ++i) {
        widen_row(base, dtype, offset(b, h, i), dim, dst.data() + ((b * heads + h) * length + i) * dim);
      }
    }
  }
}

void regularise_for_plugin(const AttentionProblem& p, PluginProblem& w) {
  w.problem = p;
  AttentionProblem& r = w.problem;
  const bool packed = p.q_starts != nullptr;
  const int64_t d = p.head_dim;
  auto real_rows = [&](int64_t b) { return packed ? q_length_of(p, b) : p.seq_len; };
  auto real_keys = [&](int64_t b) { return p.block_table != nullptr || packed ? kv_length_of(p, b) : p.kv_seq_len; };
  gather(p.q, p.dtype, p.batch, p.heads, p.seq_len, d,
         [&](int64_t b, int64_t h, int64_t i) { return q_row_offset(p, p.q_strides, b, h, i); }, real_rows, w.q);
  gather(p.k, p.dtype, p.batch, p.kv_heads, p.kv_seq_len, d,
         [&](int64_t b, int64_t h, int64_t j) { return kv_row_offset(p, p.k_strides, b, h, j); }, real_keys, w.k);
  gather(p.v, p.dtype, p.batch, p.kv_heads, p.kv_seq_len, d,
         [&](int64_t b, int64_t h, int64_t j) { return kv_row_offset(p, p.v_strides, b, h, j); }, real_keys, w.v);
  const Strides q_dense{p.heads * p.seq_len * d, p.seq_len * d, d};
  const Strides kv_dense{p.kv_heads * p.kv_seq_len * d, p.kv_seq_len * d, d};
  r.q = w.q.data();
  r.k = w.k.data();
  r.v = w.v.data();
  r.q_strides = q_dense;
  r.k_strides = kv_dense;
  r.v_strides = kv_dense;
  r.q_elements = static_cast<int64_t>(w.q.size());
  r.k_elements = static_cast<int64_t>(w.k.size());
  r.v_elements = static_cast<int64_t>(w.v.size());
  r.dtype = DType::float32;
  r.block_table = nullptr;
  r.max_blocks = r.page_size = r.page_count = 0;
  r.q_starts = r.kv_starts = nullptr;
  w.out.assign(static_cast<size_t>(p.batch * p.heads * p.seq_len * d), 0.0f);
  r.out = w.out.data();
  r.out_elements = static_cast<int64_t>(w.out.size());
  r.out_strides = q_dense;
  r.out_dtype = DType::float32;
  if (packed && p.lse != nullptr) {
    w.lse.assign(static_cast<size_t>(p.batch * p.heads * p.seq_len), 0.0f);
    r.lse = w.lse.data();
    r.lse_elements = static_cast<int64_t>(w.lse.size());
  }
}

// The plugin's rows back into the caller's out (rounded to its dtype) and, packed, lse: every row
// the caller's out has (padding rows of q_lengths too: the plugin wrote their zeros), and only
// those (its strides may leave gaps the caller owns; packed sequences have no padding rows).
void write_back_from_plugin(const AttentionProblem& p, const PluginProblem& w) {
  const bool packed = p.q_starts != nullptr;
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t rows = packed ? q_length_of(p, b) : p.seq_len;
    for (int64_t h = 0; h < p.heads; ++h) {
      for (int64_t i = 0; i < rows; ++i) {
        const float* src = w.out.data() + ((b * p.heads + h) * p.seq_len + i) * p.head_dim;
        const int64_t at = q_row_offset(p, p.out_strides, b, h, i);
        if (p.out_dtype == DType::float32) {
          std::memcpy(static_cast<float*>(p.out) + at, src, static_cast<size_t>(p.head_dim) * sizeof(float));
        } else {
          conversion_kernels().narrow_row(src, static_cast<int>(p.head_dim), p.out_dtype, static_cast<uint16_t*>(p.out) + at);
        }
        if (packed && p.lse != nullptr) {
          p.lse[lse_index(p, b, h, i)] = w.lse[static_cast<size_t>((b * p.heads + h) * p.seq_len + i)];
        }
      }
    }
  }
}

}  // namespace

Outcome run_attention_cuda(const AttentionProblem& problem, CudaTiming* timing) {
  ValidatedProblem validated;
  const Outcome outcome = validate_problem(problem, &validated);
  if (outcome.status != Status::ok) return outcome;
  return run_attention_cuda(validated, timing);
}

Outcome run_attention_cuda(const ValidatedProblem& validated, CudaTiming* timing) {
  Outcome outcome;
  const Plugin& p = plugin();
  if (!p.reason.empty()) {
    outcome.status = Status::unavailable;
    std::snprintf(outcome.message, sizeof outcome.message, "%s", p.reason.c_str());
    return outcome;
  }
  if (!validated.valid()) {
    outcome.status = Status::invalid_argument;
    std::snprintf(outcome.message, sizeof outcome.message, "the problem was not validated");
    return outcome;
  }
  const AttentionProblem& problem = validated.problem();
  PluginProblem regular;
  const bool regularise = needs_regularising(problem);
  if (regularise) regularise_for_plugin(problem, regular);

  char msg[sizeof outcome.message] = {0};
  const int32_t status = p.attention(regularise ? &regular.problem : &problem, timing, msg, sizeof msg);
  if (regularise && status == static_cast<int32_t>(Status::ok)) write_back_from_plugin(problem, regular);
  switch (status) {
    case static_cast<int32_t>(Status::ok):
    case static_cast<int32_t>(Status::invalid_argument):
    case static_cast<int32_t>(Status::out_of_memory):
    case static_cast<int32_t>(Status::unavailable):
    case static_cast<int32_t>(Status::internal_error):
      outcome.status = static_cast<Status>(status);
      break;
    default:
      outcome.status = Status::internal_error;
      break;
  }
  std::snprintf(outcome.message, sizeof outcome.message, "%s", msg);
  return outcome;
}

}  // namespace gla
