// Random valid options (fast-check) against the reference, on every backend, sync and async.
import fc from 'fast-check';
import { describe, it } from 'vitest';
import { MODES, attention } from './helpers/call';
import { type Kind, inputLengths, makeInputs } from './helpers/cases';
import { bfloat16Mismatches, emptyRowMismatches, expectMatchesReference } from './helpers/compare';
import { BACKENDS } from './helpers/package';
import type { HalfDType } from './helpers/half-bits';
import { type ReferenceOptions, referenceAttention } from './reference';
import {
  type DType, DTYPES, HALF_DTYPES, PRECISIONS, type Precision, precisionMismatches, tensorValues,
  truncatedHalfBits,
} from './reliability/support';

interface Drawn {
  kind: Kind;
  options: ReferenceOptions;
  seed: number;
}

const MAX_BATCH = 3;
const MAX_HEADS = 6; // kvHeads ≤ 2, group ≤ 3

/** Finite float32 values in [min, max] (both float32 numbers), -0 excluded. */
const float32In = (min: number, max: number): fc.Arbitrary<number> =>
  fc.float({ min: Math.fround(min), max: Math.fround(max), noNaN: true, noDefaultInfinity: true }).map((x) => (Object.is(x, -0) ? 0 : x));

// Sizes are small so that many shapes fit in the time; mask parameters are drawn wide enough to
// reach past the sequence (windows larger than kvSeqLen, kvLengths and qLengths of 0 and of the full
// length), and the serving options (qLengths, softcap, ALiBi slopes, sink logits) are drawn too.
const drawn: fc.Arbitrary<Drawn> = fc
  .record({
    kind: fc.constantFrom<Kind>('full', 'localGlobal'),
    batch: fc.integer({ min: 1, max: MAX_BATCH }),
    kvHeads: fc.integer({ min: 1, max: 2 }),
    group: fc.integer({ min: 1, max: 3 }),
    seqLen: fc.integer({ min: 1, max: 40 }),
    kvSeqLen: fc.option(fc.integer({ min: 1, max: 70 }), { nil: undefined }),
    headDim: fc.integer({ min: 1, max: 24 }),
    layout: fc.constantFrom<'bhsd' | 'bshd'>('bhsd', 'bshd'),
    causal: fc.boolean(),
    scale: fc.option(fc.double({ min: -2, max: 2, noNaN: true }), { nil: undefined }),
    window: fc.oneof(
      fc.integer({ min: 0, max: 50 }),
      fc.tuple(fc.integer({ min: -1, max: 45 }), fc.integer({ min: -1, max: 45 })),
    ),
    globals: fc.constantFrom('none', 'shared', 'perBatch'),
    globalDraws: fc.array(fc.array(fc.nat(), { maxLength: 6 }), { minLength: MAX_BATCH, maxLength: MAX_BATCH }),
    kvLengthDraws: fc.option(fc.array(fc.nat(), { minLength: MAX_BATCH, maxLength: MAX_BATCH }), { nil: undefined }),
    // The serving options, each present in about half the draws. Values are float32 numbers (what
    // the kernels compute with), so that the reference sees exactly what the backends see.
    qLengthDraws: fc.option(fc.array(fc.nat(), { minLength: MAX_BATCH, maxLength: MAX_BATCH }), { nil: undefined }),
    softcap: fc.option(fc.oneof(fc.constant(0), float32In(0.25, 50), float32In(50, 1e6)), { nil: undefined }),
    slopeDraws: fc.option(fc.array(float32In(-0.25, 1), { minLength: MAX_HEADS, maxLength: MAX_HEADS }), { nil: undefined }),
    sinkDraws: fc.option(fc.array(float32In(-10, 10), { minLength: MAX_HEADS, maxLength: MAX_HEADS }), { nil: undefined }),
    seed: fc.integer(),
  })
  .map((d): Drawn => {
    const kvSeqLen = d.kvSeqLen ?? d.seqLen;
    const options: ReferenceOptions = {
      batch: d.batch, heads: d.kvHeads * d.group, kvHeads: d.kvHeads, seqLen: d.seqLen, kvSeqLen,
      headDim: d.headDim, layout: d.layout, causal: d.causal,
    };
    if (d.scale !== undefined) options.scale = d.scale;
    if (d.kvLengthDraws !== undefined) {
      options.kvLengths = d.kvLengthDraws.slice(0, d.batch).map((x) => x % (kvSeqLen + 1));
    }
    if (d.qLengthDraws !== undefined) {
      options.qLengths = d.qLengthDraws.slice(0, d.batch).map((x) => x % (d.seqLen + 1));
    }
    if (d.softcap !== undefined) options.softcap = d.softcap;
    if (d.slopeDraws !== undefined) options.alibiSlopes = d.slopeDraws.slice(0, options.heads);
    if (d.sinkDraws !== undefined) options.sinkLogits = d.sinkDraws.slice(0, options.heads);
    if (d.kind === 'localGlobal') {
      options.window = typeof d.window === 'number' ? d.window : [d.window[0], d.window[1]];
      const lists = d.globalDraws.map((list) => list.map((x) => x % kvSeqLen));
      if (d.globals === 'shared') options.globalTokens = lists[0];
      if (d.globals === 'perBatch') options.globalTokens = lists.slice(0, d.batch);
    }
    return { kind: d.kind, options, seed: d.seed };
  });

const RUNS = 100;

describe.each(BACKENDS)('backend %s on random valid options', (backend) => {
  it.each(MODES)('%s', async (mode) => {
    await fc.assert(
      fc.asyncProperty(drawn, async ({ kind, options, seed }) => {
        const { q, k, v } = makeInputs(`property ${seed}`, options);
        const n = inputLengths(options);
        const lse = new Float32Array(n.lse).fill(NaN);
        const out = new Float32Array(n.q).fill(NaN);
        await attention(kind, mode, q, k, v, { ...options, out, lse, backend });
        expectMatchesReference(options, referenceAttention(q, k, v, options), out, lse);
      }),
      { numRuns: RUNS },
    );
  });
});

// The same draws stored as float16 or bfloat16 (or float32 with a half output), with a drawn
// precision, against the reference of the decoded inputs at that precision's tolerance.
const stored = fc.record({
  drawn,
  dtype: fc.constantFrom<DType>(...DTYPES),
  halfOut: fc.constantFrom<HalfDType>(...HALF_DTYPES),
  sameOut: fc.boolean(),
  precision: fc.constantFrom<Precision>(...PRECISIONS),
});

describe.each(BACKENDS)('backend %s on random valid options with half precision', (backend) => {
  it.each(MODES)('%s', async (mode) => {
    await fc.assert(
      fc.asyncProperty(stored, async ({ drawn: { kind, options, seed }, dtype, halfOut, sameOut, precision }) => {
        const values = makeInputs(`property ${seed}`, options);
        const store = (x: Float32Array) => (dtype === 'float32' ? x : truncatedHalfBits(dtype, x));
        const q = store(values.q);
        const k = store(values.k);
        const v = store(values.v);
        const outDtype: DType = dtype !== 'float32' && sameOut ? dtype : dtype === 'float32' ? halfOut : 'float32';
        const n = inputLengths(options);
        const lse = new Float32Array(n.lse).fill(NaN);
        const out = outDtype === 'float32' ? new Float32Array(n.q).fill(NaN) : new Uint16Array(n.q).fill(0x7fff);
        await attention(kind, mode, q, k, v, { ...options, dtype, outDtype, precision, out, lse, backend });
        const [qv, kv, vv] = [tensorValues(dtype, q), tensorValues(dtype, k), tensorValues(dtype, v)];
        const reference = referenceAttention(qv, kv, vv, options);
        const result = tensorValues(outDtype, out);
        let found: string[];
        if (precision === 'float32') {
          found = precisionMismatches(options, reference, result, lse, outDtype, precision);
          // precisionMismatches finds empty rows by lse -Infinity; with sinkLogits an empty row's lse is the sink.
          found.push(...emptyRowMismatches(options, reference, result));
        } else {
          // bfloat16 products round q, k and v before they are multiplied: out relative to the
          // reference on |v| (a random draw finds headDim 1 with two opposite keys), lse allowing for
          // the scores' rounding (see bfloat16Mismatches).
          found = bfloat16Mismatches(options, reference, { q: qv, k: kv, v: vv }, result, lse, outDtype);
        }
        if (found.length > 0) throw new Error(`${dtype} -> ${outDtype}, precision ${precision}: ${found.join('; ')}`);
      }),
      { numRuns: RUNS / 2 },
    );
  });
});
