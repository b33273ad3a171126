// The Promise API's engine: attention calls run on threads the addon owns, never on libuv's small
// shared pool (which the process needs for fs, dns and zlib), and each Promise is settled on the
// JS thread of the environment (main thread or worker_thread) that made the call.
#pragma once

#include <memory>

#include "attention_call.h"

namespace gla_addon {

// Queues `call` (read, not yet validated) and returns its Promise, which resolves with the out
// array. Before it returns, every buffer the caller could detach or shrink meanwhile is replaced by
// memory the call owns (staging.h), the rest stay referenced until the Promise settles, and the
// call is validated once (seal_call), throwing a RangeError if it is not valid. `out_is_private`: out is an
// array the addon allocated for this call, which no JavaScript has seen. Tearing the environment down (a worker_thread terminated mid-call) waits
// for that environment's running calls, so none writes into freed memory, and drops its queued ones.
// The threads are never joined: process.exit() does not wait for queued work.
napi_value queue_attention(const CallArgs& args, std::unique_ptr<AttentionCall> call, bool out_is_private);

}  // namespace gla_addon
