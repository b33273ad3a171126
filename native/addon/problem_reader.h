// Turns the plain problem object of binding.d.ts (already validated by lib/options.ts) and the
// typed arrays beside it into a gla::AttentionProblem. Nothing is copied but the small metadata
// arrays (kv lengths, global tokens), which the problem then points into.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "gla/problem.h"
#include "napi_include.h"

namespace gla_addon {

struct ReadProblem {
  gla::AttentionProblem problem;
  std::vector<int32_t> kv_lengths;
  std::vector<int32_t> global_offsets;
  std::vector<int32_t> global_indices;
  std::string error;  // non-empty: the arguments were not what binding.d.ts promises
};

// Creates the property-name strings read_problem uses, once per env (module init).
void init_property_keys(Napi::Env env);

// info[0..4] = q, k, v, out, lse|null; info[5] = problem. The returned problem's metadata pointers
// refer into the ReadProblem itself, so it must not be copied after this call (it is held by pointer).
void read_problem(const Napi::CallbackInfo& info, ReadProblem& read);

}  // namespace gla_addon
