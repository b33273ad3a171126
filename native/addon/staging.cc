#include "staging.h"

#include <cstdlib>
#include <mutex>
#include <utility>

namespace gla_addon {
namespace {

// Keeps recently freed blocks for reuse: at most kMaxBlocks, kMaxCachedBytes in all. A block is
// reused for a request of at least half its size, so a tiny call never pins a huge block.
class StagingPool {
 public:
  static StagingPool& instance() {
    static StagingPool* pool = new StagingPool();  // leaked: no destructor ordering at exit
    return *pool;
  }

  float* take(size_t elements, size_t* capacity) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      int best = -1;
      for (int i = 0; i < count_; ++i) {
        const size_t have = cached_[i].capacity;
        if (have >= elements && have / 2 <= elements && (best < 0 || have < cached_[best].capacity)) best = i;
      }
      if (best >= 0) {
        float* data = cached_[best].data;
        *capacity = cached_[best].capacity;
        cached_bytes_ -= *capacity * sizeof(float);
        cached_[best] = cached_[--count_];
        return data;
      }
    }
    // 64-byte aligned (a cache line, a full AVX-512 vector), the size rounded up to match.
    const size_t rounded = (elements + 15) / 16 * 16;
    void* data = std::aligned_alloc(64, rounded * sizeof(float));
    *capacity = data == nullptr ? 0 : rounded;
    return static_cast<float*>(data);
  }

  void give_back(float* data, size_t capacity) {
    const size_t bytes = capacity * sizeof(float);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (count_ < kMaxBlocks && cached_bytes_ + bytes <= kMaxCachedBytes) {
        cached_[count_++] = {data, capacity};
        cached_bytes_ += bytes;
        return;
      }
    }
    std::free(data);
  }

 private:
  static constexpr int kMaxBlocks = 16;
  static constexpr size_t kMaxCachedBytes = size_t{512} << 20;
  struct Cached {
    float* data;
    size_t capacity;
  };
  std::mutex mutex_;
  Cached cached_[kMaxBlocks] = {};
  int count_ = 0;
  size_t cached_bytes_ = 0;
};

}  // namespace

StagingBlock StagingBlock::acquire(size_t bytes) {
  size_t capacity = 0;
  const size_t floats = (bytes + sizeof(float) - 1) / sizeof(float);
  float* data = StagingPool::instance().take(floats == 0 ? 1 : floats, &capacity);
  return StagingBlock(data, capacity);
}

StagingBlock::StagingBlock(StagingBlock&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), capacity_(std::exchange(other.capacity_, 0)) {}

StagingBlock& StagingBlock::operator=(StagingBlock&& other) noexcept {
  if (this != &other) {
    this->~StagingBlock();
    data_ = std::exchange(other.data_, nullptr);
    capacity_ = std::exchange(other.capacity_, 0);
  }
  return *this;
}

StagingBlock::~StagingBlock() {
  if (data_ != nullptr) StagingPool::instance().give_back(data_, capacity_);
  data_ = nullptr;
  capacity_ = 0;
}

bool is_on_shared_memory(napi_env env, napi_value typed_array) {
  napi_value buffer = nullptr;
  if (napi_get_typedarray_info(env, typed_array, nullptr, nullptr, nullptr, &buffer, nullptr) != napi_ok ||
      buffer == nullptr) {
    return false;
  }
  bool plain = true;
  if (napi_is_arraybuffer(env, buffer, &plain) != napi_ok) return false;
  return !plain;
}

}  // namespace gla_addon
