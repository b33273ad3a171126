// Non-finite and extreme inputs. The promise (README, "Guarantees"): a NaN or ±Infinity in q, k or v
// never crashes or hangs a call and is never written back into an input; values no query can see
// (padding past kvLengths) have no effect at all; and everything else is what IEEE-754 arithmetic
// gives for the float64 reference (test/reference.ts), namely:
//   - a NaN in q's row i makes row i all NaN and its lse NaN (if the row sees any key);
//   - a NaN in key j makes every row that sees j all NaN, lse NaN; rows that do not see j are untouched;
//   - a NaN (or +Infinity) in v[j][d] makes column d NaN (+Infinity) in exactly the rows that see j;
//   - a +Infinity score makes the row NaN (exp(∞ − ∞)), lse NaN;
//   - a −Infinity score gives its key weight 0, and a row whose every visible score is −Infinity is a
//     row that sees nothing: zeros and lse −Infinity (as the contract says for empty rows).
// Extreme but finite inputs (|x| up to 1e4, scale 1, so logits ~1e9) must give finite results.
// The same rules hold for float16 and bfloat16 inputs (every NaN pattern is a NaN, ±Inf patterns are
// ±Infinity, the largest finite float16 65504 in q and k gives logits ~1e10), at either precision,
// with a float32 or a half out; and on cuda through the emulated plugin where it is built.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MODES, type Mode, attention } from '../helpers/call';
import type { Kind } from '../helpers/cases';
import { type HalfDType, halfValue, halfValues, toHalfBits } from '../helpers/half-bits';
import { BACKENDS, type Backend } from '../helpers/package';
import { type ReferenceOptions, type ReferenceResult, referenceAttention } from '../reference';
import {
  type DType, EMULATED_CUDA_PLUGIN, FIXTURES, HALF_DTYPES, PRECISION_TOLERANCE, type Precision, type Problem, changedOutside,
  base64Of, bytesOf, expectedResultName, guard, ieeeMismatches, makeProblem, precisionMismatches, reference, runNode, tensorValues,
  typedArrayName, withTimeout,
} from './support';

function expectNone(mismatches: string[], what: string): void {
  if (mismatches.length > 0) expect.fail(`${what}: ${mismatches.join('; ')}`);
}

const SHAPES: Record<Kind, ReferenceOptions> = {
  // 80 positions span several query and key tiles of every backend, so that a poisoned key sits in a
  // tile that some rows see partly and others not at all.
  full: { batch: 2, heads: 2, kvHeads: 1, seqLen: 80, kvSeqLen: 80, headDim: 16, causal: true },
  localGlobal: { batch: 2, heads: 2, kvHeads: 1, seqLen: 80, kvSeqLen: 80, headDim: 16, window: [4, 4], globalTokens: [0] },
};
const KINDS: Kind[] = ['full', 'localGlobal'];
const POISONS = [NaN, Infinity, -Infinity];

/** Element index of (b, kv head 0, position j, d) in a bhsd tensor with one kv head. */
const kvIndex = (o: ReferenceOptions, b: number, j: number, d: number): number => ((b * (o.kvHeads ?? o.heads)) * (o.kvSeqLen ?? o.seqLen) + j) * o.headDim + d;
const qIndex = (o: ReferenceOptions, b: number, h: number, i: number, d: number): number => ((b * o.heads + h) * o.seqLen + i) * o.headDim + d;

// Problems shared by the in-process suites and the cuda run in a child process (at the end).
const TENSORS = ['q', 'k', 'v'] as const;
type Tensor = (typeof TENSORS)[number];

/** makeProblem with every 97th element of one tensor `poison`. */
function poisonedEverywhere(kind: Kind, tensor: Tensor, poison: number): Problem {
  const p = makeProblem(kind, SHAPES[kind], 11);
  const target = p[tensor];
  for (let i = 0; i < target.length; i += 97) target[i] = poison;
  return p;
}

/** Sets every key and value past each item's kvLengths (the padding) to `poison`. */
function poisonPadding(p: Problem, poison: number): void {
  const options = p.options;
  const lengths = options.kvLengths ?? [];
  for (let b = 0; b < options.batch; b++) {
    for (let j = lengths[b]; j < (options.kvSeqLen ?? options.seqLen); j++) {
      for (let d = 0; d < options.headDim; d++) {
        p.k[kvIndex(options, b, j, d)] = poison;
        p.v[kvIndex(options, b, j, d)] = poison;
      }
    }
  }
}

describe.each(BACKENDS)('non-finite inputs on the %s backend', (backend) => {
  it.each(MODES)('%s: NaN/±Infinity anywhere in q, k or v never crashes, hangs or writes an input', async (mode) => {
    for (const kind of KINDS) {
      for (const poison of POISONS) {
        for (const tensor of TENSORS) {
          const p = poisonedEverywhere(kind, tensor, poison);
          const guards = [guard('q', p.q), guard('k', p.k), guard('v', p.v)];
          const lse = new Float32Array(p.options.batch * p.options.heads * p.options.seqLen);
          const out = await withTimeout(
            attention(kind, mode, p.q, p.k, p.v, { ...p.options, lse, backend }), 20_000, `${kind} ${tensor}=${poison}`,
          );
          expect(out.length).toBe(p.q.length);
          for (const g of guards) expect(changedOutside(g)).toBeNull();
        }
      }
    }
  });

  it('non-finite keys and values past kvLengths (padding) change nothing', async () => {
    for (const kind of KINDS) {
      for (const poison of POISONS) {
        const options = { ...SHAPES[kind], kvLengths: [37, 1] };
        const p = makeProblem(kind, options, 12);
        poisonPadding(p, poison);
        const want = reference(p);
        for (const mode of MODES) {
          const lse = new Float32Array(2 * 2 * 80);
          const out = await attention(kind, mode, p.q, p.k, p.v, { ...options, lse, backend });
          expectNone(ieeeMismatches(out, want.out, 16, 1e-5), `${kind} ${mode} padding=${poison}`);
          expectNone(ieeeMismatches(lse, want.lse, 1, 1e-5, 'lse', 1), `${kind} ${mode} padding=${poison}`);
        }
      }
    }
  });
});

interface Poisoning {
  name: string;
  poison: (o: ReferenceOptions, q: Float32Array, k: Float32Array, v: Float32Array) => void;
}

// Key 50 of batch item 1: under `causal` rows 0..49 do not see it; under window [4, 4] only rows
// 46..54 (and the global row 0) do. So each poisoning has rows that must stay clean.
const J = 50;
const POISONINGS: Poisoning[] = [
  { name: 'a NaN in one query row', poison: (o, q) => { q[qIndex(o, 1, 1, 60, 3)] = NaN; } },
  { name: 'a NaN in one key', poison: (o, _q, k) => { k[kvIndex(o, 1, J, 3)] = NaN; } },
  { name: 'a NaN in one value', poison: (o, _q, _k, v) => { v[kvIndex(o, 1, J, 3)] = NaN; } },
  { name: 'a +Infinity in one value', poison: (o, _q, _k, v) => { v[kvIndex(o, 1, J, 3)] = Infinity; } },
  {
    name: 'a +Infinity score (key component +Infinity, every query component there positive)',
    poison: (o, q, k) => {
      for (let h = 0; h < o.heads; h++) for (let i = 0; i < o.seqLen; i++) q[qIndex(o, 1, h, i, 3)] = Math.abs(q[qIndex(o, 1, h, i, 3)]);
      k[kvIndex(o, 1, J, 3)] = Infinity;
    },
  },
  {
    name: 'a −Infinity score for one key (weight 0)',
    poison: (o, q, k) => {
      for (let h = 0; h < o.heads; h++) for (let i = 0; i < o.seqLen; i++) q[qIndex(o, 1, h, i, 3)] = Math.abs(q[qIndex(o, 1, h, i, 3)]);
      k[kvIndex(o, 1, J, 3)] = -Infinity;
    },
  },
  {
    name: 'every score of one query row −Infinity (a row that sees nothing)',
    poison: (o, q, k) => {
      for (let j = 0; j < (o.kvSeqLen ?? o.seqLen); j++) k[kvIndex(o, 1, j, 3)] = Math.abs(k[kvIndex(o, 1, j, 3)]);
      q[qIndex(o, 1, 0, 60, 3)] = -Infinity;
    },
  },
];

// Found by this suite: each entry is a (poisoning, kind) whose result on some backends departs from the
// IEEE semantics above. Kept out of the default run until fixed; delete an entry to enable its test.
// (Empty: every backend follows the rules today.)
const KNOWN_BUGS: Array<{ poisoning: string; kinds: Kind[]; backends: string[]; reason: string }> = [];

function knownBug(poisoning: string, kind: Kind, backend: Backend): string {
  return KNOWN_BUGS.find((b) => b.poisoning === poisoning && b.kinds.includes(kind) && b.backends.includes(backend))?.reason ?? '';
}

describe.each(BACKENDS)('NaN and Infinity propagate as IEEE arithmetic does, on the %s backend', (backend) => {
  for (const kind of KINDS) {
    for (const { name, poison } of POISONINGS) {
      const bug = knownBug(name, kind, backend);
      it.skipIf(bug)(`${kind}: ${name}${bug ? ` — skipped, known bug: ${bug}` : ''}`, async () => {
        const p = makeProblem(kind, SHAPES[kind], 13);
        poison(p.options, p.q, p.k, p.v);
        const want = reference(p);
        for (const mode of MODES) {
          const lse = new Float32Array(2 * 2 * 80);
          const out = await withTimeout(attention(kind, mode, p.q, p.k, p.v, { ...p.options, lse, backend }), 20_000, name);
          expectNone(ieeeMismatches(out, want.out, 16, 1e-4), `${mode}`);
          expectNone(ieeeMismatches(lse, want.lse, 1, 1e-4, 'lse', 1), `${mode}`);
        }
      });
    }
  }
});

// Extreme but finite inputs: head dims 64 and 256 (cuda's tile kernel at both its sizes), a causal
// kvSeqLen > seqLen, and a local-global mask with global rows (cuda's row pass).
const EXTREME_SHAPES: Array<[Kind, ReferenceOptions]> = [
  ['full', { batch: 1, heads: 2, seqLen: 70, headDim: 64, scale: 1 }],
  ['full', { batch: 1, heads: 1, seqLen: 33, kvSeqLen: 90, headDim: 256, scale: 1, causal: true }],
  ['localGlobal', { batch: 2, heads: 2, kvHeads: 1, seqLen: 90, headDim: 32, scale: 1, window: [5, 5], globalTokens: [3, 80] }],
];

/** |x| up to 1e4 in q, k and v, scale 1: logits ~1e9. */
function extremeProblem(kind: Kind, options: ReferenceOptions): Problem {
  const p = makeProblem(kind, options, 14, 1e4);
  for (let i = 0; i < p.v.length; i++) p.v[i] *= 1e4;
  return p;
}

/** q and k up to the largest finite float16 (bfloat16: the nearest below it), v up to ~1e4, exact in `dtype`. */
function extremeHalfProblem(kind: Kind, options: ReferenceOptions, s: number, dtype: HalfDType): Problem {
  const max = dtype === 'float16' ? 0x7bff : 0x477f; // 65504; bfloat16's nearest below it, 65280
  const p = halfProblem(kind, options, 15, dtype, 65504);
  for (let i = s; i < p.q.length; i += 7) p.q[i] = (i % 2 === 0 ? 1 : -1) * halfValue(dtype, max);
  for (let i = s; i < p.k.length; i += 5) p.k[i] = (i % 3 === 0 ? -1 : 1) * halfValue(dtype, max);
  for (let i = 0; i < p.v.length; i++) p.v[i] = halfValue(dtype, toHalfBits(dtype, Float32Array.of(p.v[i] * 1e4))[0]);
  return p;
}

/**
 * Finite wherever the reference is, never outside the values' range (a softmax-weighted mean of
 * them, `slack` allowing for a rounding), and lse finite within lseRelative·|ref| + lseAbsolute.
 */
function expectExtreme(
  what: string, p: Problem, want: ReferenceResult, out: Float32Array, lse: Float32Array, slack: number, lseRelative: number, lseAbsolute: number,
): void {
  let vMax = 0;
  for (const x of p.v) vMax = Math.max(vMax, Math.abs(x));
  for (let i = 0; i < out.length; i++) {
    if (!Number.isFinite(out[i]) && Number.isFinite(want.out[i])) expect.fail(`${what}: out[${i}] = ${out[i]}, reference ${want.out[i]}`);
    if (Math.abs(out[i]) > vMax * slack) expect.fail(`${what}: out[${i}] = ${out[i]} is outside ±${vMax}`);
  }
  for (let r = 0; r < lse.length; r++) {
    const ok = Number.isFinite(lse[r]) && Math.abs(lse[r] - want.lse[r]) <= lseRelative * Math.abs(want.lse[r]) + lseAbsolute;
    if (!ok) expect.fail(`${what}: lse[${r}] = ${lse[r]}, reference ${want.lse[r]}`);
  }
}

describe.each(BACKENDS)('extreme but finite inputs on the %s backend', (backend) => {
  it.each(MODES)('%s: |x| up to 1e4 with scale 1 (logits ~1e9) give finite outputs, each a mix of the values', async (mode) => {
    for (const [kind, options] of EXTREME_SHAPES) {
      const p = extremeProblem(kind, options);
      const want = reference(p);
      expect(want.maxAbsScore).toBeGreaterThan(1e7);
      const lse = new Float32Array(options.batch * options.heads * options.seqLen);
      const out = await attention(kind, mode, p.q, p.k, p.v, { ...options, lse, backend });
      expectExtreme(kind, p, want, out, lse, 1 + 1e-6, 1e-5, 1e-3 * want.maxAbsScore * 1e-3);
    }
  });
});

// --- float16 and bfloat16 -----------------------------------------------------------------------------

// Quiet, signalling (payload 1), negative and all-ones NaNs: each must act as a NaN.
const NAN_BITS: Record<HalfDType, number[]> = { float16: [0x7e00, 0x7c01, 0xfe00, 0x7fff], bfloat16: [0x7fc0, 0x7f81, 0xffc0, 0x7fff] };
const INF_BITS: Record<HalfDType, { pos: number; neg: number }> = { float16: { pos: 0x7c00, neg: 0xfc00 }, bfloat16: { pos: 0x7f80, neg: 0xff80 } };

/** The bits of values a half type holds exactly (makeProblem's values truncated, then poisoned), a NaN as `nan`. */
function halfBitsOf(dtype: HalfDType, values: Float32Array, nan: number): Uint16Array {
  const bits = toHalfBits(dtype, values);
  for (let i = 0; i < values.length; i++) {
    const x = values[i];
    if (Number.isNaN(x)) bits[i] = nan;
    else if (x === Infinity) bits[i] = INF_BITS[dtype].pos;
    else if (x === -Infinity) bits[i] = INF_BITS[dtype].neg;
    if (!Object.is(halfValue(dtype, bits[i]), x) && !Number.isNaN(x)) throw new Error(`test bug: ${x} is not a ${dtype}`);
  }
  return bits;
}

/** makeProblem's inputs rounded to values of `dtype` (the problem holds their exact float32 values). */
function halfProblem(kind: Kind, options: ReferenceOptions, seed: number, dtype: HalfDType, magnitude = 1): Problem {
  const p = makeProblem(kind, options, seed, magnitude);
  const exact = (x: Float32Array) => halfValues(dtype, toHalfBits(dtype, x));
  return { ...p, q: exact(p.q), k: exact(p.k), v: exact(p.v) };
}

/** Elementwise tolerance (relative to the row's largest value, as ieeeMismatches takes it): the
 *  precision's, plus a half out's one rounding (half an ulp, relative, with a margin). */
function elementTolerance(precision: Precision, outDtype: DType): number {
  const rounding = outDtype === 'float16' ? 2 ** -11 : outDtype === 'bfloat16' ? 2 ** -8 : 0;
  return PRECISION_TOLERANCE[precision] + rounding;
}

/** One call with half inputs; returns the values of its out (decoded when half) and its lse. */
async function halfCall(
  kind: Kind, mode: Mode, dtype: HalfDType, bits: { q: Uint16Array; k: Uint16Array; v: Uint16Array }, options: ReferenceOptions,
  extra: { backend: Backend; precision: Precision; outDtype: DType }, what: string,
): Promise<{ out: Float32Array; lse: Float32Array }> {
  const lse = new Float32Array(options.batch * options.heads * options.seqLen).fill(NaN);
  const result = await withTimeout(attention(kind, mode, bits.q, bits.k, bits.v, { ...options, dtype, lse, ...extra }), 20_000, what);
  expect(typedArrayName(result), what).toBe(expectedResultName(extra.outDtype));
  return { out: tensorValues(extra.outDtype, result), lse };
}

/** precision × mode × outDtype, in pairs: every value of each meets every value of the others once. */
const COMBOS = (dtype: HalfDType): Array<{ precision: Precision; mode: Mode; outDtype: DType }> => [
  { precision: 'float32', mode: 'sync', outDtype: 'float32' },
  { precision: 'float32', mode: 'async', outDtype: dtype },
  { precision: 'bfloat16', mode: 'sync', outDtype: dtype },
  { precision: 'bfloat16', mode: 'async', outDtype: 'float32' },
];

describe.each(BACKENDS)('float16 and bfloat16 NaN and ±Infinity patterns on the %s backend', (backend) => {
  it.each(MODES)('%s: a NaN or ±Inf pattern anywhere in q, k or v never crashes, hangs or writes an input', async (mode) => {
    for (const kind of KINDS) {
      for (const dtype of HALF_DTYPES) {
        const patterns = [...NAN_BITS[dtype], INF_BITS[dtype].pos, INF_BITS[dtype].neg];
        for (const [n, pattern] of patterns.entries()) {
          // Each pattern in one tensor per mode, a different one in the other mode.
          const tensor = (['q', 'k', 'v'] as const)[(n + MODES.indexOf(mode)) % 3];
          const p = halfProblem(kind, SHAPES[kind], 11, dtype);
          const bits = { q: toHalfBits(dtype, p.q), k: toHalfBits(dtype, p.k), v: toHalfBits(dtype, p.v) };
          for (let i = n; i < bits[tensor].length; i += 97) bits[tensor][i] = pattern;
          const guards = [guard('q', bits.q), guard('k', bits.k), guard('v', bits.v)];
          const precision: Precision = n % 2 === 0 ? 'float32' : 'bfloat16';
          const outDtype: DType = tensor === 'v' ? 'float32' : dtype;
          const { out } = await halfCall(kind, mode, dtype, bits, p.options, { backend, precision, outDtype }, `${kind} ${dtype} ${tensor}=${pattern.toString(16)}`);
          expect(out.length).toBe(p.q.length);
          for (const g of guards) expect(changedOutside(g)).toBeNull();
        }
      }
    }
  });

  it('NaN and ±Inf patterns past kvLengths (padding) change nothing; an item with kvLengths 0 is zeros and lse −Infinity', async () => {
    for (const kind of KINDS) {
      for (const dtype of HALF_DTYPES) {
        for (const [n, poison] of POISONS.entries()) {
          const options = { ...SHAPES[kind], kvLengths: [37, 0] };
          const p = halfProblem(kind, options, 12, dtype);
          poisonPadding(p, poison);
          const nan = NAN_BITS[dtype][n];
          const bits = { q: halfBitsOf(dtype, p.q, nan), k: halfBitsOf(dtype, p.k, nan), v: halfBitsOf(dtype, p.v, nan) };
          const want = reference(p);
          for (let r = 2 * 80; r < 4 * 80; r++) expect(want.lse[r]).toBe(-Infinity);
          for (const { precision, mode, outDtype } of COMBOS(dtype)) {
            const what = `${kind} ${dtype} padding=${poison} precision ${precision} ${mode} → ${outDtype}`;
            const { out, lse } = await halfCall(kind, mode, dtype, bits, options, { backend, precision, outDtype }, what);
            expectNone(ieeeMismatches(out, want.out, 16, elementTolerance(precision, outDtype)), what);
            expectNone(ieeeMismatches(lse, want.lse, 1, PRECISION_TOLERANCE[precision], 'lse', 1), what);
            // Batch item 1 (the second half of out, bhsd) sees no key: exact zeros, whatever its padding holds.
            for (let i = out.length / 2; i < out.length; i++) if (out[i] !== 0) expect.fail(`${what}: out[${i}] = ${out[i]} in an item that sees nothing`);
          }
        }
      }
    }
  });
});

describe.each(BACKENDS)('float16 and bfloat16 NaN and Infinity propagate as IEEE arithmetic does, on the %s backend', (backend) => {
  for (const kind of KINDS) {
    for (const dtype of HALF_DTYPES) {
      for (const [index, { name, poison }] of POISONINGS.entries()) {
        const bug = knownBug(name, kind, backend);
        it.skipIf(bug)(`${kind}, ${dtype}: ${name}${bug ? ` — skipped, known bug: ${bug}` : ''}`, async () => {
          const p = halfProblem(kind, SHAPES[kind], 13, dtype);
          poison(p.options, p.q, p.k, p.v);
          const want = reference(p);
          for (const [c, { precision, mode, outDtype }] of COMBOS(dtype).entries()) {
            const nan = NAN_BITS[dtype][(index + c) % NAN_BITS[dtype].length];
            const bits = { q: halfBitsOf(dtype, p.q, nan), k: halfBitsOf(dtype, p.k, nan), v: halfBitsOf(dtype, p.v, nan) };
            const what = `precision ${precision} ${mode} → ${outDtype}, NaN 0x${nan.toString(16)}`;
            const { out, lse } = await halfCall(kind, mode, dtype, bits, p.options, { backend, precision, outDtype }, `${name}: ${what}`);
            expectNone(ieeeMismatches(out, want.out, 16, elementTolerance(precision, outDtype)), what);
            expectNone(ieeeMismatches(lse, want.lse, 1, PRECISION_TOLERANCE[precision], 'lse', 1), what);
          }
        });
      }
    }
  }
});

/** expectExtreme's bounds for a half call: one rounding of the out, lse at the precision's tolerance. */
function expectExtremeHalf(what: string, p: Problem, want: ReferenceResult, out: Float32Array, lse: Float32Array, precision: Precision, outDtype: DType): void {
  const relative = precision === 'float32' ? 1e-5 : PRECISION_TOLERANCE.bfloat16;
  expectExtreme(what, p, want, out, lse, 1 + elementTolerance(precision, outDtype), relative, relative * want.maxAbsScore * 1e-1);
}

describe.each(BACKENDS)('extreme but finite half inputs on the %s backend', (backend) => {
  it.each(HALF_DTYPES)('%s: q and k up to 65504, the largest finite float16 (logits ~1e10), give finite outputs, each a mix of the values, at both precisions', async (dtype) => {
    for (const [s, [kind, options]] of EXTREME_SHAPES.entries()) {
      const p = extremeHalfProblem(kind, options, s, dtype);
      const want = reference(p);
      expect(want.maxAbsScore).toBeGreaterThan(1e9);
      const bits = { q: toHalfBits(dtype, p.q), k: toHalfBits(dtype, p.k), v: toHalfBits(dtype, p.v) };
      for (const { precision, mode, outDtype } of COMBOS(dtype)) {
        const what = `${kind} #${s} precision ${precision} ${mode} → ${outDtype}`;
        const { out, lse } = await halfCall(kind, mode, dtype, bits, options, { backend, precision, outDtype }, what);
        expectExtremeHalf(what, p, want, out, lse, precision, outDtype);
      }
    }
  });
});

// --- float16 and bfloat16 on cuda ---------------------------------------------------------------------
// The cuda backend in a process of its own (fixtures/half-cuda.cjs): the addon loads the plugin
// GLA_CUDA_PLUGIN names at first use, so the emulated one (the real kernels compiled for the CPU)
// can stand in for a GPU here. The plugin computes in float32 and the loader widens half inputs and
// narrows a half out around it, so precision 'bfloat16' is float32 there too (its backendReport
// says bfloat16Products: false) and is held to float32's tolerance.

// The plugin is loaded by the addon: without one (only the js backend here) there is no cuda either.
const ADDON_BUILT = BACKENDS.some((b) => b !== 'js');
const CUDA_ENV: NodeJS.ProcessEnv | null = BACKENDS.includes('cuda')
  ? {}
  : EMULATED_CUDA_PLUGIN !== null && ADDON_BUILT ? { GLA_CUDA_PLUGIN: EMULATED_CUDA_PLUGIN } : null;
const CUDA_SKIP = CUDA_ENV !== null
  ? ''
  : !ADDON_BUILT
    ? ' — skipped: the native addon is not built, so no plugin can load'
    : ' — skipped: no GPU here and the emulated plugin is not built (cmake --build build-tests builds build-tests/libgla_cuda_emulated.so)';

const CUDA_CASES: Array<{ name: string; kind: Kind; dtype: HalfDType; precision?: Precision; options: ReferenceOptions }> = [
  {
    name: 'float16, full, GQA 4/2, causal seqLen 37 < kvSeqLen 45, headDim 17', kind: 'full', dtype: 'float16',
    options: { batch: 2, heads: 4, kvHeads: 2, seqLen: 37, kvSeqLen: 45, headDim: 17, causal: true },
  },
  {
    name: 'bfloat16 (precision bfloat16 by default), local-global, MQA, bshd, causal window [3, 5], globals', kind: 'localGlobal', dtype: 'bfloat16',
    options: { batch: 1, heads: 4, kvHeads: 1, seqLen: 40, headDim: 32, layout: 'bshd', causal: true, window: [3, 5], globalTokens: [0, 20] },
  },
  {
    name: 'bfloat16, precision float32, full, bshd, GQA 4/2, kvLengths [0, 30] (an item that sees nothing)', kind: 'full', dtype: 'bfloat16', precision: 'float32',
    options: { batch: 2, heads: 4, kvHeads: 2, seqLen: 30, headDim: 16, layout: 'bshd', kvLengths: [0, 30] },
  },
  {
    name: 'float16, precision bfloat16, local-global, window 7, per-batch globals', kind: 'localGlobal', dtype: 'float16', precision: 'bfloat16',
    options: { batch: 2, heads: 2, seqLen: 33, headDim: 24, window: 7, globalTokens: [[1], [5, 32]] },
  },
];

interface CudaCall {
  name: string;
  mode: Mode;
  outDtype: DType;
  givenOut: boolean;
  resultType?: string;
  returnedOut?: boolean;
  out?: number[];
  lse?: number[];
  error?: string;
  inputsUntouched: boolean;
}

describe('float16 and bfloat16 on cuda (through the emulated plugin where there is no GPU)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gla-half-cuda-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it.skipIf(CUDA_ENV === null)(`sync and async, half and float32 out, against the float64 reference of the decoded inputs${CUDA_SKIP}`, async () => {
    const cases = CUDA_CASES.map((c, index) => {
      const p = halfProblem(c.kind, c.options, 400 + index, c.dtype);
      const bits = { q: toHalfBits(c.dtype, p.q), k: toHalfBits(c.dtype, p.k), v: toHalfBits(c.dtype, p.v) };
      // Each launch of the emulated plugin costs ~0.2 s whatever its size, so two calls per case: sync
      // and async, one with a float32 out and one with a half out, given or allocated by turns.
      const calls = [
        { mode: 'sync', outDtype: index % 2 === 0 ? 'float32' : c.dtype, givenOut: index % 4 < 2 },
        { mode: 'async', outDtype: index % 2 === 0 ? c.dtype : 'float32', givenOut: index % 4 >= 2 },
      ];
      return { ...c, index, calls, bits, want: referenceAttention(p.q, p.k, p.v, c.options) };
    });
    const file = path.join(dir, 'problems.json');
    fs.writeFileSync(file, JSON.stringify(cases.map(({ want: _want, bits, ...c }) => ({ ...c, q: Array.from(bits.q), k: Array.from(bits.k), v: Array.from(bits.v) }))));
    const r = await runNode([path.join(FIXTURES, 'half-cuda.cjs'), file], 240_000, CUDA_ENV as NodeJS.ProcessEnv);
    expect({ code: r.code, signal: r.signal }, r.stderr).toEqual({ code: 0, signal: null });
    const { report, calls } = JSON.parse(r.stdout.trim()) as { report?: { available: boolean; reason: string | null; bfloat16Products: boolean }; calls: CudaCall[] };
    expect(report?.available, `cuda is not available: ${report?.reason}`).toBe(true);
    expect(calls.length).toBe(cases.length * 2);
    const float32Of = (bits: number[]) => new Float32Array(Uint32Array.from(bits).buffer);
    for (const call of calls) {
      const c = cases.find((x) => x.name === call.name);
      if (c === undefined) throw new Error(`unknown case ${call.name}`);
      const what = `${call.name}, ${call.mode} → ${call.outDtype}${call.givenOut ? ' (given out)' : ''}`;
      if (call.error !== undefined) expect.fail(`${what}: ${call.error}`);
      expect(call.inputsUntouched, `${what}: an input was written`).toBe(true);
      expect(call.returnedOut, `${what}: the given out was not returned`).toBe(true);
      expect(call.resultType, what).toBe(call.givenOut ? (call.outDtype === 'float32' ? 'Float32Array' : 'Uint16Array') : expectedResultName(call.outDtype));
      const out = call.outDtype === 'float32' ? float32Of(call.out ?? []) : halfValues(call.outDtype as HalfDType, Uint16Array.from(call.out ?? []));
      const precision: Precision = (c.precision ?? (c.dtype === 'bfloat16' ? 'bfloat16' : 'float32')) === 'bfloat16' && report?.bfloat16Products ? 'bfloat16' : 'float32';
      const found = precisionMismatches(c.options, c.want, out, float32Of(call.lse ?? []), call.outDtype, precision);
      if (found.length > 0) expect.fail(`${what}: ${found.join('; ')}`);
    }
  }, 300_000);
});

// --- The IEEE rules on cuda through the emulated plugin, in a process of its own ---------------------
// The suites above run on backends() of this process, which lists 'cuda' only with a GPU (or with
// GLA_CUDA_PLUGIN set before the addon loaded). So that every machine where the emulated plugin is
// built (build-tests/, ctest's gla_cuda_emulated target: the real kernels compiled for the CPU)
// checks cuda's IEEE behaviour too, the same problems go to fixtures/cuda-calls.cjs in one child
// process with GLA_CUDA_PLUGIN pointing at that plugin, and each it() below checks its share of the
// answers. A call there costs ~0.3-0.7 s whatever its size, so each problem runs once: by turns sync
// or async, a half problem in one dtype, one (precision, mode, outDtype) and one NaN pattern, chosen
// so that every value of each still appears. The plugin computes in float32 (its backendReport says
// bfloat16Products: false), so a half call is held to the tolerance of the precision it computed in.

const EMULATED_IN_PROCESS = EMULATED_CUDA_PLUGIN !== null && process.env.GLA_CUDA_PLUGIN !== undefined &&
  path.resolve(process.env.GLA_CUDA_PLUGIN) === path.resolve(EMULATED_CUDA_PLUGIN);
const EMULATED_SKIP = !ADDON_BUILT
  ? ' — skipped: the native addon is not built, so no plugin can load'
  : EMULATED_CUDA_PLUGIN === null
    ? ' — skipped: the emulated CUDA plugin is not built (cmake --build build-tests --target gla_cuda_emulated builds build-tests/libgla_cuda_emulated.so)'
    : EMULATED_IN_PROCESS
      ? ' — skipped: GLA_CUDA_PLUGIN loads the emulated plugin in this process, so the suites above ran it as cuda'
      : '';
if (EMULATED_SKIP !== '') console.warn(`numbers.test.ts: the IEEE rules on cuda through the emulated plugin${EMULATED_SKIP}`);

type Tensors = { q: Float32Array; k: Float32Array; v: Float32Array } | { q: Uint16Array; k: Uint16Array; v: Uint16Array };

interface ChildCall {
  id: string;
  kind: Kind;
  mode: Mode;
  dtype: DType;
  outDtype?: DType;
  precision?: Precision;
  options: ReferenceOptions;
  tensors: Tensors;
}

/** What a call gave: out's values, lse, and the precision the plugin computed in (for tolerances). */
interface ChildAnswer {
  out: Float32Array;
  lse: Float32Array;
  precision: Precision;
}

interface ChildCase {
  call: ChildCall;
  check: (answer: ChildAnswer, what: string) => void;
}

interface ChildResult {
  id: string;
  resultType?: string;
  out?: string;
  lse?: string;
  error?: string;
  ms: number;
  inputsUntouched: boolean;
}


function float32Call(id: string, p: Problem, mode: Mode): ChildCall {
  return { id, kind: p.kind, mode, dtype: 'float32', options: p.options, tensors: { q: p.q, k: p.k, v: p.v } };
}

function halfChildCall(id: string, p: Problem, dtype: HalfDType, nan: number, combo: { precision: Precision; mode: Mode; outDtype: DType }): ChildCall {
  const tensors = { q: halfBitsOf(dtype, p.q, nan), k: halfBitsOf(dtype, p.k, nan), v: halfBitsOf(dtype, p.v, nan) };
  return { id, kind: p.kind, mode: combo.mode, dtype, outDtype: combo.outDtype, precision: combo.precision, options: p.options, tensors };
}

const ieeeCheck = (want: ReferenceResult, tolerance: number) => (a: ChildAnswer, what: string): void => {
  expectNone(ieeeMismatches(a.out, want.out, 16, tolerance), what);
  expectNone(ieeeMismatches(a.lse, want.lse, 1, tolerance, 'lse', 1), what);
};

const halfIeeeCheck = (want: ReferenceResult, outDtype: DType) => (a: ChildAnswer, what: string): void => {
  expectNone(ieeeMismatches(a.out, want.out, 16, elementTolerance(a.precision, outDtype)), what);
  expectNone(ieeeMismatches(a.lse, want.lse, 1, PRECISION_TOLERANCE[a.precision], 'lse', 1), what);
};

const CHILD_GROUPS: Array<{ title: string; cases: () => ChildCase[] }> = [
  ...POISONINGS.map(({ name, poison }, pi) => ({
    title: `float32: ${name}`,
    cases: () => KINDS.map((kind, ki) => {
      const p = makeProblem(kind, SHAPES[kind], 13);
      poison(p.options, p.q, p.k, p.v);
      const want = reference(p);
      return { call: float32Call(`f32 ${name} ${kind}`, p, MODES[(pi + ki) % 2]), check: ieeeCheck(want, 1e-4) };
    }),
  })),
  ...POISONINGS.map(({ name, poison }, pi) => ({
    title: `float16 and bfloat16: ${name}`,
    cases: () => KINDS.map((kind, ki) => {
      const dtype = HALF_DTYPES[(pi + ki) % 2];
      const combo = COMBOS(dtype)[(pi + 2 * ki) % 4];
      const p = halfProblem(kind, SHAPES[kind], 13, dtype);
      poison(p.options, p.q, p.k, p.v);
      const want = reference(p);
      const call = halfChildCall(`half ${name} ${kind}`, p, dtype, NAN_BITS[dtype][(pi + ki) % 4], combo);
      return { call, check: halfIeeeCheck(want, combo.outDtype) };
    }),
  })),
  {
    title: 'NaN/±Infinity past kvLengths (padding) change nothing; an item with kvLengths 0 is zeros and lse −Infinity',
    cases: () => [
      ...KINDS.flatMap((kind, ki) => POISONS.map((poison, qi) => {
        const p = makeProblem(kind, { ...SHAPES[kind], kvLengths: [37, 1] }, 12);
        poisonPadding(p, poison);
        return { call: float32Call(`f32 padding ${kind} ${poison}`, p, MODES[(ki + qi) % 2]), check: ieeeCheck(reference(p), 1e-5) };
      })),
      ...KINDS.flatMap((kind, ki) => HALF_DTYPES.map((dtype, di) => {
        const poison = POISONS[(ki + 2 * di) % 3];
        const combo = COMBOS(dtype)[(2 * ki + di) % 4];
        const p = halfProblem(kind, { ...SHAPES[kind], kvLengths: [37, 0] }, 12, dtype);
        poisonPadding(p, poison);
        const want = reference(p);
        const check = (a: ChildAnswer, what: string): void => {
          halfIeeeCheck(want, combo.outDtype)(a, what);
          for (let i = a.out.length / 2; i < a.out.length; i++) if (a.out[i] !== 0) expect.fail(`${what}: out[${i}] = ${a.out[i]} in an item that sees nothing`);
        };
        return { call: halfChildCall(`half padding ${kind} ${dtype} ${poison}`, p, dtype, NAN_BITS[dtype][ki + 2 * di], combo), check };
      })),
    ],
  },
  {
    title: 'NaN/±Infinity (float16/bfloat16: every NaN and ±Inf pattern) anywhere in q, k or v never crashes, hangs or writes an input',
    cases: () => [
      ...TENSORS.flatMap((tensor, ti) => POISONS.map((poison, qi) => {
        const kind = KINDS[(ti + qi) % 2];
        const p = poisonedEverywhere(kind, tensor, poison);
        const check = (a: ChildAnswer, what: string): void => expect(a.out.length, what).toBe(p.q.length);
        return { call: float32Call(`f32 everywhere ${tensor}=${poison}`, p, MODES[qi % 2]), check };
      })),
      ...HALF_DTYPES.map((dtype, di) => {
        const patterns = [...NAN_BITS[dtype], INF_BITS[dtype].pos, INF_BITS[dtype].neg];
        const p = halfProblem(KINDS[di], SHAPES[KINDS[di]], 11, dtype);
        const tensors = { q: toHalfBits(dtype, p.q), k: toHalfBits(dtype, p.k), v: toHalfBits(dtype, p.v) };
        TENSORS.forEach((tensor, ti) => {
          for (let i = ti, n = 0; i < tensors[tensor].length; i += 97, n++) tensors[tensor][i] = patterns[(n + ti) % patterns.length];
        });
        const combo = COMBOS(dtype)[3 - di];
        const call: ChildCall = { id: `half everywhere ${dtype}`, kind: p.kind, mode: combo.mode, dtype, outDtype: combo.outDtype, precision: combo.precision, options: p.options, tensors };
        return { call, check: (a: ChildAnswer, what: string) => expect(a.out.length, what).toBe(p.q.length) };
      }),
    ],
  },
  {
    title: 'extreme but finite inputs (|x| up to 1e4 with scale 1; half q and k up to 65504) give finite outputs, each a mix of the values',
    cases: () => [
      ...EXTREME_SHAPES.map(([kind, options], s) => {
        const p = extremeProblem(kind, options);
        const want = reference(p);
        const check = (a: ChildAnswer, what: string): void => {
          expect(want.maxAbsScore).toBeGreaterThan(1e7);
          expectExtreme(what, p, want, a.out, a.lse, 1 + 1e-6, 1e-5, 1e-3 * want.maxAbsScore * 1e-3);
        };
        return { call: float32Call(`f32 extreme #${s}`, p, MODES[s % 2]), check };
      }),
      ...HALF_DTYPES.map((dtype, di) => {
        const s = di + 1;
        const [kind, options] = EXTREME_SHAPES[s];
        const p = extremeHalfProblem(kind, options, s, dtype);
        const want = reference(p);
        const combo = COMBOS(dtype)[1 + di];
        const tensors = { q: toHalfBits(dtype, p.q), k: toHalfBits(dtype, p.k), v: toHalfBits(dtype, p.v) };
        const call: ChildCall = { id: `half extreme ${dtype} #${s}`, kind, mode: combo.mode, dtype, outDtype: combo.outDtype, precision: combo.precision, options, tensors };
        const check = (a: ChildAnswer, what: string): void => {
          expect(want.maxAbsScore).toBeGreaterThan(1e9);
          expectExtremeHalf(what, p, want, a.out, a.lse, a.precision, combo.outDtype);
        };
        return { call, check };
      }),
    ],
  },
];

describe(`the IEEE rules on cuda through the emulated plugin, in a process of its own${EMULATED_SKIP}`, () => {
  const dir = EMULATED_SKIP === '' ? fs.mkdtempSync(path.join(os.tmpdir(), 'gla-numbers-cuda-')) : '';
  const built = new Map<string, ChildCase[]>();
  const results = new Map<string, ChildResult>();
  let report: { available: boolean; reason: string | null; bfloat16Products: boolean } | undefined;
  let failure: string | null = null;

  beforeAll(async () => {
    if (EMULATED_SKIP !== '') return;
    for (const g of CHILD_GROUPS) built.set(g.title, g.cases());
    const calls = [...built.values()].flat().map(({ call }) => {
      const { tensors, ...rest } = call;
      return { ...rest, q: base64Of(tensors.q), k: base64Of(tensors.k), v: base64Of(tensors.v) };
    });
    const file = path.join(dir, 'calls.json');
    fs.writeFileSync(file, JSON.stringify(calls));
    const r = await runNode([path.join(FIXTURES, 'cuda-calls.cjs'), file], 280_000, { GLA_CUDA_PLUGIN: EMULATED_CUDA_PLUGIN as string });
    if (r.code !== 0 || r.signal !== null) {
      failure = `the child process ended with code ${r.code}, signal ${r.signal} after ${r.ms} ms: ${r.stderr.slice(-2000)}`;
      return;
    }
    const parsed = JSON.parse(r.stdout.trim()) as { report?: typeof report; results: ChildResult[] };
    report = parsed.report;
    for (const result of parsed.results) results.set(result.id, result);
  }, 300_000);
  afterAll(() => {
    if (dir !== '') fs.rmSync(dir, { recursive: true, force: true });
  });

  it.skipIf(EMULATED_SKIP !== '')('the emulated plugin loads as cuda and answers every call', () => {
    if (failure !== null) expect.fail(failure);
    expect(report?.available, `cuda is not available there: ${report?.reason}`).toBe(true);
    expect(results.size).toBe([...built.values()].flat().length);
  });

  for (const g of CHILD_GROUPS) {
    it.skipIf(EMULATED_SKIP !== '')(g.title, () => {
      if (failure !== null) expect.fail(failure);
      for (const { call, check } of built.get(g.title) ?? []) {
        const what = `${call.id} (${call.kind}, ${call.mode}${call.dtype === 'float32' ? '' : `, ${call.dtype} precision ${call.precision} → ${call.outDtype}`})`;
        const result = results.get(call.id);
        if (result === undefined) expect.fail(`${what}: no answer from the child process`);
        if (result.error !== undefined) expect.fail(`${what}: ${result.error}`);
        expect(result.inputsUntouched, `${what}: an input was written`).toBe(true);
        const outDtype = call.outDtype ?? 'float32';
        expect(result.resultType, what).toBe(expectedResultName(outDtype));
        const outBytes = bytesOf(result.out ?? '');
        const out = outDtype === 'float32' ? new Float32Array(outBytes) : tensorValues(outDtype, new Uint16Array(outBytes));
        const lse = new Float32Array(bytesOf(result.lse ?? ''));
        const precision: Precision = call.precision === 'bfloat16' && report?.bfloat16Products ? 'bfloat16' : 'float32';
        check({ out, lse, precision }, what);
      }
    });
  }
});
