#include "async_executor.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#if defined(__linux__)
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace gla_addon {
namespace {

struct EnvState;

struct Job {
  std::unique_ptr<AttentionCall> call;
  EnvState* env_state = nullptr;
  napi_deferred deferred = nullptr;
  napi_ref held[5] = {nullptr, nullptr, nullptr, nullptr, nullptr};
  gla::Outcome outcome;
};

// One per Node environment that has made an async call. Raw N-API is used here because every
// status must be checked and tolerated: during teardown node-addon-api's wrappers would abort.
struct EnvState {
  napi_env env = nullptr;
  napi_threadsafe_function settler = nullptr;
  std::mutex mutex;
  std::condition_variable idle;
  int running = 0;       // jobs of this env claimed by a dispatcher (guarded by mutex)
  int in_flight = 0;    // queued, running or awaiting settlement; JS thread only
};

class Executor {
 public:
  static Executor& instance() {
    // Leaked on purpose: no destructor runs at exit, so exit never joins or waits on a worker.
    static Executor* executor = new Executor();
    return *executor;
  }

  void submit(Job* job) {
    std::call_once(started_, [this] { start(); });
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(job);
    }
    ready_.notify_one();
  }

  // Removes an environment's queued jobs under the lock dispatchers claim jobs with, so that after
  // this no job of that env can start; the ones already claimed are counted in state->running.
  std::vector<Job*> close(EnvState* state) {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<Job*> taken;
    auto keep = std::stable_partition(queue_.begin(), queue_.end(), [&](Job* j) { return j->env_state != state; });
    taken.assign(keep, queue_.end());
    queue_.erase(keep, queue_.end());
    return taken;
  }

 private:
  void start() {
    // One dispatcher per hardware thread lets small calls pass a large one; each call's own
    // parallelism comes from the core's pool, which shares its workers between callers.
    const int count = std::max(2, gla::hardware_threads());
    for (int i = 0; i < count; ++i) std::thread([this] { run(); }).detach();
  }

  // The JS thread must win the CPU over background work, or the event loop lags behind a burst of
  // async calls on a machine with few cores. Linux applies nice values per thread.
  static void lower_own_priority() {
#if defined(__linux__)
    setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 10);
#endif
  }

  void run() {
    lower_own_priority();
    for (;;) {
      Job* job = nullptr;
      {
        // Claimed under the queue lock (then the env's), the order close() takes them in.
        std::unique_lock<std::mutex> lock(mutex_);
        ready_.wait(lock, [this] { return !queue_.empty(); });
        job = queue_.front();
        queue_.pop_front();
        std::lock_guard<std::mutex> state_lock(job->env_state->mutex);
        ++job->env_state->running;
      }
      execute(job);
    }
  }

  static void execute(Job* job) {
    EnvState* state = job->env_state;
    job->outcome = execute_call(*job->call);
    const napi_status queued = napi_call_threadsafe_function(state->settler, job, napi_tsfn_nonblocking);
    if (queued != napi_ok) delete job;  // the env is closing: nobody is left to settle it
    std::lock_guard<std::mutex> lock(state->mutex);
    --state->running;
    // Notified under the lock: the waiting teardown cannot free `state` before this returns.
    state->idle.notify_all();
  }

  std::once_flag started_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Job*> queue_;
};

std::mutex env_states_mutex;
std::unordered_map<napi_env, EnvState*>& env_states() {
  static auto* states = new std::unordered_map<napi_env, EnvState*>();
  return *states;
}

void release_references(napi_env env, Job* job) {
  for (napi_ref& ref : job->held) {
    if (ref != nullptr) napi_delete_reference(env, ref);
    ref = nullptr;
  }
}

// Runs on the JS thread of the job's env; env is null when the settler is being torn down.
void settle(napi_env env, napi_value /*js_callback*/, void* /*context*/, void* data) {
  Job* job = static_cast<Job*>(data);
  if (env == nullptr) {
    delete job;
    return;
  }
  EnvState* state = job->env_state;
  release_references(env, job);
  if (job->outcome.status == gla::Status::ok) {
    napi_value undefined = nullptr;
    napi_get_undefined(env, &undefined);
    napi_resolve_deferred(env, job->deferred, undefined);
  } else {
    napi_value message = nullptr;
    napi_value error = nullptr;
    const std::string text = describe_failure(job->outcome);
    if (napi_create_string_utf8(env, text.c_str(), text.size(), &message) == napi_ok &&
        napi_create_error(env, nullptr, message, &error) == napi_ok) {
      napi_reject_deferred(env, job->deferred, error);
    }
  }
  delete job;
  // While calls are in flight the settler keeps the event loop alive, and only then.
  if (--state->in_flight == 0) napi_unref_threadsafe_function(env, state->settler);
}

void tear_down(void* data) {
  auto* state = static_cast<EnvState*>(data);
  {
    std::lock_guard<std::mutex> lock(env_states_mutex);
    env_states().erase(state->env);
  }
  // Queued jobs are dropped; their references die with the env.
  for (Job* job : Executor::instance().close(state)) delete job;
  {
    // A running job writes into this env's buffers: they must outlive it.
    std::unique_lock<std::mutex> lock(state->mutex);
    state->idle.wait(lock, [state] { return state->running == 0; });
  }
  napi_release_threadsafe_function(state->settler, napi_tsfn_abort);
  delete state;
}

EnvState* state_for(napi_env env) {
  {
    std::lock_guard<std::mutex> lock(env_states_mutex);
    auto found = env_states().find(env);
    if (found != env_states().end()) return found->second;
  }
  auto* state = new EnvState();
  state->env = env;
  napi_value name = nullptr;
  if (napi_create_string_utf8(env, "global-local-attention", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, nullptr, nullptr, nullptr, settle,
                                      &state->settler) != napi_ok) {
    delete state;
    return nullptr;
  }
  napi_unref_threadsafe_function(env, state->settler);
  napi_add_env_cleanup_hook(env, tear_down, state);
  std::lock_guard<std::mutex> lock(env_states_mutex);
  env_states()[env] = state;
  return state;
}

}  // namespace

napi_value queue_attention(const CallArgs& args, std::unique_ptr<AttentionCall> call) {
  napi_env env = args.env;
  EnvState* state = state_for(env);
  if (state == nullptr) {
    napi_throw_error(env, nullptr, "internal_error: could not create the async completion channel");
    return nullptr;
  }
  auto job = std::make_unique<Job>();
  job->call = std::move(call);
  job->env_state = state;
  napi_value promise = nullptr;
  if (napi_create_promise(env, &job->deferred, &promise) != napi_ok) {
    napi_throw_error(env, nullptr, "internal_error: could not create a Promise");
    return nullptr;
  }
  // The caller may drop q, k, v, out and lse the moment it has the Promise.
  // The fields and Int32Arrays were copied by read_problem; the float buffers are used in place.
  for (size_t i = kArgQ; i <= kArgLse; ++i) {
    napi_valuetype type = napi_undefined;
    if (i < args.argc && napi_typeof(env, args.argv[i], &type) == napi_ok && type == napi_object) {
      napi_create_reference(env, args.argv[i], 1, &job->held[i - kArgQ]);
    }
  }
  if (state->in_flight++ == 0) napi_ref_threadsafe_function(env, state->settler);
  Executor::instance().submit(job.release());
  return promise;
}

}  // namespace gla_addon
