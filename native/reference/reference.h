// The written specification of attention: a plain O(seq_len * kv_seq_len) loop in double
// precision, applying the visibility rule and the score of problem.h literally, pair by pair. It
// shares no code with the driver (not even visibility.h), so that the two can be checked against
// each other.
#pragma once

#include <vector>

#include "gla/problem.h"

namespace gla {

// out: [batch][heads][seq_len][head_dim] contiguous; lse: [batch][heads][seq_len], natural log.
// A padding row (i >= q_length(b)) gets out 0 and lse -infinity. A real row that sees no key gets
// out 0 and lse -infinity, or lse = sink_logits[h] with sinks. The problem must be valid.
void reference_attention(const AttentionProblem& problem, std::vector<double>& out, std::vector<double>& lse);

// The same; when sees_no_key is given it is resized to [batch][heads][seq_len] and set to 1 for
// every row that sees no key at all (padding rows included), 0 elsewhere.
void reference_attention(const AttentionProblem& problem, std::vector<double>& out, std::vector<double>& lse,
                         std::vector<char>* sees_no_key);

// kv_length(b) and q_length(b): kv_lengths[b] / q_lengths[b], or kv_seq_len / seq_len without them.
int64_t reference_kv_length(const AttentionProblem& problem, int64_t b);
int64_t reference_q_length(const AttentionProblem& problem, int64_t b);

// The absolute key position of query row i of batch item b: i + kv_length(b) - q_length(b).
int64_t reference_position(const AttentionProblem& problem, int64_t b, int64_t i);

// The rule itself, for one (query row i, key j) pair of batch b. A padding row (i >= q_length(b))
// sees no key.
bool reference_visible(const AttentionProblem& problem, int64_t b, int64_t i, int64_t j);

// The score of a visible pair (query head h, query row i, key j) of batch b given its dot product
// q.k: scale * dot, then the softcap, then the ALiBi bias (problem.h), in double.
double reference_score(const AttentionProblem& problem, int64_t b, int64_t h, int64_t i, int64_t j, double dot);

}  // namespace gla
