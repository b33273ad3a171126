// Random valid options (fast-check) against the reference, on every backend, sync and async.
import fc from 'fast-check';
import { describe, it } from 'vitest';
import { MODES, attention } from './helpers/call';
import { type Kind, inputLengths, makeInputs } from './helpers/cases';
import { expectMatchesReference } from './helpers/compare';
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

// Sizes are small so that many shapes fit in the time; mask parameters are drawn wide enough to
// reach past the sequence (windows larger than kvSeqLen, kvLengths of 0 and kvSeqLen).
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
        } else {
          // bfloat16 products round v (2^-9 relative) before the weighted sum, so where the values a
          // row averages cancel (a random draw finds headDim 1 with two opposite keys) the error is
          // relative to the average of |v|, not to the result: the scale is the reference on |v|.
          const magnitude = referenceAttention(qv, kv, vv.map(Math.abs), options).out;
          let error = 0;
          let scale = 0;
          for (let i = 0; i < result.length; i++) {
            error += (result[i] - reference.out[i]) ** 2;
            scale += magnitude[i] ** 2;
            if (reference.out[i] === 0 && magnitude[i] === 0 && result[i] !== 0) error = Infinity;  // a row that sees nothing
          }
          found = Number.isNaN(error) || Math.sqrt(error) > 1e-2 * Math.sqrt(scale)
            ? [`out is ${Math.sqrt(error)} from the reference, more than 1e-2 of ${Math.sqrt(scale)} (the reference on |v|)`]
            : [];
          for (let r = 0; r < lse.length; r++) {
            const want = reference.lse[r];
            const ok = want === -Infinity ? lse[r] === -Infinity : Math.abs(lse[r] - want) <= 1e-2 * Math.max(1, Math.abs(want));
            if (!ok) found.push(`lse[${r}] is ${lse[r]}, expected ${want}`);
          }
        }
        if (found.length > 0) throw new Error(`${dtype} -> ${outDtype}, precision ${precision}: ${found.join('; ')}`);
      }),
      { numRuns: RUNS / 2 },
    );
  });
});
