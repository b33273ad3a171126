// The boundary between the ISA-free driver (native/core) and the per-ISA kernels.
//
// Plain data and declarations only. This header is compiled into objects built with AVX2 / AVX-512
// flags: an inline function defined here (or in any header they share with generic code, such as
// visibility.h) could be emitted by such an object as a COMDAT copy, and the linker may pick that
// copy for generic callers too -- an illegal instruction on a CPU without the ISA. So the kernels
// receive the mask as per-row key bounds computed by the driver, not as visibility.h calls.
#pragma once

#include <cstdint>

#include "gla/dtype.h"

namespace gla {
namespace cpu {

// One query row group against one block of keys: S = Q K^T, mask, online-softmax update,
// acc += P V, with K and V read where the driver points: the caller's rows in place, a per-head
// packed copy, or (half precision) a block widened to float32; the bfloat16 products read their
// own packed pairs (attend_block_bf16).
// Row groups keep scores transposed, s[key][row], with vectors along rows: the softmax then runs
// down the key axis with plain vector max/add. Groups of at most few_rows rows (decode; row_major)
// keep s[row][key], compute scores as dot products along head_dim and vectorise the softmax along
// keys instead, so that a single row does not waste all but one lane.
struct BlockArgs {
  int rows;      // query rows in the group
  int rows_pad;  // rows rounded up to vector_width: row stride of qt and s, length of the row state
  int head_dim;
  int dim_pad;   // head_dim rounded up to vector_width: row stride of acc
  int n_keys;    // keys in this block, >= 1
  bool full;     // every (row, key) pair is visible: the kernel applies no mask at all
  // The decode layout (q_rows, s[row][key]; rows <= few_rows), else the row-group one (qt,
  // s[key][row]). The driver decides: few rows usually take the former, but when the heads'
  // bfloat16 pairs are packed they run as a row group on them (driver.cc, Call::row_major).
  bool row_major;

  const float* qt;           // [head_dim][rows_pad]: Q transposed, times scale, zero padded lanes
  const float* q_rows;       // [rows][dim_pad]: the same rows row-major, zero padded
  // Key c of this block starts at element key_rows[c] * k_row_stride of k (V likewise), elements
  // of kv_dtype: float32, except that groups of at most few_rows rows also read float16 and
  // bfloat16 rows in place (decode streams half the bytes); larger groups get float32 rows.
  const void* k;
  int64_t k_row_stride;
  const void* v;
  int64_t v_row_stride;
  DType kv_dtype;
  const int64_t* keys;       // [n_keys] absolute key indices (ascending): what the mask compares
  // [n_keys] where each key's K and V rows are: keys itself when K and V are read in place, 0..n-1
  // when the driver widened the block's rows into scratch (half-precision inputs).
  const int64_t* key_rows;
  // Decode: the K rows of the next block (row k_ahead[c] of k, as key_rows, c < k_ahead_rows),
  // to prefetch while this block accumulates; nullptr when there is none or it is not contiguous.
  const int64_t* k_ahead;
  int k_ahead_rows;

  // Partial blocks only: row r sees key j iff
  //   win_begin[r] <= j < win_end[r]  ||  (key_is_global[j] && j < allowed_end[r]).
  const int64_t* win_begin;
  const int64_t* win_end;
  const int64_t* allowed_end;
  const uint8_t* key_is_global;  // indexed by absolute key; nullptr when the batch has no globals
  float* mask_bounds;  // scratch [3][rows_pad]: the rule as key-index bounds per row (row groups)

  float* s;       // scratch: scores, then probabilities; [n_keys][rows_pad], or for few rows
                  // [rows][round_up(n_keys, vector_width)]
  float* alpha;   // scratch [rows_pad]: rescale factor of this block
  float* block_sum;  // scratch [rows_pad]: this block's sum of weights (fused softmax attempts)
  // In/out, one flag per unit (row group x heads): row-group blocks may try the fused softmax
  // (attention_block.cc, try_fused_block); the kernel clears it once a block of the unit needs the
  // exact path after all. nullptr: never try.
  bool* fused_softmax;

  // The bfloat16 products (precision bfloat16 on a CPU with AVX512_BF16; bf16_products.h has the
  // layouts), for attend_block_bf16 only: the operands as bfloat16 pairs in 32-bit words.
  const uint32_t* qt_pairs;  // [dim_pairs][rows_pad]
  const uint32_t* k_pairs;   // [n_keys][dim_pairs]
  const uint32_t* v_pairs;   // [(n_keys + 1) / 2][dim_pad]; V finite (the driver checks)
  uint32_t* p_pairs;         // scratch [(n_keys + 1) / 2][rows_pad]
  int dim_pairs;             // (head_dim + 1) / 2

  // Score transforms (problem.h), applied to the raw scores of a block in registers before its
  // mask, only when on: softcap > 0, and ALiBi when row_slope is set (a fused attempt then also
  // raises its shift by the bias's foreseeable rise, attention_block.cc alibi_rise); calls with
  // neither run the kernels as before.
  float softcap;               // 0 = off
  const float* row_slope;      // [rows_pad]: the ALiBi slope of each row's head (0 in padding lanes); nullptr = off
  const int64_t* row_position; // [rows]: each row's absolute position (ALiBi's p)
  float* alibi_rows;           // scratch [rows_pad]
  float* alibi_keys;           // scratch [round_up(n_keys, vector_width)]

  // Running online-softmax state: max and sum of exp(score - max) per row, unnormalised output.
  // Lanes rows..rows_pad-1 of max/sum hold harmless values for the zero padding rows.
  float* row_max;  // [rows_pad], -inf before any visible key
  float* row_sum;  // [rows_pad]
  float* acc;      // [rows][dim_pad]
};

struct CpuKernels {
  const char* name;
  int vector_width;  // floats per vector; rows_pad and dim_pad must be multiples of it
  int block_rows;    // preferred query rows per group and keys per block (head_dim <= 128)
  int block_keys;
  int few_rows;      // groups of at most this many rows take the row-major (decode) path
  void (*attend_block)(const BlockArgs& args);
  // The kernels' exp, exposed so that its accuracy can be tested: out[i] = exp(in[i]).
  void (*exp_array)(const float* in, float* out, int64_t n);
  // dst[r * dst_stride + t] = scale * element t of row rows[r] of src (rows row_stride elements
  // apart), t < dim, for a float16 or bfloat16 src: exact (every half value is a float32).
  void (*widen_rows)(DType dtype, const void* src, int64_t row_stride, const int64_t* rows, int n_rows, int dim,
                     float scale, float* dst, int64_t dst_stride);
  // dst[t] = src[t] rounded to nearest even in float16 or bfloat16 (NaN stays NaN), t < n.
  void (*narrow_row)(const float* src, int n, DType dtype, void* dst);

  // bfloat16 products: null unless compiled in and this CPU has AVX512_BF16 (dispatch clears them).
  // The kernel for row groups (more than few_rows rows) with the *_pairs operands of BlockArgs.
  void (*attend_block_bf16)(const BlockArgs& args);
  // qt_pairs from a unit's qt ([head_dim][rows_pad], padding lanes zero).
  void (*pack_q_pairs)(const float* qt, int rows_pad, int head_dim, uint32_t* qt_pairs);
  // k_pairs and v_pairs of a block: rows[c] (c < n_keys) of k and v, elements of dtype, rows
  // *_row_stride elements apart. Returns whether every V element is finite.
  bool (*pack_kv_pairs)(DType dtype, const void* k, int64_t k_row_stride, const void* v, int64_t v_row_stride,
                        const int64_t* rows, int n_keys, int head_dim, int dim_pad, uint32_t* k_pairs,
                        uint32_t* v_pairs);
};

// convert.cc, once per ISA (the kernel tables point at them).
#define GLA_DECLARE_CONVERSIONS                                                                            \
  void widen_rows(DType dtype, const void* src, int64_t row_stride, const int64_t* rows, int n_rows, int dim, \
                  float scale, float* dst, int64_t dst_stride);                                              \
  void narrow_row(const float* src, int n, DType dtype, void* dst);                                           \
  void pack_q_pairs(const float* qt, int rows_pad, int head_dim, uint32_t* qt_pairs);                         \
  bool pack_kv_pairs(DType dtype, const void* k, int64_t k_row_stride, const void* v, int64_t v_row_stride,   \
                     const int64_t* rows, int n_keys, int head_dim, int dim_pad, uint32_t* k_pairs,           \
                     uint32_t* v_pairs);

// Defined once per ISA object (attention_block.cc compiled with GLA_KERNEL_NS=<isa>).
namespace scalar { extern const CpuKernels kernels; GLA_DECLARE_CONVERSIONS }
namespace avx2 { extern const CpuKernels kernels; GLA_DECLARE_CONVERSIONS }
namespace avx512 { extern const CpuKernels kernels; GLA_DECLARE_CONVERSIONS }
namespace neon { extern const CpuKernels kernels; GLA_DECLARE_CONVERSIONS }

}  // namespace cpu
}  // namespace gla
