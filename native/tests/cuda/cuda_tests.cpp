// Tests of the CUDA backend. A plain C++ program (no CUDA headers): the kernels of kernels.cuh are
// compiled here against simt.h's CPU emulation, and the real plugin is reached through the loader.
//
//   gla_cuda_tests emulated       the schedule (which keys each block visits) against the visibility
//                                 rule, then the kernel source itself, emulated, against the double
//                                 reference. Runs everywhere, no GPU needed.
//   gla_cuda_tests gpu [--skip-code N] [--quick]
//                                 the plugin on a GPU over a grid of shapes and masks, concurrent
//                                 callers, timing. Prints "SKIPPED: <reason>" and exits N (default 0)
//                                 when the plugin is unavailable. With GLA_CUDA_PLUGIN pointing at
//                                 libgla_cuda_emulated (ctest cuda_plugin_emulated), --quick runs
//                                 the same through the loader and the plugin's host code on the CPU.
//   gla_cuda_tests loader-missing the loader with GLA_CUDA_PLUGIN pointing nowhere: a reason, no crash.
#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gla/attention.h"
#include "gla/cuda_backend.h"
#include "launch.h"
#include "reference/reference.h"
#include "tests/test_problem.h"

namespace {

using gla::AttentionProblem;
using gla_test::Layout;
using gla_test::Spec;
using gla_test::TestProblem;
using gla_test::Values;
namespace gc = gla::cuda;

int g_failures = 0;
int g_checks = 0;

void expect(bool ok, const std::string& what) {
  ++g_checks;
  if (!ok) {
    ++g_failures;
    if (g_failures <= 50) std::printf("FAIL: %s\n", what.c_str());
  }
}

// ---------------------------------------------------------------------------------------------------
// Schedule: every (row, key) pair counted exactly once iff the rule says it is visible.

gc::DeviceProblem host_problem(const AttentionProblem& p, const std::vector<uint8_t>* flags) {
  gc::DeviceBuffers d{static_cast<const float*>(p.q), static_cast<const float*>(p.k), static_cast<const float*>(p.v), static_cast<float*>(p.out), p.lse, p.kv_lengths, p.global_offsets, p.global_indices,
                      flags != nullptr && !flags->empty() ? flags->data() : nullptr, p.q_lengths, p.alibi_slopes,
                      p.sink_logits};
  return gc::make_device_problem(p, d);
}

std::vector<uint8_t> global_flags(const AttentionProblem& p) {
  std::vector<uint8_t> flags;
  if (p.global_offsets == nullptr) return flags;
  flags.assign(static_cast<size_t>(p.batch * p.kv_seq_len), 0);
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t g = p.global_offsets[b]; g < p.global_offsets[b + 1]; ++g) {
      flags[static_cast<size_t>(b * p.kv_seq_len + p.global_indices[g])] = 1;
    }
  }
  return flags;
}

void check_schedule(const TestProblem& tp, int64_t bm, int64_t bn, bool use_flags, const std::string& name) {
  const AttentionProblem& p = tp.p;
  const std::vector<uint8_t> flags = use_flags ? global_flags(p) : std::vector<uint8_t>{};
  const gc::DeviceProblem P = host_problem(p, &flags);
  const int64_t kv = p.kv_seq_len;
  bool ok = true;
  std::string why;
  auto bad = [&](const std::string& s) {
    if (ok) why = s;
    ok = false;
  };
  for (int64_t b = 0; b < p.batch && ok; ++b) {
    const gla::RowMask m = gc::row_mask(P, b);
    // Only the real rows (i < q_length(b)) are the passes' (as the kernels do); the padding rows
    // see nothing by the reference's rule, and pad_rows_kernel writes them.
    const int64_t q_len = gc::q_length(P, b);
    if (m.position_offset != gla::reference_position(p, b, 0)) bad("position offset differs from the reference");
    for (int64_t i0 = 0; i0 < q_len && ok; i0 += bm) {
      const int64_t rows = std::min(bm, q_len - i0);
      const int64_t p_first = i0 + m.position_offset;
      const int64_t p_last = p_first + rows - 1;
      const gc::TileSchedule s = gc::tile_schedule(P, b, m, p_first, p_last, bn);
      std::vector<int> count(static_cast<size_t>(rows * std::max<int64_t>(kv, 1)), 0);
      for (int64_t t = 0; t < s.count(); ++t) {
        const gc::TileDesc tile = gc::tile_at(s, m, p_first, p_last, bn, t);
        if (tile.len < 1 || tile.len > bn) bad("tile length out of range");
        for (int64_t c = 0; c < bn; ++c) {
          const int64_t j = gc::tile_key(P, s, tile, c);
          if (j >= kv) bad("key past kv_seq_len");
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t i = i0 + r;
            // Global query rows are the row pass's: what the tile pass computes for them is discarded.
            if (gc::is_global_token(P, b, i + m.position_offset)) continue;
            const bool truth = j >= 0 && gla::reference_visible(p, b, i, j);
            if (tile.vis == gla::TileVisibility::none) {
              if (truth) bad("a visible pair in a tile classified none");
              continue;
            }
            // The kernel drops the mask for full tiles of bn keys: those pairs must all be visible.
            const bool unmasked = tile.vis == gla::TileVisibility::full && tile.len == bn;
            if (unmasked && j >= 0 && !truth) bad("an invisible pair in a full tile");
            const bool counted =
                unmasked ? j >= 0 : gc::tile_pair_visible(m, tile, i + m.position_offset, j, gc::is_global_token(P, b, j));
            if (counted && j >= 0) ++count[static_cast<size_t>(r * kv + j)];
          }
        }
      }
      for (int64_t r = 0; r < rows && ok; ++r) {
        const int64_t i = i0 + r;
        if (gc::is_global_token(P, b, i + m.position_offset)) continue;  // the row pass owns it
        for (int64_t j = 0; j < kv; ++j) {
          const int want = gla::reference_visible(p, b, i, j) ? 1 : 0;
          if (count[static_cast<size_t>(r * kv + j)] != want) {
            bad("tile pass counts pair (b=" + std::to_string(b) + ", i=" + std::to_string(i) + ", j=" +
                std::to_string(j) + ") " + std::to_string(count[static_cast<size_t>(r * kv + j)]) + " times, want " +
                std::to_string(want));
            break;
          }
        }
      }
    }
    // Row pass, for every real row (ordinary rows go there in decode and for huge head_dim).
    for (int64_t i = 0; i < q_len && ok; ++i) {
      const bool global_row = gc::is_global_token(P, b, i + m.position_offset);
      const gc::RowSchedule rs = gc::row_schedule(P, b, i, global_row);
      for (int64_t splits : {int64_t{1}, int64_t{3}, int64_t{7}}) {
        std::vector<int> count(static_cast<size_t>(std::max<int64_t>(kv, 1)), 0);
        int64_t covered = 0;
        for (int64_t sp = 0; sp < splits; ++sp) {
          const gla::KeyRange range = gc::split_range(rs.count, splits, sp);
          if (range.begin != covered) bad("split ranges are not contiguous");
          covered = std::max(covered, range.end);
          for (int64_t t = range.begin; t < range.end; ++t) {
            const int64_t j = gc::row_key(P, rs, t);
            if (j < 0 || j >= kv) {
              bad("row key out of range");
              continue;
            }
            if (gc::row_pair_visible(P, rs, b, t, j)) ++count[static_cast<size_t>(j)];
          }
        }
        if (covered != rs.count) bad("splits do not cover the row's keys");
        for (int64_t j = 0; j < kv; ++j) {
          const int want = gla::reference_visible(p, b, i, j) ? 1 : 0;
          if (count[static_cast<size_t>(j)] != want) {
            bad("row pass counts pair (b=" + std::to_string(b) + ", i=" + std::to_string(i) + ", j=" +
                std::to_string(j) + ") " + std::to_string(count[static_cast<size_t>(j)]) + " times, want " +
                std::to_string(want));
            break;
          }
        }
      }
    }
  }
  expect(ok, "schedule " + name + " bm=" + std::to_string(bm) + " bn=" + std::to_string(bn) + ": " + why);
}

Spec random_spec(std::mt19937_64& rng, int n) {
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  Spec s;
  s.name = "random" + std::to_string(n);
  s.batch = pick(1, 3);
  s.seq_len = pick(1, 140);
  s.kv_seq_len = pick(1, 140);
  s.head_dim = 1;
  s.causal = pick(0, 1) == 1;
  s.window_left = pick(0, 2) == 0 ? -1 : pick(0, 20);
  s.window_right = pick(0, 2) == 0 ? -1 : pick(0, 20);
  if (pick(0, 2) != 0) {
    for (int64_t b = 0; b < s.batch; ++b) {
      std::vector<int32_t> g;
      const int64_t n_glob = pick(0, 6);
      for (int64_t k = 0; k < n_glob; ++k) g.push_back(static_cast<int32_t>(pick(0, s.kv_seq_len - 1)));
      std::sort(g.begin(), g.end());
      g.erase(std::unique(g.begin(), g.end()), g.end());
      s.globals.push_back(g);
    }
  }
  if (pick(0, 2) == 0) {
    for (int64_t b = 0; b < s.batch; ++b) s.kv_lengths.push_back(static_cast<int32_t>(pick(0, s.kv_seq_len)));
  }
  if (pick(0, 2) == 0) {
    for (int64_t b = 0; b < s.batch; ++b) s.q_lengths.push_back(static_cast<int32_t>(pick(0, s.seq_len)));
  }
  s.seed = static_cast<uint64_t>(n) + 1;
  return s;
}

void run_schedule_tests() {
  std::mt19937_64 rng(12345);
  int problems = 0;
  for (int n = 0; n < 300; ++n) {
    const Spec s = random_spec(rng, n);
    TestProblem tp;
    gla_test::build(s, tp);
    for (int64_t bm : {int64_t{64}, int64_t{32}}) {
      for (int64_t bn : {int64_t{64}, int64_t{32}}) check_schedule(tp, bm, bn, n % 2 == 0, gla_test::describe(s));
    }
    ++problems;
  }
  std::printf("schedule: %d random problems checked pair by pair\n", problems);
}

Spec make(const std::string& name, int64_t b, int64_t h, int64_t kvh, int64_t s, int64_t kv, int64_t d);

void run_launch_schedule_tests() {
  Spec s;
  s.batch = 2;
  s.heads = 4;
  s.kv_heads = 2;
  s.seq_len = 70;
  s.kv_seq_len = 70;
  s.head_dim = 64;
  s.globals = {{0, 3, 69}, {}};
  TestProblem tp;
  gla_test::build(s, tp);
  gc::ScheduleLimits lim;
  lim.sm_count = 132;
  lim.smem_per_block = 227 * 1024;
  gc::LaunchSchedule schedule;
  expect(gc::make_schedule(tp.p, lim, &schedule) == nullptr, "schedule: a plain problem schedules");
  expect(schedule.tile_dim == 64 && !schedule.all_rows && schedule.tasks == 3, "schedule: tile pass plus 3 global rows");
  std::vector<gc::RowTask> tasks(static_cast<size_t>(schedule.tasks));
  gc::fill_tasks(tp.p, schedule, tasks.data());
  expect(tasks[0].batch == 0 && tasks[0].query == 0 && tasks[2].query == 69 && tasks[2].global_row == 1,
         "schedule: global row tasks");

  tp.p.seq_len = 1;  // decode: every row through the row pass, keys split to fill the GPU
  tp.p.kv_seq_len = 70;
  expect(gc::make_schedule(tp.p, lim, &schedule) == nullptr && schedule.all_rows && schedule.tasks == 2, "schedule: decode rows");
  tp.p.head_dim = 1000;
  expect(gc::make_schedule(tp.p, lim, &schedule) == nullptr && schedule.row_dv == 256 && schedule.dv_chunks == 4,
         "schedule: head_dim 1000 in 4 chunks");
  lim.smem_per_block = 48 * 1024;
  tp.p.head_dim = 100000;
  expect(gc::make_schedule(tp.p, lim, &schedule) != nullptr, "schedule: head_dim beyond shared memory is refused");
  tp.p.head_dim = 256;
  tp.p.seq_len = 70;
  tp.p.kv_seq_len = 70;
  lim.smem_per_block = 64 * 1024;  // a device smaller than any we build for: rows instead of tiles
  expect(gc::make_schedule(tp.p, lim, &schedule) == nullptr && schedule.all_rows, "schedule: tiles that do not fit fall back to rows");

  // q_lengths: padding rows are never tasks, and global rows sit at i = g - (kv_length - q_length).
  {
    Spec q = make("qlen schedule", 3, 2, 1, 70, 80, 64);
    q.globals = {{0, 30, 79}, {5, 12}, {0}};
    q.kv_lengths = {80, 20, 0};
    q.q_lengths = {50, 10, 0};  // offsets 30, 10, 0
    TestProblem qp;
    gla_test::build(q, qp);
    gc::ScheduleLimits ql;
    ql.sm_count = 132;
    ql.smem_per_block = 227 * 1024;
    expect(gc::make_schedule(qp.p, ql, &schedule) == nullptr && schedule.tile_dim == 64 && schedule.pad_rows,
           "schedule: q_lengths with tiles pads rows");
    // Item 0: positions 30 and 79 are rows 0 and 49 (0 is position -30); item 1: 12 is row 2 (5 is -5).
    expect(schedule.tasks == 3, "schedule: 3 real global rows, got " + std::to_string(schedule.tasks));
    tasks.assign(static_cast<size_t>(schedule.tasks), gc::RowTask{});
    gc::fill_tasks(qp.p, schedule, tasks.data());
    expect(schedule.tasks == 3 && tasks[0].batch == 0 && tasks[0].query == 0 && tasks[1].query == 49 &&
               tasks[2].batch == 1 && tasks[2].query == 2 && tasks[2].global_row == 1,
           "schedule: global rows of q_lengths");
    ql.force_rows = true;
    expect(gc::make_schedule(qp.p, ql, &schedule) == nullptr && schedule.all_rows && schedule.tasks == 60 &&
               schedule.pad_rows,
           "schedule: rows of q_lengths are the real ones");
    tasks.assign(static_cast<size_t>(schedule.tasks), gc::RowTask{});
    gc::fill_tasks(qp.p, schedule, tasks.data());
    bool real = true;
    for (const gc::RowTask& t : tasks) real = real && t.query < q.q_lengths[static_cast<size_t>(t.batch)];
    expect(real && tasks[0].global_row == 1 && tasks[59].batch == 1 && tasks[59].query == 9 && tasks[52].global_row == 1,
           "schedule: row tasks skip padding, flag global rows");
    qp.q_lengths = {1, 8, 0};  // a decode batch in a longer seq_len: rows, not tiles
    qp.rebind();
    ql.force_rows = false;
    expect(gc::make_schedule(qp.p, ql, &schedule) == nullptr && schedule.all_rows && schedule.tasks == 9,
           "schedule: short q_lengths go to the row pass");
    ql.force_rows = true;
    qp.q_lengths = {0, 0, 0};
    qp.rebind();
    expect(gc::make_schedule(qp.p, ql, &schedule) == nullptr && schedule.tasks == 0 && schedule.pad_rows,
           "schedule: all padding: no tasks, only the padding kernel");
    qp.q_lengths = {70, 70, 70};  // every row real: no padding kernel
    qp.rebind();
    expect(gc::make_schedule(qp.p, ql, &schedule) == nullptr && schedule.tasks == 210 && !schedule.pad_rows,
           "schedule: full q_lengths need no padding kernel");
  }
  // Calls without the serving options keep today's path: raw scores, scale in exp2, no sinks.
  {
    const gc::DeviceProblem P = host_problem(tp.p, nullptr);
    expect(!P.score_mod && P.sink_logits == nullptr && P.q_lengths == nullptr && P.alibi_slopes == nullptr &&
               P.scale_log2 == static_cast<float>(std::fabs(static_cast<double>(tp.p.scale)) * 1.4426950408889634),
           "device problem: no serving options, no score modifiers");
    const float slopes[1] = {0.5f};
    AttentionProblem with = tp.p;
    with.softcap = 3.0f;
    const gc::DeviceProblem Q = host_problem(with, nullptr);
    expect(Q.score_mod && Q.scale_log2 == gc::kLog2e && Q.score_scale == std::fabs(tp.p.scale), "device problem: softcap");
    with.softcap = 0.0f;
    with.alibi_slopes = slopes;
    expect(host_problem(with, nullptr).score_mod, "device problem: ALiBi");
    with.alibi_slopes = nullptr;
    with.sink_logits = slopes;
    expect(!host_problem(with, nullptr).score_mod, "device problem: sinks alone keep raw scores");
  }
  std::printf("schedule: checked\n");
}

// ---------------------------------------------------------------------------------------------------
// Cases shared by the emulated and the GPU runs.

struct Case {
  Spec spec;
  int force_splits = 0;
  bool force_rows = false;
  double tolerance = 1e-5;
};

Spec make(const std::string& name, int64_t b, int64_t h, int64_t kvh, int64_t s, int64_t kv, int64_t d) {
  Spec sp;
  sp.name = name;
  sp.batch = b;
  sp.heads = h;
  sp.kv_heads = kvh;
  sp.seq_len = s;
  sp.kv_seq_len = kv;
  sp.head_dim = d;
  sp.seed = std::hash<std::string>{}(name) & 0xffff;
  return sp;
}

std::vector<Case> emulated_cases() {
  std::vector<Case> cs;
  auto add = [&](Spec s, int splits = 0, bool rows = false) { cs.push_back(Case{std::move(s), splits, rows, 1e-5}); };
  add(make("full d16", 1, 2, 2, 37, 37, 16));
  {
    Spec s = make("causal kv>seq bshd", 1, 2, 1, 37, 70, 64);
    s.q_layout = s.kv_layout = s.out_layout = Layout::bshd;
    s.causal = true;
    add(s);
  }
  {
    Spec s = make("causal seq>kv (empty rows)", 2, 1, 1, 70, 37, 3);
    s.causal = true;
    add(s);
  }
  {
    Spec s = make("window+globals gqa", 1, 4, 2, 70, 70, 64);
    s.window_left = 5;
    s.window_right = 3;
    s.globals = {{0, 17, 69}};
    add(s);
  }
  {
    Spec s = make("sliding+sinks+kvlen padded", 2, 2, 1, 70, 70, 100);
    s.q_layout = Layout::bshd_padded;
    s.kv_layout = Layout::bhsd_padded;
    s.out_layout = Layout::bshd_padded;
    s.causal = true;
    s.window_left = 8;
    s.window_right = 0;
    s.globals = {{0, 1, 2, 3}, {5, 40}};
    s.kv_lengths = {70, 33};
    add(s);
  }
  {
    Spec s = make("d256 shared K/V buffer", 1, 2, 1, 40, 45, 256);
    s.causal = true;
    s.window_left = 9;
    s.window_right = 4;
    s.globals = {{2, 30}};
    add(s);
  }
  {
    Spec s = make("decode split", 1, 4, 1, 1, 300, 128);
    add(s, 5);
  }
  {
    Spec s = make("decode kvlen 0/1", 3, 2, 2, 3, 257, 1);
    s.kv_lengths = {0, 1, 257};
    s.out_layout = Layout::bhsd_padded;
    add(s);
  }
  {
    Spec s = make("head_dim 300 chunks", 1, 2, 1, 5, 40, 300);
    s.window_left = 4;
    s.window_right = 4;
    s.globals = {{1, 38}};
    add(s);
    s.name = "head_dim 300 chunks split";
    add(s, 3);
  }
  {
    Spec s = make("rows forced split", 1, 2, 1, 20, 50, 64);
    s.window_left = 3;
    s.window_right = 3;
    s.globals = {{10}};
    add(s, 3, true);
  }
  {
    Spec s = make("integer logits", 1, 1, 1, 33, 65, 16);
    s.values = Values::integers;
    add(s);
  }
  {
    Spec s = make("negative scale no lse", 1, 1, 1, 20, 20, 32);
    s.scale = -0.3f;
    s.with_lse = false;
    add(s);
  }
  {
    Spec s = make("seq 9 tile causal", 1, 1, 1, 9, 9, 32);
    s.causal = true;
    add(s);
  }
  {
    Spec s = make("many global rows", 1, 1, 1, 70, 70, 16);
    s.window_left = 0;
    s.window_right = 0;
    s.globals = {{0, 7, 14, 21, 28, 35, 42, 49, 56, 63}};
    add(s);
  }
  {
    Spec s = make("window past kv", 1, 1, 1, 50, 10, 16);
    s.window_left = 2;
    s.window_right = -1;
    s.globals = {{9}};
    add(s);
  }
  add(make("no keys at all (tiles)", 2, 2, 1, 20, 0, 8));
  add(make("no keys at all (rows)", 1, 2, 2, 2, 0, 8));
  add(make("257 full", 1, 1, 1, 257, 257, 64));
  return cs;
}

// The serving options (notes/serving-spec.md): q_lengths with the per-sequence alignment, padding
// rows, softcap, ALiBi, sinks, alone and together, on the tile pass (seq_len > 8), the row pass
// (decode, forced rows), key splits with their merge, head_dim in chunks, and the d256 tile whose K
// and V share a buffer. The padding query rows hold NaN (Spec::nan_padding_queries), so a padding
// row that is computed, or leaks into a real one, shows.
std::vector<Case> serving_cases() {
  std::vector<Case> cs;
  auto add = [&](Spec s, int splits = 0, bool rows = false, double tol = 1e-5) {
    cs.push_back(Case{std::move(s), splits, rows, tol});
  };
  const std::vector<float> slopes4 = {0.5f, 0.25f, 0.125f, 0.0625f};  // ALiBi's geometric slopes
  {
    // A decode batch: one new token per sequence after kv_length - 1 cached ones; item 2 is empty
    // (q_length 0) and item 3 has no keys yet.
    Spec s = make("serving: decode batch", 4, 4, 2, 1, 300, 64);
    s.causal = true;
    s.kv_lengths = {300, 17, 120, 0};
    s.q_lengths = {1, 1, 0, 1};
    add(s);
    s.name += " split";
    add(s, 4);
  }
  {
    // A decode batch padded to a longer seq_len: the row pass (max q_length <= 8), padding kernel.
    Spec s = make("serving: decode batch in seq_len 40", 3, 2, 2, 40, 64, 16);
    s.causal = true;
    s.kv_lengths = {64, 33, 2};
    s.q_lengths = {1, 8, 3};
    add(s);
  }
  {
    // Speculative decode: up to 4 new tokens per sequence, bottom-right aligned per sequence.
    Spec s = make("serving: multi-token decode window", 4, 2, 1, 4, 100, 32);
    s.causal = true;
    s.window_left = 16;
    s.window_right = 0;
    s.kv_lengths = {100, 50, 20, 3};
    s.q_lengths = {4, 2, 0, 3};
    add(s);
  }
  {
    // A right-padded prefill: each sequence's prompt is its q_length rows, its keys its kv_length.
    Spec s = make("serving: right-padded prefill causal", 3, 2, 1, 70, 70, 64);
    s.causal = true;
    s.q_lengths = {70, 33, 0};
    s.kv_lengths = {70, 33, 10};
    add(s);
    s.name += " rows";  // smaller: the emulation runs one block per row and head
    s.seq_len = s.kv_seq_len = 20;
    s.q_lengths = {20, 9, 0};
    s.kv_lengths = {20, 9, 10};
    add(s, 0, true);
  }
  {
    // Chunked prefill: q_length < kv_length (earlier chunks cached), windows and globals, padded layouts.
    Spec s = make("serving: chunked prefill window+globals", 2, 2, 2, 70, 90, 48);
    s.q_layout = s.out_layout = Layout::bshd_padded;
    s.kv_layout = Layout::bhsd_padded;
    s.causal = true;
    s.window_left = 9;
    s.window_right = 0;
    s.globals = {{0, 1, 60, 85}, {2, 40}};
    s.q_lengths = {65, 20};
    s.kv_lengths = {90, 45};
    add(s);
  }
  {
    // q_length > kv_length: the first rows sit before position 0 and see no key (causal).
    Spec s = make("serving: q_length > kv_length", 2, 1, 1, 40, 40, 16);
    s.causal = true;
    s.q_lengths = {30, 40};
    s.kv_lengths = {10, 40};
    add(s);
  }
  {
    Spec s = make("serving: q_lengths all 0 (tiles)", 2, 2, 1, 20, 30, 8);
    s.q_lengths = {0, 0};
    add(s);
    s = make("serving: q_lengths all 0 (rows)", 2, 2, 1, 2, 30, 8);
    s.q_lengths = {0, 0};
    add(s);
  }
  {
    // Integer logits in the hundreds: the softcap saturates many scores.
    Spec s = make("serving: softcap tiles int logits", 1, 2, 1, 70, 70, 16);
    s.values = Values::integers;
    s.softcap = 30.0f;
    add(s);
    s = make("serving: softcap rows", 2, 2, 2, 3, 257, 64);
    s.softcap = 0.5f;
    s.kv_lengths = {257, 40};
    add(s);
    s = make("serving: softcap negative scale", 1, 1, 1, 20, 20, 32);
    s.scale = -0.7f;
    s.softcap = 2.0f;
    add(s);
  }
  {
    Spec s = make("serving: alibi causal gqa", 1, 4, 2, 70, 90, 64);
    s.causal = true;
    s.alibi_slopes = slopes4;
    add(s);
    s = make("serving: alibi non-causal window+globals", 2, 4, 1, 70, 70, 32);
    s.window_left = 7;
    s.window_right = 3;
    s.globals = {{0, 17, 69}, {}};
    s.alibi_slopes = {0.5f, -0.25f, 0.0f, 2.0f};  // any finite slope
    add(s);
    s = make("serving: alibi head_dim 300 chunks split", 1, 2, 1, 5, 40, 300);
    s.window_left = 4;
    s.window_right = 4;
    s.globals = {{1, 38}};
    s.alibi_slopes = {0.3f, 0.05f};
    add(s, 3);
  }
  {
    // Sinks, with rows that see no key: causal rows before position 0, an item with kv_length 0.
    Spec s = make("serving: sinks tiles, rows that see nothing", 2, 4, 2, 70, 40, 64);
    s.causal = true;
    s.window_left = 8;
    s.window_right = 0;
    s.kv_lengths = {40, 0};
    s.sink_logits = {0.5f, -1.0f, 3.0f, 10.0f};
    add(s);
    s = make("serving: sinks decode split", 3, 2, 1, 1, 600, 128);
    s.kv_lengths = {600, 0, 5};
    s.sink_logits = {-2.0f, 1.5f};
    add(s, 5);
    s.name += " (auto)";
    add(s);
  }
  {
    // Everything at once, on each path.
    Spec s = make("serving: all at once tiles d100", 3, 4, 2, 70, 80, 100);
    s.q_layout = Layout::bshd_padded;
    s.kv_layout = Layout::bhsd_padded;
    s.out_layout = Layout::bhsd_padded;
    s.causal = true;
    s.window_left = 12;
    s.window_right = 0;
    s.globals = {{0, 3, 50}, {1}, {}};
    s.kv_lengths = {80, 37, 5};
    s.q_lengths = {61, 37, 9};
    s.softcap = 4.0f;
    s.alibi_slopes = slopes4;
    s.sink_logits = {1.0f, -3.0f, 0.0f, 6.0f};
    add(s);
    s.name = "serving: all at once rows split";  // smaller, as above
    s.batch = 2;
    s.seq_len = 12;
    s.kv_seq_len = 40;
    s.globals = {{0, 3, 35}, {1}};
    s.kv_lengths = {40, 9};
    s.q_lengths = {12, 5};
    add(s, 3, true);
    Spec t = make("serving: all at once d256 shared K/V buffer", 2, 2, 1, 40, 45, 256);
    t.window_left = 9;
    t.window_right = 4;
    t.globals = {{2, 30}, {44}};
    t.kv_lengths = {45, 30};
    t.q_lengths = {23, 40};
    t.softcap = 1.5f;
    t.alibi_slopes = {0.1f, 0.02f};
    t.sink_logits = {0.0f, 2.0f};
    add(t);
    Spec o = make("serving: all at once odd d3 s9", 2, 3, 1, 9, 37, 3);
    o.causal = true;
    o.kv_lengths = {37, 8};
    o.q_lengths = {9, 5};
    o.softcap = 1.0f;
    o.alibi_slopes = {0.2f, 0.7f, 1.3f};
    o.sink_logits = {-0.5f, 0.25f, 4.0f};
    add(o);
    o.name = "serving: all at once decode head_dim 300 split";
    o.seq_len = 2;
    o.head_dim = 300;
    o.q_lengths = {2, 1};
    add(o, 4);
  }
  return cs;
}

// Through the plugin only (the emulated runner reads float32 buffers): half inputs and outputs,
// whose padding rows the loader's narrowing must carry as zeros.
std::vector<Case> plugin_serving_cases() {
  std::vector<Case> cs;
  Spec s = make("serving: f16 -> bf16, q_lengths, sinks, alibi, softcap (tiles)", 2, 2, 1, 20, 30, 16);
  s.dtype = gla::DType::float16;
  s.out_dtype = gla::DType::bfloat16;
  s.causal = true;
  s.q_lengths = {20, 7};
  s.kv_lengths = {30, 7};
  s.softcap = 2.0f;
  s.alibi_slopes = {0.25f, 0.5f};
  s.sink_logits = {0.5f, -0.5f};
  cs.push_back(Case{s, 0, false, 0.0});
  s.name = "serving: bf16 -> f16, q_lengths, sinks (rows)";
  s.dtype = gla::DType::bfloat16;
  s.out_dtype = gla::DType::float16;
  s.seq_len = 2;
  s.q_lengths = {1, 0};
  s.softcap = 0.0f;
  s.alibi_slopes.clear();
  cs.push_back(Case{s, 0, false, 0.0});
  return cs;
}

std::vector<std::vector<int32_t>> globals_for(int64_t kv, std::initializer_list<int64_t> wanted) {
  std::vector<int32_t> g;
  for (int64_t x : wanted) {
    if (x >= 0 && x < kv) g.push_back(static_cast<int32_t>(x));
  }
  std::sort(g.begin(), g.end());
  g.erase(std::unique(g.begin(), g.end()), g.end());
  return {g};
}

std::vector<Case> gpu_cases() {
  std::vector<Case> cs = emulated_cases();
  const std::pair<int64_t, int64_t> sizes[] = {{1, 1},    {3, 3},    {37, 37}, {257, 257}, {37, 257},
                                               {257, 37}, {1, 257}, {3, 1000}, {9, 300}};
  const int64_t dims[] = {1, 3, 16, 64, 100, 128, 256, 300};
  const Layout layouts[] = {Layout::bhsd, Layout::bshd, Layout::bhsd_padded, Layout::bshd_padded};
  int n = 0;
  for (const auto& sz : sizes) {
    for (int64_t d : dims) {
      for (int variant = 0; variant < 3; ++variant, ++n) {
        const int mask = (n + variant) % 6;
        const int64_t s_len = sz.first, kv = sz.second;
        const int64_t heads = (n % 3 == 0) ? 4 : 2;
        const int64_t kv_heads = (n % 3 == 0) ? 1 : (n % 3 == 1 ? 2 : 1);
        Spec s = make("grid" + std::to_string(n), 2, heads, kv_heads, s_len, kv, d);
        s.q_layout = layouts[n % 4];
        s.kv_layout = layouts[(n / 4) % 4];
        s.out_layout = layouts[(n / 2) % 4];
        s.with_lse = n % 5 != 0;
        switch (mask) {
          case 0: s.name += " full"; break;
          case 1: s.name += " causal"; s.causal = true; break;
          case 2: s.name += " window(7,3)"; s.window_left = 7; s.window_right = 3; break;
          case 3:
            s.name += " sliding+sinks";
            s.causal = true;
            s.window_left = 16;
            s.window_right = 0;
            s.globals = globals_for(kv, {0, 1, 2, 3});
            break;
          case 4: {
            s.name += " window+globals+kvlen";
            s.window_left = 5;
            s.window_right = 5;
            auto g0 = globals_for(kv, {0, kv / 2, kv - 1});
            auto g1 = globals_for(kv, {1});
            s.globals = {g0[0], g1[0]};
            s.kv_lengths = {static_cast<int32_t>(kv), static_cast<int32_t>(std::max<int64_t>(1, kv / 3))};
            break;
          }
          default:
            s.name += " kvlen 0/1 causal";
            s.causal = true;
            s.kv_lengths = {0, static_cast<int32_t>(std::min<int64_t>(1, kv))};
            break;
        }
        // The serving options on part of the grid: one at a time, and every 11th case all of them.
        const bool all = n % 11 == 0;
        if (all || n % 5 == 1) {
          s.name += " qlen";
          s.q_lengths = {static_cast<int32_t>(s_len), static_cast<int32_t>(s_len / 2)};
        }
        if (all || n % 5 == 2) {
          s.name += " softcap";
          s.softcap = 2.5f;
        }
        if (all || n % 5 == 3) {
          s.name += " alibi";
          for (int64_t h = 0; h < heads; ++h) s.alibi_slopes.push_back(std::ldexp(1.0f, -static_cast<int>(h) - 1));
        }
        if (all || n % 5 == 4) {
          s.name += " sinks";
          for (int64_t h = 0; h < heads; ++h) s.sink_logits.push_back(static_cast<float>(h) - 1.5f);
        }
        cs.push_back(Case{s, 0, false, 1e-5});
      }
    }
  }
  return cs;
}

// ---------------------------------------------------------------------------------------------------
// Non-finite inputs: the IEEE rules of the README ("Guarantees", "Numbers") on every path of the
// kernels: the tile kernel at D 64 and at D 256 (K and V in one buffer), the row pass for global
// query rows, decode with its keys split, head_dim in chunks. The double reference does IEEE
// arithmetic (a NaN or +inf score makes its row's sum NaN; an infinity or a NaN in V reaches exactly
// the rows that weigh it; keys past kv_lengths are never read) except for a query row whose every
// score is NaN, which it takes for a row that sees nothing: those rows are set to NaN by hand.

struct Poison {
  std::function<void(TestProblem&)> edit;        // writes the non-finite inputs
  std::vector<std::array<int64_t, 3>> nan_rows;  // (b, h, i): query rows holding a NaN
};

struct NonFiniteCase {
  Case c;
  Poison poison;
  bool on_gpu = true;  // false: the same problem as the case before, only with forced splits
};

// Element (b, h, i, d) of q, k or v (h a kv head for k and v).
void poke(TestProblem& tp, char tensor, int64_t b, int64_t h, int64_t i, int64_t d, float value) {
  std::vector<float>& t = tensor == 'q' ? tp.q : tensor == 'k' ? tp.k : tp.v;
  const gla::Strides& st = tensor == 'q' ? tp.p.q_strides : tensor == 'k' ? tp.p.k_strides : tp.p.v_strides;
  t[static_cast<size_t>(b * st.batch + h * st.head + i * st.seq + d)] = value;
}

std::vector<NonFiniteCase> nonfinite_cases() {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<NonFiniteCase> cs;
  auto add = [&](Spec s, Poison poison, int splits = 0, bool on_gpu = true) {
    cs.push_back(NonFiniteCase{Case{std::move(s), splits, false, 1e-5}, std::move(poison), on_gpu});
  };
  {
    // Tiles of 64: rows 0..39 share key 40's tile but do not see it, and must stay finite.
    Spec s = make("non-finite: tile d64 causal gqa", 1, 2, 1, 70, 70, 64);
    s.causal = true;
    add(s, Poison{[=](TestProblem& tp) {
                    poke(tp, 'v', 0, 0, 40, 5, inf);   // rows >= 40, column 5: +inf
                    poke(tp, 'v', 0, 0, 45, 7, nan);   // rows >= 45, column 7: NaN
                    poke(tp, 'v', 0, 0, 66, 9, -inf);  // rows 66.., in the short last key tile
                    poke(tp, 'k', 0, 0, 68, 3, nan);   // rows 68, 69 all NaN
                    poke(tp, 'q', 0, 1, 20, 0, nan);   // row 20 of head 1 all NaN
                  },
                  {{0, 1, 20}}});
  }
  {
    Spec s = make("non-finite: tile d256 shared K/V buffer, window+globals", 1, 2, 1, 40, 45, 256);
    s.causal = true;
    s.window_left = 9;
    s.window_right = 4;
    s.globals = {{2, 30}};  // position 30 is query row 25, a global row
    add(s, Poison{[=](TestProblem& tp) {
                    poke(tp, 'v', 0, 0, 20, 100, inf);  // window rows 15..24 and global row 25
                    poke(tp, 'v', 0, 0, 30, 3, nan);    // a global key: rows 25..39
                    poke(tp, 'k', 0, 0, 10, 1, nan);    // rows 5..14 and row 25
                    poke(tp, 'q', 0, 0, 35, 0, nan);
                  },
                  {{0, 0, 35}}});
  }
  {
    // Enough keys that the plugin splits them on a GPU too (kMinKeysPerSplit); batch item 1 hides its
    // NaNs past kv_lengths.
    Spec s = make("non-finite: decode split, kv_lengths", 2, 4, 1, 1, 1100, 128);
    s.kv_lengths = {1100, 120};
    add(s,
        Poison{[=](TestProblem& tp) {
                 poke(tp, 'k', 0, 0, 700, 2, nan);  // item 0: every row NaN
                 poke(tp, 'v', 1, 0, 100, 3, inf);  // item 1: column 3 +inf
                 poke(tp, 'v', 1, 0, 150, 4, nan);  // padding
                 poke(tp, 'k', 1, 0, 500, 0, nan);  // padding
                 poke(tp, 'q', 1, 2, 0, 5, nan);
               },
               {{1, 2, 0}}},
        5);
  }
  {
    Spec s = make("non-finite: head_dim 300 in chunks, global rows", 1, 2, 2, 5, 40, 300);
    s.window_left = 4;
    s.window_right = 4;
    s.globals = {{1, 38}};  // position 38 is query row 3, which sees every key
    Poison poison{[=](TestProblem& tp) {
                    poke(tp, 'v', 0, 0, 20, 290, inf);  // row 3 of head 0, in the second chunk
                    poke(tp, 'v', 0, 1, 1, 0, -inf);    // a global key: every row of head 1, column 0
                    poke(tp, 'k', 0, 1, 10, 7, nan);    // row 3 of head 1 all NaN
                  },
                  {}};
    add(s, poison);
    s.name += " split";
    add(s, poison, 3, false);
  }
  {
    // A +inf score (every q element of dim 3 positive, k[30][3] = +inf) makes the rows that see key
    // 30 NaN, lse too; a NaN in V reaches only the rows that see key 50.
    Spec s = make("non-finite: +inf score, window+globals bshd", 1, 2, 1, 70, 70, 32);
    s.q_layout = s.kv_layout = s.out_layout = Layout::bshd;
    s.window_left = 5;
    s.window_right = 3;
    s.globals = {{0, 17}};
    add(s, Poison{[=](TestProblem& tp) {
                    for (int64_t h = 0; h < 2; ++h) {
                      for (int64_t i = 0; i < 70; ++i) {
                        const gla::Strides& st = tp.p.q_strides;
                        float& x = tp.q[static_cast<size_t>(h * st.head + i * st.seq + 3)];
                        x = std::fabs(x);
                      }
                    }
                    poke(tp, 'k', 0, 0, 30, 3, inf);
                    poke(tp, 'v', 0, 0, 50, 1, nan);
                  },
                  {}});
  }
  {
    // A -inf score weighs 0, but its key is still seen: with +inf or NaN in its V the column comes
    // out NaN (0 * inf), as in the reference and the CPU kernels. Unmasked: full tiles (and a short
    // one), then the same keys through the row pass.
    Poison poison{[=](TestProblem& tp) {
                    for (int64_t i = 0; i < tp.p.seq_len; ++i) {
                      float& x = tp.q[static_cast<size_t>(i * tp.p.q_strides.seq + 3)];
                      x = std::fabs(x);
                    }
                    poke(tp, 'k', 0, 0, 20, 3, -inf);
                    poke(tp, 'v', 0, 0, 20, 5, inf);
                    poke(tp, 'k', 0, 0, 66, 3, -inf);
                    poke(tp, 'v', 0, 0, 66, 6, nan);
                  },
                  {}};
    add(make("non-finite: -inf scores on non-finite V, tiles", 1, 1, 1, 70, 70, 32), poison);
    add(make("non-finite: -inf scores on non-finite V, rows", 1, 1, 1, 3, 70, 32), poison);
  }
  {
    // The softcap makes a +inf product a finite score (softcap * tanh(inf) = softcap): the rows that
    // see key 30 stay finite. A NaN query row stays NaN with sinks (out and lse), where the reference
    // takes an all-NaN row for one that sees nothing. Tiles, then rows with split keys.
    Poison poison{[=](TestProblem& tp) {
                    for (int64_t h = 0; h < tp.p.heads; ++h) {
                      for (int64_t i = 0; i < tp.p.seq_len; ++i) {
                        float& x = tp.q[static_cast<size_t>(h * tp.p.q_strides.head + i * tp.p.q_strides.seq + 3)];
                        x = std::fabs(x);
                      }
                    }
                    poke(tp, 'k', 0, 0, 30, 3, inf);
                    poke(tp, 'q', 0, 1, 1, 0, nan);
                  },
                  {{0, 1, 1}}};
    Spec s = make("non-finite: softcap caps +inf, sinks, alibi, q_lengths", 1, 2, 1, 70, 70, 32);
    s.causal = true;
    s.softcap = 5.0f;
    s.alibi_slopes = {0.05f, 0.5f};
    s.sink_logits = {1.0f, -1.0f};
    s.q_lengths = {60};
    s.kv_lengths = {65};
    add(s, poison);
    s.name = "non-finite: softcap caps +inf, sinks, decode rows";
    s.seq_len = 3;
    s.kv_seq_len = 300;
    s.q_lengths = {2};
    s.kv_lengths = {290};
    add(s, poison, 3, false);
    s.name += " (auto)";
    add(s, poison);
  }
  return cs;
}

// ---------------------------------------------------------------------------------------------------
// Runners

struct EmuLauncher {
  template <class... Params, class... Args>
  void launch(void (*kernel)(Params...), int64_t grid_x, int64_t grid_y, size_t smem, Args... args) {
    gla::simt::emulate_launch(grid_x, grid_y, gc::kThreads, smem, [&] { kernel(args...); });
  }
};

// What the plugin does, minus the copies: schedule, tasks, flags, scratch, launches.
std::string run_emulated(TestProblem& tp, const Case& c) {
  const AttentionProblem& p = tp.p;
  gc::ScheduleLimits lim;
  lim.sm_count = 8;
  lim.smem_per_block = 227 * 1024;
  lim.force_splits = c.force_splits;
  lim.force_rows = c.force_rows;
  gc::LaunchSchedule schedule;
  if (const char* why = gc::make_schedule(p, lim, &schedule)) return why;
  std::vector<gc::RowTask> tasks(static_cast<size_t>(schedule.tasks));
  gc::fill_tasks(p, schedule, tasks.data());
  const std::vector<uint8_t> flags = global_flags(p);
  std::vector<float> partial(static_cast<size_t>(schedule.partial_floats), std::nanf(""));
  const gc::DeviceProblem P = host_problem(p, &flags);
  EmuLauncher L;
  // The padding kernel last (its rows are disjoint from the passes'), so that the passes are seen to
  // leave every padding row alone: padding costs no work. Those rows hold a sentinel until then (not
  // NaN: what a pass would compute from the NaN padding queries is NaN too).
  gc::LaunchSchedule passes = schedule;
  passes.pad_rows = false;
  constexpr float kSentinel = -7.5e37f;
  auto for_padding = [&](const std::function<void(float& out, float* lse)>& f) {
    for (int64_t b = 0; b < p.batch; ++b) {
      for (int64_t h = 0; h < p.heads; ++h) {
        for (int64_t i = gc::host_q_length(p, b); i < p.seq_len; ++i) {
          float* o = static_cast<float*>(p.out) + b * p.out_strides.batch + h * p.out_strides.head + i * p.out_strides.seq;
          float* l = p.lse != nullptr ? p.lse + (b * p.heads + h) * p.seq_len + i : nullptr;
          for (int64_t t = 0; t < p.head_dim; ++t) f(o[t], t == 0 ? l : nullptr);
        }
      }
    }
  };
  for_padding([&](float& o, float* l) {
    o = kSentinel;
    if (l != nullptr) *l = kSentinel;
  });
  if (schedule.tile_dim != 0 && schedule.tasks > 0) {
    // The tile pass alone must leave the global query rows to the row pass: untouched (still NaN).
    gc::LaunchSchedule tiles_only = passes;
    tiles_only.tasks = 0;
    gc::launch_schedule(L, tiles_only, P, tasks.data(), partial.data());
    for (const gc::RowTask& t : tasks) {
      const float* o = static_cast<const float*>(p.out) + t.batch * p.out_strides.batch + t.query * p.out_strides.seq;
      for (int64_t h = 0; h < p.heads; ++h) {
        if (!std::isnan(o[h * p.out_strides.head]) ||
            (p.lse != nullptr && !std::isnan(p.lse[(t.batch * p.heads + h) * p.seq_len + t.query]))) {
          return "the tile pass wrote global query row " + std::to_string(t.query);
        }
      }
    }
  }
  gc::launch_schedule(L, passes, P, tasks.data(), partial.data());
  bool untouched = true;
  for_padding([&](float& o, float* l) { untouched = untouched && o == kSentinel && (l == nullptr || *l == kSentinel); });
  if (!untouched) return "a pass wrote a padding row";
  if (schedule.pad_rows) {
    L.launch(&gc::pad_rows_kernel, p.batch * p.heads, 1, 0, P);
  } else if (p.q_lengths != nullptr && gc::real_row_count(p) < p.batch * p.seq_len) {
    return "q_lengths leave padding rows but the schedule launches no padding kernel";
  }
  return "";
}

bool run_case(const Case& c, bool gpu, double* worst, const Poison* poison = nullptr) {
  TestProblem tp;
  gla_test::build(c.spec, tp);
  tp.poison_outputs();
  if (poison != nullptr) {
    poison->edit(tp);
    tp.snapshot_inputs();
  }
  std::string error;
  if (gpu) {
    const gla::Outcome o = gla::run_attention_cuda(tp.p);
    if (o.status != gla::Status::ok) error = o.message;
  } else {
    const gla::Outcome v = gla::validate_problem(tp.p);
    if (v.status != gla::Status::ok) error = std::string("invalid test problem: ") + v.message;
    if (error.empty()) error = run_emulated(tp, c);
  }
  const std::string label = gla_test::describe(c.spec) + (c.force_rows ? " rows" : "") +
                            (c.force_splits ? " splits=" + std::to_string(c.force_splits) : "");
  if (!error.empty()) {
    expect(false, label + ": " + error);
    return false;
  }
  gla_test::Reference ref = gla_test::compute_reference(tp);
  if (poison != nullptr) {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    for (const std::array<int64_t, 3>& r : poison->nan_rows) {
      const int64_t row = (r[0] * tp.p.heads + r[1]) * tp.p.seq_len + r[2];
      ref.lse[static_cast<size_t>(row)] = nan;
      for (int64_t t = 0; t < tp.p.head_dim; ++t) ref.out[static_cast<size_t>(row * tp.p.head_dim + t)] = nan;
    }
  }
  const gla_test::Check chk = gla_test::compare(tp, ref, c.tolerance);
  *worst = std::max(*worst, chk.out_rel_err);
  char errs[96];
  std::snprintf(errs, sizeof errs, " (out rel L2 %.2e, lse %.2e)", chk.out_rel_err, chk.lse_err);
  expect(chk.ok, label + ": " + chk.what + errs);
  return chk.ok;
}

// q_lengths equal to seq_len everywhere is the call without q_lengths, to the bit (the same
// alignment, no padding rows, no padding kernel).
void check_full_q_lengths_bitwise(bool gpu) {
  for (int64_t seq : {int64_t{70}, int64_t{2}}) {
    Spec s = make("full q_lengths", 2, 2, 1, seq, 90, 64);
    s.causal = true;
    s.window_left = 10;
    s.window_right = 0;
    s.globals = {{0, 45}, {3}};
    s.kv_lengths = {90, 50};
    TestProblem a, b;
    gla_test::build(s, a);
    s.q_lengths = {static_cast<int32_t>(seq), static_cast<int32_t>(seq)};
    gla_test::build(s, b);
    std::string error;
    for (TestProblem* tp : {&a, &b}) {
      tp->poison_outputs();
      if (gpu) {
        const gla::Outcome o = gla::run_attention_cuda(tp->p);
        if (o.status != gla::Status::ok) error = o.message;
      } else {
        error = run_emulated(*tp, Case{s, 0, false, 1e-5});
      }
    }
    expect(error.empty() && a.out.size() == b.out.size() && a.lse.size() == b.lse.size() &&
               std::memcmp(a.out.data(), b.out.data(), a.out.size() * sizeof(float)) == 0 &&
               std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * sizeof(float)) == 0,
           "q_lengths = seq_len (" + std::to_string(seq) + ") is bitwise the call without them " + error);
  }
}

int run_emulated_suite() {
  run_schedule_tests();
  run_launch_schedule_tests();
  double worst = 0.0;
  int n = 0;
  for (const Case& c : emulated_cases()) {
    run_case(c, false, &worst);
    ++n;
  }
  for (const NonFiniteCase& c : nonfinite_cases()) {
    run_case(c.c, false, &worst, &c.poison);
    ++n;
  }
  std::printf("emulated kernels: %d cases (%zu with NaN and infinities), worst out rel L2 %.2e\n", n,
              nonfinite_cases().size(), worst);
  worst = 0.0;
  n = 0;
  for (const Case& c : serving_cases()) {
    run_case(c, false, &worst);
    ++n;
  }
  check_full_q_lengths_bitwise(false);
  std::printf("emulated kernels, serving options: %d cases, worst out rel L2 %.2e\n", n, worst);
  std::printf("%d checks, %d failures\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}

// quick: the emulated cases only, few concurrent calls, a small timing problem (for the emulated
// plugin, which runs the kernels on the CPU).
int run_gpu_suite(int skip_code, bool quick) {
  const char* why = gla::cuda_unavailable_reason();
  if (why != nullptr) {
    std::printf("SKIPPED: %s\n", why);
    return skip_code;
  }
  std::printf("device: %s\n", gla::cuda_device_name());
  double worst = 0.0;
  int n = 0;
  for (const Case& c : quick ? emulated_cases() : gpu_cases()) {
    if (c.force_rows || c.force_splits) continue;  // the plugin schedules for itself
    run_case(c, true, &worst);
    ++n;
  }
  for (const NonFiniteCase& c : nonfinite_cases()) {
    if (!c.on_gpu) continue;  // the plugin schedules for itself
    run_case(c.c, true, &worst, &c.poison);
    ++n;
  }
  std::printf("gpu grid: %d cases, worst out rel L2 %.2e\n", n, worst);
  worst = 0.0;
  n = 0;
  for (const Case& c : serving_cases()) {
    if (c.force_rows || c.force_splits) continue;
    run_case(c, true, &worst);
    ++n;
  }
  for (const Case& c : plugin_serving_cases()) {
    run_case(c, true, &worst);
    ++n;
  }
  check_full_q_lengths_bitwise(true);
  std::printf("serving options: %d cases, worst out rel L2 %.2e\n", n, worst);

  // Concurrent callers: each thread its own problems, all at once, several rounds.
  {
    const std::vector<Case> cs = emulated_cases();
    std::atomic<int> bad{0};
    std::vector<std::thread> threads;
    const int n_threads = quick ? 3 : 6;
    const int rounds = quick ? 2 : 4;
    for (int t = 0; t < n_threads; ++t) {
      threads.emplace_back([&, t] {
        for (int round = 0; round < rounds; ++round) {
          const Case& c = cs[static_cast<size_t>(t * 3 + round) % cs.size()];
          if (c.force_rows || c.force_splits) continue;
          TestProblem tp;
          gla_test::build(c.spec, tp);
          tp.poison_outputs();
          const gla::Outcome o = gla::run_attention_cuda(tp.p);
          if (o.status != gla::Status::ok || !gla_test::compare(tp, gla_test::compute_reference(tp)).ok) ++bad;
        }
      });
    }
    for (std::thread& th : threads) th.join();
    expect(bad == 0, "concurrent callers: " + std::to_string(bad.load()) + " wrong results");
    std::printf("concurrency: %d threads x %d calls\n", n_threads, rounds);
  }

  // Timing is reported and adds up.
  {
    Spec s = quick ? make("timing", 1, 1, 1, 64, 64, 64) : make("timing", 1, 8, 8, 512, 512, 64);
    TestProblem tp;
    gla_test::build(s, tp);
    gla::CudaTiming timing;
    const gla::Outcome o = gla::run_attention_cuda(tp.p, &timing);
    expect(o.status == gla::Status::ok, std::string("timing call: ") + o.message);
    expect(timing.kernel_ms > 0.0 && timing.copy_in_ms > 0.0 && timing.total_ms >= timing.kernel_ms,
           "timing: kernel " + std::to_string(timing.kernel_ms) + " ms, copy in " + std::to_string(timing.copy_in_ms) +
               " ms, total " + std::to_string(timing.total_ms) + " ms");
    std::printf("timing: copy in %.3f ms, kernel %.3f ms, copy out %.3f ms, total %.3f ms\n", timing.copy_in_ms,
                timing.kernel_ms, timing.copy_out_ms, timing.total_ms);
  }

  // An invalid problem is refused by validation, not run.
  {
    Spec s = make("invalid", 1, 2, 2, 4, 4, 8);
    TestProblem tp;
    gla_test::build(s, tp);
    tp.p.kv_heads = 3;
    const gla::Outcome o = gla::run_attention_cuda(tp.p);
    expect(o.status == gla::Status::invalid_argument, "invalid problem is refused");
  }

  std::printf("%d checks, %d failures\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}

int run_loader_missing() {
  const char* why = gla::cuda_unavailable_reason();
  expect(why != nullptr, "a reason when the plugin is missing");
  if (why != nullptr) {
    std::printf("reason: %s\n", why);
    expect(std::strstr(why, "no such file") != nullptr || std::strstr(why, "not") != nullptr, "the reason says why");
  }
  expect(gla::cuda_unavailable_reason() == why, "the answer is cached");
  expect(gla::cuda_device_name() == nullptr, "no device name when unavailable");
  Spec s = make("unavailable", 1, 1, 1, 4, 4, 8);
  TestProblem tp;
  gla_test::build(s, tp);
  const gla::Outcome o = gla::run_attention_cuda(tp.p);
  expect(o.status == gla::Status::unavailable && o.message[0] != '\0', "run_attention_cuda returns unavailable");
  // Callers racing on the first load see one answer.
  std::vector<std::thread> threads;
  std::atomic<int> mismatched{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      if (gla::cuda_unavailable_reason() != why) ++mismatched;
    });
  }
  for (std::thread& th : threads) th.join();
  expect(mismatched == 0, "every thread sees the same reason");
  std::printf("%d checks, %d failures\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "emulated";
  int skip_code = 0;
  bool quick = false;
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--skip-code") == 0 && i + 1 < argc) skip_code = std::atoi(argv[++i]);
    else if (std::strcmp(argv[i], "--quick") == 0) quick = true;
  }
  std::setvbuf(stdout, nullptr, _IONBF, 0);  // progress shows even if a case crashes
  if (mode == "emulated") return run_emulated_suite();
  if (mode == "gpu") return run_gpu_suite(skip_code, quick);
  if (mode == "loader-missing") return run_loader_missing();
  std::fprintf(stderr, "usage: gla_cuda_tests emulated | gpu [--skip-code N] [--quick] | loader-missing\n");
  return 2;
}
