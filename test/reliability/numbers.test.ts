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
import { afterAll, describe, expect, it } from 'vitest';
import { MODES, type Mode, attention } from '../helpers/call';
import type { Kind } from '../helpers/cases';
import { type HalfDType, halfValue, halfValues, toHalfBits } from '../helpers/half-bits';
import { BACKENDS, type Backend } from '../helpers/package';
import { type ReferenceOptions, referenceAttention } from '../reference';
import {
  type DType, EMULATED_CUDA_PLUGIN, FIXTURES, HALF_DTYPES, PRECISION_TOLERANCE, type Precision, type Problem, changedOutside,
  expectedResultName, guard, ieeeMismatches, makeProblem, precisionMismatches, reference, runNode, tensorValues, typedArrayName, withTimeout,
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

describe.each(BACKENDS)('non-finite inputs on the %s backend', (backend) => {
  it.each(MODES)('%s: NaN/±Infinity anywhere in q, k or v never crashes, hangs or writes an input', async (mode) => {
    for (const kind of KINDS) {
      for (const poison of POISONS) {
        for (const tensor of ['q', 'k', 'v'] as const) {
          const p = makeProblem(kind, SHAPES[kind], 11);
          const target = p[tensor];
          for (let i = 0; i < target.length; i += 97) target[i] = poison;
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
        for (let b = 0; b < 2; b++) {
          for (let j = options.kvLengths[b]; j < 80; j++) {
            for (let d = 0; d < 16; d++) {
              p.k[kvIndex(options, b, j, d)] = poison;
              p.v[kvIndex(options, b, j, d)] = poison;
            }
          }
        }
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

describe.each(BACKENDS)('extreme but finite inputs on the %s backend', (backend) => {
  const shapes: Array<[Kind, ReferenceOptions]> = [
    ['full', { batch: 1, heads: 2, seqLen: 70, headDim: 64, scale: 1 }],
    ['full', { batch: 1, heads: 1, seqLen: 33, kvSeqLen: 90, headDim: 256, scale: 1, causal: true }],
    ['localGlobal', { batch: 2, heads: 2, kvHeads: 1, seqLen: 90, headDim: 32, scale: 1, window: [5, 5], globalTokens: [3, 80] }],
  ];
  it.each(MODES)('%s: |x| up to 1e4 with scale 1 (logits ~1e9) give finite outputs, each a mix of the values', async (mode) => {
    for (const [kind, options] of shapes) {
      const p = makeProblem(kind, options, 14, 1e4);
      for (let i = 0; i < p.v.length; i++) p.v[i] *= 1e4;
      const want = reference(p);
      expect(want.maxAbsScore).toBeGreaterThan(1e7);
      const lse = new Float32Array(options.batch * options.heads * options.seqLen);
      const out = await attention(kind, mode, p.q, p.k, p.v, { ...options, lse, backend });
      let vMax = 0;
      for (const x of p.v) vMax = Math.max(vMax, Math.abs(x));
      for (let i = 0; i < out.length; i++) {
        if (!Number.isFinite(out[i]) && Number.isFinite(want.out[i])) expect.fail(`${kind}: out[${i}] = ${out[i]}, reference ${want.out[i]}`);
        // A softmax-weighted mean of values can never leave their range.
        if (Math.abs(out[i]) > vMax * (1 + 1e-6)) expect.fail(`${kind}: out[${i}] = ${out[i]} is outside ±${vMax}`);
      }
      for (let r = 0; r < lse.length; r++) {
        const ok = Number.isFinite(lse[r]) && Math.abs(lse[r] - want.lse[r]) <= 1e-5 * Math.abs(want.lse[r]) + 1e-3 * want.maxAbsScore * 1e-3;
        if (!ok) expect.fail(`${kind}: lse[${r}] = ${lse[r]}, reference ${want.lse[r]}`);
      }
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
          for (let b = 0; b < 2; b++) {
            for (let j = options.kvLengths[b]; j < 80; j++) {
              for (let d = 0; d < 16; d++) {
                p.k[kvIndex(options, b, j, d)] = poison;
                p.v[kvIndex(options, b, j, d)] = poison;
              }
            }
          }
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

describe.each(BACKENDS)('extreme but finite half inputs on the %s backend', (backend) => {
  const shapes: Array<[Kind, ReferenceOptions]> = [
    ['full', { batch: 1, heads: 2, seqLen: 70, headDim: 64, scale: 1 }],
    ['full', { batch: 1, heads: 1, seqLen: 33, kvSeqLen: 90, headDim: 256, scale: 1, causal: true }],
    ['localGlobal', { batch: 2, heads: 2, kvHeads: 1, seqLen: 90, headDim: 32, scale: 1, window: [5, 5], globalTokens: [3, 80] }],
  ];
  it.each(HALF_DTYPES)('%s: q and k up to 65504, the largest finite float16 (logits ~1e10), give finite outputs, each a mix of the values, at both precisions', async (dtype) => {
    const max = dtype === 'float16' ? 0x7bff : 0x477f; // 65504; bfloat16's nearest below it, 65280
    for (const [s, [kind, options]] of shapes.entries()) {
      const p = halfProblem(kind, options, 15, dtype, 65504);
      for (let i = s; i < p.q.length; i += 7) p.q[i] = (i % 2 === 0 ? 1 : -1) * halfValue(dtype, max);
      for (let i = s; i < p.k.length; i += 5) p.k[i] = (i % 3 === 0 ? -1 : 1) * halfValue(dtype, max);
      for (let i = 0; i < p.v.length; i++) p.v[i] = halfValue(dtype, toHalfBits(dtype, Float32Array.of(p.v[i] * 1e4))[0]);
      const want = reference(p);
      expect(want.maxAbsScore).toBeGreaterThan(1e9);
      const bits = { q: toHalfBits(dtype, p.q), k: toHalfBits(dtype, p.k), v: toHalfBits(dtype, p.v) };
      let vMax = 0;
      for (const x of p.v) vMax = Math.max(vMax, Math.abs(x));
      for (const { precision, mode, outDtype } of COMBOS(dtype)) {
        const what = `${kind} #${s} precision ${precision} ${mode} → ${outDtype}`;
        const { out, lse } = await halfCall(kind, mode, dtype, bits, options, { backend, precision, outDtype }, what);
        const slack = 1 + elementTolerance(precision, outDtype);
        for (let i = 0; i < out.length; i++) {
          if (!Number.isFinite(out[i]) && Number.isFinite(want.out[i])) expect.fail(`${what}: out[${i}] = ${out[i]}, reference ${want.out[i]}`);
          // A softmax-weighted mean of values can never leave their range (but for one rounding).
          if (Math.abs(out[i]) > vMax * slack) expect.fail(`${what}: out[${i}] = ${out[i]} is outside ±${vMax}`);
        }
        const relative = precision === 'float32' ? 1e-5 : PRECISION_TOLERANCE.bfloat16;
        for (let r = 0; r < lse.length; r++) {
          const ok = Number.isFinite(lse[r]) && Math.abs(lse[r] - want.lse[r]) <= relative * Math.abs(want.lse[r]) + relative * want.maxAbsScore * 1e-1;
          if (!ok) expect.fail(`${what}: lse[${r}] = ${lse[r]}, reference ${want.lse[r]}`);
        }
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
