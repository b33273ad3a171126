#include "async_executor.h"

#include "staging.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
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

// out or lse computed into a staging block, for the caller's non-shared array (staging.h).
struct StagedOutput {
  napi_ref array = nullptr;  // the caller's typed array, to copy into when the call settles
  StagingBlock block;
  size_t elements = 0;
  size_t element_bytes = 4;
  napi_typedarray_type type = napi_float32_array;
  const char* name = nullptr;  // as the caller knows it: "options.out", "options.lse"
};

struct Job {
  std::unique_ptr<AttentionCall> call;
  EnvState* env_state = nullptr;
  napi_deferred deferred = nullptr;
  // Views used in place (shared memory, or the addon's own output array), kept alive until the
  // call settles. held[kArgOut] is also the value the Promise resolves with.
  napi_ref held[kArgLse + 1] = {nullptr, nullptr, nullptr, nullptr, nullptr};
  StagingBlock staged_inputs[3];  // copies of q, k, v taken at submit
  StagedOutput staged_outputs[2];  // out, lse
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

void release_reference(napi_env env, napi_ref& ref) {
  if (ref != nullptr) napi_delete_reference(env, ref);
  ref = nullptr;
}

void release_references(napi_env env, Job* job) {
  for (napi_ref& ref : job->held) release_reference(env, ref);
  for (StagedOutput& staged : job->staged_outputs) release_reference(env, staged.array);
}

// On the JS thread: checks that every staged output's array still has the length it had at submit
// (a transferred buffer reads as length 0, a shrunk resizable one as its new length), then copies
// them all, or none. Returns false with the reason in `error` if any array changed.
bool deliver_staged_outputs(napi_env env, Job* job, std::string& error) {
  void* targets[2] = {nullptr, nullptr};
  for (int i = 0; i < 2; ++i) {
    StagedOutput& staged = job->staged_outputs[i];
    if (staged.array == nullptr) continue;
    napi_value array = nullptr;
    napi_typedarray_type type = napi_float32_array;
    size_t length = 0;
    void* data = nullptr;
    napi_value buffer = nullptr;
    bool detached = false;
    if (napi_get_reference_value(env, staged.array, &array) != napi_ok || array == nullptr ||
        napi_get_typedarray_info(env, array, &type, &length, &data, &buffer, nullptr) != napi_ok) {
      error = std::string(staged.name) + " could not be read back when the call settled; the result was discarded";
      return false;
    }
    napi_is_detached_arraybuffer(env, buffer, &detached);
    if (detached) {
      error = std::string(staged.name) +
              " was detached (its ArrayBuffer was transferred) while the call ran; the result was discarded";
      return false;
    }
    if (type != staged.type || length != staged.elements || data == nullptr) {
      error = std::string(staged.name) + " has " + std::to_string(length) + " elements now, " +
              std::to_string(staged.elements) +
              " when the call started (its resizable ArrayBuffer was resized while the call ran); the result was discarded";
      return false;
    }
    targets[i] = data;
  }
  for (int i = 0; i < 2; ++i) {
    if (targets[i] != nullptr) {
      gla::parallel_copy(targets[i], job->staged_outputs[i].block.data(),
                         job->staged_outputs[i].elements * job->staged_outputs[i].element_bytes,
                         job->call->read.problem.threads);
    }
  }
  return true;
}

void reject_with(napi_env env, napi_deferred deferred, const std::string& text) {
  napi_value message = nullptr;
  napi_value error = nullptr;
  if (napi_create_string_utf8(env, text.c_str(), text.size(), &message) == napi_ok &&
      napi_create_error(env, nullptr, message, &error) == napi_ok) {
    napi_reject_deferred(env, deferred, error);
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
  if (job->outcome.status == gla::Status::ok) {
    std::string error;
    napi_value result = nullptr;
    if (!deliver_staged_outputs(env, job, error)) {
      reject_with(env, job->deferred, error);
    } else if (napi_get_reference_value(env, job->held[kArgOut], &result) == napi_ok && result != nullptr) {
      napi_resolve_deferred(env, job->deferred, result);
    } else {
      reject_with(env, job->deferred, "internal_error: the output array was lost before the call settled");
    }
  } else {
    reject_with(env, job->deferred, describe_failure(job->outcome));
  }
  release_references(env, job);
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

namespace {

void hold(napi_env env, napi_value value, napi_ref* ref) {
  napi_valuetype type = napi_undefined;
  if (value != nullptr && napi_typeof(env, value, &type) == napi_ok && type == napi_object) {
    napi_create_reference(env, value, 1, ref);
  }
}

// Gives the job memory of its own for every buffer the caller could detach or shrink (staging.h)
// and points the problem at it. On the JS thread, before any worker can see the job. False (with a
// pending exception) only when a staging block cannot be allocated.
bool stage_buffers(const CallArgs& args, bool out_is_private, Job* job) {
  napi_env env = args.env;
  gla::AttentionProblem& p = job->call->read.problem;
  const void** inputs[3] = {&p.q, &p.k, &p.v};
  const int64_t input_elements[3] = {p.q_elements, p.k_elements, p.v_elements};
  const char* const input_names[3] = {"q", "k", "v"};
  const void* caller_inputs[3] = {p.q, p.k, p.v};
  const size_t input_bytes = static_cast<size_t>(gla::dtype_bytes(p.dtype));
  for (int i = 0; i < 3; ++i) {
    const napi_value value = args.argv[kArgQ + i];
    if (is_on_shared_memory(env, value)) {
      hold(env, value, &job->held[kArgQ + i]);
      continue;
    }
    // The same array passed twice (k === v, or q === k === v) is copied once.
    bool shared_copy = false;
    for (int j = 0; j < i; ++j) {
      if (caller_inputs[j] == caller_inputs[i] && input_elements[j] == input_elements[i] &&
          job->staged_inputs[j].data() != nullptr) {
        *inputs[i] = job->staged_inputs[j].data();
        shared_copy = true;
        break;
      }
    }
    if (shared_copy) continue;
    const size_t bytes = static_cast<size_t>(input_elements[i]) * input_bytes;
    job->staged_inputs[i] = StagingBlock::acquire(bytes);
    if (job->staged_inputs[i].data() == nullptr) {
      const std::string text = std::string("out_of_memory: could not allocate ") + std::to_string(bytes) +
                               " bytes to copy " + input_names[i] + " for the async call";
      napi_throw_range_error(env, nullptr, text.c_str());
      return false;
    }
    gla::parallel_copy(job->staged_inputs[i].data(), caller_inputs[i], bytes, p.threads);
    *inputs[i] = job->staged_inputs[i].data();
  }

  void* lse = p.lse;
  void** outputs[2] = {&p.out, &lse};
  const size_t output_bytes[2] = {static_cast<size_t>(gla::dtype_bytes(p.out_dtype)), sizeof(float)};
  const napi_typedarray_type output_types[2] = {
      p.out_dtype == gla::DType::float32 ? napi_float32_array : napi_uint16_array, napi_float32_array};
  const int64_t output_elements[2] = {p.out_elements, p.lse_elements};
  const char* const output_names[2] = {"options.out", "options.lse"};
  for (int i = 0; i < 2; ++i) {
    const napi_value value = args.argv[kArgOut + i];
    if (*outputs[i] == nullptr) continue;  // no lse
    // out is held in any case: the Promise resolves with it.
    if (i == 0) hold(env, value, &job->held[kArgOut]);
    if ((i == 0 && out_is_private) || is_on_shared_memory(env, value)) {
      if (i == 1) hold(env, value, &job->held[kArgLse]);
      continue;
    }
    StagedOutput& staged = job->staged_outputs[i];
    staged.elements = static_cast<size_t>(output_elements[i]);
    staged.element_bytes = output_bytes[i];
    staged.type = output_types[i];
    staged.name = output_names[i];
    staged.block = StagingBlock::acquire(staged.elements * staged.element_bytes);
    if (staged.block.data() == nullptr) {
      const std::string text = std::string("out_of_memory: could not allocate ") +
                               std::to_string(staged.elements * staged.element_bytes) + " bytes for the async call's " +
                               output_names[i];
      napi_throw_range_error(env, nullptr, text.c_str());
      return false;
    }
    hold(env, value, &staged.array);
    *outputs[i] = staged.block.data();
  }
  p.lse = static_cast<float*>(lse);
  return true;
}

}  // namespace

napi_value queue_attention(const CallArgs& args, std::unique_ptr<AttentionCall> call, bool out_is_private) {
  napi_env env = args.env;
  EnvState* state = state_for(env);
  if (state == nullptr) {
    napi_throw_error(env, nullptr, "internal_error: could not create the async completion channel");
    return nullptr;
  }
  auto job = std::make_unique<Job>();
  job->call = std::move(call);
  job->env_state = state;
  // Staged first, then validated once: the validation then speaks for the memory the call uses.
  if (!stage_buffers(args, out_is_private, job.get()) || !seal_call(job->call.get(), env)) {
    release_references(env, job.get());
    return nullptr;
  }
  napi_value promise = nullptr;
  if (napi_create_promise(env, &job->deferred, &promise) != napi_ok) {
    release_references(env, job.get());
    napi_throw_error(env, nullptr, "internal_error: could not create a Promise");
    return nullptr;
  }
  // The fields and Int32Arrays were copied by read_problem.
  if (state->in_flight++ == 0) napi_ref_threadsafe_function(env, state->settler);
  Executor::instance().submit(job.release());
  return promise;
}

}  // namespace gla_addon
