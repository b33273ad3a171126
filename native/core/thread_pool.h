// The core's own persistent thread pool (not libuv's: the addon may occupy every libuv thread with
// calls that each want several cores).
//
// parallel_for() may be called from any number of threads at once. Every call becomes a job in a
// shared FIFO; idle workers join the oldest job, and the calling thread always works on its own
// job too, so each call makes progress even when every worker is busy elsewhere (no deadlock, no
// starvation: at worst a call runs on its caller alone).
#pragma once

#include <cstdint>
#include <type_traits>

namespace gla {
namespace core {

// A non-owning, non-allocating reference to a callable `void(int64_t item, int slot)`.
class TaskRef {
 public:
  // Constrained so that copying a TaskRef copies it instead of wrapping it (a dangling reference).
  template <typename F, typename = std::enable_if_t<!std::is_same<std::decay_t<F>, TaskRef>::value>>
  TaskRef(F& f) : object_(&f), call_(&invoke<F>) {}  // NOLINT: implicit on purpose
  void operator()(int64_t item, int slot) const { call_(object_, item, slot); }

 private:
  template <typename F>
  static void invoke(void* f, int64_t item, int slot) { (*static_cast<F*>(f))(item, slot); }
  void* object_;
  void (*call_)(void*, int64_t, int);
};

// The process-wide pool, created on first use with hardware_threads() - 1 workers and kept until
// exit. Returns the number of threads a call can use: workers + the caller.
int pool_concurrency();

// Runs task(item, slot) for every item in [0, count), on the calling thread plus at most
// max_threads - 1 workers. `slot` is in [0, max_threads) and no two threads use the same slot at
// the same time during this call, so it can index per-thread scratch. The task must not throw.
// Returns when every item has run.
void parallel_for(int64_t count, int max_threads, TaskRef task);

}  // namespace core
}  // namespace gla
