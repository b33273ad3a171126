// The serving options (notes/serving-spec.md, issue 13): qLengths, softcap, alibiSlopes and
// sinkLogits, and the per-sequence alignment p = i + kvLength(b) − qLength(b) that comes with them,
// on every backend, sync and async, against the float64 reference (test/reference.ts): into
// NaN-prefilled out and lse (every element must be written) and into an out the package allocates;
// padding rows exact zeros with lse −Infinity, rows that see nothing exact zeros with lse −Infinity
// or the sink. float16 and bfloat16 inputs too. The reference itself is checked first against
// derivations that do not go through it: a hand-written softmax over the keys a decode row must
// see, each sequence of a padded batch computed alone, and the algebra of sinks and ALiBi.
// On cuda: in this process where backends() lists it (a GPU); else through the emulated plugin
// (build-tests/libgla_cuda_emulated.so) in a child process, as numbers.test.ts does.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MODES, type Mode, attention } from './helpers/call';
import { type Kind, inputLengths, makeInputs } from './helpers/cases';
import { bfloat16Mismatches, emptyRowMismatches, expectMatchesReference, expectSameContents, relativeL2 } from './helpers/compare';
import { type HalfDType, halfValues } from './helpers/half-bits';
import { BACKENDS } from './helpers/package';
import { type ReferenceOptions, type ReferenceResult, referenceAttention, tensorIndex } from './reference';
import {
  type DType, FIXTURES, HALF_DTYPES, type Precision, base64Of, bytesOf, emulatedCudaSkip, runOnEmulatedCuda, expectedResultName,
  ieeeMismatches, precisionMismatches, tensorValues, truncatedHalfBits,
} from './reliability/support';

interface ServingCase {
  name: string;
  kind: Kind;
  options: ReferenceOptions;
  /** Scales q and k so that |scaled scores| reach the hundreds (checked on the reference). */
  magnitude?: number;
}

const geometricSlopes = (heads: number): number[] => Array.from({ length: heads }, (_, h) => 2 ** (-8 * (h + 1) / heads));

// The padded decode batch: one new token per sequence, caches of 128 and 50 tokens in a
// buffer of 128, a Mistral-style causal window of 32 keys. Item 1's query sits at position 49 and
// must see keys 18..49 (its own last 32); with the old alignment (p = kvSeqLen − 1 = 127) it saw nothing.
const DECODE: ReferenceOptions = {
  batch: 2, heads: 8, kvHeads: 2, seqLen: 1, kvSeqLen: 128, headDim: 64, causal: true, window: [31, 0], kvLengths: [128, 50],
};
const DECODE_GLOBALS: ReferenceOptions = { ...DECODE, globalTokens: [0, 1, 2, 3], layout: 'bshd' };
// A right-padded prefill batch: each sequence's prompt fills the first qLength rows and keys.
const PREFILL: ReferenceOptions = {
  batch: 3, heads: 4, kvHeads: 2, seqLen: 130, headDim: 33, causal: true, kvLengths: [130, 77, 1], qLengths: [130, 77, 1],
};
const PREFILL_WINDOW: ReferenceOptions = {
  batch: 3, heads: 2, seqLen: 17, headDim: 16, causal: true, window: [4, 0], globalTokens: [0], layout: 'bshd',
  kvLengths: [17, 9, 0], qLengths: [17, 9, 0],
};
// Sink logits float32 can hold exactly, so that the reference sees what the kernels see.
const HUGE_SINK = Math.fround(3e38);

const CASES: ServingCase[] = [
  { name: 'padded decode batch: seqLen 1, kvSeqLen 128, causal, window [31, 0], kvLengths [128, 50], GQA 8/2', kind: 'localGlobal', options: DECODE },
  { name: 'padded decode batch with globalTokens [0, 1, 2, 3], bshd', kind: 'localGlobal', options: DECODE_GLOBALS },
  {
    name: 'padded decode batch, full attention (no window): item 1 sees its 50 keys', kind: 'full',
    options: { batch: 3, heads: 4, kvHeads: 1, seqLen: 1, kvSeqLen: 128, headDim: 33, causal: true, kvLengths: [128, 50, 1] },
  },
  { name: 'right-padded prefill: qLengths = kvLengths [130, 77, 1], causal, GQA 4/2, headDim 33', kind: 'full', options: PREFILL },
  { name: 'right-padded prefill with a window and a global, qLengths = kvLengths [17, 9, 0], bshd', kind: 'localGlobal', options: PREFILL_WINDOW },
  {
    name: 'qLengths 0 for one item (kvLengths full), with sinks: that item is all zeros and lse −Infinity', kind: 'full',
    options: { batch: 3, heads: 2, seqLen: 17, kvSeqLen: 40, headDim: 5, qLengths: [17, 0, 5], sinkLogits: [0.5, -1] },
  },
  {
    name: 'qLengths > kvLengths: early real rows sit before position 0 and see nothing under causal', kind: 'localGlobal',
    options: { batch: 2, heads: 2, seqLen: 17, kvSeqLen: 30, headDim: 8, causal: true, window: [-1, -1], qLengths: [17, 12], kvLengths: [5, 30] },
  },
  {
    name: 'softcap 5 over large logits, causal seqLen 130, headDim 64', kind: 'full', magnitude: 12,
    options: { batch: 1, heads: 2, seqLen: 130, headDim: 64, causal: true, softcap: 5 },
  },
  {
    name: 'softcap 30 over large logits, window [8, 8] + globals, bshd', kind: 'localGlobal', magnitude: 12,
    options: { batch: 2, heads: 2, seqLen: 130, headDim: 64, window: [8, 8], globalTokens: [0, 64], softcap: 30, layout: 'bshd' },
  },
  {
    name: 'softcap 30 over large logits, decode seqLen 1', kind: 'full', magnitude: 12,
    options: { batch: 2, heads: 2, seqLen: 1, kvSeqLen: 130, headDim: 67, softcap: 30, kvLengths: [130, 17] },
  },
  {
    name: 'ALiBi, causal, geometric slopes, seqLen 130, headDim 33', kind: 'full',
    options: { batch: 1, heads: 4, seqLen: 130, headDim: 33, causal: true, alibiSlopes: geometricSlopes(4) },
  },
  {
    name: 'ALiBi, not causal, seqLen 17 < kvSeqLen 130 (positions 113..129), headDim 5', kind: 'full',
    options: { batch: 2, heads: 2, seqLen: 17, kvSeqLen: 130, headDim: 5, alibiSlopes: [0.25, 0.0078125] },
  },
  {
    name: 'ALiBi, windowed [16, 16] + global 0, GQA 6/2, bshd', kind: 'localGlobal',
    options: { batch: 2, heads: 6, kvHeads: 2, seqLen: 130, headDim: 16, window: [16, 16], globalTokens: [0], layout: 'bshd', alibiSlopes: geometricSlopes(6) },
  },
  {
    name: 'ALiBi with kvLengths: distances from each item’s own position, causal decode, GQA 4/2', kind: 'full',
    options: { batch: 2, heads: 4, kvHeads: 2, seqLen: 1, kvSeqLen: 128, headDim: 16, causal: true, kvLengths: [128, 50], alibiSlopes: geometricSlopes(4) },
  },
  {
    name: 'sinks, a causal window that leaves rows seeing nothing (kvLengths [37, 10]): lse = the sink there', kind: 'localGlobal',
    options: { batch: 2, heads: 2, seqLen: 37, headDim: 16, causal: true, window: [3, 0], kvLengths: [37, 10], sinkLogits: [1.25, -4] },
  },
  {
    name: 'sinks very large (1000, 3e38) and very small (−1000, −3e38), causal seqLen 40 > kvSeqLen 33', kind: 'full',
    options: { batch: 1, heads: 4, seqLen: 40, kvSeqLen: 33, headDim: 17, causal: true, sinkLogits: [1000, HUGE_SINK, -1000, -HUGE_SINK] },
  },
  {
    name: 'sinks against large logits, GQA 4/2', kind: 'full', magnitude: 12,
    options: { batch: 1, heads: 4, kvHeads: 2, seqLen: 33, headDim: 64, sinkLogits: [150, 0, -50, 300] },
  },
];

// All four at once (plus kvLengths, causal and GQA) at odd sizes, in both layouts and both kinds.
for (const headDim of [5, 33, 67]) {
  for (const seqLen of [1, 17, 130]) {
    for (const layout of ['bhsd', 'bshd'] as const) {
      const kind: Kind = (headDim + seqLen) % 2 === 0 ? 'full' : 'localGlobal';
      const kvSeqLen = seqLen === 1 ? 70 : seqLen + 3;
      const options: ReferenceOptions = {
        batch: 2, heads: 4, kvHeads: 2, seqLen, kvSeqLen, headDim, layout, causal: true,
        qLengths: [seqLen, Math.floor(seqLen / 2)], kvLengths: [kvSeqLen, Math.max(1, kvSeqLen - 10)],
        softcap: 20, alibiSlopes: geometricSlopes(4), sinkLogits: [1, -2, 0.5, 3],
      };
      if (kind === 'localGlobal') Object.assign(options, { window: [8, 0], globalTokens: [[0, 1], [2]] });
      CASES.push({ name: `all four, ${kind}, headDim ${headDim}, seqLen ${seqLen}, ${layout}`, kind, options, magnitude: 4 });
    }
  }
}

const inputsOf = new Map<string, { q: Float32Array; k: Float32Array; v: Float32Array; reference: ReferenceResult }>();
function prepared(c: ServingCase): { q: Float32Array; k: Float32Array; v: Float32Array; reference: ReferenceResult } {
  let entry = inputsOf.get(c.name);
  if (entry === undefined) {
    const x = makeInputs(`serving ${c.name}`, c.options, c.magnitude);
    entry = { ...x, reference: referenceAttention(x.q, x.k, x.v, c.options) };
    inputsOf.set(c.name, entry);
  }
  return entry;
}

// --- The reference, against derivations that do not go through it --------------------------------

/** Softmax of one query row over exactly `keys` (float64, scale 1/√headDim, nothing else). */
function handRow(o: ReferenceOptions, x: { q: Float32Array; k: Float32Array; v: Float32Array }, b: number, h: number, i: number, keys: number[]): { out: number[]; lse: number } {
  const kvHeads = o.kvHeads ?? o.heads;
  const kvSeqLen = o.kvSeqLen ?? o.seqLen;
  const layout = o.layout ?? 'bhsd';
  const kvh = Math.floor(h / (o.heads / kvHeads));
  const scores = keys.map((j) => {
    let dot = 0;
    for (let d = 0; d < o.headDim; d++) {
      dot += x.q[tensorIndex(layout, o.heads, o.seqLen, o.headDim, b, h, i, d)] * x.k[tensorIndex(layout, kvHeads, kvSeqLen, o.headDim, b, kvh, j, d)];
    }
    return dot / Math.sqrt(o.headDim);
  });
  const max = Math.max(...scores);
  const weights = scores.map((s) => Math.exp(s - max));
  const sum = weights.reduce((a, w) => a + w, 0);
  const out = Array.from({ length: o.headDim }, (_, d) =>
    keys.reduce((a, j, n) => a + weights[n] * x.v[tensorIndex(layout, kvHeads, kvSeqLen, o.headDim, b, kvh, j, d)], 0) / sum);
  return { out, lse: max + Math.log(sum) };
}

function referenceRow(o: ReferenceOptions, r: ReferenceResult, b: number, h: number, i: number): { out: number[]; lse: number } {
  const layout = o.layout ?? 'bhsd';
  const out = Array.from({ length: o.headDim }, (_, d) => r.out[tensorIndex(layout, o.heads, o.seqLen, o.headDim, b, h, i, d)]);
  return { out, lse: r.lse[(b * o.heads + h) * o.seqLen + i] };
}

function expectRowsClose(got: { out: number[]; lse: number }, want: { out: number[]; lse: number }, what: string): void {
  expect(relativeL2(got.out, want.out), what).toBeLessThan(1e-12);
  expect(Math.abs(got.lse - want.lse), what).toBeLessThan(1e-12 * Math.max(1, Math.abs(want.lse)));
}

/** Item b's first `length` positions of a tensor, as a batch of one with seqLen `length`. */
function itemTensor(x: Float32Array, layout: 'bhsd' | 'bshd', heads: number, seqLen: number, headDim: number, b: number, length: number): Float32Array {
  const part = new Float32Array(heads * length * headDim);
  for (let h = 0; h < heads; h++) {
    for (let s = 0; s < length; s++) {
      for (let d = 0; d < headDim; d++) {
        part[tensorIndex(layout, heads, length, headDim, 0, h, s, d)] = x[tensorIndex(layout, heads, seqLen, headDim, b, h, s, d)];
      }
    }
  }
  return part;
}

/** Each item of a right-padded batch equals that sequence computed alone (no qLengths, no kvLengths). */
function expectItemsAlone(o: ReferenceOptions, x: { q: Float32Array; k: Float32Array; v: Float32Array }, r: ReferenceResult): void {
  const layout = o.layout ?? 'bhsd';
  const kvHeads = o.kvHeads ?? o.heads;
  const kvSeqLen = o.kvSeqLen ?? o.seqLen;
  for (let b = 0; b < o.batch; b++) {
    const qLength = o.qLengths?.[b] ?? o.seqLen;
    const kvLength = o.kvLengths?.[b] ?? kvSeqLen;
    for (let h = 0; h < o.heads; h++) {
      for (let i = qLength; i < o.seqLen; i++) {
        const row = referenceRow(o, r, b, h, i);
        expect(row.lse, `padding row (b=${b}, h=${h}, i=${i})`).toBe(-Infinity);
        expect(row.out.every((v) => v === 0), `padding row (b=${b}, h=${h}, i=${i})`).toBe(true);
      }
    }
    if (qLength === 0 || kvLength === 0) continue;
    const globals = o.globalTokens === undefined ? undefined
      : typeof o.globalTokens[0] === 'number' ? o.globalTokens as ArrayLike<number> : (o.globalTokens as ArrayLike<number>[])[b];
    const alone: ReferenceOptions = {
      batch: 1, heads: o.heads, kvHeads, seqLen: qLength, kvSeqLen: kvLength, headDim: o.headDim, layout, causal: o.causal,
      window: o.window, globalTokens: globals === undefined ? undefined : Array.from(globals).filter((j) => j < kvLength),
    };
    const item = referenceAttention(
      itemTensor(x.q, layout, o.heads, o.seqLen, o.headDim, b, qLength),
      itemTensor(x.k, layout, kvHeads, kvSeqLen, o.headDim, b, kvLength),
      itemTensor(x.v, layout, kvHeads, kvSeqLen, o.headDim, b, kvLength), alone);
    for (let h = 0; h < o.heads; h++) {
      for (let i = 0; i < qLength; i++) {
        expectRowsClose(referenceRow(o, r, b, h, i), referenceRow(alone, item, 0, h, i), `item ${b} (b=${b}, h=${h}, i=${i}) alone`);
      }
    }
  }
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, n) => from + n);

describe('the reference implements the serving semantics', () => {
  it('padded decode batch: item 0 sees keys 96..127, item 1 its own last 32 keys, 18..49 (not nothing, as with p = kvSeqLen − 1)', () => {
    const x = makeInputs('reference decode', DECODE);
    const r = referenceAttention(x.q, x.k, x.v, DECODE);
    for (let h = 0; h < DECODE.heads; h++) {
      expectRowsClose(referenceRow(DECODE, r, 0, h, 0), handRow(DECODE, x, 0, h, 0, range(96, 128)), `item 0, head ${h}`);
      expectRowsClose(referenceRow(DECODE, r, 1, h, 0), handRow(DECODE, x, 1, h, 0, range(18, 50)), `item 1, head ${h}`);
    }
  });

  it('padded decode batch with globalTokens [0, 1, 2, 3]: the sink tokens join each item’s window', () => {
    const x = makeInputs('reference decode globals', DECODE_GLOBALS);
    const r = referenceAttention(x.q, x.k, x.v, DECODE_GLOBALS);
    for (let h = 0; h < DECODE_GLOBALS.heads; h++) {
      expectRowsClose(referenceRow(DECODE_GLOBALS, r, 0, h, 0), handRow(DECODE_GLOBALS, x, 0, h, 0, [0, 1, 2, 3, ...range(96, 128)]), `item 0, head ${h}`);
      expectRowsClose(referenceRow(DECODE_GLOBALS, r, 1, h, 0), handRow(DECODE_GLOBALS, x, 1, h, 0, [0, 1, 2, 3, ...range(18, 50)]), `item 1, head ${h}`);
    }
  });

  it('right-padded prefill (qLengths = kvLengths): each item equals its sequence alone; padding rows are zeros and −Infinity', () => {
    for (const o of [PREFILL, PREFILL_WINDOW]) {
      const x = makeInputs('reference prefill', o);
      expectItemsAlone(o, x, referenceAttention(x.q, x.k, x.v, o));
    }
  });

  it('kvLengths without qLengths aligns each item to the end of its own keys (p = i + kvLengths[b] − seqLen)', () => {
    const o: ReferenceOptions = { batch: 2, heads: 1, seqLen: 4, kvSeqLen: 10, headDim: 4, causal: true, kvLengths: [10, 6] };
    const x = makeInputs('reference alignment', o);
    const r = referenceAttention(x.q, x.k, x.v, o);
    for (let i = 0; i < 4; i++) {
      expectRowsClose(referenceRow(o, r, 0, 0, i), handRow(o, x, 0, 0, i, range(0, 7 + i)), `item 0, row ${i}`);
      expectRowsClose(referenceRow(o, r, 1, 0, i), handRow(o, x, 1, 0, i, range(0, 3 + i)), `item 1, row ${i}`);
    }
  });

  it('sinks: out scales by e^lse / (e^lse + e^sink), lse becomes logaddexp(lse, sink), rows that see nothing get lse = sink', () => {
    const base: ReferenceOptions = { batch: 2, heads: 3, seqLen: 20, kvSeqLen: 12, headDim: 6, causal: true, kvLengths: [12, 7] };
    const sinks = [-3, 0.5, 40];
    const x = makeInputs('reference sinks', base);
    const plain = referenceAttention(x.q, x.k, x.v, base);
    const sunk = referenceAttention(x.q, x.k, x.v, { ...base, sinkLogits: sinks });
    let emptyRows = 0;
    for (let b = 0; b < 2; b++) {
      for (let h = 0; h < 3; h++) {
        for (let i = 0; i < 20; i++) {
          const p = referenceRow(base, plain, b, h, i);
          const s = referenceRow(base, sunk, b, h, i);
          if (p.lse === -Infinity) {
            emptyRows++;
            expect(s.lse).toBe(sinks[h]);
            expect(s.out.every((v) => v === 0)).toBe(true);
            continue;
          }
          const m = Math.max(p.lse, sinks[h]);
          const lse = m + Math.log(Math.exp(p.lse - m) + Math.exp(sinks[h] - m));
          expect(Math.abs(s.lse - lse)).toBeLessThan(1e-12 * Math.max(1, Math.abs(lse)));
          const factor = Math.exp(p.lse - lse);
          for (let d = 0; d < 6; d++) expect(Math.abs(s.out[d] - p.out[d] * factor)).toBeLessThan(1e-12);
        }
      }
    }
    expect(emptyRows).toBeGreaterThan(0);
  });

  it('ALiBi: slope 0 changes nothing; for a single decode query it is a −slope·distance bias on each key', () => {
    const o: ReferenceOptions = { batch: 1, heads: 2, seqLen: 1, kvSeqLen: 9, headDim: 4 };
    const x = makeInputs('reference alibi', o);
    const plain = referenceAttention(x.q, x.k, x.v, o);
    const zero = referenceAttention(x.q, x.k, x.v, { ...o, alibiSlopes: [0, 0] });
    expect(Array.from(zero.out)).toEqual(Array.from(plain.out));
    expect(Array.from(zero.lse)).toEqual(Array.from(plain.lse));
    // Query at position 8: the bias of key j is −slope·(8 − j); shifting v does not matter, so check lse.
    const slope = 0.5;
    const biased = referenceAttention(x.q, x.k, x.v, { ...o, alibiSlopes: [slope, 0] });
    let sum = 0;
    for (let j = 0; j < 9; j++) {
      let dot = 0;
      for (let d = 0; d < 4; d++) dot += x.q[d] * x.k[j * 4 + d];
      sum += Math.exp(dot / 2 - slope * (8 - j));
    }
    expect(Math.abs(biased.lse[0] - Math.log(sum))).toBeLessThan(1e-12);
    expect(biased.lse[1]).toBe(plain.lse[1]);
  });

  it('softcap: every score within ±softcap (lse ≤ softcap + log(keys)), and a huge softcap is no softcap', () => {
    const o: ReferenceOptions = { batch: 1, heads: 2, seqLen: 17, headDim: 64 };
    const x = makeInputs('reference softcap', o, 12);
    const plain = referenceAttention(x.q, x.k, x.v, o);
    expect(plain.maxAbsScore).toBeGreaterThan(100);
    const capped = referenceAttention(x.q, x.k, x.v, { ...o, softcap: 5 });
    for (const lse of capped.lse) expect(lse).toBeLessThanOrEqual(5 + Math.log(17) + 1e-12);
    expect(relativeL2(capped.out, plain.out)).toBeGreaterThan(0.1);
    const loose = referenceAttention(x.q, x.k, x.v, { ...o, softcap: 1e9 });
    expect(relativeL2(loose.out, plain.out)).toBeLessThan(1e-9);
  });
});

// --- Every backend ---------------------------------------------------------------------------------

/** Checks specific to a case, beyond the comparison with the reference. */
function caseChecks(c: ServingCase, reference: ReferenceResult, out: Float32Array, lse: Float32Array, what: string): void {
  const o = c.options;
  if (c.options === DECODE || c.options === DECODE_GLOBALS) {
    // Item 1 sees keys: a backend still aligning to kvSeqLen would give it zeros and −Infinity.
    for (let h = 0; h < o.heads; h++) expect(Number.isFinite(lse[o.heads + h]), `${what}: lse of item 1, head ${h}`).toBe(true);
  }
  if (o.sinkLogits !== undefined) {
    // Where the reference row sees nothing, lse is the sink logit (float32 holds each exactly).
    for (let r = 0; r < lse.length; r++) {
      const h = Math.floor(r / o.seqLen) % o.heads;
      const padding = r % o.seqLen >= (o.qLengths?.[Math.floor(r / (o.seqLen * o.heads))] ?? o.seqLen);
      if (reference.empty[r] === 1 && !padding) expect(lse[r], `${what}: lse[${r}] of a row that sees nothing`).toBe(o.sinkLogits[h]);
    }
  }
  if (o.sinkLogits?.[0] === 1000) {
    // Heads 0 and 1 (sinks 1000 and 3e38): every weight is e^(s − sink) ≈ 0, so out ≈ 0 and lse = the sink.
    const layout = o.layout ?? 'bhsd';
    for (let h = 0; h < 2; h++) {
      for (let i = 0; i < o.seqLen; i++) {
        expect(lse[h * o.seqLen + i], `${what}: lse, head ${h}, row ${i}`).toBe(o.sinkLogits[h]);
        for (let d = 0; d < o.headDim; d++) {
          expect(Math.abs(out[tensorIndex(layout, o.heads, o.seqLen, o.headDim, 0, h, i, d)])).toBeLessThan(1e-30);
        }
      }
    }
  }
}

describe.each(BACKENDS)('serving options on backend %s', (backend) => {
  it.each(CASES.map((c): [string, ServingCase] => [`${c.kind}: ${c.name}`, c]))('%s', async (_title, c) => {
    const { q, k, v, reference } = prepared(c);
    if (c.magnitude !== undefined && c.magnitude > 10) expect(reference.maxAbsScore).toBeGreaterThan(100);
    const copies = { q: q.slice(), k: k.slice(), v: v.slice() };
    const n = inputLengths(c.options);

    // Sync into caller buffers pre-filled with NaN: every element must be written.
    const out = new Float32Array(n.q).fill(NaN);
    const lse = new Float32Array(n.lse).fill(NaN);
    const returned = await attention(c.kind, 'sync', q, k, v, { ...c.options, out, lse, backend });
    expect(returned).toBe(out);
    expectMatchesReference(c.options, reference, out, lse);
    caseChecks(c, reference, out, lse, 'sync');

    // Async into a buffer the package allocates.
    const asyncLse = new Float32Array(n.lse).fill(NaN);
    const allocated = await attention(c.kind, 'async', q, k, v, { ...c.options, lse: asyncLse, backend });
    expect(allocated).toBeInstanceOf(Float32Array);
    expectMatchesReference(c.options, reference, allocated, asyncLse);
    caseChecks(c, reference, allocated, asyncLse, 'async');

    expectSameContents(q, copies.q, 'q after the calls');
    expectSameContents(k, copies.k, 'k after the calls');
    expectSameContents(v, copies.v, 'v after the calls');
  });

  it('reusing out: stale values in padding rows (past qLengths) and rows that see nothing become exact zeros', async () => {
    const options: ReferenceOptions = {
      batch: 2, heads: 2, seqLen: 33, kvSeqLen: 40, headDim: 9, causal: true, window: [5, 0],
      qLengths: [20, 33], kvLengths: [40, 11], sinkLogits: [0.5, 2],
    };
    const { q, k, v } = makeInputs('serving reuse', options);
    const reference = referenceAttention(q, k, v, options);
    const n = inputLengths(options);
    for (const mode of MODES) {
      const out = new Float32Array(n.q).fill(7);
      const lse = new Float32Array(n.lse).fill(7);
      await attention('localGlobal', mode, q, k, v, { ...options, out, lse, backend });
      expectMatchesReference(options, reference, out, lse);
    }
  });
});

// --- The IEEE rules with the serving options ------------------------------------------------------
// Unchanged by them: a NaN score reaching a row makes the row NaN (also with a sink: max(NaN, sink)
// is NaN); softcap maps a ±Infinity score to ±softcap, as tanh does; a row whose visible scores are
// all −Infinity sees nothing: zeros, and with sinks lse = the sink.

const IEEE_SHAPE: ReferenceOptions = {
  batch: 2, heads: 2, seqLen: 40, kvSeqLen: 45, headDim: 16, causal: true, qLengths: [40, 30], kvLengths: [45, 33],
  alibiSlopes: [0.125, 0.5], sinkLogits: [1.5, -0.5],
};

/** q[b=0, h=0, row, d=0] = x, in bhsd. */
function poisonQuery(o: ReferenceOptions, q: Float32Array, row: number, x: number): void {
  q[tensorIndex('bhsd', o.heads, o.seqLen, o.headDim, 0, 0, row, 0)] = x;
}

const IEEE_CASES: Array<{ name: string; options: ReferenceOptions; poison: (o: ReferenceOptions, x: { q: Float32Array; k: Float32Array }) => void }> = [
  {
    name: 'a NaN in query row 7 makes that row NaN and its lse NaN, sinks or not; other rows are untouched',
    options: IEEE_SHAPE, poison: (o, x) => poisonQuery(o, x.q, 7, NaN),
  },
  {
    name: 'with softcap, +Infinity in a query makes its scores ±softcap: a finite row',
    options: { ...IEEE_SHAPE, softcap: 4 }, poison: (o, x) => poisonQuery(o, x.q, 9, Infinity),
  },
  {
    name: 'without softcap, a row whose visible scores are all −Infinity sees nothing: zeros and lse = the sink',
    options: IEEE_SHAPE,
    poison: (o, x) => {
      poisonQuery(o, x.q, 11, Infinity);
      // Every key of (b=0, kv head 0) negative in d=0, so q·k = −Infinity for each.
      for (let j = 0; j < (o.kvSeqLen ?? o.seqLen); j++) {
        const i = tensorIndex('bhsd', o.kvHeads ?? o.heads, o.kvSeqLen ?? o.seqLen, o.headDim, 0, 0, j, 0);
        x.k[i] = -Math.abs(x.k[i]);
      }
    },
  },
];

describe.each(BACKENDS)('the IEEE rules with the serving options on backend %s', (backend) => {
  for (const kind of ['full', 'localGlobal'] as const) {
    it.each(IEEE_CASES.map((c): [string, (typeof IEEE_CASES)[number]] => [c.name, c]))(`${kind}: %s`, async (_title, c) => {
      const options: ReferenceOptions = kind === 'full' ? c.options : { ...c.options, window: [6, 0], globalTokens: [0] };
      const x = makeInputs(`serving ieee ${c.name}`, options);
      c.poison(options, x);
      const reference = referenceAttention(x.q, x.k, x.v, options);
      if (c.name.startsWith('a NaN')) expect(Number.isNaN(reference.lse[7])).toBe(true);
      if (c.name.startsWith('with softcap')) expect(Number.isFinite(reference.lse[9])).toBe(true);
      if (c.name.startsWith('without softcap')) expect([reference.lse[11], reference.empty[11]]).toEqual([1.5, 1]);
      const n = inputLengths(options);
      for (const mode of MODES) {
        const out = new Float32Array(n.q).fill(NaN);
        const lse = new Float32Array(n.lse).fill(NaN);
        await attention(kind, mode, x.q, x.k, x.v, { ...options, out, lse, backend });
        const found = [
          ...ieeeMismatches(out, reference.out, options.headDim, 1e-4),
          ...ieeeMismatches(lse, reference.lse, 1, 1e-4, 'lse', 1),
          ...emptyRowMismatches(options, reference, out),
        ];
        if (found.length > 0) expect.fail(`${mode}: ${found.join('; ')}`);
      }
    });
  }
});

// --- float16 and bfloat16 inputs -----------------------------------------------------------------

const HALF_CASES: ServingCase[] = [
  CASES[0],
  {
    name: 'right-padded prefill, all four, bshd', kind: 'full', magnitude: 4,
    options: { ...PREFILL, layout: 'bshd', softcap: 20, alibiSlopes: geometricSlopes(4), sinkLogits: [1, -2, 0.5, 3] },
  },
  CASES.find((c) => c.name.startsWith('all four, localGlobal, headDim 33, seqLen 130')) as ServingCase,
];

interface HalfCall {
  dtype: HalfDType;
  precision: Precision;
  outDtype: DType;
  mode: Mode;
}

const HALF_CALLS: HalfCall[] = HALF_DTYPES.flatMap((dtype, di) => [
  { dtype, precision: 'float32', outDtype: 'float32', mode: MODES[di] },
  { dtype, precision: 'float32', outDtype: dtype, mode: MODES[1 - di] },
  { dtype, precision: 'bfloat16', outDtype: di === 0 ? dtype : 'float32', mode: MODES[di] },
]);

function halfProblem(c: ServingCase, dtype: HalfDType) {
  const x = makeInputs(`serving half ${c.name}`, c.options, c.magnitude);
  const bits = { q: truncatedHalfBits(dtype, x.q), k: truncatedHalfBits(dtype, x.k), v: truncatedHalfBits(dtype, x.v) };
  const values = { q: halfValues(dtype, bits.q), k: halfValues(dtype, bits.k), v: halfValues(dtype, bits.v) };
  return { bits, values, reference: referenceAttention(values.q, values.k, values.v, c.options) };
}

/** The tolerance of the precision the call computed in (a backend without bfloat16 products computes in float32). */
function halfMismatches(c: ServingCase, p: ReturnType<typeof halfProblem>, call: HalfCall, out: Float32Array, lse: Float32Array): string[] {
  if (call.precision === 'bfloat16') return bfloat16Mismatches(c.options, p.reference, p.values, out, lse, call.outDtype);
  return [...precisionMismatches(c.options, p.reference, out, lse, call.outDtype, 'float32'), ...emptyRowMismatches(c.options, p.reference, out)];
}

describe.each(BACKENDS)('serving options with float16 and bfloat16 inputs on backend %s', (backend) => {
  it.each(HALF_CASES.map((c): [string, ServingCase] => [c.name, c]))('%s', async (_title, c) => {
    for (const call of HALF_CALLS) {
      const p = halfProblem(c, call.dtype);
      const n = inputLengths(c.options);
      const lse = new Float32Array(n.lse).fill(NaN);
      const out = call.outDtype === 'float32' ? new Float32Array(n.q).fill(NaN) : new Uint16Array(n.q).fill(0x7fff);
      const options = { ...c.options, dtype: call.dtype, outDtype: call.outDtype, precision: call.precision, out, lse, backend };
      const returned = await attention(c.kind, call.mode, p.bits.q, p.bits.k, p.bits.v, options);
      expect(returned).toBe(out);
      const found = halfMismatches(c, p, call, tensorValues(call.outDtype, out), lse);
      if (found.length > 0) expect.fail(`${call.dtype}, precision ${call.precision}, ${call.mode} → ${call.outDtype}: ${found.join('; ')}`);
    }
  });
});

// --- cuda through the emulated plugin, in a process of its own ------------------------------------
// As numbers.test.ts does: where backends() has no 'cuda' (no GPU) but the addon and the emulated
// plugin (the real CUDA kernels compiled for the CPU) are built, fixtures/cuda-calls.cjs makes the
// calls with GLA_CUDA_PLUGIN pointing at it. A call there costs ~0.3 s whatever its size, so each
// case runs once, sync or async by turns; the plugin computes in float32.

const EMULATED_SKIP = emulatedCudaSkip(BACKENDS);
if (EMULATED_SKIP !== '') console.warn(`serving.test.ts: the serving options on cuda through the emulated plugin${EMULATED_SKIP}`);

interface ChildCall {
  id: string;
  kind: Kind;
  mode: Mode;
  dtype: DType;
  outDtype?: DType;
  precision?: Precision;
  options: ReferenceOptions;
  q: string;
  k: string;
  v: string;
}

interface ChildResult {
  id: string;
  resultType?: string;
  out?: string;
  lse?: string;
  error?: string;
  inputsUntouched: boolean;
}


/** Typed-array options travel as plain arrays (JSON). */
function jsonOptions(o: ReferenceOptions): ReferenceOptions {
  return JSON.parse(JSON.stringify(o, (_key, value: unknown) => (ArrayBuffer.isView(value) ? Array.from(value as unknown as ArrayLike<number>) : value)));
}

describe(`serving options on cuda through the emulated plugin, in a process of its own${EMULATED_SKIP}`, () => {
  const dir = EMULATED_SKIP === '' ? fs.mkdtempSync(path.join(os.tmpdir(), 'gla-serving-cuda-')) : '';
  const checks = new Map<string, (r: ChildResult) => void>();
  const results = new Map<string, ChildResult>();
  let failure: string | null = null;
  let available: { available: boolean; reason: string | null } | undefined;

  beforeAll(async () => {
    if (EMULATED_SKIP !== '') return;
    const calls: ChildCall[] = [];
    CASES.forEach((c, index) => {
      const { q, k, v, reference } = prepared(c);
      const id = `f32 ${c.name}`;
      calls.push({ id, kind: c.kind, mode: MODES[index % 2], dtype: 'float32', options: jsonOptions(c.options), q: base64Of(q), k: base64Of(k), v: base64Of(v) });
      checks.set(id, (r) => {
        const out = new Float32Array(bytesOf(r.out ?? ''));
        const lse = new Float32Array(bytesOf(r.lse ?? ''));
        expectMatchesReference(c.options, reference, out, lse);
        caseChecks(c, reference, out, lse, id);
      });
    });
    HALF_CASES.forEach((c, index) => {
      const call = HALF_CALLS[index % HALF_CALLS.length];
      const p = halfProblem(c, call.dtype);
      const id = `half ${c.name}`;
      calls.push({
        id, kind: c.kind, mode: call.mode, dtype: call.dtype, outDtype: call.outDtype, precision: call.precision, options: jsonOptions(c.options),
        q: base64Of(p.bits.q), k: base64Of(p.bits.k), v: base64Of(p.bits.v),
      });
      checks.set(id, (r) => {
        expect(r.resultType).toBe(expectedResultName(call.outDtype));
        const bytes = bytesOf(r.out ?? '');
        const out = call.outDtype === 'float32' ? new Float32Array(bytes) : tensorValues(call.outDtype, new Uint16Array(bytes));
        // The plugin computes in float32 whatever the precision (bfloat16Products: false).
        const found = halfMismatches(c, p, { ...call, precision: 'float32' }, out, new Float32Array(bytesOf(r.lse ?? '')));
        if (found.length > 0) expect.fail(`${id}: ${found.join('; ')}`);
      });
    });
    const file = path.join(dir, 'calls.json');
    fs.writeFileSync(file, JSON.stringify(calls));
    const answer = await runOnEmulatedCuda<ChildResult>([path.join(FIXTURES, 'cuda-calls.cjs'), file], 280_000);
    failure = answer.failure;
    if (failure !== null) return;
    available = answer.report;
    for (const [id, result] of answer.results) results.set(id, result);
  }, 300_000);
  afterAll(() => {
    if (dir !== '') fs.rmSync(dir, { recursive: true, force: true });
  });

  const ids = [...CASES.map((c) => `f32 ${c.name}`), ...HALF_CASES.map((c) => `half ${c.name}`)];
  it.skipIf(EMULATED_SKIP !== '').each(ids)('%s', (id) => {
    if (failure !== null) expect.fail(failure);
    expect(available?.available, `cuda is not available there: ${available?.reason}`).toBe(true);
    const result = results.get(id);
    if (result === undefined) expect.fail(`${id}: no answer from the child process`);
    if (result.error !== undefined) expect.fail(`${id}: ${result.error}`);
    expect(result.inputsUntouched, `${id}: an input was written`).toBe(true);
    checks.get(id)?.(result);
  });
});
