#include "core/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif

#include "gla/attention.h"

namespace gla {

int hardware_threads() {
  static const int threads = [] {
#if defined(__linux__)
    // Containers and taskset restrict the CPUs we may run on; hardware_concurrency ignores that.
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
      const int n = CPU_COUNT(&set);
      if (n > 0) return n;
    }
#endif
    const unsigned n = std::thread::hardware_concurrency();
    return n > 0 ? static_cast<int>(n) : 1;
  }();
  return threads;
}

namespace core {
namespace {

// Lives on the stack of its parallel_for call. Fields without atomics are guarded by the pool mutex.
struct Job {
  TaskRef task;
  int64_t count;
  std::atomic<int64_t> next{0};
  int helpers_wanted;
  int helpers_joined = 0;  // also hands out slots 1..helpers_wanted
  int helpers_active = 0;  // helpers that may still touch this job
  bool queued = false;
  Job* link = nullptr;

  Job(TaskRef t, int64_t n, int helpers) : task(t), count(n), helpers_wanted(helpers) {}

  void run_items(int slot) {
    for (;;) {
      const int64_t item = next.fetch_add(1, std::memory_order_relaxed);
      if (item >= count) return;
      task(item, slot);
    }
  }
};

class Pool {
 public:
  explicit Pool(int workers) {
    for (int i = 0; i < workers; ++i) {
      try {
        threads_.emplace_back([this] { worker_main(); });
      } catch (...) {
        break;  // fewer workers than hoped (thread limit, memory): still correct, only slower
      }
    }
  }

  int concurrency() const { return static_cast<int>(threads_.size()) + 1; }

  void parallel_for(int64_t count, int max_threads, TaskRef task) {
    if (count <= 0) return;
    const int64_t helpers64 = std::min<int64_t>({static_cast<int64_t>(max_threads) - 1,
                                                  static_cast<int64_t>(threads_.size()), count - 1});
    if (helpers64 <= 0) {
      for (int64_t i = 0; i < count; ++i) task(i, 0);
      return;
    }
    Job job(task, count, static_cast<int>(helpers64));
    {
      std::lock_guard<std::mutex> lock(mutex_);
      enqueue(&job);
    }
    work_cv_.notify_all();
    job.run_items(0);
    std::unique_lock<std::mutex> lock(mutex_);
    // No helper can join after this, and those that joined finish the items they took.
    if (job.queued) dequeue(&job);
    done_cv_.wait(lock, [&] { return job.helpers_active == 0; });
  }

 private:
  void enqueue(Job* job) {
    job->queued = true;
    job->link = nullptr;
    if (tail_ == nullptr) {
      head_ = tail_ = job;
    } else {
      tail_->link = job;
      tail_ = job;
    }
  }

  void dequeue(Job* job) {
    Job* prev = nullptr;
    for (Job* j = head_; j != nullptr; prev = j, j = j->link) {
      if (j != job) continue;
      (prev == nullptr ? head_ : prev->link) = j->link;
      if (tail_ == j) tail_ = prev;
      j->queued = false;
      j->link = nullptr;
      return;
    }
  }

  void worker_main() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      work_cv_.wait(lock, [&] { return head_ != nullptr; });
      Job* job = head_;
      const int slot = ++job->helpers_joined;
      ++job->helpers_active;
      if (job->helpers_joined == job->helpers_wanted ||
          job->next.load(std::memory_order_relaxed) >= job->count) {
        dequeue(job);
      }
      lock.unlock();
      job->run_items(slot);
      lock.lock();
      // The caller waits on this under the same mutex, so it cannot free the job before we are done.
      if (--job->helpers_active == 0) done_cv_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  Job* head_ = nullptr;
  Job* tail_ = nullptr;
  std::vector<std::thread> threads_;
};

Pool& pool() {
  // Deliberately leaked: workers block on the pool's condition variable forever, and destroying it
  // at exit (while a Node worker thread may still be inside a call) would be undefined behaviour.
  static Pool* instance = new Pool(hardware_threads() - 1);
  return *instance;
}

}  // namespace

int pool_concurrency() { return pool().concurrency(); }

void parallel_for(int64_t count, int max_threads, TaskRef task) { pool().parallel_for(count, max_threads, task); }

}  // namespace core
}  // namespace gla
