// Memory an async call owns, so that nothing the caller does to its buffers while the call runs can
// make a worker thread read or write memory that is no longer the call's.
//
// Why: N-API lets an addon keep a typed-array *object* alive (napi_ref), not the memory behind it.
// A non-shared ArrayBuffer can be transferred (postMessage, structuredClone with transfer), after
// which its memory belongs to the new owner and is freed with it, or shrunk (resizable buffers),
// which decommits its pages. Holding V8's BackingStore (what Node core does for its own async I/O)
// would keep transferred memory alive but needs V8's C++ API, which costs the N-API ABI stability
// prebuilt binaries rely on, still races with the new owner, and cannot stop a shrink.
//
// So, at submit, on the JS thread (where nothing else can touch a non-shared buffer):
//   - a view on a SharedArrayBuffer is used in place: it cannot be detached, and a growable one
//     only grows, in place;
//   - q, k and v on a non-shared ArrayBuffer are copied into a staging block the call owns;
//   - out and lse on a non-shared ArrayBuffer are computed into a staging block, and copied into
//     the caller's array on the JS thread when the call settles, if the array still has its length
//     (otherwise the call rejects and writes nothing);
//   - an output array the addon allocated itself (no `out` given) is used in place: no JS code has
//     seen it yet, so none can detach it.
// Staging blocks are recycled through a small process-wide pool: a fresh block above glibc's mmap
// threshold (32 MiB) costs a page fault per 4 KiB on first touch, which made a 100 MB copy 5x slower.
#pragma once

#include <cstddef>

#include "napi_include.h"

namespace gla_addon {

// A block from the staging pool (64-byte aligned, in whole floats); returns itself to the pool
// when destroyed.
class StagingBlock {
 public:
  StagingBlock() = default;
  // At least `bytes`; null (and empty) only if the allocation failed.
  static StagingBlock acquire(size_t bytes);
  StagingBlock(StagingBlock&& other) noexcept;
  StagingBlock& operator=(StagingBlock&& other) noexcept;
  StagingBlock(const StagingBlock&) = delete;
  StagingBlock& operator=(const StagingBlock&) = delete;
  ~StagingBlock();

  float* data() const { return data_; }

 private:
  StagingBlock(float* data, size_t capacity) : data_(data), capacity_(capacity) {}
  float* data_ = nullptr;
  size_t capacity_ = 0;  // in floats
};

// True when the typed array lives on a SharedArrayBuffer, whose memory no JavaScript can detach or
// shrink. N-API has no direct test before Node 24; napi_is_arraybuffer is false for a shared one.
bool is_on_shared_memory(napi_env env, napi_value typed_array);

}  // namespace gla_addon
