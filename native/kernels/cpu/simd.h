// Selects the SIMD vocabulary of the ISA this object is being compiled for. Every vocabulary
// defines, in gla::cpu::<isa>::simd, the same small set of names:
//   V, kWidth, kScoreKeys/kScoreVecs and kAccRows/kAccVecs (register blocking of the products),
//   kBlockRows/kBlockKeys (default tile for head_dim <= 128), kFewRows (decode path threshold),
//   zero, broadcast, load, store, load_partial, store_partial (explicit tails: n < kWidth lanes),
//   add, sub, mul, div, fmadd, fnmadd, abs, max, min, reduce_add, reduce_add_4, reduce_max, first, prefetch_l2 (a cache hint),
//   round_nearest, scale_pow2, select_less (the pieces the shared exp is built from);
//   for half precision, H (kWidth 16-bit lanes) with load_u16, load_u16_partial, store_u16,
//   store_u16_partial, widen_f16, widen_bf16 (exact), narrow_f16, narrow_bf16 (nearest even, NaN
//   kept quiet). The AVX-512 vocabulary alone adds the bfloat16 dot-product words (as_bf16,
//   bf16_pairs, bf16_run) behind GLA_KERNEL_BF16_DOT, used only by bf16_products.h / bf16_pack.cc.
// simd_exp.h then builds exp() from them once for all ISAs.
#pragma once

#if !defined(GLA_KERNEL_NS)
#error "kernel sources are compiled by cmake/cpu_kernels.cmake with GLA_KERNEL_NS=<isa>"
#endif

#if defined(GLA_KERNEL_ISA_AVX512)
#include "kernels/cpu/simd_avx512.h"
#elif defined(GLA_KERNEL_ISA_AVX2)
#include "kernels/cpu/simd_avx2.h"
#elif defined(GLA_KERNEL_ISA_NEON)
#include "kernels/cpu/simd_neon.h"
#elif defined(GLA_KERNEL_ISA_SCALAR)
#include "kernels/cpu/simd_scalar.h"
#else
#error "unknown kernel ISA"
#endif

#include "kernels/cpu/simd_exp.h"

// Fully unrolls the short register-tile loops. Without it GCC keeps a tile's accumulator array
// on the stack (zeroed there, spilled after the loop, reloaded for the store): about 5% of a
// 64-step score tile.
#if defined(__clang__)
#define GLA_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define GLA_UNROLL _Pragma("GCC unroll 32")
#else
#define GLA_UNROLL
#endif
