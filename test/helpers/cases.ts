// The parity grid: each case names what it exercises. Sizes are odd on purpose (1, 3, 37, 100, 257)
// so that every tile loop has a ragged tail, and headDims include non-multiples of 16.
import { type ReferenceOptions, type ReferenceResult, referenceAttention, tensorIndex } from '../reference';
import { randomNonZero, rng, seedOf } from './random';

export type Kind = 'full' | 'localGlobal';

export interface ParityCase {
  name: string;
  kind: Kind;
  options: ReferenceOptions;
  /** Scales q and k so that |scaled scores| reach the hundreds. */
  magnitude?: number;
  /** Also run with k and v as a paged KV cache of pages this long (shuffled; see pagedCache). */
  pageSize?: number;
}

const sinks = [0, 1, 2, 3];
const manyGlobals = Array.from({ length: 80 }, (_, i) => (i * 97 + 13) % 257);

export const PARITY_CASES: ParityCase[] = [
  // Full attention.
  { name: 'one query, one key, headDim 1', kind: 'full', options: { batch: 1, heads: 1, seqLen: 1, headDim: 1 } },
  { name: 'seqLen 3, headDim 3, bshd, batch 2', kind: 'full', options: { batch: 2, heads: 3, seqLen: 3, headDim: 3, layout: 'bshd' } },
  { name: 'GQA 4/2, seqLen 37, headDim 17', kind: 'full', options: { batch: 2, heads: 4, kvHeads: 2, seqLen: 37, headDim: 17 } },
  {
    name: 'MQA 4/1, causal seqLen 37 < kvSeqLen 257, bshd, headDim 64', kind: 'full',
    options: { batch: 2, heads: 4, kvHeads: 1, seqLen: 37, kvSeqLen: 257, headDim: 64, causal: true, layout: 'bshd' },
  },
  {
    name: 'causal seqLen 257 > kvSeqLen 37 (early rows see nothing), headDim 100', kind: 'full',
    options: { batch: 1, heads: 2, seqLen: 257, kvSeqLen: 37, headDim: 100, causal: true },
  },
  { name: 'seqLen 257, headDim 128', kind: 'full', options: { batch: 1, heads: 2, seqLen: 257, headDim: 128 } },
  { name: 'headDim 256, causal 37 x 65', kind: 'full', options: { batch: 1, heads: 1, seqLen: 37, kvSeqLen: 65, headDim: 256, causal: true } },
  {
    name: 'decode: one causal query sees the whole cache', kind: 'full', pageSize: 16,
    options: { batch: 2, heads: 4, kvHeads: 2, seqLen: 1, kvSeqLen: 257, headDim: 64, causal: true },
  },
  {
    name: 'kvLengths 0, 1, 37, causal', kind: 'full', pageSize: 1,
    options: { batch: 3, heads: 2, seqLen: 37, headDim: 16, causal: true, kvLengths: [0, 1, 37] },
  },
  {
    name: 'kvLengths, GQA, bshd', kind: 'full', pageSize: 7,
    options: { batch: 3, heads: 4, kvHeads: 2, seqLen: 5, kvSeqLen: 70, headDim: 8, layout: 'bshd', kvLengths: new Int32Array([70, 1, 33]) },
  },
  { name: 'scale 0.37, headDim 32', kind: 'full', options: { batch: 1, heads: 1, seqLen: 37, headDim: 32, scale: 0.37 } },
  {
    name: 'large logits, causal 37 x 100', kind: 'full', magnitude: 12,
    options: { batch: 1, heads: 2, seqLen: 37, kvSeqLen: 100, headDim: 64, causal: true },
  },

  // Local-global attention.
  { name: 'asymmetric window [3, 5], headDim 17', kind: 'localGlobal', options: { batch: 2, heads: 2, seqLen: 257, headDim: 17, window: [3, 5] } },
  {
    name: 'window [-1, 4] (unbounded left), GQA, bshd', kind: 'localGlobal',
    options: { batch: 1, heads: 4, kvHeads: 2, seqLen: 37, headDim: 16, window: [-1, 4], layout: 'bshd' },
  },
  { name: 'window [8, -1] (unbounded right)', kind: 'localGlobal', options: { batch: 1, heads: 2, seqLen: 100, headDim: 8, window: [8, -1] } },
  {
    name: 'window [-1, -1] is full attention, causal 37 < 257', kind: 'localGlobal',
    options: { batch: 1, heads: 2, seqLen: 37, kvSeqLen: 257, headDim: 64, causal: true, window: [-1, -1] },
  },
  { name: 'window [1000, 1000] covers everything, headDim 3', kind: 'localGlobal', options: { batch: 2, heads: 1, seqLen: 37, headDim: 3, window: [1000, 1000] } },
  { name: 'window number 7 = [3, 3]', kind: 'localGlobal', options: { batch: 1, heads: 2, seqLen: 100, headDim: 16, window: 7 } },
  { name: 'window number 1 = [0, 0]: each query sees itself', kind: 'localGlobal', options: { batch: 1, heads: 1, seqLen: 37, headDim: 5, window: 1 } },
  {
    name: 'one global list for the batch (unsorted, duplicated)', kind: 'localGlobal',
    options: { batch: 2, heads: 2, seqLen: 37, headDim: 16, window: [2, 2], globalTokens: [36, 0, 5, 5] },
  },
  {
    name: 'global tokens per batch item', kind: 'localGlobal',
    options: { batch: 2, heads: 2, seqLen: 100, headDim: 20, window: [3, 3], globalTokens: [[0, 1], [90, 20, 20, 3]] },
  },
  {
    name: 'attention sinks: causal + window [15, 0] + globals 0..3, MQA', kind: 'localGlobal', pageSize: 16,
    options: { batch: 1, heads: 4, kvHeads: 1, seqLen: 257, headDim: 64, causal: true, window: [15, 0], globalTokens: sinks },
  },
  {
    name: 'global query rows, seqLen 37 < kvSeqLen 100', kind: 'localGlobal',
    options: { batch: 2, heads: 2, seqLen: 37, kvSeqLen: 100, headDim: 16, window: [4, 4], globalTokens: [[70, 80], [63, 99]] },
  },
  {
    name: 'global query rows under causal', kind: 'localGlobal',
    options: { batch: 1, heads: 2, seqLen: 100, headDim: 8, causal: true, window: [5, 0], globalTokens: [50, 99] },
  },
  {
    name: 'globals beyond kvLengths stay invisible', kind: 'localGlobal', pageSize: 3,
    options: { batch: 2, heads: 2, seqLen: 37, headDim: 8, window: [2, 2], globalTokens: [[1, 30], [1, 30]], kvLengths: [20, 0] },
  },
  {
    name: 'causal window, seqLen 100 > kvSeqLen 37, bshd, headDim 17', kind: 'localGlobal',
    options: { batch: 2, heads: 2, seqLen: 100, kvSeqLen: 37, headDim: 17, causal: true, window: [7, 0], layout: 'bshd' },
  },
  {
    name: '80 globals (more than a key tile), window [16, 16]', kind: 'localGlobal',
    options: { batch: 1, heads: 2, seqLen: 257, headDim: 32, window: [16, 16], globalTokens: manyGlobals },
  },
  {
    name: 'window [0, 0], kvLengths 0 and 5, headDim 100', kind: 'localGlobal',
    options: { batch: 2, heads: 1, seqLen: 37, headDim: 100, window: [0, 0], kvLengths: [0, 5] },
  },
  {
    name: 'headDim 256, globals, bshd GQA', kind: 'localGlobal',
    options: { batch: 1, heads: 2, kvHeads: 1, seqLen: 65, headDim: 256, window: [3, 3], globalTokens: [10], layout: 'bshd' },
  },
  {
    name: 'large logits, window + globals', kind: 'localGlobal', magnitude: 12,
    options: { batch: 1, heads: 2, seqLen: 100, headDim: 64, window: [10, 10], globalTokens: [0, 50] },
  },

  // Serving options (qLengths, softcap, alibiSlopes, sinkLogits) and the per-sequence alignment
  // p = i + kvLength(b) - qLength(b). Appended last, so that the grids that sample this list by
  // index (half-precision.test.ts) keep their cases.
  {
    name: 'kvLengths under causal align each item to its own keys (seqLen = kvSeqLen 40, kvLengths [40, 13])', kind: 'full',
    options: { batch: 2, heads: 2, seqLen: 40, headDim: 8, causal: true, kvLengths: [40, 13] },
  },
  {
    name: 'right-padded prefill: qLengths = kvLengths [37, 20, 0], causal', kind: 'full',
    options: { batch: 3, heads: 2, seqLen: 37, headDim: 16, causal: true, kvLengths: [37, 20, 0], qLengths: [37, 20, 0] },
  },
  {
    name: 'qLengths [5, 37] without kvLengths, causal 37 < kvSeqLen 100, GQA 4/2, bshd, headDim 17', kind: 'full',
    options: { batch: 2, heads: 4, kvHeads: 2, seqLen: 37, kvSeqLen: 100, headDim: 17, causal: true, qLengths: new Int32Array([5, 37]), layout: 'bshd' },
  },
  {
    name: 'softcap 5 over large logits, causal 37 x 100', kind: 'full', magnitude: 12,
    options: { batch: 1, heads: 2, seqLen: 37, kvSeqLen: 100, headDim: 64, causal: true, softcap: 5 },
  },
  {
    name: 'softcap 30 over large logits, GQA 4/2, bshd', kind: 'full', magnitude: 12,
    options: { batch: 2, heads: 4, kvHeads: 2, seqLen: 17, kvSeqLen: 65, headDim: 32, softcap: 30, layout: 'bshd' },
  },
  {
    name: 'ALiBi, causal, 8 heads (geometric slopes), GQA 8/2, seqLen 130', kind: 'full',
    options: {
      batch: 1, heads: 8, kvHeads: 2, seqLen: 130, headDim: 16, causal: true,
      alibiSlopes: Array.from({ length: 8 }, (_, h) => 2 ** -(h + 1)),
    },
  },
  {
    // Rows of several full key blocks, so that fused softmax attempts raise their shift by the
    // bias's rise (attention_block.cc alibi_rise): steep slopes (the bias climbs 0.9 per key),
    // shallow, zero and negative ones, and large logits on top.
    name: 'ALiBi over long causal rows: steep, shallow, zero and negative slopes, seqLen 700, large logits', kind: 'full', magnitude: 12, pageSize: 64,
    options: { batch: 1, heads: 4, seqLen: 700, headDim: 32, causal: true, alibiSlopes: [0.9, 1 / 64, 0, -0.05] },
  },
  {
    name: 'ALiBi, not causal, negative and zero slopes, seqLen 37 < kvSeqLen 65, headDim 33', kind: 'full',
    options: { batch: 2, heads: 3, seqLen: 37, kvSeqLen: 65, headDim: 33, alibiSlopes: new Float32Array([0.5, 0, -0.03125]) },
  },
  {
    name: 'sinks, GQA 4/2, bshd', kind: 'full',
    options: { batch: 2, heads: 4, kvHeads: 2, seqLen: 37, kvSeqLen: 50, headDim: 16, layout: 'bshd', sinkLogits: [-1, 0, 2.5, 6] },
  },
  {
    name: 'sinks, causal seqLen 50 > kvSeqLen 20 (early rows see nothing: lse = sink)', kind: 'full',
    options: { batch: 1, heads: 2, seqLen: 50, kvSeqLen: 20, headDim: 8, causal: true, sinkLogits: [0.75, -3] },
  },
  {
    name: 'all four: qLengths [9, 17, 0], kvLengths [40, 5, 30], softcap, ALiBi, sinks, causal, GQA, bshd, headDim 67', kind: 'full', magnitude: 12,
    options: {
      batch: 3, heads: 4, kvHeads: 2, seqLen: 17, kvSeqLen: 40, headDim: 67, causal: true, layout: 'bshd',
      qLengths: [9, 17, 0], kvLengths: [40, 5, 30], softcap: 20, alibiSlopes: [0.25, 0.0625, 0.5, 0.125], sinkLogits: [1, -2, 0, 4],
    },
  },
  {
    name: 'padded decode batch: seqLen 1, kvSeqLen 128, causal, window [31, 0], kvLengths [128, 50]', kind: 'localGlobal',
    options: { batch: 2, heads: 4, kvHeads: 2, seqLen: 1, kvSeqLen: 128, headDim: 64, causal: true, window: [31, 0], kvLengths: [128, 50] },
  },
  {
    name: 'padded decode batch with globalTokens [0, 1, 2, 3]', kind: 'localGlobal', pageSize: 32,
    options: {
      batch: 2, heads: 4, kvHeads: 2, seqLen: 1, kvSeqLen: 128, headDim: 64, causal: true, window: [31, 0], kvLengths: [128, 50],
      globalTokens: [0, 1, 2, 3],
    },
  },
  {
    name: 'right-padded prefill, sliding window [7, 0] + globals, qLengths = kvLengths [100, 33], bshd', kind: 'localGlobal',
    options: {
      batch: 2, heads: 2, seqLen: 100, headDim: 17, causal: true, window: [7, 0], globalTokens: [0, 1], layout: 'bshd',
      kvLengths: [100, 33], qLengths: [100, 33],
    },
  },
  {
    name: 'sinks with a causal window that leaves rows seeing nothing (seqLen 37 > kvSeqLen 20)', kind: 'localGlobal',
    options: { batch: 2, heads: 2, seqLen: 37, kvSeqLen: 20, headDim: 5, causal: true, window: [4, 0], sinkLogits: [1.5, -2] },
  },
  {
    name: 'ALiBi + window [5, 5] + per-batch globals, GQA 4/2, bshd', kind: 'localGlobal',
    options: {
      batch: 2, heads: 4, kvHeads: 2, seqLen: 65, headDim: 16, window: [5, 5], globalTokens: [[0], [30, 64]], layout: 'bshd',
      alibiSlopes: [0.5, 0.25, 0.125, 0.0625],
    },
  },
  {
    name: 'all four, local-global: qLengths [17, 3], softcap 10, ALiBi, sinks, window [4, 2], globals', kind: 'localGlobal', magnitude: 12,
    options: {
      batch: 2, heads: 2, seqLen: 17, kvSeqLen: 33, headDim: 33, window: [4, 2], globalTokens: [[2], [0, 20]],
      qLengths: [17, 3], kvLengths: [33, 21], softcap: 10, alibiSlopes: [0.125, 0.375], sinkLogits: [2, -1],
    },
  },
];

export interface Inputs {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
}

export function inputLengths(o: ReferenceOptions): { q: number; kv: number; lse: number } {
  const kvHeads = o.kvHeads ?? o.heads;
  const kvSeqLen = o.kvSeqLen ?? o.seqLen;
  return {
    q: o.batch * o.heads * o.seqLen * o.headDim,
    kv: o.batch * kvHeads * kvSeqLen * o.headDim,
    lse: o.batch * o.heads * o.seqLen,
  };
}

export function makeInputs(name: string, options: ReferenceOptions, magnitude = 1): Inputs {
  const random = rng(seedOf(name));
  const n = inputLengths(options);
  return {
    q: randomNonZero(n.q, random, magnitude),
    k: randomNonZero(n.kv, random, magnitude),
    v: randomNonZero(n.kv, random),
  };
}

const references = new Map<string, { inputs: Inputs; reference: ReferenceResult }>();

/** Inputs and float64 result of a case, computed once and shared by every backend. */
export function prepared(c: ParityCase): { inputs: Inputs; reference: ReferenceResult } {
  let entry = references.get(c.name);
  if (entry === undefined) {
    const inputs = makeInputs(c.name, c.options, c.magnitude);
    entry = { inputs, reference: referenceAttention(inputs.q, inputs.k, inputs.v, c.options) };
    references.set(c.name, entry);
  }
  return entry;
}

/** A contiguous problem's K and V as a paged KV cache: the options that read it, and the pool. */
export interface PagedCache {
  k: Float32Array;
  v: Float32Array;
  /** blockTable, pageSize and kvLengths (every item's, required with a block table). */
  options: { blockTable: Int32Array; pageSize: number; kvLengths: number[] };
}

/**
 * k and v of `o` (in o.layout) copied into a pool [pages, pageSize, kvHeads, headDim] whose pages are
 * handed out in a shuffled order; pool rows no sequence owns hold NaN, and block-table entries past
 * each item's length are -1, so that a read of either shows in the result.
 */
export function pagedCache(name: string, o: ReferenceOptions, k: Float32Array, v: Float32Array, pageSize: number): PagedCache {
  const kvHeads = o.kvHeads ?? o.heads;
  const kvSeqLen = o.kvSeqLen ?? o.seqLen;
  const layout = o.layout ?? 'bhsd';
  const kvLengths = Array.from({ length: o.batch }, (_, b) => (o.kvLengths === undefined ? kvSeqLen : o.kvLengths[b]));
  const maxBlocks = Math.ceil(kvSeqLen / pageSize);
  const pageCount = kvLengths.reduce((sum, n) => sum + Math.ceil(n / pageSize), 0) + 1;
  const random = rng(seedOf(`${name} pages`));
  const order = Array.from({ length: pageCount }, (_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  const blockTable = new Int32Array(o.batch * maxBlocks).fill(-1);
  let next = 0;
  for (let b = 0; b < o.batch; b++) {
    for (let n = 0; n < Math.ceil(kvLengths[b] / pageSize); n++) blockTable[b * maxBlocks + n] = order[next++];
  }
  const row = kvHeads * o.headDim;
  const pool = (from: Float32Array): Float32Array => {
    const to = new Float32Array(pageCount * pageSize * row).fill(NaN);
    for (let b = 0; b < o.batch; b++) {
      for (let j = 0; j < kvLengths[b]; j++) {
        const poolRow = blockTable[b * maxBlocks + Math.floor(j / pageSize)] * pageSize + (j % pageSize);
        for (let h = 0; h < kvHeads; h++) {
          for (let d = 0; d < o.headDim; d++) to[poolRow * row + h * o.headDim + d] = from[tensorIndex(layout, kvHeads, kvSeqLen, o.headDim, b, h, j, d)];
        }
      }
    }
    return to;
  };
  return { k: pool(k), v: pool(v), options: { blockTable, pageSize, kvLengths } };
}
