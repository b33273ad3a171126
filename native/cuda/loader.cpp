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

// The plugin computes float32 only (plugin_abi.h, version 2): a half-precision problem reaches it
// widened (exact: every half value is a float32), with out computed into a float32 buffer and
// rounded into the caller's out once, as the CPU kernels do. O(n d) on the host against O(n^2 d) on
// the GPU; tensor-core half products are the CUDA issue's work.
struct WidenedProblem {
  AttentionProblem problem;
  std::vector<float> q, k, v, out;
};

// The best CPU kernels' conversions (looked up once: supported_isas() builds a vector).
const cpu::CpuKernels& conversion_kernels() {
  static const cpu::CpuKernels& kernels = *dispatch::kernels_for(supported_isas().front());
  return kernels;
}

void widen_tensor(const void* src, DType dtype, int64_t elements, std::vector<float>& dst) {
  dst.resize(static_cast<size_t>(elements));
  if (dtype == DType::float32) {
    std::memcpy(dst.data(), src, static_cast<size_t>(elements) * sizeof(float));
    return;
  }
  constexpr int64_t kChunk = int64_t{1} << 20;
  const int64_t first_row = 0;
  for (int64_t at = 0; at < elements; at += kChunk) {
    const int n = static_cast<int>(std::min(kChunk, elements - at));
    conversion_kernels().widen_rows(dtype, static_cast<const uint16_t*>(src) + at, 0, &first_row, 1, n, 1.0f,
                                    dst.data() + at, 0);
  }
}

void widen_for_plugin(const AttentionProblem& p, WidenedProblem& w) {
  w.problem = p;
  widen_tensor(p.q, p.dtype, p.q_elements, w.q);
  widen_tensor(p.k, p.dtype, p.k_elements, w.k);
  widen_tensor(p.v, p.dtype, p.v_elements, w.v);
  w.problem.q = w.q.data();
  w.problem.k = w.k.data();
  w.problem.v = w.v.data();
  w.problem.dtype = DType::float32;
  if (p.out_dtype != DType::float32) {
    w.out.assign(static_cast<size_t>(p.out_elements), 0.0f);
    w.problem.out = w.out.data();
    w.problem.out_dtype = DType::float32;
  }
}

// Only the rows of out (its strides may leave gaps the caller owns).
void narrow_from_plugin(const AttentionProblem& p, const WidenedProblem& w) {
  if (p.out_dtype == DType::float32) return;
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t h = 0; h < p.heads; ++h) {
      for (int64_t i = 0; i < p.seq_len; ++i) {
        const int64_t at = b * p.out_strides.batch + h * p.out_strides.head + i * p.out_strides.seq;
        conversion_kernels().narrow_row(w.out.data() + at, static_cast<int>(p.head_dim), p.out_dtype,
                                        static_cast<uint16_t*>(p.out) + at);
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
  WidenedProblem widened;
  const bool half = problem.dtype != DType::float32 || problem.out_dtype != DType::float32;
  if (half) widen_for_plugin(problem, widened);

  char msg[sizeof outcome.message] = {0};
  const int32_t status = p.attention(half ? &widened.problem : &problem, timing, msg, sizeof msg);
  if (half && status == static_cast<int32_t>(Status::ok)) narrow_from_plugin(problem, widened);
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
