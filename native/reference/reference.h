// The written specification of attention: a plain O(seq_len * kv_seq_len) loop in double
// precision, applying the visibility rule of problem.h literally, pair by pair. It shares no code
// with the driver (not even visibility.h), so that the two can be checked against each other.
#pragma once

#include <vector>

#include "gla/problem.h"

namespace gla {

// out: [batch][heads][seq_len][head_dim] contiguous; lse: [batch][heads][seq_len], natural log,
// -infinity for a row that sees no key (whose out row is 0). The problem must be valid.
void reference_attention(const AttentionProblem& problem, std::vector<double>& out, std::vector<double>& lse);

// The rule itself, for one (query i, key j) pair of batch b.
bool reference_visible(const AttentionProblem& problem, int64_t b, int64_t i, int64_t j);

}  // namespace gla
